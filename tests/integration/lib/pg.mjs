// A throwaway PostgreSQL server for the integration suites, like the unit
// tests' pgtest.h: initdb into a new temp dir, pg_ctl start on a free
// 127.0.0.1 port (fsync off, trust auth, C collation like SQLite's), a fresh
// database per store, and stop + delete at the end of the test file.
//
// PostgreSQL refuses to run as root: under root, initdb / pg_ctl / createdb run
// as an unprivileged user (AH_TEST_PG_USER, else "postgres" from the Debian
// package, else "agenthub-test", else "nobody") through setpriv. Binaries come
// from AH_TEST_PG_BIN, else the newest /usr/lib/postgresql/N/bin, else PATH.
//
// Cleanup does not depend on this process ending well: a watcher (a small
// detached shell) holds the read end of a pipe from this process; when the pipe
// closes (normal end, crash, kill -9) it stops the server (pg_ctl stop -m
// immediate, only this data directory) and deletes the directory.
//
//   const pg = await startPostgres();   // null when PostgreSQL is not installed
//   if (!pg) test('...', { skip: PG_SKIP }, () => {});
//   const url = await pg.newDatabase(); // postgres://agenthub@127.0.0.1:PORT/dbN
//   await pg.stop(); await pg.start(); await pg.restart();  // faults

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

/** The skip message when no PostgreSQL is installed (make test installs it: scripts/deps.sh test). */
export const PG_SKIP = 'PostgreSQL 15 not installed (apt-get install postgresql, or make test)';

const isExec = (dir, name) => {
  try {
    fs.accessSync(path.join(dir, name), fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/** The directory of initdb and pg_ctl, or null. */
export function findPgBin() {
  const env = process.env.AH_TEST_PG_BIN;
  if (env) return isExec(env, 'initdb') && isExec(env, 'pg_ctl') ? env : null;
  let versions = [];
  try {
    versions = fs.readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v));
  } catch {
    /* not installed from Debian packages */
  }
  versions.sort((x, y) => Number(y) - Number(x));
  for (const v of versions) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (isExec(dir, 'initdb') && isExec(dir, 'pg_ctl')) return dir;
  }
  for (const dir of (process.env.PATH || '/usr/bin:/bin').split(':')) {
    if (dir && isExec(dir, 'initdb') && isExec(dir, 'pg_ctl')) return dir;
  }
  return null;
}

/** Under root: {uid, gid, name} of the user the server runs as; null when not root. */
function pickUser() {
  if (process.getuid() !== 0) return null;
  const names = [process.env.AH_TEST_PG_USER, 'postgres', 'agenthub-test', 'nobody'].filter(Boolean);
  const passwd = fs.readFileSync('/etc/passwd', 'utf8').split('\n');
  for (const name of names) {
    const line = passwd.find((l) => l.startsWith(`${name}:`));
    if (!line) continue;
    const [, , uid, gid] = line.split(':');
    if (Number(uid) !== 0) return { name, uid: Number(uid), gid: Number(gid) };
  }
  throw new Error('pg.mjs: running as root and no unprivileged user to run PostgreSQL as (useradd --system agenthub-test)');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sh = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;

/**
 * initdb + pg_ctl start + a watcher. Resolves null when PostgreSQL is not
 * installed (the caller skips with PG_SKIP), else
 * { port, dir, newDatabase(), stop(mode), start(), restart(), running(), log() }.
 * The server is stopped and its directory removed when the test file ends:
 * by an after() hook (call this at the top level of the file), or with
 * { hook: false } (from inside a test, where after() would end it with that
 * test) by the watcher, when the process exits.
 */
export async function startPostgres({ hook = true } = {}) {
  const bin = findPgBin();
  if (!bin) return null;
  const user = pickUser();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agenthub-pg-'));
  const data = path.join(dir, 'data');
  const serverLog = path.join(dir, 'server.log');
  if (user) fs.chownSync(dir, user.uid, user.gid);
  // As the server's user, in its dir, with a minimal environment; throws with the output on failure.
  const run = (tool, args, { timeoutMs = 60_000 } = {}) => {
    const argv = [path.join(bin, tool), ...args];
    const cmd = user
      ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', ...argv]
      : argv;
    const r = spawnSync(cmd[0], cmd.slice(1), {
      cwd: dir,
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' },
      encoding: 'utf8',
      timeout: timeoutMs,
    });
    if (r.status !== 0) {
      const logTail = fs.existsSync(serverLog) ? fs.readFileSync(serverLog, 'utf8').slice(-3000) : '';
      throw new Error(`${tool} ${args.join(' ')} failed (${r.error ? r.error.message : `exit ${r.status}`}):\n${r.stdout}${r.stderr}\n${logTail}`);
    }
    return r.stdout;
  };

  let port;
  const ctl = (...args) => run('pg_ctl', [...args, '-w', '-t', '60', '-D', data]);
  const startServer = () =>
    ctl(
      'start',
      '-l',
      serverLog,
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off ` +
        '-c full_page_writes=off -c max_connections=200',
    );

  try {
    run('initdb', ['-D', data, '-U', 'agenthub', '--auth=trust', '--no-sync', '--no-locale', '-E', 'UTF8']);
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      try {
        startServer();
        break;
      } catch (e) {
        if (attempt >= 4) throw e; // the port may have been taken between the check and the start
      }
    }
  } catch (e) {
    try {
      ctl('stop', '-m', 'immediate');
    } catch {
      /* was not started */
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  // The watcher: EOF on its stdin (this process is gone, however) -> stop + delete.
  const stopCmd = `${sh(path.join(bin, 'pg_ctl'))} stop -w -t 60 -m immediate -D ${sh(data)} >/dev/null 2>&1`;
  const asUser = user ? `setpriv --reuid=${user.uid} --regid=${user.gid} --clear-groups -- ` : '';
  const watcher = spawn(
    '/bin/sh',
    ['-c', `trap '' INT TERM HUP; cat >/dev/null; [ -f ${sh(path.join(data, 'postmaster.pid'))} ] && ${asUser}${stopCmd}; rm -rf ${sh(dir)}`],
    { stdio: ['pipe', 'ignore', 'ignore'], detached: true },
  );
  const watcherDone = new Promise((resolve) => watcher.on('exit', resolve));
  watcher.unref();
  watcher.stdin.on('error', () => {});

  let ndb = 0;
  let up = true;
  const pg = {
    port,
    dir,
    /** A new empty database (C collation); resolves its storage URL. */
    async newDatabase() {
      const name = `agenthub${++ndb}`;
      run('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'agenthub', '-T', 'template0', name]);
      return `postgres://agenthub@127.0.0.1:${port}/${name}`;
    },
    /** pg_ctl stop (mode fast by default: connections are closed, the server exits). */
    stop(mode = 'fast') {
      ctl('stop', '-m', mode);
      up = false;
    },
    /** pg_ctl start on the same port. */
    start() {
      startServer();
      up = true;
    },
    /** pg_ctl restart -m fast, same options. */
    restart() {
      ctl('restart', '-m', 'fast', '-l', serverLog);
      up = true;
    },
    running: () => up,
    log: () => (fs.existsSync(serverLog) ? fs.readFileSync(serverLog, 'utf8') : ''),
    /** Stops the server and deletes its dir (also done at the end of the file). */
    async close() {
      watcher.ref(); // unref'd while the file runs, so it never holds the test process open
      if (!watcher.stdin.destroyed) watcher.stdin.end();
      await watcherDone;
    },
  };
  if (hook) after(() => pg.close());
  return pg;
}
