/*
 * keys.h - API-key rows (table keys, migration 0001).
 *
 * These run inside store work functions (store.h): pass the ah_db_t the job
 * was given. Only the SHA-256 of a key's secret is stored (hash), never the
 * secret. Text fields are fixed-size and NUL-terminated; a value that does not
 * fit is refused (-E2BIG) rather than truncated.
 */
#ifndef AH_STORE_KEYS_H
#define AH_STORE_KEYS_H

#include <stdint.h>

#include "store/db.h"

typedef struct ah_key_rec {
    char id[48];
    char name[128];
    char hash[65];   /* SHA-256 hex of the secret */
    char prefix[16]; /* first characters of the secret, for display */
    char role[16];
    char tenant[64];
    int64_t created_at, updated_at; /* ms since the epoch */
    int64_t revoked_at;             /* 0 = not revoked */
    int64_t expires_at;             /* 0 = never */
    char created_by[48];            /* "" = unknown */
} ah_key_rec_t;

/** Callback for listings: return 0 to continue, nonzero to stop (returned by the list call). */
typedef int (*ah_key_fn)(void *ud, const ah_key_rec_t *k);

/**
 * Inserts k (all fields as given; tenant "" becomes "default"). Returns 0,
 * -EEXIST when the id or the hash already exists, -EINVAL when id, name, hash,
 * prefix or role is empty or a field is not NUL-terminated, or -errno.
 */
int ah_store_key_insert(ah_db_t *db, const ah_key_rec_t *k);

/**
 * Marks key id revoked at now_ms (also its updated_at, so caches see it).
 * Returns 0, -ENOENT when there is no such key or it is already revoked.
 */
int ah_store_key_revoke(ah_db_t *db, const char *id, int64_t now_ms);

/** Reads key id into *out. 0, -ENOENT, -E2BIG (a column too long for its field), -errno. */
int ah_store_key_get(ah_db_t *db, const char *id, ah_key_rec_t *out);

/** Reads the key whose hash is hash (64 hex chars) into *out. Same results as ah_store_key_get. */
int ah_store_key_get_by_hash(ah_db_t *db, const char *hash, ah_key_rec_t *out);

/**
 * Calls cb for every key with updated_at > updated_since_ms (0 = all), in
 * (updated_at, id) order: listings and the incremental key-cache refresh.
 * Returns 0, cb's nonzero value when it stopped, or -errno.
 *
 * Refresh callers: updated_at comes from the writers' clocks, and a change
 * committed late can carry a timestamp at or below one already seen. Query
 * with updated_since = (highest updated_at seen) - a few seconds and treat
 * rows as upserts, so no change is missed.
 */
int ah_store_key_list(ah_db_t *db, int64_t updated_since_ms, ah_key_fn cb, void *ud);

/** Total number of keys (revoked included). 0 or -errno. */
int ah_store_key_count(ah_db_t *db, int64_t *n);

#endif
