// The store's job queue full (storage.queue_max) under a burst of sync runs:
// every client gets an answer - its run's result, or an OpenAI-shaped 503
// store_busy with Retry-After when a write of its run could not be queued -
// never a request left waiting; runs whose end could not be stored resume
// from their last stored step and end; the hub stays healthy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { req, errorOf, pollUntil } from './lib/harness.mjs';
import { startRuntimeHub, applyAgent, startRun } from './lib/runtime.mjs';

test('a burst of sync runs against a one-job store queue: each client answered, nothing left running', { timeout: 60_000 }, async () => {
  const hub = await startRuntimeHub({ storage: { queue_max: 2 }, runs: { lease_s: 2 } });
  try {
    await applyAgent(hub, 'burst');
    const answers = await Promise.all(
      Array.from({ length: 120 }, (_, i) => startRun(hub, 'burst', { input: `hello ${i}`, mode: 'sync' })),
    );
    const byStatus = {};
    for (const a of answers) {
      byStatus[a.status] = (byStatus[a.status] || 0) + 1;
      if (a.status === 200) {
        // Completed, or failed at once because its first write could not be queued.
        const ok = a.json.status === 'completed' || (a.json.status === 'failed' && a.json.error?.code === 'store_busy');
        assert.ok(ok, a.text);
        byStatus[a.json.status] = (byStatus[a.json.status] || 0) + 1;
      } else {
        assert.equal(a.status, 503, a.text);
        assert.match(errorOf(a).code, /^store_(busy|unavailable)$/, a.text);
        assert.ok(a.headers.get('retry-after'), 'a 503 says when to retry');
      }
    }
    console.log('# burst answers ' + JSON.stringify(byStatus));
    assert.ok(byStatus[503] > 0, 'the one-job queue refused some work (else this test shows nothing)');
    // Runs that were stored but whose later write could not be queued are taken up again
    // (lease_s 2) and end: none stays running.
    await pollUntil(
      async () => {
        for (const status of ['queued', 'running', 'requires_action']) {
          const list = await req(hub, 'GET', `/v1/runs?agent=burst&status=${status}&limit=100`);
          if (list.status !== 200) throw new Error(list.text);
          if (list.json.data.length) { console.log('# left ' + status + ' ' + JSON.stringify(list.json.data.slice(0, 3).map((r) => [r.id, r.attempt, r.error, r.updated_at]))); return false; }
        }
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 200, message: 'every stored run of the burst to end' },
    );
    const all = await req(hub, 'GET', '/v1/runs?agent=burst&limit=100');
    assert.equal(all.status, 200, all.text);
    assert.ok(all.json.data.length > 0, 'runs of the burst were stored');
    // The hub is healthy afterwards.
    const after = await startRun(hub, 'burst', { input: 'after', mode: 'sync' });
    assert.equal(after.status, 200, after.text);
    assert.equal(after.json.status, 'completed');
    assert.ok(hub.alive());
  } finally {
    assert.equal(await hub.stop(), 0, 'clean exit');
  }
});
