// Helpers for the gateway suites: `agenthub mock-llm` as an upstream, a tiny
// recording upstream (a node HTTP server that keeps every request body it got
// and answers with a canned OpenAI reply), an SSE reader and /metrics access.
// Every process and server started here is stopped (by its own pid / handle)
// when the test file ends.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { after } from 'node:test';
import { BIN, cleanEnv, parseJsonLines, pollUntil, tempDir } from './harness.mjs';
import { parseProm } from './prom.mjs';

const live = new Set(); // mock-llm processes and node servers to stop

after(async () => {
  for (const x of live) await x.stop();
  live.clear();
});

/**
 * Starts `agenthub mock-llm` on a free loopback port; prefix: command words
 * before the binary (e.g. valgrind). Resolves
 * { url, port, proc, logs(), stdout(), stats(), reset(), stop(signal) -> {code, signal} }.
 */
export async function startMockLlm(args = [], { prefix = [], startTimeoutMs = 10_000 } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`agenthub binary not found at ${BIN}: build it or set AGENTHUB_BIN`);
  const argv = [...prefix, BIN, 'mock-llm', '--listen', '127.0.0.1:0', '--workers', '2', ...args];
  const proc = spawn(argv[0], argv.slice(1), {
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
    stdout: () => out,
    stderr: () => err,
    logs: () => parseJsonLines(err),
    /** GET /mock/stats */
    stats: async () => (await fetch(`${m.url}/mock/stats`, { signal: AbortSignal.timeout(5000) })).json(),
    /** Counters of one exact model string ({requests:0,...} when never seen). */
    modelStats: async (model) => {
      const s = await m.stats();
      return (s.by_model && s.by_model[model]) || { requests: 0, aborted: 0, failed: 0 };
    },
    stop: async (signal = 'SIGKILL') => {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, signal);
      const e = await exited;
      live.delete(m);
      return e;
    },
  };
  live.add(m);
  let spawnError = null;
  proc.on('error', (e) => (spawnError = e));
  const deadline = Date.now() + startTimeoutMs;
  let listening;
  while (!listening) {
    let why = null;
    if (spawnError) why = `could not be started: ${spawnError.message}`;
    else if (proc.exitCode !== null || proc.signalCode !== null) why = `exited during start (code ${proc.exitCode})`;
    else if (Date.now() > deadline) why = `did not log "listening" within ${startTimeoutMs} ms`;
    if (why) {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL');
      throw new Error(`agenthub mock-llm ${why}\nstdout: ${out}\nstderr: ${err}`);
    }
    listening = m.logs().find((l) => l.msg === 'listening' && l.addr);
    if (!listening) await new Promise((r) => setTimeout(r, 20));
  }
  m.port = Number(/:(\d+)$/.exec(listening.addr)[1]);
  m.url = `http://127.0.0.1:${m.port}`;
  await pollUntil(() => out.includes('listening on http://'), { message: 'the mock-llm stdout banner' });
  return m;
}

/** A canned non-streamed OpenAI chat completion. */
export const CANNED = {
  id: 'chatcmpl-recorder-42',
  object: 'chat.completion',
  created: 1700000000,
  model: 'upstream-answer-model',
  system_fingerprint: 'fp_recorder',
  choices: [{ index: 0, message: { role: 'assistant', content: 'canned answer' }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
};

function cannedStream(body) {
  const base = { id: 'chatcmpl-recorder-s', object: 'chat.completion.chunk', created: 1700000000, model: 'upstream-answer-model', system_fingerprint: 'fp_recorder' };
  const withUsage = body && body.stream_options && body.stream_options.include_usage;
  const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ ...base, choices, ...(withUsage ? { usage: null } : {}), ...extra })}\n\n`;
  let s = '';
  s += chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
  s += chunk([{ index: 0, delta: { content: 'canned ' }, finish_reason: null }]);
  s += chunk([{ index: 0, delta: { content: 'answer' }, finish_reason: null }]);
  s += chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]);
  if (withUsage) s += chunk([], { usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } });
  s += 'data: [DONE]\n\n';
  return s;
}

/**
 * A node HTTP server standing in for an OpenAI upstream: it records every
 * request ({method, url, headers, body (parsed JSON or raw text)}) and answers
 * /v1/chat/completions with CANNED (or a canned SSE stream when body.stream).
 * Resolves { url, port, requests, stop() }.
 */
export async function startRecorder() {
  const requests = [];
  const server = http.createServer((rq, rs) => {
    let raw = '';
    rq.setEncoding('utf8');
    rq.on('data', (d) => (raw += d));
    rq.on('end', () => {
      let body;
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
      requests.push({ method: rq.method, url: rq.url, headers: rq.headers, body, raw });
      if (rq.method === 'POST' && rq.url.endsWith('/chat/completions')) {
        if (body && body.stream) {
          rs.writeHead(200, { 'content-type': 'text/event-stream' });
          rs.end(cannedStream(body));
        } else {
          rs.writeHead(200, { 'content-type': 'application/json' });
          rs.end(JSON.stringify(CANNED));
        }
      } else {
        rs.writeHead(404, { 'content-type': 'application/json' });
        rs.end(JSON.stringify({ error: { message: 'not here', type: 'invalid_request_error', param: null, code: null } }));
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const rec = {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
        live.delete(rec);
      }),
  };
  live.add(rec);
  return rec;
}

/** A loopback port nothing listens on (bound then closed). */
export async function closedPort() {
  const s = http.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Reads an SSE response body to its end (or its error). Returns
 * { text, events: [data strings], json: [parsed data objects, non-JSON skipped],
 *   done: saw "data: [DONE]", error: the read error or null }.
 */
export async function readSse(res) {
  let text = '';
  let error = null;
  const dec = new TextDecoder();
  try {
    for await (const chunk of res.body) text += dec.decode(chunk, { stream: true });
  } catch (e) {
    error = e;
  }
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const data = block
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''))
      .join('\n');
    if (data) events.push(data);
  }
  const json = [];
  for (const e of events) {
    try {
      json.push(JSON.parse(e));
    } catch {
      /* [DONE] or a broken event */
    }
  }
  return { text, events, json, done: events.includes('[DONE]'), error };
}

/** POST JSON to the hub with fetch; resolves the Response (body unread). */
export function postHub(hub, path, body, { key, signal, headers = {} } = {}) {
  const k = key === undefined ? hub.adminKey : key;
  return fetch(hub.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(k ? { authorization: `Bearer ${k}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: signal || AbortSignal.timeout(20_000),
  });
}

/** The hub's /metrics, parsed. */
export async function scrape(hub) {
  const r = await fetch(hub.url + '/metrics', { signal: AbortSignal.timeout(5000) });
  return parseProm(await r.text());
}

export const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
export const timeTool = {
  type: 'function',
  function: { name: 'get_time', description: 'time in a timezone', parameters: { type: 'object', properties: { tz: { type: 'string' } } } },
};
