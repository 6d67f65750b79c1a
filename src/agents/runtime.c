/*
 * runtime.c - the run state machine; see runtime.h.
 *
 *   start -> persist(insert), awaited (a plain sync run: inserted by its first write)
 *     -> prepare tools -> turn:
 *     turn: limits -> persist(state, not awaited) -> model call (gateway, streamed)
 *       -> assistant message -> no tool calls: complete
 *                            -> persist(tool calls), awaited -> tools (parallel)
 *                               -> results -> [handoff] -> turn
 *   any step: timeout, cancel, error -> fail/cancel -> persist(final) -> observer.done
 *
 * Writes go to the store writer in order; only those with a next step
 * (barriers) are waited for, the others are pipelined (see persist).
 *
 * Lifetime: a run is held (busy) by every entry point running on it (store
 * writes in flight, gateway and tool callbacks, timers); it is freed when it
 * finished and the last holder returns.
 */
#include "agents/runtime.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agents/cancels.h"
#include "agents/queue.h"
#include "agents/tools.h"
#include "agents/webhooks.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "gateway/limits.h"
#include "gateway/usage.h"
#include "store/runs_idem.h"
#include "store/sessions.h"
#include "obs/metrics.h"

/* A run whose store writes fail (busy, unreachable) stops and is resumed later, up to this
 * many claims (attempts); after that the failure is stored (persist_done). */
#define STORE_RETRY_ATTEMPTS 10

typedef struct rt_worker {
    ah_runtime_t *rt;
    ah_loop_t *loop;
    ah_tools_worker_t *tools;
    uint64_t rng;
    ah_run_t **runs; /* runs executing on this loop (for lease heartbeats) */
    size_t n_runs, cap_runs;
    bool finishing; /* ah_runtime_finish_local runs the loop until n_runs is 0 */
} rt_worker_t;

static _Thread_local rt_worker_t *tl_worker;

typedef struct active_run {
    struct active_run *next, **pprev; /* pprev: the pointer to this entry (O(1) unlink) */
    char id[48];
    char key_id[48]; /* who started it: non-admin callers may only cancel their own */
    ah_loop_t *loop;
    ah_run_t *run;
} active_run_t;

typedef struct agent_count {
    struct agent_count *next;
    char name[80];
    int n;
} agent_count_t;

struct ah_runtime {
    ah_runtime_deps_t d;
    char node[48];                   /* this replica's lease owner id */
    pthread_mutex_t mu;              /* guards active, counts and n_running */
    atomic_bool draining;            /* shutting down: claim nothing more */
    _Atomic uint64_t drain_deadline; /* ah_mono_ns() when the runs left are handed back */
    int n_running;                   /* runs executing in this process (runs.max_concurrent) */
    active_run_t *active;
    agent_count_t *counts;
    ah_metric_family_t *m_runs, *m_duration, *m_turns, *m_tools, *m_tool_dur, *m_overhead;
};

typedef struct tool_call {
    char *id, *name, *args;
    ah_tool_exec_t *exec;
    bool done, is_error;
    bool awaiting; /* needs a human's decision (approval.tools) */
    char *result;
    uint64_t t0;
    struct ah_run *run;
} tool_call_t;

/* Streamed tool call being assembled from chunk deltas. */
typedef struct acc_call {
    ah_buf_t id, name, args;
} acc_call_t;

struct ah_run {
    ah_runtime_t *rt;
    rt_worker_t *w;
    ah_loop_t *loop;
    ah_agent_spec_t *spec;
    ah_run_rec_t rec;
    json_t *messages;
    ah_tool_catalog_t cat;
    bool cat_ready;
    ah_run_observer_t obs;
    void *ud;
    bool observing;
    /* events not yet stored */
    ah_run_event_t *pev;
    size_t n_pev, cap_pev;
    /* limits */
    int max_turns, loop_detect, max_calls;
    int64_t max_tokens;
    double max_cost, timeout_s;
    json_t *seen_calls;
    /* model call */
    ah_gw_call_t *gw;
    int gw_status;
    ah_buf_t gw_err, content, frame;
    ah_buf_t req_body; /* the model request: must outlive the gateway call */
    acc_call_t *acc;
    size_t n_acc;
    ah_llm_usage_t usage;
    bool gw_broken;
    /* tools */
    tool_call_t *calls;
    size_t n_calls, n_pending;
    char *handoff_to;
    json_t *history;           /* the session's earlier messages (sent to the model, not stored) */
    bool session_held;         /* this run holds its session: release it with the final write */
    bool enqueue;              /* multitask: enqueue */
    char request_hash[65];     /* idempotency: hash of the creating request */
    json_t *known_results;     /* resume: tool_call_id -> stored tool.result data */
    json_t *known_decisions;   /* resume: tool_call_id -> stored approval data */
    json_t *announced;         /* resume: tool_call_ids whose tool.call event is stored */
    int n_awaiting;            /* tool calls waiting for a human */
    bool resume_tools;         /* resume: the turn's tool calls come next */
    bool starting_tools;       /* inside start_tools: it decides about parking itself */
    bool parking;              /* the next write parks the run (requires_action, no lease owner) */
    bool parked;               /* that write is stored: the row has no owner now */
    int64_t approval_deadline; /* ms: the pending approvals of this turn expire then; 0 = none */
    /* flow */
    struct event *timer;
    int n_writes;        /* run writes (persist jobs) in flight; each holds the run */
    bool barrier;        /* one of them has a next step that waits for it: later writes queue */
    bool insert_pending; /* not stored yet (sync run): the first write inserts the row */
    bool persist_queued; /* a write was asked for while a barrier was in flight: issued after it */
    ah_limits_ticket_t ticket; /* the current model call's admission (gateway/limits.h) */
    ah_limits_result_t lres;
    bool ticket_held, admitting, admitting_async;
    struct event *limit_timer; /* waiting out a rate limit */
    void (*queued_next)(struct ah_run *);
    bool finished, final_stored, running_counted, listed;
    active_run_t *active;     /* this run's entry in rt->active (cancel by id) */
    agent_count_t *agent_cnt; /* its agent's running count, when counted */
    size_t w_idx;             /* its index in w->runs, when listed */
    int busy;
    uint64_t t_start;
    uint64_t model_ns, tools_ns; /* time inside model calls and tool phases */
    uint64_t t_model, t_tools;   /* start of the current one */
    char request_id[72];
};

static void turn(ah_run_t *r);
static void call_model(ah_run_t *r);
static void persist(ah_run_t *r, bool insert, void (*next)(ah_run_t *));
static void fail(ah_run_t *r, const char *code, const char *msg);
static void finish(ah_run_t *r, const char *status, const char *code, const char *msg);

/* ---- lifetime ---- */

static void run_free(ah_run_t *r)
{
    ah_runtime_t *rt = r->rt;
    if (r->active || r->agent_cnt || r->running_counted) {
        pthread_mutex_lock(&rt->mu);
        active_run_t *a = r->active;
        if (a) {
            *a->pprev = a->next;
            if (a->next)
                a->next->pprev = a->pprev;
            free(a);
        }
        if (r->agent_cnt)
            r->agent_cnt->n--;
        if (r->running_counted)
            rt->n_running--;
        pthread_mutex_unlock(&rt->mu);
    }
    if (r->listed && r->w) {
        /* Swap-remove: the last run takes this one's slot. */
        rt_worker_t *w = r->w;
        ah_run_t *last = w->runs[--w->n_runs];
        w->runs[r->w_idx] = last;
        last->w_idx = r->w_idx;
        if (w->finishing && w->n_runs == 0)
            event_base_loopbreak(ah_loop_base(w->loop)); /* the last run here is done */
    }
    if (r->gw)
        ah_gateway_cancel(r->gw);
    for (size_t i = 0; i < r->n_calls; i++) {
        ah_tool_cancel(r->calls[i].exec);
        free(r->calls[i].id);
        free(r->calls[i].name);
        free(r->calls[i].args);
        free(r->calls[i].result);
    }
    free(r->calls);
    for (size_t i = 0; i < r->n_acc; i++) {
        ah_buf_free(&r->acc[i].id);
        ah_buf_free(&r->acc[i].name);
        ah_buf_free(&r->acc[i].args);
    }
    free(r->acc);
    for (size_t i = 0; i < r->n_pev; i++)
        free(r->pev[i].data);
    free(r->pev);
    if (r->timer)
        event_free(r->timer);
    if (r->limit_timer)
        event_free(r->limit_timer);
    if (r->ticket_held && rt->d.limits)
        ah_limits_finish(rt->d.limits, &r->ticket, 0);
    ah_tool_catalog_free(&r->cat);
    json_decref(r->messages);
    json_decref(r->seen_calls);
    json_decref(r->known_results);
    json_decref(r->history);
    json_decref(r->known_decisions);
    json_decref(r->announced);
    ah_buf_free(&r->gw_err);
    ah_buf_free(&r->content);
    ah_buf_free(&r->frame);
    ah_buf_free(&r->req_body);
    free(r->handoff_to);
    ah_run_rec_free(&r->rec);
    ah_agent_spec_unref(r->spec);
    free(r);
}

static void hold(ah_run_t *r)
{
    r->busy++;
    ah_log_ctx_set_run(r->rec.id);
}

static void release(ah_run_t *r)
{
    if (--r->busy == 0) {
        ah_log_ctx_set_run(NULL);
        if (r->final_stored)
            run_free(r);
    }
}

/* ---- events and persistence ---- */

static void emit(ah_run_t *r, const char *type, json_t *data)
{
    char *s = data ? json_dumps(data, JSON_COMPACT) : strdup("{}");
    json_decref(data);
    if (!s)
        return;
    if (r->n_pev == r->cap_pev) {
        size_t cap = r->cap_pev ? r->cap_pev * 2 : 16;
        ah_run_event_t *nv = realloc(r->pev, cap * sizeof(*nv));
        if (!nv) {
            free(s);
            return;
        }
        r->pev = nv;
        r->cap_pev = cap;
    }
    ah_run_event_t *e = &r->pev[r->n_pev++];
    memset(e, 0, sizeof(*e));
    snprintf(e->run_id, sizeof(e->run_id), "%s", r->rec.id);
    e->seq = ++r->rec.last_event_seq;
    snprintf(e->type, sizeof(e->type), "%s", type);
    e->data = s;
    e->ts = ah_wall_ms();
    if (r->observing && r->obs.event)
        r->obs.event(r->ud, e->seq, type, s, strlen(s));
}

typedef struct persist_job {
    ah_run_rec_t rec;
    ah_run_event_t *ev;
    size_t n;
    bool insert;
    /* sessions (store/sessions.h) and idempotency (store/runs_idem.h) */
    bool acquire, enqueue, enqueued, release;
    double ttl_s;
    int max_messages;
    char *history;          /* out: the session's messages when acquired */
    char *session_messages; /* in: what the run adds to the session (completed runs) */
    int session_rc;
    char request_hash[65];
    bool final;          /* the run's final state: enqueue its webhook in the same transaction */
    bool park;           /* requires_action: give up the lease until park_until (or a decision) */
    bool park_cancelled; /* set by the job: a cancel requested meanwhile ended the parked run */
    char park_agent[80]; /* its agent, for agenthub_runs_total */
    bool after_park;     /* the run was parked by this process: a row still without owner is ours */
    int64_t park_until;
    ah_run_t *run;
    void (*next)(ah_run_t *); /* the step that waits for this write (NULL: none) */
} persist_job_t;

/*
 * The step's writes (its events, then the run's INSERT or owner-checked
 * UPDATE, and a park's lease release) are deferred (db.h): on PostgreSQL they
 * wait to travel with later statements, and a job submitted with
 * AH_STORE_PIPELINE (no session to take) pays no round trip of its own. If
 * one fails, the job fails and its savepoint takes them all back. The work
 * only reads its job and writes the database, so the writer may run it again
 * (store.h).
 */
static int persist_work(ah_db_t *db, void *arg)
{
    persist_job_t *j = arg;
    int64_t now = ah_wall_ms();
    int rc;
    if (j->insert) {
        if (j->rec.idempotency_key && *j->rec.idempotency_key)
            ah_store_run_idem_expire(db, j->rec.key_id, j->rec.idempotency_key,
                                     now - AH_RUN_IDEM_WINDOW_MS);
        if (j->acquire) {
            /* Taking the session and storing the run are one transaction: a 409 stores nothing. */
            j->session_rc =
                ah_store_session_acquire(db, j->rec.session_id, j->rec.key_id, j->rec.tenant,
                                         j->rec.agent, j->rec.id, j->ttl_s, now, &j->history);
            if (j->session_rc == -EBUSY && j->enqueue) {
                snprintf(j->rec.status, sizeof(j->rec.status), "%s", AH_RUN_QUEUED);
                free(j->rec.lease_owner);
                j->rec.lease_owner = NULL;
                j->rec.lease_expires_at = 0;
                j->rec.attempt = 0;
                j->enqueued = true;
            } else if (j->session_rc < 0) {
                return j->session_rc;
            }
        }
        ah_db_defer_writes(db, true);
        rc = ah_store_run_events_append(db, j->ev, j->n);
        if (rc == 0)
            rc = j->request_hash[0] ? ah_store_run_insert_hashed(db, &j->rec, j->request_hash)
                                    : ah_store_run_insert(db, &j->rec);
    } else {
        /* Only the lease owner writes the run: a replica that stalled past its lease and
         * lost the run to another must not overwrite it (-ESTALE). A cancel or timeout
         * that raced with parking still ends the parked run (no owner then), unless the
         * store ended it meanwhile (a cancel on another replica): -ESTALE, it stays so. */
        ah_db_defer_writes(db, true);
        rc = ah_store_run_events_append(db, j->ev, j->n);
        if (rc == 0 && j->rec.lease_owner && *j->rec.lease_owner)
            rc = ah_store_run_update_owned(db, &j->rec, j->rec.lease_owner, j->after_park);
        else if (rc == 0)
            rc = ah_store_run_update(db, &j->rec);
        if (rc == 0 && j->park) {
            /* No owner while a human decides: a decision on any replica makes the run
             * claimable at once (approvals.c); else a claim at park_until expires it. */
            ah_db_val_t v[2] = {ah_db_int(j->park_until), ah_db_text(j->rec.id)};
            rc = ah_db_query(
                db, "UPDATE runs SET lease_owner = NULL, lease_expires_at = ? WHERE id = ?", v, 2,
                NULL, NULL);
            /* A cancel asked while the run was being parked (cancels.c) ends it now. */
            j->park_cancelled = false;
            if (rc == 0)
                rc = ah_cancel_parked_if_requested(db, j->rec.id, now, j->park_agent,
                                                   &j->park_cancelled);
        }
    }
    ah_db_defer_writes(db, false);
    /* A sync run that ends before its first write is inserted with its final state. */
    if (rc == 0 && j->final && j->rec.webhook_url && *j->rec.webhook_url)
        rc = ah_webhook_enqueue_run(db, &j->rec, j->rec.webhook_url, now);
    if (rc == 0 && j->release) {
        int s = ah_store_session_release(db, j->rec.session_id, j->rec.id, j->session_messages,
                                         j->max_messages, j->ttl_s, now);
        if (s < 0 && s != -ESTALE && s != -ENOENT && s != -EINVAL)
            rc = s;
    }
    return rc;
}

/* Cancels what the run has in flight (model call, tool calls) and its timeout. */
static void stop_work(ah_run_t *r)
{
    if (r->gw) {
        ah_gateway_cancel(r->gw);
        r->gw = NULL;
    }
    for (size_t i = 0; i < r->n_calls; i++) {
        ah_tool_cancel(r->calls[i].exec);
        r->calls[i].exec = NULL;
    }
    if (r->timer)
        event_del(r->timer);
}

/* Stops executing the run in this process without writing anything: whoever owns it next
 * resumes it from its last stored step. */
static void stop_here(ah_run_t *r)
{
    stop_work(r);
    if (r->limit_timer)
        event_del(r->limit_timer);
    r->finished = true;
    r->final_stored = true;
}

static void persist_done(int rc, void *arg)
{
    persist_job_t *j = arg;
    ah_run_t *r = j->run;
    for (size_t i = 0; i < j->n; i++)
        free(j->ev[i].data);
    free(j->ev);
    bool inserted = j->insert, enqueued = j->enqueued;
    if (rc == 0 && j->park)
        r->parked = true;
    if (rc == 0 && j->park_cancelled) {
        ah_runtime_ended_in_store(r->rt, j->park_agent, AH_RUN_CANCELLED);
    }
    int session_rc = j->session_rc;
    bool acquired = j->acquire && session_rc == 0 && !enqueued;
    if (acquired) {
        r->history = j->history ? json_loads(j->history, 0, NULL) : NULL;
        r->session_held = true;
    }
    bool final = j->final;
    void (*next)(ah_run_t *) = j->next;
    ah_run_rec_free(&j->rec);
    free(j->history);
    free(j->session_messages);
    free(j);
    ah_log_ctx_set_run(r->rec.id); /* the job's hold (taken in persist) is released below */
    r->n_writes--;
    if (next)
        r->barrier = false;
    if (r->final_stored) {
        /* An earlier write stopped or refused the run: a later one has nothing to add. */
        release(r);
        return;
    }
    if (r->finished && !final)
        next = NULL; /* the run ended meanwhile: its final write (queued or in flight) goes on */
    if (inserted && rc &&
        ((rc == session_rc && (rc == -EBUSY || rc == -EACCES)) ||
         (rc == -EEXIST && r->rec.idempotency_key))) {
        /* Refused before anything was stored: tell the client, keep nothing. */
        const char *code = rc == -EEXIST   ? "idempotency_key_in_progress"
                           : rc == -EACCES ? "session_conflict"
                                           : "session_busy";
        const char *msg = rc == -EEXIST ? "a run with this Idempotency-Key is being created; retry"
                          : rc == -EACCES
                              ? "this session belongs to another API key"
                              : "the session already has an active run (send multitask: "
                                "\"enqueue\" to queue this one)";
        r->finished = true;
        r->final_stored = true;
        r->persist_queued = false;
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 409, code, msg, NULL);
        }
        release(r);
        return;
    }
    if (inserted && rc && rc != -ESTALE) {
        /* The run could not be created (the store is down or busy): nothing was stored, so
         * the client hears 503 and may retry, rather than a failed run nobody can read. */
        ah_log(AH_LOG_ERROR, "runtime", "cannot store the new run", AH_LF_INT("rc", rc), AH_LF_END);
        stop_here(r); /* a sync run's first model call may be under way */
        r->persist_queued = false;
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 503, rc == -EBUSY ? "store_busy" : "store_unavailable",
                           rc == -EBUSY ? "the store is busy; retry"
                                        : "the run could not be stored (the store is "
                                          "unavailable); retry",
                           NULL);
        }
        release(r);
        return;
    }
    if (rc == -ESTALE) {
        /* Another replica took the run over (our lease lapsed): stop here, write nothing. */
        ah_log(AH_LOG_WARN, "runtime", "run taken over by another replica: stopped here",
               AH_LF_STR("agent", r->rec.agent), AH_LF_END);
        stop_here(r);
        r->persist_queued = false;
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 409, "run_taken_over",
                           "this replica lost the run's lease and another replica continues it: "
                           "GET /v1/runs/{id} for its result",
                           NULL);
        }
        release(r);
        return;
    }
    if (inserted && rc == 0 && enqueued) {
        /* Queued behind the session's active run: a claimer starts it later. */
        r->finished = true;
        r->final_stored = true;
        r->persist_queued = false;
        snprintf(r->rec.status, sizeof(r->rec.status), "%s", AH_RUN_QUEUED);
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 202, "enqueued", "queued behind the session's active run",
                           &r->rec);
        }
        ah_queue_kick();
        release(r);
        return;
    }
    if (rc && (rc == -EBUSY || rc == -EIO) && r->rec.attempt < STORE_RETRY_ATTEMPTS) {
        /*
         * The store is busy or away: failing the run would lose it (that write may well
         * succeed a moment later), and answering the client with an end the store does not
         * have would tell it something a resumed run may contradict. Stop here with nothing
         * more stored instead: the lease is no longer renewed, so once the store answers a
         * replica (this one too) resumes the run from its last stored step, as after a
         * crash. A run whose writes keep failing over STORE_RETRY_ATTEMPTS claims is failed,
         * so a write that can never succeed ends.
         */
        ah_log(AH_LOG_ERROR, "runtime",
               "cannot store the run: stopped here, it resumes from its last stored step",
               AH_LF_INT("rc", rc), AH_LF_END);
        stop_here(r);
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 503, "store_unavailable",
                           "the run's progress could not be stored; it continues from its last "
                           "stored step once the store answers: GET /v1/runs/{id} for its result",
                           NULL);
        }
        release(r);
        return;
    }
    if (rc) {
        ah_log(AH_LOG_ERROR, "runtime", "cannot store the run", AH_LF_INT("rc", rc), AH_LF_END);
        if (!r->finished)
            fail(r, "store_error", "the run could not be stored");
        else if (next)
            next(r); /* the observer still hears how the run ended */
        else if (final)
            r->final_stored = true; /* nothing more can be done */
    } else {
        if (inserted && r->observing && r->obs.created)
            r->obs.created(r->ud, &r->rec);
        if (next)
            next(r);
    }
    if (r->persist_queued && !r->barrier) {
        r->persist_queued = false;
        persist(r, false, r->queued_next);
    }
    release(r);
}

typedef struct events_job {
    ah_run_event_t *ev;
    size_t n;
    char owner[48]; /* "" for a run without a lease (not fenced) */
    int64_t attempt;
} events_job_t;

static int events_work(ah_db_t *db, void *arg)
{
    events_job_t *j = arg;
    ah_db_defer_writes(db, true); /* they go with later statements (AH_STORE_PIPELINE) */
    /* Only while this attempt owns the run: a superseded one must not add to the log. */
    int rc = j->owner[0] ? ah_store_run_fence(db, j->ev[0].run_id, j->owner, j->attempt) : 0;
    return rc ? rc : ah_store_run_events_append(db, j->ev, j->n);
}

static void events_done(int rc, void *arg)
{
    events_job_t *j = arg;
    if (rc == -ESTALE)
        ah_log(AH_LOG_WARN, "runtime", "run events not stored: another attempt owns the run now",
               AH_LF_STR("run_id", j->ev[0].run_id), AH_LF_INT("attempt", j->attempt), AH_LF_END);
    else if (rc)
        ah_log(AH_LOG_ERROR, "runtime", "cannot store run events", AH_LF_INT("rc", rc), AH_LF_END);
    for (size_t i = 0; i < j->n; i++)
        free(j->ev[i].data);
    free(j->ev);
    free(j);
}

/*
 * Stores the pending events now, without the run row: a tool result must be
 * durable as soon as it exists, so a run resumed after a crash never repeats
 * a call that already has a result. The writer runs jobs in order, so these
 * land before any later write of the run.
 */
static void flush_events(ah_run_t *r)
{
    if (!r->n_pev)
        return;
    events_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return; /* they go with the next persist */
    j->ev = r->pev;
    j->n = r->n_pev;
    if (r->rec.lease_owner)
        snprintf(j->owner, sizeof(j->owner), "%s", r->rec.lease_owner);
    j->attempt = r->rec.attempt;
    r->pev = NULL;
    r->n_pev = r->cap_pev = 0;
    if (ah_store_submit(r->rt->d.store, AH_STORE_WRITE | AH_STORE_PIPELINE, events_work,
                        events_done, NULL, j) != 0) {
        r->pev = j->ev; /* put them back: the next persist stores them */
        r->n_pev = r->cap_pev = j->n;
        free(j);
    }
}

/*
 * Stores the run row and the pending events, then calls next (on the loop).
 * Writes without a next are pipelined: the writer runs jobs in submit order
 * and delivers their dones in that order, so several writes of a run may be
 * in flight (and land in one COMMIT). A write with a next is a barrier: what
 * comes after it depends on its outcome, so later writes wait for it.
 */
static void persist(ah_run_t *r, bool insert, void (*next)(ah_run_t *))
{
    if (r->barrier) {
        r->persist_queued = true;
        r->queued_next = next;
        return;
    }
    persist_job_t *j = calloc(1, sizeof(*j));
    char *state = NULL;
    json_t *st = json_pack("{s:O, s:s, s:i}", "messages", r->messages, "agent",
                           r->spec ? r->spec->name : r->rec.agent, "turn", r->rec.turns);
    if (st && r->approval_deadline)
        json_object_set_new(st, "approval_deadline", json_integer(r->approval_deadline));
    if (st) {
        state = json_dumps(st, JSON_COMPACT);
        json_decref(st);
    }
    free(r->rec.state);
    r->rec.state = state;
    r->rec.updated_at = ah_wall_ms();
    if (!j || ah_run_rec_copy(&j->rec, &r->rec) != 0) {
        free(j);
        fail(r, "store_error", "out of memory storing the run");
        return;
    }
    j->ev = r->pev;
    j->n = r->n_pev;
    r->pev = NULL;
    r->n_pev = r->cap_pev = 0;
    bool was_pending = r->insert_pending;
    if (was_pending) {
        insert = true;
        r->insert_pending = false;
    }
    j->insert = insert;
    j->run = r;
    j->next = next;
    j->ttl_s = r->spec && r->spec->session.ttl_s > 0 ? r->spec->session.ttl_s : 86400;
    j->max_messages = r->spec ? r->spec->session.max_messages : 0;
    if (insert && r->rec.session_id && *r->rec.session_id) {
        j->acquire = true;
        j->enqueue = r->enqueue;
    }
    if (insert)
        snprintf(j->request_hash, sizeof(j->request_hash), "%s", r->request_hash);
    j->final = r->finished;
    j->park = r->parking && !r->finished;
    j->after_park = r->parked;
    j->park_until = r->approval_deadline;
    if (r->finished && r->session_held) {
        j->release = true;
        r->session_held = false;
        if (strcmp(r->rec.status, AH_RUN_COMPLETED) == 0)
            j->session_messages = json_dumps(r->messages, JSON_COMPACT);
    }
    /* Taking a session fills in the job (history, enqueued): that work must run only once. */
    unsigned flags = AH_STORE_WRITE | (j->acquire ? 0 : AH_STORE_PIPELINE);
    int rc = ah_store_submit(r->rt->d.store, flags, persist_work, persist_done, r->loop, j);
    if (rc == 0) {
        r->n_writes++;
        r->busy++; /* the job holds the run until its done */
        if (next)
            r->barrier = true;
    } else {
        r->insert_pending = was_pending; /* the final write inserts it then */
        for (size_t i = 0; i < j->n; i++)
            free(j->ev[i].data);
        free(j->ev);
        ah_run_rec_free(&j->rec);
        free(j);
        if (!r->finished) {
            fail(r, "store_busy", "the store is busy; retry the run");
            return;
        }
        /* The final write could not even be queued: nothing more is stored, the lease is no
         * longer renewed, so the run resumes from its last stored step (as when a write
         * fails, persist_done); the client is told so instead of waiting for an end. */
        r->final_stored = true;
        if (r->observing && r->obs.refused) {
            r->observing = false;
            r->obs.refused(r->ud, 503, "store_busy",
                           "the store is busy: the run's end could not be stored; it continues "
                           "from its last stored step: GET /v1/runs/{id} for its result",
                           NULL);
        }
    }
}

/* ---- the end ---- */

static void notify_done(ah_run_t *r)
{
    r->final_stored = true;
    if (r->rec.webhook_url && *r->rec.webhook_url && r->rt->d.webhooks)
        ah_webhooks_kick(r->rt->d.webhooks);
    ah_runtime_t *rt = r->rt;
    char st[24];
    snprintf(st, sizeof(st), "%s", r->rec.status);
    ah_counter_inc(ah_metrics_series(rt->m_runs, r->rec.agent, st));
    uint64_t total = ah_mono_ns() - r->t_start;
    ah_hist_observe(ah_metrics_series(rt->m_duration, r->rec.agent), (double)total / 1e9);
    if (r->rec.turns > 0 && total > r->model_ns + r->tools_ns)
        ah_hist_observe(ah_metrics_series0(rt->m_overhead),
                        (double)(total - r->model_ns - r->tools_ns) / r->rec.turns / 1e9);
    ah_log(AH_LOG_INFO, "runtime", "run finished", AH_LF_STR("agent", r->rec.agent),
           AH_LF_STR("status", r->rec.status), AH_LF_INT("turns", r->rec.turns),
           AH_LF_STR("error_code", r->rec.error_code ? r->rec.error_code : ""), AH_LF_END);
    if (r->observing && r->obs.done) {
        r->observing = false;
        r->obs.done(r->ud, &r->rec);
    }
}

static void finish(ah_run_t *r, const char *status, const char *code, const char *msg)
{
    if (r->finished)
        return;
    r->persist_queued = false; /* the final write below supersedes a queued one */
    r->finished = true;
    stop_work(r);
    snprintf(r->rec.status, sizeof(r->rec.status), "%s", status);
    r->rec.finished_at = ah_wall_ms();
    if (code) {
        free(r->rec.error_code);
        free(r->rec.error);
        r->rec.error_code = strdup(code);
        r->rec.error = strdup(msg ? msg : code);
    }
    if (strcmp(status, AH_RUN_COMPLETED) == 0) {
        emit(r, "run.completed",
             json_pack("{s:s?, s:{s:I, s:I, s:f}, s:i}", "output", r->rec.output, "usage",
                       "prompt_tokens", (json_int_t)r->rec.prompt_tokens, "completion_tokens",
                       (json_int_t)r->rec.completion_tokens, "cost_usd", r->rec.cost_usd, "turns",
                       r->rec.turns));
    } else if (strcmp(status, AH_RUN_CANCELLED) == 0) {
        emit(r, "run.cancelled", json_pack("{s:s}", "reason", msg ? msg : "cancelled"));
    } else {
        emit(r, "run.failed",
             json_pack("{s:s, s:s}", "code", code ? code : "error", "message", msg ? msg : ""));
    }
    /* Follows any write in flight (after a barrier, once it is done). */
    persist(r, false, notify_done);
}

static void fail(ah_run_t *r, const char *code, const char *msg)
{
    finish(r, AH_RUN_FAILED, code, msg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    ah_run_t *r = arg;
    (void)fd;
    (void)what;
    hold(r);
    char msg[96];
    snprintf(msg, sizeof(msg), "the run took longer than its limit of %g s", r->timeout_s);
    fail(r, "timeout", msg);
    release(r);
}

/* ---- model call ---- */

static void acc_reset(ah_run_t *r)
{
    for (size_t i = 0; i < r->n_acc; i++) {
        ah_buf_free(&r->acc[i].id);
        ah_buf_free(&r->acc[i].name);
        ah_buf_free(&r->acc[i].args);
    }
    free(r->acc);
    r->acc = NULL;
    r->n_acc = 0;
    ah_buf_reset(&r->content);
    ah_buf_reset(&r->gw_err);
    ah_buf_reset(&r->frame);
    memset(&r->usage, 0, sizeof(r->usage));
    r->gw_status = 0;
    r->gw_broken = false;
}

static void acc_chunk(ah_run_t *r, const char *json, size_t n)
{
    json_t *c = json_loadb(json, n, 0, NULL);
    if (!c)
        return;
    json_t *err = json_object_get(c, "error");
    if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        ah_buf_reset(&r->gw_err);
        ah_buf_puts(&r->gw_err, m ? m : "the model stream failed");
        r->gw_broken = true;
    }
    json_t *u = json_object_get(c, "usage");
    if (json_is_object(u)) {
        r->usage.present = true;
        r->usage.prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
        r->usage.completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
        r->usage.cached_tokens = json_integer_value(
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    json_t *delta = json_object_get(json_array_get(json_object_get(c, "choices"), 0), "delta");
    const char *text = json_string_value(json_object_get(delta, "content"));
    if (text && *text) {
        ah_buf_puts(&r->content, text);
        emit(r, "message.delta", json_pack("{s:s}", "delta", text));
    }
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(delta, "tool_calls"), i, tc)
    {
        json_int_t idx = json_integer_value(json_object_get(tc, "index"));
        if (idx < 0 || idx >= 128)
            continue;
        if ((size_t)idx >= r->n_acc) {
            acc_call_t *nv = realloc(r->acc, (size_t)(idx + 1) * sizeof(*nv));
            if (!nv)
                continue;
            for (size_t k = r->n_acc; k <= (size_t)idx; k++) {
                ah_buf_init(&nv[k].id, 0);
                ah_buf_init(&nv[k].name, 0);
                ah_buf_init(&nv[k].args, 0);
            }
            r->acc = nv;
            r->n_acc = (size_t)idx + 1;
        }
        acc_call_t *a = &r->acc[idx];
        const char *id = json_string_value(json_object_get(tc, "id"));
        json_t *fn = json_object_get(tc, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        if (id)
            ah_buf_puts(&a->id, id);
        if (name)
            ah_buf_puts(&a->name, name);
        if (args)
            ah_buf_puts(&a->args, args);
    }
    json_decref(c);
}

static void gw_head(void *ud, const ah_gw_result_t *res)
{
    ah_run_t *r = ud;
    r->gw_status = res->status;
}

static void gw_data(void *ud, const char *p, size_t n)
{
    ah_run_t *r = ud;
    hold(r);
    if (r->gw_status != 200) {
        /* An error answer: keep its message. */
        json_t *e = json_loadb(p, n, 0, NULL);
        const char *m = json_string_value(json_object_get(json_object_get(e, "error"), "message"));
        ah_buf_reset(&r->gw_err);
        ah_buf_puts(&r->gw_err, m ? m : "the model call failed");
        json_decref(e);
        release(r);
        return;
    }
    /* Frames are "data: {...}\n\n"; the gateway passes whole frames. */
    ah_buf_append(&r->frame, p, n);
    for (;;) {
        char *end = r->frame.data ? memmem(r->frame.data, r->frame.len, "\n\n", 2) : NULL;
        if (!end)
            break;
        size_t flen = (size_t)(end - r->frame.data);
        if (flen > 6 && memcmp(r->frame.data, "data: ", 6) == 0)
            acc_chunk(r, r->frame.data + 6, flen - 6);
        ah_buf_consume(&r->frame, flen + 2);
    }
    release(r);
}

static void after_model(ah_run_t *r);

static void gw_done(void *ud, int rc, const ah_gw_result_t *res)
{
    ah_run_t *r = ud;
    hold(r);
    r->gw = NULL;
    r->model_ns += ah_mono_ns() - r->t_model;
    /* The model call is accounted like any gateway request, attributed to the run. */
    ah_runtime_t *rt = r->rt;
    const ah_config_model_t *mc = res->model_cfg;
    double cost = mc ? ah_usage_cost(&mc->price, r->usage.prompt_tokens, r->usage.cached_tokens,
                                     r->usage.completion_tokens)
                     : 0;
    ah_gateway_account(rt->d.gateway, r->rec.key_id, res->model ? res->model : r->spec->model,
                       &r->usage, cost, 0, 0);
    if (rt->d.usage) {
        ah_usage_rec_t u = {
            .request_id = r->request_id,
            .key_id = r->rec.key_id,
            .tenant = r->rec.tenant,
            .model = res->model ? res->model : r->spec->model,
            .provider = res->provider ? res->provider : "",
            .upstream_model = res->upstream_model ? res->upstream_model : "",
            .prompt_tokens = r->usage.prompt_tokens,
            .completion_tokens = r->usage.completion_tokens,
            .cached_tokens = r->usage.cached_tokens,
            .cost_usd = cost,
            .latency_ms = -1,
            .ttft_ms = (int64_t)(res->ttft_ns / 1000000),
            .status = res->status,
            .stream = true,
            .attempts = res->attempts,
            .agent = r->rec.agent,
            .run_id = r->rec.id,
        };
        ah_usage_record(rt->d.usage, &u);
    }
    if (r->ticket_held && rt->d.limits) {
        ah_limits_finish(rt->d.limits, &r->ticket,
                         r->usage.prompt_tokens + r->usage.completion_tokens);
        r->ticket_held = false;
    }
    r->rec.prompt_tokens += r->usage.prompt_tokens;
    r->rec.completion_tokens += r->usage.completion_tokens;
    r->rec.cost_usd += cost;
    if (!r->finished) {
        if (res->status != 200 || rc < 0 || r->gw_broken) {
            char msg[600];
            snprintf(msg, sizeof(msg), "the model call failed (HTTP %d): %s", res->status,
                     r->gw_err.len ? r->gw_err.data : "no answer");
            fail(r, "model_error", msg);
        } else {
            after_model(r);
        }
    }
    release(r);
}

static const ah_gw_sink_t gw_sink = {gw_head, gw_data, gw_done};

static void do_call_model(ah_run_t *r);

static void on_limit_retry(evutil_socket_t fd, short what, void *arg)
{
    ah_run_t *r = arg;
    (void)fd;
    (void)what;
    hold(r);
    call_model(r);
    release(r);
}

/* The key's (and model's) rate limits and budget, as for any gateway request. */
static void model_admitted(void *ud, const ah_limits_result_t *res)
{
    ah_run_t *r = ud;
    hold(r);
    bool async = r->admitting_async;
    r->admitting = false;
    r->admitting_async = false;
    if (r->finished) {
        ah_limits_finish(r->rt->d.limits, &r->ticket, 0);
    } else if (res->status == 429 && !res->retry) {
        fail(r, res->code ? res->code : "budget_exceeded", res->message);
    } else if (res->status == 429) {
        /* Over a rate limit: the run waits (no thread) and asks again. */
        double s = res->retry_after_s < 0.05 ? 0.05
                   : res->retry_after_s > 60 ? 60
                                             : res->retry_after_s;
        if (!r->limit_timer)
            r->limit_timer = evtimer_new(ah_loop_base(r->loop), on_limit_retry, r);
        struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
        if (r->limit_timer)
            evtimer_add(r->limit_timer, &tv);
    } else {
        r->ticket_held = true;
        do_call_model(r);
    }
    if (async)
        release(r); /* the hold taken while the limiter decided */
    release(r);
}

static void call_model(ah_run_t *r)
{
    if (r->finished)
        return;
    ah_limits_t *lim = r->rt->d.limits;
    if (!lim) {
        do_call_model(r);
        return;
    }
    r->admitting = true;
    int rc =
        ah_limits_admit(lim, r->loop, r->rec.key_id, r->spec->model, (int64_t)(r->req_body.len / 4),
                        &r->ticket, &r->lres, model_admitted, r);
    if (rc == 0)
        model_admitted(r, &r->lres);
    else if (rc != -EINPROGRESS)
        do_call_model(r); /* the limiter failed: do not block the run on it */
    else {
        r->admitting_async = true;
        hold(r); /* released by model_admitted */
    }
}

static void do_call_model(ah_run_t *r)
{
    if (r->finished)
        return;
    acc_reset(r);
    json_t *msgs = json_array();
    if (r->spec->instructions && *r->spec->instructions)
        json_array_append_new(
            msgs, json_pack("{s:s, s:s}", "role", "system", "content", r->spec->instructions));
    json_t *ctx = r->history ? ah_session_merge(r->history, r->messages) : NULL;
    json_array_extend(msgs, ctx ? ctx : r->messages);
    json_decref(ctx);
    json_t *body = json_pack("{s:s, s:o, s:b, s:{s:b}}", "model", r->spec->model, "messages", msgs,
                             "stream", 1, "stream_options", "include_usage", 1);
    json_t *tools = ah_tool_catalog_defs(&r->cat);
    if (tools)
        json_object_set_new(body, "tools", tools);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        fail(r, "internal_error", "out of memory building the model request");
        return;
    }
    emit(r, "model.request",
         json_pack("{s:i, s:s}", "turn", r->rec.turns + 1, "model", r->spec->model));
    ah_buf_reset(&r->req_body);
    ah_buf_puts(&r->req_body, s);
    free(s);
    ah_gw_request_t gr = {
        .kind = AH_GW_CHAT,
        .body = r->req_body.data,
        .len = r->req_body.len,
        .model = r->spec->model,
        .stream = true,
        .include_usage = true,
        .request_id = r->request_id,
    };
    r->t_model = ah_mono_ns();
    int rc = ah_gateway_start(r->rt->d.gateway, r->loop, &gr, &gw_sink, r, &r->gw);
    if (rc) {
        r->gw = NULL;
        char msg[200];
        snprintf(msg, sizeof(msg), "the agent's model \"%s\" cannot be called (%s)", r->spec->model,
                 rc == -ENOENT ? "not configured" : strerror(-rc));
        fail(r, "model_error", msg);
    }
}

/* ---- tools ---- */

static void tools_all_done(ah_run_t *r);
static void maybe_park(ah_run_t *r);

static void tool_done(void *ud, bool is_error, const char *text, size_t n)
{
    tool_call_t *tc = ud;
    ah_run_t *r = tc->run;
    hold(r);
    tc->exec = NULL;
    tc->done = true;
    tc->is_error = is_error;
    size_t keep = n > AH_TOOL_RESULT_MAX ? AH_TOOL_RESULT_MAX : n;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    ah_buf_append(&b, text ? text : "", keep);
    if (keep < n)
        ah_buf_printf(&b, "\n[tool output truncated: %zu of %zu bytes]", keep, n);
    tc->result = ah_buf_steal(&b);
    double ms = (double)((ah_mono_ns() - tc->t0) / 1000) / 1e3; /* whole microseconds */
    const char *st = is_error ? "error" : "ok";
    ah_counter_inc(ah_metrics_series(r->rt->m_tools, r->rec.agent, tc->name, st));
    ah_hist_observe(ah_metrics_series(r->rt->m_tool_dur, tc->name), ms / 1e3);
    if (!r->finished) {
        emit(r, "tool.result",
             json_pack("{s:s, s:s, s:s, s:b, s:f}", "tool_call_id", tc->id, "name", tc->name,
                       "output", tc->result ? tc->result : "", "is_error", is_error, "duration_ms",
                       ms));
        flush_events(r);
        if (--r->n_pending == 0)
            tools_all_done(r);
        else
            maybe_park(r);
    }
    release(r);
}

static void prepared(void *ud, int rc, const char *err);

/* The run was written in requires_action without a lease: it lives in the store now. */
static void parked(ah_run_t *r)
{
    r->parking = false;
    if (r->finished)
        return; /* cancelled or failed while the write was in flight */
    r->finished = true;
    r->final_stored = true; /* freed when the outermost entry point returns */
    if (r->timer)
        event_del(r->timer);
    ah_log(AH_LOG_INFO, "runtime", "run waits for an approval; its lease is given up",
           AH_LF_STR("agent", r->rec.agent), AH_LF_INT("awaiting", r->n_awaiting), AH_LF_END);
    /* A sync client gets the run in requires_action; a stream ends after that event. */
    if (r->observing && r->obs.done) {
        r->observing = false;
        r->obs.done(r->ud, &r->rec);
    }
}

/*
 * Every call of the turn that needs no human is done and some wait for one:
 * the run pauses. It is stored in requires_action with no lease owner and
 * leaves memory, so waiting costs nothing here and a decision sent to any
 * replica resumes it there (approvals.c). The wait is bounded by
 * spec.approval.timeout_s (default: the run's timeout_s), counted from the
 * first pause of this turn: a claim at that time finds the calls undecided
 * and fails the run with approval_expired.
 */
static void maybe_park(ah_run_t *r)
{
    if (r->finished || r->starting_tools || r->parking || r->n_awaiting == 0 ||
        r->n_pending != (size_t)r->n_awaiting)
        return;
    int64_t now = ah_wall_ms();
    double wait_s = r->spec->approval_timeout_s > 0 ? r->spec->approval_timeout_s : r->timeout_s;
    if (!r->approval_deadline)
        r->approval_deadline = now + (int64_t)(wait_s * 1000);
    if (now >= r->approval_deadline) {
        char m[200];
        snprintf(m, sizeof(m),
                 "no decision on the tool call(s) waiting for an approval within %g s "
                 "(spec.approval.timeout_s)",
                 wait_s);
        fail(r, "approval_expired", m);
        return;
    }
    json_t *pending = json_array();
    for (size_t i = 0; i < r->n_calls; i++)
        if (r->calls[i].awaiting)
            json_array_append_new(pending, json_pack("{s:s, s:s, s:s}", "tool_call_id",
                                                     r->calls[i].id, "name", r->calls[i].name,
                                                     "arguments", r->calls[i].args));
    snprintf(r->rec.status, sizeof(r->rec.status), "%s", AH_RUN_REQUIRES_ACTION);
    emit(r, "run.requires_action",
         json_pack("{s:o, s:I}", "tool_calls", pending, "expires_at",
                   (json_int_t)r->approval_deadline));
    r->parking = true;
    persist(r, false, parked);
}

static void tools_all_done(ah_run_t *r)
{
    r->tools_ns += ah_mono_ns() - r->t_tools;
    r->approval_deadline = 0; /* the next turn's approvals get their own time */
    /* Results go into the conversation in the order the model asked for them. */
    for (size_t i = 0; i < r->n_calls; i++) {
        tool_call_t *tc = &r->calls[i];
        json_array_append_new(r->messages,
                              json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", tc->id,
                                        "content", tc->result ? tc->result : ""));
    }
    if (r->handoff_to) {
        ah_agent_spec_t *next = NULL;
        if (ah_registry_get(r->rt->d.registry, r->handoff_to, &next) != 0) {
            char msg[200];
            snprintf(msg, sizeof(msg), "handoff to agent \"%s\", which does not exist",
                     r->handoff_to);
            fail(r, "handoff_failed", msg);
            return;
        }
        emit(r, "handoff", json_pack("{s:s, s:s}", "from", r->spec->name, "to", next->name));
        ah_agent_spec_unref(r->spec);
        r->spec = next;
        free(r->handoff_to);
        r->handoff_to = NULL;
        ah_tool_catalog_free(&r->cat);
        r->cat_ready = false;
        ah_tools_prepare(r->w->tools, r->spec, &r->cat, prepared, r);
        return;
    }
    turn(r);
}

static bool needs_approval(const ah_agent_spec_t *spec, const char *name)
{
    for (size_t i = 0; i < spec->n_approval_tools; i++)
        if (strcmp(spec->approval_tools[i], name) == 0)
            return true;
    return false;
}

static void start_call(ah_run_t *r, tool_call_t *tc, const ah_tool_entry_t *e)
{
    if (e->kind == AH_TK_HANDOFF) {
        if (!r->handoff_to)
            r->handoff_to = strdup(e->handoff);
        char msg[160];
        snprintf(msg, sizeof(msg), "Transferred to %s.", e->handoff);
        tool_done(tc, false, msg, strlen(msg));
        return;
    }
    char idem[128];
    snprintf(idem, sizeof(idem), "%s:%s", r->rec.id, tc->id);
    ah_tool_run(r->w->tools, e, tc->args, idem, r->request_id, tool_done, tc, &tc->exec);
}

static void reject_call(tool_call_t *tc, const char *by, const char *reason)
{
    char m[512];
    snprintf(m, sizeof(m), "a human (%s) rejected this call%s%s; do not try it again",
             by && *by ? by : "reviewer", reason && *reason ? ": " : "", reason ? reason : "");
    tool_done(tc, true, m, strlen(m));
}

static void start_tools(ah_run_t *r);

static void run_tools(ah_run_t *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].id);
        free(r->calls[i].name);
        free(r->calls[i].args);
        free(r->calls[i].result);
    }
    free(r->calls);
    r->calls = calloc(r->n_acc, sizeof(tool_call_t));
    r->n_calls = 0;
    if (!r->calls) {
        fail(r, "internal_error", "out of memory");
        return;
    }
    if (r->max_calls > 0 && (int)r->n_acc > r->max_calls) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the model asked for %zu tool calls in one turn (limit %d)",
                 r->n_acc, r->max_calls);
        fail(r, "too_many_tool_calls", msg);
        return;
    }
    /* Loop detection first: the same call again and again means the agent is stuck. */
    for (size_t i = 0; i < r->n_acc; i++) {
        acc_call_t *a = &r->acc[i];
        ah_buf_t key;
        ah_buf_init(&key, 0);
        ah_buf_printf(&key, "%s\x1f%s", a->name.data ? a->name.data : "",
                      a->args.data ? a->args.data : "");
        json_int_t n = json_integer_value(json_object_get(r->seen_calls, key.data)) + 1;
        json_object_set_new(r->seen_calls, key.data, json_integer(n));
        ah_buf_free(&key);
        if (r->loop_detect > 0 && n >= r->loop_detect) {
            char msg[300];
            snprintf(msg, sizeof(msg),
                     "loop detected: tool \"%.100s\" was called %lld times with the same "
                     "arguments",
                     a->name.data ? a->name.data : "", (long long)n);
            fail(r, "loop_detected", msg);
            return;
        }
    }
    r->n_calls = r->n_acc;
    r->n_pending = r->n_acc;
    r->t_tools = ah_mono_ns();
    for (size_t i = 0; i < r->n_acc; i++) {
        acc_call_t *a = &r->acc[i];
        tool_call_t *tc = &r->calls[i];
        tc->run = r;
        tc->id = strdup(a->id.data ? a->id.data : "");
        tc->name = strdup(a->name.data ? a->name.data : "");
        tc->args = strdup(a->args.data ? a->args.data : "{}");
        tc->t0 = ah_mono_ns();
    }
    /* Announce every call, then start them (several in parallel). */
    for (size_t i = 0; i < r->n_calls; i++) {
        tool_call_t *tc = &r->calls[i];
        if (json_object_get(r->known_results, tc->id) || json_object_get(r->announced, tc->id))
            continue; /* resumed: announced before */
        json_t *args = json_loads(tc->args, 0, NULL);
        emit(r, "tool.call",
             json_pack("{s:s, s:s, s:o}", "tool_call_id", tc->id, "name", tc->name, "arguments",
                       args ? args : json_string(tc->args)));
    }
    /*
     * A step boundary: the model's answer with its tool calls is stored before
     * any call starts, so a replica resuming after a crash runs these same calls
     * (same ids, same Idempotency-Keys) instead of asking the model again.
     */
    persist(r, false, start_tools);
}

static void start_tools(ah_run_t *r)
{
    if (r->finished)
        return;
    size_t n = r->n_calls;
    r->starting_tools = true; /* calls finishing right here must not park the run mid-loop */
    for (size_t i = 0; i < n && !r->finished; i++) {
        tool_call_t *tc = &r->calls[i];
        json_t *known = json_object_get(r->known_results, tc->id);
        if (known) {
            /* Resumed after a crash: this call already has a stored result; never repeat it. */
            const char *out = json_string_value(json_object_get(known, "output"));
            tc->done = true;
            tc->is_error = json_is_true(json_object_get(known, "is_error"));
            tc->result = strdup(out ? out : "");
            if (--r->n_pending == 0)
                tools_all_done(r);
            continue;
        }
        const ah_tool_entry_t *e = ah_tool_catalog_find(&r->cat, tc->name);
        if (!e) {
            char msg[200];
            snprintf(msg, sizeof(msg), "unknown tool \"%.100s\": use one of the tools offered",
                     tc->name);
            tool_done(tc, true, msg, strlen(msg));
            continue;
        }
        if (needs_approval(r->spec, tc->name)) {
            /* Never run such a call without a human's decision (stored if given earlier). */
            json_t *d = json_object_get(r->known_decisions, tc->id);
            if (!d) {
                tc->awaiting = true;
                r->n_awaiting++;
                continue;
            }
            if (!json_is_true(json_object_get(d, "approved"))) {
                reject_call(tc, json_string_value(json_object_get(d, "by")),
                            json_string_value(json_object_get(d, "reason")));
                continue;
            }
        }
        start_call(r, tc, e);
    }
    r->starting_tools = false;
    maybe_park(r);
}

static void after_model(ah_run_t *r)
{
    r->rec.turns++;
    ah_counter_inc(ah_metrics_series(r->rt->m_turns, r->rec.agent));
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    json_object_set_new(msg, "content",
                        r->content.len ? json_stringn(r->content.data, r->content.len)
                                       : json_null());
    json_t *calls_ev = json_array();
    if (r->n_acc) {
        json_t *tcs = json_array();
        for (size_t i = 0; i < r->n_acc; i++) {
            acc_call_t *a = &r->acc[i];
            if (!a->id.len) {
                /* Some providers omit ids: make one, stable within the run. */
                ah_buf_printf(&a->id, "call_%d_%zu", r->rec.turns, i);
            }
            json_array_append_new(tcs, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", a->id.data,
                                                 "type", "function", "function", "name",
                                                 a->name.data ? a->name.data : "", "arguments",
                                                 a->args.data ? a->args.data : "{}"));
            json_array_append_new(calls_ev, json_pack("{s:s, s:s, s:s}", "id", a->id.data, "name",
                                                      a->name.data ? a->name.data : "", "arguments",
                                                      a->args.data ? a->args.data : "{}"));
        }
        json_object_set_new(msg, "tool_calls", tcs);
    }
    json_array_append(r->messages, msg);
    emit(r, "message.completed",
         json_pack("{s:s, s:O, s:o}", "role", "assistant", "content",
                   json_object_get(msg, "content"), "tool_calls", calls_ev));
    json_decref(msg);
    /* Limits that are checked after each model call. */
    if (r->max_tokens > 0 && r->rec.prompt_tokens + r->rec.completion_tokens > r->max_tokens) {
        char m[128];
        snprintf(m, sizeof(m), "the run used %lld tokens (limit %lld)",
                 (long long)(r->rec.prompt_tokens + r->rec.completion_tokens),
                 (long long)r->max_tokens);
        fail(r, "max_tokens_exceeded", m);
        return;
    }
    if (r->max_cost > 0 && r->rec.cost_usd > r->max_cost) {
        char m[128];
        snprintf(m, sizeof(m), "the run cost %.6f USD (limit %.6f)", r->rec.cost_usd, r->max_cost);
        fail(r, "max_cost_exceeded", m);
        return;
    }
    if (r->n_acc == 0) {
        free(r->rec.output);
        r->rec.output = strdup(r->content.data ? r->content.data : "");
        finish(r, AH_RUN_COMPLETED, NULL, NULL);
        return;
    }
    run_tools(r);
}

/* A step boundary: the conversation is stored before every model call. */
static void turn(ah_run_t *r)
{
    if (r->finished)
        return;
    if (r->rec.turns >= r->max_turns) {
        char m[96];
        snprintf(m, sizeof(m), "the run reached its limit of %d turns", r->max_turns);
        fail(r, "max_turns_exceeded", m);
        return;
    }
    /*
     * The state write goes out and the model call starts without waiting for
     * it: what a crash could lose here is only this model call (the tool
     * results it needs are already stored as events, and the writer keeps the
     * order), and a resumed run simply asks the model again. The write that
     * must land first - the model's tool calls, before any tool runs - is
     * awaited in run_tools.
     */
    persist(r, false, NULL);
    call_model(r);
}

static void prepared(void *ud, int rc, const char *err)
{
    ah_run_t *r = ud;
    hold(r);
    if (!r->finished) {
        if (rc) {
            fail(r, "tools_unavailable", err ? err : "the agent's tools could not be prepared");
        } else {
            r->cat_ready = true;
            if (r->resume_tools) {
                r->resume_tools = false;
                run_tools(r);
            } else {
                turn(r);
            }
        }
    }
    release(r);
}

static void started(ah_run_t *r)
{
    /* run.created follows the insert's commit, so a stream client that starts on it sees it. */
    emit(r, "run.created",
         json_pack("{s:s, s:s, s:I, s:s}", "run_id", r->rec.id, "agent", r->rec.agent, "version",
                   (json_int_t)r->rec.agent_version, "mode", r->rec.mode));
    snprintf(r->rec.status, sizeof(r->rec.status), "%s", AH_RUN_RUNNING);
    r->rec.started_at = ah_wall_ms();
    emit(r, "run.started",
         json_pack("{s:s, s:I}", "agent", r->spec->name, "version",
                   (json_int_t)r->rec.agent_version));
    ah_tools_prepare(r->w->tools, r->spec, &r->cat, prepared, r);
}

/* ---- public API ---- */

static json_t *parse_input(const char *input_json, ah_buf_t *err)
{
    json_error_t je;
    json_t *in = input_json ? json_loads(input_json, JSON_DECODE_ANY, &je) : NULL;
    if (!in) {
        ah_buf_puts(err, "input: required (a string, or an array of chat messages)");
        return NULL;
    }
    json_t *msgs = json_array();
    if (json_is_string(in)) {
        json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "user", "content", in));
    } else if (json_is_array(in) && json_array_size(in) > 0) {
        size_t i;
        json_t *m;
        json_array_foreach(in, i, m)
        {
            const char *role = json_string_value(json_object_get(m, "role"));
            if (!json_is_object(m) || !role ||
                (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") &&
                 strcmp(role, "tool") && strcmp(role, "developer"))) {
                ah_buf_printf(err,
                              "input[%zu]: each message needs a role (user, assistant, system, "
                              "tool)",
                              i);
                json_decref(msgs);
                json_decref(in);
                return NULL;
            }
            json_array_append(msgs, m);
        }
    } else {
        ah_buf_puts(err, "input: must be a string or a non-empty array of chat messages");
        json_decref(msgs);
        msgs = NULL;
    }
    json_decref(in);
    return msgs;
}

/* Per-request limits may only lower the agent's. */
static int apply_limits(ah_run_t *r, const char *limits_json, ah_buf_t *err)
{
    const ah_agent_limits_t *l = &r->spec->limits;
    r->max_turns = l->max_turns > 0 ? l->max_turns : 10;
    r->max_tokens = l->max_tokens;
    r->max_cost = l->max_cost_usd;
    r->timeout_s = l->timeout_s > 0 ? l->timeout_s : 300;
    r->loop_detect = l->loop_detect;
    r->max_calls = l->max_tool_calls_per_turn;
    if (!limits_json)
        return 0;
    json_t *o = json_loads(limits_json, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        ah_buf_puts(err, "limits: must be an object");
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(o, k, v)
    {
        double x = json_number_value(v);
        if (!json_is_number(v) || x <= 0) {
            ah_buf_printf(err, "limits.%s: must be a positive number", k);
            rc = -EINVAL;
            break;
        }
        if (strcmp(k, "max_turns") == 0) {
            if (x > r->max_turns) {
                ah_buf_printf(err, "limits.max_turns: may only lower the agent's limit (%d)",
                              r->max_turns);
                rc = -EINVAL;
                break;
            }
            r->max_turns = (int)x;
        } else if (strcmp(k, "max_tokens") == 0) {
            if (r->max_tokens > 0 && x > (double)r->max_tokens) {
                ah_buf_printf(err, "limits.max_tokens: may only lower the agent's limit (%lld)",
                              (long long)r->max_tokens);
                rc = -EINVAL;
                break;
            }
            r->max_tokens = (int64_t)x;
        } else if (strcmp(k, "max_cost_usd") == 0) {
            if (r->max_cost > 0 && x > r->max_cost) {
                ah_buf_printf(err, "limits.max_cost_usd: may only lower the agent's limit (%g)",
                              r->max_cost);
                rc = -EINVAL;
                break;
            }
            r->max_cost = x;
        } else if (strcmp(k, "timeout_s") == 0) {
            if (x > r->timeout_s) {
                ah_buf_printf(err, "limits.timeout_s: may only lower the agent's limit (%g)",
                              r->timeout_s);
                rc = -EINVAL;
                break;
            }
            r->timeout_s = x;
        } else {
            ah_buf_printf(err,
                          "limits.%s: unknown limit (known: max_turns, max_tokens, max_cost_usd, "
                          "timeout_s)",
                          k);
            rc = -EINVAL;
            break;
        }
    }
    json_decref(o);
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/*
 * Takes a slot for a run that is about to execute here: the agent's
 * concurrency limit, this replica's runs.max_concurrent, the cancel list,
 * this loop's run list (heartbeats) and the run's timeout. 0 or -EBUSY.
 */
static int admit_local(ah_run_t *r, ah_buf_t *err)
{
    ah_runtime_t *rt = r->rt;
    ah_run_rec_t *rec = &r->rec;
    int limit = r->spec->limits.concurrency;
    int max_running = rt->d.cfg->runs.max_concurrent > 0 ? rt->d.cfg->runs.max_concurrent : 1000;
    pthread_mutex_lock(&rt->mu);
    agent_count_t *c = rt->counts;
    while (c && strcmp(c->name, rec->agent) != 0)
        c = c->next;
    if (!c && (c = calloc(1, sizeof(*c))) != NULL) {
        snprintf(c->name, sizeof(c->name), "%s", rec->agent);
        c->next = rt->counts;
        rt->counts = c;
    }
    bool agent_busy = limit > 0 && c && c->n >= limit;
    bool replica_busy = rt->n_running >= max_running;
    active_run_t *a = agent_busy || replica_busy ? NULL : calloc(1, sizeof(*a));
    if (a) {
        if (c) {
            c->n++;
            r->agent_cnt = c;
        }
        rt->n_running++;
        r->running_counted = true;
        snprintf(a->id, sizeof(a->id), "%s", rec->id);
        snprintf(a->key_id, sizeof(a->key_id), "%s", rec->key_id);
        a->loop = r->loop;
        a->run = r;
        a->next = rt->active;
        if (a->next)
            a->next->pprev = &a->next;
        a->pprev = &rt->active;
        rt->active = a;
        r->active = a;
    }
    pthread_mutex_unlock(&rt->mu);
    if (agent_busy) {
        if (err)
            ah_buf_printf(err, "agent \"%s\" already runs its limit of %d concurrent runs",
                          rec->agent, limit);
        return -EBUSY;
    }
    if (replica_busy || !a) {
        if (err)
            ah_buf_printf(err,
                          "this replica already runs its limit of %d runs (runs.max_concurrent)",
                          max_running);
        return -EBUSY;
    }
    rt_worker_t *w = r->w;
    if (w->n_runs == w->cap_runs) {
        size_t cap = w->cap_runs ? w->cap_runs * 2 : 64;
        ah_run_t **nv = realloc(w->runs, cap * sizeof(*nv));
        if (nv) {
            w->runs = nv;
            w->cap_runs = cap;
        }
    }
    if (w->n_runs < w->cap_runs) {
        r->w_idx = w->n_runs;
        w->runs[w->n_runs++] = r;
        r->listed = true;
    }
    r->timer = evtimer_new(ah_loop_base(r->loop), on_timeout, r);
    if (r->timer) {
        struct timeval tv = {(time_t)r->timeout_s,
                             (suseconds_t)((r->timeout_s - (double)(time_t)r->timeout_s) * 1e6)};
        evtimer_add(r->timer, &tv);
    }
    return 0;
}

/* An async run is stored: hand it to the claimers and forget it here. */
static void async_stored(ah_run_t *r)
{
    r->observing = false;
    r->final_stored = true; /* freed when the outermost entry point returns */
    ah_queue_kick();
}

/* A run on this worker's loop, before it is started or resumed (run_free undoes it). */
static ah_run_t *run_new(ah_runtime_t *rt, rt_worker_t *w, ah_loop_t *loop)
{
    ah_run_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->rt = rt;
    r->w = w;
    r->loop = loop;
    r->t_start = ah_mono_ns();
    ah_buf_init(&r->gw_err, 0);
    ah_buf_init(&r->content, 0);
    ah_buf_init(&r->frame, 0);
    ah_buf_init(&r->req_body, 0);
    return r;
}

int ah_runtime_start(ah_runtime_t *rt, ah_loop_t *loop, const ah_run_opts_t *o,
                     const ah_run_observer_t *obs, void *ud, ah_run_t **out, ah_buf_t *err)
{
    rt_worker_t *w = tl_worker;
    if (!w || w->rt != rt || w->loop != loop)
        return -EINVAL;
    ah_run_t *r = run_new(rt, w, loop);
    if (!r)
        return -ENOMEM;
    w->rng = w->rng * 6364136223846793005ull + 1442695040888963407ull;
    int64_t version = 0;
    if (ah_registry_pick(rt->d.registry, o->agent, w->rng >> 17, &r->spec, &version) != 0) {
        free(r);
        ah_buf_printf(err, "no agent named \"%s\"", o->agent);
        return -ENOENT;
    }
    r->messages = parse_input(o->input_json, err);
    r->seen_calls = json_object();
    if (!r->messages || apply_limits(r, o->limits_json, err) != 0) {
        run_free(r);
        return -EINVAL;
    }
    ah_run_rec_t *rec = &r->rec;
    ah_id_new(rec->id, sizeof(rec->id), "run", 16);
    snprintf(rec->agent, sizeof(rec->agent), "%s", r->spec->name);
    rec->agent_version = version;
    snprintf(rec->status, sizeof(rec->status), "%s", AH_RUN_QUEUED);
    snprintf(rec->mode, sizeof(rec->mode), "%s", o->mode ? o->mode : "sync");
    rec->input = strdup(o->input_json);
    rec->session_id = dup_or_null(o->session_id);
    rec->metadata = dup_or_null(o->metadata_json);
    rec->limits = dup_or_null(o->limits_json);
    /* The run's own webhook_url wins; else the agent's (the version this run uses). */
    rec->webhook_url = dup_or_null(o->webhook_url ? o->webhook_url : r->spec->webhook_url);
    rec->idempotency_key = dup_or_null(o->idempotency_key);
    r->enqueue = o->multitask && strcmp(o->multitask, "enqueue") == 0;
    snprintf(r->request_hash, sizeof(r->request_hash), "%s",
             o->request_hash ? o->request_hash : "");
    if (o->who) {
        snprintf(rec->key_id, sizeof(rec->key_id), "%s", o->who->key_id);
        snprintf(rec->tenant, sizeof(rec->tenant), "%s", o->who->tenant);
    }
    snprintf(r->request_id, sizeof(r->request_id), "%s", o->request_id ? o->request_id : "");
    rec->created_at = rec->updated_at = ah_wall_ms();
    if (obs) {
        r->obs = *obs;
        r->ud = ud;
        r->observing = true;
    }
    *out = r;
    hold(r);
    if (strcmp(rec->mode, "async") == 0) {
        /* Stored as queued; a replica's claimer (maybe this one) runs it. */
        persist(r, true, async_stored);
        release(r);
        return 0;
    }
    int rc = admit_local(r, err);
    if (rc) {
        *out = NULL;
        r->observing = false;
        r->final_stored = true; /* nothing stored: free at release */
        release(r);
        return rc;
    }
    /* This replica runs it now: it holds the lease from the first write. */
    snprintf(rec->status, sizeof(rec->status), "%s", AH_RUN_RUNNING);
    rec->lease_owner = strdup(rt->node);
    rec->lease_expires_at = ah_wall_ms() + (int64_t)(rt->d.cfg->runs.lease_s * 1000);
    rec->attempt = 1;
    if (strcmp(rec->mode, "sync") == 0 && !rec->session_id &&
        !(rec->idempotency_key && *rec->idempotency_key)) {
        /*
         * A sync run with nothing to decide at insert time (no session to
         * take, no Idempotency-Key to check) starts at once: its row goes in
         * with its first write (row, run.created, run.started and the state
         * before the first model call, one store job, not awaited). Nobody
         * knows its id before the answer, and a crash before that write
         * commits only loses a request whose client sees the connection fail
         * (no tool can have run: tool calls wait for their own write).
         */
        r->insert_pending = true;
        started(r);
    } else {
        persist(r, true, started);
    }
    release(r);
    return 0;
}

const char *ah_run_id(const ah_run_t *r)
{
    return r->rec.id;
}

void ah_run_detach(ah_run_t *r)
{
    r->observing = false;
}

typedef struct cancel_msg {
    ah_runtime_t *rt;
    char id[48];
    char agent[80]; /* set by the store fallback when it ended the run */
    bool ended;
} cancel_msg_t;

/* The run left memory between the lookup and this message: it was parked for an approval,
 * stopped on a store error, or it ended. The store decides: a parked run ends there, one
 * that will execute again keeps a stored request (cancels.h), an ended one is left. */
static int cancel_stored_work(ah_db_t *db, void *arg)
{
    cancel_msg_t *m = arg;
    ah_cancel_outcome_t out;
    int rc = ah_cancel_store(db, m->id, NULL, ah_wall_ms(), m->agent, &out);
    m->ended = out == AH_CANCEL_ENDED;
    return rc;
}

static void cancel_stored_done(int rc, void *arg)
{
    cancel_msg_t *m = arg;
    if (rc == 0 && m->ended) {
        ah_runtime_ended_in_store(m->rt, m->agent, AH_RUN_CANCELLED);
    } else if (rc != 0) {
        ah_log(AH_LOG_WARN, "runtime", "cannot cancel the run in the store",
               AH_LF_STR("run_id", m->id), AH_LF_INT("rc", rc), AH_LF_END);
    }
    free(m);
}

static void cancel_on_loop(void *arg)
{
    cancel_msg_t *m = arg;
    ah_run_t *r = NULL;
    pthread_mutex_lock(&m->rt->mu);
    for (active_run_t *a = m->rt->active; a; a = a->next)
        if (strcmp(a->id, m->id) == 0)
            r = a->run;
    pthread_mutex_unlock(&m->rt->mu);
    /* The run can only be freed on this loop, so it is alive if it is still listed. */
    if (r) {
        hold(r);
        finish(r, AH_RUN_CANCELLED, "cancelled", "cancelled by request");
        release(r);
        free(m);
        return;
    }
    /* The caller was answered 202: the cancel must still happen. */
    if (ah_store_submit(m->rt->d.store, AH_STORE_WRITE, cancel_stored_work, cancel_stored_done,
                        NULL, m) != 0) {
        ah_log(AH_LOG_WARN, "runtime", "cannot cancel the run in the store: the store is busy",
               AH_LF_STR("run_id", m->id), AH_LF_END);
        free(m);
    }
}

int ah_runtime_cancel(ah_runtime_t *rt, const char *run_id, const char *key_id)
{
    ah_loop_t *loop = NULL;
    pthread_mutex_lock(&rt->mu);
    for (active_run_t *a = rt->active; a; a = a->next)
        if (strcmp(a->id, run_id) == 0 && (!key_id || strcmp(a->key_id, key_id) == 0))
            loop = a->loop;
    pthread_mutex_unlock(&rt->mu);
    if (!loop)
        return -ENOENT;
    cancel_msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->rt = rt;
    snprintf(m->id, sizeof(m->id), "%s", run_id);
    if (ah_loop_post(loop, cancel_on_loop, m) != 0) {
        free(m);
        return -ENOMEM;
    }
    return 0;
}

ah_runtime_t *ah_runtime_new(const ah_runtime_deps_t *deps)
{
    ah_runtime_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return NULL;
    rt->d = *deps;
    ah_id_new(rt->node, sizeof(rt->node), "node", 12);
    pthread_mutex_init(&rt->mu, NULL);
    return rt;
}

int ah_runtime_attach(ah_runtime_t *rt, ah_loop_t *loop)
{
    rt_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->rt = rt;
    w->loop = loop;
    w->tools = ah_tools_worker_new(loop);
    ah_random_bytes(&w->rng, sizeof(w->rng));
    if (!w->tools) {
        free(w);
        return -ENOMEM;
    }
    tl_worker = w;
    return 0;
}

void ah_runtime_detach(ah_runtime_t *rt)
{
    rt_worker_t *w = tl_worker;
    if (!w || w->rt != rt)
        return;
    ah_tools_worker_free(w->tools);
    free(w->runs);
    free(w);
    tl_worker = NULL;
}

void ah_runtime_free(ah_runtime_t *rt)
{
    if (!rt)
        return;
    while (rt->active) {
        active_run_t *a = rt->active;
        rt->active = a->next;
        free(a);
    }
    while (rt->counts) {
        agent_count_t *c = rt->counts;
        rt->counts = c->next;
        free(c);
    }
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

/* Per-turn overhead is a fraction of a millisecond: finer buckets there (issue target 0.2 ms). */
static const double overhead_buckets[] = {0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003,
                                          0.0004,  0.0005, 0.00075, 0.001,  0.0025,  0.005,
                                          0.01,    0.025,  0.1,     1,      10};

int ah_runtime_metrics_init(ah_runtime_t *rt)
{
    static const char *const runs_l[] = {"agent", "status"};
    static const char *const agent_l[] = {"agent"};
    static const char *const tools_l[] = {"agent", "tool", "status"};
    static const char *const tool_l[] = {"tool"};
    rt->m_runs =
        ah_metrics_counter("agenthub_runs_total", "Finished runs by agent and status.", 2, runs_l);
    rt->m_duration =
        ah_metrics_histogram("agenthub_run_duration_seconds", "Run duration by agent.", 1, agent_l,
                             ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    rt->m_turns =
        ah_metrics_counter("agenthub_run_turns_total", "Model turns taken by runs.", 1, agent_l);
    rt->m_tools =
        ah_metrics_counter("agenthub_tool_calls_total",
                           "Tool calls by agent, tool and status (ok, error).", 3, tools_l);
    rt->m_tool_dur =
        ah_metrics_histogram("agenthub_tool_call_duration_seconds", "Tool call latency by tool.", 1,
                             tool_l, ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    rt->m_overhead = ah_metrics_histogram(
        "agenthub_run_overhead_seconds",
        "Per turn: run time outside model calls and tools (state machine, storing, events).", 0,
        NULL, overhead_buckets, sizeof(overhead_buckets) / sizeof(overhead_buckets[0]));
    return rt->m_runs && rt->m_tools ? 0 : -ENOMEM;
}

void ah_runtime_ended_in_store(ah_runtime_t *rt, const char *agent, const char *status)
{
    if (rt->m_runs)
        ah_counter_inc(ah_metrics_series(rt->m_runs, agent, status));
    if (rt->d.webhooks)
        ah_webhooks_kick(rt->d.webhooks);
}

/* ---- graceful shutdown: hand runs back ---- */

void ah_runtime_drain(ah_runtime_t *rt, uint64_t deadline_ns)
{
    atomic_store(&rt->drain_deadline, deadline_ns);
    atomic_store(&rt->draining, true);
}

int ah_runtime_running(ah_runtime_t *rt)
{
    pthread_mutex_lock(&rt->mu);
    int n = rt->n_running;
    pthread_mutex_unlock(&rt->mu);
    return n;
}

static void finish_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

void ah_runtime_finish_local(ah_runtime_t *rt, ah_loop_t *loop)
{
    rt_worker_t *w = tl_worker;
    uint64_t deadline = atomic_load(&rt->drain_deadline), now = ah_mono_ns();
    if (!w || w->rt != rt || w->loop != loop || w->n_runs == 0 || !ah_runtime_draining(rt) ||
        deadline <= now)
        return;
    struct event *t = evtimer_new(ah_loop_base(loop), finish_deadline, ah_loop_base(loop));
    if (!t)
        return;
    uint64_t left = deadline - now;
    struct timeval tv = {(time_t)(left / 1000000000u), (suseconds_t)(left % 1000000000u / 1000)};
    evtimer_add(t, &tv);
    ah_log(AH_LOG_INFO, "runtime", "shutdown: letting this worker's runs finish",
           AH_LF_INT("runs", (int64_t)w->n_runs), AH_LF_DBL("max_s", (double)left / 1e9),
           AH_LF_END);
    w->finishing = true;
    ah_loop_run(loop); /* until the last run is freed, the deadline, or the server's stop */
    w->finishing = false;
    event_free(t);
}

bool ah_runtime_draining(const ah_runtime_t *rt)
{
    return atomic_load(&((ah_runtime_t *)rt)->draining);
}

size_t ah_runtime_abandon(ah_runtime_t *rt)
{
    rt_worker_t *w = tl_worker;
    if (!w || w->rt != rt || w->n_runs == 0)
        return 0;
    /* run_free edits w->runs: work on a copy. */
    size_t n = w->n_runs, cut = 0;
    ah_run_t **runs = malloc(n * sizeof(*runs));
    if (!runs)
        return 0;
    memcpy(runs, w->runs, n * sizeof(*runs));
    for (size_t i = 0; i < n; i++) {
        ah_run_t *r = runs[i];
        if (r->finished)
            continue;
        cut++;
        r->observing = false; /* the worker closed its connections already */
        stop_here(r);
        /* A write still in flight holds the run: its answer frees it when the worker settles
         * its loop (ah_api_on_worker_stop). */
        if (r->busy == 0)
            run_free(r);
    }
    free(runs);
    return cut;
}

typedef struct handback_job {
    char owner[48];
    int64_t n;
} handback_job_t;

static int handback_work(ah_db_t *db, void *arg)
{
    handback_job_t *j = arg;
    ah_db_val_t v = ah_db_text(j->owner);
    /* A claimed queued run was never started: its claim does not count as an attempt. */
    int rc = ah_db_query(db,
                         "UPDATE runs SET lease_owner = NULL, lease_expires_at = 0, attempt = CASE "
                         "WHEN status = 'queued' THEN attempt - 1 ELSE attempt END WHERE "
                         "lease_owner = ? AND status IN ('queued', 'running', 'requires_action')",
                         &v, 1, NULL, NULL);
    j->n = rc == 0 ? ah_db_changes(db) : 0;
    return rc;
}

int ah_runtime_hand_back(ah_runtime_t *rt)
{
    handback_job_t j = {.n = 0};
    snprintf(j.owner, sizeof(j.owner), "%s", rt->node);
    int rc = ah_store_call(rt->d.store, AH_STORE_WRITE, handback_work, &j);
    if (rc)
        ah_log(AH_LOG_ERROR, "runtime",
               "cannot hand this replica's runs back: other replicas resume them after "
               "runs.lease_s",
               AH_LF_INT("rc", rc), AH_LF_END);
    else if (j.n)
        ah_log(AH_LOG_INFO, "runtime", "runs handed back to the other replicas",
               AH_LF_INT("runs", j.n), AH_LF_END);
    return rc ? rc : (int)j.n;
}

/* ---- resume (durable runs) ---- */

typedef struct load_job {
    char run_id[48];
    int64_t max_seq;
    json_t *results;   /* tool_call_id -> tool.result data */
    json_t *decisions; /* tool_call_id -> approval data */
    json_t *announced; /* tool_call_id -> true: its tool.call event is stored */
    ah_run_t *run;
} load_job_t;

static int load_event(void *ud, const ah_run_event_t *e)
{
    load_job_t *j = ud;
    if (e->seq > j->max_seq)
        j->max_seq = e->seq;
    bool result = strcmp(e->type, "tool.result") == 0;
    if (strcmp(e->type, "tool.call") == 0) {
        json_t *d = json_loads(e->data ? e->data : "{}", 0, NULL);
        const char *id = json_string_value(json_object_get(d, "tool_call_id"));
        if (id)
            json_object_set_new(j->announced, id, json_true());
        json_decref(d);
    } else if (result || strcmp(e->type, "approval") == 0) {
        json_t *d = json_loads(e->data ? e->data : "{}", 0, NULL);
        const char *id = json_string_value(json_object_get(d, "tool_call_id"));
        if (id)
            json_object_set(result ? j->results : j->decisions, id, d);
        json_decref(d);
    }
    return 0;
}

static int load_work(ah_db_t *db, void *arg)
{
    load_job_t *j = arg;
    return ah_store_run_events_list(db, j->run_id, 0, 100000, load_event, j);
}

static void load_done(int rc, void *arg)
{
    load_job_t *j = arg;
    ah_run_t *r = j->run;
    hold(r);
    r->known_results = j->results;
    r->known_decisions = j->decisions;
    r->announced = j->announced;
    j->results = NULL;
    j->decisions = NULL;
    j->announced = NULL;
    if (j->max_seq > r->rec.last_event_seq)
        r->rec.last_event_seq = j->max_seq;
    free(j);
    if (rc) {
        fail(r, "store_error", "the run's events could not be read to resume it");
        release(r);
        return;
    }
    /* Back from a wait for an approval (or taken over from one): executing again. */
    snprintf(r->rec.status, sizeof(r->rec.status), "%s", AH_RUN_RUNNING);
    emit(r, "run.resumed", json_pack("{s:i, s:s}", "attempt", r->rec.attempt, "node", r->rt->node));
    ah_log(AH_LOG_INFO, "runtime", "run resumed", AH_LF_STR("agent", r->rec.agent),
           AH_LF_INT("attempt", r->rec.attempt), AH_LF_INT("turns", r->rec.turns), AH_LF_END);
    /* Where was it? The last message of the stored conversation says. */
    json_t *last = json_array_get(r->messages, json_array_size(r->messages) - 1);
    const char *role = json_string_value(json_object_get(last, "role"));
    json_t *tcs = json_object_get(last, "tool_calls");
    if (role && strcmp(role, "assistant") == 0 && json_array_size(tcs) > 0) {
        /* Between a model answer and its tool results: run the calls without results. */
        acc_reset(r);
        size_t n = json_array_size(tcs);
        r->acc = calloc(n, sizeof(acc_call_t));
        for (size_t i = 0; r->acc && i < n; i++) {
            json_t *tc = json_array_get(tcs, i);
            json_t *fn = json_object_get(tc, "function");
            ah_buf_init(&r->acc[i].id, 0);
            ah_buf_init(&r->acc[i].name, 0);
            ah_buf_init(&r->acc[i].args, 0);
            ah_buf_puts(&r->acc[i].id, json_string_value(json_object_get(tc, "id")) ?: "");
            ah_buf_puts(&r->acc[i].name, json_string_value(json_object_get(fn, "name")) ?: "");
            ah_buf_puts(&r->acc[i].args,
                        json_string_value(json_object_get(fn, "arguments")) ?: "{}");
            r->n_acc = i + 1;
        }
        r->resume_tools = true;
    } else if (role && strcmp(role, "assistant") == 0) {
        /* The answer was there; only the final write was lost. */
        const char *out = json_string_value(json_object_get(last, "content"));
        free(r->rec.output);
        r->rec.output = strdup(out ? out : "");
        finish(r, AH_RUN_COMPLETED, NULL, NULL);
        release(r);
        return;
    }
    ah_tools_prepare(r->w->tools, r->spec, &r->cat, prepared, r);
    release(r);
}

/* Goes on with a claimed run: a normal start, or the stored state and events first. */
static void resume_continue(ah_run_t *r)
{
    /* A queued run that never started (async) starts normally, with its created event. */
    if (r->rec.started_at == 0) {
        persist(r, false, started);
        return;
    }
    load_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        fail(r, "internal_error", "out of memory");
        return;
    }
    snprintf(j->run_id, sizeof(j->run_id), "%s", r->rec.id);
    j->results = json_object();
    j->decisions = json_object();
    j->announced = json_object();
    j->run = r;
    if (ah_store_submit(r->rt->d.store, AH_STORE_READ, load_work, load_done, r->loop, j) != 0) {
        json_decref(j->results);
        json_decref(j->decisions);
        json_decref(j->announced);
        free(j);
        fail(r, "store_busy", "the store is busy");
    }
}

typedef struct acquire_job {
    ah_run_t *run;
    char *history;
    int rc;
} acquire_job_t;

static int acquire_work(ah_db_t *db, void *arg)
{
    acquire_job_t *j = arg;
    ah_run_t *r = j->run; /* read-only here: the loop waits for this job */
    double ttl = r->spec->session.ttl_s > 0 ? r->spec->session.ttl_s : 86400;
    j->rc = ah_store_session_acquire(db, r->rec.session_id, r->rec.key_id, r->rec.tenant,
                                     r->rec.agent, r->rec.id, ttl, ah_wall_ms(), &j->history);
    return 0;
}

static void acquire_done(int rc, void *arg)
{
    acquire_job_t *j = arg;
    ah_run_t *r = j->run;
    hold(r);
    if (rc == 0 && j->rc == 0) {
        r->history = j->history ? json_loads(j->history, 0, NULL) : NULL;
        r->session_held = true;
        resume_continue(r);
    } else if (j->rc == -EACCES) {
        fail(r, "session_conflict", "this session belongs to another API key");
    } else {
        /* Busy (another run holds it) or a store error: leave it; the claim will lapse. */
        r->finished = true;
        r->final_stored = true;
    }
    free(j->history);
    free(j);
    release(r);
}

/* A claimed run with a session takes it first (a queued multitask run waits for its turn). */
static void resume_acquire(ah_run_t *r)
{
    acquire_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        fail(r, "internal_error", "out of memory");
        return;
    }
    j->run = r;
    if (ah_store_submit(r->rt->d.store, AH_STORE_WRITE, acquire_work, acquire_done, r->loop, j) !=
        0) {
        free(j);
        fail(r, "store_busy", "the store is busy");
    }
}

int ah_runtime_resume(ah_runtime_t *rt, ah_loop_t *loop, const ah_run_rec_t *rec)
{
    rt_worker_t *w = tl_worker;
    if (!w || w->rt != rt || w->loop != loop)
        return -EINVAL;
    ah_run_t *r = run_new(rt, w, loop);
    if (!r)
        return -ENOMEM;
    r->seen_calls = json_object();
    if (ah_run_rec_copy(&r->rec, rec) != 0) {
        run_free(r);
        return -ENOMEM;
    }
    snprintf(r->request_id, sizeof(r->request_id), "%s", rec->id);
    json_t *state = rec->state ? json_loads(rec->state, 0, NULL) : NULL;
    const char *agent = json_string_value(json_object_get(state, "agent"));
    ah_buf_t err = AH_BUF_INIT;
    if (ah_registry_get(rt->d.registry, agent ? agent : rec->agent, &r->spec) != 0) {
        json_decref(state);
        hold(r);
        fail(r, "agent_not_found", "the run's agent no longer exists");
        release(r);
        return 0;
    }
    r->approval_deadline = json_integer_value(json_object_get(state, "approval_deadline"));
    if (state && json_is_array(json_object_get(state, "messages")))
        r->messages = json_incref(json_object_get(state, "messages"));
    else
        r->messages = parse_input(rec->input, &err);
    json_decref(state);
    if (!r->messages || apply_limits(r, rec->limits, &err) != 0) {
        hold(r);
        fail(r, "invalid_input", err.data ? err.data : "the stored run cannot be resumed");
        ah_buf_free(&err);
        release(r);
        return 0;
    }
    ah_buf_free(&err);
    if (admit_local(r, NULL) != 0) {
        /* No room after all: leave the run to a later claim (its lease will expire). */
        run_free(r);
        return -EBUSY;
    }
    hold(r);
    if (rec->session_id && *rec->session_id)
        resume_acquire(r);
    else
        resume_continue(r);
    release(r);
    return 0;
}

const char *ah_runtime_node(const ah_runtime_t *rt)
{
    return rt->node;
}

int ah_runtime_free_slots(ah_runtime_t *rt)
{
    int max_running = rt->d.cfg->runs.max_concurrent > 0 ? rt->d.cfg->runs.max_concurrent : 1000;
    pthread_mutex_lock(&rt->mu);
    int n = max_running - rt->n_running;
    pthread_mutex_unlock(&rt->mu);
    return n > 0 ? n : 0;
}

size_t ah_runtime_local_runs(ah_runtime_t *rt, char (*ids)[48], size_t max)
{
    rt_worker_t *w = tl_worker;
    if (!w || w->rt != rt)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < w->n_runs && n < max; i++)
        if (!w->runs[i]->finished)
            snprintf(ids[n++], 48, "%s", w->runs[i]->rec.id);
    return n;
}

ah_store_t *ah_runtime_store(const ah_runtime_t *rt)
{
    return rt->d.store;
}

const ah_config_t *ah_runtime_config(const ah_runtime_t *rt)
{
    return rt->d.cfg;
}
