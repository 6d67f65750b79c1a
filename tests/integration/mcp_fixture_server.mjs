#!/usr/bin/env node
// mcp_fixture_server.mjs - a small MCP server built with @modelcontextprotocol/sdk,
// for agenthub's MCP client tests (tests/unit/test_mcp.c) and the runtime's
// integration suites. Everything it logs goes to stderr.
//
//   node mcp_fixture_server.mjs [--stdio] [--port N] [--host H] [--json]
//
//   --stdio    serve one client on stdin/stdout (stdio transport)
//   (default)  Streamable HTTP at http://HOST:PORT/mcp (HOST 127.0.0.1, PORT 0 = any
//              free port), one session per initialize; prints one JSON line
//              {"listening":PORT,"url":"http://..."} on stdout once it accepts.
//              Unknown session ids get 404 (spec: the client must re-initialize).
//   --json     answer requests with application/json instead of an SSE stream
//
// Tools:
//   add {a:number, b:number}   -> text "a+b" (e.g. "5")
//   slow {ms:number}           -> waits ms (cut short by notifications/cancelled), "slept N ms"
//   fail {message?:string}     -> isError result with message (default "fail tool failed")
//   ping_client {}             -> sends ping to the client and notifications/tools/list_changed
//                                 on the request's stream, then "client answered ping"
//   crash {code?:int}          -> the process exits with code (default 3) mid-call
//   big {bytes:int}            -> a text of that many "x"
//   mixed {}                   -> text, image and embedded resource content items
//   rpc_error {}               -> a JSON-RPC error answer (code -32042) instead of a result
//   stats {}                   -> JSON text {"calls":N,"cancelled":N,"sessions":N,"deleted":N}
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  EmptyResultSchema,
  ErrorCode,
  McpError,
  isInitializeRequest,
} from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};

const counters = { calls: 0, cancelled: 0, sessions: 0, deleted: 0 };
const text = (t) => ({ content: [{ type: "text", text: String(t) }] });

function createServer() {
  const server = new McpServer(
    { name: "agenthub-mcp-fixture", version: "1.0.0" },
    { capabilities: { tools: { listChanged: true } } },
  );
  server.registerTool(
    "add",
    { description: "Adds two numbers", inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => {
      counters.calls++;
      return text(a + b);
    },
  );
  server.registerTool(
    "slow",
    { description: "Waits ms milliseconds", inputSchema: { ms: z.number().int().min(0) } },
    async ({ ms }, extra) => {
      counters.calls++;
      const started = Date.now();
      await new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        extra.signal.addEventListener("abort", () => {
          counters.cancelled++;
          clearTimeout(t);
          resolve();
        });
      });
      return text(`slept ${Date.now() - started} ms`);
    },
  );
  server.registerTool(
    "fail",
    { description: "Always fails", inputSchema: { message: z.string().optional() } },
    async ({ message }) => {
      counters.calls++;
      throw new Error(message ?? "fail tool failed");
    },
  );
  server.registerTool(
    "ping_client",
    { description: "Pings the client from inside a call", inputSchema: {} },
    async (_args, extra) => {
      counters.calls++;
      await extra.sendRequest({ method: "ping" }, EmptyResultSchema, { timeout: 5000 });
      await extra.sendNotification({ method: "notifications/tools/list_changed" });
      return text("client answered ping");
    },
  );
  server.registerTool(
    "crash",
    { description: "Exits the server process mid-call", inputSchema: { code: z.number().int().optional() } },
    async ({ code }) => {
      counters.calls++;
      process.stderr.write(`fixture: crashing with code ${code ?? 3}\n`);
      process.exit(code ?? 3);
    },
  );
  server.registerTool(
    "big",
    { description: "Returns a long text", inputSchema: { bytes: z.number().int().min(0) } },
    async ({ bytes }) => {
      counters.calls++;
      return text("x".repeat(bytes));
    },
  );
  server.registerTool(
    "mixed",
    { description: "Returns several content types", inputSchema: {} },
    async () => {
      counters.calls++;
      return {
        content: [
          { type: "text", text: "first" },
          { type: "image", data: Buffer.from("0123456789ab").toString("base64"), mimeType: "image/png" },
          { type: "resource", resource: { uri: "mem://note", mimeType: "text/plain", text: "resource text" } },
        ],
      };
    },
  );
  server.registerTool(
    "rpc_error",
    { description: "Answers with a JSON-RPC error", inputSchema: {} },
    async () => {
      counters.calls++;
      // McpServer turns handler errors into isError results, except this code
      throw new McpError(ErrorCode.UrlElicitationRequired, "fixture wants a JSON-RPC error");
    },
  );
  server.registerTool(
    "stats",
    { description: "Counters of this server process", inputSchema: {} },
    async () => text(JSON.stringify(counters)),
  );
  return server;
}

if (flag("--stdio")) {
  const server = createServer();
  await server.connect(new StdioServerTransport());
  process.stderr.write("fixture: stdio server ready\n");
} else {
  const json = flag("--json");
  const sessions = new Map(); // id -> transport

  const readBody = (req) =>
    new Promise((resolve, reject) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });
  const fail = (res, status, code, message) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));
  };

  const httpServer = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://x");
      if (url.pathname !== "/mcp") return fail(res, 404, -32000, "Not found");
      const sid = req.headers["mcp-session-id"];
      let transport = sid ? sessions.get(sid) : undefined;
      if (sid && !transport) return fail(res, 404, -32001, "Session not found");
      let body;
      if (req.method === "POST") {
        const raw = await readBody(req);
        try {
          body = JSON.parse(raw);
        } catch {
          return fail(res, 400, -32700, "Parse error");
        }
        if (!transport) {
          if (!isInitializeRequest(body)) return fail(res, 400, -32000, "Bad Request: no session id");
          transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: json,
            onsessioninitialized: (id) => {
              counters.sessions++;
              sessions.set(id, transport);
            },
          });
          transport.onclose = () => {
            if (transport.sessionId && sessions.delete(transport.sessionId)) counters.deleted++;
          };
          await createServer().connect(transport);
        }
      } else if (!transport) {
        return fail(res, 400, -32000, "Bad Request: no session id");
      }
      await transport.handleRequest(req, res, body);
    } catch (err) {
      process.stderr.write(`fixture: error ${err?.stack ?? err}\n`);
      if (!res.headersSent) fail(res, 500, -32603, "Internal error");
    }
  });
  const host = opt("--host", "127.0.0.1");
  httpServer.listen(Number(opt("--port", "0")), host, () => {
    const port = httpServer.address().port;
    process.stdout.write(JSON.stringify({ listening: port, url: `http://${host}:${port}/mcp` }) + "\n");
  });
  for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
}
