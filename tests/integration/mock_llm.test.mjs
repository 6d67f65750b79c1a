// `agenthub mock-llm` driven by the official OpenAI and Anthropic SDKs: both
// dialects (streaming and not, tool calls, usage, embeddings) and the fault
// options (status, fail_times, delays, drop_after, malformed, client aborts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { BIN, cleanEnv, parseJsonLines, pollUntil, tempDir } from './lib/harness.mjs';

/** Starts `agenthub mock-llm` on a free port; resolves { url, port, proc, logs(), stdout(), stop() }. */
async function startMockLlm(args = []) {
  if (!fs.existsSync(BIN)) throw new Error(`agenthub binary not found at ${BIN}: build it or set AGENTHUB_BIN`);
  const proc = spawn(BIN, ['mock-llm', '--listen', '127.0.0.1:0', '--workers', '2', ...args], {
    env: cleanEnv(),
    cwd: tempDir(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const m = {
    proc,
    exited,
    stdout: () => out,
    logs: () => parseJsonLines(err),
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
  live.add(m);
  const listening = await pollUntil(() => m.logs().find((l) => l.msg === 'listening' && l.addr), {
    timeoutMs: 10_000,
    intervalMs: 20,
    message: `mock-llm "listening" log line (stderr: ${err})`,
  });
  m.port = Number(/:(\d+)$/.exec(listening.addr)[1]);
  m.url = `http://127.0.0.1:${m.port}`;
  await pollUntil(() => out.includes('listening on http://'), { message: 'the stdout banner' });
  return m;
}

const live = new Set();
after(async () => {
  for (const m of live) await m.stop('SIGKILL');
});

let mock;
let oai; // OpenAI client, retries off
let claude; // Anthropic client, retries off
let seq = 0;
/** A model name no other test uses (counters are per exact model string). */
const uniq = (opts = '') => `t${++seq}-${process.pid}${opts ? '?' + opts : ''}`;

before(async () => {
  mock = await startMockLlm();
  oai = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: 'sk-mock', maxRetries: 0 });
  claude = new Anthropic({ baseURL: mock.url, apiKey: 'sk-ant-mock', maxRetries: 0 });
});

const stats = async () => (await fetch(`${mock.url}/mock/stats`)).json();

/** POSTs a JSON body; resolves the fetch Response. */
const post = (path, body, init = {}) =>
  fetch(`${mock.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init,
  });

/** Reads an SSE body to its end (or its error); returns { events: [data strings], error }. */
async function readSse(res) {
  const events = [];
  let text = '';
  let error = null;
  try {
    for await (const chunk of res.body) text += Buffer.from(chunk).toString('utf8');
  } catch (e) {
    error = e;
  }
  for (const block of text.split('\n\n')) {
    const data = block
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice(6))
      .join('\n');
    if (data) events.push(data);
  }
  return { events, error };
}

const weatherTool = {
  type: 'function',
  function: { name: 'get_weather', description: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
};
const timeTool = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };

// ---- basics ----------------------------------------------------------------

test('prints its address on stdout and in a JSON "listening" log line; /healthz answers', async () => {
  assert.match(mock.stdout(), /^agenthub mock-llm listening on http:\/\/127\.0\.0\.1:\d+/m);
  const r = await fetch(`${mock.url}/healthz`);
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { status: 'ok' });
});

test('GET /v1/models lists models for both SDKs', async () => {
  const ids = [];
  for await (const m of oai.models.list()) ids.push(m.id);
  assert.ok(ids.includes('echo'));
  const cm = await claude.models.list();
  assert.ok(cm.data.some((m) => m.id === 'echo' && m.type === 'model'));
});

// ---- OpenAI dialect ----------------------------------------------------------

test('OpenAI chat: echo with usage counted as ceil(chars/4)', async () => {
  const r = await oai.chat.completions.create({
    model: 'echo',
    messages: [
      { role: 'system', content: 'be brief' }, // 8 chars
      { role: 'user', content: 'hello world' }, // 11 chars
    ],
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-mock-/);
  assert.equal(r.model, 'echo');
  assert.equal(r.system_fingerprint, 'fp_mock');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, 'echo: hello world');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual(
    { p: r.usage.prompt_tokens, c: r.usage.completion_tokens, t: r.usage.total_tokens },
    { p: 5, c: 5, t: 10 },
  );
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
});

test('OpenAI chat stream with include_usage: chunks rebuild the answer, usage chunk last', async () => {
  const stream = await oai.chat.completions.create({
    model: 'echo',
    messages: [{ role: 'user', content: 'stream me, please' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let content = '';
  let finish = null;
  const chunks = [];
  for await (const c of stream) {
    chunks.push(c);
    if (c.choices.length) {
      content += c.choices[0].delta.content ?? '';
      finish = c.choices[0].finish_reason ?? finish;
    }
  }
  assert.equal(content, 'echo: stream me, please');
  assert.equal(finish, 'stop');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, Math.ceil(content.length / 4));
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  // one chunk per 4 characters: role + tokens + finish + usage
  assert.equal(chunks.length, 1 + Math.ceil(content.length / 4) + 1 + 1);
});

test('OpenAI tool calls: single, parallel, not offered -> echo, then the tool result', async () => {
  const one = await oai.chat.completions.create({
    model: 'echo',
    messages: [{ role: 'user', content: 'call_tool get_weather {"city": "Paris"}' }],
    tools: [weatherTool, timeTool],
  });
  const msg = one.choices[0].message;
  assert.equal(one.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.content, null);
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].id, 'call_1');
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { city: 'Paris' });

  const two = await oai.chat.completions.create({
    model: 'echo',
    messages: [{ role: 'user', content: 'call_tool get_time and call_tool get_weather {"city":"Oslo"}' }],
    tools: [weatherTool, timeTool],
  });
  assert.deepEqual(
    two.choices[0].message.tool_calls.map((t) => [t.id, t.function.name]),
    [
      ['call_1', 'get_time'],
      ['call_2', 'get_weather'],
    ],
  );

  const none = await oai.chat.completions.create({
    model: 'echo',
    messages: [{ role: 'user', content: 'call_tool rm_rf {}' }],
    tools: [weatherTool],
  });
  assert.equal(none.choices[0].message.content, 'echo: call_tool rm_rf {}');

  const res = await oai.chat.completions.create({
    model: 'echo',
    messages: [
      { role: 'user', content: 'call_tool get_weather {"city": "Paris"}' },
      msg,
      { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny, 21C' },
    ],
    tools: [weatherTool],
  });
  assert.equal(res.choices[0].message.content, 'tool said: sunny, 21C');
  assert.equal(res.choices[0].finish_reason, 'stop');
});

test('OpenAI streamed tool calls assemble in the SDK stream helper', async () => {
  const stream = oai.chat.completions.stream({
    model: 'echo',
    messages: [{ role: 'user', content: 'call_tool get_weather {"city":"Zürich","days":[1,2]} call_tool get_time' }],
    tools: [weatherTool, timeTool],
  });
  const final = await stream.finalChatCompletion();
  const calls = final.choices[0].message.tool_calls;
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(calls.length, 2);
  assert.equal(calls[0].id, 'call_1');
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Zürich', days: [1, 2] });
  assert.equal(calls[1].function.name, 'get_time');
  assert.equal(calls[1].function.arguments, '{}');
});

test('OpenAI embeddings: deterministic unit vectors (SDK base64 default and float)', async () => {
  const a = await oai.embeddings.create({ model: 'embed', input: ['alpha', 'beta'] });
  const b = await oai.embeddings.create({ model: 'embed', input: 'alpha', encoding_format: 'float' });
  assert.equal(a.object, 'list');
  assert.equal(a.data.length, 2);
  const v = a.data[0].embedding;
  assert.equal(v.length, 16);
  assert.ok(Math.abs(v.reduce((s, x) => s + x * x, 0) - 1) < 1e-5, 'unit length');
  assert.deepEqual(b.data[0].embedding, v, 'same input, same vector, in both encodings');
  assert.notDeepEqual(a.data[1].embedding, v);
  assert.equal(a.usage.prompt_tokens, 2 + 1);
  const d = await oai.embeddings.create({ model: 'embed', input: 'alpha', dimensions: 8 });
  assert.equal(d.data[0].embedding.length, 8);
});

// ---- faults -------------------------------------------------------------------

test('status=429 -> the SDK RateLimitError with Retry-After, OpenAI error shape', async () => {
  const model = uniq('status=429&retry_after=7');
  await assert.rejects(
    oai.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, `got ${e?.constructor?.name}`);
      assert.equal(e.status, 429);
      assert.equal(e.headers.get('retry-after'), '7');
      assert.equal(e.type, 'rate_limit_error');
      assert.match(e.message, /injected status 429/);
      return true;
    },
  );
  const s = await stats();
  assert.equal(s.by_model[model].failed, 1);
});

test('fail_times=2: the first two requests fail, the SDK retries and succeeds', async () => {
  const model = uniq('status=503&fail_times=2&retry_after_ms=10');
  const client = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: 'sk-mock', maxRetries: 3 });
  const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'persist' }] });
  assert.equal(r.choices[0].message.content, 'echo: persist');
  const s = await stats();
  assert.deepEqual(s.by_model[model], { requests: 3, aborted: 0, failed: 2 });
  // later requests keep succeeding
  const again = await oai.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(again.choices[0].message.content, 'echo: x');
});

test('an unknown model option is a 400 naming it', async () => {
  await assert.rejects(
    oai.chat.completions.create({ model: 'echo?colour=red', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.match(e.message, /unknown mock option "colour"/);
      assert.equal(e.param, 'model');
      return true;
    },
  );
});

test('latency_ms delays a non-streaming answer; ttft_ms/token_ms pace a stream', async () => {
  let t0 = Date.now();
  await oai.chat.completions.create({ model: uniq('latency_ms=150'), messages: [{ role: 'user', content: 'hi' }] });
  assert.ok(Date.now() - t0 >= 140, `latency: ${Date.now() - t0} ms`);

  t0 = Date.now();
  const stream = await oai.chat.completions.create({
    model: uniq('ttft_ms=100&token_ms=30'),
    messages: [{ role: 'user', content: 'abcdefgh' }], // "echo: abcdefgh" = 4 tokens
    stream: true,
  });
  let first = null;
  let content = '';
  for await (const c of stream) {
    if (first === null && c.choices[0]?.delta?.content) first = Date.now() - t0;
    content += c.choices[0]?.delta?.content ?? '';
  }
  const total = Date.now() - t0;
  assert.equal(content, 'echo: abcdefgh');
  assert.ok(first >= 90, `first token after ${first} ms`);
  assert.ok(total >= 100 + 3 * 30 - 10, `stream took ${total} ms`);
});

test('drop_after=2: two chunks, then the connection is cut (no [DONE])', async () => {
  const model = uniq('drop_after=2');
  const res = await post('/v1/chat/completions', {
    model,
    stream: true,
    messages: [{ role: 'user', content: 'this answer is long enough for many chunks' }],
  });
  assert.equal(res.status, 200);
  const { events, error } = await readSse(res);
  assert.equal(events.length, 2);
  assert.ok(!events.includes('[DONE]'));
  assert.ok(error, 'the body ends with a transport error, not a clean end');

  // The SDK surfaces the cut as an error too.
  const stream = await oai.chat.completions.create({
    model,
    stream: true,
    messages: [{ role: 'user', content: 'this answer is long enough for many chunks' }],
  });
  await assert.rejects(async () => {
    for await (const c of stream) void c;
  });

  // Non-streaming with drop_after: the connection closes without an answer.
  await assert.rejects(
    oai.chat.completions.create({ model: uniq('drop_after=0'), messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.APIConnectionError,
  );
});

test('malformed=1: one data line mid-stream is not JSON; the non-stream body is cut', async () => {
  const res = await post('/v1/chat/completions', {
    model: uniq('malformed=1'),
    stream: true,
    messages: [{ role: 'user', content: 'hello world' }],
  });
  const { events } = await readSse(res);
  const bad = events.filter((d) => {
    if (d === '[DONE]') return false;
    try {
      JSON.parse(d);
      return false;
    } catch {
      return true;
    }
  });
  assert.equal(bad.length, 1);
  assert.equal(events.at(-1), '[DONE]');
  const bad0 = events.indexOf(bad[0]);
  assert.ok(bad0 > 0 && bad0 < events.length - 2, 'in the middle of the stream');

  const r = await post('/v1/chat/completions', { model: uniq('malformed=1'), messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 200);
  const text = await r.text();
  assert.throws(() => JSON.parse(text), SyntaxError);
});

test('a client that disconnects mid-stream is logged and counted in /mock/stats', async () => {
  const model = uniq('token_ms=200');
  const ac = new AbortController();
  const res = await post(
    '/v1/chat/completions',
    { model, stream: true, messages: [{ role: 'user', content: 'a long answer that takes a while to stream' }] },
    { signal: ac.signal },
  );
  const reader = res.body.getReader();
  await reader.read(); // the first chunk arrived: the stream is under way
  ac.abort();
  const s = await pollUntil(async () => {
    const st = await stats();
    return st.by_model[model]?.aborted === 1 && st;
  }, { message: 'the abort in /mock/stats' });
  assert.ok(s.aborted >= 1);
  const line = await pollUntil(() => mock.logs().find((l) => l.msg === 'client disconnected' && l.model === model), {
    message: 'the "client disconnected" log line',
  });
  assert.equal(line.stream, true);
  assert.equal(line.path, '/v1/chat/completions');
});

// ---- Anthropic dialect ----------------------------------------------------------

const anthropicTool = { name: 'get_weather', description: 'weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } };

test('Anthropic messages: echo with usage', async () => {
  const m = await claude.messages.create({
    model: 'claude-mock',
    max_tokens: 100,
    system: 'be brief', // 8 chars
    messages: [{ role: 'user', content: 'hello claude' }], // 12 chars
  });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.match(m.id, /^msg_mock_/);
  assert.equal(m.model, 'claude-mock');
  assert.equal(m.stop_reason, 'end_turn');
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello claude' }]);
  assert.equal(m.usage.input_tokens, 5);
  assert.equal(m.usage.output_tokens, 5);
});

test('Anthropic stream: the SDK MessageStream rebuilds text and usage from the events', async () => {
  const stream = claude.messages.stream({
    model: 'claude-mock',
    max_tokens: 100,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'stream this text' }] }],
  });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (t) => (text += t));
  const final = await stream.finalMessage();
  assert.equal(text, 'echo: stream this text');
  assert.equal(final.content[0].text, 'echo: stream this text');
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.usage.output_tokens, Math.ceil(text.length / 4));
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.ok(types.includes('content_block_delta') && types.includes('message_delta'));
});

test('Anthropic tool_use (non-stream and stream) and tool_result', async () => {
  const params = {
    model: 'claude-mock',
    max_tokens: 100,
    tools: [anthropicTool],
    messages: [{ role: 'user', content: 'call_tool get_weather {"city":"Rome"}' }],
  };
  const m = await claude.messages.create(params);
  assert.equal(m.stop_reason, 'tool_use');
  assert.equal(m.content.length, 1);
  assert.deepEqual(m.content[0], { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Rome' } });

  const final = await claude.messages.stream(params).finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  assert.deepEqual(final.content[0].input, { city: 'Rome' });
  assert.equal(final.content[0].id, 'toolu_1');

  const r = await claude.messages.create({
    ...params,
    messages: [
      ...params.messages,
      { role: 'assistant', content: m.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' }] },
    ],
  });
  assert.equal(r.content[0].text, 'tool said: sunny');
});

test('Anthropic faults use the Anthropic error shape and SDK error classes', async () => {
  await assert.rejects(
    claude.messages.create({ model: uniq('status=429&retry_after=3'), max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => {
      assert.ok(e instanceof Anthropic.RateLimitError, `got ${e?.constructor?.name}`);
      assert.equal(e.status, 429);
      assert.equal(e.error.type, 'error');
      assert.equal(e.error.error.type, 'rate_limit_error');
      assert.equal(e.headers.get('retry-after'), '3');
      return true;
    },
  );
  await assert.rejects(
    claude.messages.create({ model: uniq('status=529'), max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 529 && e.error.error.type === 'overloaded_error',
  );
});

// ---- shutdown --------------------------------------------------------------------

test('SIGTERM lets a stream in flight finish, then exits 0', async () => {
  const m = await startMockLlm(['--grace', '5']);
  const res = await fetch(`${m.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo?token_ms=40', stream: true, messages: [{ role: 'user', content: 'finish me please' }] }),
  });
  const reader = res.body.getReader();
  let text = Buffer.from((await reader.read()).value).toString();
  m.proc.kill('SIGTERM');
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString();
  }
  assert.match(text, /data: \[DONE\]/);
  const { code } = await m.exited;
  assert.equal(code, 0);
  assert.ok(m.logs().some((l) => l.msg === 'shutdown complete'));
});
