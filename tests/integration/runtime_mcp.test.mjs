// MCP tools in agent runs through the real binary: the reference
// server-everything over stdio, and the fixture server
// (mcp_fixture_server.mjs) over stdio and Streamable HTTP. What the model is
// offered (allow filter, prefix) is read from a recording OpenAI upstream; the
// in-process mock calls the tools (`call_tool NAME {args}`). A server that
// dies mid-call gives an error result (or a failed run), the hub stays
// healthy, and the next run reconnects.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { req, pollUntil } from './lib/harness.mjs';
import { startRecorder, closedPort } from './lib/gateway.mjs';
import {
  startRuntimeHub,
  applyAgent,
  streamRun,
  runSync,
  runEvents,
  waitRun,
  callTool,
  startMcpFixture,
  NODE,
  EVERYTHING,
  MCP_FIXTURE,
} from './lib/runtime.mjs';

const toolResults = async (hub, id) => (await runEvents(hub, id)).filter((e) => e.type === 'tool.result');
const offeredNames = (body) => (body.tools || []).map((t) => t.function.name).sort();

describe('mcp tools', () => {
  let hub;
  let rec;
  let fx; // the HTTP fixture
  let deadPort;
  const everything = { command: [NODE, EVERYTHING, 'stdio'] };

  before(async () => {
    rec = await startRecorder();
    fx = await startMcpFixture();
    deadPort = await closedPort();
    hub = await startRuntimeHub({
      providers: [{ name: 'rec', type: 'openai', base_url: `${rec.url}/v1`, api_key: 'x' }],
      models: [{ name: 'recorded', targets: [{ provider: 'rec', model: 'upstream' }] }],
    });
    const everythingTool = { type: 'mcp', server: everything, allow: ['echo', 'get-sum'], prefix: 'ev_' };
    await applyAgent(hub, 'ev', { tools: [everythingTool] });
    await applyAgent(hub, 'ev_seen', { model: 'recorded', tools: [everythingTool, { type: 'http', name: 'local_http', url: 'http://127.0.0.1:1/x' }] });
    await applyAgent(hub, 'ev_all_seen', { model: 'recorded', tools: [{ type: 'mcp', server: everything, prefix: 'all_' }] });
    await applyAgent(hub, 'fx', { tools: [{ type: 'mcp', server: { url: fx.url }, allow: ['add', 'slow', 'fail', 'mixed', 'stats'], prefix: 'fx_', timeout_s: 20 }] });
    await applyAgent(hub, 'fx_short', { tools: [{ type: 'mcp', server: { url: fx.url }, allow: ['slow'], prefix: 'fs_', timeout_s: 1 }] });
    await applyAgent(hub, 'st', { tools: [{ type: 'mcp', server: { command: [NODE, MCP_FIXTURE, '--stdio'] }, prefix: 'st_', timeout_s: 20 }] });
    await applyAgent(hub, 'nomcp', { tools: [{ type: 'mcp', server: { url: `http://127.0.0.1:${deadPort}/mcp` }, timeout_s: 2 }] });
    await applyAgent(hub, 'plain', {});
  });
  after(async () => {
    if (rec) await rec.stop();
    if (fx) await fx.kill();
  });

  test('stdio (server-everything): the model is offered only the allowed tools, prefixed, next to the agent\'s other tools', async () => {
    const run = await runSync(hub, 'ev_seen', 'what tools?');
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.output, 'canned answer');
    const body = rec.requests.at(-1).body;
    assert.deepEqual(offeredNames(body), ['ev_echo', 'ev_get-sum', 'local_http']);
    const echo = body.tools.find((t) => t.function.name === 'ev_echo').function;
    assert.equal(echo.description, 'Echoes back the input string');
    assert.equal(echo.parameters.type, 'object');
    assert.ok(echo.parameters.properties.message, JSON.stringify(echo.parameters));

    // Without allow: every tool the server has, each with the prefix.
    const all = await runSync(hub, 'ev_all_seen', 'all?');
    assert.equal(all.status, 'completed', JSON.stringify(all));
    const names = offeredNames(rec.requests.at(-1).body);
    assert.ok(names.length > 5, names.join(','));
    assert.ok(names.every((n) => n.startsWith('all_')), names.join(','));
    assert.ok(names.includes('all_echo') && names.includes('all_get-sum'), names.join(','));
  });

  test('stdio (server-everything): a call by its prefixed name runs the server\'s tool; its result is the answer', async () => {
    let run = await runSync(hub, 'ev', callTool('ev_echo', { message: 'hi mcp' }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.output, 'tool said: Echo: hi mcp');
    const evs = await runEvents(hub, run.id);
    assert.equal(evs.find((e) => e.type === 'tool.call').data.name, 'ev_echo');
    run = await runSync(hub, 'ev', callTool('ev_get-sum', { a: 2, b: 3 }));
    assert.equal(run.output, 'tool said: The sum of 2 and 3 is 5.');
    // The unprefixed name and a tool outside allow are not offered: the mock just echoes.
    for (const text of [callTool('echo', { message: 'x' }), callTool('ev_get-env')]) {
      run = await runSync(hub, 'ev', text);
      assert.equal(run.output, `echo: ${text}`);
    }
  });

  test('Streamable HTTP (fixture): results, an isError result, mixed content flattened to text', async () => {
    let run = await runSync(hub, 'fx', callTool('fx_add', { a: 2, b: 40 }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.output, 'tool said: 42');
    run = await runSync(hub, 'fx', callTool('fx_fail', { message: 'no such customer' }));
    assert.equal(run.status, 'completed');
    assert.match(run.output, /^tool said: .*no such customer/);
    assert.equal((await toolResults(hub, run.id))[0].data.is_error, true);
    run = await runSync(hub, 'fx', callTool('fx_mixed'));
    assert.equal(run.status, 'completed');
    assert.match(run.output, /^tool said: first\n/);
    assert.match(run.output, /image\/png/);
    assert.match(run.output, /resource text/);
    // Parallel calls on one connection.
    run = await runSync(hub, 'fx', `${callTool('fx_add', { a: 1, b: 1 })} ${callTool('fx_add', { a: 2, b: 2 })}`);
    assert.equal(run.output, 'tool said: 2 | 4');
  });

  test('timeout_s of the tool entry: a slow call gets an error result and the server is told to cancel', async () => {
    // 'fx' (timeout_s 20) already uses this server; 'fx_short' names the same URL with timeout_s 1.
    const before = JSON.parse((await runSync(hub, 'fx', callTool('fx_stats'))).output.replace(/^tool said: /, ''));
    const run = await runSync(hub, 'fx_short', callTool('fs_slow', { ms: 3000 }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.doesNotMatch(run.output, /slept/, `the 1 s timeout of this agent's tool entry applies: ${run.output}`);
    assert.match(run.output, /timed out/);
    assert.equal((await toolResults(hub, run.id))[0].data.is_error, true);
    const stats = await pollUntil(
      async () => {
        const st = JSON.parse((await runSync(hub, 'fx', callTool('fx_stats'))).output.replace(/^tool said: /, ''));
        return st.cancelled > before.cancelled ? st : null;
      },
      { timeoutMs: 5000, message: 'the fixture to see notifications/cancelled' },
    );
    assert.ok(stats.cancelled > before.cancelled);
  });

  test('invalid arguments against the MCP tool\'s input schema: an error result, the run completes', async () => {
    const run = await runSync(hub, 'fx', callTool('fx_add', { a: 'two', b: 1 }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: invalid arguments/);
  });

  test('stdio (fixture): the server exits mid-call -> an error result; the next run starts it again', async () => {
    let run = await runSync(hub, 'st', callTool('st_add', { a: 1, b: 2 }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.output, 'tool said: 3');
    run = await runSync(hub, 'st', callTool('st_crash', { code: 3 }));
    assert.ok(['completed', 'failed'].includes(run.status), JSON.stringify(run));
    if (run.status === 'completed') {
      const r = (await toolResults(hub, run.id))[0];
      assert.equal(r.data.is_error, true);
      assert.match(run.output, /MCP/);
    }
    assert.equal((await req(hub, 'GET', '/healthz')).status, 200);
    run = await pollUntil(
      async () => {
        const x = await runSync(hub, 'st', callTool('st_add', { a: 20, b: 22 }));
        return x.output === 'tool said: 42' ? x : null;
      },
      { timeoutMs: 10_000, intervalMs: 200, message: 'a run after the crash to call the restarted server' },
    );
    assert.equal(run.status, 'completed');
  });

  test('Streamable HTTP: the server is killed mid-call -> the run ends (error result or failed), the hub is healthy, a restarted server is used again', async () => {
    // A stream run: its events arrive live, so the server is killed right after the call went out.
    let killed = null;
    const s = await streamRun(hub, 'fx', callTool('fx_slow', { ms: 20000 }), {
      timeoutMs: 10_000,
      stopWhen: (evs) => {
        if (!killed && evs.some((e) => e.event === 'tool.call'))
          killed = new Promise((res) => setTimeout(res, 200)).then(() => fx.kill('SIGKILL'));
        return false;
      },
    });
    assert.ok(killed, 'the stream showed the tool call');
    await killed;
    assert.ok(s.ended, `the stream ended by itself: ${s.error}`);
    const last = s.events.at(-1);
    assert.ok(['run.completed', 'run.failed'].includes(last.event), s.text);
    const run = await waitRun(hub, s.headers.get('x-agenthub-run-id'), { timeoutMs: 8000 });
    assert.ok(['completed', 'failed'].includes(run.status), JSON.stringify(run));
    if (run.status === 'completed') {
      const res = (await toolResults(hub, run.id))[0];
      assert.equal(res.data.is_error, true);
      assert.match(run.output, /^tool said: the MCP tool call failed/);
    }
    assert.equal((await req(hub, 'GET', '/healthz')).status, 200);
    assert.equal((await runSync(hub, 'plain', 'still here')).output, 'echo: still here');

    // While it is down: the agent's tools are unavailable (a failed run, not a hang).
    const down = await runSync(hub, 'fx', callTool('fx_add', { a: 1, b: 1 }));
    assert.ok(
      down.status === 'failed' || /MCP|failed|refused/.test(down.output),
      JSON.stringify(down),
    );

    fx = await startMcpFixture(['--port', String(fx.port)]);
    const again = await pollUntil(
      async () => {
        const x = await runSync(hub, 'fx', callTool('fx_add', { a: 20, b: 22 }));
        return x.output === 'tool said: 42' ? x : null;
      },
      { timeoutMs: 10_000, intervalMs: 200, message: 'a run to use the restarted server' },
    );
    assert.equal(again.status, 'completed');
  });

  test('an MCP server that cannot be reached: the run fails with tools_unavailable', async () => {
    const run = await runSync(hub, 'nomcp', 'hello');
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.error.code, 'tools_unavailable');
    const evs = await runEvents(hub, run.id);
    assert.equal(evs.at(-1).type, 'run.failed');
    assert.equal(evs.at(-1).data.code, 'tools_unavailable');
  });
});
