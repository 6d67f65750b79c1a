/*
 * client.c - upstream HTTP client on libcurl's multi_socket API; see client.h
 * and docs/internals/client.md.
 *
 * Shape: curl tells us which sockets to watch (sock_cb) and when to wake it
 * (timer_cb); libevent tells us when a socket is ready or the timer fired, and
 * we hand that to curl_multi_socket_action(). Finished transfers are collected
 * with curl_multi_info_read() after curl returns.
 *
 * The one hard rule: no curl_multi_* call from inside curl's own callbacks
 * (write/header/socket/timer). User callbacks on_headers and on_data run inside
 * curl's write/header callbacks, so what they ask for (cancel, start, resume)
 * is queued on the client's pending list and done right after curl returns
 * (run_pending). cl->in_curl says whether we are inside curl now.
 */
#include "http/client.h"
#include "http/client_int.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"

#ifndef AH_VERSION
#define AH_VERSION "dev"
#endif

#define DEFAULT_MAX_CONNECTIONS 256
#define DEFAULT_DNS_CACHE_S     300
#define DEFAULT_CONNECT_S       AH_HTTP_DEFAULT_CONNECT_S
#define DEFAULT_MAX_RESPONSE    (64u << 20)
#define MAX_RESPONSE_HEAD       AH_HTTP_MAX_RESPONSE_HEAD
/* Buffers above these sizes are freed when a call is recycled rather than kept pooled. */
#define KEEP_BODY_BYTES    (256u << 10)
#define KEEP_REQUEST_BYTES (256u << 10)

/*
 * One per socket curl asked us to watch, found by fd (cl->socks). A socket
 * opened through open_socket stays with its context until close_socket, so a
 * pooled keep-alive connection keeps its read event registered between calls:
 * the next call on it needs no epoll_ctl (curl says CURL_POLL_REMOVE when a
 * call ends and CURL_POLL_IN when the next one waits for its answer).
 */
struct sockctx {
    ah_http_client_t *cl;
    curl_socket_t fd;
    struct event *rev, *wev; /* separate, so IN <-> INOUT is one EPOLL_CTL_MOD */
    bool r_on, w_on;         /* added to the loop */
    bool watched;            /* curl wants events (between POLL_IN/OUT/INOUT and REMOVE) */
    bool ours;               /* opened by open_socket: close_socket frees the context */
};

/* ---- global ---- */

int ah_http_client_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void ah_http_client_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- small helpers ---- */

static void set_timer(struct event *ev, double secs)
{
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
    evtimer_add(ev, &tv);
}

static void disarm_timers(ah_http_call_t *c)
{
    if (c->fb_armed) {
        evtimer_del(c->fb_timer);
        c->fb_armed = false;
    }
    if (c->total_armed) {
        evtimer_del(c->total_timer);
        c->total_armed = false;
    }
}

static void live_unlink(ah_http_client_t *cl, ah_http_call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        cl->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

void ah_http_call_enqueue(ah_http_call_t *c)
{
    ah_http_client_t *cl = c->cl;
    if (!c->queued) {
        c->queued = true;
        c->pnext = NULL;
        if (cl->pq_tail)
            cl->pq_tail->pnext = c;
        else
            cl->pq_head = c;
        cl->pq_tail = c;
    }
    event_active(cl->defer_ev, 0, 0);
}

static void call_destroy(ah_http_call_t *c)
{
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->fb_timer)
        event_free(c->fb_timer);
    if (c->total_timer)
        event_free(c->total_timer);
    ah_buf_free(&c->req_body);
    ah_buf_free(&c->req_head);
    ah_buf_free(&c->resp_head);
    ah_buf_free(&c->body);
    free(c->hdr_mem);
    free(c->hdr_nodes);
    free(c);
}

/* Returns a finished call to the free list (or frees it). Not while curl may still use it. */
void ah_http_call_release(ah_http_call_t *c)
{
    ah_http_client_t *cl = c->cl;
    assert(!c->in_multi);
    if (c->queued) {
        c->release_on_pop = true; /* run_pending holds a pointer to it */
        return;
    }
    disarm_timers(c);
    if (c->native)
        ah_h1_forget(c);
    live_unlink(cl, c);
    cl->st.in_flight--;
    /* A handle left paused inside curl may hold buffered data: do not reuse it. */
    if (c->curl_paused || cl->freeing || cl->st.idle_calls >= cl->max_idle) {
        call_destroy(c);
        return;
    }
    c->state = CS_IDLE;
    ah_buf_reset(&c->body);
    if (c->body.cap > KEEP_BODY_BYTES)
        ah_buf_free(&c->body);
    ah_buf_reset(&c->req_body);
    if (c->req_body.cap > KEEP_REQUEST_BYTES)
        ah_buf_free(&c->req_body);
    ah_buf_reset(&c->resp_head);
    ah_buf_reset(&c->req_head);
    if (c->req_head.cap > KEEP_REQUEST_BYTES)
        ah_buf_free(&c->req_head);
    c->next = cl->idle;
    cl->idle = c;
    cl->st.idle_calls++;
}

/* ---- curl callbacks (inside curl: no curl_multi_* calls here) ---- */

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
static int timer_cb(CURLM *multi, long timeout_ms, void *userp);

static void call_abort_msg(ah_http_call_t *c, int rc, const char *msg)
{
    c->abort_rc = rc;
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    ah_http_call_t *c = ud;
    size_t n = size * nmemb;
    if (c->cancelled)
        return 0; /* any value != n aborts the transfer */
    if (c->headers_done)
        return n; /* trailers of a chunked body: not exposed */
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A status line starts a new head (after a 1xx, the final one follows). */
        const char *sp = memchr(p, ' ', n);
        int status = 0;
        for (const char *q = sp ? sp + 1 : p + n; q < p + n && *q >= '0' && *q <= '9'; q++)
            status = status * 10 + (*q - '0');
        c->status = status;
        ah_buf_reset(&c->resp_head);
        return n;
    }
    if (n <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        if (c->status < 200)
            return n; /* end of an interim 1xx head */
        c->headers_done = true;
        c->headers_ns = ah_mono_ns();
        if (c->fb_armed) {
            evtimer_del(c->fb_timer);
            c->fb_armed = false;
        }
        if (!c->stream) {
            curl_off_t cl = -1;
            if (curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
                cl > 0 && (uint64_t)cl <= c->max_body)
                ah_buf_reserve(&c->body, (size_t)cl); /* a hint: failure here is not fatal */
        }
        if (c->on_headers) {
            c->cl->cb_depth++;
            c->on_headers(c, c->status, c->ud);
            c->cl->cb_depth--;
        }
        return c->cancelled ? 0 : n;
    }
    /* "Name: value\r\n" */
    const char *colon = memchr(p, ':', n);
    if (!colon)
        return n; /* not a header line (curl passes what the server sent) */
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    int rc = ah_buf_append(&c->resp_head, p, nl);
    if (rc == 0)
        rc = ah_buf_putc(&c->resp_head, '\0');
    if (rc == 0)
        rc = ah_buf_append(&c->resp_head, v, (size_t)(end - v));
    if (rc == 0)
        rc = ah_buf_putc(&c->resp_head, '\0');
    if (rc == -E2BIG) {
        char m[96];
        snprintf(m, sizeof(m), "response head is larger than %u bytes", MAX_RESPONSE_HEAD);
        call_abort_msg(c, -E2BIG, m);
        return 0;
    } else if (rc) {
        call_abort_msg(c, -ENOMEM, "out of memory storing response headers");
        return 0;
    }
    return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    ah_http_call_t *c = ud;
    size_t n = size * nmemb;
    if (c->cancelled)
        return n ? 0 : 1;
    if (c->want_pause) {
        /* curl keeps these bytes and hands them over again after curl_easy_pause(CONT). */
        c->curl_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (n > c->max_body - c->body_bytes) {
        char m[96];
        snprintf(m, sizeof(m), "response body is larger than max_response_bytes (%zu)",
                 c->max_body);
        call_abort_msg(c, -E2BIG, m);
        return n ? 0 : 1;
    }
    c->body_bytes += n;
    if (c->stream) {
        if (c->on_data && n) {
            c->cl->cb_depth++;
            c->on_data(c, p, n, c->ud);
            c->cl->cb_depth--;
        }
        if (c->cancelled)
            return n ? 0 : 1;
    } else if (ah_buf_append(&c->body, p, n) != 0) {
        call_abort_msg(c, -ENOMEM, "out of memory buffering the response body");
        return n ? 0 : 1;
    }
    return n;
}

/* Called by curl for every new socket: the cheapest place to count connections. */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    ah_http_client_t *cl = ud;
    (void)fd;
    if (purpose == CURLSOCKTYPE_IPCXN)
        cl->st.connections++;
    return CURL_SOCKOPT_OK;
}

/*
 * socket() failed with EMFILE/ENFILE: the call fails (curl reports it could
 * not connect). Said at warn level, at most once a second per client, since a
 * burst hits it once per call.
 */
void ah_http_client_warn_fds(ah_http_client_t *cl, int err)
{
    uint64_t now = ah_mono_ns();
    if (cl->fd_warn_ns && now - cl->fd_warn_ns < 1000000000ull) {
        cl->fd_warn_skipped++;
        return;
    }
    ah_log(AH_LOG_WARN, "http_client",
           "upstream connection: out of file descriptors (raise the open-files limit, "
           "ulimit -n)",
           AH_LF_STR("error", strerror(err)), AH_LF_INT("suppressed", cl->fd_warn_skipped),
           AH_LF_END);
    cl->fd_warn_ns = now;
    cl->fd_warn_skipped = 0;
}

/* ---- driving curl from the loop ---- */

static void run_pending(ah_http_client_t *cl);
static void collect_done(ah_http_client_t *cl);

static void after_curl(ah_http_client_t *cl)
{
    run_pending(cl);
    collect_done(cl);
}

static void socket_action(ah_http_client_t *cl, curl_socket_t fd, int mask)
{
    int running;
    cl->st.wakeups++;
    cl->in_curl++;
    curl_multi_socket_action(cl->multi, fd, mask, &running);
    cl->in_curl--;
    after_curl(cl);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    sockctx_t *sc = arg;
    if (!sc->watched) {
        /*
         * A pooled connection curl is not using became readable: the upstream
         * closed it (or sent bytes nobody asked for). Stop watching so the
         * level-triggered event does not spin; curl's liveness check finds it
         * dead before any reuse and closes it.
         */
        sc->cl->st.wakeups++;
        event_del(sc->rev);
        sc->r_on = false;
        return;
    }
    int mask =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    socket_action(sc->cl, fd, mask);
}

static void on_curl_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static sockctx_t *sock_get(const ah_http_client_t *cl, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < cl->socks_cap ? cl->socks[fd] : NULL;
}

static sockctx_t *sock_new(ah_http_client_t *cl, curl_socket_t fd, bool ours)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= cl->socks_cap) {
        size_t cap = cl->socks_cap ? cl->socks_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        sockctx_t **t = realloc(cl->socks, cap * sizeof(*t));
        if (!t)
            return NULL;
        memset(t + cl->socks_cap, 0, (cap - cl->socks_cap) * sizeof(*t));
        cl->socks = t;
        cl->socks_cap = cap;
    }
    sockctx_t *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->cl = cl;
    sc->fd = fd;
    sc->ours = ours;
    sc->rev = event_new(cl->base, fd, EV_READ | EV_PERSIST, on_sock, sc);
    sc->wev = event_new(cl->base, fd, EV_WRITE | EV_PERSIST, on_sock, sc);
    if (!sc->rev || !sc->wev) {
        if (sc->rev)
            event_free(sc->rev);
        if (sc->wev)
            event_free(sc->wev);
        free(sc);
        return NULL;
    }
    cl->socks[fd] = sc;
    return sc;
}

/* Unregisters (before the fd is closed, so epoll never sees a reused number) and frees. */
static void sock_free(ah_http_client_t *cl, sockctx_t *sc)
{
    cl->socks[sc->fd] = NULL;
    event_free(sc->rev); /* safe from inside this event's own callback */
    event_free(sc->wev);
    free(sc);
}

static int sock_set(struct event *ev, bool *on, bool want)
{
    if (*on == want)
        return 0;
    *on = want;
    return want ? event_add(ev, NULL) : event_del(ev);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    ah_http_client_t *cl = userp;
    sockctx_t *sc = sock_get(cl, s);
    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        if (!sc)
            return 0;
        sc->watched = false;
        if (!sc->ours) {
            sock_free(cl, sc); /* e.g. the resolver's socketpair: curl closes it without us */
            return 0;
        }
        /* Back in the pool: keep the read event for the next call (see on_sock). */
        return sock_set(sc->wev, &sc->w_on, false) == 0 ? 0 : -1;
    }
    if (!sc && !(sc = sock_new(cl, s, false)))
        return -1; /* curl fails the transfers on this socket */
    sc->watched = true;
    if (sock_set(sc->rev, &sc->r_on, (what & CURL_POLL_IN) != 0) != 0 ||
        sock_set(sc->wev, &sc->w_on, (what & CURL_POLL_OUT) != 0) != 0)
        return -1;
    return 0;
}

/* Every socket curl connects with comes from here, so close_socket sees its end. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    ah_http_client_t *cl = ud;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) {
        int err = errno;
        if (err == EMFILE || err == ENFILE)
            ah_http_client_warn_fds(cl, err);
        return CURL_SOCKET_BAD;
    }
    if (!sock_new(cl, fd, true)) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

static int close_socket(void *ud, curl_socket_t fd)
{
    ah_http_client_t *cl = ud;
    sockctx_t *sc = sock_get(cl, fd);
    if (sc)
        sock_free(cl, sc);
    return close(fd);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    ah_http_client_t *cl = userp;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(cl->timer_ev);
        return 0;
    }
    /*
     * Never call curl from here. A 0 ms timeout (every new call) makes the
     * timer event active instead of arming it: it then runs later in this
     * same loop turn, after the callback that started the call, rather than
     * one epoll_wait later. A later timer_cb re-arming or deleting the event
     * takes it off the active queue again.
     */
    if (timeout_ms == 0) {
        evtimer_del(cl->timer_ev);
        event_active(cl->timer_ev, EV_TIMEOUT, 1);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    return evtimer_add(cl->timer_ev, &tv) == 0 ? 0 : -1;
}

/* ---- finishing ---- */

static int map_result(ah_http_call_t *c, CURLcode res)
{
    if (res == CURLE_OK)
        return 0;
    if (c->abort_rc && (res == CURLE_WRITE_ERROR || res == CURLE_ABORTED_BY_CALLBACK))
        return c->abort_rc; /* c->msg already says why */
    snprintf(c->msg, sizeof(c->msg), "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(res));
    switch (res) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT:
        /* Only the connect deadline is curl's; first-byte and total are our timers. */
        c->tkind = AH_HTTP_TIMEOUT_CONNECT;
        return -ETIMEDOUT;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return -ECONNRESET;
    case CURLE_FILESIZE_EXCEEDED:
        snprintf(c->msg, sizeof(c->msg), "response body is larger than max_response_bytes (%zu)",
                 c->max_body);
        return -E2BIG;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -EINVAL;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* Ends a call with rc: runs on_done (unless cancelled) and recycles it. Outside curl only. */
void ah_http_call_finish(ah_http_call_t *c, int rc)
{
    ah_http_client_t *cl = c->cl;
    assert(cl->in_curl == 0);
    disarm_timers(c);
    if (c->native)
        ah_h1_detach(c); /* closes its connection mid-response, like curl does */
    if (c->in_multi) {
        curl_multi_remove_handle(cl->multi, c->easy); /* mid-transfer: closes the connection */
        c->in_multi = false;
    }
    c->state = CS_DONE;
    if (rc == 0)
        cl->st.completed++;
    else
        cl->st.failed++;
    if (c->on_done) {
        cl->cb_depth++;
        c->on_done(c, rc, c->ud);
        cl->cb_depth--;
    }
    ah_http_call_release(c);
}

static void collect_done(ah_http_client_t *cl)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(cl->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode res = m->data.result; /* m is invalid after remove_handle */
        ah_http_call_t *c = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
        curl_multi_remove_handle(cl->multi, easy);
        c->in_multi = false;
        if (c->cancelled)
            continue; /* queued by cancel: run_pending releases it */
        ah_http_call_finish(c, map_result(c, res));
    }
}

static void on_first_byte_timeout(evutil_socket_t fd, short what, void *arg)
{
    ah_http_call_t *c = arg;
    (void)fd;
    (void)what;
    c->fb_armed = false;
    c->tkind = AH_HTTP_TIMEOUT_FIRST_BYTE;
    snprintf(c->msg, sizeof(c->msg), "no response head within first_byte_timeout_s");
    ah_http_call_finish(c, -ETIMEDOUT);
}

static void on_total_timeout(evutil_socket_t fd, short what, void *arg)
{
    ah_http_call_t *c = arg;
    (void)fd;
    (void)what;
    c->total_armed = false;
    c->tkind = AH_HTTP_TIMEOUT_TOTAL;
    snprintf(c->msg, sizeof(c->msg), "call did not finish within total_timeout_s");
    ah_http_call_finish(c, -ETIMEDOUT);
}

/* Does the work queued from inside curl or by pause/resume. Outside curl only. */
static void run_pending(ah_http_client_t *cl)
{
    assert(cl->in_curl == 0);
    while (cl->pq_head) {
        ah_http_call_t *c = cl->pq_head;
        cl->pq_head = c->pnext;
        if (!cl->pq_head)
            cl->pq_tail = NULL;
        c->queued = false;
        c->pnext = NULL;
        if (c->release_on_pop) {
            c->release_on_pop = false;
            ah_http_call_release(c);
            continue;
        }
        if (c->cancelled) {
            if (c->in_multi) {
                curl_multi_remove_handle(cl->multi, c->easy);
                c->in_multi = false;
            }
            ah_http_call_release(c);
            continue;
        }
        if (c->native) {
            ah_h1_run_pending(c);
            continue;
        }
        if (c->state == CS_PENDING) {
            c->state = CS_ACTIVE;
            if (curl_multi_add_handle(cl->multi, c->easy) != CURLM_OK) {
                snprintf(c->msg, sizeof(c->msg), "curl_multi_add_handle failed");
                ah_http_call_finish(c, -ENOMEM);
                continue;
            }
            c->in_multi = true;
        }
        if (c->in_multi && c->curl_paused && !c->want_pause) {
            /* Unpausing hands curl's held bytes to on_write right here: count as inside curl. */
            c->curl_paused = false;
            cl->in_curl++;
            curl_easy_pause(c->easy, CURLPAUSE_CONT);
            cl->in_curl--;
        }
    }
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    after_curl(arg);
}

/* ---- client ---- */

/* The variables curl reads to pick a proxy for http:// and https:// URLs. */
static bool proxy_in_env(void)
{
    static const char *const names[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                        "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = getenv(names[i]);
        if (v && *v)
            return true;
    }
    return false;
}

/* The variables curl reads for http:// URLs: with one set, http:// calls stay on curl. */
static bool http_proxy_in_env(void)
{
    static const char *const names[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = getenv(names[i]);
        if (v && *v)
            return true;
    }
    return false;
}

ah_http_client_t *ah_http_client_new(ah_loop_t *loop, const ah_http_client_opts_t *opts)
{
    ah_http_client_opts_t o = {0};
    if (opts)
        o = *opts;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    ah_http_client_t *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        curl_global_cleanup();
        return NULL;
    }
    cl->loop = loop;
    cl->base = ah_loop_base(loop);
    cl->max_connections = o.max_connections ? o.max_connections : DEFAULT_MAX_CONNECTIONS;
    cl->dns_cache_s = o.dns_cache_s ? o.dns_cache_s : DEFAULT_DNS_CACHE_S;
    cl->max_idle = o.max_idle_calls ? o.max_idle_calls : cl->max_connections;
    cl->max_host_connections = o.max_host_connections;
    cl->user_agent = strdup(o.user_agent ? o.user_agent : "agenthub/" AH_VERSION);
    cl->proxy_env = proxy_in_env();
    cl->native_ok = !o.curl_only && !http_proxy_in_env();
    cl->multi = curl_multi_init();
    cl->share = curl_share_init();
    cl->timer_ev = evtimer_new(cl->base, on_curl_timer, cl);
    cl->defer_ev = event_new(cl->base, -1, 0, on_defer, cl);
    if (!cl->user_agent || !cl->multi || !cl->share || !cl->timer_ev || !cl->defer_ev)
        goto fail;
    /*
     * TLS sessions shared by all handles of this client, so a new connection
     * resumes one (the multi handle already shares DNS and connections). One
     * thread uses the share: no lock callbacks needed.
     */
    curl_share_setopt(cl->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_MAXCONNECTS, (long)cl->max_connections);
    curl_multi_setopt(cl->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o.max_host_connections);
    curl_multi_setopt(cl->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    return cl;
fail:
    ah_http_client_free(cl);
    return NULL;
}

void ah_http_client_free(ah_http_client_t *cl)
{
    if (!cl)
        return;
    assert(cl->cb_depth == 0 && cl->in_curl == 0); /* not from inside a callback */
    cl->freeing = true;
    cl->pq_head = cl->pq_tail = NULL; /* every queued call is on the live list */
    while (cl->live) {
        ah_http_call_t *c = cl->live;
        disarm_timers(c);
        if (c->native)
            ah_h1_detach(c);
        if (c->in_multi)
            curl_multi_remove_handle(cl->multi, c->easy);
        live_unlink(cl, c);
        call_destroy(c);
    }
    while (cl->idle) {
        ah_http_call_t *c = cl->idle;
        cl->idle = c->next;
        call_destroy(c);
    }
    ah_h1_free(cl);
    if (cl->multi)
        curl_multi_cleanup(cl->multi); /* may still call sock_cb/timer_cb: cl stays valid */
    if (cl->share)
        curl_share_cleanup(cl->share);
    for (size_t fd = 0; fd < cl->socks_cap; fd++)
        if (cl->socks[fd])
            sock_free(cl, cl->socks[fd]); /* not closed: curl closed what it opened */
    free(cl->socks);
    if (cl->timer_ev)
        event_free(cl->timer_ev);
    if (cl->defer_ev)
        event_free(cl->defer_ev);
    free(cl->user_agent);
    free(cl);
    curl_global_cleanup();
}

void ah_http_client_stats(const ah_http_client_t *cl, ah_http_client_stats_t *st)
{
    *st = cl->st;
}

/* ---- calls ---- */

/* A new call object: buffers and deadline timers (the easy handle comes with the first curl call).
 */
static ah_http_call_t *call_create(ah_http_client_t *cl)
{
    ah_http_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cl = cl;
    ah_buf_init(&c->req_body, 0);
    ah_buf_init(&c->req_head, 0);
    ah_buf_init(&c->resp_head, MAX_RESPONSE_HEAD);
    ah_buf_init(&c->body, 0);
    c->fb_timer = evtimer_new(cl->base, on_first_byte_timeout, c);
    c->total_timer = evtimer_new(cl->base, on_total_timeout, c);
    if (!c->fb_timer || !c->total_timer) {
        call_destroy(c);
        return NULL;
    }
    return c;
}

/* The call's easy handle with the options that never change: made the first time it goes to curl.
 */
static int easy_setup(ah_http_call_t *c)
{
    ah_http_client_t *cl = c->cl;
    if (c->easy)
        return 0;
    if (!(c->easy = curl_easy_init()))
        return -ENOMEM;
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, cl);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, cl);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, cl);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(e, CURLOPT_MAXCONNECTS, (long)cl->max_connections);
    curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, cl->dns_cache_s);
    curl_easy_setopt(e, CURLOPT_USERAGENT, cl->user_agent);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* URLs can come from agent specs: never file://, gopher:// and friends. */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* A proxy's "200 Connection established" head must not look like the response. */
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, cl->share);
    /*
     * Without a proxy variable in the environment (read once per client), an
     * explicit "no proxy" spares curl's getenv calls on every transfer.
     */
    if (!cl->proxy_env)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    return 0;
}

static bool method_ok(const char *m)
{
    size_t n = 0;
    for (; m[n]; n++)
        if (m[n] < 'A' || m[n] > 'Z')
            return false;
    return n > 0 && n <= 16;
}

/*
 * Builds the request header list in the call's own memory: curl only reads
 * the list, so no curl_slist_append (two mallocs per header) on the hot path.
 */
static int set_headers(ah_http_call_t *c, const char *const *hdrs)
{
    static const char expect[] = "Expect:"; /* no 100-continue round trip before the body */
    size_t n = 0, bytes = sizeof(expect);
    for (; hdrs && hdrs[n]; n++) {
        size_t l = strcspn(hdrs[n], "\r\n");
        if (hdrs[n][l] != '\0')
            return -EINVAL; /* header injection */
        bytes += l + 1;
    }
    if (bytes > c->hdr_mem_cap) {
        char *m = realloc(c->hdr_mem, bytes);
        if (!m)
            return -ENOMEM;
        c->hdr_mem = m;
        c->hdr_mem_cap = bytes;
    }
    if (n + 1 > c->hdr_nodes_cap) {
        struct curl_slist *nodes = realloc(c->hdr_nodes, (n + 1) * sizeof(*nodes));
        if (!nodes)
            return -ENOMEM;
        c->hdr_nodes = nodes;
        c->hdr_nodes_cap = n + 1;
    }
    char *w = c->hdr_mem;
    for (size_t i = 0; i <= n; i++) {
        const char *h = i < n ? hdrs[i] : expect;
        size_t l = strlen(h) + 1;
        memcpy(w, h, l);
        c->hdr_nodes[i].data = w;
        c->hdr_nodes[i].next = i < n ? &c->hdr_nodes[i + 1] : NULL;
        w += l;
    }
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->hdr_nodes);
    return 0;
}

/*
 * Copies the request body into the call (both paths send it from there). A
 * request has one when given one, or for POST, PUT and PATCH (maybe empty);
 * HEAD never does. Sets *has_body.
 */
static int copy_body(ah_http_call_t *c, const ah_http_call_opts_t *o, const char *m, bool *has_body)
{
    ah_buf_reset(&c->req_body);
    *has_body =
        strcmp(m, "HEAD") != 0 && (o->body != NULL || o->body_len > 0 || strcmp(m, "POST") == 0 ||
                                   strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0);
    if (!*has_body)
        return 0;
    if (o->body_len && !o->body)
        return -EINVAL;
    int rc = ah_buf_append(&c->req_body, o->body_len ? o->body : "", o->body_len);
    return rc == -E2BIG ? -EINVAL : rc;
}

static int set_method_and_body(ah_http_call_t *c, const ah_http_call_opts_t *o)
{
    CURL *e = c->easy;
    const char *m = o->method ? o->method : "GET";
    bool has_body;
    int rc = copy_body(c, o, m, &has_body);
    if (rc)
        return rc;
    /* Every method option is set each time: the handle remembers the previous call's. */
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return 0;
    }
    if (has_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        /* Referenced, not copied by curl: small bodies go out in the same packet as the head. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req_body.data ? c->req_body.data : "");
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                     strcmp(m, has_body ? "POST" : "GET") == 0 ? NULL : m);
    return 0;
}

int ah_http_call_start(ah_http_client_t *cl, const ah_http_call_opts_t *o, ah_http_call_t **out)
{
    if (out)
        *out = NULL;
    if (!cl || !o || !o->url || !o->on_done || (o->method && !method_ok(o->method)))
        return -EINVAL;
    ah_http_call_t *c = cl->idle;
    if (c) {
        cl->idle = c->next;
        cl->st.idle_calls--;
    } else if (!(c = call_create(cl))) {
        return -ENOMEM;
    }
    c->next = c->prev = c->pnext = NULL;
    c->queued = c->release_on_pop = c->in_multi = c->cancelled = c->headers_done = false;
    c->want_pause = c->curl_paused = c->fb_armed = c->total_armed = false;
    c->stream = o->stream;
    c->on_headers = o->on_headers;
    c->on_data = o->on_data;
    c->on_done = o->on_done;
    c->ud = o->ud;
    c->max_body = o->max_response_bytes ? o->max_response_bytes : DEFAULT_MAX_RESPONSE;
    c->status = 0;
    c->body_bytes = 0;
    c->abort_rc = 0;
    c->tkind = AH_HTTP_TIMEOUT_NONE;
    c->headers_ns = 0;
    c->errbuf[0] = c->msg[0] = '\0';
    c->native = cl->native_ok;
    c->busy = c->h1_paused = c->h1_resume = c->waiting = c->retried = false;
    c->deferred_rc = 0;
    c->host = NULL;
    c->conn = NULL;
    c->wnext = NULL;

    int rc = 0;
    if (c->native) {
        const char *m = o->method ? o->method : "GET";
        bool has_body;
        rc = copy_body(c, o, m, &has_body);
        if (rc == 0)
            rc = ah_h1_prepare(c, o, m, has_body);
        if (rc == AH_H1_UNSUPPORTED) {
            c->native = false; /* https://, a host name, ...: libcurl's */
            rc = 0;
        }
    }
    if (!c->native && rc == 0) {
        rc = easy_setup(c);
        if (rc == 0)
            rc = set_headers(c, o->headers);
        if (rc == 0)
            rc = set_method_and_body(c, o);
    }
    if (rc) {
        if (cl->st.idle_calls < cl->max_idle) {
            c->next = cl->idle;
            cl->idle = c;
            cl->st.idle_calls++;
        } else {
            call_destroy(c);
        }
        return rc;
    }
    double ct = o->connect_timeout_s > 0 ? o->connect_timeout_s : DEFAULT_CONNECT_S;
    c->connect_s = ct;
    if (!c->native) {
        CURL *e = c->easy;
        curl_easy_setopt(e, CURLOPT_URL, o->url);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(ct * 1000.0 + 0.5));
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
        /* https: wait for ALPN rather than open a second connection while HTTP/2 is negotiated. */
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(o->url, "https:", 6) == 0 ? 1L : 0L);
    }

    c->start_ns = ah_mono_ns();
    if (o->first_byte_timeout_s > 0) {
        set_timer(c->fb_timer, o->first_byte_timeout_s);
        c->fb_armed = true;
    }
    if (o->total_timeout_s > 0) {
        set_timer(c->total_timer, o->total_timeout_s);
        c->total_armed = true;
    }
    c->next = cl->live;
    if (cl->live)
        cl->live->prev = c;
    cl->live = c;
    cl->st.in_flight++;
    cl->st.started++;
    if (c->native) {
        cl->st.native++;
        c->state = CS_ACTIVE;
        ah_h1_dispatch(c); /* sends now when it can; failures reach on_done from the loop */
    } else if (cl->in_curl) {
        c->state = CS_PENDING; /* curl_multi_add_handle is not allowed inside curl callbacks */
        ah_http_call_enqueue(c);
    } else if (curl_multi_add_handle(cl->multi, c->easy) == CURLM_OK) {
        c->state = CS_ACTIVE;
        c->in_multi = true;
    } else {
        live_unlink(cl, c);
        cl->st.in_flight--;
        cl->st.started--;
        disarm_timers(c);
        call_destroy(c);
        return -ENOMEM;
    }
    if (out)
        *out = c;
    return 0;
}

void ah_http_call_cancel(ah_http_call_t *c)
{
    if (!c || c->cancelled || c->state == CS_DONE || c->state == CS_IDLE)
        return;
    ah_http_client_t *cl = c->cl;
    c->cancelled = true;
    c->state = CS_DONE;
    cl->st.cancelled++;
    disarm_timers(c);
    if (c->native) {
        if (c->busy)
            return; /* its read frame closes the connection and releases it after the callback */
        ah_h1_detach(c);
        ah_http_call_release(c);
        return;
    }
    if (cl->in_curl && c->in_multi) {
        /* Inside curl: its write/header callbacks now return 0, and run_pending reaps it. */
        ah_http_call_enqueue(c);
        return;
    }
    if (c->in_multi) {
        curl_multi_remove_handle(cl->multi, c->easy); /* premature: closes the connection */
        c->in_multi = false;
    }
    ah_http_call_release(c); /* deferred to run_pending if the call is on the queue */
}

void ah_http_call_pause(ah_http_call_t *c)
{
    c->want_pause = true;
}

void ah_http_call_resume(ah_http_call_t *c)
{
    if (!c->want_pause)
        return;
    c->want_pause = false;
    if (c->native)
        ah_h1_resume(c);
    else if (c->curl_paused)
        ah_http_call_enqueue(
            c); /* unpause from the loop, so on_data never runs inside this function */
}

int ah_http_call_set_stream(ah_http_call_t *c, bool stream)
{
    if (c->body_bytes)
        return -EINVAL;
    c->stream = stream;
    return 0;
}

int ah_http_call_status(const ah_http_call_t *c)
{
    return c->headers_done ? c->status : 0;
}

bool ah_http_call_header_next(const ah_http_call_t *c, size_t *pos, const char **name,
                              const char **value)
{
    if (!c->headers_done || *pos >= c->resp_head.len)
        return false;
    const char *n = c->resp_head.data + *pos;
    const char *v = n + strlen(n) + 1;
    *pos = (size_t)(v + strlen(v) + 1 - c->resp_head.data);
    if (name)
        *name = n;
    if (value)
        *value = v;
    return true;
}

const char *ah_http_call_header(const ah_http_call_t *c, const char *name)
{
    size_t pos = 0;
    const char *n, *v;
    while (ah_http_call_header_next(c, &pos, &n, &v))
        if (strcasecmp(n, name) == 0)
            return v;
    return NULL;
}

const char *ah_http_call_body(const ah_http_call_t *c, size_t *len)
{
    if (len)
        *len = c->body.len;
    return c->body.data ? c->body.data : "";
}

size_t ah_http_call_body_bytes(const ah_http_call_t *c)
{
    return c->body_bytes;
}

const char *ah_http_call_error(const ah_http_call_t *c)
{
    return c->msg;
}

ah_http_timeout_kind_t ah_http_call_timeout_kind(const ah_http_call_t *c)
{
    return c->tkind;
}

double ah_http_call_ttfb_s(const ah_http_call_t *c)
{
    return c->headers_ns ? (double)(c->headers_ns - c->start_ns) / 1e9 : 0.0;
}
