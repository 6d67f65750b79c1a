/*
 * test_usage.c - the usage recorder (gateway/usage.h) and the usage and
 * key_limits rows (store/usage.h), against a real SQLite store in a
 * temporary directory: cost math, batching, flush at free, the pending
 * bound, retries, aggregation and the budget sum.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "gateway/usage.h"
#include "store/store.h"
#include "store/usage.h"
#include "testutil.h"

#define DAY 86400000LL

/* The fixture: a real SQLite store in a temporary directory (testutil.h). */
typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "usage", 256);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

/* ---- store helpers ---- */

typedef struct query {
    const char *sql;
    int64_t n;
} query_t;

static int count_work(ah_db_t *db, void *arg)
{
    query_t *q = arg;
    return ah_db_query_int(db, q->sql, NULL, 0, &q->n);
}

static int64_t count(fixture_t *f, const char *sql)
{
    query_t q = {sql, -1};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, count_work, &q), 0);
    return q.n;
}

static int exec_work(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, arg);
}

static void exec_sql(fixture_t *f, const char *sql)
{
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, exec_work, (void *)sql), 0);
}

static ah_usage_rec_t rec_of(const char *key, const char *model, int64_t ts, double cost)
{
    ah_usage_rec_t r = {
        .ts = ts,
        .request_id = "req_1",
        .key_id = key,
        .tenant = "default",
        .model = model,
        .provider = "local",
        .upstream_model = "echo",
        .prompt_tokens = 10,
        .completion_tokens = 5,
        .cached_tokens = 2,
        .cost_usd = cost,
        .latency_ms = 12,
        .ttft_ms = -1,
        .status = 200,
        .stream = false,
        .attempts = 1,
    };
    return r;
}

/* ---- cost ---- */

static void test_cost(void **state)
{
    (void)state;
    ah_config_price_t p = {
        .input_per_mtok = 0.15, .output_per_mtok = 0.60, .cached_input_per_mtok = 0.075};
    /* (1000 - 200) * 0.15 + 200 * 0.075 + 500 * 0.60 = 435 per million */
    assert_true(fabs(ah_usage_cost(&p, 1000, 200, 500) - 435e-6) < 1e-12);
    /* cached above prompt is clamped to prompt: all input at the cached price */
    assert_true(fabs(ah_usage_cost(&p, 100, 500, 0) - 100 * 0.075e-6) < 1e-12);
    /* negative counts are 0 */
    assert_true(ah_usage_cost(&p, -5, -1, -7) == 0);
    assert_true(ah_usage_cost(NULL, 1000, 0, 1000) == 0);
    /* a million output tokens of a $10/M model cost $10 */
    ah_config_price_t big = {
        .input_per_mtok = 2.5, .output_per_mtok = 10, .cached_input_per_mtok = 1.25};
    assert_true(fabs(ah_usage_cost(&big, 0, 0, 1000000) - 10.0) < 1e-9);
    assert_true(fabs(ah_usage_cost(&big, 2000000, 1000000, 0) - 3.75) < 1e-9);
}

/* ---- recorder ---- */

typedef struct rec_thread {
    ah_usage_t *u;
    int n;
    int id;
} rec_thread_t;

static void *recorder_main(void *arg)
{
    rec_thread_t *rt = arg;
    char key[32];
    snprintf(key, sizeof(key), "key_t%d", rt->id);
    for (int i = 0; i < rt->n; i++) {
        ah_usage_rec_t r = rec_of(key, "fast", 0, 0.001);
        if (ah_usage_record(rt->u, &r) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_batching(void **state)
{
    fixture_t *f = *state;
    /* A long interval: only the row threshold (500) triggers flushes here. */
    ah_usage_opts_t o = {.flush_interval_s = 3600, .flush_rows = 500};
    ah_usage_t *u = ah_usage_new(f->store, &o);
    assert_non_null(u);
    assert_int_equal(ah_usage_start(u), 0);
    rec_thread_t rt[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        rt[i] = (rec_thread_t){u, 250, i};
        assert_int_equal(pthread_create(&th[i], NULL, recorder_main, &rt[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    /* The 500-row threshold flushed without the timer; the rest waits for it (or a flush). */
    ah_usage_stats_t st;
    uint64_t end = ah_mono_ns() + 5000000000ull;
    do {
        ah_test_sleep_ms(5);
        ah_usage_stats(u, &st);
    } while (st.rows_written < 500 && ah_mono_ns() < end);
    assert_true(st.rows_written >= 500);
    assert_int_equal(ah_usage_flush(u), 0);
    ah_usage_stats(u, &st);
    assert_int_equal(st.recorded, 1000);
    assert_int_equal(st.rows_written, 1000);
    assert_true(st.batches >= 1 && st.batches <= 4); /* 1000 rows, a handful of transactions */
    assert_int_equal(st.rows_dropped, 0);
    assert_int_equal(st.pending, 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage"), 1000);
    assert_int_equal(count(f, "SELECT COUNT(DISTINCT key_id) FROM usage"), 4);
    ah_usage_free(u);
}

static void test_timer_flush(void **state)
{
    fixture_t *f = *state;
    ah_usage_opts_t o = {.flush_interval_s = 0.02};
    ah_usage_t *u = ah_usage_new(f->store, &o);
    assert_int_equal(ah_usage_start(u), 0);
    ah_usage_rec_t r = rec_of("key_a", "fast", 0, 0.5);
    assert_int_equal(ah_usage_record(u, &r), 0);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while (count(f, "SELECT COUNT(*) FROM usage") < 1 && ah_mono_ns() < end)
        ah_test_sleep_ms(5);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage"), 1);
    ah_usage_free(u);
}

static void test_flush_at_free(void **state)
{
    fixture_t *f = *state;
    ah_usage_opts_t o = {.flush_interval_s = 3600};
    ah_usage_t *u = ah_usage_new(f->store, &o);
    assert_int_equal(ah_usage_start(u), 0);
    for (int i = 0; i < 37; i++) {
        ah_usage_rec_t r = rec_of("key_a", "fast", 0, 0.01);
        assert_int_equal(ah_usage_record(u, &r), 0);
    }
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage"), 0);
    ah_usage_free(u);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage"), 37);
}

typedef struct row_check {
    ah_usage_row_t row;
    int n;
} row_check_t;

static int read_row(void *ud, const ah_db_val_t *c, int ncols)
{
    row_check_t *rc = ud;
    assert_int_equal(ncols, 19);
    ah_usage_row_t *r = &rc->row;
    r->ts = ah_db_val_int(&c[0]);
    ah_db_val_copy(&c[1], r->request_id, sizeof(r->request_id));
    ah_db_val_copy(&c[2], r->key_id, sizeof(r->key_id));
    ah_db_val_copy(&c[3], r->tenant, sizeof(r->tenant));
    ah_db_val_copy(&c[4], r->model, sizeof(r->model));
    ah_db_val_copy(&c[5], r->provider, sizeof(r->provider));
    ah_db_val_copy(&c[6], r->upstream_model, sizeof(r->upstream_model));
    r->prompt_tokens = ah_db_val_int(&c[7]);
    r->completion_tokens = ah_db_val_int(&c[8]);
    r->cached_tokens = ah_db_val_int(&c[9]);
    r->cost_usd = ah_db_val_dbl(&c[10]);
    r->latency_ms = c[11].type == AH_DB_NULL ? -1 : ah_db_val_int(&c[11]);
    r->ttft_ms = c[12].type == AH_DB_NULL ? -1 : ah_db_val_int(&c[12]);
    r->status = (int)ah_db_val_int(&c[13]);
    r->stream = (int)ah_db_val_int(&c[14]);
    r->attempts = (int)ah_db_val_int(&c[15]);
    assert_true(c[16].type == AH_DB_NULL || c[16].type == AH_DB_TEXT);
    ah_db_val_copy(&c[16], r->agent, sizeof(r->agent));
    ah_db_val_copy(&c[17], r->run_id, sizeof(r->run_id));
    ah_db_val_copy(&c[18], r->node, sizeof(r->node));
    rc->n++;
    return 0;
}

static int read_rows_work(ah_db_t *db, void *arg)
{
    return ah_db_query(db,
                       "SELECT ts, request_id, key_id, tenant, model, provider, upstream_model, "
                       "prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, "
                       "ttft_ms, status, stream, attempts, agent, run_id, node FROM usage "
                       "ORDER BY ts",
                       NULL, 0, read_row, arg);
}

static void test_row_fields(void **state)
{
    fixture_t *f = *state;
    ah_usage_t *u = ah_usage_new(f->store, NULL);
    /* A model name of 200 two-byte characters: cut at a character boundary. */
    char longname[401];
    for (int i = 0; i < 200; i++)
        memcpy(longname + 2 * i, "\xc3\xa9", 2);
    longname[400] = '\0';
    ah_usage_rec_t r = {
        .ts = 1717200000123,
        .request_id = "req_abc",
        .key_id = "key_x",
        .tenant = "acme",
        .model = longname,
        .provider = "openai",
        .upstream_model = "gpt-4o-mini",
        .prompt_tokens = 1200,
        .completion_tokens = 300,
        .cached_tokens = 1000,
        .cost_usd = 0.00042,
        .latency_ms = 850,
        .ttft_ms = 120,
        .status = 200,
        .stream = true,
        .attempts = 2,
        .agent = "support",
        .run_id = "run_1",
    };
    assert_int_equal(ah_usage_record(u, &r), 0);
    ah_usage_rec_t r2 = rec_of("key_y", "fast", 1717200000999, 0);
    assert_int_equal(ah_usage_record(u, &r2), 0);
    assert_int_equal(ah_usage_flush(u), 0);

    row_check_t rc;
    memset(&rc, 0, sizeof(rc));
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, read_rows_work, &rc), 0);
    assert_int_equal(rc.n, 2);
    /* the last row read is r2: ttft NULL, agent/run NULL */
    assert_int_equal(rc.row.ttft_ms, -1);
    assert_string_equal(rc.row.agent, "");
    assert_string_equal(rc.row.run_id, "");
    assert_string_equal(rc.row.node, ah_usage_node(u));

    /* r itself */
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage WHERE request_id = 'req_abc' AND "
                              "key_id = 'key_x' AND tenant = 'acme' AND provider = 'openai' AND "
                              "upstream_model = 'gpt-4o-mini' AND prompt_tokens = 1200 AND "
                              "completion_tokens = 300 AND cached_tokens = 1000 AND "
                              "latency_ms = 850 AND ttft_ms = 120 AND status = 200 AND "
                              "stream = 1 AND attempts = 2 AND agent = 'support' AND "
                              "run_id = 'run_1' AND ts = 1717200000123"),
                     1);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage WHERE abs(cost_usd - 0.00042) < 1e-12"),
                     1);
    /* 127 bytes fit in model[128]: cut back to 126 so no character is split */
    assert_int_equal(count(f, "SELECT length(CAST(model AS BLOB)) FROM usage WHERE "
                              "key_id = 'key_x'"),
                     126);
    ah_usage_free(u);
}

typedef struct spend {
    int calls;
    double total;
    char last_key[48];
} spend_t;

static void spend_hook(void *ud, const char *key_id, int64_t ts, double cost)
{
    spend_t *s = ud;
    (void)ts;
    s->calls++;
    s->total += cost;
    snprintf(s->last_key, sizeof(s->last_key), "%s", key_id);
}

static void test_bound_and_hook(void **state)
{
    (void)state;
    ah_usage_opts_t o = {.max_pending = 10};
    ah_usage_t *u = ah_usage_new(NULL, &o); /* no store: rows only wait */
    spend_t sp = {0};
    ah_usage_set_spend_hook(u, spend_hook, &sp);
    int ok = 0, dropped = 0;
    for (int i = 0; i < 15; i++) {
        ah_usage_rec_t r = rec_of("key_b", "fast", 0, 0.25);
        int rc = ah_usage_record(u, &r);
        if (rc == 0)
            ok++;
        else if (rc == -ENOBUFS)
            dropped++;
    }
    assert_int_equal(ok, 10);
    assert_int_equal(dropped, 5);
    ah_usage_stats_t st;
    ah_usage_stats(u, &st);
    assert_int_equal(st.rows_dropped, 5);
    assert_int_equal(st.pending, 10);
    /* the spend of dropped rows still counts */
    assert_int_equal(sp.calls, 15);
    assert_true(fabs(sp.total - 3.75) < 1e-9);
    assert_string_equal(sp.last_key, "key_b");
    /* zero-cost rows do not call the hook */
    ah_usage_rec_t z = rec_of("key_b", "fast", 0, 0);
    ah_usage_record(u, &z);
    assert_int_equal(sp.calls, 15);
    assert_int_equal(ah_usage_record(u, NULL), -EINVAL);
    ah_usage_free(u);
}

static void test_retry_then_drop(void **state)
{
    fixture_t *f = *state;
    ah_usage_t *u = ah_usage_new(f->store, NULL);
    exec_sql(f, "ALTER TABLE usage RENAME TO usage_away");
    for (int i = 0; i < 5; i++) {
        ah_usage_rec_t r = rec_of("key_c", "fast", 0, 0.1);
        assert_int_equal(ah_usage_record(u, &r), 0);
    }
    assert_true(ah_usage_flush(u) < 0); /* no table: the batch fails and waits for a retry */
    ah_usage_stats_t st;
    ah_usage_stats(u, &st);
    assert_int_equal(st.batch_errors, 1);
    assert_int_equal(st.pending, 5);
    assert_int_equal(st.rows_dropped, 0);
    /* the table comes back: the retry writes the rows */
    exec_sql(f, "ALTER TABLE usage_away RENAME TO usage");
    assert_int_equal(ah_usage_flush(u), 0);
    ah_usage_stats(u, &st);
    assert_int_equal(st.rows_written, 5);
    assert_int_equal(st.pending, 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM usage"), 5);

    /* failing AH_USAGE_RETRIES times drops the rows */
    exec_sql(f, "ALTER TABLE usage RENAME TO usage_away");
    ah_usage_rec_t r = rec_of("key_c", "fast", 0, 0.1);
    assert_int_equal(ah_usage_record(u, &r), 0);
    for (int i = 0; i < AH_USAGE_RETRIES; i++)
        assert_true(ah_usage_flush(u) < 0);
    ah_usage_stats(u, &st);
    assert_int_equal(st.rows_dropped, 1);
    assert_int_equal(st.pending, 0);
    exec_sql(f, "ALTER TABLE usage_away RENAME TO usage");
    ah_usage_free(u);
}

/* ---- aggregation and sums ---- */

static int insert_rows_work(ah_db_t *db, void *arg)
{
    const ah_usage_row_t *rows = arg;
    size_t n = 0;
    while (rows[n].ts)
        n++;
    return ah_store_usage_insert(db, rows, n);
}

static ah_usage_row_t row(int64_t ts, const char *key, const char *model, int64_t p, int64_t c,
                          double cost, const char *node)
{
    ah_usage_row_t r;
    memset(&r, 0, sizeof(r));
    r.ts = ts;
    snprintf(r.key_id, sizeof(r.key_id), "%s", key);
    snprintf(r.model, sizeof(r.model), "%s", model);
    snprintf(r.node, sizeof(r.node), "%s", node);
    r.prompt_tokens = p;
    r.completion_tokens = c;
    r.cached_tokens = p / 2;
    r.cost_usd = cost;
    r.latency_ms = 5;
    r.ttft_ms = -1;
    r.status = 200;
    r.attempts = 1;
    return r;
}

typedef struct aggs {
    ah_usage_agg_t a[32];
    char keys[32][48], models[32][64];
    int n;
} aggs_t;

static int agg_cb(void *ud, const ah_usage_agg_t *a)
{
    aggs_t *g = ud;
    assert_true(g->n < 32);
    g->a[g->n] = *a;
    if (a->key_id)
        snprintf(g->keys[g->n], 48, "%s", a->key_id);
    if (a->model)
        snprintf(g->models[g->n], 64, "%s", a->model);
    g->n++;
    return 0;
}

typedef struct agg_job {
    ah_usage_filter_t f;
    aggs_t g;
} agg_job_t;

static int agg_work(ah_db_t *db, void *arg)
{
    agg_job_t *j = arg;
    return ah_store_usage_aggregate(db, &j->f, agg_cb, &j->g);
}

static void aggregate(fixture_t *f, agg_job_t *j)
{
    memset(&j->g, 0, sizeof(j->g));
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, agg_work, j), 0);
}

typedef struct sum_job {
    const char *key;
    int64_t since;
    const char *exclude;
    double out;
} sum_job_t;

static int sum_work(ah_db_t *db, void *arg)
{
    sum_job_t *s = arg;
    return ah_store_usage_cost_since(db, s->key, s->since, s->exclude, &s->out);
}

static void test_aggregate_and_sum(void **state)
{
    fixture_t *f = *state;
    int64_t d0 = 19800 * DAY; /* 2024-03-18 */
    ah_usage_row_t rows[] = {
        row(d0 + 1000, "key_a", "fast", 100, 10, 1.0, "n_1"),
        row(d0 + 2000, "key_a", "fast", 200, 20, 2.0, "n_2"),
        row(d0 + 3000, "key_a", "smart", 300, 30, 4.0, "n_1"),
        row(d0 + DAY + 5, "key_a", "fast", 400, 40, 8.0, "n_1"),
        row(d0 + DAY + 6, "key_b", "fast", 500, 50, 16.0, "n_2"),
        {0},
    };
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_rows_work, rows), 0);

    agg_job_t j = {
        .f = {.from_ms = d0, .to_ms = d0 + 2 * DAY, .group = AH_USAGE_GROUP_ALL, .limit = 100}};
    aggregate(f, &j);
    /* ordered by day, key, model */
    assert_int_equal(j.g.n, 4);
    assert_int_equal(j.g.a[0].day, 19800);
    assert_string_equal(j.g.keys[0], "key_a");
    assert_string_equal(j.g.models[0], "fast");
    assert_int_equal(j.g.a[0].requests, 2);
    assert_int_equal(j.g.a[0].prompt_tokens, 300);
    assert_int_equal(j.g.a[0].completion_tokens, 30);
    assert_int_equal(j.g.a[0].cached_tokens, 150);
    assert_true(fabs(j.g.a[0].cost_usd - 3.0) < 1e-9);
    assert_string_equal(j.g.models[1], "smart");
    assert_int_equal(j.g.a[2].day, 19801);
    assert_string_equal(j.g.keys[3], "key_b");

    /* by key only */
    j.f.group = AH_USAGE_GROUP_KEY;
    aggregate(f, &j);
    assert_int_equal(j.g.n, 2);
    assert_null(j.g.a[0].model);
    assert_int_equal(j.g.a[0].day, -1);
    assert_int_equal(j.g.a[0].requests, 4);
    assert_true(fabs(j.g.a[0].cost_usd - 15.0) < 1e-9);

    /* no grouping: one total; an empty window: nothing */
    j.f.group = 0;
    aggregate(f, &j);
    assert_int_equal(j.g.n, 1);
    assert_int_equal(j.g.a[0].requests, 5);
    j.f.from_ms = d0 + 10 * DAY;
    j.f.to_ms = d0 + 11 * DAY;
    aggregate(f, &j);
    assert_int_equal(j.g.n, 0);

    /* filters: key and model, a half-open window on the first day */
    j.f = (ah_usage_filter_t){.from_ms = d0,
                              .to_ms = d0 + DAY,
                              .key_id = "key_a",
                              .model = "fast",
                              .group = AH_USAGE_GROUP_MODEL | AH_USAGE_GROUP_DAY,
                              .limit = 100};
    aggregate(f, &j);
    assert_int_equal(j.g.n, 1);
    assert_int_equal(j.g.a[0].requests, 2);
    assert_null(j.g.a[0].key_id);

    /* limit and bad arguments */
    j.f =
        (ah_usage_filter_t){.from_ms = 0, .to_ms = d0 * 2, .group = AH_USAGE_GROUP_ALL, .limit = 2};
    aggregate(f, &j);
    assert_int_equal(j.g.n, 2);
    j.f.limit = 0;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, agg_work, &j), -EINVAL);

    /* budget sums: since a time, leaving out one node */
    sum_job_t s = {"key_a", d0, NULL, 0};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, sum_work, &s), 0);
    assert_true(fabs(s.out - 15.0) < 1e-9);
    s = (sum_job_t){"key_a", d0, "n_1", 0};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, sum_work, &s), 0);
    assert_true(fabs(s.out - 2.0) < 1e-9);
    s = (sum_job_t){"key_a", d0 + DAY, NULL, 0};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, sum_work, &s), 0);
    assert_true(fabs(s.out - 8.0) < 1e-9);
    s = (sum_job_t){"key_none", 0, NULL, 1};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, sum_work, &s), 0);
    assert_true(s.out == 0);
}

/* ---- key_limits ---- */

typedef struct kl_job {
    ah_key_limits_rec_t rec;
    ah_key_limits_rec_t got[8];
    int n;
    int64_t since;
} kl_job_t;

static int kl_upsert_work(ah_db_t *db, void *arg)
{
    return ah_store_key_limits_upsert(db, &((kl_job_t *)arg)->rec);
}

static int kl_get_work(ah_db_t *db, void *arg)
{
    kl_job_t *j = arg;
    return ah_store_key_limits_get(db, j->rec.key_id, &j->got[0]);
}

static int kl_list_cb(void *ud, const ah_key_limits_rec_t *r)
{
    kl_job_t *j = ud;
    assert_true(j->n < 8);
    j->got[j->n++] = *r;
    return 0;
}

static int kl_list_work(ah_db_t *db, void *arg)
{
    kl_job_t *j = arg;
    return ah_store_key_limits_list(db, j->since, kl_list_cb, j);
}

static void test_key_limits_rows(void **state)
{
    fixture_t *f = *state;
    kl_job_t j;
    memset(&j, 0, sizeof(j));
    ah_key_limits_init(&j.rec, "key_a");
    assert_int_equal(j.rec.rpm, -1);
    assert_true(j.rec.budget_usd < 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, kl_get_work, &j), -ENOENT);

    j.rec.rpm = 60;
    j.rec.budget_usd = 12.5;
    snprintf(j.rec.budget_period, sizeof(j.rec.budget_period), "daily");
    j.rec.updated_at = 1000;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, kl_upsert_work, &j), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, kl_get_work, &j), 0);
    assert_int_equal(j.got[0].rpm, 60);
    assert_int_equal(j.got[0].tpm, -1);
    assert_int_equal(j.got[0].concurrency, -1);
    assert_true(fabs(j.got[0].budget_usd - 12.5) < 1e-9);
    assert_string_equal(j.got[0].budget_period, "daily");

    /* the upsert replaces every column; no budget stores no period */
    j.rec.rpm = -1;
    j.rec.concurrency = 0;
    j.rec.budget_usd = -1;
    j.rec.updated_at = 2000;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, kl_upsert_work, &j), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, kl_get_work, &j), 0);
    assert_int_equal(j.got[0].rpm, -1);
    assert_int_equal(j.got[0].concurrency, 0);
    assert_true(j.got[0].budget_usd < 0);
    assert_string_equal(j.got[0].budget_period, "");
    assert_int_equal(count(f, "SELECT COUNT(*) FROM key_limits"), 1);

    ah_key_limits_init(&j.rec, "key_b");
    j.rec.tpm = 1000;
    j.rec.updated_at = 3000;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, kl_upsert_work, &j), 0);
    j.n = 0;
    j.since = -1;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, kl_list_work, &j), 0);
    assert_int_equal(j.n, 2);
    assert_string_equal(j.got[0].key_id, "key_a");
    assert_string_equal(j.got[1].key_id, "key_b");
    j.n = 0;
    j.since = 2000;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, kl_list_work, &j), 0);
    assert_int_equal(j.n, 1);
    assert_string_equal(j.got[0].key_id, "key_b");

    ah_key_limits_init(&j.rec, "");
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, kl_upsert_work, &j), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost),
        cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_at_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_fields, setup, teardown),
        cmocka_unit_test(test_bound_and_hook),
        cmocka_unit_test_setup_teardown(test_retry_then_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aggregate_and_sum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_limits_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
