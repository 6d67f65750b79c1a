// The agent registry through the real binary: POST/GET/DELETE /v1/agents (YAML
// and JSON bodies, versions, unchanged detection, rollback, archive, 400/404/
// 409/422 with the field named, roles), agents_dir applied at start (and a bad
// one stopping the start with FILE:LINE), `agenthub agents` on a running hub's
// store, and agents listed by /v1/models.
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHub, req, errorOf, runCli, tempDir, pollUntil } from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.resolve(here, '..', '..', 'examples', 'agents');

const MODELS = {
  providers: [{ name: 'local', type: 'mock' }],
  models: [
    { name: 'mock', targets: [{ provider: 'local', model: 'echo' }] },
    { name: 'fast', targets: [{ provider: 'local', model: 'echo' }] },
  ],
};

const yamlAgent = (name, extra = '') =>
  `apiVersion: agenthub/v1
kind: Agent
metadata:
  name: ${name}
  labels: { team: it }
spec:
  model: mock
  instructions: "You help."
${extra}`;

function post(hub, body, { type = 'application/yaml', key } = {}) {
  return req(hub, 'POST', '/v1/agents', { body, key, headers: { 'content-type': type } });
}

describe('/v1/agents', () => {
  let hub;
  before(async () => {
    hub = await startHub({ config: MODELS });
  });

  test('POST creates version 1 (201), the same spec again is unchanged (200), a change is version 2', async () => {
    let r = await post(hub, yamlAgent('alpha'));
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.name, 'alpha');
    assert.equal(r.json.version, 1);
    assert.equal(r.json.created, true);
    assert.match(r.json.spec_hash, /^[0-9a-f]{64}$/);

    r = await post(hub, yamlAgent('alpha'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.unchanged, true);
    assert.equal(r.json.version, 1);

    // The same agent as JSON, with a default spelt out: still unchanged.
    const json = {
      apiVersion: 'agenthub/v1',
      kind: 'Agent',
      metadata: { name: 'alpha', labels: { team: 'it' } },
      spec: { model: 'mock', instructions: 'You help.', limits: { max_turns: 10 } },
    };
    r = await req(hub, 'POST', '/v1/agents', { body: json });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.unchanged, true);

    r = await post(hub, yamlAgent('alpha', '  limits: { max_turns: 4 }\n'));
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.version, 2);
    assert.equal(r.json.previous_version, 1);
  });

  test('GET one returns the current spec with defaults; ?version and YAML; versions lists history', async () => {
    await post(hub, yamlAgent('beta'));
    await post(hub, yamlAgent('beta', '  session: { max_messages: 10 }\n'));
    let r = await req(hub, 'GET', '/v1/agents/beta');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.version, 2);
    assert.equal(r.json.current_version, 2);
    assert.equal(r.json.spec.kind, 'Agent');
    assert.equal(r.json.spec.spec.model, 'mock');
    assert.equal(r.json.spec.spec.session.max_messages, 10);
    assert.equal(r.json.spec.spec.limits.max_turns, 10, 'defaults are filled in');
    assert.equal(r.json.spec.spec.limits.timeout_s, 300);

    r = await req(hub, 'GET', '/v1/agents/beta?version=1');
    assert.equal(r.status, 200);
    assert.equal(r.json.version, 1);
    assert.equal(r.json.spec.spec.session.max_messages, 200);

    r = await req(hub, 'GET', '/v1/agents/beta?version=7');
    assert.equal(r.status, 404);
    assert.equal(errorOf(r).code, 'version_not_found');

    r = await req(hub, 'GET', '/v1/agents/beta', { headers: { accept: 'application/yaml' } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /yaml/);
    assert.match(r.text, /^apiVersion: agenthub\/v1\nkind: Agent\n/);
    assert.match(r.text, /max_messages: 10/);

    r = await req(hub, 'GET', '/v1/agents/beta/versions');
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.json.data.map((v) => [v.version, v.current]),
      [
        [1, false],
        [2, true],
      ],
    );
    assert.equal(r.json.data[0].created_by.length > 0, true);
  });

  test('rollback makes an older version current without a new version; a later apply compares with it', async () => {
    await post(hub, yamlAgent('gamma'));
    await post(hub, yamlAgent('gamma', '  limits: { max_turns: 2 }\n'));
    let r = await req(hub, 'POST', '/v1/agents/gamma/rollback', { body: { version: 1 } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.version, 1);
    assert.equal(r.json.previous_version, 2);
    r = await req(hub, 'GET', '/v1/agents/gamma');
    assert.equal(r.json.current_version, 1);
    assert.equal(r.json.latest_version, 2);
    r = await post(hub, yamlAgent('gamma'));
    assert.equal(r.status, 200, 'equal to the (rolled back) current version');
    r = await post(hub, yamlAgent('gamma', '  limits: { max_turns: 2 }\n'));
    assert.equal(r.status, 201);
    assert.equal(r.json.version, 3, 'new versions follow the latest');

    r = await req(hub, 'POST', '/v1/agents/gamma/rollback', { body: { version: 99 } });
    assert.equal(r.status, 422);
    assert.equal(errorOf(r).param, 'version');
    r = await req(hub, 'POST', '/v1/agents/gamma/rollback', { body: { version: 'one' } });
    assert.equal(r.status, 422);
    r = await req(hub, 'POST', '/v1/agents/gamma/rollback', { body: { version: 1, force: true } });
    assert.equal(r.status, 422);
    assert.equal(errorOf(r).param, 'force');
    r = await req(hub, 'POST', '/v1/agents/gamma/rollback', { body: 'nope', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 400);
    r = await req(hub, 'POST', '/v1/agents/nobody/rollback', { body: { version: 1 } });
    assert.equal(r.status, 404);
    assert.equal(errorOf(r).code, 'agent_not_found');
  });

  test('DELETE archives: hidden from the list, history kept, apply restores as a new version', async () => {
    await post(hub, yamlAgent('delta'));
    let r = await req(hub, 'DELETE', '/v1/agents/delta');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.archived, true);
    assert.equal(typeof r.json.archived_at, 'number');
    r = await req(hub, 'DELETE', '/v1/agents/delta');
    assert.equal(r.status, 200, 'idempotent');
    assert.equal(r.json.already_archived, true);

    r = await req(hub, 'GET', '/v1/agents');
    assert.ok(!r.json.data.some((a) => a.name === 'delta'));
    r = await req(hub, 'GET', '/v1/agents?include_archived=true');
    const d = r.json.data.find((a) => a.name === 'delta');
    assert.equal(d.archived, true);
    r = await req(hub, 'GET', '/v1/agents/delta/versions');
    assert.equal(r.status, 200);
    assert.equal(r.json.data.length, 1);

    r = await req(hub, 'POST', '/v1/agents/delta/rollback', { body: { version: 1 } });
    assert.equal(r.status, 409);
    assert.equal(errorOf(r).code, 'agent_archived');

    r = await post(hub, yamlAgent('delta'));
    assert.equal(r.status, 201);
    assert.equal(r.json.version, 2);
    assert.equal(r.json.restored, true);

    r = await req(hub, 'DELETE', '/v1/agents/nobody');
    assert.equal(r.status, 404);
  });

  test('GET /v1/agents lists name, versions, model, labels; filters by label', async () => {
    await post(hub, yamlAgent('eps').replace('team: it', 'team: other'));
    let r = await req(hub, 'GET', '/v1/agents');
    assert.equal(r.status, 200);
    assert.equal(r.json.object, 'list');
    const a = r.json.data.find((x) => x.name === 'eps');
    assert.equal(a.model, 'mock');
    assert.equal(a.current_version, 1);
    assert.deepEqual(a.labels, { team: 'other' });
    assert.equal(a.archived, false);
    r = await req(hub, 'GET', '/v1/agents?label=team=other');
    assert.deepEqual(
      r.json.data.map((x) => x.name),
      ['eps'],
    );
    r = await req(hub, 'GET', '/v1/agents?label=oops');
    assert.equal(r.status, 400);
  });

  test('422 names the field (and the line), 400 when the body does not parse', async () => {
    const cases = [
      [yamlAgent('bad', '  tools:\n    - { type: exec, name: a, command: [x] }\n    - { type: htp }\n'), 'spec.tools[1].type', 11, /unknown tool type "htp" \(known: http, mcp, exec\)/],
      [yamlAgent('bad', '  tols: []\n'), 'spec.tols', 9, /did you mean "tools"/],
      [yamlAgent('bad').replace('  model: mock\n', ''), 'spec.model', 7, /required field is missing/],
      [yamlAgent('bad').replace('model: mock', 'model: fsat'), 'spec.model', 7, /unknown model "fsat" \(did you mean "fast"\?/],
      [yamlAgent('bad', '  handoffs: [nobody]\n'), 'spec.handoffs[0]', 9, /unknown agent "nobody"/],
      [yamlAgent('bad', '  handoffs: [bad]\n'), 'spec.handoffs[0]', 9, /cannot hand off to itself/],
      [yamlAgent('bad', '  canary: { version: 5, weight: 10 }\n'), 'spec.canary.version', 9, /has no version 5/],
      [yamlAgent('Bad'), 'metadata.name', 4, /invalid agent name/],
      [yamlAgent('bad', '  limits: { max_turns: lots }\n'), 'spec.limits.max_turns', 9, /expected an integer/],
    ];
    for (const [body, param, line, msg] of cases) {
      const r = await post(hub, body);
      assert.equal(r.status, 422, `${param}: ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(e.param, param);
      assert.match(e.message, msg);
      assert.ok(Array.isArray(e.errors) && e.errors.length >= 1);
      assert.equal(e.errors[0].line, line, `${param} line`);
    }
    // Several problems at once.
    const r = await post(hub, yamlAgent('Bad', '  tols: []\n  limits: { max_turns: 0 }\n'));
    assert.equal(r.status, 422);
    assert.equal(errorOf(r).errors.length, 3);
    assert.match(errorOf(r).message, /and 2 more problems/);

    // JSON bodies name the field too (no line).
    const j = await req(hub, 'POST', '/v1/agents', {
      body: { apiVersion: 'agenthub/v1', kind: 'Agent', metadata: { name: 'j' }, spec: { model: 'mock', limits: { max_turns: 0 } } },
    });
    assert.equal(j.status, 422);
    assert.equal(errorOf(j).param, 'spec.limits.max_turns');
    assert.equal(errorOf(j).errors[0].line, null);

    for (const [body, type] of [
      ['apiVersion: [unclosed\n', 'application/yaml'],
      ['{"apiVersion": ', 'application/json'],
    ]) {
      const b = await post(hub, body, { type });
      assert.equal(b.status, 400, b.text);
      assert.equal(errorOf(b).type, 'invalid_request_error');
    }
    // Two agents in one request: 422 (the CLI takes many).
    const two = await post(hub, `${yamlAgent('t1')}---\n${yamlAgent('t2')}`);
    assert.equal(two.status, 422);
    assert.match(errorOf(two).message, /one agent per request/);
    // Nothing was created by any of these.
    const list = await req(hub, 'GET', '/v1/agents?include_archived=true');
    assert.ok(!list.json.data.some((a) => ['bad', 'j', 't1', 't2'].includes(a.name)));
  });

  test('roles: viewer reads, developer writes, user neither writes', async () => {
    const keys = {};
    const ids = {};
    for (const role of ['viewer', 'user', 'developer']) {
      const k = await req(hub, 'POST', '/v1/keys', { body: { name: `agents-${role}`, role } });
      assert.equal(k.status, 201, k.text);
      keys[role] = k.json.key;
      ids[role] = k.json.id;
    }
    assert.equal((await req(hub, 'GET', '/v1/agents', { key: keys.viewer })).status, 200);
    for (const role of ['viewer', 'user']) {
      const r = await post(hub, yamlAgent('zeta'), { key: keys[role] });
      assert.equal(r.status, 403, role);
      assert.equal(errorOf(r).code, 'insufficient_role');
      assert.equal((await req(hub, 'DELETE', '/v1/agents/alpha', { key: keys[role] })).status, 403);
    }
    const r = await post(hub, yamlAgent('zeta'), { key: keys.developer });
    assert.equal(r.status, 201, r.text);
    const v = await req(hub, 'GET', '/v1/agents/zeta/versions', { key: keys.viewer });
    assert.equal(v.json.data[0].created_by, ids.developer, 'the version records who applied it');
    assert.equal((await req(hub, 'GET', '/v1/agents', { key: null })).status, 401);
  });

  test('/v1/models lists agents as agent:NAME', async () => {
    await post(hub, yamlAgent('listed'));
    const r = await req(hub, 'GET', '/v1/models');
    assert.equal(r.status, 200);
    const ids = r.json.data.map((m) => m.id);
    assert.ok(ids.includes('agent:listed'), ids.join(','));
    assert.ok(ids.includes('mock'));
    await req(hub, 'DELETE', '/v1/agents/listed');
    const after = await req(hub, 'GET', '/v1/models');
    assert.ok(!after.json.data.some((m) => m.id === 'agent:listed'), 'archived agents are not listed');
  });
});

describe('agents_dir and the CLI', () => {
  test('agents_dir is applied at start: the examples validate and load; a restart changes nothing', async () => {
    const hub = await startHub({ config: { ...MODELS, agents_dir: EXAMPLES } });
    let r = await req(hub, 'GET', '/v1/agents');
    const names = r.json.data.map((a) => a.name).sort();
    assert.deepEqual(names, ['coder', 'docs', 'support']);
    assert.ok(hub.logs().some((l) => l.msg === 'agent applied' && /agent\/support: created version 1/.test(l.result)));
    r = await req(hub, 'GET', '/v1/agents/support');
    assert.equal(r.json.version_created_by, 'agents_dir');
    assert.deepEqual(r.json.spec.spec.approval.tools, ['refund_order']);
    assert.equal(await hub.stop(), 0);

    const again = await startHub({ config: { ...MODELS, agents_dir: EXAMPLES }, dataDir: hub.dataDir });
    assert.ok(again.logs().some((l) => l.msg === 'agent applied' && /agent\/support: unchanged \(version 1\)/.test(l.result)));
    r = await req(again, 'GET', '/v1/agents/support/versions', { key: hub.adminKey });
    assert.equal(r.json.data.length, 1);
    assert.equal(await again.stop(), 0);
  });

  test('an invalid file in agents_dir stops the start with FILE:LINE', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'ok.yaml'), yamlAgent('fine'));
    fs.writeFileSync(path.join(dir, 'broken.yaml'), yamlAgent('broken', '  tools:\n    - { type: htp }\n'));
    const hub = await startHub({ config: { ...MODELS, agents_dir: dir }, waitReady: false }).catch((e) => e);
    assert.ok(hub instanceof Error, 'serve must not start');
    assert.match(hub.message, /exited during start \(code 2/);
    assert.match(hub.message, /broken\.yaml:10: spec\.tools\[0\]\.type: unknown tool type "htp"/);
  });

  test('`agenthub agents apply` writes to a running hub\'s store; the hub serves it', async () => {
    const hub = await startHub({ config: MODELS });
    const dir = tempDir();
    const file = path.join(dir, 'cli.yaml');
    fs.writeFileSync(file, yamlAgent('from-cli'));
    let r = runCli(['agents', 'apply', '-f', file, '-c', hub.configPath]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'agent/from-cli: created version 1\n');
    r = runCli(['agents', 'apply', '-f', file, '-c', hub.configPath]);
    assert.equal(r.stdout, 'agent/from-cli: unchanged (version 1)\n');

    const got = await req(hub, 'GET', '/v1/agents/from-cli');
    assert.equal(got.status, 200);
    assert.equal(got.json.version_created_by, 'cli');
    // The running hub's cache picks it up within about a second.
    await pollUntil(async () => (await req(hub, 'GET', '/v1/models')).json.data.some((m) => m.id === 'agent:from-cli'), {
      timeoutMs: 5000,
      message: 'agent:from-cli in /v1/models',
    });

    fs.writeFileSync(file, yamlAgent('from-cli', '  tools:\n    - { type: htp }\n'));
    r = runCli(['agents', 'apply', '-f', file, '-c', hub.configPath]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cli\.yaml:10: spec\.tools\[0\]\.type: unknown tool type "htp" \(known: http, mcp, exec\)/);

    r = runCli(['agents', 'get', 'from-cli', '-c', hub.configPath]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# agent from-cli, version 1 \(current\)\napiVersion: agenthub\/v1\n/);
    r = runCli(['agents', 'list', '--json', '-c', hub.configPath]);
    assert.equal(r.code, 0);
    assert.equal(JSON.parse(r.stdout)[0].name, 'from-cli');
    r = runCli(['agents', 'rollback', 'from-cli', '--version', '3', '-c', hub.configPath]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has no version 3/);
    r = runCli(['agents', 'apply', '--bogus']);
    assert.equal(r.code, 2);
    for (const sub of ['apply', 'list', 'get', 'versions', 'rollback', 'archive']) {
      const h = runCli(['agents', sub, '--help']);
      assert.equal(h.code, 0, sub);
      assert.match(h.stdout, new RegExp(`^usage: agenthub agents ${sub}`));
    }
    assert.equal(await hub.stop(), 0);
  });
});
