/*
 * test_runs_api.c - the read side of the runs API (api/runs_read.c) through a
 * real HTTP server and a real SQLite store: GET /v1/runs (filters, pages,
 * ownership), GET /v1/runs/{id}, GET /v1/runs/{id}/events as JSON and as SSE
 * (replay, Last-Event-ID, following a live run to its end, client leaving).
 *
 * The route table and authentication of api.c are not used: a test dispatch
 * builds the principal from x-test-key / x-test-role headers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "api/api.h"
#include "api/runs_json.h"
#include "core/clock.h"
#include "store/runs.h"
#include "store/store.h"
#include "testutil.h"

typedef struct route_fn {
    ah_api_handler_fn fn;
} route_fn_t;

static const route_fn_t r_list = {ah_api_runs_list};
static const route_fn_t r_get = {ah_api_runs_get};
static const route_fn_t r_events = {ah_api_runs_events};

typedef struct fixture {
    ah_test_store_t ts; /* the store; app.store points at ts.store */
    ah_app_t app;
    ah_router_t *router;
    ah_http_server_t *srv;
    int port;
} fixture_t;

static void test_dispatch(ah_http_req_t *req, const ah_route_t *route, void *ud)
{
    ah_app_t *app = ud;
    ah_principal_t *who = ah_arena_alloc(ah_http_req_arena(req), sizeof(*who));
    memset(who, 0, sizeof(*who));
    const char *key = ah_http_req_header_str(req, "x-test-key");
    const char *role = ah_http_req_header_str(req, "x-test-role");
    snprintf(who->key_id, sizeof(who->key_id), "%s", key ? key : "key_admin");
    who->role = AH_ROLE_ADMIN;
    if (role)
        ah_role_parse(role, &who->role);
    ((const route_fn_t *)route->handler)->fn(req, app, who);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (!f || ah_test_store_open(&f->ts, "runsapi", 64) != 0) {
        free(f);
        return -1;
    }
    f->app.store = f->ts.store;
    ah_buf_t err = AH_BUF_INIT;
    f->router = ah_router_new();
    if (!f->router || ah_router_add(f->router, AH_HTTP_GET, "/v1/runs", (void *)&r_list, 0) != 0 ||
        ah_router_add(f->router, AH_HTTP_GET, "/v1/runs/{id}", (void *)&r_get, 0) != 0 ||
        ah_router_add(f->router, AH_HTTP_GET, "/v1/runs/{id}/events", (void *)&r_events, 0) != 0)
        return -1;
    ah_http_server_opts_t so = {
        .listen = "127.0.0.1:0",
        .workers = 1,
        .max_body_bytes = 1u << 20,
        .router = f->router,
        .dispatch = test_dispatch,
        .ud = &f->app,
    };
    if (ah_http_server_new(&so, &f->srv, &err) != 0 || ah_http_server_start(f->srv) != 0) {
        fprintf(stderr, "server: %s\n", err.data ? err.data : "?");
        ah_buf_free(&err);
        return -1;
    }
    ah_buf_free(&err);
    f->app.server = f->srv;
    char addr[80];
    ah_http_server_addr(f->srv, addr, sizeof(addr));
    const char *colon = strrchr(addr, ':');
    f->port = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ah_http_server_drain(f->srv);
    ah_http_server_wait(f->srv, 2.0);
    ah_http_server_free(f->srv);
    ah_router_free(f->router);
    ah_test_store_close(&f->ts);
    free(f);
    return 0;
}

/* ---- store helpers (blocking: the test thread is no loop) ---- */

static int insert_work(ah_db_t *db, void *arg)
{
    return ah_store_run_insert(db, arg);
}

static int update_work(ah_db_t *db, void *arg)
{
    return ah_store_run_update(db, arg);
}

typedef struct ev_arg {
    ah_run_event_t ev;
} ev_arg_t;

static int append_work(ah_db_t *db, void *arg)
{
    return ah_store_run_events_append(db, &((ev_arg_t *)arg)->ev, 1);
}

static ah_run_rec_t make_run(const char *id, const char *key, const char *status, int64_t at)
{
    ah_run_rec_t r = ah_test_run(id, status, key, at);
    r.agent_version = 2;
    r.input = (char *)"[{\"role\":\"user\",\"content\":\"hi\"}]";
    return r;
}

static void put_run(fixture_t *f, ah_run_rec_t *r)
{
    assert_int_equal(ah_store_call(f->app.store, AH_STORE_WRITE, insert_work, r), 0);
}

static void put_event(fixture_t *f, const char *run, int64_t seq, const char *type,
                      const char *data)
{
    ev_arg_t a;
    memset(&a, 0, sizeof(a));
    snprintf(a.ev.run_id, sizeof(a.ev.run_id), "%s", run);
    snprintf(a.ev.type, sizeof(a.ev.type), "%s", type);
    a.ev.seq = seq;
    a.ev.data = (char *)data;
    a.ev.ts = 1000 + seq;
    assert_int_equal(ah_store_call(f->app.store, AH_STORE_WRITE, append_work, &a), 0);
}

/* ---- a tiny HTTP client ---- */

static int dial(fixture_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static int send_get(fixture_t *f, const char *path, const char *headers)
{
    int fd = dial(f);
    char req[1024];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
                     path, headers ? headers : "");
    assert_true(n > 0 && (size_t)n < sizeof(req));
    assert_int_equal(write(fd, req, (size_t)n), n);
    return fd;
}

/* Reads into b until needle shows up (or EOF when needle is NULL). false on timeout. */
static bool read_until(int fd, ah_buf_t *b, const char *needle, int timeout_ms, bool *eof)
{
    uint64_t deadline = ah_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    *eof = false;
    for (;;) {
        if (needle && b->data && strstr(b->data, needle))
            return true;
        uint64_t now = ah_mono_ns();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (pr <= 0)
            continue;
        char tmp[4096];
        ssize_t k = read(fd, tmp, sizeof(tmp));
        if (k <= 0) {
            *eof = true;
            return needle == NULL || (b->data && strstr(b->data, needle));
        }
        assert_int_equal(ah_buf_append(b, tmp, (size_t)k), 0);
    }
}

/* Removes chunked framing from a body in place. */
static void dechunk(ah_buf_t *b, size_t body_off)
{
    ah_buf_t out = AH_BUF_INIT;
    const char *p = b->data + body_off, *end = b->data + b->len;
    while (p < end) {
        char *e;
        unsigned long n = strtoul(p, &e, 16);
        const char *nl = strstr(e, "\r\n");
        if (!nl || n == 0)
            break;
        p = nl + 2;
        if ((size_t)(end - p) < n)
            break;
        ah_buf_append(&out, p, n);
        p += n + 2;
    }
    b->len = body_off;
    ah_buf_append(b, out.data ? out.data : "", out.len);
    ah_buf_free(&out);
}

typedef struct resp {
    int status;
    ah_buf_t raw;
    const char *body;
    json_t *json;
} resp_t;

static void get(fixture_t *f, const char *path, const char *headers, resp_t *r)
{
    memset(r, 0, sizeof(*r));
    int fd = send_get(f, path, headers);
    bool eof;
    assert_true(read_until(fd, &r->raw, NULL, 5000, &eof));
    close(fd);
    assert_non_null(r->raw.data);
    assert_int_equal(sscanf(r->raw.data, "HTTP/1.1 %d", &r->status), 1);
    char *sep = strstr(r->raw.data, "\r\n\r\n");
    assert_non_null(sep);
    size_t off = (size_t)(sep + 4 - r->raw.data);
    if (strcasestr(r->raw.data, "transfer-encoding: chunked"))
        dechunk(&r->raw, off);
    r->body = r->raw.data + off;
    r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
}

static void resp_free(resp_t *r)
{
    json_decref(r->json);
    ah_buf_free(&r->raw);
}

static const char *jstr(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

/* ---- tests ---- */

static void test_get_run(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_1", "key_a", AH_RUN_COMPLETED, 1000);
    r.output = (char *)"hello there";
    r.metadata = (char *)"{\"ticket\":7}";
    r.session_id = (char *)"sess_1";
    r.prompt_tokens = 10;
    r.completion_tokens = 5;
    r.cost_usd = 0.25;
    r.turns = 2;
    r.started_at = 1100;
    r.finished_at = 1200;
    put_run(f, &r);

    resp_t g;
    get(f, "/v1/runs/run_1", NULL, &g);
    assert_int_equal(g.status, 200);
    assert_non_null(g.json);
    assert_string_equal(jstr(g.json, "id", NULL), "run_1");
    assert_string_equal(jstr(g.json, "object", NULL), "run");
    assert_string_equal(jstr(g.json, "agent", NULL), "support");
    assert_int_equal(json_integer_value(json_object_get(g.json, "agent_version")), 2);
    assert_string_equal(jstr(g.json, "status", NULL), "completed");
    assert_string_equal(jstr(g.json, "mode", NULL), "async");
    assert_true(json_is_array(json_object_get(g.json, "input")));
    assert_string_equal(jstr(g.json, "output", NULL), "hello there");
    assert_true(json_is_null(json_object_get(g.json, "error")));
    assert_string_equal(jstr(g.json, "session_id", NULL), "sess_1");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(g.json, "metadata"), "ticket")), 7);
    json_t *u = json_object_get(g.json, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 10);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 15);
    assert_true(json_number_value(json_object_get(u, "cost_usd")) == 0.25);
    assert_int_equal(json_integer_value(json_object_get(g.json, "turns")), 2);
    assert_int_equal(json_integer_value(json_object_get(g.json, "created_at")), 1000);
    assert_int_equal(json_integer_value(json_object_get(g.json, "started_at")), 1100);
    assert_int_equal(json_integer_value(json_object_get(g.json, "finished_at")), 1200);
    resp_free(&g);

    /* The owner (a user key) sees it; another user key gets the same 404 as a missing run. */
    get(f, "/v1/runs/run_1", "x-test-key: key_a\r\nx-test-role: viewer\r\n", &g);
    assert_int_equal(g.status, 200);
    resp_free(&g);
    get(f, "/v1/runs/run_1", "x-test-key: key_b\r\nx-test-role: developer\r\n", &g);
    assert_int_equal(g.status, 404);
    assert_string_equal(jstr(g.json, "error", "code"), "run_not_found");
    resp_free(&g);
    get(f, "/v1/runs/run_missing", NULL, &g);
    assert_int_equal(g.status, 404);
    assert_string_equal(jstr(g.json, "error", "code"), "run_not_found");
    resp_free(&g);

    /* A failed run: error object; a queued one: null times, {} metadata. */
    ah_run_rec_t fr = make_run("run_2", "key_a", AH_RUN_FAILED, 2000);
    fr.error = (char *)"the agent used all 3 turns";
    fr.error_code = (char *)"max_turns_exceeded";
    put_run(f, &fr);
    get(f, "/v1/runs/run_2", NULL, &g);
    assert_int_equal(g.status, 200);
    assert_string_equal(jstr(g.json, "error", "code"), "max_turns_exceeded");
    assert_string_equal(jstr(g.json, "error", "message"), "the agent used all 3 turns");
    assert_true(json_is_null(json_object_get(g.json, "output")));
    assert_true(json_is_null(json_object_get(g.json, "started_at")));
    assert_true(json_is_null(json_object_get(g.json, "session_id")));
    assert_true(json_is_object(json_object_get(g.json, "metadata")));
    resp_free(&g);
}

static void test_run_json_invalid_stored_json(void **state)
{
    (void)state;
    /* Text that is not JSON still renders a valid object (as a string). */
    ah_run_rec_t r = make_run("run_j", "k", AH_RUN_QUEUED, 1);
    r.input = (char *)"not json";
    r.metadata = (char *)"{broken";
    r.cost_usd = NAN;
    ah_buf_t b = AH_BUF_INIT;
    assert_int_equal(ah_api_run_json(&r, &b), 0);
    json_t *o = json_loads(b.data, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "input")), "not json");
    assert_string_equal(json_string_value(json_object_get(o, "metadata")), "{broken");
    json_decref(o);
    ah_buf_free(&b);
    /* A limited buffer reports -E2BIG. */
    ah_buf_init(&b, 16);
    assert_int_equal(ah_api_run_json(&r, &b), -E2BIG);
    ah_buf_free(&b);
}

static size_t data_len(resp_t *g)
{
    return json_array_size(json_object_get(g->json, "data"));
}

static const char *data_id(resp_t *g, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(g->json, "data"), i), "id"));
}

static void test_list_runs(void **state)
{
    fixture_t *f = *state;
    /* r0..r5 created 100..600; r2 and r3 share 300; r4, r5 belong to key_b. */
    static const int64_t at[] = {100, 200, 300, 300, 500, 600};
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof(id), "r%d", i);
        ah_run_rec_t r = make_run(id, i >= 4 ? "key_b" : "key_a",
                                  i % 2 ? AH_RUN_COMPLETED : AH_RUN_RUNNING, at[i]);
        if (i == 1)
            snprintf(r.agent, sizeof(r.agent), "billing");
        r.session_id = i < 2 ? (char *)"s1" : NULL;
        put_run(f, &r);
    }
    resp_t g;
    get(f, "/v1/runs", NULL, &g);
    assert_int_equal(g.status, 200);
    assert_string_equal(jstr(g.json, "object", NULL), "list");
    assert_int_equal(data_len(&g), 6);
    assert_string_equal(data_id(&g, 0), "r5");
    assert_string_equal(data_id(&g, 5), "r0");
    assert_true(json_is_false(json_object_get(g.json, "has_more")));
    resp_free(&g);

    /* Pages of 3 would be r5 r4 r3 | r2 ..., and before=300 would then skip r2 (same ms as
     * r3): the page stops before r3 instead. */
    get(f, "/v1/runs?limit=3", NULL, &g);
    assert_int_equal(data_len(&g), 2);
    assert_true(json_is_true(json_object_get(g.json, "has_more")));
    assert_string_equal(data_id(&g, 1), "r4");
    resp_free(&g);
    get(f, "/v1/runs?limit=3&before=500", NULL, &g);
    assert_int_equal(data_len(&g), 3);
    assert_string_equal(data_id(&g, 0), "r3");
    assert_string_equal(data_id(&g, 1), "r2");
    assert_string_equal(data_id(&g, 2), "r1");
    resp_free(&g);
    get(f, "/v1/runs?limit=1&before=500", NULL, &g);
    assert_int_equal(data_len(&g), 1); /* whole page one ms: cannot trim */
    assert_true(json_is_true(json_object_get(g.json, "has_more")));
    resp_free(&g);
    get(f, "/v1/runs?limit=2&before=600", NULL, &g);
    /* r4, then r3|r2 at 300: the page stops after r4 so r3 is not cut from r2. */
    assert_int_equal(data_len(&g), 1);
    assert_string_equal(data_id(&g, 0), "r4");
    assert_true(json_is_true(json_object_get(g.json, "has_more")));
    resp_free(&g);

    get(f, "/v1/runs?agent=billing", NULL, &g);
    assert_int_equal(data_len(&g), 1);
    assert_string_equal(data_id(&g, 0), "r1");
    resp_free(&g);
    get(f, "/v1/runs?status=completed&session_id=s1", NULL, &g);
    assert_int_equal(data_len(&g), 1);
    resp_free(&g);

    /* A user key sees only its own runs. */
    get(f, "/v1/runs", "x-test-key: key_b\r\nx-test-role: user\r\n", &g);
    assert_int_equal(data_len(&g), 2);
    assert_string_equal(data_id(&g, 0), "r5");
    assert_string_equal(data_id(&g, 1), "r4");
    resp_free(&g);

    get(f, "/v1/runs?status=done", NULL, &g);
    assert_int_equal(g.status, 400);
    assert_string_equal(jstr(g.json, "error", "param"), "status");
    resp_free(&g);
    get(f, "/v1/runs?limit=0", NULL, &g);
    assert_int_equal(g.status, 400);
    resp_free(&g);
    get(f, "/v1/runs?limit=101", NULL, &g);
    assert_int_equal(g.status, 400);
    resp_free(&g);
    get(f, "/v1/runs?before=x", NULL, &g);
    assert_int_equal(g.status, 400);
    assert_string_equal(jstr(g.json, "error", "param"), "before");
    resp_free(&g);
}

static void test_events_json(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_e", "key_a", AH_RUN_RUNNING, 1);
    put_run(f, &r);
    put_event(f, "run_e", 1, "run.created", NULL);
    put_event(f, "run_e", 2, "run.started", "{\"attempt\":1}");
    put_event(f, "run_e", 3, "message.delta", "{\"delta\":\"Hi\\nthere\"}");

    resp_t g;
    get(f, "/v1/runs/run_e/events", NULL, &g);
    assert_int_equal(g.status, 200);
    assert_int_equal(data_len(&g), 3);
    json_t *e = json_array_get(json_object_get(g.json, "data"), 2);
    assert_int_equal(json_integer_value(json_object_get(e, "id")), 3);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "message.delta");
    assert_string_equal(jstr(e, "data", "delta"), "Hi\nthere");
    assert_int_equal(json_integer_value(json_object_get(e, "created_at")), 1003);
    assert_true(json_is_false(json_object_get(g.json, "has_more")));
    resp_free(&g);

    get(f, "/v1/runs/run_e/events?after=1&limit=1", NULL, &g);
    assert_int_equal(data_len(&g), 1);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(g.json, "data"), 0), "id")),
                     2);
    assert_true(json_is_true(json_object_get(g.json, "has_more")));
    resp_free(&g);

    get(f, "/v1/runs/run_e/events", "x-test-key: key_b\r\nx-test-role: user\r\n", &g);
    assert_int_equal(g.status, 404);
    resp_free(&g);
    get(f, "/v1/runs/nope/events", NULL, &g);
    assert_int_equal(g.status, 404);
    resp_free(&g);
    get(f, "/v1/runs/run_e/events?after=-1", NULL, &g);
    assert_int_equal(g.status, 400);
    resp_free(&g);
}

#define SSE "Accept: text/event-stream\r\n"

static void test_sse_replay_finished(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_s", "key_a", AH_RUN_COMPLETED, 1);
    r.last_event_seq = 3;
    put_run(f, &r);
    put_event(f, "run_s", 1, "run.created", NULL);
    put_event(f, "run_s", 2, "message.delta", "{\"delta\":\"a\\nb\"}");
    put_event(f, "run_s", 3, "run.completed", "{\"output\":\"ab\"}");

    /* The whole log, then the end of the stream (EOF: the run is over). */
    ah_buf_t b = AH_BUF_INIT;
    bool eof;
    int fd = send_get(f, "/v1/runs/run_s/events", SSE);
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    assert_true(eof);
    close(fd);
    assert_non_null(strstr(b.data, "text/event-stream"));
    assert_non_null(strstr(b.data, "event: run.created\nid: 1\ndata: {}\n\n"));
    assert_non_null(strstr(b.data, "id: 2\ndata: {\"delta\":\"a\\nb\"}\n\n"));
    assert_non_null(strstr(b.data, "event: run.completed\nid: 3\n"));
    ah_buf_free(&b);

    /* Resuming with Last-Event-ID: only what came after. */
    fd = send_get(f, "/v1/runs/run_s/events", SSE "Last-Event-ID: 2\r\n");
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    close(fd);
    assert_null(strstr(b.data, "id: 1\n"));
    assert_null(strstr(b.data, "id: 2\n"));
    assert_non_null(strstr(b.data, "id: 3\n"));
    ah_buf_free(&b);

    /* ?after works too; Last-Event-ID wins over it. */
    fd = send_get(f, "/v1/runs/run_s/events?after=1", SSE "Last-Event-ID: 0\r\n");
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    close(fd);
    assert_non_null(strstr(b.data, "id: 1\n"));
    ah_buf_free(&b);
    fd = send_get(f, "/v1/runs/run_s/events?after=2", SSE);
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    close(fd);
    assert_null(strstr(b.data, "id: 2\n"));
    assert_non_null(strstr(b.data, "id: 3\n"));
    ah_buf_free(&b);

    /* Not found / not yours: a JSON 404, no stream. */
    resp_t g;
    get(f, "/v1/runs/run_s/events", SSE "x-test-key: key_b\r\nx-test-role: user\r\n", &g);
    assert_int_equal(g.status, 404);
    assert_string_equal(jstr(g.json, "error", "code"), "run_not_found");
    resp_free(&g);
    get(f, "/v1/runs/run_s/events", SSE "Last-Event-ID: abc\r\n", &g);
    assert_int_equal(g.status, 400);
    resp_free(&g);
}

static void test_sse_follow_live(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_l", "key_a", AH_RUN_RUNNING, 1);
    put_run(f, &r);
    put_event(f, "run_l", 1, "run.started", NULL);

    ah_buf_t b = AH_BUF_INIT;
    bool eof;
    int fd = send_get(f, "/v1/runs/run_l/events", SSE "x-test-key: key_a\r\nx-test-role: user\r\n");
    assert_true(read_until(fd, &b, "id: 1\n", 3000, &eof));
    assert_false(eof);

    /* New events show up within a poll or two. */
    put_event(f, "run_l", 2, "message.delta", "{\"delta\":\"x\"}");
    assert_true(read_until(fd, &b, "id: 2\n", 3000, &eof));
    assert_false(eof);
    /* Still open while the run runs. */
    assert_false(read_until(fd, &b, NULL, 500, &eof));
    assert_false(eof);

    /* The run ends: its last event, then the stream ends. */
    snprintf(r.status, sizeof(r.status), "%s", AH_RUN_COMPLETED);
    r.last_event_seq = 3;
    r.finished_at = 5;
    put_event(f, "run_l", 3, "run.completed", "{}");
    assert_int_equal(ah_store_call(f->app.store, AH_STORE_WRITE, update_work, &r), 0);
    uint64_t t0 = ah_mono_ns();
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    assert_true(eof);
    assert_true(ah_mono_ns() - t0 < 1500000000u);
    assert_non_null(strstr(b.data, "event: run.completed\nid: 3\n"));
    assert_non_null(strstr(b.data, "0\r\n\r\n")); /* a clean end of the chunked body */
    close(fd);
    ah_buf_free(&b);
}

static void test_sse_final_without_terminal_event(void **state)
{
    fixture_t *f = *state;
    /* Cancelled with no run.* event: ends after one more empty read. */
    ah_run_rec_t r = make_run("run_c", "key_a", AH_RUN_CANCELLED, 1);
    put_run(f, &r);
    put_event(f, "run_c", 1, "run.created", NULL);
    ah_buf_t b = AH_BUF_INIT;
    bool eof;
    int fd = send_get(f, "/v1/runs/run_c/events", SSE);
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    assert_true(eof);
    assert_non_null(strstr(b.data, "id: 1\n"));
    close(fd);
    ah_buf_free(&b);

    /* Final, but the run promises an event the log does not have yet: it waits for it. */
    ah_run_rec_t p = make_run("run_p", "key_a", AH_RUN_FAILED, 1);
    p.last_event_seq = 2;
    put_run(f, &p);
    put_event(f, "run_p", 1, "run.created", NULL);
    fd = send_get(f, "/v1/runs/run_p/events", SSE);
    assert_true(read_until(fd, &b, "id: 1\n", 3000, &eof));
    assert_false(read_until(fd, &b, NULL, 600, &eof));
    assert_false(eof);
    put_event(f, "run_p", 2, "message.completed", "{}");
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    assert_true(eof);
    assert_non_null(strstr(b.data, "id: 2\n"));
    close(fd);
    ah_buf_free(&b);
}

static void test_sse_client_leaves(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_g", "key_a", AH_RUN_RUNNING, 1);
    put_run(f, &r);
    ah_buf_t b = AH_BUF_INIT;
    bool eof;
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = send_get(f, "/v1/runs/run_g/events", SSE);
        assert_true(read_until(fds[i], &b, "text/event-stream", 3000, &eof));
        ah_buf_reset(&b);
    }
    ah_http_server_stats_t st;
    ah_http_server_stats(f->srv, &st);
    assert_int_equal(st.in_flight, 3);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    /* The followers notice and finish their requests. */
    uint64_t deadline = ah_mono_ns() + 3000000000u;
    do {
        ah_http_server_stats(f->srv, &st);
        if (st.in_flight == 0)
            break;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    } while (ah_mono_ns() < deadline);
    assert_int_equal(st.in_flight, 0);
    ah_buf_free(&b);
}

static void test_sse_drain_ends_streams(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_d", "key_a", AH_RUN_RUNNING, 1);
    put_run(f, &r);
    ah_buf_t b = AH_BUF_INIT;
    bool eof;
    int fd = send_get(f, "/v1/runs/run_d/events", SSE);
    assert_true(read_until(fd, &b, "text/event-stream", 3000, &eof));
    ah_http_server_drain(f->srv);
    assert_true(read_until(fd, &b, NULL, 3000, &eof));
    assert_true(eof);
    close(fd);
    ah_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_run, setup, teardown),
        cmocka_unit_test(test_run_json_invalid_stored_json),
        cmocka_unit_test_setup_teardown(test_list_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_replay_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_follow_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_final_without_terminal_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_client_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_drain_ends_streams, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
