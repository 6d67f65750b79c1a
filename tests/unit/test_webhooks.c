/*
 * test_webhooks.c - webhooks end to end: signatures (agents/webhooks.h), the
 * outbox rows with an injected clock (store/webhooks.h), the delivery thread
 * against real HTTP targets on loopback (our own server: answering 200, 500,
 * 500-then-200, never; plus a closed port), and the admin API
 * (api/webhooks.c) through the same server with a test dispatch.
 *
 * The outbox tests run on SQLite and, when PostgreSQL 15 is installed, on a
 * throwaway PostgreSQL server (pgtest.h), including replicas claiming at once.
 *
 * Delivery tests use tiny intervals (backoff 20 ms, poll 20 ms) and wait for
 * outcomes with bounded polls, never fixed sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agents/webhooks.h"
#include "api/api.h"
#include "core/clock.h"
#include "http/client.h"
#include "store/runs.h"
#include "store/webhooks.h"
#include "pgtest.h"
#include "testutil.h"

/* Until api.h lists them (the lead adds the routes). */
void ah_api_webhooks_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_webhooks_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_webhooks_retry(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);

#define SECRET  "whsec_test"
#define WAIT_MS 5000

/* ---- signatures ---- */

static void test_sign_known_vector(void **state)
{
    (void)state;
    char sig[AH_WEBHOOK_SIG_MAX];
    const char body[] = "{\"a\":1}";
    assert_int_equal(ah_webhook_sign(SECRET, 1700000000, body, strlen(body), sig), 0);
    /* python3: hmac.new(b'whsec_test', b'1700000000.{"a":1}', hashlib.sha256).hexdigest() */
    assert_string_equal(
        sig, "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
    assert_int_equal(ah_webhook_sign("", 1, body, 1, sig), -EINVAL);
    assert_int_equal(ah_webhook_sign(NULL, 1, body, 1, sig), -EINVAL);
    assert_int_equal(ah_webhook_sign(SECRET, -1, body, 1, sig), -EINVAL);
}

static void test_verify(void **state)
{
    (void)state;
    const char body[] = "{\"id\":\"whd_1\",\"type\":\"run.completed\"}";
    size_t n = strlen(body);
    int64_t t = 1700000000;
    char sig[AH_WEBHOOK_SIG_MAX];
    assert_int_equal(ah_webhook_sign(SECRET, t, body, n, sig), 0);

    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n, t, 300), 0);
    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n, t + 300, 300), 0);
    /* tampered body, wrong secret */
    char bad[sizeof(body)];
    memcpy(bad, body, sizeof(body));
    bad[8] = 'X';
    assert_int_equal(ah_webhook_verify(SECRET, sig, bad, n, t, 300), -EBADMSG);
    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n - 1, t, 300), -EBADMSG);
    assert_int_equal(ah_webhook_verify("other", sig, body, n, t, 300), -EBADMSG);
    /* too old (a replay) or too far in the future; < 0 skips the check */
    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n, t + 301, 300), -ETIME);
    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n, t - 301, 300), -ETIME);
    assert_int_equal(ah_webhook_verify(SECRET, sig, body, n, t + 99999, -1), 0);
    /* a changed timestamp breaks the signature, not only the tolerance */
    char moved[AH_WEBHOOK_SIG_MAX];
    snprintf(moved, sizeof(moved), "t=1700000001%s", strchr(sig, ','));
    assert_int_equal(ah_webhook_verify(SECRET, moved, body, n, t, 300), -EBADMSG);
    /* several v1 (secret rotation): one match is enough; spaces are fine */
    char multi[256];
    snprintf(multi, sizeof(multi), "t=%lld, v1=%064d, %s", (long long)t, 0, strchr(sig, ',') + 1);
    assert_int_equal(ah_webhook_verify(SECRET, multi, body, n, t, 300), 0);
    /* malformed */
    assert_int_equal(ah_webhook_verify(SECRET, "", body, n, t, 300), -EINVAL);
    assert_int_equal(ah_webhook_verify(SECRET, "t=1700000000", body, n, t, 300), -EINVAL);
    assert_int_equal(ah_webhook_verify(SECRET, strchr(sig, ',') + 1, body, n, t, 300), -EINVAL);
    assert_int_equal(ah_webhook_verify(SECRET, "t=abc,v1=00", body, n, t, 300), -EINVAL);
    char two_t[256];
    snprintf(two_t, sizeof(two_t), "t=1,%s", sig);
    assert_int_equal(ah_webhook_verify(SECRET, two_t, body, n, t, 300), -EINVAL);
    char upper[AH_WEBHOOK_SIG_MAX];
    snprintf(upper, sizeof(upper), "%s", sig);
    for (char *p = strstr(upper, "v1=") + 3; *p; p++)
        *p = (char)((*p >= 'a' && *p <= 'f') ? *p - 32 : *p);
    assert_int_equal(ah_webhook_verify(SECRET, upper, body, n, t, 300), -EBADMSG);
}

static void test_backoff_and_helpers(void **state)
{
    (void)state;
    int64_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000};
    for (int i = 0; i < 8; i++)
        assert_int_equal(ah_webhook_backoff_ms(i + 1, 1000, 3600000), want[i]);
    assert_int_equal(ah_webhook_backoff_ms(12, 1000, 3600000), 2048000);
    assert_int_equal(ah_webhook_backoff_ms(13, 1000, 3600000), 3600000);
    assert_int_equal(ah_webhook_backoff_ms(1000000, 1000, 3600000), 3600000);
    assert_int_equal(ah_webhook_backoff_ms(0, 1000, 3600000), 1000);

    assert_true(ah_webhook_url_ok("https://example.com/hook?x=1"));
    assert_true(ah_webhook_url_ok("http://127.0.0.1:8080/"));
    assert_false(ah_webhook_url_ok("ftp://example.com/"));
    assert_false(ah_webhook_url_ok("https://"));
    assert_false(ah_webhook_url_ok("https:///path"));
    assert_false(ah_webhook_url_ok("https://exa mple.com/"));
    assert_false(ah_webhook_url_ok(NULL));

    assert_string_equal(ah_webhook_event_for_status("completed"), "run.completed");
    assert_string_equal(ah_webhook_event_for_status("failed"), "run.failed");
    assert_string_equal(ah_webhook_event_for_status("expired"), "run.failed");
    assert_string_equal(ah_webhook_event_for_status("cancelled"), "run.cancelled");
    assert_null(ah_webhook_event_for_status("running"));
}

static ah_run_rec_t make_run(const char *id, const char *status)
{
    ah_run_rec_t r = ah_test_run(id, status, "", 1000);
    r.agent_version = 3;
    r.output = (char *)"hi there";
    r.finished_at = 2000;
    return r;
}

static void test_payload_shape(void **state)
{
    (void)state;
    ah_run_rec_t r = make_run("run_abc", "completed");
    ah_buf_t b = AH_BUF_INIT;
    assert_int_equal(ah_webhook_run_payload("whd_x", "run.completed", &r, 5000, &b), 0);
    json_t *o = json_loads(b.data, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "whd_x");
    assert_string_equal(json_string_value(json_object_get(o, "object")), "event");
    assert_string_equal(json_string_value(json_object_get(o, "type")), "run.completed");
    assert_int_equal(json_integer_value(json_object_get(o, "created_at")), 5000);
    json_t *d = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_object_get(d, "id")), "run_abc");
    assert_string_equal(json_string_value(json_object_get(d, "object")), "run");
    assert_string_equal(json_string_value(json_object_get(d, "status")), "completed");
    assert_string_equal(json_string_value(json_object_get(d, "output")), "hi there");
    json_decref(o);
    ah_buf_free(&b);
}

/* ---- store helpers ---- */

static ah_pgtest_t g_pg;

static int store_setup(void **state)
{
    return ah_test_store_setup(state, "webhooks", 64);
}

/* The same fixture on a new PostgreSQL database (dir stays "": nothing to delete). */
static int pg_store_setup(void **state)
{
    ah_test_store_t *ts = calloc(1, sizeof(*ts));
    if (!ts || ah_pgtest_new_db(&g_pg, ts->url, sizeof(ts->url)) != 0) {
        free(ts);
        return -1;
    }
    ts->cfg.storage.url = ts->url;
    ts->cfg.storage.busy_timeout_ms = 5000;
    ts->cfg.storage.max_batch = 64;
    ah_buf_t err = AH_BUF_INIT;
    if (ah_store_open(&ts->cfg, AH_STORE_MIGRATE, &ts->store, &err) < 0) {
        fprintf(stderr, "store open: %s\n", err.data ? err.data : "?");
        ah_buf_free(&err);
        free(ts);
        return -1;
    }
    ah_buf_free(&err);
    *state = ts;
    return 0;
}

static int pg_store_teardown(void **state)
{
    ah_test_store_t *ts = *state;
    ah_store_close(ts->store);
    free(ts);
    return 0;
}

static ah_store_t *store_of(void **state)
{
    return ((ah_test_store_t *)*state)->store;
}

typedef struct db_op {
    const char *id, *url, *run_id, *status;
    int64_t now, lease;
    int attempts, http_status, limit;
    bool permanent;
    ah_webhook_policy_t policy;
    ah_webhook_rec_t rec; /* get / last claimed */
    int n;                /* claimed / listed */
    char ids[16][48];
} db_op_t;

static int enqueue_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    return ah_store_webhook_enqueue_id(db, o->id, o->run_id ? o->run_id : "run_1", o->url,
                                       AH_WEBHOOK_RUN_COMPLETED, "{\"x\":1}", o->now);
}

static int claim_cb(void *ud, const ah_webhook_rec_t *r)
{
    db_op_t *o = ud;
    if (o->n < 16)
        snprintf(o->ids[o->n], sizeof(o->ids[0]), "%s", r->id);
    o->n++;
    assert_non_null(r->payload);
    o->attempts = r->attempts;
    return 0;
}

static int claim_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    o->n = 0;
    return ah_store_webhook_claim(db, o->now, o->lease, o->limit ? o->limit : 10, claim_cb, o);
}

static int failed_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    return ah_store_webhook_failed(db, o->id, o->attempts, o->http_status, "HTTP 500: boom",
                                   o->permanent, &o->policy, o->now);
}

static int delivered_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    return ah_store_webhook_delivered(db, o->id, o->attempts, 200, o->now);
}

static int retry_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    return ah_store_webhook_retry(db, o->id, o->now);
}

static int get_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    ah_webhook_rec_free(&o->rec);
    return ah_store_webhook_get(db, o->id, &o->rec);
}

static int list_cb(void *ud, const ah_webhook_rec_t *r)
{
    db_op_t *o = ud;
    assert_null(r->payload);
    if (o->n < 16)
        snprintf(o->ids[o->n], sizeof(o->ids[0]), "%s", r->id);
    o->n++;
    return 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    o->n = 0;
    ah_webhook_filter_t f = {.status = o->status, .run_id = o->run_id, .limit = o->limit};
    return ah_store_webhook_list(db, &f, list_cb, o);
}

static int prune_work(ah_db_t *db, void *arg)
{
    db_op_t *o = arg;
    return ah_store_webhook_prune(db, o->now, 100);
}

static int call(void **state, ah_store_work_fn fn, db_op_t *o, unsigned flags)
{
    return ah_store_call(store_of(state), flags, fn, o);
}

#define W AH_STORE_WRITE
#define R AH_STORE_READ

static void get_row(void **state, const char *id, db_op_t *o)
{
    o->id = id;
    assert_int_equal(call(state, get_work, o, R), 0);
}

/* ---- outbox ---- */

static void test_outbox_claim_and_lease(void **state)
{
    db_op_t o = {.id = "whd_a", .url = "http://x/", .now = 1000};
    assert_int_equal(call(state, enqueue_work, &o, W), 0);
    assert_int_equal(call(state, enqueue_work, &o, W), -EEXIST);
    o.id = "whd_b";
    o.now = 1500;
    assert_int_equal(call(state, enqueue_work, &o, W), 0);

    /* Only what is due at now; oldest due first. */
    o.now = 1200;
    o.lease = 60000;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    assert_string_equal(o.ids[0], "whd_a");
    assert_int_equal(o.attempts, 0);
    /* whd_a is leased: a second claimer (another replica) does not get it. */
    o.now = 1600;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    assert_string_equal(o.ids[0], "whd_b");
    o.now = 2000;
    assert_int_equal(call(state, claim_work, &o, W), 0);
    /* The sender died: the lease ends and the row is due again, not lost. */
    o.now = 1200 + 60000;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    assert_string_equal(o.ids[0], "whd_a");
    get_row(state, "whd_a", &o);
    assert_string_equal(o.rec.status, "pending");
    assert_int_equal(o.rec.next_attempt_at, 1200 + 60000 + 60000);
    ah_webhook_rec_free(&o.rec);

    /* limits */
    o.limit = 0;
    assert_int_equal(call(state, claim_work, &o, W), 0);
    o.lease = 0;
    assert_int_equal(call(state, claim_work, &o, W), -EINVAL);
}

static void test_outbox_backoff_dead_retry(void **state)
{
    db_op_t o = {.id = "whd_d", .url = "http://x/", .now = 10000, .lease = 30000};
    o.policy =
        (ah_webhook_policy_t){.max_attempts = 4, .backoff_base_ms = 1000, .backoff_max_ms = 3000};
    assert_int_equal(call(state, enqueue_work, &o, W), 0);
    int64_t now = 10000;
    int64_t delays[] = {1000, 2000, 3000}; /* the cap holds the third */
    for (int i = 0; i < 3; i++) {
        o.now = now;
        assert_int_equal(call(state, claim_work, &o, W), 1);
        assert_int_equal(o.attempts, i);
        o.id = "whd_d";
        o.http_status = 500;
        assert_int_equal(call(state, failed_work, &o, W), 0);
        get_row(state, "whd_d", &o);
        assert_string_equal(o.rec.status, "pending");
        assert_int_equal(o.rec.attempts, i + 1);
        assert_int_equal(o.rec.last_status, 500);
        assert_string_equal(o.rec.last_error, "HTTP 500: boom");
        assert_int_equal(o.rec.next_attempt_at, now + delays[i]);
        ah_webhook_rec_free(&o.rec);
        /* not due a millisecond early */
        o.now = now + delays[i] - 1;
        assert_int_equal(call(state, claim_work, &o, W), 0);
        now += delays[i];
    }
    /* The 4th failure dead-letters it. */
    o.now = now;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    assert_int_equal(call(state, failed_work, &o, W), 1);
    get_row(state, "whd_d", &o);
    assert_string_equal(o.rec.status, "dead");
    assert_int_equal(o.rec.attempts, 4);
    ah_webhook_rec_free(&o.rec);
    o.now = now + 99999999;
    assert_int_equal(call(state, claim_work, &o, W), 0);
    o.status = "dead";
    o.run_id = NULL;
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);

    /* Retry: dead -> pending, attempts 0, due now; a second retry is refused. */
    o.now = now + 5;
    assert_int_equal(call(state, retry_work, &o, W), 0);
    assert_int_equal(call(state, retry_work, &o, W), -EALREADY);
    o.id = "whd_nope";
    assert_int_equal(call(state, retry_work, &o, W), -ENOENT);
    get_row(state, "whd_d", &o);
    assert_string_equal(o.rec.status, "pending");
    assert_int_equal(o.rec.attempts, 0);
    assert_int_equal(o.rec.next_attempt_at, now + 5);
    ah_webhook_rec_free(&o.rec);
    assert_int_equal(call(state, claim_work, &o, W), 1);
    o.id = "whd_d";
    assert_int_equal(call(state, delivered_work, &o, W), 0);
    get_row(state, "whd_d", &o);
    assert_string_equal(o.rec.status, "delivered");
    assert_int_equal(o.rec.attempts, 1);
    assert_int_equal(o.rec.last_status, 200);
    assert_null(o.rec.last_error);
    assert_int_equal(o.rec.delivered_at, now + 5);
    ah_webhook_rec_free(&o.rec);
    /* delivered is final */
    assert_int_equal(call(state, delivered_work, &o, W), -ENOENT);
    assert_int_equal(call(state, retry_work, &o, W), -EALREADY);
}

static void test_outbox_fencing_and_permanent(void **state)
{
    db_op_t o = {.id = "whd_f", .url = "http://x/", .now = 1000, .lease = 100};
    o.policy = (ah_webhook_policy_t){8, 1000, 3600000};
    assert_int_equal(call(state, enqueue_work, &o, W), 0);
    /* Sender A claims, its lease runs out, sender B claims and fails first. */
    assert_int_equal(call(state, claim_work, &o, W), 1);
    o.now = 1100;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    assert_int_equal(call(state, failed_work, &o, W), 0);
    /* A's late failure (attempts 0 seen) no longer applies. */
    o.attempts = 0;
    assert_int_equal(call(state, failed_work, &o, W), -ENOENT);
    /* A permanent failure is dead at once (before whd_f is due again at 2100). */
    o.id = "whd_p";
    o.now = 2000;
    assert_int_equal(call(state, enqueue_work, &o, W), 0);
    assert_int_equal(call(state, claim_work, &o, W), 1);
    o.permanent = true;
    assert_int_equal(call(state, failed_work, &o, W), 1);
    get_row(state, "whd_p", &o);
    assert_string_equal(o.rec.status, "dead");
    ah_webhook_rec_free(&o.rec);
}

static void test_outbox_list_and_prune(void **state)
{
    db_op_t o = {.url = "http://x/", .lease = 1000};
    const char *ids[] = {"whd_1", "whd_2", "whd_3"};
    const char *runs[] = {"run_a", "run_b", "run_a"};
    for (int i = 0; i < 3; i++) {
        o.id = ids[i];
        o.run_id = runs[i];
        o.now = 1000 + i;
        assert_int_equal(call(state, enqueue_work, &o, W), 0);
    }
    o.status = NULL;
    o.run_id = "run_a";
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.ids[0], "whd_3"); /* newest first */
    assert_string_equal(o.ids[1], "whd_1");
    o.run_id = NULL;
    o.limit = 1;
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);
    o.limit = 0;
    o.status = "bogus";
    assert_int_equal(call(state, list_work, &o, R), -EINVAL);

    /* Deliver whd_1 at 2000; prune before 3000 deletes it, keeps the rest. */
    o.now = 2000;
    o.limit = 1;
    assert_int_equal(call(state, claim_work, &o, W), 1);
    o.id = o.ids[0];
    assert_string_equal(o.id, "whd_1");
    assert_int_equal(call(state, delivered_work, &o, W), 0);
    o.now = 2000;
    assert_int_equal(call(state, prune_work, &o, W), 0);
    o.now = 3000;
    assert_int_equal(call(state, prune_work, &o, W), 1);
    o.status = NULL;
    o.limit = 0;
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 2);
}

/* Replicas: each has its own store (own connections) and claims at the same time. */
#define REPLICAS 4
#define ROWS     120

typedef struct replica {
    ah_store_t *store;
    char (*ids)[48]; /* what it claimed */
    int n;
    int rc;
} replica_t;

static int replica_claim_cb(void *ud, const ah_webhook_rec_t *r)
{
    replica_t *rp = ud;
    if (rp->n < ROWS)
        snprintf(rp->ids[rp->n], 48, "%s", r->id);
    rp->n++;
    return 0;
}

static int replica_claim_work(ah_db_t *db, void *arg)
{
    return ah_store_webhook_claim(db, 5000, 60000, 7, replica_claim_cb, arg);
}

static void *replica_main(void *arg)
{
    replica_t *rp = arg;
    for (int empty = 0; empty < 3;) {
        int rc = ah_store_call(rp->store, AH_STORE_WRITE, replica_claim_work, rp);
        if (rc < 0 && rc != -EBUSY) {
            rp->rc = rc;
            break;
        }
        empty = rc == 0 ? empty + 1 : 0;
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_outbox_replicas_claim_once(void **state)
{
    ah_test_store_t *ts = *state;
    for (int i = 0; i < ROWS; i++) {
        char id[48];
        snprintf(id, sizeof(id), "whd_%03d", i);
        db_op_t o = {.id = id, .url = "http://x/", .now = 1000 + i % 10};
        assert_int_equal(call(state, enqueue_work, &o, W), 0);
    }
    replica_t rp[REPLICAS];
    pthread_t th[REPLICAS];
    for (int i = 0; i < REPLICAS; i++) {
        memset(&rp[i], 0, sizeof(rp[i]));
        rp[i].ids = calloc(ROWS, 48);
        ah_buf_t err = AH_BUF_INIT;
        assert_int_equal(ah_store_open(&ts->cfg, 0, &rp[i].store, &err), 0);
        ah_buf_free(&err);
    }
    for (int i = 0; i < REPLICAS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, replica_main, &rp[i]), 0);
    char(*all)[48] = calloc(ROWS * REPLICAS, 48);
    int total = 0;
    for (int i = 0; i < REPLICAS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rp[i].rc, 0);
        for (int k = 0; k < rp[i].n && k < ROWS; k++)
            memcpy(all[total++], rp[i].ids[k], 48);
        ah_store_close(rp[i].store);
        free(rp[i].ids);
    }
    /* Every row claimed, and by exactly one replica. */
    assert_int_equal(total, ROWS);
    qsort(all, (size_t)total, 48, cmp_id);
    for (int i = 1; i < total; i++)
        assert_true(strcmp(all[i - 1], all[i]) != 0);
    free(all);
}

/* The runtime's final persist job: the run row and its delivery commit together. */
typedef struct final_job {
    ah_run_rec_t run;
    const char *url;
    int fail_after; /* nonzero: the job fails after enqueueing (rolls back both) */
} final_job_t;

static int final_work(ah_db_t *db, void *arg)
{
    final_job_t *j = arg;
    int rc = ah_store_run_insert(db, &j->run);
    if (rc == 0)
        rc = ah_webhook_enqueue_run(db, &j->run, j->url, 7000);
    return rc == 0 && j->fail_after ? j->fail_after : rc;
}

static int final_again_work(ah_db_t *db, void *arg)
{
    final_job_t *j = arg;
    return ah_webhook_enqueue_run(db, &j->run, j->url, 7100);
}

static int enqueue_by_id_work(ah_db_t *db, void *arg)
{
    return ah_webhook_enqueue_run_id(db, arg, 7200);
}

static void test_enqueue_run_atomic(void **state)
{
    final_job_t j = {make_run("run_ok", "failed"), "https://example.com/h", 0};
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &j), 0);
    db_op_t o = {.run_id = "run_ok"};
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);
    get_row(state, o.ids[0], &o);
    assert_string_equal(o.rec.event, "run.failed");
    assert_string_equal(o.rec.url, "https://example.com/h");
    json_t *p = json_loads(o.rec.payload, 0, NULL);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "id")), o.rec.id);
    json_decref(p);
    ah_webhook_rec_free(&o.rec);

    /* rolled back together */
    final_job_t k = {make_run("run_rb", "completed"), "https://example.com/h", -EIO};
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &k), -EIO);
    o.run_id = "run_rb";
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 0);
    /* Stored final again (a resumed run): still one delivery. */
    final_job_t again = {make_run("run_ok", "failed"), "https://example.com/h", 0};
    assert_int_equal(ah_store_call(store_of(state), W, final_again_work, &again), 0);
    o.run_id = "run_ok";
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);
    /* By id, for bulk paths (queue expiry): the run's stored webhook_url. */
    final_job_t exp = {make_run("run_exp", "expired"), NULL, 0};
    exp.run.webhook_url = (char *)"https://example.com/exp";
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &exp), 0); /* url NULL: none */
    assert_int_equal(ah_store_call(store_of(state), W, enqueue_by_id_work, (void *)"run_exp"), 0);
    assert_int_equal(ah_store_call(store_of(state), W, enqueue_by_id_work, (void *)"run_exp"), 0);
    assert_int_equal(ah_store_call(store_of(state), W, enqueue_by_id_work, (void *)"run_none"),
                     -ENOENT);
    o.run_id = "run_exp";
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);
    get_row(state, o.ids[0], &o);
    assert_string_equal(o.rec.event, "run.failed");
    assert_string_equal(o.rec.url, "https://example.com/exp");
    ah_webhook_rec_free(&o.rec);
    /* nothing to send: not final, or no URL */
    final_job_t q = {make_run("run_q", "running"), "https://example.com/h", 0};
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &q), 0);
    final_job_t u = {make_run("run_u", "completed"), NULL, 0};
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &u), 0);
    o.run_id = NULL;
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 2);
}

/* ---- a real target: our HTTP server ---- */

typedef struct got {
    char path[32];
    char delivery[48], event[32], attempt[8], ua[64], ctype[64];
    char sig[AH_WEBHOOK_SIG_MAX];
    bool has_sig;
    char *body;
    size_t n;
} got_t;

#define GOT_MAX 64
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static got_t g_got[GOT_MAX];
static int g_ngot;
static atomic_int g_flaky_left;  /* /flaky answers 500 while > 0 */
static atomic_bool g_toggle_500; /* /toggle answers 500 while set */

static ah_http_server_t *g_srv;
static ah_router_t *g_router;
static char g_base[96];
static ah_app_t g_app;

static void hdr(ah_http_req_t *r, const char *name, char *out, size_t n)
{
    const char *v = ah_http_req_header_str(r, name);
    snprintf(out, n, "%s", v ? v : "");
}

static void record(ah_http_req_t *r)
{
    pthread_mutex_lock(&g_mu);
    if (g_ngot < GOT_MAX) {
        got_t *g = &g_got[g_ngot++];
        size_t plen;
        const char *path = ah_http_req_path(r, &plen);
        snprintf(g->path, sizeof(g->path), "%.*s", (int)plen, path);
        hdr(r, "x-agenthub-delivery", g->delivery, sizeof(g->delivery));
        hdr(r, "x-agenthub-event", g->event, sizeof(g->event));
        hdr(r, "x-agenthub-attempt", g->attempt, sizeof(g->attempt));
        hdr(r, "user-agent", g->ua, sizeof(g->ua));
        hdr(r, "content-type", g->ctype, sizeof(g->ctype));
        g->has_sig = ah_http_req_header_str(r, "x-agenthub-signature") != NULL;
        hdr(r, "x-agenthub-signature", g->sig, sizeof(g->sig));
        const char *b = ah_http_req_body(r, &g->n);
        g->body = malloc(g->n + 1);
        memcpy(g->body, b, g->n);
        g->body[g->n] = '\0';
    }
    pthread_mutex_unlock(&g_mu);
}

static void h_ok(ah_http_req_t *r)
{
    record(r);
    ah_http_reply_json(r, 200, "{}", 2);
}

static void h_fail(ah_http_req_t *r)
{
    record(r);
    static const char b[] = "{\"error\":\"receiver is down\"}";
    ah_http_reply_json(r, 500, b, sizeof(b) - 1);
}

static void h_flaky(ah_http_req_t *r)
{
    record(r);
    if (atomic_fetch_sub(&g_flaky_left, 1) > 0)
        ah_http_reply_json(r, 500, "{}", 2);
    else
        ah_http_reply_json(r, 204, NULL, 0);
}

static void h_toggle(ah_http_req_t *r)
{
    record(r);
    ah_http_reply_json(r, atomic_load(&g_toggle_500) ? 503 : 200, "{}", 2);
}

static void never_abort(void *ud)
{
    ah_http_reply(ud, 499, NULL, NULL, 0); /* terminal call: only frees */
}

/* Answers nothing until the client goes away. */
static void h_never(ah_http_req_t *r)
{
    record(r);
    ah_http_req_on_abort(r, never_abort, r);
}

/* A route is either a raw target handler or an API handler. */
typedef struct route_fn {
    void (*raw)(ah_http_req_t *);
    ah_api_handler_fn api;
} route_fn_t;

static const route_fn_t r_ok = {h_ok, NULL}, r_fail = {h_fail, NULL}, r_flaky = {h_flaky, NULL},
                        r_toggle = {h_toggle, NULL}, r_never = {h_never, NULL};
static const route_fn_t r_list = {NULL, ah_api_webhooks_list}, r_get = {NULL, ah_api_webhooks_get},
                        r_retry = {NULL, ah_api_webhooks_retry};

static void test_dispatch(ah_http_req_t *req, const ah_route_t *route, void *ud)
{
    const route_fn_t *f = route->handler;
    if (f->raw) {
        f->raw(req);
        return;
    }
    ah_principal_t *who = ah_arena_alloc(ah_http_req_arena(req), sizeof(*who));
    memset(who, 0, sizeof(*who));
    snprintf(who->key_id, sizeof(who->key_id), "key_admin");
    who->role = AH_ROLE_ADMIN;
    f->api(req, ud, who);
}

static int server_setup(void **state)
{
    (void)state;
    if (ah_http_client_global_init() != 0)
        return -1;
    g_router = ah_router_new();
    struct {
        ah_http_method_t m;
        const char *path;
        const route_fn_t *fn;
    } routes[] = {
        {AH_HTTP_POST, "/ok", &r_ok},
        {AH_HTTP_POST, "/fail", &r_fail},
        {AH_HTTP_POST, "/flaky", &r_flaky},
        {AH_HTTP_POST, "/toggle", &r_toggle},
        {AH_HTTP_POST, "/never", &r_never},
        {AH_HTTP_GET, "/v1/webhooks/deliveries", &r_list},
        {AH_HTTP_GET, "/v1/webhooks/deliveries/{id}", &r_get},
        {AH_HTTP_POST, "/v1/webhooks/deliveries/{id}/retry", &r_retry},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (ah_router_add(g_router, routes[i].m, routes[i].path, (void *)routes[i].fn, 0) != 0)
            return -1;
    }
    ah_http_server_opts_t so = {
        .listen = "127.0.0.1:0",
        .workers = 1,
        .max_body_bytes = 1u << 20,
        .router = g_router,
        .dispatch = test_dispatch,
        .ud = &g_app,
    };
    ah_buf_t err = AH_BUF_INIT;
    if (ah_http_server_new(&so, &g_srv, &err) != 0 || ah_http_server_start(g_srv) != 0) {
        fprintf(stderr, "server: %s\n", err.data ? err.data : "?");
        ah_buf_free(&err);
        return -1;
    }
    ah_buf_free(&err);
    char addr[80];
    ah_http_server_addr(g_srv, addr, sizeof(addr));
    snprintf(g_base, sizeof(g_base), "http://%s", addr);
    return 0;
}

static int server_teardown(void **state)
{
    (void)state;
    ah_http_server_drain(g_srv);
    ah_http_server_wait(g_srv, 2.0);
    ah_http_server_free(g_srv);
    ah_router_free(g_router);
    ah_http_client_global_cleanup();
    return 0;
}

static void got_reset(void)
{
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_ngot; i++)
        free(g_got[i].body);
    g_ngot = 0;
    pthread_mutex_unlock(&g_mu);
}

static int got_count(const char *path)
{
    int n = 0;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_ngot; i++)
        n += strcmp(g_got[i].path, path) == 0;
    pthread_mutex_unlock(&g_mu);
    return n;
}

static int delivery_setup(void **state)
{
    got_reset();
    atomic_store(&g_flaky_left, 0);
    atomic_store(&g_toggle_500, false);
    if (store_setup(state) != 0)
        return -1;
    g_app.store = store_of(state);
    return 0;
}

static int delivery_teardown(void **state)
{
    got_reset();
    g_app.store = NULL;
    return ah_test_store_teardown(state);
}

/* Enqueues a delivery for run_id to base + path (or a full URL); returns its id in id. */
static void enqueue_to(void **state, const char *run_id, const char *path, char id[48])
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", strstr(path, "://") ? "" : g_base, path);
    final_job_t j = {make_run(run_id, "completed"), url, 0};
    assert_int_equal(ah_store_call(store_of(state), W, final_work, &j), 0);
    db_op_t o = {.run_id = run_id};
    assert_int_equal(call(state, list_work, &o, R), 0);
    assert_int_equal(o.n, 1);
    snprintf(id, 48, "%s", o.ids[0]);
}

static ah_webhooks_opts_t fast_opts(void)
{
    ah_webhooks_opts_t o = {
        .secret = SECRET,
        .max_attempts = 3,
        .timeout_s = 2.0,
        .poll_interval_s = 0.02,
        .backoff_base_ms = 20,
        .backoff_max_ms = 100,
        .stop_grace_s = -1,
    };
    return o;
}

/* Waits until the target got at least n requests on path. */
static bool wait_got(const char *path, int n, int ms)
{
    uint64_t end = ah_mono_ns() + (uint64_t)ms * 1000000u;
    while (got_count(path) < n) {
        if (ah_mono_ns() > end)
            return false;
        ah_test_sleep_ms(5);
    }
    return true;
}

/* Waits until the delivery has at least n attempts recorded. */
static bool wait_attempts(void **state, const char *id, int n, int ms)
{
    uint64_t end = ah_mono_ns() + (uint64_t)ms * 1000000u;
    db_op_t o = {0};
    for (;;) {
        get_row(state, id, &o);
        int a = o.rec.attempts;
        ah_webhook_rec_free(&o.rec);
        if (a >= n)
            return true;
        if (ah_mono_ns() > end)
            return false;
        ah_test_sleep_ms(5);
    }
}

/* Waits until the delivery's status is want (and, when attempts >= 0, its attempts). */
static bool wait_status(void **state, const char *id, const char *want, int attempts, int ms)
{
    uint64_t end = ah_mono_ns() + (uint64_t)ms * 1000000u;
    db_op_t o = {0};
    for (;;) {
        get_row(state, id, &o);
        bool ok = strcmp(o.rec.status, want) == 0 && (attempts < 0 || o.rec.attempts == attempts);
        ah_webhook_rec_free(&o.rec);
        if (ok)
            return true;
        if (ah_mono_ns() > end)
            return false;
        ah_test_sleep_ms(5);
    }
}

static void test_deliver_ok_signed(void **state)
{
    char id[48];
    enqueue_to(state, "run_d1", "/ok", id);
    ah_webhooks_opts_t o = fast_opts();
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_non_null(w);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_int_equal(ah_webhooks_start(w), -EALREADY);
    ah_webhooks_kick(w);
    assert_true(wait_status(state, id, "delivered", 1, WAIT_MS));

    db_op_t row = {0};
    get_row(state, id, &row);
    assert_int_equal(row.rec.last_status, 200);
    assert_true(row.rec.delivered_at > 0);

    pthread_mutex_lock(&g_mu);
    assert_int_equal(g_ngot, 1);
    got_t *g = &g_got[0];
    assert_string_equal(g->path, "/ok");
    assert_string_equal(g->delivery, id);
    assert_string_equal(g->event, "run.completed");
    assert_string_equal(g->attempt, "1");
    assert_string_equal(g->ctype, "application/json");
    assert_true(strncmp(g->ua, "agenthub", 8) == 0);
    assert_true(g->has_sig);
    /* What a receiver does: verify the raw body against the header. */
    assert_int_equal(ah_webhook_verify(SECRET, g->sig, g->body, g->n, ah_wall_ms() / 1000, 300), 0);
    assert_int_equal(ah_webhook_verify("wrong", g->sig, g->body, g->n, ah_wall_ms() / 1000, 300),
                     -EBADMSG);
    assert_int_equal(g->n, strlen(row.rec.payload));
    assert_memory_equal(g->body, row.rec.payload, g->n);
    json_t *p = json_loads(g->body, 0, NULL);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "id")), id);
    assert_string_equal(json_string_value(json_object_get(json_object_get(p, "data"), "id")),
                        "run_d1");
    json_decref(p);
    pthread_mutex_unlock(&g_mu);
    ah_webhook_rec_free(&row.rec);

    ah_webhooks_stats_t st;
    ah_webhooks_stats(w, &st);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.failed, 0);
    ah_webhooks_free(w);
}

static void test_unsigned_without_secret(void **state)
{
    char id[48];
    enqueue_to(state, "run_u1", "/ok", id);
    ah_webhooks_opts_t o = fast_opts();
    o.secret = NULL;
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_non_null(w);
    ah_webhooks_kick(w); /* before start: kept */
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_status(state, id, "delivered", 1, WAIT_MS));
    pthread_mutex_lock(&g_mu);
    assert_false(g_got[0].has_sig);
    pthread_mutex_unlock(&g_mu);
    ah_webhooks_free(w);
}

static void test_retry_500_then_delivered(void **state)
{
    char id[48];
    atomic_store(&g_flaky_left, 2);
    enqueue_to(state, "run_f1", "/flaky", id);
    ah_webhooks_opts_t o = fast_opts();
    o.max_attempts = 5;
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_status(state, id, "delivered", 3, WAIT_MS));
    assert_int_equal(got_count("/flaky"), 3);
    pthread_mutex_lock(&g_mu);
    assert_string_equal(g_got[0].attempt, "1");
    assert_string_equal(g_got[2].attempt, "3");
    assert_string_equal(g_got[2].delivery, id); /* the same id on every attempt */
    pthread_mutex_unlock(&g_mu);
    ah_webhooks_stats_t st;
    ah_webhooks_stats(w, &st);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.dead, 0);
    ah_webhooks_free(w);
}

/* A port nothing listens on: bind, read the port, close. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_dead_after_max_attempts(void **state)
{
    char id500[48], idref[48], idbad[48];
    enqueue_to(state, "run_x1", "/fail", id500);
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", closed_port());
    enqueue_to(state, "run_x2", url, idref);
    enqueue_to(state, "run_x3", "ftp://example.com/hook", idbad);
    ah_webhooks_opts_t o = fast_opts();
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_status(state, id500, "dead", 3, WAIT_MS));
    assert_true(wait_status(state, idref, "dead", 3, WAIT_MS));
    assert_true(wait_status(state, idbad, "dead", 1, WAIT_MS)); /* no retry can fix it */
    assert_int_equal(got_count("/fail"), 3);

    db_op_t row = {0};
    get_row(state, id500, &row);
    assert_int_equal(row.rec.last_status, 500);
    assert_non_null(strstr(row.rec.last_error, "HTTP 500"));
    assert_non_null(strstr(row.rec.last_error, "receiver is down"));
    get_row(state, idref, &row);
    assert_int_equal(row.rec.last_status, 0);
    assert_non_null(row.rec.last_error);
    get_row(state, idbad, &row);
    assert_non_null(strstr(row.rec.last_error, "http://"));
    ah_webhook_rec_free(&row.rec);

    ah_webhooks_stats_t st;
    ah_webhooks_stats(w, &st);
    assert_int_equal(st.dead, 3);
    assert_int_equal(st.failed, 7);
    ah_webhooks_free(w);
}

static void test_slow_target_does_not_block(void **state)
{
    char slow[48], fast1[48], fast2[48];
    enqueue_to(state, "run_s0", "/never", slow);
    ah_webhooks_opts_t o = fast_opts();
    o.timeout_s = 1.5;
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    /* The slow one is in flight ... */
    assert_true(wait_got("/never", 1, WAIT_MS));
    /* ... and new deliveries still go out at once, long before its timeout. */
    uint64_t t0 = ah_mono_ns();
    enqueue_to(state, "run_s1", "/ok", fast1);
    ah_webhooks_kick(w);
    assert_true(wait_status(state, fast1, "delivered", 1, 800));
    enqueue_to(state, "run_s2", "/ok", fast2);
    ah_webhooks_kick(w);
    assert_true(wait_status(state, fast2, "delivered", 1, 800));
    assert_true(ah_mono_ns() - t0 < 1000000000ull);
    db_op_t row = {0};
    get_row(state, slow, &row);
    assert_int_equal(row.rec.attempts, 0); /* still in its first attempt */
    ah_webhook_rec_free(&row.rec);
    /* Then the slow one times out and is rescheduled, not lost. */
    assert_true(wait_status(state, slow, "pending", 1, WAIT_MS));
    get_row(state, slow, &row);
    assert_non_null(strstr(row.rec.last_error, "timed out"));
    ah_webhook_rec_free(&row.rec);
    ah_webhooks_free(w);
}

static void test_restart_picks_up_pending(void **state)
{
    char id[48], never[48];
    atomic_store(&g_toggle_500, true);
    enqueue_to(state, "run_r1", "/toggle", id);
    ah_webhooks_opts_t o = fast_opts();
    o.max_attempts = 100;
    o.backoff_base_ms = 50;
    o.backoff_max_ms = 50;
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_attempts(state, id, 1, WAIT_MS));
    /* A delivery caught in flight by the stop is given back, due now. */
    enqueue_to(state, "run_r2", "/never", never);
    ah_webhooks_kick(w);
    assert_true(wait_got("/never", 1, WAIT_MS));
    ah_webhooks_free(w);

    db_op_t row = {0};
    get_row(state, id, &row);
    assert_string_equal(row.rec.status, "pending");
    assert_true(row.rec.attempts >= 1);
    get_row(state, never, &row);
    assert_string_equal(row.rec.status, "pending");
    assert_int_equal(row.rec.attempts, 0);
    assert_true(row.rec.next_attempt_at <= ah_wall_ms()); /* released, not leased */
    ah_webhook_rec_free(&row.rec);

    /* The target recovers; a new deliverer (a restart) finishes the job. */
    atomic_store(&g_toggle_500, false);
    w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_status(state, id, "delivered", -1, WAIT_MS));
    ah_webhooks_free(w);
    /* free without start, and NULL */
    ah_webhooks_free(ah_webhooks_new(store_of(state), NULL));
    ah_webhooks_free(NULL);
    ah_webhooks_kick(NULL);
    ah_webhooks_opts_t bad = {.timeout_s = 10, .lease_s = 5};
    assert_null(ah_webhooks_new(store_of(state), &bad));
    assert_null(ah_webhooks_new(NULL, NULL));
}

/* ---- the API ---- */

typedef struct resp {
    long status;
    ah_buf_t body;
    json_t *json;
} resp_t;

static size_t resp_write(char *p, size_t size, size_t n, void *ud)
{
    ah_buf_append(ud, p, size * n);
    return size * n;
}

static void http(const char *method, const char *path, resp_t *r)
{
    memset(r, 0, sizeof(*r));
    char url[256];
    snprintf(url, sizeof(url), "%s%s", g_base, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, resp_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    r->json = r->body.data ? json_loads(r->body.data, 0, NULL) : NULL;
}

static void resp_free(resp_t *r)
{
    json_decref(r->json);
    ah_buf_free(&r->body);
}

static void test_api(void **state)
{
    char dead[48], ok[48];
    enqueue_to(state, "run_a1", "/fail", dead);
    enqueue_to(state, "run_a2", "/ok", ok);
    ah_webhooks_opts_t o = fast_opts();
    o.max_attempts = 1;
    ah_webhooks_t *w = ah_webhooks_new(store_of(state), &o);
    assert_int_equal(ah_webhooks_start(w), 0);
    assert_true(wait_status(state, dead, "dead", 1, WAIT_MS));
    assert_true(wait_status(state, ok, "delivered", 1, WAIT_MS));

    resp_t r;
    http("GET", "/v1/webhooks/deliveries?status=dead", &r);
    assert_int_equal(r.status, 200);
    json_t *data = json_object_get(r.json, "data");
    assert_int_equal(json_array_size(data), 1);
    json_t *d = json_array_get(data, 0);
    assert_string_equal(json_string_value(json_object_get(d, "id")), dead);
    assert_string_equal(json_string_value(json_object_get(d, "object")), "webhook_delivery");
    assert_string_equal(json_string_value(json_object_get(d, "run_id")), "run_a1");
    assert_string_equal(json_string_value(json_object_get(d, "event")), "run.completed");
    assert_int_equal(json_integer_value(json_object_get(d, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "last_status")), 500);
    assert_true(json_is_null(json_object_get(d, "next_attempt_at")));
    assert_null(json_object_get(d, "payload"));
    assert_true(json_is_false(json_object_get(r.json, "has_more")));
    resp_free(&r);

    http("GET", "/v1/webhooks/deliveries?run_id=run_a2", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "data")), 1);
    resp_free(&r);
    http("GET", "/v1/webhooks/deliveries?limit=1", &r);
    assert_int_equal(json_array_size(json_object_get(r.json, "data")), 1);
    assert_true(json_is_true(json_object_get(r.json, "has_more")));
    resp_free(&r);
    http("GET", "/v1/webhooks/deliveries?status=lost", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    http("GET", "/v1/webhooks/deliveries?limit=0", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    char path[128];
    snprintf(path, sizeof(path), "/v1/webhooks/deliveries/%s", ok);
    http("GET", path, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "delivered");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "payload"), "type")),
        "run.completed");
    resp_free(&r);
    http("GET", "/v1/webhooks/deliveries/whd_missing", &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);

    /* Retry: 202, pending with attempts 0, sent again at once; the target still
     * answers 500, so it is dead again after one attempt, and visible again. */
    snprintf(path, sizeof(path), "/v1/webhooks/deliveries/%s/retry", dead);
    http("POST", path, &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "pending");
    assert_int_equal(json_integer_value(json_object_get(r.json, "attempts")), 0);
    resp_free(&r);
    assert_true(wait_status(state, dead, "dead", 1, WAIT_MS));
    assert_int_equal(got_count("/fail"), 2);

    snprintf(path, sizeof(path), "/v1/webhooks/deliveries/%s/retry", ok);
    http("POST", path, &r);
    assert_int_equal(r.status, 409);
    resp_free(&r);
    http("POST", "/v1/webhooks/deliveries/whd_missing/retry", &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    ah_webhooks_free(w);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_sign_known_vector),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_backoff_and_helpers),
        cmocka_unit_test(test_payload_shape),
    };
#define OUTBOX_TESTS(setup, teardown)                                                              \
    {                                                                                              \
        cmocka_unit_test_setup_teardown(test_outbox_claim_and_lease, setup, teardown),             \
            cmocka_unit_test_setup_teardown(test_outbox_backoff_dead_retry, setup, teardown),      \
            cmocka_unit_test_setup_teardown(test_outbox_fencing_and_permanent, setup, teardown),   \
            cmocka_unit_test_setup_teardown(test_outbox_list_and_prune, setup, teardown),          \
            cmocka_unit_test_setup_teardown(test_outbox_replicas_claim_once, setup, teardown),     \
            cmocka_unit_test_setup_teardown(test_enqueue_run_atomic, setup, teardown),             \
    }
    /* Before any thread: the PostgreSQL watcher is a fork. Only once this
     * agenthub has the backend (ah_db_open takes postgres:// URLs). */
    int pg = AH_PGTEST_SKIP;
    ah_db_t *probe = NULL;
    if (ah_db_open("postgres://agenthub@127.0.0.1:1/none", NULL, &probe, NULL) == -ENOTSUP)
        printf("SKIP: outbox (postgres): the PostgreSQL backend is not built in yet\n");
    else
        pg = ah_pgtest_start(&g_pg);
    ah_db_close(probe);
    const struct CMUnitTest outbox[] = OUTBOX_TESTS(store_setup, ah_test_store_teardown);
    const struct CMUnitTest outbox_pg[] = OUTBOX_TESTS(pg_store_setup, pg_store_teardown);
    const struct CMUnitTest delivery[] = {
        cmocka_unit_test_setup_teardown(test_deliver_ok_signed, delivery_setup, delivery_teardown),
        cmocka_unit_test_setup_teardown(test_unsigned_without_secret, delivery_setup,
                                        delivery_teardown),
        cmocka_unit_test_setup_teardown(test_retry_500_then_delivered, delivery_setup,
                                        delivery_teardown),
        cmocka_unit_test_setup_teardown(test_dead_after_max_attempts, delivery_setup,
                                        delivery_teardown),
        cmocka_unit_test_setup_teardown(test_slow_target_does_not_block, delivery_setup,
                                        delivery_teardown),
        cmocka_unit_test_setup_teardown(test_restart_picks_up_pending, delivery_setup,
                                        delivery_teardown),
        cmocka_unit_test_setup_teardown(test_api, delivery_setup, delivery_teardown),
    };
    int fails = cmocka_run_group_tests_name("signatures", pure, NULL, NULL);
    fails += cmocka_run_group_tests_name("outbox (sqlite)", outbox, NULL, NULL);
    if (pg == 0)
        fails += cmocka_run_group_tests_name("outbox (postgres)", outbox_pg, NULL, NULL);
    else if (pg != AH_PGTEST_SKIP)
        fails++;
    fails += cmocka_run_group_tests_name("delivery", delivery, server_setup, server_teardown);
    if (pg == 0)
        ah_pgtest_stop(&g_pg);
    return fails ? 1 : 0;
}
