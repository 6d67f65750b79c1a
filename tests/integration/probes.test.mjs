// Health probes, request ids and the JSON shape of routing errors.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, req, errorOf, rawHttp, parseResponses } from './lib/harness.mjs';

let hub;
before(async () => {
  hub = await startHub();
});

test('GET /healthz answers 200 {"status":"ok"} as JSON', async () => {
  const r = await req(hub, 'GET', '/healthz', { key: null });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(r.json, { status: 'ok' });
});

test('GET /readyz answers 200 with status ready and its checks', async () => {
  const r = await req(hub, 'GET', '/readyz', { key: null });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.equal(r.json.status, 'ready');
  assert.equal(typeof r.json.checks, 'object');
  assert.ok(r.json.checks !== null && Object.keys(r.json.checks).length > 0, 'checks is a non-empty object');
  assert.equal(r.json.checks.store, 'ok');
  assert.equal(r.json.checks.draining, false);
});

test('x-request-id is echoed when the client sends a sane one', async () => {
  const id = 'it-probe-123_abc.DEF';
  const r = await req(hub, 'GET', '/healthz', { key: null, headers: { 'x-request-id': id } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-request-id'), id);
});

test('x-request-id is generated (req_...) and unique when absent', async () => {
  const ids = new Set();
  for (let i = 0; i < 20; i++) {
    const r = await req(hub, 'GET', '/healthz', { key: null });
    const id = r.headers.get('x-request-id');
    assert.match(id ?? '', /^req_[A-Za-z0-9]+$/);
    ids.add(id);
  }
  assert.equal(ids.size, 20, 'every generated request id is different');
});

test('an unsafe x-request-id is replaced by a generated one', async () => {
  const bad = 'evil id with spaces <script>' + 'x'.repeat(300);
  const r = await req(hub, 'GET', '/healthz', { key: null, headers: { 'x-request-id': bad } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('x-request-id') ?? '', /^req_[A-Za-z0-9]+$/);
});

test('errors carry x-request-id too', async () => {
  const r = await req(hub, 'GET', '/no/such/route', { key: null, headers: { 'x-request-id': 'err-id-1' } });
  assert.equal(r.headers.get('x-request-id'), 'err-id-1');
});

test('unknown route -> 404 with an OpenAI-shaped JSON error', async () => {
  const r = await req(hub, 'GET', '/no/such/route', { key: null });
  assert.equal(r.status, 404);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  const e = errorOf(r);
  assert.equal(e.code, 'not_found');
  assert.ok(e.message.length > 0);
});

test('wrong method -> 405 JSON error with an Allow header', async () => {
  const r = await req(hub, 'POST', '/healthz', { key: null, body: '' });
  assert.equal(r.status, 405);
  const allow = (r.headers.get('allow') ?? '').split(',').map((s) => s.trim());
  assert.ok(allow.includes('GET'), `Allow lists GET (got "${r.headers.get('allow')}")`);
  assert.ok(!allow.includes('POST'), 'Allow does not list the method that was refused');
  const e = errorOf(r);
  assert.equal(e.code, 'method_not_allowed');
});

test('wrong method on /v1/keys -> 405 listing GET and POST', async () => {
  const r = await req(hub, 'PUT', '/v1/keys', { body: {} });
  assert.equal(r.status, 405);
  const allow = (r.headers.get('allow') ?? '').split(',').map((s) => s.trim());
  assert.ok(allow.includes('GET') && allow.includes('POST'), `Allow: ${r.headers.get('allow')}`);
  errorOf(r);
});

test('HEAD /healthz answers 200 with headers and no body', async () => {
  // fetch hides a HEAD body, so read the raw bytes: exactly one response, nothing after its head.
  const raw = await rawHttp(hub.port, 'HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', {
    timeoutMs: 3000,
  });
  assert.ok(raw.closed, 'server closes after Connection: close');
  const head = raw.text.indexOf('\r\n\r\n');
  assert.ok(head > 0, `a complete response head: ${JSON.stringify(raw.text)}`);
  assert.match(raw.text, /^HTTP\/1\.1 200 /);
  assert.equal(raw.text.slice(head + 4), '', 'no body bytes after the head');
  assert.match(raw.text, /\r\nx-request-id: req_/i);
  const r = await req(hub, 'HEAD', '/healthz', { key: null });
  assert.equal(r.status, 200);
  assert.equal(r.text, '');
});

test('probes need no API key', async () => {
  for (const p of ['/healthz', '/readyz', '/metrics']) {
    const r = await req(hub, 'GET', p, { key: null });
    assert.equal(r.status, 200, p);
  }
});

test('/v1 routes need a key', async () => {
  const r = await req(hub, 'GET', '/v1/keys', { key: null });
  assert.equal(r.status, 401);
  assert.equal(errorOf(r).code, 'missing_api_key');
});

test('Connection: close on HTTP/1.1 is honoured', async () => {
  const raw = await rawHttp(hub.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.ok(raw.closed);
  const [res] = parseResponses(raw.text);
  assert.equal(res.status, 200);
  assert.deepEqual(JSON.parse(res.body), { status: 'ok' });
});
