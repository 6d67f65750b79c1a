// The store going away under a running hub, on PostgreSQL: the throwaway
// server (lib/pg.mjs) is stopped and started again while a hub has async runs
// in flight (lib/store_faults.mjs). /readyz turns 503 (store unreachable) while
// it is down and 200 again after; requests made during the outage get an
// OpenAI-shaped 503 at once, neither a hang nor a crash, and so do the sync
// and stream clients of runs whose progress could not be stored; every run
// still ends completed exactly once, its tool called with one Idempotency-Key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { req, pollUntil, errorOf } from './lib/harness.mjs';
import { startRun } from './lib/runtime.mjs';
import { durableFixture, AGENT, input } from './lib/durable.mjs';
import { runsSurviveFault, readyz } from './lib/store_faults.mjs';
import { startPostgres, PG_SKIP } from './lib/pg.mjs';

const pg = await startPostgres();

if (!pg) {
  test('store faults on PostgreSQL', { skip: PG_SKIP }, () => {});
} else {
  const fixture = await durableFixture({ storageUrl: () => pg.newDatabase(), midMs: 3000 });

  test('PostgreSQL stopped and started under async runs: /readyz follows, clear 503s, every run completes once', { timeout: 60_000 }, async () => {
    const hub = await fixture.hubOn(await fixture.makeStore(), 'H');
    const report = await runsSurviveFault({
      fixture,
      hub,
      prefix: 'f',
      fault: async ({ runIds, clients }) => {
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

        // A clear OpenAI-shaped 503 (not a hang: req() gives up after 10 s); the hub stays up.
        const during = {
          create: await startRun(hub, AGENT, { input: input('during'), mode: 'async' }),
          get: await req(hub, 'GET', `/v1/runs/${runIds[0]}`),
          list: await req(hub, 'GET', '/v1/runs?limit=5'),
        };
        for (const [what, r] of Object.entries(during)) {
          assert.equal(r.status, 503, `${what} during the outage: ${r.status} ${r.text}`);
          assert.equal(errorOf(r).code, 'store_unavailable', `${what}: ${r.text}`);
        }
        assert.equal(during.create.headers.get('retry-after'), '1');
        assert.ok(hub.alive(), 'the hub is still running');
        assert.equal(fixture.tools.started('during'), false, 'a run refused during the outage never ran');
        await clients; // the sync and stream runs' writes failed: their clients were told


        pg.start();
        await pollUntil(async () => (await readyz(hub)).status === 200, { timeoutMs: 10_000, intervalMs: 50, message: '/readyz 200 after PostgreSQL is back' });
        assert.equal((await readyz(hub)).body.checks.store, 'ok');
        await hub.waitLog((l) => l.msg === 'store reachable again', { message: 'the store-reachable log line' });
      },
    });
    console.log('# pg outage report ' + JSON.stringify(report));
    assert.equal(await hub.stop(), 0, 'clean exit');
  });
}
