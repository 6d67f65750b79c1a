/*
 * runtime.h - runs agents: the run loop as a state machine on an event loop.
 *
 * A run alternates model calls (through the gateway in process, so usage,
 * cost, limits and fallbacks apply and are attributed to the run) and tool
 * calls (http, mcp, exec; several in parallel), until a final answer, a
 * handoff to another agent, a limit, a cancel or an error. Every step is an
 * event (run.created, run.started, model.request, message.delta,
 * message.completed, tool.call, tool.result, handoff, run.completed,
 * run.failed, run.cancelled) with a increasing seq; the run's state (the
 * conversation) is persisted at each step boundary: before a model call and
 * after the tool results of a turn.
 *
 * Threads: ah_runtime_new/free on the main thread, attach/detach on each
 * worker's thread, everything else on the worker that started the run.
 */
#ifndef AH_AGENTS_RUNTIME_H
#define AH_AGENTS_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "agents/registry.h"
#include "auth/keyring.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/loop.h"
#include "gateway/gateway.h"
#include "store/runs.h"
#include "store/store.h"

typedef struct ah_runtime ah_runtime_t;
typedef struct ah_run ah_run_t;

typedef struct ah_runtime_deps {
    const ah_config_t *cfg;
    ah_store_t *store;
    ah_gateway_t *gateway;
    ah_registry_t *registry;
    struct ah_usage *usage;       /* may be NULL */
    struct ah_webhooks *webhooks; /* may be NULL: deliveries still go out on the next poll */
    struct ah_limits *limits;     /* may be NULL: runs' model calls then have no rate limits */
} ah_runtime_deps_t;

typedef struct ah_run_opts {
    const char *agent;
    const char *input_json;    /* a JSON string, or an array of chat messages */
    const char *mode;          /* "sync", "stream" or "async" */
    const char *session_id;    /* or NULL */
    const char *metadata_json; /* object or NULL */
    const char *limits_json;   /* per-request limits (only lower than the spec's) or NULL */
    const char *webhook_url;   /* or NULL */
    const char *idempotency_key;
    const char *request_hash; /* hash of the creating request (store/runs_idem.h), or NULL */
    const char *multitask;    /* NULL/"reject": 409 when the session is busy; "enqueue": queue */
    const char *request_id;
    const ah_principal_t *who; /* may be NULL (internal) */
} ah_run_opts_t;

/* Where a run reports to (the HTTP request that started it); all on the run's loop. */
typedef struct ah_run_observer {
    /* The run is stored (durable): the moment an async request may answer 202. Optional. */
    void (*created)(void *ud, const ah_run_rec_t *run);
    /* One event as it happens (seq, type, data JSON). */
    void (*event)(void *ud, int64_t seq, const char *type, const char *data, size_t n);
    /*
     * Terminal instead of done: the run was not started. 409 (run NULL:
     * nothing stored; code session_busy, session_conflict,
     * idempotency_key_in_progress), 503 (run NULL: the store could not store
     * it; code store_unavailable or store_busy) or 202 (run: stored as queued
     * behind its session's active run).
     */
    void (*refused)(void *ud, int status, const char *code, const char *msg,
                    const ah_run_rec_t *run);
    /* The run reached a final status (or, for async, was accepted: see ah_runtime_start). */
    void (*done)(void *ud, const ah_run_rec_t *run);
} ah_run_observer_t;

/** Creates the runtime. NULL on ENOMEM. */
ah_runtime_t *ah_runtime_new(const ah_runtime_deps_t *deps);

/** Per-worker state (tool HTTP client, MCP connections). Call on the loop's thread. */
int ah_runtime_attach(ah_runtime_t *rt, ah_loop_t *loop);

/** Releases this worker's state (after its runs ended). */
void ah_runtime_detach(ah_runtime_t *rt);

/** Frees the runtime (workers detached). */
void ah_runtime_free(ah_runtime_t *rt);

/**
 * Starts a run on loop. obs may be NULL (nobody waits). Returns 0 with *out
 * (valid until obs->done returns or ah_run_detach), or: -ENOENT no such
 * agent, -EINVAL bad input/limits (err says which field), -EBUSY the agent's
 * concurrency limit, -ENOMEM.
 */
int ah_runtime_start(ah_runtime_t *rt, ah_loop_t *loop, const ah_run_opts_t *o,
                     const ah_run_observer_t *obs, void *ud, ah_run_t **out, ah_buf_t *err);

/** The run's id ("run_..."). */
const char *ah_run_id(const ah_run_t *r);

/** Stops reporting to the observer (its client left); the run goes on. */
void ah_run_detach(ah_run_t *r);

/**
 * Cancels a run running in this process (any thread). key_id non-NULL: only
 * a run started with that key (non-admin callers). 0 or -ENOENT.
 */
int ah_runtime_cancel(ah_runtime_t *rt, const char *run_id, const char *key_id);

/**
 * Continues a run this replica just claimed (durable runs, queue.c): a queued
 * run starts; a run whose previous owner died resumes from its stored state
 * (the conversation at the last step boundary), re-running only the tool
 * calls that have no stored result. 0, -EBUSY (no room: the claim lapses),
 * -ENOMEM. Loop thread only.
 */
int ah_runtime_resume(ah_runtime_t *rt, ah_loop_t *loop, const ah_run_rec_t *rec);

/** This replica's lease owner id ("node_..."). */
const char *ah_runtime_node(const ah_runtime_t *rt);

/** Runs this replica may still start (runs.max_concurrent minus those running). */
int ah_runtime_free_slots(ah_runtime_t *rt);

/** Ids of the runs executing on the calling worker's loop (for lease heartbeats). */
size_t ah_runtime_local_runs(ah_runtime_t *rt, char (*ids)[48], size_t max);

ah_store_t *ah_runtime_store(const ah_runtime_t *rt);
const ah_config_t *ah_runtime_config(const ah_runtime_t *rt);

/**
 * A run ended in the store without executing here (queue expiry, cancel of a
 * queued or parked run): counts it in agenthub_runs_total and wakes the
 * webhook deliverer for the delivery its end enqueued. Any thread.
 */
void ah_runtime_ended_in_store(ah_runtime_t *rt, const char *agent, const char *status);

/*
 * Graceful shutdown (serve.c): ah_runtime_drain when the signal comes (the
 * claimers take nothing more; runs executing here go on, their leases still
 * renewed). As each worker's loop stops (its connections drained),
 * ah_runtime_finish_local runs that loop again until its runs are done or the
 * deadline; then ah_runtime_abandon stops what is left there without writing
 * anything. Once every worker stopped, ah_runtime_hand_back: one write,
 * queued behind every write the runs made, clears this replica's leases so
 * another replica resumes those runs (and starts the queued runs it had
 * claimed) at once, from their last stored step, instead of after
 * runs.lease_s.
 */

/** Starts the drain; deadline_ns (ah_mono_ns clock) ends the runs' grace. Any thread. */
void ah_runtime_drain(ah_runtime_t *rt, uint64_t deadline_ns);

/** Runs executing in this process (sync, stream and claimed ones). Any thread. */
int ah_runtime_running(ah_runtime_t *rt);

/**
 * During a drain, on a worker whose loop returned: runs the loop again until
 * the runs executing on it are done, the drain deadline passes, or something
 * breaks the loop (the server's stop at the end of the grace period).
 */
void ah_runtime_finish_local(ah_runtime_t *rt, ah_loop_t *loop);

/** True after ah_runtime_drain. Any thread. */
bool ah_runtime_draining(const ah_runtime_t *rt);

/** Stops the runs executing on the calling worker's loop (it no longer runs). Returns how many. */
size_t ah_runtime_abandon(ah_runtime_t *rt);

/**
 * Clears the leases this replica holds in the store (blocking: main thread,
 * after the workers stopped). Returns the number of runs handed back, or -errno
 * (logged; the runs are then resumed after runs.lease_s).
 */
int ah_runtime_hand_back(ah_runtime_t *rt);

/** Registers the runtime's metrics. */
int ah_runtime_metrics_init(ah_runtime_t *rt);

#endif
