/*
 * queue.h - durable runs: every replica claims queued runs, and runs whose
 * owner stopped renewing its lease, from the store, and resumes them.
 *
 * Each worker loop runs a claim timer (runs.claim_interval_s): one store job
 * expires queued runs older than runs.queue_ttl_s, then claims up to the
 * free capacity (runs.max_concurrent per replica) with an optimistic
 * conditional UPDATE per run (portable: a run is ours only when our UPDATE
 * changed its row), and hands the claimed runs to ah_runtime_resume on that
 * loop. The same timer renews, every lease_s / 3, the leases of the runs
 * active on its loop. A replica killed with -9 stops renewing; after lease_s
 * another replica's claim takes its runs over.
 */
#ifndef AH_AGENTS_QUEUE_H
#define AH_AGENTS_QUEUE_H

#include "agents/runtime.h"
#include "store/db.h"

/** Starts the claim/heartbeat timer on loop (call on the loop's thread, after ah_runtime_attach).
 */
int ah_queue_attach(ah_runtime_t *rt, ah_loop_t *loop);

/**
 * Stops this loop's timer for good (shutdown, on the loop's thread): no more
 * claims, heartbeats or purges start here, and a claim still in flight is not
 * started (the replica's hand-back releases it). Then settle the loop.
 */
void ah_queue_stop(ah_runtime_t *rt);

/** Frees this loop's claimer (on the loop's thread, after ah_queue_stop and the settle). */
void ah_queue_detach(ah_runtime_t *rt);

/**
 * Ends a run that nobody executes, in the store (inside a write job): a
 * queued run (status "expired" or "cancelled") or one parked waiting for an
 * approval ("cancelled"). One transaction: the run row, its final event
 * (run.expired or run.cancelled, after its last stored one), its webhook
 * delivery, and its session freed. *agent (>= 80 bytes, may be NULL) gets
 * the run's agent for metrics. 0; -ESRCH the run is not in such a state (it
 * runs somewhere, finished, or does not exist); -errno.
 */
int ah_queue_end_run(ah_db_t *db, const char *run_id, const char *status, const char *code,
                     const char *msg, int64_t now_ms, char *agent);

/** Asks this thread's claimer to look now (after an async run was stored). Loop thread only. */
void ah_queue_kick(void);

#endif
