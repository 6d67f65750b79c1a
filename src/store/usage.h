/*
 * usage.h - usage rows and per-key limits (tables usage and key_limits,
 * migration 0002).
 *
 * These run inside store work functions (store.h): pass the ah_db_t the job
 * was given. Writers: the usage recorder (src/gateway/usage.c) inserts rows in
 * batches; the limits API upserts key_limits. Readers: the budget reconcile
 * (cost per key since a time), the policy cache (key_limits changed since a
 * time) and GET /v1/usage (aggregates).
 */
#ifndef AH_STORE_USAGE_H
#define AH_STORE_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

/*
 * One usage row. Text fields are NUL-terminated; "" is stored as NULL for
 * the optional ones (request_id, provider, upstream_model, agent, run_id).
 */
typedef struct ah_usage_row {
    int64_t ts; /* ms since the epoch */
    char request_id[64];
    char key_id[48];
    char tenant[64];
    char model[128];
    char provider[64];
    char upstream_model[128];
    int64_t prompt_tokens; /* including cached_tokens */
    int64_t completion_tokens;
    int64_t cached_tokens;
    double cost_usd;
    int64_t latency_ms; /* < 0 = unknown (NULL) */
    int64_t ttft_ms;    /* < 0 = unknown (NULL) */
    int status;
    int stream; /* 0/1 */
    int attempts;
    char agent[128];
    char run_id[48];
    char node[32]; /* writer process (ah_usage_node) */
} ah_usage_row_t;

/**
 * Inserts rows[0..n) (multi-row INSERTs of up to 32 rows, then single rows).
 * Run it in a WRITE job so the batch is one transaction. Returns 0, -EINVAL
 * (a text field not NUL-terminated), or -errno from the database (nothing is
 * kept then: the job's savepoint is rolled back).
 */
int ah_store_usage_insert(ah_db_t *db, const ah_usage_row_t *rows, size_t n);

/**
 * Sum of cost_usd of key_id's rows with ts >= since_ms, leaving out the rows
 * written by exclude_node (NULL = leave out none). 0 and *out, or -errno.
 */
int ah_store_usage_cost_since(ah_db_t *db, const char *key_id, int64_t since_ms,
                              const char *exclude_node, double *out);

/* ah_usage_filter_t.group bits */
#define AH_USAGE_GROUP_KEY   0x1u
#define AH_USAGE_GROUP_MODEL 0x2u
#define AH_USAGE_GROUP_DAY   0x4u
#define AH_USAGE_GROUP_ALL   0x7u

#define AH_USAGE_AGG_MAX 10000 /* most groups one aggregate query returns */

typedef struct ah_usage_filter {
    int64_t from_ms;    /* ts >= from_ms */
    int64_t to_ms;      /* ts < to_ms */
    const char *key_id; /* NULL = every key */
    const char *model;  /* NULL = every model */
    unsigned group;     /* AH_USAGE_GROUP_* (0 = one total) */
    int limit;          /* 1..AH_USAGE_AGG_MAX */
} ah_usage_filter_t;

/* One group. Strings point into the backend's row (valid during the callback only). */
typedef struct ah_usage_agg {
    const char *key_id; /* NULL when not grouped by key */
    const char *model;  /* NULL when not grouped by model */
    int64_t day;        /* days since the epoch (UTC), -1 when not grouped by day */
    int64_t requests;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens;
    double cost_usd;
} ah_usage_agg_t;

typedef int (*ah_usage_agg_fn)(void *ud, const ah_usage_agg_t *a);

/**
 * Aggregates the rows matching f, grouped by f->group, ordered by day, key,
 * model; calls cb per group (at most f->limit). Empty groups are not
 * reported. Returns 0, cb's nonzero value when it stopped, -EINVAL (bad
 * limit or group bits, from > to), or -errno.
 */
int ah_store_usage_aggregate(ah_db_t *db, const ah_usage_filter_t *f, ah_usage_agg_fn cb, void *ud);

/* ---- key_limits ---- */

/*
 * One key_limits row. -1 in rpm/tpm/concurrency and budget_usd < 0 mean
 * "not set" (NULL): the configured default, no budget.
 */
typedef struct ah_key_limits_rec {
    char key_id[48];
    int64_t rpm;
    int64_t tpm;
    int64_t concurrency;
    double budget_usd;
    char budget_period[16]; /* "daily", "weekly", "monthly", "total"; "" when unset */
    int64_t updated_at;     /* ms since the epoch */
} ah_key_limits_rec_t;

typedef int (*ah_key_limits_fn)(void *ud, const ah_key_limits_rec_t *r);

/** Fills r with "nothing set" for key_id (copied, truncated to fit). */
void ah_key_limits_init(ah_key_limits_rec_t *r, const char *key_id);

/**
 * Inserts or replaces key_id's row with r (every column). 0, -EINVAL (empty
 * key_id or a field not NUL-terminated), or -errno.
 */
int ah_store_key_limits_upsert(ah_db_t *db, const ah_key_limits_rec_t *r);

/** Reads key_id's row into *out. 0, -ENOENT, -E2BIG (a column too long), -errno. */
int ah_store_key_limits_get(ah_db_t *db, const char *key_id, ah_key_limits_rec_t *out);

/**
 * Calls cb for every row with updated_at > since_ms (use a negative value for
 * all), in (updated_at, key_id) order. Same refresh caveat as
 * ah_store_key_list: query with an overlap. 0, cb's nonzero value, -errno.
 */
int ah_store_key_limits_list(ah_db_t *db, int64_t since_ms, ah_key_limits_fn cb, void *ud);

#endif
