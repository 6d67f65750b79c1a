// bench/rt_tool_server.mjs - the HTTP tool for bench/runtime.sh: answers
// every request (any method, any path) 200 {"ok":true} after reading the body,
// keep-alive. GET /stats answers {"requests":N} (not counted). Listens on
// 127.0.0.1:PORT (argv[2], default 0 = any free port) and prints
// "listening on http://127.0.0.1:<port>" once ready. SIGTERM/SIGINT: exit 0.
import http from 'node:http';

let requests = 0;
const body = '{"ok":true}';
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/stats') {
      const s = JSON.stringify({ requests });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': s.length });
      res.end(s);
      return;
    }
    requests++;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
