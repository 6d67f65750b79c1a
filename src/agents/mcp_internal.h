/*
 * mcp_internal.h - what the MCP client's protocol core (mcp.c) and its two
 * transports (mcp_stdio.c, mcp_http.c) share. Not for other modules: they use
 * mcp.h.
 *
 * Division of work: the core owns the state machine (idle -> connecting ->
 * ready), request ids, the pending lists, timers and every user callback; a
 * transport moves bytes and reports back through the ah_mcp_core_* functions.
 * A transport never calls back into the core synchronously from a function
 * the core called (send, stop), only from its own loop events; every such
 * event handler brackets its work with ah_mcp_enter / ah_mcp_leave, which is what
 * makes freeing the client from a user callback safe (see ah_mcp_leave).
 */
#ifndef AH_AGENTS_MCP_INTERNAL_H
#define AH_AGENTS_MCP_INTERNAL_H

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agents/mcp.h"
#include "core/buf.h"

enum mcp_state {
    MCP_IDLE = 0,   /* no connection; the next call or connect starts one */
    MCP_BACKOFF,    /* waiting for the restart backoff to pass */
    MCP_CONNECTING, /* spawned / initialize (and maybe tools/list) in flight */
    MCP_READY,      /* initialised: calls are sent as they come */
};

enum mcp_req_kind { MCP_REQ_INIT = 1, MCP_REQ_LIST, MCP_REQ_CALL };

typedef struct mcp_list {
    struct ah_mcp_call *head, *tail;
    size_t n;
} mcp_list_t;

/* A request of ours: a user's tools/call, or the core's initialize / tools/list. */
struct ah_mcp_call {
    ah_mcp_client_t *c;
    struct ah_mcp_call *prev, *next;
    mcp_list_t *list; /* the list it is on (waiting, inflight, failing), NULL when none */
    int kind;
    int64_t id;          /* JSON-RPC id while sent, 0 otherwise */
    struct event *timer; /* calls: the deadline, or a 0 s timer delivering fail_rc */
    char *tool;
    json_t *args;
    ah_mcp_call_cb cb;
    void *ud;
    void *post;  /* HTTP: the POST carrying it while in flight (owned by mcp_http.c) */
    int fail_rc; /* != 0: on the failing list, delivered by the timer */
    char *fail_msg;
    bool retried; /* HTTP: already re-sent once after a lost session */
};

typedef struct mcp_waiter {
    ah_mcp_connect_cb cb;
    void *ud;
    int rc;
    char *msg;
    struct mcp_waiter *next;
} mcp_waiter_t;

typedef struct mcp_stdio mcp_stdio_t;
typedef struct mcp_http mcp_http_t;

struct ah_mcp_client {
    ah_loop_t *loop;
    struct event_base *base;
    ah_http_client_t *http;

    /* options, copied */
    char *name;
    char *url;
    char **headers; /* NULL-terminated */
    char **command; /* NULL-terminated */
    char **env;     /* NULL-terminated */
    double timeout_s, init_timeout_s, restart_window_s, kill_grace_s;
    size_t max_message_bytes, max_pending;
    unsigned max_restarts;

    int state;
    uint64_t gen; /* bumped at each connection attempt */
    int64_t next_id;
    mcp_list_t waiting;  /* calls not sent yet (waiting for the connection) */
    mcp_list_t inflight; /* sent, awaiting their response (calls and init/list) */
    mcp_list_t failing;  /* calls whose failure is due on their 0 s timer */
    size_t ncalls;       /* user calls on any list */

    mcp_waiter_t *waiters;      /* connects waiting for the handshake / list in progress */
    mcp_waiter_t *done_waiters; /* finished; callbacks run from the kick event */
    struct event *kick;
    struct event *connect_timer; /* init deadline (CONNECTING) or backoff end (BACKOFF) */

    bool want_list; /* a connect asked for tools/list after the handshake */
    bool listing;   /* a tools/list sequence is in flight */
    bool ever_listed;
    bool server_has_tools;
    size_t list_pages;
    ah_mcp_tool_t *tools, *new_tools;
    size_t ntools, nnew;
    bool tools_stale;
    char proto[24]; /* negotiated protocol version, "" before the first initialize */

    uint64_t *attempts; /* ring of the last max_restarts attempt times (ns) */
    size_t attempt_pos;
    unsigned consec_fail;
    uint64_t next_attempt_ns;

    int depth;   /* loop callbacks of this client on the stack */
    bool doomed; /* ah_mcp_client_free was called inside one; finish in ah_mcp_leave */

    ah_mcp_client_stats_t st;
    mcp_stdio_t *stdio;
    mcp_http_t *ht;
};

/* Log component of the module. */
#define AH_MCP_LOG "mcp"

/* ---- core, for the transports ---- */

/** Marks the start of a loop callback working on c. */
static inline void ah_mcp_enter(ah_mcp_client_t *c)
{
    c->depth++;
}

/** Ends it; may free c (when doomed and outermost). Do not touch c afterwards. */
void ah_mcp_leave(ah_mcp_client_t *c);

/** One complete JSON-RPC message (object or batch array) from the server. */
void ah_mcp_core_message(ah_mcp_client_t *c, const char *p, size_t n);

/** stdio: the server is gone (exit, closed stdout, protocol violation); rc + readable reason. */
void ah_mcp_core_down(ah_mcp_client_t *c, int rc, const char *msg);

/** HTTP: the POST carrying req ended without its response. */
void ah_mcp_core_req_failed(ah_mcp_client_t *c, struct ah_mcp_call *req, int rc, const char *msg);

/** HTTP: req's POST got 404 for the session it was sent with (session_gen). */
void ah_mcp_core_session_lost(ah_mcp_client_t *c, struct ah_mcp_call *req, uint64_t session_gen);

/** HTTP: the notifications/initialized POST of connection attempt gen finished. */
void ah_mcp_core_initialized_sent(ah_mcp_client_t *c, uint64_t gen);

/* ---- stdio transport ---- */

/** Spawns the server. 0, or -errno with a reason appended to err. */
int ah_mcp_stdio_start(ah_mcp_client_t *c, ah_buf_t *err);

/** Queues one message (a newline is added). 0, -ENOTCONN, -ENOBUFS or -ENOMEM. */
int ah_mcp_stdio_send(ah_mcp_client_t *c, const char *p, size_t n);

/**
 * Stops the child and frees the transport state. at_free: polite (stdin
 * closed, SIGTERM then SIGKILL on the reaper's schedule); otherwise SIGKILL now.
 */
void ah_mcp_stdio_stop(ah_mcp_client_t *c, bool at_free);

/** The child's pid, 0 when none. */
int ah_mcp_stdio_pid(const ah_mcp_client_t *c);

/* ---- HTTP transport ---- */

enum { MCP_POST_INITIALIZED = 1 }; /* flags of ah_mcp_http_send */

/**
 * POSTs one message. req: the request it carries (its response comes back on
 * this POST), NULL for notifications and our responses. 0 or -errno.
 */
int ah_mcp_http_send(ah_mcp_client_t *c, const char *p, size_t n, struct ah_mcp_call *req,
                     int flags);

/** req no longer waits on its POST; abort: also cancel the POST (cancel / timeout). */
void ah_mcp_http_detach(ah_mcp_client_t *c, struct ah_mcp_call *req, bool abort);

/** Forgets the session (before a new initialize). */
void ah_mcp_http_reset_session(ah_mcp_client_t *c);

/** Current session generation (bumped by reset). */
uint64_t ah_mcp_http_session_gen(const ah_mcp_client_t *c);

/** The session id or NULL. */
const char *ah_mcp_http_session(const ah_mcp_client_t *c);

/** At free: aborts every POST (no callbacks) and DELETEs the session. */
void ah_mcp_http_stop(ah_mcp_client_t *c);

#endif
