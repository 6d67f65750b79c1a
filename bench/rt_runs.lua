-- wrk script for bench/runtime.sh: POST one sync agent run per request to the
-- URL given to wrk (http://127.0.0.1:PORT/v1/agents/NAME/runs).
--   RUN_INPUT  the run's input string [hello]; e.g. 'call_tool ping {"n":1}'
--   RUN_KEY    bearer key (agenthub's admin key in the bench) [sk-test]
-- Prints one machine-readable line at the end (same keys as wrk_report.lua):
--   WRK_RESULT rps=<n> p50_ms=<n> p90_ms=<n> p99_ms=<n> max_ms=<n> requests=<n> non2xx=<n> errors=<n>
-- Bodies are not checked here (no response() hook: it costs a Lua call per
-- response); runtime.sh checks every run's status from agenthub_runs_total.

local input = os.getenv("RUN_INPUT") or "hello"
local key = os.getenv("RUN_KEY") or "sk-test"

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\' end
    return string.format('\\u%04x', c:byte())
  end) .. '"'
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"input":' .. json_str(input) .. ',"mode":"sync"}'

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
