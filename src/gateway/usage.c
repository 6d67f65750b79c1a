/*
 * usage.c - the usage recorder: sharded in-memory buffers, a flusher thread
 * that writes them to the store in batches, and the cost helper. See usage.h
 * and docs/internals/limits.md.
 */
#include "gateway/usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "obs/metrics.h"

#define SHARD_MIN_CAP 16

/* One buffer. Aligned so that two shards' mutexes never share a cache line. */
typedef struct shard {
    pthread_mutex_t mu; /* guards rows, n, cap */
    ah_usage_row_t *rows;
    size_t n, cap;
} __attribute__((aligned(64))) shard_t;

/* Rows taken from the shards, on their way to the store. */
typedef struct batch {
    struct batch *next;
    ah_usage_t *u;
    ah_usage_row_t *rows;
    size_t n;
    int tries;
} batch_t;

struct ah_usage {
    ah_store_t *store;
    double interval_s;
    size_t flush_rows, max_pending;
    char node[32];
    ah_usage_spend_fn hook;
    void *hook_ud;

    shard_t shards[AH_USAGE_SHARDS];
    atomic_size_t pending;   /* recorded, not committed or dropped */
    atomic_size_t unflushed; /* in the shards */
    atomic_bool overflowing; /* warned about the current overflow episode */
    atomic_uint_fast64_t recorded, written, batches, dropped, batch_errors;
    atomic_int last_error; /* rc of the last failed batch (for ah_usage_flush) */

    pthread_mutex_t mu;  /* guards retry, inflight, stop, kicked */
    pthread_cond_t wake; /* the flusher waits here (CLOCK_MONOTONIC) */
    pthread_cond_t idle; /* inflight dropped */
    batch_t *retry;      /* failed batches, resubmitted at the next flush */
    size_t inflight;     /* batches submitted whose done has not run */
    bool stop, kicked, started;
    pthread_t thread;

    ah_metric_series_t *m_written, *m_batches, *m_dropped, *m_pending;
};

/* The calling thread's shard (process-wide: any recorder uses the same index). */
static __thread int tls_shard = -1;
static atomic_uint next_shard;

double ah_usage_cost(const ah_config_price_t *p, int64_t prompt, int64_t cached, int64_t completion)
{
    if (!p)
        return 0;
    if (prompt < 0)
        prompt = 0;
    if (completion < 0)
        completion = 0;
    if (cached < 0)
        cached = 0;
    if (cached > prompt)
        cached = prompt;
    return ((double)(prompt - cached) * p->input_per_mtok +
            (double)cached * p->cached_input_per_mtok + (double)completion * p->output_per_mtok) /
           1e6;
}

/* Copies src into dst[size], cutting a too-long value before a UTF-8 sequence, never inside. */
static void copy_cut(char *dst, size_t size, const char *src)
{
    if (!src) {
        dst[0] = '\0';
        return;
    }
    size_t n = strnlen(src, size);
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

ah_usage_t *ah_usage_new(ah_store_t *store, const ah_usage_opts_t *opts)
{
    ah_usage_t *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    if (ah_id_new(u->node, sizeof(u->node), "n", 9) != 0) {
        free(u);
        return NULL;
    }
    u->store = store;
    u->interval_s =
        opts && opts->flush_interval_s > 0 ? opts->flush_interval_s : AH_USAGE_FLUSH_INTERVAL_S;
    if (u->interval_s < 0.001)
        u->interval_s = 0.001;
    if (u->interval_s > 3600)
        u->interval_s = 3600;
    u->flush_rows = opts && opts->flush_rows ? opts->flush_rows : AH_USAGE_FLUSH_ROWS;
    u->max_pending = opts && opts->max_pending ? opts->max_pending : AH_USAGE_MAX_PENDING_DEFAULT;
    for (int i = 0; i < AH_USAGE_SHARDS; i++)
        pthread_mutex_init(&u->shards[i].mu, NULL);
    pthread_mutex_init(&u->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&u->idle, NULL);

    u->m_written = ah_metrics_series0(ah_metrics_counter(
        "agenthub_usage_rows_written_total", "Usage rows committed to the store.", 0, NULL));
    u->m_batches = ah_metrics_series0(ah_metrics_counter(
        "agenthub_usage_batches_total", "Usage insert jobs committed (one per flush).", 0, NULL));
    u->m_dropped = ah_metrics_series0(ah_metrics_counter(
        "agenthub_usage_rows_dropped_total",
        "Usage rows lost: recorded past the pending bound, or failed every retry.", 0, NULL));
    u->m_pending = ah_metrics_series0(ah_metrics_gauge(
        "agenthub_usage_rows_pending", "Usage rows recorded and not yet committed.", 0, NULL));
    return u;
}

void ah_usage_set_spend_hook(ah_usage_t *u, ah_usage_spend_fn fn, void *ud)
{
    u->hook = fn;
    u->hook_ud = ud;
}

const char *ah_usage_node(const ah_usage_t *u)
{
    return u->node;
}

static void kick(ah_usage_t *u)
{
    pthread_mutex_lock(&u->mu);
    u->kicked = true;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->mu);
}

/* Rows leave the pending count: committed (written) or lost (dropped). */
static void settle(ah_usage_t *u, size_t n, bool written)
{
    atomic_fetch_sub(&u->pending, n);
    ah_gauge_add(u->m_pending, -(double)n);
    if (written) {
        atomic_fetch_add(&u->written, n);
        ah_counter_add(u->m_written, (double)n);
    } else {
        atomic_fetch_add(&u->dropped, n);
        ah_counter_add(u->m_dropped, (double)n);
    }
}

int ah_usage_record(ah_usage_t *u, const ah_usage_rec_t *rec)
{
    if (!rec)
        return -EINVAL;
    ah_usage_row_t row;
    row.ts = rec->ts ? rec->ts : ah_wall_ms();
    copy_cut(row.request_id, sizeof(row.request_id), rec->request_id);
    copy_cut(row.key_id, sizeof(row.key_id), rec->key_id);
    copy_cut(row.tenant, sizeof(row.tenant), rec->tenant);
    copy_cut(row.model, sizeof(row.model), rec->model);
    copy_cut(row.provider, sizeof(row.provider), rec->provider);
    copy_cut(row.upstream_model, sizeof(row.upstream_model), rec->upstream_model);
    row.prompt_tokens = rec->prompt_tokens;
    row.completion_tokens = rec->completion_tokens;
    row.cached_tokens = rec->cached_tokens;
    row.cost_usd = rec->cost_usd;
    row.latency_ms = rec->latency_ms;
    row.ttft_ms = rec->ttft_ms;
    row.status = rec->status;
    row.stream = rec->stream ? 1 : 0;
    row.attempts = rec->attempts;
    copy_cut(row.agent, sizeof(row.agent), rec->agent);
    copy_cut(row.run_id, sizeof(row.run_id), rec->run_id);
    memcpy(row.node, u->node, sizeof(row.node));

    /* Spend counts even when the row is lost below: the request did cost this. */
    if (u->hook && row.cost_usd > 0)
        u->hook(u->hook_ud, row.key_id, row.ts, row.cost_usd);

    if (atomic_fetch_add(&u->pending, 1) >= u->max_pending) {
        atomic_fetch_sub(&u->pending, 1);
        atomic_fetch_add(&u->dropped, 1);
        ah_counter_inc(u->m_dropped);
        if (!atomic_exchange(&u->overflowing, true))
            ah_log(AH_LOG_WARN, "usage",
                   "usage rows are waiting past the bound (is the store slow or down?); new "
                   "rows are dropped and counted in agenthub_usage_rows_dropped_total",
                   AH_LF_INT("max_pending", u->max_pending), AH_LF_END);
        return -ENOBUFS;
    }

    if (tls_shard < 0)
        tls_shard = (int)(atomic_fetch_add(&next_shard, 1) % AH_USAGE_SHARDS);
    shard_t *s = &u->shards[tls_shard];
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : SHARD_MIN_CAP;
        ah_usage_row_t *p = realloc(s->rows, cap * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&s->mu);
            atomic_fetch_sub(&u->pending, 1);
            atomic_fetch_add(&u->dropped, 1);
            ah_counter_inc(u->m_dropped);
            return -ENOMEM;
        }
        s->rows = p;
        s->cap = cap;
    }
    s->rows[s->n++] = row;
    /* Counted under the shard lock, so a drain (which subtracts after taking the rows)
     * never sees the row before its count: the counter cannot wrap. */
    size_t waiting = atomic_fetch_add(&u->unflushed, 1) + 1;
    pthread_mutex_unlock(&s->mu);

    atomic_fetch_add(&u->recorded, 1);
    ah_gauge_add(u->m_pending, 1);
    /* Exactly one recorder sees the count reach the threshold: one wakeup per batch. */
    if (waiting == u->flush_rows)
        kick(u);
    return 0;
}

/* ---- flushing ---- */

static int insert_work(ah_db_t *db, void *arg)
{
    batch_t *b = arg;
    return ah_store_usage_insert(db, b->rows, b->n);
}

static void batch_free(batch_t *b)
{
    free(b->rows);
    free(b);
}

/* A batch failed (rc): keep it for a retry, or drop it after AH_USAGE_RETRIES. Under no lock. */
static void batch_failed(ah_usage_t *u, batch_t *b, int rc)
{
    atomic_fetch_add(&u->batch_errors, 1);
    atomic_store(&u->last_error, rc);
    if (++b->tries >= AH_USAGE_RETRIES) {
        ah_log(AH_LOG_ERROR, "usage", "usage rows could not be written; dropped",
               AH_LF_INT("rows", b->n), AH_LF_INT("errno", -rc), AH_LF_INT("tries", b->tries),
               AH_LF_END);
        settle(u, b->n, false);
        batch_free(b);
        return;
    }
    ah_log(AH_LOG_WARN, "usage", "usage batch failed; retrying at the next flush",
           AH_LF_INT("rows", b->n), AH_LF_INT("errno", -rc), AH_LF_END);
    pthread_mutex_lock(&u->mu);
    b->next = u->retry;
    u->retry = b;
    pthread_mutex_unlock(&u->mu);
}

/* On the store writer thread, after the commit. */
static void insert_done(int rc, void *arg)
{
    batch_t *b = arg;
    ah_usage_t *u = b->u;
    if (rc >= 0) {
        settle(u, b->n, true);
        atomic_fetch_add(&u->batches, 1);
        ah_counter_inc(u->m_batches);
        batch_free(b);
    } else {
        batch_failed(u, b, rc);
    }
    pthread_mutex_lock(&u->mu);
    u->inflight--;
    pthread_cond_broadcast(&u->idle);
    /* u may be freed as soon as this unlock lets ah_usage_free see inflight == 0. */
    pthread_mutex_unlock(&u->mu);
}

static void submit(ah_usage_t *u, batch_t *b)
{
    pthread_mutex_lock(&u->mu);
    u->inflight++;
    pthread_mutex_unlock(&u->mu);
    int rc = ah_store_submit(u->store, AH_STORE_WRITE, insert_work, insert_done, NULL, b);
    if (rc != 0) {
        pthread_mutex_lock(&u->mu);
        u->inflight--;
        pthread_cond_broadcast(&u->idle);
        pthread_mutex_unlock(&u->mu);
        batch_failed(u, b, rc);
    }
}

/* Takes every shard's rows into one batch (NULL when there are none or on ENOMEM). */
static batch_t *drain(ah_usage_t *u)
{
    batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->u = u;
    for (int i = 0; i < AH_USAGE_SHARDS; i++) {
        shard_t *s = &u->shards[i];
        pthread_mutex_lock(&s->mu);
        ah_usage_row_t *rows = s->rows;
        size_t n = s->n;
        s->rows = NULL;
        s->n = s->cap = 0;
        pthread_mutex_unlock(&s->mu);
        if (n == 0) {
            free(rows);
            continue;
        }
        atomic_fetch_sub(&u->unflushed, n);
        if (!b->rows) {
            b->rows = rows; /* the common case: one busy shard, no copy */
            b->n = n;
            continue;
        }
        ah_usage_row_t *p = realloc(b->rows, (b->n + n) * sizeof(*p));
        if (!p) {
            ah_log(AH_LOG_ERROR, "usage", "out of memory while batching usage rows; dropped",
                   AH_LF_INT("rows", n), AH_LF_END);
            settle(u, n, false);
            free(rows);
            continue;
        }
        memcpy(p + b->n, rows, n * sizeof(*p));
        b->rows = p;
        b->n += n;
        free(rows);
    }
    if (b->n == 0) {
        batch_free(b);
        return NULL;
    }
    return b;
}

/* One flush: resubmits failed batches, then submits the shards' rows. Never blocks on the store. */
static void flush_once(ah_usage_t *u)
{
    if (!u->store)
        return;
    pthread_mutex_lock(&u->mu);
    batch_t *retry = u->retry;
    u->retry = NULL;
    pthread_mutex_unlock(&u->mu);
    while (retry) {
        batch_t *next = retry->next;
        retry->next = NULL;
        submit(u, retry);
        retry = next;
    }
    batch_t *b = drain(u);
    if (b)
        submit(u, b);
    if (atomic_load(&u->pending) < u->max_pending / 2)
        atomic_store(&u->overflowing, false);
}

static void wait_idle(ah_usage_t *u)
{
    pthread_mutex_lock(&u->mu);
    while (u->inflight > 0)
        pthread_cond_wait(&u->idle, &u->mu);
    pthread_mutex_unlock(&u->mu);
}

int ah_usage_flush(ah_usage_t *u)
{
    uint64_t errors0 = atomic_load(&u->batch_errors);
    flush_once(u);
    wait_idle(u);
    return atomic_load(&u->batch_errors) != errors0 ? atomic_load(&u->last_error) : 0;
}

static struct timespec mono_after(double s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(s * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

static void *flusher_main(void *arg)
{
    ah_usage_t *u = arg;
    pthread_mutex_lock(&u->mu);
    while (!u->stop) {
        struct timespec deadline = mono_after(u->interval_s);
        while (!u->stop && !u->kicked) {
            if (pthread_cond_timedwait(&u->wake, &u->mu, &deadline) == ETIMEDOUT)
                break;
        }
        if (u->stop)
            break;
        u->kicked = false;
        pthread_mutex_unlock(&u->mu);
        flush_once(u);
        pthread_mutex_lock(&u->mu);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int ah_usage_start(ah_usage_t *u)
{
    if (u->started)
        return 0;
    int rc = pthread_create(&u->thread, NULL, flusher_main, u);
    if (rc != 0) {
        ah_log(AH_LOG_ERROR, "usage", "could not start the usage flusher", AH_LF_INT("errno", rc),
               AH_LF_END);
        return -rc;
    }
    u->started = true;
    return 0;
}

void ah_usage_stats(ah_usage_t *u, ah_usage_stats_t *out)
{
    out->recorded = atomic_load(&u->recorded);
    out->rows_written = atomic_load(&u->written);
    out->batches = atomic_load(&u->batches);
    out->rows_dropped = atomic_load(&u->dropped);
    out->batch_errors = atomic_load(&u->batch_errors);
    out->pending = atomic_load(&u->pending);
}

void ah_usage_free(ah_usage_t *u)
{
    if (!u)
        return;
    if (u->started) {
        pthread_mutex_lock(&u->mu);
        u->stop = true;
        pthread_cond_signal(&u->wake);
        pthread_mutex_unlock(&u->mu);
        pthread_join(u->thread, NULL);
    }
    /* Write what is left; each round retries the failures of the one before. */
    for (int round = 0; u->store && round < AH_USAGE_RETRIES; round++) {
        flush_once(u);
        wait_idle(u);
        pthread_mutex_lock(&u->mu);
        bool more = u->retry != NULL;
        pthread_mutex_unlock(&u->mu);
        if (!more)
            break;
    }
    batch_t *b = u->retry;
    while (b) {
        batch_t *next = b->next;
        settle(u, b->n, false);
        batch_free(b);
        b = next;
    }
    size_t lost = 0;
    for (int i = 0; i < AH_USAGE_SHARDS; i++) {
        lost += u->shards[i].n;
        free(u->shards[i].rows);
        pthread_mutex_destroy(&u->shards[i].mu);
    }
    if (lost) {
        if (u->store)
            ah_log(AH_LOG_ERROR, "usage", "usage rows not written at shutdown",
                   AH_LF_INT("rows", lost), AH_LF_END);
        settle(u, lost, false);
    }
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->wake);
    pthread_cond_destroy(&u->idle);
    free(u);
}
