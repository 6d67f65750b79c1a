/*
 * webhooks.h - webhook delivery: the run's final state POSTed, signed, to
 * the run's (or its agent's) webhook_url, retried from the outbox table
 * (store/webhooks.h) until delivered or dead. docs/webhooks.md for users.
 *
 * Producing: the runtime adds the outbox row inside the same WRITE job that
 * stores the run's final state (ah_webhook_enqueue_run), so a finished run
 * and its delivery commit together, then calls ah_webhooks_kick once that
 * job is durable so the delivery goes out at once instead of at the next
 * poll.
 *
 * Delivering: one thread per ah_webhooks_t. It claims due rows (a lease, so
 * replicas never send the same row at once), sends them concurrently through
 * one libcurl multi handle (up to max_in_flight at a time, each bounded by
 * timeout_s, so a slow or dead target delays only its own deliveries), and
 * records each outcome as soon as it is known: 2xx = delivered; any other
 * status, a timeout or a connection error = failed, retried after
 * 1 s, 2 s, 4 s ... (capped at 1 h) until max_attempts, then dead (visible
 * and retryable through GET/POST /v1/webhooks/deliveries).
 *
 * Why a thread with blocking curl_multi_poll rather than http/client.h on a
 * worker loop: deliveries are background work with store calls between
 * transfers (claim, outcome), and ah_store_call may block, which an event
 * loop must never do; on its own thread the loop is a plain poll/perform
 * cycle, and curl_multi_wakeup gives kick and stop for free.
 *
 * Nothing is lost: a row leaves "pending" only when delivered or dead. Rows
 * in flight at shutdown are given back (due now) for the next start or
 * another replica; a crash leaves them leased, due again when the lease
 * (timeout_s + 60 s) ends. Delivery is at least once: receivers drop
 * duplicates by the X-Agenthub-Delivery id (also the payload's "id").
 *
 * Signing: X-Agenthub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" keyed with webhooks.secret>, computed per attempt. The secret
 * is copied, never logged and wiped at free. Without a secret deliveries go
 * out unsigned (a warning is logged at start). Target URLs are logged only
 * as scheme://host (a URL path often carries a token).
 *
 * Metrics: agenthub_webhooks_delivered_total, agenthub_webhooks_failed_total
 * (failed attempts), agenthub_webhooks_dead_total, agenthub_webhooks_pending
 * (gauge: pending rows in the outbox, refreshed every few seconds).
 */
#ifndef AH_AGENTS_WEBHOOKS_H
#define AH_AGENTS_WEBHOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/db.h"
#include "store/runs.h"
#include "store/store.h"

#define AH_WEBHOOKS_MAX_ATTEMPTS_DEFAULT 8
#define AH_WEBHOOKS_TIMEOUT_S_DEFAULT    10.0
#define AH_WEBHOOKS_TOLERANCE_S_DEFAULT  300 /* what receivers should accept; docs/webhooks.md */

/* "t=" + 20 digits + ",v1=" + 64 hex + NUL, rounded up. */
#define AH_WEBHOOK_SIG_MAX 128

typedef struct ah_webhooks ah_webhooks_t;

typedef struct ah_webhooks_opts {
    const char
        *secret;       /* signing key (webhooks.secret / secret_file); copied; NULL/"" = unsigned */
    int max_attempts;  /* attempts before dead; 0 = 8 */
    double timeout_s;  /* per attempt, connect to last byte; 0 = 10 */
    int max_in_flight; /* concurrent deliveries; 0 = 16 */
    double poll_interval_s;  /* look for due rows this often without a kick; 0 = 1 */
    int64_t backoff_base_ms; /* delay after the first failure; 0 = 1000 */
    int64_t backoff_max_ms;  /* delay cap; 0 = 3600000 (1 h) */
    double lease_s;          /* claim lease; 0 = timeout_s + 60 (must exceed timeout_s) */
    double retention_s;      /* delivered rows are deleted after this; 0 = 7 days; < 0 = kept */
    double stop_grace_s; /* at free, in-flight deliveries may finish this long; 0 = 2, < 0 = 0 */
} ah_webhooks_opts_t;

typedef struct ah_webhooks_stats {
    uint64_t delivered; /* deliveries that got a 2xx */
    uint64_t failed;    /* failed attempts (including the last one of a dead row) */
    uint64_t dead;      /* deliveries dead-lettered */
    uint64_t released;  /* claimed rows given back unsent at stop */
    uint64_t in_flight; /* transfers running now */
} ah_webhooks_stats_t;

/**
 * Creates a stopped deliverer for store (which must outlive it: free this
 * before ah_store_close). o may be NULL (defaults). Registers the metrics.
 * libcurl must be initialised first (ah_http_client_global_init, in main).
 * Returns NULL with errno EINVAL (store NULL, a negative option, lease_s not
 * above timeout_s) or ENOMEM/EIO (curl). Owned by the caller (ah_webhooks_free).
 */
ah_webhooks_t *ah_webhooks_new(ah_store_t *store, const ah_webhooks_opts_t *o);

/** Starts the delivery thread. 0, -EALREADY (started before), -errno from pthread_create. */
int ah_webhooks_start(ah_webhooks_t *w);

/**
 * Something was enqueued or retried: look for due rows now rather than at the
 * next poll. Never blocks (an atomic flag and curl_multi_wakeup); any thread,
 * including an event loop. NULL is a no-op.
 */
void ah_webhooks_kick(ah_webhooks_t *w);

/**
 * Stops the thread (in-flight deliveries get stop_grace_s to finish; the rest
 * are aborted and given back to the outbox, due now), joins it and frees w.
 * Pending rows stay in the outbox for the next start. Blocks up to about
 * stop_grace_s plus one store write. No other thread may use w (kick) once
 * this is called; call it before ah_store_close. NULL is a no-op.
 */
void ah_webhooks_free(ah_webhooks_t *w);

/** Counters of this deliverer. Thread-safe. */
void ah_webhooks_stats(ah_webhooks_t *w, ah_webhooks_stats_t *out);

/* ---- producing (store work helpers) ---- */

/**
 * The event of a final run status: "run.completed" (completed), "run.failed"
 * (failed, expired), "run.cancelled" (cancelled); NULL for a status that is
 * not final.
 */
const char *ah_webhook_event_for_status(const char *status);

/**
 * Appends the payload of a delivery to out:
 * {"id":DELIVERY_ID,"object":"event","type":EVENT,"created_at":MS,"data":RUN}
 * where RUN is the run object of the API (GET /v1/runs/{id}). 0, -EINVAL,
 * -ENOMEM, -E2BIG.
 */
int ah_webhook_run_payload(const char *delivery_id, const char *event, const ah_run_rec_t *r,
                           int64_t now_ms, ah_buf_t *out);

/**
 * For the WRITE job that stores a run's final state: when url is set and
 * r->status is final, adds the outbox row (payload as above) due now, unless
 * the run already has a delivery to url (so storing a final run again never
 * sends it twice). Returns 0 (also when there is nothing to send), or -errno
 * from building or inserting the row; the caller's job should then fail so
 * the run's final state and its delivery commit together or not at all. A url
 * that ah_webhook_url_ok refuses is still enqueued: its first attempt
 * dead-letters it with the reason, visible through the API.
 */
int ah_webhook_enqueue_run(ah_db_t *db, const ah_run_rec_t *r, const char *url, int64_t now_ms);

/**
 * ah_webhook_enqueue_run for a run that a job just made final by id (bulk
 * paths: queue expiry, cancelling a queued run): reads the run and enqueues
 * to its stored webhook_url. Call it in the same job, after the UPDATE.
 * 0 (also when the run has no URL or is not final), -ENOENT, or -errno.
 */
int ah_webhook_enqueue_run_id(ah_db_t *db, const char *run_id, int64_t now_ms);

/** True for an http:// or https:// URL with a host, at most AH_WEBHOOK_URL_MAX bytes, no spaces. */
bool ah_webhook_url_ok(const char *url);

/* ---- signatures (Stripe-style) ---- */

/**
 * Writes the X-Agenthub-Signature value "t=<t>,v1=<64 lowercase hex>" for body
 * (n bytes) signed at unix time t with secret into out. 0, -EINVAL (secret
 * NULL or empty, t < 0), -ENOMEM, -EIO.
 */
int ah_webhook_sign(const char *secret, int64_t t, const char *body, size_t n,
                    char out[AH_WEBHOOK_SIG_MAX]);

/**
 * Checks an X-Agenthub-Signature header value against body: one "t=" and one
 * or more "v1=" entries (comma-separated, other keys ignored); valid when some
 * v1 equals the HMAC (compared in constant time) and |now - t| <=
 * tolerance_s (unix seconds; tolerance_s < 0 skips the time check). Returns 0 when valid, -EINVAL
 * (malformed header, no secret), -EBADMSG (no v1 matches: wrong secret or altered body), -ETIME
 * (signature right but t outside the tolerance: a replay or a skewed clock), -ENOMEM.
 */
int ah_webhook_verify(const char *secret, const char *header, const char *body, size_t n,
                      int64_t now, int64_t tolerance_s);

#endif
