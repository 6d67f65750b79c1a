// Agent tools through the real binary: `type: http` tools against a node
// server (fixtures/tool_server.mjs: URL templates, query and JSON body,
// headers with ${ENV}, Idempotency-Key, argument validation, timeouts, HTTP
// errors, size limits, text bodies, parallel calls) and `type: exec` tools in
// the bubblewrap sandbox (an answer, no network, no host files, timeouts, exit
// status) and with `sandbox: none`. The model is the in-process mock: a run
// with `call_tool NAME {args}` calls the tool and answers "tool said: <result>".
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { req, pollUntil } from './lib/harness.mjs';
import { scrape, closedPort } from './lib/gateway.mjs';
import { sum } from './lib/prom.mjs';
import { startRuntimeHub, applyAgent, runSync, runEvents, callTool, typesOf, IT_DIR } from './lib/runtime.mjs';
import { startToolServer } from './fixtures/tool_server.mjs';

/** The tool.call and tool.result events of a run. */
async function toolEvents(hub, runId) {
  const evs = await runEvents(hub, runId);
  return { evs, calls: evs.filter((e) => e.type === 'tool.call'), results: evs.filter((e) => e.type === 'tool.result') };
}

describe('http tools', () => {
  let hub;
  let ts;
  let deadPort;
  before(async () => {
    ts = await startToolServer();
    deadPort = await closedPort();
    hub = await startRuntimeHub({}, { env: { TOOL_TOKEN: 's3cret-token' } });
    const obj = (properties, required = []) => ({ type: 'object', properties, required });
    await applyAgent(hub, 'shop', {
      instructions: 'You run a shop.',
      tools: [
        {
          type: 'http',
          name: 'get_item',
          description: 'Look up an item',
          url: `${ts.url}/items/{id}`,
          parameters: obj({ id: { type: 'string' }, color: { type: 'string' }, size: { type: 'integer' } }, ['id']),
        },
        {
          type: 'http',
          name: 'create_order',
          description: 'Create an order',
          method: 'POST',
          url: `${ts.url}/orders/{id}`,
          headers: { 'X-Api-Token': '${TOOL_TOKEN}', 'X-Static': 'plain' },
          parameters: obj({ id: { type: 'string' }, qty: { type: 'integer' }, note: { type: 'string' } }, ['id', 'qty']),
        },
        { type: 'http', name: 'hang', url: `${ts.url}/hang`, timeout_s: 1 },
        { type: 'http', name: 'broken', url: `${ts.url}/fail` },
        { type: 'http', name: 'huge', url: `${ts.url}/big?bytes=3000000`, max_response_bytes: '64KiB' },
        { type: 'http', name: 'long_text', url: `${ts.url}/big?bytes=100000` },
        { type: 'http', name: 'text_body', url: `${ts.url}/text` },
        { type: 'http', name: 'binary_body', url: `${ts.url}/binary` },
        { type: 'http', name: 'not_found', url: `${ts.url}/nowhere` },
        {
          type: 'http',
          name: 'del_item',
          method: 'DELETE',
          url: `${ts.url}/items/{id}?fixed=1`,
          parameters: obj({ id: { type: 'integer' }, reason: { type: 'string' } }, ['id']),
        },
        { type: 'http', name: 'put_order', method: 'PUT', url: `${ts.url}/orders/{id}`, parameters: obj({ id: { type: 'string' }, items: { type: 'array', items: { type: 'string' } } }, ['id']) },
        { type: 'http', name: 'dead', url: `http://127.0.0.1:${deadPort}/x`, timeout_s: 2 },
      ],
    });
  });
  after(() => ts && ts.stop());

  test('GET: {id} is filled in (URL-encoded), other args go to the query; Idempotency-Key is <run_id>:<tool_call_id>', async () => {
    const n0 = ts.requests.length;
    const run = await runSync(hub, 'shop', callTool('get_item', { id: 'a b/7', color: 'red', size: 3 }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    const got = ts.requests.slice(n0);
    assert.equal(got.length, 1);
    assert.equal(got[0].method, 'GET');
    assert.equal(got[0].path, '/items/a%20b%2F7');
    assert.deepEqual(got[0].query, { color: 'red', size: '3' });
    const { calls, results } = await toolEvents(hub, run.id);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].data.name, 'get_item');
    assert.deepEqual(calls[0].data.arguments, { id: 'a b/7', color: 'red', size: 3 });
    assert.equal(got[0].headers['idempotency-key'], `${run.id}:${calls[0].data.tool_call_id}`);
    const body = JSON.stringify({ id: 'a b/7', query: { color: 'red', size: '3' } });
    assert.equal(results[0].data.output, body);
    assert.equal(results[0].data.is_error, false);
    assert.equal(results[0].data.tool_call_id, calls[0].data.tool_call_id);
    assert.equal(run.output, `tool said: ${body}`);
    assert.equal(run.turns, 2);
  });

  test('POST: the other args are the JSON body; spec headers sent with ${ENV} expanded, but stored as written', async () => {
    const n0 = ts.requests.length;
    const run = await runSync(hub, 'shop', callTool('create_order', { id: 'o-1', qty: 2, note: 'gift' }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    const got = ts.requests.slice(n0);
    assert.equal(got.length, 1);
    assert.equal(got[0].method, 'POST');
    assert.equal(got[0].path, '/orders/o-1');
    assert.deepEqual(got[0].body, { qty: 2, note: 'gift' });
    assert.match(got[0].headers['content-type'], /^application\/json/);
    assert.equal(got[0].headers['x-api-token'], 's3cret-token');
    assert.equal(got[0].headers['x-static'], 'plain');
    assert.match(got[0].headers['idempotency-key'], new RegExp(`^${run.id}:call_`));
    assert.equal(run.output, `tool said: ${JSON.stringify({ id: 'o-1', body: { qty: 2, note: 'gift' } })}`);
    const spec = await req(hub, 'GET', '/v1/agents/shop');
    assert.ok(spec.text.includes('${TOOL_TOKEN}'), 'the stored spec keeps the ${VAR} reference');
    assert.ok(!spec.text.includes('s3cret-token'), 'the secret is not stored');
  });

  test('the run request\'s x-request-id is sent to the tool', async () => {
    const n0 = ts.requests.length;
    const r = await req(hub, 'POST', '/v1/agents/shop/runs', { body: { input: callTool('get_item', { id: 'rid' }) }, headers: { 'x-request-id': 'trace-run-tools-1' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'completed');
    assert.equal(ts.requests[n0].headers['x-request-id'], 'trace-run-tools-1');
  });

  test('invalid arguments: the model gets "invalid arguments ..." as the result, the service is not called, the run completes', async () => {
    const n0 = ts.requests.length;
    for (const args of [{ color: 'red' }, { id: 7 }, { id: 'x', size: 'big' }]) {
      const run = await runSync(hub, 'shop', callTool('get_item', args));
      assert.equal(run.status, 'completed', JSON.stringify(run));
      assert.match(run.output, /^tool said: invalid arguments/, JSON.stringify(args));
      const { results } = await toolEvents(hub, run.id);
      assert.equal(results[0].data.is_error, true);
    }
    assert.equal(ts.requests.length, n0, 'no request reached the service');
  });

  test('a tool that does not answer within timeout_s: an error result, the run completes; the connection is closed', async () => {
    const run = await runSync(hub, 'shop', callTool('hang'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: .*timed out/);
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results[0].data.is_error, true);
    assert.ok(ts.requests.some((r) => r.path === '/hang'));
    await pollUntil(() => ts.hanging() === 0, { message: 'the hub to close the timed-out connection' });
  });

  test('HTTP 500: an error result with the status and body', async () => {
    const run = await runSync(hub, 'shop', callTool('broken'));
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'tool said: HTTP 500: boom: the order service is down');
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results[0].data.is_error, true);
  });

  test('a response over max_response_bytes: an error result; a long one within it is cut for the model and says so', async () => {
    let run = await runSync(hub, 'shop', callTool('huge'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: .*max_response_bytes/);
    assert.ok(run.output.length < 1000);
    run = await runSync(hub, 'shop', callTool('long_text'));
    assert.equal(run.status, 'completed');
    assert.match(run.output, /^tool said: x{1000}/);
    assert.match(run.output, /truncated/);
    assert.ok(run.output.length < 80_000, `${run.output.length} chars`);
  });

  test('a body that is not JSON is passed on as text', async () => {
    const run = await runSync(hub, 'shop', callTool('text_body'));
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'tool said: not json {');
  });

  test('a body that is not UTF-8 still reaches the model as a tool result', async () => {
    const run = await runSync(hub, 'shop', callTool('binary_body'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: ok .*!$/s, JSON.stringify(run.output));
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results.length, 1, 'a tool.result event');
  });

  test('404 from the service is an error result; DELETE puts args in the query after a fixed one; PUT sends arrays in the body', async () => {
    let run = await runSync(hub, 'shop', callTool('not_found'));
    assert.equal(run.output, 'tool said: HTTP 404: no such route');
    const n0 = ts.requests.length;
    run = await runSync(hub, 'shop', callTool('del_item', { id: 17, reason: 'dup & old' }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    let got = ts.requests[n0];
    assert.equal(got.method, 'DELETE');
    assert.equal(got.path, '/items/17');
    assert.deepEqual(got.query, { fixed: '1', reason: 'dup & old' });
    run = await runSync(hub, 'shop', callTool('put_order', { id: 'p1', items: ['a', 'b'] }));
    got = ts.requests[n0 + 1];
    assert.equal(got.method, 'PUT');
    assert.deepEqual(got.body, { items: ['a', 'b'] });
    assert.equal(run.output, `tool said: ${JSON.stringify({ id: 'p1', body: { items: ['a', 'b'] } })}`);
  });

  test('a service that refuses connections: an error result', async () => {
    const run = await runSync(hub, 'shop', callTool('dead'));
    assert.equal(run.status, 'completed');
    assert.match(run.output, /^tool said: the tool's HTTP request failed/);
  });

  test('two calls in one answer run in parallel; results come back in the order asked', async () => {
    const n0 = ts.requests.length;
    const run = await runSync(hub, 'shop', `${callTool('get_item', { id: 'one' })} and ${callTool('create_order', { id: 'two', qty: 1 })}`);
    assert.equal(run.status, 'completed');
    const { evs, calls } = await toolEvents(hub, run.id);
    assert.deepEqual(calls.map((c) => c.data.name), ['get_item', 'create_order']);
    const types = typesOf(evs);
    assert.ok(types.indexOf('tool.call', types.indexOf('tool.call') + 1) < types.indexOf('tool.result'), types.join(','));
    assert.equal(ts.requests.length - n0, 2);
    const keys = new Set(ts.requests.slice(n0).map((r) => r.headers['idempotency-key']));
    assert.equal(keys.size, 2, 'each call has its own Idempotency-Key');
    assert.equal(
      run.output,
      `tool said: ${JSON.stringify({ id: 'one', query: {} })} | ${JSON.stringify({ id: 'two', body: { qty: 1 } })}`,
    );
  });

  test('metrics: agenthub_tool_calls_total by agent, tool and status; the duration histogram', async () => {
    const before = await scrape(hub);
    await runSync(hub, 'shop', callTool('get_item', { id: 'm' }));
    await runSync(hub, 'shop', callTool('broken'));
    const m = await scrape(hub);
    const d = (name, l) => sum(m, name, l) - sum(before, name, l);
    assert.equal(d('agenthub_tool_calls_total', { agent: 'shop', tool: 'get_item', status: 'ok' }), 1);
    assert.equal(d('agenthub_tool_calls_total', { agent: 'shop', tool: 'broken', status: 'error' }), 1);
    assert.equal(d('agenthub_tool_call_duration_seconds_count', { tool: 'get_item' }), 1);
    assert.equal(d('agenthub_runs_total', { agent: 'shop', status: 'completed' }), 2);
  });
});

describe('exec tools', () => {
  let hub;
  let sandboxed;
  let listener;
  let accepted = 0;
  let port;
  before(async () => {
    listener = net.createServer((s) => {
      accepted++;
      s.end('hello from the host\n');
    });
    await new Promise((r) => listener.listen(0, '127.0.0.1', r));
    port = listener.address().port;
    hub = await startRuntimeHub();
    sandboxed = hub.logs().some((l) => l.msg === 'sandbox available');
    const code = { type: 'object', properties: { code: { type: 'string' } }, required: ['code'] };
    await applyAgent(hub, 'coder', {
      tools: [
        { type: 'exec', name: 'py', description: 'Run Python', command: ['python3', '-'], parameters: code, sandbox: { timeout_s: 1, cpu_s: 5 } },
        { type: 'exec', name: 'py_small', description: 'Run Python, small', command: ['python3', '-'], parameters: code, sandbox: { memory_mb: 64, cpu_s: 1, timeout_s: 10, max_output_bytes: '1KiB' } },
        { type: 'exec', name: 'py_host', description: 'Run Python on the host', command: ['python3', '-'], parameters: code, sandbox: 'none' },
        { type: 'exec', name: 'args_json', description: 'Prints its stdin', command: ['cat'], parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'string' } } } },
      ],
    });
  });
  after(() => listener && new Promise((r) => listener.close(r)));

  const py = (tool, src) => callTool(tool, { code: src });

  test('python3 - with code printing 6*7: "tool said: 42"', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py', 'print(6*7)'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: 42\s*$/);
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results[0].data.is_error, false);
  });

  test('several arguments reach stdin as their JSON', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', callTool('args_json', { a: 1, b: 'x' }));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.deepEqual(JSON.parse(run.output.replace(/^tool said: /, '')), { a: 1, b: 'x' });
  });

  const connectCode = (p) =>
    [
      'import socket',
      's = socket.socket()',
      's.settimeout(2)',
      'try:',
      `    s.connect(("127.0.0.1", ${p}))`,
      '    print("CONNECTED", s.recv(100))',
      'except Exception as e:',
      '    print("NOCONN", type(e).__name__)',
    ].join('\n');

  test('no network inside the sandbox: a connection to a port the test listens on fails and never arrives', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const before = accepted;
    const run = await runSync(hub, 'coder', py('py', connectCode(port)));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /NOCONN/);
    assert.doesNotMatch(run.output, /CONNECTED/);
    assert.equal(accepted, before, 'the listener saw no connection');
  });

  test('no host files: /etc/shadow is not readable, the repository is not there', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const src = [
      'import os',
      'try:',
      '    open("/etc/shadow").read()',
      '    print("READ shadow")',
      'except Exception as e:',
      '    print("NOREAD", type(e).__name__)',
      `print("REPO", os.path.exists(${JSON.stringify(IT_DIR)}))`,
    ].join('\n');
    const run = await runSync(hub, 'coder', py('py', src));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /NOREAD/);
    assert.doesNotMatch(run.output, /READ shadow/);
    assert.match(run.output, /REPO False/);
  });

  test('a program over its timeout is killed: an error result, the run completes', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py', 'import time\nprint("start", flush=True)\ntime.sleep(30)\nprint("end")'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /timed out/);
    assert.doesNotMatch(run.output, /end/);
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results[0].data.is_error, true);
  });

  test('a non-zero exit status is an error result with stderr', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py', 'import sys\nprint("partial")\nsys.stderr.write("bad thing\\n")\nsys.exit(3)'));
    assert.equal(run.status, 'completed');
    assert.match(run.output, /partial/);
    assert.match(run.output, /bad thing/);
    assert.match(run.output, /exit status 3/);
    const { results } = await toolEvents(hub, run.id);
    assert.equal(results[0].data.is_error, true);
  });

  test('output that is not UTF-8 still reaches the model as a tool result', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py', 'import sys\nsys.stdout.buffer.write(b"bytes \\xff\\xfe end\\n")'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: bytes .* end/, JSON.stringify(run.output));
  });

  test('memory_mb: a program that allocates more fails with an error result', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py_small', 'b = bytearray(512 * 1024 * 1024)\nprint("ALLOCATED", len(b))'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.doesNotMatch(run.output, /ALLOCATED/);
    assert.match(run.output, /MemoryError|killed|exit status/);
    assert.equal((await toolEvents(hub, run.id)).results[0].data.is_error, true);
  });

  test('max_output_bytes: the output is cut and says so', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py_small', 'print("y" * 100000)'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: y{100}/);
    assert.match(run.output, /output truncated/);
    assert.ok(run.output.length < 2000, `${run.output.length} chars`);
  });

  test('cpu_s: a CPU loop is stopped by the CPU limit, and the result says so', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const run = await runSync(hub, 'coder', py('py_small', 'print("spin", flush=True)\nwhile True:\n    pass'));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: spin/);
    assert.equal((await toolEvents(hub, run.id)).results[0].data.is_error, true);
    assert.doesNotMatch(run.output, /timed out/, 'stopped by cpu_s (1 s), not by the 10 s timeout');
    // The model should learn why its program stopped: the CPU limit (SIGXCPU), not a bare exit status.
    assert.match(run.output, /CPU|cpu_s|SIGXCPU|signal 24/, `the result names the CPU limit: ${JSON.stringify(run.output)}`);
  });

  test('metrics: sandbox runs by result and exec tool calls', async (t) => {
    if (!sandboxed) return t.skip('the sandbox is not available on this machine');
    const before = await scrape(hub);
    await runSync(hub, 'coder', py('py', 'print(1)'));
    await runSync(hub, 'coder', py('py', 'import time\ntime.sleep(30)'));
    const m = await scrape(hub);
    const d = (name, l) => sum(m, name, l) - sum(before, name, l);
    assert.equal(d('agenthub_sandbox_runs_total', { result: 'ok' }), 1);
    assert.equal(d('agenthub_sandbox_runs_total', { result: 'timeout' }), 1);
    assert.equal(d('agenthub_tool_calls_total', { agent: 'coder', tool: 'py', status: 'ok' }), 1);
    assert.equal(d('agenthub_tool_calls_total', { agent: 'coder', tool: 'py', status: 'error' }), 1);
  });

  test('sandbox: none runs on the host: it answers, sees the host files and the network', async () => {
    const before = accepted;
    const src = `print(6*7)\nimport os\nprint("REPO", os.path.exists(${JSON.stringify(IT_DIR)}))\n${connectCode(port)}`;
    const run = await runSync(hub, 'coder', py('py_host', src));
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.match(run.output, /^tool said: 42\n/);
    assert.match(run.output, /REPO True/);
    assert.match(run.output, /CONNECTED/);
    assert.equal(accepted, before + 1);
  });
});
