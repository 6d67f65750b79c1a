// API keys: first-start admin key, the /v1/keys API, roles, revocation, and
// the `agenthub keys` CLI working on the same store as a running hub.
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, req, errorOf, runCli, pollUntil } from './lib/harness.mjs';

const KEY_RE = /^ahk_[A-Za-z0-9]{43}$/;

describe('first start', () => {
  test('prints an admin key once; a restart on the same store prints none and the key still works', async () => {
    const first = await startHub();
    assert.match(first.stdout(), /First start: created admin API key key_[A-Za-z0-9]+/);
    assert.match(first.adminKey ?? '', KEY_RE, 'the printed key looks like ahk_ + 43 characters');
    assert.equal(first.adminKey.length, 47);
    assert.equal((await req(first, 'GET', '/v1/keys')).status, 200, 'the printed key is an admin key');
    assert.ok(!first.logs().some((l) => JSON.stringify(l).includes(first.adminKey)), 'the key is not logged');
    assert.equal(await first.stop(), 0);

    const second = await startHub({ dataDir: first.dataDir });
    assert.doesNotMatch(second.stdout(), /First start/);
    assert.doesNotMatch(second.stdout(), /ahk_/);
    assert.equal(second.adminKey, null);
    const r = await req(second, 'GET', '/v1/keys', { key: first.adminKey });
    assert.equal(r.status, 200, 'the first-start key survives a restart');
    assert.equal(await second.stop(), 0);
  });

  test('AGENTHUB_ADMIN_KEY is accepted as an admin key and no key is generated', async () => {
    const secret = 'it-bootstrap-admin-key-0123456789';
    const hub = await startHub({ env: { AGENTHUB_ADMIN_KEY: secret } });
    assert.doesNotMatch(hub.stdout(), /First start/);
    assert.equal(hub.adminKey, secret);
    assert.equal((await req(hub, 'GET', '/v1/keys', { key: secret })).status, 200);
    assert.ok(!hub.stderr().includes(secret), 'the bootstrap key is not logged');
    assert.equal(await hub.stop(), 0);
  });
});

describe('/v1/keys API', () => {
  let hub;
  before(async () => {
    hub = await startHub();
  });

  async function create(body, key) {
    return req(hub, 'POST', '/v1/keys', { body, key });
  }

  test('POST /v1/keys creates a key (201) and shows it once', async () => {
    const r = await create({ name: 'ci-admin', role: 'admin' });
    assert.equal(r.status, 201, r.text);
    const k = r.json;
    assert.equal(k.object, 'api_key');
    assert.match(k.id, /^key_/);
    assert.equal(k.name, 'ci-admin');
    assert.equal(k.role, 'admin');
    assert.equal(typeof k.tenant, 'string');
    assert.match(k.key, KEY_RE);
    assert.equal(k.key.length, 47);
    assert.ok(k.key.startsWith(k.prefix), 'prefix is the start of the key');
    assert.ok(k.prefix.length < k.key.length);
    assert.equal(typeof k.created_at, 'number');
    assert.equal(k.revoked_at, null);
    assert.equal(k.expires_at, null);
    for (const f of ['created_by']) assert.ok(f in k, `has ${f}`);

    // the new key authenticates, with its role
    const list = await req(hub, 'GET', '/v1/keys', { key: k.key });
    assert.equal(list.status, 200);
    // and GET /v1/keys/{id} returns it without the secret
    const one = await req(hub, 'GET', `/v1/keys/${k.id}`);
    assert.equal(one.status, 200, one.text);
    assert.equal(one.json.id, k.id);
    assert.equal(one.json.name, 'ci-admin');
    assert.ok(!('key' in one.json) && !('hash' in one.json), 'GET one hides the secret');
    assert.ok(!one.text.includes(k.key));
  });

  test('expires_in_days sets expires_at in the future', async () => {
    const r = await create({ name: 'temp', role: 'viewer', expires_in_days: 2 });
    assert.equal(r.status, 201, r.text);
    assert.equal(typeof r.json.expires_at, 'number');
    assert.ok(r.json.expires_at > r.json.created_at);
  });

  test('GET /v1/keys lists keys without secrets', async () => {
    const made = await create({ name: 'listed', role: 'user' });
    assert.equal(made.status, 201, made.text);
    const r = await req(hub, 'GET', '/v1/keys');
    assert.equal(r.status, 200);
    assert.equal(r.json.object, 'list');
    assert.ok(Array.isArray(r.json.data));
    const ids = r.json.data.map((k) => k.id);
    assert.ok(ids.includes(made.json.id), 'the new key is listed');
    assert.ok(r.json.data.length >= 2, 'the first-start admin key is listed too');
    for (const k of r.json.data) {
      assert.ok(!('key' in k), `no "key" field in ${JSON.stringify(k)}`);
      assert.ok(!('hash' in k) && !('key_hash' in k), `no hash field in ${JSON.stringify(k)}`);
      assert.equal(k.object, 'api_key');
    }
    assert.ok(!r.text.includes(made.json.key), 'the secret appears nowhere in the list');
    assert.ok(!r.text.includes(hub.adminKey), 'the admin secret appears nowhere in the list');
  });

  test('a user key gets 403 insufficient_role on admin routes', async () => {
    const u = await create({ name: 'a-user', role: 'user' });
    assert.equal(u.status, 201, u.text);
    for (const [m, p, body] of [
      ['GET', '/v1/keys'],
      ['POST', '/v1/keys', { name: 'escalate', role: 'admin' }],
    ]) {
      const r = await req(hub, m, p, { key: u.json.key, body });
      assert.equal(r.status, 403, `${m} ${p}: ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.type, 'permission_error');
      assert.equal(e.code, 'insufficient_role');
    }
    for (const role of ['developer', 'viewer']) {
      const k = await create({ name: `a-${role}`, role });
      assert.equal(k.status, 201, k.text);
      const r = await req(hub, 'GET', '/v1/keys', { key: k.json.key });
      assert.equal(r.status, 403, role);
      assert.equal(errorOf(r).code, 'insufficient_role');
    }
  });

  test('x-api-key works like Authorization: Bearer', async () => {
    const r = await req(hub, 'GET', '/v1/keys', { key: null, headers: { 'x-api-key': hub.adminKey } });
    assert.equal(r.status, 200);
  });

  test('missing key -> 401 missing_api_key; wrong key -> 401 invalid_api_key', async () => {
    let r = await req(hub, 'GET', '/v1/keys', { key: null });
    assert.equal(r.status, 401);
    let e = errorOf(r);
    assert.equal(e.code, 'missing_api_key');
    assert.equal(e.type, 'authentication_error');

    r = await req(hub, 'GET', '/v1/keys', { key: 'ahk_' + 'x'.repeat(43) });
    assert.equal(r.status, 401);
    e = errorOf(r);
    assert.equal(e.code, 'invalid_api_key');
    assert.equal(e.type, 'authentication_error');

    r = await req(hub, 'GET', '/v1/keys', { key: null, headers: { 'x-api-key': 'garbage' } });
    assert.equal(r.status, 401);
    assert.equal(errorOf(r).code, 'invalid_api_key');

    r = await req(hub, 'GET', '/v1/keys', { key: null, headers: { authorization: 'Basic Zm9vOmJhcg==' } });
    assert.equal(r.status, 401, 'a non-Bearer Authorization is not a key');
  });

  test('DELETE /v1/keys/{id} revokes: the key gets 401 at once', async () => {
    const k = await create({ name: 'to-revoke', role: 'admin' });
    assert.equal(k.status, 201, k.text);
    assert.equal((await req(hub, 'GET', '/v1/keys', { key: k.json.key })).status, 200);

    const d = await req(hub, 'DELETE', `/v1/keys/${k.json.id}`);
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json.id, k.json.id);
    assert.equal(d.json.revoked, true);
    assert.ok(!('key' in d.json));

    // Should be immediate on this replica; allow a bounded poll for the cache.
    const r = await pollUntil(
      async () => {
        const x = await req(hub, 'GET', '/v1/keys', { key: k.json.key });
        return x.status === 401 ? x : null;
      },
      { timeoutMs: 2000, message: 'the revoked key to be refused' },
    );
    assert.equal(errorOf(r).code, 'invalid_api_key');

    const one = await req(hub, 'GET', `/v1/keys/${k.json.id}`);
    assert.equal(one.status, 200);
    assert.equal(typeof one.json.revoked_at, 'number', 'revoked_at is set');
  });

  test('DELETE an unknown key -> 404 JSON error', async () => {
    const r = await req(hub, 'DELETE', '/v1/keys/key_doesnotexist0000');
    assert.equal(r.status, 404, r.text);
    errorOf(r);
    const g = await req(hub, 'GET', '/v1/keys/key_doesnotexist0000');
    assert.equal(g.status, 404, g.text);
    errorOf(g);
  });

  // A body that parses but breaks the schema is 422 with error.param naming the field.
  for (const [what, body, field] of [
    ['unknown field', { name: 'x', role: 'user', colour: 'blue' }, 'colour'],
    ['unknown role', { name: 'x', role: 'god' }, 'role'],
    ['missing name', { role: 'user' }, 'name'],
    ['empty name', { name: '', role: 'user' }, 'name'],
    ['name of the wrong type', { name: 42, role: 'user' }, 'name'],
    ['negative expires_in_days', { name: 'x', expires_in_days: -1 }, 'expires_in_days'],
    ['invalid tenant', { name: 'x', role: 'user', tenant: 'bad tenant!' }, 'tenant'],
  ]) {
    test(`POST /v1/keys with ${what} -> 422, param "${field}"`, async () => {
      const r = await create(body);
      assert.equal(r.status, 422, `${JSON.stringify(body)} -> ${r.status} ${r.text}`);
      const e = errorOf(r);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(e.param, field, `error.param names the field: ${r.text}`);
      assert.match(e.message, new RegExp(field), 'the message names the field');
    });
  }

  test('POST /v1/keys with a body that is not a JSON object -> 400', async () => {
    for (const text of ['{"name": "x",', 'not json', '[1,2]', '']) {
      const r = await req(hub, 'POST', '/v1/keys', { body: text, headers: { 'content-type': 'application/json' } });
      assert.equal(r.status, 400, `${JSON.stringify(text)} -> ${r.status} ${r.text}`);
      assert.equal(errorOf(r).type, 'invalid_request_error');
    }
  });
});

describe('agenthub keys CLI', () => {
  test('create/list/revoke on the store of a running hub; the hub picks them up', async () => {
    const hub = await startHub({ config: { auth: { key_cache_refresh_s: 1 } } });
    const cfg = ['-c', hub.configPath];

    const c = runCli(['keys', 'create', '--name', 'from-cli', '--role', 'admin', ...cfg]);
    assert.equal(c.code, 0, c.stderr);
    const m = /^key:\s+(ahk_\S+)$/m.exec(c.stdout);
    assert.ok(m, `the key is printed: ${c.stdout}`);
    const key = m[1];
    assert.match(key, KEY_RE);
    const id = /^id:\s+(key_\S+)$/m.exec(c.stdout)?.[1];
    assert.ok(id, 'the id is printed');

    // The hub reloads keys every key_cache_refresh_s (1 s): the key works within 2 s.
    await pollUntil(async () => (await req(hub, 'GET', '/v1/keys', { key })).status === 200, {
      timeoutMs: 2000,
      message: 'the CLI-created key to be accepted by the running hub',
    });

    const lj = runCli(['keys', 'list', '--json', ...cfg]);
    assert.equal(lj.code, 0, lj.stderr);
    const listed = JSON.parse(lj.stdout);
    const mine = listed.find((k) => k.id === id);
    assert.ok(mine, 'keys list --json shows the key');
    assert.equal(mine.name, 'from-cli');
    assert.equal(mine.role, 'admin');
    assert.ok(!lj.stdout.includes(key), 'list never prints the secret');
    const lt = runCli(['keys', 'list', ...cfg]);
    assert.equal(lt.code, 0, lt.stderr);
    assert.match(lt.stdout, new RegExp(id));
    assert.ok(!lt.stdout.includes(key));

    // An API-created key is visible to the CLI too.
    const api = await req(hub, 'POST', '/v1/keys', { body: { name: 'from-api', role: 'user' } });
    assert.equal(api.status, 201, api.text);
    assert.match(runCli(['keys', 'list', ...cfg]).stdout, new RegExp(api.json.id));

    const rv = runCli(['keys', 'revoke', id, ...cfg]);
    assert.equal(rv.code, 0, rv.stderr);
    await pollUntil(async () => (await req(hub, 'GET', '/v1/keys', { key })).status === 401, {
      timeoutMs: 2000,
      message: 'the CLI-revoked key to be refused by the running hub',
    });

    const bad = runCli(['keys', 'revoke', 'key_doesnotexist0000', ...cfg]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /key_doesnotexist0000/);
    assert.equal(await hub.stop(), 0);
  });

  test('keys create --json, and usage errors exit 2', async () => {
    const hub = await startHub();
    assert.equal(await hub.stop(), 0);
    const cfg = ['-c', hub.configPath];
    const c = runCli(['keys', 'create', '--name', 'j', '--role', 'developer', '--json', ...cfg]);
    assert.equal(c.code, 0, c.stderr);
    const k = JSON.parse(c.stdout);
    assert.match(k.key, KEY_RE);
    assert.equal(k.role, 'developer');
    assert.equal(runCli(['keys', 'create', ...cfg]).code, 2, 'missing --name');
    assert.equal(runCli(['keys', 'create', '--name', 'x', '--role', 'god', ...cfg]).code, 2, 'bad role');
    assert.equal(runCli(['keys', 'bogus', ...cfg]).code, 2, 'unknown subcommand');
  });
});
