/*
 * metrics.c - Prometheus metrics registry; see metrics.h and
 * docs/internals/metrics.md.
 *
 * Storage. Every series owns a small range of "cells" (8-byte values): one for
 * a counter (float64 total), one for a gauge (float64 sum of adds), nbounds+2
 * for a histogram (one uint64 count per bucket including +Inf, then the
 * float64 sum). A cell index is global; each shard (one per registered thread,
 * plus one shared shard) holds its own copy of every cell, stored in chunks of
 * CHUNK_CELLS cells that are allocated separately and cache-line aligned, so
 * two shards never share a cache line. A render sums the copies.
 *
 * Writes. A thread with its own shard is the only writer of its cells: it does
 * a relaxed load and a relaxed store (no lock prefix, no contention); the
 * scraper reads with relaxed loads, so there is no data race. The shared shard
 * is written with atomic read-modify-write.
 *
 * Chunks are allocated under g_lock, for every existing shard, when a series
 * first needs a cell in a new chunk, and for a new shard when its thread
 * claims it; so a recording thread always finds its chunk present, and
 * recording never allocates. Cells are never reused (series are only freed at
 * shutdown), so a new series starts at zero.
 */
#include "obs/metrics.h"

#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double ah_metrics_latency_buckets[AH_METRICS_LATENCY_NBUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,
};

#define CACHE_LINE  64
#define CHUNK_SHIFT 10
#define CHUNK_CELLS (1u << CHUNK_SHIFT)
#define CHUNK_MASK  (CHUNK_CELLS - 1)
/* 4096 chunks x 1024 cells = 4M cells: far above 10k series x ~20 cells per family. */
#define MAX_CHUNKS   4096u
#define NSHARDS      (AH_METRICS_MAX_THREADS + 1)
#define SHARED_SHARD AH_METRICS_MAX_THREADS
#define TABLE_MIN    16

typedef _Atomic uint64_t cell_t;

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

typedef struct shard {
    /* Directory of this shard's chunks; an entry goes from NULL to a chunk once. */
    _Atomic(cell_t *) chunks[MAX_CHUNKS];
    bool shared; /* written with atomic RMW by any thread */
    bool in_use; /* owned by a thread (g_lock) */
} shard_t;

struct ah_metric_series {
    /* Immutable after the series is published. */
    ah_metric_family_t *family;
    kind_t kind;
    uint32_t chunk; /* chunk index of the first cell */
    uint32_t off;   /* offset of the first cell in the chunk */
    uint64_t hash;
    const char *values[AH_METRICS_MAX_LABELS];
    /* Gauges: the base that ah_gauge_set stores; value = base + sum of shard deltas. */
    _Atomic uint64_t gauge_base;
    /* g_lock */
    double (*fn)(void *ud);
    void *ud;
    struct ah_metric_series *next; /* creation order */
    char storage[];                /* label values */
};

/* Open-addressing table of series pointers. Slots go from NULL to a series once;
 * on growth a new table is published and the old one kept until shutdown, so a
 * reader still probing it reads valid memory (and at worst misses, then takes
 * the locked path). */
typedef struct table {
    struct table *prev;
    size_t mask;
    _Atomic(ah_metric_series_t *) slots[];
} table_t;

struct ah_metric_family {
    char *name;
    char *help;
    kind_t kind;
    bool fn_family; /* registered by *_fn: cannot be registered again */
    size_t nlabels;
    char *labels[AH_METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    uint32_t ncells;
    _Atomic size_t limit;
    _Atomic size_t nseries; /* excluding the overflow series */
    _Atomic(table_t *) table;
    _Atomic(ah_metric_series_t *) overflow;
    /* g_lock */
    size_t table_used;
    bool warned;
    ah_metric_series_t *head, *tail;
    struct ah_metric_family *next;
};

/* g_lock guards: g_ready, g_key, the family list and every family's series
 * list, table growth and callbacks, shard claiming, chunk allocation, g_next_cell. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_ready;
static pthread_key_t g_key;
static ah_metric_family_t *g_fam_head, *g_fam_tail;
static uint32_t g_next_cell;
static size_t g_default_limit = AH_METRICS_DEFAULT_SERIES_LIMIT;
/* Read lock-free by recorders (gauge_set, shared shard); written under g_lock. */
static _Atomic(shard_t *) g_shards[NSHARDS];
static _Atomic(shard_t *) g_shared;
/* Bumped by init and shutdown so a thread's shard from an earlier registry is ignored. */
static _Atomic unsigned g_gen;

static _Thread_local shard_t *t_shard;
static _Thread_local unsigned t_gen;
static _Thread_local int t_slot;

/* ---- bits ---------------------------------------------------------------- */

static inline uint64_t dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t cell_load(cell_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void cell_add_u64(cell_t *c, uint64_t n, bool shared)
{
    if (shared) {
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    } else {
        /* Single writer: a plain load + store, no locked instruction. */
        atomic_store_explicit(c, cell_load(c) + n, memory_order_relaxed);
    }
}

static inline void cell_add_dbl(cell_t *c, double d, bool shared)
{
    if (shared) {
        uint64_t old = cell_load(c);
        while (!atomic_compare_exchange_weak_explicit(c, &old, dbl_bits(bits_dbl(old) + d),
                                                      memory_order_relaxed, memory_order_relaxed))
            ;
    } else {
        atomic_store_explicit(c, dbl_bits(bits_dbl(cell_load(c)) + d), memory_order_relaxed);
    }
}

/* The calling thread's cells for s, or NULL (never expected; see file comment). */
static inline cell_t *series_cells(const ah_metric_series_t *s, bool *shared)
{
    shard_t *sh = t_shard;
    if (!sh || t_gen != atomic_load_explicit(&g_gen, memory_order_relaxed)) {
        sh = atomic_load_explicit(&g_shared, memory_order_acquire);
        if (!sh)
            return NULL;
    }
    *shared = sh->shared;
    cell_t *chunk = atomic_load_explicit(&sh->chunks[s->chunk], memory_order_acquire);
    return chunk ? chunk + s->off : NULL;
}

/* ---- shards and cells (g_lock held) --------------------------------------- */

static cell_t *chunk_new(void)
{
    size_t sz = CHUNK_CELLS * sizeof(cell_t); /* a multiple of CACHE_LINE */
    cell_t *c = aligned_alloc(CACHE_LINE, sz);
    if (c)
        memset(c, 0, sz);
    return c;
}

static uint32_t chunks_used(void)
{
    return (g_next_cell + CHUNK_MASK) >> CHUNK_SHIFT;
}

static int shard_fill(shard_t *sh, uint32_t nchunks)
{
    for (uint32_t i = 0; i < nchunks; i++) {
        if (atomic_load_explicit(&sh->chunks[i], memory_order_relaxed))
            continue;
        cell_t *c = chunk_new();
        if (!c)
            return -ENOMEM;
        atomic_store_explicit(&sh->chunks[i], c, memory_order_release);
    }
    return 0;
}

static shard_t *shard_new(bool shared)
{
    shard_t *sh = calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    sh->shared = shared;
    if (shard_fill(sh, chunks_used())) {
        for (uint32_t i = 0; i < MAX_CHUNKS; i++)
            free(atomic_load_explicit(&sh->chunks[i], memory_order_relaxed));
        free(sh);
        return NULL;
    }
    return sh;
}

static void shard_free(shard_t *sh)
{
    if (!sh)
        return;
    for (uint32_t i = 0; i < MAX_CHUNKS; i++)
        free(atomic_load_explicit(&sh->chunks[i], memory_order_relaxed));
    free(sh);
}

/* Reserves n contiguous cells inside one chunk, present in every shard. */
static int cells_alloc(uint32_t n, uint32_t *first)
{
    uint32_t c = g_next_cell;
    if ((c & CHUNK_MASK) + n > CHUNK_CELLS)
        c = (c + CHUNK_MASK) & ~CHUNK_MASK;
    if ((uint64_t)c + n > (uint64_t)MAX_CHUNKS * CHUNK_CELLS)
        return -ENOSPC;
    uint32_t need = (c + n + CHUNK_MASK) >> CHUNK_SHIFT;
    for (int i = 0; i < NSHARDS; i++) {
        shard_t *sh = atomic_load_explicit(&g_shards[i], memory_order_relaxed);
        if (sh && shard_fill(sh, need))
            return -ENOMEM;
    }
    g_next_cell = c + n;
    *first = c;
    return 0;
}

static void shard_release(void *p)
{
    pthread_mutex_lock(&g_lock);
    ((shard_t *)p)->in_use = false;
    pthread_mutex_unlock(&g_lock);
}

static int init_locked(void)
{
    if (g_ready)
        return 0;
    int rc = pthread_key_create(&g_key, shard_release);
    if (rc)
        return -rc;
    g_next_cell = 0;
    shard_t *sh = shard_new(true);
    if (!sh) {
        pthread_key_delete(g_key);
        return -ENOMEM;
    }
    atomic_store_explicit(&g_shards[SHARED_SHARD], sh, memory_order_release);
    atomic_store_explicit(&g_shared, sh, memory_order_release);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_relaxed);
    g_ready = true;
    return 0;
}

int ah_metrics_init(void)
{
    pthread_mutex_lock(&g_lock);
    int rc = init_locked();
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int ah_metrics_thread_init(void)
{
    pthread_mutex_lock(&g_lock);
    int rc = init_locked();
    if (rc)
        goto out;
    if (t_shard && t_gen == atomic_load_explicit(&g_gen, memory_order_relaxed)) {
        rc = t_slot;
        goto out;
    }
    rc = -ENOSPC;
    for (int i = 0; i < AH_METRICS_MAX_THREADS; i++) {
        shard_t *sh = atomic_load_explicit(&g_shards[i], memory_order_relaxed);
        if (sh && sh->in_use)
            continue;
        if (!sh) {
            sh = shard_new(false);
            if (!sh) {
                rc = -ENOMEM;
                break;
            }
            atomic_store_explicit(&g_shards[i], sh, memory_order_release);
        } else if (shard_fill(sh, chunks_used())) {
            rc = -ENOMEM;
            break;
        }
        rc = pthread_setspecific(g_key, sh);
        if (rc) {
            rc = -rc;
            break;
        }
        sh->in_use = true;
        t_shard = sh;
        t_gen = atomic_load_explicit(&g_gen, memory_order_relaxed);
        t_slot = i;
        rc = i;
        break;
    }
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void ah_metrics_thread_exit(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_ready && t_shard && t_gen == atomic_load_explicit(&g_gen, memory_order_relaxed)) {
        t_shard->in_use = false;
        pthread_setspecific(g_key, NULL);
    }
    t_shard = NULL;
    pthread_mutex_unlock(&g_lock);
}

int ah_metrics_set_default_series_limit(size_t n)
{
    if (n < 1)
        return -EINVAL;
    pthread_mutex_lock(&g_lock);
    g_default_limit = n;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* ---- families, series, tables ------------------------------------------- */

static void family_free(ah_metric_family_t *f)
{
    ah_metric_series_t *s = f->head;
    while (s) {
        ah_metric_series_t *next = s->next;
        free(s);
        s = next;
    }
    table_t *t = atomic_load_explicit(&f->table, memory_order_relaxed);
    while (t) {
        table_t *prev = t->prev;
        free(t);
        t = prev;
    }
    free(f->name);
    free(f->help);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->bounds);
    free(f);
}

void ah_metrics_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_ready) {
        ah_metric_family_t *f = g_fam_head;
        while (f) {
            ah_metric_family_t *next = f->next;
            family_free(f);
            f = next;
        }
        g_fam_head = g_fam_tail = NULL;
        for (int i = 0; i < NSHARDS; i++) {
            shard_free(atomic_load_explicit(&g_shards[i], memory_order_relaxed));
            atomic_store_explicit(&g_shards[i], NULL, memory_order_relaxed);
        }
        atomic_store_explicit(&g_shared, NULL, memory_order_relaxed);
        pthread_key_delete(g_key);
        g_next_cell = 0;
        g_default_limit = AH_METRICS_DEFAULT_SERIES_LIMIT;
        atomic_fetch_add_explicit(&g_gen, 1, memory_order_relaxed);
        g_ready = false;
    }
    t_shard = NULL;
    pthread_mutex_unlock(&g_lock);
}

static uint64_t hash_values(const char *const *v, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)v[i]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ull;
        }
        h ^= 0xff; /* never in UTF-8: separates ("ab","c") from ("a","bc") */
        h *= 1099511628211ull;
    }
    return h;
}

static bool values_equal(const ah_metric_series_t *s, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], v[i]) != 0)
            return false;
    return true;
}

static ah_metric_series_t *table_find(ah_metric_family_t *f, const char *const *v, uint64_t hash)
{
    table_t *t = atomic_load_explicit(&f->table, memory_order_acquire);
    for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        ah_metric_series_t *s = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (!s)
            return NULL;
        if (s->hash == hash && values_equal(s, v, f->nlabels))
            return s;
    }
}

static table_t *table_new(size_t size)
{
    table_t *t = calloc(1, sizeof *t + size * sizeof t->slots[0]);
    if (t)
        t->mask = size - 1;
    return t;
}

static void table_put(table_t *t, ah_metric_series_t *s)
{
    size_t i = s->hash & t->mask;
    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->slots[i], s, memory_order_release);
}

/* Inserts s, growing first so the load stays <= 1/2 (probes stay short and
 * a probe always ends at an empty slot). g_lock held. */
static int table_insert(ah_metric_family_t *f, ah_metric_series_t *s)
{
    table_t *t = atomic_load_explicit(&f->table, memory_order_relaxed);
    if ((f->table_used + 1) * 2 > t->mask + 1) {
        table_t *nt = table_new((t->mask + 1) * 2);
        if (!nt)
            return -ENOMEM;
        for (size_t i = 0; i <= t->mask; i++) {
            ah_metric_series_t *o = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
            if (o)
                table_put(nt, o);
        }
        nt->prev = t;
        atomic_store_explicit(&f->table, nt, memory_order_release);
        t = nt;
    }
    table_put(t, s);
    f->table_used++;
    return 0;
}

/* Creates, publishes and appends a series. g_lock held. NULL on ENOMEM/ENOSPC. */
static ah_metric_series_t *series_add(ah_metric_family_t *f, const char *const *v, uint64_t hash)
{
    size_t sz = sizeof(ah_metric_series_t);
    for (size_t i = 0; i < f->nlabels; i++)
        sz += strlen(v[i]) + 1;
    ah_metric_series_t *s = calloc(1, sz);
    if (!s)
        return NULL;
    char *p = s->storage;
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t len = strlen(v[i]);
        memcpy(p, v[i], len + 1);
        s->values[i] = p;
        p += len + 1;
    }
    uint32_t first;
    if (cells_alloc(f->ncells, &first)) {
        free(s);
        return NULL;
    }
    s->family = f;
    s->kind = f->kind;
    s->chunk = first >> CHUNK_SHIFT;
    s->off = first & CHUNK_MASK;
    s->hash = hash;
    /* Publish last: lock-free readers find s through the table (release store). */
    if (table_insert(f, s)) {
        free(s); /* its cells stay reserved, unused: harmless */
        return NULL;
    }
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    return s;
}

static ah_metric_series_t *overflow_series(ah_metric_family_t *f, const char *why)
{
    ah_metric_series_t *o = atomic_load_explicit(&f->overflow, memory_order_relaxed);
    if (o)
        return o;
    const char *v[AH_METRICS_MAX_LABELS];
    for (size_t i = 0; i < f->nlabels; i++)
        v[i] = AH_METRICS_OVERFLOW_VALUE;
    uint64_t hash = hash_values(v, f->nlabels);
    o = table_find(f, v, hash);
    if (!o)
        o = series_add(f, v, hash);
    if (!o)
        return NULL;
    atomic_store_explicit(&f->overflow, o, memory_order_release);
    if (!f->warned) {
        f->warned = true;
        ah_log(AH_LOG_WARN, "metrics",
               "series limit reached; new label values are recorded as _other",
               AH_LF_STR("metric", f->name), AH_LF_STR("reason", why),
               AH_LF_INT("limit", (long long)atomic_load(&f->limit)), AH_LF_END);
    }
    return o;
}

/* Finds or creates; g_lock held. */
static ah_metric_series_t *series_get_locked(ah_metric_family_t *f, const char *const *v,
                                             uint64_t hash)
{
    ah_metric_series_t *s = table_find(f, v, hash);
    if (s)
        return s;
    if (atomic_load_explicit(&f->nseries, memory_order_relaxed) >=
        atomic_load_explicit(&f->limit, memory_order_relaxed))
        return overflow_series(f, "series cap");
    s = series_add(f, v, hash);
    if (!s)
        return overflow_series(f, "out of memory or cells");
    atomic_fetch_add_explicit(&f->nseries, 1, memory_order_relaxed);
    return s;
}

/* Length of the valid UTF-8 sequence at p (at most rem bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t rem)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (rem < n)
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static bool value_ok(const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t i = 0;
    while (p[i]) {
        if (p[i] < 0x80) { /* ASCII: the common case, one compare per byte */
            i++;
        } else {
            size_t n = utf8_len(p + i, strnlen(v + i, 4));
            if (!n)
                return false;
            i += n;
        }
        if (i > AH_METRICS_MAX_LABEL_VALUE)
            return false;
    }
    return true;
}

/* Copies v into out (AH_METRICS_MAX_LABEL_VALUE + 1 bytes): bad bytes become '?',
 * the copy stops before a sequence that would not fit. */
static void value_sanitize(const char *v, char *out)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t len = strlen(v), o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(p + i, len - i);
        size_t w = n ? n : 1;
        if (o + w > AH_METRICS_MAX_LABEL_VALUE)
            break;
        if (n)
            memcpy(out + o, p + i, n);
        else
            out[o] = '?';
        o += w;
        i += w;
    }
    out[o] = '\0';
}

ah_metric_series_t *ah_metrics_series_v(ah_metric_family_t *f, const char *const *values, size_t n)
{
    if (!f || n != f->nlabels || (n && !values))
        return NULL;
    const char *v[AH_METRICS_MAX_LABELS];
    char fixed[AH_METRICS_MAX_LABELS][AH_METRICS_MAX_LABEL_VALUE + 1];
    for (size_t i = 0; i < n; i++) {
        v[i] = values[i] ? values[i] : "";
        if (!value_ok(v[i])) {
            value_sanitize(v[i], fixed[i]);
            v[i] = fixed[i];
        }
    }
    uint64_t hash = hash_values(v, n);
    ah_metric_series_t *s = table_find(f, v, hash);
    if (s)
        return s;
    /* At the cap, a label explosion must not serialise every lookup on g_lock. */
    if (atomic_load_explicit(&f->nseries, memory_order_relaxed) >=
        atomic_load_explicit(&f->limit, memory_order_relaxed)) {
        s = atomic_load_explicit(&f->overflow, memory_order_acquire);
        if (s)
            return s;
    }
    pthread_mutex_lock(&g_lock);
    s = series_get_locked(f, v, hash);
    pthread_mutex_unlock(&g_lock);
    return s;
}

ah_metric_series_t *ah_metrics_series0(ah_metric_family_t *f)
{
    if (!f || f->nlabels)
        return NULL;
    return ah_metrics_series_v(f, NULL, 0);
}

int ah_metrics_family_set_limit(ah_metric_family_t *f, size_t n)
{
    if (!f || n < 1)
        return -EINVAL;
    atomic_store_explicit(&f->limit, n, memory_order_relaxed);
    return 0;
}

/* ---- registration -------------------------------------------------------- */

static bool name_ok(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* True when a's name plus a histogram suffix equals b (a is a histogram). */
static bool hist_clash(const char *hist, const char *other)
{
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    size_t hl = strlen(hist);
    if (strncmp(hist, other, hl) != 0)
        return false;
    for (size_t i = 0; i < 3; i++)
        if (strcmp(other + hl, sfx[i]) == 0)
            return true;
    return false;
}

static const char *validate(kind_t kind, const char *name, const char *help, size_t nlabels,
                            const char *const *labels, const double *bounds, size_t nbounds)
{
    if (!name_ok(name, true))
        return "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*";
    if (!help)
        return "help text is required";
    if (kind == KIND_COUNTER && !ends_with(name, "_total"))
        return "counter names end in _total";
    if (nlabels > AH_METRICS_MAX_LABELS)
        return "too many labels (max 4)";
    if (nlabels && !labels)
        return "label names missing";
    for (size_t i = 0; i < nlabels; i++) {
        if (!name_ok(labels[i], false))
            return "label name must match [a-zA-Z_][a-zA-Z0-9_]*";
        if (strncmp(labels[i], "__", 2) == 0)
            return "label names starting with __ are reserved";
        if (kind == KIND_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return "label le is reserved for histogram buckets";
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return "duplicate label name";
    }
    if (kind == KIND_HISTOGRAM) {
        if (!bounds || nbounds < 1 || nbounds > AH_METRICS_MAX_BUCKETS)
            return "histogram needs 1..32 bucket bounds";
        for (size_t i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i]))
                return "bucket bounds must be finite";
            if (i && !(bounds[i] > bounds[i - 1]))
                return "bucket bounds must be strictly increasing";
        }
    }
    return NULL;
}

static bool same_shape(const ah_metric_family_t *f, kind_t kind, size_t nlabels,
                       const char *const *labels, const double *bounds, size_t nbounds)
{
    if (f->kind != kind || f->nlabels != nlabels || f->fn_family)
        return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return false;
    if (kind == KIND_HISTOGRAM &&
        (f->nbounds != nbounds || memcmp(f->bounds, bounds, nbounds * sizeof(double)) != 0))
        return false;
    return true;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static ah_metric_family_t *family_alloc(kind_t kind, const char *name, const char *help,
                                        size_t nlabels, const char *const *labels,
                                        const double *bounds, size_t nbounds)
{
    ah_metric_family_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->kind = kind;
    f->name = dup_str(name);
    f->help = dup_str(help);
    bool ok = f->name && f->help;
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = dup_str(labels[i]);
        f->nlabels = i + 1;
        ok = ok && f->labels[i];
    }
    if (kind == KIND_HISTOGRAM) {
        f->bounds = malloc(nbounds * sizeof(double));
        ok = ok && f->bounds;
        if (f->bounds)
            memcpy(f->bounds, bounds, nbounds * sizeof(double));
        f->nbounds = nbounds;
        f->ncells = (uint32_t)nbounds + 2;
    } else {
        f->ncells = 1;
    }
    table_t *t = table_new(TABLE_MIN);
    atomic_store_explicit(&f->table, t, memory_order_relaxed);
    atomic_store_explicit(&f->limit, g_default_limit, memory_order_relaxed);
    if (!ok || !t) {
        family_free(f);
        return NULL;
    }
    return f;
}

static ah_metric_family_t *family_register(kind_t kind, const char *name, const char *help,
                                           size_t nlabels, const char *const *labels,
                                           const double *bounds, size_t nbounds,
                                           double (*fn)(void *), void *ud, int *err)
{
    const char *why = validate(kind, name, help, nlabels, labels, bounds, nbounds);
    if (why) {
        ah_log(AH_LOG_ERROR, "metrics", "cannot register metric", AH_LF_STR("metric", name),
               AH_LF_STR("error", why), AH_LF_END);
        *err = -EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&g_lock);
    ah_metric_family_t *f = NULL;
    int rc = init_locked();
    if (rc) {
        why = "out of memory";
        goto out;
    }
    for (ah_metric_family_t *e = g_fam_head; e; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            if (!fn && same_shape(e, kind, nlabels, labels, bounds, nbounds)) {
                f = e;
                goto out;
            }
            rc = -EEXIST;
            why = fn || e->fn_family
                      ? "name already registered (a callback metric registers once)"
                      : "name already registered with another kind, labels or buckets";
            goto out;
        }
        if ((e->kind == KIND_HISTOGRAM && hist_clash(e->name, name)) ||
            (kind == KIND_HISTOGRAM && hist_clash(name, e->name))) {
            rc = -EEXIST;
            why = "name clashes with a histogram's _bucket/_sum/_count series";
            goto out;
        }
    }
    f = family_alloc(kind, name, help, nlabels, labels, bounds, nbounds);
    if (!f) {
        rc = -ENOMEM;
        why = "out of memory";
        goto out;
    }
    f->fn_family = fn != NULL;
    if (nlabels == 0) {
        ah_metric_series_t *s = series_get_locked(f, NULL, hash_values(NULL, 0));
        if (!s) {
            family_free(f);
            f = NULL;
            rc = -ENOMEM;
            why = "out of memory";
            goto out;
        }
        s->fn = fn;
        s->ud = ud;
    }
    if (g_fam_tail)
        g_fam_tail->next = f;
    else
        g_fam_head = f;
    g_fam_tail = f;
out:
    pthread_mutex_unlock(&g_lock);
    if (!f)
        ah_log(AH_LOG_ERROR, "metrics", "cannot register metric", AH_LF_STR("metric", name),
               AH_LF_STR("error", why), AH_LF_END);
    *err = rc;
    return f;
}

ah_metric_family_t *ah_metrics_counter(const char *name, const char *help, size_t nlabels,
                                       const char *const *label_names)
{
    int err;
    return family_register(KIND_COUNTER, name, help, nlabels, label_names, NULL, 0, NULL, NULL,
                           &err);
}

ah_metric_family_t *ah_metrics_gauge(const char *name, const char *help, size_t nlabels,
                                     const char *const *label_names)
{
    int err;
    return family_register(KIND_GAUGE, name, help, nlabels, label_names, NULL, 0, NULL, NULL, &err);
}

ah_metric_family_t *ah_metrics_histogram(const char *name, const char *help, size_t nlabels,
                                         const char *const *label_names, const double *bounds,
                                         size_t nbounds)
{
    int err;
    return family_register(KIND_HISTOGRAM, name, help, nlabels, label_names, bounds, nbounds, NULL,
                           NULL, &err);
}

static int register_fn(kind_t kind, const char *name, const char *help, double (*fn)(void *),
                       void *ud)
{
    if (!fn)
        return -EINVAL;
    int err;
    return family_register(kind, name, help, 0, NULL, NULL, 0, fn, ud, &err) ? 0 : err;
}

int ah_metrics_gauge_fn(const char *name, const char *help, double (*fn)(void *ud), void *ud)
{
    return register_fn(KIND_GAUGE, name, help, fn, ud);
}

int ah_metrics_counter_fn(const char *name, const char *help, double (*fn)(void *ud), void *ud)
{
    return register_fn(KIND_COUNTER, name, help, fn, ud);
}

int ah_metrics_series_fn(ah_metric_series_t *s, double (*fn)(void *ud), void *ud)
{
    if (!s || s->kind == KIND_HISTOGRAM)
        return -EINVAL;
    pthread_mutex_lock(&g_lock);
    s->fn = fn;
    s->ud = fn ? ud : NULL;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* ---- recording ----------------------------------------------------------- */

void ah_counter_add(ah_metric_series_t *s, double v)
{
    if (!s || s->kind != KIND_COUNTER || !(v >= 0))
        return;
    bool shared;
    cell_t *c = series_cells(s, &shared);
    if (c)
        cell_add_dbl(c, v, shared);
}

void ah_counter_inc(ah_metric_series_t *s)
{
    ah_counter_add(s, 1.0);
}

void ah_gauge_add(ah_metric_series_t *s, double d)
{
    if (!s || s->kind != KIND_GAUGE)
        return;
    bool shared;
    cell_t *c = series_cells(s, &shared);
    if (c)
        cell_add_dbl(c, d, shared);
}

/* Sum of a series' cell i over all shards (render and gauge_set). */
static double shard_sum_dbl(const ah_metric_series_t *s, uint32_t i)
{
    double sum = 0;
    for (int k = 0; k < NSHARDS; k++) {
        shard_t *sh = atomic_load_explicit(&g_shards[k], memory_order_acquire);
        if (!sh)
            continue;
        cell_t *chunk = atomic_load_explicit(&sh->chunks[s->chunk], memory_order_acquire);
        if (chunk)
            sum += bits_dbl(cell_load(&chunk[s->off + i]));
    }
    return sum;
}

static uint64_t shard_sum_u64(const ah_metric_series_t *s, uint32_t i)
{
    uint64_t sum = 0;
    for (int k = 0; k < NSHARDS; k++) {
        shard_t *sh = atomic_load_explicit(&g_shards[k], memory_order_acquire);
        if (!sh)
            continue;
        cell_t *chunk = atomic_load_explicit(&sh->chunks[s->chunk], memory_order_acquire);
        if (chunk)
            sum += cell_load(&chunk[s->off + i]);
    }
    return sum;
}

void ah_gauge_set(ah_metric_series_t *s, double v)
{
    if (!s || s->kind != KIND_GAUGE)
        return;
    /* Adds live in the shards and are summed at render; a set stores the base
     * that makes base + deltas == v. Each delta cell has one writer, so adds
     * after this read are kept, adds before it are overridden: a set never
     * needs to write another thread's cells. */
    double deltas = shard_sum_dbl(s, 0);
    atomic_store_explicit(&s->gauge_base, dbl_bits(v - deltas), memory_order_relaxed);
}

void ah_hist_observe(ah_metric_series_t *s, double v)
{
    if (!s || s->kind != KIND_HISTOGRAM || isnan(v))
        return;
    const ah_metric_family_t *f = s->family;
    /* First bucket whose upper bound is >= v; nbounds is the +Inf bucket. */
    size_t lo = 0, hi = f->nbounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    bool shared;
    cell_t *c = series_cells(s, &shared);
    if (!c)
        return;
    cell_add_u64(&c[lo], 1, shared);
    cell_add_dbl(&c[f->nbounds + 1], v, shared);
}

/* ---- exposition (g_lock held) -------------------------------------------- */

/* Formats v as the text format expects: integers without exponent when exact,
 * otherwise the shorter of 15 or 17 significant digits that reads back exactly. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v))
        snprintf(out, n, "NaN");
    else if (isinf(v))
        snprintf(out, n, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53 */
        snprintf(out, n, "%.0f", v == 0 ? 0.0 : v);         /* no "-0" */
    else if (snprintf(out, n, "%.15g", v), strtod(out, NULL) != v)
        snprintf(out, n, "%.17g", v);
}

static int put_double(ah_buf_t *b, double v)
{
    char tmp[40];
    fmt_double(tmp, sizeof tmp, v);
    return ah_buf_puts(b, tmp);
}

/* Text format 0.0.4: HELP escapes \ and newline; label values also escape ". */
static int put_escaped(ah_buf_t *b, const char *s, bool quote)
{
    int rc = 0;
    const char *run = s;
    for (const char *p = s; *p && !rc; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && quote)
            esc = "\\\"";
        if (!esc)
            continue;
        rc = ah_buf_append(b, run, (size_t)(p - run));
        if (!rc)
            rc = ah_buf_puts(b, esc);
        run = p + 1;
    }
    return rc ? rc : ah_buf_puts(b, run);
}

/* name{labels[,le="x"]} followed by a space. le may be NULL. */
static int put_series_name(ah_buf_t *b, const ah_metric_family_t *f, const ah_metric_series_t *s,
                           const char *suffix, const char *le)
{
    int rc = ah_buf_puts(b, f->name);
    if (!rc && suffix)
        rc = ah_buf_puts(b, suffix);
    if (rc || (f->nlabels == 0 && !le))
        return rc ? rc : ah_buf_putc(b, ' ');
    rc = ah_buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels && !rc; i++) {
        if (i)
            rc = ah_buf_putc(b, ',');
        if (!rc)
            rc = ah_buf_puts(b, f->labels[i]);
        if (!rc)
            rc = ah_buf_puts(b, "=\"");
        if (!rc)
            rc = put_escaped(b, s->values[i], true);
        if (!rc)
            rc = ah_buf_putc(b, '"');
    }
    if (!rc && le)
        rc = ah_buf_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    return rc ? rc : ah_buf_puts(b, "} ");
}

static int render_histogram(ah_buf_t *b, const ah_metric_family_t *f, const ah_metric_series_t *s)
{
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i <= f->nbounds && !rc; i++) {
        char le[40];
        fmt_double(le, sizeof le, i == f->nbounds ? INFINITY : f->bounds[i]);
        cum += shard_sum_u64(s, (uint32_t)i);
        rc = put_series_name(b, f, s, "_bucket", le);
        if (!rc)
            rc = ah_buf_put_u64(b, cum);
        if (!rc)
            rc = ah_buf_putc(b, '\n');
    }
    if (!rc)
        rc = put_series_name(b, f, s, "_sum", NULL);
    if (!rc)
        rc = put_double(b, shard_sum_dbl(s, (uint32_t)f->nbounds + 1));
    if (!rc)
        rc = ah_buf_putc(b, '\n');
    /* _count is the +Inf bucket by construction, so the two always agree. */
    if (!rc)
        rc = put_series_name(b, f, s, "_count", NULL);
    if (!rc)
        rc = ah_buf_put_u64(b, cum);
    return rc ? rc : ah_buf_putc(b, '\n');
}

static int render_family(ah_buf_t *b, const ah_metric_family_t *f)
{
    int rc = ah_buf_printf(b, "# HELP %s ", f->name);
    if (!rc)
        rc = put_escaped(b, f->help, false);
    if (!rc)
        rc = ah_buf_printf(b, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
    for (const ah_metric_series_t *s = f->head; s && !rc; s = s->next) {
        if (f->kind == KIND_HISTOGRAM) {
            rc = render_histogram(b, f, s);
            continue;
        }
        double v;
        if (s->fn)
            v = s->fn(s->ud);
        else if (f->kind == KIND_GAUGE)
            v = bits_dbl(atomic_load_explicit(&s->gauge_base, memory_order_relaxed)) +
                shard_sum_dbl(s, 0);
        else
            v = shard_sum_dbl(s, 0);
        rc = put_series_name(b, f, s, NULL, NULL);
        if (!rc)
            rc = put_double(b, v);
        if (!rc)
            rc = ah_buf_putc(b, '\n');
    }
    return rc;
}

int ah_metrics_render(ah_buf_t *out)
{
    pthread_mutex_lock(&g_lock);
    int rc = init_locked();
    for (const ah_metric_family_t *f = g_fam_head; f && !rc; f = f->next)
        rc = render_family(out, f);
    pthread_mutex_unlock(&g_lock);
    return rc;
}
