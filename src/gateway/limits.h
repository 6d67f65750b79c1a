/*
 * limits.h - admission control for gateway requests: rate limits per API key
 * (requests/min, tokens/min, concurrent requests) and per model (requests/min,
 * tokens/min), and spend budgets per key. docs/internals/limits.md.
 *
 * Rate limits are token buckets (capacity = the per-minute limit, refilled
 * continuously at limit/60 per second), decided:
 *  - in process by default: per-key state in a striped hash table (one mutex
 *    per stripe), per-model state with a mutex each; one admission is two
 *    short critical sections, well under a microsecond;
 *  - in Redis when redis.url is set, so that every replica shares one budget:
 *    one atomic Lua script per admission (EVALSHA) sent with hiredis async on
 *    the calling worker's loop (one connection per attached loop). When Redis
 *    does not answer within redis_timeout_ms, or is down, the decision falls
 *    back to the local limiter ("fail open"), a warning is logged once per
 *    outage and agenthub_ratelimit_redis_fallback_total counts it.
 *
 * Tokens per minute: admission only checks that the key's and the model's
 * buckets are not exhausted (level > 0); the real count (prompt + completion)
 * is charged by ah_limits_finish. A caller may reserve an estimate at
 * admission (est_tokens, e.g. the prompt's size / 4) so that a burst of
 * concurrent requests is seen at once; finish charges the difference. A
 * bucket may go into debt down to -limit: a request larger than what is left
 * delays the next ones rather than being refused after the fact.
 *
 * Budgets: budget_usd per key over a calendar UTC period (daily, weekly from
 * Monday, monthly) or in total; at or over it requests get 429
 * budget_exceeded with x-should-retry: false. The check is in memory. The
 * spend is (cost of other processes' usage rows in the period, summed from
 * the store at start and every reconcile_s) + (cost recorded by this process
 * in the period, fed by the usage recorder's spend hook as each request
 * finishes, streamed ones included). Rows carry their writer's node id, so
 * the two parts never overlap, whatever the flush timing.
 *
 * Per-key policy: rows of key_limits (store/usage.h) override the limits.*
 * defaults of the config; a refresher thread reads rows changed since the
 * last read every refresh_s (with an overlap, like the key cache) and
 * applies them; ah_limits_apply makes a change the API just wrote visible at
 * once. Keys without a row (the bootstrap admin key included) get the
 * defaults and no budget. A limit of 0 means unlimited.
 *
 * Threads: admit/finish/add_headers/key_status are thread-safe in local mode.
 * In Redis mode admit must run on the thread of the loop it is given (an
 * attached worker loop); finish may run anywhere (it posts to the ticket's
 * loop). Lifetime: new -> [attach loops] -> start -> admit/finish ...
 * -> (stop the worker loops) -> [detach] -> free -> ah_loop_free.
 */
#ifndef AH_GW_LIMITS_H
#define AH_GW_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/loop.h"
#include "gateway/usage.h"
#include "store/store.h"
#include "store/usage.h"

#define AH_LIMITS_REFRESH_S        1.0
#define AH_LIMITS_RECONCILE_S      5.0
#define AH_LIMITS_REDIS_TIMEOUT_MS 250
#define AH_LIMITS_OVERLAP_MS       2000 /* re-read key_limits changed this long before the last seen */
#define AH_LIMITS_FULL_RESYNC_S    60     /* full re-read of key_limits */
#define AH_LIMITS_CONC_LEASE_MS    300000 /* Redis concurrency slot lifetime if never released */
#define AH_LIMITS_REDIS_RETRY_MS   1000   /* wait before reconnecting after a Redis failure */
#define AH_LIMITS_MAX_LIMIT        1000000000LL /* largest rpm/tpm/concurrency accepted */
#define AH_LIMITS_MAX_BUDGET_USD   1e9

/* Error codes of a refusal (ah_limits_result_t.code). */
#define AH_LIMITS_CODE_RATE        "rate_limit_exceeded"
#define AH_LIMITS_CODE_BUDGET      "budget_exceeded"
#define AH_LIMITS_CODE_CONCURRENCY "concurrency_limit"

typedef struct ah_limits ah_limits_t;

typedef enum {
    AH_BUDGET_NONE = 0,
    AH_BUDGET_DAILY,
    AH_BUDGET_WEEKLY, /* ISO weeks: Monday 00:00 UTC */
    AH_BUDGET_MONTHLY,
    AH_BUDGET_TOTAL,
} ah_budget_period_t;

typedef struct ah_limits_opts {
    double refresh_s;      /* key_limits poll; 0 = AH_LIMITS_REFRESH_S */
    double reconcile_s;    /* budget reconcile; 0 = AH_LIMITS_RECONCILE_S */
    int redis_timeout_ms;  /* 0 = AH_LIMITS_REDIS_TIMEOUT_MS */
    const char *redis_url; /* overrides cfg->redis.url when not NULL ("" = no Redis) */
    /* Injectable clocks (tests). mono_ns drives the buckets, wall_ms the budget periods. */
    uint64_t (*mono_ns)(void *ud);
    int64_t (*wall_ms)(void *ud);
    void *clock_ud;
} ah_limits_opts_t;

/*
 * Held by the caller for the request's life, from an admission (status 0)
 * to ah_limits_finish. Opaque: the fields are the limiter's.
 */
typedef struct ah_limits_ticket {
    void *ks;           /* per-key state, or NULL */
    int model;          /* model index, or -1 */
    unsigned flags;     /* admitted, local concurrency slot, Redis */
    int64_t est_tokens; /* reserved at admission */
    ah_loop_t *loop;
    char member[48]; /* Redis concurrency slot */
} ah_limits_ticket_t;

/*
 * The decision and what the client is told. The x-ratelimit-* values
 * describe the most constrained configured limit (key or model) for
 * requests and for tokens; has_* is false when no such limit applies.
 */
typedef struct ah_limits_result {
    int status;        /* 0 admitted, 429 refused */
    const char *code;  /* NULL, or AH_LIMITS_CODE_* */
    char message[256]; /* user-facing reason when refused */
    double retry_after_s;
    bool retry; /* false for budgets: x-should-retry: false */
    bool has_requests;
    int64_t limit_requests, remaining_requests;
    double reset_requests_s; /* until the bucket is full again */
    bool has_tokens;
    int64_t limit_tokens, remaining_tokens;
    double reset_tokens_s;
    bool redis;     /* decided by Redis */
    bool fail_open; /* Redis was meant to decide but could not: decided locally */
} ah_limits_result_t;

/* Called once with the decision of an admission that returned -EINPROGRESS. */
typedef void (*ah_limits_cb)(void *ud, const ah_limits_result_t *res);

typedef struct ah_limits_key_status {
    int64_t rpm, tpm, concurrency; /* effective limits (0 = unlimited) */
    int64_t in_flight;             /* local concurrency slots held */
    double budget_usd;             /* < 0 = none */
    ah_budget_period_t period;
    int64_t period_start_ms, period_end_ms; /* 0, 0 for total */
    double spent_usd;                       /* in the current period */
} ah_limits_key_status_t;

/**
 * Creates a limiter. cfg (limits.*, models[].rpm/tpm, redis.url) is kept by
 * pointer and must outlive it; store (key_limits, usage sums) may be NULL
 * (no policy rows, no reconcile: tests); usage may be NULL (no local spend),
 * else the limiter installs itself as its spend hook (call before
 * ah_usage_start). opts may be NULL. Fails with NULL on ENOMEM or an invalid
 * redis url (logged with the reason). Owned by the caller (ah_limits_free).
 */
ah_limits_t *ah_limits_new(const ah_config_t *cfg, ah_store_t *store, ah_usage_t *usage,
                           const ah_limits_opts_t *opts);

/**
 * Loads every key_limits row and the budgets' spend (blocking, on the calling
 * thread), then starts the refresher thread (it retries on failure). Returns
 * the first load's result (0 or -errno) so the caller can refuse to serve, or
 * -errno when the thread could not start.
 */
int ah_limits_start(ah_limits_t *lim);

/**
 * Gives loop a Redis connection (no-op without Redis). Call on the loop's
 * own thread (server.on_worker_start) or before the loop runs. The loop must
 * stay alive until ah_limits_detach or ah_limits_free. 0, -EEXIST, -ENOMEM.
 */
int ah_limits_attach(ah_limits_t *lim, ah_loop_t *loop);

/**
 * Closes loop's Redis connection. Call after the loop stopped (or on its
 * thread) and before ah_loop_free. Pending admissions on it are not answered.
 * 0 or -ENOENT.
 */
int ah_limits_detach(ah_limits_t *lim, ah_loop_t *loop);

/**
 * Admits one gateway request of key_id (NULL/"" = no per-key limits or
 * budget) for model (public name or alias; NULL or unknown = no per-model
 * limits), reserving est_tokens (>= 0) of the tokens-per-minute budgets.
 * Returns 0 with *res filled (res->status 0: admitted, keep t and call
 * ah_limits_finish; 429: refused, t needs nothing), or, in Redis mode,
 * -EINPROGRESS: cb(ud, res) will be called exactly once on loop's thread
 * (within redis_timeout_ms) and t is filled by then; t must stay valid until
 * that call. Never blocks. -EINVAL for a NULL t/res.
 */
int ah_limits_admit(ah_limits_t *lim, ah_loop_t *loop, const char *key_id, const char *model,
                    int64_t est_tokens, ah_limits_ticket_t *t, ah_limits_result_t *res,
                    ah_limits_cb cb, void *ud);

/**
 * Ends an admitted request: releases its concurrency slot and charges
 * tokens (prompt + completion actually used; the difference to est_tokens)
 * to the key's and the model's tokens-per-minute buckets. Spend is NOT
 * charged here: record the request with ah_usage_record (the usage recorder
 * feeds the budget). Safe on a refused or already finished ticket (no-op).
 * Thread-safe; never blocks.
 */
void ah_limits_finish(ah_limits_t *lim, ah_limits_ticket_t *t, int64_t tokens);

/**
 * Adds the response headers for res through add(ctx, name, value):
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens} when known; on a
 * 429 also Retry-After (whole seconds, at least 1), retry-after-ms and
 * x-should-retry (false for budgets, true otherwise).
 */
void ah_limits_add_headers(const ah_limits_result_t *res,
                           int (*add)(void *ctx, const char *name, const char *value), void *ctx);

/**
 * Formats a duration like OpenAI's reset headers: "20ms", "1s", "1.5s",
 * "6m0s", "1h2m3s" (rounded to the millisecond; "0s" for <= 0).
 */
void ah_limits_format_duration(double seconds, char *out, size_t n);

/**
 * Makes a key_limits row the caller just wrote (PUT /v1/keys/{id}/limits)
 * take effect in this process now, and reconciles the key's spend soon.
 * Other replicas see it within refresh_s. 0, -EINVAL (bad period), -ENOMEM.
 */
int ah_limits_apply(ah_limits_t *lim, const ah_key_limits_rec_t *rec);

/** Current limits, concurrency and spend of key_id, for the API. Thread-safe. */
void ah_limits_key_status(ah_limits_t *lim, const char *key_id, ah_limits_key_status_t *out);

/** Reads key_limits changes now (full read). Blocking: not on a loop. 0 or -errno. */
int ah_limits_refresh_now(ah_limits_t *lim);

/** Re-reads the budgets' spend from the store now. Blocking: not on a loop. 0 or -errno. */
int ah_limits_reconcile_now(ah_limits_t *lim);

/** Attached loops whose Redis connection is up now (tests, health). Thread-safe. */
int ah_limits_redis_connected(ah_limits_t *lim);

/** True when Redis is configured. */
bool ah_limits_redis_enabled(const ah_limits_t *lim);

/** "daily"... -> period; NULL/"" -> AH_BUDGET_NONE. 0 or -EINVAL. */
int ah_budget_period_parse(const char *s, ah_budget_period_t *out);

/** The period's name ("daily"...), "" for AH_BUDGET_NONE. */
const char *ah_budget_period_name(ah_budget_period_t p);

/**
 * Start and end (exclusive) in ms of the calendar UTC period containing
 * now_ms. For AH_BUDGET_TOTAL and AH_BUDGET_NONE: 0 and INT64_MAX.
 */
void ah_budget_period_bounds(ah_budget_period_t p, int64_t now_ms, int64_t *start, int64_t *end);

/** Formats ms since the epoch as "2024-06-01T00:00:00Z", or "2024-06-01" when date_only. */
void ah_limits_utc_format(int64_t ms, bool date_only, char *out, size_t n);

/**
 * Parses a UTC time for API parameters: "2024-06-01" (*date_only = true),
 * "2024-06-01T12:30:00Z" (seconds and a ".fff" fraction optional), or a
 * decimal count of ms since the epoch. 0, or -EINVAL.
 */
int ah_limits_utc_parse(const char *s, int64_t *ms, bool *date_only);

/**
 * Stops the refresher, closes Redis connections (no callback runs after
 * this) and frees lim. Every loop it was attached to must have stopped and
 * not run again. NULL is a no-op.
 */
void ah_limits_free(ah_limits_t *lim);

#endif
