// bench/streams_client.mjs - holds N concurrent streaming chat completions
// (POST /v1/chat/completions, "stream": true) against one URL and checks each
// stream: HTTP 200, every token chunk, no error event, "data: [DONE]", the
// end of the chunked body. Used by bench/streams.sh.
//
//   node streams_client.mjs URL N MODEL MESSAGE_CHARS [RAMP_PER_TICK] [TICK_MS] [TIMEOUT_S]
//
// Plain TCP sockets (node:net) with a hand-written HTTP/1.1 request and a
// substring scan of the answer, not node:http: with 10,000 streams x 5 chunks
// a second, node's HTTP parser and stream objects made the client the
// bottleneck on 2 cores (its event loop stalled for seconds while opening
// the connections). One connection per stream; RAMP_PER_TICK [100] new
// streams every TICK_MS [20] ms until N are started.
//
// `agenthub mock-llm`'s echo model answers "echo: " + the message, 4
// characters per chunk, so a stream is complete when it carried
// ceil((6 + MESSAGE_CHARS) / 4) '"delta":{"content":"' chunks, data: [DONE]
// and the last HTTP chunk. Prints "PROGRESS t_s=.. started=.. open=..
// streaming=.. completed=.. failed=.." every 0.5 s and at the end one line:
//   STREAMS_RESULT n=.. completed=.. failed=.. http_non200=.. conn_errors=.. error_events=..
//     incomplete=.. timeouts=.. max_open=.. max_streaming=.. ramp_s=.. ttfb_p50_ms=..
//     ttfb_p99_ms=.. dur_p50_s=.. dur_p99_s=.. dur_max_s=.. wall_s=.. expect_chunks=..
// open = connections the client holds (some may still wait in agenthub's
// accept queue); streaming = streams whose first body bytes arrived and that
// have not ended, i.e. streams agenthub is really proxying at that moment.
// with the first failure reasons on stderr. Exit status 0 when every stream
// completed.
import net from 'node:net';

const [url, nArg, model, charsArg, rampArg, tickArg, timeoutArg] = process.argv.slice(2);
if (!url || !nArg || !model || !charsArg) {
  console.error('usage: node streams_client.mjs URL N MODEL MESSAGE_CHARS [RAMP_PER_TICK] [TICK_MS] [TIMEOUT_S]');
  process.exit(2);
}
const N = Number(nArg);
const CHARS = Number(charsArg);
const RAMP = Number(rampArg || 100);
const TICK_MS = Number(tickArg || 20);
const TIMEOUT_MS = Number(timeoutArg || 120) * 1000;
const EXPECT_CHUNKS = Math.ceil((6 + CHARS) / 4);

const base = 'Please repeat this text back to me word for word, it is only here to make the stream long. ';
let message = '';
while (message.length < CHARS) message += base;
message = message.slice(0, CHARS);
const body = JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: message }] });
const target = new URL(url);
const request = Buffer.from(
  `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: application/json\r\n` +
    `Authorization: Bearer sk-test\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
);

const CHUNK = Buffer.from('"delta":{"content":"');
const ERR = Buffer.from('"error"');
const DONE = Buffer.from('data: [DONE]');
const LAST = Buffer.from('\r\n0\r\n\r\n');
const KEEP = 32; // bytes carried between reads so that patterns split across reads are seen

const t0 = performance.now();
let started = 0, open = 0, maxOpen = 0, streaming = 0, maxStreaming = 0, completed = 0, failed = 0;
let non200 = 0, connErrors = 0, errorEvents = 0, incomplete = 0, timeouts = 0;
const ttfb = [], durs = [], reasons = [];

function count(b, pat, from) {
  let n = 0, k = b.indexOf(pat, from);
  while (k >= 0) { n++; k = b.indexOf(pat, k + pat.length); }
  return n;
}

// patterns in buf, plus those that straddle tail|buf (tail holds < KEEP bytes, all patterns are shorter)
function scan(st, buf) {
  if (st.tail.length) {
    const j = Buffer.concat([st.tail, buf.subarray(0, KEEP)]);
    const tl = st.tail.length;
    for (const [pat, key] of [[CHUNK, 'chunks'], [ERR, 'errEv']]) {
      let k = j.indexOf(pat);
      while (k >= 0) { if (k < tl && k + pat.length > tl) st[key]++; k = j.indexOf(pat, k + 1); }
    }
    if (!st.done && j.indexOf(DONE) >= 0) st.done = true;
  }
  st.chunks += count(buf, CHUNK, 0);
  st.errEv += count(buf, ERR, 0);
  if (!st.done && buf.indexOf(DONE) >= 0) st.done = true;
  const t = buf.length >= KEEP ? buf.subarray(buf.length - KEEP) : Buffer.concat([st.tail, buf]).subarray(-KEEP);
  st.tail = Buffer.from(t); // copy: do not pin the whole read buffer
}

function startOne(i) {
  const ts = performance.now();
  const st = { chunks: 0, errEv: 0, done: false, tail: Buffer.alloc(0) };
  let settled = false, first = 0, head = null;
  started++;
  open++;
  if (open > maxOpen) maxOpen = open;
  const sock = net.connect({ host: target.hostname, port: Number(target.port) });
  const finish = (ok, reason) => {
    if (settled) return;
    settled = true;
    open--;
    if (first) streaming--;
    sock.destroy();
    if (ok) {
      completed++;
      durs.push((performance.now() - ts) / 1000);
    } else {
      failed++;
      if (reasons.length < 10) reasons.push(`stream ${i}: ${reason}`);
    }
  };
  sock.setNoDelay(true);
  sock.setTimeout(TIMEOUT_MS, () => { timeouts++; finish(false, 'timeout'); });
  sock.on('connect', () => sock.write(request));
  sock.on('data', (buf) => {
    if (settled) return;
    if (head !== true) {
      head = head ? Buffer.concat([head, buf]) : buf;
      const k = head.indexOf('\r\n\r\n');
      if (k < 0) return;
      if (head.toString('latin1', 0, 12) !== 'HTTP/1.1 200') {
        non200++;
        finish(false, head.toString('latin1', 0, 200).replace(/\r\n/g, ' | '));
        return;
      }
      buf = head.subarray(k + 4);
      head = true;
      if (!buf.length) return;
    }
    if (!first) {
      first = performance.now();
      ttfb.push(first - ts);
      streaming++;
      if (streaming > maxStreaming) maxStreaming = streaming;
    }
    scan(st, buf);
    if (st.tail.length >= LAST.length && st.tail.subarray(-LAST.length).equals(LAST)) {
      if (st.errEv) { errorEvents++; finish(false, 'error event in the stream'); }
      else if (!st.done || st.chunks !== EXPECT_CHUNKS) { incomplete++; finish(false, `incomplete: ${st.chunks}/${EXPECT_CHUNKS} chunks, done=${st.done}`); }
      else finish(true);
    }
  });
  sock.on('error', (e) => { if (!settled) { connErrors++; finish(false, `socket error ${e.code || e.message}`); } });
  sock.on('close', () => { if (!settled) { incomplete++; finish(false, `closed early: ${st.chunks}/${EXPECT_CHUNKS} chunks, done=${st.done}, head=${head === true}`); } });
}

function pct(a, p) {
  if (!a.length) return NaN;
  const s = Float64Array.from(a).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function progress() {
  const t = (performance.now() - t0) / 1000;
  console.log(`PROGRESS t_s=${t.toFixed(1)} started=${started} open=${open} streaming=${streaming} completed=${completed} failed=${failed}`);
}

// The ramp follows the clock, not the tick count: if the event loop was late,
// the next tick starts the streams that are due, so a busy client still
// reaches N on schedule (RAMP per TICK_MS).
let next = 0;
const ramp = setInterval(() => {
  const due = Math.min(N, Math.ceil(((performance.now() - t0) / TICK_MS + 1) * RAMP));
  while (next < due) startOne(next++);
  if (next >= N) {
    clearInterval(ramp);
    rampDone = (performance.now() - t0) / 1000;
  }
}, TICK_MS);
let rampDone = NaN;
const prog = setInterval(progress, 500);
const check = setInterval(() => {
  if (next < N || open > 0) return;
  clearInterval(check);
  clearInterval(prog);
  progress();
  const wall = (performance.now() - t0) / 1000;
  console.log(
    `STREAMS_RESULT n=${N} completed=${completed} failed=${failed} http_non200=${non200} conn_errors=${connErrors} ` +
      `error_events=${errorEvents} incomplete=${incomplete} timeouts=${timeouts} max_open=${maxOpen} max_streaming=${maxStreaming} ` +
      `ramp_s=${rampDone.toFixed(1)} ` +
      `ttfb_p50_ms=${pct(ttfb, 50).toFixed(1)} ttfb_p99_ms=${pct(ttfb, 99).toFixed(1)} ` +
      `dur_p50_s=${pct(durs, 50).toFixed(2)} dur_p99_s=${pct(durs, 99).toFixed(2)} ` +
      `dur_max_s=${durs.reduce((m, x) => (x > m ? x : m), 0).toFixed(2)} ` +
      `wall_s=${wall.toFixed(1)} expect_chunks=${EXPECT_CHUNKS}`,
  );
  for (const r of reasons) console.error(r);
  process.exit(completed === N ? 0 : 1);
}, 100);
