/*
 * registry.h - the agent registry: the in-memory cache of every agent's
 * current spec that the runtime reads, and the jobs that change agents in
 * the store (apply, with validation against the config and the store).
 *
 * Data: one entry per agent name holding refcounted, immutable specs
 * (agents/spec.h): the current version and, when the current spec has a
 * canary, the canary version's spec. Versions never change once written, so
 * a spec cached for (name, version) is valid forever.
 *
 * Writers (under the registry mutex, which guards the entry table and
 * nothing else; no I/O is done while holding it):
 *  - the refresher thread, every refresh_s: reads agents whose updated_at is
 *    newer than the last seen (minus AH_REGISTRY_OVERLAP_MS), plus all of
 *    them every AH_REGISTRY_FULL_RESYNC_S, so changes made through other
 *    replicas (or the CLI) show up within about a second;
 *  - ah_registry_update_apply, after this process changed an agent (the API),
 *    so the change is visible here before the API answers.
 * Each agents row carries a revision bumped by every change; an entry is
 * only replaced by a higher revision, so a slow refresh can never undo a
 * newer apply.
 *
 * Readers (any thread, including event loops: lookups never block on I/O):
 * ah_registry_get / _pick / _exists / _names take the mutex for a lookup and
 * a reference count increment.
 *
 * Lifetime: new -> start (first load, blocking) -> ... -> free (stops the
 * thread). docs/internals/registry.md.
 */
#ifndef AH_AGENTS_REGISTRY_H
#define AH_AGENTS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/spec.h"
#include "core/buf.h"
#include "core/config.h"
#include "store/agents.h"
#include "store/store.h"

#define AH_REGISTRY_OVERLAP_MS    2000 /* re-read changes this much older than the newest seen */
#define AH_REGISTRY_FULL_RESYNC_S 60   /* reload every agent this often */
#define AH_REGISTRY_MAX_FILES     1024 /* files in one apply */

typedef struct ah_registry ah_registry_t;

/**
 * Creates an empty registry reading from store (NULL: no refresher; entries
 * only through ah_registry_update_apply, for tests). refresh_s <= 0 means
 * 1 s; clamped to [0.01, 3600]. NULL on ENOMEM. Owned by the caller
 * (ah_registry_free).
 */
ah_registry_t *ah_registry_new(ah_store_t *store, double refresh_s);

/**
 * Loads every agent once (blocking: not on an event loop) and starts the
 * refresher thread, which is started even when the load fails (it retries).
 * Returns the load's result: 0, -errno from the store, or -EAGAIN when the
 * thread could not start. 0 with a NULL store.
 */
int ah_registry_start(ah_registry_t *reg);

/** Reloads every agent now on the calling thread. Blocking. 0 or -errno. */
int ah_registry_refresh_now(ah_registry_t *reg);

/** Asks the refresher to refresh at once. Never blocks. */
void ah_registry_kick(ah_registry_t *reg);

/**
 * The current spec of agent name with a new reference (release with
 * ah_agent_spec_unref); spec->version is its version. 0, or -ENOENT when
 * there is no such agent, it is archived, or its stored spec could not be
 * read by this binary.
 */
int ah_registry_get(ah_registry_t *reg, const char *name, ah_agent_spec_t **spec);

/**
 * The spec a new run of agent name should use: the current version, or with
 * probability canary.weight % the canary version, decided by rnd (any
 * uniformly random number: (rnd % 100) < weight picks the canary). *spec gets
 * a reference; *version (may be NULL) its version, which the run records.
 * 0 or -ENOENT.
 */
int ah_registry_pick(ah_registry_t *reg, const char *name, uint64_t rnd, ah_agent_spec_t **spec,
                     int64_t *version);

/** True when agent name exists here and is not archived. */
bool ah_registry_exists(ah_registry_t *reg, const char *name);

/**
 * Names of the active agents, sorted, for GET /v1/models ("agent:NAME").
 * *names is a malloc'd array of malloc'd strings (ah_registry_names_free).
 * 0 or -ENOMEM.
 */
int ah_registry_names(ah_registry_t *reg, char ***names, size_t *n);

void ah_registry_names_free(char **names, size_t n);

/** Active agents cached. */
size_t ah_registry_count(ah_registry_t *reg);

/** Stops the refresher and frees the registry; references held elsewhere stay valid. */
void ah_registry_free(ah_registry_t *reg);

/* ---- updates from this process ---- */

/** One agent as read from the store, ready to merge (opaque). */
typedef struct ah_registry_update ah_registry_update_t;

/**
 * Reads agent name's row and the spec texts the registry needs (current
 * version, canary version) with db, on a store thread (inside the work
 * function that changed the agent). *out is malloc'd. 0, -ENOENT, -errno.
 */
int ah_registry_update_read(ah_db_t *db, const char *name, ah_registry_update_t **out);

/**
 * Parses the update's specs and merges it (unless the registry already holds
 * a newer revision), then frees u. Any thread; never blocks on I/O. 0,
 * -EINVAL (a stored spec this binary cannot read: logged, entry unchanged),
 * -ENOMEM.
 */
int ah_registry_update_apply(ah_registry_t *reg, ah_registry_update_t *u);

/** Frees an update that is not applied. NULL is a no-op. */
void ah_registry_update_free(ah_registry_update_t *u);

/* ---- changing agents ---- */

/**
 * A store job that applies specs: checks each against the world
 * (ah_agent_spec_check_context: models from cfg, handoffs to agents in the
 * store or in this batch, canary versions in the store), and only when all
 * pass, puts every one (ah_store_agent_put) with an audit row
 * ("agent.apply", target "agent:NAME", actor). All or nothing: one job, one
 * savepoint. Submit ah_registry_put_work with AH_STORE_WRITE and a pointer
 * to this struct (it may be the first member of a larger job).
 */
typedef struct ah_registry_put {
    /* in */
    ah_agent_spec_t *const *specs;
    size_t n;
    const ah_config_t *cfg; /* NULL: models not checked */
    const char *actor;      /* key id, "cli", "agents_dir" */
    const char *request_id; /* may be NULL */
    int64_t now_ms;
    bool want_updates; /* fill updates[] for ah_registry_update_apply */
    bool dry_run;      /* check and compute everything, then roll back (returns -ECANCELED) */
    /* out: results[i] and updates[i] belong to specs[i]; free with ah_registry_put_clear */
    ah_agent_put_result_t *results;
    ah_registry_update_t **updates;
    ah_agent_errors_t errs; /* -EINVAL: what is wrong */
} ah_registry_put_t;

/**
 * Work function for ah_registry_put_t. Returns 0, -EINVAL (errs filled:
 * unknown model, handoff or canary version; nothing written), -ECANCELED
 * (dry_run: results filled, nothing written), -EAGAIN (a concurrent change:
 * retry), -ENOMEM, -errno.
 */
int ah_registry_put_work(ah_db_t *db, void *arg);

/** Frees the outputs of a put (results, updates not applied, errs). */
void ah_registry_put_clear(ah_registry_put_t *p);

/**
 * `kubectl apply` for agents: parses the file at path, or every *.yaml,
 * *.yml and *.json file directly in the directory path (sorted by name;
 * hidden files skipped), checks them all (also: the same agent twice), then
 * applies them in one store job (ah_registry_put_work, actor as given).
 * Blocking: for the CLI and startup, never an event loop. Appends one line
 * per agent to report ("agent/NAME: created version N", "agent/NAME:
 * unchanged (version N)"; with AH_REGISTRY_DRY_RUN "would create version N"),
 * or every problem to errs.
 * Returns the number of agents applied (>= 0), -EINVAL (errs filled, nothing
 * written), -ENOENT/-errno (path unreadable, also in errs), -EAGAIN, -errno.
 */
int ah_registry_apply_path(ah_store_t *store, const ah_config_t *cfg, const char *path,
                           const char *actor, unsigned flags, ah_buf_t *report,
                           ah_agent_errors_t *errs);

#define AH_REGISTRY_DRY_RUN 0x1u /* apply_path: check everything, write nothing ("would ...") */

#endif
