/*
 * mcp.h - a Model Context Protocol client for the agent runtime's `mcp` tools.
 *
 * One ah_mcp_client_t is one connection to one MCP server, over either
 * transport of the MCP specification (revisions 2025-06-18 and 2025-03-26):
 *
 *   stdio            the server is a child process we spawn (its own process
 *                    group, a scrubbed environment); newline-delimited
 *                    JSON-RPC on its stdin/stdout, its stderr goes to our log
 *                    at debug level. If it dies, pending calls fail with
 *                    -EPIPE and the next call respawns it (with a backoff and
 *                    a maximum restart rate).
 *   Streamable HTTP  each message is a POST to the server's endpoint through
 *                    the loop's ah_http_client_t; the answer is JSON or an SSE
 *                    stream. Mcp-Session-Id and MCP-Protocol-Version headers
 *                    are handled; a lost session (404) is re-initialised once
 *                    and the request retried; the session is DELETEd at free.
 *
 * Threads: a client and its calls belong to one loop and are used only on that
 * loop's thread. Nothing here blocks the loop: pipes are non-blocking, HTTP
 * goes through curl multi, and children are reaped through a pidfd on the loop
 * or, once the client is freed, by a small process-wide reaper thread.
 *
 * Callbacks (connect and call results) always run from the loop, never from
 * inside an ah_mcp_* function. From a callback you may start or cancel calls,
 * call ah_mcp_connect, and even free the client (the free is finished when the
 * callback returns; no other callback of that client runs after it).
 *
 * Typical use (the runtime):
 *
 *   ah_mcp_client_new(loop, http, &opts, &c);
 *   ah_mcp_connect(c, on_ready, run);         // spawn/initialize + tools/list
 *   ... on_ready: ah_mcp_tools(c, &n), filter with ah_mcp_tool_allowed ...
 *   ah_mcp_call(c, "search", "{\"q\":\"x\"}", on_result, step, &call);
 *   ... on_result(step, rc, is_error, text, n) ...
 *   ah_mcp_client_free(c);
 *
 * See docs/internals/mcp.md.
 */
#ifndef AH_AGENTS_MCP_H
#define AH_AGENTS_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "http/client.h"

/* The revision we ask for in initialize; older ones the server may answer with are accepted. */
#define AH_MCP_PROTOCOL_VERSION "2025-06-18"

#define AH_MCP_DEFAULT_TIMEOUT_S         60.0
#define AH_MCP_DEFAULT_INIT_TIMEOUT_S    30.0
#define AH_MCP_DEFAULT_MAX_MESSAGE_BYTES (4u << 20)
#define AH_MCP_DEFAULT_MAX_PENDING       64
#define AH_MCP_DEFAULT_MAX_RESTARTS      5
#define AH_MCP_DEFAULT_RESTART_WINDOW_S  60.0
#define AH_MCP_DEFAULT_KILL_GRACE_S      2.0
#define AH_MCP_MAX_TOOLS                 1024 /* tools kept from one tools/list */

typedef struct ah_mcp_client ah_mcp_client_t;
typedef struct ah_mcp_call ah_mcp_call_t;

/*
 * Where the server is and how to talk to it. Exactly one of url and command.
 * Everything is copied by ah_mcp_client_new. Zero values select the defaults.
 */
typedef struct ah_mcp_server_opts {
    const char *name; /* for logs and error messages; NULL: the URL or command[0] */
    /* Streamable HTTP endpoint (http:// or https://), e.g. "http://mcp:3001/mcp". */
    const char *url;
    /* HTTP only: extra "Name: value" request headers, NULL-terminated (e.g. Authorization). */
    const char *const *headers;
    /* stdio: argv, NULL-terminated; argv[0] is looked up in PATH. */
    const char *const *command;
    /*
     * stdio: extra "K=V" entries, NULL-terminated. The child gets only PATH,
     * HOME, USER, LOGNAME, SHELL, LANG, LC_ALL, LC_CTYPE, TZ and TMPDIR from our
     * environment (so provider keys and other secrets never leak into it),
     * then these, which override.
     */
    const char *const *env;
    double timeout_s;         /* per call, from ah_mcp_call to its result; <= 0: 60 */
    double init_timeout_s;    /* spawn + initialize (+ tools/list); <= 0: 30 */
    size_t max_message_bytes; /* one JSON-RPC message, either direction; 0: 4 MiB */
    size_t max_pending;       /* calls waiting or in flight; 0: 64 */
    unsigned max_restarts;    /* (re)connects allowed per restart_window_s; 0: 5 */
    double restart_window_s;  /* <= 0: 60 */
    double kill_grace_s; /* stdio, at free: stdin closed, SIGTERM at grace/2, SIGKILL at grace; <=
                            0: 2 */
} ah_mcp_server_opts_t;

/* A tool as the server listed it. All strings are NUL-terminated and owned by the client. */
typedef struct ah_mcp_tool {
    char *name;
    char *description;       /* "" when the server gave none */
    char *input_schema_json; /* compact JSON object ({"type":"object"} when none was given) */
} ah_mcp_tool_t;

typedef struct ah_mcp_client_stats {
    int pid;                    /* stdio: the running server's pid, 0 when none */
    unsigned connects;          /* connection attempts (spawns / initialize requests) */
    unsigned exits;             /* stdio: server processes that ended while in use */
    unsigned session_reinits;   /* HTTP: sessions found gone (404) and re-initialised */
    unsigned long calls_ok;     /* calls answered (isError or not) */
    unsigned long calls_failed; /* calls ended with rc != 0 (not counting cancels) */
    size_t pending;             /* calls waiting or in flight */
    bool ready;                 /* initialised and usable right now */
    bool tools_stale;           /* the server said notifications/tools/list_changed */
} ah_mcp_client_stats_t;

/**
 * Result of a connect. rc 0 when initialised and the tool list is in;
 * otherwise err is a readable reason ("MCP server \"docs\": command \"npx\"
 * not found in PATH"), valid during the call only. rc is one of:
 *   -ENOENT        the command was not found
 *   -EPIPE         the server exited (or closed its stdout) during initialize
 *   -ETIMEDOUT     initialize + tools/list took longer than init_timeout_s
 *   -EPROTO        the server broke the protocol (bad JSON-RPC, unsupported
 *                  protocol version, an error answer to initialize/tools/list)
 *   -EAGAIN        restarted max_restarts times within restart_window_s; not now
 *   -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET, -EIO, -EACCES (401/403) for HTTP
 *   -ENOMEM
 */
typedef void (*ah_mcp_connect_cb)(void *ud, int rc, const char *err);

/**
 * Result of a call, exactly once unless the call was cancelled or the client
 * freed. rc 0: the server answered; is_error is the result's isError and
 * text (n bytes, NUL-terminated, never NULL) is the content flattened to
 * text: text items joined by "\n"; an embedded text resource as its text;
 * other items (images, audio, blobs, resource links) as a one-line JSON
 * description such as {"type":"image","mimeType":"image/png","bytes":1024};
 * when there is no content but structuredContent, that object's JSON.
 * rc < 0: text is a readable reason; rc is one of
 *   -EREMOTEIO    the server answered with a JSON-RPC error (unknown tool,
 *                 invalid params...); text is "MCP error CODE: MESSAGE"
 *   -EPIPE        the stdio server exited ("MCP server \"x\" exited with status 1")
 *   -ETIMEDOUT    no answer within timeout_s (notifications/cancelled was sent)
 *   -EAGAIN       the server is down and may not be restarted yet
 *   -E2BIG        the answer was larger than max_message_bytes
 *   -EPROTO, -ENOBUFS, and the connect errors above
 * text is valid during the callback only; the call handle is dead after it.
 */
typedef void (*ah_mcp_call_cb)(void *ud, int rc, bool is_error, const char *text, size_t n);

/**
 * Creates a client for one server; nothing is started until ah_mcp_connect or
 * ah_mcp_call. loop (and http, needed for a url server, may be NULL for a
 * command server) must outlive the client; call on loop's thread. The client
 * is owned by the caller (ah_mcp_client_free). Returns 0, -EINVAL (neither or
 * both of url/command, an empty command, a url that is not http(s), an env
 * entry without '=', url given but http NULL) or -ENOMEM.
 */
int ah_mcp_client_new(ah_loop_t *loop, ah_http_client_t *http, const ah_mcp_server_opts_t *o,
                      ah_mcp_client_t **out);

/**
 * Connects if needed (spawns the server / starts a session, runs the
 * initialize handshake) and fetches the tool list (all pages of tools/list),
 * then calls cb once. On a client that is already up, it refreshes the tool
 * list (use it when ah_mcp_client_stats says tools_stale). Several connects
 * may wait at once; each gets its callback. Returns 0 (cb will run) or
 * -EINVAL / -ENOMEM (it will not).
 */
int ah_mcp_connect(ah_mcp_client_t *c, ah_mcp_connect_cb cb, void *ud);

/**
 * The tools of the last successful tools/list (n = 0 before one). The array
 * and its strings are owned by the client and stay valid until the next
 * ah_mcp_connect callback or ah_mcp_client_free, whichever comes first: a
 * respawn or a session re-initialisation does not replace them. Copy what you
 * keep longer.
 */
const ah_mcp_tool_t *ah_mcp_tools(const ah_mcp_client_t *c, size_t *n);

/**
 * Calls tool with args_json (a JSON object; NULL or "" means {}). Copies what
 * it needs and returns at once; if the server is down it is (re)started first
 * and the call waits for it, within the same timeout_s. On success returns 0,
 * sets *out (when out is not NULL) to a handle valid until cb runs or
 * ah_mcp_call_cancel returns, and cb runs later exactly once. Returns
 * -EINVAL (empty tool name, args not a JSON object), -E2BIG (request over
 * max_message_bytes), -EBUSY (max_pending calls already pending) or -ENOMEM,
 * and then cb never runs.
 */
int ah_mcp_call(ah_mcp_client_t *c, const char *tool, const char *args_json, ah_mcp_call_cb cb,
                void *ud, ah_mcp_call_t **out);

/**
 * Abandons a call: if it was sent, the server gets notifications/cancelled
 * (and over HTTP its POST is aborted); its callback never runs and the handle
 * is dead when this returns. Must be a handle whose callback has not run.
 */
void ah_mcp_call_cancel(ah_mcp_call_t *call);

/** Counters and state of the client (loop thread only). */
void ah_mcp_client_stats(const ah_mcp_client_t *c, ah_mcp_client_stats_t *st);

/** HTTP: the current Mcp-Session-Id, NULL when none. Valid until the next loop turn. */
const char *ah_mcp_session_id(const ah_mcp_client_t *c);

/** The negotiated protocol version, NULL before the first initialize completed. */
const char *ah_mcp_protocol_version(const ah_mcp_client_t *c);

/**
 * Frees the client. Pending calls and connects get no callback. A stdio
 * server has its stdin closed, gets SIGTERM (its whole process group) after
 * kill_grace_s / 2 and SIGKILL after kill_grace_s, and is reaped by the
 * process-wide reaper thread, so this never waits. An HTTP session is ended
 * with a DELETE (fire and forget) and in-flight POSTs are aborted. Allowed
 * from the client's own callbacks. NULL is a no-op.
 */
void ah_mcp_client_free(ah_mcp_client_t *c);

/**
 * True when name passes an agent's `allow` list: a NULL or empty list allows
 * every tool; otherwise name must equal an entry or match it as a shell
 * pattern (fnmatch: `*`, `?`, `[...]`), e.g. "search_*".
 */
bool ah_mcp_tool_allowed(const char *const *allow, size_t n, const char *name);

/**
 * At process exit, after the loops stopped: SIGKILLs the process groups of
 * freed stdio servers that are still shutting down, reaps them and joins the
 * reaper thread. Safe to call when nothing was ever spawned, and more than
 * once; spawning again afterwards starts a new reaper.
 */
void ah_mcp_global_cleanup(void);

#endif
