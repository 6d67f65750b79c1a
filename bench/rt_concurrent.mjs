// bench/rt_concurrent.mjs - many concurrent sync agent runs against one
// agenthub, for bench/runtime.sh (issue "Agent runtime", target 2).
//
//   node bench/rt_concurrent.mjs --url http://127.0.0.1:PORT/v1/agents/NAME/runs \
//        --key KEY --pid AGENTHUB_PID [--concurrency 1000] [--bursts 2]
//        [--sustain-s 10] [--timeout-s 60] [--input hello] [--sample-ms 20]
//
// Phases, one after the other, over one http.Agent (keepAlive, maxSockets =
// concurrency, so each run in flight has its own connection):
//   burst-1 .. burst-B: CONCURRENCY runs POSTed at once; waits for all of them.
//                       burst-1 also opens the connections.
//   sustain:            CONCURRENCY closed-loop clients for SUSTAIN_S seconds
//                       (each starts its next run when the previous answered).
// Every run must answer HTTP 200 with a run whose status is "completed" and
// whose output is "echo: <input>"; anything else is counted as an error, by
// kind. While a phase runs, agenthub's VmRSS (/proc/PID/status; its workers
// are threads of that PID) is read every SAMPLE_MS ms, and its
// agenthub_http_requests_in_flight gauge (GET /metrics on a separate
// connection) every 25 ms together with the VmRSS of that moment; RssAnon
// (heap, stacks) is tracked too, apart from file-backed pages (libraries,
// the SQLite -shm mapping).
//
// Output: one line per phase
//   RT_RESULT phase=<p> runs=<n> completed=<n> errors=<n> wall_s=<s> runs_per_s=<n>
//     p50_ms=.. p99_ms=.. max_ms=.. client_inflight_max=<n> server_inflight_max=<n>
//     rss_before_kib=<n> rss_peak_kib=<n> rss_at_inflight_max_kib=<n> rss_after_kib=<n>
//     anon_before_kib=<n> anon_peak_kib=<n> client_cpu_pct=<n>
// and "RT_ERRORS phase=<p> <kind>=<n> ..." when there were errors; the first
// few error bodies go to stderr. Exit status 0 if every run completed, 1 if not.
import http from 'node:http';
import fs from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const url = new URL(args.url || '');
const key = args.key || 'sk-test';
const pid = Number(args.pid || 0);
const conc = Number(args.concurrency || 1000);
const bursts = Number(args.bursts ?? 2);
const sustainS = Number(args['sustain-s'] ?? 10);
const timeoutS = Number(args['timeout-s'] || 60);
const input = args.input || 'hello';
const sampleMs = Number(args['sample-ms'] || 20);
const expected = `echo: ${input}`;
const body = JSON.stringify({ input, mode: 'sync' });

const agent = new http.Agent({ keepAlive: true, maxSockets: conc, maxFreeSockets: conc });
const metricsAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// VmRSS of agenthub in KiB; rssKiB.anon = its RssAnon at the same read
function rssKiB() {
  rssKiB.anon = 0;
  if (!pid) return 0;
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)/.exec(st);
    const a = /RssAnon:\s+(\d+)/.exec(st);
    rssKiB.anon = a ? Number(a[1]) : 0;
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function serverInflight() {
  return new Promise((resolve) => {
    const req = http.get(
      { host: url.hostname, port: url.port, path: '/metrics', agent: metricsAgent, timeout: 5000 },
      (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (s += d));
        res.on('end', () => {
          const m = /^agenthub_http_requests_in_flight (\d+)/m.exec(s);
          // the /metrics request itself is in flight too
          resolve(m ? Math.max(0, Number(m[1]) - 1) : -1);
        });
      },
    );
    req.on('error', () => resolve(-1));
    req.on('timeout', () => req.destroy());
  });
}

let shownErrors = 0;
function oneRun(stats) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    stats.inflight++;
    if (stats.inflight > stats.inflightMax) stats.inflightMax = stats.inflight;
    let settled = false;
    const end = (kind, detail) => {
      if (settled) return;
      settled = true;
      stats.inflight--;
      stats.runs++;
      if (kind === 'ok') {
        stats.completed++;
        stats.lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } else {
        stats.errors[kind] = (stats.errors[kind] || 0) + 1;
        if (shownErrors++ < 5) process.stderr.write(`run error ${kind}: ${String(detail).slice(0, 300)}\n`);
      }
      resolve();
    };
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Bearer ${key}`,
        },
      },
      (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (s += d));
        res.on('end', () => {
          if (res.statusCode !== 200) return end(`http_${res.statusCode}`, s);
          let run;
          try {
            run = JSON.parse(s);
          } catch {
            return end('bad_json', s);
          }
          if (run.status !== 'completed') return end(`status_${run.status}`, s);
          if (run.output !== expected) return end('bad_output', s);
          end('ok');
        });
        res.on('error', (e) => end(`net_${e.code || 'error'}`, e.message));
      },
    );
    req.setTimeout(timeoutS * 1000, () => {
      req.destroy(new Error('timeout'));
      end('timeout', `no answer in ${timeoutS} s`);
    });
    req.on('error', (e) => end(`net_${e.code || 'error'}`, e.message));
    req.end(body);
  });
}

function pct(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function phase(name, body) {
  const stats = { runs: 0, completed: 0, errors: {}, lat: [], inflight: 0, inflightMax: 0 };
  const rssBefore = rssKiB();
  const anonBefore = rssKiB.anon;
  let rssPeak = rssBefore;
  let anonPeak = anonBefore;
  let srvMax = 0;
  let rssAtSrvMax = rssBefore;
  const rssTimer = setInterval(() => {
    const r = rssKiB();
    if (r > rssPeak) rssPeak = r;
    if (rssKiB.anon > anonPeak) anonPeak = rssKiB.anon;
  }, sampleMs);
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const n = await serverInflight();
      const r = rssKiB();
      if (n > srvMax) {
        srvMax = n;
        rssAtSrvMax = r;
      }
      await new Promise((res) => setTimeout(res, 25));
    }
  })();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await body(stats);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  polling = false;
  await poller;
  clearInterval(rssTimer);
  const r = rssKiB();
  if (r > rssPeak) rssPeak = r;
  if (rssKiB.anon > anonPeak) anonPeak = rssKiB.anon;
  stats.lat.sort((a, b) => a - b);
  const nerr = Object.values(stats.errors).reduce((a, b) => a + b, 0);
  console.log(
    `RT_RESULT phase=${name} runs=${stats.runs} completed=${stats.completed} errors=${nerr}` +
      ` wall_s=${wall.toFixed(3)} runs_per_s=${(stats.completed / wall).toFixed(1)}` +
      ` p50_ms=${pct(stats.lat, 50).toFixed(2)} p99_ms=${pct(stats.lat, 99).toFixed(2)}` +
      ` max_ms=${(stats.lat[stats.lat.length - 1] || 0).toFixed(2)}` +
      ` client_inflight_max=${stats.inflightMax} server_inflight_max=${srvMax}` +
      ` rss_before_kib=${rssBefore} rss_peak_kib=${rssPeak} rss_at_inflight_max_kib=${rssAtSrvMax}` +
      ` rss_after_kib=${r} anon_before_kib=${anonBefore} anon_peak_kib=${anonPeak}` +
      ` client_cpu_pct=${((100 * (cpu.user + cpu.system)) / 1e6 / wall).toFixed(0)}`,
  );
  if (nerr)
    console.log(
      `RT_ERRORS phase=${name} ` +
        Object.entries(stats.errors)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
    );
  return nerr;
}

let failed = 0;
for (let b = 1; b <= bursts; b++) {
  failed += await phase(`burst-${b}`, async (stats) => {
    const all = [];
    for (let i = 0; i < conc; i++) all.push(oneRun(stats));
    await Promise.all(all);
  });
}
if (sustainS > 0) {
  failed += await phase('sustain', async (stats) => {
    const deadline = Date.now() + sustainS * 1000;
    const client = async () => {
      while (Date.now() < deadline) await oneRun(stats);
    };
    await Promise.all(Array.from({ length: conc }, client));
  });
}
agent.destroy();
metricsAgent.destroy();
process.exit(failed ? 1 : 0);
