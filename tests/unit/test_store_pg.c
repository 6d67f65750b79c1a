/*
 * test_store_pg.c - the store on PostgreSQL: the whole store suite
 * (store_suite.h) run on SQLite and then on a throwaway PostgreSQL server
 * (pgtest.h), plus what only PostgreSQL has: claims that skip rows another
 * transaction holds (FOR UPDATE SKIP LOCKED), URLs with passwords in errors,
 * and a server restart under a running store.
 *
 * Without PostgreSQL installed the PostgreSQL half prints a SKIP line and the
 * SQLite half still runs.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "pgtest.h"
#include "store_suite.h"

/* ---- backends ------------------------------------------------------------ */

static char sqlite_dir[64];
static int sqlite_seq;

static int sqlite_new_url(char *url, size_t n)
{
    int w = snprintf(url, n, "sqlite://%s/t%d/agenthub.db", sqlite_dir, ++sqlite_seq);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

static const suite_backend_t sqlite_be = {"sqlite", sqlite_new_url};

static ah_pgtest_t pg;

static int pg_new_url(char *url, size_t n)
{
    return ah_pgtest_new_db(&pg, url, n);
}

static const suite_backend_t pg_be = {"postgres", pg_new_url};

static int sqlite_group_setup(void **state)
{
    snprintf(sqlite_dir, sizeof(sqlite_dir), "/tmp/ah_test_store_pg_XXXXXX");
    if (!mkdtemp(sqlite_dir))
        return -1;
    suite_be = &sqlite_be;
    return 0;
}

static int sqlite_group_teardown(void **state)
{
    ah_pgtest_rmtree(sqlite_dir);
    return 0;
}

static int pg_group_setup(void **state)
{
    suite_be = &pg_be;
    return 0;
}

/* ---- PostgreSQL only ----------------------------------------------------- */

static ah_db_t *raw_open(int busy_ms)
{
    ah_db_t *db = NULL;
    ah_db_opts_t o = {.busy_timeout_ms = busy_ms};
    assert_int_equal(ah_db_open(suite_url, &o, &db, NULL), 0);
    return db;
}

typedef struct {
    const char *owner;
    char ids[8][48];
    int n;
} claimed_ids_t;

static int note_claim(void *ud, const ah_run_rec_t *r)
{
    claimed_ids_t *c = ud;
    if (c->n < 8)
        snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", r->id);
    c->n++;
    return 0;
}

/*
 * Two replicas claim while both transactions are open: the second gets the
 * next runs at once instead of waiting for the first's row locks (it would
 * hit lock_timeout and fail with -EBUSY if it waited).
 */
static void test_pg_claim_skips_locked_rows(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof(id), "run_%d", i);
        suite_add_run(s, id, AH_RUN_QUEUED, i, NULL, 0);
    }
    ah_store_close(s);

    ah_db_t *a = raw_open(10000), *b = raw_open(200);
    claimed_ids_t ca = {"node-a", {{0}}, 0}, cb = {"node-b", {{0}}, 0};
    assert_int_equal(ah_db_begin(a, true), 0);
    assert_int_equal(ah_store_run_claim(a, "node-a", 1000, 30000, 3, note_claim, &ca), 3);
    assert_int_equal(ah_db_begin(b, true), 0);
    assert_int_equal(ah_store_run_claim(b, "node-b", 1000, 30000, 3, note_claim, &cb), 3);
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 3; k++)
            assert_string_not_equal(ca.ids[i], cb.ids[k]);
    }
    /* A's runs are the oldest three (delivered in no particular order). */
    for (int i = 0; i < 3; i++)
        assert_true(strcmp(ca.ids[i], "run_0") == 0 || strcmp(ca.ids[i], "run_1") == 0 ||
                    strcmp(ca.ids[i], "run_2") == 0);
    assert_int_equal(ah_db_commit(a), 0);
    assert_int_equal(ah_db_commit(b), 0);
    cb.n = 0;
    assert_int_equal(ah_store_run_claim(b, "node-b", 1000, 30000, 3, note_claim, &cb), 0);
    int64_t n = 0;
    assert_int_equal(ah_db_query_int(a,
                                     "SELECT COUNT(*) FROM runs WHERE status = 'running' AND "
                                     "attempt = 1 AND lease_expires_at = 31000",
                                     NULL, 0, &n),
                     0);
    assert_int_equal(n, 6);
    ah_db_close(a);
    ah_db_close(b);
}

/*
 * A stalled process (SIGSTOP, a frozen VM) between two statements of a write
 * transaction: the server ends its session after busy_timeout_ms idle in the
 * transaction, so the row it locked is free for another replica (a takeover
 * claim would otherwise wait for it for ever); the stalled one finds its
 * transaction gone when it wakes, and its connection works again after the
 * rollback.
 */
static void test_pg_stalled_txn_frees_locks(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_add_run(s, "run_stall", AH_RUN_RUNNING, 1, NULL, 0);
    ah_store_close(s);

    ah_db_t *stalled = raw_open(300), *other = raw_open(10000);
    assert_int_equal(ah_db_begin(stalled, true), 0);
    assert_int_equal(ah_db_exec(stalled, "UPDATE runs SET updated_at = 2 WHERE id = 'run_stall'"),
                     0);
    /* Waits for the row until the server ends the stalled session (~300 ms), not 10 s. */
    assert_int_equal(ah_db_exec(other, "UPDATE runs SET updated_at = 3 WHERE id = 'run_stall'"), 0);
    assert_int_equal(ah_db_changes(other), 1);
    assert_int_equal(ah_db_commit(stalled), -EIO);
    ah_db_rollback(stalled);
    int64_t at = 0;
    assert_int_equal(ah_db_query_int(stalled, "SELECT updated_at FROM runs WHERE id = 'run_stall'",
                                     NULL, 0, &at),
                     0);
    assert_int_equal(at, 3);
    ah_db_close(stalled);
    ah_db_close(other);
}

/* Connection errors never show the password; a bad URL is -EINVAL. */
static void test_pg_url_errors(void **state)
{
    (void)state;
    ah_db_t *db = NULL;
    ah_buf_t err = AH_BUF_INIT;
    char url[160];
    /* Port 1 on loopback: refused. */
    snprintf(url, sizeof(url), "postgresql://agenthub:s3cr3t@127.0.0.1:1/t1?connect_timeout=2");
    assert_int_equal(ah_db_open(url, NULL, &db, &err), -EIO);
    assert_null(db);
    assert_non_null(strstr(err.data, "cannot connect to PostgreSQL"));
    assert_null(strstr(err.data, "s3cr3t"));
    ah_buf_reset(&err);

    assert_int_equal(ah_db_open("postgres://u:s3cr3t@[::1/db", NULL, &db, &err), -EINVAL);
    assert_non_null(strstr(err.data, "not a valid PostgreSQL URL"));
    assert_null(strstr(err.data, "s3cr3t"));
    ah_buf_reset(&err);
    assert_int_equal(ah_db_open("postgres://u:s3cr3t@h/db?bogus=1", NULL, &db, &err), -EINVAL);
    assert_null(strstr(err.data, "s3cr3t"));
    ah_buf_reset(&err);

    /* A wrong database name: the server's own words. */
    snprintf(url, sizeof(url), "postgres://agenthub@127.0.0.1:%d/no_such_db", pg.port);
    assert_int_equal(ah_db_open(url, NULL, &db, &err), -EIO);
    assert_non_null(strstr(err.data, "no_such_db"));
    ah_buf_free(&err);
}

typedef struct {
    const char *id;
    const char *hash;
    suite_gate_t *gate; /* when set: insert, wait for the gate, insert again */
    int rc;             /* with key_write_done */
    suite_counter_t *done;
} key_write_t;

static void key_write_done(int rc, void *arg)
{
    key_write_t *k = arg;
    k->rc = rc;
    suite_counter_add(k->done);
}

static int key_write_work(ah_db_t *db, void *arg)
{
    key_write_t *k = arg;
    ah_key_rec_t rec = suite_key(k->id, k->hash, 1);
    int rc = ah_store_key_insert(db, &rec);
    if (rc < 0 || !k->gate)
        return rc;
    suite_gate_work(db, k->gate);
    snprintf(rec.id, sizeof(rec.id), "%s_2", k->id);
    rec.hash[0] = 'f';
    return ah_store_key_insert(db, &rec);
}

static int key_exists_work(ah_db_t *db, void *arg)
{
    ah_key_rec_t rec;
    return ah_store_key_get(db, arg, &rec);
}

/*
 * The store survives the server going away: calls while it is down fail
 * (-EIO), a transaction cut by the restart fails as a whole, and calls after
 * it is back work, on the writer and the reader, without reopening the store.
 */
static void test_pg_restart(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    key_write_t k1 = {.id = "key_before",
                      .hash = "1111111111111111111111111111111111111111111111111111111111111111",
                      .gate = NULL};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_write_work, &k1), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_exists_work, "key_before"), 0);

    /* A restart while idle: the next calls reconnect and succeed. */
    assert_int_equal(ah_pgtest_restart(&pg), 0);
    key_write_t k2 = {.id = "key_after",
                      .hash = "2222222222222222222222222222222222222222222222222222222222222222",
                      .gate = NULL};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_write_work, &k2), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_exists_work, "key_before"), 0);
    assert_int_equal(ah_store_ping(s), 0);

    /* Down: every call fails with an error, none hangs. */
    assert_int_equal(ah_pgtest_server_stop(&pg, "fast"), 0);
    key_write_t k3 = {.id = "key_down",
                      .hash = "3333333333333333333333333333333333333333333333333333333333333333",
                      .gate = NULL};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_write_work, &k3), -EIO);
    assert_int_equal(ah_store_ping(s), -EIO);
    assert_int_equal(ah_pgtest_server_start(&pg), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_write_work, &k3), 0);
    assert_int_equal(ah_store_ping(s), 0);

    /* Cut inside a transaction: the job's first insert is lost with it, and it fails. */
    suite_gate_t gate;
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    gate.entered = gate.released = false;
    key_write_t k4 = {.id = "key_cut",
                      .hash = "4444444444444444444444444444444444444444444444444444444444444444",
                      .gate = &gate};
    suite_counter_t done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    k4.rc = 1;
    k4.done = &done;
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, key_write_work, key_write_done, NULL, &k4),
                     0);
    pthread_mutex_lock(&gate.mu);
    while (!gate.entered)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    assert_int_equal(ah_pgtest_restart(&pg), 0);
    suite_gate_release(&gate);
    assert_int_equal(suite_counter_wait(&done, 1), 1);
    assert_int_equal(k4.rc, -EIO);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_exists_work, "key_cut"), -ENOENT);
    /* and the writer goes on */
    k4.gate = NULL;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_write_work, &k4), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_exists_work, "key_cut"), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM keys"), 4);
    ah_store_close(s);
    suite_gate_destroy(&gate);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
    ah_log_set_level(AH_LOG_OFF); /* the tests provoke errors the store logs */
    const struct CMUnitTest sqlite_tests[] = {AH_STORE_SUITE_TESTS(suite_setup)};
    int failed = cmocka_run_group_tests_name("store suite on SQLite", sqlite_tests,
                                             sqlite_group_setup, sqlite_group_teardown);

    int rc = ah_pgtest_start(&pg);
    if (rc == AH_PGTEST_SKIP)
        return failed;
    if (rc != 0) {
        fprintf(stderr, "FAIL: could not start a throwaway PostgreSQL server\n");
        return failed + 1;
    }
    /* Before the backend is wired into ah_db_open, say so instead of failing every test. */
    char url[256];
    ah_db_t *db = NULL;
    if (ah_pgtest_new_db(&pg, url, sizeof(url)) != 0) {
        ah_pgtest_stop(&pg);
        return failed + 1;
    }
    if (ah_db_open(url, NULL, &db, NULL) == -ENOTSUP) {
        printf("SKIP: ah_db_open does not dispatch postgres:// in this build\n");
        ah_pgtest_stop(&pg);
        return failed;
    }
    ah_db_close(db);

    const struct CMUnitTest pg_tests[] = {
        AH_STORE_SUITE_TESTS(suite_setup),
        cmocka_unit_test_setup(test_pg_claim_skips_locked_rows, suite_setup),
        cmocka_unit_test_setup(test_pg_stalled_txn_frees_locks, suite_setup),
        cmocka_unit_test_setup(test_pg_url_errors, suite_setup),
        cmocka_unit_test_setup(test_pg_restart, suite_setup),
    };
    failed +=
        cmocka_run_group_tests_name("store suite on PostgreSQL", pg_tests, pg_group_setup, NULL);
    ah_pgtest_stop(&pg);
    return failed;
}
