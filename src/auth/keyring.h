/*
 * keyring.h - the in-memory cache of API keys used to authenticate every
 * request without a database read.
 *
 * Data: an immutable, refcounted *snapshot*: an open-addressing hash table of
 * the active (and expired, to answer -EKEYEXPIRED) keys, keyed by the SHA-256
 * of the key. Revoked keys are not in it. A snapshot is never modified after
 * it is published; every change builds a new one.
 *
 * Writers (one at a time, under the keyring mutex): the refresher thread
 * (every refresh_s it reads keys changed since the last refresh from the
 * store, plus a full reload every AH_KEYRING_FULL_RESYNC_S), ah_keyring_apply
 * (the API after a create/revoke), ah_keyring_refresh_now. When the result
 * differs from the current snapshot they publish the new one.
 *
 * Readers:
 *  - A thread running an attached ah_loop_t (an HTTP worker) reads its own
 *    per-attachment snapshot pointer through a thread-local: no lock, no
 *    shared write, no refcount traffic per lookup. On publish the keyring
 *    stores the new snapshot (with one reference) in the attachment's atomic
 *    `pending` slot and posts a swap to the loop (ah_loop_post); the swap, or
 *    the next lookup on that thread, whichever runs first, exchanges pending
 *    for NULL, installs it and drops the reference on the old snapshot.
 *    Because the lookup checks `pending` first, a change is visible to a
 *    worker's next lookup as soon as it is published, even if the loop's
 *    mailbox is behind.
 *  - Any other thread (CLI, tests, a loop not attached yet) takes the keyring
 *    mutex for the table probe (the SHA-256 is computed outside it).
 *
 * Memory safety (the full argument is in docs/internals/auth.md):
 *  - A snapshot is freed when its refcount drops to 0. References are held by
 *    the keyring (current), by each attachment (its installed snapshot, and
 *    its pending one). A worker only reads the snapshot its attachment holds,
 *    and only that worker's thread replaces it, so a snapshot cannot be freed
 *    under a lookup.
 *  - Atomic exchange on `pending` hands the reference from publisher to
 *    worker exactly once; release/acquire on it (and on the refcount) makes
 *    the snapshot's contents visible before its pointer.
 *  - The thread-local names the keyring by pointer and by a process-unique
 *    generation number, so a keyring freed and another allocated at the same
 *    address is never mistaken for the old one.
 *
 * Lifetime and threads:
 *   new -> [attach loops] -> start -> lookups ... -> (stop worker loops and
 *   join their threads) -> [detach] -> free -> ah_loop_free.
 *   ah_keyring_lookup, _apply, _count, _kick and _attach are thread-safe.
 *   _refresh_now blocks on the store: never call it on an event loop (use
 *   _apply or _kick there).
 */
#ifndef AH_AUTH_KEYRING_H
#define AH_AUTH_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "auth/keys.h"
#include "core/loop.h"
#include "store/store.h"

/* Re-read keys changed this long before the newest updated_at seen: covers
 * clock skew between replicas and transactions that commit after a refresh
 * read past their updated_at. */
#define AH_KEYRING_OVERLAP_MS 2000
/* Every this many seconds the refresher reloads all keys (catches anything
 * older than the overlap that was committed late). */
#define AH_KEYRING_FULL_RESYNC_S 60
/* The bootstrap key's principal. */
#define AH_KEYRING_BOOTSTRAP_ID "bootstrap"

typedef struct ah_keyring ah_keyring_t;

/*
 * Who a request authenticated as. The strings are copies (not pointers into
 * the cache), so the struct is valid for as long as the caller keeps it: it
 * can live in the request and outlive any snapshot swap.
 */
typedef struct ah_principal {
    char key_id[48]; /* "key_..." or "bootstrap"; safe to log */
    char name[128];
    char tenant[64];
    ah_role_t role;
} ah_principal_t;

/**
 * Creates a keyring with an empty snapshot. store may be NULL (no refresher;
 * keys only via ah_keyring_apply: tests). bootstrap_admin_key (config
 * auth.admin_key; NULL or "" = none) is accepted as role admin, id
 * "bootstrap", tenant "default"; only its SHA-256 is kept, the string is not
 * retained or logged. refresh_s <= 0 means 1 s; it is clamped to [0.01, 3600]. Returns NULL on
 * ENOMEM. Nothing runs until ah_keyring_start. Owned by the caller (ah_keyring_free).
 */
ah_keyring_t *ah_keyring_new(ah_store_t *store, const char *bootstrap_admin_key, double refresh_s);

/**
 * Loads every key once (blocking, on the calling thread) and starts the
 * refresher thread. The thread is started even when the first load fails (it
 * retries); the first load's result is returned so the caller can refuse to
 * serve: 0, -errno from the store, or -EAGAIN/-ENOMEM when the thread could not
 * start. With a NULL store returns 0 and starts nothing.
 */
int ah_keyring_start(ah_keyring_t *kr);

/**
 * Authenticates token[0..len) (not NUL-terminated). Returns 0 and fills *out;
 * -ENOENT unknown, revoked or malformed; -EKEYEXPIRED a known key past its
 * expires_at (*out is filled so the caller can log the key id). Tokens that are
 * not "ahk_" + 43 base62 chars are rejected before hashing, unless a bootstrap
 * key is set (it may have any format; then anything up to 4 KiB is hashed).
 * Never blocks on I/O; lock-free on an attached loop's thread.
 */
int ah_keyring_lookup(ah_keyring_t *kr, const char *token, size_t len, ah_principal_t *out);

/**
 * Makes lookups on loop's thread use a per-loop snapshot (the fast path).
 * Call from any thread, before or while the loop runs; takes effect when the
 * loop runs the posted install (until then lookups there use the mutex). The
 * loop must stay alive until ah_keyring_detach(kr, loop) or ah_keyring_free.
 * 0, -EEXIST (already attached), -ENOMEM.
 */
int ah_keyring_attach(ah_keyring_t *kr, ah_loop_t *loop);

/**
 * Undoes ah_keyring_attach: the keyring stops posting to loop and releases
 * the attachment's snapshots. Call it after the loop's thread has returned
 * from ah_loop_run and before ah_loop_free (the loop must not run again: a
 * swap it has queued names the attachment freed here). Lets loops be freed
 * before the keyring. 0 or -ENOENT.
 */
int ah_keyring_detach(ah_keyring_t *kr, ah_loop_t *loop);

/**
 * Reads changes from the store now and publishes them, on the calling thread
 * (serialised with the refresher). Blocks on the store: not on an event loop.
 * 0 or -errno (the keyring keeps its previous snapshot).
 */
int ah_keyring_refresh_now(ah_keyring_t *kr);

/** Asks the refresher thread to refresh at once. Never blocks; safe on a loop. */
void ah_keyring_kick(ah_keyring_t *kr);

/**
 * Merges one key record the caller just wrote (after a create or revoke job
 * completed) into a new snapshot and publishes it, without a store read: the
 * change is visible to every lookup in this process when this returns.
 * Non-blocking apart from the keyring mutex (held for O(keys) work). A refresh
 * that read the store before this call is discarded and re-read, so it cannot
 * undo the change. 0, -EINVAL (bad hash/role in rec), -ENOMEM.
 */
int ah_keyring_apply(ah_keyring_t *kr, const ah_key_rec_t *rec);

/** Keys in the current snapshot (active and expired, not revoked). For a gauge. */
size_t ah_keyring_count(ah_keyring_t *kr);

/**
 * Stops the refresher thread and frees the keyring, its attachments and
 * snapshots. Preconditions: no lookup is running or will run on any thread,
 * and every still-attached loop has stopped and will not run again (its
 * queued swaps point at the attachments freed here; ah_loop_free drops them
 * without running them). NULL is a no-op.
 */
void ah_keyring_free(ah_keyring_t *kr);

#endif
