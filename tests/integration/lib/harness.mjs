// Integration-test harness: starts the real agenthub binary on a free loopback
// port with its own temp data dir, and gives tests small helpers to talk to it
// (fetch, raw sockets, the CLI) plus bounded waits. Every process started here
// is killed (by its own pid) and every temp dir removed when the test file ends.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Path of the binary under test: $AGENTHUB_BIN, else ../../build/agenthub from tests/integration. */
export const BIN = process.env.AGENTHUB_BIN
  ? path.resolve(process.env.AGENTHUB_BIN)
  : path.resolve(here, '..', '..', '..', 'build', 'agenthub');

const START_TIMEOUT_MS = 10_000;

/**
 * AH_IT_STORE=postgres: hubs started with the default storage get a database
 * on a throwaway PostgreSQL (lib/pg.mjs, one server per test file, started on
 * first use) instead of a SQLite file in their data dir; the same data dir
 * (a restart) gets the same database. Lets run-related suites run unchanged on
 * PostgreSQL (npm run test:pg). A config that names storage.url keeps it.
 */
const STORE = process.env.AH_IT_STORE || 'sqlite';
let pgServer; // promise of lib/pg.mjs's server
const pgDatabases = new Map(); // data dir -> storage URL

async function defaultStorageUrl(dataDir) {
  if (STORE === 'sqlite') return `sqlite://${path.join(dataDir, 'agenthub.db')}`;
  if (STORE !== 'postgres') throw new Error(`AH_IT_STORE=${STORE}: expected sqlite or postgres`);
  if (!pgDatabases.has(dataDir)) {
    if (!pgServer) pgServer = import('./pg.mjs').then(async (m) => ({ pg: await m.startPostgres({ hook: false }), skip: m.PG_SKIP }));
    const { pg, skip } = await pgServer;
    if (!pg) throw new Error(`AH_IT_STORE=postgres: ${skip}`);
    pgDatabases.set(dataDir, await pg.newDatabase());
  }
  return pgDatabases.get(dataDir);
}
const live = new Set(); // hubs whose process may still run
const tempDirs = new Set(); // dirs to remove at the end

function cleanup() {
  for (const hub of live) {
    if (hub.proc.exitCode === null && hub.proc.signalCode === null) {
      try {
        process.kill(hub.proc.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  live.clear();
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

after(cleanup);
process.on('exit', cleanup);

/** A fresh temp dir (removed at the end of the test file unless keep is true). */
export function tempDir(keep = false) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agenthub-it-'));
  if (!keep) tempDirs.add(dir);
  return dir;
}

// ---- YAML ----------------------------------------------------------------

function yamlScalar(v) {
  if (v === null || v === undefined) return '""';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(String(v)); // a JSON string is a valid YAML double-quoted scalar
}

function yamlLines(v, indent) {
  const pad = ' '.repeat(indent);
  const out = [];
  if (Array.isArray(v)) {
    if (v.length === 0) return null;
    for (const item of v) {
      if (item && typeof item === 'object' && !Array.isArray(item) && Object.keys(item).length) {
        const sub = yamlLines(item, indent + 2);
        out.push(pad + '- ' + sub[0].trimStart(), ...sub.slice(1));
      } else {
        out.push(pad + '- ' + yamlInline(item));
      }
    }
    return out;
  }
  for (const [k, val] of Object.entries(v)) {
    if (val && typeof val === 'object') {
      const sub = yamlLines(val, indent + 2);
      if (sub && sub.length) out.push(`${pad}${k}:`, ...sub);
      else out.push(`${pad}${k}: ${Array.isArray(val) ? '[]' : '{}'}`);
    } else {
      out.push(`${pad}${k}: ${yamlScalar(val)}`);
    }
  }
  return out;
}

function yamlInline(v) {
  if (Array.isArray(v)) return '[' + v.map(yamlInline).join(', ') + ']';
  if (v && typeof v === 'object')
    return '{' + Object.entries(v).map(([k, x]) => `${k}: ${yamlInline(x)}`).join(', ') + '}';
  return yamlScalar(v);
}

/** Block-style YAML for a plain object of objects/arrays/scalars. */
export function toYaml(obj) {
  return (yamlLines(obj, 0) || []).join('\n') + '\n';
}

function isObj(v) {
  return v && typeof v === 'object' && !Array.isArray(v);
}

function merge(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over || {})) {
    out[k] = isObj(v) && isObj(base[k]) ? merge(base[k], v) : v;
  }
  return out;
}

// ---- process environment ---------------------------------------------------

/** process.env without AGENTHUB_* variables (so the caller's shell cannot leak in), plus extra. */
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTHUB_')) env[k] = v;
  return { ...env, ...extra };
}

// ---- bounded waits ---------------------------------------------------------

/**
 * Calls fn (may be async) every intervalMs until it returns a truthy value,
 * which is returned. Throws after timeoutMs with message and the last error.
 */
export async function pollUntil(fn, { timeoutMs = 5000, intervalMs = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastErr = undefined;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const why = lastErr ? ` (last error: ${lastErr.message || lastErr})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---- starting the hub ------------------------------------------------------

/**
 * Starts `agenthub serve` and waits until it logs "listening" and /readyz is 200.
 *
 * options:
 *   config      object merged over the defaults (listen 127.0.0.1:0, sqlite in the
 *               data dir or a PostgreSQL database with AH_IT_STORE=postgres, small
 *               grace), or a YAML string used as is ("{{dataDir}}" is replaced by the
 *               data dir)
 *   env         extra environment (AGENTHUB_* from the caller's shell are dropped)
 *   args        extra arguments after `serve -c FILE`
 *   dataDir     reuse this dir (e.g. a previous hub's, with keepDataDir) instead of a new one
 *   keepDataDir do not remove the data dir at the end of the file
 *   waitReady   wait for /readyz 200 (default true)
 *   prefix      command words run before the binary (e.g. ['prlimit', '--nofile=96:96', '--'])
 *
 * Returns { url, port, proc, dataDir, configPath, adminKey, logs(), stdout(), stderr(),
 *           waitLog(pred), stop(signal), kill(signal), waitExit(), exit }.
 */
export async function startHub({
  config = {},
  env = {},
  args = [],
  dataDir,
  keepDataDir = false,
  waitReady = true,
  prefix = [],
} = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`agenthub binary not found at ${BIN}: build it (make build) or set AGENTHUB_BIN`);
  }
  dataDir = dataDir || tempDir(keepDataDir);
  const configPath = path.join(dataDir, 'agenthub.yaml');
  let yaml;
  if (typeof config === 'string') {
    yaml = config.replaceAll('{{dataDir}}', dataDir);
  } else {
    const defaults = {
      server: { listen: '127.0.0.1:0', workers: 2, shutdown_grace_s: 5 },
      storage: { url: await defaultStorageUrl(dataDir) },
      log: { level: 'info' },
    };
    yaml = toYaml(merge(defaults, config));
  }
  fs.writeFileSync(configPath, yaml);

  const fullEnv = cleanEnv(env);
  const argv = [...prefix, BIN, 'serve', '-c', configPath, ...args];
  const proc = spawn(argv[0], argv.slice(1), {
    env: fullEnv,
    cwd: dataDir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      hub.exit = { code, signal };
      live.delete(hub);
      resolve(hub.exit);
    });
  });
  // A spawn failure (ENOENT, EACCES) surfaces as 'error' and then 'exit' may never come.
  proc.on('error', (e) => {
    hub.spawnError = e;
  });

  const hub = {
    proc,
    dataDir,
    configPath,
    exit: null,
    url: null,
    port: null,
    adminKey: env.AGENTHUB_ADMIN_KEY || null,
    stdout: () => out,
    stderr: () => err,
    logs: () => parseJsonLines(err),
    alive: () => hub.exit === null && !hub.spawnError,
    /** Waits until a log line satisfies pred (object => bool); returns it. */
    waitLog: (pred, { timeoutMs = 5000, message = 'log line' } = {}) =>
      pollUntil(() => hub.logs().find(pred), { timeoutMs, intervalMs: 20, message }),
    /** Waits for the process to exit; returns its exit code (null if killed by a signal). */
    waitExit: async ({ timeoutMs = 15_000 } = {}) => {
      let timer;
      const t = new Promise((_, rej) => {
        timer = setTimeout(
          () => rej(new Error(`agenthub did not exit within ${timeoutMs} ms; stderr:\n${tail(err)}`)),
          timeoutMs,
        );
      });
      try {
        const e = await Promise.race([exited, t]);
        return e.code;
      } finally {
        clearTimeout(timer);
      }
    },
    /** Sends signal (default SIGTERM) to this process only. */
    kill: (signal = 'SIGTERM') => {
      if (hub.alive()) process.kill(proc.pid, signal);
    },
    /** Sends signal and waits for exit; returns the exit code. */
    stop: async (signal = 'SIGTERM', opts) => {
      hub.kill(signal);
      return hub.waitExit(opts);
    },
  };
  live.add(hub);

  const fail = (why) => {
    hub.kill('SIGKILL');
    return new Error(
      `agenthub serve ${why}\nconfig (${configPath}):\n${yaml}\nstdout:\n${tail(out)}\nstderr:\n${tail(err)}`,
    );
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  let listening;
  while (!listening) {
    if (hub.spawnError) throw fail(`could not be started: ${hub.spawnError.message}`);
    if (hub.exit) throw fail(`exited during start (code ${hub.exit.code}, signal ${hub.exit.signal})`);
    if (Date.now() > deadline) throw fail(`did not log "listening" within ${START_TIMEOUT_MS} ms`);
    listening = hub.logs().find((l) => l.msg === 'listening' && l.addr);
    if (!listening) await new Promise((r) => setTimeout(r, 20));
  }
  const m = /:(\d+)$/.exec(listening.addr);
  if (!m) throw fail(`logged an unparsable address ${listening.addr}`);
  hub.port = Number(m[1]);
  hub.url = `http://127.0.0.1:${hub.port}`;

  // The banner (and the first-start key before it) is on stdout; wait for it so the key is complete.
  try {
    await pollUntil(() => /listening on http/.test(out), { timeoutMs: Math.max(deadline - Date.now(), 500), intervalMs: 20, message: 'the stdout banner' });
  } catch (e) {
    throw fail(e.message);
  }
  const key = /^\s+(ahk_[A-Za-z0-9]+)\s*$/m.exec(out);
  if (!hub.adminKey && key) hub.adminKey = key[1];

  if (waitReady) {
    try {
      await pollUntil(async () => (await getOnce(hub.port, '/readyz')).status === 200, {
        timeoutMs: Math.max(deadline - Date.now(), 1000),
        message: '/readyz 200',
      });
    } catch (e) {
      throw fail(e.message);
    }
  }
  return hub;
}

function tail(s, n = 4000) {
  return s.length > n ? '...' + s.slice(-n) : s;
}

/** Parses JSON-lines text; lines that are not JSON objects are skipped. */
export function parseJsonLines(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      /* partial line or not JSON */
    }
  }
  return out;
}

/**
 * One GET on a fresh connection that is closed afterwards (so it does not
 * count against server.max_connections later). Resolves {status, headers, text}.
 */
export function getOnce(port, urlPath, { headers = {}, timeoutMs = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const r = http.request(
      { host: '127.0.0.1', port, path: urlPath, method: 'GET', agent: false, headers: { connection: 'close', ...headers }, timeout: timeoutMs },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
      },
    );
    r.on('timeout', () => r.destroy(new Error(`GET ${urlPath} timed out`)));
    r.on('error', reject);
    r.end();
  });
}

// ---- HTTP helpers ----------------------------------------------------------

/**
 * fetch() against the hub. key: API key for "Authorization: Bearer" (default the
 * hub's admin key; null for none). body: object (sent as JSON) or string/Buffer.
 * Resolves { status, headers (Headers), text, json (parsed or undefined) }.
 */
export async function req(hub, method, urlPath, { headers = {}, body, key } = {}) {
  const h = { ...headers };
  const k = key === undefined ? hub.adminKey : key;
  if (k) h.authorization = `Bearer ${k}`;
  let b = body;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    b = JSON.stringify(body);
    if (!Object.keys(h).some((x) => x.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
  }
  const res = await fetch(hub.url + urlPath, { method, headers: h, body: b, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * Raw bytes over one TCP connection, for malformed requests, slow clients,
 * pipelining. bytes: string/Buffer, or an array of them where a number means
 * "pause that many ms before the next part".
 * Resolves when the server closes the socket, when until(text) returns true,
 * or after timeoutMs: { text, closed, timedOut, error }.
 * keepOpen: do not close the socket at the end; it is returned as .socket.
 */
export function rawHttp(port, bytes, { timeoutMs = 3000, until, keepOpen = false } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    let done = false;
    let timer;
    const text = () => Buffer.concat(chunks).toString('latin1');
    const finish = (extra) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!keepOpen || extra.closed) sock.destroy();
      resolve({ text: text(), closed: false, timedOut: false, error: null, socket: keepOpen ? sock : undefined, ...extra });
    };
    timer = setTimeout(() => finish({ timedOut: true }), timeoutMs);
    sock.on('data', (d) => {
      chunks.push(d);
      if (until && until(text())) finish({});
    });
    sock.on('end', () => finish({ closed: true }));
    sock.on('close', () => finish({ closed: true }));
    sock.on('error', (e) => finish({ closed: true, error: e }));
    sock.on('connect', async () => {
      const parts = Array.isArray(bytes) ? bytes : [bytes];
      for (const p of parts) {
        if (done || sock.destroyed) return;
        if (typeof p === 'number') await new Promise((r) => setTimeout(r, p));
        else sock.write(p);
      }
    });
  });
}

/**
 * A raw TCP connection kept open across steps (keep-alive, slow bodies,
 * holding connections). Resolves once connected:
 * { socket, write(bytes), text(), responses(), closed(), waitFor(pred, {timeoutMs}),
 *   waitResponses(n, {timeoutMs}), waitClosed({timeoutMs}), close() }.
 * waitFor resolves with the text when pred(text) is true, or rejects after
 * timeoutMs (naming what arrived); it also resolves if pred is true at close.
 */
export function connect(port, { timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    let isClosed = false;
    let error = null;
    const waiters = new Set();
    const text = () => Buffer.concat(chunks).toString('latin1');
    const wake = () => {
      for (const w of [...waiters]) w();
    };
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to port ${port} timed out`));
    }, timeoutMs);
    sock.on('data', (d) => {
      chunks.push(d);
      wake();
    });
    sock.on('close', () => {
      isClosed = true;
      wake();
    });
    sock.on('error', (e) => {
      error = e;
      if (!conn) {
        clearTimeout(timer);
        reject(e);
      }
    });
    let conn = null;
    sock.on('connect', () => {
      clearTimeout(timer);
      conn = {
        socket: sock,
        text,
        responses: () => parseResponses(text()),
        closed: () => isClosed,
        error: () => error,
        write: (b) => new Promise((res) => sock.write(b, () => res())),
        waitFor(pred, { timeoutMs: t = 3000, message = 'data' } = {}) {
          return new Promise((res, rej) => {
            const check = () => {
              if (pred(text())) {
                done();
                res(text());
              } else if (isClosed) {
                done();
                rej(new Error(`connection closed while waiting for ${message}; got: ${JSON.stringify(text())}`));
              }
            };
            const tm = setTimeout(() => {
              done();
              rej(new Error(`timed out after ${t} ms waiting for ${message}; got: ${JSON.stringify(text())}`));
            }, t);
            const done = () => {
              clearTimeout(tm);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
        async waitResponses(n, opts = {}) {
          await conn.waitFor((t) => parseResponses(t).length >= n, { message: `${n} response(s)`, ...opts });
          return parseResponses(text());
        },
        waitClosed({ timeoutMs: t = 3000 } = {}) {
          return new Promise((res, rej) => {
            const check = () => {
              if (isClosed) {
                done();
                res(true);
              }
            };
            const tm = setTimeout(() => {
              done();
              rej(new Error(`connection still open after ${t} ms; got: ${JSON.stringify(text())}`));
            }, t);
            const done = () => {
              clearTimeout(tm);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
        close: () => sock.destroy(),
      };
      resolve(conn);
    });
  });
}

/**
 * Splits raw HTTP/1.x response text into complete responses:
 * [{ status, reason, version, headers (lower-case keys), body }].
 * Bodies are delimited by Content-Length (or chunked); an incomplete tail is dropped.
 */
export function parseResponses(text) {
  const out = [];
  let rest = text;
  while (rest.length) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const m = /^(HTTP\/\d\.\d) (\d{3}) ?(.*)$/.exec(lines[0]);
    if (!m) break;
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    let body = '';
    let after = rest.slice(end + 4);
    if (headers['transfer-encoding'] && /chunked/i.test(headers['transfer-encoding'])) {
      let p = 0;
      let complete = false;
      for (;;) {
        const le = after.indexOf('\r\n', p);
        if (le < 0) break;
        const size = parseInt(after.slice(p, le), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const te = after.indexOf('\r\n', le + 2);
          if (te < 0) break;
          p = te + 2;
          complete = true;
          break;
        }
        if (after.length < le + 2 + size + 2) break;
        body += after.slice(le + 2, le + 2 + size);
        p = le + 2 + size + 2;
      }
      if (!complete) break;
      after = after.slice(p);
    } else {
      const n = Number(headers['content-length'] || 0);
      if (after.length < n) break;
      body = after.slice(0, n);
      after = after.slice(n);
    }
    out.push({ version: m[1], status: Number(m[2]), reason: m[3], headers, body });
    rest = after;
  }
  return out;
}

/** Resolves 'refused' if a new TCP connection to port is refused, 'connected' if accepted. */
export function tryConnect(port, { timeoutMs = 2000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('timeout');
    }, timeoutMs);
    sock.on('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve('connected');
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      resolve(e.code === 'ECONNREFUSED' ? 'refused' : `error ${e.code}`);
    });
  });
}

// ---- CLI -------------------------------------------------------------------

/** Runs the binary with args; resolves { code, signal, stdout, stderr }. Env: clean + env. */
export function runCli(args, { env = {}, cwd, timeoutMs = 10_000, input } = {}) {
  const r = spawnSync(BIN, args, {
    env: cleanEnv(env),
    cwd: cwd || os.tmpdir(),
    timeout: timeoutMs,
    encoding: 'utf8',
    input,
  });
  if (r.error && r.error.code !== 'ETIMEDOUT') throw r.error;
  if (r.error) throw new Error(`agenthub ${args.join(' ')} did not finish within ${timeoutMs} ms`);
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts an OpenAI-shaped error body and returns its error object. */
export function errorOf(res) {
  const e = res.json && res.json.error;
  if (!e || typeof e.message !== 'string' || typeof e.type !== 'string' || !('code' in e) || !('param' in e)) {
    throw new Error(`not an OpenAI-shaped error (status ${res.status}): ${res.text}`);
  }
  return e;
}
