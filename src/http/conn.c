/*
 * conn.c - one client connection: read, parse, enforce limits, dispatch,
 * write, keep-alive, timeouts. See server.h for the request life cycle.
 *
 * Memory safety rule: a conn is reference counted. The open socket holds one
 * reference, a request inside its handler holds one, and every libevent
 * callback holds one while it runs; the struct is freed when the count drops
 * to zero, so a callback may close the connection and still touch it safely.
 */
#include "http/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"

#define READ_CHUNK 16384

static void process_input(conn_t *c);
static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

static void conn_ref(conn_t *c)
{
    c->refs++;
}

/* Connections kept per worker for reuse: allocating and freeing ~22 KB per
 * connection fragments the heap under connection churn (RSS creeps up). */
#define CONN_CACHE_MAX 64
#define KEEP_BUF_MAX   (64u * 1024)

static void conn_destroy(conn_t *c)
{
    ah_buf_free(&c->in);
    ah_buf_free(&c->out);
    ah_buf_free(&c->req.body);
    ah_arena_free(&c->req.arena);
    free(c);
}

void ah_http_conn_unref(conn_t *c)
{
    if (--c->refs > 0)
        return;
    worker_t *w = c->w;
    if (w->n_free < CONN_CACHE_MAX && !w->draining) {
        /* Keep it, with buffers of a normal size, for the next accept. */
        /* The I/O buffers go back to malloc (uniform sizes it reuses well); the struct, its
         * arena block and body buffer stay. */
        ah_buf_free(&c->in);
        ah_buf_free(&c->out);
        if (c->req.body.cap > KEEP_BUF_MAX)
            ah_buf_free(&c->req.body);
        ah_buf_reset(&c->in);
        ah_buf_reset(&c->out);
        ah_buf_reset(&c->req.body);
        ah_arena_reset(&c->req.arena);
        c->next = w->free_conns;
        w->free_conns = c;
        w->n_free++;
    } else {
        conn_destroy(c);
    }
    ah_http_worker_conn_gone(w);
}

void ah_http_conn_free_cache(worker_t *w)
{
    while (w->free_conns) {
        conn_t *c = w->free_conns;
        w->free_conns = c->next;
        conn_destroy(c);
    }
    w->n_free = 0;
}

static void set_deadline(conn_t *c, enum deadline_kind kind, double secs)
{
    c->dl_kind = kind;
    c->deadline_ns = secs > 0 ? ah_mono_ns() + (uint64_t)(secs * 1e9) : 0;
}

void ah_http_conn_accept(worker_t *w, int fd, const struct sockaddr *sa, socklen_t slen)
{
    const ah_http_server_opts_t *o = &w->srv->o;
    conn_t *c = w->free_conns;
    if (c) {
        w->free_conns = c->next;
        w->n_free--;
        /* Keep the buffers and the arena; clear everything else. */
        ah_buf_t in = c->in, out = c->out, body = c->req.body;
        ah_arena_t arena = c->req.arena;
        memset(c, 0, sizeof(*c));
        c->in = in;
        c->out = out;
        c->req.body = body;
        c->req.arena = arena;
    } else {
        c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        ah_buf_init(&c->in, 0);
        ah_buf_init(&c->out, 0);
        ah_buf_init(&c->req.body, o->max_body_bytes);
        ah_arena_init(&c->req.arena, 4096, o->arena_cap);
    }
    c->w = w;
    c->fd = fd;
    c->refs = 1; /* the open socket */
    c->state = C_HEAD;
    c->req.conn = c;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
        port = ntohs(in4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    }
    (void)slen;
    snprintf(c->remote, sizeof(c->remote), "%s:%d", ip, port);
    struct event_base *base = ah_loop_base(w->loop);
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(base, fd, EV_WRITE, on_write, c);
    if (!c->rev || !c->wev || event_add(c->rev, NULL) != 0) {
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        close(fd);
        c->fd = -1;
        c->state = C_CLOSED;
        c->rev = c->wev = NULL;
        w->n_conns++; /* balanced by conn_gone in unref */
        atomic_fetch_add(&w->srv->total_conns, 1);
        ah_http_conn_unref(c);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    atomic_store_explicit(&w->stat_conns, w->n_conns, memory_order_relaxed);
    set_deadline(c, DL_HEAD, o->header_timeout_s);
}

void ah_http_conn_close(conn_t *c)
{
    if (c->state == C_CLOSED)
        return;
    worker_t *w = c->w;
    ah_http_req_t *r = &c->req;
    bool in_handler = r->active && r->handler_owned && !r->done;
    if (r->active && !in_handler && !r->handler_owned) {
        /* A server-generated reply that will never finish writing. */
        r->active = false;
        atomic_fetch_sub_explicit(&w->stat_in_flight, 1, memory_order_relaxed);
        ah_http_req_reset(r);
    }
    c->state = C_CLOSED;
    event_free(c->rev);
    event_free(c->wev);
    c->rev = c->wev = NULL;
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (in_handler && r->abort_cb) {
        void (*cb)(void *) = r->abort_cb;
        r->abort_cb = NULL;
        cb(r->abort_ud);
    }
    ah_http_conn_unref(c); /* the socket's reference */
}

void ah_http_conn_flush(conn_t *c)
{
    if (c->state == C_CLOSED)
        return;
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->write_armed) {
                event_add(c->wev, NULL);
                c->write_armed = true;
            }
            if (c->dl_kind != DL_WRITE)
                set_deadline(c, DL_WRITE, c->w->srv->o.idle_timeout_s);
            return;
        }
        ah_http_conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    ah_buf_reset(&c->out);
    c->out_off = 0;
    if (c->dl_kind == DL_WRITE)
        c->dl_kind = DL_NONE;
    ah_http_req_t *r = &c->req;
    if (r->active && r->done) {
        r->active = false;
        atomic_fetch_sub_explicit(&c->w->stat_in_flight, 1, memory_order_relaxed);
        ah_http_req_reset(r);
        if (c->close_after || c->w->draining) {
            ah_http_conn_close(c);
            return;
        }
        c->state = C_HEAD;
        c->saw_bytes = false;
        set_deadline(c, DL_IDLE, c->w->srv->o.idle_timeout_s);
        if (!c->in_process && c->in.len)
            process_input(c); /* a pipelined request is already here */
    } else if (r->active && r->drain_cb) {
        void (*cb)(void *) = r->drain_cb;
        r->drain_cb = NULL;
        cb(r->drain_ud);
    }
}

/* The handler made its terminal call; the reply bytes are in c->out. */
void ah_http_conn_request_done(conn_t *c)
{
    conn_ref(c);
    c->req.handler_owned = false;
    if (c->state == C_CLOSED) {
        /* Client left earlier: nothing to send, only the handler's reference to drop. */
        ah_http_req_t *r = &c->req;
        r->active = false;
        atomic_fetch_sub_explicit(&c->w->stat_in_flight, 1, memory_order_relaxed);
        ah_http_req_reset(r);
        ah_http_conn_unref(c); /* the handler's reference */
        ah_http_conn_unref(c);
        return;
    }
    ah_http_conn_unref(c); /* the handler's reference; the socket still holds one */
    ah_http_conn_flush(c);
    ah_http_conn_unref(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)fd;
    (void)what;
    c->write_armed = false;
    conn_ref(c);
    ah_http_conn_flush(c);
    ah_http_conn_unref(c);
}

/* Starts handling a request whose head (head_len bytes at the front of c->in) is complete. */
static int begin_request(conn_t *c, size_t head_len)
{
    worker_t *w = c->w;
    const ah_http_server_opts_t *o = &w->srv->o;
    ah_http_req_t *r = &c->req;
    r->active = true;
    r->done = false;
    r->start_ns = ah_mono_ns();
    atomic_fetch_add_explicit(&w->stat_in_flight, 1, memory_order_relaxed);

    char *head = ah_arena_strndup(&r->arena, c->in.data, head_len);
    ah_http_header_t *hdrs =
        ah_arena_alloc(&r->arena, sizeof(ah_http_header_t) * (size_t)o->max_headers);
    ah_buf_consume(&c->in, head_len);
    if (!head || !hdrs) {
        ah_http_write_error(c, r, 503, "overloaded", "out of memory", true);
        return -1;
    }
    r->head.headers = hdrs;
    int rc = ah_http_parse_head(head, head_len, &r->head, (size_t)o->max_headers);

    size_t idlen = 0;
    const char *xid = rc == 0 ? ah_http_head_get(&r->head, "x-request-id", &idlen) : NULL;
    bool id_ok = xid && idlen > 0 && idlen < 64;
    for (size_t i = 0; id_ok && i < idlen; i++) {
        char ch = xid[i];
        id_ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                ch == '-' || ch == '_' || ch == '.' || ch == ':';
    }
    if (id_ok) {
        memcpy(r->id, xid, idlen);
        r->id[idlen] = '\0';
    } else {
        ah_http_worker_gen_id(w, r->id, sizeof(r->id));
    }
    if (rc) {
        const char *msg = "malformed HTTP request";
        const char *code = "bad_request";
        if (rc == AH_HTTP_PARSE_HEADERS_BIG) {
            msg = "too many request headers (limit server.max_headers)";
            code = "headers_too_large";
        } else if (rc == AH_HTTP_PARSE_NOT_IMPL) {
            msg = "method or transfer coding not implemented";
            code = "not_implemented";
        } else if (rc == AH_HTTP_PARSE_VERSION) {
            msg = "HTTP version not supported (use HTTP/1.1)";
            code = "http_version_not_supported";
        }
        ah_http_write_error(c, r, -rc, code, msg, true);
        return -1;
    }
    if (!r->head.keep_alive)
        c->close_after = true;
    if (r->head.content_length > 0 && (uint64_t)r->head.content_length > o->max_body_bytes) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "request body of %lld bytes is larger than the limit of %zu bytes "
                 "(server.max_body_bytes)",
                 (long long)r->head.content_length, o->max_body_bytes);
        ah_http_write_error(c, r, 413, "body_too_large", msg, true);
        return -1;
    }
    if (r->head.expect_continue && (r->head.content_length > 0 || r->head.chunked) &&
        r->head.minor == 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ah_buf_append(&c->out, cont, sizeof(cont) - 1);
        ah_http_conn_flush(c);
        if (c->state == C_CLOSED)
            return -1;
    }
    r->body_chunked = r->head.chunked;
    if (r->body_chunked)
        ah_http_chunked_init(&r->chunked);
    c->state = C_BODY;
    set_deadline(c, DL_BODY, o->body_timeout_s);
    return 0;
}

/* Moves body bytes from c->in to the request. 1 = body complete, 0 = need more, -1 = error sent. */
static int read_body(conn_t *c)
{
    ah_http_req_t *r = &c->req;
    if (!r->body_chunked) {
        size_t want = r->head.content_length > 0 ? (size_t)r->head.content_length : 0;
        size_t have = r->body.len;
        size_t take = want - have < c->in.len ? want - have : c->in.len;
        if (take) {
            if (ah_buf_append(&r->body, c->in.data, take) != 0) {
                ah_http_write_error(c, r, 503, "overloaded", "out of memory", true);
                return -1;
            }
            ah_buf_consume(&c->in, take);
        }
        return r->body.len == want ? 1 : 0;
    }
    if (c->in.len == 0)
        return 0;
    size_t used = 0, produced = 0;
    char *tmp = malloc(c->in.len);
    if (!tmp) {
        ah_http_write_error(c, r, 503, "overloaded", "out of memory", true);
        return -1;
    }
    int rc = ah_http_chunked_decode(&r->chunked, c->in.data, c->in.len, &used, tmp, &produced);
    int arc = rc >= 0 ? ah_buf_append(&r->body, tmp, produced) : 0;
    free(tmp);
    ah_buf_consume(&c->in, used);
    if (rc < 0) {
        ah_http_write_error(c, r, 400, "bad_request", "malformed chunked request body", true);
        return -1;
    }
    if (arc == -E2BIG) {
        char msg[120];
        snprintf(msg, sizeof(msg),
                 "request body is larger than the limit of %zu bytes (server.max_body_bytes)",
                 c->w->srv->o.max_body_bytes);
        ah_http_write_error(c, r, 413, "body_too_large", msg, true);
        return -1;
    } else if (arc) {
        ah_http_write_error(c, r, 503, "overloaded", "out of memory", true);
        return -1;
    }
    return rc == 1 ? 1 : 0;
}

static void dispatch(conn_t *c)
{
    worker_t *w = c->w;
    const ah_http_server_opts_t *o = &w->srv->o;
    ah_http_req_t *r = &c->req;
    c->state = C_HANDLER;
    c->dl_kind = DL_NONE;
    conn_ref(c); /* the handler's reference, dropped by the terminal call */
    r->handler_owned = true;
    char allow[64];
    const ah_route_t *route = NULL;
    int rc = ah_router_match(o->router, r->head.method, r->head.path, r->head.path_len, &r->arena,
                             &route, &r->params, allow, sizeof(allow));
    ah_log_ctx_set_request(r->id);
    if (rc == AH_ROUTE_NOT_FOUND) {
        ah_http_reply_error(r, 404, NULL, "not_found", NULL, "no such route");
    } else if (rc == AH_ROUTE_BAD_METHOD) {
        ah_http_req_add_header(r, "Allow", allow);
        ah_http_reply_error(r, 405, NULL, "method_not_allowed", NULL,
                            "method not allowed for this route");
    } else if (rc != AH_ROUTE_FOUND) {
        ah_http_reply_error(r, 503, NULL, "overloaded", NULL, "out of memory");
    } else {
        r->route = route;
        if (o->dispatch)
            o->dispatch(r, route, o->ud);
        else
            ((ah_http_handler_fn)route->handler)(r);
    }
    ah_log_ctx_set_request(NULL);
}

static void process_input(conn_t *c)
{
    const ah_http_server_opts_t *o = &c->w->srv->o;
    c->in_process = true;
    while (c->state == C_HEAD || c->state == C_BODY) {
        if (c->state == C_HEAD) {
            if (c->in.len == 0)
                break;
            if (!c->saw_bytes) {
                c->saw_bytes = true;
                set_deadline(c, DL_HEAD, o->header_timeout_s);
            }
            long n = ah_http_head_end(c->in.data, c->in.len, o->max_header_bytes);
            if (n == 0)
                break;
            if (n < 0) {
                ah_http_req_t *r = &c->req;
                r->active = true;
                r->start_ns = ah_mono_ns();
                atomic_fetch_add_explicit(&c->w->stat_in_flight, 1, memory_order_relaxed);
                ah_http_worker_gen_id(c->w, r->id, sizeof(r->id));
                ah_buf_reset(&c->in);
                char msg[128];
                snprintf(msg, sizeof(msg),
                         "request head is larger than %zu bytes (server.max_header_bytes)",
                         o->max_header_bytes);
                ah_http_write_error(c, r, 431, "headers_too_large", msg, true);
                break;
            }
            if (begin_request(c, (size_t)n) != 0)
                break;
        }
        int b = read_body(c);
        if (b <= 0)
            break;
        dispatch(c);
    }
    c->in_process = false;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)what;
    conn_ref(c);
    const ah_http_server_opts_t *o = &c->w->srv->o;
    /* While a handler runs, keep reading only to notice a closed client; cap what is buffered. */
    size_t cap = o->max_header_bytes + o->max_body_bytes + READ_CHUNK;
    for (int i = 0; i < 4 && c->state != C_CLOSED; i++) {
        if (c->in.len >= cap) {
            event_del(c->rev); /* backpressure: resumes never; the client pipelines too much */
            break;
        }
        if (ah_buf_reserve(&c->in, READ_CHUNK) != 0) {
            ah_http_conn_close(c);
            break;
        }
        ssize_t n = read(fd, c->in.data + c->in.len, READ_CHUNK);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = '\0';
            if (n < READ_CHUNK)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        ah_http_conn_close(c); /* EOF or error */
        break;
    }
    if (c->state == C_HEAD || c->state == C_BODY)
        process_input(c);
    ah_http_conn_unref(c);
}

void ah_http_conn_drain(conn_t *c)
{
    if (c->state == C_HEAD && c->in.len == 0 && c->out_off >= c->out.len && !c->req.active)
        ah_http_conn_close(c);
    else
        c->close_after = true;
}

void ah_http_conn_tick(worker_t *w, uint64_t now)
{
    conn_t *c = w->conns;
    while (c) {
        conn_t *next = c->next;
        if (c->dl_kind != DL_NONE && c->deadline_ns && now >= c->deadline_ns) {
            enum deadline_kind k = c->dl_kind;
            c->dl_kind = DL_NONE;
            conn_ref(c);
            if ((k == DL_HEAD && c->saw_bytes) || k == DL_BODY) {
                ah_http_req_t *r = &c->req;
                if (!r->active) {
                    r->active = true;
                    r->start_ns = ah_mono_ns();
                    atomic_fetch_add_explicit(&w->stat_in_flight, 1, memory_order_relaxed);
                    ah_http_worker_gen_id(w, r->id, sizeof(r->id));
                }
                ah_http_write_error(c, r, 408, "request_timeout",
                                    k == DL_HEAD ? "request head not received in time "
                                                   "(server.header_timeout_s)"
                                                 : "request body stalled (server.body_timeout_s)",
                                    true);
            } else {
                ah_http_conn_close(c); /* idle keep-alive, silent new connection, stalled write */
            }
            ah_http_conn_unref(c);
        }
        c = next;
    }
}
