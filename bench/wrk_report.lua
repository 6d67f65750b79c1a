-- wrk script for the bench/*.sh runs: plain GET (the URL given to wrk) and, at
-- the end, one machine-readable line:
--   WRK_RESULT rps=<n> p50_ms=<n> p90_ms=<n> p99_ms=<n> max_ms=<n> requests=<n> non2xx=<n> errors=<n>
-- With WRK_MAX_REQUESTS=N in the environment each wrk thread stops after N
-- responses (use -t1 for an exact total; keep -d as an upper bound). The
-- response() hook is only defined in that mode because it costs a Lua call
-- per response.

local max_requests = tonumber(os.getenv("WRK_MAX_REQUESTS") or "")

if max_requests then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen >= max_requests then
      wrk.thread:stop()
    end
  end
end

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
