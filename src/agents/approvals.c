/*
 * approvals.c - a decision on a parked run's tool call, from any replica; see
 * approvals.h. The first statement is a conditional UPDATE of the run row: on
 * PostgreSQL it also locks the row, so two decisions for one run (on two
 * replicas) are applied one after the other and the second sees the first's
 * event (the seq of the appended event is the highest stored + 1).
 */
#include "agents/approvals.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/audit.h"
#include "store/runs.h"

typedef struct run_head {
    bool found;
    char status[24], owner[48];
} run_head_t;

static int head_cb(void *ud, const ah_db_val_t *c, int ncols)
{
    run_head_t *h = ud;
    if (ncols != 2)
        return -EIO;
    h->found = true;
    ah_db_val_copy(&c[0], h->status, sizeof(h->status));
    ah_db_val_copy(&c[1], h->owner, sizeof(h->owner));
    return 0;
}

typedef struct waiting {
    json_t *pending; /* the calls of the last run.requires_action event */
    json_t *decided; /* tool_call_id -> true */
} waiting_t;

static int event_cb(void *ud, const ah_db_val_t *c, int ncols)
{
    waiting_t *w = ud;
    if (ncols != 2)
        return -EIO;
    char type[40] = "";
    ah_db_val_copy(&c[0], type, sizeof(type));
    json_t *d = c[1].type == AH_DB_TEXT ? json_loads(c[1].s, 0, NULL) : NULL;
    if (strcmp(type, "run.requires_action") == 0) {
        json_decref(w->pending);
        w->pending = json_incref(json_object_get(d, "tool_calls"));
    } else {
        const char *id = json_string_value(json_object_get(d, "tool_call_id"));
        if (id)
            json_object_set_new(w->decided, id, json_true());
    }
    json_decref(d);
    return 0;
}

int ah_approval_decide(ah_db_t *db, const ah_approval_t *a, int64_t now_ms, bool *resumable,
                       char *msg, size_t msg_len)
{
    *resumable = false;
    ah_db_val_t lock[3] = {ah_db_int(now_ms), ah_db_text(a->run_id), ah_db_int(now_ms)};
    int rc = ah_db_query(db,
                         "UPDATE runs SET updated_at = ? WHERE id = ? AND status = "
                         "'requires_action' AND lease_owner IS NULL AND lease_expires_at > ?",
                         lock, 3, NULL, NULL);
    if (rc)
        return rc;
    bool waiting = ah_db_changes(db) == 1;
    run_head_t h = {0};
    ah_db_val_t id = ah_db_text(a->run_id);
    rc = ah_db_query(db, "SELECT status, COALESCE(lease_owner, '') FROM runs WHERE id = ?", &id, 1,
                     head_cb, &h);
    if (rc)
        return rc;
    if (!h.found) {
        snprintf(msg, msg_len, "no such run");
        return -ENOENT;
    }
    if (!waiting) {
        if (strcmp(h.status, "requires_action") == 0 && !h.owner[0])
            snprintf(msg, msg_len,
                     "the run's pending approvals expired (spec.approval.timeout_s); it is "
                     "about to fail with approval_expired");
        else if (strcmp(h.status, "requires_action") == 0)
            snprintf(msg, msg_len, "the run is resuming after its last decision: retry shortly");
        else
            snprintf(msg, msg_len, "the run is not waiting for an approval (status %s)", h.status);
        return -ESRCH;
    }
    waiting_t w = {NULL, json_object()};
    rc = ah_db_query(db,
                     "SELECT type, data FROM run_events WHERE run_id = ? AND type IN "
                     "('run.requires_action', 'approval') ORDER BY seq",
                     &id, 1, event_cb, &w);
    const char *name = NULL;
    size_t i, undecided = 0;
    json_t *call;
    json_array_foreach(w.pending, i, call)
    {
        const char *cid = json_string_value(json_object_get(call, "tool_call_id"));
        if (cid && strcmp(cid, a->tool_call_id) == 0)
            name = json_string_value(json_object_get(call, "name"));
        else if (cid && !json_object_get(w.decided, cid))
            undecided++;
    }
    if (rc == 0 && !name) {
        snprintf(msg, msg_len, "the run has no pending tool call with this id");
        rc = -ENXIO;
    } else if (rc == 0 && json_object_get(w.decided, a->tool_call_id)) {
        snprintf(msg, msg_len, "this tool call was already decided");
        rc = -EALREADY;
    }
    if (rc == 0) {
        json_t *ev =
            json_pack("{s:s, s:s, s:b, s:s, s:s?}", "tool_call_id", a->tool_call_id, "name", name,
                      "approved", a->approve, "by", a->by ? a->by : "", "reason", a->reason);
        char *data = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        rc = data ? ah_store_run_event_add(db, a->run_id, "approval", data, now_ms) : -ENOMEM;
        free(data);
    }
    if (rc == 0) {
        json_t *dj = json_pack("{s:s, s:s}", "tool_call_id", a->tool_call_id, "decision",
                               a->approve ? "approve" : "reject");
        char *detail = dj ? json_dumps(dj, JSON_COMPACT) : NULL;
        json_decref(dj);
        rc = detail ? ah_store_audit_insert(db, a->by ? a->by : "", "run.approval", a->run_id,
                                            detail, NULL)
                    : -ENOMEM;
        free(detail);
    }
    if (rc == 0 && undecided == 0) {
        /* Nothing left to decide: any replica's next claim resumes the run. */
        rc = ah_db_query(db, "UPDATE runs SET lease_expires_at = 0 WHERE id = ?", &id, 1, NULL,
                         NULL);
        *resumable = rc == 0;
    }
    json_decref(w.pending);
    json_decref(w.decided);
    return rc;
}
