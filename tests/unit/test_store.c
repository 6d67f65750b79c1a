/*
 * test_store.c - the store (store.h) on a SQLite file in a temporary
 * directory, for what store_suite.h (run on SQLite and PostgreSQL by
 * test_store_pg.c) does not cover: open errors, blocking calls and job flags,
 * the bounded queues, close draining the queues, loop delivery and the
 * in-memory store. Migrations, group commit, commit failures, key and audit
 * rows are in the suite.
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
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "store/keys.h"
#include "store/store.h"

static char tmpdir[256];
static char url[400];
static int db_seq;

/* Each test gets its own database file. */
static int setup(void **state)
{
    snprintf(url, sizeof(url), "sqlite://%s/t%d/agenthub.db", tmpdir, ++db_seq);
    return 0;
}

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ah_test_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    ah_log_set_level(AH_LOG_OFF); /* the tests provoke errors the store logs */
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Only the storage fields: the store reads nothing else (config.c is not needed). */
static ah_config_t make_cfg(const char *u, int max_batch)
{
    ah_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.storage.url = (char *)u;
    cfg.storage.busy_timeout_ms = 5000;
    cfg.storage.max_batch = max_batch;
    return cfg;
}

static ah_store_t *open_store(unsigned flags, size_t queue_max, int max_batch)
{
    ah_config_t cfg = make_cfg(url, max_batch);
    ah_store_opts_t o = {.flags = flags, .queue_max = queue_max};
    ah_store_t *s = NULL;
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_store_open_ex(&cfg, &o, &s, &err);
    if (rc != 0)
        fprintf(stderr, "open: %d %s\n", rc, err.data ? err.data : "");
    assert_int_equal(rc, 0);
    ah_buf_free(&err);
    return s;
}

/* ---- helpers: a gate that holds the writer, a completion counter ----- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
} gate_t;

static void gate_init(gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->released = false;
}

static void gate_destroy(gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static int gate_work(ah_db_t *db, void *arg)
{
    gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void gate_wait_entered(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->released = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} counter_t;

static void counter_init(counter_t *c)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->n = 0;
}

static void counter_destroy(counter_t *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void counter_add(counter_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits (bounded: 20 s) until the counter reaches want; returns the count seen. */
static int counter_wait(counter_t *c, int want)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&c->mu);
    while (c->n < want) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            break;
    }
    int n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static int exec_work(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, arg);
}

static void test_open_errors(void **state)
{
    /* A PostgreSQL server that is not there: a clear error, no store. */
    ah_config_t cfg = make_cfg("postgres://agenthub@127.0.0.1:1/agenthub", 0);
    ah_store_t *s = NULL;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, &err), -EIO);
    assert_null(s);
    assert_non_null(err.data);
    ah_buf_free(&err);

    char bad[400];
    snprintf(bad, sizeof(bad), "sqlite://%s/a/b/c/x.db", tmpdir);
    cfg = make_cfg(bad, 0);
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, &err), -ENOENT);
    assert_non_null(strstr(err.data, "cannot create directory"));
    ah_buf_free(&err);
}

/* ---- keys, for the in-memory store ----------------------------------- */

static ah_key_rec_t make_key(const char *id, const char *hash, int64_t updated)
{
    ah_key_rec_t k;
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%s", id);
    snprintf(k.name, sizeof(k.name), "name of %s", id);
    snprintf(k.hash, sizeof(k.hash), "%s", hash);
    snprintf(k.prefix, sizeof(k.prefix), "ahk_%.4s", hash);
    snprintf(k.role, sizeof(k.role), "admin");
    k.created_at = updated;
    k.updated_at = updated;
    return k;
}

typedef struct {
    ah_key_rec_t rec;
    const char *id;
} key_job_t;

static int key_insert_work(ah_db_t *db, void *arg)
{
    return ah_store_key_insert(db, &((key_job_t *)arg)->rec);
}

static int key_get_work(ah_db_t *db, void *arg)
{
    key_job_t *j = arg;
    return ah_store_key_get(db, j->id, &j->rec);
}

/* ---- jobs -------------------------------------------------------------- */

typedef struct {
    int i;
    int rc;
    counter_t *done;
} gc_job_t;

/* Job i inserts row i and returns i. */
static int gc_work(ah_db_t *db, void *arg)
{
    gc_job_t *j = arg;
    ah_db_val_t v = ah_db_int(j->i);
    int rc = ah_db_query(db, "INSERT INTO gc (i) VALUES (?)", &v, 1, NULL, NULL);
    return rc < 0 ? rc : j->i;
}

static void gc_done(int rc, void *arg)
{
    gc_job_t *j = arg;
    j->rc = rc;
    counter_add(j->done);
}

static int count_work(ah_db_t *db, void *arg)
{
    int64_t *n = arg;
    const char *sql = (const char *)(intptr_t)n[1];
    return ah_db_query_int(db, sql, NULL, 0, &n[0]);
}

static int64_t count_rows(ah_store_t *s, const char *sql)
{
    int64_t n[2] = {-1, (int64_t)(intptr_t)sql};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, count_work, n), 0);
    return n[0];
}

typedef struct {
    int rc;
    counter_t *done;
} simple_t;

static void simple_done(int rc, void *arg)
{
    simple_t *x = arg;
    x->rc = rc;
    counter_add(x->done);
}

static int return_42(ah_db_t *db, void *arg)
{
    return 42;
}

static int nested_call(ah_db_t *db, void *arg)
{
    return ah_store_call(arg, AH_STORE_READ, return_42, NULL);
}

static int commits_itself(ah_db_t *db, void *arg)
{
    return ah_db_begin(db, false);
}

static void test_call_and_flags(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, return_42, NULL), 42);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, return_42, NULL), 42);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE | AH_STORE_NOTXN, return_42, NULL), 42);
    /* blocking from a store thread would deadlock: refused */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, nested_call, s), -EDEADLK);
    /* flags */
    assert_int_equal(ah_store_call(s, 0, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | AH_STORE_WRITE, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | AH_STORE_NOTXN, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | 0x100, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_submit(s, AH_STORE_READ, NULL, NULL, NULL, NULL), -EINVAL);
    /* a NOTXN job that leaves a transaction open is rolled back and fails */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE | AH_STORE_NOTXN, commits_itself, NULL),
                     -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, return_42, NULL), 42);
    ah_store_close(s);
}

static void test_bounded_queue(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 5, 0);
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate); /* the gate job is running, not queued */
    counter_t done;
    counter_init(&done);
    simple_t x[6];
    for (int i = 0; i < 5; i++) {
        x[i] = (simple_t){1, &done};
        assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, return_42, simple_done, NULL, &x[i]),
                         0);
    }
    x[5] = (simple_t){1, &done};
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, return_42, simple_done, NULL, &x[5]),
                     -EBUSY);
    ah_store_stats_t st;
    ah_store_stats(s, &st);
    assert_int_equal(st.write_queue, 5);
    assert_int_equal(st.rejected, 1);
    /* The reader has its own queue and connection: reads proceed while the writer is held. */
    assert_int_equal(ah_store_ping(s), 0);
    gate_release(&gate);
    assert_int_equal(counter_wait(&done, 5), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(x[i].rc, 42);
    ah_store_close(s);
    counter_destroy(&done);
    gate_destroy(&gate);
}

static void test_close_drains_queue(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 8);
    assert_int_equal(
        ah_store_call(s, AH_STORE_WRITE, exec_work, "CREATE TABLE gc (i INTEGER PRIMARY KEY)"), 0);
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate);
    counter_t done;
    counter_init(&done);
    gc_job_t jobs[50];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 50; i++) {
        jobs[i].i = i * 10;
        jobs[i].done = &done;
        assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gc_work, gc_done, NULL, &jobs[i]), 0);
    }
    gate_release(&gate);
    ah_store_close(s); /* returns only after the 50 queued jobs ran */
    assert_int_equal(counter_wait(&done, 50), 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(jobs[i].rc, i * 10);

    /* and they were committed */
    s = open_store(0, 0, 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM gc"), 50);
    ah_store_close(s);
    counter_destroy(&done);
    gate_destroy(&gate);
}

/* Done callbacks posted to a loop run on the loop's thread. */
typedef struct {
    ah_loop_t *loop;
    pthread_t loop_thread;
    bool on_loop_thread;
    int rc;
} loop_job_t;

static void *loop_main(void *arg)
{
    ah_loop_run(arg);
    return NULL;
}

static void loop_done(int rc, void *arg)
{
    loop_job_t *j = arg;
    j->rc = rc;
    j->on_loop_thread = pthread_equal(pthread_self(), j->loop_thread);
    ah_loop_stop(j->loop);
}

static void test_loop_delivery(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    loop_job_t j = {0};
    j.loop = ah_loop_new();
    assert_non_null(j.loop);
    j.rc = 1;
    assert_int_equal(pthread_create(&j.loop_thread, NULL, loop_main, j.loop), 0);
    assert_int_equal(ah_store_submit(s, AH_STORE_READ, return_42, loop_done, j.loop, &j), 0);
    assert_int_equal(pthread_join(j.loop_thread, NULL), 0); /* the done callback stops the loop */
    assert_int_equal(j.rc, 42);
    assert_true(j.on_loop_thread);
    ah_store_close(s);
    ah_loop_free(j.loop);
}

/* One row of about a page and a half per commit: each COMMIT appends 2+ frames to the WAL. */
static int big_row_work(ah_db_t *db, void *arg)
{
    static char text[6000];
    if (!text[0])
        memset(text, 'x', sizeof(text) - 1);
    ah_db_val_t a[2] = {ah_db_int(*(int *)arg), ah_db_text(text)};
    return ah_db_query(db, "INSERT INTO big (i, t) VALUES (?, ?)", a, 2, NULL, NULL);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/*
 * The writer's commits do not checkpoint (a background thread does), yet the
 * WAL stays bounded under a writer that never pauses, and everything written
 * is there, through the reader and after a reopen.
 */
static void test_wal_bounded(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, exec_work,
                                   "CREATE TABLE big (i INTEGER PRIMARY KEY, t TEXT)"),
                     0);
    char wal[420];
    snprintf(wal, sizeof(wal), "%s-wal", url + strlen("sqlite://"));
    /* 9,000 commits of 2+ pages: far past what the WAL may hold (8,000 frames + one commit). */
    const long max_wal = 32 + (8000L + 16) * (4096 + 24);
    long biggest = 0;
    for (int i = 1; i <= 9000; i++) {
        assert_int_equal(ah_store_call(s, AH_STORE_WRITE, big_row_work, &i), 0);
        if (i % 100 == 0) {
            long n = file_size(wal);
            if (n > biggest)
                biggest = n;
        }
    }
    assert_true(biggest > 0);
    assert_true(biggest <= max_wal);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM big"), 9000);
    ah_store_close(s);
    s = open_store(0, 0, 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM big WHERE length(t) = 5999"), 9000);
    ah_store_close(s);
}

/* sqlite://:memory: has one connection: reads go to the writer thread and see the writes. */
static void test_memory_store(void **state)
{
    ah_config_t cfg = make_cfg("sqlite://:memory:", 0);
    ah_store_t *s = NULL;
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, NULL), 0);
    key_job_t j;
    memset(&j, 0, sizeof(j));
    j.rec = make_key("key_m", "abcd", 10);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), 0);
    j.id = "key_m";
    memset(&j.rec, 0, sizeof(j.rec));
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_get_work, &j), 0);
    assert_string_equal(j.rec.hash, "abcd");
    assert_int_equal(ah_store_ping(s), 0);
    ah_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_errors, setup),
        cmocka_unit_test_setup(test_call_and_flags, setup),
        cmocka_unit_test_setup(test_bounded_queue, setup),
        cmocka_unit_test_setup(test_close_drains_queue, setup),
        cmocka_unit_test_setup(test_loop_delivery, setup),
        cmocka_unit_test_setup(test_memory_store, setup),
        cmocka_unit_test_setup(test_wal_bounded, setup),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
