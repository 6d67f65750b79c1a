// Gateway resilience against agenthub mock-llm upstreams with injected faults:
// fallbacks, retries (Retry-After), circuit breakers, broken and malformed
// streams, client aborts, timeouts, upstream errors passed through, and the
// error a client gets when nothing works.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startHub, req, errorOf, pollUntil } from './lib/harness.mjs';
import { find, sum } from './lib/prom.mjs';
import { startMockLlm, closedPort, readSse, postHub, scrape } from './lib/gateway.mjs';

const ADMIN = 'adm-gateway-faults-key';
const user = (content) => [{ role: 'user', content }];
const LONG = 'a fairly long user message so that the answer takes many chunks to stream';

// upstream model strings (mock-llm counts per exact string)
const M = {
  steady: 'fb-steady',
  p500: 'p500?status=500',
  brk: 'brk?status=500',
  rec: 'rec?status=500&fail_times=5',
  rl: 'rl?status=429&retry_after=1&fail_times=2',
  ra60: 'ra60?status=429&retry_after=60',
  s500once: 'sretry?status=500&fail_times=1',
  drop0: 'd0?drop_after=0',
  drop3: 'd3?drop_after=3',
  mal: 'mal?malformed=1&token_ms=5',
  malBody: 'malbody?malformed=1',
  slow: 'slow?ttft_ms=50&token_ms=100',
  slowBody: 'slowbody?latency_ms=5000',
  antBad: 'claude-bad?status=400',
  ttft: 'ttft?ttft_ms=3000',
  lat: 'lat?latency_ms=3000',
  bad: 'bad?status=400',
  af1: 'af1?status=500',
  af2: 'af2?status=503',
};

describe('gateway faults (mock-llm upstreams)', () => {
  let mock;
  let hub;
  let client;

  before(async () => {
    mock = await startMockLlm();
    const deadPort = await closedPort();
    const up = (name, extra = {}) => ({ name, type: 'openai', base_url: `${mock.url}/v1`, api_key: 'x', ...extra });
    hub = await startHub({
      env: { AGENTHUB_ADMIN_KEY: ADMIN },
      config: {
        providers: [
          { name: 'dead', type: 'openai', base_url: `http://127.0.0.1:${deadPort}/v1`, api_key: 'x', max_retries: 0, connect_timeout_s: 2 },
          up('up0', { max_retries: 0 }),
          up('up2', { max_retries: 2 }),
          up('quick', { max_retries: 0, breaker_open_s: 1 }),
          up('ftt', { max_retries: 0, first_token_timeout_s: 0.5 }),
          up('tot', { max_retries: 0, timeout_s: 0.5 }),
          { name: 'ant0', type: 'anthropic', base_url: mock.url, api_key: 'x', max_retries: 0 },
        ],
        models: [
          { name: 'steady', targets: [{ provider: 'up0', model: M.steady }] },
          { name: 'down', targets: [{ provider: 'dead', model: 'echo' }], fallbacks: ['steady'] },
          { name: 'p500', targets: [{ provider: 'up0', model: M.p500 }], fallbacks: ['steady'] },
          { name: 'brk', targets: [{ provider: 'up0', model: M.brk }], fallbacks: ['steady'] },
          { name: 'rec', targets: [{ provider: 'quick', model: M.rec }], fallbacks: ['steady'] },
          { name: 'rl', targets: [{ provider: 'up2', model: M.rl }] },
          { name: 'ra60', targets: [{ provider: 'up2', model: M.ra60 }], fallbacks: ['steady'] },
          { name: 'sretry', targets: [{ provider: 'up2', model: M.s500once }] },
          { name: 'drop0', targets: [{ provider: 'up0', model: M.drop0 }], fallbacks: ['steady'] },
          { name: 'drop3', targets: [{ provider: 'up0', model: M.drop3 }], fallbacks: ['steady'] },
          { name: 'mal', targets: [{ provider: 'up0', model: M.mal }] },
          { name: 'malbody', targets: [{ provider: 'up0', model: M.malBody }] },
          { name: 'slow', targets: [{ provider: 'up0', model: M.slow }] },
          { name: 'slowbody', targets: [{ provider: 'up0', model: M.slowBody }] },
          { name: 'antbad', targets: [{ provider: 'ant0', model: M.antBad }] },
          { name: 'ttft', targets: [{ provider: 'ftt', model: M.ttft }] },
          { name: 'lat', targets: [{ provider: 'tot', model: M.lat }] },
          { name: 'bad', targets: [{ provider: 'up2', model: M.bad }], fallbacks: ['steady'] },
          {
            name: 'allfail',
            targets: [
              { provider: 'up0', model: M.af1 },
              { provider: 'up0', model: M.af2 },
            ],
          },
          { name: 'nowhere', targets: [{ provider: 'dead', model: 'nowhere' }] },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${hub.url}/v1`, apiKey: ADMIN, maxRetries: 0, timeout: 20_000 });
  });

  const chat = (model, content = 'hi', extra = {}) => req(hub, 'POST', '/v1/chat/completions', { body: { model, messages: user(content), ...extra } });

  // ---- fallbacks -----------------------------------------------------------------

  test('primary unreachable (closed port): the fallback serves 20 of 20 requests', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await chat('down', `n${i}`);
      assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.text}`);
      assert.equal(r.json.choices[0].message.content, `echo: n${i}`);
      assert.equal(r.headers.get('x-agenthub-model'), 'steady', `request ${i}`);
      assert.equal(r.headers.get('x-agenthub-provider'), 'up0');
      assert.equal(r.headers.get('x-agenthub-upstream-model'), M.steady);
    }
  });

  let p500Fallbacks; // agenthub_gateway_fallbacks_total{from=p500,to=steady} delta over the 20 requests

  test('primary answers 500 always: the fallback serves 20 of 20', async () => {
    const before = await scrape(hub);
    for (let i = 0; i < 20; i++) {
      const r = await chat('p500', `n${i}`);
      assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.text}`);
      assert.equal(r.headers.get('x-agenthub-model'), 'steady');
      assert.equal(r.json.choices[0].message.content, `echo: n${i}`);
    }
    const after = await scrape(hub);
    p500Fallbacks = sum(after, 'agenthub_gateway_fallbacks_total', { from: 'p500', to: 'steady' }) -
      sum(before, 'agenthub_gateway_fallbacks_total', { from: 'p500', to: 'steady' });
  });

  test('fallbacks_total counts every request the fallback served, also while the primary\'s breaker is open', () => {
    assert.equal(p500Fallbacks, 20, 'each of the 20 requests was served by the fallback model');
  });

  // ---- retries ---------------------------------------------------------------------

  test('429 with Retry-After: 1, twice: retried, succeeds on the 3rd attempt', async () => {
    const before = await scrape(hub);
    const r = await chat('rl', 'rate limited');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'echo: rate limited');
    assert.equal(r.headers.get('x-agenthub-attempts'), '3');
    assert.equal(r.headers.get('x-agenthub-model'), 'rl');
    const s = await mock.modelStats(M.rl);
    assert.equal(s.requests, 3, `mock-llm saw ${JSON.stringify(s)}`);
    assert.equal(s.failed, 2);
    const after = await scrape(hub);
    const d = sum(after, 'agenthub_gateway_retries_total', { provider: 'up2' }) - sum(before, 'agenthub_gateway_retries_total', { provider: 'up2' });
    assert.equal(d, 2, 'two retries counted');
  });

  test('Retry-After longer than the cap: no wait, the fallback serves', async () => {
    const r = await chat('ra60', 'later');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-agenthub-model'), 'steady');
    assert.equal((await mock.modelStats(M.ra60)).requests, 1, 'the rate-limited target was not retried');
  });

  test('stream: a 500 before the first chunk is retried; the client sees one clean stream', async () => {
    const res = await postHub(hub, '/v1/chat/completions', { model: 'sretry', stream: true, messages: user('retry me') });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-agenthub-attempts'), '2');
    const sse = await readSse(res);
    assert.equal(sse.error, null);
    assert.ok(sse.done, 'ends with [DONE]');
    assert.equal(sse.json.map((c) => c.choices?.[0]?.delta?.content || '').join(''), 'echo: retry me');
    assert.ok(!sse.json.some((c) => c.error), 'no error event');
    assert.equal((await mock.modelStats(M.s500once)).requests, 2);
  });

  test('stream: upstream cut before any chunk: the fallback streams, the client never notices', async () => {
    const res = await postHub(hub, '/v1/chat/completions', { model: 'drop0', stream: true, messages: user('fallback stream') });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-agenthub-model'), 'steady');
    const sse = await readSse(res);
    assert.ok(sse.done);
    assert.equal(sse.json.map((c) => c.choices?.[0]?.delta?.content || '').join(''), 'echo: fallback stream');
  });

  test('upstream 400 is returned as is: no retry, no fallback, attempts 1', async () => {
    const before = (await mock.modelStats(M.bad)).requests;
    const r = await chat('bad', 'bad one');
    assert.equal(r.status, 400, r.text);
    const e = errorOf(r);
    assert.equal(r.headers.get('x-agenthub-attempts'), '1');
    assert.equal((await mock.modelStats(M.bad)).requests, before + 1);
    // the same error body the upstream gives directly
    const direct = await fetch(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: M.bad, messages: user('bad one') }),
    });
    assert.equal(direct.status, 400);
    const de = (await direct.json()).error;
    assert.equal(e.message, de.message);
    assert.equal(e.type, de.type);
    assert.equal(e.code, de.code);
    // the SDK sees a BadRequestError
    await assert.rejects(client.chat.completions.create({ model: 'bad', messages: user('x') }), OpenAI.BadRequestError);
  });

  // ---- circuit breaker -------------------------------------------------------------

  test('breaker opens after 5 failures: the failing target is skipped, the fallback serves', async () => {
    for (let i = 0; i < 8; i++) {
      const r = await chat('brk', `b${i}`);
      assert.equal(r.status, 200, `request ${i}: ${r.text}`);
      assert.equal(r.headers.get('x-agenthub-model'), 'steady');
    }
    const seen = (await mock.modelStats(M.brk)).requests;
    assert.equal(seen, 5, 'the upstream saw exactly the 5 failures that opened the breaker');
    const m = await scrape(hub);
    const g = find(m, 'agenthub_gateway_breaker_state', { provider: 'up0', model: M.brk });
    assert.equal(g.length, 1, 'one breaker series for the target');
    assert.equal(g[0].value, 2, 'open');
    // while open, the target gets nothing
    for (let i = 0; i < 10; i++) {
      const r = await chat('brk', `c${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-agenthub-model'), 'steady');
    }
    assert.equal((await mock.modelStats(M.brk)).requests, 5, 'no request reached the open target');
    // a healthy target's breaker is closed
    assert.equal(find(m, 'agenthub_gateway_breaker_state', { provider: 'up0', model: M.steady })[0]?.value, 0);
  });

  test('breaker half-open probe and recovery (providers[].breaker_open_s: 1)', async () => {
    // Five failures open the breaker; the fallback serves meanwhile.
    for (let i = 0; i < 5; i++) {
      const r = await chat('rec', `r${i}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-agenthub-model'), 'steady');
    }
    let m = await scrape(hub);
    assert.equal(find(m, 'agenthub_gateway_breaker_state', { provider: 'quick', model: M.rec })[0]?.value, 2);
    const before = (await mock.modelStats(M.rec)).requests;
    assert.equal(before, 5);
    // After the open time one probe reaches the target; it now succeeds (fail_times spent),
    // which closes the breaker and the primary serves again.
    await pollUntil(async () => {
      const r = await chat('rec', 'probe');
      return r.status === 200 && r.headers.get('x-agenthub-model') === 'rec';
    }, { timeoutMs: 10_000, intervalMs: 200, message: 'the primary serving again after the probe' });
    m = await scrape(hub);
    assert.equal(find(m, 'agenthub_gateway_breaker_state', { provider: 'quick', model: M.rec })[0]?.value, 0, 'closed');
    const r = await chat('rec', 'after');
    assert.equal(r.headers.get('x-agenthub-model'), 'rec');
  });

  // ---- broken streams ----------------------------------------------------------------

  test('mid-stream drop: the stream ends with an error event and no [DONE]', async () => {
    const res = await postHub(hub, '/v1/chat/completions', { model: 'drop3', stream: true, messages: user(LONG) });
    assert.equal(res.status, 200);
    const sse = await readSse(res);
    assert.ok(!sse.done, `no [DONE] after a broken stream; got:\n${sse.text}`);
    const last = JSON.parse(sse.events.at(-1));
    assert.ok(last.error, `last event is an error: ${sse.events.at(-1)}`);
    assert.equal(typeof last.error.message, 'string');
    assert.equal(typeof last.error.type, 'string');
    const text = sse.json.map((c) => c.choices?.[0]?.delta?.content || '').join('');
    assert.ok(text.length > 0 && `echo: ${LONG}`.startsWith(text), `partial text ${JSON.stringify(text)}`);
    assert.notEqual(text, `echo: ${LONG}`);

    // the SDK throws while iterating
    const stream = await client.chat.completions.create({ model: 'drop3', stream: true, messages: user(LONG) });
    let got = '';
    await assert.rejects(
      (async () => {
        for await (const c of stream) got += c.choices[0]?.delta?.content || '';
      })(),
      (e) => {
        assert.ok(e instanceof OpenAI.APIError, `the SDK raises an APIError, got ${e.constructor.name}: ${e.message}`);
        return true;
      },
    );
    assert.notEqual(got, `echo: ${LONG}`);
  });

  test('malformed upstream chunk: error event, no [DONE]; non-streamed: a 502, not a broken 200', async () => {
    const res = await postHub(hub, '/v1/chat/completions', { model: 'mal', stream: true, messages: user(LONG) });
    assert.equal(res.status, 200);
    const sse = await readSse(res);
    assert.ok(!sse.done, `no [DONE]; got:\n${sse.text}`);
    const last = JSON.parse(sse.events.at(-1));
    assert.ok(last.error, `last event is an error: ${sse.events.at(-1)}`);
    // every event the client got is valid JSON
    for (const e of sse.events) assert.doesNotThrow(() => JSON.parse(e), `event is JSON: ${e}`);

    const r = await chat('malbody', 'half a body');
    assert.equal(r.status, 502, r.text);
    errorOf(r);
  });

  test('client abort mid-stream cancels the upstream request', async () => {
    const before = (await mock.modelStats(M.slow)).aborted;
    const ac = new AbortController();
    const res = await postHub(hub, '/v1/chat/completions', { model: 'slow', stream: true, messages: user(LONG) }, { signal: ac.signal });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const first = await reader.read();
    assert.ok(!first.done && first.value.length > 0, 'got a first chunk');
    ac.abort();
    await reader.cancel().catch(() => {});
    await pollUntil(async () => (await mock.modelStats(M.slow)).aborted > before, {
      timeoutMs: 5000,
      message: 'mock-llm to see the aborted stream',
    });
    // the hub still serves
    const r = await chat('steady', 'still here');
    assert.equal(r.status, 200);
  });

  test('client gone while a non-streamed answer is pending cancels the upstream request', async () => {
    const before = (await mock.modelStats(M.slowBody)).aborted;
    const ac = new AbortController();
    const p = postHub(hub, '/v1/chat/completions', { model: 'slowbody', messages: user('never mind') }, { signal: ac.signal });
    await pollUntil(async () => (await mock.modelStats(M.slowBody)).requests >= 1, { message: 'the upstream request to start' });
    ac.abort();
    await assert.rejects(p);
    await pollUntil(async () => (await mock.modelStats(M.slowBody)).aborted > before, {
      timeoutMs: 4000,
      message: 'mock-llm to see the abandoned request closed',
    });
  });

  test('anthropic upstream error: an OpenAI-shaped error with the upstream status and message', async () => {
    const r = await chat('antbad', 'x');
    assert.equal(r.status, 400, r.text);
    const e = errorOf(r);
    assert.match(e.message, /injected status 400/, e.message);
    assert.equal(r.headers.get('x-agenthub-attempts'), '1');
    await assert.rejects(client.chat.completions.create({ model: 'antbad', messages: user('x') }), OpenAI.BadRequestError);
  });

  // ---- timeouts ------------------------------------------------------------------------

  test('no first token within first_token_timeout_s: 504', async () => {
    const res = await postHub(hub, '/v1/chat/completions', { model: 'ttft', stream: true, messages: user('slow start') });
    assert.equal(res.status, 504);
    const body = await res.text();
    const j = JSON.parse(body);
    assert.equal(typeof j.error.message, 'string');
    assert.equal(typeof j.error.type, 'string');
    assert.ok('code' in j.error && 'param' in j.error, body);
    await assert.rejects(
      client.chat.completions.create({ model: 'ttft', stream: true, messages: user('x') }),
      (e) => e instanceof OpenAI.APIError && e.status === 504,
    );
    // the timed-out upstream request was given up, not left running
    await pollUntil(async () => (await mock.modelStats(M.ttft)).aborted >= 2, {
      timeoutMs: 5000,
      message: 'mock-llm to see both timed-out streams closed',
    });
  });

  test('non-streamed answer slower than timeout_s: 504', async () => {
    const r = await chat('lat', 'slow');
    assert.equal(r.status, 504, r.text);
    errorOf(r);
  });

  // ---- nothing works -----------------------------------------------------------------------

  test('every target failing: 502 with an OpenAI-shaped error', async () => {
    const r = await chat('allfail', 'doomed');
    assert.equal(r.status, 502, `got ${r.status} ${r.text}`);
    const e = errorOf(r);
    assert.ok(e.message.length > 0);
    assert.equal(r.headers.get('x-agenthub-attempts'), '2', 'both targets were tried');
    const r2 = await chat('nowhere', 'doomed');
    assert.equal(r2.status, 502, `got ${r2.status} ${r2.text}`);
    errorOf(r2);
    await assert.rejects(client.chat.completions.create({ model: 'nowhere', messages: user('x') }), (e2) => e2 instanceof OpenAI.APIError && e2.status === 502);
  });
});

// An upstream that closes each keep-alive connection 1 ms after its answer (an
// idle timeout far below agenthub's): requests land on pooled connections the
// upstream is closing or has just closed. agenthub's upstream client must
// notice the close (or retry once on a new connection when the request went
// out on a connection already closing) so that no user ever sees an error.
describe('gateway upstream that closes idle keep-alive connections at once', () => {
  let up;
  let hub;
  let connections = 0;
  let answered = 0;

  before(async () => {
    const http = await import('node:http');
    up = http.createServer((rq, rs) => {
      const sock = rq.socket;
      sock.requests = (sock.requests || 0) + 1;
      let body = '';
      rq.on('data', (d) => { body += d; });
      rq.on('end', () => {
        answered++;
        const model = JSON.parse(body).model;
        const out = JSON.stringify({
          id: `chatcmpl-ka-${answered}`, object: 'chat.completion', created: 1, model,
          choices: [{ index: 0, message: { role: 'assistant', content: `answer ${answered}` }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
        });
        rs.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
        rs.end(out);
        // Idle timeout of 1 ms: close unless a next request was read meanwhile
        // (one already on the wire but unread is cut: the client's problem).
        const n = sock.requests;
        rs.on('finish', () => setTimeout(() => { if (sock.requests === n) sock.destroy(); }, 1));
      });
    });
    up.on('connection', () => { connections++; });
    await new Promise((resolve) => up.listen(0, '127.0.0.1', resolve));
    hub = await startHub({
      env: { AGENTHUB_ADMIN_KEY: ADMIN },
      config: {
        server: { workers: 1 },
        providers: [{ name: 'ka', type: 'openai', base_url: `http://127.0.0.1:${up.address().port}/v1`, api_key: 'x', max_retries: 0 }],
        models: [{ name: 'ka', targets: [{ provider: 'ka', model: 'ka-up' }] }],
      },
    });
  });

  after(() => {
    up.closeAllConnections();
    up.close();
  });

  test('40 requests with 0-3 ms gaps: every one answered 200 on the first attempt, over many connections', async () => {
    for (let i = 0; i < 40; i++) {
      const r = await req(hub, 'POST', '/v1/chat/completions', { key: ADMIN, body: { model: 'ka', messages: user(`q${i}`) } });
      assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.text}`);
      assert.equal(r.headers.get('x-agenthub-attempts'), '1', `request ${i} needed a gateway retry`);
      assert.match(r.json.choices[0].message.content, /^answer \d+$/);
      await new Promise((resolve) => setTimeout(resolve, i % 4));
    }
    assert.ok(connections > 10, `the upstream closed its connections (${connections} for 40 answers)`);
    assert.ok(answered >= 40);
  });
});
