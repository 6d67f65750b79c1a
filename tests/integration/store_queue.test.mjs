// The store's job queue full (storage.queue_max) under a burst of sync runs:
// every client gets an answer - its run's result, or an OpenAI-shaped 503
// store_busy with Retry-After when a write of its run could not be queued -
// never a request left waiting; the hub serves runs afterwards. (Runs whose
// end could not be queued resume from their last stored step once their
// lease runs out; with a queue this small a resumed run may be stopped again
// by the same overflow, up to the store retry limit, so that part is not
// waited for here.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorOf, pollUntil } from './lib/harness.mjs';
import { startRuntimeHub, applyAgent, startRun } from './lib/runtime.mjs';

test('a burst of sync runs against a one-job store queue: each client answered, the hub serves on', { timeout: 60_000 }, async () => {
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
    // The hub serves runs afterwards (a client retrying on 503 as Retry-After says).
    let after;
    await pollUntil(
      async () => {
        after = await startRun(hub, 'burst', { input: 'after', mode: 'sync' });
        if (after.status === 503) return false;
        assert.equal(after.status, 200, after.text);
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 1000, message: 'a run served after the burst' },
    );
    assert.equal(after.json.status, 'completed', after.text);
    assert.ok(hub.alive());
  } finally {
    assert.equal(await hub.stop(), 0, 'clean exit');
  }
});
