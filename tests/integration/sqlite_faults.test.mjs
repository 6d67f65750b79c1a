// The store busy under a running hub, on SQLite: another process (the sqlite3
// shell) holds the database's write lock longer than storage.busy_timeout_ms
// while a hub has async runs in flight (lib/store_faults.mjs). Writes during
// it are refused with an OpenAI-shaped 503 store_busy and Retry-After (at
// once, no hang), sync and stream clients of runs whose progress could not be
// stored get 503 store_unavailable, reads still answer (WAL) and /readyz stays
// 200 (the store is reachable); once the lock is gone every run ends completed
// exactly once, its tool called with one Idempotency-Key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { req, pollUntil, errorOf } from './lib/harness.mjs';
import { startRun } from './lib/runtime.mjs';
import { durableFixture, AGENT, input } from './lib/durable.mjs';
import { runsSurviveFault, readyz } from './lib/store_faults.mjs';

const fixture = await durableFixture({ storageUrl: (dir) => `sqlite://${path.join(dir, 'agenthub.db')}`, midMs: 3000 });

/** The sqlite3 shell holding the write lock of db (BEGIN IMMEDIATE) until release(). */
async function lockWrites(db) {
  const sh = spawn('sqlite3', [db], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  sh.stdout.setEncoding('utf8');
  sh.stdout.on('data', (d) => (out += d));
  sh.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => sh.on('exit', resolve));
  sh.stdin.write(".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n");
  await pollUntil(() => out.includes('locked'), { timeoutMs: 10_000, message: `sqlite3 to take the lock (${out})` });
  return {
    async release() {
      sh.stdin.end('COMMIT;\n.quit\n');
      assert.equal(await exited, 0, `sqlite3: ${out}`);
    },
  };
}

test('SQLite write-locked by another process under async runs: 503 store_busy, reads and /readyz fine, every run completes once', { timeout: 60_000 }, async () => {
  const store = await fixture.makeStore();
  const hub = await fixture.hubOn(store, 'L', { storage: { busy_timeout_ms: 200 } });
  const report = await runsSurviveFault({
    fixture,
    hub,
    prefix: 'l',
    fault: async ({ runIds, clients }) => {
      const lock = await lockWrites(store.url.slice('sqlite://'.length));
      try {
        // Runs in flight hit the lock (their step writes fail) ...
        await hub.waitLog((l) => l.level === 'error' && /cannot store/.test(l.msg), { timeoutMs: 10_000, message: 'a run write failing on the lock' });
        // ... a new run is refused with a clear, retryable error ...
        const create = await startRun(hub, AGENT, { input: input('l-during'), mode: 'async' });
        assert.equal(create.status, 503, create.text);
        assert.equal(errorOf(create).code, 'store_busy', create.text);
        assert.equal(create.headers.get('retry-after'), '1');
        // ... while reads answer and the hub stays ready (the store is reachable, only busy).
        const get = await req(hub, 'GET', `/v1/runs/${runIds[0]}`);
        assert.equal(get.status, 200, get.text);
        assert.equal((await readyz(hub)).status, 200);
        assert.ok(hub.alive());
        await clients; // the sync and stream runs' writes failed: their clients were told
      } finally {
        await lock.release();
      }
      assert.equal(fixture.tools.started('l-during'), false, 'a run refused during the lock never ran');
    },
  });
  console.log('# sqlite lock report ' + JSON.stringify(report));
  assert.equal(await hub.stop(), 0, 'clean exit');
});
