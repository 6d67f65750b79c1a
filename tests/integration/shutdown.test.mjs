// Graceful shutdown: SIGTERM drains in-flight requests, refuses new
// connections, exits 0; a second signal exits at once with 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, req, connect, tryConnect, pollUntil, getOnce } from './lib/harness.mjs';
import { parseProm, sum } from './lib/prom.mjs';

/**
 * Opens a connection, sends a POST /v1/keys head announcing the whole body and
 * only the first part of it, and waits until the hub counts it in flight.
 */
async function startSlowCreate(hub, name) {
  const body = JSON.stringify({ name, role: 'user' });
  const cut = 9;
  const c = await connect(hub.port);
  await c.write(
    `POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${hub.adminKey}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, cut)}`,
  );
  // in flight = this request + the scrape itself
  await pollUntil(
    async () => {
      const m = parseProm((await getOnce(hub.port, '/metrics')).text);
      return sum(m, 'agenthub_http_requests_in_flight') >= 2;
    },
    { timeoutMs: 3000, message: 'the slow request to be in flight' },
  );
  return { conn: c, rest: body.slice(cut) };
}

const started = (l) => l.msg === 'shutdown started: draining';

test('SIGTERM drains: new connections refused, the in-flight request completes, exit 0', async () => {
  const hub = await startHub({ config: { server: { shutdown_grace_s: 10, body_timeout_s: 10 } } });
  const slow = await startSlowCreate(hub, 'in-flight-at-shutdown');

  hub.kill('SIGTERM');
  await hub.waitLog(started, { message: '"shutdown started: draining" in the log' });
  // The listeners are closed: a new connection is refused (bounded wait, should be at once).
  await pollUntil(async () => (await tryConnect(hub.port)) === 'refused', {
    timeoutMs: 2000,
    message: 'new connections to be refused while draining',
  });
  assert.ok(hub.alive(), 'still running while a request is in flight');

  // Finish the body: the request completes normally.
  await slow.conn.write(slow.rest);
  const [r] = await slow.conn.waitResponses(1, { timeoutMs: 5000 });
  assert.equal(r.status, 201, r.body);
  const k = JSON.parse(r.body);
  assert.equal(k.name, 'in-flight-at-shutdown');
  assert.match(k.key, /^ahk_/);
  assert.match(r.headers.connection ?? '', /close/i, 'a response while draining says Connection: close');
  slow.conn.close();

  assert.equal(await hub.waitExit({ timeoutMs: 10_000 }), 0, 'exit code 0');
  assert.ok(hub.logs().some((l) => l.msg === 'shutdown complete'), 'logged "shutdown complete"');

  // What was done during the drain is durable: the key is there after a restart.
  const again = await startHub({ dataDir: hub.dataDir });
  const list = await req(again, 'GET', '/v1/keys', { key: hub.adminKey });
  assert.equal(list.status, 200, list.text);
  assert.ok(list.json.data.some((x) => x.id === k.id), 'the key created during the drain is stored');
  const own = await req(again, 'GET', '/v1/keys', { key: k.key });
  assert.equal(own.status, 403, 'and it authenticates (as a user: 403, not 401)');
  assert.equal(await again.stop(), 0);
});

test('SIGTERM on an idle hub exits 0 and logs start and completion of the shutdown', async () => {
  const hub = await startHub();
  assert.equal(await hub.stop('SIGTERM'), 0);
  const msgs = hub.logs().map((l) => l.msg);
  assert.ok(msgs.includes('shutdown started: draining'));
  assert.ok(msgs.includes('shutdown complete'));
  assert.ok(msgs.indexOf('shutdown started: draining') < msgs.indexOf('shutdown complete'));
  assert.equal(await tryConnect(hub.port), 'refused');
});

test('SIGINT shuts down gracefully too (exit 0)', async () => {
  const hub = await startHub();
  assert.equal(await hub.stop('SIGINT'), 0);
  assert.ok(hub.logs().some((l) => l.msg === 'shutdown complete'));
});

test('/readyz answers 503 draining (+Retry-After) to a request already arriving at SIGTERM', async () => {
  const hub = await startHub({ config: { server: { shutdown_grace_s: 10, body_timeout_s: 10, header_timeout_s: 10 } } });
  // A /readyz head that is still incomplete when the signal comes (idle keep-alive
  // connections are closed by the drain, so this is how a load balancer probe sees it).
  const probe = await connect(hub.port);
  await probe.write('GET /readyz HTTP/1.1\r\nHost: x\r\n');
  const slow = await startSlowCreate(hub, 'holds-the-drain');
  hub.kill('SIGTERM');
  await hub.waitLog(started);
  await probe.write('\r\n');
  let rs = [];
  try {
    rs = await probe.waitResponses(1, { timeoutMs: 3000 });
  } catch {
    assert.ok(probe.closed(), 'the probe is either answered or its connection closed');
  }
  if (rs.length) {
    assert.equal(rs[0].status, 503, rs[0].body);
    assert.ok(rs[0].headers['retry-after'], 'Retry-After on 503');
    const b = JSON.parse(rs[0].body);
    assert.notEqual(b.status, 'ready');
    assert.equal(b.checks.draining, true);
  }
  probe.close();
  await slow.conn.write(slow.rest);
  assert.equal((await slow.conn.waitResponses(1, { timeoutMs: 5000 }))[0].status, 201);
  assert.equal(await hub.waitExit(), 0);
});

test('a second SIGTERM during a long drain exits at once with code 1', async () => {
  const hub = await startHub({ config: { server: { shutdown_grace_s: 30, body_timeout_s: 30 } } });
  const slow = await startSlowCreate(hub, 'never-finished');
  hub.kill('SIGTERM');
  await hub.waitLog(started);
  assert.ok(hub.alive(), 'draining, held open by the slow request');
  hub.kill('SIGTERM');
  // Well under the 30 s grace: a bound, not a timing assertion.
  const code = await hub.waitExit({ timeoutMs: 5000 });
  assert.equal(code, 1, `exit code 1 after the second signal (got ${code}, signal ${hub.exit.signal})`);
  slow.conn.close();
});
