/*
 * webhooks.h - the webhook outbox in the store (table webhooks_outbox,
 * migration 0006_webhooks.sql): one row per delivery of a run's final state
 * to one URL, with its retry schedule.
 *
 * A row's life:
 *
 *   enqueue -> pending --claim--> (leased) --delivered--> delivered
 *                 ^                  |
 *                 +----failed--------+  (attempts+1, next_attempt_at = now + backoff)
 *                                    +--failed, attempts reached max--> dead
 *   dead --retry (API)--> pending, attempts 0
 *
 * A claim does not change the status: it moves next_attempt_at to the end of
 * a lease, so the row is invisible to other claimers (other replicas) while
 * it is being sent, and due again by itself if the sender dies. Failures
 * are fenced by the attempts count seen at claim time, so a sender whose
 * lease ran out cannot overwrite the outcome of the sender that took over; a
 * success is always recorded (the row is pending no more). Delivery is
 * therefore at least once; receivers drop duplicates by id.
 *
 * For delivered and dead rows next_attempt_at holds the time they got there
 * (the due index then also serves retention).
 *
 * All functions are store work helpers: they take an ah_db_t and run on a
 * store thread (ah_store_submit / ah_store_call); the writers belong in WRITE
 * jobs. Times are ms since the epoch and always passed in (no clock here), so
 * tests control time. Strings in records are owned by the record
 * (ah_webhook_rec_free).
 */
#ifndef AH_STORE_WEBHOOKS_H
#define AH_STORE_WEBHOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/db.h"

/* Delivery statuses. */
#define AH_WEBHOOK_PENDING   "pending"
#define AH_WEBHOOK_DELIVERED "delivered"
#define AH_WEBHOOK_DEAD      "dead"

/* Events. */
#define AH_WEBHOOK_RUN_COMPLETED "run.completed"
#define AH_WEBHOOK_RUN_FAILED    "run.failed"
#define AH_WEBHOOK_RUN_CANCELLED "run.cancelled"

#define AH_WEBHOOK_URL_MAX     2048      /* bytes of a webhook URL */
#define AH_WEBHOOK_PAYLOAD_MAX (8 << 20) /* bytes of one payload */
#define AH_WEBHOOK_ERROR_MAX   512       /* last_error is cut to this many bytes */

typedef struct ah_webhook_rec {
    char id[48];
    char run_id[48];
    char event[32];
    char status[16];
    char *url;
    char *payload; /* NULL in listings (ah_store_webhook_list) */
    char *last_error;
    int attempts;
    int last_status; /* 0 = none */
    int64_t next_attempt_at;
    int64_t created_at, updated_at;
    int64_t delivered_at; /* 0 = not delivered */
} ah_webhook_rec_t;

/* How failed attempts are rescheduled. */
typedef struct ah_webhook_policy {
    int max_attempts;        /* the attempt with this number dead-letters the row; >= 1 */
    int64_t backoff_base_ms; /* delay after the first failure; doubles after each one */
    int64_t backoff_max_ms;  /* the delay never exceeds this */
} ah_webhook_policy_t;

/**
 * The delay after the attempts-th failed attempt (attempts >= 1):
 * base * 2^(attempts-1), capped at max (1 s, 2 s, 4 s ... 1 h with base 1 s
 * and max 1 h). Never overflows; attempts < 1 counts as 1.
 */
int64_t ah_webhook_backoff_ms(int attempts, int64_t base_ms, int64_t max_ms);

/** True for "pending", "delivered" and "dead". */
bool ah_webhook_status_valid(const char *status);

/**
 * Adds a pending delivery due now: a new id (whd_...), the run it is about,
 * the URL, the event and the JSON body to send. For the job that stores the
 * run's final state, so both commit or neither does. Returns 0, -EINVAL
 * (a NULL or empty argument, a URL over AH_WEBHOOK_URL_MAX, a payload over
 * AH_WEBHOOK_PAYLOAD_MAX), or -errno from the database.
 */
int ah_store_webhook_enqueue(ah_db_t *db, const char *run_id, const char *url, const char *event,
                             const char *payload_json, int64_t now);

/**
 * ah_store_webhook_enqueue with an id made by the caller (who may then put
 * that id in the payload). -EEXIST when the id exists; otherwise as above.
 */
int ah_store_webhook_enqueue_id(ah_db_t *db, const char *id, const char *run_id, const char *url,
                                const char *event, const char *payload_json, int64_t now);

/**
 * Whether a delivery of run_id to url exists (any status): 1, 0, or -errno.
 * Keeps a run that is stored final twice (a resumed run, a retried job) from
 * being delivered twice.
 */
int ah_store_webhook_exists(ah_db_t *db, const char *run_id, const char *url);

/**
 * Claims up to limit (1..1000) pending deliveries due at now (oldest due
 * first) by moving their next_attempt_at to now + lease_ms, and calls cb with
 * each claimed row (payload included; the record is the callee's: copy what
 * you keep). A row another connection claimed first is skipped, so two
 * replicas never claim the same row within one lease. Returns the number
 * claimed, or -errno (-EINVAL for a bad limit or lease). If cb returns
 * nonzero the claim stops and that value is returned (rows claimed so far
 * stay claimed: let the job fail to undo them).
 */
int ah_store_webhook_claim(ah_db_t *db, int64_t now, int64_t lease_ms, int limit,
                           int (*cb)(void *ud, const ah_webhook_rec_t *r), void *ud);

/**
 * Marks a claimed delivery delivered (attempts = claimed_attempts + 1,
 * last_status = http_status, last_error cleared, delivered_at = now).
 * claimed_attempts is the attempts value of the claimed record. Recorded
 * whenever the row is still pending, even if another sender claimed it since.
 * 0, -ENOENT when the row is gone or no longer pending, or -errno.
 */
int ah_store_webhook_delivered(ah_db_t *db, const char *id, int claimed_attempts, int http_status,
                               int64_t now);

/**
 * Records a failed attempt of a claimed delivery: attempts+1, last_status
 * (0 = no HTTP answer) and last_error (cut to AH_WEBHOOK_ERROR_MAX bytes),
 * then either reschedules it at now + ah_webhook_backoff_ms(attempts) or,
 * when attempts reaches p->max_attempts or permanent is true (a failure no
 * retry can fix, such as a malformed URL), makes it dead. Returns 0 when
 * rescheduled, 1 when dead, -ENOENT when the row is no longer the claimer's
 * (gone, not pending, or its attempts moved on: another sender's outcome
 * won), -EINVAL for a bad policy, or -errno.
 */
int ah_store_webhook_failed(ah_db_t *db, const char *id, int claimed_attempts, int http_status,
                            const char *error, bool permanent, const ah_webhook_policy_t *p,
                            int64_t now);

/**
 * Gives back a claimed delivery that was not attempted (or was cut off by a
 * shutdown) without counting an attempt: due again at now. 0, -ENOENT as
 * above, or -errno.
 */
int ah_store_webhook_release(ah_db_t *db, const char *id, int claimed_attempts, int64_t now);

/**
 * Makes a dead delivery pending again, due now, with attempts reset to 0
 * (last_error and last_status stay, for history). 0; -ENOENT when no such
 * delivery; -EALREADY when it exists but is not dead; -errno.
 */
int ah_store_webhook_retry(ah_db_t *db, const char *id, int64_t now);

/** Reads one delivery with its payload. -ENOENT when absent. Free with ah_webhook_rec_free. */
int ah_store_webhook_get(ah_db_t *db, const char *id, ah_webhook_rec_t *out);

typedef struct ah_webhook_filter {
    const char *status; /* NULL = any */
    const char *run_id; /* NULL = any */
    int64_t before;     /* created_at < before (ms), 0 = no bound: pagination */
    int limit;          /* 1..1000; 0 = 50 */
} ah_webhook_filter_t;

/**
 * Lists deliveries newest first, without their payloads (payload NULL). cb
 * gets each record (the callee's: copy what you keep); a nonzero return stops
 * the listing and is returned. 0, -EINVAL (unknown status, bad limit), -errno.
 */
int ah_store_webhook_list(ah_db_t *db, const ah_webhook_filter_t *f,
                          int (*cb)(void *ud, const ah_webhook_rec_t *r), void *ud);

/** Counts deliveries with this status into *out. 0, -EINVAL, -errno. */
int ah_store_webhook_count(ah_db_t *db, const char *status, int64_t *out);

/**
 * Deletes up to limit delivered rows delivered before `before` (retention);
 * pending and dead rows are never deleted. Returns the number deleted or -errno.
 */
int ah_store_webhook_prune(ah_db_t *db, int64_t before, int limit);

/** Frees the strings of a record (the struct itself is the caller's). NULL is a no-op. */
void ah_webhook_rec_free(ah_webhook_rec_t *r);

#endif
