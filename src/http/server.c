/*
 * server.c - listeners and worker threads; see server.h.
 *
 * Each worker owns one event loop and one SO_REUSEPORT socket bound to the
 * same address, so the kernel spreads new connections over the workers and
 * no lock is shared on the accept or request path. The first socket is bound
 * on the main thread (so "address in use" is reported before anything
 * starts); with port 0 the others reuse the port it got.
 */
#include "http/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"

#define TICK_MS          250
#define ACCESS_LOG_FLUSH 32768

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        ah_buf_t *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        ah_buf_printf(err, "server.listen \"%s\": expected host:port (e.g. 127.0.0.1:8080)",
                      listen);
        return -EINVAL;
    }
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof(host)) {
        ah_buf_printf(err, "server.listen: host too long");
        return -EINVAL;
    }
    memcpy(host, listen, hl);
    host[hl] = '\0';
    char *h = host;
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        h = host + 1;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || port < 0 || port > 65535) {
        ah_buf_printf(err, "server.listen \"%s\": port must be 0-65535", listen);
        return -EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (*h == '\0' || strcmp(h, "0.0.0.0") == 0 || strcmp(h, "*") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
    } else if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
    } else if (strcmp(h, "localhost") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
    } else {
        ah_buf_printf(err, "server.listen \"%s\": host must be an IP address or localhost", listen);
        return -EINVAL;
    }
    return 0;
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len, ah_buf_t *err,
                         const char *what)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ah_buf_printf(err, "socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        ah_buf_printf(err, "cannot listen on %s: %s%s", what, strerror(e),
                      e == EADDRINUSE ? " (another process uses this port: pick another "
                                        "server.listen)"
                                      : "");
        close(fd);
        return -e;
    }
    return fd;
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, n, "[%s]:%d", ip, ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
        snprintf(buf, n, "%s:%d", ip, ntohs(in4->sin_port));
    }
}

static const char overload_body[] =
    "{\"error\":{\"message\":\"too many connections (server.max_connections); retry later\","
    "\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}}";

/* The canned 503 written at accept time, before any request is read. */
static int build_overload_reply(char *buf, size_t n)
{
    return snprintf(buf, n,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                    sizeof(overload_body) - 1, overload_body);
}

/*
 * accept() failed with EMFILE/ENFILE: the pending connection stays in the
 * listen queue and the level-triggered listener would fire on every loop
 * turn. Stop accepting until the next tick (connections closing meanwhile
 * free descriptors) and say so at warn level, at most once a second.
 */
static void out_of_fds(worker_t *w, int err)
{
    if (w->accept_ev && event_del(w->accept_ev) == 0)
        w->accept_paused = true;
    uint64_t now = ah_mono_ns();
    if (w->fd_warn_ns && now - w->fd_warn_ns < 1000000000ull) {
        w->fd_warn_skipped++;
        return;
    }
    ah_log(AH_LOG_WARN, "http",
           "accept: out of file descriptors; new connections wait in the listen queue "
           "(raise the open-files limit, ulimit -n)",
           AH_LF_STR("error", strerror(err)), AH_LF_INT("worker", w->index),
           AH_LF_INT("suppressed", w->fd_warn_skipped), AH_LF_END);
    w->fd_warn_ns = now;
    w->fd_warn_skipped = 0;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    worker_t *w = arg;
    ah_http_server_t *s = w->srv;
    (void)what;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                out_of_fds(w, errno);
            return; /* EAGAIN or a resource error: try at the next readiness */
        }
        atomic_fetch_add_explicit(&w->stat_accepted, 1, memory_order_relaxed);
        long total = atomic_fetch_add(&s->total_conns, 1) + 1;
        if (total > s->o.max_connections) {
            atomic_fetch_sub(&s->total_conns, 1);
            atomic_fetch_add_explicit(&w->stat_rejected, 1, memory_order_relaxed);
            /* Best effort: the socket buffer of a fresh connection takes this at once. */
            char reply[512];
            int len = build_overload_reply(reply, sizeof(reply));
            ssize_t wr = write(fd, reply, (size_t)len);
            (void)wr;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ah_http_conn_accept(w, fd, (struct sockaddr *)&ss, sl);
    }
}

void ah_http_worker_conn_gone(worker_t *w)
{
    w->n_conns--;
    atomic_store_explicit(&w->stat_conns, w->n_conns, memory_order_relaxed);
    atomic_fetch_sub(&w->srv->total_conns, 1);
    if (w->draining && w->n_conns == 0)
        event_base_loopbreak(ah_loop_base(w->loop));
}

void ah_http_worker_refresh_date(worker_t *w)
{
    time_t now = time(NULL);
    if (now == w->date_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    w->date_sec = now;
}

/* xorshift128+: request ids need to be unique, not secret; seeded from getrandom. */
static uint64_t rng_next(uint64_t s[2])
{
    uint64_t x = s[0], y = s[1];
    s[0] = y;
    x ^= x << 23;
    s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s[1] + y;
}

/* "req_" + 20 base62 characters (about 119 random bits) from two 64-bit draws: plain
 * 64-bit divisions, not the big-number base62 of ids.c (this runs on every request). */
void ah_http_worker_gen_id(worker_t *w, char *out, size_t n)
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if (n < 25) {
        out[0] = '\0';
        return;
    }
    memcpy(out, "req_", 4);
    uint64_t v[2] = {rng_next(w->rng), rng_next(w->rng)};
    for (int i = 0; i < 20; i++) {
        uint64_t *x = &v[i / 10];
        out[4 + i] = alphabet[*x % 62];
        *x /= 62;
    }
    out[24] = '\0';
}

static void access_log_flush(worker_t *w)
{
    if (w->access_log.len) {
        ah_log_write(w->access_log.data, w->access_log.len);
        ah_buf_reset(&w->access_log);
    }
}

/*
 * One access-log line, written by hand rather than through ah_log_format: it
 * runs for every request, and its fields are fixed and safe (the path is
 * escaped, the query is never logged, ids and routes are plain tokens), so
 * the generic formatter's secret checks and printf are not needed.
 */
void ah_http_worker_access_log(worker_t *w, ah_http_req_t *r, uint64_t dur_ns)
{
    if (!ah_log_enabled(AH_LOG_INFO))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != w->log_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(w->log_ts, sizeof(w->log_ts), "%Y-%m-%dT%H:%M:%S", &tm);
        w->log_sec = ts.tv_sec;
    }
    ah_buf_t *b = &w->access_log;
    long ms = ts.tv_nsec / 1000000;
    char frac[6] = {
        '.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z', '\0'};
    ah_buf_puts(b, "{\"ts\":\"");
    ah_buf_puts(b, w->log_ts);
    ah_buf_puts(b, frac);
    ah_buf_puts(
        b, "\",\"level\":\"info\",\"msg\":\"request\",\"component\":\"http\",\"request_id\":\"");
    ah_buf_puts(b, r->id);
    ah_buf_puts(b, "\",\"method\":\"");
    ah_buf_puts(b, ah_http_method_name(r->head.method));
    ah_buf_puts(b, "\",\"path\":\"");
    if (r->head.path)
        ah_buf_json_escape(b, r->head.path, r->head.path_len < 512 ? r->head.path_len : 512);
    ah_buf_puts(b, "\",\"route\":\"");
    ah_buf_puts(b, r->route ? r->route->pattern : "");
    ah_buf_puts(b, "\",\"status\":");
    ah_buf_put_u64(b, (unsigned)r->status);
    uint64_t us = dur_ns / 1000;
    char dec[5] = {'.', (char)('0' + us % 1000 / 100), (char)('0' + us % 100 / 10),
                   (char)('0' + us % 10), '\0'};
    ah_buf_puts(b, ",\"duration_ms\":");
    ah_buf_put_u64(b, us / 1000);
    ah_buf_puts(b, dec);
    ah_buf_puts(b, ",\"bytes_in\":");
    ah_buf_put_u64(b, r->body.len);
    ah_buf_puts(b, ",\"bytes_out\":");
    ah_buf_put_u64(b, r->bytes_out);
    ah_buf_puts(b, ",\"remote\":\"");
    ah_buf_puts(b, r->conn->remote);
    ah_buf_puts(b, "\"}\n");
    if (b->len >= ACCESS_LOG_FLUSH)
        access_log_flush(w);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    (void)fd;
    (void)what;
    ah_http_conn_tick(w, ah_mono_ns());
    access_log_flush(w);
    if (w->accept_paused && w->accept_ev && !w->draining) {
        w->accept_paused = false;
        event_add(w->accept_ev, NULL);
    }
}

static void do_drain(void *arg)
{
    worker_t *w = arg;
    if (w->draining)
        return;
    w->draining = true;
    if (w->accept_ev) {
        event_free(w->accept_ev);
        w->accept_ev = NULL;
    }
    if (w->listen_fd >= 0) {
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    conn_t *c = w->conns;
    while (c) {
        conn_t *next = c->next;
        ah_http_conn_drain(c);
        c = next;
    }
    if (w->n_conns == 0)
        event_base_loopbreak(ah_loop_base(w->loop));
}

static void do_stop(void *arg)
{
    worker_t *w = arg;
    w->stopped = true;
    event_base_loopbreak(ah_loop_base(w->loop));
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    ah_http_server_t *s = w->srv;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals belong to the main thread */
    if (s->o.on_worker_start)
        s->o.on_worker_start(w->loop, w->index, s->o.ud);
    ah_loop_run(w->loop);
    /* Drained or stopped. Cut whatever is left (only after the grace period). */
    access_log_flush(w);
    conn_t *c = w->conns;
    while (c) {
        conn_t *next = c->next;
        ah_http_conn_close(c);
        c = next;
    }
    access_log_flush(w);
    if (s->o.on_worker_stop)
        s->o.on_worker_stop(w->loop, w->index, s->o.ud);
    ah_http_conn_free_cache(w);
    atomic_store(&w->finished, true);
    pthread_mutex_lock(&s->mu);
    s->n_finished++;
    pthread_cond_broadcast(&s->done_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int ah_http_server_new(const ah_http_server_opts_t *opts, ah_http_server_t **out, ah_buf_t *err)
{
    ah_http_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->o = *opts;
    if (s->o.workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->o.workers = n > 0 ? (int)n : 1;
    }
    if (!s->o.max_output_bytes)
        s->o.max_output_bytes = 8u << 20;
    if (!s->o.arena_cap)
        s->o.arena_cap = 4u << 20;
    if (s->o.max_headers <= 0)
        s->o.max_headers = 100;
    if (!s->o.max_header_bytes)
        s->o.max_header_bytes = 16384;
    if (s->o.max_connections <= 0)
        s->o.max_connections = 10000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    int rc = parse_listen(opts->listen, &s->addr, &s->addr_len, err);
    if (rc) {
        ah_http_server_free(s);
        return rc;
    }
    s->workers = calloc((size_t)s->o.workers, sizeof(worker_t));
    if (!s->workers) {
        ah_http_server_free(s);
        return -ENOMEM;
    }
    for (int i = 0; i < s->o.workers; i++) {
        worker_t *w = &s->workers[i];
        w->srv = s;
        w->index = i;
        w->listen_fd = -1;
        ah_buf_init(&w->access_log, 0);
        ah_random_bytes(w->rng, sizeof(w->rng));
        w->rng[0] |= 1;
        s->n_workers = i + 1;
        w->loop = ah_loop_new();
        if (!w->loop) {
            ah_buf_printf(err, "cannot create event loop");
            ah_http_server_free(s);
            return -ENOMEM;
        }
        int fd = open_listener(&s->addr, s->addr_len, err, opts->listen);
        if (fd < 0) {
            ah_http_server_free(s);
            return fd;
        }
        w->listen_fd = fd;
        if (i == 0) {
            /* With port 0 the kernel picked one: the other workers bind that port. */
            socklen_t sl = sizeof(s->addr);
            getsockname(fd, (struct sockaddr *)&s->addr, &sl);
            s->addr_len = sl;
            format_addr(&s->addr, s->addr_str, sizeof(s->addr_str));
        }
        struct event_base *base = ah_loop_base(w->loop);
        w->accept_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, w);
        w->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, w);
        struct timeval tv = {0, TICK_MS * 1000};
        if (!w->accept_ev || !w->tick_ev || event_add(w->accept_ev, NULL) ||
            event_add(w->tick_ev, &tv)) {
            ah_buf_printf(err, "cannot register listener events");
            ah_http_server_free(s);
            return -ENOMEM;
        }
    }
    *out = s;
    return 0;
}

void ah_http_server_addr(const ah_http_server_t *s, char *buf, size_t n)
{
    snprintf(buf, n, "%s", s->addr_str);
}

int ah_http_server_workers(const ah_http_server_t *s)
{
    return s->n_workers;
}

int ah_http_server_start(ah_http_server_t *s)
{
    for (int i = 0; i < s->n_workers; i++) {
        int rc = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
        if (rc) {
            /* Stop those already running so the caller can free the server. */
            for (int j = 0; j < i; j++) {
                ah_loop_post(s->workers[j].loop, do_stop, &s->workers[j]);
                pthread_join(s->workers[j].thread, NULL);
            }
            for (int j = i; j < s->n_workers; j++)
                atomic_store(&s->workers[j].finished, true);
            return -rc;
        }
    }
    return 0;
}

void ah_http_server_drain(ah_http_server_t *s)
{
    if (atomic_exchange(&s->draining, true))
        return;
    for (int i = 0; i < s->n_workers; i++)
        ah_loop_post(s->workers[i].loop, do_drain, &s->workers[i]);
}

bool ah_http_server_draining(const ah_http_server_t *s)
{
    return atomic_load(&((ah_http_server_t *)s)->draining);
}

int ah_http_server_wait(ah_http_server_t *s, double grace_s)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)grace_s;
    dl.tv_nsec += (long)((grace_s - (double)(time_t)grace_s) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    while (s->n_finished < s->n_workers) {
        if (pthread_cond_timedwait(&s->done_cv, &s->mu, &dl) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        for (int i = 0; i < s->n_workers; i++)
            if (!atomic_load(&s->workers[i].finished))
                ah_loop_post(s->workers[i].loop, do_stop, &s->workers[i]);
    }
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].thread)
            pthread_join(s->workers[i].thread, NULL);
    return rc;
}

void ah_http_server_stats(const ah_http_server_t *s, ah_http_server_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = &s->workers[i];
        st->connections += atomic_load_explicit(&w->stat_conns, memory_order_relaxed);
        st->in_flight += atomic_load_explicit(&w->stat_in_flight, memory_order_relaxed);
        st->accepted += atomic_load_explicit(&w->stat_accepted, memory_order_relaxed);
        st->rejected_overload += atomic_load_explicit(&w->stat_rejected, memory_order_relaxed);
    }
}

void ah_http_server_free(ah_http_server_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = &s->workers[i];
        if (w->accept_ev)
            event_free(w->accept_ev);
        if (w->tick_ev)
            event_free(w->tick_ev);
        if (w->listen_fd >= 0)
            close(w->listen_fd);
        ah_buf_free(&w->access_log);
        ah_loop_free(w->loop);
    }
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->done_cv);
    free(s);
}
