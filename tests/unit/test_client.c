/*
 * test_client.c - the upstream HTTP client (http/client.h) against real
 * servers on loopback: our own HTTP server (src/http/server.h) with fast,
 * slow, streaming, silent, large and echo routes, plus raw TCP sockets for
 * refused connections, a full accept queue and a connection dropped mid-body.
 * The client runs on its own loop on the test thread; the server on its
 * worker thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/loop.h"
#include "http/client.h"
#include "http/server.h"

/* ---- the upstream: our HTTP server ---- */

static ah_http_server_t *g_srv;
static ah_router_t *g_router;
static char g_base[96];         /* "http://127.0.0.1:port" */
static atomic_int g_aborts;     /* server-side on_abort calls */
static atomic_int g_stream_end; /* streams the server finished normally */

static long query_long(ah_http_req_t *r, const char *name, long def)
{
    const char *v = ah_http_req_query(r, name);
    if (!v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    return *end ? def : n;
}

static void h_fast(ah_http_req_t *r)
{
    static const char body[] = "{\"ok\":true}";
    ah_http_reply_json(r, 200, body, sizeof(body) - 1);
}

static void h_echo(ah_http_req_t *r)
{
    const char *t = ah_http_req_header_str(r, "x-test");
    const char *ex = ah_http_req_header_str(r, "expect");
    const char *ua = ah_http_req_header_str(r, "user-agent");
    const char *ct = ah_http_req_header_str(r, "content-type");
    const char *acc = ah_http_req_header_str(r, "accept");
    ah_http_req_add_header(r, "x-got-accept", acc ? acc : "none");
    ah_http_req_add_header(r, "x-got-test", t ? t : "none");
    ah_http_req_add_header(r, "x-got-expect", ex ? ex : "none");
    ah_http_req_add_header(r, "x-got-ua", ua ? ua : "none");
    ah_http_req_add_header(r, "x-method", ah_http_method_name(ah_http_req_method(r)));
    size_t n;
    const char *b = ah_http_req_body(r, &n);
    ah_http_reply(r, 200, ct ? ct : "application/octet-stream", b, n);
}

static void h_status(ah_http_req_t *r)
{
    long code = strtol(ah_http_req_param(r, "code"), NULL, 10);
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"message\":\"status %ld\"}}", code);
    ah_http_reply_json(r, (int)code, body, (size_t)n);
}

static void h_large(ah_http_req_t *r)
{
    size_t n = (size_t)query_long(r, "bytes", 1000);
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + i % 26);
    ah_http_reply(r, 200, "text/plain", b, n);
    free(b);
}

/* Answers nothing until the client goes away. */
static void never_abort(void *ud)
{
    ah_http_req_t *r = ud;
    atomic_fetch_add(&g_aborts, 1);
    ah_http_reply(r, 499, NULL, NULL, 0); /* terminal call: only frees */
}

static void h_never(ah_http_req_t *r)
{
    ah_http_req_on_abort(r, never_abort, r);
}

/* Timer-driven replies (slow and streaming) share this job. */
typedef struct job {
    ah_http_req_t *req;
    struct event *tm;
    long left, ms, i;
    bool in_tick, aborted;
} job_t;

static void job_free(job_t *j)
{
    event_free(j->tm);
    free(j);
}

static void job_abort(void *ud)
{
    job_t *j = ud;
    atomic_fetch_add(&g_aborts, 1);
    j->aborted = true;
    if (j->in_tick)
        return; /* the tick cleans up after the write that noticed it */
    if (ah_http_req_status(j->req) == 0)
        ah_http_reply(j->req, 499, NULL, NULL, 0);
    else
        ah_http_stream_end(j->req);
    job_free(j);
}

static void arm(job_t *j)
{
    struct timeval tv = {j->ms / 1000, (j->ms % 1000) * 1000};
    evtimer_add(j->tm, &tv);
}

static job_t *job_new(ah_http_req_t *r, event_callback_fn fn, long left, long ms)
{
    job_t *j = calloc(1, sizeof(*j));
    j->req = r;
    j->left = left;
    j->ms = ms;
    j->tm = evtimer_new(ah_loop_base(ah_http_req_loop(r)), fn, j);
    ah_http_req_on_abort(r, job_abort, j);
    arm(j);
    return j;
}

static void slow_tick(evutil_socket_t fd, short what, void *arg)
{
    job_t *j = arg;
    (void)fd;
    (void)what;
    ah_http_reply(j->req, 200, "text/plain", "slow", 4);
    job_free(j);
}

static void h_slow(ah_http_req_t *r)
{
    job_new(r, slow_tick, 1, query_long(r, "ms", 50));
}

static void stream_tick(evutil_socket_t fd, short what, void *arg)
{
    job_t *j = arg;
    (void)fd;
    (void)what;
    char chunk[32];
    int n = snprintf(chunk, sizeof(chunk), "chunk %ld\n", j->i++);
    j->in_tick = true;
    ah_http_stream_write(j->req, chunk, (size_t)n);
    j->in_tick = false;
    if (j->aborted) {
        ah_http_stream_end(j->req);
        job_free(j);
        return;
    }
    if (--j->left > 0) {
        arm(j);
        return;
    }
    atomic_fetch_add(&g_stream_end, 1);
    ah_http_stream_end(j->req);
    job_free(j);
}

static void h_stream(ah_http_req_t *r)
{
    ah_http_stream_start(r, 200, "text/plain");
    job_new(r, stream_tick, query_long(r, "n", 5), query_long(r, "ms", 5));
}

static int group_setup(void **st)
{
    (void)st;
    assert_int_equal(ah_http_client_global_init(), 0);
    g_router = ah_router_new();
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/fast", (void *)h_fast, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_POST, "/echo", (void *)h_echo, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_PUT, "/echo", (void *)h_echo, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_DELETE, "/echo", (void *)h_echo, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/status/{code}", (void *)h_status, 0),
                     0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/large", (void *)h_large, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/never", (void *)h_never, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/slow", (void *)h_slow, 0), 0);
    assert_int_equal(ah_router_add(g_router, AH_HTTP_GET, "/stream", (void *)h_stream, 0), 0);
    ah_http_server_opts_t so = {
        .listen = "127.0.0.1:0",
        .workers = 1,
        .max_body_bytes = 4u << 20,
        .router = g_router,
    };
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_http_server_new(&so, &g_srv, &err);
    if (rc)
        fprintf(stderr, "server: %s\n", err.data ? err.data : "?");
    ah_buf_free(&err);
    assert_int_equal(rc, 0);
    assert_int_equal(ah_http_server_start(g_srv), 0);
    char addr[80];
    ah_http_server_addr(g_srv, addr, sizeof(addr));
    snprintf(g_base, sizeof(g_base), "http://%s", addr);
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    ah_http_server_drain(g_srv);
    ah_http_server_wait(g_srv, 2.0);
    ah_http_server_free(g_srv);
    ah_router_free(g_router);
    ah_http_client_global_cleanup();
    return 0;
}

/* ---- client-side helpers ---- */

typedef struct rec {
    ah_loop_t *loop;
    ah_http_client_t *cl;
    ah_http_call_t *call;
    int done, rc, status, headers_calls, data_calls;
    bool data_before_headers, data_after_done, stop_on_done;
    ah_buf_t data; /* streamed bytes */
    ah_buf_t body; /* buffered body, copied in on_done */
    char hdr[128]; /* value of want_hdr, copied in on_done */
    const char *want_hdr;
    ah_http_timeout_kind_t tkind;
    char err[256];
    double ttfb;
    uint64_t done_ns;
} rec_t;

static void rec_init(rec_t *r, ah_loop_t *loop, ah_http_client_t *cl)
{
    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->cl = cl;
    r->stop_on_done = true;
    r->rc = 1;
    ah_buf_init(&r->data, 0);
    ah_buf_init(&r->body, 0);
}

static void rec_free(rec_t *r)
{
    ah_buf_free(&r->data);
    ah_buf_free(&r->body);
}

static void on_headers(ah_http_call_t *c, int status, void *ud)
{
    rec_t *r = ud;
    r->headers_calls++;
    assert_int_equal(ah_http_call_status(c), status);
    r->status = status;
}

static void on_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    rec_t *r = ud;
    (void)c;
    if (!r->headers_calls)
        r->data_before_headers = true;
    if (r->done)
        r->data_after_done = true;
    r->data_calls++;
    ah_buf_append(&r->data, p, n);
}

static void on_done(ah_http_call_t *c, int rc, void *ud)
{
    rec_t *r = ud;
    r->done++;
    r->rc = rc;
    r->status = ah_http_call_status(c);
    r->tkind = ah_http_call_timeout_kind(c);
    r->ttfb = ah_http_call_ttfb_s(c);
    r->done_ns = ah_mono_ns();
    snprintf(r->err, sizeof(r->err), "%s", ah_http_call_error(c));
    size_t n;
    const char *b = ah_http_call_body(c, &n);
    ah_buf_append(&r->body, b, n);
    if (r->want_hdr) {
        const char *v = ah_http_call_header(c, r->want_hdr);
        snprintf(r->hdr, sizeof(r->hdr), "%s", v ? v : "(null)");
    }
    if (r->stop_on_done)
        ah_loop_stop(r->loop);
}

static ah_http_call_opts_t opts_for(rec_t *r, const char *method, const char *path)
{
    static char url[256];
    snprintf(url, sizeof(url), "%s%s", g_base, path);
    ah_http_call_opts_t o = {
        .method = method,
        .url = url,
        .on_headers = on_headers,
        .on_data = on_data,
        .on_done = on_done,
        .ud = r,
    };
    return o;
}

static bool g_watchdog_fired;

static void watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    g_watchdog_fired = true;
    event_base_loopbreak(arg);
}

/* Runs the loop until something stops it, or fails the test after secs. */
static void run(ah_loop_t *loop, double secs)
{
    struct event_base *base = ah_loop_base(loop);
    struct event *wd = evtimer_new(base, watchdog, base);
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    evtimer_add(wd, &tv);
    g_watchdog_fired = false;
    ah_loop_run(loop);
    event_free(wd);
}

/* Runs the loop for exactly secs (the watchdog is the stop). */
static void run_for(ah_loop_t *loop, double secs)
{
    run(loop, secs);
    g_watchdog_fired = false;
}

static void wait_aborts(int target)
{
    for (int i = 0; i < 400 && atomic_load(&g_aborts) < target; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    assert_true(atomic_load(&g_aborts) >= target);
}

typedef struct fixture {
    ah_loop_t *loop;
    ah_http_client_t *cl;
} fixture_t;

/*
 * The suite runs twice: plain http:// on the native path (the default), then
 * with curl_only, so both paths keep the same contract.
 */
static bool g_curl_only;

static int setup(void **st)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->loop = ah_loop_new();
    assert_non_null(f->loop);
    ah_http_client_opts_t co = {.curl_only = g_curl_only};
    f->cl = ah_http_client_new(f->loop, &co);
    assert_non_null(f->cl);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture_t *f = *st;
    ah_http_client_t *cl = f->cl;
    if (cl) {
        ah_http_client_stats_t s;
        ah_http_client_stats(cl, &s);
        ah_http_client_free(cl);
        assert_int_equal(s.in_flight, 0);
        if (g_curl_only)
            assert_int_equal(s.native, 0);
    }
    ah_loop_free(f->loop);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_get_buffered(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    r.want_hdr = "CONTENT-TYPE";
    ah_http_call_opts_t o = opts_for(&r, "GET", "/fast");
    ah_http_call_t *c = NULL;
    assert_int_equal(ah_http_call_start(f->cl, &o, &c), 0);
    assert_non_null(c);
    assert_int_equal(ah_http_call_status(c), 0);
    assert_int_equal(r.done, 0); /* never from inside start */
    run(f->loop, 5);
    assert_false(g_watchdog_fired);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.headers_calls, 1);
    assert_int_equal(r.data_calls, 0); /* buffered mode */
    assert_string_equal(r.body.data, "{\"ok\":true}");
    assert_string_equal(r.hdr, "application/json");
    assert_true(r.ttfb > 0 && r.ttfb < 5);
    assert_string_equal(r.err, "");
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.native, g_curl_only ? 0 : 1); /* http:// to 127.0.0.1 goes native */
    rec_free(&r);
}

typedef struct iter_check {
    rec_t r;
    bool saw_request_id;
    size_t n_headers;
} iter_check_t;

static void iter_done(ah_http_call_t *c, int rc, void *ud)
{
    iter_check_t *ic = ud;
    size_t pos = 0;
    const char *n, *v;
    while (ah_http_call_header_next(c, &pos, &n, &v)) {
        ic->n_headers++;
        if (strcmp(n, "x-request-id") == 0 && v[0])
            ic->saw_request_id = true;
    }
    on_done(c, rc, &ic->r);
}

static void test_header_iteration(void **st)
{
    fixture_t *f = *st;
    iter_check_t ic = {0};
    rec_init(&ic.r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&ic.r, NULL, "/fast");
    o.on_done = iter_done;
    o.ud = &ic;
    o.on_headers = NULL;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(ic.r.rc, 0);
    assert_true(ic.saw_request_id);
    assert_true(ic.n_headers >= 4); /* Server, Date, Content-Type, x-request-id, Content-Length */
    rec_free(&ic.r);
}

static void test_post_echo(void **st)
{
    fixture_t *f = *st;
    char body[1024];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('A' + i % 23);
    const char *hdrs[] = {"X-Test: hello world", "Content-Type: text/plain", NULL};
    const char *checks[][2] = {
        {"x-got-test", "hello world"},  {"x-got-expect", "none"},
        {"x-got-accept", "*/*"},        {"x-method", "POST"},
        {"content-type", "text/plain"}, {"x-got-ua", "agenthub/" AH_VERSION}};
    for (size_t k = 0; k < sizeof(checks) / sizeof(checks[0]); k++) {
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        r.want_hdr = checks[k][0];
        ah_http_call_opts_t o = opts_for(&r, "POST", "/echo");
        char copy[sizeof(body)];
        memcpy(copy, body, sizeof(body));
        o.headers = hdrs;
        o.body = copy;
        o.body_len = sizeof(copy);
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        memset(copy, 0, sizeof(copy)); /* the body was copied by start */
        run(f->loop, 5);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, sizeof(body));
        assert_memory_equal(r.body.data, body, sizeof(body));
        assert_string_equal(r.hdr, checks[k][1]);
        rec_free(&r);
    }
    /* "Name:" removes a header the client adds; "Name: v" replaces it. */
    const char *swap[] = {"Accept:", "User-Agent: custom/1", NULL};
    const char *swap_checks[][2] = {{"x-got-accept", "none"}, {"x-got-ua", "custom/1"}};
    for (size_t k = 0; k < 2; k++) {
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        r.want_hdr = swap_checks[k][0];
        ah_http_call_opts_t o = opts_for(&r, "POST", "/echo");
        o.headers = swap;
        o.body = "x";
        o.body_len = 1;
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        run(f->loop, 5);
        assert_int_equal(r.rc, 0);
        assert_string_equal(r.hdr, swap_checks[k][1]);
        rec_free(&r);
    }
    /* PUT with a body and DELETE without one go through CUSTOMREQUEST. */
    const char *methods[] = {"PUT", "DELETE"};
    for (size_t k = 0; k < 2; k++) {
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        r.want_hdr = "x-method";
        ah_http_call_opts_t o = opts_for(&r, methods[k], "/echo");
        if (k == 0) {
            o.body = "put-body";
            o.body_len = 8;
        }
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        run(f->loop, 5);
        assert_int_equal(r.rc, 0);
        assert_string_equal(r.hdr, methods[k]);
        assert_string_equal(r.body.data ? r.body.data : "", k == 0 ? "put-body" : "");
        rec_free(&r);
    }
}

static void test_head(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    r.want_hdr = "content-length";
    ah_http_call_opts_t o = opts_for(&r, "HEAD", "/fast");
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    assert_string_equal(r.hdr, "11");
    rec_free(&r);
    /* A GET on the same (recycled) handle has a body again. */
    rec_init(&r, f->loop, f->cl);
    o = opts_for(&r, "GET", "/fast");
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.body.data, "{\"ok\":true}");
    rec_free(&r);
}

static void test_status_codes_are_not_errors(void **st)
{
    fixture_t *f = *st;
    const char *paths[] = {"/status/404", "/status/500", "/status/429", "/no-such-route"};
    int want[] = {404, 500, 429, 404};
    for (size_t i = 0; i < 4; i++) {
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        ah_http_call_opts_t o = opts_for(&r, "GET", paths[i]);
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        run(f->loop, 5);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.status, want[i]);
        assert_non_null(strstr(r.body.data, "\"error\""));
        rec_free(&r);
    }
}

static void test_stream_in_order(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/stream?n=6&ms=5");
    o.stream = true;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 200);
    assert_false(r.data_before_headers);
    assert_false(r.data_after_done);
    assert_true(r.data_calls >= 2); /* pieces arrive as sent, not at the end */
    assert_string_equal(r.data.data, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n");
    assert_int_equal(r.body.len, 0); /* stream mode buffers nothing */
    rec_free(&r);
}

static void switch_to_buffered(ah_http_call_t *c, int status, void *ud)
{
    on_headers(c, status, ud);
    if (status != 200)
        assert_int_equal(ah_http_call_set_stream(c, false), 0);
}

static void test_stream_error_body_buffered(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/status/429");
    o.stream = true;
    o.on_headers = switch_to_buffered;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.data_calls, 0);
    assert_non_null(strstr(r.body.data, "status 429"));
    rec_free(&r);
}

static void test_first_byte_timeout(void **st)
{
    fixture_t *f = *st;
    int aborts = atomic_load(&g_aborts);
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/never");
    o.first_byte_timeout_s = 0.2;
    o.total_timeout_s = 10;
    uint64_t t0 = ah_mono_ns();
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    double took = (double)(r.done_ns - t0) / 1e9;
    assert_int_equal(r.rc, -ETIMEDOUT);
    assert_int_equal(r.tkind, AH_HTTP_TIMEOUT_FIRST_BYTE);
    assert_int_equal(r.headers_calls, 0);
    assert_true(took >= 0.19 && took < 2.0);
    assert_non_null(strstr(r.err, "first_byte_timeout_s"));
    wait_aborts(aborts + 1); /* the connection was closed, the upstream noticed */
    rec_free(&r);
}

static void test_total_timeout(void **st)
{
    fixture_t *f = *st;
    int aborts = atomic_load(&g_aborts);
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/stream?n=100&ms=20");
    o.stream = true;
    o.first_byte_timeout_s = 0.2; /* disarmed at the head: must not fire later */
    o.total_timeout_s = 0.4;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, -ETIMEDOUT);
    assert_int_equal(r.tkind, AH_HTTP_TIMEOUT_TOTAL);
    assert_int_equal(r.headers_calls, 1);
    assert_true(r.data_calls > 0);
    wait_aborts(aborts + 1);
    rec_free(&r);
}

/* A port that was just bound and closed: nobody listens there. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connection_refused(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", dead_port());
    ah_http_call_opts_t o = opts_for(&r, "GET", "/");
    o.url = url;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, -ECONNREFUSED);
    assert_int_equal(r.status, 0);
    assert_true(strlen(r.err) > 0);
    rec_free(&r);
}

static void test_connect_timeout(void **st)
{
    fixture_t *f = *st;
    /* A listener with a full accept queue: the kernel drops further SYNs. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&a, &l);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    ah_http_call_opts_t o = opts_for(&r, "GET", "/");
    o.url = url;
    o.connect_timeout_s = 0.3;
    uint64_t t0 = ah_mono_ns();
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    double took = (double)(r.done_ns - t0) / 1e9;
    assert_int_equal(r.rc, -ETIMEDOUT);
    assert_int_equal(r.tkind, AH_HTTP_TIMEOUT_CONNECT);
    assert_true(took >= 0.25 && took < 3.0);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    rec_free(&r);
}

/* Raw server: answers one request with the head and part of a chunked body, then closes. */
typedef struct raw_srv {
    int lfd;
    int port;
    pthread_t th;
    const char *reply;
} raw_srv_t;

static void *raw_main(void *arg)
{
    raw_srv_t *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char buf[4096];
    size_t have = 0;
    while (have < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    ssize_t w = write(fd, s->reply, strlen(s->reply));
    (void)w;
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL); /* let the client see the bytes before the close */
    close(fd);
    return NULL;
}

static void raw_start(raw_srv_t *s, const char *reply)
{
    s->reply = reply;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &l);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, raw_main, s), 0);
}

static void raw_stop(raw_srv_t *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static void test_drop_mid_stream(void **st)
{
    fixture_t *f = *st;
    static const char *replies[] = {
        /* chunked, cut before the last chunk */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        /* Content-Length promises more than is sent */
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
    };
    for (size_t i = 0; i < 2; i++) {
        raw_srv_t s;
        raw_start(&s, replies[i]);
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
        ah_http_call_opts_t o = opts_for(&r, "GET", "/");
        o.url = url;
        o.stream = true;
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        run(f->loop, 5);
        raw_stop(&s);
        assert_int_equal(r.rc, -ECONNRESET);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.data.data, "hello");
        rec_free(&r);
    }
    /* A server that closes without answering at all. */
    raw_srv_t s;
    raw_start(&s, "");
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/");
    o.url = url;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    raw_stop(&s);
    assert_int_equal(r.rc, -ECONNRESET);
    rec_free(&r);
}

/*
 * Keep-alive server that closes each connection after answering one request
 * (after a pause, as an upstream's idle timeout does). The client keeps the
 * idle connection's read event registered between calls: the close must not
 * make the loop spin, and the next call must not fail on the dead connection.
 */
typedef struct ka_srv {
    int lfd, port, conns;
    int linger_ms; /* pause between the answer and the close; 0 = none */
    pthread_t th;
} ka_srv_t;

static void *ka_main(void *arg)
{
    ka_srv_t *s = arg;
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (int i = 0; i < s->conns; i++) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char buf[4096];
        size_t have = 0;
        while (have < sizeof(buf) - 1) {
            ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = '\0';
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        ssize_t w = write(fd, reply, sizeof(reply) - 1);
        (void)w;
        struct timespec ts = {0, (long)s->linger_ms * 1000000L};
        if (s->linger_ms)
            nanosleep(&ts, NULL);
        close(fd);
    }
    return NULL;
}

/* Listens on a free loopback port and runs ka_main on its own thread. */
static void ka_start(ka_srv_t *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &l);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, ka_main, s), 0);
}

static void test_pooled_connection_closed_while_idle(void **st)
{
    fixture_t *f = *st;
    ka_srv_t s = {.conns = 2, .linger_ms = 50};
    ka_start(&s);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
    ah_http_client_stats_t before, idle, after;
    ah_http_client_stats(f->cl, &before);
    for (int i = 0; i < 2; i++) {
        rec_t r;
        rec_init(&r, f->loop, f->cl);
        ah_http_call_opts_t o = opts_for(&r, "GET", "/");
        o.url = url;
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
        run(f->loop, 5);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.status, 200);
        assert_memory_equal(r.body.data, "ok", 2);
        rec_free(&r);
        if (i == 0) {
            ah_http_client_stats(f->cl, &idle);
            run_for(f->loop, 0.3); /* the server closes the idle connection meanwhile */
            ah_http_client_stats(f->cl, &after);
            /* One wake-up for the close, not one per loop turn. */
            assert_true(after.wakeups - idle.wakeups <= 2);
        }
    }
    ah_http_client_stats(f->cl, &after);
    assert_int_equal(after.connections - before.connections, 2);
    assert_int_equal(after.failed, before.failed);
    pthread_join(s.th, NULL);
    close(s.lfd);
}

static void test_response_cap(void **st)
{
    fixture_t *f = *st;
    /* Content-Length over the cap: refused before the body is read. */
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/large?bytes=100000");
    o.max_response_bytes = 50000;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, -E2BIG);
    assert_non_null(strstr(r.err, "max_response_bytes"));
    rec_free(&r);
    /* Exactly at the cap is fine. */
    rec_init(&r, f->loop, f->cl);
    o = opts_for(&r, "GET", "/large?bytes=50000");
    o.max_response_bytes = 50000;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.body.len, 50000);
    assert_int_equal(r.body.data[49999], (char)('a' + 49999 % 26));
    rec_free(&r);
    /* Chunked stream (no length known up front): counted as it arrives. */
    rec_init(&r, f->loop, f->cl);
    o = opts_for(&r, "GET", "/stream?n=20&ms=1");
    o.stream = true;
    o.max_response_bytes = 30;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, -E2BIG);
    assert_true(r.data.len <= 30);
    rec_free(&r);
}

static void cancel_on_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    rec_t *r = ud;
    on_data(c, p, n, ud);
    ah_http_call_cancel(c); /* from inside curl's write callback */
    ah_http_call_cancel(c); /* idempotent */
    ah_loop_stop(r->loop);
}

static void test_cancel_mid_stream(void **st)
{
    fixture_t *f = *st;
    int aborts = atomic_load(&g_aborts);
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/stream?n=50&ms=10");
    o.stream = true;
    o.on_data = cancel_on_data;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_false(g_watchdog_fired);
    assert_int_equal(r.data_calls, 1);
    wait_aborts(aborts + 1);
    run_for(f->loop, 0.1); /* nothing more may arrive */
    assert_int_equal(r.data_calls, 1);
    assert_int_equal(r.done, 0);
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.cancelled, 1);
    rec_free(&r);
}

typedef struct cancel_later {
    ah_http_call_t *call;
    ah_loop_t *loop;
} cancel_later_t;

static void cancel_tick(evutil_socket_t fd, short what, void *arg)
{
    cancel_later_t *cx = arg;
    (void)fd;
    (void)what;
    ah_http_call_cancel(cx->call);
    ah_loop_stop(cx->loop);
}

static void test_cancel_from_loop(void **st)
{
    fixture_t *f = *st;
    int aborts = atomic_load(&g_aborts);
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/never");
    cancel_later_t cx = {NULL, f->loop};
    assert_int_equal(ah_http_call_start(f->cl, &o, &cx.call), 0);
    struct event *t = evtimer_new(ah_loop_base(f->loop), cancel_tick, &cx);
    struct timeval tv = {0, 50000};
    evtimer_add(t, &tv);
    run(f->loop, 5);
    event_free(t);
    wait_aborts(aborts + 1);
    run_for(f->loop, 0.05);
    assert_int_equal(r.done, 0);
    /* Cancelling a call that was never driven (straight after start) is fine too. */
    ah_http_call_t *c;
    assert_int_equal(ah_http_call_start(f->cl, &o, &c), 0);
    ah_http_call_cancel(c);
    run_for(f->loop, 0.05);
    assert_int_equal(r.done, 0);
    rec_free(&r);
}

/* Sequential requests, each started from the previous one's on_done; ok counts 200s with
 * the expected body. */
typedef struct chain {
    rec_t r;
    ah_http_client_t *cl;
    int left, ok;
    char url[128];
    const char *expect;
} chain_t;

static void chain_done(ah_http_call_t *c, int rc, void *ud)
{
    chain_t *ch = ud;
    size_t n;
    const char *b = ah_http_call_body(c, &n);
    if (rc == 0 && ah_http_call_status(c) == 200 && n == strlen(ch->expect) &&
        memcmp(b, ch->expect, n) == 0)
        ch->ok++;
    if (--ch->left == 0) {
        ah_loop_stop(ch->r.loop);
        return;
    }
    ah_http_call_opts_t o = {.url = ch->url, .on_done = chain_done, .ud = ch};
    assert_int_equal(ah_http_call_start(ch->cl, &o, NULL), 0);
}

static void test_sequential_reuse(void **st)
{
    fixture_t *f = *st;
    chain_t ch = {0};
    rec_init(&ch.r, f->loop, f->cl);
    ch.cl = f->cl;
    ch.left = 200;
    ch.expect = "{\"ok\":true}";
    snprintf(ch.url, sizeof(ch.url), "%s/fast", g_base);
    ah_http_server_stats_t before, after;
    ah_http_server_stats(g_srv, &before);
    ah_http_call_opts_t o = {.url = ch.url, .on_done = chain_done, .ud = &ch};
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 20);
    assert_false(g_watchdog_fired);
    assert_int_equal(ch.ok, 200);
    ah_http_server_stats(g_srv, &after);
    assert_true(after.accepted - before.accepted <= 2);
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_true(s.connections <= 2);
    assert_int_equal(s.completed, 200);
    assert_true(s.idle_calls <= 2); /* on_done starts the next before its call is recycled */
    rec_free(&ch.r);
}

typedef struct fan {
    ah_loop_t *loop;
    int done, ok;
} fan_t;

static void fan_done(ah_http_call_t *c, int rc, void *ud)
{
    fan_t *fa = ud;
    size_t n;
    const char *b = ah_http_call_body(c, &n);
    if (rc == 0 && ah_http_call_status(c) == 200 && n == 4 && memcmp(b, "slow", 4) == 0)
        fa->ok++;
    if (++fa->done == 100)
        ah_loop_stop(fa->loop);
}

static void test_concurrent_100(void **st)
{
    fixture_t *f = *st;
    fan_t fa = {f->loop, 0, 0};
    char url[128];
    snprintf(url, sizeof(url), "%s/slow?ms=30", g_base);
    uint64_t t0 = ah_mono_ns();
    for (int i = 0; i < 100; i++) {
        ah_http_call_opts_t o = {.url = url, .on_done = fan_done, .ud = &fa};
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    }
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.in_flight, 100);
    run(f->loop, 10);
    assert_false(g_watchdog_fired);
    assert_int_equal(fa.ok, 100);
    /* In parallel: far less than 100 x 30 ms. */
    assert_true((double)(ah_mono_ns() - t0) / 1e9 < 2.0);
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.idle_calls, 100);
}

/* A call started from inside on_data (curl's callback) must be deferred, then run. */
typedef struct nested {
    rec_t outer, inner;
    bool started;
} nested_t;

static void nested_on_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    nested_t *ne = ud;
    on_data(c, p, n, &ne->outer);
    if (!ne->started) {
        ne->started = true;
        ah_http_call_opts_t o = opts_for(&ne->inner, "GET", "/fast");
        assert_int_equal(ah_http_call_start(ne->outer.cl, &o, NULL), 0);
    }
}

static void nested_done(ah_http_call_t *c, int rc, void *ud)
{
    nested_t *ne = ud;
    on_done(c, rc, &ne->outer);
}

static void test_start_from_on_data(void **st)
{
    fixture_t *f = *st;
    nested_t ne;
    rec_init(&ne.outer, f->loop, f->cl);
    rec_init(&ne.inner, f->loop, f->cl);
    ne.inner.stop_on_done = false;
    ne.started = false;
    ah_http_call_opts_t o = opts_for(&ne.outer, "GET", "/stream?n=5&ms=20");
    o.stream = true;
    o.on_data = nested_on_data;
    o.on_done = nested_done;
    o.ud = &ne;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(ne.outer.rc, 0);
    assert_int_equal(ne.inner.done, 1); /* /fast beats the remaining 80 ms of stream */
    assert_int_equal(ne.inner.rc, 0);
    assert_string_equal(ne.inner.body.data, "{\"ok\":true}");
    rec_free(&ne.outer);
    rec_free(&ne.inner);
}

/* Flow control: pause after the first piece, resume 150 ms later. */
typedef struct pz {
    rec_t r;
    ah_http_call_t *call;
    bool paused, resumed, data_while_paused;
    uint64_t wakeups_at_pause, wakeups_at_resume;
    struct event *tm;
} pz_t;

static void pz_resume(evutil_socket_t fd, short what, void *arg)
{
    pz_t *p = arg;
    (void)fd;
    (void)what;
    ah_http_client_stats_t s;
    ah_http_client_stats(p->r.cl, &s);
    p->wakeups_at_resume = s.wakeups;
    p->paused = false;
    p->resumed = true;
    ah_http_call_resume(p->call);
    ah_http_call_resume(p->call);         /* harmless */
    assert_int_equal(p->r.data_calls, 1); /* nothing delivered from inside resume */
}

static void pz_on_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    pz_t *pz = ud;
    if (pz->paused)
        pz->data_while_paused = true;
    on_data(c, p, n, &pz->r);
    if (!pz->resumed && pz->r.data_calls == 1) {
        ah_http_call_pause(c);
        pz->paused = true;
        ah_http_client_stats_t s;
        ah_http_client_stats(pz->r.cl, &s);
        pz->wakeups_at_pause = s.wakeups;
        struct timeval tv = {0, 150000};
        evtimer_add(pz->tm, &tv);
    }
}

static void pz_done(ah_http_call_t *c, int rc, void *ud)
{
    pz_t *pz = ud;
    on_done(c, rc, &pz->r);
}

static void test_pause_resume(void **st)
{
    fixture_t *f = *st;
    pz_t pz;
    memset(&pz, 0, sizeof(pz));
    rec_init(&pz.r, f->loop, f->cl);
    pz.tm = evtimer_new(ah_loop_base(f->loop), pz_resume, &pz);
    ah_http_call_opts_t o = opts_for(&pz.r, "GET", "/stream?n=5&ms=10");
    o.stream = true;
    o.on_data = pz_on_data;
    o.on_done = pz_done;
    o.ud = &pz;
    assert_int_equal(ah_http_call_start(f->cl, &o, &pz.call), 0);
    run(f->loop, 5);
    event_free(pz.tm);
    assert_int_equal(pz.r.rc, 0);
    assert_true(pz.resumed);
    assert_false(pz.data_while_paused);
    assert_string_equal(pz.r.data.data, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    /* While paused the socket is not watched: no busy loop over unread data. */
    assert_true(pz.wakeups_at_resume - pz.wakeups_at_pause < 10);
    rec_free(&pz.r);
}

/* Cancelling from on_headers, and cancelling another call from on_data. */
typedef struct cross {
    rec_t a, b, c;
    ah_http_call_t *call_b;
    int aborts_before;
} cross_t;

static void cross_a_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    cross_t *x = ud;
    on_data(c, p, n, &x->a);
    if (x->call_b) {
        ah_http_call_cancel(x->call_b); /* another call, from inside curl */
        x->call_b = NULL;
    }
}

static void cross_a_done(ah_http_call_t *c, int rc, void *ud)
{
    cross_t *x = ud;
    on_done(c, rc, &x->a);
}

static void cross_c_headers(ah_http_call_t *c, int status, void *ud)
{
    cross_t *x = ud;
    on_headers(c, status, &x->c);
    ah_http_call_cancel(c); /* itself, from curl's header callback */
}

static void test_cancel_from_callbacks(void **st)
{
    fixture_t *f = *st;
    cross_t x;
    memset(&x, 0, sizeof(x));
    x.aborts_before = atomic_load(&g_aborts);
    rec_init(&x.a, f->loop, f->cl);
    rec_init(&x.b, f->loop, f->cl);
    rec_init(&x.c, f->loop, f->cl);
    ah_http_call_opts_t ob = opts_for(&x.b, "GET", "/never");
    assert_int_equal(ah_http_call_start(f->cl, &ob, &x.call_b), 0);
    ah_http_call_opts_t oc = opts_for(&x.c, "GET", "/stream?n=50&ms=10");
    oc.stream = true;
    oc.on_headers = cross_c_headers;
    oc.ud = &x;
    assert_int_equal(ah_http_call_start(f->cl, &oc, NULL), 0);
    ah_http_call_opts_t oa = opts_for(&x.a, "GET", "/stream?n=4&ms=30");
    oa.stream = true;
    oa.on_data = cross_a_data;
    oa.on_done = cross_a_done;
    oa.ud = &x;
    assert_int_equal(ah_http_call_start(f->cl, &oa, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(x.a.rc, 0);
    assert_string_equal(x.a.data.data, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
    assert_int_equal(x.b.done, 0);
    assert_int_equal(x.c.done, 0);
    assert_int_equal(x.c.headers_calls, 1);
    assert_int_equal(x.c.data_calls, 0);
    wait_aborts(x.aborts_before + 2); /* /never and the cancelled stream both saw the close */
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.cancelled, 2);
    rec_free(&x.a);
    rec_free(&x.b);
    rec_free(&x.c);
}

/* One stream resumes another from inside its own on_data (curl's callback). */
typedef struct relay {
    rec_t slow, fast;
    ah_http_call_t *slow_call;
    bool paused_once, resumed;
} relay_t;

static void relay_slow_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    relay_t *rl = ud;
    on_data(c, p, n, &rl->slow);
    if (!rl->paused_once) {
        rl->paused_once = true;
        ah_http_call_pause(c);
    }
}

static void relay_slow_done(ah_http_call_t *c, int rc, void *ud)
{
    relay_t *rl = ud;
    on_done(c, rc, &rl->slow);
}

static void relay_fast_data(ah_http_call_t *c, const char *p, size_t n, void *ud)
{
    relay_t *rl = ud;
    on_data(c, p, n, &rl->fast);
    if (rl->fast.data_calls == 3 && !rl->resumed) {
        rl->resumed = true;
        ah_http_call_resume(rl->slow_call);
    }
}

static void relay_fast_done(ah_http_call_t *c, int rc, void *ud)
{
    relay_t *rl = ud;
    on_done(c, rc, &rl->fast);
}

static void test_resume_from_other_callback(void **st)
{
    fixture_t *f = *st;
    relay_t rl;
    memset(&rl, 0, sizeof(rl));
    rec_init(&rl.slow, f->loop, f->cl);
    rec_init(&rl.fast, f->loop, f->cl);
    ah_http_call_opts_t os = opts_for(&rl.slow, "GET", "/stream?n=3&ms=5");
    os.stream = true;
    os.on_data = relay_slow_data;
    os.on_done = relay_slow_done;
    os.ud = &rl;
    assert_int_equal(ah_http_call_start(f->cl, &os, &rl.slow_call), 0);
    ah_http_call_opts_t of = opts_for(&rl.fast, "GET", "/stream?n=5&ms=40");
    of.stream = true;
    of.on_data = relay_fast_data;
    of.on_done = relay_fast_done;
    of.ud = &rl;
    assert_int_equal(ah_http_call_start(f->cl, &of, NULL), 0);
    run(f->loop, 5);
    assert_true(rl.resumed);
    assert_int_equal(rl.slow.rc, 0);
    assert_string_equal(rl.slow.data.data, "chunk 0\nchunk 1\nchunk 2\n");
    run(f->loop, 5); /* the other stream ends too */
    assert_false(g_watchdog_fired);
    assert_int_equal(rl.fast.rc, 0);
    rec_free(&rl.slow);
    rec_free(&rl.fast);
}

static void test_free_with_calls_in_flight(void **st)
{
    fixture_t *f = *st;
    int aborts = atomic_load(&g_aborts);
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    for (int i = 0; i < 3; i++) {
        ah_http_call_opts_t o = opts_for(&r, "GET", "/never");
        assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    }
    run_for(f->loop, 0.1); /* requests reach the server */
    ah_http_client_free(f->cl);
    f->cl = NULL;
    wait_aborts(aborts + 3);
    run_for(f->loop, 0.05);
    assert_int_equal(r.done, 0);
    rec_free(&r);
}

static void test_bad_arguments(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    rec_init(&r, f->loop, f->cl);
    ah_http_call_opts_t o = opts_for(&r, "GET", "/fast");
    ah_http_call_t *c = (ah_http_call_t *)&r;
    o.url = NULL;
    assert_int_equal(ah_http_call_start(f->cl, &o, &c), -EINVAL);
    assert_null(c);
    o = opts_for(&r, "get", "/fast");
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), -EINVAL);
    const char *evil[] = {"X-A: b\r\nX-Injected: 1", NULL};
    o = opts_for(&r, "GET", "/fast");
    o.headers = evil;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), -EINVAL);
    o = opts_for(&r, "GET", "/fast");
    o.on_done = NULL;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), -EINVAL);
    ah_http_client_stats_t s;
    ah_http_client_stats(f->cl, &s);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.started, 0);
    /* Schemes other than http(s) fail in on_done. */
    o = opts_for(&r, "GET", "/fast");
    o.url = "file:///etc/passwd";
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_int_equal(r.rc, -EINVAL);
    assert_int_equal(r.body.len, 0);
    rec_free(&r);
}

/* One raw reply (raw_srv_t), buffered; returns the recorded call. */
static void raw_call(fixture_t *f, const char *reply, bool stream, rec_t *r)
{
    raw_srv_t s;
    raw_start(&s, reply);
    rec_init(r, f->loop, f->cl);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
    ah_http_call_opts_t o = opts_for(r, "GET", "/");
    o.url = url;
    o.stream = stream;
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    raw_stop(&s);
    assert_false(g_watchdog_fired);
}

static void test_body_framings(void **st)
{
    fixture_t *f = *st;
    rec_t r;
    /* Until close: no length, no chunking; the close ends the body. */
    raw_call(f, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", false, &r);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.body.data, "all of it");
    rec_free(&r);
    /* Interim 100 skipped, chunked with an extension and trailers, streamed de-chunked. */
    raw_call(f,
             "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\n"
             "Transfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\n"
             "X-Trailer: t\r\n\r\n",
             true, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.headers_calls, 1);
    assert_string_equal(r.data.data, "hello world");
    rec_free(&r);
    /* 204 with a (wrong) Content-Length has no body. */
    raw_call(f, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body.len, 0);
    rec_free(&r);
}

static void test_response_head_limit(void **st)
{
    fixture_t *f = *st;
    size_t n = 70u << 10;
    char *reply = malloc(n + 64);
    int h = snprintf(reply, 64, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(reply + h, 'b', n);
    static const char tail[] = "\r\nContent-Length: 0\r\n\r\n";
    memcpy(reply + h + n, tail, sizeof(tail)); /* with its NUL */
    rec_t r;
    raw_call(f, reply, false, &r);
    assert_int_equal(r.rc, -E2BIG);
    assert_true(strlen(r.err) > 0);
    rec_free(&r);
    free(reply);
    /* A malformed head is an error, not a response. */
    raw_call(f, "HTTP/1.1 2x0 OK\r\n\r\n", false, &r);
    assert_true(r.rc < 0); /* -EIO natively; curl says "unsupported response code" */
    assert_int_equal(r.status, 0);
    assert_true(strlen(r.err) > 0);
    rec_free(&r);
}

/*
 * A keep-alive upstream that closes each connection right after its answer.
 * The next call is started from on_done, in the same loop turn, so it takes
 * the pooled connection before the close is seen: the request fails before
 * any response byte and is sent again on a new connection (once), as curl
 * does; the caller sees a normal answer.
 */
static void test_stale_pooled_connection_retried(void **st)
{
    fixture_t *f = *st;
    ka_srv_t s = {.conns = 3, .linger_ms = 0};
    ka_start(&s);
    chain_t sx = {.cl = f->cl, .left = 3, .expect = "ok"};
    rec_init(&sx.r, f->loop, f->cl);
    snprintf(sx.url, sizeof(sx.url), "http://127.0.0.1:%d/x", s.port);
    ah_http_client_stats_t before, after;
    ah_http_client_stats(f->cl, &before);
    ah_http_call_opts_t o = {.url = sx.url, .on_done = chain_done, .ud = &sx};
    assert_int_equal(ah_http_call_start(f->cl, &o, NULL), 0);
    run(f->loop, 5);
    assert_false(g_watchdog_fired);
    assert_int_equal(sx.ok, 3);
    ah_http_client_stats(f->cl, &after);
    assert_int_equal(after.failed, before.failed);
    assert_int_equal(after.connections - before.connections, 3); /* one per answer */
    pthread_join(s.th, NULL);
    close(s.lfd);
    rec_free(&sx.r);
}

/* max_host_connections: further calls wait for a connection and all complete. */
static void test_host_connection_limit(void **st)
{
    fixture_t *f = *st;
    ah_http_client_opts_t co = {.max_host_connections = 2, .curl_only = g_curl_only};
    ah_http_client_t *cl = ah_http_client_new(f->loop, &co);
    assert_non_null(cl);
    fan_t fa = {f->loop, 0, 0};
    char url[128];
    snprintf(url, sizeof(url), "%s/slow?ms=20", g_base);
    ah_http_server_stats_t sb, sa;
    ah_http_server_stats(g_srv, &sb);
    for (int i = 0; i < 100; i++) {
        ah_http_call_opts_t o = {.url = url, .on_done = fan_done, .ud = &fa};
        assert_int_equal(ah_http_call_start(cl, &o, NULL), 0);
    }
    run(f->loop, 20);
    assert_false(g_watchdog_fired);
    assert_int_equal(fa.ok, 100);
    ah_http_server_stats(g_srv, &sa);
    assert_true(sa.accepted - sb.accepted <= 2);
    ah_http_client_stats_t s;
    ah_http_client_stats(cl, &s);
    assert_true(s.connections <= 2);
    assert_int_equal(s.completed, 100);
    ah_http_client_free(cl);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* raw servers write to clients that may have gone */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_iteration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_codes_are_not_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_error_body_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_byte_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pooled_connection_closed_while_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequential_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_100, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_from_on_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_from_other_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_calls_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_framings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_head_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_pooled_connection_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_connection_limit, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("native http://", tests, group_setup, group_teardown);
    g_curl_only = true;
    failed += cmocka_run_group_tests_name("libcurl", tests, group_setup, group_teardown);
    return failed;
}
