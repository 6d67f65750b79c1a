/*
 * keyring.c - the in-memory API-key cache: immutable refcounted snapshots,
 * published to attached worker loops, refreshed from the store. See
 * keyring.h for the design and docs/internals/auth.md for the safety argument.
 */
#include "auth/keyring.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/ticker.h"
#include "store/keys.h"

#define BOOTSTRAP_MAX_LEN 4096 /* longest token hashed when a bootstrap key is set */
#define APPLY_RETRIES     3    /* refresh re-reads when an apply raced it */
#define FULL_RESYNC_NS    ((uint64_t)AH_KEYRING_FULL_RESYNC_S * 1000000000ull)

_Static_assert(sizeof(((ah_principal_t *)0)->key_id) == sizeof(((ah_key_rec_t *)0)->id), "id");
_Static_assert(sizeof(((ah_principal_t *)0)->name) == sizeof(((ah_key_rec_t *)0)->name), "name");
_Static_assert(sizeof(((ah_principal_t *)0)->tenant) == sizeof(((ah_key_rec_t *)0)->tenant),
               "tenant");

/* One cached key. hash must stay the first member: the index reads it at offset 0. */
typedef struct entry {
    unsigned char hash[AH_SHA256_LEN];
    int64_t expires_at; /* 0 = never */
    ah_role_t role;
    char id[48];
    char name[128];
    char tenant[64];
} entry_t;

/*
 * Open-addressing index over an array of records that start with a 32-byte
 * hash. Slots hold record index + 1 (0 = empty); linear probing; at most half
 * full, so a probe always ends at an empty slot.
 */
typedef struct hindex {
    uint32_t *slots;
    size_t mask;
} hindex_t;

/* An immutable table of keys. Never modified after snap_new returns. */
typedef struct snap {
    atomic_long refs;
    size_t n;
    entry_t *entries;
    hindex_t index;
} snap_t;

/* A change read from the store (or applied): entry first, for the index. */
typedef struct delta {
    entry_t e;
    bool gone; /* revoked, or unusable (unknown role): remove */
    int64_t updated_at;
} delta_t;

typedef struct delta_list {
    delta_t *d;
    size_t n, cap;
    int64_t max_updated;
    bool full; /* keep only active records (a full reload replaces everything) */
    int64_t since;
} delta_list_t;

/* One worker loop's view. snap is touched only on the loop's thread once attached. */
typedef struct att {
    struct att *next;
    ah_keyring_t *kr;
    ah_loop_t *loop;
    snap_t *snap;              /* installed snapshot; one reference */
    _Atomic(snap_t *) pending; /* published, not yet installed; one reference */
} att_t;

struct ah_keyring {
    uint64_t gen; /* process-unique, immutable: tells keyrings apart in the thread-local */
    ah_store_t *store;
    double refresh_s;
    bool has_boot;
    unsigned char boot_hash[AH_SHA256_LEN];
    atomic_size_t count;

    pthread_mutex_t mu; /* guards current, atts, apply_gen, last_seen; held to build + publish */
    snap_t *current;    /* one reference */
    att_t *atts;
    uint64_t apply_gen; /* bumped by every apply: a refresh that read before it re-reads */
    int64_t last_seen;  /* highest updated_at merged from the store */

    pthread_mutex_t refresh_mu; /* serialises refreshes (held across the store read) */
    bool last_refresh_failed;   /* under refresh_mu: log failures once per outage */

    ah_ticker_t *refresher; /* runs refresher_tick every refresh_s once started */
    bool started;           /* ah_keyring_start ran (caller's thread only) */
    uint64_t next_full;     /* refresher thread only (set by start before it exists) */
};

/* The keyring attachment installed on this thread (one; others use the mutex path). */
static __thread struct {
    const ah_keyring_t *kr;
    uint64_t gen;
    att_t *att;
} tls_att;

static atomic_uint_fast64_t next_gen = 1;

/* ---- index ---- */

static size_t hash_slot(const unsigned char *h)
{
    uint64_t x;
    memcpy(&x, h, sizeof(x)); /* SHA-256 output: any 8 bytes are uniform */
    return (size_t)x;
}

static int hindex_init(hindex_t *hx, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    hx->slots = calloc(cap, sizeof(*hx->slots));
    if (!hx->slots)
        return -ENOMEM;
    hx->mask = cap - 1;
    return 0;
}

static const unsigned char *rec_hash(const void *base, size_t stride, size_t i)
{
    return (const unsigned char *)base + stride * i;
}

/* Record index of h, or -1. Compares hashes in constant time (ah_ct_equal). */
static long hindex_find(const hindex_t *hx, const void *base, size_t stride, const unsigned char *h)
{
    for (size_t i = hash_slot(h) & hx->mask;; i = (i + 1) & hx->mask) {
        uint32_t v = hx->slots[i];
        if (v == 0)
            return -1;
        if (ah_ct_equal(rec_hash(base, stride, v - 1), h, AH_SHA256_LEN))
            return (long)(v - 1);
    }
}

/* Indexes record i; false when its hash is already indexed (nothing added). */
static bool hindex_add(hindex_t *hx, const void *base, size_t stride, size_t i)
{
    const unsigned char *h = rec_hash(base, stride, i);
    size_t s = hash_slot(h) & hx->mask;
    for (; hx->slots[s] != 0; s = (s + 1) & hx->mask) {
        if (memcmp(rec_hash(base, stride, hx->slots[s] - 1), h, AH_SHA256_LEN) == 0)
            return false;
    }
    hx->slots[s] = (uint32_t)(i + 1);
    return true;
}

/* ---- snapshots ---- */

/* Builds a snapshot owning entries[0..n) (compacted in place; duplicates dropped). refs = 1. */
static snap_t *snap_new(entry_t *entries, size_t n)
{
    snap_t *s = calloc(1, sizeof(*s));
    if (!s || hindex_init(&s->index, n) != 0) {
        free(s);
        free(entries);
        return NULL;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (w != i)
            entries[w] = entries[i];
        if (hindex_add(&s->index, entries, sizeof(entry_t), w))
            w++;
    }
    s->entries = entries;
    s->n = w;
    atomic_init(&s->refs, 1);
    return s;
}

static const entry_t *snap_find(const snap_t *s, const unsigned char *h)
{
    long i = hindex_find(&s->index, s->entries, sizeof(entry_t), h);
    return i < 0 ? NULL : &s->entries[i];
}

static void snap_ref(snap_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void snap_unref(snap_t *s)
{
    if (!s)
        return;
    /* acq_rel: the last owner must see every other owner's reads finished before it frees. */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        free(s->index.slots);
        free(s->entries);
        free(s);
    }
}

static bool entry_eq(const entry_t *a, const entry_t *b)
{
    return a->expires_at == b->expires_at && a->role == b->role && strcmp(a->id, b->id) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->tenant, b->tenant) == 0 &&
           memcmp(a->hash, b->hash, AH_SHA256_LEN) == 0;
}

/* ---- converting store records ---- */

static void copy_field(char *out, size_t outsz, const char *s)
{
    size_t n = strnlen(s, outsz - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

/* 0, or -EINVAL when the record has no valid hash (it can be neither added nor removed). */
static int rec_to_delta(const ah_key_rec_t *k, delta_t *d)
{
    memset(d, 0, sizeof(*d));
    if (ah_key_hash_from_hex(k->hash, d->e.hash) != 0)
        return -EINVAL;
    d->updated_at = k->updated_at;
    d->e.expires_at = k->expires_at;
    copy_field(d->e.id, sizeof(d->e.id), k->id);
    copy_field(d->e.name, sizeof(d->e.name), k->name);
    copy_field(d->e.tenant, sizeof(d->e.tenant), k->tenant[0] ? k->tenant : AH_KEY_DEFAULT_TENANT);
    d->gone = k->revoked_at != 0;
    if (ah_role_parse(k->role, &d->e.role) != 0) {
        /* A role this binary does not know (newer replica?) grants nothing. */
        ah_log(AH_LOG_WARN, "auth", "key has an unknown role; it is not accepted",
               AH_LF_STR("key_id", k->id), AH_LF_STR("role", k->role), AH_LF_END);
        d->gone = true;
    }
    return 0;
}

static int delta_push(delta_list_t *dl, const delta_t *d)
{
    if (dl->n == dl->cap) {
        if (dl->cap >= AH_KEYS_LIST_MAX)
            return -E2BIG;
        size_t cap = dl->cap ? dl->cap * 2 : 16;
        if (cap > AH_KEYS_LIST_MAX)
            cap = AH_KEYS_LIST_MAX;
        delta_t *p = realloc(dl->d, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        dl->d = p;
        dl->cap = cap;
    }
    dl->d[dl->n++] = *d;
    return 0;
}

/* ah_store_key_list callback, on the store thread. */
static int collect_cb(void *ud, const ah_key_rec_t *k)
{
    delta_list_t *dl = ud;
    if (k->updated_at > dl->max_updated)
        dl->max_updated = k->updated_at;
    delta_t d;
    if (rec_to_delta(k, &d) != 0) {
        ah_log(AH_LOG_WARN, "auth", "key has a malformed hash; skipped", AH_LF_STR("key_id", k->id),
               AH_LF_END);
        return 0;
    }
    if (d.gone && dl->full)
        return 0;
    return delta_push(dl, &d);
}

static int collect_work(ah_db_t *db, void *arg)
{
    delta_list_t *dl = arg;
    return ah_store_key_list(db, dl->since, collect_cb, dl);
}

/* ---- merging ---- */

/*
 * Applies changes d[0..n) to cur. full: d is the complete set of active keys.
 * Sets *out to a new snapshot (refs 1), or NULL when nothing would change.
 * 0 or -ENOMEM.
 */
static int merge(const snap_t *cur, const delta_t *d, size_t n, bool full, snap_t **out)
{
    *out = NULL;
    bool changed = false;
    size_t active = 0;
    for (size_t i = 0; i < n; i++) {
        const entry_t *old = snap_find(cur, d[i].e.hash);
        if (!d[i].gone)
            active++;
        if (d[i].gone ? old != NULL : (!old || !entry_eq(old, &d[i].e)))
            changed = true;
    }
    if (full && active != cur->n)
        changed = true; /* some cached key is no longer in the store */
    if (!changed)
        return 0;

    hindex_t dset = {NULL, 0};
    size_t total = active;
    if (!full) {
        if (hindex_init(&dset, n) != 0)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++)
            hindex_add(&dset, d, sizeof(delta_t), i);
        total += cur->n;
    }
    entry_t *ents = malloc((total ? total : 1) * sizeof(*ents));
    if (!ents) {
        free(dset.slots);
        return -ENOMEM;
    }
    size_t w = 0;
    if (!full) {
        for (size_t i = 0; i < cur->n; i++) {
            if (hindex_find(&dset, d, sizeof(delta_t), cur->entries[i].hash) < 0)
                ents[w++] = cur->entries[i];
        }
        free(dset.slots);
    }
    for (size_t i = 0; i < n; i++) {
        if (!d[i].gone)
            ents[w++] = d[i].e;
    }
    *out = snap_new(ents, w);
    return *out ? 0 : -ENOMEM;
}

/* ---- publishing ---- */

/* On the loop's thread: installs the pending snapshot, if any. */
static void take_pending(att_t *a)
{
    snap_t *s = atomic_exchange_explicit(&a->pending, NULL, memory_order_acq_rel);
    if (s) {
        snap_t *old = a->snap;
        a->snap = s;
        snap_unref(old);
    }
}

static void swap_cb(void *arg)
{
    take_pending(arg);
}

static void install_cb(void *arg)
{
    att_t *a = arg;
    tls_att.kr = a->kr;
    tls_att.gen = a->kr->gen;
    tls_att.att = a;
}

/* Makes s (its reference passes to the keyring) current and hands it to every loop. Under mu. */
static void publish(ah_keyring_t *kr, snap_t *s)
{
    snap_t *old = kr->current;
    kr->current = s;
    atomic_store_explicit(&kr->count, s->n, memory_order_relaxed);
    for (att_t *a = kr->atts; a; a = a->next) {
        snap_ref(s);
        snap_t *prev = atomic_exchange_explicit(&a->pending, s, memory_order_acq_rel);
        if (prev) {
            /* Not installed yet; a swap is already on its way and will take s instead. */
            snap_unref(prev);
        } else if (ah_loop_post(a->loop, swap_cb, a) != 0) {
            /* The loop's next lookup still takes s from pending; only the old snapshot's
             * memory is held longer. */
            ah_log(AH_LOG_WARN, "auth", "could not post a key-cache swap to a worker",
                   AH_LF_INT("errno", ENOMEM), AH_LF_END);
        }
    }
    snap_unref(old);
}

static void refresher_tick(void *arg);

/* ---- public ---- */

ah_keyring_t *ah_keyring_new(ah_store_t *store, const char *bootstrap_admin_key, double refresh_s)
{
    ah_keyring_t *kr = calloc(1, sizeof(*kr));
    if (!kr)
        return NULL;
    kr->current = snap_new(NULL, 0);
    if (!kr->current) {
        free(kr);
        return NULL;
    }
    kr->gen = atomic_fetch_add(&next_gen, 1);
    kr->store = store;
    kr->refresh_s = refresh_s > 0 ? refresh_s : 1.0;
    if (kr->refresh_s < 0.01)
        kr->refresh_s = 0.01;
    if (kr->refresh_s > 3600)
        kr->refresh_s = 3600;
    kr->refresher = ah_ticker_new("ah-keyring", kr->refresh_s, refresher_tick, kr);
    if (!kr->refresher) {
        snap_unref(kr->current);
        free(kr);
        return NULL;
    }
    if (bootstrap_admin_key && *bootstrap_admin_key) {
        size_t n = strlen(bootstrap_admin_key);
        if (n > BOOTSTRAP_MAX_LEN) {
            ah_log(AH_LOG_ERROR, "auth", "admin key longer than 4096 bytes; it is not accepted",
                   AH_LF_END);
        } else {
            if (n < 16)
                ah_log(AH_LOG_WARN, "auth",
                       "admin key is shorter than 16 characters; use a long "
                       "random value (openssl rand -hex 32)",
                       AH_LF_END);
            ah_sha256(bootstrap_admin_key, n, kr->boot_hash);
            kr->has_boot = true;
        }
    }
    pthread_mutex_init(&kr->mu, NULL);
    pthread_mutex_init(&kr->refresh_mu, NULL);
    return kr;
}

static void fill_principal(ah_principal_t *out, const entry_t *e)
{
    memcpy(out->key_id, e->id, sizeof(out->key_id));
    memcpy(out->name, e->name, sizeof(out->name));
    memcpy(out->tenant, e->tenant, sizeof(out->tenant));
    out->role = e->role;
}

static int probe(const snap_t *s, const unsigned char *h, ah_principal_t *out)
{
    const entry_t *e = snap_find(s, h);
    if (!e)
        return -ENOENT;
    fill_principal(out, e);
    if (e->expires_at != 0 && ah_wall_ms() >= e->expires_at)
        return -EKEYEXPIRED;
    return 0;
}

int ah_keyring_lookup(ah_keyring_t *kr, const char *token, size_t len, ah_principal_t *out)
{
    if (!token)
        return -ENOENT;
    bool well_formed = ah_key_format_ok(token, len);
    if (!well_formed && !(kr->has_boot && len > 0 && len <= BOOTSTRAP_MAX_LEN))
        return -ENOENT; /* cheap reject: no hashing for junk */

    unsigned char h[AH_SHA256_LEN];
    ah_sha256(token, len, h);
    if (kr->has_boot && ah_ct_equal(h, kr->boot_hash, AH_SHA256_LEN)) {
        memset(out, 0, sizeof(*out));
        memcpy(out->key_id, AH_KEYRING_BOOTSTRAP_ID, sizeof(AH_KEYRING_BOOTSTRAP_ID));
        memcpy(out->name, "bootstrap admin", sizeof("bootstrap admin"));
        memcpy(out->tenant, AH_KEY_DEFAULT_TENANT, sizeof(AH_KEY_DEFAULT_TENANT));
        out->role = AH_ROLE_ADMIN;
        return 0;
    }
    if (!well_formed)
        return -ENOENT;

    if (tls_att.kr == kr && tls_att.gen == kr->gen) {
        /* Fast path: this thread's attachment; only this thread replaces att->snap. */
        att_t *a = tls_att.att;
        if (atomic_load_explicit(&a->pending, memory_order_acquire))
            take_pending(a);
        return probe(a->snap, h, out);
    }
    pthread_mutex_lock(&kr->mu);
    int rc = probe(kr->current, h, out);
    pthread_mutex_unlock(&kr->mu);
    return rc;
}

int ah_keyring_attach(ah_keyring_t *kr, ah_loop_t *loop)
{
    pthread_mutex_lock(&kr->mu);
    for (att_t *a = kr->atts; a; a = a->next) {
        if (a->loop == loop) {
            pthread_mutex_unlock(&kr->mu);
            return -EEXIST;
        }
    }
    att_t *a = calloc(1, sizeof(*a));
    if (!a) {
        pthread_mutex_unlock(&kr->mu);
        return -ENOMEM;
    }
    a->kr = kr;
    a->loop = loop;
    a->snap = kr->current;
    snap_ref(a->snap);
    atomic_init(&a->pending, NULL);
    /* The post orders a->snap's initialisation before the loop thread reads it. */
    if (ah_loop_post(loop, install_cb, a) != 0) {
        pthread_mutex_unlock(&kr->mu);
        snap_unref(a->snap);
        free(a);
        return -ENOMEM;
    }
    a->next = kr->atts;
    kr->atts = a;
    pthread_mutex_unlock(&kr->mu);
    return 0;
}

static void att_free(att_t *a)
{
    if (tls_att.att == a)
        memset(&tls_att, 0, sizeof(tls_att));
    snap_unref(atomic_exchange(&a->pending, NULL));
    snap_unref(a->snap);
    free(a);
}

int ah_keyring_detach(ah_keyring_t *kr, ah_loop_t *loop)
{
    pthread_mutex_lock(&kr->mu);
    att_t **pp = &kr->atts;
    while (*pp && (*pp)->loop != loop)
        pp = &(*pp)->next;
    att_t *a = *pp;
    if (a)
        *pp = a->next;
    pthread_mutex_unlock(&kr->mu);
    if (!a)
        return -ENOENT;
    att_free(a);
    return 0;
}

/* Reads from the store and publishes what changed. full: reload everything. */
static int refresh_once(ah_keyring_t *kr, bool full)
{
    int rc = 0;
    pthread_mutex_lock(&kr->refresh_mu);
    for (int attempt = 0; attempt < APPLY_RETRIES; attempt++) {
        delta_list_t dl = {NULL, 0, 0, 0, full, 0};
        pthread_mutex_lock(&kr->mu);
        dl.since = full ? -1 : kr->last_seen - AH_KEYRING_OVERLAP_MS;
        uint64_t gen0 = kr->apply_gen;
        pthread_mutex_unlock(&kr->mu);

        rc = ah_store_call(kr->store, AH_STORE_READ, collect_work, &dl);
        if (rc) {
            free(dl.d);
            break;
        }
        pthread_mutex_lock(&kr->mu);
        if (kr->apply_gen != gen0) {
            /* An apply published after our read began: our rows may predate it. Re-read. */
            pthread_mutex_unlock(&kr->mu);
            free(dl.d);
            rc = 0;
            continue;
        }
        snap_t *ns;
        rc = merge(kr->current, dl.d, dl.n, full, &ns);
        if (rc == 0) {
            if (ns)
                publish(kr, ns);
            if (dl.max_updated > kr->last_seen)
                kr->last_seen = dl.max_updated;
        }
        pthread_mutex_unlock(&kr->mu);
        free(dl.d);
        break;
    }
    if (rc && !kr->last_refresh_failed)
        ah_log(AH_LOG_WARN, "auth", "key cache refresh failed; serving the last keys read",
               AH_LF_INT("errno", -rc), AH_LF_END);
    else if (!rc && kr->last_refresh_failed)
        ah_log(AH_LOG_INFO, "auth", "key cache refresh recovered", AH_LF_END);
    kr->last_refresh_failed = rc != 0;
    pthread_mutex_unlock(&kr->refresh_mu);
    return rc;
}

/* The refresher thread's tick (core/ticker.h): incremental, full every FULL_RESYNC_NS. */
static void refresher_tick(void *arg)
{
    ah_keyring_t *kr = arg;
    bool full = ah_mono_ns() >= kr->next_full;
    if (full)
        kr->next_full = ah_mono_ns() + FULL_RESYNC_NS;
    refresh_once(kr, full); /* logs its own failures */
}

int ah_keyring_start(ah_keyring_t *kr)
{
    if (!kr->store || kr->started)
        return 0;
    int rc = refresh_once(kr, true);
    kr->next_full = ah_mono_ns() + FULL_RESYNC_NS;
    int trc = ah_ticker_start(kr->refresher);
    if (trc != 0) {
        ah_log(AH_LOG_ERROR, "auth", "could not start the key cache refresher",
               AH_LF_INT("errno", -trc), AH_LF_END);
        return trc;
    }
    kr->started = true;
    return rc;
}

int ah_keyring_refresh_now(ah_keyring_t *kr)
{
    if (!kr->store)
        return 0;
    /* Full: an incremental read could miss the row if another replica's clock pushed
     * last_seen more than the overlap ahead of ours. */
    return refresh_once(kr, true);
}

void ah_keyring_kick(ah_keyring_t *kr)
{
    ah_ticker_kick(kr->refresher);
}

int ah_keyring_apply(ah_keyring_t *kr, const ah_key_rec_t *rec)
{
    delta_t d;
    if (rec_to_delta(rec, &d) != 0)
        return -EINVAL;
    pthread_mutex_lock(&kr->mu);
    kr->apply_gen++;
    snap_t *ns;
    int rc = merge(kr->current, &d, 1, false, &ns);
    if (rc == 0 && ns)
        publish(kr, ns);
    pthread_mutex_unlock(&kr->mu);
    return rc;
}

size_t ah_keyring_count(ah_keyring_t *kr)
{
    return atomic_load_explicit(&kr->count, memory_order_relaxed);
}

void ah_keyring_free(ah_keyring_t *kr)
{
    if (!kr)
        return;
    ah_ticker_free(kr->refresher); /* joins the refresher before anything else goes */
    att_t *a = kr->atts;
    while (a) {
        att_t *next = a->next;
        att_free(a);
        a = next;
    }
    if (tls_att.kr == kr)
        memset(&tls_att, 0, sizeof(tls_att));
    snap_unref(kr->current);
    pthread_mutex_destroy(&kr->mu);
    pthread_mutex_destroy(&kr->refresh_mu);
    explicit_bzero(kr->boot_hash, sizeof(kr->boot_hash));
    free(kr);
}
