// The command line: usage and exit codes, config check/show, migrate, and
// serve failing clearly when it cannot start.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { runCli, tempDir, toYaml, startHub, req } from './lib/harness.mjs';

function writeConfig(dir, name, text) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

describe('usage and exit codes', () => {
  test('no arguments: usage on stderr, exit 2', () => {
    const r = runCli([]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: agenthub/);
  });

  test('--help: usage listing the commands, exit 0', () => {
    const r = runCli(['--help']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout + r.stderr;
    assert.match(out, /usage: agenthub/);
    for (const c of ['serve', 'config', 'migrate', 'keys', 'version']) assert.match(out, new RegExp(`\\b${c}\\b`));
  });

  test('version prints the version, exit 0', () => {
    const r = runCli(['version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^agenthub \d+\.\d+\.\d+/);
  });

  test('unknown command: exit 2 naming it, with usage', () => {
    const r = runCli(['bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bogus/);
    assert.match(r.stderr, /usage: agenthub/);
  });

  for (const args of [['serve'], ['config', 'check'], ['config', 'show'], ['migrate'], ['keys'], ['keys', 'create'], ['keys', 'list'], ['keys', 'revoke'], ['version']]) {
    test(`${args.join(' ')} --help exits 0 with its usage`, () => {
      const r = runCli([...args, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout + r.stderr, new RegExp(`usage: agenthub ${args[0]}`));
    });
  }

  for (const args of [['serve', '--bogus'], ['config', 'check', '--bogus'], ['migrate', '--bogus'], ['keys', 'list', '--bogus']]) {
    test(`${args.join(' ')}: unknown flag exits 2 with usage`, () => {
      const r = runCli(args);
      assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
      assert.match(r.stderr, /--bogus/);
      assert.match(r.stderr, /usage: agenthub/);
    });
  }

  test('config without a subcommand exits 2', () => {
    const r = runCli(['config']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: agenthub config/);
  });
});

describe('config check', () => {
  const dir = tempDir();

  test('a valid file: "FILE: ok", exit 0', () => {
    const p = writeConfig(
      dir,
      'valid.yaml',
      toYaml({
        server: { listen: '127.0.0.1:8080', workers: 2, max_body_bytes: 4096 },
        storage: { url: `sqlite://${dir}/x.db` },
        log: { level: 'debug' },
        providers: [{ name: 'local', type: 'mock' }],
      }),
    );
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, new RegExp(`${p.replaceAll('/', '\\/')}: ok`));
  });

  test('an unknown key: exit 2, FILE:LINE: path, and a did-you-mean', () => {
    const p = writeConfig(dir, 'unknown.yaml', 'server:\n  listen: "127.0.0.1:8080"\n  max_body_byts: 10\nstorage:\n  url: "sqlite:///tmp/x.db"\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${p}:3: server.max_body_byts:`), `"${p}:3: server.max_body_byts:" in:\n${r.stderr}`);
    assert.match(r.stderr, /did you mean "max_body_bytes"/);
  });

  test('an unknown top-level section is reported on its line', () => {
    const p = writeConfig(dir, 'section.yaml', 'server:\n  listen: "127.0.0.1:8080"\n\nstorag:\n  url: "x"\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${p}:4: storag`), r.stderr);
    assert.match(r.stderr, /did you mean "storage"/);
  });

  test('a wrong type: exit 2 with line and expectation', () => {
    const p = writeConfig(dir, 'type.yaml', 'server:\n  listen: "127.0.0.1:8080"\n  workers: lots\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${p}:3: server.workers:`), r.stderr);
    assert.match(r.stderr, /integer/);
    assert.match(r.stderr, /lots/);
  });

  test('an unknown provider type: exit 2, line, did-you-mean and the known types', () => {
    const p = writeConfig(dir, 'provider.yaml', 'providers:\n  - name: local\n    type: mock\n  - name: x\n    type: opnai\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${p}:5: providers[1].type:`), r.stderr);
    assert.match(r.stderr, /unknown provider type "opnai"/);
    assert.match(r.stderr, /did you mean "openai"/);
    assert.match(r.stderr, /known: .*mock/);
  });

  test('every problem is reported, not only the first', () => {
    const p = writeConfig(dir, 'multi.yaml', 'server:\n  max_body_byts: 10\n  workers: lots\nproviders:\n  - name: x\n    type: opnai\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    for (const line of [2, 3, 6]) assert.ok(r.stderr.includes(`${p}:${line}:`), `line ${line} reported:\n${r.stderr}`);
  });

  test('a YAML syntax error: exit 2 with the file and line', () => {
    const p = writeConfig(dir, 'syntax.yaml', 'server:\n  listen: "127.0.0.1:8080"\n  workers: [1, 2\n');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${p.replaceAll('/', '\\/')}:\\d+`));
  });

  test('a missing file: exit 2 naming it', () => {
    const p = path.join(dir, 'nope.yaml');
    const r = runCli(['config', 'check', '-c', p]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(p), r.stderr);
  });

  test('an invalid value in an environment override is reported', () => {
    const p = writeConfig(dir, 'envbad.yaml', 'server:\n  listen: "127.0.0.1:8080"\n');
    const r = runCli(['config', 'check', '-c', p], { env: { AGENTHUB_SERVER_WORKERS: 'lots' } });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /AGENTHUB_SERVER_WORKERS|server\.workers/);
  });
});

describe('config show', () => {
  const dir = tempDir();

  test('secrets are masked: admin_key_file contents, provider api_key from ${VAR}', () => {
    const secretFile = path.join(dir, 'admin.key');
    const adminSecret = 'it-admin-secret-7f3a9c1e5b';
    fs.writeFileSync(secretFile, adminSecret + '\n');
    const providerSecret = 'sk-it-provider-secret-42abcdef';
    const p = writeConfig(
      dir,
      'secrets.yaml',
      toYaml({
        server: { listen: '127.0.0.1:8080' },
        storage: { url: `sqlite://${dir}/x.db` },
        auth: { admin_key_file: secretFile },
        providers: [
          { name: 'local', type: 'mock' },
          { name: 'oa', type: 'openai', base_url: 'https://api.openai.com/v1', api_key: '${IT_OPENAI_KEY}' },
        ],
      }),
    );
    const r = runCli(['config', 'show', '-c', p], { env: { IT_OPENAI_KEY: providerSecret } });
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout + r.stderr;
    assert.ok(!out.includes(adminSecret), 'the admin key from the file is not printed');
    assert.ok(!out.includes(providerSecret), 'the provider key is not printed');
    assert.match(r.stdout, /\*\*\*/, 'masked values are shown as ***');
    assert.match(r.stdout, /name: "?oa"?/, 'the provider itself is shown');
  });

  test('environment overrides show up (AGENTHUB_SERVER_LISTEN, AGENTHUB_SERVER_MAX_BODY_BYTES)', () => {
    const p = writeConfig(dir, 'env.yaml', 'server:\n  listen: "127.0.0.1:8080"\n');
    const r = runCli(['config', 'show', '-c', p], {
      env: { AGENTHUB_SERVER_LISTEN: '127.0.0.1:9999', AGENTHUB_SERVER_MAX_BODY_BYTES: '2048' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /listen: "?127\.0\.0\.1:9999"?/);
    assert.doesNotMatch(r.stdout, /127\.0\.0\.1:8080/);
    assert.match(r.stdout, /max_body_bytes: 2048/);
  });

  test('the output is a valid config: config check accepts it', () => {
    const p = writeConfig(dir, 'roundtrip.yaml', 'server:\n  listen: "127.0.0.1:8080"\n  workers: 3\n');
    const show = runCli(['config', 'show', '-c', p]);
    assert.equal(show.code, 0, show.stderr);
    const p2 = writeConfig(dir, 'shown.yaml', show.stdout);
    const r = runCli(['config', 'check', '-c', p2]);
    assert.equal(r.code, 0, `config check of the shown config:\n${r.stderr}`);
    assert.match(show.stdout, /workers: 3/);
  });
});

describe('migrate', () => {
  test('--status on an empty store shows pending; migrate applies; then current', () => {
    const dir = tempDir();
    const p = writeConfig(dir, 'm.yaml', toYaml({ storage: { url: `sqlite://${dir}/m.db` } }));
    let r = runCli(['migrate', '--status', '-c', p]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pending/);
    r = runCli(['migrate', '-c', p]);
    assert.equal(r.code, 0, r.stderr);
    r = runCli(['migrate', '--status', '-c', p]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /current/);
    assert.doesNotMatch(r.stdout, /pending/);
    r = runCli(['migrate', '-c', p]);
    assert.equal(r.code, 0, 'migrate is idempotent');
  });
});

describe('serve start-up failures', () => {
  test('an unusable storage path: non-zero exit and a message naming storage.url', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'file'), 'not a directory');
    const p = writeConfig(
      dir,
      'badstore.yaml',
      toYaml({ server: { listen: '127.0.0.1:0' }, storage: { url: `sqlite://${dir}/file/sub/agenthub.db` } }),
    );
    const r = runCli(['serve', '-c', p], { timeoutMs: 10_000 });
    assert.notEqual(r.code, 0);
    assert.equal(r.signal, null, 'exits by itself');
    assert.match(r.stderr, /storage\.url/);
    assert.ok(r.stderr.includes(`${dir}/file`), `names the path:\n${r.stderr}`);
  });

  test('an invalid config: serve refuses to start, exit 2, FILE:LINE', () => {
    const dir = tempDir();
    const p = writeConfig(dir, 'bad.yaml', 'server:\n  listen: "127.0.0.1:0"\n  workerz: 2\n');
    const r = runCli(['serve', '-c', p], { timeoutMs: 10_000 });
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${p}:3:`), r.stderr);
  });

  test('a port already in use: non-zero exit with "in use"', async () => {
    const blocker = net.createServer();
    await new Promise((res) => blocker.listen(0, '127.0.0.1', res));
    const port = blocker.address().port;
    try {
      const dir = tempDir();
      const p = writeConfig(
        dir,
        'inuse.yaml',
        toYaml({ server: { listen: `127.0.0.1:${port}` }, storage: { url: `sqlite://${dir}/agenthub.db` } }),
      );
      const r = runCli(['serve', '-c', p], { timeoutMs: 10_000 });
      assert.notEqual(r.code, 0);
      assert.equal(r.signal, null, 'exits by itself');
      assert.match(r.stderr, /in use/);
      assert.ok(r.stderr.includes(String(port)), 'names the port');
    } finally {
      blocker.close();
    }
  });

  test('serve --listen overrides the config file', async () => {
    const hub = await startHub({ args: ['--listen', '127.0.0.1:0'], config: { server: { listen: '127.0.0.1:1' } } });
    assert.notEqual(hub.port, 1);
    assert.equal((await req(hub, 'GET', '/healthz', { key: null })).status, 200);
    assert.equal(await hub.stop(), 0);
  });

  test('AGENTHUB_SERVER_LISTEN overrides the config file for serve', async () => {
    const hub = await startHub({ env: { AGENTHUB_SERVER_LISTEN: '127.0.0.1:0' }, config: { server: { listen: '127.0.0.1:1' } } });
    assert.notEqual(hub.port, 1);
    assert.equal(await hub.stop(), 0);
  });
});
