-- wrk script for bench/gateway.sh: POST /v1/chat/completions with the same
-- ~1 KB body as ../shared/peers-bench/chat_request.lua (1036 bytes with the
-- default model), Authorization: Bearer sk-test (agenthub's admin key in the
-- bench). CHAT_MODEL in the environment replaces the "model" value, e.g.
-- CHAT_MODEL='echo?latency_ms=50' to ask `agenthub mock-llm` for a 50 ms delay
-- when wrk talks to it directly (agenthub's target sends that same string).
-- At the end it prints one machine-readable line:
--   WRK_RESULT rps=<n> p50_ms=<n> p90_ms=<n> p99_ms=<n> max_ms=<n> requests=<n> non2xx=<n> errors=<n> body_bytes=<n>

local model = os.getenv("CHAT_MODEL") or "gpt-4o-mini"

local system_prompt = "You are a concise, helpful assistant for an online store. " ..
  "Answer questions about orders, shipping, returns and products. If you do not know " ..
  "the answer, say so and suggest contacting support. Never invent order numbers, " ..
  "prices or delivery dates. Keep answers under 120 words and use plain language."

local user_prompt = "Hi! I ordered a pair of running shoes (size 42, blue) last Tuesday " ..
  "and the tracking page still says 'label created'. The confirmation email said it " ..
  "would ship within two business days. Can you tell me what usually causes this kind " ..
  "of delay, whether I should wait or contact the carrier, and how the return process " ..
  "works if the shoes arrive too late for my race on the 14th? I would also like to know " ..
  "if I can swap them for the same model in green instead of getting a refund, and " ..
  "whether the exchange shipping is free for members. Thanks a lot for your help."

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-test"
wrk.body = '{"model":"' .. model .. '","messages":[' ..
  '{"role":"system","content":"' .. system_prompt .. '"},' ..
  '{"role":"user","content":"' .. user_prompt .. '"}],' ..
  '"temperature":0.7,"max_tokens":256,"top_p":1,"stream":false,"user":"bench-user-0001"}'

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read +
                 summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "WRK_RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d non2xx=%d errors=%d body_bytes=%d\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.errors.status, errors, #wrk.body))
end
