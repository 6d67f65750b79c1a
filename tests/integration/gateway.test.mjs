// The gateway as an OpenAI-compatible API, driven by the official `openai` SDK:
// chat (in-process mock, an `openai` upstream = agenthub mock-llm, an
// `anthropic` upstream = mock-llm's Messages API), streaming and usage chunks,
// tool calls, pass-through of fields the gateway does not use (seen by a
// recording upstream), embeddings, /v1/models, aliases, errors, accounting.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startHub, req, errorOf } from './lib/harness.mjs';
import { sum } from './lib/prom.mjs';
import { startMockLlm, startRecorder, readSse, postHub, scrape, weatherTool, timeTool, CANNED } from './lib/gateway.mjs';

const ADMIN = 'adm-gateway-test-key';
const UPSTREAM_SECRET = 'sk-upstream-secret-123';
const tok = (s) => Math.ceil([...s].length / 4);

describe('gateway through the OpenAI SDK', () => {
  let mock; // agenthub mock-llm
  let rec; // recording upstream
  let hub;
  let client; // OpenAI SDK -> hub
  let direct; // OpenAI SDK -> mock-llm

  before(async () => {
    [mock, rec] = await Promise.all([startMockLlm(), startRecorder()]);
    hub = await startHub({
      env: { AGENTHUB_ADMIN_KEY: ADMIN },
      config: {
        providers: [
          { name: 'local', type: 'mock' },
          { name: 'up', type: 'openai', base_url: `${mock.url}/v1`, api_key: 'x', max_retries: 0 },
          { name: 'rec', type: 'openai', base_url: `${rec.url}/v1`, api_key: UPSTREAM_SECRET, max_retries: 0 },
          { name: 'ant', type: 'anthropic', base_url: mock.url, api_key: 'x', max_retries: 0 },
        ],
        models: [
          {
            name: 'm',
            aliases: ['gpt-4o-mini', 'team/fast'],
            targets: [{ provider: 'local', model: 'echo' }],
            price: { input_per_mtok: 1000, output_per_mtok: 2000 },
          },
          { name: 'u', targets: [{ provider: 'up', model: 'echo' }] },
          { name: 'r', targets: [{ provider: 'rec', model: 'rec-upstream-model' }] },
          { name: 'a', aliases: ['claude'], targets: [{ provider: 'ant', model: 'claude-mock' }] },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${hub.url}/v1`, apiKey: ADMIN, maxRetries: 0, timeout: 20_000 });
    direct = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 20_000 });
  });

  // ---- chat, not streamed ----------------------------------------------------

  test('in-process mock: answer, usage, ids and the gateway headers', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'm', messages: [{ role: 'user', content: 'hello' }] })
      .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, 'echo: hello');
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.match(data.id, /^chatcmpl-/);
    assert.equal(typeof data.created, 'number');
    assert.ok(data.created > 1_600_000_000, `created ${data.created}`);
    assert.equal(typeof data.system_fingerprint, 'string');
    assert.ok(data.system_fingerprint.length > 0);
    assert.equal(data.usage.prompt_tokens, tok('hello'));
    assert.equal(data.usage.completion_tokens, tok('echo: hello'));
    assert.equal(data.usage.total_tokens, tok('hello') + tok('echo: hello'));

    const h = response.headers;
    assert.equal(h.get('x-agenthub-provider'), 'local');
    assert.equal(h.get('x-agenthub-model'), 'm');
    assert.equal(h.get('x-agenthub-upstream-model'), 'echo');
    assert.equal(h.get('x-agenthub-attempts'), '1');
    assert.match(h.get('x-agenthub-overhead-us') || '', /^\d+$/);
    assert.ok(h.get('x-request-id'), 'x-request-id present');
  });

  test('openai upstream (mock-llm): the provider id and system_fingerprint are kept as is', async () => {
    const messages = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'same request both ways' },
    ];
    const viaHub = await client.chat.completions.create({ model: 'u', messages }).withResponse();
    const plain = await direct.chat.completions.create({ model: 'echo', messages });
    const got = viaHub.data;
    assert.equal(got.id, plain.id, 'id from the upstream, byte for byte');
    assert.equal(got.system_fingerprint, plain.system_fingerprint);
    assert.equal(got.system_fingerprint, 'fp_mock');
    assert.deepEqual(got.choices, plain.choices);
    assert.deepEqual(got.usage, plain.usage);
    assert.equal(got.choices[0].message.content, 'echo: same request both ways');
    assert.equal(viaHub.response.headers.get('x-agenthub-provider'), 'up');
    assert.equal(viaHub.response.headers.get('x-agenthub-model'), 'u');
    assert.equal(viaHub.response.headers.get('x-agenthub-upstream-model'), 'echo');
    // the upstream really was asked, under the target's model name
    const s = await mock.modelStats('echo');
    assert.ok(s.requests >= 2, `mock-llm saw ${s.requests} requests for "echo"`);
  });

  // ---- streaming ---------------------------------------------------------------

  for (const model of ['m', 'u', 'a']) {
    test(`stream (${model}): chunks concatenate to the answer; no usage chunk unless asked`, async () => {
      const text = 'a streamed answer with several tokens';
      const stream = await client.chat.completions.create({
        model,
        stream: true,
        messages: [{ role: 'user', content: text }],
      });
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      assert.ok(chunks.length >= 3, `got ${chunks.length} chunks`);
      const content = chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
      assert.equal(content, `echo: ${text}`);
      for (const c of chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.choices.length, 1, `every chunk has one choice (got ${JSON.stringify(c)})`);
        assert.ok(!c.usage, `no usage when the client did not ask: ${JSON.stringify(c)}`);
      }
      assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
      assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for the whole stream');
    });

    test(`stream (${model}) with include_usage: exactly one usage chunk, last, choices []`, async () => {
      const text = 'count my tokens';
      const stream = await client.chat.completions.create({
        model,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: text }],
      });
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      const withUsage = chunks.filter((c) => c.usage);
      assert.equal(withUsage.length, 1, `usage chunks: ${JSON.stringify(withUsage)}`);
      const last = chunks.at(-1);
      assert.equal(last, withUsage[0], 'the usage chunk is the last one');
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.prompt_tokens, tok(text));
      assert.equal(last.usage.completion_tokens, tok(`echo: ${text}`));
      assert.equal(last.usage.total_tokens, tok(text) + tok(`echo: ${text}`));
      const content = chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
      assert.equal(content, `echo: ${text}`);
    });
  }

  test('raw SSE: text/event-stream, data lines, ends with data: [DONE]', async () => {
    const res = await postHub(hub, '/v1/chat/completions', {
      model: 'u',
      stream: true,
      messages: [{ role: 'user', content: 'raw' }],
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /^text\/event-stream/);
    assert.equal(res.headers.get('x-agenthub-model'), 'u');
    const sse = await readSse(res);
    assert.equal(sse.error, null);
    assert.equal(sse.events.at(-1), '[DONE]');
    assert.equal(sse.events.filter((e) => e === '[DONE]').length, 1);
    assert.equal(sse.json.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: raw');
  });

  // ---- tool calls ----------------------------------------------------------------

  const oneCall = 'call_tool get_weather {"city": "Paris"}';
  const twoCalls = 'call_tool get_weather {"city":"Paris"} and call_tool get_time {"tz":"UTC"}';
  const shape = (msg) => (msg.tool_calls || []).map((t) => ({ type: t.type, name: t.function.name, arguments: t.function.arguments }));

  for (const model of ['m', 'u', 'a']) {
    test(`tool calls (${model}), not streamed: single and parallel`, async () => {
      const one = await client.chat.completions.create({
        model,
        tools: [weatherTool, timeTool],
        messages: [{ role: 'user', content: oneCall }],
      });
      assert.equal(one.choices[0].finish_reason, 'tool_calls');
      assert.deepEqual(shape(one.choices[0].message), [{ type: 'function', name: 'get_weather', arguments: '{"city":"Paris"}' }]);
      assert.ok(one.choices[0].message.tool_calls[0].id, 'the call has an id');
      assert.ok(!one.choices[0].message.content, 'no text with the call');

      const two = await client.chat.completions.create({
        model,
        tools: [weatherTool, timeTool],
        messages: [{ role: 'user', content: twoCalls }],
      });
      assert.equal(two.choices[0].finish_reason, 'tool_calls');
      assert.deepEqual(shape(two.choices[0].message), [
        { type: 'function', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function', name: 'get_time', arguments: '{"tz":"UTC"}' },
      ]);
      const ids = two.choices[0].message.tool_calls.map((t) => t.id);
      assert.equal(new Set(ids).size, 2, `distinct call ids: ${ids}`);
      assert.ok(two.usage.completion_tokens > 0);
    });

    test(`tool calls (${model}), streamed: the SDK stream helper assembles the arguments`, async () => {
      const runner = client.chat.completions.stream({
        model,
        tools: [weatherTool, timeTool],
        messages: [{ role: 'user', content: twoCalls }],
      });
      const final = await runner.finalChatCompletion();
      assert.equal(final.choices[0].finish_reason, 'tool_calls');
      assert.deepEqual(shape(final.choices[0].message), [
        { type: 'function', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function', name: 'get_time', arguments: '{"tz":"UTC"}' },
      ]);
      const ids = final.choices[0].message.tool_calls.map((t) => t.id);
      assert.ok(ids.every((x) => typeof x === 'string' && x.length > 0));
      assert.equal(new Set(ids).size, 2);
    });

    test(`tool result (${model}): the model answers from it`, async () => {
      const r = await client.chat.completions.create({
        model,
        tools: [weatherTool],
        messages: [
          { role: 'user', content: 'weather in Paris?' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21C' },
        ],
      });
      assert.equal(r.choices[0].message.content, 'tool said: sunny, 21C');
      assert.equal(r.choices[0].finish_reason, 'stop');
    });
  }

  // ---- pass-through, model rewrite, forced usage (recording upstream) -------------

  test('fields the gateway does not use reach the upstream unchanged; model is the target\'s', async () => {
    rec.requests.length = 0;
    const body = {
      model: 'r',
      messages: [
        { role: 'system', content: 'sys' },
        { role: 'user', content: [{ type: 'text', text: 'hi' }] },
      ],
      response_format: { type: 'json_object' },
      seed: 1234,
      logprobs: true,
      top_logprobs: 3,
      temperature: 0.25,
      max_completion_tokens: 50,
      user: 'end-user-7',
      metadata: { tenant: 't1' },
      x_custom_field: { nested: [1, 'two', { three: 3.5 }], flag: false, nothing: null },
    };
    const { data, response } = await client.chat.completions.create(body).withResponse();
    assert.equal(rec.requests.length, 1, 'one upstream request');
    const up = rec.requests[0];
    assert.equal(up.method, 'POST');
    assert.equal(up.url, '/v1/chat/completions');
    const { model: upModel, ...upRest } = up.body;
    const { model: _m, ...sentRest } = body;
    assert.equal(upModel, 'rec-upstream-model', 'the upstream sees the target\'s model name');
    assert.deepEqual(upRest, sentRest, 'every other field passes through unchanged');
    // the upstream gets the provider's key, never the client's
    assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_SECRET}`);
    assert.ok(!JSON.stringify(up.headers).includes(ADMIN), 'client key not forwarded');
    // and the client gets the upstream's answer
    assert.equal(data.id, CANNED.id);
    assert.equal(data.system_fingerprint, CANNED.system_fingerprint);
    assert.equal(data.choices[0].message.content, 'canned answer');
    assert.deepEqual(data.usage, CANNED.usage);
    assert.equal(response.headers.get('x-agenthub-upstream-model'), 'rec-upstream-model');
    assert.equal(response.headers.get('x-agenthub-provider'), 'rec');
  });

  test('streams always ask the upstream for usage; the client that did not ask gets none', async () => {
    rec.requests.length = 0;
    const stream = await client.chat.completions.create({
      model: 'r',
      stream: true,
      seed: 9,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(rec.requests.length, 1);
    const up = rec.requests[0].body;
    assert.equal(up.model, 'rec-upstream-model');
    assert.equal(up.stream, true);
    assert.equal(up.seed, 9);
    assert.equal(up.stream_options?.include_usage, true, `upstream body: ${rec.requests[0].raw}`);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'canned answer');
    assert.ok(chunks.every((c) => c.choices.length === 1 && !c.usage), JSON.stringify(chunks));

    // asked: exactly one usage chunk, and the client's own stream_options are kept
    rec.requests.length = 0;
    const s2 = await client.chat.completions.create({
      model: 'r',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hi' }],
    });
    const c2 = [];
    for await (const c of s2) c2.push(c);
    assert.equal(rec.requests[0].body.stream_options?.include_usage, true);
    const u = c2.filter((c) => c.usage);
    assert.equal(u.length, 1);
    assert.equal(c2.at(-1), u[0]);
    assert.deepEqual(u[0].usage, CANNED.usage);
  });

  // ---- embeddings ------------------------------------------------------------------

  test('embeddings: float and the SDK\'s base64 default give the same unit vectors, in-process and upstream', async () => {
    const input = ['alpha', 'beta gamma'];
    const b64 = await client.embeddings.create({ model: 'm', input }); // SDK asks for base64, decodes
    const flt = await client.embeddings.create({ model: 'm', input, encoding_format: 'float' });
    const viaUp = await client.embeddings.create({ model: 'u', input, encoding_format: 'float' });
    for (const r of [b64, flt, viaUp]) {
      assert.equal(r.object, 'list');
      assert.equal(r.data.length, 2);
      r.data.forEach((d, i) => {
        assert.equal(d.object, 'embedding');
        assert.equal(d.index, i);
        assert.equal(d.embedding.length, 16);
        const norm = Math.sqrt(d.embedding.reduce((a, x) => a + x * x, 0));
        assert.ok(Math.abs(norm - 1) < 1e-4, `unit length, got ${norm}`);
      });
      assert.equal(r.usage.prompt_tokens, tok('alpha') + tok('beta gamma'));
    }
    for (let i = 0; i < 2; i++) {
      for (let k = 0; k < 16; k++) {
        assert.ok(Math.abs(b64.data[i].embedding[k] - flt.data[i].embedding[k]) < 1e-6, 'base64 = float');
        assert.ok(Math.abs(viaUp.data[i].embedding[k] - flt.data[i].embedding[k]) < 1e-6, 'upstream = in-process');
      }
    }
    assert.notDeepEqual(flt.data[0].embedding, flt.data[1].embedding);

    // base64 asked: base64 on the wire
    const raw = await req(hub, 'POST', '/v1/embeddings', { body: { model: 'u', input: 'alpha', encoding_format: 'base64' } });
    assert.equal(raw.status, 200, raw.text);
    assert.equal(typeof raw.json.data[0].embedding, 'string');
    assert.equal(Buffer.from(raw.json.data[0].embedding, 'base64').length, 16 * 4);
  });

  test('embeddings on a model whose providers cannot embed: a 400, not "circuit breakers open"', async () => {
    const r = await req(hub, 'POST', '/v1/embeddings', { body: { model: 'a', input: 'alpha' } });
    const e = errorOf(r);
    assert.equal(r.status, 400, `got ${r.status} ${r.text}`);
    assert.doesNotMatch(e.message, /circuit breaker/i);
  });

  // ---- models, aliases, errors -------------------------------------------------------

  test('/v1/models lists models and aliases (alias_of)', async () => {
    const list = [];
    for await (const m of client.models.list()) list.push(m);
    const byId = Object.fromEntries(list.map((m) => [m.id, m]));
    for (const id of ['m', 'u', 'r', 'a', 'gpt-4o-mini', 'team/fast', 'claude']) assert.ok(byId[id], `${id} listed`);
    for (const m of list) {
      assert.equal(m.object, 'model');
      assert.equal(typeof m.created, 'number');
      assert.equal(typeof m.owned_by, 'string');
    }
    assert.equal(byId['gpt-4o-mini'].alias_of, 'm');
    assert.equal(byId['team/fast'].alias_of, 'm');
    assert.equal(byId.claude.alias_of, 'a');
    assert.equal(byId.m.alias_of, undefined);
    const raw = await req(hub, 'GET', '/v1/models');
    assert.equal(raw.json.object, 'list');
  });

  test('an alias routes to its model', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'via alias' }] })
      .withResponse();
    assert.equal(data.choices[0].message.content, 'echo: via alias');
    assert.equal(response.headers.get('x-agenthub-model'), 'm');
    assert.equal(response.headers.get('x-agenthub-provider'), 'local');
    const r2 = await client.chat.completions.create({ model: 'team/fast', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r2.choices[0].message.content, 'echo: x');
  });

  test('unknown model: NotFoundError, code model_not_found, param model', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      (e) => {
        assert.ok(e instanceof OpenAI.NotFoundError, `got ${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 404);
        assert.equal(e.code, 'model_not_found');
        assert.equal(e.param, 'model');
        return true;
      },
    );
    await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }), OpenAI.NotFoundError);
  });

  test('bad requests: invalid JSON, missing/empty messages, missing model', async () => {
    const r = await postHub(hub, '/v1/chat/completions', '{"model":"m","messages":[');
    assert.equal(r.status, 400);
    const j = await r.json();
    assert.equal(j.error.code, 'invalid_json');
    assert.equal(typeof j.error.message, 'string');

    for (const body of [{ model: 'm' }, { model: 'm', messages: [] }]) {
      await assert.rejects(client.chat.completions.create(body), (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `got ${e.constructor.name}`);
        assert.equal(e.param, 'messages');
        return true;
      });
    }
    const noModel = await req(hub, 'POST', '/v1/chat/completions', { body: { messages: [{ role: 'user', content: 'x' }] } });
    assert.equal(noModel.status, 400);
    assert.equal(errorOf(noModel).param, 'model');
  });

  // ---- Anthropic provider looks like the OpenAI path -----------------------------------

  test('anthropic provider: same content, finish_reason and usage as the OpenAI path', async () => {
    const messages = [
      { role: 'system', content: 'You are terse and precise.' },
      { role: 'user', content: 'hi there' },
    ];
    const viaOpenai = await client.chat.completions.create({ model: 'u', messages });
    const { data: viaAnt, response } = await client.chat.completions.create({ model: 'a', messages }).withResponse();
    assert.equal(viaAnt.object, 'chat.completion');
    assert.ok(viaAnt.id);
    assert.equal(typeof viaAnt.created, 'number');
    assert.equal(viaAnt.choices[0].message.role, 'assistant');
    assert.equal(viaAnt.choices[0].message.content, 'echo: hi there');
    assert.equal(viaAnt.choices[0].finish_reason, 'stop');
    assert.equal(viaAnt.usage.prompt_tokens, viaOpenai.usage.prompt_tokens, 'the system prompt reached the upstream');
    assert.equal(viaAnt.usage.completion_tokens, viaOpenai.usage.completion_tokens);
    assert.equal(viaAnt.usage.total_tokens, viaOpenai.usage.total_tokens);
    assert.equal(response.headers.get('x-agenthub-provider'), 'ant');
    assert.equal(response.headers.get('x-agenthub-upstream-model'), 'claude-mock');

    // max_tokens cuts the answer: finish_reason length on both paths
    const cutO = await client.chat.completions.create({ model: 'u', max_tokens: 2, messages });
    const cutA = await client.chat.completions.create({ model: 'a', max_tokens: 2, messages });
    assert.equal(cutA.choices[0].finish_reason, 'length');
    assert.equal(cutA.choices[0].finish_reason, cutO.choices[0].finish_reason);
    assert.equal(cutA.choices[0].message.content, cutO.choices[0].message.content);
  });

  test('anthropic provider, streamed: same text and usage as the OpenAI path', async () => {
    const messages = [
      { role: 'system', content: 'sys prompt' },
      { role: 'user', content: 'stream me please' },
    ];
    const collect = async (model) => {
      const s = await client.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } });
      const cs = [];
      for await (const c of s) cs.push(c);
      return cs;
    };
    const [o, a] = await Promise.all([collect('u'), collect('a')]);
    const text = (cs) => cs.map((c) => c.choices[0]?.delta?.content || '').join('');
    assert.equal(text(a), 'echo: stream me please');
    assert.equal(text(a), text(o));
    const fin = (cs) => cs.map((c) => c.choices[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(fin(a), ['stop']);
    assert.equal(a[0].choices[0].delta.role, 'assistant');
    assert.deepEqual(a.at(-1).choices, []);
    assert.deepEqual(
      { p: a.at(-1).usage.prompt_tokens, c: a.at(-1).usage.completion_tokens, t: a.at(-1).usage.total_tokens },
      { p: o.at(-1).usage.prompt_tokens, c: o.at(-1).usage.completion_tokens, t: o.at(-1).usage.total_tokens },
    );
    assert.equal(a.filter((c) => c.usage).length, 1);
  });

  // ---- accounting ----------------------------------------------------------------------

  test('a stream whose client did not ask for usage is still accounted (tokens counted)', async () => {
    const text = 'account this stream';
    const before = await scrape(hub);
    const s = await client.chat.completions.create({ model: 'u', stream: true, messages: [{ role: 'user', content: text }] });
    for await (const _c of s);
    const after = await scrape(hub);
    const d = (type) => sum(after, 'agenthub_gateway_tokens_total', { model: 'u', type }) - sum(before, 'agenthub_gateway_tokens_total', { model: 'u', type });
    assert.equal(d('prompt'), tok(text));
    assert.equal(d('completion'), tok(`echo: ${text}`));
  });

  test('30 concurrent requests over the three providers, streamed and not: each gets its own answer', async () => {
    const jobs = [];
    for (let i = 0; i < 30; i++) {
      const model = ['m', 'u', 'a'][i % 3];
      const text = `concurrent request number ${i} for ${model}`;
      if (i % 2) {
        jobs.push(
          (async () => {
            const s = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: text }] });
            let out = '';
            for await (const c of s) out += c.choices[0]?.delta?.content || '';
            return [out, `echo: ${text}`];
          })(),
        );
      } else {
        jobs.push(
          client.chat.completions
            .create({ model, messages: [{ role: 'user', content: text }] })
            .then((r) => [r.choices[0].message.content, `echo: ${text}`]),
        );
      }
    }
    for (const [got, want] of await Promise.all(jobs)) assert.equal(got, want);
  });

  test('tokens and cost counters move by the usage of a request', async () => {
    const before = await scrape(hub);
    const r = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'count these tokens' }] });
    const after = await scrape(hub);
    const d = (name, labels) => sum(after, name, labels) - sum(before, name, labels);
    assert.equal(d('agenthub_gateway_tokens_total', { model: 'm', type: 'prompt' }), r.usage.prompt_tokens);
    assert.equal(d('agenthub_gateway_tokens_total', { model: 'm', type: 'completion' }), r.usage.completion_tokens);
    const cost = (r.usage.prompt_tokens * 1000 + r.usage.completion_tokens * 2000) / 1e6;
    assert.ok(Math.abs(d('agenthub_gateway_cost_usd_total', { model: 'm' }) - cost) < 1e-9, `cost ${cost}`);
    assert.ok(d('agenthub_gateway_requests_total', { model: 'm', provider: 'local', status: '200' }) >= 1);
  });
});
