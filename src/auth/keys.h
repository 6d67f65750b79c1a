/*
 * keys.h - agenthub API keys: the key format, hashing, roles, and the store
 * jobs that create, revoke and list keys (with their audit rows).
 *
 * A key is "ahk_" + base62 of 32 random bytes (47 characters, fixed width).
 * Only its SHA-256 (lowercase hex of the whole key string) is stored; the
 * plaintext is returned once, by ah_key_generate / ah_keys_create, and never
 * again. The first 12 characters ("ahk_3kF9aZ1q") are kept as `prefix` so a
 * person can tell keys apart. Key ids are "key_" + base62 of 12 random bytes.
 * See docs/internals/auth.md.
 */
#ifndef AH_AUTH_KEYS_H
#define AH_AUTH_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/keys.h"
#include "store/store.h"

#define AH_KEY_PREFIX          "ahk_"
#define AH_KEY_PREFIX_LEN      4
#define AH_KEY_RANDOM_BYTES    32
#define AH_KEY_B62_LEN         43                                   /* base62 width of 32 bytes */
#define AH_KEY_LEN             (AH_KEY_PREFIX_LEN + AH_KEY_B62_LEN) /* 47 */
#define AH_KEY_BUFSZ           (AH_KEY_LEN + 1)
#define AH_KEY_SHOW_LEN        12 /* characters kept as the display prefix */
#define AH_KEY_ID_RANDOM_BYTES 12
#define AH_KEY_DEFAULT_TENANT  "default"
#define AH_KEY_DEFAULT_ROLE    "user"

/* Roles, ordered: a role may do everything the roles below it may. */
typedef enum {
    AH_ROLE_NONE = 0, /* not a role: parse failure / unauthenticated */
    AH_ROLE_VIEWER = 1,
    AH_ROLE_USER = 2,
    AH_ROLE_DEVELOPER = 3,
    AH_ROLE_ADMIN = 4,
} ah_role_t;

/** Parses "admin|developer|user|viewer" (exact, lowercase). 0 or -EINVAL (*out untouched). */
int ah_role_parse(const char *s, ah_role_t *out);

/** The role's name ("admin"...), or "none" for AH_ROLE_NONE / out-of-range values. Static. */
const char *ah_role_name(ah_role_t r);

/** True when a principal with role `have` may do what needs role `need` (have >= need). */
bool ah_role_allows(ah_role_t have, ah_role_t need);

/**
 * Key names: 1..AH_KEY_NAME_MAX bytes of printable ASCII (0x20..0x7e).
 * Returns 0 or -EINVAL.
 */
#define AH_KEY_NAME_MAX (sizeof(((ah_key_rec_t *)0)->name) - 1)
int ah_key_name_check(const char *name);

/** Tenants: 1..63 characters of [A-Za-z0-9._-]. 0 or -EINVAL. */
#define AH_KEY_TENANT_MAX (sizeof(((ah_key_rec_t *)0)->tenant) - 1)
int ah_key_tenant_check(const char *tenant);

/**
 * Cheap syntactic check of a presented token: exactly AH_KEY_LEN bytes,
 * "ahk_" then base62. No hashing, no lookup. tok need not be NUL-terminated.
 */
bool ah_key_format_ok(const char *tok, size_t len);

/** SHA-256 of tok[0..len) as 64 lowercase hex chars + NUL (the stored `hash`). */
void ah_key_hash_hex(const char *tok, size_t len, char out[65]);

/** Decodes 64 hex chars into 32 bytes. 0 or -EINVAL. */
int ah_key_hash_from_hex(const char *hex, unsigned char out[32]);

/**
 * Validates the parameters of a new key and returns NULL when they are fine,
 * else a static user-facing message naming the bad field (for a 422 or a CLI
 * error). role NULL/"" means AH_KEY_DEFAULT_ROLE, tenant NULL/"" means
 * AH_KEY_DEFAULT_TENANT; expires_at is 0 (never) or a time after now_ms.
 */
const char *ah_key_params_error(const char *name, const char *role, const char *tenant,
                                int64_t expires_at, int64_t now_ms);

/**
 * Generates a new key. Writes the plaintext (AH_KEY_LEN chars + NUL) into
 * key_out (size n >= AH_KEY_BUFSZ) and fills *rec_out: a new id, the hash,
 * the display prefix, the canonical role name, the tenant (default
 * "default"), created_at = updated_at = now, revoked_at 0, expires_at as
 * given, created_by "". Nothing is stored. The plaintext exists only in
 * key_out: show it once, then wipe it (explicit_bzero).
 * Returns 0; -EINVAL for a bad name/role/tenant or expires_at < 0; -ENOSPC
 * when n is too small; -errno from getrandom. Does not check expires_at
 * against the clock (ah_key_params_error does), so tests can make expired keys.
 */
int ah_key_generate(char *key_out, size_t n, ah_key_rec_t *rec_out, const char *name,
                    const char *role, const char *tenant, int64_t expires_at);

/*
 * Store jobs for the API layer.
 *
 * Each operation has a blocking form (ah_keys_create ..., for threads that are
 * not event loops: CLI, tests) and a raw work function + argument struct for
 * ah_store_submit from a loop:
 *
 *     ah_keys_create_arg_t *a = calloc(1, sizeof(*a));
 *     if (ah_keys_create_prepare(a, name, role, tenant, exp, actor, req_id) != 0)
 *         -> 422 with a->error
 *     ah_store_submit(store, AH_STORE_WRITE, ah_keys_create_work, on_done, loop, a);
 *     on_done(rc, a): rc 0 -> reply with a->key (once) and a->rec, then
 *                     ah_keyring_apply(kr, &a->rec) so this process sees the key now;
 *                     explicit_bzero(a->key, sizeof(a->key)); free(a).
 *
 * The argument structs own copies of every input, so nothing the caller
 * passed needs to outlive the job. The work functions run on a store thread
 * and touch nothing but their argument and the db. They write the key row and
 * the audit row in the same job (the same transaction under the store's
 * group commit), so an audit row exists for every change.
 */

#define AH_KEYS_ACTOR_MAX      47  /* bytes of actor kept in created_by / audit actor */
#define AH_KEYS_REQUEST_ID_MAX 127 /* longer request ids are -EINVAL (HTTP bounds them) */
#define AH_KEYS_LIST_MAX       100000

typedef struct ah_keys_create_arg {
    /* Set by ah_keys_create_prepare. */
    ah_key_rec_t rec;       /* the new key's record (rec.created_by = actor) */
    char key[AH_KEY_BUFSZ]; /* plaintext: shown once, then wipe */
    char actor[AH_KEYS_ACTOR_MAX + 1];
    char request_id[AH_KEYS_REQUEST_ID_MAX + 1];
    const char *error; /* static message when prepare returned -EINVAL */
} ah_keys_create_arg_t;

/**
 * Validates the parameters (ah_key_params_error), generates the key and fills
 * *a. actor (who creates: a key id, "bootstrap", "cli"; NULL = "") and
 * request_id (NULL = "") are copied. No I/O besides getrandom: safe on a loop.
 * Returns 0; -EINVAL with a->error set; -errno from getrandom.
 */
int ah_keys_create_prepare(ah_keys_create_arg_t *a, const char *name, const char *role,
                           const char *tenant, int64_t expires_at, const char *actor,
                           const char *request_id);

/**
 * Store job (ah_store_work_fn): inserts a->rec and an audit row
 * ("key.create", target = key id, detail = name/role/tenant/prefix/expires_at;
 * never the key or its hash). 0, -EEXIST (id or hash collision: practically
 * impossible; retry with a new prepare), or the store's -errno.
 */
int ah_keys_create_work(ah_db_t *db, void *arg);

/** Blocking create (prepare + ah_store_call). Fills key_out (size >= AH_KEY_BUFSZ) and rec_out. */
int ah_keys_create(ah_store_t *s, const char *name, const char *role, const char *tenant,
                   int64_t expires_at, const char *actor, const char *request_id, char *key_out,
                   size_t key_out_n, ah_key_rec_t *rec_out);

typedef struct ah_keys_revoke_arg {
    /* in, set by ah_keys_revoke_prepare */
    char id[sizeof(((ah_key_rec_t *)0)->id)];
    char actor[AH_KEYS_ACTOR_MAX + 1];
    char request_id[AH_KEYS_REQUEST_ID_MAX + 1];
    int64_t now_ms;
    /* out */
    ah_key_rec_t rec; /* the key as it is after the job (revoked_at set) */
} ah_keys_revoke_arg_t;

/** Fills *a. 0, or -EINVAL for an empty/too long id or request id. */
int ah_keys_revoke_prepare(ah_keys_revoke_arg_t *a, const char *id, const char *actor,
                           const char *request_id);

/**
 * Store job: revokes the key and writes an audit row ("key.revoke").
 * 0 (a->rec filled); -ENOENT unknown id; -EALREADY the key was already
 * revoked (a->rec filled with the first revocation; no audit row); -errno.
 * After 0, call ah_keyring_apply(kr, &a->rec) so this process stops
 * accepting the key at once (other replicas: within the refresh interval).
 */
int ah_keys_revoke_work(ah_db_t *db, void *arg);

/** Blocking revoke. rec_out may be NULL. Same results as ah_keys_revoke_work. */
int ah_keys_revoke(ah_store_t *s, const char *id, const char *actor, const char *request_id,
                   ah_key_rec_t *rec_out);

typedef struct ah_keys_list_arg {
    /* in */
    bool include_revoked;
    /* out: sorted by created_at, then id; owned by the arg, freed by ah_keys_list_free */
    ah_key_rec_t *recs;
    size_t n, cap;
} ah_keys_list_arg_t;

/**
 * Store job: reads every key (revoked ones only when include_revoked) into
 * a->recs. 0, -E2BIG past AH_KEYS_LIST_MAX keys, -ENOMEM, or the store's -errno.
 * On error a->recs is freed and empty.
 */
int ah_keys_list_work(ah_db_t *db, void *arg);

/** Frees a->recs (the struct itself is the caller's). */
void ah_keys_list_free(ah_keys_list_arg_t *a);

/**
 * Blocking list. On 0, *out (malloc'd array, caller frees with free()) holds
 * *n records; *out may be NULL when *n is 0.
 */
int ah_keys_list(ah_store_t *s, bool include_revoked, ah_key_rec_t **out, size_t *n);

#endif
