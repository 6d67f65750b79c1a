// valgrind.test.mjs - `agenthub serve` and `agenthub mock-llm` run their main
// paths under valgrind (memcheck) and exit clean: no invalid read or write, no
// use of uninitialised memory, nothing definitely or indirectly lost at exit.
//
// One hub, started under `valgrind --error-exitcode=99`, serves: the gateway
// (in-process mock, an `openai` provider and an `anthropic` provider talking
// HTTP/SSE to `agenthub mock-llm`, itself under valgrind), a client that
// leaves mid-stream, errors (bad JSON, unknown model, a key over its rpm), an
// API key created through the API, embeddings, /v1/models, runs (sync, stream,
// async) with an HTTP tool and a stdio MCP tool, an approval, a cancel,
// sessions, usage and /metrics. Then SIGTERM: both processes must exit 0,
// which valgrind turns into 99 on any error or leak (the report is printed).
// A second hub does the same on the scale-out stores: a throwaway PostgreSQL
// (lib/pg.mjs) and rate limits shared through a throwaway redis-server.
// ASan/UBSan (make asan) cover the other suites; this one covers what they
// cannot: the uninstrumented libraries (libcurl, libevent, SQLite, jansson)
// used by our code, and the shutdown path of the real binary.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { startHub, req, pollUntil } from './lib/harness.mjs';
import { startMockLlm, postHub, closedPort } from './lib/gateway.mjs';
import { startPostgres, PG_SKIP } from './lib/pg.mjs';
import { agentDoc, callTool, startRun, waitRun, NODE, MCP_FIXTURE } from './lib/runtime.mjs';

const ADMIN = 'adm-valgrind-suite-key-0123456789abcdef';
const HAVE_VALGRIND = spawnSync('valgrind', ['--version']).status === 0;
const SKIP =
  process.env.AH_ASAN === '1'
    ? 'an ASan build (make asan) does not run under valgrind; make test runs this suite'
    : HAVE_VALGRIND
      ? false
      : 'valgrind not installed (apt-get install valgrind, or make test)';
const VALGRIND = [
  'valgrind',
  '--quiet',
  '--error-exitcode=99',
  '--leak-check=full',
  '--show-leak-kinds=definite,indirect',
  '--errors-for-leak-kinds=definite,indirect',
  '--num-callers=30',
];

/** The valgrind report in a process's stderr (its lines start with ==pid==). */
const report = (stderr) =>
  stderr
    .split('\n')
    .filter((l) => /^==\d+==/.test(l))
    .join('\n');

let mock;
let hub;
let pg; // null: PostgreSQL is not installed
let redis; // the redis-server child, or null when not installed
let tools;
let toolsUrl;
let calls = 0;
const lookupTool = () => ({
  type: 'http',
  name: 'lookup',
  url: `${toolsUrl}/items/{id}`,
  parameters: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
});

before(async () => {
  if (SKIP) return;
  tools = http.createServer((rq, rs) => {
    calls++;
    rq.resume();
    rq.on('end', () => {
      // /items/slow...: answers after 3 s (a tool call in flight when the hub stops)
      const t = setTimeout(
        () => {
          if (rs.destroyed) return;
          rs.writeHead(200, { 'content-type': 'application/json' });
          rs.end(JSON.stringify({ ok: true, path: rq.url }));
        },
        rq.url.startsWith('/items/slow') ? 3000 : 0,
      );
      rs.on('close', () => clearTimeout(t));
    });
  });
  await new Promise((r) => tools.listen(0, '127.0.0.1', r));
  toolsUrl = `http://127.0.0.1:${tools.address().port}`;
  mock = await startMockLlm([], { prefix: VALGRIND, startTimeoutMs: 60_000 });
  hub = await startHub({
    prefix: VALGRIND,
    env: { AGENTHUB_ADMIN_KEY: ADMIN },
    config: {
      server: { shutdown_grace_s: 10 },
      runs: { claim_interval_s: 0.1 },
      providers: [
        { name: 'local', type: 'mock' },
        { name: 'up', type: 'openai', base_url: `${mock.url}/v1`, api_key: 'x', max_retries: 1 },
        { name: 'ant', type: 'anthropic', base_url: mock.url, api_key: 'x', max_retries: 0 },
      ],
      models: [
        { name: 'mock', targets: [{ provider: 'local', model: 'echo' }], price: { input_per_mtok: 1, output_per_mtok: 2 } },
        { name: 'u', targets: [{ provider: 'up', model: 'echo' }] },
        { name: 'a', targets: [{ provider: 'ant', model: 'claude-mock' }] },
      ],
    },
  });
  const apply = async (name, spec) => {
    const r = await req(hub, 'POST', '/v1/agents', { body: agentDoc(name, spec) });
    assert.ok(r.status === 200 || r.status === 201, `apply ${name}: ${r.status} ${r.text}`);
  };
  const httpTool = lookupTool();
  await apply('tooly', { tools: [httpTool] });
  await apply('gated', { tools: [httpTool], approval: { tools: ['lookup'] } });
  await apply('mcpy', { tools: [{ type: 'mcp', server: { command: [NODE, MCP_FIXTURE, '--stdio'] }, prefix: 'st_', timeout_s: 60 }] });
  await apply('upstream', { model: 'u', session: { ttl_s: 600 } });
});

after(async () => {
  if (redis && redis.exitCode === null) redis.kill('SIGKILL');
  try {
    if (hub && hub.alive()) hub.kill('SIGKILL');
  } catch {
    /* already gone */
  }
  if (tools) await new Promise((r) => tools.close(r));
});

test('the gateway paths run clean under valgrind', { skip: SKIP, timeout: 120_000 }, async () => {
  for (const model of ['mock', 'u', 'a']) {
    const r = await postHub(hub, '/v1/chat/completions', { model, messages: [{ role: 'user', content: `hello ${model}` }] }, { key: ADMIN });
    assert.equal(r.status, 200, `${model}: ${await r.text()}`);
    const s = await postHub(hub, '/v1/chat/completions', { model, stream: true, messages: [{ role: 'user', content: `stream ${model}` }] }, { key: ADMIN });
    assert.equal(s.status, 200);
    const text = await s.text();
    assert.match(text, /data: \[DONE\]/, `${model} stream ends with [DONE]`);
  }
  // A client that leaves mid-stream: the upstream call is cancelled.
  const ac = new AbortController();
  const slow = await postHub(hub, '/v1/chat/completions', { model: 'u', stream: true, messages: [{ role: 'user', content: 'x' }], max_tokens: 200 }, { key: ADMIN, signal: ac.signal });
  ac.abort();
  await slow.body?.cancel().catch(() => {});

  const e = await postHub(hub, '/v1/embeddings', { model: 'mock', input: ['one', 'two'] }, { key: ADMIN });
  assert.equal(e.status, 200, await e.text());
  assert.equal((await req(hub, 'GET', '/v1/models', { key: ADMIN })).status, 200);
  const bad = await fetch(`${hub.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{"model": "mock", ' });
  assert.equal(bad.status, 400);
  const unknown = await postHub(hub, '/v1/chat/completions', { model: 'nope', messages: [{ role: 'user', content: 'x' }] }, { key: ADMIN });
  assert.equal(unknown.status, 404);

  const k = await req(hub, 'POST', '/v1/keys', { key: ADMIN, body: { name: 'vg', role: 'user' } });
  assert.equal(k.status, 201, k.text);
  const lim = await req(hub, 'PUT', `/v1/keys/${k.json.id}/limits`, { key: ADMIN, body: { rpm: 1 } });
  assert.equal(lim.status, 200, lim.text);
  const statuses = [];
  for (let i = 0; i < 2; i++) {
    const r = await postHub(hub, '/v1/chat/completions', { model: 'mock', messages: [{ role: 'user', content: 'x' }] }, { key: k.json.key });
    statuses.push(r.status);
    await r.text();
  }
  assert.deepEqual(statuses, [200, 429]);
});

test('the runtime paths run clean under valgrind', { skip: SKIP, timeout: 120_000 }, async () => {
  const sync = await startRun(hub, 'tooly', { input: callTool('lookup', { id: 'a1' }), mode: 'sync' });
  assert.equal(sync.status, 200, sync.text);
  assert.equal(sync.json.status, 'completed');
  const stream = await startRun(hub, 'mcpy', { input: callTool('st_add', { a: 2, b: 3 }), mode: 'stream' });
  assert.equal(stream.status, 200, stream.text);
  assert.match(stream.text, /event: run.completed/);
  const q = await startRun(hub, 'upstream', { input: 'remember me', mode: 'async', session_id: 'vg-session' });
  assert.equal(q.status, 202, q.text);
  assert.equal((await waitRun(hub, q.json.id, { timeoutMs: 60_000 })).status, 'completed');
  assert.equal((await req(hub, 'GET', '/v1/sessions/vg-session')).status, 200);

  const g = await startRun(hub, 'gated', { input: callTool('lookup', { id: 'g1' }), mode: 'async' });
  assert.equal(g.status, 202, g.text);
  await waitRun(hub, g.json.id, { statuses: ['requires_action'], timeoutMs: 60_000 });
  const d = await req(hub, 'POST', `/v1/runs/${g.json.id}/approvals`, { body: { tool_call_id: 'call_1', decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  assert.equal((await waitRun(hub, g.json.id, { timeoutMs: 60_000 })).status, 'completed');

  const c = await startRun(hub, 'gated', { input: callTool('lookup', { id: 'c1' }), mode: 'async' });
  await waitRun(hub, c.json.id, { statuses: ['requires_action'], timeoutMs: 60_000 });
  const cx = await req(hub, 'POST', `/v1/runs/${c.json.id}/cancel`);
  assert.equal(cx.status, 202, cx.text);
  assert.equal((await waitRun(hub, c.json.id, { timeoutMs: 60_000 })).status, 'cancelled');
  assert.ok(calls >= 2, 'the HTTP tool was called');

  assert.equal((await req(hub, 'GET', '/v1/usage')).status, 200);
  assert.equal((await req(hub, 'GET', '/metrics')).status, 200);
});

test('SIGTERM: both processes exit 0 under valgrind (no memory error, nothing lost)', { skip: SKIP, timeout: 120_000 }, async () => {
  const code = await hub.stop('SIGTERM', { timeoutMs: 90_000 });
  assert.equal(code, 0, `agenthub serve under valgrind exited ${code}:\n${report(hub.stderr())}`);
  const m = await mock.stop('SIGTERM');
  assert.equal(m.code, 0, `agenthub mock-llm under valgrind exited ${m.code}:\n${report(mock.stderr())}`);
});

/** redis-server on a free loopback port, no persistence; resolves its URL. */
async function startRedis() {
  const port = await closedPort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return `redis://127.0.0.1:${port}/0`;
    if (Date.now() > deadline || redis.exitCode !== null) throw new Error('redis-server did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const HAVE_REDIS = spawnSync('redis-server', ['--version']).status === 0;
const SCALE_SKIP = SKIP || (HAVE_REDIS ? false : 'redis-server not installed (apt-get install redis-server, or make test)');

test('on PostgreSQL with Redis limits: queue, runs, gateway and exit run clean under valgrind', { skip: SCALE_SKIP, timeout: 180_000 }, async (t) => {
  pg = await startPostgres();
  if (!pg) {
    t.skip(PG_SKIP);
    return;
  }
  const redisUrl = await startRedis();
  const h = await startHub({
    prefix: VALGRIND,
    env: { AGENTHUB_ADMIN_KEY: ADMIN },
    config: {
      server: { shutdown_grace_s: 1 },
      storage: { url: await pg.newDatabase() },
      redis: { url: redisUrl },
      runs: { claim_interval_s: 0.1 },
      providers: [{ name: 'local', type: 'mock' }],
      models: [{ name: 'mock', targets: [{ provider: 'local', model: 'echo' }] }],
    },
  });
  try {
    const r = await req(h, 'POST', '/v1/agents', { body: agentDoc('pgy', { tools: [lookupTool()] }) });
    assert.ok(r.status === 200 || r.status === 201, r.text);
    const ids = [];
    for (let i = 0; i < 20; i++) {
      const q = await startRun(h, 'pgy', { input: `async ${i}`, mode: 'async' });
      assert.equal(q.status, 202, q.text);
      ids.push(q.json.id);
    }
    const s = await startRun(h, 'pgy', { input: 'sync one', mode: 'sync' });
    assert.equal(s.status, 200, s.text);
    for (const id of ids) assert.equal((await waitRun(h, id, { timeoutMs: 60_000 })).status, 'completed');

    const k = await req(h, 'POST', '/v1/keys', { body: { name: 'vg-redis', role: 'user' } });
    assert.equal(k.status, 201, k.text);
    assert.equal((await req(h, 'PUT', `/v1/keys/${k.json.id}/limits`, { body: { rpm: 2 } })).status, 200);
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      const c = await postHub(h, '/v1/chat/completions', { model: 'mock', messages: [{ role: 'user', content: 'x' }] }, { key: k.json.key });
      statuses.push(c.status);
      await c.text();
    }
    assert.deepEqual(statuses, [200, 200, 429], 'the Redis limiter counts the key\'s requests');

    // Stop while runs wait on a slow tool and more are queued: past the 1 s grace the worker
    // stops them with store writes in flight; their answers must still be taken, not leaked.
    const before = calls;
    for (let i = 0; i < 10; i++) {
      const q = await startRun(h, 'pgy', { input: callTool('lookup', { id: `slow-${i}` }), mode: 'async' });
      assert.equal(q.status, 202, q.text);
    }
    await pollUntil(() => calls > before, { timeoutMs: 30_000, message: 'a slow tool call in flight' });
  } finally {
    const code = await h.stop('SIGTERM', { timeoutMs: 90_000 });
    assert.equal(code, 0, `agenthub serve (PostgreSQL, Redis) under valgrind exited ${code}:\n${report(h.stderr())}`);
  }
});
