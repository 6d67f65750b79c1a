// The store failing under a hub with runs in flight, shared by the backends'
// fault suites (pg_faults.test.mjs: PostgreSQL stopped and started,
// sqlite_faults.test.mjs: the SQLite file locked by another process): async
// runs with slow model steps and an HTTP tool (the durable-runs setup of
// lib/durable.mjs), plus one sync and one stream run waiting on a slow tool
// call, are mid-way when the fault starts; the suite checks what a client sees
// during it. The sync and stream clients hear 503 store_unavailable (the
// run's progress could not be stored). After the fault every run, these two
// included, ends completed exactly once, its tool called with one
// Idempotency-Key, and new work goes through.

import assert from 'node:assert/strict';
import { getOnce, pollUntil, errorOf } from './harness.mjs';
import { startRun, getRun, runEvents, waitRun, streamRun, FINAL } from './runtime.mjs';
import { AGENT, input, pool, count, runOfKey } from './durable.mjs';

/** GET /readyz: {status, body (parsed), retryAfter}. */
export async function readyz(hub) {
  const r = await getOnce(hub.port, '/readyz');
  return { status: r.status, body: JSON.parse(r.text), retryAfter: r.headers['retry-after'] };
}

/**
 * fixture: durableFixture's result (midMs long enough for the fault to start
 * while a "mid" tool call is open); hub: a hub on a store it made. N async runs
 * (ids PREFIX0..), then, once 5 of them called their tool, a sync and a stream
 * run whose tool calls (ids mid-PREFIX-sync, mid-PREFIX-stream) are open: then
 * await fault({runIds, clients}) starts the fault, checks what clients see
 * during it, awaits clients (the sync and stream answers) and ends it. Then
 * asserts the sync and stream answers, that every run completed exactly once
 * with one tool key and that a new sync run completes. Resolves a report
 * {runs, resumed, same_key_retries}.
 */
export async function runsSurviveFault({ fixture, hub, prefix, N = 40, fault }) {
  const { tools, toolStats } = fixture;
  const ids = Array.from({ length: N }, (_, i) => `${prefix}${i}`);
  const runIds = await pool(ids, 10, async (id) => {
    const r = await startRun(hub, AGENT, { input: input(id), mode: 'async' });
    assert.equal(r.status, 202, r.text);
    return r.json.id;
  });
  const idOfRun = new Map(runIds.map((r, i) => [r, ids[i]]));

  // Some runs are mid-way (their tool was called), not all are done; a sync and a stream
  // client wait on runs whose tool call is open.
  await pollUntil(() => ids.filter((id) => tools.started(id)).length >= 5, { timeoutMs: 20_000, intervalMs: 10, message: '5 tool calls' });
  const syncId = `mid-${prefix}-sync`;
  const streamId = `mid-${prefix}-stream`;
  const sync = startRun(hub, AGENT, { input: input(syncId), mode: 'sync' });
  const stream = streamRun(hub, AGENT, input(streamId), { timeoutMs: 30_000 });
  await pollUntil(() => tools.started(syncId) && tools.started(streamId), { timeoutMs: 10_000, intervalMs: 10, message: 'the sync and stream runs to call their tools' });
  let answers;
  await fault({ runIds, clients: Promise.all([sync, stream]).then((a) => (answers = a)) });
  assert.ok(answers, 'the fault awaited the sync and stream answers');

  // They were told the run's progress could not be stored; the runs go on after the fault.
  const [s, t] = answers;
  assert.equal(s.status, 503, `sync: ${s.status} ${s.text}`);
  assert.equal(errorOf(s).code, 'store_unavailable', s.text);
  assert.equal(s.headers.get('retry-after'), '1');
  assert.equal(t.status, 200);
  assert.ok(t.ended, `the stream ended (${t.error})`);
  const last = t.events.at(-1);
  assert.equal(last && last.event, 'error', `stream events: ${t.events.map((e) => e.event).join(',')}`);
  assert.equal(last.data.error && last.data.error.code, 'store_unavailable', JSON.stringify(last.data));
  for (const id of [syncId, streamId]) {
    const st = toolStats(id);
    assert.equal(st.keys.length, 1, `${id}: one tool key ${JSON.stringify(st.keys)}`);
    const run = await waitRun(hub, runOfKey(st.keys[0]), { timeoutMs: 30_000 });
    assert.equal(run.status, 'completed', `${id}: ${JSON.stringify(run)}`);
    assert.ok(run.output.includes(`"id":"${id}"`), run.output);
    assert.equal(count(await runEvents(hub, run.id), 'run.completed'), 1);
  }

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
  assert.deepEqual(problems, [], 'every run completed exactly once with one tool key');

  // And new work goes through.
  const after = await startRun(hub, AGENT, { input: input(`${prefix}after`), mode: 'sync' });
  assert.equal(after.status, 200, after.text);
  assert.equal(after.json.status, 'completed');
  return { runs: N, resumed, same_key_retries: ids.reduce((n, id) => n + toolStats(id).dups, 0) };
}
