/*
 * runs_idem.h - Idempotency-Key on run creation: the canonical hash of a run
 * request, and finding the run a key already created (column
 * runs.request_hash, migration 0005; the key itself is runs.idempotency_key,
 * unique per API key).
 *
 * A repeat of a request with the same Idempotency-Key within
 * AH_RUN_IDEM_WINDOW_MS gets the run the first request created when its
 * canonical request is the same, and 409 when it differs. After the window
 * the key is forgotten (ah_store_run_idem_expire) and may start a new run.
 *
 * The ah_store_* functions are store work functions' helpers (store.h).
 */
#ifndef AH_STORE_RUNS_IDEM_H
#define AH_STORE_RUNS_IDEM_H

#include <stdbool.h>
#include <stdint.h>

#include "store/db.h"
#include "store/runs.h"

#define AH_RUN_IDEM_WINDOW_MS (24LL * 3600 * 1000)
#define AH_RUN_IDEM_KEY_MAX   255 /* bytes of an Idempotency-Key */

/** True for a usable Idempotency-Key: 1..AH_RUN_IDEM_KEY_MAX printable ASCII bytes. */
bool ah_run_idem_key_valid(const char *key);

/**
 * SHA-256 (lowercase hex) of the canonical request: a JSON object of the
 * given fields dumped with sorted keys, compact, so key order and
 * whitespace in the client's body do not matter. JSON fields (input_json,
 * metadata_json, limits_json) are parsed first (text that does not parse is
 * hashed as a string). NULL fields are left out; mode NULL is "sync" and
 * multitask NULL is "reject" (their defaults), so leaving a field out and
 * sending its default hash the same. agent is the name in the path.
 */
void ah_run_request_hash(const char *agent, const char *input_json, const char *mode,
                         const char *session_id, const char *metadata_json, const char *limits_json,
                         const char *webhook_url, const char *multitask, char out[65]);

/**
 * Finds the run that key_id (NULL = "", no API key) created with idem_key
 * at or after since_ms (now - AH_RUN_IDEM_WINDOW_MS). 0 with *out (free with
 * ah_run_rec_free) and hash_out its request hash ("" for a run stored
 * without one: treat as the same request); -ENOENT when none (an older run
 * with that key does not count); -EINVAL; -errno.
 */
int ah_store_run_find_idempotent(ah_db_t *db, const char *key_id, const char *idem_key,
                                 int64_t since_ms, ah_run_rec_t *out, char hash_out[65]);

/** Stores a run's request hash (64 hex chars). 0, -ENOENT (no such run), -EINVAL, -errno. */
int ah_store_run_set_request_hash(ah_db_t *db, const char *run_id, const char *hash);

/**
 * Forgets key_id's idem_key if the run holding it was created before
 * before_ms (sets it NULL, so the unique index lets the key start a new
 * run). Call it in the job that inserts a run with an Idempotency-Key, just
 * before the insert, with before_ms = now - AH_RUN_IDEM_WINDOW_MS (the lookup
 * ignores such a run, the insert would still collide with it). Returns the
 * number of runs changed (0 or 1), -EINVAL, or -errno.
 */
int ah_store_run_idem_expire(ah_db_t *db, const char *key_id, const char *idem_key,
                             int64_t before_ms);

#endif
