// The durable-runs scenarios, shared by the suites that run them on each store
// backend (durable.test.mjs: SQLite, durable_pg.test.mjs: PostgreSQL):
// two `agenthub serve` on one store, kill -9 mid-way, the survivor takes the
// runs over (after runs.lease_s) and every run ends completed exactly once; a
// sync run whose hub dies is finished by the other; queued runs past
// runs.queue_ttl_s expire (run.expired event, webhook, metrics); a restarted
// hub finishes runs queued while it was down; a resumed tool call keeps its
// Idempotency-Key; a paused hub that lost its lease makes no more tool calls;
// SIGTERM hands a hub's runs back to the other at once; approvals are taken by
// any hub, and pending ones expire; an agent's webhook_url is used when the run
// gives none (signed deliveries checked by a local receiver).
//
// Tool calls are counted by a node HTTP server (fixtures/durable_tool_server.mjs)
// per run and per Idempotency-Key ("<run id>:<tool call id>"): a call re-sent
// after a crash with the same key is allowed (and reported); a second key for
// the same run is a duplicated side effect and fails the test.
// The tool sends `X-Hub: ${DURABLE_HUB}` (expanded from each hub's environment),
// so the tool server also knows which hub made each call.
//
//   await durableTests({ backend: 'sqlite', storageUrl: (dir) => `sqlite://${dir}/agenthub.db` });
//
// registers the tests (node:test) of the calling file (backend names it in the
// report lines). storageUrl(dir) resolves
// the storage.url of a new, empty store (dir is a fresh temp dir it may use);
// every hub of one scenario gets the same URL.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startHub, req, tempDir, toYaml, pollUntil } from './harness.mjs';
import { startRun, getRun, runEvents, waitRun, FINAL, parseNamedSse } from './runtime.mjs';
import { startDurableToolServer } from '../fixtures/durable_tool_server.mjs';
import { startDurableLlm } from '../fixtures/durable_llm.mjs';
import { scrape } from './gateway.mjs';
import { sum } from './prom.mjs';
import crypto from 'node:crypto';
import http from 'node:http';

export const ADMIN = 'adm-durable-suite-key-0123456789abcdefghijklmnop';
export const AGENT = 'recorder'; // model `slow`: the in-process mock (tool call id always call_1)
export const AGENT_FRESH = 'recorder-fresh'; // model `fresh`: durable_llm.mjs (fresh tool call ids per answer)
export const LEASE_S = 2;

export const input = (id) => `call_tool record ${JSON.stringify({ id: String(id) })}`;

/** Runs fn over items with at most n at once; resolves the results in order. */
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

/** The run id in an Idempotency-Key "<run id>:<tool call id>". */
export const runOfKey = (k) => (k || '').split(':')[0];

export const count = (evs, type) => evs.filter((e) => e.type === type).length;

export const WEBHOOK_SECRET = 'whsec-durable-suite-0123456789';

/**
 * A webhook receiver on loopback: keeps every POST with its raw body, and
 * whether its X-Agenthub-Signature verifies as docs/webhooks.md says.
 */
async function startWebhookReceiver() {
  const got = [];
  const verify = (header, body) => {
    let t = null;
    const sigs = [];
    for (const item of (header ?? '').split(',')) {
      const [k, v] = item.trim().split('=');
      if (k === 't') t = v;
      else if (k === 'v1') sigs.push(Buffer.from(v ?? '', 'hex'));
    }
    if (!/^\d+$/.test(t ?? '') || sigs.length === 0) return false;
    const expected = crypto.createHmac('sha256', WEBHOOK_SECRET).update(`${t}.`).update(body).digest();
    const ok = sigs.some((x) => x.length === expected.length && crypto.timingSafeEqual(x, expected));
    return ok && Math.abs(Date.now() / 1000 - Number(t)) <= 300;
  };
  const server = http.createServer((rq, rs) => {
    const chunks = [];
    rq.on('data', (c) => chunks.push(c));
    rq.on('end', () => {
      const body = Buffer.concat(chunks);
      let json = null;
      try {
        json = JSON.parse(body);
      } catch {
        /* kept as null */
      }
      got.push({ path: rq.url, headers: rq.headers, json, verified: verify(rq.headers['x-agenthub-signature'], body) });
      rs.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Deliveries for run id. */
    forRun: (id) => got.filter((g) => g.json && g.json.data && g.json.data.id === id),
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}


/**
 * The tool server, the fresh-id model and store/hub makers of the scenarios
 * (also for other suites' scenarios on the same setup). Stopped at the end of
 * the file. storageUrl(dir): see the file comment; midMs: how long the tool
 * takes for ids starting with "mid" (others 200 ms, "slow" 25 s).
 * Resolves { tools, llm, makeStore() -> {dir, url, agents}, hubOn(store, name, {runs, storage, dataDir, env, server}),
 *            toolStats(id) }.
 */
export async function durableFixture({ storageUrl, midMs = 1500 }) {
  const tools = await startDurableToolServer({ delayMs: 200, slowMs: 25_000, midMs });
  const llm = await startDurableLlm();
  const hooks = await startWebhookReceiver();
  after(() => Promise.all([tools.stop(), llm.stop(), hooks.stop()]));

  /**
   * A new store: its storage URL and an agents_dir with the agents `recorder`,
   * `recorder-fresh`, `approver` (record needs an approval), `approver-quick`
   * (approvals expire after 1 s) and `hooked` (spec.webhook_url: the receiver).
   */
  async function makeStore() {
    const dir = tempDir();
    const url = await storageUrl(dir);
    const agents = path.join(dir, 'agents');
    fs.mkdirSync(agents);
    const doc = (name, model, extra = {}) => ({
      apiVersion: 'agenthub/v1',
      kind: 'Agent',
      metadata: { name },
      spec: {
        model,
        tools: [
          {
            type: 'http',
            name: 'record',
            description: 'record one call',
            url: `${tools.url}/record/{id}`,
            method: 'POST',
            headers: { 'X-Hub': '${DURABLE_HUB}' },
            parameters: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
          },
        ],
        ...extra,
      },
    });
    fs.writeFileSync(path.join(agents, `${AGENT}.yaml`), toYaml(doc(AGENT, 'slow')));
    fs.writeFileSync(path.join(agents, `${AGENT_FRESH}.yaml`), toYaml(doc(AGENT_FRESH, 'fresh')));
    fs.writeFileSync(path.join(agents, 'approver.yaml'), toYaml(doc('approver', 'slow', { approval: { tools: ['record'] } })));
    fs.writeFileSync(
      path.join(agents, 'approver-quick.yaml'),
      toYaml(doc('approver-quick', 'slow', { approval: { tools: ['record'], timeout_s: 1 } })),
    );
    fs.writeFileSync(path.join(agents, 'hooked.yaml'), toYaml(doc('hooked', 'slow', { webhook_url: `${hooks.url}/agent-hook` })));
    return { dir, url, agents };
  }

  /** Starts a hub named name (its tool calls say X-Hub: name) on store. */
  function hubOn(store, name, { runs = {}, storage = {}, dataDir, env = {}, server } = {}) {
    return startHub({
      dataDir,
      config: {
        ...(server ? { server } : {}),
        webhooks: { secret: WEBHOOK_SECRET },
        storage: { url: store.url, ...storage },
        runs: { lease_s: LEASE_S, claim_interval_s: 0.1, max_concurrent: 100, ...runs },
        providers: [
          { name: 'local', type: 'mock' },
          { name: 'fresh-up', type: 'openai', base_url: `${llm.url}/v1`, api_key: 'sk-durable-test', max_retries: 0 },
        ],
        models: [
          { name: 'slow', targets: [{ provider: 'local', model: 'echo?latency_ms=300' }] },
          { name: 'fresh', targets: [{ provider: 'fresh-up', model: 'fresh' }] },
        ],
        agents_dir: store.agents,
      },
      env: { AGENTHUB_ADMIN_KEY: ADMIN, DURABLE_HUB: name, ...env },
    });
  }

  /**
   * Per tool id: calls, distinct keys, duplicates (calls - distinct keys), hubs.
   * Asserts the at-most-once-per-key contract for one run.
   */
  function toolStats(id) {
    const calls = tools.byId(id);
    const keys = tools.keysOf(id);
    return {
      calls: calls.length,
      keys: [...keys.keys()],
      dups: calls.length - keys.size,
      hubs: calls.map((c) => c.headers['x-hub']),
    };
  }

  return { tools, llm, hooks, makeStore, hubOn, toolStats };
}

/** Registers the durable-runs tests on the store storageUrl makes (see the file comment). */
export async function durableTests({ backend, storageUrl }) {
  const { tools, hooks, makeStore, hubOn, toolStats } = await durableFixture({ storageUrl });

  test('kill -9 one of two hubs mid-way: 200 async runs all complete exactly once', { timeout: 60_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A');
    const b = await hubOn(store, 'B');
    const N = 200;
    const ids = Array.from({ length: N }, (_, i) => `m${i}`);

    // Submit all 200, alternating hubs; every answer must be 202 queued.
    const runIds = await pool(ids, 20, async (id, i) => {
      const hub = i % 2 === 0 ? a : b;
      const r = await startRun(hub, AGENT, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, `run ${id} on hub ${i % 2 ? 'B' : 'A'}: ${r.text}`);
      assert.equal(r.json.status, 'queued');
      return r.json.id;
    });
    assert.equal(new Set(runIds).size, N, 'run ids are unique');
    const idOfRun = new Map(runIds.map((r, i) => [r, ids[i]]));

    // Once some runs are done (many still mid-way), kill -9 hub A (its pid only).
    await pollUntil(
      async () => {
        const r = await req(b, 'GET', '/v1/runs?status=completed&limit=100');
        return r.status === 200 && r.json.data.length > 20;
      },
      { timeoutMs: 20_000, intervalMs: 20, message: 'more than 20 completed runs' },
    );
    const doneBeforeKill = new Set();
    const killAt = Date.now();
    a.kill('SIGKILL');
    const code = await a.waitExit();
    assert.equal(code, null, 'hub A was killed by the signal');
    assert.equal(a.exit.signal, 'SIGKILL');
    // Runs already final at the kill (a snapshot just after it: a run that finished
    // between the kill and this read finished on B, which is fine either way).
    for (const rid of runIds) {
      const r = await getRun(b, rid);
      if (r && r.status === 'completed') doneBeforeKill.add(rid);
    }

    // Bounded: every run final via hub B.
    const finals = new Map();
    await pollUntil(
      async () => {
        const left = runIds.filter((r) => !finals.has(r));
        await pool(left, 16, async (rid) => {
          const r = await getRun(b, rid);
          if (r && FINAL.includes(r.status)) finals.set(rid, r);
        });
        return finals.size === N;
      },
      { timeoutMs: 40_000, intervalMs: 200, message: 'all 200 runs to be final on hub B' },
    );
    assert.ok(b.alive(), 'hub B is still running');

    const notCompleted = [...finals.values()].filter((r) => r.status !== 'completed');
    assert.deepEqual(
      notCompleted.map((r) => `${r.id} ${r.status} ${r.error && r.error.code}`),
      [],
      'every run completed',
    );

    // Events, tool calls, takeover.
    const evs = new Map();
    await pool(runIds, 16, async (rid) => evs.set(rid, await runEvents(b, rid)));
    let dups = 0;
    const dupRuns = [];
    const problems = [];
    const onA = [];
    let firstResume = Infinity;
    let resumedCount = 0;
    let turn1Repeated = 0; // resumed runs whose model was asked turn 1 again (see the todo test below)
    for (const rid of runIds) {
      const id = idOfRun.get(rid);
      const run = finals.get(rid);
      const e = evs.get(rid);
      if (!/^tool said: /.test(run.output || '')) problems.push(`${id} ${rid}: output ${JSON.stringify(run.output)}`);
      if (!run.output || !run.output.includes(`"id":"${id}"`)) problems.push(`${id} ${rid}: output is not its own tool result`);
      const st = toolStats(id);
      if (st.calls < 1) problems.push(`${id} ${rid}: the tool server never saw its call`);
      if (st.keys.length !== 1) problems.push(`${id} ${rid}: ${st.keys.length} distinct idempotency keys ${JSON.stringify(st.keys)}`);
      if (st.keys.some((k) => runOfKey(k) !== rid)) problems.push(`${id} ${rid}: key of another run ${JSON.stringify(st.keys)}`);
      if (st.dups > 0) {
        dups += st.dups;
        dupRuns.push(`${id} (${rid}): ${st.calls} calls, hubs ${st.hubs.join(',')}`);
      }
      const nCompleted = count(e, 'run.completed');
      if (nCompleted !== 1) problems.push(`${id} ${rid}: ${nCompleted} run.completed events`);
      if (count(e, 'run.failed') || count(e, 'run.cancelled')) problems.push(`${id} ${rid}: failed/cancelled events`);
      const resumed = e.filter((x) => x.type === 'run.resumed');
      if (e.filter((x) => x.type === 'model.request' && x.data && x.data.turn === 1).length > 1) turn1Repeated++;
      for (const r of resumed) {
        resumedCount++;
        firstResume = Math.min(firstResume, r.created_at);
        if (!(r.data && r.data.attempt >= 2)) problems.push(`${id} ${rid}: run.resumed with attempt ${JSON.stringify(r.data)}`);
      }
      // Was it on hub A when A died? A's tool call reached the server, and it had not completed by the kill.
      if (st.hubs.includes('A') && !doneBeforeKill.has(rid)) {
        onA.push(rid);
        if (resumed.length === 0) problems.push(`${id} ${rid}: was on hub A at the kill but shows no run.resumed`);
      }
      // Events keep their order and ids.
      for (let i = 1; i < e.length; i++) {
        if (!(e[i].id > e[i - 1].id)) {
          problems.push(`${id} ${rid}: event ids not increasing at ${i}: ${e[i - 1].id} then ${e[i].id}`);
          break;
        }
      }
    }
    // Nothing else reached the tool server for these ids (no call for an unknown run).
    const strays = tools.calls.filter((c) => /^m\d+$/.test(c.id) && !idOfRun.has(runOfKey(c.key)));
    if (strays.length) problems.push(`tool calls with keys of no submitted run: ${strays.map((c) => c.key).join(', ')}`);

    const takeoverMs = Number.isFinite(firstResume) ? firstResume - killAt : null;
    const report = {
      runs: N,
      completed_before_kill: doneBeforeKill.size,
      on_hub_a_at_kill: onA.length,
      resumed_runs: resumedCount,
      takeover_ms: takeoverMs,
      takeover_target_ms: 2 * LEASE_S * 1000,
      model_turn1_repeated: turn1Repeated,
      same_key_retries: dups,
      same_key_retry_runs: dupRuns.slice(0, 20),
    };
    console.log(`# durable (${backend}) takeover report ` + JSON.stringify(report));
    assert.deepEqual(problems, [], 'per-run problems');
    // Some runs were mid-way on hub A when it died: a tool call of A's not finished by the kill,
    // or a run another hub resumed (only A's runs can be resumed here). With fast stores A may
    // be between a model turn and its tool call for every run it holds at the kill.
    assert.ok(
      onA.length > 0 || resumedCount > 0,
      'some runs were mid-way on hub A when it was killed (the test proves nothing otherwise)',
    );
    assert.ok(resumedCount > 0, 'hub B resumed runs');
    for (const ev of evs.values())
      for (const r of ev.filter((x) => x.type === 'run.resumed'))
        assert.notEqual(r.data.node, undefined, 'run.resumed names the node');

    // The survivor stays healthy and can take new work.
    const r = await startRun(b, AGENT, { input: input('after-kill'), mode: 'async' });
    assert.equal(r.status, 202);
    const fin = await waitRun(b, r.json.id, { timeoutMs: 10_000 });
    assert.equal(fin.status, 'completed');
    await b.stop();
  });

  test('kill -9 the hub of a sync run mid-way: the other hub finishes it', { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A');
    const b = await hubOn(store, 'B');
    const id = 'sync-1';
    const pending = startRun(a, AGENT, { input: input(id), mode: 'sync' }).then(
      (r) => ({ ok: true, r }),
      (e) => ({ ok: false, e }),
    );
    // Mid-way: hub A's tool call reached the tool server (turn 1 done, turn 2 not).
    const call = await pollUntil(() => tools.byId(id)[0], { timeoutMs: 10_000, intervalMs: 10, message: 'the sync run to call its tool' });
    assert.equal(call.headers['x-hub'], 'A');
    const rid = runOfKey(call.key);
    assert.match(rid, /^run_/);
    const killAt = Date.now();
    a.kill('SIGKILL');
    await a.waitExit();
    const res = await pending;
    assert.equal(res.ok, false, `the sync request errors when its hub dies (got ${res.ok && res.r.status} ${res.ok && res.r.text})`);

    const run = await waitRun(b, rid, { timeoutMs: 15_000 });
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.mode, 'sync');
    assert.match(run.output, /^tool said: .*"id":"sync-1"/);
    const st = toolStats(id);
    assert.equal(st.keys.length, 1, `one idempotency key for the run: ${JSON.stringify(st.keys)}`);
    assert.equal(runOfKey(st.keys[0]), rid);
    const e = await runEvents(b, rid);
    assert.equal(count(e, 'run.completed'), 1);
    const resumed = e.filter((x) => x.type === 'run.resumed');
    assert.equal(resumed.length, 1, `one run.resumed: ${JSON.stringify(resumed)}`);
    assert.ok(resumed[0].data.attempt >= 2);
    console.log(
      `# durable (${backend}) sync report ` +
        JSON.stringify({ takeover_ms: resumed[0].created_at - killAt, tool_calls: st.calls, same_key_retries: st.dups, hubs: st.hubs }),
    );
    await b.stop();
  });

  test('a queued run not started within runs.queue_ttl_s ends expired', { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const h = await hubOn(store, 'Q', { runs: { max_concurrent: 1, queue_ttl_s: 1 } });
    // One slow run occupies the only slot (its tool answers after 25 s).
    const busy = await startRun(h, AGENT, { input: input('slow-q'), mode: 'async' });
    assert.equal(busy.status, 202);
    await pollUntil(() => tools.started('slow-q'), { timeoutMs: 10_000, message: 'the slow run to call its tool' });
    const q = await startRun(h, AGENT, { input: input('q-1'), mode: 'async', webhook_url: `${hooks.url}/expired` });
    assert.equal(q.status, 202, q.text);
    assert.equal(q.json.status, 'queued');
    const run = await waitRun(h, q.json.id, { timeoutMs: 10_000 });
    assert.equal(run.status, 'expired', JSON.stringify(run));
    assert.equal(run.error && run.error.code, 'expired', JSON.stringify(run.error));
    assert.equal(run.output, null);
    assert.ok(run.finished_at >= run.created_at + 1000, `finished ${run.finished_at - run.created_at} ms after creation (ttl 1 s)`);
    assert.equal(tools.started('q-1'), false, 'an expired run never called its tool');
    const list = await req(h, 'GET', '/v1/runs?status=expired');
    assert.equal(list.status, 200);
    assert.deepEqual(list.json.data.map((r) => r.id), [q.json.id]);
    // The expiry is an event, a webhook delivery (signed) and a metric, like any run's end.
    const ev = await runEvents(h, q.json.id);
    assert.deepEqual(
      ev.map((e) => e.type),
      ['run.expired'],
    );
    assert.equal(ev[0].data.code, 'expired');
    assert.match(ev[0].data.message, /runs\.queue_ttl_s/);
    const hook = await pollUntil(() => hooks.forRun(q.json.id)[0], { timeoutMs: 10_000, message: 'the expiry webhook' });
    assert.equal(hook.path, '/expired');
    assert.equal(hook.verified, true, 'the signature verifies with webhooks.secret');
    assert.equal(hook.headers['x-agenthub-event'], 'run.failed');
    assert.equal(hook.json.data.status, 'expired');
    const m = await scrape(h);
    assert.equal(sum(m, 'agenthub_runs_total', { agent: AGENT, status: 'expired' }), 1);
    // It stays expired: freeing the slot does not start it.
    const c = await req(h, 'POST', `/v1/runs/${busy.json.id}/cancel`);
    assert.ok(c.status < 300, `cancel: ${c.status} ${c.text}`);
    await waitRun(h, busy.json.id, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 500)); // a few claim intervals (0.1 s) with a free slot
    assert.equal((await getRun(h, q.json.id)).status, 'expired');
    assert.equal(tools.started('q-1'), false);
    await h.stop();
  });

  test('a restarted hub finishes runs queued while it was down', { timeout: 40_000 }, async () => {
    const store = await makeStore();
    let d = await hubOn(store, 'D');
    const warm = await startRun(d, AGENT, { input: input('r-warm'), mode: 'async' });
    assert.equal((await waitRun(d, warm.json.id)).status, 'completed');
    const dataDir = d.dataDir;
    assert.equal(await d.stop('SIGTERM'), 0, 'SIGTERM: clean exit');

    // While D is down, a second hub with one slot, held by a slow run, takes runs in but cannot start them.
    const e = await hubOn(store, 'E', { runs: { max_concurrent: 1 } });
    const busy = await startRun(e, AGENT, { input: input('slow-r'), mode: 'async' });
    assert.equal(busy.status, 202);
    await pollUntil(() => tools.started('slow-r'), { timeoutMs: 10_000, message: 'the slow run to call its tool' });
    const ids = ['r-1', 'r-2', 'r-3', 'r-4', 'r-5'];
    const runIds = [];
    for (const id of ids) {
      const r = await startRun(e, AGENT, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, r.text);
      runIds.push(r.json.id);
    }
    await new Promise((r) => setTimeout(r, 300)); // a few claim intervals: they must still be queued
    for (const rid of runIds) assert.equal((await getRun(e, rid)).status, 'queued');

    d = await hubOn(store, 'D', { dataDir });
    for (const [i, rid] of runIds.entries()) {
      const run = await waitRun(d, rid, { timeoutMs: 10_000 });
      assert.equal(run.status, 'completed', JSON.stringify(run));
      assert.match(run.output, new RegExp(`^tool said: .*"id":"${ids[i]}"`));
      const st = toolStats(ids[i]);
      assert.deepEqual(st.hubs, ['D'], `run ${ids[i]} was run by the restarted hub`);
      assert.equal(st.keys.length, 1);
      const ev = await runEvents(d, rid);
      assert.equal(count(ev, 'run.completed'), 1);
      assert.equal(count(ev, 'run.resumed'), 0, 'a queued run starts fresh (attempt 1)');
    }
    const c = await req(e, 'POST', `/v1/runs/${busy.json.id}/cancel`);
    assert.ok(c.status < 300, `cancel: ${c.status} ${c.text}`);
    await waitRun(e, busy.json.id, { timeoutMs: 5000 });
    await d.stop();
    await e.stop();
  });

  // The Idempotency-Key contract with a model that, like real ones, gives fresh
  // tool call ids: a call cut off by the crash must be re-sent with the SAME key
  // (the tool call id has to come from the stored conversation, not from asking
  // the model again). Known server bug (see the report): the assistant message
  // with the tool calls is not stored before the calls start, so the resumed run
  // would ask the model again and call the tool with a new key (fixed: run_tools stores the state first).
  test(
    'kill -9 during a tool call: the resumed run re-sends it with the same Idempotency-Key (real-model tool call ids)',
    { timeout: 30_000 },
    async () => {
      const store = await makeStore();
      const a = await hubOn(store, 'A');
      const b = await hubOn(store, 'B');
      const id = 'mid-fresh-1';
      const r = await startRun(a, AGENT_FRESH, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, r.text);
      const rid = r.json.id;
      // The tool answers after 1.5 s: kill whichever hub is calling it, mid-call.
      const call = await pollUntil(() => tools.byId(id)[0], { timeoutMs: 10_000, intervalMs: 10, message: 'the run to call its tool' });
      const victim = call.headers['x-hub'] === 'A' ? a : b;
      const survivor = victim === a ? b : a;
      victim.kill('SIGKILL');
      await victim.waitExit();
      const run = await waitRun(survivor, rid, { timeoutMs: 15_000 });
      assert.equal(run.status, 'completed', JSON.stringify(run));
      const st = toolStats(id);
      const ev = await runEvents(survivor, rid);
      const turn1 = ev.filter((e) => e.type === 'model.request' && e.data && e.data.turn === 1).length;
      console.log(`# durable (${backend}) fresh-id report ` + JSON.stringify({ tool_calls: st.calls, keys: st.keys, hubs: st.hubs, model_requests_turn1: turn1 }));
      assert.equal(count(ev, 'run.completed'), 1);
      assert.equal(st.keys.length, 1, `one idempotency key for the one action, got ${JSON.stringify(st.keys)}`);
      assert.equal(turn1, 1, 'the model was not asked turn 1 again after its answer was acted on');
      await survivor.stop();
    },
  );

  // A hub that stalls past its lease (SIGSTOP: a long GC-like pause, a frozen VM)
  // loses its runs to another hub; when it wakes up it must not act on them any
  // more. Known server bug (see the report): the lost lease is not noticed
  // (queue.c beat_work ignores that its UPDATE changed no row), so the stale copy
  // goes on calling the model and the tool; only its store writes fail (-EEXIST on
  // the event seq). Fixed: the owner check in the run's write stops the stale replica.
  test(
    'a hub paused past its lease makes no tool call after another hub took its run over',
    { timeout: 30_000 },
    async () => {
      const store = await makeStore();
      const a = await hubOn(store, 'A');
      const b = await hubOn(store, 'B');
      const id = 'pause-1';
      // A sync run executes on the hub that received it (A).
      const pending = startRun(a, AGENT, { input: input(id), mode: 'sync' }).then(
        (r) => ({ ok: true, r }),
        (e) => ({ ok: false, e }),
      );
      // Freeze A as soon as the run is stored: it is then in its first model step (300 ms).
      const rid = await pollUntil(
        async () => {
          const l = await req(b, 'GET', `/v1/runs?agent=${AGENT}&limit=10`);
          const run = l.json && l.json.data.find((x) => x.input === input(id));
          return run && run.id;
        },
        { timeoutMs: 10_000, intervalMs: 5, message: 'the sync run to be stored' },
      );
      a.kill('SIGSTOP');
      if (tools.started(id)) {
        a.kill('SIGCONT');
        throw new Error('hub A called the tool before it could be paused: the test did not set up its case');
      }
      let resumedAt;
      try {
        const ev = await pollUntil(async () => (await runEvents(b, rid)).find((e) => e.type === 'run.resumed'), {
          timeoutMs: 10_000,
          message: 'hub B to take the run over',
        });
        resumedAt = ev.created_at;
      } finally {
        a.kill('SIGCONT');
      }
      const run = await waitRun(b, rid, { timeoutMs: 10_000 });
      assert.equal(run.status, 'completed');
      // Give A's stale copy the time to act (it logs "run finished" for it when it does).
      await a
        .waitLog((l) => l.msg === 'run finished' && l.run_id === rid, { timeoutMs: 3000 })
        .catch(() => null);
      const sync = await pending;
      const late = tools.byId(id).filter((c) => c.headers['x-hub'] === 'A' && c.at > resumedAt);
      const ev = await runEvents(b, rid);
      console.log(
        `# durable (${backend}) pause report ` +
          JSON.stringify({
            calls: tools.byId(id).map((c) => ({ hub: c.headers['x-hub'], key: c.key, ms_after_takeover: c.at - resumedAt })),
            stale_store_errors: a.logs().filter((l) => l.level === 'error' && /cannot store/.test(l.msg)).length,
            sync_answer_from_a: sync.ok ? `${sync.r.status} ${sync.r.json && sync.r.json.status}` : String(sync.e),
          }),
      );
      assert.equal(count(ev, 'run.completed'), 1);
      assert.deepEqual(late, [], 'hub A called the tool after hub B had taken the run over');
    },
  );

  /** Waits until run rid waits for an approval (seen from hub); resolves its run.requires_action data. */
  async function waitingCalls(hub, rid) {
    await waitRun(hub, rid, { statuses: ['requires_action'], timeoutMs: 10_000 });
    const ev = await runEvents(hub, rid);
    const ra = ev.filter((e) => e.type === 'run.requires_action');
    assert.ok(ra.length >= 1, `a run.requires_action event: ${JSON.stringify(ev.map((e) => e.type))}`);
    return ra[ra.length - 1].data;
  }

  // lease_s 60 in the tests below: a run moving from one hub to the other within
  // the test's timeout was handed over (a decision, SIGTERM), not taken after its
  // lease expired.
  const LONG_LEASE = { lease_s: 60 };

  test('an approval sent to either hub resumes the waiting run; decisions are checked', { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A', { runs: LONG_LEASE });
    const b = await hubOn(store, 'B', { runs: LONG_LEASE });
    // A sync run answers as soon as the run waits: waiting holds no connection.
    const r = await startRun(a, 'approver', { input: input('ap-1'), mode: 'sync' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'requires_action');
    const rid = r.json.id;
    const waiting = await waitingCalls(b, rid);
    assert.deepEqual(waiting.tool_calls.map((c) => [c.tool_call_id, c.name]), [['call_1', 'record']]);
    assert.ok(waiting.expires_at > Date.now(), 'the pending approval has an expiry in the future');
    assert.equal(tools.started('ap-1'), false, 'no call before a decision');

    const unknown = await req(b, 'POST', `/v1/runs/${rid}/approvals`, { body: { tool_call_id: 'call_9', decision: 'approve' } });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.json.error.code, 'tool_call_not_found');
    const noRun = await req(b, 'POST', '/v1/runs/run_nope/approvals', { body: { tool_call_id: 'call_1', decision: 'approve' } });
    assert.equal(noRun.status, 404, noRun.text);

    // Hub B never ran this run: the decision lands there all the same.
    const ok = await req(b, 'POST', `/v1/runs/${rid}/approvals`, { body: { tool_call_id: 'call_1', decision: 'approve' } });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { run_id: rid, tool_call_id: 'call_1', decision: 'approve' });
    const again = await req(a, 'POST', `/v1/runs/${rid}/approvals`, { body: { tool_call_id: 'call_1', decision: 'reject' } });
    assert.equal(again.status, 409, again.text);
    assert.ok(['already_decided', 'run_not_waiting'].includes(again.json.error.code), again.text);

    const run = await waitRun(a, rid, { timeoutMs: 15_000 });
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: .*"id":"ap-1"/);
    const st = toolStats('ap-1');
    assert.equal(st.calls, 1, 'the approved call ran once');
    const ev = await runEvents(a, rid);
    const decisions = ev.filter((e) => e.type === 'approval');
    assert.equal(decisions.length, 1);
    assert.equal(decisions[0].data.approved, true);
    assert.equal(decisions[0].data.tool_call_id, 'call_1');
    assert.equal(count(ev, 'tool.call'), 1, 'the call is announced once');
    assert.equal(count(ev, 'run.resumed'), 1);
    assert.equal(count(ev, 'run.completed'), 1);
    const late = await req(b, 'POST', `/v1/runs/${rid}/approvals`, { body: { tool_call_id: 'call_1', decision: 'approve' } });
    assert.equal(late.status, 409);
    assert.equal(late.json.error.code, 'run_not_waiting');
    await a.stop();
    await b.stop();
  });

  test('a rejection sent to the other hub: the call is never made and the model is told why', { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A', { runs: LONG_LEASE });
    const b = await hubOn(store, 'B', { runs: LONG_LEASE });
    // Through the chat endpoint (model agent:NAME): 409 requires_action, naming the run.
    const r = await req(a, 'POST', '/v1/chat/completions', {
      body: { model: 'agent:approver', messages: [{ role: 'user', content: input('rej-1') }] },
    });
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.error.code, 'requires_action');
    const rid = r.headers.get('x-agenthub-run-id');
    assert.match(rid || '', /^run_/);
    assert.match(r.json.error.message, new RegExp(`/v1/runs/${rid}/approvals`));
    await waitingCalls(a, rid);
    const no = await req(b, 'POST', `/v1/runs/${rid}/approvals`, {
      body: { tool_call_id: 'call_1', decision: 'reject', reason: 'amount too high' },
    });
    assert.equal(no.status, 200, no.text);
    const run = await waitRun(b, rid, { timeoutMs: 15_000 });
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /rejected this call: amount too high/);
    assert.equal(tools.started('rej-1'), false, 'a rejected call is not made');
    await a.stop();
    await b.stop();
  });

  test('pending approvals expire (spec.approval.timeout_s); a waiting run can be cancelled from any hub', { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A', { runs: LONG_LEASE });
    const b = await hubOn(store, 'B', { runs: LONG_LEASE });
    const r = await startRun(a, 'approver-quick', { input: input('exp-1'), mode: 'async' });
    assert.equal(r.status, 202, r.text);
    const rid = r.json.id;
    const waiting = await waitingCalls(b, rid);
    const run = await waitRun(b, rid, { timeoutMs: 15_000 });
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'approval_expired');
    assert.match(run.error.message, /spec\.approval\.timeout_s/);
    assert.ok(run.finished_at >= waiting.expires_at, 'it failed at the expiry, not before');
    const late = await req(b, 'POST', `/v1/runs/${rid}/approvals`, { body: { tool_call_id: 'call_1', decision: 'approve' } });
    assert.equal(late.status, 409);
    assert.equal(late.json.error.code, 'run_not_waiting');
    assert.equal(tools.started('exp-1'), false);

    // Cancel: the waiting run is in no hub's memory; hub B cancels it in the store.
    // A stream ends with run.requires_action: nobody keeps a connection open while a human decides.
    const c = await startRun(a, 'approver', { input: input('cancel-1'), mode: 'stream' });
    assert.equal(c.status, 200, c.text);
    const sse = parseNamedSse(c.text);
    assert.equal(sse[sse.length - 1].event, 'run.requires_action', c.text);
    const cid = c.headers.get('x-agenthub-run-id');
    await waitingCalls(a, cid);
    const cx = await req(b, 'POST', `/v1/runs/${cid}/cancel`);
    assert.equal(cx.status, 202, cx.text);
    const cancelled = await waitRun(a, cid, { timeoutMs: 5000 });
    assert.equal(cancelled.status, 'cancelled');
    const ev = await runEvents(a, cid);
    assert.equal(ev[ev.length - 1].type, 'run.cancelled');
    const after = await req(a, 'POST', `/v1/runs/${cid}/approvals`, { body: { tool_call_id: 'call_1', decision: 'approve' } });
    assert.equal(after.status, 409);
    assert.equal(tools.started('cancel-1'), false);
    await a.stop();
    await b.stop();
  });

  test('a run executing on one hub is cancelled from the other; an accepted cancel survives its owner\'s kill -9', { timeout: 40_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A');
    const b = await hubOn(store, 'B');
    const ownerOf = async (id) => {
      const call = await pollUntil(() => tools.byId(id)[0], { timeoutMs: 10_000, intervalMs: 10, message: `the run to call its tool (${id})` });
      const hub = call.headers['x-hub'] === 'A' ? a : b;
      return { call, hub, other: hub === a ? b : a, rid: runOfKey(call.key) };
    };

    // 1. The owner is alive: the other hub stores the request, the owner's poll stops the run
    //    (its tool call in flight is cut).
    const r1 = await startRun(a, AGENT, { input: input('slow-cancel-1'), mode: 'async' });
    assert.equal(r1.status, 202, r1.text);
    const one = await ownerOf('slow-cancel-1');
    assert.equal(one.rid, r1.json.id);
    const c1 = await req(one.other, 'POST', `/v1/runs/${one.rid}/cancel`);
    assert.equal(c1.status, 202, c1.text);
    assert.equal(c1.json.status, 'cancelling');
    const run1 = await waitRun(one.other, one.rid, { timeoutMs: 5000 });
    assert.equal(run1.status, 'cancelled', JSON.stringify(run1));
    const ev1 = await runEvents(one.other, one.rid);
    assert.equal(count(ev1, 'run.cancelled'), 1);
    assert.equal(count(ev1, 'run.completed'), 0);
    await pollUntil(() => one.call.aborted, { timeoutMs: 5000, message: 'the tool call in flight is cut' });
    const again = await req(one.other, 'POST', `/v1/runs/${one.rid}/cancel`);
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.error.code, 'run_not_running');

    // 2. The owner dies before it reads an accepted cancel: hub C's queue timer (which also polls
    //    for cancel requests and renews leases) ticks once a minute, so the request is still
    //    unread when C is killed; its run's lease (5 s) then runs out, hub B takes the run over,
    //    finds the stored request and cancels it instead of finishing it. (Freezing the owner
    //    with SIGSTOP instead could freeze it holding SQLite's write lock.)
    const c = await hubOn(store, 'C', { runs: { claim_interval_s: 60, lease_s: 5 } });
    const streaming = startRun(c, AGENT, { input: input('slow-cancel-2'), mode: 'stream' }).then(
      () => null,
      () => null,
    );
    const call = await pollUntil(() => tools.byId('slow-cancel-2')[0], { timeoutMs: 10_000, intervalMs: 10, message: 'the run to call its tool' });
    assert.equal(call.headers['x-hub'], 'C');
    const rid = runOfKey(call.key);
    const c2 = await req(b, 'POST', `/v1/runs/${rid}/cancel`);
    assert.equal(c2.status, 202, c2.text);
    assert.equal(c2.json.status, 'cancelling');
    assert.equal((await getRun(b, rid)).status, 'running', 'nobody acted on it yet');
    c.kill('SIGKILL');
    await c.waitExit();
    await streaming;
    const run2 = await waitRun(b, rid, { timeoutMs: 15_000 });
    assert.equal(run2.status, 'cancelled', JSON.stringify(run2));
    const ev2 = await runEvents(b, rid);
    assert.equal(count(ev2, 'run.cancelled'), 1);
    assert.equal(count(ev2, 'run.completed'), 0);
    const st = toolStats('slow-cancel-2');
    assert.equal(st.keys.length, 1, `a re-sent call keeps its Idempotency-Key: ${JSON.stringify(st.keys)}`);
    await a.stop();
    await b.stop();
  });

  test('SIGTERM: a hub hands its runs back and the other resumes them at once; each completes once', { timeout: 60_000 }, async () => {
    const store = await makeStore();
    // A alone first, so it owns every run; no grace period: none can finish in it.
    const a = await hubOn(store, 'A', { runs: LONG_LEASE, server: { shutdown_grace_s: 0 } });
    const ids = Array.from({ length: 12 }, (_, i) => `mid-term-${i}`);
    const runIds = [];
    for (const id of ids) {
      const r = await startRun(a, AGENT, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, r.text);
      runIds.push(r.json.id);
    }
    // Every run is in its tool call (1.5 s) on A.
    await pollUntil(() => ids.every((id) => tools.started(id)), { timeoutMs: 15_000, message: 'all runs to call their tool on A' });
    const b = await hubOn(store, 'B', { runs: LONG_LEASE });
    const stopAt = Date.now();
    assert.equal(await a.stop('SIGTERM'), 0, 'SIGTERM: clean exit');
    const handed = a.logs().find((l) => l.msg === 'runs handed back to the other replicas');
    assert.ok(handed, `A logs the hand-back: ${JSON.stringify(a.logs().slice(-5))}`);

    for (const [i, rid] of runIds.entries()) {
      const run = await waitRun(b, rid, { timeoutMs: 20_000 });
      assert.equal(run.status, 'completed', JSON.stringify(run));
      assert.match(run.output, new RegExp(`^tool said: .*"id":"${ids[i]}"`));
      const ev = await runEvents(b, rid);
      assert.equal(count(ev, 'run.completed'), 1);
      const resumed = ev.filter((e) => e.type === 'run.resumed');
      assert.equal(resumed.length, 1, `${rid}: one run.resumed`);
      const st = toolStats(ids[i]);
      assert.equal(st.keys.length, 1, `${rid}: one Idempotency-Key (a call cut by the shutdown is re-sent with it)`);
      assert.equal(st.hubs[st.hubs.length - 1], 'B', `${rid}: B finished it`);
      // lease_s is 60 s: B can only have resumed it this early because A cleared its lease.
      assert.ok(resumed[0].created_at - stopAt < 60_000);
    }
    console.log(
      `# durable (${backend}) sigterm report ` +
        JSON.stringify({ runs: runIds.length, handed_back: handed.runs, tool_calls: ids.reduce((n, id) => n + toolStats(id).calls, 0) }),
    );
    await b.stop();
  });

  test('SIGTERM: runs that finish within server.shutdown_grace_s finish on the stopping hub', { timeout: 60_000 }, async () => {
    const store = await makeStore();
    const a = await hubOn(store, 'A', { runs: LONG_LEASE, server: { shutdown_grace_s: 20 } });
    const ids = ['mid-grace-0', 'mid-grace-1', 'mid-grace-2'];
    const runIds = [];
    for (const id of ids) {
      const r = await startRun(a, AGENT, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, r.text);
      runIds.push(r.json.id);
    }
    await pollUntil(() => ids.every((id) => tools.started(id)), { timeoutMs: 15_000, message: 'all runs to call their tool on A' });
    const b = await hubOn(store, 'B', { runs: LONG_LEASE });
    assert.equal(await a.stop('SIGTERM', { timeoutMs: 30_000 }), 0, 'SIGTERM: clean exit');
    assert.equal(
      a.logs().filter((l) => l.msg === 'runs handed back to the other replicas').length,
      0,
      'nothing was left to hand back',
    );
    for (const [i, rid] of runIds.entries()) {
      const run = await getRun(b, rid);
      assert.equal(run.status, 'completed', `${rid} was finished by A before it exited: ${JSON.stringify(run)}`);
      const ev = await runEvents(b, rid);
      assert.equal(count(ev, 'run.resumed'), 0);
      assert.equal(count(ev, 'run.completed'), 1);
      assert.deepEqual(toolStats(ids[i]).hubs, ['A']);
    }
    await b.stop();
  });

  test("an agent's webhook_url gets the run when the request gives none; the run's own wins", { timeout: 30_000 }, async () => {
    const store = await makeStore();
    const h = await hubOn(store, 'W');
    const bad = await req(h, 'POST', '/v1/agents', {
      body: { apiVersion: 'agenthub/v1', kind: 'Agent', metadata: { name: 'badhook' }, spec: { model: 'slow', webhook_url: 'ftp://x.example' } },
    });
    assert.equal(bad.status, 422, bad.text);
    assert.match(bad.text, /spec\.webhook_url/);

    const r1 = await startRun(h, 'hooked', { input: 'hello', mode: 'async' });
    assert.equal(r1.status, 202, r1.text);
    const r2 = await startRun(h, 'hooked', { input: 'hello again', mode: 'sync', webhook_url: `${hooks.url}/run-hook` });
    assert.equal(r2.status, 200, r2.text);
    assert.equal((await waitRun(h, r1.json.id)).status, 'completed');
    const d1 = await pollUntil(() => hooks.forRun(r1.json.id)[0], { timeoutMs: 10_000, message: "the agent's webhook" });
    const d2 = await pollUntil(() => hooks.forRun(r2.json.id)[0], { timeoutMs: 10_000, message: "the run's webhook" });
    assert.equal(d1.path, '/agent-hook');
    assert.equal(d2.path, '/run-hook');
    for (const d of [d1, d2]) {
      assert.equal(d.verified, true, 'the signature verifies with webhooks.secret');
      assert.equal(d.headers['x-agenthub-event'], 'run.completed');
      assert.equal(d.json.data.status, 'completed');
    }
    assert.equal(hooks.forRun(r1.json.id).length, 1);
    assert.equal(hooks.forRun(r2.json.id).length, 1);
    await h.stop();
  });
}
