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

/** Starts the claim/heartbeat timer on loop (call on the loop's thread, after ah_runtime_attach).
 */
int ah_queue_attach(ah_runtime_t *rt, ah_loop_t *loop);

/** Stops this loop's timer (on the loop's thread, before ah_runtime_detach). */
void ah_queue_detach(ah_runtime_t *rt);

/** Asks this thread's claimer to look now (after an async run was stored). Loop thread only. */
void ah_queue_kick(void);

#endif
