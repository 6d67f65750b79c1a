/*
 * mcp.c - the MCP client's protocol core: JSON-RPC 2.0 requests and their
 * ids, the lifecycle (initialize -> notifications/initialized -> tools/list),
 * tools/call and its result flattening, server requests (ping) and
 * notifications, timeouts, cancellation, restarts with backoff and a rate
 * limit, and every user callback. The byte moving is in mcp_stdio.c and
 * mcp_http.c; see mcp_internal.h for how they talk to this file.
 *
 * Invariants:
 *  - A request is on at most one list: waiting (not sent), inflight (sent,
 *    id != 0) or failing (its failure is delivered by its 0 s timer).
 *  - User callbacks run only from loop events of this client, bracketed by
 *    ah_mcp_enter/ah_mcp_leave; failures found inside an API call are always
 *    delivered through a timer (fail_soon) or the kick event.
 *  - Ids are never reused within a client, so an answer that arrives after
 *    its request was cancelled, timed out or belonged to a dead connection
 *    matches nothing and is dropped.
 */
#include "agents/mcp.h"
#include "agents/mcp_internal.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

#ifndef AH_VERSION
#define AH_VERSION "0"
#endif

/* Protocol revisions we can speak, newest first (lifecycle: version negotiation). */
static const char *const k_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
                                         NULL};

#define MAX_LIST_PAGES    64
#define MAX_TOOL_NAME     256
#define BACKOFF_FIRST_S   0.5
#define BACKOFF_MAX_S     30.0
#define JSONRPC_NO_METHOD -32601

static void connect_start(ah_mcp_client_t *c);
static void call_send(ah_mcp_call_t *r);

/* ---- small helpers ---- */

static struct timeval tv_of(double s)
{
    if (s < 0)
        s = 0;
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* snprintf into buf; an over-long message is cut (it is only ever shown to people). */
__attribute__((format(printf, 3, 4))) static const char *fmt(char *buf, size_t n, const char *f,
                                                             ...)
{
    va_list ap;
    va_start(ap, f);
    int k = vsnprintf(buf, n, f, ap);
    va_end(ap);
    if (k < 0)
        buf[0] = '\0';
    return buf;
}

static void list_push(mcp_list_t *l, ah_mcp_call_t *r)
{
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
    r->list = l;
}

static void list_push_front(mcp_list_t *l, ah_mcp_call_t *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
    r->list = l;
}

static void list_remove(ah_mcp_call_t *r)
{
    mcp_list_t *l = r->list;
    if (!l)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    l->n--;
    r->prev = r->next = NULL;
    r->list = NULL;
}

static ah_mcp_call_t *list_find_id(const mcp_list_t *l, int64_t id)
{
    for (ah_mcp_call_t *r = l->head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

/* Copies a NULL-terminated vector; *ok is cleared on ENOMEM. NULL in, NULL out. */
static char **strv_dup(const char *const *v, bool *ok)
{
    if (!v)
        return NULL;
    size_t n = 0;
    while (v[n])
        n++;
    char **o = calloc(n + 1, sizeof(*o));
    if (!o) {
        *ok = false;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        o[i] = strdup(v[i]);
        if (!o[i]) {
            strv_free(o);
            *ok = false;
            return NULL;
        }
    }
    return o;
}

static void tools_free(ah_mcp_tool_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].description);
        free(t[i].input_schema_json);
    }
    free(t);
}

/* "MCP error -32602: Unknown tool" from a JSON-RPC error object. */
static const char *rpc_error_text(const json_t *err, char *buf, size_t n)
{
    const char *m = json_string_value(json_object_get(err, "message"));
    json_t *code = json_object_get(err, "code");
    if (m && strncmp(m, "MCP error ", 10) == 0) /* the TypeScript SDK prefixes its messages */
        return fmt(buf, n, "%s", m);
    return fmt(buf, n, "MCP error %lld: %s",
               json_is_integer(code) ? (long long)json_integer_value(code) : 0LL,
               m ? m : "(no message)");
}

/* ---- requests ---- */

static void call_timer_cb(evutil_socket_t fd, short what, void *arg);

static ah_mcp_call_t *req_new(ah_mcp_client_t *c, int kind)
{
    ah_mcp_call_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->c = c;
    r->kind = kind;
    if (kind == MCP_REQ_CALL) {
        r->timer = evtimer_new(c->base, call_timer_cb, r);
        if (!r->timer) {
            free(r);
            return NULL;
        }
        c->ncalls++;
    }
    return r;
}

static void req_free(ah_mcp_call_t *r)
{
    ah_mcp_client_t *c = r->c;
    list_remove(r);
    if (r->post)
        ah_mcp_http_detach(c, r, true);
    if (r->timer)
        event_free(r->timer);
    if (r->kind == MCP_REQ_CALL)
        c->ncalls--;
    free(r->tool);
    json_decref(r->args);
    free(r->fail_msg);
    free(r);
}

/* Sends one message through the transport. msg is borrowed. */
static int send_json(ah_mcp_client_t *c, json_t *msg, ah_mcp_call_t *req, int flags)
{
    if (!msg)
        return -ENOMEM;
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s);
    int rc;
    if (n > c->max_message_bytes)
        rc = -E2BIG;
    else if (c->url)
        rc = ah_mcp_http_send(c, s, n, req, flags);
    else
        rc = ah_mcp_stdio_send(c, s, n);
    free(s);
    return rc;
}

/* Gives r an id, puts it in flight and sends it. params is stolen (may be NULL). */
static int send_request(ah_mcp_client_t *c, ah_mcp_call_t *r, const char *method, json_t *params)
{
    r->id = ++c->next_id;
    json_t *m =
        json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", (json_int_t)r->id, "method", method);
    if (m && params)
        json_object_set_new(m, "params", params);
    else
        json_decref(params);
    list_push(&c->inflight, r);
    int rc = send_json(c, m, r, 0);
    json_decref(m);
    if (rc < 0) {
        list_remove(r);
        r->id = 0;
    }
    return rc;
}

/* params is stolen (may be NULL). */
static int send_notification(ah_mcp_client_t *c, const char *method, json_t *params, int flags)
{
    json_t *m = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    if (m && params)
        json_object_set_new(m, "params", params);
    else
        json_decref(params);
    int rc = send_json(c, m, NULL, flags);
    json_decref(m);
    if (rc < 0)
        ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "could not send notification",
               AH_LF_STR("server", c->name), AH_LF_STR("method", method), AH_LF_INT("rc", rc),
               AH_LF_END);
    return rc;
}

/* Moves a call to the failing list; its timer delivers the failure from the loop. */
static void fail_soon(ah_mcp_call_t *r, int rc, const char *msg)
{
    ah_mcp_client_t *c = r->c;
    list_remove(r);
    if (r->post)
        ah_mcp_http_detach(c, r, true);
    r->id = 0;
    r->fail_rc = rc;
    free(r->fail_msg);
    r->fail_msg = strdup(msg);
    list_push(&c->failing, r);
    struct timeval zero = {0, 0};
    evtimer_add(r->timer, &zero);
}

/* Delivers a call's end: unlinks, runs the callback, frees. Loop callbacks only. */
static void call_finish(ah_mcp_call_t *r, int rc, bool is_error, const char *text, size_t n)
{
    ah_mcp_client_t *c = r->c;
    list_remove(r);
    if (r->post)
        ah_mcp_http_detach(c, r, false);
    event_del(r->timer);
    if (rc == 0)
        c->st.calls_ok++;
    else
        c->st.calls_failed++;
    ah_mcp_call_cb cb = r->cb;
    void *ud = r->ud;
    r->cb = NULL; /* a cancel of this handle from inside its own callback is ignored */
    cb(ud, rc, is_error, text ? text : "", text ? n : 0);
    req_free(r);
}

/* Tells the server we gave up on r (cancellation utility), and aborts its POST. */
static void cancel_remote(ah_mcp_client_t *c, ah_mcp_call_t *r, const char *reason)
{
    if (r->id > 0 && c->state == MCP_READY) {
        json_t *p = json_pack("{s:I, s:s}", "requestId", (json_int_t)r->id, "reason", reason);
        send_notification(c, "notifications/cancelled", p, 0);
    }
    if (r->post)
        ah_mcp_http_detach(c, r, true);
}

static void call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_mcp_call_t *r = arg;
    ah_mcp_client_t *c = r->c;
    ah_mcp_enter(c);
    if (r->fail_rc) {
        call_finish(r, r->fail_rc, false, r->fail_msg ? r->fail_msg : strerror(-r->fail_rc),
                    r->fail_msg ? strlen(r->fail_msg) : strlen(strerror(-r->fail_rc)));
    } else {
        bool sent = r->list == &c->inflight;
        if (sent)
            cancel_remote(c, r, "timeout");
        char m[512];
        fmt(m, sizeof(m), "MCP server \"%s\": tools/call \"%s\" got no answer within %g s%s",
            c->name, r->tool, c->timeout_s, sent ? "" : " (the server was not ready yet)");
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "tool call timed out", AH_LF_STR("server", c->name),
               AH_LF_STR("tool", r->tool), AH_LF_DBL("timeout_s", c->timeout_s), AH_LF_END);
        call_finish(r, -ETIMEDOUT, false, m, strlen(m));
    }
    ah_mcp_leave(c);
}

/* ---- connect waiters ---- */

static void waiters_finish(ah_mcp_client_t *c, int rc, const char *msg)
{
    if (!c->waiters)
        return;
    mcp_waiter_t **tail = &c->done_waiters;
    while (*tail)
        tail = &(*tail)->next;
    for (mcp_waiter_t *w = c->waiters; w; w = w->next) {
        w->rc = rc;
        w->msg = rc ? strdup(msg ? msg : "") : NULL;
    }
    *tail = c->waiters;
    c->waiters = NULL;
    event_active(c->kick, 0, 0);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_mcp_client_t *c = arg;
    ah_mcp_enter(c);
    while (c->done_waiters && !c->doomed) {
        mcp_waiter_t *w = c->done_waiters;
        c->done_waiters = w->next;
        w->cb(w->ud, w->rc, w->rc ? (w->msg ? w->msg : strerror(-w->rc)) : "");
        free(w->msg);
        free(w);
    }
    ah_mcp_leave(c);
}

static void waiters_free(mcp_waiter_t *w)
{
    while (w) {
        mcp_waiter_t *n = w->next;
        free(w->msg);
        free(w);
        w = n;
    }
}

/* ---- connection state machine ---- */

/* Fails whatever waits for the connection: connect waiters and unsent calls. */
static void abort_pending_connect(ah_mcp_client_t *c, int rc, const char *msg)
{
    waiters_finish(c, rc, msg);
    while (c->waiting.head)
        fail_soon(c->waiting.head, rc, msg);
}

static void drop_internal_requests(ah_mcp_client_t *c)
{
    ah_mcp_call_t *r = c->inflight.head;
    while (r) {
        ah_mcp_call_t *n = r->next;
        if (r->kind != MCP_REQ_CALL)
            req_free(r);
        r = n;
    }
    tools_free(c->new_tools, c->nnew);
    c->new_tools = NULL;
    c->nnew = 0;
    c->list_pages = 0;
    c->listing = false;
}

static void connect_failed(ah_mcp_client_t *c, int rc, const char *msg)
{
    ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server connect failed", AH_LF_STR("server", c->name),
           AH_LF_INT("rc", rc), AH_LF_STR("error", msg), AH_LF_END);
    evtimer_del(c->connect_timer);
    c->state = MCP_IDLE;
    drop_internal_requests(c);
    if (!c->url)
        ah_mcp_stdio_stop(c, false);
    c->consec_fail++;
    double backoff = BACKOFF_FIRST_S;
    for (unsigned i = 1; i < c->consec_fail && backoff < BACKOFF_MAX_S; i++)
        backoff *= 2;
    if (backoff > BACKOFF_MAX_S)
        backoff = BACKOFF_MAX_S;
    c->next_attempt_ns = ah_mono_ns() + (uint64_t)(backoff * 1e9);
    abort_pending_connect(c, rc, msg);
}

/* Sends the calls that waited for the connection. */
static void flush_waiting(ah_mcp_client_t *c)
{
    while (c->waiting.head && c->state == MCP_READY) {
        ah_mcp_call_t *r = c->waiting.head;
        list_remove(r);
        call_send(r);
    }
}

static void became_ready(ah_mcp_client_t *c)
{
    evtimer_del(c->connect_timer);
    c->state = MCP_READY;
    c->consec_fail = 0;
    ah_log(AH_LOG_INFO, AH_MCP_LOG, "MCP server ready", AH_LF_STR("server", c->name),
           AH_LF_STR("protocol", c->proto), AH_LF_INT("tools", c->ntools),
           AH_LF_INT("pid", ah_mcp_stdio_pid(c)), AH_LF_END);
    waiters_finish(c, 0, NULL);
    flush_waiting(c);
}

static void list_page(ah_mcp_client_t *c, const char *cursor);

static void list_failed(ah_mcp_client_t *c, int rc, const char *msg)
{
    if (c->state == MCP_CONNECTING) {
        connect_failed(c, rc, msg);
        return;
    }
    drop_internal_requests(c);
    evtimer_del(c->connect_timer);
    ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP tools/list failed", AH_LF_STR("server", c->name),
           AH_LF_STR("error", msg), AH_LF_END);
    waiters_finish(c, rc, msg);
}

static void list_start(ah_mcp_client_t *c)
{
    c->want_list = false;
    c->list_pages = 0;
    list_page(c, NULL);
}

static void list_page(ah_mcp_client_t *c, const char *cursor)
{
    c->listing = true;
    ah_mcp_call_t *r = req_new(c, MCP_REQ_LIST);
    int rc = -ENOMEM;
    if (r) {
        json_t *params = cursor ? json_pack("{s:s}", "cursor", cursor) : NULL;
        rc = send_request(c, r, "tools/list", params);
        if (rc == 0)
            return;
        req_free(r);
    }
    char m[256];
    list_failed(c, rc,
                fmt(m, sizeof(m), "MCP server \"%s\": could not send tools/list: %s", c->name,
                    strerror(-rc)));
}

static void after_initialized(ah_mcp_client_t *c)
{
    bool need = c->want_list || !c->ever_listed;
    if (need && c->server_has_tools) {
        list_start(c);
        return;
    }
    if (need) { /* no tools capability: an empty list */
        tools_free(c->tools, c->ntools);
        c->tools = NULL;
        c->ntools = 0;
        c->ever_listed = true;
        c->want_list = false;
    }
    became_ready(c);
}

/* Starts a connection attempt now (restart budget already checked). */
static void connect_now(ah_mcp_client_t *c)
{
    uint64_t now = ah_mono_ns();
    c->attempts[c->attempt_pos] = now;
    c->attempt_pos = (c->attempt_pos + 1) % c->max_restarts;
    c->st.connects++;
    c->gen++;
    c->state = MCP_CONNECTING;
    struct timeval tv = tv_of(c->init_timeout_s);
    evtimer_add(c->connect_timer, &tv);
    char m[1024];
    int rc;
    if (!c->url) {
        ah_buf_t err;
        ah_buf_init(&err, 900);
        rc = ah_mcp_stdio_start(c, &err);
        if (rc < 0) {
            fmt(m, sizeof(m), "%s", err.data ? err.data : strerror(-rc));
            ah_buf_free(&err);
            connect_failed(c, rc, m);
            return;
        }
        ah_buf_free(&err);
    } else {
        ah_mcp_http_reset_session(c);
    }
    ah_mcp_call_t *r = req_new(c, MCP_REQ_INIT);
    rc = -ENOMEM;
    if (r) {
        json_t *params =
            json_pack("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion", AH_MCP_PROTOCOL_VERSION,
                      "capabilities", "clientInfo", "name", "agenthub", "version", AH_VERSION);
        rc = params ? send_request(c, r, "initialize", params) : -ENOMEM;
        if (rc == 0)
            return;
        req_free(r);
    }
    connect_failed(c, rc,
                   fmt(m, sizeof(m), "MCP server \"%s\": could not send initialize: %s", c->name,
                       strerror(-rc)));
}

/* From IDLE: connect now, after the backoff, or refuse when restarting too often. */
static void connect_start(ah_mcp_client_t *c)
{
    if (c->state != MCP_IDLE)
        return;
    uint64_t now = ah_mono_ns();
    uint64_t window = (uint64_t)(c->restart_window_s * 1e9);
    uint64_t oldest = c->attempts[c->attempt_pos];
    if (oldest && now - oldest < window) {
        char m[512];
        fmt(m, sizeof(m),
            "MCP server \"%s\" was started %u times in the last %g s; not starting it again for "
            "%.1f s",
            c->name, c->max_restarts, c->restart_window_s, (double)(window - (now - oldest)) / 1e9);
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server restart limit reached",
               AH_LF_STR("server", c->name), AH_LF_INT("max_restarts", c->max_restarts), AH_LF_END);
        abort_pending_connect(c, -EAGAIN, m);
        return;
    }
    if (now < c->next_attempt_ns) {
        c->state = MCP_BACKOFF;
        struct timeval tv = tv_of((double)(c->next_attempt_ns - now) / 1e9);
        evtimer_add(c->connect_timer, &tv);
        return;
    }
    connect_now(c);
}

static void connect_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_mcp_client_t *c = arg;
    ah_mcp_enter(c);
    char m[256];
    if (c->state == MCP_BACKOFF) {
        c->state = MCP_IDLE;
        connect_now(c);
    } else if (c->state == MCP_CONNECTING) {
        connect_failed(c, -ETIMEDOUT,
                       fmt(m, sizeof(m),
                           "MCP server \"%s\" did not finish initialize%s within %g s", c->name,
                           c->listing ? " and tools/list" : "", c->init_timeout_s));
    } else if (c->state == MCP_READY && c->listing) {
        list_failed(c, -ETIMEDOUT,
                    fmt(m, sizeof(m), "MCP server \"%s\" did not answer tools/list within %g s",
                        c->name, c->init_timeout_s));
    }
    ah_mcp_leave(c);
}

/* ---- answers from the server ---- */

static bool version_supported(const char *v)
{
    for (size_t i = 0; k_versions[i]; i++)
        if (strcmp(v, k_versions[i]) == 0)
            return true;
    return false;
}

static void on_init_result(ah_mcp_client_t *c, ah_mcp_call_t *r, json_t *msg)
{
    req_free(r);
    char m[768], e[512];
    json_t *err = json_object_get(msg, "error");
    json_t *res = json_object_get(msg, "result");
    if (err || !json_is_object(res)) {
        connect_failed(c, -EPROTO,
                       fmt(m, sizeof(m), "MCP server \"%s\" refused initialize: %s", c->name,
                           err ? rpc_error_text(err, e, sizeof(e)) : "no result"));
        return;
    }
    const char *ver = json_string_value(json_object_get(res, "protocolVersion"));
    if (!ver || !version_supported(ver)) {
        connect_failed(c, -EPROTO,
                       fmt(m, sizeof(m),
                           "MCP server \"%s\" speaks protocol version \"%.40s\"; agenthub speaks "
                           "2025-11-25, 2025-06-18, 2025-03-26 and 2024-11-05",
                           c->name, ver ? ver : "(none)"));
        return;
    }
    fmt(c->proto, sizeof(c->proto), "%s", ver);
    json_t *caps = json_object_get(res, "capabilities");
    c->server_has_tools = json_is_object(json_object_get(caps, "tools"));
    json_t *info = json_object_get(res, "serverInfo");
    const char *sname = json_string_value(json_object_get(info, "name"));
    const char *sver = json_string_value(json_object_get(info, "version"));
    ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP initialize done", AH_LF_STR("server", c->name),
           AH_LF_STR("protocol", ver), AH_LF_STR("server_name", sname ? sname : ""),
           AH_LF_STR("server_version", sver ? sver : ""), AH_LF_END);
    /*
     * Over HTTP the tools/list waits for the initialized POST to be answered:
     * servers may register tools while handling that notification, and two
     * POSTs are not ordered the way one stdio stream is.
     */
    int rc =
        send_notification(c, "notifications/initialized", NULL, c->url ? MCP_POST_INITIALIZED : 0);
    if (!c->url || rc < 0)
        after_initialized(c);
}

void ah_mcp_core_initialized_sent(ah_mcp_client_t *c, uint64_t gen)
{
    if (c->state == MCP_CONNECTING && gen == c->gen && !c->listing && c->proto[0])
        after_initialized(c);
}

/* One entry of tools/list into c->new_tools; false when skipped. */
static bool add_tool(ah_mcp_client_t *c, json_t *t)
{
    const char *name = json_string_value(json_object_get(t, "name"));
    if (!name || !*name || strlen(name) > MAX_TOOL_NAME) {
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP tool without a valid name skipped",
               AH_LF_STR("server", c->name), AH_LF_END);
        return false;
    }
    if (c->nnew >= AH_MCP_MAX_TOOLS) {
        if (c->nnew == AH_MCP_MAX_TOOLS)
            ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server lists too many tools; extra ones ignored",
                   AH_LF_STR("server", c->name), AH_LF_INT("max", AH_MCP_MAX_TOOLS), AH_LF_END);
        return false;
    }
    ah_mcp_tool_t *v = realloc(c->new_tools, (c->nnew + 1) * sizeof(*v));
    if (!v)
        return false;
    c->new_tools = v;
    const char *desc = json_string_value(json_object_get(t, "description"));
    json_t *schema = json_object_get(t, "inputSchema");
    ah_mcp_tool_t *tool = &v[c->nnew];
    tool->name = strdup(name);
    tool->description = strdup(desc ? desc : "");
    tool->input_schema_json =
        json_is_object(schema) ? json_dumps(schema, JSON_COMPACT) : strdup("{\"type\":\"object\"}");
    if (!tool->name || !tool->description || !tool->input_schema_json) {
        free(tool->name);
        free(tool->description);
        free(tool->input_schema_json);
        return false;
    }
    c->nnew++;
    return true;
}

static void on_list_result(ah_mcp_client_t *c, ah_mcp_call_t *r, json_t *msg)
{
    req_free(r);
    char m[768], e[512];
    json_t *err = json_object_get(msg, "error");
    json_t *res = json_object_get(msg, "result");
    json_t *tools = json_object_get(res, "tools");
    if (err || !json_is_array(tools)) {
        list_failed(c, -EPROTO,
                    fmt(m, sizeof(m), "MCP server \"%s\": tools/list failed: %s", c->name,
                        err ? rpc_error_text(err, e, sizeof(e)) : "no tools array in the result"));
        return;
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (json_is_object(t))
            add_tool(c, t);
    }
    const char *cursor = json_string_value(json_object_get(res, "nextCursor"));
    if (cursor && *cursor) {
        if (++c->list_pages < MAX_LIST_PAGES) {
            list_page(c, cursor);
            return;
        }
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP tools/list has too many pages; rest ignored",
               AH_LF_STR("server", c->name), AH_LF_INT("pages", MAX_LIST_PAGES), AH_LF_END);
    }
    tools_free(c->tools, c->ntools);
    c->tools = c->new_tools;
    c->ntools = c->nnew;
    c->new_tools = NULL;
    c->nnew = 0;
    c->list_pages = 0;
    c->listing = false;
    c->ever_listed = true;
    c->tools_stale = false;
    if (c->state == MCP_CONNECTING) {
        became_ready(c);
    } else {
        evtimer_del(c->connect_timer);
        waiters_finish(c, 0, NULL);
    }
}

/* Appends a one-line JSON description of a non-text content item. */
static int describe_item(ah_buf_t *out, const char *type, json_t *item)
{
    json_t *d = json_pack("{s:s}", "type", type);
    if (!d)
        return -ENOMEM;
    json_t *src = item;
    if (strcmp(type, "resource") == 0 && json_is_object(json_object_get(item, "resource")))
        src = json_object_get(item, "resource");
    static const char *const keys[] = {"uri", "name", "mimeType", NULL};
    for (size_t k = 0; keys[k]; k++) {
        json_t *v = json_object_get(src, keys[k]);
        if (json_is_string(v))
            json_object_set(d, keys[k], v);
    }
    json_t *data = json_object_get(src, strcmp(type, "resource") == 0 ? "blob" : "data");
    if (json_is_string(data)) /* base64: 4 characters carry 3 bytes */
        json_object_set_new(d, "bytes",
                            json_integer((json_int_t)(json_string_length(data) / 4 * 3)));
    char *s = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (!s)
        return -ENOMEM;
    int rc = ah_buf_puts(out, s);
    free(s);
    return rc;
}

/* CallToolResult -> text (see ah_mcp_call_cb). */
static int flatten_result(json_t *res, ah_buf_t *out)
{
    json_t *content = json_object_get(res, "content");
    bool any = false;
    int rc = 0;
    size_t i;
    json_t *item;
    json_array_foreach(content, i, item)
    {
        if (!json_is_object(item))
            continue;
        if (any && (rc = ah_buf_putc(out, '\n')) < 0)
            return rc;
        any = true;
        const char *type = json_string_value(json_object_get(item, "type"));
        if (!type)
            type = "unknown";
        json_t *text = json_object_get(item, "text");
        json_t *res_text = json_object_get(json_object_get(item, "resource"), "text");
        if (strcmp(type, "text") == 0 && json_is_string(text))
            rc = ah_buf_append(out, json_string_value(text), json_string_length(text));
        else if (strcmp(type, "resource") == 0 && json_is_string(res_text))
            rc = ah_buf_append(out, json_string_value(res_text), json_string_length(res_text));
        else
            rc = describe_item(out, type, item);
        if (rc < 0)
            return rc;
    }
    json_t *sc = json_object_get(res, "structuredContent");
    if (!any && sc) {
        char *s = json_dumps(sc, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
            return -ENOMEM;
        rc = ah_buf_puts(out, s);
        free(s);
        if (rc < 0)
            return rc;
    }
    return ah_buf_reserve(out, 1); /* data is non-NULL and NUL-terminated even when empty */
}

static void on_call_result(ah_mcp_client_t *c, ah_mcp_call_t *r, json_t *msg)
{
    char m[768];
    json_t *err = json_object_get(msg, "error");
    json_t *res = json_object_get(msg, "result");
    if (err) {
        rpc_error_text(err, m, sizeof(m));
        call_finish(r, -EREMOTEIO, false, m, strlen(m));
        return;
    }
    if (!json_is_object(res)) {
        fmt(m, sizeof(m), "MCP server \"%s\" answered tools/call \"%s\" without a result", c->name,
            r->tool);
        call_finish(r, -EPROTO, false, m, strlen(m));
        return;
    }
    ah_buf_t out;
    ah_buf_init(&out, c->max_message_bytes + 4096);
    int rc = flatten_result(res, &out);
    if (rc < 0) {
        fmt(m, sizeof(m), "MCP server \"%s\": tools/call \"%s\": result too large to flatten",
            c->name, r->tool);
        call_finish(r, rc, false, m, strlen(m));
    } else {
        call_finish(r, 0, json_is_true(json_object_get(res, "isError")), out.data, out.len);
    }
    ah_buf_free(&out);
}

static void on_response(ah_mcp_client_t *c, json_t *msg, json_t *id)
{
    ah_mcp_call_t *r =
        json_is_integer(id) ? list_find_id(&c->inflight, json_integer_value(id)) : NULL;
    if (!r) { /* cancelled, timed out, or from a connection that is gone */
        ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP answer to no pending request dropped",
               AH_LF_STR("server", c->name), AH_LF_END);
        return;
    }
    list_remove(r);
    r->id = 0;
    if (r->post)
        ah_mcp_http_detach(c, r, false);
    switch (r->kind) {
    case MCP_REQ_INIT:
        on_init_result(c, r, msg);
        break;
    case MCP_REQ_LIST:
        on_list_result(c, r, msg);
        break;
    default:
        on_call_result(c, r, msg);
        break;
    }
}

/* Requests from the server: we answer ping and refuse the rest (we declare no capabilities). */
static void on_server_request(ah_mcp_client_t *c, const char *method, json_t *id)
{
    json_t *m;
    if (strcmp(method, "ping") == 0)
        m = json_pack("{s:s, s:O, s:{}}", "jsonrpc", "2.0", "id", id, "result");
    else
        m = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                      JSONRPC_NO_METHOD, "message", "Method not found");
    int rc = send_json(c, m, NULL, 0);
    json_decref(m);
    ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP server request answered", AH_LF_STR("server", c->name),
           AH_LF_STR("method", method), AH_LF_INT("rc", rc), AH_LF_END);
}

static void on_notification(ah_mcp_client_t *c, const char *method, json_t *msg)
{
    if (strcmp(method, "notifications/tools/list_changed") == 0) {
        c->tools_stale = true;
        ah_log(AH_LOG_INFO, AH_MCP_LOG, "MCP tool list changed", AH_LF_STR("server", c->name),
               AH_LF_END);
    } else if (strcmp(method, "notifications/message") == 0 && ah_log_enabled(AH_LOG_DEBUG)) {
        json_t *p = json_object_get(msg, "params");
        char *data = json_dumps(json_object_get(p, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
        const char *lvl = json_string_value(json_object_get(p, "level"));
        ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP server log", AH_LF_STR("server", c->name),
               AH_LF_STR("level", lvl ? lvl : ""), AH_LF_STR("data", data ? data : ""), AH_LF_END);
        free(data);
    }
    /* progress, cancelled, resources/..., prompts/...: not used by the tool runtime */
}

static void dispatch(ah_mcp_client_t *c, json_t *msg)
{
    if (!json_is_object(msg))
        return;
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    if (method && id && !json_is_null(id))
        on_server_request(c, method, id);
    else if (method)
        on_notification(c, method, msg);
    else if (id)
        on_response(c, msg, id);
}

void ah_mcp_core_message(ah_mcp_client_t *c, const char *p, size_t n)
{
    json_error_t je;
    json_t *m = json_loadb(p, n, 0, &je);
    if (!m) {
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server sent a message that is not JSON; ignored",
               AH_LF_STR("server", c->name), AH_LF_STR("error", je.text), AH_LF_END);
        return;
    }
    if (json_is_array(m)) { /* a JSON-RPC batch (2025-03-26) */
        size_t i;
        json_t *e;
        json_array_foreach(m, i, e)
        {
            if (c->doomed)
                break;
            dispatch(c, e);
        }
    } else {
        dispatch(c, m);
    }
    json_decref(m);
}

void ah_mcp_core_down(ah_mcp_client_t *c, int rc, const char *msg)
{
    c->st.exits++;
    if (c->state == MCP_CONNECTING) {
        connect_failed(c, rc, msg);
        return;
    }
    if (c->state != MCP_READY)
        return;
    ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server went away", AH_LF_STR("server", c->name),
           AH_LF_STR("error", msg), AH_LF_INT("in_flight", c->inflight.n), AH_LF_END);
    c->state = MCP_IDLE;
    if (c->listing) {
        evtimer_del(c->connect_timer);
        drop_internal_requests(c);
        waiters_finish(c, rc, msg);
    }
    while (c->inflight.head) {
        if (c->inflight.head->kind == MCP_REQ_CALL)
            fail_soon(c->inflight.head, rc, msg);
        else
            req_free(c->inflight.head);
    }
}

void ah_mcp_core_req_failed(ah_mcp_client_t *c, ah_mcp_call_t *req, int rc, const char *msg)
{
    list_remove(req);
    req->id = 0;
    if (req->kind == MCP_REQ_CALL) {
        fail_soon(req, rc, msg);
    } else if (req->kind == MCP_REQ_INIT) {
        req_free(req);
        connect_failed(c, rc, msg);
    } else {
        req_free(req);
        list_failed(c, rc, msg);
    }
}

void ah_mcp_core_session_lost(ah_mcp_client_t *c, ah_mcp_call_t *req, uint64_t session_gen)
{
    list_remove(req);
    req->id = 0;
    if (req->kind == MCP_REQ_LIST) {
        req_free(req);
        drop_internal_requests(c);
        c->want_list = true; /* list again on the new session; waiters keep waiting */
        if (c->state == MCP_READY)
            evtimer_del(c->connect_timer);
    } else if (req->kind == MCP_REQ_CALL) {
        if (req->retried) {
            char m[256];
            fail_soon(req, -ECONNRESET,
                      fmt(m, sizeof(m),
                          "MCP server \"%s\" lost the session again right after re-initialising",
                          c->name));
        } else {
            req->retried = true;
            list_push_front(&c->waiting, req);
        }
    } else {
        req_free(req);
    }
    if (session_gen == ah_mcp_http_session_gen(c) && c->state == MCP_READY) {
        c->st.session_reinits++;
        ah_log(AH_LOG_INFO, AH_MCP_LOG, "MCP session gone; re-initialising",
               AH_LF_STR("server", c->name), AH_LF_END);
        ah_mcp_http_reset_session(c);
        c->state = MCP_IDLE;
    }
    if (c->state == MCP_IDLE) {
        connect_start(c);
    } else if (c->state == MCP_READY) {
        /* sent on a session already replaced: the new one is up, go again */
        if (c->want_list && !c->listing && c->waiters) {
            struct timeval tv = tv_of(c->init_timeout_s);
            evtimer_add(c->connect_timer, &tv);
            list_start(c);
        }
        flush_waiting(c);
    }
}

/* ---- public API ---- */

int ah_mcp_client_new(ah_loop_t *loop, ah_http_client_t *http, const ah_mcp_server_opts_t *o,
                      ah_mcp_client_t **out)
{
    if (!loop || !o || !out)
        return -EINVAL;
    *out = NULL;
    bool has_url = o->url && *o->url;
    bool has_cmd = o->command && o->command[0] && *o->command[0];
    if (has_url == has_cmd)
        return -EINVAL;
    if (has_url &&
        (!http || (strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0)))
        return -EINVAL;
    for (size_t i = 0; o->env && o->env[i]; i++)
        if (!strchr(o->env[i], '=') || o->env[i][0] == '=')
            return -EINVAL;
    for (size_t i = 0; o->headers && o->headers[i]; i++)
        if (!strchr(o->headers[i], ':') || strpbrk(o->headers[i], "\r\n"))
            return -EINVAL;

    ah_mcp_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->base = ah_loop_base(loop);
    c->http = http;
    bool ok = true;
    c->name = strdup(o->name && *o->name ? o->name : has_url ? o->url : o->command[0]);
    c->url = has_url ? strdup(o->url) : NULL;
    c->headers = strv_dup(o->headers, &ok);
    c->command = has_cmd ? strv_dup(o->command, &ok) : NULL;
    c->env = strv_dup(o->env, &ok);
    c->timeout_s = o->timeout_s > 0 ? o->timeout_s : AH_MCP_DEFAULT_TIMEOUT_S;
    c->init_timeout_s = o->init_timeout_s > 0 ? o->init_timeout_s : AH_MCP_DEFAULT_INIT_TIMEOUT_S;
    c->max_message_bytes =
        o->max_message_bytes ? o->max_message_bytes : AH_MCP_DEFAULT_MAX_MESSAGE_BYTES;
    c->max_pending = o->max_pending ? o->max_pending : AH_MCP_DEFAULT_MAX_PENDING;
    c->max_restarts = o->max_restarts ? o->max_restarts : AH_MCP_DEFAULT_MAX_RESTARTS;
    c->restart_window_s =
        o->restart_window_s > 0 ? o->restart_window_s : AH_MCP_DEFAULT_RESTART_WINDOW_S;
    c->kill_grace_s = o->kill_grace_s > 0 ? o->kill_grace_s : AH_MCP_DEFAULT_KILL_GRACE_S;
    c->attempts = calloc(c->max_restarts, sizeof(*c->attempts));
    c->kick = event_new(c->base, -1, 0, kick_cb, c);
    c->connect_timer = evtimer_new(c->base, connect_timer_cb, c);
    if (!ok || !c->name || (has_url && !c->url) || !c->attempts || !c->kick || !c->connect_timer) {
        ah_mcp_client_free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

int ah_mcp_connect(ah_mcp_client_t *c, ah_mcp_connect_cb cb, void *ud)
{
    if (!c || !cb || c->doomed)
        return -EINVAL;
    mcp_waiter_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->ud = ud;
    mcp_waiter_t **tail = &c->waiters;
    while (*tail)
        tail = &(*tail)->next;
    *tail = w;
    switch (c->state) {
    case MCP_IDLE:
        c->want_list = true;
        connect_start(c);
        break;
    case MCP_BACKOFF:
    case MCP_CONNECTING:
        if (!c->listing)
            c->want_list = true;
        break;
    default: /* READY: refresh the list */
        if (c->listing)
            break;
        if (!c->server_has_tools) {
            waiters_finish(c, 0, NULL);
            break;
        }
        struct timeval tv = tv_of(c->init_timeout_s);
        evtimer_add(c->connect_timer, &tv);
        list_start(c);
        break;
    }
    return 0;
}

const ah_mcp_tool_t *ah_mcp_tools(const ah_mcp_client_t *c, size_t *n)
{
    *n = c ? c->ntools : 0;
    return c ? c->tools : NULL;
}

static void call_send(ah_mcp_call_t *r)
{
    ah_mcp_client_t *c = r->c;
    json_t *params = json_pack("{s:s, s:O}", "name", r->tool, "arguments", r->args);
    int rc = params ? send_request(c, r, "tools/call", params) : -ENOMEM;
    if (rc < 0) {
        char m[256];
        fail_soon(r, rc,
                  fmt(m, sizeof(m), "MCP server \"%s\": could not send tools/call \"%s\": %s",
                      c->name, r->tool,
                      rc == -ENOBUFS ? "the server is not reading its input" : strerror(-rc)));
    }
}

int ah_mcp_call(ah_mcp_client_t *c, const char *tool, const char *args_json, ah_mcp_call_cb cb,
                void *ud, ah_mcp_call_t **out)
{
    if (out)
        *out = NULL;
    if (!c || !tool || !*tool || !cb || c->doomed)
        return -EINVAL;
    size_t alen = args_json ? strlen(args_json) : 0;
    if (alen + strlen(tool) > c->max_message_bytes)
        return -E2BIG;
    if (c->ncalls >= c->max_pending)
        return -EBUSY;
    json_t *args;
    if (alen == 0) {
        args = json_object();
    } else {
        json_error_t je;
        args = json_loadb(args_json, alen, 0, &je);
        if (!json_is_object(args)) {
            json_decref(args);
            return -EINVAL;
        }
    }
    if (!args)
        return -ENOMEM;
    ah_mcp_call_t *r = req_new(c, MCP_REQ_CALL);
    if (!r) {
        json_decref(args);
        return -ENOMEM;
    }
    r->args = args;
    r->tool = strdup(tool);
    if (!r->tool) {
        req_free(r);
        return -ENOMEM;
    }
    r->cb = cb;
    r->ud = ud;
    struct timeval tv = tv_of(c->timeout_s);
    evtimer_add(r->timer, &tv);
    if (c->state == MCP_READY) {
        call_send(r);
    } else {
        list_push(&c->waiting, r);
        connect_start(c);
    }
    if (out)
        *out = r;
    return 0;
}

void ah_mcp_call_cancel(ah_mcp_call_t *r)
{
    if (!r || !r->cb) /* NULL, or inside its own callback */
        return;
    ah_mcp_client_t *c = r->c;
    if (r->list == &c->inflight)
        cancel_remote(c, r, "cancelled by the client");
    req_free(r);
}

void ah_mcp_client_stats(const ah_mcp_client_t *c, ah_mcp_client_stats_t *st)
{
    *st = c->st;
    st->pid = ah_mcp_stdio_pid(c);
    st->pending = c->ncalls;
    st->ready = c->state == MCP_READY;
    st->tools_stale = c->tools_stale;
}

const char *ah_mcp_session_id(const ah_mcp_client_t *c)
{
    return c->url ? ah_mcp_http_session(c) : NULL;
}

const char *ah_mcp_protocol_version(const ah_mcp_client_t *c)
{
    return c->proto[0] ? c->proto : NULL;
}

static void destroy(ah_mcp_client_t *c)
{
    mcp_list_t *lists[] = {&c->waiting, &c->inflight, &c->failing};
    for (size_t i = 0; i < 3; i++)
        while (lists[i]->head)
            req_free(lists[i]->head);
    waiters_free(c->waiters);
    waiters_free(c->done_waiters);
    if (c->url)
        ah_mcp_http_stop(c);
    else
        ah_mcp_stdio_stop(c, true);
    if (c->kick)
        event_free(c->kick);
    if (c->connect_timer)
        event_free(c->connect_timer);
    tools_free(c->tools, c->ntools);
    tools_free(c->new_tools, c->nnew);
    free(c->attempts);
    free(c->name);
    free(c->url);
    strv_free(c->headers);
    strv_free(c->command);
    strv_free(c->env);
    free(c);
}

void ah_mcp_leave(ah_mcp_client_t *c)
{
    if (--c->depth == 0 && c->doomed)
        destroy(c);
}

void ah_mcp_client_free(ah_mcp_client_t *c)
{
    if (!c || c->doomed)
        return;
    c->doomed = true;
    if (c->depth == 0)
        destroy(c);
}

bool ah_mcp_tool_allowed(const char *const *allow, size_t n, const char *name)
{
    if (!name)
        return false;
    if (!allow || n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        if (!allow[i])
            continue;
        if (strcmp(allow[i], name) == 0 || fnmatch(allow[i], name, 0) == 0)
            return true;
    }
    return false;
}
