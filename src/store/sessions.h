/*
 * sessions.h - conversation memory carried across runs (table sessions,
 * migration 0005_sessions.sql), and the rules that keep it a conversation a
 * model accepts.
 *
 * A session is named by the client (a run's session_id) and owned by the API
 * key that first used it. A run acquires it when it starts (getting the
 * messages so far) and releases it when it ends (appending what it added);
 * while it is held, no other run may acquire it. The memory expires ttl
 * after its last use and is trimmed to a maximum number of messages.
 *
 * Message rules (ah_session_merge, and every release):
 *  - the leading system (or developer) messages are the session's system
 *    prompt: never trimmed; a run whose new messages start with system
 *    messages replaces them (clients that re-send their system prompt with
 *    every request do not pile up copies);
 *  - the rest is made of units: an assistant message with tool_calls and the
 *    tool messages answering it is one unit, any other message is a unit of
 *    its own. Trimming drops whole units, oldest first, then leading units
 *    until the history starts with a user message (when one is left);
 *  - a tool exchange that is not complete (a run cut off between the call
 *    and its results) and a tool message answering no call are dropped.
 *
 * The ah_store_session_* functions are store work functions' helpers: they
 * take the job's ah_db_t (store.h) and run on a store thread. Writes
 * (acquire, release, delete, purge) belong in WRITE jobs. In their results
 * -EBUSY always means "a run holds the session"; a database that was busy
 * (locked) gives -EAGAIN (retry). A done callback must still not read -EBUSY
 * as "held": the batch's COMMIT can fail with it; record the function's
 * result in the job instead.
 */
#ifndef AH_STORE_SESSIONS_H
#define AH_STORE_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "store/db.h"

#define AH_SESSION_ID_MAX        128 /* bytes of a session id */
#define AH_SESSION_TTL_DEFAULT_S 86400.0
/* ttl_s for ah_store_session_release: keep the TTL the session was acquired with (a run
 * ended in the store, e.g. cancelled while parked, where the agent's spec is not at hand). */
#define AH_SESSION_TTL_KEEP             (-1.0)
#define AH_SESSION_MAX_MESSAGES_DEFAULT 200
/* Stored messages beyond this many bytes of JSON are trimmed like extra messages. */
#define AH_SESSION_MAX_BYTES (8u << 20)
/*
 * A session whose active run is not in the runs table yet counts as busy for
 * this long after it was acquired (the run row may be committed just after
 * the session); after it, the session is taken as abandoned.
 */
#define AH_SESSION_ACQUIRE_GRACE_MS 60000

/*
 * SQL condition on a queued row of table runs (unaliased: "... FROM runs
 * WHERE status = 'queued' AND " AH_SESSION_RUN_STARTABLE_SQL): true when its
 * session does not stop it from starting: no session, or the session is not
 * held by another stored run that is not final, and no older queued run of the
 * same session waits before it. For the claimers, so a run waiting for its
 * session (multitask: enqueue) is not claimed in vain; the acquire when it
 * starts stays the real check. Portable; no arguments.
 */
#define AH_SESSION_RUN_STARTABLE_SQL                                                               \
    "(session_id IS NULL OR (NOT EXISTS (SELECT 1 FROM sessions s JOIN runs h ON "                 \
    "h.id = s.active_run_id WHERE s.id = runs.session_id AND h.id <> runs.id AND h.status NOT "    \
    "IN ('completed', 'failed', 'cancelled', 'expired')) AND NOT EXISTS (SELECT 1 FROM runs o "    \
    "WHERE o.session_id = runs.session_id AND o.status = 'queued' AND (o.created_at < "            \
    "runs.created_at OR (o.created_at = runs.created_at AND o.id < runs.id)))))"

typedef struct ah_session_rec {
    char id[AH_SESSION_ID_MAX + 1];
    char key_id[48];
    char tenant[64];
    char agent[80];
    char *messages; /* JSON array; owned by the record (ah_session_rec_free) */
    int n_messages;
    char active_run_id[48]; /* "" when no run holds it (a finished run counts as none) */
    int64_t created_at, updated_at, expires_at; /* ms */
} ah_session_rec_t;

/**
 * True when id can name a session: 1..AH_SESSION_ID_MAX bytes of
 * [A-Za-z0-9._:-]. The API answers 422 on session_id otherwise.
 */
bool ah_session_id_valid(const char *id);

/**
 * Takes the session id for run_id, creating it when missing. A session that
 * expired (and is not held) starts again empty, owned by key_id. On success
 * the session is held by run_id (active_run_id), its expiry is pushed to
 * now + ttl_s, and *out_messages_json is the conversation so far (a JSON
 * array, "[]" for a new session; malloc'd, the caller frees it).
 *
 * Acquiring again with the run that holds the session succeeds (a run
 * resumed after a crash). agent is the run's agent (shown by GET).
 * ttl_s <= 0 means AH_SESSION_TTL_DEFAULT_S; now is ms since the epoch.
 *
 * Fails with:
 *  -EBUSY   another run holds it and is not final (or it is not stored yet,
 *           see AH_SESSION_ACQUIRE_GRACE_MS), or older queued runs of the
 *           same session wait for it (multitask: enqueue keeps order);
 *  -EACCES  it belongs to another key (and has not expired);
 *  -EINVAL  a bad id (ah_session_id_valid) or run_id;
 *  -ENOMEM, or -errno from the database.
 * Nothing changes on failure.
 */
int ah_store_session_acquire(ah_db_t *db, const char *id, const char *key_id, const char *tenant,
                             const char *agent, const char *run_id, double ttl_s, int64_t now,
                             char **out_messages_json);

/**
 * Ends run_id's hold on the session: merges new_messages_json (a JSON array:
 * the run's input messages followed by what it produced; NULL or "[]" adds
 * nothing, e.g. for a failed run) into the conversation by the rules above,
 * trims it to max_messages (<= 0: AH_SESSION_MAX_MESSAGES_DEFAULT) and
 * AH_SESSION_MAX_BYTES, clears active_run_id and sets expires_at to
 * now + ttl_s (0: default; AH_SESSION_TTL_KEEP: the TTL it was acquired with,
 * which a held session's expires_at - updated_at still is).
 *
 * Returns 0; -ENOENT no such session; -ESTALE run_id does not hold it
 * (another run took it over: nothing is written); -EINVAL new_messages_json
 * is not an array of messages (nothing is written: release again with NULL);
 * -ENOMEM or -errno.
 */
int ah_store_session_release(ah_db_t *db, const char *id, const char *run_id,
                             const char *new_messages_json, int max_messages, double ttl_s,
                             int64_t now);

/**
 * Reads a live session into *out (free with ah_session_rec_free).
 * owner_key_id restricts to that key's session (non-admin callers); NULL
 * reads any. -ENOENT when missing, expired (and not held), or owned by
 * another key; -errno. active_run_id is "" when its run is final.
 */
int ah_store_session_get(ah_db_t *db, const char *id, const char *owner_key_id, int64_t now,
                         ah_session_rec_t *out);

/**
 * Deletes a session (same visibility as ah_store_session_get). 0; -ENOENT;
 * -EBUSY while a run holds it (*busy_run_id, when not NULL, gets that run's
 * id, size 48); -errno.
 */
int ah_store_session_delete(ah_db_t *db, const char *id, const char *owner_key_id, int64_t now,
                            char busy_run_id[48]);

/**
 * Deletes up to limit (1..10000) sessions that expired before now and that
 * no live run holds. Returns how many were deleted, or -errno.
 */
int ah_store_sessions_purge_expired(ah_db_t *db, int64_t now, int limit);

/**
 * The oldest queued run waiting for session id (multitask: enqueue), into
 * run_id (size 48). 0, -ENOENT when none, -errno. After a release, the
 * runtime starts that run (its acquire then succeeds).
 */
int ah_store_session_next_queued(ah_db_t *db, const char *id, char run_id[48]);

/** Frees the strings of a record (the struct itself is the caller's). NULL is a no-op. */
void ah_session_rec_free(ah_session_rec_t *r);

/*
 * Pure helpers (no database), shared by release and the runtime so that the
 * model sees exactly the conversation that will be stored.
 */

/**
 * The conversation for a run: history (a session's messages) followed by
 * input (the run's input messages), by the rules above: input's leading
 * system messages, if any, replace history's; incomplete tool exchanges are
 * dropped. Neither argument is changed or stolen; the new array shares
 * their message objects (do not modify them through it). Returns the new
 * array (the caller owns the reference) or NULL on ENOMEM / when an argument
 * is not an array.
 */
json_t *ah_session_merge(json_t *history, json_t *input);

/**
 * Trims messages in place to at most max_messages (<= 0: default) and
 * max_bytes of compact JSON (0: AH_SESSION_MAX_BYTES) by the rules above.
 * Returns the number of messages removed, or -EINVAL (not an array).
 */
int ah_session_trim(json_t *messages, int max_messages, size_t max_bytes);

#endif
