/*
 * cancels.h - POST /v1/runs/{id}/cancel on any replica, and never lost.
 *
 * A run executing on this replica is cancelled in memory at once
 * (ah_runtime_cancel); the request is stored as well. Anywhere else the
 * request is a store job (ah_cancel_store): a queued run, or one parked for
 * an approval, ends `cancelled` right there; a run that executes (on another
 * replica, or here between two of its writes) gets runs.cancel_requested_at.
 * Each replica polls for requests on the runs it holds the lease of (one
 * indexed read per runs.claim_interval_s, only while it runs something) and
 * cancels them in memory. A stored request therefore also reaches a run
 * whose owner crashed (the replica that takes it over polls too) or whose
 * final `cancelled` write failed (the run resumes, and is cancelled again).
 */
#ifndef AH_AGENTS_CANCELS_H
#define AH_AGENTS_CANCELS_H

#include <stdbool.h>
#include <stdint.h>

#include "agents/runtime.h"
#include "store/db.h"

typedef enum ah_cancel_outcome {
    AH_CANCEL_UNKNOWN = 0, /* no such run, or the caller may not see it */
    AH_CANCEL_ENDED,       /* it was queued or parked: it is `cancelled` now */
    AH_CANCEL_REQUESTED,   /* it executes: its owner ends it shortly */
    AH_CANCEL_TOO_LATE,    /* it already ended (completed, failed, cancelled, expired) */
} ah_cancel_outcome_t;

/**
 * Cancels run_id in the store (inside a write job). key_id: only a run
 * started with this key is visible; NULL for any (admins). agent (>= 80
 * bytes) gets the run's agent when it ended here (for metrics). Sets *out;
 * returns 0 or -errno from the store.
 */
int ah_cancel_store(ah_db_t *db, const char *run_id, const char *key_id, int64_t now_ms,
                    char *agent, ah_cancel_outcome_t *out);

/**
 * For the owner that just parked run_id (requires_action, no owner; inside
 * the same write job): a cancel requested while it was being parked ends it
 * now (ah_queue_end_run: event, webhook, session) instead of when a decision
 * resumes it. *ended tells; agent (>= 80 bytes) gets its agent then. 0 or
 * -errno.
 */
int ah_cancel_parked_if_requested(ah_db_t *db, const char *run_id, int64_t now_ms, char *agent,
                                  bool *ended);

/**
 * Stores the request for a run this replica is cancelling in memory, so that
 * it still ends `cancelled` if its final write fails. Not awaited: a failure
 * is logged. Any thread.
 */
void ah_cancel_remember(ah_store_t *store, const char *run_id);

/**
 * The owners' poll: at most once per runs.claim_interval_s per replica, and
 * only while runs execute here, reads the stored requests for runs this
 * replica holds and cancels them in memory. Called from every worker's queue
 * tick (loop thread).
 */
void ah_cancels_poll(ah_runtime_t *rt, ah_loop_t *loop);

#endif
