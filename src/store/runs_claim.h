/*
 * runs_claim.h - durable-run queue operations on the runs table: claiming
 * runs with a lease, and renewing leases by heartbeat (DESIGN.md section 6).
 *
 * Store work functions' helpers: call them from a WRITE job (ah_store_submit)
 * with the job's ah_db_t, so a claim commits with the batch before its runs
 * are started. The statements are backend-specific: SQLite claims with one
 * UPDATE ... RETURNING (its writer lock already serialises claimers);
 * PostgreSQL with a CTE that locks candidate rows FOR UPDATE SKIP LOCKED, so
 * replicas claiming at once each take different runs without waiting on one
 * another.
 */
#ifndef AH_STORE_RUNS_CLAIM_H
#define AH_STORE_RUNS_CLAIM_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "store/runs.h"

#define AH_RUN_CLAIM_MAX 1000 /* most runs one claim takes */

/**
 * Claims up to max runs (1..AH_RUN_CLAIM_MAX) for owner: runs with status
 * 'queued', and runs with status 'running' whose lease expired
 * (lease_expires_at < now_ms; a running run without a lease is never taken).
 * Oldest first (created_at, id). Each claimed run gets status 'running',
 * lease_owner = owner, lease_expires_at = now_ms + lease_ms, attempt + 1 and
 * updated_at = now_ms; then cb (may be NULL) gets its record as updated (owned
 * by the callee: ah_run_rec_copy what you keep), in no particular order.
 * Returns the number claimed (>= 0), cb's nonzero value when it stopped
 * early (the rest stay claimed: their leases expire unless renewed), -EINVAL
 * (empty owner, max or lease_ms out of range), or -errno.
 */
int ah_store_run_claim(ah_db_t *db, const char *owner, int64_t now_ms, int64_t lease_ms, int max,
                       int (*cb)(void *ud, const ah_run_rec_t *r), void *ud);

/**
 * Renews the leases of runs ids[0..n): sets lease_expires_at = lease_until on
 * each run that owner still holds (lease_owner = owner, status 'running' or
 * 'requires_action'). Runs another replica took over are left alone: compare
 * the count, or re-read, to find them. Returns the number of runs renewed
 * (>= 0), -EINVAL (empty owner, a NULL id), or -errno.
 */
int ah_store_run_heartbeat(ah_db_t *db, const char *owner, const char *const *ids, size_t n,
                           int64_t lease_until);

#endif
