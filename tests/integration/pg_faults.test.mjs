// The store going away under a running hub, on PostgreSQL: the throwaway
// server (lib/pg.mjs) is stopped and started again while a hub has async runs
// in flight (slow model steps and an HTTP tool, the durable-runs setup of
// lib/durable.mjs). /readyz turns 503 (store unreachable) while it is down and
// 200 again after; requests made during the outage get an OpenAI-shaped 503
// at once, neither a hang nor a crash; every run still ends completed exactly
// once, its tool called with one Idempotency-Key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { req, getOnce, pollUntil, errorOf } from './lib/harness.mjs';
import { startRun, getRun, runEvents, FINAL } from './lib/runtime.mjs';
import { durableFixture, AGENT, input, pool, count, runOfKey } from './lib/durable.mjs';
import { startPostgres, PG_SKIP } from './lib/pg.mjs';

const pg = await startPostgres();

/** /readyz: {status, body}. */
async function readyz(hub) {
  const r = await getOnce(hub.port, '/readyz');
  return { status: r.status, body: JSON.parse(r.text), retryAfter: r.headers['retry-after'] };
}

if (!pg) {
  test('store faults on PostgreSQL', { skip: PG_SKIP }, () => {});
} else {
  const { tools, makeStore, hubOn, toolStats } = await durableFixture({ storageUrl: () => pg.newDatabase() });

  test('PostgreSQL stopped and started under async runs: /readyz follows, clear 503s, every run completes once', { timeout: 60_000 }, async () => {
    const store = await makeStore();
    const hub = await hubOn(store, 'H');
    const N = 40;
    const ids = Array.from({ length: N }, (_, i) => `f${i}`);
    const runIds = await pool(ids, 10, async (id) => {
      const r = await startRun(hub, AGENT, { input: input(id), mode: 'async' });
      assert.equal(r.status, 202, r.text);
      return r.json.id;
    });
    const idOfRun = new Map(runIds.map((r, i) => [r, ids[i]]));

    // Some runs are mid-way (their tool was called), not all are done: stop the server.
    await pollUntil(() => ids.filter((id) => tools.started(id)).length >= 5, { timeoutMs: 20_000, intervalMs: 10, message: '5 tool calls' });
    pg.stop('fast');

    const down = await pollUntil(
      async () => {
        const r = await readyz(hub);
        return r.status === 503 && r;
      },
      { timeoutMs: 10_000, intervalMs: 50, message: '/readyz 503 while PostgreSQL is down' },
    );
    assert.equal(down.body.status, 'not_ready');
    assert.equal(down.body.checks.store, 'unreachable');
    assert.equal(down.retryAfter, '1');
    await hub.waitLog((l) => l.msg === 'store unreachable: /readyz answers 503', { message: 'the store-unreachable log line' });

    // During the outage: a clear OpenAI-shaped 503 (not a hang: req() gives up after 10 s), the hub stays up.
    const during = {
      create: await startRun(hub, AGENT, { input: input('during'), mode: 'async' }),
      get: await req(hub, 'GET', `/v1/runs/${runIds[0]}`),
      list: await req(hub, 'GET', '/v1/runs?limit=5'),
    };
    for (const [what, r] of Object.entries(during)) {
      assert.equal(r.status, 503, `${what} during the outage: ${r.status} ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.code, 'store_unavailable', `${what}: ${r.text}`);
    }
    assert.ok(hub.alive(), 'the hub is still running');
    assert.equal(tools.started('during'), false, 'a run refused during the outage never ran');

    pg.start();
    await pollUntil(async () => (await readyz(hub)).status === 200, { timeoutMs: 10_000, intervalMs: 50, message: '/readyz 200 after PostgreSQL is back' });
    const back = await readyz(hub);
    assert.equal(back.body.checks.store, 'ok');
    await hub.waitLog((l) => l.msg === 'store reachable again', { message: 'the store-reachable log line' });

    // Every run ends, completed, exactly once; one tool key per run.
    const finals = new Map();
    await pollUntil(
      async () => {
        await pool(
          runIds.filter((r) => !finals.has(r)),
          10,
          async (rid) => {
            const r = await getRun(hub, rid);
            if (r && FINAL.includes(r.status)) finals.set(rid, r);
          },
        );
        return finals.size === N;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: `all ${N} runs to be final` },
    );
    const problems = [];
    let resumed = 0;
    for (const rid of runIds) {
      const id = idOfRun.get(rid);
      const run = finals.get(rid);
      if (run.status !== 'completed') problems.push(`${id} ${rid}: ${run.status} ${JSON.stringify(run.error)}`);
      else if (!run.output || !run.output.includes(`"id":"${id}"`)) problems.push(`${id} ${rid}: output ${JSON.stringify(run.output)}`);
      const st = toolStats(id);
      if (st.keys.length !== 1 || runOfKey(st.keys[0]) !== rid) problems.push(`${id} ${rid}: tool keys ${JSON.stringify(st.keys)}`);
      const ev = await runEvents(hub, rid);
      if (count(ev, 'run.completed') !== 1) problems.push(`${id} ${rid}: ${count(ev, 'run.completed')} run.completed events`);
      resumed += count(ev, 'run.resumed');
    }
    console.log('# pg outage report ' + JSON.stringify({ runs: N, resumed, same_key_retries: ids.reduce((n, id) => n + toolStats(id).dups, 0) }));
    assert.deepEqual(problems, [], 'every run completed exactly once with one tool key');

    // And new work goes through.
    const after = await startRun(hub, AGENT, { input: input('after'), mode: 'sync' });
    assert.equal(after.status, 200, after.text);
    assert.equal(after.json.status, 'completed');
    assert.equal(await hub.stop(), 0, 'clean exit');
  });
}
