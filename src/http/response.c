/* response.c - request accessors and response writing; see server.h. */
#include "http/internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/log.h"

const char *ah_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

const char *ah_http_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 409:
        return "conflict_error";
    case 413:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    case 408:
    case 504:
        return "timeout_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* ---- accessors ---- */

ah_http_method_t ah_http_req_method(const ah_http_req_t *r)
{
    return r->head.method;
}

const char *ah_http_req_path(const ah_http_req_t *r, size_t *len)
{
    if (len)
        *len = r->head.path_len;
    return r->head.path;
}

const char *ah_http_req_header(const ah_http_req_t *r, const char *name, size_t *len)
{
    return ah_http_head_get(&r->head, name, len);
}

const char *ah_http_req_header_str(ah_http_req_t *r, const char *name)
{
    size_t n;
    const char *v = ah_http_head_get(&r->head, name, &n);
    return v ? ah_arena_strndup(&r->arena, v, n) : NULL;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

const char *ah_http_req_query(ah_http_req_t *r, const char *name)
{
    const char *q = r->head.query;
    if (!q)
        return NULL;
    size_t qn = r->head.query_len, nl = strlen(name), i = 0;
    while (i < qn) {
        size_t s = i;
        while (i < qn && q[i] != '&')
            i++;
        const char *eq = memchr(q + s, '=', i - s);
        size_t kl = eq ? (size_t)(eq - (q + s)) : i - s;
        if (kl == nl && memcmp(q + s, name, nl) == 0) {
            const char *v = eq ? eq + 1 : q + i;
            size_t vn = (size_t)(q + i - v);
            char *out = ah_arena_alloc(&r->arena, vn + 1);
            if (!out)
                return NULL;
            size_t o = 0;
            for (size_t k = 0; k < vn; k++) {
                if (v[k] == '+') {
                    out[o++] = ' ';
                } else if (v[k] == '%' && k + 2 < vn && hexv(v[k + 1]) >= 0 &&
                           hexv(v[k + 2]) >= 0) {
                    out[o++] = (char)(hexv(v[k + 1]) * 16 + hexv(v[k + 2]));
                    k += 2;
                } else {
                    out[o++] = v[k];
                }
            }
            out[o] = '\0';
            return out;
        }
        i++;
    }
    return NULL;
}

const char *ah_http_req_param(const ah_http_req_t *r, const char *name)
{
    return ah_route_param(&r->params, name);
}

const char *ah_http_req_body(const ah_http_req_t *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

const char *ah_http_req_id(const ah_http_req_t *r)
{
    return r->id;
}

const char *ah_http_req_remote(const ah_http_req_t *r)
{
    return r->conn->remote;
}

ah_arena_t *ah_http_req_arena(ah_http_req_t *r)
{
    return &r->arena;
}

ah_loop_t *ah_http_req_loop(const ah_http_req_t *r)
{
    return r->conn->w->loop;
}

const ah_route_t *ah_http_req_route(const ah_http_req_t *r)
{
    return r->route;
}

void ah_http_req_set_ctx(ah_http_req_t *r, void *ctx)
{
    r->ctx = ctx;
}

void *ah_http_req_ctx(const ah_http_req_t *r)
{
    return r->ctx;
}

uint64_t ah_http_req_start_ns(const ah_http_req_t *r)
{
    return r->start_ns;
}

int ah_http_req_status(const ah_http_req_t *r)
{
    return r->status;
}

bool ah_http_req_aborted(const ah_http_req_t *r)
{
    return r->conn->state == C_CLOSED;
}

void ah_http_req_on_abort(ah_http_req_t *r, void (*cb)(void *ud), void *ud)
{
    r->abort_cb = cb;
    r->abort_ud = ud;
}

void ah_http_req_on_drain(ah_http_req_t *r, void (*cb)(void *ud), void *ud)
{
    r->drain_cb = cb;
    r->drain_ud = ud;
}

size_t ah_http_stream_pending(const ah_http_req_t *r)
{
    const conn_t *c = r->conn;
    return c->out.len - c->out_off;
}

void ah_http_req_reset(ah_http_req_t *r)
{
    ah_arena_reset(&r->arena);
    ah_buf_reset(&r->body);
    if (r->body.cap > 256 * 1024)
        ah_buf_free(&r->body); /* do not pin a large body's memory on an idle connection */
    r->route = NULL;
    r->params.n = 0;
    r->ctx = NULL;
    r->status = 0;
    r->done = false;
    r->streaming = false;
    r->handler_owned = false;
    r->resp_headers = NULL;
    r->abort_cb = r->drain_cb = NULL;
    r->bytes_out = 0;
    memset(&r->head, 0, sizeof(r->head));
}

/* ---- writing ---- */

int ah_http_req_add_header(ah_http_req_t *r, const char *name, const char *value)
{
    resp_header_t *h = ah_arena_alloc(&r->arena, sizeof(*h));
    size_t nl = strlen(name), vl = strlen(value);
    char *n = h ? ah_arena_strndup(&r->arena, name, nl) : NULL;
    char *v = n ? ah_arena_strndup(&r->arena, value, vl) : NULL;
    if (!v)
        return -ENOMEM;
    /* Header injection guard: no CR/LF in names or values. */
    for (char *p = v; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    h->name = n;
    h->value = v;
    h->next = r->resp_headers;
    r->resp_headers = h;
    return 0;
}

/* Appends the status line and common headers (no final blank line) to c->out. */
static void write_head(conn_t *c, ah_http_req_t *r, int status, const char *ctype)
{
    worker_t *w = c->w;
    ah_buf_t *o = &c->out;
    bool http10 = r->head.minor == 0 && r->head.path != NULL;
    ah_http_worker_refresh_date(w);
    ah_buf_puts(o, http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    ah_buf_put_u64(o, (unsigned)status);
    ah_buf_putc(o, ' ');
    ah_buf_puts(o, ah_http_status_text(status));
    ah_buf_puts(o, "\r\nServer: agenthub\r\nDate: ");
    ah_buf_puts(o, w->date);
    if (ctype) {
        ah_buf_puts(o, "\r\nContent-Type: ");
        ah_buf_puts(o, ctype);
    }
    ah_buf_puts(o, "\r\nx-request-id: ");
    ah_buf_puts(o, r->id);
    ah_buf_puts(o, "\r\n");
    for (const resp_header_t *h = r->resp_headers; h; h = h->next) {
        ah_buf_puts(o, h->name);
        ah_buf_puts(o, ": ");
        ah_buf_puts(o, h->value);
        ah_buf_puts(o, "\r\n");
    }
    if (c->close_after || w->draining)
        ah_buf_puts(o, "Connection: close\r\n");
    else if (http10)
        ah_buf_puts(o, "Connection: keep-alive\r\n");
    r->status = status;
}

/* Access log + completion hook, then hand the bytes to the connection. */
static void finish(ah_http_req_t *r)
{
    conn_t *c = r->conn;
    worker_t *w = c->w;
    r->done = true;
    uint64_t dur = ah_mono_ns() - r->start_ns;
    if (w->srv->o.on_complete)
        w->srv->o.on_complete(r, r->route, r->status, dur, w->srv->o.ud);
    if (w->srv->o.access_log)
        ah_http_worker_access_log(w, r, dur);
    if (r->handler_owned)
        ah_http_conn_request_done(c);
    else
        ah_http_conn_flush(c);
}

void ah_http_reply(ah_http_req_t *r, int status, const char *ctype, const char *body, size_t len)
{
    conn_t *c = r->conn;
    if (r->done || r->streaming) {
        ah_log(AH_LOG_ERROR, "http", "second terminal call on a request (bug)",
               AH_LF_INT("status", status), AH_LF_END);
        return;
    }
    if (c->state != C_CLOSED) {
        write_head(c, r, status, ctype);
        ah_buf_puts(&c->out, "Content-Length: ");
        ah_buf_put_u64(&c->out, len);
        ah_buf_puts(&c->out, "\r\n\r\n");
        if (r->head.method != AH_HTTP_HEAD && len)
            ah_buf_append(&c->out, body, len);
        r->bytes_out = len;
    } else {
        r->status = status;
    }
    finish(r);
}

void ah_http_reply_json(ah_http_req_t *r, int status, const char *json, size_t len)
{
    ah_http_reply(r, status, "application/json", json, len);
}

static void build_error_json(ah_buf_t *b, const char *type, const char *code, const char *param,
                             const char *message)
{
    ah_buf_puts(b, "{\"error\":{\"message\":\"");
    ah_buf_json_escape(b, message, strlen(message));
    ah_buf_puts(b, "\",\"type\":\"");
    ah_buf_json_escape(b, type, strlen(type));
    ah_buf_puts(b, "\",\"param\":");
    if (param) {
        ah_buf_putc(b, '"');
        ah_buf_json_escape(b, param, strlen(param));
        ah_buf_putc(b, '"');
    } else {
        ah_buf_puts(b, "null");
    }
    ah_buf_puts(b, ",\"code\":");
    if (code) {
        ah_buf_putc(b, '"');
        ah_buf_json_escape(b, code, strlen(code));
        ah_buf_putc(b, '"');
    } else {
        ah_buf_puts(b, "null");
    }
    ah_buf_puts(b, "}}");
}

void ah_http_reply_error(ah_http_req_t *r, int status, const char *type, const char *code,
                         const char *param, const char *message)
{
    ah_buf_t b;
    ah_buf_init(&b, 64 * 1024);
    build_error_json(&b, type ? type : ah_http_error_type(status), code, param,
                     message ? message : ah_http_status_text(status));
    ah_http_reply_json(r, status, b.data ? b.data : "{}", b.data ? b.len : 2);
    ah_buf_free(&b);
}

/* A reply the server makes on its own (parse errors, limits, timeouts). */
void ah_http_write_error(conn_t *c, ah_http_req_t *r, int status, const char *code,
                         const char *message, bool close)
{
    if (close)
        c->close_after = true;
    c->state = C_HANDLER; /* stop parsing input: the reply ends this connection or request */
    ah_http_reply_error(r, status, NULL, code, NULL, message);
}

int ah_http_stream_start(ah_http_req_t *r, int status, const char *ctype)
{
    conn_t *c = r->conn;
    if (r->streaming || r->done)
        return -EINVAL;
    r->streaming = true;
    if (c->state == C_CLOSED)
        return -EPIPE;
    bool http10 = r->head.minor == 0;
    if (http10)
        c->close_after = true; /* no chunked coding: the end of the body is the close */
    write_head(c, r, status, ctype);
    ah_buf_puts(&c->out, http10 ? "\r\n" : "Transfer-Encoding: chunked\r\n\r\n");
    ah_http_conn_flush(c);
    return c->state == C_CLOSED ? -EPIPE : 0;
}

int ah_http_stream_write(ah_http_req_t *r, const char *p, size_t n)
{
    conn_t *c = r->conn;
    if (!r->streaming || r->done)
        return -EINVAL;
    if (c->state == C_CLOSED)
        return -EPIPE;
    if (n == 0)
        return 0;
    if (c->out.len - c->out_off > c->w->srv->o.max_output_bytes)
        return -ENOBUFS;
    if (r->head.minor == 1) {
        char sz[24];
        int k = snprintf(sz, sizeof(sz), "%zx\r\n", n);
        ah_buf_append(&c->out, sz, (size_t)k);
    }
    if (r->head.method != AH_HTTP_HEAD)
        ah_buf_append(&c->out, p, n);
    if (r->head.minor == 1)
        ah_buf_append(&c->out, "\r\n", 2);
    r->bytes_out += n;
    ah_http_conn_flush(c);
    return c->state == C_CLOSED ? -EPIPE : 0;
}

void ah_http_req_close(ah_http_req_t *r)
{
    conn_t *c = r->conn;
    if (r->done)
        return;
    c->close_after = true;
    if (c->state != C_CLOSED) {
        ah_buf_reset(&c->out);
        c->out_off = 0;
    }
    if (!r->status)
        r->status = 499;
    finish(r);
}

void ah_http_stream_end(ah_http_req_t *r)
{
    conn_t *c = r->conn;
    if (r->done)
        return;
    if (!r->streaming) {
        ah_http_reply(r, 500, NULL, NULL, 0);
        return;
    }
    if (c->state != C_CLOSED && r->head.minor == 1)
        ah_buf_append(&c->out, "0\r\n\r\n", 5);
    finish(r);
}
