// Helpers for the agent runtime suites (runtime*.test.mjs): a hub with the
// mock model, applying agents, starting runs (sync, stream, async), reading a
// run's named SSE events, waiting for a run to end, and MCP fixture servers.
// Every process started here is SIGKILLed (by its own pid) at the end of the file.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { startHub, req, pollUntil, cleanEnv } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const IT_DIR = path.resolve(here, '..');
export const MCP_FIXTURE = path.join(IT_DIR, 'mcp_fixture_server.mjs');
export const EVERYTHING = path.join(IT_DIR, 'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js');
export const NODE = process.execPath;

export const ADMIN = 'adm-runtime-suite-key-0123456789';

const procs = new Set();
after(() => {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  procs.clear();
});

/** The in-process mock as models `mock` and `mock2` (both echo), plus extra providers/models. */
export function mockConfig({ providers = [], models = [], ...rest } = {}) {
  return {
    providers: [{ name: 'local', type: 'mock' }, ...providers],
    models: [
      { name: 'mock', targets: [{ provider: 'local', model: 'echo' }] },
      { name: 'mock2', targets: [{ provider: 'local', model: 'echo' }] },
      ...models,
    ],
    ...rest,
  };
}

/** startHub with mockConfig(cfg) and a known admin key. */
export function startRuntimeHub(cfg = {}, { env = {} } = {}) {
  return startHub({ config: mockConfig(cfg), env: { AGENTHUB_ADMIN_KEY: ADMIN, ...env } });
}

/** An agent document (JSON) with model `mock` unless spec says otherwise. */
export function agentDoc(name, spec = {}) {
  return { apiVersion: 'agenthub/v1', kind: 'Agent', metadata: { name }, spec: { model: 'mock', ...spec } };
}

/** POST /v1/agents; throws unless 200/201. Resolves the answer's JSON. */
export async function applyAgent(hub, name, spec = {}) {
  const r = await req(hub, 'POST', '/v1/agents', { body: agentDoc(name, spec) });
  if (r.status !== 201 && r.status !== 200) throw new Error(`applying agent ${name}: ${r.status} ${r.text}`);
  return r.json;
}

/** The mock's tool-call phrase. */
export const callTool = (name, args = {}) => `call_tool ${name} ${JSON.stringify(args)}`;

/** POST /v1/agents/NAME/runs with body (an object; a string is the input). Resolves req()'s answer. */
export function startRun(hub, name, body, { headers } = {}) {
  const b = typeof body === 'string' ? { input: body } : body;
  return req(hub, 'POST', `/v1/agents/${encodeURIComponent(name)}/runs`, { body: b, headers });
}

/** A sync run that must answer 200; resolves the run object. */
export async function runSync(hub, name, body) {
  const r = await startRun(hub, name, body);
  if (r.status !== 200) throw new Error(`run of ${name}: expected 200, got ${r.status} ${r.text}`);
  return r.json;
}

export const getRun = async (hub, id) => (await req(hub, 'GET', `/v1/runs/${id}`)).json;

/** GET /v1/runs/{id}/events as JSON; resolves the data array [{id, type, data, created_at}]. */
export async function runEvents(hub, id, query = '') {
  const r = await req(hub, 'GET', `/v1/runs/${id}/events${query}`);
  if (r.status !== 200) throw new Error(`events of ${id}: ${r.status} ${r.text}`);
  return r.json.data;
}

export const FINAL = ['completed', 'failed', 'cancelled', 'expired'];

/** Polls GET /v1/runs/{id} until its status is final (or in statuses); resolves the run. */
export function waitRun(hub, id, { statuses = FINAL, timeoutMs = 10_000 } = {}) {
  return pollUntil(
    async () => {
      const r = await getRun(hub, id);
      return r && statuses.includes(r.status) ? r : null;
    },
    { timeoutMs, intervalMs: 50, message: `run ${id} to reach ${statuses.join('|')}` },
  );
}

/** Polls the run's events until one satisfies pred; resolves it. */
export function waitEvent(hub, id, pred, { timeoutMs = 10_000, message = 'a run event' } = {}) {
  return pollUntil(async () => (await runEvents(hub, id)).find(pred), { timeoutMs, intervalMs: 50, message });
}

/** Splits SSE text into named events [{event, id, data (parsed JSON or the raw string)}]; comments skipped. */
export function parseNamedSse(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = 'message';
    let id = null;
    const data = [];
    let any = false;
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') (event = value), (any = true);
      else if (field === 'id') (id = value), (any = true);
      else if (field === 'data') data.push(value), (any = true);
    }
    if (!any) continue;
    const raw = data.join('\n');
    let parsed = raw;
    try {
      parsed = JSON.parse(raw);
    } catch {
      /* not JSON */
    }
    out.push({ event, id: id === null ? null : Number(id), data: parsed });
  }
  return out;
}

/**
 * Reads an SSE response until the body ends, or until stopWhen(events) is
 * true (then the connection is aborted), or timeoutMs. Resolves
 * { status, headers, events, text, ended (body ended by the server), error }.
 */
export async function readNamedSse(res, { stopWhen, timeoutMs = 15_000, controller } = {}) {
  let text = '';
  let ended = false;
  let error = null;
  const dec = new TextDecoder();
  const timer = setTimeout(() => controller && controller.abort(), timeoutMs);
  try {
    const reader = res.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      text += dec.decode(value, { stream: true });
      if (stopWhen && stopWhen(parseNamedSse(text))) {
        controller && controller.abort();
        reader.cancel().catch(() => {});
        break;
      }
    }
  } catch (e) {
    error = e;
  } finally {
    clearTimeout(timer);
  }
  return { status: res.status, headers: res.headers, events: parseNamedSse(text), text, ended, error };
}

/** fetch() to the hub that returns the Response unread, with an AbortController. */
export async function fetchHub(hub, method, urlPath, { body, headers = {} } = {}) {
  const controller = new AbortController();
  const h = { authorization: `Bearer ${hub.adminKey}`, ...headers };
  let b = body;
  if (body !== undefined && typeof body !== 'string') {
    b = JSON.stringify(body);
    h['content-type'] = 'application/json';
  }
  const res = await fetch(hub.url + urlPath, { method, headers: h, body: b, signal: controller.signal });
  return { res, controller };
}

/** A stream-mode run read to its end (or stopWhen). */
export async function streamRun(hub, name, body, opts = {}) {
  const b = typeof body === 'string' ? { input: body } : body;
  const { res, controller } = await fetchHub(hub, 'POST', `/v1/agents/${encodeURIComponent(name)}/runs`, {
    body: { ...b, mode: 'stream' },
  });
  return readNamedSse(res, { ...opts, controller });
}

/** Types of a list of events ({type} from the JSON list or {event} from SSE). */
export const typesOf = (evs) => evs.map((e) => e.type || e.event);

/**
 * Spawns `node mcp_fixture_server.mjs` (Streamable HTTP) and waits for its
 * {"listening":PORT} line. Resolves { url, port, proc, stderr(), kill(sig), exited }.
 */
export async function startMcpFixture(args = []) {
  const proc = spawn(NODE, [MCP_FIXTURE, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(proc);
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  const line = await pollUntil(
    () => {
      if (proc.exitCode !== null) throw new Error(`mcp fixture exited: ${err}`);
      const m = /\{"listening".*\}/.exec(out);
      return m && JSON.parse(m[0]);
    },
    { timeoutMs: 10_000, message: 'the MCP fixture to listen' },
  );
  return {
    url: line.url,
    port: line.listening,
    proc,
    stderr: () => err,
    exited,
    kill: (sig = 'SIGKILL') => {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, sig);
      return exited;
    },
  };
}

/** Spawns a long-lived helper process (tracked for cleanup). */
export function spawnTracked(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  procs.add(p);
  return p;
}
