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
        { name: 'bad_args', targets: [{ provider: 'script', model: 'call:noop:badjson,once' }] },
        { name: 'ghost', targets: [{ provider: 'script', model: 'call:ghost:force,once' }] },
        { name: 'slow', targets: [{ provider: 'local', model: 'echo?latency_ms=20000' }] },
        { name: 'bad', targets: [{ provider: 'local', model: 'echo?status=400' }] },
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
    await applyAgent(hub, 'badargs', { model: 'bad_args', tools: [noop] });
    await applyAgent(hub, 'ghoster', { model: 'ghost', tools: [noop] });
    await applyAgent(hub, 'slowmodel', { model: 'slow' });
    await applyAgent(hub, 'badmodel', { model: 'bad' });
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
      // Resume after the tool call with Last-Event-ID: only later events, up to run.cancelled.
      const callId = list.find((e) => e.type === 'tool.call').id;
      const again = await fetchHub(hub, 'GET', `/v1/runs/${id}/events`, { headers: { accept: 'text/event-stream', 'last-event-id': String(callId) } });
      const reading = readNamedSse(again.res, { controller: again.controller, timeoutMs: 8000 });
      assert.equal((await req(hub, 'POST', `/v1/runs/${id}/cancel`)).status, 202);
      const rest = await reading;
      assert.ok(rest.ended, 'the resumed follow ends with the run');
      assert.ok(rest.events.every((e) => e.id > callId), rest.text);
      assert.equal(rest.events.at(-1).event, 'run.cancelled', rest.text);
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

  test('runs belong to their key: another user cannot see or cancel them; the owner and admins can', async () => {
    const mk = async (name) => {
      const k = await req(hub, 'POST', '/v1/keys', { body: { name, role: 'user' } });
      assert.equal(k.status, 201, k.text);
      return k.json.key;
    };
    const alice = await mk('alice');
    const bob = await mk('bob');
    const n0 = hangCalls().length;
    const r = await req(hub, 'POST', '/v1/agents/waiter/runs', { key: alice, body: { input: callTool('hang'), mode: 'async' } });
    assert.equal(r.status, 202, r.text);
    const id = r.json.id;
    try {
      await pollUntil(() => hangCalls().length > n0, { message: 'the run to be in its tool' });
      assert.equal((await req(hub, 'GET', `/v1/runs/${id}`, { key: alice })).status, 200);
      assert.equal((await req(hub, 'GET', `/v1/runs/${id}`)).status, 200, 'admin sees it');
      assert.equal((await req(hub, 'GET', `/v1/runs/${id}`, { key: bob })).status, 404);
      assert.equal((await req(hub, 'GET', `/v1/runs/${id}/events`, { key: bob })).status, 404);
      const listed = await req(hub, 'GET', '/v1/runs?agent=waiter', { key: bob });
      assert.ok(!listed.json.data.some((x) => x.id === id), listed.text);
      const c = await req(hub, 'POST', `/v1/runs/${id}/cancel`, { key: bob });
      assert.notEqual(c.status, 202, `another user's cancel must not be accepted: ${c.status} ${c.text}`);
      assert.equal(c.status, 404, `like GET, someone else's run is not found: ${c.text}`);
      assert.equal((await getRun(hub, id)).status, 'running', 'the run goes on');
      const own = await req(hub, 'POST', `/v1/runs/${id}/cancel`, { key: alice });
      assert.equal(own.status, 202, own.text);
      assert.equal((await waitRun(hub, id)).status, 'cancelled');
    } finally {
      await req(hub, 'POST', `/v1/runs/${id}/cancel`);
      await waitRun(hub, id);
    }
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
    const streamed = await startRun(hub, 'single', { input: 'me too', mode: 'stream' });
    assert.equal(streamed.status, 429, streamed.text);
    assert.equal(errorOf(streamed).code, 'agent_concurrency_limit');
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

  test('a model that sends arguments that are not JSON, or calls a tool it was not offered: an error result, the run goes on', async () => {
    const n0 = noopCalls().length;
    let run = await runSync(hub, 'badargs', 'go');
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^script saw: invalid arguments/);
    assert.equal(noopCalls().length, n0, 'the tool was not called');
    let evs = await runEvents(hub, run.id);
    assert.equal(evs.find((e) => e.type === 'tool.call').data.arguments, '{"n":', 'tool.call shows the raw arguments');
    assert.equal(evs.find((e) => e.type === 'tool.result').data.is_error, true);

    run = await runSync(hub, 'ghoster', 'go');
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^script saw: unknown tool "ghost"/);
    evs = await runEvents(hub, run.id);
    assert.equal(evs.find((e) => e.type === 'tool.result').data.is_error, true);
  });

  test('a model call that fails: the run fails with model_error (sync and stream)', async () => {
    const run = await runSync(hub, 'badmodel', 'hi');
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'model_error');
    assert.match(run.error.message, /400/);
    const s = await streamRun(hub, 'badmodel', 'hi');
    assert.ok(s.ended);
    assert.equal(s.events.at(-1).event, 'run.failed', s.text);
    assert.equal(s.events.at(-1).data.code, 'model_error');
  });

  test('cancel during a slow model call: the waiting sync client gets the cancelled run; timeout_s stops a slow model too', async () => {
    const pending = runSync(hub, 'slowmodel', 'take your time');
    const running = await pollUntil(
      async () => (await req(hub, 'GET', '/v1/runs?agent=slowmodel&status=running')).json.data[0],
      { message: 'the run to be running' },
    );
    const c = await req(hub, 'POST', `/v1/runs/${running.id}/cancel`);
    assert.equal(c.status, 202, c.text);
    const run = await pending;
    assert.equal(run.id, running.id);
    assert.equal(run.status, 'cancelled', JSON.stringify(run));
    assert.equal((await runEvents(hub, run.id)).at(-1).type, 'run.cancelled');

    const t = await runSync(hub, 'slowmodel', { input: 'again', limits: { timeout_s: 1 } });
    assert.equal(t.status, 'failed', JSON.stringify(t));
    assert.equal(t.error.code, 'timeout');
  });

  test('concurrency: 1 and async runs: one over the limit waits queued, can be cancelled while queued, and runs once a slot is free', async () => {
    const n0 = hangCalls().length;
    const first = await startRun(hub, 'single', { input: callTool('hang'), mode: 'async' });
    assert.equal(first.status, 202, first.text);
    await pollUntil(() => hangCalls().length > n0, { message: 'the first run to be in its tool' });
    const queued = await startRun(hub, 'single', { input: 'queued one', mode: 'async' });
    const doomed = await startRun(hub, 'single', { input: 'cancel me while queued', mode: 'async' });
    try {
      assert.equal(queued.status, 202, queued.text);
      assert.equal(doomed.status, 202, doomed.text);
      assert.equal((await getRun(hub, queued.json.id)).status, 'queued');
      const c = await req(hub, 'POST', `/v1/runs/${doomed.json.id}/cancel`);
      assert.equal(c.status, 202, `cancel of a queued run (DESIGN: "cancel queued or running"): ${c.text}`);
      assert.equal((await waitRun(hub, doomed.json.id)).status, 'cancelled');
    } finally {
      await req(hub, 'POST', `/v1/runs/${first.json.id}/cancel`);
      await waitRun(hub, first.json.id);
    }
    const ran = await waitRun(hub, queued.json.id, { timeoutMs: 10_000 });
    assert.equal(ran.status, 'completed', JSON.stringify(ran));
    assert.equal(ran.output, 'echo: queued one');
    const d = await getRun(hub, doomed.json.id);
    assert.notEqual(d.status, 'completed', `the run cancelled while queued must not run: ${JSON.stringify(d)}`);
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
