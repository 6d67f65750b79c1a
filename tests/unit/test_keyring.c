/*
 * test_keyring.c - the API key cache (auth/keyring.h) and the key store jobs
 * (auth/keys.h) against a real SQLite store in a temporary directory, with
 * real event loops on their own threads.
 *
 * AH_TEST_LOOKUPS sets the lookups per thread in the concurrency test
 * (default 100000; lower it under valgrind if it is too slow).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/keyring.h"
#include "auth/keys.h"
#include "core/clock.h"
#include "core/loop.h"
#include "store/audit.h"
#include "store/keys.h"
#include "store/store.h"
#include "testutil.h"

/* The fixture: a real SQLite store in a temporary directory (testutil.h). */
typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "keyring", 256);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

/* ---- helpers ---- */

static int lookup(ah_keyring_t *kr, const char *key, ah_principal_t *p)
{
    ah_principal_t tmp;
    return ah_keyring_lookup(kr, key, strlen(key), p ? p : &tmp);
}

/* Polls until lookup(key) returns want or deadline_ms passes; returns the last result. */
static int wait_lookup(ah_keyring_t *kr, const char *key, int want, int deadline_ms)
{
    uint64_t end = ah_mono_ns() + (uint64_t)deadline_ms * 1000000ull;
    int rc;
    while ((rc = lookup(kr, key, NULL)) != want && ah_mono_ns() < end)
        ah_test_sleep_ms(5);
    return rc;
}

static int insert_work(ah_db_t *db, void *arg)
{
    return ah_store_key_insert(db, arg);
}

static int revoke_direct_work(ah_db_t *db, void *arg)
{
    return ah_store_key_revoke(db, arg, ah_wall_ms());
}

static int delete_all_work(ah_db_t *db, void *arg)
{
    (void)arg;
    return ah_db_exec(db, "DELETE FROM keys");
}

/* Generates a key and inserts it straight into the store (no audit, no apply). */
static void insert_key(fixture_t *f, char *key, ah_key_rec_t *rec, const char *role,
                       int64_t expires_at)
{
    assert_int_equal(ah_key_generate(key, AH_KEY_BUFSZ, rec, "direct", role, NULL, expires_at), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, rec), 0);
}

/* A loop running on its own thread. */
typedef struct loop_thread {
    ah_loop_t *loop;
    pthread_t th;
} loop_thread_t;

static void *loop_main(void *arg)
{
    loop_thread_t *lt = arg;
    ah_loop_run(lt->loop);
    return NULL;
}

static void loop_start(loop_thread_t *lt)
{
    lt->loop = ah_loop_new();
    assert_non_null(lt->loop);
    assert_int_equal(pthread_create(&lt->th, NULL, loop_main, lt), 0);
}

static void loop_join(loop_thread_t *lt)
{
    ah_loop_stop(lt->loop);
    pthread_join(lt->th, NULL);
}

/* A lookup run on a loop's thread. */
typedef struct probe {
    ah_keyring_t *kr;
    const char *key;
    int rc;
    ah_principal_t p;
    atomic_int done;
} probe_t;

static void probe_cb(void *arg)
{
    probe_t *pr = arg;
    pr->rc = ah_keyring_lookup(pr->kr, pr->key, strlen(pr->key), &pr->p);
    atomic_store(&pr->done, 1);
}

static int lookup_on_loop(ah_loop_t *loop, ah_keyring_t *kr, const char *key, ah_principal_t *p)
{
    probe_t pr = {.kr = kr, .key = key, .rc = 1};
    atomic_init(&pr.done, 0);
    assert_int_equal(ah_loop_post(loop, probe_cb, &pr), 0);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while (!atomic_load(&pr.done) && ah_mono_ns() < end)
        ah_test_sleep_ms(1);
    assert_true(atomic_load(&pr.done));
    if (p)
        *p = pr.p;
    return pr.rc;
}

/* ---- tests ---- */

static void test_create_lookup(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 1.0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    assert_int_equal(ah_keyring_count(kr), 0);

    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    assert_int_equal(ah_keys_create(f->store, "ci", "developer", "acme", 0, "cli", "req_1", key,
                                    sizeof(key), &rec),
                     0);
    assert_string_equal(rec.created_by, "cli");
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(ah_keyring_count(kr), 1);

    ah_principal_t p;
    assert_int_equal(lookup(kr, key, &p), 0);
    assert_string_equal(p.key_id, rec.id);
    assert_string_equal(p.name, "ci");
    assert_string_equal(p.tenant, "acme");
    assert_int_equal(p.role, AH_ROLE_DEVELOPER);

    /* Same format, other secret. */
    char other[AH_KEY_BUFSZ];
    memcpy(other, key, sizeof(other));
    other[20] = other[20] == 'a' ? 'b' : 'a';
    assert_int_equal(lookup(kr, other, NULL), -ENOENT);
    /* Malformed: rejected before hashing. */
    assert_int_equal(lookup(kr, "not-a-key", NULL), -ENOENT);
    assert_int_equal(ah_keyring_lookup(kr, key, AH_KEY_LEN - 1, &p), -ENOENT);
    assert_int_equal(ah_keyring_lookup(kr, key, 0, &p), -ENOENT);
    assert_int_equal(ah_keyring_lookup(kr, NULL, 0, &p), -ENOENT);
    assert_int_equal(lookup(kr, rec.hash, NULL), -ENOENT); /* the hash is not a credential */

    ah_keyring_free(kr);
}

static void test_revoke(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 1.0);
    assert_non_null(kr);
    char k1[AH_KEY_BUFSZ], k2[AH_KEY_BUFSZ];
    ah_key_rec_t r1, r2;
    assert_int_equal(
        ah_keys_create(f->store, "one", NULL, NULL, 0, "cli", NULL, k1, sizeof(k1), &r1), 0);
    assert_int_equal(
        ah_keys_create(f->store, "two", NULL, NULL, 0, "cli", NULL, k2, sizeof(k2), &r2), 0);
    assert_int_equal(ah_keyring_start(kr), 0); /* the first load reads both */
    assert_int_equal(lookup(kr, k1, NULL), 0);
    assert_int_equal(lookup(kr, k2, NULL), 0);

    ah_key_rec_t after;
    assert_int_equal(ah_keys_revoke(f->store, r1.id, "cli", "req_9", &after), 0);
    assert_true(after.revoked_at > 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup(kr, k1, NULL), -ENOENT);
    assert_int_equal(lookup(kr, k2, NULL), 0);
    assert_int_equal(ah_keyring_count(kr), 1);

    assert_int_equal(ah_keys_revoke(f->store, r1.id, "cli", NULL, &after), -EALREADY);
    assert_true(after.revoked_at > 0);
    assert_int_equal(ah_keys_revoke(f->store, "key_nope", "cli", NULL, NULL), -ENOENT);

    /* The API path: revoke job, then apply the record: visible without a store read. */
    ah_keys_revoke_arg_t ra;
    assert_int_equal(ah_keys_revoke_prepare(&ra, r2.id, "key_admin", "req_10"), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, ah_keys_revoke_work, &ra), 0);
    assert_int_equal(lookup(kr, k2, NULL), 0); /* not applied yet (refresh is 1 s away) */
    assert_int_equal(ah_keyring_apply(kr, &ra.rec), 0);
    assert_int_equal(lookup(kr, k2, NULL), -ENOENT);
    assert_int_equal(ah_keyring_count(kr), 0);

    ah_keyring_free(kr);
}

static void test_apply_create(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 30.0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    ah_keys_create_arg_t *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    assert_int_equal(ah_keys_create_prepare(a, "api", "viewer", NULL, 0, "key_admin", "r"), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, ah_keys_create_work, a), 0);
    assert_int_equal(lookup(kr, a->key, NULL), -ENOENT); /* refresh is 30 s away */
    assert_int_equal(ah_keyring_apply(kr, &a->rec), 0);
    ah_principal_t p;
    assert_int_equal(lookup(kr, a->key, &p), 0);
    assert_int_equal(p.role, AH_ROLE_VIEWER);
    /* A refresh that reads the same row changes nothing. */
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup(kr, a->key, NULL), 0);
    assert_int_equal(ah_keyring_count(kr), 1);
    free(a);
    ah_keyring_free(kr);
}

static void test_expired(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 1.0);
    assert_non_null(kr);
    char old[AH_KEY_BUFSZ], later[AH_KEY_BUFSZ];
    ah_key_rec_t rold, rlater;
    insert_key(f, old, &rold, "user", ah_wall_ms() - 1000);
    insert_key(f, later, &rlater, "user", ah_wall_ms() + 3600 * 1000);
    assert_int_equal(ah_keyring_start(kr), 0);
    ah_principal_t p;
    assert_int_equal(lookup(kr, old, &p), -EKEYEXPIRED);
    assert_string_equal(p.key_id, rold.id); /* filled, for the log line */
    assert_int_equal(lookup(kr, later, &p), 0);
    assert_string_equal(p.key_id, rlater.id);
    assert_int_equal(ah_keyring_count(kr), 2);
    ah_keyring_free(kr);
}

static void test_bootstrap(void **state)
{
    fixture_t *f = *state;
    const char *admin = "boot-7f3a9c1e5b2d4f6a8c0e1f2a3b4c5d6e";
    ah_keyring_t *kr = ah_keyring_new(f->store, admin, 1.0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    ah_principal_t p;
    assert_int_equal(lookup(kr, admin, &p), 0);
    assert_string_equal(p.key_id, "bootstrap");
    assert_string_equal(p.tenant, "default");
    assert_int_equal(p.role, AH_ROLE_ADMIN);
    assert_int_equal(ah_keyring_lookup(kr, admin, strlen(admin) - 1, &p), -ENOENT);
    assert_int_equal(lookup(kr, "boot-7f3a9c1e5b2d4f6a8c0e1f2a3b4c5d6f", &p), -ENOENT);
    assert_int_equal(lookup(kr, "", &p), -ENOENT);
    /* Regular keys still work next to it. */
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    assert_int_equal(
        ah_keys_create(f->store, "u", NULL, NULL, 0, "bootstrap", NULL, key, sizeof(key), &rec), 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup(kr, key, &p), 0);
    assert_int_equal(p.role, AH_ROLE_USER);
    assert_int_equal(ah_keyring_count(kr), 1); /* bootstrap is not a cached key */
    ah_keyring_free(kr);

    /* Without a store, and a bootstrap key in the ahk_ format. */
    const char *ahk = "ahk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";
    kr = ah_keyring_new(NULL, ahk, 1.0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    assert_int_equal(lookup(kr, ahk, &p), 0);
    assert_int_equal(p.role, AH_ROLE_ADMIN);
    assert_int_equal(lookup(kr, admin, &p), -ENOENT);
    ah_keyring_free(kr);

    /* No bootstrap: "" means none. */
    kr = ah_keyring_new(NULL, "", 1.0);
    assert_non_null(kr);
    assert_int_equal(lookup(kr, "", &p), -ENOENT);
    assert_int_equal(lookup(kr, admin, &p), -ENOENT);
    ah_keyring_free(kr);
}

static void test_attached_loop(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 30.0);
    assert_non_null(kr);
    loop_thread_t lt;
    loop_start(&lt);
    assert_int_equal(ah_keyring_attach(kr, lt.loop), 0);
    assert_int_equal(ah_keyring_attach(kr, lt.loop), -EEXIST);
    assert_int_equal(ah_keyring_start(kr), 0);

    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    assert_int_equal(
        lookup_on_loop(lt.loop, kr, "ahk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg", NULL),
        -ENOENT);
    assert_int_equal(
        ah_keys_create(f->store, "w", "admin", NULL, 0, "cli", NULL, key, sizeof(key), &rec), 0);
    assert_int_equal(lookup_on_loop(lt.loop, kr, key, NULL), -ENOENT);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    ah_principal_t p;
    assert_int_equal(lookup_on_loop(lt.loop, kr, key, &p), 0);
    assert_string_equal(p.key_id, rec.id);
    assert_int_equal(p.role, AH_ROLE_ADMIN);

    /* Several publishes in a row while the loop is busy elsewhere: it ends on the newest. */
    for (int i = 0; i < 5; i++) {
        char k[AH_KEY_BUFSZ];
        ah_key_rec_t r;
        assert_int_equal(ah_key_generate(k, sizeof(k), &r, "burst", NULL, NULL, 0), 0);
        assert_int_equal(ah_keyring_apply(kr, &r), 0);
    }
    assert_int_equal(ah_keys_revoke(f->store, rec.id, "cli", NULL, NULL), 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup_on_loop(lt.loop, kr, key, NULL), -ENOENT);
    /* The refresh reloaded everything: the 5 applied keys are not in the store. */
    assert_int_equal(ah_keyring_count(kr), 0);

    loop_join(&lt);
    ah_keyring_free(kr); /* loop stopped, not freed: its queued swaps are dropped unrun */
    ah_loop_free(lt.loop);
}

static void test_detach(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 0.05);
    assert_non_null(kr);
    loop_thread_t a, b;
    loop_start(&a);
    loop_start(&b);
    assert_int_equal(ah_keyring_attach(kr, a.loop), 0);
    assert_int_equal(ah_keyring_attach(kr, b.loop), 0);
    assert_int_equal(ah_keyring_start(kr), 0);
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    insert_key(f, key, &rec, "user", 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup_on_loop(a.loop, kr, key, NULL), 0);
    assert_int_equal(lookup_on_loop(b.loop, kr, key, NULL), 0);

    /* Loop a goes away first while the refresher keeps running. */
    loop_join(&a);
    assert_int_equal(ah_keyring_detach(kr, a.loop), 0);
    assert_int_equal(ah_keyring_detach(kr, a.loop), -ENOENT);
    ah_loop_free(a.loop);
    ah_key_rec_t r2;
    char k2[AH_KEY_BUFSZ];
    insert_key(f, k2, &r2, "user", 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup_on_loop(b.loop, kr, k2, NULL), 0);
    assert_int_equal(lookup(kr, k2, NULL), 0);

    loop_join(&b);
    assert_int_equal(ah_keyring_detach(kr, b.loop), 0);
    ah_loop_free(b.loop);
    ah_keyring_free(kr);
}

static void test_periodic_refresh(void **state)
{
    fixture_t *f = *state;
    ah_keyring_t *kr = ah_keyring_new(f->store, NULL, 0.05);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    insert_key(f, key, &rec, "viewer", 0);
    /* No refresh_now: the refresher thread must find it within a few intervals. */
    assert_int_equal(wait_lookup(kr, key, 0, 5000), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, revoke_direct_work, rec.id), 0);
    assert_int_equal(wait_lookup(kr, key, -ENOENT, 5000), -ENOENT);

    /* kick: an immediate refresh without blocking the caller. */
    ah_keyring_free(kr);
    kr = ah_keyring_new(f->store, NULL, 30.0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    insert_key(f, key, &rec, "viewer", 0);
    ah_keyring_kick(kr);
    assert_int_equal(wait_lookup(kr, key, 0, 5000), 0);

    /* A row deleted behind the cache's back goes at the next full reload. */
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, delete_all_work, NULL), 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    assert_int_equal(lookup(kr, key, NULL), -ENOENT);
    assert_int_equal(ah_keyring_count(kr), 0);
    ah_keyring_free(kr);
}

static void test_no_store(void **state)
{
    (void)state;
    enum { N = 200 };
    ah_keyring_t *kr = ah_keyring_new(NULL, NULL, 0);
    assert_non_null(kr);
    assert_int_equal(ah_keyring_start(kr), 0);
    assert_int_equal(ah_keyring_refresh_now(kr), 0);
    char(*keys)[AH_KEY_BUFSZ] = calloc(N, AH_KEY_BUFSZ);
    ah_key_rec_t *recs = calloc(N, sizeof(*recs));
    assert_non_null(keys);
    assert_non_null(recs);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ah_key_generate(keys[i], AH_KEY_BUFSZ, &recs[i], "k",
                                         i % 2 ? "user" : "viewer", NULL, 0),
                         0);
        assert_int_equal(ah_keyring_apply(kr, &recs[i]), 0);
    }
    assert_int_equal(ah_keyring_count(kr), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(lookup(kr, keys[i], NULL), 0);
    /* Revoke the even ones, promote key 1. */
    for (int i = 0; i < N; i += 2) {
        recs[i].revoked_at = recs[i].updated_at = ah_wall_ms();
        assert_int_equal(ah_keyring_apply(kr, &recs[i]), 0);
    }
    memcpy(recs[1].role, "admin", sizeof("admin"));
    assert_int_equal(ah_keyring_apply(kr, &recs[1]), 0);
    assert_int_equal(ah_keyring_count(kr), N / 2);
    ah_principal_t p;
    for (int i = 0; i < N; i++)
        assert_int_equal(lookup(kr, keys[i], &p), i % 2 ? 0 : -ENOENT);
    assert_int_equal(lookup(kr, keys[1], &p), 0);
    assert_int_equal(p.role, AH_ROLE_ADMIN);
    /* A record with an unknown role is dropped; one with a bad hash is refused. */
    memcpy(recs[3].role, "owner", sizeof("owner"));
    assert_int_equal(ah_keyring_apply(kr, &recs[3]), 0);
    assert_int_equal(lookup(kr, keys[3], NULL), -ENOENT);
    recs[5].hash[0] = 'z';
    assert_int_equal(ah_keyring_apply(kr, &recs[5]), -EINVAL);
    free(keys);
    free(recs);
    ah_keyring_free(kr);
}

/* ---- concurrency ---- */

#define CHURN 8

typedef struct stress {
    ah_keyring_t *kr;
    char stable[AH_KEY_BUFSZ];
    char churn[CHURN][AH_KEY_BUFSZ];
    char junk[AH_KEY_BUFSZ]; /* well-formed, never issued */
    long lookups;
    atomic_int failures;
} stress_t;

typedef struct worker {
    stress_t *st;
    loop_thread_t lt; /* used when the worker is an attached loop */
    long done;
    atomic_int finished;
} worker_t;

/* One batch of lookups; true when all are done. */
static bool lookup_batch(worker_t *w, long batch)
{
    stress_t *st = w->st;
    ah_principal_t p;
    for (long i = 0; i < batch && w->done < st->lookups; i++, w->done++) {
        int rc;
        switch (w->done % 3) {
        case 0:
            if (lookup(st->kr, st->stable, &p) != 0 || p.role != AH_ROLE_DEVELOPER)
                atomic_fetch_add(&st->failures, 1);
            break;
        case 1:
            rc = lookup(st->kr, st->churn[w->done % CHURN], &p);
            if (rc != 0 && rc != -ENOENT)
                atomic_fetch_add(&st->failures, 1);
            break;
        default:
            if (lookup(st->kr, st->junk, &p) != -ENOENT)
                atomic_fetch_add(&st->failures, 1);
        }
    }
    return w->done >= st->lookups;
}

static void loop_batch_cb(void *arg)
{
    worker_t *w = arg;
    if (lookup_batch(w, 1000))
        atomic_store(&w->finished, 1);
    else if (ah_loop_post(w->lt.loop, loop_batch_cb, w) != 0)
        atomic_store(&w->finished, -1);
}

static void *plain_worker(void *arg)
{
    worker_t *w = arg;
    while (!lookup_batch(w, 1000)) {
    }
    atomic_store(&w->finished, 1);
    return NULL;
}

static void test_concurrent(void **state)
{
    fixture_t *f = *state;
    stress_t *st = calloc(1, sizeof(*st));
    assert_non_null(st);
    const char *env = getenv("AH_TEST_LOOKUPS");
    st->lookups = env ? strtol(env, NULL, 10) : 100000;
    if (st->lookups <= 0)
        st->lookups = 100000;
    atomic_init(&st->failures, 0);
    memcpy(st->junk, AH_KEY_PREFIX, AH_KEY_PREFIX_LEN);
    memset(st->junk + AH_KEY_PREFIX_LEN, 'z', AH_KEY_B62_LEN);
    assert_true(ah_key_format_ok(st->junk, strlen(st->junk)));
    st->kr = ah_keyring_new(f->store, NULL, 0.01);
    assert_non_null(st->kr);

    ah_key_rec_t stable, churn[CHURN];
    assert_int_equal(ah_keys_create(f->store, "stable", "developer", NULL, 0, "t", NULL, st->stable,
                                    AH_KEY_BUFSZ, &stable),
                     0);
    for (int i = 0; i < CHURN; i++)
        assert_int_equal(
            ah_key_generate(st->churn[i], AH_KEY_BUFSZ, &churn[i], "churn", NULL, NULL, 0), 0);

    /* Workers 0-1: attached loops (lock-free path). Workers 2-3: plain threads (mutex path). */
    worker_t w[4];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 4; i++) {
        w[i].st = st;
        atomic_init(&w[i].finished, 0);
    }
    for (int i = 0; i < 2; i++) {
        loop_start(&w[i].lt);
        assert_int_equal(ah_keyring_attach(st->kr, w[i].lt.loop), 0);
    }
    assert_int_equal(ah_keyring_start(st->kr), 0); /* refresher every 10 ms */
    assert_int_equal(lookup(st->kr, st->stable, NULL), 0);

    for (int i = 0; i < 2; i++)
        assert_int_equal(ah_loop_post(w[i].lt.loop, loop_batch_cb, &w[i]), 0);
    pthread_t plain[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&plain[i], NULL, plain_worker, &w[2 + i]), 0);

    /* Churn while they run: apply adds/revokes, plus store refreshes racing the applies. */
    int round = 0;
    uint64_t end = ah_mono_ns() + 120ull * 1000000000ull;
    for (;;) {
        bool all = true;
        for (int i = 0; i < 4; i++)
            all = all && atomic_load(&w[i].finished) != 0;
        if (all || ah_mono_ns() > end)
            break;
        ah_key_rec_t r = churn[round % CHURN];
        r.updated_at = ah_wall_ms();
        r.revoked_at = (round / CHURN) % 2 ? r.updated_at : 0;
        assert_int_equal(ah_keyring_apply(st->kr, &r), 0);
        if (round % 16 == 0)
            assert_int_equal(ah_keyring_refresh_now(st->kr), 0);
        round++;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(plain[i], NULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&w[i].finished), 1);
        assert_int_equal(w[i].done, st->lookups);
    }
    for (int i = 0; i < 2; i++)
        loop_join(&w[i].lt);
    assert_int_equal(atomic_load(&st->failures), 0);
    assert_true(round > 0);
    ah_keyring_free(st->kr);
    for (int i = 0; i < 2; i++)
        ah_loop_free(w[i].lt.loop);
    free(st);
}

/* ---- store jobs: list and audit ---- */

typedef struct audit_seen {
    int creates, revokes;
    bool leaked;
    char secret[AH_KEY_BUFSZ];
    char hash[65];
} audit_seen_t;

static int audit_cb(void *ud, const ah_audit_rec_t *r)
{
    audit_seen_t *s = ud;
    if (strcmp(r->action, "key.create") == 0)
        s->creates++;
    if (strcmp(r->action, "key.revoke") == 0)
        s->revokes++;
    if (r->detail && (strstr(r->detail, s->secret) || strstr(r->detail, s->hash)))
        s->leaked = true;
    if (!r->detail || r->detail[0] != '{' || !r->actor || strcmp(r->actor, "cli") != 0)
        s->leaked = true; /* every row must name its actor and carry JSON */
    return 0;
}

static int audit_work(ah_db_t *db, void *arg)
{
    return ah_store_audit_list(db, 0, 100, audit_cb, arg);
}

static void test_keys_list_and_audit_work(void **state)
{
    fixture_t *f = *state;
    char k[3][AH_KEY_BUFSZ];
    ah_key_rec_t r[3];
    const char *names[3] = {"first", "second \"quoted\"", "third"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ah_keys_create(f->store, names[i], NULL, NULL, 0, "cli", "req", k[i],
                                        sizeof(k[i]), &r[i]),
                         0);
    }
    assert_int_equal(ah_keys_revoke(f->store, r[1].id, "cli", "req", NULL), 0);

    ah_key_rec_t *recs;
    size_t n;
    assert_int_equal(ah_keys_list(f->store, false, &recs, &n), 0);
    assert_int_equal(n, 2);
    /* Keys made in the same millisecond are ordered by id: check the set, then the order. */
    bool first0 = strcmp(recs[0].id, r[0].id) == 0;
    assert_string_equal(recs[first0 ? 0 : 1].id, r[0].id);
    assert_string_equal(recs[first0 ? 1 : 0].id, r[2].id);
    assert_true(recs[0].created_at < recs[1].created_at ||
                (recs[0].created_at == recs[1].created_at && strcmp(recs[0].id, recs[1].id) < 0));
    free(recs);
    assert_int_equal(ah_keys_list(f->store, true, &recs, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 1; i < n; i++)
        assert_true(recs[i - 1].created_at <= recs[i].created_at);
    int revoked = 0;
    for (size_t i = 0; i < n; i++) {
        revoked += recs[i].revoked_at != 0;
        assert_int_equal(strlen(recs[i].prefix), 12);
    }
    assert_int_equal(revoked, 1);
    free(recs);

    audit_seen_t seen = {0};
    memcpy(seen.secret, k[0], sizeof(seen.secret));
    memcpy(seen.hash, r[0].hash, sizeof(seen.hash));
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, audit_work, &seen), 0);
    assert_int_equal(seen.creates, 3);
    assert_int_equal(seen.revokes, 1);
    assert_false(seen.leaked);

    /* A failed revoke writes no audit row. */
    assert_int_equal(ah_keys_revoke(f->store, r[1].id, "cli", "req", NULL), -EALREADY);
    memset(&seen, 0, sizeof(seen));
    memcpy(seen.secret, k[0], sizeof(seen.secret));
    memcpy(seen.hash, r[0].hash, sizeof(seen.hash));
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, audit_work, &seen), 0);
    assert_int_equal(seen.revokes, 1);

    /* Bad parameters never reach the store. */
    char key[AH_KEY_BUFSZ];
    assert_int_equal(
        ah_keys_create(f->store, "", NULL, NULL, 0, "cli", NULL, key, sizeof(key), NULL), -EINVAL);
    assert_int_equal(ah_keys_create(f->store, "x", NULL, NULL, 0, "cli", NULL, key, 10, NULL),
                     -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bootstrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attached_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_periodic_refresh, setup, teardown),
        cmocka_unit_test(test_no_store),
        cmocka_unit_test_setup_teardown(test_keys_list_and_audit_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
