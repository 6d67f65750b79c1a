// Agent runs through the real binary with the in-process mock model: sync,
// stream and async runs, the stored run and its event log (JSON and SSE
// replay, resumable), agent versions recorded, listing and filters, 404/422
// errors, handoffs, `agent:NAME` through the OpenAI SDK and @openai/agents,
// and the run metrics.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { Agent, OpenAIChatCompletionsModel, run as runAgent, setTracingDisabled } from '@openai/agents';
import { req, errorOf, pollUntil } from './lib/harness.mjs';
import { scrape } from './lib/gateway.mjs';
import { sum } from './lib/prom.mjs';
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
  typesOf,
  callTool,
} from './lib/runtime.mjs';

setTracingDisabled(true);

/** Asserts the shape of a complete event sequence of a one-turn text answer. */
function assertTextRunEvents(types, final = 'run.completed') {
  assert.deepEqual(types.slice(0, 3), ['run.created', 'run.started', 'model.request'], types.join(','));
  assert.equal(types.at(-1), final, types.join(','));
  assert.equal(types.at(-2), 'message.completed', types.join(','));
  const middle = types.slice(3, -2);
  assert.ok(middle.length >= 1 && middle.every((t) => t === 'message.delta'), types.join(','));
}

function assertIncreasing(ids) {
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `event ids not increasing: ${ids.join(',')}`);
}

describe('agent runs', () => {
  let hub;
  before(async () => {
    hub = await startRuntimeHub();
    await applyAgent(hub, 'echo', { instructions: 'You echo.' });
    await applyAgent(hub, 'billing', { model: 'mock2', instructions: 'You handle billing.' });
    await applyAgent(hub, 'front', { instructions: 'You triage.', handoffs: ['billing'] });
    await applyAgent(hub, 'strict', { limits: { max_turns: 1 }, handoffs: ['billing'] });
  });

  test('sync run: 200 with the final answer; GET /v1/runs/{id} stores it; the event log runs created..completed', async () => {
    const r = await startRun(hub, 'echo', { input: 'hello world', metadata: { ticket: 'T-1' } });
    assert.equal(r.status, 200, r.text);
    const run = r.json;
    assert.match(run.id, /^run_[A-Za-z0-9]+$/);
    assert.equal(run.object, 'run');
    assert.equal(run.agent, 'echo');
    assert.equal(run.agent_version, 1);
    assert.equal(run.status, 'completed');
    assert.equal(run.mode, 'sync');
    assert.equal(run.input, 'hello world');
    assert.equal(run.output, 'echo: hello world');
    assert.equal(run.error, null);
    assert.equal(run.turns, 1);
    assert.deepEqual(run.metadata, { ticket: 'T-1' });
    assert.ok(run.usage.prompt_tokens > 0 && run.usage.completion_tokens > 0, JSON.stringify(run.usage));
    assert.equal(run.usage.total_tokens, run.usage.prompt_tokens + run.usage.completion_tokens);
    assert.ok(run.finished_at >= run.started_at && run.started_at >= run.created_at, r.text);

    const stored = await req(hub, 'GET', `/v1/runs/${run.id}`);
    assert.equal(stored.status, 200, stored.text);
    for (const k of ['id', 'agent', 'agent_version', 'status', 'mode', 'input', 'output', 'turns', 'usage', 'metadata'])
      assert.deepEqual(stored.json[k], run[k], `stored ${k}`);

    const evs = await runEvents(hub, run.id);
    assertTextRunEvents(typesOf(evs));
    assert.equal(evs[0].id, 1);
    assertIncreasing(evs.map((e) => e.id));
    assert.equal(evs[0].data.run_id, run.id);
    assert.equal(evs[0].data.agent, 'echo');
    assert.equal(evs[0].data.version, 1);
    const deltas = evs.filter((e) => e.type === 'message.delta').map((e) => e.data.delta).join('');
    assert.equal(deltas, 'echo: hello world');
    assert.equal(evs.at(-1).data.output, 'echo: hello world');
  });

  test('input as chat messages: the answer is about the last user message', async () => {
    const run = await runSync(hub, 'echo', {
      input: [
        { role: 'system', content: 'extra rules' },
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: 'first answer' },
        { role: 'user', content: 'second question' },
      ],
    });
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'echo: second question');
  });

  test('stream run: SSE events in order with increasing ids; deltas add up to the output; the run is stored', async () => {
    const s = await streamRun(hub, 'echo', 'stream me please');
    assert.equal(s.status, 200);
    assert.match(s.headers.get('content-type'), /^text\/event-stream/);
    const runId = s.headers.get('x-agenthub-run-id');
    assert.match(runId || '', /^run_/);
    assert.ok(s.ended, 'the stream ends after the final event');
    assertTextRunEvents(typesOf(s.events));
    assertIncreasing(s.events.map((e) => e.id));
    assert.equal(s.events[0].data.run_id, runId);
    const deltas = s.events.filter((e) => e.event === 'message.delta').map((e) => e.data.delta);
    assert.ok(deltas.length > 1, 'the answer comes in several pieces');
    const completed = s.events.at(-1).data;
    assert.equal(deltas.join(''), completed.output);
    assert.equal(completed.output, 'echo: stream me please');

    const run = await getRun(hub, runId);
    assert.equal(run.status, 'completed');
    assert.equal(run.mode, 'stream');
    assert.equal(run.output, 'echo: stream me please');

    // The stored log is the same events, and replays as SSE, resumably.
    const list = await runEvents(hub, runId);
    assert.deepEqual(list.map((e) => [e.id, e.type]), s.events.map((e) => [e.id, e.event]));
    let rp = await fetchHub(hub, 'GET', `/v1/runs/${runId}/events`, { headers: { accept: 'text/event-stream' } });
    let replay = await readNamedSse(rp.res, { controller: rp.controller, timeoutMs: 5000 });
    assert.match(replay.headers.get('content-type'), /^text\/event-stream/);
    assert.ok(replay.ended, 'the replay of a finished run ends by itself');
    assert.deepEqual(replay.events.map((e) => [e.id, e.event]), s.events.map((e) => [e.id, e.event]));
    rp = await fetchHub(hub, 'GET', `/v1/runs/${runId}/events`, { headers: { accept: 'text/event-stream', 'last-event-id': '3' } });
    replay = await readNamedSse(rp.res, { controller: rp.controller, timeoutMs: 5000 });
    assert.deepEqual(replay.events.map((e) => e.id), s.events.filter((e) => e.id > 3).map((e) => e.id));
    const after = await runEvents(hub, runId, '?after=3&limit=2');
    assert.deepEqual(after.map((e) => e.id), [4, 5]);
  });

  test('async run: 202 with the stored run at once, then GET shows it completed', async () => {
    const r = await startRun(hub, 'echo', { input: 'later please', mode: 'async' });
    assert.equal(r.status, 202, r.text);
    assert.match(r.json.id, /^run_/);
    assert.equal(r.json.mode, 'async');
    assert.ok(['queued', 'running'].includes(r.json.status), r.text);
    const done = await waitRun(hub, r.json.id);
    assert.equal(done.status, 'completed');
    assert.equal(done.output, 'echo: later please');
    const evs = await runEvents(hub, r.json.id);
    assertTextRunEvents(typesOf(evs));
  });

  test('following a live run over SSE: GET events with Accept: text/event-stream ends with run.completed', async () => {
    const r = await startRun(hub, 'front', { input: callTool('transfer_to_billing'), mode: 'async' });
    assert.equal(r.status, 202, r.text);
    const { res, controller } = await fetchHub(hub, 'GET', `/v1/runs/${r.json.id}/events`, { headers: { accept: 'text/event-stream' } });
    const f = await readNamedSse(res, { controller, timeoutMs: 10_000 });
    assert.ok(f.ended, 'the follow stream ends when the run does');
    assert.equal(f.events[0].event, 'run.created');
    assert.equal(f.events.at(-1).event, 'run.completed');
    assertIncreasing(f.events.map((e) => e.id));
  });

  test('a new agent version is used by new runs; each run records the version it used', async () => {
    await applyAgent(hub, 'versioned', { instructions: 'v1' });
    const r1 = await runSync(hub, 'versioned', 'one');
    const applied = await applyAgent(hub, 'versioned', { instructions: 'v2' });
    assert.equal(applied.version, 2);
    const r2 = await runSync(hub, 'versioned', 'two');
    assert.equal(r1.agent_version, 1);
    assert.equal(r2.agent_version, 2);
    assert.equal((await getRun(hub, r1.id)).agent_version, 1);
    const evs = await runEvents(hub, r2.id);
    assert.equal(evs[0].data.version, 2);
    // rollback: new runs use version 1 again
    const rb = await req(hub, 'POST', '/v1/agents/versioned/rollback', { body: { version: 1 } });
    assert.equal(rb.status, 200, rb.text);
    assert.equal((await runSync(hub, 'versioned', 'three')).agent_version, 1);
  });

  test('GET /v1/runs lists runs newest first, filtered by agent and status', async () => {
    await applyAgent(hub, 'lister', {});
    const a = await runSync(hub, 'lister', 'a');
    const b = await runSync(hub, 'lister', 'b');
    const failed = await runSync(hub, 'strict', callTool('transfer_to_billing'));
    assert.equal(failed.status, 'failed');
    let r = await req(hub, 'GET', '/v1/runs?agent=lister');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    assert.deepEqual(r.json.data.map((x) => x.id), [b.id, a.id]);
    r = await req(hub, 'GET', '/v1/runs?status=failed');
    assert.ok(r.json.data.some((x) => x.id === failed.id), r.text);
    assert.ok(r.json.data.every((x) => x.status === 'failed'), r.text);
    r = await req(hub, 'GET', '/v1/runs?agent=lister&status=failed');
    assert.deepEqual(r.json.data, []);
    r = await req(hub, 'GET', '/v1/runs?agent=lister&limit=1');
    assert.deepEqual(r.json.data.map((x) => x.id), [b.id]);
    assert.equal(r.json.has_more, true);
    r = await req(hub, 'GET', '/v1/runs?status=done');
    assert.equal(r.status, 400);
    assert.equal(errorOf(r).param, 'status');
  });

  test('errors: 404 unknown agent / run, 422 naming the field, 400 for a body that is not JSON, 409 cancel of a finished run', async () => {
    let r = await startRun(hub, 'nobody', 'hi');
    assert.equal(r.status, 404, r.text);
    assert.equal(errorOf(r).code, 'agent_not_found');

    const bad = [
      [{ input: 'hi', mode: 'fast' }, 'mode'],
      [{ mode: 'sync' }, 'input'],
      [{ input: 42 }, 'input'],
      [{ input: 'hi', colour: 'red' }, 'colour'],
      [{ input: 'hi', metadata: 'x' }, 'metadata'],
      [{ input: 'hi', limits: [1] }, 'limits'],
      [{ input: 'hi', session_id: 7 }, 'session_id'],
    ];
    for (const [body, param] of bad) {
      r = await startRun(hub, 'echo', body);
      assert.equal(r.status, 422, `${JSON.stringify(body)}: ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.code, 'invalid_value');
      assert.equal(e.param, param, `${JSON.stringify(body)}: ${r.text}`);
    }
    // Invalid input caught by the runtime: still 422 and nothing stored.
    for (const input of [[], [{ content: 'no role' }], [{ role: 'wizard', content: 'x' }]]) {
      r = await startRun(hub, 'echo', { input });
      assert.equal(r.status, 422, `${JSON.stringify(input)}: ${r.text}`);
      assert.match(errorOf(r).message, /input/);
    }
    r = await req(hub, 'POST', '/v1/agents/echo/runs', { body: '{"input": ', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 400, r.text);
    errorOf(r);

    r = await req(hub, 'GET', '/v1/runs/run_doesnotexist');
    assert.equal(r.status, 404, r.text);
    assert.equal(errorOf(r).code, 'run_not_found');
    r = await req(hub, 'GET', '/v1/runs/run_doesnotexist/events');
    assert.equal(r.status, 404, r.text);

    const done = await runSync(hub, 'echo', 'x');
    r = await req(hub, 'POST', `/v1/runs/${done.id}/cancel`);
    assert.equal(r.status, 409, r.text);
    assert.equal(errorOf(r).code, 'run_not_running');
    assert.equal((await getRun(hub, done.id)).status, 'completed');
  });

  test('Idempotency-Key on POST runs: the same request again answers the same run; another body with the key is 409', async () => {
    const post = async (body) => {
      try {
        const res = await fetch(`${hub.url}/v1/agents/echo/runs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${hub.adminKey}`, 'content-type': 'application/json', 'idempotency-key': 'idem-run-1' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(5000),
        });
        const text = await res.text();
        return { status: res.status, text, json: JSON.parse(text) };
      } catch (e) {
        return { status: 0, text: `no answer within 5 s (${e.name})` };
      }
    };
    const first = await post({ input: 'once only' });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.output, 'echo: once only');
    const again = await post({ input: 'once only' });
    assert.notEqual(again.status, 0, `a repeated Idempotency-Key: ${again.text}`);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.id, first.json.id, 'the same run, not a new one');
    const other = await post({ input: 'something else' });
    assert.notEqual(other.status, 0, `the key with another body: ${other.text}`);
    assert.equal(other.status, 409, other.text);
    assert.equal((await req(hub, 'GET', '/healthz')).status, 200);
  });

  test('handoff: transfer_to_billing emits handoff {from, to} and billing (model mock2) answers', async () => {
    const run = await runSync(hub, 'front', callTool('transfer_to_billing'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.output, 'tool said: Transferred to billing.');
    assert.equal(run.turns, 2);
    const evs = await runEvents(hub, run.id);
    const types = typesOf(evs);
    const call = evs.find((e) => e.type === 'tool.call');
    assert.equal(call.data.name, 'transfer_to_billing');
    const res = evs.find((e) => e.type === 'tool.result');
    assert.equal(res.data.is_error, false);
    const h = evs.find((e) => e.type === 'handoff');
    assert.ok(h, types.join(','));
    assert.deepEqual({ from: h.data.from, to: h.data.to }, { from: 'front', to: 'billing' });
    assert.ok(types.indexOf('handoff') > types.indexOf('tool.result'), types.join(','));
    // The turn after the handoff is billing's: its model.
    const reqs = evs.filter((e) => e.type === 'model.request');
    assert.deepEqual(reqs.map((e) => e.data.model), ['mock', 'mock2']);
    assert.equal(types.at(-1), 'run.completed');

    // An agent that is not a handoff target is not offered: the mock just echoes.
    const other = await runSync(hub, 'front', callTool('transfer_to_echo'));
    assert.equal(other.output, `echo: ${callTool('transfer_to_echo')}`);
  });

  test('an archived agent cannot run (404); a handoff to an agent archived since fails the run with handoff_failed', async () => {
    await applyAgent(hub, 'gone', {});
    await applyAgent(hub, 'to_gone', { handoffs: ['gone'] });
    assert.equal((await runSync(hub, 'gone', 'x')).status, 'completed');
    const del = await req(hub, 'DELETE', '/v1/agents/gone');
    assert.equal(del.status, 200, del.text);
    const r = await startRun(hub, 'gone', 'x');
    assert.equal(r.status, 404, r.text);
    assert.equal(errorOf(r).code, 'agent_not_found');
    const run = await runSync(hub, 'to_gone', callTool('transfer_to_gone'));
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'handoff_failed');
    assert.match(run.error.message, /gone/);
  });

  describe('agent:NAME on /v1/chat/completions', () => {
    let client;
    before(() => {
      client = new OpenAI({ baseURL: hub.url + '/v1', apiKey: hub.adminKey, maxRetries: 0, timeout: 15_000 });
    });

    test('/v1/models lists the agents as agent:NAME', async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      for (const n of ['agent:echo', 'agent:front', 'agent:billing', 'mock']) assert.ok(ids.includes(n), `${n} in ${ids}`);
    });

    test('openai SDK, non-stream: the run\'s answer as a chat.completion; the run is stored', async () => {
      const { data, response } = await client.chat.completions
        .create({ model: 'agent:echo', messages: [{ role: 'user', content: 'hi sdk' }] })
        .withResponse();
      assert.equal(data.object, 'chat.completion');
      assert.equal(data.model, 'agent:echo');
      assert.equal(data.choices[0].message.role, 'assistant');
      assert.equal(data.choices[0].message.content, 'echo: hi sdk');
      assert.equal(data.choices[0].finish_reason, 'stop');
      assert.ok(data.usage.total_tokens > 0);
      const runId = response.headers.get('x-agenthub-run-id');
      assert.match(runId || '', /^run_/);
      const run = await getRun(hub, runId);
      assert.equal(run.status, 'completed');
      assert.equal(run.agent, 'echo');
      assert.equal(run.output, 'echo: hi sdk');
    });

    test('openai SDK, stream: deltas add up to the answer, finish_reason stop, usage when asked', async () => {
      const stream = await client.chat.completions.create({
        model: 'agent:echo',
        messages: [{ role: 'user', content: 'stream through the sdk' }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = '';
      let finish = null;
      let usage = null;
      let n = 0;
      for await (const c of stream) {
        n++;
        assert.equal(c.model, 'agent:echo');
        if (c.choices[0]?.delta?.content) text += c.choices[0].delta.content;
        if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
        if (c.usage) usage = c.usage;
      }
      assert.ok(n > 3, `${n} chunks`);
      assert.equal(text, 'echo: stream through the sdk');
      assert.equal(finish, 'stop');
      assert.ok(usage && usage.total_tokens > 0, JSON.stringify(usage));
    });

    test('the agent runs its own tools server-side (a handoff) behind agent:NAME', async () => {
      const c = await client.chat.completions.create({ model: 'agent:front', messages: [{ role: 'user', content: callTool('transfer_to_billing') }] });
      assert.equal(c.choices[0].message.content, 'tool said: Transferred to billing.');
      assert.equal(c.choices[0].message.tool_calls ?? undefined, undefined);
    });

    test('a failed run is an OpenAI error (502 with the run\'s code); an unknown agent is 404 model_not_found', async () => {
      await assert.rejects(
        client.chat.completions.create({ model: 'agent:strict', messages: [{ role: 'user', content: callTool('transfer_to_billing') }] }),
        (e) => {
          assert.equal(e.status, 502, String(e));
          assert.equal(e.code, 'max_turns_exceeded', String(e));
          return true;
        },
      );
      // as a stream: an error event, no [DONE]
      const { res, controller } = await fetchHub(hub, 'POST', '/v1/chat/completions', {
        body: { model: 'agent:strict', stream: true, messages: [{ role: 'user', content: callTool('transfer_to_billing') }] },
      });
      const s = await readNamedSse(res, { controller, timeoutMs: 10_000 });
      assert.ok(!s.text.includes('[DONE]'), s.text);
      const err = s.events.map((e) => e.data).find((d) => d && d.error);
      assert.equal(err && err.error.code, 'max_turns_exceeded', s.text);

      await assert.rejects(client.chat.completions.create({ model: 'agent:nobody', messages: [{ role: 'user', content: 'x' }] }), (e) => {
        assert.equal(e.status, 404, String(e));
        assert.equal(e.code, 'model_not_found');
        return true;
      });
    });

    test('@openai/agents with agent:NAME as its model: finalOutput, plain and streamed', async () => {
      const agent = new Agent({
        name: 'sdk-front',
        instructions: 'Be brief.',
        model: new OpenAIChatCompletionsModel(client, 'agent:echo'),
      });
      const res = await runAgent(agent, 'hello agents sdk');
      assert.equal(res.finalOutput, 'echo: hello agents sdk');

      const streamed = await runAgent(agent, 'streamed hello', { stream: true });
      let text = '';
      for await (const ev of streamed) {
        if (ev.type === 'raw_model_stream_event' && ev.data.type === 'output_text_delta') text += ev.data.delta;
      }
      await streamed.completed;
      assert.equal(streamed.finalOutput, 'echo: streamed hello');
      assert.equal(text, 'echo: streamed hello');
    });
  });

  test('metrics: runs_total by agent and status, turns, duration, tool calls', async () => {
    await applyAgent(hub, 'metered', { handoffs: ['billing'], limits: { max_turns: 1 } });
    const before = await scrape(hub);
    const ok1 = await runSync(hub, 'metered', 'one');
    const ok2 = await runSync(hub, 'metered', 'two');
    const bad = await runSync(hub, 'metered', callTool('transfer_to_billing'));
    assert.equal(ok1.status, 'completed');
    assert.equal(ok2.status, 'completed');
    assert.equal(bad.status, 'failed');
    const m = await pollUntil(
      async () => {
        const s = await scrape(hub);
        return sum(s, 'agenthub_runs_total', { agent: 'metered', status: 'failed' }) >= 1 ? s : null;
      },
      { message: 'the failed run counted' },
    );
    const d = (name, labels) => sum(m, name, labels) - sum(before, name, labels);
    assert.equal(d('agenthub_runs_total', { agent: 'metered', status: 'completed' }), 2);
    assert.equal(d('agenthub_runs_total', { agent: 'metered', status: 'failed' }), 1);
    assert.equal(d('agenthub_run_turns_total', { agent: 'metered' }), 3);
    assert.equal(d('agenthub_run_duration_seconds_count', { agent: 'metered' }), 3);
    assert.equal(d('agenthub_tool_calls_total', { agent: 'metered', tool: 'transfer_to_billing', status: 'ok' }), 1);
    assert.equal(m.types.agenthub_runs_total, 'counter');
    assert.equal(m.types.agenthub_run_duration_seconds, 'histogram');
  });
});
