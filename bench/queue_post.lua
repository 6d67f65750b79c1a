-- wrk script for bench/queue.sh: POST one agent run per request to the URL
-- given to wrk (http://127.0.0.1:PORT/v1/agents/NAME/runs).
--   RUN_MODE   async (202, queued) or sync (200, finished) [async]
--   RUN_KEY    bearer key [sk-test]
-- Prints one machine-readable line at the end (same keys as wrk_report.lua;
-- non2xx = answers >= 400, wrk's own count; 202 counts as success):
--   WRK_RESULT rps=<n> p50_ms=<n> p90_ms=<n> p99_ms=<n> max_ms=<n> requests=<n> non2xx=<n> errors=<n>
-- No response() hook (a Lua call per response); queue.sh checks every run's
-- final status in the store.

local mode = os.getenv("RUN_MODE") or "async"
local key = os.getenv("RUN_KEY") or "sk-test"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"input":"x","mode":"' .. mode .. '"}'

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read +
                 summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "WRK_RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d non2xx=%d errors=%d\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.errors.status, errors))
end
