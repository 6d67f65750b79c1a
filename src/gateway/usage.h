/*
 * usage.h - the usage recorder: one row per gateway request (tokens, cost,
 * latency), written to the store in batches, off the event loops.
 *
 * Recording is a non-blocking append to one of AH_USAGE_SHARDS buffers (the
 * calling thread's shard, under that shard's mutex: a copy of one row). A
 * flusher thread wakes every flush_interval_s, or as soon as flush_rows rows
 * wait, takes every shard's rows and submits ONE store write job that inserts
 * them (the store's group commit makes that one transaction). Nothing on the
 * request path waits for the database.
 *
 * Bounds: at most max_pending rows wait (recorded, not yet committed); past
 * that a record is dropped, counted (rows_dropped) and warned about once per
 * overflow episode. A batch the store refuses (queue full) or fails is kept
 * and retried on the next flush, up to AH_USAGE_RETRIES times, then dropped
 * and counted.
 *
 * Spend hook: a module that needs every recorded cost the moment it is
 * recorded (the budget limiter) sets a hook; it runs on the recording thread
 * inside ah_usage_record, for dropped rows too (the money was spent).
 *
 * Lifetime: new -> [set_spend_hook] -> start -> record... -> free. free stops
 * the flusher and writes every remaining row synchronously (blocking: call it
 * from the main thread at shutdown, before ah_store_close). record and stats
 * are thread-safe. docs/internals/limits.md.
 */
#ifndef AH_GW_USAGE_H
#define AH_GW_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "store/store.h"
#include "store/usage.h"

#define AH_USAGE_SHARDS              16
#define AH_USAGE_FLUSH_INTERVAL_S    1.0
#define AH_USAGE_FLUSH_ROWS          500
#define AH_USAGE_MAX_PENDING_DEFAULT 100000
#define AH_USAGE_RETRIES             3

typedef struct ah_usage ah_usage_t;

/*
 * What to record. Strings are borrowed for the call (copied; a value longer
 * than its column's field in ah_usage_row_t is cut at a UTF-8 boundary).
 * NULL strings are "" (stored as NULL where the column allows it).
 */
typedef struct ah_usage_rec {
    int64_t ts; /* ms since the epoch; 0 = now */
    const char *request_id;
    const char *key_id; /* the principal's key id ("" for internal calls) */
    const char *tenant;
    const char *model; /* public model name */
    const char *provider;
    const char *upstream_model;
    int64_t prompt_tokens; /* including cached_tokens */
    int64_t completion_tokens;
    int64_t cached_tokens;
    double cost_usd;    /* ah_usage_cost() */
    int64_t latency_ms; /* < 0 = unknown */
    int64_t ttft_ms;    /* < 0 = unknown */
    int status;         /* HTTP status given to the client */
    bool stream;
    int attempts;
    const char *agent;  /* NULL outside agent runs */
    const char *run_id; /* NULL outside agent runs */
} ah_usage_rec_t;

typedef struct ah_usage_opts {
    double flush_interval_s; /* 0 = AH_USAGE_FLUSH_INTERVAL_S */
    size_t flush_rows;       /* 0 = AH_USAGE_FLUSH_ROWS */
    size_t max_pending;      /* 0 = AH_USAGE_MAX_PENDING_DEFAULT */
} ah_usage_opts_t;

typedef struct ah_usage_stats {
    uint64_t recorded;     /* ah_usage_record calls that kept their row */
    uint64_t rows_written; /* rows committed to the store */
    uint64_t batches;      /* insert jobs committed */
    uint64_t rows_dropped; /* over max_pending, or failed AH_USAGE_RETRIES times */
    uint64_t batch_errors; /* insert jobs refused or failed (each retried) */
    uint64_t pending;      /* rows recorded and not yet committed */
} ah_usage_stats_t;

/** Called for every recorded row (see the header comment). Must be quick and thread-safe. */
typedef void (*ah_usage_spend_fn)(void *ud, const char *key_id, int64_t ts_ms, double cost_usd);

/**
 * Costs one request in USD from a model's price table (USD per million
 * tokens): (prompt - cached) * input + cached * cached_input + completion *
 * output, over 1e6. cached is clamped to [0, prompt]; negative counts are 0.
 * p NULL gives 0.
 */
double ah_usage_cost(const ah_config_price_t *p, int64_t prompt, int64_t cached,
                     int64_t completion);

/**
 * Creates a recorder writing to store (kept by pointer; NULL keeps rows in
 * memory until they are dropped at free: tests). opts may be NULL. Makes a
 * process-unique node id (ah_usage_node). NULL on ENOMEM. Owned by the
 * caller (ah_usage_free). Registers its metric families (agenthub_usage_*).
 */
ah_usage_t *ah_usage_new(ah_store_t *store, const ah_usage_opts_t *opts);

/**
 * Sets the spend hook (one; NULL clears). Call before ah_usage_start and
 * before any record; not thread-safe.
 */
void ah_usage_set_spend_hook(ah_usage_t *u, ah_usage_spend_fn fn, void *ud);

/** Starts the flusher thread. 0, or -errno when the thread could not start. */
int ah_usage_start(ah_usage_t *u);

/**
 * Appends one row; never blocks on I/O (a shard mutex held for a copy).
 * Thread-safe. 0, or -ENOBUFS when max_pending rows already wait (the row is
 * dropped and counted), -ENOMEM, -EINVAL (rec NULL).
 */
int ah_usage_record(ah_usage_t *u, const ah_usage_rec_t *rec);

/**
 * Writes every row recorded before the call and waits until they are
 * committed (or failed). Blocking: not on an event loop. 0, or the store
 * error of a batch that failed (its rows stay queued for a retry).
 */
int ah_usage_flush(ah_usage_t *u);

/** This process's node id ("n_" + base62), stored in every row it writes. */
const char *ah_usage_node(const ah_usage_t *u);

/** Snapshot of the counters. Thread-safe. */
void ah_usage_stats(ah_usage_t *u, ah_usage_stats_t *out);

/**
 * Stops the flusher, writes every remaining row (blocking, ah_store_call),
 * waits for batches in flight, and frees u. The store must still be open.
 * NULL is a no-op.
 */
void ah_usage_free(ah_usage_t *u);

#endif
