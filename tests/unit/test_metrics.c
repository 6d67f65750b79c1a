/* test_metrics.c - unit tests of the metrics registry (obs/metrics.h) and process metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "obs/process.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROMTOOL "/usr/bin/promtool"

static int setup(void **state)
{
    assert_int_equal(ah_metrics_init(), 0);
    return 0;
}

static int teardown(void **state)
{
    ah_metrics_shutdown();
    ah_log_set_fd(2);
    ah_log_set_level(AH_LOG_INFO);
    return 0;
}

/* Whole exposition as a heap string (caller frees). */
static char *render(void)
{
    ah_buf_t b = AH_BUF_INIT;
    assert_int_equal(ah_metrics_render(&b), 0);
    char *s = ah_buf_steal(&b);
    assert_non_null(s);
    return s;
}

/* Finds the sample line "<key> <value>" (key = name{labels}) and parses its value. */
static bool find_sample(const char *text, const char *key, double *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > klen && strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            char *end;
            *out = strtod(line + klen + 1, &end);
            assert_true(end == line + len); /* the whole rest is the value */
            return true;
        }
        line += len + (nl ? 1 : 0);
    }
    return false;
}

static double sample(const char *text, const char *key)
{
    double v = 0;
    if (!find_sample(text, key, &v))
        fail_msg("sample %s not found in:\n%s", key, text);
    return v;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static int count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    size_t plen = strlen(prefix);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, prefix, plen) == 0)
            n++;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return n;
}

static const char *const k_http_labels[] = {"method", "route", "status"};

static void test_counter_values(void **state)
{
    ah_metric_family_t *f =
        ah_metrics_counter("agenthub_http_requests_total", "HTTP requests.", 3, k_http_labels);
    assert_non_null(f);
    ah_metric_family_t *plain = ah_metrics_counter("agenthub_plain_total", "Plain.", 0, NULL);
    assert_non_null(plain);

    ah_metric_series_t *ok = ah_metrics_series(f, "GET", "/healthz", "200");
    assert_non_null(ok);
    assert_ptr_equal(ah_metrics_series(f, "GET", "/healthz", "200"), ok); /* same handle */
    ah_counter_inc(ok);
    ah_counter_inc(ok);
    ah_counter_add(ok, 3);
    ah_counter_add(ok, -1);  /* ignored: counters only go up */
    ah_counter_add(ok, NAN); /* ignored */
    ah_counter_inc(ah_metrics_series(f, "POST", "/v1/chat/completions", "500"));
    ah_counter_add(ah_metrics_series0(plain), 0.25);
    ah_counter_inc(NULL); /* no-op */

    char *t = render();
    assert_true(has_line(t, "# HELP agenthub_http_requests_total HTTP requests."));
    assert_true(has_line(t, "# TYPE agenthub_http_requests_total counter"));
    assert_true(has_line(t, "agenthub_http_requests_total{method=\"GET\",route=\"/healthz\","
                            "status=\"200\"} 5"));
    assert_true(sample(t, "agenthub_http_requests_total{method=\"POST\",route=\"/v1/chat/"
                          "completions\",status=\"500\"}") == 1);
    assert_true(has_line(t, "agenthub_plain_total 0.25"));
    free(t);
}

static void test_unlabelled_rendered_before_first_record(void **state)
{
    assert_non_null(ah_metrics_counter("agenthub_idle_total", "Idle.", 0, NULL));
    assert_non_null(ah_metrics_gauge("agenthub_idle_gauge", "Idle gauge.", 0, NULL));
    char *t = render();
    assert_true(has_line(t, "agenthub_idle_total 0"));
    assert_true(has_line(t, "agenthub_idle_gauge 0"));
    free(t);
}

typedef struct {
    ah_metric_series_t *s;
    double d;
    int n;
    bool own_shard;
} adder_t;

static void *gauge_adder(void *p)
{
    adder_t *a = p;
    if (a->own_shard)
        assert_true(ah_metrics_thread_init() >= 0);
    for (int i = 0; i < a->n; i++)
        ah_gauge_add(a->s, a->d);
    return NULL;
}

static void test_gauge_set_add(void **state)
{
    ah_metric_family_t *f =
        ah_metrics_gauge("agenthub_queue_depth", "Queued runs.", 1, (const char *[]){"queue"});
    assert_non_null(f);
    ah_metric_series_t *q = ah_metrics_series(f, "default");
    ah_gauge_set(q, 10);
    ah_gauge_add(q, -3);
    char *t = render();
    assert_true(has_line(t, "agenthub_queue_depth{queue=\"default\"} 7"));
    free(t);

    /* Adds from threads with their own shard and from the shared shard, then a set. */
    pthread_t th[2];
    adder_t a[2] = {{q, 1, 1000, true}, {q, -0.5, 1000, false}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, gauge_adder, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    t = render();
    assert_true(sample(t, "agenthub_queue_depth{queue=\"default\"}") == 7 + 1000 - 500);
    free(t);

    ah_gauge_set(q, 42.5);
    t = render();
    assert_true(has_line(t, "agenthub_queue_depth{queue=\"default\"} 42.5"));
    free(t);
    ah_gauge_add(q, 1);
    ah_gauge_set(q, -2);
    ah_gauge_add(q, 0.5);
    t = render();
    assert_true(has_line(t, "agenthub_queue_depth{queue=\"default\"} -1.5"));
    free(t);
}

static void test_histogram_values(void **state)
{
    const double bounds[] = {0.1, 1, 10};
    ah_metric_family_t *f = ah_metrics_histogram("agenthub_step_duration_seconds", "Step duration.",
                                                 1, (const char *[]){"agent"}, bounds, 3);
    assert_non_null(f);
    ah_metric_series_t *s = ah_metrics_series(f, "triage");
    ah_hist_observe(s, 0.05);
    ah_hist_observe(s, 0.1); /* le is inclusive */
    ah_hist_observe(s, 0.5);
    ah_hist_observe(s, 5);
    ah_hist_observe(s, 50);
    ah_hist_observe(s, NAN); /* ignored */
    char *t = render();
    assert_true(has_line(t, "# TYPE agenthub_step_duration_seconds histogram"));
    assert_true(
        has_line(t, "agenthub_step_duration_seconds_bucket{agent=\"triage\",le=\"0.1\"} 2"));
    assert_true(has_line(t, "agenthub_step_duration_seconds_bucket{agent=\"triage\",le=\"1\"} 3"));
    assert_true(has_line(t, "agenthub_step_duration_seconds_bucket{agent=\"triage\",le=\"10\"} 4"));
    assert_true(
        has_line(t, "agenthub_step_duration_seconds_bucket{agent=\"triage\",le=\"+Inf\"} 5"));
    assert_true(has_line(t, "agenthub_step_duration_seconds_sum{agent=\"triage\"} 55.65"));
    assert_true(has_line(t, "agenthub_step_duration_seconds_count{agent=\"triage\"} 5"));
    free(t);

    /* Default latency buckets: sub-millisecond resolution, rendered le values. */
    assert_true(ah_metrics_latency_buckets[0] <= 0.0001);
    assert_true(ah_metrics_latency_buckets[AH_METRICS_LATENCY_NBUCKETS - 1] >= 30);
    ah_metric_family_t *lat =
        ah_metrics_histogram("agenthub_overhead_seconds", "Overhead.", 0, NULL,
                             ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    assert_non_null(lat);
    ah_hist_observe(ah_metrics_series0(lat), 0.0003);
    t = render();
    assert_true(has_line(t, "agenthub_overhead_seconds_bucket{le=\"0.00025\"} 0"));
    assert_true(has_line(t, "agenthub_overhead_seconds_bucket{le=\"0.0005\"} 1"));
    assert_true(has_line(t, "agenthub_overhead_seconds_bucket{le=\"+Inf\"} 1"));
    assert_true(has_line(t, "agenthub_overhead_seconds_sum 0.0003"));
    assert_true(has_line(t, "agenthub_overhead_seconds_count 1"));
    assert_int_equal(count_prefix(t, "agenthub_overhead_seconds_bucket{"),
                     AH_METRICS_LATENCY_NBUCKETS + 1);
    free(t);
}

static void test_label_escaping_and_utf8(void **state)
{
    ah_metric_family_t *f = ah_metrics_counter(
        "agenthub_escape_total", "Line one\nback\\slash \"q\".", 1, (const char *[]){"model"});
    assert_non_null(f);
    ah_counter_inc(ah_metrics_series(f, "a\\b\"c\nd"));
    ah_counter_inc(ah_metrics_series(f, "caf\xc3\xa9"));  /* valid UTF-8 kept */
    ah_counter_inc(ah_metrics_series(f, "bad\xff\xc3x")); /* invalid bytes become ? */
    ah_counter_inc(ah_metrics_series(f, "bad\xfe\xc0x")); /* same sanitised value */
    ah_counter_inc(ah_metrics_series(f, NULL));           /* NULL is "" */
    char long_value[600];
    memset(long_value, 'x', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    ah_counter_inc(ah_metrics_series(f, long_value));
    char *t = render();
    assert_true(has_line(t, "# HELP agenthub_escape_total Line one\\nback\\\\slash \"q\"."));
    assert_true(has_line(t, "agenthub_escape_total{model=\"a\\\\b\\\"c\\nd\"} 1"));
    assert_true(has_line(t, "agenthub_escape_total{model=\"caf\xc3\xa9\"} 1"));
    assert_true(has_line(t, "agenthub_escape_total{model=\"bad??x\"} 2"));
    assert_true(has_line(t, "agenthub_escape_total{model=\"\"} 1"));
    char want[AH_METRICS_MAX_LABEL_VALUE + 64];
    snprintf(want, sizeof want, "agenthub_escape_total{model=\"%.*s\"} 1",
             AH_METRICS_MAX_LABEL_VALUE, long_value);
    assert_true(has_line(t, want));
    free(t);
}

/* ---- threads --------------------------------------------------------------- */

#define PER_THREAD 100000

typedef struct {
    ah_metric_family_t *by_worker; /* looked up by label values in the loop */
    ah_metric_series_t *total;     /* pre-resolved handle */
    ah_metric_series_t *lat;
    int id;
    bool own_shard;
    int n;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    if (a->own_shard) {
        int slot = ah_metrics_thread_init();
        assert_true(slot >= 0 && slot < AH_METRICS_MAX_THREADS);
        assert_int_equal(ah_metrics_thread_init(), slot); /* idempotent */
    }
    char label[16];
    for (int i = 0; i < a->n; i++) {
        ah_counter_inc(a->total);
        ah_hist_observe(a->lat, 0.001);
        /* Lookups that create series while other threads read the table (growth race). */
        snprintf(label, sizeof label, "r%d", i % 200);
        ah_counter_inc(ah_metrics_series(a->by_worker, label));
    }
    return NULL;
}

static atomic_bool g_stop_scraper;

static void *scraper(void *p)
{
    while (!atomic_load(&g_stop_scraper)) {
        ah_buf_t b = AH_BUF_INIT;
        assert_int_equal(ah_metrics_render(&b), 0);
        ah_buf_free(&b);
    }
    return NULL;
}

static void test_threads_sum_exact(void **state)
{
    ah_metric_family_t *total =
        ah_metrics_counter("agenthub_worker_ops_total", "Ops.", 1, (const char *[]){"kind"});
    ah_metric_family_t *by = ah_metrics_counter("agenthub_worker_route_total", "Ops by route.", 1,
                                                (const char *[]){"route"});
    ah_metric_family_t *lat =
        ah_metrics_histogram("agenthub_worker_op_seconds", "Op latency.", 0, NULL,
                             ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    assert_non_null(total);
    assert_non_null(by);
    assert_non_null(lat);
    ah_metric_series_t *own = ah_metrics_series(total, "registered");
    ah_metric_series_t *shared = ah_metrics_series(total, "unregistered");

    enum { NREG = 4, NUNREG = 2 };
    pthread_t th[NREG + NUNREG], sc;
    worker_arg_t args[NREG + NUNREG];
    atomic_store(&g_stop_scraper, false);
    assert_int_equal(pthread_create(&sc, NULL, scraper, NULL), 0);
    for (int i = 0; i < NREG + NUNREG; i++) {
        bool reg = i < NREG;
        args[i] = (worker_arg_t){by,
                                 reg ? own : shared,
                                 ah_metrics_series0(lat),
                                 i,
                                 reg,
                                 reg ? PER_THREAD : PER_THREAD / 2};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < NREG + NUNREG; i++)
        pthread_join(th[i], NULL);
    atomic_store(&g_stop_scraper, true);
    pthread_join(sc, NULL);

    char *t = render();
    assert_true(has_line(t, "agenthub_worker_ops_total{kind=\"registered\"} 400000"));
    assert_true(has_line(t, "agenthub_worker_ops_total{kind=\"unregistered\"} 100000"));
    assert_true(has_line(t, "agenthub_worker_op_seconds_count 500000"));
    assert_true(has_line(t, "agenthub_worker_op_seconds_bucket{le=\"0.001\"} 500000"));
    assert_true(has_line(t, "agenthub_worker_op_seconds_bucket{le=\"0.0005\"} 0"));
    assert_int_equal(count_prefix(t, "agenthub_worker_route_total{"), 200);
    double sum = 0;
    for (int r = 0; r < 200; r++) {
        char key[64];
        snprintf(key, sizeof key, "agenthub_worker_route_total{route=\"r%d\"}", r);
        sum += sample(t, key);
    }
    assert_true(sum == 500000);
    free(t);
}

static void *init_and_exit(void *p)
{
    *(int *)p = ah_metrics_thread_init();
    return NULL;
}

typedef struct {
    pthread_barrier_t *hold;
    int slot;
} holder_t;

static void *init_and_hold(void *p)
{
    holder_t *h = p;
    h->slot = ah_metrics_thread_init();
    pthread_barrier_wait(h->hold); /* all slots claimed */
    pthread_barrier_wait(h->hold); /* main thread checked */
    return NULL;
}

static void test_thread_slots(void **state)
{
    /* Slots of exited threads are reused: more threads than slots over time. */
    for (int i = 0; i < AH_METRICS_MAX_THREADS + 10; i++) {
        pthread_t th;
        int slot = -1;
        assert_int_equal(pthread_create(&th, NULL, init_and_exit, &slot), 0);
        pthread_join(th, NULL);
        assert_int_equal(slot, 0);
    }
    /* All slots held at once: the next thread gets -ENOSPC and still records. */
    enum { N = AH_METRICS_MAX_THREADS };
    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, N + 1);
    pthread_t th[N];
    holder_t h[N];
    for (int i = 0; i < N; i++) {
        h[i] = (holder_t){&hold, -1};
        assert_int_equal(pthread_create(&th[i], NULL, init_and_hold, &h[i]), 0);
    }
    pthread_barrier_wait(&hold);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        assert_true(h[i].slot >= 0 && h[i].slot < N);
        assert_false(seen[h[i].slot]);
        seen[h[i].slot] = true;
    }
    assert_int_equal(ah_metrics_thread_init(), -ENOSPC);
    ah_metric_family_t *f = ah_metrics_counter("agenthub_slotless_total", "Slotless.", 0, NULL);
    ah_counter_inc(ah_metrics_series0(f));
    pthread_barrier_wait(&hold);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&hold);
    char *t = render();
    assert_true(has_line(t, "agenthub_slotless_total 1"));
    free(t);
    /* Released again: this thread can claim one now, then give it back. */
    assert_true(ah_metrics_thread_init() >= 0);
    ah_metrics_thread_exit();
}

static void test_series_cap_overflow(void **state)
{
    int fds[2];
    assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
    ah_log_set_fd(fds[1]);

    ah_metric_family_t *f = ah_metrics_counter("agenthub_by_model_total", "By model.", 2,
                                               (const char *[]){"provider", "model"});
    assert_non_null(f);
    assert_int_equal(ah_metrics_family_set_limit(f, 3), 0);
    assert_int_equal(ah_metrics_family_set_limit(f, 0), -EINVAL);
    ah_metric_series_t *kept[3];
    for (int i = 0; i < 3; i++) {
        char m[16];
        snprintf(m, sizeof m, "m%d", i);
        kept[i] = ah_metrics_series(f, "openai", m);
        ah_counter_inc(kept[i]);
    }
    ah_metric_series_t *other = NULL;
    for (int i = 3; i < 100; i++) {
        char m[16];
        snprintf(m, sizeof m, "m%d", i);
        ah_metric_series_t *s = ah_metrics_series(f, "openai", m);
        assert_non_null(s);
        if (!other)
            other = s;
        assert_ptr_equal(s, other);
        ah_counter_inc(s);
    }
    /* Existing series still resolve to themselves. */
    assert_ptr_equal(ah_metrics_series(f, "openai", "m1"), kept[1]);
    assert_ptr_equal(ah_metrics_series(f, "_other", "_other"), other);

    ah_log_set_fd(2);
    char logbuf[8192];
    ssize_t n = read(fds[0], logbuf, sizeof logbuf - 1);
    assert_true(n > 0);
    logbuf[n] = '\0';
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(count_prefix(logbuf, "{"), 1); /* one warning, not one per lookup */
    assert_non_null(strstr(logbuf, "agenthub_by_model_total"));

    char *t = render();
    assert_int_equal(count_prefix(t, "agenthub_by_model_total{"), 4);
    assert_true(has_line(t, "agenthub_by_model_total{provider=\"openai\",model=\"m0\"} 1"));
    assert_true(has_line(t, "agenthub_by_model_total{provider=\"_other\",model=\"_other\"} 97"));
    free(t);
}

static void test_default_series_limit(void **state)
{
    assert_int_equal(ah_metrics_set_default_series_limit(0), -EINVAL);
    assert_int_equal(ah_metrics_set_default_series_limit(2), 0);
    ah_log_set_level(AH_LOG_ERROR);
    ah_metric_family_t *f =
        ah_metrics_gauge("agenthub_capped", "Capped.", 1, (const char *[]){"k"});
    ah_gauge_set(ah_metrics_series(f, "a"), 1);
    ah_gauge_set(ah_metrics_series(f, "b"), 2);
    ah_gauge_set(ah_metrics_series(f, "c"), 3);
    ah_log_set_level(AH_LOG_INFO);
    char *t = render();
    assert_true(has_line(t, "agenthub_capped{k=\"_other\"} 3"));
    assert_int_equal(count_prefix(t, "agenthub_capped{"), 3);
    free(t);
}

static double read_double(void *ud)
{
    return *(double *)ud;
}

static void test_callback_gauges(void **state)
{
    double inflight = 3;
    assert_int_equal(
        ah_metrics_gauge_fn("agenthub_inflight_requests", "In flight.", read_double, &inflight), 0);
    ah_log_set_level(AH_LOG_OFF); /* expected registration errors */
    assert_int_equal(
        ah_metrics_gauge_fn("agenthub_inflight_requests", "Again.", read_double, &inflight),
        -EEXIST);
    assert_int_equal(ah_metrics_gauge_fn("agenthub_nofn", "No fn.", NULL, NULL), -EINVAL);
    ah_log_set_level(AH_LOG_INFO);
    double cpu = 1.5;
    assert_int_equal(
        ah_metrics_counter_fn("agenthub_fn_seconds_total", "Fn counter.", read_double, &cpu), 0);
    ah_metric_family_t *br = ah_metrics_gauge("agenthub_breaker_state", "0 closed, 1 open.", 1,
                                              (const char *[]){"provider"});
    double state_open = 1;
    ah_metric_series_t *s = ah_metrics_series(br, "openai");
    ah_gauge_set(s, 7);
    assert_int_equal(ah_metrics_series_fn(s, read_double, &state_open), 0);

    char *t = render();
    assert_true(has_line(t, "# TYPE agenthub_inflight_requests gauge"));
    assert_true(has_line(t, "agenthub_inflight_requests 3"));
    assert_true(has_line(t, "# TYPE agenthub_fn_seconds_total counter"));
    assert_true(has_line(t, "agenthub_fn_seconds_total 1.5"));
    assert_true(has_line(t, "agenthub_breaker_state{provider=\"openai\"} 1"));
    free(t);

    inflight = 5;
    assert_int_equal(ah_metrics_series_fn(s, NULL, NULL), 0); /* back to the recorded value */
    t = render();
    assert_true(has_line(t, "agenthub_inflight_requests 5"));
    assert_true(has_line(t, "agenthub_breaker_state{provider=\"openai\"} 7"));
    free(t);
}

static void test_registration_rules(void **state)
{
    ah_log_set_level(AH_LOG_OFF);
    const double b[] = {1, 2};
    const double bad_b[] = {2, 1};
    assert_null(ah_metrics_counter("agenthub_no_suffix", "x", 0, NULL));
    assert_null(ah_metrics_counter("9bad_total", "x", 0, NULL));
    assert_null(ah_metrics_counter("bad-name_total", "x", 0, NULL));
    assert_null(ah_metrics_counter("", "x", 0, NULL));
    assert_null(ah_metrics_counter("agenthub_nohelp_total", NULL, 0, NULL));
    assert_null(ah_metrics_gauge("agenthub_g", "x", 1, (const char *[]){"__reserved"}));
    assert_null(ah_metrics_gauge("agenthub_g", "x", 1, (const char *[]){"bad-label"}));
    assert_null(ah_metrics_gauge("agenthub_g", "x", 2, (const char *[]){"a", "a"}));
    assert_null(ah_metrics_gauge("agenthub_g", "x", 5, (const char *[]){"a", "b", "c", "d", "e"}));
    assert_null(ah_metrics_histogram("agenthub_h_seconds", "x", 1, (const char *[]){"le"}, b, 2));
    assert_null(ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, bad_b, 2));
    assert_null(ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, b, 0));
    const double inf_b[] = {1, INFINITY};
    assert_null(ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, inf_b, 2));

    /* Same shape again: the same family. Another shape: refused. */
    ah_metric_family_t *g = ah_metrics_gauge("agenthub_g", "x", 1, (const char *[]){"a"});
    assert_non_null(g);
    assert_ptr_equal(ah_metrics_gauge("agenthub_g", "other help", 1, (const char *[]){"a"}), g);
    assert_null(ah_metrics_gauge("agenthub_g", "x", 1, (const char *[]){"b"}));
    assert_null(ah_metrics_gauge("agenthub_g", "x", 0, NULL));
    ah_metric_family_t *h = ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, b, 2);
    assert_non_null(h);
    assert_ptr_equal(ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, b, 2), h);
    assert_null(ah_metrics_histogram("agenthub_h_seconds", "x", 0, NULL, b, 1));
    /* Clashes with a histogram's generated series, either way round. */
    assert_null(ah_metrics_gauge("agenthub_h_seconds_count", "x", 0, NULL));
    assert_non_null(ah_metrics_gauge("agenthub_k_sum", "x", 0, NULL));
    assert_null(ah_metrics_histogram("agenthub_k", "x", 0, NULL, b, 2));

    /* Wrong label count and wrong kind are refused / ignored, not crashes. */
    assert_null(ah_metrics_series(g, "x", "y"));
    assert_null(ah_metrics_series0(g));
    assert_null(ah_metrics_series_v(NULL, NULL, 0));
    ah_metric_series_t *gs = ah_metrics_series(g, "x");
    ah_counter_inc(gs);       /* counter op on a gauge: ignored */
    ah_hist_observe(gs, 1.0); /* ignored */
    assert_int_equal(ah_metrics_series_fn(ah_metrics_series0(h), read_double, NULL), -EINVAL);
    ah_log_set_level(AH_LOG_INFO);
    char *t = render();
    assert_true(has_line(t, "agenthub_g{a=\"x\"} 0"));
    assert_int_equal(count_prefix(t, "# TYPE "), 3); /* g, h, k_sum */
    free(t);
}

static void test_render_order_stable(void **state)
{
    ah_metric_family_t *b = ah_metrics_counter("agenthub_b_total", "B.", 1, (const char *[]){"x"});
    ah_metric_family_t *a = ah_metrics_counter("agenthub_a_total", "A.", 1, (const char *[]){"x"});
    ah_counter_inc(ah_metrics_series(a, "z"));
    ah_counter_inc(ah_metrics_series(b, "2"));
    ah_counter_inc(ah_metrics_series(b, "1"));
    ah_counter_inc(ah_metrics_series(a, "y"));
    char *t = render();
    const char *expect = "# HELP agenthub_b_total B.\n"
                         "# TYPE agenthub_b_total counter\n"
                         "agenthub_b_total{x=\"2\"} 1\n"
                         "agenthub_b_total{x=\"1\"} 1\n"
                         "# HELP agenthub_a_total A.\n"
                         "# TYPE agenthub_a_total counter\n"
                         "agenthub_a_total{x=\"z\"} 1\n"
                         "agenthub_a_total{x=\"y\"} 1\n";
    assert_string_equal(t, expect);
    char *again = render();
    assert_string_equal(t, again);
    free(again);
    free(t);
}

static void test_value_formatting(void **state)
{
    ah_metric_family_t *f = ah_metrics_gauge("agenthub_fmt", "Formats.", 1, (const char *[]){"v"});
    ah_gauge_set(ah_metrics_series(f, "tenth"), 0.1);
    ah_gauge_set(ah_metrics_series(f, "third"), 1.0 / 3);
    ah_gauge_set(ah_metrics_series(f, "big"), 1e300);
    ah_gauge_set(ah_metrics_series(f, "neg0"), -0.0);
    ah_gauge_set(ah_metrics_series(f, "inf"), INFINITY);
    ah_gauge_set(ah_metrics_series(f, "ninf"), -INFINITY);
    ah_gauge_set(ah_metrics_series(f, "nan"), NAN);
    ah_gauge_set(ah_metrics_series(f, "int"), 123456789012.0);
    char *t = render();
    assert_true(has_line(t, "agenthub_fmt{v=\"tenth\"} 0.1"));
    assert_true(sample(t, "agenthub_fmt{v=\"third\"}") == 1.0 / 3); /* round-trips */
    assert_true(has_line(t, "agenthub_fmt{v=\"big\"} 1e+300"));
    assert_true(has_line(t, "agenthub_fmt{v=\"neg0\"} 0"));
    assert_true(has_line(t, "agenthub_fmt{v=\"inf\"} +Inf"));
    assert_true(has_line(t, "agenthub_fmt{v=\"ninf\"} -Inf"));
    assert_true(has_line(t, "agenthub_fmt{v=\"nan\"} NaN"));
    assert_true(has_line(t, "agenthub_fmt{v=\"int\"} 123456789012"));
    free(t);
}

static void test_process_metrics(void **state)
{
    assert_int_equal(ah_process_metrics_register(), 0);
    ah_log_set_level(AH_LOG_OFF);
    assert_int_equal(ah_process_metrics_register(), -EEXIST);
    ah_log_set_level(AH_LOG_INFO);
    char *t = render();
    assert_true(sample(t, "process_resident_memory_bytes") > 0);
    assert_true(sample(t, "process_virtual_memory_bytes") >=
                sample(t, "process_resident_memory_bytes"));
    assert_true(sample(t, "process_cpu_seconds_total") >= 0);
    double fds = sample(t, "process_open_fds");
    assert_true(fds >= 3); /* stdin, stdout, stderr at least */
    assert_true(sample(t, "process_max_fds") >= fds);
    double start = sample(t, "process_start_time_seconds");
    double now = (double)time(NULL);
    assert_true(start > 1.6e9 && start <= now + 1);
    double up = sample(t, "agenthub_uptime_seconds");
    assert_true(up >= 0 && up < 3600);
    assert_true(fabs((now - start) - up) < 5);
    assert_true(has_line(t, "# TYPE process_cpu_seconds_total counter"));
    char key[256];
    snprintf(key, sizeof key, "agenthub_build_info{version=\"%s\",compiler=\"", AH_VERSION);
    assert_non_null(strstr(t, key));
    free(t);
}

/* Writes a rendering of every metric kind to a file and runs promtool on it. */
static void test_promtool_accepts_output(void **state)
{
    if (access(PROMTOOL, X_OK) != 0)
        fail_msg(PROMTOOL " is missing: install promtool (Debian package prometheus) "
                          "to check the exposition format");
    ah_log_set_level(AH_LOG_ERROR);
    ah_metric_family_t *c = ah_metrics_counter("agenthub_http_requests_total",
                                               "HTTP requests handled.", 3, k_http_labels);
    ah_counter_inc(ah_metrics_series(c, "GET", "/healthz", "200"));
    ah_counter_inc(ah_metrics_series(c, "POST", "a\\b\"c\nd", "500"));
    ah_counter_inc(ah_metrics_series(c, "GET", "bad\xff", "404"));
    ah_metrics_family_set_limit(c, 3);
    ah_counter_inc(ah_metrics_series(c, "GET", "/overflow", "200"));
    ah_metric_family_t *h =
        ah_metrics_histogram("agenthub_http_request_duration_seconds", "HTTP request duration.", 2,
                             (const char *[]){"route", "status"}, ah_metrics_latency_buckets,
                             AH_METRICS_LATENCY_NBUCKETS);
    ah_hist_observe(ah_metrics_series(h, "/healthz", "200"), 0.0002);
    ah_hist_observe(ah_metrics_series(h, "/v1/chat/completions", "200"), 1.7);
    ah_metric_family_t *g =
        ah_metrics_gauge("agenthub_runs_queued", "Runs waiting.\nSecond line.", 0, NULL);
    ah_gauge_set(ah_metrics_series0(g), 4);
    double v = 2;
    ah_metrics_gauge_fn("agenthub_approvals_pending", "Approvals pending.", read_double, &v);
    assert_int_equal(ah_process_metrics_register(), 0);
    ah_log_set_level(AH_LOG_INFO);

    char *t = render();
    char path[] = "/tmp/ah_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(t);
    assert_int_equal(write(fd, t, len), (ssize_t)len);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(path);
    if (status != 0 || n != 0)
        fail_msg("promtool check metrics failed (status %d):\n%s\n--- input ---\n%s", status, out,
                 t);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counter_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlabelled_rendered_before_first_record, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gauge_set_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_escaping_and_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_sum_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_cap_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_series_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_gauges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registration_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_order_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_formatting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promtool_accepts_output, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
