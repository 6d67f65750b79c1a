/*
 * approvals.h - human decisions on the tool calls of runs waiting in
 * requires_action (POST /v1/runs/{id}/approvals).
 *
 * A waiting run is parked in the store (runtime.c): status requires_action,
 * no lease owner, lease_expires_at = when its pending approvals expire. A
 * decision is therefore a store job any replica can run: it checks that the
 * call is pending and undecided, appends the `approval` event and, once no
 * call of the turn is left undecided, makes the run claimable at once
 * (lease_expires_at = 0). A claimer (queue.c) then resumes the run, which
 * applies the stored decisions. Past the expiry no decision is taken; the
 * claim at that time fails the run with approval_expired.
 */
#ifndef AH_AGENTS_APPROVALS_H
#define AH_AGENTS_APPROVALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

typedef struct ah_approval {
    const char *run_id;
    const char *tool_call_id;
    bool approve;
    const char *reason; /* or NULL */
    const char *by;     /* the deciding key's id (event and audit log) */
} ah_approval_t;

/**
 * Records a decision (inside a store write job; the audit row goes in the
 * same transaction). *resumable: no call of the run is left undecided (kick a
 * claimer). msg gets a sentence for the client. Returns 0; -ENOENT no such
 * run; -ESRCH the run is not waiting for an
 * approval (running, finished, or its approvals expired); -ENXIO no pending
 * call with this id; -EALREADY this call was decided; other -errno from the
 * store.
 */
int ah_approval_decide(ah_db_t *db, const ah_approval_t *a, int64_t now_ms, bool *resumable,
                       char *msg, size_t msg_len);

#endif
