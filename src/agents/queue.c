/*
 * queue.c - claims, lease heartbeats and queue expiry for durable runs; see
 * queue.h. The SQL is portable: a claim is an optimistic conditional UPDATE
 * per candidate row, so two replicas (SQLite writers, or PostgreSQL
 * sessions) can never both own a run: only the UPDATE that changed the row
 * wins.
 */
#include "agents/queue.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "store/db.h"
#include "store/sessions.h"
#include "agents/cancels.h"
#include "agents/webhooks.h"

#define CLAIM_BATCH    64   /* runs per claim job, at most (and at most the free slots) */
#define DEPTH_EVERY_MS 1000 /* the queue-depth gauge's COUNT(*), per worker, at most */
#define HEARTBEAT_MAX  4096
#define EXPIRE_BATCH   64 /* queued runs expired per claim: each is a few statements */

typedef struct queue_worker {
    ah_runtime_t *rt;
    ah_loop_t *loop;
    struct event *timer;
    bool claiming, beating, purging;
    bool stopped; /* ah_queue_stop: the timer is off for good */
    int64_t next_beat_ms, next_purge_ms, next_depth_ms;
} queue_worker_t;

static _Thread_local queue_worker_t *tl_queue;

static ah_metric_family_t *m_wait;
static _Atomic int64_t g_depth;

static double depth_value(void *ud)
{
    (void)ud;
    return (double)atomic_load(&g_depth);
}

/* ---- store jobs ---- */

typedef struct claim_job {
    char owner[48];
    int64_t now, lease_ms, ttl_ms;
    int max;
    ah_run_rec_t *recs;
    size_t n, cap;
    int64_t depth;
    bool count_depth; /* refresh the queue-depth gauge */
    int64_t expired;
    char (*expired_agents)[80]; /* for agenthub_runs_total{status="expired"} */
    queue_worker_t *qw;
} claim_job_t;

typedef struct id_list {
    char (*ids)[48];
    size_t n, cap;
} id_list_t;

static int collect_id(void *ud, const ah_db_val_t *cols, int ncols)
{
    id_list_t *l = ud;
    if (ncols < 1 || l->n >= l->cap)
        return 0;
    ah_db_val_copy(&cols[0], l->ids[l->n], 48);
    l->n++;
    return 0;
}

int ah_queue_end_run(ah_db_t *db, const char *run_id, const char *status, const char *code,
                     const char *msg, int64_t now_ms, char *agent)
{
    bool expired = strcmp(status, AH_RUN_EXPIRED) == 0;
    ah_db_val_t v[6] = {ah_db_text(status), ah_db_int(now_ms), ah_db_int(now_ms),
                        ah_db_text(code),   ah_db_text(msg),   ah_db_text(run_id)};
    int rc = ah_db_query(db,
                         "UPDATE runs SET status = ?, finished_at = ?, updated_at = ?, error_code "
                         "= ?, error = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ? "
                         "AND (status = 'queued' OR (status = 'requires_action' AND lease_owner "
                         "IS NULL))",
                         v, 6, NULL, NULL);
    if (rc)
        return rc;
    if (ah_db_changes(db) != 1)
        return -ESRCH;
    json_t *ev = expired ? json_pack("{s:s, s:s}", "code", code, "message", msg)
                         : json_pack("{s:s}", "reason", msg);
    char *data = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!data)
        return -ENOMEM;
    rc =
        ah_store_run_event_add(db, run_id, expired ? "run.expired" : "run.cancelled", data, now_ms);
    free(data);
    ah_run_rec_t r;
    if (rc == 0)
        rc = ah_store_run_get(db, run_id, &r);
    if (rc)
        return rc;
    if (agent)
        snprintf(agent, 80, "%s", r.agent);
    rc = ah_webhook_enqueue_run(db, &r, r.webhook_url, now_ms);
    if (rc == 0 && r.session_id && *r.session_id) {
        /* A run parked for an approval holds its session; a queued one does not (-ESTALE).
         * The agent's session.ttl_s is not at hand here: keep the TTL it was acquired with. */
        int s = ah_store_session_release(db, r.session_id, run_id, NULL, 0, AH_SESSION_TTL_KEEP,
                                         now_ms);
        if (s < 0 && s != -ESTALE && s != -ENOENT)
            rc = s;
    }
    ah_run_rec_free(&r);
    return rc;
}

typedef struct cand {
    char id[48];
    int64_t created;
} cand_t;

typedef struct cand_list {
    cand_t *c;
    size_t n, cap;
} cand_list_t;

static int collect_cand(void *ud, const ah_db_val_t *cols, int ncols)
{
    cand_list_t *l = ud;
    if (ncols >= 2 && l->n < l->cap &&
        ah_db_val_copy(&cols[0], l->c[l->n].id, sizeof(l->c[0].id)) == 0) {
        l->c[l->n].created = ah_db_val_int(&cols[1]);
        l->n++;
    }
    return 0;
}

static int cand_older(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    return (x->created > y->created) - (x->created < y->created);
}

/*
 * The oldest claimable runs (at most out->cap ids, oldest first): queued ones
 * (a claimed queued run stays 'queued' with our lease until it really starts,
 * so a claim given back is never seen as running) and ones whose owner's lease
 * ran out. One query per status, each walking runs_status_created in order
 * with its own LIMIT, merged by created_at. One query with an OR (or an IN)
 * of the statuses reads every row of them and sorts: with a backlog each
 * claim cost milliseconds (SQLite), and on PostgreSQL its bitmap scan never
 * marks the index entries of dead row versions, so it visits every version
 * that passed through 'running' since the last vacuum.
 */
static int claim_candidates(ah_db_t *db, int64_t now, id_list_t *out)
{
    cand_t c[3 * CLAIM_BATCH];
    cand_list_t l = {c, 0, 0};
    ah_db_val_t qa[2] = {ah_db_int(now), ah_db_int((int64_t)out->cap)};
    l.cap = out->cap;
    int rc = ah_db_query(db,
                         "SELECT id, created_at FROM runs WHERE status = 'queued' AND "
                         "(lease_expires_at IS NULL OR lease_expires_at < ?) AND "
                         "" AH_SESSION_RUN_STARTABLE_SQL " ORDER BY created_at LIMIT ?",
                         qa, 2, collect_cand, &l);
    static const char *const held[] = {AH_RUN_RUNNING, AH_RUN_REQUIRES_ACTION};
    for (size_t i = 0; rc == 0 && i < 2; i++) {
        ah_db_val_t xa[3] = {ah_db_text(held[i]), ah_db_int(now), ah_db_int((int64_t)out->cap)};
        l.cap = l.n + out->cap;
        rc = ah_db_query(db,
                         "SELECT id, created_at FROM runs WHERE status = ? AND lease_expires_at < "
                         "? ORDER BY created_at LIMIT ?",
                         xa, 3, collect_cand, &l);
    }
    if (rc)
        return rc;
    qsort(c, l.n, sizeof(c[0]), cand_older);
    for (size_t i = 0; i < l.n && out->n < out->cap; i++)
        memcpy(out->ids[out->n++], c[i].id, sizeof(out->ids[0]));
    return 0;
}

#define Q8  "?, ?, ?, ?, ?, ?, ?, ?"
#define Q64 Q8 ", " Q8 ", " Q8 ", " Q8 ", " Q8 ", " Q8 ", " Q8 ", " Q8

static int claimed_rec(void *ud, const ah_run_rec_t *r)
{
    claim_job_t *j = ud;
    if (j->n < j->cap && ah_run_rec_copy(&j->recs[j->n], r) == 0)
        j->n++;
    return 0;
}

static int by_created(const void *a, const void *b)
{
    const ah_run_rec_t *x = a, *y = b;
    return (x->created_at > y->created_at) - (x->created_at < y->created_at);
}

static int claim_work(ah_db_t *db, void *arg)
{
    claim_job_t *j = arg;
    char expire_ids[EXPIRE_BATCH][48];
    id_list_t ex = {expire_ids, 0, EXPIRE_BATCH};
    ah_db_val_t cut[2] = {ah_db_int(j->now - j->ttl_ms), ah_db_int(EXPIRE_BATCH)};
    int rc = ah_db_query(db,
                         "SELECT id FROM runs WHERE status = 'queued' AND created_at < ? ORDER BY "
                         "created_at LIMIT ?",
                         cut, 2, collect_id, &ex);
    if (rc)
        return rc;
    j->expired_agents = ex.n ? calloc(ex.n, sizeof(*j->expired_agents)) : NULL;
    for (size_t i = 0; i < ex.n && j->expired_agents; i++) {
        rc = ah_queue_end_run(db, expire_ids[i], AH_RUN_EXPIRED, "expired",
                              "the run waited in the queue longer than runs.queue_ttl_s", j->now,
                              j->expired_agents[j->expired]);
        if (rc == -ESRCH)
            continue;
        if (rc)
            return rc;
        j->expired++;
    }
    ah_store_sessions_purge_expired(db, j->now, 1000);
    if (j->count_depth)
        ah_db_query_int(db, "SELECT COUNT(*) FROM runs WHERE status = 'queued'", NULL, 0,
                        &j->depth);
    if (j->max <= 0)
        return 0;
    char ids[CLAIM_BATCH][48];
    id_list_t l = {ids, 0, (size_t)(j->max < CLAIM_BATCH ? j->max : CLAIM_BATCH)};
    rc = claim_candidates(db, j->now, &l);
    if (rc)
        return rc;
    j->recs = calloc(l.n ? l.n : 1, sizeof(ah_run_rec_t));
    if (!j->recs)
        return -ENOMEM;
    j->cap = l.n;
    if (l.n == 0)
        return 0;
    /* One statement for the batch; the id list is padded with its last id (one SQL text).
     * The condition is checked again: a run another replica took meanwhile is left out. */
    ah_db_val_t up[5 + CLAIM_BATCH];
    up[0] = ah_db_text(j->owner);
    up[1] = ah_db_int(j->now + j->lease_ms);
    up[2] = ah_db_int(j->now);
    for (size_t i = 0; i < CLAIM_BATCH; i++)
        up[3 + i] = ah_db_text(ids[i < l.n ? i : l.n - 1]);
    up[3 + CLAIM_BATCH] = ah_db_int(j->now);
    up[4 + CLAIM_BATCH] = ah_db_int(j->now);
    rc = ah_store_run_update_returning(
        db,
        "lease_owner = ?, lease_expires_at = ?, attempt = attempt + 1, updated_at = ? WHERE id "
        "IN (" Q64 ") AND ((status = 'queued' AND (lease_expires_at IS NULL OR lease_expires_at "
        "< ?)) OR (status IN ('running', 'requires_action') AND lease_expires_at < ?))",
        up, 5 + CLAIM_BATCH, claimed_rec, j);
    if (rc)
        return rc;
    qsort(j->recs, j->n, sizeof(*j->recs), by_created); /* oldest first, as picked */
    return 0;
}

static void arm(queue_worker_t *qw, double secs);

typedef struct release_job {
    char id[48], owner[48];
} release_job_t;

static int release_work(ah_db_t *db, void *arg)
{
    release_job_t *j = arg;
    ah_db_val_t v[2] = {ah_db_text(j->id), ah_db_text(j->owner)};
    return ah_db_query(db,
                       "UPDATE runs SET lease_expires_at = 0, attempt = attempt - 1 WHERE id = ? "
                       "AND lease_owner = ?",
                       v, 2, NULL, NULL);
}

static void release_done(int rc, void *arg)
{
    (void)rc;
    free(arg);
}

/* Gives a claim back at once, so the run is claimable again (here or elsewhere). */
static void release_claim(queue_worker_t *qw, const char *id)
{
    release_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->owner, sizeof(j->owner), "%s", ah_runtime_node(qw->rt));
    if (ah_store_submit(ah_runtime_store(qw->rt), AH_STORE_WRITE, release_work, release_done, NULL,
                        j) != 0)
        free(j);
}

static void claim_done(int rc, void *arg)
{
    claim_job_t *j = arg;
    queue_worker_t *qw = j->qw;
    qw->claiming = false;
    if (rc)
        ah_log(AH_LOG_WARN, "queue", "claim failed", AH_LF_INT("rc", rc), AH_LF_END);
    if (j->count_depth && rc == 0)
        atomic_store(&g_depth, j->depth);
    if (rc == 0 && j->expired > 0) {
        ah_log(AH_LOG_WARN, "queue", "queued runs expired", AH_LF_INT("count", j->expired),
               AH_LF_END);
        for (int64_t i = 0; i < j->expired; i++)
            ah_runtime_ended_in_store(qw->rt, j->expired_agents[i], AH_RUN_EXPIRED);
    }
    free(j->expired_agents);
    for (size_t i = 0; i < j->n; i++) {
        ah_run_rec_t *r = &j->recs[i];
        if (r->attempt <= 1 && r->created_at)
            ah_hist_observe(ah_metrics_series0(m_wait), (double)(j->now - r->created_at) / 1e3);
        else if (strcmp(r->status, AH_RUN_REQUIRES_ACTION) == 0)
            ah_log(AH_LOG_INFO, "queue", "resuming a run that waited for approvals",
                   AH_LF_STR("run_id", r->id), AH_LF_INT("attempt", r->attempt), AH_LF_END);
        else
            ah_log(AH_LOG_WARN, "queue", "taking over a run whose owner stopped",
                   AH_LF_STR("run_id", r->id), AH_LF_INT("attempt", r->attempt), AH_LF_END);
        /* Shutting down: the claim is handed back with the others (ah_runtime_hand_back). */
        int prc =
            qw->stopped || ah_runtime_draining(qw->rt) ? 0 : ah_runtime_resume(qw->rt, qw->loop, r);
        if (prc == -EBUSY)
            release_claim(qw, r->id); /* the agent is at its concurrency limit: back to the queue */
        else if (prc)
            ah_log(AH_LOG_WARN, "queue", "claimed run not started here", AH_LF_STR("run_id", r->id),
                   AH_LF_INT("rc", prc), AH_LF_END);
        ah_run_rec_free(r);
    }
    /* A full batch: there may be more waiting. */
    if (j->n == CLAIM_BATCH)
        arm(qw, 0);
    free(j->recs);
    free(j);
}

typedef struct beat_job {
    char owner[48];
    int64_t until;
    char (*ids)[48];
    size_t n;
    queue_worker_t *qw;
} beat_job_t;

static int beat_work(ah_db_t *db, void *arg)
{
    beat_job_t *j = arg;
    for (size_t i = 0; i < j->n; i++) {
        ah_db_val_t v[3] = {ah_db_int(j->until), ah_db_text(j->ids[i]), ah_db_text(j->owner)};
        int rc = ah_db_query(db,
                             "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_owner "
                             "= ? AND status IN ('running', 'requires_action')",
                             v, 3, NULL, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

static void beat_done(int rc, void *arg)
{
    beat_job_t *j = arg;
    j->qw->beating = false;
    if (rc)
        ah_log(AH_LOG_WARN, "queue", "lease heartbeat failed", AH_LF_INT("rc", rc), AH_LF_END);
    free(j->ids);
    free(j);
}

/* ---- retention: small batches, so a big backlog never holds the writer long ---- */

#define PURGE_RUNS        200
#define PURGE_USAGE       1000
#define PURGE_INTERVAL_MS 60000

typedef struct purge_job {
    int64_t runs_before, usage_before; /* 0 = keep */
    int64_t runs_deleted, usage_deleted;
    queue_worker_t *qw;
} purge_job_t;

static int oldest_usage_cb(void *ud, const ah_db_val_t *cols, int ncols)
{
    if (ncols > 0)
        *(int64_t *)ud = ah_db_val_int(&cols[0]);
    return 0;
}

static int purge_work(ah_db_t *db, void *arg)
{
    purge_job_t *j = arg;
    int rc = 0;
    if (j->runs_before > 0) {
        char ids[PURGE_RUNS][48];
        id_list_t l = {ids, 0, PURGE_RUNS};
        ah_db_val_t b[2] = {ah_db_int(j->runs_before), ah_db_int(PURGE_RUNS)};
        rc = ah_db_query(db,
                         "SELECT id FROM runs WHERE finished_at < ? AND status IN ('completed', "
                         "'failed', 'cancelled', 'expired') ORDER BY finished_at LIMIT ?",
                         b, 2, collect_id, &l);
        for (size_t i = 0; rc == 0 && i < l.n; i++) {
            ah_db_val_t id = ah_db_text(ids[i]);
            rc = ah_db_query(db, "DELETE FROM run_events WHERE run_id = ?", &id, 1, NULL, NULL);
            if (rc == 0)
                rc = ah_db_query(db, "DELETE FROM runs WHERE id = ?", &id, 1, NULL, NULL);
            j->runs_deleted += rc == 0;
        }
    }
    if (rc == 0 && j->usage_before > 0) {
        /* usage has no key: bound the batch by the timestamp of its PURGE_USAGE-th oldest row. */
        int64_t bound = j->usage_before, nth = 0;
        ah_db_val_t b[2] = {ah_db_int(j->usage_before), ah_db_int(PURGE_USAGE - 1)};
        rc = ah_db_query(db, "SELECT ts FROM usage WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?", b, 2,
                         oldest_usage_cb, &nth);
        if (rc == 0 && nth > 0 && nth < bound)
            bound = nth;
        ah_db_val_t d = ah_db_int(bound);
        if (rc == 0)
            rc = ah_db_query(db, "DELETE FROM usage WHERE ts < ?", &d, 1, NULL, NULL);
        if (rc == 0)
            j->usage_deleted = ah_db_changes(db);
    }
    return rc;
}

static void purge_done(int rc, void *arg)
{
    purge_job_t *j = arg;
    j->qw->purging = false;
    if (rc)
        ah_log(AH_LOG_WARN, "retention", "purge failed", AH_LF_INT("rc", rc), AH_LF_END);
    else if (j->runs_deleted || j->usage_deleted)
        ah_log(AH_LOG_INFO, "retention", "old data deleted", AH_LF_INT("runs", j->runs_deleted),
               AH_LF_INT("usage_rows", j->usage_deleted), AH_LF_END);
    /* A full batch means more is waiting: the next tick goes on. */
    if (j->runs_deleted == PURGE_RUNS || j->usage_deleted >= PURGE_USAGE)
        j->qw->next_purge_ms = 0;
    free(j);
}

static void maybe_purge(queue_worker_t *qw, const ah_config_t *cfg, int64_t now)
{
    if (qw->purging || now < qw->next_purge_ms)
        return;
    qw->next_purge_ms = now + PURGE_INTERVAL_MS;
    if (cfg->retention.runs_days <= 0 && cfg->retention.usage_days <= 0)
        return;
    purge_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->qw = qw;
    if (cfg->retention.runs_days > 0)
        j->runs_before = now - (int64_t)(cfg->retention.runs_days * 86400000.0);
    if (cfg->retention.usage_days > 0)
        j->usage_before = now - (int64_t)(cfg->retention.usage_days * 86400000.0);
    if (ah_store_submit(ah_runtime_store(qw->rt), AH_STORE_WRITE, purge_work, purge_done, qw->loop,
                        j) != 0)
        free(j);
    else
        qw->purging = true;
}

/* ---- the timer ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    queue_worker_t *qw = arg;
    (void)fd;
    (void)what;
    const ah_config_t *cfg = ah_runtime_config(qw->rt);
    ah_store_t *store = ah_runtime_store(qw->rt);
    int64_t now = ah_wall_ms();
    int64_t lease_ms = (int64_t)(cfg->runs.lease_s * 1000);
    if (!qw->beating && now >= qw->next_beat_ms) {
        qw->next_beat_ms = now + lease_ms / 3;
        beat_job_t *b = calloc(1, sizeof(*b));
        if (b) {
            b->ids = calloc(HEARTBEAT_MAX, 48);
            b->n = b->ids ? ah_runtime_local_runs(qw->rt, b->ids, HEARTBEAT_MAX) : 0;
            b->qw = qw;
            b->until = now + lease_ms;
            snprintf(b->owner, sizeof(b->owner), "%s", ah_runtime_node(qw->rt));
            if (b->n == 0 ||
                ah_store_submit(store, AH_STORE_WRITE, beat_work, beat_done, qw->loop, b) != 0) {
                free(b->ids);
                free(b);
            } else {
                qw->beating = true;
            }
        }
    }
    maybe_purge(qw, cfg, now);
    ah_cancels_poll(qw->rt, qw->loop);
    if (!qw->claiming && !ah_runtime_draining(qw->rt)) {
        claim_job_t *j = calloc(1, sizeof(*j));
        if (j) {
            snprintf(j->owner, sizeof(j->owner), "%s", ah_runtime_node(qw->rt));
            j->now = now;
            j->lease_ms = lease_ms;
            j->ttl_ms = (int64_t)(cfg->runs.queue_ttl_s * 1000);
            j->max = ah_runtime_free_slots(qw->rt);
            j->count_depth = now >= qw->next_depth_ms;
            if (j->count_depth)
                qw->next_depth_ms = now + DEPTH_EVERY_MS;
            j->qw = qw;
            if (ah_store_submit(store, AH_STORE_WRITE, claim_work, claim_done, qw->loop, j) != 0)
                free(j);
            else
                qw->claiming = true;
        }
    }
    arm(qw, cfg->runs.claim_interval_s);
}

static void arm(queue_worker_t *qw, double secs)
{
    if (qw->stopped)
        return;
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    evtimer_add(qw->timer, &tv);
}

/* Every worker attaches, at once: register the metrics exactly once. */
static void register_metrics(void)
{
    m_wait = ah_metrics_histogram("agenthub_queue_wait_seconds",
                                  "Time queued runs waited before a replica started them.", 0, NULL,
                                  ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    ah_metrics_gauge_fn("agenthub_queue_depth", "Runs waiting in the queue (store-wide).",
                        depth_value, NULL);
}

int ah_queue_attach(ah_runtime_t *rt, ah_loop_t *loop)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_metrics);
    queue_worker_t *qw = calloc(1, sizeof(*qw));
    if (!qw)
        return -ENOMEM;
    qw->rt = rt;
    qw->loop = loop;
    /* Spread the replicas' and workers' purges over the minute. */
    qw->next_purge_ms = ah_wall_ms() + 5000 + (int64_t)((uintptr_t)qw % 30000);
    qw->timer = evtimer_new(ah_loop_base(loop), on_tick, qw);
    if (!qw->timer) {
        free(qw);
        return -ENOMEM;
    }
    tl_queue = qw;
    arm(qw, ah_runtime_config(rt)->runs.claim_interval_s);
    return 0;
}

void ah_queue_stop(ah_runtime_t *rt)
{
    queue_worker_t *qw = tl_queue;
    if (!qw || qw->rt != rt)
        return;
    qw->stopped = true;
    evtimer_del(qw->timer);
}

void ah_queue_detach(ah_runtime_t *rt)
{
    queue_worker_t *qw = tl_queue;
    if (!qw || qw->rt != rt)
        return;
    event_free(qw->timer);
    free(qw);
    tl_queue = NULL;
}

void ah_queue_kick(void)
{
    queue_worker_t *qw = tl_queue;
    if (qw && !qw->claiming && !ah_runtime_draining(qw->rt))
        arm(qw, 0);
}
