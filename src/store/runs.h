/*
 * runs.h - agent runs and their event log in the store (tables runs and
 * run_events, migration 0004_runs.sql).
 *
 * All functions are store work functions' helpers: they take an ah_db_t and
 * run on a store thread (through ah_store_submit/ah_store_call). Strings in
 * records are owned by the record (ah_run_rec_free).
 */
#ifndef AH_STORE_RUNS_H
#define AH_STORE_RUNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

/* Run statuses (DESIGN.md section 4). */
#define AH_RUN_QUEUED          "queued"
#define AH_RUN_RUNNING         "running"
#define AH_RUN_REQUIRES_ACTION "requires_action"
#define AH_RUN_COMPLETED       "completed"
#define AH_RUN_FAILED          "failed"
#define AH_RUN_CANCELLED       "cancelled"
#define AH_RUN_EXPIRED         "expired"

typedef struct ah_run_rec {
    char id[48];
    char agent[80];
    int64_t agent_version;
    char status[24];
    char mode[12];    /* sync, stream, async */
    char *input;      /* JSON: a string or an array of messages */
    char *output;     /* final answer text, or NULL */
    char *error;      /* failure reason (user-facing), or NULL */
    char *error_code; /* e.g. max_turns_exceeded, or NULL */
    char *session_id; /* or NULL */
    char key_id[48];
    char tenant[64];
    char *metadata; /* JSON object or NULL */
    char *limits;   /* JSON object of per-request limit overrides, or NULL */
    char *state;    /* JSON: the conversation so far (persisted at step boundaries) */
    int turns;
    int64_t prompt_tokens, completion_tokens;
    double cost_usd;
    char *lease_owner; /* durable runs (later): NULL */
    int64_t lease_expires_at;
    int attempt;
    char *idempotency_key;
    char *webhook_url;
    int64_t created_at, started_at, finished_at, updated_at; /* ms; 0 = not yet */
    int64_t last_event_seq;
} ah_run_rec_t;

typedef struct ah_run_event {
    char run_id[48];
    int64_t seq; /* 1, 2, 3 ... within the run */
    char type[32];
    char *data; /* JSON object */
    int64_t ts;
} ah_run_event_t;

/** Inserts a new run. -EEXIST when the id (or idempotency key for the key_id) exists. */
int ah_store_run_insert(ah_db_t *db, const ah_run_rec_t *r);

/**
 * ah_store_run_insert with runs.request_hash (runs_idem.h: 64 hex digits)
 * in the same statement. -EINVAL for a hash of another length.
 */
int ah_store_run_insert_hashed(ah_db_t *db, const ah_run_rec_t *r, const char *request_hash);

/**
 * Updates the mutable columns of a run (status, output, error, error_code,
 * state, turns, tokens, cost, started_at, finished_at, updated_at,
 * last_event_seq). -ENOENT when absent.
 */
int ah_store_run_update(ah_db_t *db, const ah_run_rec_t *r);

/**
 * ah_store_run_update, only while the run is owner's (lease_owner = owner;
 * or, when unowned_ok, while it is parked: requires_action with no owner, so
 * a run ended in the store meanwhile, e.g. cancelled by another replica, is
 * not overwritten), and still at r->attempt (a claim since, even by this
 * owner, started another attempt): one statement, checked under the row's
 * lock. -ESTALE when absent, another's or claimed again, -EINVAL (empty
 * owner, bad record).
 */
int ah_store_run_update_owned(ah_db_t *db, const ah_run_rec_t *r, const char *owner,
                              bool unowned_ok);

/** Reads a run. -ENOENT when absent. Free with ah_run_rec_free. */
int ah_store_run_get(ah_db_t *db, const char *id, ah_run_rec_t *out);

/**
 * Runs "UPDATE runs SET <set_where> RETURNING <every column>" with args and
 * passes each updated run's record, as written, to cb (owned by the callee:
 * ah_run_rec_copy what you keep). One statement where an UPDATE and a read
 * per run would take two. Returns 0, cb's nonzero value, or -errno.
 */
int ah_store_run_update_returning(ah_db_t *db, const char *set_where, const ah_db_val_t *args,
                                  int nargs, int (*cb)(void *ud, const ah_run_rec_t *r), void *ud);

/** Finds a run by (key_id, idempotency_key). -ENOENT when absent. */
int ah_store_run_get_by_idempotency(ah_db_t *db, const char *key_id, const char *idem,
                                    ah_run_rec_t *out);

typedef struct ah_run_filter {
    const char *agent;      /* NULL = any */
    const char *status;     /* NULL = any */
    const char *session_id; /* NULL = any */
    const char *key_id;     /* NULL = any (admins); a key id restricts to that key's runs */
    int64_t before;         /* created_at < before (ms), 0 = no bound: pagination */
    int limit;              /* 1..1000, default 50 */
} ah_run_filter_t;

/** Lists runs newest first. cb gets each record (owned by the callee: copy what you keep). */
int ah_store_run_list(ah_db_t *db, const ah_run_filter_t *f,
                      int (*cb)(void *ud, const ah_run_rec_t *r), void *ud);

/** Appends events (seq must be new for the run). */
int ah_store_run_events_append(ah_db_t *db, const ah_run_event_t *ev, size_t n);

/**
 * The owner fence of ah_store_run_update_owned without the update, for
 * writes that add to a run without rewriting its row (a tool result stored at
 * once): 0 while run_id is owner's at attempt, else -ESTALE, so an attempt
 * that was stopped and superseded by a claim cannot add to the new attempt's
 * log. It locks the row for the transaction (PostgreSQL), so a claim waits
 * for it; with deferred writes on it costs no round trip. -EINVAL for an
 * empty owner.
 */
int ah_store_run_fence(ah_db_t *db, const char *run_id, const char *owner, int64_t attempt);

/**
 * Appends one event after the run's last stored one (seq = highest stored + 1)
 * and records that seq in the run row. For writers that are not executing the
 * run: only while nobody does (queued, waiting for an approval with no lease
 * owner, or being made final in the store), else the owner's next event
 * would collide. data: JSON text (NULL = "{}"). 0 or -errno.
 */
int ah_store_run_event_add(ah_db_t *db, const char *run_id, const char *type, const char *data,
                           int64_t ts);

/** Events of a run with seq > after, in order, at most limit (0 = 10000). */
int ah_store_run_events_list(ah_db_t *db, const char *run_id, int64_t after, int limit,
                             int (*cb)(void *ud, const ah_run_event_t *e), void *ud);

/** Frees the strings of a record (the struct itself is the caller's). */
void ah_run_rec_free(ah_run_rec_t *r);

/** Deep copy (for keeping a record passed to a callback). 0 or -ENOMEM. */
int ah_run_rec_copy(ah_run_rec_t *dst, const ah_run_rec_t *src);

/*
 * Additions for readers (API, SSE followers) that do not need the large
 * columns.
 */

/**
 * Reads a run without its text columns: input, output, error, error_code,
 * session_id, metadata, limits, state, lease_owner, idempotency_key and
 * webhook_url are left NULL (the fixed-size fields and numbers are filled).
 * Cheap enough to poll. -ENOENT when absent. ah_run_rec_free is a no-op on it.
 */
int ah_store_run_get_head(ah_db_t *db, const char *id, ah_run_rec_t *out);

/**
 * ah_store_run_list without the state and limits columns (NULL in the
 * records): for listings, where a long conversation's state would be read
 * for nothing.
 */
int ah_store_run_list_summary(ah_db_t *db, const ah_run_filter_t *f,
                              int (*cb)(void *ud, const ah_run_rec_t *r), void *ud);

/** True for the final statuses: completed, failed, cancelled, expired. */
bool ah_run_status_final(const char *status);

/** True for a known status (AH_RUN_*). */
bool ah_run_status_valid(const char *status);

#endif
