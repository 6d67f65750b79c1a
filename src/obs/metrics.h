/*
 * metrics.h - process-wide Prometheus metrics registry.
 *
 * Families (a name, help text, kind and 0..4 label names) are registered at
 * startup; series (one set of label values) are created on demand and then
 * recorded into through a handle:
 *
 *   static ah_metric_family_t *reqs;
 *   reqs = ah_metrics_counter("agenthub_http_requests_total", "HTTP requests handled.",
 *                             3, (const char *[]){"method", "route", "status"});
 *   ah_metric_series_t *ok = ah_metrics_series(reqs, "GET", "/healthz", "200");
 *   ah_counter_inc(ok);
 *
 * ah_metrics_render() writes every family in the Prometheus text exposition
 * format 0.0.4, families in registration order and series in creation order.
 *
 * Why one registry per process: a process serves one /metrics exposition, and
 * the recording threads (workers, store, timers) belong to the process, not to
 * any one module. A singleton lets any module record without plumbing a handle
 * through every call, and keeps one place where shards are summed.
 *
 * Concurrency: recording (ah_counter_*, ah_gauge_*, ah_hist_*) is lock-free.
 * A thread that called ah_metrics_thread_init() writes only to its own shard
 * (no atomic read-modify-write, no shared cache line); other threads write to a
 * shared shard with atomic adds. Looking up an existing series by label values
 * takes no lock; creating a series, registering, rendering and thread_init take
 * the registry mutex (g_lock in metrics.c), which guards the family list, the
 * series lists, the shard table and the callbacks.
 *
 * Lifetime: families, series and their handles are owned by the registry and
 * stay valid until ah_metrics_shutdown(). Handles are never moved or freed
 * earlier, so they may be resolved once and kept in a static.
 */
#ifndef AH_METRICS_H
#define AH_METRICS_H

#include "core/buf.h"

#include <stddef.h>

typedef struct ah_metric_family ah_metric_family_t;
typedef struct ah_metric_series ah_metric_series_t;

/** Most label names a family may have. */
#define AH_METRICS_MAX_LABELS 4
/** Most recording threads with their own shard; more share the common shard. */
#define AH_METRICS_MAX_THREADS 64
/** Most bucket bounds of a histogram (the +Inf bucket is implicit). */
#define AH_METRICS_MAX_BUCKETS 32
/** Default cap on the series of one family (see ah_metrics_set_default_series_limit). */
#define AH_METRICS_DEFAULT_SERIES_LIMIT 10000
/** Label values longer than this (bytes) are cut at a UTF-8 boundary. */
#define AH_METRICS_MAX_LABEL_VALUE 256
/** Label value of the series that takes records past a family's series cap. */
#define AH_METRICS_OVERFLOW_VALUE "_other"

/**
 * Default latency buckets in seconds, 100 us .. 30 s (17 bounds): fine
 * resolution below a millisecond for HTTP and gateway overhead, coarse up to
 * the slowest model calls.
 */
extern const double ah_metrics_latency_buckets[];
#define AH_METRICS_LATENCY_NBUCKETS 17

/* ---- lifecycle ---------------------------------------------------------- */

/**
 * Creates the registry. Idempotent and thread-safe; registration functions
 * call it themselves, so calling it first is only needed to get its result.
 * Returns 0 or -ENOMEM / -EAGAIN (pthread key could not be created).
 */
int ah_metrics_init(void);

/**
 * Frees every family, series, shard and callback binding. All handles become
 * invalid. Call only when no other thread records, renders or registers (after
 * workers have joined). Safe to call when not initialised; init may follow.
 */
void ah_metrics_shutdown(void);

/**
 * Gives the calling thread its own shard so that its records never touch a
 * cache line another thread writes. Call once per long-lived recording thread
 * (HTTP workers) before it records; calling again returns the same slot.
 * The slot is released when the thread exits (or by ah_metrics_thread_exit)
 * and its totals are kept. Returns the slot index (0 .. MAX_THREADS-1),
 * -ENOSPC when all slots are taken (the thread then records through the
 * shared shard, which is still correct) or -ENOMEM.
 */
int ah_metrics_thread_init(void);

/** Releases the calling thread's slot early; no-op when it has none. */
void ah_metrics_thread_exit(void);

/**
 * Sets the series cap for families registered from now on (config hook;
 * default AH_METRICS_DEFAULT_SERIES_LIMIT). n must be >= 1.
 * Returns 0 or -EINVAL.
 */
int ah_metrics_set_default_series_limit(size_t n);

/* ---- registration ------------------------------------------------------- */

/*
 * Registration rules, common to the functions below:
 * - name matches [a-zA-Z_:][a-zA-Z0-9_:]*; counter names end in "_total";
 * - label names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__", are
 *   distinct, and a histogram may not use "le";
 * - help is any text (escaped on output); name, help, label names and bucket
 *   bounds are copied.
 * Registering the same name again with the same kind, labels (and buckets)
 * returns the existing family; any other clash returns NULL.
 * On error (invalid argument, clash, out of memory) these return NULL and log
 * the reason once; recording through a NULL handle is a no-op, so a failed
 * registration loses a metric but never crashes the server.
 * A family with no labels gets its single series at registration, so it is
 * rendered (as 0) before the first record.
 */

/** Registers a counter family (monotonic, float64). See the rules above. */
ah_metric_family_t *ah_metrics_counter(const char *name, const char *help, size_t nlabels,
                                       const char *const *label_names);

/** Registers a gauge family (set / add, float64). See the rules above. */
ah_metric_family_t *ah_metrics_gauge(const char *name, const char *help, size_t nlabels,
                                     const char *const *label_names);

/**
 * Registers a histogram family with nbounds bucket upper bounds (strictly
 * increasing, finite, 1..AH_METRICS_MAX_BUCKETS); a +Inf bucket is added.
 * Observations are in base units (seconds, bytes). See the rules above.
 */
ah_metric_family_t *ah_metrics_histogram(const char *name, const char *help, size_t nlabels,
                                         const char *const *label_names, const double *bounds,
                                         size_t nbounds);

/**
 * Registers an unlabelled gauge whose value is fn(ud), called at each render
 * on the rendering thread with the registry mutex held. fn must be
 * thread-safe, must not block and must not call into this module (deadlock);
 * ud must stay valid until shutdown. A NaN result is rendered as NaN.
 * Returns 0, -EINVAL (bad name, NULL fn), -EEXIST (name taken) or -ENOMEM.
 */
int ah_metrics_gauge_fn(const char *name, const char *help, double (*fn)(void *ud), void *ud);

/**
 * Registers an unlabelled counter whose value is fn(ud) (e.g. CPU seconds
 * read from /proc). Same contract and results as ah_metrics_gauge_fn; fn
 * must return a non-decreasing value.
 */
int ah_metrics_counter_fn(const char *name, const char *help, double (*fn)(void *ud), void *ud);

/**
 * Binds a callback to one counter or gauge series (e.g. breaker state per
 * provider): at render its value is fn(ud) instead of what was recorded.
 * fn == NULL unbinds; once this returns, the old callback is not running and
 * will not run again, so its ud may be freed. Same callback contract as
 * ah_metrics_gauge_fn. Returns 0 or -EINVAL (NULL series, histogram series).
 */
int ah_metrics_series_fn(ah_metric_series_t *s, double (*fn)(void *ud), void *ud);

/**
 * Caps the number of series of one family (n >= 1). Lowering it below the
 * current count keeps existing series and sends new ones to the overflow
 * series. Returns 0 or -EINVAL.
 */
int ah_metrics_family_set_limit(ah_metric_family_t *f, size_t n);

/* ---- series lookup ------------------------------------------------------ */

/**
 * Returns the series of f with these label values (n must equal the family's
 * label count; a NULL value means ""), creating it on first use. Lookup of an
 * existing series is lock-free (hash of the values, read-mostly table);
 * creation takes the registry mutex. Values that are not valid UTF-8 get '?'
 * for each bad byte; values longer than AH_METRICS_MAX_LABEL_VALUE are cut.
 * Past the family's series cap (or on ENOMEM) returns the overflow series,
 * whose label values are all "_other", and logs one warning per family.
 * Returns NULL only when f is NULL, n is wrong, or the overflow series itself
 * cannot be allocated. The handle is owned by the registry (see lifetime).
 * Hot paths should resolve fixed label sets once and keep the handle.
 */
ah_metric_series_t *ah_metrics_series_v(ah_metric_family_t *f, const char *const *values, size_t n);

/**
 * ah_metrics_series(f, "GET", "/healthz", "200"): ah_metrics_series_v with the
 * values listed inline (counted at compile time). For an unlabelled family use
 * ah_metrics_series0(f).
 */
#define ah_metrics_series(f, ...)                                                                  \
    ah_metrics_series_v((f), (const char *const[]){__VA_ARGS__},                                   \
                        sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/** The single series of an unlabelled family (NULL when f is NULL or labelled). */
ah_metric_series_t *ah_metrics_series0(ah_metric_family_t *f);

/* ---- recording (lock-free; NULL series is a no-op) ---------------------- */

/** Adds 1 to a counter series. */
void ah_counter_inc(ah_metric_series_t *s);

/** Adds v to a counter series; v < 0 or NaN is ignored (counters only go up). */
void ah_counter_add(ah_metric_series_t *s, double v);

/**
 * Sets a gauge series to v. Adds from other threads that race with a set may
 * land before or after it, as with any gauge.
 */
void ah_gauge_set(ah_metric_series_t *s, double v);

/** Adds d (may be negative) to a gauge series; as cheap as a counter add. */
void ah_gauge_add(ah_metric_series_t *s, double d);

/** Records one observation (seconds, bytes...) in a histogram series; NaN is ignored. */
void ah_hist_observe(ah_metric_series_t *s, double v);

/* ---- exposition --------------------------------------------------------- */

/**
 * Appends the whole exposition (text format 0.0.4) to out. Counter, gauge and
 * histogram values are the sums over all shards. Returns 0, or the error of
 * the buffer (-ENOMEM, -E2BIG when out has a limit); on error out holds a
 * partial exposition that must not be served. Serialised with registration.
 */
int ah_metrics_render(ah_buf_t *out);

/** Content-Type of the exposition, for the /metrics handler. */
#define AH_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
