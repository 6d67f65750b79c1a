// GET /metrics: Prometheus text that promtool accepts, with counters that move
// by exactly what the test did.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { startHub, req, pollUntil } from './lib/harness.mjs';
import { parseProm, find, sum } from './lib/prom.mjs';

const PROMTOOL = process.env.PROMTOOL || '/usr/bin/promtool';

let hub;
before(async () => {
  hub = await startHub();
});

async function scrape() {
  const r = await req(hub, 'GET', '/metrics', { key: null });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
  return { text: r.text, m: parseProm(r.text) };
}

// The reply can reach the client a moment before the server books the request,
// so wait (bounded) until the counter has caught up, then compare exactly.
async function scrapeUntil(pred) {
  let last;
  try {
    await pollUntil(async () => pred((last = (await scrape()).m)), { timeoutMs: 3000, message: 'metrics to catch up' });
  } catch {
    /* compare what we have: the exact assertion below reports the numbers */
  }
  return last;
}

const healthz = { method: 'GET', route: '/healthz', status: '200' };

test('http request counter and duration histogram move by exactly the requests made', async () => {
  const before = (await scrape()).m;
  const N = 7;
  for (let i = 0; i < N; i++) assert.equal((await req(hub, 'GET', '/healthz', { key: null })).status, 200);
  const total = (m) => sum(m, 'agenthub_http_requests_total', healthz);
  const after = await scrapeUntil((m) => total(m) >= total(before) + N);

  assert.equal(
    sum(after, 'agenthub_http_requests_total', healthz) - sum(before, 'agenthub_http_requests_total', healthz),
    N,
    'agenthub_http_requests_total{route="/healthz",status="200"} grew by the number of requests',
  );
  const cnt = (m) => sum(m, 'agenthub_http_request_duration_seconds_count', { method: 'GET', route: '/healthz' });
  assert.equal(cnt(after) - cnt(before), N, 'histogram _count grew by the number of requests');
  const inf = find(after, 'agenthub_http_request_duration_seconds_bucket', { method: 'GET', route: '/healthz', le: '+Inf' });
  assert.equal(inf.length, 1);
  assert.equal(inf[0].value, cnt(after), '+Inf bucket equals _count');
  assert.equal(after.types.agenthub_http_requests_total, 'counter');
  assert.equal(after.types.agenthub_http_request_duration_seconds, 'histogram');
});

test('histogram buckets are cumulative and _sum is non-negative', async () => {
  await req(hub, 'GET', '/healthz', { key: null });
  const { m } = await scrape();
  const buckets = find(m, 'agenthub_http_request_duration_seconds_bucket', { method: 'GET', route: '/healthz' });
  assert.ok(buckets.length >= 2, 'has buckets');
  const les = buckets.map((b) => (b.labels.le === '+Inf' ? Infinity : Number(b.labels.le)));
  for (let i = 1; i < buckets.length; i++) {
    assert.ok(les[i] > les[i - 1], 'le ascending');
    assert.ok(buckets[i].value >= buckets[i - 1].value, 'cumulative counts');
  }
  assert.equal(les.at(-1), Infinity);
  const s = find(m, 'agenthub_http_request_duration_seconds_sum', { method: 'GET', route: '/healthz' });
  assert.equal(s.length, 1);
  assert.ok(s[0].value >= 0);
});

test('404s and 401s are counted under their own status', async () => {
  const before = (await scrape()).m;
  assert.equal((await req(hub, 'GET', '/v1/keys', { key: null })).status, 401);
  assert.equal((await req(hub, 'GET', '/v1/keys', { key: null })).status, 401);
  const m401 = { route: '/v1/keys', status: '401' };
  const after = await scrapeUntil(
    (m) => sum(m, 'agenthub_http_requests_total', m401) >= sum(before, 'agenthub_http_requests_total', m401) + 2,
  );
  assert.equal(sum(after, 'agenthub_http_requests_total', m401) - sum(before, 'agenthub_http_requests_total', m401), 2);
  // unknown paths must not create one label set each (unbounded cardinality)
  await req(hub, 'GET', '/no/such/path/one', { key: null });
  await req(hub, 'GET', '/no/such/path/two', { key: null });
  const { m } = await scrape();
  const routes = new Set(find(m, 'agenthub_http_requests_total').map((s) => s.labels.route));
  assert.ok(!routes.has('/no/such/path/one') && !routes.has('/no/such/path/two'), `raw paths are not route labels: ${[...routes]}`);
});

test('process and build metrics are present', async () => {
  const { m } = await scrape();
  const one = (name) => {
    const s = find(m, name);
    assert.equal(s.length, 1, `${name} present once`);
    return s[0].value;
  };
  assert.ok(one('process_resident_memory_bytes') > 0, 'RSS > 0');
  assert.ok(one('process_open_fds') > 0, 'open fds > 0');
  // CPU time is in clock ticks (10 ms): a hub that did little can honestly report 0.
  assert.ok(one('process_cpu_seconds_total') >= 0, 'cpu seconds present');
  assert.ok(one('agenthub_http_connections') >= 1, 'the scraping connection is open');
  assert.ok(one('agenthub_http_requests_in_flight') >= 1, 'the scrape itself is in flight');
  const bi = find(m, 'agenthub_build_info');
  assert.equal(bi.length, 1, 'agenthub_build_info present');
  assert.equal(bi[0].value, 1);
  assert.match(bi[0].labels.version ?? '', /^\d+\.\d+\.\d+/);
  assert.equal(m.types.process_cpu_seconds_total, 'counter');
});

test('agenthub_ready is 1 while ready', async () => {
  const { m } = await scrape();
  const s = find(m, 'agenthub_ready');
  assert.equal(s.length, 1, 'agenthub_ready present');
  assert.equal(s[0].value, 1);
});

test('promtool check metrics accepts the scrape', async () => {
  assert.ok(
    fs.existsSync(PROMTOOL),
    `promtool not found at ${PROMTOOL}: install it (make test does: apt-get install prometheus) or set PROMTOOL`,
  );
  await req(hub, 'GET', '/healthz', { key: null });
  await req(hub, 'GET', '/nope', { key: null });
  const { text } = await scrape();
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.error, undefined, `running promtool: ${r.error}`);
  assert.equal(r.status, 0, `promtool check metrics failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
});
