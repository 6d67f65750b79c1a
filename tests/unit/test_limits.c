/*
 * test_limits.c - the gateway limiter (gateway/limits.h): token buckets for
 * requests and tokens per minute, concurrency, per-model limits, the
 * x-ratelimit-* headers, budgets per calendar period, the reconcile from the
 * store, the key_limits refresh, and the Redis mode against a real
 * redis-server started on loopback by the test (two limiters sharing one
 * budget, fail-open when Redis stops or hangs).
 *
 * Buckets and budget periods run on an injected clock, so nothing here
 * sleeps to let time pass; waits on other threads are bounded polls.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "gateway/limits.h"
#include "gateway/usage.h"
#include "obs/metrics.h"
#include "store/store.h"
#include "store/usage.h"
#include "testutil.h"

#define REDIS_SERVER "/usr/bin/redis-server"

/* ---- injected clock ---- */

static uint64_t fake_mono = 1000000000000ull;
static int64_t fake_wall;

static uint64_t clk_mono(void *ud)
{
    (void)ud;
    return fake_mono;
}

static int64_t clk_wall(void *ud)
{
    (void)ud;
    return fake_wall;
}

static void advance_s(double s)
{
    fake_mono += (uint64_t)(s * 1e9);
    fake_wall += (int64_t)(s * 1000);
}

/* ms of a UTC date and time. */
static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000;
}

/* ---- config ---- */

static char *m1_aliases[] = {"m1-alias"};

typedef struct cfgs {
    ah_config_t cfg;
    ah_config_model_t models[2];
} cfgs_t;

static void cfg_init(cfgs_t *c, int rpm, int tpm, int conc)
{
    memset(c, 0, sizeof(*c));
    c->cfg.limits.default_rpm = rpm;
    c->cfg.limits.default_tpm = tpm;
    c->cfg.limits.default_concurrency = conc;
    c->models[0].name = "m1";
    c->models[0].aliases = m1_aliases;
    c->models[0].n_aliases = 1;
    c->models[0].rpm = 2;
    c->models[0].tpm = 1000;
    c->models[1].name = "m2";
    c->cfg.models = c->models;
    c->cfg.n_models = 2;
}

static ah_limits_opts_t clock_opts(void)
{
    ah_limits_opts_t o = {.mono_ns = clk_mono, .wall_ms = clk_wall};
    return o;
}

/* ---- headers ---- */

typedef struct hdrs {
    char name[16][48];
    char value[16][48];
    int n;
} hdrs_t;

static int hdr_add(void *ctx, const char *name, const char *value)
{
    hdrs_t *h = ctx;
    assert_true(h->n < 16);
    snprintf(h->name[h->n], 48, "%s", name);
    snprintf(h->value[h->n], 48, "%s", value);
    h->n++;
    return 0;
}

static const char *hdr(const hdrs_t *h, const char *name)
{
    for (int i = 0; i < h->n; i++) {
        if (strcmp(h->name[i], name) == 0)
            return h->value[i];
    }
    return NULL;
}

static void headers_of(const ah_limits_result_t *res, hdrs_t *h)
{
    memset(h, 0, sizeof(*h));
    ah_limits_add_headers(res, hdr_add, h);
}

/* Local admission (decides at once). */
static int admit(ah_limits_t *lim, const char *key, const char *model, int64_t est,
                 ah_limits_ticket_t *t, ah_limits_result_t *res)
{
    assert_int_equal(ah_limits_admit(lim, NULL, key, model, est, t, res, NULL, NULL), 0);
    return res->status;
}

/* ---- formatting and periods ---- */

static void test_duration_format(void **state)
{
    (void)state;
    char b[32];
    struct {
        double s;
        const char *want;
    } cases[] = {
        {0, "0s"},         {-3, "0s"},    {0.0004, "0s"},       {0.02, "20ms"},
        {0.999, "999ms"},  {1, "1s"},     {1.5, "1.5s"},        {1.25, "1.25s"},
        {59.9999, "1m0s"}, {360, "6m0s"}, {61.001, "1m1.001s"}, {3723.25, "1h2m3.25s"},
        {7200, "2h0m0s"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ah_limits_format_duration(cases[i].s, b, sizeof(b));
        assert_string_equal(b, cases[i].want);
    }
}

static void test_period_bounds(void **state)
{
    (void)state;
    int64_t s, e;
    /* daily */
    ah_budget_period_bounds(AH_BUDGET_DAILY, utc(2024, 2, 29, 13, 5, 0), &s, &e);
    assert_true(s == utc(2024, 2, 29, 0, 0, 0) && e == utc(2024, 3, 1, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_DAILY, utc(2024, 2, 29, 0, 0, 0), &s, &e);
    assert_true(s == utc(2024, 2, 29, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_DAILY, utc(2024, 2, 29, 0, 0, 0) - 1, &s, &e);
    assert_true(s == utc(2024, 2, 28, 0, 0, 0) && e == utc(2024, 2, 29, 0, 0, 0));
    /* weekly: Monday 00:00 UTC; 2024-03-03 is a Sunday, 2024-03-04 a Monday */
    ah_budget_period_bounds(AH_BUDGET_WEEKLY, utc(2024, 3, 3, 23, 59, 59), &s, &e);
    assert_true(s == utc(2024, 2, 26, 0, 0, 0) && e == utc(2024, 3, 4, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_WEEKLY, utc(2024, 3, 4, 0, 0, 0), &s, &e);
    assert_true(s == utc(2024, 3, 4, 0, 0, 0) && e == utc(2024, 3, 11, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_WEEKLY, utc(1970, 1, 1, 12, 0, 0), &s, &e);
    assert_true(s == utc(1969, 12, 29, 0, 0, 0));
    /* monthly: leap February, December into January */
    ah_budget_period_bounds(AH_BUDGET_MONTHLY, utc(2024, 2, 29, 23, 0, 0), &s, &e);
    assert_true(s == utc(2024, 2, 1, 0, 0, 0) && e == utc(2024, 3, 1, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_MONTHLY, utc(2023, 12, 31, 23, 59, 59), &s, &e);
    assert_true(s == utc(2023, 12, 1, 0, 0, 0) && e == utc(2024, 1, 1, 0, 0, 0));
    ah_budget_period_bounds(AH_BUDGET_MONTHLY, utc(2100, 3, 1, 0, 0, 0), &s, &e);
    assert_true(s == utc(2100, 3, 1, 0, 0, 0) && e == utc(2100, 4, 1, 0, 0, 0));
    /* total */
    ah_budget_period_bounds(AH_BUDGET_TOTAL, utc(2024, 5, 5, 5, 5, 5), &s, &e);
    assert_true(s == 0 && e == INT64_MAX);

    ah_budget_period_t p;
    assert_int_equal(ah_budget_period_parse("weekly", &p), 0);
    assert_int_equal(p, AH_BUDGET_WEEKLY);
    assert_int_equal(ah_budget_period_parse("", &p), 0);
    assert_int_equal(p, AH_BUDGET_NONE);
    assert_int_equal(ah_budget_period_parse("yearly", &p), -EINVAL);
    assert_string_equal(ah_budget_period_name(AH_BUDGET_MONTHLY), "monthly");
}

static void test_utc_parse_format(void **state)
{
    (void)state;
    char b[32];
    int64_t ms;
    bool date_only;
    ah_limits_utc_format(utc(2024, 2, 29, 13, 5, 9) + 250, false, b, sizeof(b));
    assert_string_equal(b, "2024-02-29T13:05:09Z");
    ah_limits_utc_format(utc(1999, 12, 31, 23, 0, 0), true, b, sizeof(b));
    assert_string_equal(b, "1999-12-31");

    assert_int_equal(ah_limits_utc_parse("2024-02-29", &ms, &date_only), 0);
    assert_true(date_only && ms == utc(2024, 2, 29, 0, 0, 0));
    assert_int_equal(ah_limits_utc_parse("2024-06-01T12:30:00Z", &ms, &date_only), 0);
    assert_true(!date_only && ms == utc(2024, 6, 1, 12, 30, 0));
    assert_int_equal(ah_limits_utc_parse("2024-06-01T12:30", &ms, &date_only), 0);
    assert_true(ms == utc(2024, 6, 1, 12, 30, 0));
    assert_int_equal(ah_limits_utc_parse("2024-06-01T12:30:05.5Z", &ms, &date_only), 0);
    assert_true(ms == utc(2024, 6, 1, 12, 30, 5) + 500);
    assert_int_equal(ah_limits_utc_parse("1717243200000", &ms, &date_only), 0);
    assert_true(!date_only && ms == 1717243200000LL);
    const char *bad[] = {"",
                         "2023-02-29",
                         "2024-13-01",
                         "2024-1-01",
                         "2024-06-01x",
                         "2024-06-01T25:00Z",
                         "2024-06-01T12:30:00+02:00",
                         "-5",
                         "12345678901234567",
                         "2024-06-01T12:30:00.Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ah_limits_utc_parse(bad[i], &ms, &date_only), -EINVAL);
}

/* ---- local buckets ---- */

static void test_key_rpm(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 3, 0, 0);
    ah_limits_opts_t o = clock_opts();
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    assert_non_null(lim);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    hdrs_t h;

    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-limit-requests"), "3");
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-requests"), "2");
    assert_string_equal(hdr(&h, "x-ratelimit-reset-requests"), "20s");
    assert_null(hdr(&h, "x-ratelimit-limit-tokens")); /* no tokens limit configured */
    assert_null(hdr(&h, "retry-after"));
    ah_limits_finish(lim, &t, 10);

    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-requests"), "0");
    assert_string_equal(hdr(&h, "x-ratelimit-reset-requests"), "1m0s");

    /* the fourth in the same instant is refused, and says when to come back */
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 429);
    assert_string_equal(res.code, AH_LIMITS_CODE_RATE);
    assert_true(res.retry);
    assert_true(fabs(res.retry_after_s - 20.0) < 1e-6);
    assert_non_null(strstr(res.message, "requests per minute"));
    assert_non_null(strstr(res.message, "key_a"));
    assert_non_null(strstr(res.message, "20s"));
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "retry-after"), "20");
    assert_string_equal(hdr(&h, "retry-after-ms"), "20000");
    assert_string_equal(hdr(&h, "x-should-retry"), "true");
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-requests"), "0");
    ah_limits_finish(lim, &t, 0); /* a refused ticket: no-op */

    /* other keys have their own bucket */
    assert_int_equal(admit(lim, "key_b", NULL, 0, &t, &res), 0);

    /* 19.9 s later still no whole request; at 20 s one */
    advance_s(19.9);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 429);
    assert_true(fabs(res.retry_after_s - 0.1) < 1e-6);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "retry-after"), "1"); /* whole seconds, at least 1 */
    assert_string_equal(hdr(&h, "retry-after-ms"), "100");
    advance_s(0.1);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    /* a long idle period refills to the limit, not beyond */
    advance_s(3600);
    for (int i = 0; i < 3; i++)
        assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 429);
    ah_limits_free(lim);
}

static void test_key_tpm(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 0, 1000, 0);
    ah_limits_opts_t o = clock_opts();
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    ah_limits_ticket_t t, t2;
    ah_limits_result_t res;
    hdrs_t h;

    /* admission only needs a non-empty bucket; the real count is charged at finish */
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-limit-tokens"), "1000");
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-tokens"), "1000");
    assert_string_equal(hdr(&h, "x-ratelimit-reset-tokens"), "0s");
    assert_null(hdr(&h, "x-ratelimit-limit-requests"));
    ah_limits_finish(lim, &t, 1500); /* more than the whole minute: debt */
    ah_limits_finish(lim, &t, 1500); /* a second finish is ignored */

    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 429);
    assert_string_equal(res.code, AH_LIMITS_CODE_RATE);
    assert_non_null(strstr(res.message, "tokens per minute"));
    /* level -500: 501 tokens to refill at 1000/min */
    assert_true(fabs(res.retry_after_s - 501 * 60.0 / 1000) < 1e-6);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-tokens"), "0");
    assert_string_equal(hdr(&h, "x-ratelimit-reset-tokens"), "1m30s");
    advance_s(30.06);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    ah_limits_finish(lim, &t, 0);

    /* reservations: est_tokens are taken at admission and corrected at finish */
    advance_s(120);
    assert_int_equal(admit(lim, "key_r", NULL, 800, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-tokens"), "200");
    assert_int_equal(admit(lim, "key_r", NULL, 800, &t2, &res), 0);   /* 200 > 0: admitted */
    assert_int_equal(admit(lim, "key_r", NULL, 800, &t2, &res), 429); /* -600 */
    ah_limits_finish(lim, &t, 100);                                   /* refund 700 */
    assert_int_equal(admit(lim, "key_r", NULL, 0, &t2, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-tokens"), "100");
    ah_limits_free(lim);
}

static void test_concurrency(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 0, 0, 2);
    ah_limits_opts_t o = clock_opts();
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    ah_limits_ticket_t t1, t2, t3;
    ah_limits_result_t res;
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t1, &res), 0);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t2, &res), 0);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t3, &res), 429);
    assert_string_equal(res.code, AH_LIMITS_CODE_CONCURRENCY);
    assert_true(res.retry);
    assert_true(res.retry_after_s >= 1);
    hdrs_t h;
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "retry-after"), "1");
    ah_limits_key_status_t st;
    ah_limits_key_status(lim, "key_a", &st);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.concurrency, 2);

    ah_limits_finish(lim, &t1, 0);
    ah_limits_finish(lim, &t1, 0); /* released once only */
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t1, &res), 0);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t3, &res), 429);
    ah_limits_finish(lim, &t1, 0);
    ah_limits_finish(lim, &t2, 0);
    ah_limits_key_status(lim, "key_a", &st);
    assert_int_equal(st.in_flight, 0);
    ah_limits_free(lim);
}

static void test_model_limits(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 10, 0, 0); /* m1: rpm 2, tpm 1000 */
    ah_limits_opts_t o = clock_opts();
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    hdrs_t h;

    /* the model's limit is shared by every key, and aliases are the same model */
    assert_int_equal(admit(lim, "key_a", "m1", 0, &t, &res), 0);
    headers_of(&res, &h);
    /* the tighter of key (10, 9 left) and model (2, 1 left) is shown */
    assert_string_equal(hdr(&h, "x-ratelimit-limit-requests"), "2");
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-requests"), "1");
    assert_string_equal(hdr(&h, "x-ratelimit-limit-tokens"), "1000");
    ah_limits_finish(lim, &t, 400);
    assert_int_equal(admit(lim, "key_b", "m1-alias", 0, &t, &res), 0);
    ah_limits_finish(lim, &t, 700);
    /* both the model's rpm and tpm are used up now; rpm is checked first */
    assert_int_equal(admit(lim, "key_c", "m1", 0, &t, &res), 429);
    assert_non_null(strstr(res.message, "model m1"));
    assert_non_null(strstr(res.message, "requests per minute"));
    /* a refused model request takes nothing from the key */
    ah_limits_key_status_t st;
    ah_limits_key_status(lim, "key_c", &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(admit(lim, "key_c", NULL, 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-remaining-requests"), "9");
    ah_limits_finish(lim, &t, 0);

    /* models without limits and unknown models only see the key's limits */
    assert_int_equal(admit(lim, "key_a", "m2", 0, &t, &res), 0);
    assert_int_equal(admit(lim, "key_a", "agent:support", 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-ratelimit-limit-requests"), "10");

    /* 30 s later one model request is back, but the tokens are still in debt (-100 + 500) */
    advance_s(30);
    assert_int_equal(admit(lim, "key_d", "m1", 0, &t, &res), 0);
    ah_limits_finish(lim, &t, 500); /* 400 - 500: -100 */
    advance_s(30);                  /* +1 request, +500 tokens: 400 */
    assert_int_equal(admit(lim, "key_d", "m1", 0, &t, &res), 0);
    ah_limits_finish(lim, &t, 1000); /* -600 */
    advance_s(30);                   /* -100 */
    assert_int_equal(admit(lim, "key_d", "m1", 0, &t, &res), 429);
    assert_non_null(strstr(res.message, "tokens per minute on model m1"));
    ah_limits_free(lim);
}

static void test_unlimited_and_policy(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 0, 0, 0);
    c.models[0].rpm = c.models[0].tpm = 0;
    ah_limits_opts_t o = clock_opts();
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    hdrs_t h;
    /* 0 everywhere is unlimited: no refusals and no rate headers */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(admit(lim, "key_a", "m1", 0, &t, &res), 0);
    headers_of(&res, &h);
    assert_int_equal(h.n, 0);
    /* no key at all (internal calls) */
    assert_int_equal(admit(lim, NULL, "m1", 0, &t, &res), 0);
    assert_int_equal(admit(lim, "", NULL, 0, &t, &res), 0);
    assert_int_equal(ah_limits_admit(lim, NULL, "k", NULL, 0, NULL, &res, NULL, NULL), -EINVAL);

    /* a key_limits row overrides the defaults for its key only */
    ah_key_limits_rec_t r;
    ah_key_limits_init(&r, "key_p");
    r.rpm = 1;
    r.concurrency = 5;
    r.updated_at = 10;
    assert_int_equal(ah_limits_apply(lim, &r), 0);
    assert_int_equal(admit(lim, "key_p", NULL, 0, &t, &res), 0);
    assert_int_equal(admit(lim, "key_p", NULL, 0, &t, &res), 429);
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    ah_limits_key_status_t st;
    ah_limits_key_status(lim, "key_p", &st);
    assert_int_equal(st.rpm, 1);
    assert_int_equal(st.concurrency, 5);
    assert_int_equal(st.tpm, 0);
    assert_true(st.budget_usd < 0);
    /* an older row (a refresh that read before the apply) does not undo it */
    r.rpm = 100;
    r.updated_at = 5;
    assert_int_equal(ah_limits_apply(lim, &r), 0);
    ah_limits_key_status(lim, "key_p", &st);
    assert_int_equal(st.rpm, 1);
    /* NULL (-1) goes back to the default: unlimited here */
    r.rpm = -1;
    r.updated_at = 20;
    assert_int_equal(ah_limits_apply(lim, &r), 0);
    assert_int_equal(admit(lim, "key_p", NULL, 0, &t, &res), 0);
    /* a bad period is refused */
    r.budget_usd = 1;
    snprintf(r.budget_period, sizeof(r.budget_period), "yearly");
    assert_int_equal(ah_limits_apply(lim, &r), -EINVAL);
    ah_limits_free(lim);
}

/* ---- budgets ---- */

static void spend(ah_usage_t *u, const char *key, double cost)
{
    ah_usage_rec_t r = {.ts = fake_wall,
                        .key_id = key,
                        .model = "m1",
                        .cost_usd = cost,
                        .status = 200,
                        .attempts = 1,
                        .latency_ms = 1,
                        .ttft_ms = -1};
    assert_int_equal(ah_usage_record(u, &r), 0);
}

static void set_budget(ah_limits_t *lim, const char *key, double usd, const char *period)
{
    ah_key_limits_rec_t r;
    ah_key_limits_init(&r, key);
    r.budget_usd = usd;
    snprintf(r.budget_period, sizeof(r.budget_period), "%s", period);
    r.updated_at = 1;
    assert_int_equal(ah_limits_apply(lim, &r), 0);
}

static void test_budget_periods(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 0, 0, 0);
    ah_limits_opts_t o = clock_opts();
    ah_usage_t *u = ah_usage_new(NULL, NULL);
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, u, &o);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    hdrs_t h;
    ah_limits_key_status_t st;

    /* daily: Monday 2024-03-18 10:00 UTC */
    fake_wall = utc(2024, 3, 18, 10, 0, 0);
    set_budget(lim, "key_d", 1.0, "daily");
    spend(u, "key_d", 0.6);
    assert_int_equal(admit(lim, "key_d", NULL, 0, &t, &res), 0);
    spend(u, "key_d", 0.5); /* a request admitted under the budget may end over it */
    assert_int_equal(admit(lim, "key_d", NULL, 0, &t, &res), 429);
    assert_string_equal(res.code, AH_LIMITS_CODE_BUDGET);
    assert_false(res.retry);
    assert_true(fabs(res.retry_after_s - 14 * 3600) < 1e-6);
    assert_non_null(strstr(res.message, "2024-03-19T00:00:00Z"));
    assert_non_null(strstr(res.message, "daily"));
    headers_of(&res, &h);
    assert_string_equal(hdr(&h, "x-should-retry"), "false");
    assert_string_equal(hdr(&h, "retry-after"), "50400");
    ah_limits_key_status(lim, "key_d", &st);
    assert_true(fabs(st.spent_usd - 1.1) < 1e-9);
    assert_true(st.period_start_ms == utc(2024, 3, 18, 0, 0, 0));
    /* one millisecond before midnight: still over; at midnight: a new day */
    fake_wall = utc(2024, 3, 19, 0, 0, 0) - 1;
    assert_int_equal(admit(lim, "key_d", NULL, 0, &t, &res), 429);
    fake_wall = utc(2024, 3, 19, 0, 0, 0);
    assert_int_equal(admit(lim, "key_d", NULL, 0, &t, &res), 0);
    ah_limits_key_status(lim, "key_d", &st);
    assert_true(st.spent_usd == 0);

    /* weekly: spend Monday and Sunday of one week; the next Monday resets */
    set_budget(lim, "key_w", 1.0, "weekly");
    fake_wall = utc(2024, 3, 18, 9, 0, 0);
    spend(u, "key_w", 0.5);
    fake_wall = utc(2024, 3, 24, 23, 0, 0);
    assert_int_equal(admit(lim, "key_w", NULL, 0, &t, &res), 0);
    spend(u, "key_w", 0.5);
    assert_int_equal(admit(lim, "key_w", NULL, 0, &t, &res), 429);
    assert_non_null(strstr(res.message, "2024-03-25T00:00:00Z"));
    fake_wall = utc(2024, 3, 25, 0, 0, 0);
    assert_int_equal(admit(lim, "key_w", NULL, 0, &t, &res), 0);

    /* monthly: January 31 over, February 1 fresh; spend from 31 days back does not count */
    set_budget(lim, "key_m", 2.0, "monthly");
    fake_wall = utc(2024, 1, 1, 0, 0, 0);
    spend(u, "key_m", 1.0);
    fake_wall = utc(2024, 1, 31, 23, 59, 59);
    spend(u, "key_m", 1.0);
    assert_int_equal(admit(lim, "key_m", NULL, 0, &t, &res), 429);
    assert_non_null(strstr(res.message, "2024-02-01T00:00:00Z"));
    fake_wall = utc(2024, 2, 1, 0, 0, 0);
    assert_int_equal(admit(lim, "key_m", NULL, 0, &t, &res), 0);
    spend(u, "key_m", 1.5);
    fake_wall = utc(2024, 2, 29, 12, 0, 0);
    spend(u, "key_m", 0.4);
    assert_int_equal(admit(lim, "key_m", NULL, 0, &t, &res), 0); /* 1.9 < 2 */
    ah_limits_key_status(lim, "key_m", &st);
    assert_true(fabs(st.spent_usd - 1.9) < 1e-9);

    /* total: never resets */
    set_budget(lim, "key_t", 1.0, "total");
    fake_wall = utc(2023, 1, 1, 0, 0, 0);
    spend(u, "key_t", 1.0);
    fake_wall = utc(2024, 12, 31, 0, 0, 0);
    assert_int_equal(admit(lim, "key_t", NULL, 0, &t, &res), 429);
    assert_non_null(strstr(res.message, "total budget"));
    assert_false(res.retry);

    /* raising the budget lets the key in at once; removing it too */
    set_budget(lim, "key_t", 5.0, "total");
    assert_int_equal(admit(lim, "key_t", NULL, 0, &t, &res), 0);
    set_budget(lim, "key_t", 0.5, "total");
    assert_int_equal(admit(lim, "key_t", NULL, 0, &t, &res), 429);
    set_budget(lim, "key_t", -1, "");
    assert_int_equal(admit(lim, "key_t", NULL, 0, &t, &res), 0);
    /* a zero budget stops the key */
    set_budget(lim, "key_z", 0, "daily");
    assert_int_equal(admit(lim, "key_z", NULL, 0, &t, &res), 429);

    ah_limits_free(lim);
    ah_usage_free(u);
}

/* ---- with a store ---- */

/* The fixture: a real SQLite store in a temporary directory (testutil.h). */
typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "limits", 256);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

static int upsert_work(ah_db_t *db, void *arg)
{
    return ah_store_key_limits_upsert(db, arg);
}

static void store_limits(fixture_t *f, const ah_key_limits_rec_t *r)
{
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, upsert_work, (void *)r), 0);
}

typedef struct other_row {
    int64_t ts;
    const char *key;
    double cost;
} other_row_t;

static int other_work(ah_db_t *db, void *arg)
{
    other_row_t *o = arg;
    ah_usage_row_t r;
    memset(&r, 0, sizeof(r));
    r.ts = o->ts;
    snprintf(r.key_id, sizeof(r.key_id), "%s", o->key);
    snprintf(r.model, sizeof(r.model), "m1");
    snprintf(r.node, sizeof(r.node), "n_another_replica");
    r.cost_usd = o->cost;
    r.status = 200;
    r.attempts = 1;
    r.latency_ms = r.ttft_ms = -1;
    return ah_store_usage_insert(db, &r, 1);
}

/* A row written by another replica. */
static void other_spend(fixture_t *f, const char *key, int64_t ts, double cost)
{
    other_row_t o = {ts, key, cost};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, other_work, &o), 0);
}

static double spent(ah_limits_t *lim, const char *key)
{
    ah_limits_key_status_t st;
    ah_limits_key_status(lim, key, &st);
    return st.spent_usd;
}

static void test_budget_reconcile(void **state)
{
    fixture_t *f = *state;
    cfgs_t c;
    cfg_init(&c, 0, 0, 0);
    fake_wall = utc(2024, 3, 18, 10, 0, 0);
    ah_key_limits_rec_t r;
    ah_key_limits_init(&r, "key_r");
    r.budget_usd = 3.0;
    snprintf(r.budget_period, sizeof(r.budget_period), "daily");
    r.updated_at = 1;
    store_limits(f, &r);
    other_spend(f, "key_r", utc(2024, 3, 18, 1, 0, 0), 2.0);
    other_spend(f, "key_r", utc(2024, 3, 17, 23, 0, 0), 5.0); /* yesterday */
    other_spend(f, "key_x", utc(2024, 3, 18, 1, 0, 0), 9.0);  /* another key */

    ah_usage_opts_t uo = {.flush_interval_s = 3600};
    ah_usage_t *u = ah_usage_new(f->store, &uo);
    ah_limits_opts_t o = clock_opts();
    o.reconcile_s = 3600; /* only explicit reconciles in this test */
    o.refresh_s = 3600;
    ah_limits_t *lim = ah_limits_new(&c.cfg, f->store, u, &o);
    assert_int_equal(ah_usage_start(u), 0);
    /* start loads the policy and the spend: 2.0 of 3.0 today */
    assert_int_equal(ah_limits_start(lim), 0);
    assert_true(fabs(spent(lim, "key_r") - 2.0) < 1e-9);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    assert_int_equal(admit(lim, "key_r", NULL, 0, &t, &res), 0);

    /* another replica spends 1.5: seen at the next reconcile */
    other_spend(f, "key_r", utc(2024, 3, 18, 9, 0, 0), 1.5);
    assert_int_equal(admit(lim, "key_r", NULL, 0, &t, &res), 0);
    assert_int_equal(ah_limits_reconcile_now(lim), 0);
    assert_true(fabs(spent(lim, "key_r") - 3.5) < 1e-9);
    assert_int_equal(admit(lim, "key_r", NULL, 0, &t, &res), 429);
    assert_string_equal(res.code, AH_LIMITS_CODE_BUDGET);

    /* this process's own spend counts at once, and never twice once flushed */
    spend(u, "key_r", 0.5);
    assert_true(fabs(spent(lim, "key_r") - 4.0) < 1e-9);
    assert_int_equal(ah_usage_flush(u), 0);
    assert_int_equal(ah_limits_reconcile_now(lim), 0);
    assert_true(fabs(spent(lim, "key_r") - 4.0) < 1e-9);

    /* a longer period: the other replica's month is re-read (2 + 5 + 1.5) plus ours */
    r.budget_usd = 100;
    snprintf(r.budget_period, sizeof(r.budget_period), "monthly");
    r.updated_at = 2;
    assert_int_equal(ah_limits_apply(lim, &r), 0);
    assert_int_equal(ah_limits_reconcile_now(lim), 0);
    assert_true(fabs(spent(lim, "key_r") - 9.0) < 1e-9);

    ah_limits_free(lim);
    ah_usage_free(u);
}

static void test_refresh_picks_up_change(void **state)
{
    fixture_t *f = *state;
    cfgs_t c;
    cfg_init(&c, 100, 0, 0);
    ah_limits_opts_t o = {.refresh_s = 0.05};
    ah_limits_t *lim = ah_limits_new(&c.cfg, f->store, NULL, &o);
    assert_int_equal(ah_limits_start(lim), 0);
    ah_limits_key_status_t st;
    ah_limits_key_status(lim, "key_q", &st);
    assert_int_equal(st.rpm, 100);

    ah_key_limits_rec_t r;
    ah_key_limits_init(&r, "key_q");
    r.rpm = 7;
    r.budget_usd = 2.5;
    snprintf(r.budget_period, sizeof(r.budget_period), "weekly");
    r.updated_at = ah_wall_ms();
    store_limits(f, &r);
    uint64_t end = ah_mono_ns() + 3000000000ull;
    do {
        ah_test_sleep_ms(10);
        ah_limits_key_status(lim, "key_q", &st);
    } while (st.rpm != 7 && ah_mono_ns() < end);
    assert_int_equal(st.rpm, 7);
    assert_true(fabs(st.budget_usd - 2.5) < 1e-9);
    assert_int_equal(st.period, AH_BUDGET_WEEKLY);

    /* clearing goes back to the default */
    r.rpm = -1;
    r.updated_at = ah_wall_ms() + 1;
    store_limits(f, &r);
    end = ah_mono_ns() + 3000000000ull;
    do {
        ah_test_sleep_ms(10);
        ah_limits_key_status(lim, "key_q", &st);
    } while (st.rpm != 100 && ah_mono_ns() < end);
    assert_int_equal(st.rpm, 100);
    ah_limits_free(lim);
}

/* ---- Redis ---- */

typedef struct loop_thread {
    ah_loop_t *loop;
    pthread_t th;
} loop_thread_t;

static void *loop_main(void *arg)
{
    ah_loop_run(((loop_thread_t *)arg)->loop);
    return NULL;
}

static void loop_start(loop_thread_t *lt, ah_limits_t *lim)
{
    lt->loop = ah_loop_new();
    assert_non_null(lt->loop);
    assert_int_equal(ah_limits_attach(lim, lt->loop), 0); /* before the loop runs */
    assert_int_equal(ah_limits_attach(lim, lt->loop), -EEXIST);
    assert_int_equal(pthread_create(&lt->th, NULL, loop_main, lt), 0);
}

static void loop_join(loop_thread_t *lt)
{
    ah_loop_stop(lt->loop);
    pthread_join(lt->th, NULL);
}

typedef struct call {
    ah_limits_t *lim;
    ah_loop_t *loop;
    const char *key;
    int64_t est;
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    int rc;
    atomic_int done;
} call_t;

static void call_cb(void *ud, const ah_limits_result_t *res)
{
    call_t *c = ud;
    c->res = *res;
    atomic_store(&c->done, 1);
}

static void call_run(void *arg)
{
    call_t *c = arg;
    c->rc = ah_limits_admit(c->lim, c->loop, c->key, NULL, c->est, &c->t, &c->res, call_cb, c);
    if (c->rc != -EINPROGRESS)
        atomic_store(&c->done, 1);
}

/* Admits on lt's loop thread and waits for the decision (bounded). */
static void admit_on(ah_limits_t *lim, loop_thread_t *lt, const char *key, int64_t est, call_t *c)
{
    memset(c, 0, sizeof(*c));
    c->lim = lim;
    c->loop = lt->loop;
    c->key = key;
    c->est = est;
    atomic_init(&c->done, 0);
    assert_int_equal(ah_loop_post(lt->loop, call_run, c), 0);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while (!atomic_load(&c->done) && ah_mono_ns() < end)
        ah_test_sleep_ms(1);
    assert_true(atomic_load(&c->done));
    assert_true(c->rc == 0 || c->rc == -EINPROGRESS);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static pid_t redis_start(int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(REDIS_SERVER, "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    /* ready when it answers PING */
    uint64_t end = ah_mono_ns() + 5000000000ull;
    for (;;) {
        struct timeval tv = {0, 200000};
        redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (rc && !rc->err) {
            redisReply *rep = redisCommand(rc, "PING");
            bool ok = rep && rep->type == REDIS_REPLY_STATUS;
            if (rep)
                freeReplyObject(rep);
            redisFree(rc);
            if (ok)
                return pid;
        } else if (rc) {
            redisFree(rc);
        }
        assert_true(ah_mono_ns() < end);
        ah_test_sleep_ms(10);
    }
}

static void redis_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int count_in_file(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), fp)) {
        if (strstr(line, needle))
            n++;
    }
    fclose(fp);
    return n;
}

static double metric_value(const char *name)
{
    ah_buf_t b = AH_BUF_INIT;
    double v = -1;
    if (ah_metrics_render(&b) == 0 && b.data) {
        const char *p = b.data;
        size_t n = strlen(name);
        while ((p = strstr(p, name))) {
            if ((p == b.data || p[-1] == '\n') && p[n] == ' ') {
                v = strtod(p + n + 1, NULL);
                break;
            }
            p += n;
        }
    }
    ah_buf_free(&b);
    return v;
}

static void test_redis(void **state)
{
    (void)state;
    if (access(REDIS_SERVER, X_OK) != 0) {
        fprintf(stderr,
                "\n*** SKIPPED: %s is not installed; the Redis mode of the limiter is "
                "NOT tested (apt-get install redis-server) ***\n\n",
                REDIS_SERVER);
        skip();
    }
    int port = free_port();
    pid_t pid = redis_start(port);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);

    char logpath[] = "/tmp/ah_limits_log_XXXXXX";
    int logfd = mkstemp(logpath);
    assert_true(logfd >= 0);
    ah_log_set_fd(logfd);

    cfgs_t c;
    cfg_init(&c, 5, 0, 0);
    ah_limits_opts_t o = {.redis_url = url, .redis_timeout_ms = 150};
    ah_limits_t *a = ah_limits_new(&c.cfg, NULL, NULL, &o);
    ah_limits_t *b = ah_limits_new(&c.cfg, NULL, NULL, &o);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(ah_limits_redis_enabled(a));
    loop_thread_t la, lb;
    loop_start(&la, a);
    loop_start(&lb, b);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while ((ah_limits_redis_connected(a) != 1 || ah_limits_redis_connected(b) != 1) &&
           ah_mono_ns() < end)
        ah_test_sleep_ms(5);
    assert_int_equal(ah_limits_redis_connected(a), 1);
    assert_int_equal(ah_limits_redis_connected(b), 1);

    /* two processes, one budget: 10 requests at rpm 5 through both, 5 admitted */
    call_t cl;
    int admitted = 0;
    for (int i = 0; i < 10; i++) {
        admit_on(i % 2 ? b : a, i % 2 ? &lb : &la, "key_shared", 0, &cl);
        assert_int_equal(cl.rc, -EINPROGRESS);
        assert_true(cl.res.redis);
        assert_false(cl.res.fail_open);
        if (cl.res.status == 0) {
            admitted++;
            ah_limits_finish(i % 2 ? b : a, &cl.t, 0);
        } else {
            assert_string_equal(cl.res.code, AH_LIMITS_CODE_RATE);
            assert_int_equal(cl.res.limit_requests, 5);
            assert_int_equal(cl.res.remaining_requests, 0);
            assert_true(cl.res.retry_after_s > 11 && cl.res.retry_after_s <= 12.01);
        }
    }
    assert_int_equal(admitted, 5);

    /* shared concurrency: 2 slots over both processes, released by finish */
    ah_key_limits_rec_t r;
    ah_key_limits_init(&r, "key_conc");
    r.concurrency = 2;
    r.rpm = 1000;
    r.tpm = 100;
    r.updated_at = 1;
    assert_int_equal(ah_limits_apply(a, &r), 0);
    assert_int_equal(ah_limits_apply(b, &r), 0);
    call_t c1, c2, c3;
    admit_on(a, &la, "key_conc", 0, &c1);
    admit_on(b, &lb, "key_conc", 0, &c2);
    admit_on(a, &la, "key_conc", 0, &c3);
    assert_int_equal(c1.res.status, 0);
    assert_int_equal(c2.res.status, 0);
    assert_int_equal(c3.res.status, 429);
    assert_string_equal(c3.res.code, AH_LIMITS_CODE_CONCURRENCY);
    assert_int_equal(c1.res.limit_tokens, 100);
    /* finish from this (non-loop) thread: posted to b's loop; tokens charged in Redis */
    ah_limits_finish(b, &c2.t, 250);
    end = ah_mono_ns() + 3000000000ull;
    do {
        ah_test_sleep_ms(5);
        admit_on(a, &la, "key_conc", 0, &c3);
    } while (!(c3.res.status == 429 && strcmp(c3.res.code, AH_LIMITS_CODE_RATE) == 0) &&
             ah_mono_ns() < end);
    /* the slot came back, but the tokens bucket is now in debt (100 - 250) */
    assert_int_equal(c3.res.status, 429);
    assert_string_equal(c3.res.code, AH_LIMITS_CODE_RATE);
    assert_non_null(strstr(c3.res.message, "tokens per minute"));
    ah_limits_finish(a, &c1.t, 0);

    /* Redis hangs: the admission is answered locally after the timeout */
    kill(pid, SIGSTOP);
    uint64_t t0 = ah_mono_ns();
    admit_on(a, &la, "key_hang", 0, &cl);
    uint64_t waited_ms = (ah_mono_ns() - t0) / 1000000;
    assert_int_equal(cl.rc, -EINPROGRESS);
    assert_int_equal(cl.res.status, 0);
    assert_true(cl.res.fail_open);
    assert_false(cl.res.redis);
    assert_true(waited_ms >= 100 && waited_ms < 3000);
    ah_limits_finish(a, &cl.t, 0);
    /* ...and at once while it stays down */
    admit_on(a, &la, "key_hang", 0, &cl);
    assert_int_equal(cl.rc, 0);
    assert_true(cl.res.fail_open);
    kill(pid, SIGCONT);
    /* it comes back: after the retry delay, decisions are shared again */
    end = ah_mono_ns() + 5000000000ull;
    do {
        ah_test_sleep_ms(20);
        admit_on(a, &la, "key_back", 0, &cl);
    } while (!cl.res.redis && ah_mono_ns() < end);
    assert_true(cl.res.redis);

    assert_int_equal(count_in_file(logpath, "Redis is unreachable"), 1); /* a, for the hang */

    /* Redis stops: fail open, one warning per limiter, a counted fallback per decision */
    double fb0 = metric_value("agenthub_ratelimit_redis_fallback_total");
    redis_kill(pid);
    int open_ok = 0;
    for (int i = 0; i < 5; i++) {
        admit_on(a, &la, "key_down", 0, &cl);
        assert_int_equal(cl.res.status, 0);
        open_ok += cl.res.fail_open;
        ah_limits_finish(a, &cl.t, 0);
    }
    assert_int_equal(open_ok, 5);
    /* the local limiter still limits: rpm 5 per process */
    admit_on(a, &la, "key_down", 0, &cl);
    assert_int_equal(cl.res.status, 429);
    assert_true(cl.res.fail_open);
    double fb1 = metric_value("agenthub_ratelimit_redis_fallback_total");
    assert_true(fb1 - fb0 >= 6);
    int warnings = count_in_file(logpath, "Redis is unreachable");
    assert_true(warnings >= 2 && warnings <= 3); /* a again, and b if it noticed already */
    assert_int_equal(count_in_file(logpath, "Redis answers again"), 1);

    loop_join(&la);
    loop_join(&lb);
    assert_int_equal(ah_limits_detach(a, la.loop), 0);
    assert_int_equal(ah_limits_detach(a, la.loop), -ENOENT);
    ah_limits_free(a);
    ah_limits_free(b);
    ah_loop_free(la.loop);
    ah_loop_free(lb.loop);
    ah_log_set_fd(2);
    close(logfd);
    unlink(logpath);
}

static void test_redis_url(void **state)
{
    (void)state;
    cfgs_t c;
    cfg_init(&c, 1, 0, 0);
    const char *bad[] = {"http://x",        "rediss://x:6379", "redis://",      "redis://h:0",
                         "redis://h:99999", "redis://h:12x",   "redis://h/abc", "redis://[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_limits_opts_t o = {.redis_url = bad[i]};
        assert_null(ah_limits_new(&c.cfg, NULL, NULL, &o));
    }
    /* good but unreachable: every decision is local (nobody listens on port 1) */
    ah_limits_opts_t o = {.redis_url = "redis://:secret@127.0.0.1:1/2"};
    ah_limits_t *lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    assert_non_null(lim);
    ah_limits_ticket_t t;
    ah_limits_result_t res;
    /* without a loop or callback the decision is local */
    assert_int_equal(admit(lim, "key_a", NULL, 0, &t, &res), 0);
    ah_limits_free(lim);
    o.redis_url = "";
    lim = ah_limits_new(&c.cfg, NULL, NULL, &o);
    assert_false(ah_limits_redis_enabled(lim));
    ah_limits_free(lim);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    fake_wall = utc(2024, 6, 1, 12, 0, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_format),
        cmocka_unit_test(test_period_bounds),
        cmocka_unit_test(test_utc_parse_format),
        cmocka_unit_test(test_key_rpm),
        cmocka_unit_test(test_key_tpm),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_model_limits),
        cmocka_unit_test(test_unlimited_and_policy),
        cmocka_unit_test(test_budget_periods),
        cmocka_unit_test_setup_teardown(test_budget_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_picks_up_change, setup, teardown),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
