/*
 * mcp_http.c - the MCP Streamable HTTP transport (spec 2025-06-18 and
 * 2025-03-26, basic/transports): every JSON-RPC message we send is one POST
 * to the endpoint with Accept: application/json, text/event-stream.
 *
 *  - A request's POST answers with application/json (the response, or a
 *    batch) or with text/event-stream: SSE events whose data are JSON-RPC
 *    messages - notifications and server requests (ping is answered with a
 *    POST of our response) and, at last, the response to our request.
 *  - Notifications and responses we POST get 202 Accepted.
 *  - The Mcp-Session-Id the server gives in the initialize answer goes on
 *    every later request; MCP-Protocol-Version too once negotiated (only for
 *    2025-06-18 and later, the revision that introduced the header).
 *  - 404 to a request that carried a session id means the session is gone:
 *    the core re-initialises and re-sends the request once. Servers built
 *    with some SDK examples answer 400 "No valid session ID" instead (the
 *    reference "everything" server does); a 400 whose body mentions the
 *    session is treated the same way.
 *  - At free, the session is ended with DELETE (fire and forget).
 *
 * We do not open the optional GET stream for unsolicited server messages:
 * the tool runtime needs nothing the server could say there (list_changed
 * also arrives on POST streams of servers that relate it to a request). SSE
 * resumption (Last-Event-ID) is not used either: a stream that ends before
 * the response fails that request.
 *
 * Lifetimes: a post belongs to this file; the request it carries points at
 * it (req->post) until the response arrives, the request is cancelled or the
 * POST ends. A post is freed when its HTTP call ends or is cancelled, but
 * never while one of its own callbacks is on the stack (busy).
 */
#include "agents/mcp_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "http/sse_parser.h"

#define CONNECT_TIMEOUT_S 10.0
#define NOTIFY_TIMEOUT_S  30.0 /* a POST that carries no request of ours */
#define DELETE_TIMEOUT_S  5.0
#define MAX_SESSION_ID    512
#define MAX_HEADERS       64
#define LINGER_S          10.0 /* an answered SSE stream the server keeps open is cut after this */

typedef struct mcp_post {
    ah_mcp_client_t *c; /* NULL once the client let go of it (free) */
    ah_http_call_t *call;
    struct ah_mcp_call *req;
    struct event *linger; /* armed once the request was answered on an SSE stream */
    struct mcp_post *prev, *next;
    bool linked;
    ah_sse_parser_t sse;
    ah_buf_t body;
    uint64_t session_gen; /* session it was sent with */
    uint64_t conn_gen;    /* connection attempt it belongs to */
    int64_t req_id;
    int status;
    int flags;
    bool is_init, had_session, sse_mode;
    int busy;
    bool dead; /* cancelled while busy: free when busy drops to 0 */
} mcp_post_t;

struct mcp_http {
    mcp_post_t *posts;
    size_t nposts;
    char *session; /* Mcp-Session-Id, NULL when none */
    uint64_t session_gen;
};

static mcp_http_t *ht_get(ah_mcp_client_t *c)
{
    if (!c->ht)
        c->ht = calloc(1, sizeof(*c->ht));
    return c->ht;
}

static void post_unlink(mcp_post_t *po)
{
    mcp_http_t *ht = po->c ? po->c->ht : NULL;
    if (!po->linked)
        return;
    if (po->prev)
        po->prev->next = po->next;
    else if (ht)
        ht->posts = po->next;
    if (po->next)
        po->next->prev = po->prev;
    if (ht)
        ht->nposts--;
    po->prev = po->next = NULL;
    po->linked = false;
}

static void post_free(mcp_post_t *po)
{
    post_unlink(po);
    if (po->linger)
        event_free(po->linger);
    ah_sse_parser_free(&po->sse);
    ah_buf_free(&po->body);
    free(po);
}

/* Aborts the HTTP call (no callbacks after) and frees the post unless it is busy. */
static void post_abort(mcp_post_t *po)
{
    if (po->req) {
        po->req->post = NULL;
        po->req = NULL;
    }
    if (po->call) {
        ah_http_call_cancel(po->call);
        po->call = NULL;
    }
    post_unlink(po);
    po->dead = true;
    if (po->linger)
        event_del(po->linger);
    if (!po->busy)
        post_free(po);
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_post_t *po = arg;
    if (!po->dead && !po->busy) /* spec: the server SHOULD close after the response */
        post_abort(po);
}

/* The body is an error message for people: one line, bounded. */
static void body_snippet(const mcp_post_t *po, char *out, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < po->body.len && k + 1 < n; i++) {
        unsigned char ch = (unsigned char)po->body.data[i];
        out[k++] = (char)(ch < 0x20 || ch == 0x7f ? ' ' : ch);
    }
    out[k] = '\0';
}

static void on_headers(ah_http_call_t *call, int status, void *ud)
{
    mcp_post_t *po = ud;
    po->status = status;
    ah_mcp_client_t *c = po->c;
    if (!c || po->dead)
        return;
    if (po->is_init && status / 100 == 2) {
        const char *sid = ah_http_call_header(call, "mcp-session-id");
        mcp_http_t *ht = c->ht;
        bool ok = sid && *sid && strlen(sid) <= MAX_SESSION_ID;
        /* spec: visible ASCII only (0x21-0x7E) */
        for (const char *p = sid; ok && *p; p++)
            ok = *p >= 0x21 && *p <= 0x7e;
        if (sid && !ok)
            ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server sent an invalid Mcp-Session-Id; ignored",
                   AH_LF_STR("server", c->name), AH_LF_END);
        if (ok && ht && po->session_gen == ht->session_gen) {
            free(ht->session);
            ht->session = strdup(sid);
        }
    }
    const char *ct = ah_http_call_header(call, "content-type");
    po->sse_mode = status / 100 == 2 && ct && strncasecmp(ct, "text/event-stream", 17) == 0;
}

static int on_sse_event(void *ud, const char *event, const char *data, size_t n, const char *id)
{
    (void)id;
    mcp_post_t *po = ud;
    ah_mcp_client_t *c = po->c;
    if (po->dead || !c || c->doomed)
        return 1;
    if (strcmp(event, "message") != 0 || n == 0)
        return 0; /* other event types carry nothing for us (spec: messages use "message") */
    ah_mcp_core_message(c, data, n);
    return po->dead || c->doomed ? 1 : 0;
}

/* The message-size bound was hit: the request fails with -E2BIG and the POST is dropped. */
static void too_big(mcp_post_t *po)
{
    ah_mcp_client_t *c = po->c;
    struct ah_mcp_call *req = po->req;
    if (req) {
        char m[256];
        snprintf(m, sizeof(m),
                 "MCP server \"%s\" sent a message over %zu bytes (max_message_bytes)", c->name,
                 c->max_message_bytes);
        req->post = NULL;
        po->req = NULL;
        ah_mcp_core_req_failed(c, req, -E2BIG, m);
    }
    if (!po->dead)
        post_abort(po);
}

static void on_data(ah_http_call_t *call, const char *p, size_t n, void *ud)
{
    (void)call;
    mcp_post_t *po = ud;
    ah_mcp_client_t *c = po->c;
    if (!c || po->dead)
        return;
    ah_mcp_enter(c);
    po->busy++;
    if (po->sse_mode) {
        int rc = ah_sse_parser_feed(&po->sse, p, n, on_sse_event, po);
        if (rc == -E2BIG && !po->dead && !c->doomed)
            too_big(po);
        else if (rc < 0 && !po->dead && !c->doomed)
            post_abort(po); /* -ENOMEM; the request fails when its deadline passes */
    } else if (ah_buf_append(&po->body, p, n) < 0 && !po->dead) {
        too_big(po);
    }
    ah_mcp_leave(c); /* may free the client, which aborts this post (busy: kept) */
    if (--po->busy == 0 && po->dead)
        post_free(po);
}

/* Why a request's POST ended without its response. */
static void post_ended_without_answer(mcp_post_t *po, int rc, ah_http_call_t *call)
{
    ah_mcp_client_t *c = po->c;
    struct ah_mcp_call *req = po->req;
    req->post = NULL;
    po->req = NULL;
    char m[768], snip[240];
    body_snippet(po, snip, sizeof(snip));
    bool session_gone =
        po->had_session &&
        (po->status == 404 ||
         (po->status == 400 && strcasestr(po->body.data ? po->body.data : "", "session") != NULL));
    if (rc == 0 && session_gone) {
        ah_mcp_core_session_lost(c, req, po->session_gen);
        return;
    }
    int err;
    if (rc < 0) {
        const char *detail = ah_http_call_error(call);
        snprintf(m, sizeof(m), "MCP server \"%s\" (%s): %s%s%s", c->name, c->url, strerror(-rc),
                 detail && *detail ? ": " : "", detail ? detail : "");
        err = rc;
    } else if (po->status / 100 != 2) {
        snprintf(m, sizeof(m), "MCP server \"%s\" answered HTTP %d%s%s", c->name, po->status,
                 snip[0] ? ": " : "", snip);
        err = po->status == 401 || po->status == 403 ? -EACCES : po->status >= 500 ? -EIO : -EPROTO;
    } else {
        snprintf(m, sizeof(m),
                 "MCP server \"%s\" ended its answer to request %lld without a response", c->name,
                 (long long)po->req_id);
        err = -EPROTO;
    }
    ah_mcp_core_req_failed(c, req, err, m);
}

static void on_done(ah_http_call_t *call, int rc, void *ud)
{
    mcp_post_t *po = ud;
    ah_mcp_client_t *c = po->c;
    po->call = NULL; /* curl frees it when we return */
    if (!c || po->dead) {
        if (!po->busy)
            post_free(po);
        return;
    }
    ah_mcp_enter(c);
    po->busy++;
    if (rc == 0 && po->status / 100 == 2 && !po->sse_mode && po->body.len) {
        const char *b = po->body.data;
        size_t n = po->body.len;
        while (n && isspace((unsigned char)*b)) {
            b++;
            n--;
        }
        if (n)
            ah_mcp_core_message(c, b, n);
    }
    if (!po->dead && !c->doomed && (po->flags & MCP_POST_INITIALIZED))
        ah_mcp_core_initialized_sent(c, po->conn_gen);
    if (!po->dead && !c->doomed && po->req) {
        post_ended_without_answer(po, rc, call);
    } else if (!po->req && (rc < 0 || po->status / 100 != 2)) {
        ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP notification POST failed",
               AH_LF_STR("server", c->name), AH_LF_INT("rc", rc), AH_LF_INT("status", po->status),
               AH_LF_END);
    }
    ah_mcp_leave(c);
    po->dead = true;
    if (--po->busy == 0)
        post_free(po);
}

/* Header list: ours, the session ones, then the configured ones. */
static size_t build_headers(const ah_mcp_client_t *c, const mcp_http_t *ht, bool with_proto,
                            const char **h, char *sid_line, size_t sid_n, char *ver_line,
                            size_t ver_n)
{
    size_t k = 0;
    if (ht && ht->session) {
        snprintf(sid_line, sid_n, "Mcp-Session-Id: %s", ht->session);
        h[k++] = sid_line;
    }
    /* the header exists from 2025-06-18 on; dates compare as strings */
    if (with_proto && c->proto[0] && strcmp(c->proto, "2025-06-18") >= 0) {
        snprintf(ver_line, ver_n, "MCP-Protocol-Version: %s", c->proto);
        h[k++] = ver_line;
    }
    for (size_t i = 0; c->headers && c->headers[i] && k < MAX_HEADERS; i++)
        h[k++] = c->headers[i];
    h[k] = NULL;
    return k;
}

int ah_mcp_http_send(ah_mcp_client_t *c, const char *p, size_t n, struct ah_mcp_call *req,
                     int flags)
{
    mcp_http_t *ht = ht_get(c);
    if (!ht)
        return -ENOMEM;
    /* our answers to server requests are bounded too: a server flooding pings gets no more */
    if (!req && ht->nposts >= 2 * c->max_pending + 16)
        return -EBUSY;
    mcp_post_t *po = calloc(1, sizeof(*po));
    if (!po)
        return -ENOMEM;
    po->c = c;
    po->req = req;
    po->req_id = req ? req->id : 0;
    po->flags = flags;
    po->is_init = req && req->kind == MCP_REQ_INIT;
    po->session_gen = ht->session_gen;
    po->conn_gen = c->gen;
    po->had_session = ht->session != NULL;
    ah_buf_init(&po->body, c->max_message_bytes);
    ah_sse_parser_init(&po->sse, c->max_message_bytes);

    const char *h[MAX_HEADERS + 8];
    char sid[MAX_SESSION_ID + 32], ver[64];
    size_t k = 0;
    h[k++] = "Content-Type: application/json";
    h[k++] = "Accept: application/json, text/event-stream";
    build_headers(c, ht, !po->is_init, h + k, sid, sizeof(sid), ver, sizeof(ver));

    size_t stream_cap = c->max_message_bytes * 16;
    ah_http_call_opts_t o = {
        .method = "POST",
        .url = c->url,
        .headers = h,
        .body = p,
        .body_len = n,
        .connect_timeout_s = CONNECT_TIMEOUT_S,
        .total_timeout_s = req ? 0 : NOTIFY_TIMEOUT_S, /* a request has its own deadline */
        .max_response_bytes = stream_cap < (64u << 20) ? (64u << 20) : stream_cap,
        .stream = true,
        .on_headers = on_headers,
        .on_data = on_data,
        .on_done = on_done,
        .ud = po,
    };
    int rc = ah_http_call_start(c->http, &o, &po->call);
    if (rc < 0) {
        post_free(po);
        return rc;
    }
    if (req)
        req->post = po;
    po->next = ht->posts;
    if (ht->posts)
        ht->posts->prev = po;
    ht->posts = po;
    ht->nposts++;
    po->linked = true;
    return 0;
}

void ah_mcp_http_detach(ah_mcp_client_t *c, struct ah_mcp_call *req, bool abort)
{
    mcp_post_t *po = req->post;
    if (!po)
        return;
    req->post = NULL;
    po->req = NULL;
    if (po->dead || !po->call)
        return;
    if (abort) {
        post_abort(po);
    } else if (po->sse_mode) {
        /* answered: what else the stream carries is optional; do not hold it forever */
        if (!po->linger)
            po->linger = evtimer_new(c->base, linger_cb, po);
        struct timeval tv = {(time_t)LINGER_S, 0};
        if (po->linger)
            evtimer_add(po->linger, &tv);
    }
}

void ah_mcp_http_reset_session(ah_mcp_client_t *c)
{
    mcp_http_t *ht = ht_get(c);
    if (!ht)
        return;
    free(ht->session);
    ht->session = NULL;
    ht->session_gen++;
}

uint64_t ah_mcp_http_session_gen(const ah_mcp_client_t *c)
{
    return c->ht ? c->ht->session_gen : 0;
}

const char *ah_mcp_http_session(const ah_mcp_client_t *c)
{
    return c->ht ? c->ht->session : NULL;
}

static void delete_done(ah_http_call_t *call, int rc, void *ud)
{
    (void)call;
    (void)rc;
    (void)ud;
}

void ah_mcp_http_stop(ah_mcp_client_t *c)
{
    mcp_http_t *ht = c->ht;
    if (!ht)
        return;
    while (ht->posts) {
        mcp_post_t *po = ht->posts;
        post_unlink(po);
        if (po->req) {
            po->req->post = NULL;
            po->req = NULL;
        }
        if (po->call) {
            ah_http_call_cancel(po->call);
            po->call = NULL;
        }
        po->c = NULL;
        po->dead = true;
        if (!po->busy)
            post_free(po);
    }
    if (ht->session && c->http) {
        /* spec: a client that no longer needs the session SHOULD DELETE it */
        const char *h[MAX_HEADERS + 4];
        char sid[MAX_SESSION_ID + 32], ver[64];
        build_headers(c, ht, true, h, sid, sizeof(sid), ver, sizeof(ver));
        ah_http_call_opts_t o = {
            .method = "DELETE",
            .url = c->url,
            .headers = h,
            .connect_timeout_s = CONNECT_TIMEOUT_S,
            .total_timeout_s = DELETE_TIMEOUT_S,
            .max_response_bytes = 65536,
            .on_done = delete_done,
        };
        if (ah_http_call_start(c->http, &o, NULL) < 0)
            ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP session DELETE not sent",
                   AH_LF_STR("server", c->name), AH_LF_END);
    }
    free(ht->session);
    free(ht);
    c->ht = NULL;
}
