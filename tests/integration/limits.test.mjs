// HTTP/1.1 protocol edges and configured limits, through raw sockets.
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, req, rawHttp, connect, parseResponses, getOnce, pollUntil } from './lib/harness.mjs';

const LIMITS = {
  server: {
    max_body_bytes: 1024,
    max_header_bytes: 2048,
    max_headers: 20,
    header_timeout_s: 1,
    body_timeout_s: 1,
    max_connections: 8,
  },
};

/** The first complete response on the text, parsed; fails with the raw text if none. */
function first(raw) {
  const [r] = parseResponses(raw.text);
  assert.ok(r, `expected an HTTP response, got ${JSON.stringify(raw.text)} (closed: ${raw.closed})`);
  return r;
}

function jsonError(res) {
  assert.match(res.headers['content-type'] ?? '', /^application\/json/);
  const e = JSON.parse(res.body).error;
  assert.ok(e && typeof e.message === 'string' && typeof e.type === 'string', `OpenAI-shaped error: ${res.body}`);
  return e;
}

const oneResponse = (t) => parseResponses(t).length >= 1;

describe('limits and protocol edges', () => {
  let hub;
  let auth;
  before(async () => {
    hub = await startHub({ config: LIMITS });
    auth = `Authorization: Bearer ${hub.adminKey}\r\n`;
  });

  test('413 body_too_large when Content-Length exceeds max_body_bytes (before the body is sent)', async () => {
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n`,
      { until: oneResponse },
    );
    const r = first(raw);
    assert.equal(r.status, 413);
    assert.equal(jsonError(r).code, 'body_too_large');
  });

  test('413 when a chunked body grows past max_body_bytes', async () => {
    const chunk = 'a'.repeat(512);
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `200\r\n${chunk}\r\n200\r\n${chunk}\r\n200\r\n${chunk}\r\n0\r\n\r\n`,
      { until: oneResponse },
    );
    const r = first(raw);
    assert.equal(r.status, 413);
    assert.equal(jsonError(r).code, 'body_too_large');
  });

  test('a body of exactly max_body_bytes is accepted', async () => {
    const body = JSON.stringify({ name: 'n'.repeat(100), role: 'user' });
    const padded = body.slice(0, -1) + ' '.repeat(1024 - body.length) + '}';
    assert.equal(padded.length, 1024);
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n${padded}`,
      { until: oneResponse },
    );
    assert.equal(first(raw).status, 201, raw.text);
  });

  test('431 when the request head exceeds max_header_bytes', async () => {
    const raw = await rawHttp(hub.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(3000)}\r\n\r\n`, {
      until: oneResponse,
    });
    const r = first(raw);
    assert.equal(r.status, 431);
    jsonError(r);
  });

  test('431 when there are more than max_headers headers', async () => {
    let h = '';
    for (let i = 0; i < 25; i++) h += `X-H${i}: v\r\n`;
    const raw = await rawHttp(hub.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${h}\r\n`, { until: oneResponse });
    const r = first(raw);
    assert.equal(r.status, 431);
    jsonError(r);
  });

  test('a head with max_headers headers is accepted', async () => {
    let h = '';
    for (let i = 0; i < 18; i++) h += `X-H${i}: v\r\n`;
    const raw = await rawHttp(hub.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${h}Connection: close\r\n\r\n`, {
      until: oneResponse,
    });
    assert.equal(first(raw).status, 200);
  });

  test('408 and close when the head is not complete within header_timeout_s', async () => {
    // Half a request line, then silence: the server must answer 408 and close.
    const raw = await rawHttp(hub.port, 'GET /heal', { timeoutMs: 6000 });
    assert.ok(raw.closed, `the server closes the connection (got ${JSON.stringify(raw.text)})`);
    assert.equal(first(raw).status, 408);
  });

  test('an idle connection that sent nothing is closed without a response after header_timeout_s', async () => {
    const raw = await rawHttp(hub.port, [], { timeoutMs: 6000 });
    assert.ok(raw.closed, 'closed');
  });

  test('408 and close when the body stalls longer than body_timeout_s', async () => {
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":`,
      { timeoutMs: 6000 },
    );
    assert.ok(raw.closed, `the server closes the connection (got ${JSON.stringify(raw.text)})`);
    assert.equal(first(raw).status, 408);
  });

  for (const [what, line] of [
    ['a request line without spaces', 'GARBAGE\r\n\r\n'],
    ['a method alone', 'GET\r\n\r\n'],
    ['trailing junk after the version', 'GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n'],
    ['a target that is not absolute', 'GET healthz HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a version that is not HTTP/x.y', 'GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n'],
  ]) {
    test(`400 for a malformed request line (${what}), as JSON, then close`, async () => {
      const raw = await rawHttp(hub.port, line, { timeoutMs: 3000 });
      const r = first(raw);
      assert.equal(r.status, 400, `${JSON.stringify(line)} -> ${r.status}`);
      jsonError(r);
      assert.ok(raw.closed, 'closed after 400');
    });
  }

  test('400 for Content-Length together with Transfer-Encoding (request smuggling guard)', async () => {
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      { timeoutMs: 3000 },
    );
    const r = first(raw);
    assert.equal(r.status, 400);
    jsonError(r);
    assert.ok(raw.closed, 'closed after a framing error');
  });

  test('400 for two different Content-Length headers', async () => {
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
      { timeoutMs: 3000 },
    );
    assert.equal(first(raw).status, 400);
  });

  test('501 for an unknown transfer coding', async () => {
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: gzip\r\n\r\n`,
      { timeoutMs: 3000 },
    );
    const r = first(raw);
    assert.equal(r.status, 501);
    jsonError(r);
  });

  test('505 for an HTTP/2.0 request line', async () => {
    const raw = await rawHttp(hub.port, 'GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n', { timeoutMs: 3000 });
    const r = first(raw);
    assert.equal(r.status, 505);
    jsonError(r);
  });

  test('a chunked JSON body is accepted (POST /v1/keys -> 201)', async () => {
    const body = JSON.stringify({ name: 'chunked-key', role: 'viewer' });
    const a = body.slice(0, 10);
    const b = body.slice(10);
    const raw = await rawHttp(
      hub.port,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
        `${a.length.toString(16)}\r\n${a}\r\n${b.length.toString(16)};ext=1\r\n${b}\r\n0\r\n\r\n`,
      { until: oneResponse },
    );
    const r = first(raw);
    assert.equal(r.status, 201, r.body);
    const k = JSON.parse(r.body);
    assert.equal(k.name, 'chunked-key');
    assert.match(k.key, /^ahk_/);
  });

  test('pipelined requests on one socket are answered in order', async () => {
    const ids = ['pipe-1', 'pipe-2', 'pipe-3', 'pipe-4'];
    const paths = ['/healthz', '/readyz', '/nope', '/healthz'];
    const bytes = ids.map((id, i) => `GET ${paths[i]} HTTP/1.1\r\nHost: x\r\nx-request-id: ${id}\r\n\r\n`).join('');
    const raw = await rawHttp(hub.port, bytes, { until: (t) => parseResponses(t).length >= 4, timeoutMs: 3000 });
    const rs = parseResponses(raw.text);
    assert.equal(rs.length, 4, `four responses: ${JSON.stringify(raw.text)}`);
    assert.deepEqual(rs.map((r) => r.headers['x-request-id']), ids);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 404, 200]);
    assert.equal(JSON.parse(rs[1].body).status, 'ready');
  });

  test('keep-alive: one connection serves several requests in turn', async () => {
    const c = await connect(hub.port);
    try {
      for (let i = 1; i <= 3; i++) {
        await c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: ka-${i}\r\n\r\n`);
        const rs = await c.waitResponses(i);
        assert.equal(rs[i - 1].status, 200);
        assert.equal(rs[i - 1].headers['x-request-id'], `ka-${i}`);
        assert.ok(!c.closed(), 'still open after a keep-alive response');
      }
      // a POST with a body, then a GET, on the same connection
      const body = JSON.stringify({ name: 'ka', role: 'user' });
      await c.write(
        `POST /v1/keys HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      const rs = await c.waitResponses(4);
      assert.equal(rs[3].status, 201, rs[3].body);
      await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const all = await c.waitResponses(5);
      assert.equal(all[4].status, 200);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  test('an error response keeps the connection usable when the framing is intact (404, 401)', async () => {
    const raw = await rawHttp(
      hub.port,
      'GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/keys HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      { until: (t) => parseResponses(t).length >= 3 },
    );
    assert.deepEqual(parseResponses(raw.text).map((r) => r.status), [404, 401, 200]);
  });

  test('HTTP/1.0 request is answered and the connection closed', async () => {
    const raw = await rawHttp(hub.port, 'GET /healthz HTTP/1.0\r\n\r\n', { timeoutMs: 3000 });
    assert.ok(raw.closed, 'closed after the response');
    const r = first(raw);
    assert.equal(r.status, 200);
    assert.match(r.version, /^HTTP\/1\.[01]$/);
    assert.deepEqual(JSON.parse(r.body), { status: 'ok' });
    assert.ok(!/chunked/i.test(r.headers['transfer-encoding'] ?? ''), 'no chunked encoding to an HTTP/1.0 client');
  });

  test('the hub is still healthy after all of the above', async () => {
    const r = await req(hub, 'GET', '/healthz', { key: null });
    assert.equal(r.status, 200);
  });
});

describe('max_connections', () => {
  test('at max_connections a new connection gets 503 + Retry-After and is closed; a freed slot is reused', async () => {
    const hub = await startHub({ config: LIMITS });
    const conns = [];
    try {
      // Open 8 connections and make each prove the server accepted it (a keep-alive response).
      for (let i = 0; i < 8; i++) {
        const c = await connect(hub.port);
        conns.push(c);
        await c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
        const [r] = await c.waitResponses(1);
        assert.equal(r.status, 200, `connection ${i + 1} of 8 is served`);
      }
      const raw = await rawHttp(hub.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 3000 });
      const r = first(raw);
      assert.equal(r.status, 503, `the 9th connection is refused: ${raw.text}`);
      assert.ok(r.headers['retry-after'], 'Retry-After is set');
      assert.ok(Number(r.headers['retry-after']) >= 0);
      jsonError(r);
      assert.ok(raw.closed, 'and closed');
      for (const c of conns) assert.ok(!c.closed(), 'the 8 accepted connections stay open');

      // Free one slot: a new connection is served again (the close reaches the server asynchronously).
      conns.shift().close();
      const ok = await pollUntil(
        async () => {
          const x = await getOnce(hub.port, '/healthz');
          return x.status === 200 ? x : null;
        },
        { timeoutMs: 3000, message: 'a connection to be served after one closed' },
      );
      assert.equal(ok.status, 200);
    } finally {
      for (const c of conns) c.close();
    }
  });
});

describe('out of file descriptors', () => {
  test('accept pauses with a rate-limited warning, and the hub serves again once connections close', async () => {
    // A hard limit of 96 open files: agenthub raises its soft limit to it and says that is too low.
    const hub = await startHub({ prefix: ['prlimit', '--nofile=96:96', '--'], config: { server: { workers: 1 } } });
    const conns = [];
    try {
      const low = hub.logs().find((l) => l.component === 'process' && /open-files limit is below/.test(l.msg));
      assert.ok(low, `a warning about the open-files limit at start; stderr:\n${hub.stderr()}`);
      assert.equal(low.level, 'warn');
      assert.equal(low.open_files_limit, 96);

      // More idle connections than descriptors: the kernel completes them, agenthub runs out.
      const t0 = Date.now();
      for (let i = 0; i < 150; i++) conns.push(await connect(hub.port));
      const isFdWarn = (l) => l.component === 'http' && /^accept: out of file descriptors/.test(l.msg);
      const w = await hub.waitLog(isFdWarn, { timeoutMs: 5000, message: 'the accept EMFILE warning' });
      assert.equal(w.level, 'warn');
      assert.equal(w.error, 'Too many open files');
      // Keep the listener busy a while: the warning repeats at most once a second, not once per loop turn.
      await new Promise((r) => setTimeout(r, 1500));
      const warns = hub.logs().filter(isFdWarn).length;
      const secs = (Date.now() - t0) / 1000;
      assert.ok(warns <= Math.ceil(secs) + 1, `${warns} warnings in ${secs} s`);
      assert.ok(hub.alive());

      for (const c of conns.splice(0)) c.close();
      const ok = await pollUntil(
        async () => {
          const x = await getOnce(hub.port, '/healthz');
          return x.status === 200 ? x : null;
        },
        { timeoutMs: 5000, message: '/healthz 200 after the connections closed' },
      );
      assert.equal(ok.status, 200);
    } finally {
      for (const c of conns) c.close();
      await hub.stop();
    }
  });
});
