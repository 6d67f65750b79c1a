/*
 * client_h1.c - the upstream client's native HTTP/1.1 path for plain http://
 * to an IP literal or localhost: pooled keep-alive connections per host:port
 * on the client's loop, one request per connection at a time, the response
 * parsed by resp.c. Everything else (https://, host names, proxies, user:pass
 * in the URL) stays on libcurl in client.c. Why and where the line is:
 * docs/internals/client.md, "Two paths".
 *
 * Rules that keep the client.h contract:
 *  - no user callback from inside an ah_http_* function: failures found while
 *    starting (or while a connection closes under a queued call) are queued
 *    (deferred_rc) and reach on_done from the loop through run_pending;
 *  - while a read frame delivers to a call (c->busy), cancel only marks it and
 *    the frame closes the connection after the callback returns;
 *  - a pooled connection keeps its read event while idle, so a close by the
 *    upstream costs one wake-up and the connection is dropped at once.
 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "core/clock.h"
#include "http/client_int.h"
#include "http/resp.h"

#define RBUF_SIZE (16u << 10) /* per connection, like curl's receive buffer */
#define MAX_HOSTS 256         /* distinct host:port pools before unused ones are dropped */

struct h1host {
    h1host_t *next;
    char *authority; /* the pool key and Host header: host[:port] as the URL has it */
    size_t authority_len;
    char *defaults; /* "Host: ...\r\nUser-Agent: ...\r\nAccept: ...\r\n", built once */
    size_t defaults_len;
    struct sockaddr_storage addr[2];
    socklen_t alen[2];
    int naddr;
    h1conn_t *idle, *idle_tail;        /* most recently used first */
    size_t n_conns;                    /* open: connecting, busy or idle */
    size_t refs;                       /* calls started for it and not yet released */
    ah_http_call_t *wq_head, *wq_tail; /* calls waiting for a connection */
};

struct h1conn {
    ah_http_client_t *cl;
    h1host_t *host;
    int fd;
    int ai; /* address tried */
    struct event *rev, *wev, *ctimer;
    bool r_on, w_on, ct_on;
    bool connecting;
    bool reused;    /* carried a response before this call */
    bool sent;      /* the whole request is written */
    bool got_bytes; /* a response byte arrived for this call */
    bool head_done;
    bool in_idle;
    ah_http_call_t *call;
    h1conn_t *prev, *next; /* host idle list */
    size_t woff;           /* request bytes written */
    char *rbuf;
    size_t roff, rlen, rcap; /* unprocessed bytes: rbuf[roff..rlen) */
    ah_http_resp_t resp;
};

struct h1pool {
    h1host_t *hosts;
    size_t n_hosts;
    size_t n_idle;
};

typedef struct url_parts {
    const char *host; /* without brackets */
    size_t host_len;
    const char *authority;
    size_t authority_len;
    const char *path; /* from '/' or '?', up to '#'; empty means "/" */
    size_t path_len;
    unsigned port;
} url_parts_t;

/* ---- URL ---- */

static bool parse_url(const char *url, url_parts_t *u)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false; /* curl decides what to do with those */
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || memchr(a, '@', alen))
        return false; /* credentials in the URL: curl */
    u->authority = a;
    u->authority_len = alen;
    const char *port = NULL;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb)
            return false;
        u->host = a + 1;
        u->host_len = (size_t)(rb - a - 1);
        if (rb + 1 < a + alen) {
            if (rb[1] != ':')
                return false;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        u->host = a;
        u->host_len = colon ? (size_t)(colon - a) : alen;
        port = colon ? colon + 1 : NULL;
    }
    u->port = 80;
    if (port) {
        size_t pn = (size_t)(a + alen - port);
        if (pn == 0 || pn > 5)
            return false;
        unsigned v = 0;
        for (size_t i = 0; i < pn; i++) {
            if (port[i] < '0' || port[i] > '9')
                return false;
            v = v * 10 + (unsigned)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return false;
        u->port = v;
    }
    u->path = a + alen;
    u->path_len = strcspn(u->path, "#");
    return u->host_len > 0 && u->host_len < 64;
}

/* Fills the host's addresses from an IP literal or "localhost"; false for other names. */
static bool literal_addrs(const url_parts_t *u, h1host_t *h)
{
    char name[64];
    memcpy(name, u->host, u->host_len);
    name[u->host_len] = '\0';
    struct sockaddr_in *v4 = (struct sockaddr_in *)&h->addr[0];
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&h->addr[0];
    h->naddr = 0;
    if (strcasecmp(name, "localhost") == 0) {
        /* Both loopbacks, IPv4 first (curl tries both too). */
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)u->port);
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        h->alen[0] = sizeof(*v4);
        v6 = (struct sockaddr_in6 *)&h->addr[1];
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)u->port);
        v6->sin6_addr = in6addr_loopback;
        h->alen[1] = sizeof(*v6);
        h->naddr = 2;
        return true;
    }
    if (inet_pton(AF_INET, name, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)u->port);
        h->alen[0] = sizeof(*v4);
        h->naddr = 1;
        return true;
    }
    if (inet_pton(AF_INET6, name, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)u->port);
        h->alen[0] = sizeof(*v6);
        h->naddr = 1;
        return true;
    }
    return false;
}

/* ---- hosts ---- */

static h1pool_t *pool_of(ah_http_client_t *cl)
{
    if (!cl->h1)
        cl->h1 = calloc(1, sizeof(*cl->h1));
    return cl->h1;
}

static void host_free(h1host_t *h)
{
    free(h->authority);
    free(h->defaults);
    free(h);
}

/* Drops pools nothing uses, so a stream of distinct upstreams does not grow the list forever. */
static void hosts_trim(h1pool_t *pool)
{
    h1host_t **pp = &pool->hosts;
    while (*pp) {
        h1host_t *h = *pp;
        if (h->n_conns == 0 && h->refs == 0 && pool->n_hosts > MAX_HOSTS / 2) {
            *pp = h->next;
            pool->n_hosts--;
            host_free(h);
            continue;
        }
        pp = &h->next;
    }
}

/*
 * The pool for the URL's authority (as written: "127.0.0.1:80" and
 * "127.0.0.1" are two pools, which costs nothing but a connection), created
 * on first use. *unsupported is set when the host is neither an IP literal
 * nor localhost (curl's job); NULL then, or when out of memory.
 */
static h1host_t *host_get(ah_http_client_t *cl, const url_parts_t *u, bool *unsupported)
{
    *unsupported = false;
    h1pool_t *pool = pool_of(cl);
    if (!pool)
        return NULL;
    for (h1host_t **pp = &pool->hosts; *pp; pp = &(*pp)->next) {
        h1host_t *h = *pp;
        if (h->authority_len == u->authority_len &&
            memcmp(h->authority, u->authority, u->authority_len) == 0) {
            if (pp != &pool->hosts) { /* most recently used first */
                *pp = h->next;
                h->next = pool->hosts;
                pool->hosts = h;
            }
            return h;
        }
    }
    h1host_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    if (!literal_addrs(u, h)) {
        free(h);
        *unsupported = true;
        return NULL;
    }
    if (pool->n_hosts >= MAX_HOSTS)
        hosts_trim(pool);
    h->authority = strndup(u->authority, u->authority_len);
    h->authority_len = u->authority_len;
    size_t dl = u->authority_len + strlen(cl->user_agent) + 64;
    h->defaults = malloc(dl);
    int n = h->defaults ? snprintf(h->defaults, dl, "Host: %s\r\nUser-Agent: %s\r\nAccept: */*\r\n",
                                   h->authority ? h->authority : "", cl->user_agent)
                        : -1;
    h->defaults_len = n > 0 ? (size_t)n : 0;
    if (!h->authority || n < 0 || (size_t)n >= dl) {
        host_free(h);
        return NULL;
    }
    h->next = pool->hosts;
    pool->hosts = h;
    pool->n_hosts++;
    return h;
}

static void wait_push(h1host_t *h, ah_http_call_t *c)
{
    c->waiting = true;
    c->wnext = NULL;
    if (h->wq_tail)
        h->wq_tail->wnext = c;
    else
        h->wq_head = c;
    h->wq_tail = c;
}

static ah_http_call_t *wait_pop(h1host_t *h)
{
    ah_http_call_t *c = h->wq_head;
    if (c) {
        h->wq_head = c->wnext;
        if (!h->wq_head)
            h->wq_tail = NULL;
        c->wnext = NULL;
        c->waiting = false;
    }
    return c;
}

static void wait_remove(h1host_t *h, ah_http_call_t *c)
{
    ah_http_call_t *prev = NULL;
    for (ah_http_call_t *w = h->wq_head; w; prev = w, w = w->wnext) {
        if (w != c)
            continue;
        if (prev)
            prev->wnext = w->wnext;
        else
            h->wq_head = w->wnext;
        if (h->wq_tail == w)
            h->wq_tail = prev;
        break;
    }
    c->wnext = NULL;
    c->waiting = false;
}

/* ---- connections ---- */

static void on_conn_read(evutil_socket_t fd, short what, void *arg);
static void on_conn_write(evutil_socket_t fd, short what, void *arg);
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg);
static void conn_open(h1host_t *h, ah_http_call_t *c);
static void send_request(h1conn_t *k);

static void ev_set(struct event *ev, bool *on, bool want)
{
    if (*on == want)
        return;
    *on = want;
    if (want)
        event_add(ev, NULL);
    else
        event_del(ev);
}

static void idle_unlink(h1conn_t *k)
{
    h1host_t *h = k->host;
    if (!k->in_idle)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        h->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        h->idle_tail = k->prev;
    k->prev = k->next = NULL;
    k->in_idle = false;
    k->cl->h1->n_idle--;
}

static void attach(h1conn_t *k, ah_http_call_t *c)
{
    k->call = c;
    c->conn = k;
    k->woff = 0;
    k->roff = k->rlen = 0;
    k->sent = k->got_bytes = k->head_done = false;
    ah_buf_reset(&c->resp_head);
}

/* Closes the socket and frees k (detached from its call first). A queued call gets its turn. */
static void conn_close(h1conn_t *k)
{
    ah_http_client_t *cl = k->cl;
    h1host_t *h = k->host;
    if (k->call) {
        k->call->conn = NULL;
        k->call = NULL;
    }
    idle_unlink(k);
    /* Events leave epoll before the descriptor number can be reused. */
    if (k->rev)
        event_free(k->rev);
    if (k->wev)
        event_free(k->wev);
    if (k->ctimer)
        event_free(k->ctimer);
    if (k->fd >= 0)
        close(k->fd);
    free(k->rbuf);
    free(k);
    h->n_conns--;
    if (h->wq_head && !cl->freeing) {
        /* From the loop, not from here: this may run inside cancel or start. */
        ah_http_call_t *w = wait_pop(h);
        ah_http_call_enqueue(w);
    }
}

/*
 * Ends call c's attempt on k with rc: the connection closes and on_done runs
 * from the loop (this may be inside start or a read frame).
 */
static void conn_fail(h1conn_t *k, int rc, const char *msg)
{
    ah_http_call_t *c = k->call;
    c->busy = false;
    conn_close(k);
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    c->deferred_rc = rc;
    ah_http_call_enqueue(c);
}

static void fail_call(ah_http_call_t *c, int rc, const char *msg)
{
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    c->deferred_rc = rc;
    ah_http_call_enqueue(c);
}

static void set_sockopts(int fd)
{
    int one = 1, idle = 30, intvl = 15;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
}

static void connect_failed(h1conn_t *k, int err)
{
    char m[160];
    snprintf(m, sizeof(m), "Failed to connect to %s: %s", k->host->authority, strerror(err));
    conn_fail(k, -ECONNREFUSED, m);
}

static void connected(h1conn_t *k)
{
    k->connecting = false;
    ev_set(k->ctimer, &k->ct_on, false);
    ev_set(k->wev, &k->w_on, false);
    ev_set(k->rev, &k->r_on, true);
    send_request(k);
}

/* Tries the host's addresses from k->ai on; a connect in progress waits for the write event. */
static void connect_next(h1conn_t *k)
{
    ah_http_client_t *cl = k->cl;
    h1host_t *h = k->host;
    int err = ECONNREFUSED;
    for (; k->ai < h->naddr; k->ai++) {
        if (k->fd >= 0) {
            event_free(k->rev);
            event_free(k->wev);
            k->rev = k->wev = NULL;
            k->r_on = k->w_on = false;
            close(k->fd);
            k->fd = -1;
        }
        const struct sockaddr *sa = (const struct sockaddr *)&h->addr[k->ai];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            if (err == EMFILE || err == ENFILE)
                ah_http_client_warn_fds(cl, err);
            break;
        }
        k->fd = fd;
        set_sockopts(fd);
        cl->st.connections++;
        k->rev = event_new(cl->base, fd, EV_READ | EV_PERSIST, on_conn_read, k);
        k->wev = event_new(cl->base, fd, EV_WRITE | EV_PERSIST, on_conn_write, k);
        if (!k->rev || !k->wev) {
            err = ENOMEM;
            break;
        }
        if (connect(fd, sa, h->alen[k->ai]) == 0) {
            connected(k);
            return;
        }
        err = errno;
        if (err == EINPROGRESS) {
            k->connecting = true;
            ev_set(k->wev, &k->w_on, true);
            return;
        }
    }
    connect_failed(k, err);
}

static void conn_open(h1host_t *h, ah_http_call_t *c)
{
    ah_http_client_t *cl = c->cl;
    h1conn_t *k = calloc(1, sizeof(*k));
    if (!k) {
        fail_call(c, -ENOMEM, "out of memory opening a connection");
        return;
    }
    k->cl = cl;
    k->host = h;
    k->fd = -1;
    h->n_conns++;
    attach(k, c);
    k->ctimer = evtimer_new(cl->base, on_connect_timeout, k);
    if (!k->ctimer) {
        conn_fail(k, -ENOMEM, "out of memory opening a connection");
        return;
    }
    struct timeval tv;
    tv.tv_sec = (time_t)c->connect_s;
    tv.tv_usec = (suseconds_t)((c->connect_s - (double)tv.tv_sec) * 1e6);
    evtimer_add(k->ctimer, &tv);
    k->ct_on = true;
    connect_next(k);
}

/* A pooled connection that failed before any response byte: once more on a new one. */
static void retry_fresh(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    h1host_t *h = k->host;
    c->retried = true;
    c->busy = false;
    conn_close(k);
    conn_open(h, c);
}

static void send_request(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    size_t hl = c->req_head.len, total = hl + c->req_body.len;
    while (k->woff < total) {
        struct iovec iov[2];
        int n = 0;
        if (k->woff < hl) {
            iov[n].iov_base = c->req_head.data + k->woff;
            iov[n++].iov_len = hl - k->woff;
        }
        if (c->req_body.len) {
            size_t bo = k->woff > hl ? k->woff - hl : 0;
            iov[n].iov_base = c->req_body.data + bo;
            iov[n++].iov_len = c->req_body.len - bo;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(k->fd, &mh, MSG_NOSIGNAL); /* no SIGPIPE on a closed peer */
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_set(k->wev, &k->w_on, true);
                return;
            }
            if (k->reused && !k->got_bytes && !c->retried) {
                retry_fresh(k);
                return;
            }
            char m[128];
            snprintf(m, sizeof(m), "Send failure: %s", strerror(errno));
            conn_fail(k, -ECONNRESET, m);
            return;
        }
        k->woff += (size_t)w;
    }
    k->sent = true;
    ev_set(k->wev, &k->w_on, false);
}

/* After a complete response: back to the pool (or to a waiting call), or closed. */
static void conn_idle(h1conn_t *k)
{
    ah_http_client_t *cl = k->cl;
    h1host_t *h = k->host;
    k->call = NULL;
    k->reused = true;
    k->roff = k->rlen = 0;
    ah_http_call_t *w = wait_pop(h);
    if (w) {
        attach(k, w);
        send_request(k);
        return;
    }
    k->next = h->idle;
    k->prev = NULL;
    if (h->idle)
        h->idle->prev = k;
    else
        h->idle_tail = k;
    h->idle = k;
    k->in_idle = true;
    cl->h1->n_idle++;
    if (cl->h1->n_idle > cl->max_connections)
        conn_close(h->idle_tail); /* the pool is full: the oldest idle one of this host goes */
}

/* ---- reading the response ---- */

static int store_header(void *ud, const char *name, size_t nl, const char *value, size_t vl)
{
    ah_http_call_t *c = ud;
    int rc = ah_buf_append(&c->resp_head, name, nl);
    if (rc == 0)
        rc = ah_buf_putc(&c->resp_head, '\0');
    if (rc == 0)
        rc = ah_buf_append(&c->resp_head, value, vl);
    if (rc == 0)
        rc = ah_buf_putc(&c->resp_head, '\0');
    return rc;
}

static void complete(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    bool reuse = k->resp.keep_alive && k->sent && k->roff == k->rlen && !c->cl->freeing;
    c->busy = false;
    c->conn = NULL;
    if (reuse)
        conn_idle(k);
    else
        conn_close(k);
    ah_http_call_finish(c, 0);
}

/* The call was cancelled from its own callback: close (the upstream sees it) and recycle. */
static void drop_cancelled(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    c->busy = false;
    conn_close(k);
    ah_http_call_release(c);
}

static void too_big(h1conn_t *k)
{
    char m[96];
    snprintf(m, sizeof(m), "response body is larger than max_response_bytes (%zu)",
             k->call->max_body);
    conn_fail(k, -E2BIG, m);
}

/* The complete head is in: status, deadline, cap, on_headers. false when the call ended. */
static bool head_complete(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    k->head_done = true;
    c->status = k->resp.status;
    c->headers_done = true;
    c->headers_ns = ah_mono_ns();
    if (c->fb_armed) {
        evtimer_del(c->fb_timer);
        c->fb_armed = false;
    }
    int64_t len = k->resp.mode == AH_HTTP_BODY_LENGTH ? k->resp.content_length : -1;
    if (len > 0 && (uint64_t)len > c->max_body) {
        too_big(k);
        return false;
    }
    if (len > 0 && !c->stream)
        ah_buf_reserve(&c->body, (size_t)len); /* a hint: failure here is not fatal */
    if (c->on_headers) {
        c->cl->cb_depth++;
        c->on_headers(c, c->status, c->ud);
        c->cl->cb_depth--;
    }
    if (c->cancelled) {
        drop_cancelled(k);
        return false;
    }
    return true;
}

/* Delivers what is buffered on k to its call until it needs more bytes, pauses or ends. */
static void process(h1conn_t *k)
{
    ah_http_call_t *c = k->call;
    c->busy = true;
    for (;;) {
        char *p = k->rbuf + k->roff;
        size_t n = k->rlen - k->roff;
        if (!k->head_done) {
            long hl = ah_http_resp_head(&k->resp, p, n, AH_HTTP_MAX_RESPONSE_HEAD, c->is_head,
                                        store_header, c);
            if (hl == 0)
                break;
            if (hl == AH_HTTP_PARSE_HEADERS_BIG || hl == -E2BIG) {
                char m[96];
                snprintf(m, sizeof(m), "response head is larger than %u bytes",
                         AH_HTTP_MAX_RESPONSE_HEAD);
                conn_fail(k, -E2BIG, m);
                return;
            }
            if (hl < 0) {
                conn_fail(k, hl == -ENOMEM ? -ENOMEM : -EIO,
                          hl == -ENOMEM ? "out of memory storing response headers"
                                        : "malformed response head from the upstream");
                return;
            }
            k->roff += (size_t)hl;
            if (k->resp.status < 200)
                continue; /* interim 1xx: the final head follows */
            if (!head_complete(k))
                return;
            continue;
        }
        if (k->resp.done) {
            complete(k);
            return;
        }
        if (c->want_pause) {
            /* Stop reading: TCP pushes back on the upstream; resume restarts from the loop. */
            c->h1_paused = true;
            ev_set(k->rev, &k->r_on, false);
            break;
        }
        if (n == 0)
            break;
        size_t used, out;
        int rc = ah_http_resp_body(&k->resp, p, n, &used, &out);
        if (rc < 0) {
            conn_fail(k, -EIO, "malformed chunked body from the upstream");
            return;
        }
        k->roff += used;
        if (out) {
            if (out > c->max_body - c->body_bytes) {
                too_big(k);
                return;
            }
            c->body_bytes += out;
            if (c->stream) {
                if (c->on_data) {
                    c->cl->cb_depth++;
                    c->on_data(c, p, out, c->ud);
                    c->cl->cb_depth--;
                }
                if (c->cancelled) {
                    drop_cancelled(k);
                    return;
                }
            } else if (ah_buf_append(&c->body, p, out) != 0) {
                conn_fail(k, -ENOMEM, "out of memory buffering the response body");
                return;
            }
        }
        if (used == 0 && rc == 0)
            break;
    }
    c->busy = false;
}

/* The upstream closed (err 0) or reset (err) the connection while a call was on it. */
static void conn_eof(h1conn_t *k, int err)
{
    ah_http_call_t *c = k->call;
    if (k->reused && !k->got_bytes && !c->retried) {
        retry_fresh(k); /* closed while idle, noticed only now: like curl, once more */
        return;
    }
    if (k->head_done && !err && ah_http_resp_eof(&k->resp)) {
        complete(k); /* a body delimited by the close */
        return;
    }
    char m[160];
    if (!k->got_bytes)
        snprintf(m, sizeof(m), "%s%s", err ? "Recv failure: " : "Empty reply from server",
                 err ? strerror(err) : "");
    else if (!k->head_done)
        snprintf(m, sizeof(m), "connection closed inside the response head");
    else if (k->resp.mode == AH_HTTP_BODY_LENGTH)
        snprintf(m, sizeof(m), "transfer closed with %llu bytes remaining to read",
                 (unsigned long long)k->resp.remaining);
    else
        snprintf(m, sizeof(m), "transfer closed before the end of the chunked body");
    conn_fail(k, -ECONNRESET, m);
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
    h1conn_t *k = arg;
    (void)what;
    k->cl->st.wakeups++;
    if (!k->call) {
        /* Idle: the upstream closed it (or sent what nobody asked for). Drop it now. */
        conn_close(k);
        return;
    }
    if (k->roff == k->rlen)
        k->roff = k->rlen = 0;
    if (k->rlen == k->rcap && k->roff) {
        memmove(k->rbuf, k->rbuf + k->roff, k->rlen - k->roff);
        k->rlen -= k->roff;
        k->roff = 0;
    }
    if (k->rlen == k->rcap) {
        /* Empty, or a head not complete yet: grow up to the head limit. */
        size_t cap = k->rcap ? k->rcap * 2 : RBUF_SIZE;
        if (cap > AH_HTTP_MAX_RESPONSE_HEAD)
            cap = AH_HTTP_MAX_RESPONSE_HEAD;
        char *b = cap > k->rcap ? realloc(k->rbuf, cap) : NULL;
        if (!b) {
            conn_fail(k, -ENOMEM, "out of memory reading the response");
            return;
        }
        k->rbuf = b;
        k->rcap = cap;
    }
    ssize_t n = recv(fd, k->rbuf + k->rlen, k->rcap - k->rlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_eof(k, errno);
        return;
    }
    if (n == 0) {
        conn_eof(k, 0);
        return;
    }
    k->rlen += (size_t)n;
    k->got_bytes = true;
    process(k);
}

static void on_conn_write(evutil_socket_t fd, short what, void *arg)
{
    h1conn_t *k = arg;
    (void)what;
    k->cl->st.wakeups++;
    if (!k->connecting) {
        send_request(k);
        return;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0) {
        connected(k);
        return;
    }
    k->ai++;
    if (k->ai < k->host->naddr) {
        connect_next(k);
        return;
    }
    connect_failed(k, err);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    h1conn_t *k = arg;
    (void)fd;
    (void)what;
    k->ct_on = false;
    if (!k->connecting)
        return;
    ah_http_call_t *c = k->call;
    c->tkind = AH_HTTP_TIMEOUT_CONNECT;
    char m[128];
    snprintf(m, sizeof(m), "Connection timed out after %ld milliseconds",
             (long)(c->connect_s * 1000.0 + 0.5));
    conn_fail(k, -ETIMEDOUT, m);
}

/* ---- the call side (client.c) ---- */

static bool name_is(const char *h, size_t nl, const char *name)
{
    return strlen(name) == nl && strncasecmp(h, name, nl) == 0;
}

/* Headers we add unless the caller gives its own or removes them with "Name:". */
enum { D_HOST, D_UA, D_ACCEPT, D_COUNT };
static const char *const default_names[D_COUNT] = {"Host", "User-Agent", "Accept"};

int ah_h1_prepare(ah_http_call_t *c, const ah_http_call_opts_t *o, const char *method,
                  bool has_body)
{
    ah_http_client_t *cl = c->cl;
    url_parts_t u;
    if (!parse_url(o->url, &u))
        return AH_H1_UNSUPPORTED;
    bool unsupported;
    c->host = host_get(cl, &u, &unsupported);
    if (!c->host)
        return unsupported ? AH_H1_UNSUPPORTED : -ENOMEM;
    bool skip[D_COUNT] = {false};
    const char *const *hdrs = o->headers;
    for (size_t i = 0; hdrs && hdrs[i]; i++) {
        const char *h = hdrs[i];
        if (h[strcspn(h, "\r\n")] != '\0')
            return -EINVAL; /* header injection */
        const char *colon = strchr(h, ':');
        if (!colon)
            continue;
        for (int d = 0; d < D_COUNT; d++)
            if (name_is(h, (size_t)(colon - h), default_names[d]))
                skip[d] = true; /* replaced or removed */
    }
    c->is_head = strcmp(method, "HEAD") == 0;
    ah_buf_t *b = &c->req_head;
    ah_buf_reset(b);
    int rc = ah_buf_puts(b, method);
    rc = rc ? rc : ah_buf_putc(b, ' ');
    if (u.path_len == 0 || u.path[0] != '/')
        rc = rc ? rc : ah_buf_putc(b, '/');
    rc = rc ? rc : ah_buf_append(b, u.path, u.path_len);
    rc = rc ? rc : ah_buf_puts(b, " HTTP/1.1\r\n");
    if (!skip[D_HOST] && !skip[D_UA] && !skip[D_ACCEPT]) {
        rc = rc ? rc : ah_buf_append(b, c->host->defaults, c->host->defaults_len);
        skip[D_HOST] = skip[D_UA] = skip[D_ACCEPT] = true; /* all three are in */
    }
    if (!skip[D_HOST]) {
        rc = rc ? rc : ah_buf_puts(b, "Host: ");
        rc = rc ? rc : ah_buf_puts(b, c->host->authority);
        rc = rc ? rc : ah_buf_puts(b, "\r\n");
    }
    if (!skip[D_UA]) {
        rc = rc ? rc : ah_buf_puts(b, "User-Agent: ");
        rc = rc ? rc : ah_buf_puts(b, cl->user_agent);
        rc = rc ? rc : ah_buf_puts(b, "\r\n");
    }
    if (!skip[D_ACCEPT])
        rc = rc ? rc : ah_buf_puts(b, "Accept: */*\r\n");
    for (size_t i = 0; hdrs && hdrs[i] && rc == 0; i++) {
        const char *h = hdrs[i];
        const char *colon = strchr(h, ':');
        if (!colon) {
            /* curl's "Name;" sends the header with an empty value. */
            size_t l = strlen(h);
            if (l > 1 && h[l - 1] == ';') {
                rc = ah_buf_append(b, h, l - 1);
                rc = rc ? rc : ah_buf_puts(b, ":\r\n");
            }
            continue;
        }
        size_t nl = (size_t)(colon - h);
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v == '\0')
            continue; /* "Name:" removes a header we would add */
        /* Framing is ours: the body length is known, and no 100-continue wait (like curl's
         * "Expect:"). */
        if (name_is(h, nl, "Content-Length") || name_is(h, nl, "Transfer-Encoding") ||
            name_is(h, nl, "Expect"))
            continue;
        rc = ah_buf_puts(b, h);
        rc = rc ? rc : ah_buf_puts(b, "\r\n");
    }
    if (has_body && rc == 0) {
        rc = ah_buf_puts(b, "Content-Length: ");
        rc = rc ? rc : ah_buf_put_u64(b, c->req_body.len);
        rc = rc ? rc : ah_buf_puts(b, "\r\n");
    }
    rc = rc ? rc : ah_buf_puts(b, "\r\n");
    if (rc)
        return -ENOMEM;
    c->host->refs++; /* until ah_h1_forget */
    return 0;
}

void ah_h1_forget(ah_http_call_t *c)
{
    if (c->host) {
        c->host->refs--;
        c->host = NULL;
    }
}

void ah_h1_dispatch(ah_http_call_t *c)
{
    ah_http_client_t *cl = c->cl;
    h1host_t *h = c->host;
    h1conn_t *k = h->idle;
    if (k) {
        idle_unlink(k);
        attach(k, c);
        send_request(k);
        return;
    }
    if (cl->max_host_connections && h->n_conns >= cl->max_host_connections) {
        wait_push(h, c);
        return;
    }
    conn_open(h, c);
}

void ah_h1_detach(ah_http_call_t *c)
{
    if (c->conn) {
        h1conn_t *k = c->conn;
        c->conn = NULL;
        k->call = NULL;
        conn_close(k);
    }
    if (c->waiting)
        wait_remove(c->host, c);
}

void ah_h1_run_pending(ah_http_call_t *c)
{
    if (c->deferred_rc) {
        int rc = c->deferred_rc;
        c->deferred_rc = 0;
        ah_http_call_finish(c, rc);
        return;
    }
    if (c->h1_resume) {
        c->h1_resume = false;
        h1conn_t *k = c->conn;
        if (!c->h1_paused || c->want_pause || !k)
            return; /* paused again meanwhile, or already over */
        c->h1_paused = false;
        ev_set(k->rev, &k->r_on, true);
        process(k);
        return;
    }
    if (!c->conn && !c->waiting && c->state == CS_ACTIVE)
        ah_h1_dispatch(c); /* a connection closed under the host limit: this call's turn */
}

void ah_h1_resume(ah_http_call_t *c)
{
    if (c->h1_paused && !c->h1_resume) {
        c->h1_resume = true;
        ah_http_call_enqueue(c);
    }
}

void ah_h1_free(ah_http_client_t *cl)
{
    h1pool_t *pool = cl->h1;
    if (!pool)
        return;
    while (pool->hosts) {
        h1host_t *h = pool->hosts;
        while (h->idle)
            conn_close(h->idle);
        pool->hosts = h->next;
        host_free(h);
    }
    free(pool);
    cl->h1 = NULL;
}
