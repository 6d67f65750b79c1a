// Run limits and control through the real binary: max_turns (with a scripted
// upstream that never stops calling tools, fixtures/script_llm.mjs, and with
// the mock), loop detection, per-request limits (lower only), tool calls per
// turn, tokens, cost, the run timeout, cancel (async and stream runs), the
// live event log, per-agent concurrency, and clients that leave.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { req, errorOf, pollUntil } from './lib/harness.mjs';
import {
  startRuntimeHub,
  applyAgent,
  startRun,
  runSync,
  getRun,
  runEvents,
  waitRun,
  streamRun,
  fetchHub,
  readNamedSse,
  callTool,
  typesOf,
} from './lib/runtime.mjs';
import { startToolServer } from './fixtures/tool_server.mjs';
import { startScriptLlm } from './fixtures/script_llm.mjs';

describe('run limits and control', () => {
  let hub;
  let ts;
  let llm;
  const noopCalls = () => ts.requests.filter((r) => r.path === '/items/noop');
  const hangCalls = () => ts.requests.filter((r) => r.path === '/hang');

  before(async () => {
    ts = await startToolServer();
    llm = await startScriptLlm();
    hub = await startRuntimeHub({
      providers: [{ name: 'script', type: 'openai', base_url: `${llm.url}/v1`, api_key: 'x', max_retries: 0 }],
      models: [
        { name: 'loop_vary', targets: [{ provider: 'script', model: 'call:noop:vary' }] },
        { name: 'loop_same', targets: [{ provider: 'script', model: 'call:noop' }] },
        { name: 'priced', targets: [{ provider: 'local', model: 'echo' }], price: { input_per_mtok: 1000000, output_per_mtok: 1000000 } },
      ],
    });
    const noop = { type: 'http', name: 'noop', url: `${ts.url}/items/noop`, parameters: { type: 'object', properties: { n: { type: 'integer' } } } };
    const hang = (timeout_s) => ({ type: 'http', name: 'hang', url: `${ts.url}/hang`, timeout_s });
    await applyAgent(hub, 'looper', { model: 'loop_vary', tools: [noop], limits: { max_turns: 3, loop_detect: 0 } });
    await applyAgent(hub, 'looper5', { model: 'loop_vary', tools: [noop], limits: { max_turns: 5, loop_detect: 0 } });
    await applyAgent(hub, 'stuck', { model: 'loop_same', tools: [noop], limits: { max_turns: 10, loop_detect: 3 } });
    await applyAgent(hub, 'short', { tools: [noop], limits: { max_turns: 1 } });
    await applyAgent(hub, 'fanout', { tools: [noop], limits: { max_tool_calls_per_turn: 1 } });
    await applyAgent(hub, 'tokens', { limits: { max_tokens: 60 } });
    await applyAgent(hub, 'costly', { model: 'priced', limits: { max_cost_usd: 0.5 } });
    await applyAgent(hub, 'hanger', { tools: [hang(30)], limits: { timeout_s: 1 } });
    await applyAgent(hub, 'waiter', { tools: [hang(30)] });
    await applyAgent(hub, 'single', { tools: [hang(30)], limits: { concurrency: 1 } });
    await applyAgent(hub, 'patient', { tools: [hang(1)] });
  });
  after(async () => {
    if (ts) await ts.stop();
    if (llm) await llm.stop();
  });

  test('max_turns: a model that keeps calling tools stops at the limit: failed, max_turns_exceeded', async () => {
    const n0 = noopCalls().length;
    const run = await runSync(hub, 'looper', 'go round');
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'max_turns_exceeded');
    assert.match(run.error.message, /3/);
    assert.equal(run.turns, 3);
    assert.equal(run.output, null);
    const calls = noopCalls().slice(n0);
    assert.deepEqual(calls.map((c) => c.query.n), ['0', '1', '2']);
    const evs = await runEvents(hub, run.id);
    const types = typesOf(evs);
    assert.equal(types.filter((t) => t === 'model.request').length, 3);
    assert.equal(types.filter((t) => t === 'tool.result').length, 3);
    assert.equal(types.at(-1), 'run.failed');
    assert.equal(evs.at(-1).data.code, 'max_turns_exceeded');
  });

  test('max_turns: 1 with the mock: the tool runs, the turn that would answer is refused', async () => {
    const n0 = noopCalls().length;
    const run = await runSync(hub, 'short', callTool('noop'));
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'max_turns_exceeded');
    assert.equal(run.turns, 1);
    assert.equal(noopCalls().length - n0, 1);
    // Without a tool call one turn is enough.
    assert.equal((await runSync(hub, 'short', 'just answer')).status, 'completed');
  });

  test('loop_detect: the same call with the same arguments 3 times fails the run (loop_detected)', async () => {
    const n0 = noopCalls().length;
    const run = await runSync(hub, 'stuck', 'loop');
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'loop_detected');
    assert.match(run.error.message, /noop/);
    assert.equal(run.turns, 3);
    assert.equal(noopCalls().length - n0, 2, 'the third identical call is not made');
  });

  test('per-request limits lower the agent\'s; a higher value, an unknown limit or a bad value is 422', async () => {
    let run = await runSync(hub, 'looper5', { input: 'x', limits: { max_turns: 2 } });
    assert.equal(run.status, 'failed');
    assert.equal(run.error.code, 'max_turns_exceeded');
    assert.equal(run.turns, 2);
    run = await runSync(hub, 'looper5', 'x');
    assert.equal(run.turns, 5);
    // An agent without a token limit: a request may set one.
    run = await runSync(hub, 'short', { input: 'a rather long question that costs tokens', limits: { max_tokens: 5 } });
    assert.equal(run.status, 'failed');
    assert.equal(run.error.code, 'max_tokens_exceeded');

    const bad = [
      [{ max_turns: 6 }, 'limits.max_turns'],
      [{ timeout_s: 301 }, 'limits.timeout_s'],
      [{ max_turns: 0 }, 'limits.max_turns'],
      [{ max_turns: 'two' }, 'limits.max_turns'],
      [{ max_wishes: 1 }, 'limits.max_wishes'],
    ];
    const wrongParam = [];
    const listed = async () => (await req(hub, 'GET', '/v1/runs?agent=looper5&limit=100')).json.data.length;
    const stored0 = await listed();
    for (const [limits, param] of bad) {
      const r = await startRun(hub, 'looper5', { input: 'x', limits });
      assert.equal(r.status, 422, `${JSON.stringify(limits)}: ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.code, 'invalid_value');
      assert.match(e.message, new RegExp(param.replace('.', '\\.')), r.text);
      if (e.param !== param) wrongParam.push(`${JSON.stringify(limits)} -> param ${JSON.stringify(e.param)}, want ${param}`);
    }
    assert.equal(await listed(), stored0, 'a refused run is not stored');
    // docs/api.md: a 422 names the field in error.param
    assert.deepEqual(wrongParam, [], `error.param of per-request limit errors:\n${wrongParam.join('\n')}`);
  });

  test('max_tool_calls_per_turn: two calls in one answer with a limit of 1 fail the run (too_many_tool_calls)', async () => {
    const n0 = noopCalls().length;
    const run = await runSync(hub, 'fanout', `${callTool('noop', { n: 1 })} ${callTool('noop', { n: 2 })}`);
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'too_many_tool_calls');
    assert.equal(noopCalls().length, n0);
  });

  test('max_tokens and max_cost_usd of the agent fail the run after the model call that crosses them', async () => {
    let run = await runSync(hub, 'tokens', 'short');
    assert.equal(run.status, 'completed', JSON.stringify(run));
    run = await runSync(hub, 'tokens', 'x'.repeat(400));
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'max_tokens_exceeded');
    run = await runSync(hub, 'costly', 'hello');
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'max_cost_exceeded');
    assert.ok(run.usage.cost_usd > 0.5, JSON.stringify(run.usage));
  });

  test('timeout_s: a run stuck in a tool fails with code timeout; the tool\'s request is abandoned', async () => {
    const n0 = hangCalls().length;
    const run = await runSync(hub, 'hanger', callTool('hang'));
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'timeout');
    assert.equal(hangCalls().length - n0, 1);
    const evs = await runEvents(hub, run.id);
    assert.equal(evs.at(-1).type, 'run.failed');
    assert.equal(evs.at(-1).data.code, 'timeout');
    await pollUntil(() => ts.hanging() === 0, { message: 'the hub to close the tool connection' });
    // A per-request timeout works the same way on an agent without one.
    const r2 = await runSync(hub, 'waiter', { input: callTool('hang'), limits: { timeout_s: 1 } });
    assert.equal(r2.status, 'failed');
    assert.equal(r2.error.code, 'timeout');
    await pollUntil(() => ts.hanging() === 0, { message: 'the hub to close the tool connection' });
  });

  test('the event log of a live run shows the tool call while the tool runs (JSON and SSE follow)', async () => {
    const n0 = hangCalls().length;
    const r = await startRun(hub, 'waiter', { input: callTool('hang'), mode: 'async' });
    assert.equal(r.status, 202, r.text);
    const id = r.json.id;
    try {
      await pollUntil(() => hangCalls().length > n0, { message: 'the tool call to reach the service' });
      assert.equal((await getRun(hub, id)).status, 'running');
      const { res, controller } = await fetchHub(hub, 'GET', `/v1/runs/${id}/events`, { headers: { accept: 'text/event-stream' } });
      const live = await readNamedSse(res, { controller, timeoutMs: 2000, stopWhen: (evs) => evs.some((e) => e.event === 'tool.call') });
      const list = await runEvents(hub, id);
      assert.ok(
        typesOf(live.events).includes('tool.call'),
        `SSE follow of a running run: no tool.call within 2 s while the tool runs; got ${typesOf(live.events).join(',')}`,
      );
      assert.ok(typesOf(list).includes('tool.call'), `GET events while the tool runs: ${typesOf(list).join(',')}`);
    } finally {
      await req(hub, 'POST', `/v1/runs/${id}/cancel`);
      await waitRun(hub, id);
    }
  });

  test('cancel an async run stuck in a tool: 202, then cancelled with run.cancelled last; the tool request is dropped; 409 after', async () => {
    const n0 = hangCalls().length;
    const r = await startRun(hub, 'waiter', { input: callTool('hang'), mode: 'async' });
    assert.equal(r.status, 202, r.text);
    await pollUntil(() => hangCalls().length > n0, { message: 'the tool call to reach the service' });
    const c = await req(hub, 'POST', `/v1/runs/${r.json.id}/cancel`);
    assert.equal(c.status, 202, c.text);
    assert.equal(c.json.id, r.json.id);
    const run = await waitRun(hub, r.json.id, { timeoutMs: 5000 });
    assert.equal(run.status, 'cancelled', JSON.stringify(run));
    assert.ok(run.finished_at, JSON.stringify(run));
    const evs = await runEvents(hub, run.id);
    assert.equal(evs.at(-1).type, 'run.cancelled');
    await pollUntil(() => ts.hanging() === 0, { message: 'the hub to close the tool connection' });
    const again = await req(hub, 'POST', `/v1/runs/${run.id}/cancel`);
    assert.equal(again.status, 409, again.text);
    const listed = await req(hub, 'GET', '/v1/runs?agent=waiter&status=cancelled');
    assert.ok(listed.json.data.some((x) => x.id === run.id), listed.text);
  });

  test('cancel a stream run: the client\'s stream ends with run.cancelled', async () => {
    let runId = null;
    let cancel = null;
    const s = await streamRun(hub, 'waiter', callTool('hang'), {
      timeoutMs: 10_000,
      stopWhen: (evs) => {
        if (!cancel && evs.some((e) => e.event === 'tool.call')) {
          runId = evs[0].data.run_id;
          cancel = new Promise((r) => setTimeout(r, 100)).then(() => req(hub, 'POST', `/v1/runs/${runId}/cancel`));
        }
        return false;
      },
    });
    assert.ok(cancel, s.text);
    assert.equal((await cancel).status, 202);
    assert.ok(s.ended, `the stream ended by itself: ${s.error}`);
    assert.equal(s.events.at(-1).event, 'run.cancelled', typesOf(s.events).join(','));
    assert.equal((await getRun(hub, runId)).status, 'cancelled');
  });

  test('concurrency: 1: a second run of the agent while one runs is 429 (runs API and agent:NAME); once it ended, runs are accepted', async () => {
    const n0 = hangCalls().length;
    const first = await startRun(hub, 'single', { input: callTool('hang'), mode: 'async' });
    assert.equal(first.status, 202, first.text);
    await pollUntil(() => hangCalls().length > n0, { message: 'the first run to be in its tool' });
    const second = await startRun(hub, 'single', 'me too');
    assert.equal(second.status, 429, second.text);
    assert.equal(errorOf(second).code, 'agent_concurrency_limit');
    const chat = await req(hub, 'POST', '/v1/chat/completions', { body: { model: 'agent:single', messages: [{ role: 'user', content: 'me too' }] } });
    assert.equal(chat.status, 429, chat.text);
    assert.equal(errorOf(chat).code, 'agent_concurrency_limit');
    // Other agents are not affected.
    assert.equal((await runSync(hub, 'short', 'fine')).status, 'completed');

    assert.equal((await req(hub, 'POST', `/v1/runs/${first.json.id}/cancel`)).status, 202);
    await waitRun(hub, first.json.id);
    const third = await pollUntil(
      async () => {
        const x = await startRun(hub, 'single', 'after');
        return x.status === 200 ? x : null;
      },
      { timeoutMs: 5000, message: 'a run to be accepted once the first ended' },
    );
    assert.equal(third.json.output, 'echo: after');
  });

  test('a client that leaves does not stop the run: it finishes and is stored (stream and sync)', async () => {
    // stream: leave after run.created
    const s = await streamRun(hub, 'patient', callTool('hang'), { stopWhen: (evs) => evs.some((e) => e.event === 'run.created') });
    const runId = s.events[0].data.run_id;
    assert.match(runId, /^run_/);
    let run = await waitRun(hub, runId, { timeoutMs: 8000 });
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: .*timed out/);

    // sync: abort the request while the tool runs
    const ac = new AbortController();
    const p = fetch(hub.url + '/v1/agents/patient/runs', {
      method: 'POST',
      headers: { authorization: `Bearer ${hub.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input: `${callTool('hang')} left` }),
      signal: ac.signal,
    }).catch((e) => e);
    const n1 = hangCalls().length;
    await pollUntil(() => hangCalls().length > n1, { message: 'the sync run to reach its tool' });
    ac.abort();
    await p;
    run = await pollUntil(
      async () => {
        const l = await req(hub, 'GET', '/v1/runs?agent=patient&limit=1');
        const x = l.json.data[0];
        return x && x.input && String(x.input).endsWith('left') && ['completed', 'failed'].includes(x.status) ? x : null;
      },
      { timeoutMs: 8000, message: 'the abandoned sync run to finish' },
    );
    assert.equal(run.status, 'completed', JSON.stringify(run));
  });
});
