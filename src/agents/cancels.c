/*
 * cancels.c - stored cancel requests and the owners' poll; see cancels.h.
 */
#include "agents/cancels.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "agents/queue.h"
#include "store/store.h"

#define POLL_MAX 256 /* requests read per poll; the rest come with the next one */

/* The row's key, status and visibility, read before deciding. */
typedef struct seen_run {
    const char *key_id; /* NULL: any */
    bool found, visible;
    char status[24];
} seen_run_t;

static int seen_cb(void *ud, const ah_db_val_t *cols, int ncols)
{
    seen_run_t *s = ud;
    char key[48] = "";
    if (ncols < 2)
        return 0;
    ah_db_val_copy(&cols[0], key, sizeof(key));
    ah_db_val_copy(&cols[1], s->status, sizeof(s->status));
    s->found = true;
    s->visible = !s->key_id || strcmp(key, s->key_id) == 0;
    return 0;
}

/* The request itself: only a run that still executes (or waits, claimed, to start) takes it. */
static int store_request(ah_db_t *db, const char *run_id, int64_t now_ms)
{
    ah_db_val_t v[2] = {ah_db_int(now_ms), ah_db_text(run_id)};
    int rc = ah_db_query(db,
                         "UPDATE runs SET cancel_requested_at = ? WHERE id = ? AND status IN "
                         "('queued', 'running', 'requires_action') AND cancel_requested_at IS NULL",
                         v, 2, NULL, NULL);
    return rc;
}

int ah_cancel_store(ah_db_t *db, const char *run_id, const char *key_id, int64_t now_ms,
                    char *agent, ah_cancel_outcome_t *out)
{
    *out = AH_CANCEL_UNKNOWN;
    seen_run_t s = {.key_id = key_id};
    ah_db_val_t idv = ah_db_text(run_id);
    int rc = ah_db_query(db, "SELECT key_id, status FROM runs WHERE id = ?", &idv, 1, seen_cb, &s);
    if (rc || !s.found || !s.visible)
        return rc;
    rc = ah_queue_end_run(db, run_id, AH_RUN_CANCELLED, "cancelled", "cancelled by request", now_ms,
                          agent);
    if (rc == 0) {
        *out = AH_CANCEL_ENDED;
        return 0;
    }
    if (rc != -ESRCH)
        return rc;
    /* Not queued and free, not parked: it executes somewhere (or is being parked), or it is over.
     */
    if (strcmp(s.status, AH_RUN_RUNNING) != 0 && strcmp(s.status, AH_RUN_QUEUED) != 0 &&
        strcmp(s.status, AH_RUN_REQUIRES_ACTION) != 0) {
        *out = AH_CANCEL_TOO_LATE;
        return 0;
    }
    rc = store_request(db, run_id, now_ms);
    if (rc == 0)
        *out = AH_CANCEL_REQUESTED;
    return rc;
}

int ah_cancel_parked_if_requested(ah_db_t *db, const char *run_id, int64_t now_ms, char *agent,
                                  bool *ended)
{
    *ended = false;
    int64_t asked = 0;
    ah_db_val_t idv = ah_db_text(run_id);
    int rc = ah_db_query_int(db,
                             "SELECT COUNT(*) FROM runs WHERE id = ? AND cancel_requested_at IS "
                             "NOT NULL",
                             &idv, 1, &asked);
    if (rc || asked == 0)
        return rc;
    rc = ah_queue_end_run(db, run_id, AH_RUN_CANCELLED, "cancelled", "cancelled by request", now_ms,
                          agent);
    if (rc == 0)
        *ended = true;
    return rc == -ESRCH ? 0 : rc;
}

/* ---- remember: the request of a run cancelled in memory here ---- */

typedef struct remember_job {
    char id[48];
    int64_t now;
} remember_job_t;

static int remember_work(ah_db_t *db, void *arg)
{
    remember_job_t *j = arg;
    return store_request(db, j->id, j->now);
}

static void remember_done(int rc, void *arg)
{
    remember_job_t *j = arg;
    if (rc)
        ah_log(AH_LOG_WARN, "runs", "cannot store the cancel request (the run is cancelled here)",
               AH_LF_STR("run_id", j->id), AH_LF_INT("rc", rc), AH_LF_END);
    free(j);
}

void ah_cancel_remember(ah_store_t *store, const char *run_id)
{
    remember_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    snprintf(j->id, sizeof(j->id), "%s", run_id);
    j->now = ah_wall_ms();
    if (ah_store_submit(store, AH_STORE_WRITE, remember_work, remember_done, NULL, j) != 0) {
        ah_log(AH_LOG_WARN, "runs", "cannot store the cancel request: the store is busy",
               AH_LF_STR("run_id", run_id), AH_LF_END);
        free(j);
    }
}

/* ---- the owners' poll ---- */

static _Atomic int64_t g_next_poll_ms; /* replica-wide: one poll per interval, whichever worker */
static atomic_bool g_polling;

typedef struct poll_job {
    ah_runtime_t *rt;
    char owner[48];
    char ids[POLL_MAX][48];
    size_t n;
} poll_job_t;

static int collect_cb(void *ud, const ah_db_val_t *cols, int ncols)
{
    poll_job_t *j = ud;
    if (ncols >= 1 && j->n < POLL_MAX && ah_db_val_copy(&cols[0], j->ids[j->n], 48) == 0)
        j->n++;
    return 0;
}

static int poll_work(ah_db_t *db, void *arg)
{
    poll_job_t *j = arg;
    ah_db_val_t v[2] = {ah_db_text(j->owner), ah_db_int(POLL_MAX)};
    /* The predicate is runs_cancel_requested's (0007): the read walks that small index. */
    return ah_db_query(db,
                       "SELECT id FROM runs WHERE lease_owner = ? AND cancel_requested_at IS NOT "
                       "NULL AND status IN ('queued', 'running') LIMIT ?",
                       v, 2, collect_cb, j);
}

static void poll_done(int rc, void *arg)
{
    poll_job_t *j = arg;
    if (rc)
        ah_log(AH_LOG_WARN, "runs", "cannot read stored cancel requests", AH_LF_INT("rc", rc),
               AH_LF_END);
    for (size_t i = 0; rc == 0 && i < j->n; i++) {
        /* -ENOENT: not in memory (claimed and not started yet, or stopped on a store error):
         * the replica that starts it next finds the request again. */
        if (ah_runtime_cancel(j->rt, j->ids[i], NULL) == 0)
            ah_log(AH_LOG_INFO, "runs", "cancelling a run on a stored request",
                   AH_LF_STR("run_id", j->ids[i]), AH_LF_END);
    }
    atomic_store(&g_polling, false);
    free(j);
}

void ah_cancels_poll(ah_runtime_t *rt, ah_loop_t *loop)
{
    int64_t now = ah_wall_ms();
    int64_t next = atomic_load(&g_next_poll_ms);
    if (now < next || ah_runtime_running(rt) == 0)
        return;
    int64_t every = (int64_t)(ah_runtime_config(rt)->runs.claim_interval_s * 1000);
    if (!atomic_compare_exchange_strong(&g_next_poll_ms, &next, now + every))
        return; /* another worker polls this time */
    bool idle = false;
    if (!atomic_compare_exchange_strong(&g_polling, &idle, true))
        return; /* the last poll has not come back: the store is slow, do not pile up */
    poll_job_t *j = calloc(1, sizeof(*j));
    if (j) {
        j->rt = rt;
        snprintf(j->owner, sizeof(j->owner), "%s", ah_runtime_node(rt));
    }
    if (!j ||
        ah_store_submit(ah_runtime_store(rt), AH_STORE_READ, poll_work, poll_done, loop, j) != 0) {
        free(j);
        atomic_store(&g_polling, false);
    }
}
