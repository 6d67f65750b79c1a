/*
 * agents.h - agent registry rows (tables agents and agent_versions,
 * migration 0003). Call from store work functions (store.h) with the job's
 * ah_db_t. This layer knows nothing of the spec format: it stores the
 * canonical JSON and its hash as given (agents/spec.h makes them).
 *
 * Versions are immutable: a put with a spec different from the current one
 * adds version latest + 1 and makes it current; rollback moves
 * current_version to an existing older (or newer) version without writing a
 * version row (the API and CLI record the event in the audit log); archive
 * sets archived_at. Every change bumps revision and updated_at, which caches
 * use to pick up changes (registry.h). docs/internals/registry.md.
 */
#ifndef AH_STORE_AGENTS_H
#define AH_STORE_AGENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

#define AH_STORE_AGENT_NAME_MAX 64

/** An agents row. */
typedef struct ah_agent_row {
    char name[AH_STORE_AGENT_NAME_MAX + 1];
    int64_t current_version;
    int64_t latest_version;
    int64_t revision;    /* +1 on every change */
    int64_t archived_at; /* ms since the epoch; 0 = active */
    int64_t created_at, updated_at;
} ah_agent_row_t;

/** An agent_versions row without its spec text. */
typedef struct ah_agent_version_rec {
    int64_t version;
    char spec_hash[65];
    int64_t created_at;
    char created_by[48]; /* "" = unknown */
} ah_agent_version_rec_t;

/** What a put did. */
typedef struct ah_agent_put_result {
    ah_agent_row_t row;       /* the agents row afterwards */
    int64_t version;          /* current version afterwards */
    int64_t previous_version; /* current version before; 0 when the agent is new */
    bool changed;             /* a new version row was written */
    bool unarchived;          /* the agent was archived and is active again */
} ah_agent_put_result_t;

/**
 * Applies a spec to agent name. When the agent exists, is not archived and
 * its current version has the same spec_hash, nothing is written (changed =
 * false, version = current). Otherwise writes version latest + 1 (1 for a
 * new agent) with spec_json/spec_hash, makes it current and clears
 * archived_at (so an apply restores an archived agent, always as a new
 * version). canary_version (0 = none) must name a stored version of this
 * agent. created_by may be NULL.
 * Returns 0 and fills *out; -EINVAL (bad arguments), -ENXIO (no such canary
 * version), -EAGAIN (changed concurrently by another writer: retry), -errno.
 */
int ah_store_agent_put(ah_db_t *db, const char *name, const char *spec_json, size_t spec_len,
                       const char *spec_hash, int64_t canary_version, const char *created_by,
                       int64_t now_ms, ah_agent_put_result_t *out);

/** Reads agent name's row. 0, -ENOENT, -errno. */
int ah_store_agent_get(ah_db_t *db, const char *name, ah_agent_row_t *out);

/**
 * Reads version `version` of agent name (0 = its current version) into *rec
 * (may be NULL) and, when spec_json is not NULL, a malloc'd NUL-terminated
 * copy of its spec (the caller frees it). 0, -ENOENT (no such agent or
 * version), -ENOMEM, -errno.
 */
int ah_store_agent_version_get(ah_db_t *db, const char *name, int64_t version,
                               ah_agent_version_rec_t *rec, char **spec_json);

/** 1 when agent name has version `version`, 0 when not, -errno. */
int ah_store_agent_version_exists(ah_db_t *db, const char *name, int64_t version);

/**
 * Listing callback: row, and the current version's spec text (valid only
 * during the call; spec_len bytes, NUL-terminated). Return 0 to continue,
 * nonzero to stop (returned by the list call).
 */
typedef int (*ah_agent_list_fn)(void *ud, const ah_agent_row_t *row, const char *spec_json,
                                size_t spec_len);

/**
 * Calls cb for every agent (archived ones too) with updated_at >
 * updated_since_ms (-1 = all), in name order. Refresh callers: query with a
 * few seconds of overlap and keep, per name, the highest revision seen (see
 * keys.h on writers' clocks). 0, cb's nonzero value, or -errno.
 */
int ah_store_agent_list(ah_db_t *db, int64_t updated_since_ms, ah_agent_list_fn cb, void *ud);

typedef int (*ah_agent_version_fn)(void *ud, const ah_agent_version_rec_t *v);

/**
 * Calls cb for every version of agent name, oldest first. 0 (also when the
 * agent has no versions: check ah_store_agent_get for 404), cb's nonzero
 * value, or -errno.
 */
int ah_store_agent_versions(ah_db_t *db, const char *name, ah_agent_version_fn cb, void *ud);

/**
 * Makes `version` the current version of agent name. *previous (may be NULL)
 * gets the version current before; rolling back to the current version
 * changes nothing (returns 0, *previous == version). *out (may be NULL) gets
 * the row afterwards. 0, -ENOENT (no agent), -ENXIO (no such version),
 * -EPERM (archived: apply a spec to restore it), -errno.
 */
int ah_store_agent_rollback(ah_db_t *db, const char *name, int64_t version, int64_t now_ms,
                            int64_t *previous, ah_agent_row_t *out);

/**
 * Archives agent name (archived_at = now): it stops being offered and run;
 * its versions and runs stay. *out (may be NULL) gets the row afterwards.
 * 0, -ENOENT, -EALREADY (already archived; *out filled), -errno.
 */
int ah_store_agent_archive(ah_db_t *db, const char *name, int64_t now_ms, ah_agent_row_t *out);

#endif
