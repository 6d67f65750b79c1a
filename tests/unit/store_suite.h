/*
 * store_suite.h - the store test suite written once and run on every backend
 * (test_store_pg.c runs it on SQLite and on a throwaway PostgreSQL): the SQL
 * layer (db.h: types, errors, statement cache, transactions, savepoints,
 * read-only connections, lock waits), the store (open + migrate, concurrent
 * migrators, schema checks, group commit with failing jobs, commit failure),
 * and the row modules (keys, audit, usage + key_limits, agents, runs + run
 * events, claims + heartbeats).
 *
 * The includer sets suite_be (a backend name and a function returning the URL
 * of a new, empty database) before running the tests, and lists them with
 * AH_STORE_SUITE_TESTS(setup), where setup is suite_setup or a wrapper of it.
 * Where the engines differ on purpose, a test says so and checks each.
 *
 * Header-only (static functions): include it once, after <cmocka.h>.
 */
#ifndef AH_STORE_SUITE_H
#define AH_STORE_SUITE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "store/agents.h"
#include "store/audit.h"
#include "store/db.h"
#include "store/keys.h"
#include "store/runs.h"
#include "store/runs_claim.h"
#include "store/runs_idem.h"
#include "store/store.h"
#include "store/usage.h"
#include "testutil.h"

typedef struct suite_backend {
    const char *name;                       /* ah_db_backend_name of its connections */
    int (*new_url)(char *url, size_t size); /* a new, empty database: 0 or -1 */
} suite_backend_t;

static const suite_backend_t *suite_be;
static char suite_url[256]; /* this test's database (suite_setup) */

static bool suite_is_pg(void)
{
    return strcmp(suite_be->name, "postgres") == 0;
}

/* cmocka setup: a fresh database for the test. */
static int suite_setup(void **state)
{
    (void)state;
    return suite_be->new_url(suite_url, sizeof(suite_url)) == 0 ? 0 : -1;
}

/* ---- helpers ------------------------------------------------------------ */

static ah_db_t *suite_db_open(int busy_ms, int cache, bool readonly, bool no_cache)
{
    ah_db_opts_t o = {.busy_timeout_ms = busy_ms,
                      .stmt_cache_size = cache,
                      .readonly = readonly,
                      .no_stmt_cache = no_cache};
    ah_db_t *db = NULL;
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_db_open(suite_url, &o, &db, &err);
    if (rc != 0)
        fprintf(stderr, "db open %s: %d %s\n", suite_url, rc, err.data ? err.data : "");
    ah_buf_free(&err);
    assert_int_equal(rc, 0);
    assert_string_equal(ah_db_backend_name(db), suite_be->name);
    return db;
}

static ah_config_t suite_cfg(int max_batch)
{
    ah_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.storage.url = suite_url;
    cfg.storage.busy_timeout_ms = 10000;
    cfg.storage.max_batch = max_batch;
    return cfg;
}

static ah_store_t *suite_store(unsigned flags, int max_batch)
{
    ah_config_t cfg = suite_cfg(max_batch);
    ah_store_opts_t o = {.flags = flags};
    ah_store_t *s = NULL;
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_store_open_ex(&cfg, &o, &s, &err);
    if (rc != 0)
        fprintf(stderr, "store open: %d %s\n", rc, err.data ? err.data : "");
    ah_buf_free(&err);
    assert_int_equal(rc, 0);
    assert_string_equal(ah_store_backend(s), suite_be->name);
    return s;
}

typedef struct {
    int rows;
    int ncols;
    ah_db_val_t cols[8];
    char text[8][64]; /* copies: row values live only during the callback */
} suite_capture_t;

static int suite_capture(void *ud, const ah_db_val_t *cols, int ncols)
{
    suite_capture_t *c = ud;
    c->rows++;
    c->ncols = ncols;
    for (int i = 0; i < ncols && i < 8; i++) {
        c->cols[i] = cols[i];
        if (cols[i].type == AH_DB_TEXT || cols[i].type == AH_DB_BLOB) {
            assert_true(cols[i].n < sizeof(c->text[i]));
            memcpy(c->text[i], cols[i].s, cols[i].n);
            c->text[i][cols[i].n] = '\0';
            c->cols[i].s = c->text[i];
        }
    }
    return 0;
}

static int suite_exec_work(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, arg);
}

static int suite_count_work(ah_db_t *db, void *arg)
{
    int64_t *n = arg;
    const char *sql = (const char *)(intptr_t)n[1];
    return ah_db_query_int(db, sql, NULL, 0, &n[0]);
}

static int64_t suite_count(ah_store_t *s, const char *sql)
{
    int64_t n[2] = {-1, (int64_t)(intptr_t)sql};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_count_work, n), 0);
    return n[0];
}

/* ---- db.h: values -------------------------------------------------------- */

static void suite_test_db_types(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    /* BYTEA: PostgreSQL's blob type; SQLite takes any type name (blobs are stored as is). */
    assert_int_equal(ah_db_exec(db, "CREATE TABLE t (i BIGINT, d DOUBLE PRECISION, s TEXT, "
                                    "b BYTEA, n TEXT)"),
                     0);
    const unsigned char blob[5] = {0, 1, 2, 0, 255};
    ah_db_val_t args[5] = {ah_db_int(INT64_MIN + 1), ah_db_dbl(3.25), ah_db_text("héllo 'x' ?"),
                           ah_db_blob(blob, sizeof(blob)), ah_db_null()};
    assert_int_equal(ah_db_query(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", args, 5, NULL, NULL),
                     0);
    assert_int_equal(ah_db_changes(db), 1);

    suite_capture_t c = {0};
    assert_int_equal(ah_db_query(db, "SELECT i, d, s, b, n FROM t", NULL, 0, suite_capture, &c), 0);
    assert_int_equal(c.rows, 1);
    assert_int_equal(c.ncols, 5);
    assert_int_equal(c.cols[0].type, AH_DB_INT);
    assert_true(c.cols[0].i == INT64_MIN + 1);
    assert_int_equal(c.cols[1].type, AH_DB_DBL);
    assert_true(c.cols[1].d == 3.25);
    assert_int_equal(c.cols[2].type, AH_DB_TEXT);
    assert_string_equal(c.text[2], "héllo 'x' ?");
    assert_int_equal(c.cols[3].type, AH_DB_BLOB);
    assert_int_equal(c.cols[3].n, sizeof(blob));
    assert_memory_equal(c.text[3], blob, sizeof(blob));
    assert_int_equal(c.cols[4].type, AH_DB_NULL);

    /* Parameters without a type from the statement; textn binds exactly n bytes. */
    ah_db_val_t a2[3] = {ah_db_textn("abcdef", 3), ah_db_text(NULL), ah_db_int(7)};
    memset(&c, 0, sizeof(c));
    assert_int_equal(ah_db_query(db, "SELECT ?, ?, ?", a2, 3, suite_capture, &c), 0);
    assert_string_equal(c.text[0], "abc");
    assert_int_equal(c.cols[1].type, AH_DB_NULL);
    assert_int_equal(ah_db_val_int(&c.cols[2]), 7);

    /* `?` inside literals, quoted identifiers and comments is not a placeholder. */
    ah_db_val_t one = ah_db_text("x");
    memset(&c, 0, sizeof(c));
    assert_int_equal(ah_db_query(db,
                                 "SELECT '?', 'it''s ?', ? AS \"wh?t\" -- trailing ?\n"
                                 "/* and ? here */",
                                 &one, 1, suite_capture, &c),
                     0);
    assert_string_equal(c.text[0], "?");
    assert_string_equal(c.text[1], "it's ?");
    assert_string_equal(c.text[2], "x");

    /* Two untyped parameters in one expression. */
    ah_db_val_t sum[2] = {ah_db_int(40), ah_db_int(2)};
    int64_t v = 0;
    assert_int_equal(ah_db_query_int(db, "SELECT ? + ?", sum, 2, &v), 0);
    assert_int_equal(v, 42);

    /* Aggregates and comparisons read as numbers on both (PostgreSQL: numeric, boolean). */
    assert_int_equal(ah_db_query_int(db, "SELECT SUM(i) - SUM(i) + 41 FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 41);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t WHERE d > ?", &args[1], 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ah_db_query_int(db, "SELECT 2 > 1", NULL, 0, &v), 0);
    assert_int_equal(v, 1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ah_db_query(db, "SELECT SUM(d) / 2 FROM t", NULL, 0, suite_capture, &c), 0);
    assert_true(ah_db_val_dbl(&c.cols[0]) == 1.625);

    /* Large text and many parameters round-trip. */
    size_t big = 1 << 20;
    char *s = malloc(big + 1);
    assert_non_null(s);
    for (size_t i = 0; i < big; i++)
        s[i] = (char)('a' + i % 26);
    s[big] = '\0';
    ah_db_val_t bs = ah_db_text(s);
    assert_int_equal(ah_db_query(db, "INSERT INTO t (s) VALUES (?)", &bs, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_query_int(db,
                                     "SELECT COUNT(*) FROM t WHERE s = ? AND LENGTH(s) = 1048576",
                                     &bs, 1, &v),
                     0);
    assert_int_equal(v, 1);
    free(s);
    ah_db_close(db);
}

/* ---- db.h: errors -------------------------------------------------------- */

static void suite_test_db_errors(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    assert_int_equal(ah_db_exec(db, "CREATE TABLE u (id TEXT PRIMARY KEY, email TEXT UNIQUE, "
                                    "name TEXT NOT NULL)"),
                     0);
    ah_db_val_t a[3] = {ah_db_text("1"), ah_db_text("a@x"), ah_db_text("A")};
    const char *ins = "INSERT INTO u (id, email, name) VALUES (?, ?, ?)";
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    a[1] = ah_db_text("b@x"); /* same primary key */
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    assert_non_null(strcasestr(ah_db_errmsg(db), "unique"));
    a[0] = ah_db_text("2"); /* same unique column */
    a[1] = ah_db_text("a@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    a[1] = ah_db_text("c@x"); /* NOT NULL is not a duplicate */
    a[2] = ah_db_null();
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EIO);
    assert_int_equal(ah_db_query(db, "SELEC 1", NULL, 0, NULL, NULL), -EIO);
    assert_non_null(strstr(ah_db_errmsg(db), "syntax"));
    assert_int_equal(ah_db_query(db, "SELECT * FROM nope", NULL, 0, NULL, NULL), -EIO);
    assert_non_null(strstr(ah_db_errmsg(db), "nope"));
    assert_int_equal(ah_db_exec(db, "INSERT INTO nope VALUES (1)"), -EIO);
    assert_non_null(strstr(ah_db_errmsg(db), "nope"));
    /* argument count, two statements, empty */
    assert_int_equal(ah_db_query(db, ins, a, 2, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, ins, a, 2, NULL, NULL), -EINVAL); /* cached now */
    assert_int_equal(ah_db_query(db, "SELECT 1; SELECT 2", NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, "  ", NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, NULL, NULL, 0, NULL, NULL), -EINVAL);
    int64_t v = 0;
    assert_int_equal(ah_db_query_int(db, "SELECT 5;", NULL, 0, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(ah_db_query_int(db, "SELECT 'a;b' = 'a;b';  ", NULL, 0, &v), 0);
    assert_int_equal(v, 1);

    /* A statement that fails to prepare inside a transaction fails alone. */
    assert_int_equal(ah_db_begin(db, true), 0);
    a[0] = ah_db_text("3");
    a[1] = ah_db_text("d@x");
    a[2] = ah_db_text("D");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    assert_int_equal(ah_db_query(db, "SELECT nothing FROM nowhere", NULL, 0, NULL, NULL), -EIO);
    assert_true(ah_db_in_txn(db));
    a[0] = ah_db_text("4");
    a[1] = ah_db_text("e@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM u", NULL, 0, &v), 0);
    assert_int_equal(v, 3);

    /* An execution error inside a savepoint: rolling back to it saves the transaction. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "sp"), 0);
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    assert_int_equal(ah_db_rollback_to(db, "sp"), 0);
    assert_int_equal(ah_db_release(db, "sp"), 0);
    a[0] = ah_db_text("5");
    a[1] = ah_db_text("f@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM u", NULL, 0, &v), 0);
    assert_int_equal(v, 4);

    /*
     * An execution error without a savepoint: SQLite undoes the statement and
     * the transaction goes on; PostgreSQL aborts the transaction, and COMMIT
     * must then report that nothing was committed.
     */
    assert_int_equal(ah_db_begin(db, true), 0);
    a[0] = ah_db_text("6");
    a[1] = ah_db_text("g@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    assert_int_equal(ah_db_commit(db), suite_is_pg() ? -EIO : 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM u", NULL, 0, &v), 0);
    assert_int_equal(v, suite_is_pg() ? 4 : 5);
    ah_db_close(db);
}

/* ---- db.h: statement cache --------------------------------------------- */

typedef struct {
    ah_db_t *db;
    int outer, inner;
} suite_nest_t;

static int suite_inner_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    ((suite_nest_t *)ud)->inner++;
    return 0;
}

static int suite_outer_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    suite_nest_t *n = ud;
    n->outer++;
    char sql[64];
    /* the same statement, and one that evicts entries from the 3-entry cache */
    assert_int_equal(ah_db_query(n->db, "SELECT x FROM t ORDER BY x", NULL, 0, suite_inner_row, n),
                     0);
    snprintf(sql, sizeof(sql), "SELECT %d", n->outer);
    int64_t v = 0;
    assert_int_equal(ah_db_query_int(n->db, sql, NULL, 0, &v), 0);
    assert_int_equal(v, n->outer);
    return 0;
}

static int suite_stop_at_two(void *ud, const ah_db_val_t *cols, int ncols)
{
    int *seen = ud;
    return ++*seen == 2 ? 77 : 0;
}

static void suite_test_db_cache(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 3, false, false);
    assert_int_equal(ah_db_exec(db, "CREATE TABLE t (x INTEGER)"), 0);
    ah_db_stats_t st0, st;
    ah_db_stats(db, &st0);
    for (int i = 0; i < 10; i++) {
        ah_db_val_t a = ah_db_int(i);
        assert_int_equal(ah_db_query(db, "INSERT INTO t (x) VALUES (?)", &a, 1, NULL, NULL), 0);
        assert_int_equal(ah_db_changes(db), 1);
    }
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_misses - st0.stmt_cache_misses, 1);
    assert_int_equal(st.stmt_cache_hits - st0.stmt_cache_hits, 9);

    /* Keyed by content, not pointer; bounded, least recently used evicted. */
    char sql[64];
    int64_t v;
    for (int i = 0; i < 5; i++) {
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM t WHERE x >= %d", i);
        assert_int_equal(ah_db_query_int(db, sql, NULL, 0, &v), 0);
        assert_int_equal(v, 10 - i);
    }
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_entries, 3);
    assert_true(st.stmt_cache_evictions >= 3);
    /* An evicted statement prepares again and works. */
    ah_db_val_t a = ah_db_int(100);
    assert_int_equal(ah_db_query(db, "INSERT INTO t (x) VALUES (?)", &a, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_query(db, "DELETE FROM t WHERE x = ?", &a, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_changes(db), 1);
    /* A SELECT leaves changes() at the last write's count. */
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t", NULL, 0, &v), 0);
    assert_int_equal(ah_db_changes(db), 1);

    suite_nest_t n = {db, 0, 0};
    assert_int_equal(ah_db_query(db, "SELECT x FROM t ORDER BY x", NULL, 0, suite_outer_row, &n),
                     0);
    assert_int_equal(n.outer, 10);
    assert_int_equal(n.inner, 100);

    int seen = 0;
    assert_int_equal(
        ah_db_query(db, "SELECT x FROM t ORDER BY x", NULL, 0, suite_stop_at_two, &seen), 77);
    assert_int_equal(seen, 2);
    assert_int_equal(ah_db_query_int(db, "SELECT x FROM t WHERE x > 100", NULL, 0, &v), -ENOENT);
    ah_db_close(db);

    /* Cache disabled still works, in and out of transactions. */
    db = suite_db_open(5000, 0, false, true);
    assert_int_equal(ah_db_query_int(db, "SELECT 3", NULL, 0, &v), 0);
    assert_int_equal(ah_db_begin(db, true), 0);
    a = ah_db_int(3);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t WHERE x < ?", &a, 1, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(ah_db_commit(db), 0);
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_entries, 0);
    assert_int_equal(st.stmt_cache_hits, 0);
    ah_db_close(db);
}

/* ---- db.h: transactions, read-only, lock waits --------------------------- */

static void suite_test_db_txn(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    int64_t v;
    assert_int_equal(ah_db_exec(db, "CREATE TABLE t (x INTEGER)"), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_true(ah_db_in_txn(db));
    assert_int_equal(ah_db_exec(db, "INSERT INTO t VALUES (1)"), 0);
    assert_int_equal(ah_db_savepoint(db, "sp1"), 0);
    assert_int_equal(ah_db_exec(db, "INSERT INTO t VALUES (2)"), 0);
    assert_int_equal(ah_db_rollback_to(db, "sp1"), 0);
    assert_int_equal(ah_db_release(db, "sp1"), 0);
    assert_int_equal(ah_db_savepoint(db, "sp2"), 0);
    assert_int_equal(ah_db_exec(db, "INSERT INTO t VALUES (3); INSERT INTO t VALUES (0)"), 0);
    assert_int_equal(ah_db_release(db, "sp2"), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_query_int(db, "SELECT SUM(x) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 4);

    assert_int_equal(ah_db_begin(db, false), 0);
    assert_int_equal(ah_db_exec(db, "DELETE FROM t"), 0);
    assert_int_equal(ah_db_changes(db), 3);
    assert_int_equal(ah_db_rollback(db), 0);
    assert_int_equal(ah_db_rollback(db), 0); /* no transaction: a no-op */
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 3);

    /* Identifiers are checked: no SQL through a savepoint or table name. */
    assert_int_equal(ah_db_savepoint(db, "x; DROP TABLE t"), -EINVAL);
    assert_int_equal(ah_db_savepoint(db, "1abc"), -EINVAL);
    assert_int_equal(ah_db_savepoint(db, ""), -EINVAL);
    assert_true(ah_db_ident_ok("_a1"));
    assert_int_equal(ah_db_table_exists(db, "t"), 1);
    assert_int_equal(ah_db_table_exists(db, "nope"), 0);
    assert_int_equal(ah_db_table_exists(db, "t'--"), -EINVAL);
    ah_db_close(db);

    /* A read-only connection reads and refuses writes. */
    db = suite_db_open(5000, 0, true, false);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(ah_db_exec(db, "CREATE TABLE x (a INTEGER)"), -EIO);
    assert_int_equal(ah_db_exec(db, "INSERT INTO t VALUES (9)"), -EIO);
    ah_db_close(db);
}

/*
 * Transaction control as the group commit uses it, in every order it can
 * come: PostgreSQL holds BEGIN, SAVEPOINT and RELEASE back and pipelines them
 * with the next statement, so each case checks what the server ended with.
 */
static void suite_test_db_txn_control(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    int64_t v = -1;
    const char *ins = "INSERT INTO tc (k) VALUES (?)";
    assert_int_equal(ah_db_exec(db, "CREATE TABLE tc (k INTEGER PRIMARY KEY)"), 0);

    /* Nothing but BEGIN and COMMIT, with savepoints and without. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_true(ah_db_in_txn(db));
    assert_int_equal(ah_db_commit(db), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_true(ah_db_in_txn(db));
    assert_int_equal(ah_db_commit(db), 0);
    assert_false(ah_db_in_txn(db));

    /* More jobs without statements than are held back at once, then one that writes. */
    assert_int_equal(ah_db_begin(db, true), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ah_db_savepoint(db, "job"), 0);
        assert_int_equal(ah_db_release(db, "job"), 0);
    }
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_val_t k1 = ah_db_int(1);
    assert_int_equal(ah_db_query(db, ins, &k1, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_changes(db), 1);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_int_equal(ah_db_commit(db), 0);

    /* A job whose first statement fails is rolled back alone; the next one commits. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    assert_int_equal(ah_db_query(db, ins, &k1, 1, NULL, NULL), -EEXIST);
    assert_int_equal(ah_db_rollback_to(db, "job"), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_true(ah_db_in_txn(db));
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_val_t k2 = ah_db_int(2);
    assert_int_equal(ah_db_query(db, ins, &k2, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT SUM(k) FROM tc", NULL, 0, &v), 0);
    assert_int_equal(v, 3);

    /* A rollback undoes held-back commands and sent statements alike. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    assert_int_equal(ah_db_rollback(db), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_val_t k4 = ah_db_int(4);
    assert_int_equal(ah_db_query(db, ins, &k4, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_rollback(db), 0);
    assert_false(ah_db_in_txn(db));

    /* A control command that fails (no such savepoint) fails the transaction, at the
     * latest at the next statement, and nothing of it is committed. */
    assert_int_equal(ah_db_begin(db, true), 0);
    int rc = ah_db_release(db, "nope");
    if (rc == 0)
        rc = ah_db_query(db, ins, &k4, 1, NULL, NULL);
    assert_true(rc < 0);
    assert_int_equal(ah_db_rollback(db), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM tc", NULL, 0, &v), 0);
    assert_int_equal(v, 2);
    ah_db_close(db);
}

static int suite_deferred_work(ah_db_t *db, void *arg)
{
    const int64_t *keys = arg; /* keys[0] rows, then the keys */
    ah_db_defer_writes(db, true);
    for (int64_t i = 0; i < keys[0]; i++) {
        ah_db_val_t k = ah_db_int(keys[1 + i]);
        int rc = ah_db_query(db, "INSERT INTO td (k) VALUES (?)", &k, 1, NULL, NULL);
        if (rc < 0)
            return rc;
    }
    return 0; /* deferred writes left: the store sends them and fails this job if one fails */
}

/*
 * Deferred writes (ah_db_defer_writes): PostgreSQL holds them back and sends
 * them with the next statement; their error comes back there, or from the
 * store's flush after the job, and fails that job alone.
 */
static void suite_test_db_deferred(void **state)
{
    (void)state;
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    const char *ins = "INSERT INTO td (k) VALUES (?)";
    int64_t v = -1;
    assert_int_equal(ah_db_exec(db, "CREATE TABLE td (k INTEGER PRIMARY KEY)"), 0);
    ah_db_val_t k1 = ah_db_int(1), k2 = ah_db_int(2), k3 = ah_db_int(3);
    assert_int_equal(ah_db_query(db, ins, &k1, 1, NULL, NULL), 0); /* prepared now */

    /* Deferred writes land with the next statement, in order. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_defer_writes(db, true);
    assert_int_equal(ah_db_query(db, ins, &k2, 1, NULL, NULL), 0);
    assert_int_equal(ah_db_query(db, ins, &k3, 1, NULL, NULL), 0);
    ah_db_defer_writes(db, false);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM td", NULL, 0, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(ah_db_flush_deferred(db), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_int_equal(ah_db_commit(db), 0);

    /* A failing deferred write: its error comes back by the next statement at the latest. */
    assert_int_equal(ah_db_begin(db, true), 0);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_defer_writes(db, true);
    int rc = ah_db_query(db, ins, &k2, 1, NULL, NULL);
    ah_db_defer_writes(db, false);
    if (rc == 0)
        rc = ah_db_query_int(db, "SELECT COUNT(*) FROM td", NULL, 0, &v);
    assert_int_equal(rc, -EEXIST);
    assert_int_equal(ah_db_rollback_to(db, "job"), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    /* ... or from the flush when nothing follows it. */
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_defer_writes(db, true);
    rc = ah_db_query(db, ins, &k3, 1, NULL, NULL);
    ah_db_defer_writes(db, false);
    if (rc == 0)
        rc = ah_db_flush_deferred(db);
    assert_int_equal(rc, -EEXIST);
    assert_int_equal(ah_db_rollback_to(db, "job"), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT SUM(k) FROM td", NULL, 0, &v), 0);
    assert_int_equal(v, 6);
    ah_db_close(db);

    /* Through the store: a job whose deferred write fails fails alone. */
    ah_store_t *s = suite_store(0, 0);
    int64_t warm[2] = {1, 10}, bad[3] = {2, 11, 1}, good[3] = {2, 12, 13};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_deferred_work, warm), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_deferred_work, bad), -EEXIST);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_deferred_work, good), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM td"), 6);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM td WHERE k = 11"), 0);
    ah_store_close(s);
}

/*
 * A writer waiting for another's lock gives up with -EBUSY after its busy
 * timeout: SQLite at BEGIN IMMEDIATE (database lock), PostgreSQL at the row
 * (lock_timeout).
 */
static void suite_test_db_busy(void **state)
{
    (void)state;
    ah_db_t *a = suite_db_open(5000, 0, false, false);
    ah_db_t *b = suite_db_open(50, 0, false, false);
    assert_int_equal(ah_db_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)"), 0);
    assert_int_equal(ah_db_exec(a, "INSERT INTO t VALUES (1, 0)"), 0);
    assert_int_equal(ah_db_begin(a, true), 0);
    assert_int_equal(ah_db_exec(a, "UPDATE t SET x = 1 WHERE id = 1"), 0);
    int rc = ah_db_begin(b, true);
    if (rc == 0)
        rc = ah_db_exec(b, "UPDATE t SET x = 2 WHERE id = 1");
    assert_int_equal(rc, -EBUSY);
    assert_int_equal(ah_db_rollback(b), 0);
    assert_false(ah_db_in_txn(b));
    /* Readers are not blocked by the open write transaction. */
    int64_t v = -1;
    assert_int_equal(ah_db_query_int(b, "SELECT x FROM t WHERE id = 1", NULL, 0, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ah_db_commit(a), 0);
    assert_int_equal(ah_db_begin(b, true), 0);
    assert_int_equal(ah_db_exec(b, "UPDATE t SET x = 2 WHERE id = 1"), 0);
    assert_int_equal(ah_db_commit(b), 0);
    ah_db_close(a);
    ah_db_close(b);
}

/* ---- store: open, migrations --------------------------------------------- */

static void suite_on_applied(void *ud, const ah_migration_t *m)
{
    char *names = ud;
    strncat(names, m->name, 255 - strlen(names));
    strncat(names, " ", 255 - strlen(names));
}

static void suite_test_open_migrate(void **state)
{
    (void)state;
    /* Opened without MIGRATE: empty schema; then ah_store_migrate applies them all. */
    ah_store_t *s = suite_store(0, 0);
    int cur = -1, latest = -1;
    assert_int_equal(ah_store_schema_status(s, &cur, &latest), 0);
    assert_int_equal(cur, 0);
    assert_int_equal(latest, ah_migrate_latest());
    ah_buf_t err = AH_BUF_INIT;
    char names[256] = "";
    int applied = ah_store_migrate(s, suite_on_applied, names, &err);
    if (applied < 0)
        fprintf(stderr, "migrate: %s\n", err.data ? err.data : "");
    assert_int_equal(applied, ah_migrations_count);
    assert_non_null(strstr(names, "0001_init "));
    assert_int_equal(ah_store_schema_status(s, &cur, &latest), 0);
    assert_int_equal(cur, latest);
    assert_int_equal(ah_store_ping(s), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM schema_migrations"), ah_migrations_count);
    ah_store_close(s);

    /* Again: nothing to apply. */
    s = suite_store(AH_STORE_MIGRATE, 0);
    assert_int_equal(ah_store_migrate(s, NULL, NULL, &err), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM schema_migrations"), ah_migrations_count);
    /* A schema newer than this binary is refused. */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_exec_work,
                                   "INSERT INTO schema_migrations (version, name, applied_at) "
                                   "VALUES (999, '0999_future', 0)"),
                     0);
    ah_store_close(s);
    ah_buf_free(&err);
    ah_config_t cfg = suite_cfg(0);
    char want[160];
    snprintf(want, sizeof(want),
             "database schema version 999 is newer than this agenthub (latest %d): upgrade "
             "agenthub",
             ah_migrate_latest());
    unsigned flag_sets[2] = {AH_STORE_MIGRATE, 0};
    for (int i = 0; i < 2; i++) {
        s = (ah_store_t *)1;
        assert_int_equal(ah_store_open(&cfg, flag_sets[i], &s, &err), -EPROTO);
        assert_null(s);
        assert_non_null(err.data);
        assert_non_null(strstr(err.data, want));
        ah_buf_free(&err);
    }
}

#define SUITE_MIGRATORS 4

typedef struct {
    pthread_barrier_t *go;
    ah_store_t *s;
    int applied;
    char err[256];
} suite_migrator_t;

static void *suite_migrate_thread(void *arg)
{
    suite_migrator_t *m = arg;
    ah_buf_t err = AH_BUF_INIT;
    pthread_barrier_wait(m->go);
    m->applied = ah_store_migrate(m->s, NULL, NULL, &err);
    snprintf(m->err, sizeof(m->err), "%s", err.data ? err.data : "");
    ah_buf_free(&err);
    return NULL;
}

/* Replicas starting together: each migration is applied exactly once (the migration lock). */
static void suite_test_migrate_concurrent(void **state)
{
    (void)state;
    suite_migrator_t m[SUITE_MIGRATORS];
    pthread_t th[SUITE_MIGRATORS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, SUITE_MIGRATORS);
    for (int i = 0; i < SUITE_MIGRATORS; i++) {
        memset(&m[i], 0, sizeof(m[i]));
        m[i].go = &go;
        m[i].s = suite_store(0, 0);
    }
    for (int i = 0; i < SUITE_MIGRATORS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, suite_migrate_thread, &m[i]), 0);
    int total = 0;
    for (int i = 0; i < SUITE_MIGRATORS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (m[i].applied < 0)
            fprintf(stderr, "migrator %d: %d %s\n", i, m[i].applied, m[i].err);
        assert_true(m[i].applied >= 0);
        total += m[i].applied;
    }
    assert_int_equal(total, ah_migrations_count);
    assert_int_equal(suite_count(m[0].s, "SELECT COUNT(*) FROM schema_migrations"),
                     ah_migrations_count);
    for (int i = 0; i < SUITE_MIGRATORS; i++)
        ah_store_close(m[i].s);
    pthread_barrier_destroy(&go);
}

/* ---- store: group commit ------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
} suite_gate_t;

static int suite_gate_work(ah_db_t *db, void *arg)
{
    suite_gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void suite_gate_hold(ah_store_t *s, suite_gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->released = false;
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, suite_gate_work, NULL, NULL, g), 0);
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void suite_gate_release(suite_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->released = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void suite_gate_destroy(suite_gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} suite_counter_t;

static void suite_counter_add(suite_counter_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int suite_counter_wait(suite_counter_t *c, int want)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    pthread_mutex_lock(&c->mu);
    while (c->n < want) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            break;
    }
    int n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

#define SUITE_GC_JOBS 1000

typedef struct {
    int i;
    int rc;
    atomic_int calls;
    suite_counter_t *done;
} suite_gc_job_t;

/* Job i inserts row i; i % 10 == 7 fails after inserting, == 3 hits a duplicate key. */
static int suite_gc_work(ah_db_t *db, void *arg)
{
    suite_gc_job_t *j = arg;
    ah_db_val_t v = ah_db_int(j->i);
    int rc = ah_db_query(db, "INSERT INTO gc (i) VALUES (?)", &v, 1, NULL, NULL);
    if (rc < 0)
        return rc;
    if (j->i % 10 == 7)
        return -ECANCELED;
    if (j->i % 10 == 3)
        return ah_db_query(db, "INSERT INTO gc (i) VALUES (?)", &v, 1, NULL, NULL);
    return j->i;
}

static void suite_gc_done(int rc, void *arg)
{
    suite_gc_job_t *j = arg;
    j->rc = rc;
    atomic_fetch_add(&j->calls, 1);
    suite_counter_add(j->done);
}

static void suite_test_group_commit(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 64);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_exec_work,
                                   "CREATE TABLE gc (i INTEGER PRIMARY KEY)"),
                     0);
    ah_store_stats_t st0, st;
    ah_store_stats(s, &st0);
    suite_gate_t gate;
    suite_gate_hold(s, &gate);
    suite_counter_t done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    suite_gc_job_t *jobs = calloc(SUITE_GC_JOBS, sizeof(*jobs));
    assert_non_null(jobs);
    for (int i = 0; i < SUITE_GC_JOBS; i++) {
        jobs[i].i = i;
        jobs[i].rc = 12345;
        jobs[i].done = &done;
        assert_int_equal(
            ah_store_submit(s, AH_STORE_WRITE, suite_gc_work, suite_gc_done, NULL, &jobs[i]), 0);
    }
    ah_store_stats(s, &st);
    assert_int_equal(st.write_queue, SUITE_GC_JOBS);
    suite_gate_release(&gate);
    assert_int_equal(suite_counter_wait(&done, SUITE_GC_JOBS), SUITE_GC_JOBS);
    int ok = 0, failed = 0;
    for (int i = 0; i < SUITE_GC_JOBS; i++) {
        assert_int_equal(atomic_load(&jobs[i].calls), 1);
        if (i % 10 == 7) {
            assert_int_equal(jobs[i].rc, -ECANCELED);
            failed++;
        } else if (i % 10 == 3) {
            assert_int_equal(jobs[i].rc, -EEXIST);
            failed++;
        } else {
            assert_int_equal(jobs[i].rc, i);
            ok++;
        }
    }
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM gc"), ok);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM gc WHERE i % 10 = 7 OR i % 10 = 3"), 0);
    ah_store_stats(s, &st);
    assert_int_equal(st.writes - st0.writes, SUITE_GC_JOBS + 1);
    assert_int_equal(st.errors - st0.errors, failed);
    /* At most 64 jobs per transaction, +1 batch for the gate. */
    assert_int_equal(st.batches - st0.batches, 1 + (SUITE_GC_JOBS + 63) / 64);
    assert_int_equal(st.max_batch_len, 64);
    assert_int_equal(st.write_queue, 0);
    ah_store_close(s);
    free(jobs);
    suite_gate_destroy(&gate);
}

/* ---- pipelined batches (AH_STORE_PIPELINE, ah_db_write_one) ------------- */

#define SUITE_PL_JOBS 300

/*
 * Job i by i % 10: 3 inserts a duplicate key (-EEXIST), 7 inserts its row and
 * then fences on a missing one (-ESTALE), 5 writes its row and then gives up
 * (-ECANCELED, no statement failed), 9 is a plain write job (not
 * pipelined), 8 also adds 10 to job i-2's row (written earlier in the same
 * batch or before), the others insert row i and add 1 to it. Pipelined jobs
 * defer everything, so on PostgreSQL their failures surface after they
 * returned.
 */
static int suite_pl_work(ah_db_t *db, void *arg)
{
    suite_gc_job_t *j = arg;
    atomic_fetch_add(&j->calls, 1);
    const char *ins = "INSERT INTO pl (k, v) VALUES (?, 0)";
    const char *bump = "UPDATE pl SET v = v + ? WHERE k = ?";
    ah_db_defer_writes(db, j->i % 10 != 9);
    ah_db_val_t k = ah_db_int(j->i % 10 == 3 ? 100000 : j->i);
    int rc = ah_db_query(db, ins, &k, 1, NULL, NULL);
    if (rc == 0 && j->i % 10 == 7) {
        ah_db_val_t a[2] = {ah_db_int(1), ah_db_int(-j->i)};
        rc = ah_db_write_one(db, bump, a, 2, -ESTALE);
    } else if (rc == 0 && j->i % 10 != 3) {
        ah_db_val_t a[2] = {ah_db_int(1), ah_db_int(j->i)};
        rc = ah_db_write_one(db, bump, a, 2, -ESTALE);
        if (rc == 0 && j->i % 10 == 8) {
            ah_db_val_t b[2] = {ah_db_int(10), ah_db_int(j->i - 2)};
            rc = ah_db_write_one(db, bump, b, 2, -ESTALE);
        }
    }
    if (rc == 0 && j->i % 10 == 5)
        return -ECANCELED;
    return rc < 0 ? rc : j->i;
}

static void suite_pl_done(int rc, void *arg)
{
    suite_gc_job_t *j = arg;
    j->rc = rc;
    suite_counter_add(j->done);
}

static void suite_test_pipeline(void **state)
{
    (void)state;
    /* ah_db_write_one on one connection: held back on PostgreSQL, checked by the server. */
    ah_db_t *db = suite_db_open(5000, 0, false, false);
    const char *bump = "UPDATE pl SET v = v + ? WHERE k = ?";
    assert_int_equal(ah_db_exec(db, "CREATE TABLE pl (k INTEGER PRIMARY KEY, v INTEGER)"), 0);
    assert_int_equal(ah_db_exec(db, "INSERT INTO pl (k, v) VALUES (100000, 0)"), 0);
    ah_db_val_t hit[2] = {ah_db_int(1), ah_db_int(100000)}, miss[2] = {ah_db_int(1), ah_db_int(5)};
    assert_int_equal(ah_db_write_one(db, bump, hit, 2, -ESTALE), 0);
    assert_int_equal(ah_db_write_one(db, bump, miss, 2, -ESTALE), -ESTALE);
    assert_int_equal(ah_db_begin(db, true), 0);
    ah_db_job_tag(db, 4);
    assert_int_equal(ah_db_savepoint(db, "job"), 0);
    ah_db_defer_writes(db, true);
    assert_int_equal(ah_db_write_one(db, bump, hit, 2, -ESTALE), 0);
    int rc = ah_db_write_one(db, bump, miss, 2, -ESTALE);
    ah_db_defer_writes(db, false);
    if (rc == 0)
        rc = ah_db_flush_deferred(db);
    assert_int_equal(rc, -ESTALE);
    int tag = -1, frc = 0;
    assert_int_equal(ah_db_batch_failed(db, &tag, &frc), suite_is_pg());
    if (suite_is_pg()) {
        assert_int_equal(tag, 4);
        assert_int_equal(frc, -ESTALE);
        assert_false(ah_db_batch_failed(db, &tag, &frc)); /* reported once */
    }
    ah_db_job_tag(db, -1);
    assert_int_equal(ah_db_rollback_to(db, "job"), 0);
    assert_int_equal(ah_db_release(db, "job"), 0);
    assert_int_equal(ah_db_commit(db), 0);
    int64_t v = -1;
    assert_int_equal(ah_db_query_int(db, "SELECT v FROM pl WHERE k = 100000", NULL, 0, &v), 0);
    assert_int_equal(v, 1); /* the rolled-back job's bump is gone */
    ah_db_close(db);

    /* Through the store: late failures fail their own job; everything else lands once. */
    ah_store_t *s = suite_store(0, 0);
    suite_gate_t gate;
    suite_gate_hold(s, &gate);
    suite_counter_t done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    suite_gc_job_t *jobs = calloc(SUITE_PL_JOBS, sizeof(*jobs));
    assert_non_null(jobs);
    for (int i = 0; i < SUITE_PL_JOBS; i++) {
        jobs[i].i = i;
        jobs[i].rc = 12345;
        jobs[i].done = &done;
        unsigned fl = AH_STORE_WRITE | (i % 10 == 9 ? 0 : AH_STORE_PIPELINE);
        assert_int_equal(ah_store_submit(s, fl, suite_pl_work, suite_pl_done, NULL, &jobs[i]), 0);
    }
    suite_gate_release(&gate);
    assert_int_equal(suite_counter_wait(&done, SUITE_PL_JOBS), SUITE_PL_JOBS);
    int ok = 0, twice = 0;
    for (int i = 0; i < SUITE_PL_JOBS; i++) {
        int calls = atomic_load(&jobs[i].calls);
        if (i % 10 == 3) {
            assert_int_equal(jobs[i].rc, -EEXIST);
        } else if (i % 10 == 7) {
            assert_int_equal(jobs[i].rc, -ESTALE);
        } else if (i % 10 == 5) {
            assert_int_equal(jobs[i].rc, -ECANCELED);
        } else {
            assert_int_equal(jobs[i].rc, i);
            ok++;
        }
        /* A plain job runs once; a pipelined one at most twice (again after a late failure). */
        assert_true(calls >= 1 && calls <= (i % 10 == 9 ? 1 : 2));
        twice += calls == 2;
    }
    /* PostgreSQL pipelines: job 3's duplicate surfaces after jobs 4-8 ran, so they ran again. */
    if (suite_is_pg())
        assert_true(twice >= 5);
    else
        assert_int_equal(twice, 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM pl WHERE k < 100000"), ok);
    assert_int_equal(
        suite_count(s, "SELECT COUNT(*) FROM pl WHERE k % 10 = 3 OR k % 10 = 5 OR k % 10 = 7"), 0);
    /* Each effect once: v = 1 per row, + 10 for the rows job i+2 (i % 10 == 8) bumped. */
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM pl WHERE k < 100000 AND k % 10 <> 6 "
                                    "AND v <> 1"),
                     0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM pl WHERE k % 10 = 6 AND v = 11"),
                     SUITE_PL_JOBS / 10);
    ah_store_close(s);
    free(jobs);
    suite_gate_destroy(&gate);
}

typedef struct {
    int rc;
    suite_counter_t *done;
} suite_simple_t;

static void suite_simple_done(int rc, void *arg)
{
    suite_simple_t *x = arg;
    x->rc = rc;
    suite_counter_add(x->done);
}

static int suite_insert_parent(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, "INSERT INTO parent (id) VALUES (1)");
}

/* Violates a deferred foreign key: passes its savepoint, fails at COMMIT. */
static int suite_insert_orphan(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, "INSERT INTO child (pid) VALUES (42)");
}

/* A job that ignores a statement's error and returns success. */
static int suite_swallow_error(ah_db_t *db, void *arg)
{
    ah_db_exec(db, "INSERT INTO parent (id) VALUES (1)");
    return 0;
}

static void suite_test_commit_failure(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_exec_work,
                                   "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                                   "CREATE TABLE child (pid INTEGER REFERENCES parent (id) "
                                   "DEFERRABLE INITIALLY DEFERRED)"),
                     0);
    suite_gate_t gate;
    suite_gate_hold(s, &gate);
    suite_counter_t done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    suite_simple_t a = {1, &done}, b = {1, &done};
    assert_int_equal(
        ah_store_submit(s, AH_STORE_WRITE, suite_insert_parent, suite_simple_done, NULL, &a), 0);
    assert_int_equal(
        ah_store_submit(s, AH_STORE_WRITE, suite_insert_orphan, suite_simple_done, NULL, &b), 0);
    suite_gate_release(&gate);
    assert_int_equal(suite_counter_wait(&done, 2), 2);
    assert_int_equal(a.rc, -EIO);
    assert_int_equal(b.rc, -EIO);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM parent"), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM child"), 0);
    /* The writer recovers: the next batch commits. */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_insert_parent, NULL), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM parent"), 1);

    /*
     * A job swallowing a statement error: harmless on SQLite; on PostgreSQL
     * the aborted transaction fails the batch (documented in store.md).
     */
    int rc = ah_store_call(s, AH_STORE_WRITE, suite_swallow_error, NULL);
    assert_int_equal(rc, suite_is_pg() ? -EIO : 0);
    assert_int_equal(
        ah_store_call(s, AH_STORE_WRITE, suite_exec_work, "INSERT INTO parent (id) VALUES (2)"), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM parent"), 2);
    ah_store_close(s);
    suite_gate_destroy(&gate);
}

/* ---- keys and audit ------------------------------------------------------ */

static ah_key_rec_t suite_key(const char *id, const char *hash, int64_t updated)
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
    int64_t since, now, count;
    ah_key_rec_t list[8];
    int n;
} suite_key_job_t;

static int suite_collect_key(void *ud, const ah_key_rec_t *k)
{
    suite_key_job_t *j = ud;
    if (j->n < 8)
        j->list[j->n] = *k;
    j->n++;
    return 0;
}

static int suite_key_work(ah_db_t *db, void *arg)
{
    suite_key_job_t *j = arg;
    switch (j->now) {
    case 0:
        return ah_store_key_insert(db, &j->rec);
    case 1:
        return ah_store_key_get(db, j->id, &j->rec);
    case 2:
        j->n = 0;
        return ah_store_key_list(db, j->since, suite_collect_key, j);
    case 3:
        return ah_store_key_count(db, &j->count);
    case 4:
        return ah_store_key_get_by_hash(db, j->id, &j->rec);
    default:
        return ah_store_key_revoke(db, j->id, j->now);
    }
}

static int suite_key_call(ah_store_t *s, unsigned flags, suite_key_job_t *j, int64_t op)
{
    j->now = op;
    return ah_store_call(s, flags, suite_key_work, j);
}

static void suite_test_keys(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    const char *h1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *h2 = "2222222222222222222222222222222222222222222222222222222222222222";
    const char *h3 = "3333333333333333333333333333333333333333333333333333333333333333";
    suite_key_job_t j;
    memset(&j, 0, sizeof(j));
    j.rec = suite_key("key_a", h1, 1000);
    snprintf(j.rec.created_by, sizeof(j.rec.created_by), "admin");
    j.rec.expires_at = 9000;
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 0), 0);
    j.rec = suite_key("key_b", h2, 2000);
    snprintf(j.rec.tenant, sizeof(j.rec.tenant), "acme");
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 0), 0);
    j.rec = suite_key("key_a", h3, 3000); /* same id */
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 0), -EEXIST);
    j.rec = suite_key("key_c", h1, 3000); /* same hash */
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 0), -EEXIST);
    j.rec = suite_key("key_d", h3, 3000); /* missing required field */
    j.rec.role[0] = '\0';
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 0), -EINVAL);

    memset(&j.rec, 0, sizeof(j.rec));
    j.id = "key_a";
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 1), 0);
    assert_string_equal(j.rec.id, "key_a");
    assert_string_equal(j.rec.name, "name of key_a");
    assert_string_equal(j.rec.role, "admin");
    assert_string_equal(j.rec.hash, h1);
    assert_string_equal(j.rec.tenant, "default");
    assert_string_equal(j.rec.created_by, "admin");
    assert_int_equal(j.rec.created_at, 1000);
    assert_int_equal(j.rec.revoked_at, 0);
    assert_int_equal(j.rec.expires_at, 9000);
    j.id = h2;
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 4), 0);
    assert_string_equal(j.rec.id, "key_b");
    j.id = "key_zzz";
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 1), -ENOENT);

    j.since = 0;
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.n, 2);
    assert_string_equal(j.list[0].id, "key_a");
    assert_string_equal(j.list[1].id, "key_b");
    assert_string_equal(j.list[1].tenant, "acme");
    j.since = 1000; /* incremental: changed after `since` */
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.n, 1);
    assert_string_equal(j.list[0].id, "key_b");
    j.since = 2000;
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.n, 0);

    /* A revoke shows up in the next incremental refresh. */
    j.id = "key_a";
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 5000), 0);
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 5000), -ENOENT);
    j.id = "key_nope";
    assert_int_equal(suite_key_call(s, AH_STORE_WRITE, &j, 5000), -ENOENT);
    j.since = 2000;
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.n, 1);
    assert_string_equal(j.list[0].id, "key_a");
    assert_int_equal(j.list[0].revoked_at, 5000);
    assert_int_equal(j.list[0].updated_at, 5000);
    j.since = 0;
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.n, 2);
    assert_string_equal(j.list[0].id, "key_b"); /* ordered by updated_at */
    assert_int_equal(suite_key_call(s, AH_STORE_READ, &j, 3), 0);
    assert_int_equal(j.count, 2);
    ah_store_close(s);
}

typedef struct {
    int n;
    char first_id[48], first_actor[32], first_request[32], first_detail[64];
    int64_t first_ts;
    int later_actor_null; /* rows after the first with a NULL actor */
} suite_audit_t;

typedef struct {
    int64_t since;
    int limit;
    suite_audit_t seen;
} suite_audit_list_t;

/* Runs on a store thread: records only; the test thread asserts. */
static int suite_collect_audit(void *ud, const ah_audit_rec_t *r)
{
    suite_audit_t *a = ud;
    if (a->n == 0) {
        snprintf(a->first_id, sizeof(a->first_id), "%s", r->id ? r->id : "(null)");
        snprintf(a->first_actor, sizeof(a->first_actor), "%s", r->actor ? r->actor : "(null)");
        snprintf(a->first_request, sizeof(a->first_request), "%s",
                 r->request_id ? r->request_id : "(null)");
        snprintf(a->first_detail, sizeof(a->first_detail), "%s", r->detail ? r->detail : "(null)");
        a->first_ts = r->ts;
    } else if (!r->actor) {
        a->later_actor_null++;
    }
    a->n++;
    return 0;
}

static int suite_audit_write(ah_db_t *db, void *arg)
{
    int rc = ah_store_audit_insert(db, "key_admin", "key.create", "key_a", "{\"role\":\"admin\"}",
                                   "req_1");
    if (rc == 0)
        rc = ah_store_audit_insert(db, NULL, "key.revoke", "key_a", NULL, NULL);
    if (rc == 0)
        rc = ah_store_audit_insert(db, NULL, "agent.apply", NULL, NULL, NULL);
    if (rc == 0 && ah_store_audit_insert(db, NULL, NULL, NULL, NULL, NULL) != -EINVAL)
        rc = -EPROTO; /* an action is required */
    return rc;
}

static int suite_audit_read(ah_db_t *db, void *arg)
{
    suite_audit_list_t *l = arg;
    memset(&l->seen, 0, sizeof(l->seen));
    return ah_store_audit_list(db, l->since, l->limit, suite_collect_audit, &l->seen);
}

static void suite_test_audit(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    int64_t before = ah_wall_ms();
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_audit_write, NULL), 0);
    suite_audit_list_t l = {.since = 0, .limit = 2};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_audit_read, &l), 0);
    assert_int_equal(l.seen.n, 2);
    assert_true(strncmp(l.seen.first_id, "aud_", 4) == 0);
    assert_string_equal(l.seen.first_actor, "key_admin");
    assert_string_equal(l.seen.first_request, "req_1");
    assert_string_equal(l.seen.first_detail, "{\"role\":\"admin\"}");
    assert_int_equal(l.seen.later_actor_null, 1);
    assert_true(l.seen.first_ts >= before && l.seen.first_ts <= ah_wall_ms());
    l.limit = 100;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_audit_read, &l), 0);
    assert_int_equal(l.seen.n, 3);
    l.since = ah_wall_ms() + 60000;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_audit_read, &l), 0);
    assert_int_equal(l.seen.n, 0);
    l.limit = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_audit_read, &l), -EINVAL);
    ah_store_close(s);
}

/* ---- usage and key_limits ------------------------------------------------ */

#define SUITE_USAGE_ROWS 70 /* two 32-row INSERTs and 6 single ones */

typedef struct {
    ah_usage_row_t *rows;
    size_t n;
    ah_usage_filter_t f;
    int groups;
    ah_usage_agg_t agg[8];
    char keys[8][48], models[8][64];
    double cost;
    const char *exclude;
    ah_key_limits_rec_t kl;
    int kl_n;
} suite_usage_job_t;

static int suite_usage_insert(ah_db_t *db, void *arg)
{
    suite_usage_job_t *j = arg;
    return ah_store_usage_insert(db, j->rows, j->n);
}

static int suite_collect_agg(void *ud, const ah_usage_agg_t *a)
{
    suite_usage_job_t *j = ud;
    if (j->groups < 8) {
        j->agg[j->groups] = *a;
        snprintf(j->keys[j->groups], sizeof(j->keys[0]), "%s", a->key_id ? a->key_id : "(null)");
        snprintf(j->models[j->groups], sizeof(j->models[0]), "%s", a->model ? a->model : "(null)");
    }
    j->groups++;
    return 0;
}

static int suite_usage_agg(ah_db_t *db, void *arg)
{
    suite_usage_job_t *j = arg;
    j->groups = 0;
    return ah_store_usage_aggregate(db, &j->f, suite_collect_agg, j);
}

static int suite_usage_cost(ah_db_t *db, void *arg)
{
    suite_usage_job_t *j = arg;
    return ah_store_usage_cost_since(db, "key_a", 0, j->exclude, &j->cost);
}

static int suite_kl_upsert(ah_db_t *db, void *arg)
{
    return ah_store_key_limits_upsert(db, &((suite_usage_job_t *)arg)->kl);
}

static int suite_kl_get(ah_db_t *db, void *arg)
{
    suite_usage_job_t *j = arg;
    return ah_store_key_limits_get(db, j->kl.key_id, &j->kl);
}

static int suite_kl_count(void *ud, const ah_key_limits_rec_t *r)
{
    ((suite_usage_job_t *)ud)->kl_n++;
    return 0;
}

static int suite_kl_list(ah_db_t *db, void *arg)
{
    suite_usage_job_t *j = arg;
    j->kl_n = 0;
    return ah_store_key_limits_list(db, -1, suite_kl_count, j);
}

static void suite_test_usage(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_usage_job_t *j = calloc(1, sizeof(*j));
    assert_non_null(j);
    j->rows = calloc(SUITE_USAGE_ROWS, sizeof(*j->rows));
    assert_non_null(j->rows);
    j->n = SUITE_USAGE_ROWS;
    const int64_t day = 86400000;
    /* Row i: key_a for even i, key_b for odd; model m1 for i < 40; day 1 for i < 50, else day 2;
     * cost 0.5, 10 prompt and 2 completion tokens; node n2 for i >= 60. */
    for (int i = 0; i < SUITE_USAGE_ROWS; i++) {
        ah_usage_row_t *r = &j->rows[i];
        r->ts = (i < 50 ? day : 2 * day) + i;
        snprintf(r->request_id, sizeof(r->request_id), "req_%d", i);
        snprintf(r->key_id, sizeof(r->key_id), "%s", i % 2 ? "key_b" : "key_a");
        snprintf(r->model, sizeof(r->model), "%s", i < 40 ? "m1" : "m2");
        snprintf(r->node, sizeof(r->node), "%s", i >= 60 ? "n2" : "n1");
        r->prompt_tokens = 10;
        r->completion_tokens = 2;
        r->cached_tokens = i % 5 == 0 ? 4 : 0;
        r->cost_usd = 0.5;
        r->latency_ms = i % 3 ? 100 : -1;
        r->ttft_ms = -1;
        r->status = 200;
        r->attempts = 1;
    }
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_usage_insert, j), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM usage"), SUITE_USAGE_ROWS);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM usage WHERE latency_ms IS NULL"), 24);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM usage WHERE provider IS NULL"),
                     SUITE_USAGE_ROWS);
    /* A bad row in a batch: the job fails and nothing of it is kept. */
    memset(j->rows[3].model, 'x', sizeof(j->rows[3].model));
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_usage_insert, j), -EINVAL);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM usage"), SUITE_USAGE_ROWS);

    /* One total. */
    j->f = (ah_usage_filter_t){.from_ms = 0, .to_ms = 10 * day, .limit = 100};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_agg, j), 0);
    assert_int_equal(j->groups, 1);
    assert_int_equal(j->agg[0].requests, SUITE_USAGE_ROWS);
    assert_int_equal(j->agg[0].prompt_tokens, 10 * SUITE_USAGE_ROWS);
    assert_int_equal(j->agg[0].completion_tokens, 2 * SUITE_USAGE_ROWS);
    assert_int_equal(j->agg[0].cached_tokens, 4 * (SUITE_USAGE_ROWS / 5));
    assert_true(j->agg[0].cost_usd > 34.99 && j->agg[0].cost_usd < 35.01);
    assert_null(j->agg[0].key_id);
    assert_int_equal(j->agg[0].day, -1);

    /* By day and key, ordered by day, key. */
    j->f.group = AH_USAGE_GROUP_DAY | AH_USAGE_GROUP_KEY;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_agg, j), 0);
    assert_int_equal(j->groups, 4);
    assert_int_equal(j->agg[0].day, 1);
    assert_string_equal(j->keys[0], "key_a");
    assert_int_equal(j->agg[0].requests, 25);
    assert_string_equal(j->keys[1], "key_b");
    assert_int_equal(j->agg[3].day, 2);
    assert_int_equal(j->agg[3].requests, 10);
    assert_string_equal(j->models[0], "(null)");

    /* Filtered by key and model, grouped by model. */
    j->f = (ah_usage_filter_t){.from_ms = 0,
                               .to_ms = 10 * day,
                               .key_id = "key_b",
                               .model = "m2",
                               .group = AH_USAGE_GROUP_MODEL,
                               .limit = 10};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_agg, j), 0);
    assert_int_equal(j->groups, 1);
    assert_string_equal(j->models[0], "m2");
    assert_int_equal(j->agg[0].requests, 15);
    j->f.to_ms = day; /* nothing before day 1 */
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_agg, j), 0);
    assert_int_equal(j->groups, 0);

    /* Budget reconcile: key_a's cost, all nodes and without node n2. */
    j->exclude = NULL;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_cost, j), 0);
    assert_true(j->cost > 17.49 && j->cost < 17.51);
    j->exclude = "n2";
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_usage_cost, j), 0);
    assert_true(j->cost > 14.99 && j->cost < 15.01);

    /* key_limits: insert, replace (upsert), read back, list. */
    ah_key_limits_init(&j->kl, "key_a");
    j->kl.rpm = 60;
    j->kl.budget_usd = 2.5;
    snprintf(j->kl.budget_period, sizeof(j->kl.budget_period), "daily");
    j->kl.updated_at = 100;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_kl_upsert, j), 0);
    ah_key_limits_init(&j->kl, "key_a");
    j->kl.tpm = 1000;
    j->kl.updated_at = 200;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_kl_upsert, j), 0);
    ah_key_limits_init(&j->kl, "key_a");
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_kl_get, j), 0);
    assert_int_equal(j->kl.rpm, -1);
    assert_int_equal(j->kl.tpm, 1000);
    assert_true(j->kl.budget_usd < 0);
    assert_string_equal(j->kl.budget_period, "");
    assert_int_equal(j->kl.updated_at, 200);
    ah_key_limits_init(&j->kl, "key_none");
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_kl_get, j), -ENOENT);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, suite_kl_list, j), 0);
    assert_int_equal(j->kl_n, 1);
    ah_store_close(s);
    free(j->rows);
    free(j);
}

/* ---- agents -------------------------------------------------------------- */

typedef struct {
    const char *name, *spec, *hash;
    int64_t version, now, previous;
    ah_agent_put_result_t put;
    ah_agent_row_t row;
    ah_agent_version_rec_t vrec;
    char *spec_out;
    int listed, versions;
    int op;
} suite_agent_job_t;

static int suite_count_agent(void *ud, const ah_agent_row_t *row, const char *spec, size_t len)
{
    ((suite_agent_job_t *)ud)->listed++;
    return 0;
}

static int suite_count_version(void *ud, const ah_agent_version_rec_t *v)
{
    ((suite_agent_job_t *)ud)->versions++;
    return 0;
}

static int suite_agent_work(ah_db_t *db, void *arg)
{
    suite_agent_job_t *j = arg;
    switch (j->op) {
    case 0:
        return ah_store_agent_put(db, j->name, j->spec, strlen(j->spec), j->hash, 0, "test", j->now,
                                  &j->put);
    case 1:
        free(j->spec_out);
        j->spec_out = NULL;
        return ah_store_agent_version_get(db, j->name, j->version, &j->vrec, &j->spec_out);
    case 2:
        j->listed = j->versions = 0;
        {
            int rc = ah_store_agent_list(db, -1, suite_count_agent, j);
            return rc ? rc : ah_store_agent_versions(db, j->name, suite_count_version, j);
        }
    case 3:
        return ah_store_agent_rollback(db, j->name, j->version, j->now, &j->previous, &j->row);
    default:
        return ah_store_agent_archive(db, j->name, j->now, &j->row);
    }
}

static int suite_agent_call(ah_store_t *s, unsigned flags, suite_agent_job_t *j, int op)
{
    j->op = op;
    return ah_store_call(s, flags, suite_agent_work, j);
}

static void suite_test_agents(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    const char *h1 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const char *h2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    suite_agent_job_t j;
    memset(&j, 0, sizeof(j));
    j.name = "support";
    j.spec = "{\"v\":1}";
    j.hash = h1;
    j.now = 1000;
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 0), 0);
    assert_true(j.put.changed);
    assert_int_equal(j.put.version, 1);
    assert_int_equal(j.put.previous_version, 0);
    /* same spec: nothing written */
    j.now = 2000;
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 0), 0);
    assert_false(j.put.changed);
    assert_int_equal(j.put.version, 1);
    /* new spec: version 2 */
    j.spec = "{\"v\":2}";
    j.hash = h2;
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 0), 0);
    assert_true(j.put.changed);
    assert_int_equal(j.put.version, 2);
    assert_int_equal(j.put.row.latest_version, 2);
    assert_int_equal(j.put.row.revision, 2);

    j.version = 0;
    assert_int_equal(suite_agent_call(s, AH_STORE_READ, &j, 1), 0);
    assert_int_equal(j.vrec.version, 2);
    assert_string_equal(j.spec_out, "{\"v\":2}");
    assert_string_equal(j.vrec.created_by, "test");
    j.version = 1;
    assert_int_equal(suite_agent_call(s, AH_STORE_READ, &j, 1), 0);
    assert_string_equal(j.spec_out, "{\"v\":1}");
    j.version = 9;
    assert_int_equal(suite_agent_call(s, AH_STORE_READ, &j, 1), -ENOENT);

    assert_int_equal(suite_agent_call(s, AH_STORE_READ, &j, 2), 0);
    assert_int_equal(j.listed, 1);
    assert_int_equal(j.versions, 2);

    j.version = 1;
    j.now = 3000;
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 3), 0);
    assert_int_equal(j.previous, 2);
    assert_int_equal(j.row.current_version, 1);
    j.version = 7;
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 3), -ENXIO);
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 4), 0);
    assert_int_equal(j.row.archived_at, 3000);
    assert_int_equal(suite_agent_call(s, AH_STORE_WRITE, &j, 4), -EALREADY);
    free(j.spec_out);
    ah_store_close(s);
}

/* ---- runs and events ----------------------------------------------------- */

static ah_run_rec_t suite_run(const char *id, const char *status, int64_t at)
{
    return ah_test_run(id, status, "key_a", at);
}

typedef struct {
    ah_run_rec_t rec;
    const char *id;
    const ah_run_event_t *ev;
    size_t nev;
    int n;
    char ids[16][48];
    int64_t seqs[16];
    char data[16][32];
    ah_run_filter_t f;
    int op;
} suite_run_job_t;

static int suite_list_cb(void *ud, const ah_run_rec_t *r)
{
    suite_run_job_t *j = ud;
    if (j->n < 16)
        snprintf(j->ids[j->n], sizeof(j->ids[0]), "%s", r->id);
    j->n++;
    return 0;
}

static int suite_event_cb(void *ud, const ah_run_event_t *e)
{
    suite_run_job_t *j = ud;
    if (j->n < 16) {
        j->seqs[j->n] = e->seq;
        snprintf(j->data[j->n], sizeof(j->data[0]), "%s", e->data);
    }
    j->n++;
    return 0;
}

static int suite_run_work(ah_db_t *db, void *arg)
{
    suite_run_job_t *j = arg;
    j->n = 0;
    switch (j->op) {
    case 0:
        return ah_store_run_insert(db, &j->rec);
    case 1:
        return ah_store_run_update(db, &j->rec);
    case 2:
        return ah_store_run_get(db, j->id, &j->rec);
    case 3:
        return ah_store_run_list_summary(db, &j->f, suite_list_cb, j);
    case 4:
        return ah_store_run_events_append(db, j->ev, j->nev);
    case 5:
        return ah_store_run_events_list(db, j->id, 1, 0, suite_event_cb, j);
    default:
        return ah_store_run_get_by_idempotency(db, "key_a", j->id, &j->rec);
    }
}

static int suite_run_call(ah_store_t *s, unsigned flags, suite_run_job_t *j, int op)
{
    j->op = op;
    return ah_store_call(s, flags, suite_run_work, j);
}

static void suite_test_runs(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_run_job_t *j = calloc(1, sizeof(*j));
    assert_non_null(j);
    j->rec = suite_run("run_1", AH_RUN_QUEUED, 1000);
    j->rec.metadata = (char *)"{\"ticket\":42}";
    j->rec.state = (char *)"{\"messages\":[\"é\"]}";
    j->rec.idempotency_key = (char *)"idem-1";
    j->rec.cost_usd = 0.25;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 0), 0);
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 0), -EEXIST);
    /* same idempotency key for the same API key, new id */
    snprintf(j->rec.id, sizeof(j->rec.id), "run_2");
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 0), -EEXIST);
    /* no idempotency key: never a conflict */
    for (int i = 2; i <= 4; i++) {
        j->rec = suite_run("", AH_RUN_QUEUED, 1000 + i);
        snprintf(j->rec.id, sizeof(j->rec.id), "run_%d", i);
        j->rec.idempotency_key = (char *)"";
        assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 0), 0);
    }

    j->id = "run_1";
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 2), 0);
    assert_string_equal(j->rec.status, "queued");
    assert_string_equal(j->rec.metadata, "{\"ticket\":42}");
    assert_string_equal(j->rec.state, "{\"messages\":[\"é\"]}");
    assert_null(j->rec.output);
    assert_null(j->rec.lease_owner);
    assert_true(j->rec.cost_usd == 0.25);
    assert_int_equal(j->rec.created_at, 1000);
    assert_int_equal(j->rec.started_at, 0);
    ah_run_rec_free(&j->rec);
    j->id = "idem-1";
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 6), 0);
    assert_string_equal(j->rec.id, "run_1");
    ah_run_rec_free(&j->rec);

    j->rec = suite_run("run_1", AH_RUN_COMPLETED, 1000);
    j->rec.output = (char *)"the answer";
    j->rec.turns = 3;
    j->rec.prompt_tokens = 120;
    j->rec.cost_usd = 0.00125;
    j->rec.started_at = 1100;
    j->rec.finished_at = 1500;
    j->rec.updated_at = 1500;
    j->rec.last_event_seq = 3;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 1), 0);
    j->rec = suite_run("run_ghost", AH_RUN_RUNNING, 1);
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 1), -ENOENT);
    j->id = "run_1";
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 2), 0);
    assert_string_equal(j->rec.status, "completed");
    assert_string_equal(j->rec.output, "the answer");
    assert_int_equal(j->rec.turns, 3);
    assert_int_equal(j->rec.prompt_tokens, 120);
    assert_true(j->rec.cost_usd > 0.00124 && j->rec.cost_usd < 0.00126);
    assert_int_equal(j->rec.finished_at, 1500);
    assert_string_equal(j->rec.metadata, "{\"ticket\":42}"); /* not update's column */
    ah_run_rec_free(&j->rec);

    /* listings: newest first, filters, pagination by created_at */
    j->f = (ah_run_filter_t){.limit = 10};
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 3), 0);
    assert_int_equal(j->n, 4);
    assert_string_equal(j->ids[0], "run_4");
    assert_string_equal(j->ids[3], "run_1");
    j->f = (ah_run_filter_t){.status = AH_RUN_QUEUED, .before = 1004, .limit = 1};
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 3), 0);
    assert_int_equal(j->n, 1);
    assert_string_equal(j->ids[0], "run_3");

    /* events: append, read after a seq, a duplicate seq rolls the whole job back */
    ah_run_event_t ev[3];
    memset(ev, 0, sizeof(ev));
    for (int i = 0; i < 3; i++) {
        snprintf(ev[i].run_id, sizeof(ev[i].run_id), "run_1");
        snprintf(ev[i].type, sizeof(ev[i].type), "message.delta");
        ev[i].seq = i + 1;
        ev[i].ts = 2000 + i;
        ev[i].data = i == 1 ? (char *)"{\"delta\":\"He\"}" : NULL;
    }
    j->ev = ev;
    j->nev = 3;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 4), 0);
    ev[0].seq = 4;
    ev[1].seq = 2;
    j->nev = 2;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 4), -EEXIST);
    j->id = "run_1";
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 5), 0);
    assert_int_equal(j->n, 2);
    assert_int_equal(j->seqs[0], 2);
    assert_string_equal(j->data[0], "{\"delta\":\"He\"}");
    assert_string_equal(j->data[1], "{}");
    /* more events than one INSERT carries (8): all land, in order */
    ah_run_event_t many[11];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 11; i++) {
        snprintf(many[i].run_id, sizeof(many[i].run_id), "run_1");
        snprintf(many[i].type, sizeof(many[i].type), "tool.result");
        many[i].seq = 10 + i;
        many[i].ts = 3000 + i;
    }
    j->ev = many;
    j->nev = 11;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 4), 0);
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 5), 0);
    assert_int_equal(j->n, 13);
    assert_int_equal(j->seqs[2], 10);
    assert_int_equal(j->seqs[12], 20);
    /* a duplicate in the second INSERT takes the first one back too (one job) */
    many[9].seq = 30;
    many[10].seq = 12;
    for (int i = 0; i < 9; i++)
        many[i].seq = 40 + i;
    assert_int_equal(suite_run_call(s, AH_STORE_WRITE, j, 4), -EEXIST);
    assert_int_equal(suite_run_call(s, AH_STORE_READ, j, 5), 0);
    assert_int_equal(j->n, 13);
    free(j);
    ah_store_close(s);
}

/* ---- claims and heartbeats ----------------------------------------------- */

typedef struct {
    const char *owner;
    int64_t now, lease_ms;
    int max;
    int n;
    char ids[32][48];
    int attempts[32];
    const char *const *beat_ids;
    size_t nbeat;
} suite_claim_job_t;

static int suite_claimed(void *ud, const ah_run_rec_t *r)
{
    suite_claim_job_t *j = ud;
    if (j->n < 32) {
        snprintf(j->ids[j->n], sizeof(j->ids[0]), "%s", r->id);
        j->attempts[j->n] = r->attempt;
        if (strcmp(r->status, "running") != 0 || !r->lease_owner ||
            strcmp(r->lease_owner, j->owner) != 0 || r->lease_expires_at != j->now + j->lease_ms ||
            r->updated_at != j->now)
            return -EPROTO;
    }
    j->n++;
    return 0;
}

static int suite_claim_work(ah_db_t *db, void *arg)
{
    suite_claim_job_t *j = arg;
    j->n = 0;
    return ah_store_run_claim(db, j->owner, j->now, j->lease_ms, j->max, suite_claimed, j);
}

static int suite_beat_work(ah_db_t *db, void *arg)
{
    suite_claim_job_t *j = arg;
    return ah_store_run_heartbeat(db, j->owner, j->beat_ids, j->nbeat, j->now + j->lease_ms);
}

static bool suite_has(const suite_claim_job_t *j, const char *id)
{
    for (int i = 0; i < j->n && i < 32; i++) {
        if (strcmp(j->ids[i], id) == 0)
            return true;
    }
    return false;
}

static int suite_insert_run_work(ah_db_t *db, void *arg)
{
    return ah_store_run_insert(db, arg);
}

static void suite_add_run(ah_store_t *s, const char *id, const char *status, int64_t at,
                          const char *owner, int64_t lease)
{
    ah_run_rec_t r = suite_run(id, status, at);
    r.lease_owner = (char *)owner;
    r.lease_expires_at = lease;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_insert_run_work, &r), 0);
}

static void suite_test_claim(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    const int64_t now = 100000;
    suite_add_run(s, "run_q1", AH_RUN_QUEUED, 10, NULL, 0);
    suite_add_run(s, "run_q2", AH_RUN_QUEUED, 20, NULL, 0);
    suite_add_run(s, "run_q3", AH_RUN_QUEUED, 30, NULL, 0);
    suite_add_run(s, "run_q4", AH_RUN_QUEUED, 40, NULL, 0);
    suite_add_run(s, "run_expired", AH_RUN_RUNNING, 5, "node-dead", now - 1);
    suite_add_run(s, "run_live", AH_RUN_RUNNING, 1, "node-c", now + 500000);
    suite_add_run(s, "run_nolease", AH_RUN_RUNNING, 2, NULL, 0);
    suite_add_run(s, "run_done", AH_RUN_COMPLETED, 3, NULL, 0);
    suite_add_run(s, "run_wait", AH_RUN_REQUIRES_ACTION, 4, "node-dead", now - 1);

    suite_claim_job_t a = {.owner = "node-a", .now = now, .lease_ms = 30000, .max = 3};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &a), 3);
    assert_int_equal(a.n, 3);
    /* oldest first: the expired run (created 5), then q1, q2 */
    assert_true(suite_has(&a, "run_expired"));
    assert_true(suite_has(&a, "run_q1"));
    assert_true(suite_has(&a, "run_q2"));
    for (int i = 0; i < 3; i++)
        assert_int_equal(a.attempts[i], 1);

    suite_claim_job_t b = {.owner = "node-b", .now = now, .lease_ms = 30000, .max = 10};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &b), 2);
    assert_true(suite_has(&b, "run_q3"));
    assert_true(suite_has(&b, "run_q4"));
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &b), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE lease_owner = 'node-a'"), 3);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE status = 'queued'"), 0);

    /* Heartbeats renew only the owner's leases. */
    const char *const mine[] = {"run_expired", "run_q1", "run_q2", "run_q3", "run_nope"};
    a.beat_ids = mine;
    a.nbeat = 5;
    a.now = now + 10000;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_beat_work, &a), 3);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE lease_owner = 'node-a' AND "
                                    "lease_expires_at = 140000"),
                     3);
    /* 40 ids: more than one heartbeat statement */
    const char *many[40];
    for (int i = 0; i < 40; i++)
        many[i] = i == 36 ? "run_q3" : i == 37 ? "run_q4" : "run_x";
    b.beat_ids = many;
    b.nbeat = 40;
    b.now = now + 20000;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_beat_work, &b), 2);
    b.nbeat = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_beat_work, &b), 0);

    /* node-a stops beating: after its lease, node-b takes its runs over (attempt 2). */
    b.now = now + 40001;
    b.max = 10;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &b), 3);
    assert_true(suite_has(&b, "run_q1"));
    for (int i = 0; i < 3; i++)
        assert_int_equal(b.attempts[i], 2);
    /* and node-a's late heartbeat renews nothing */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_beat_work, &a), 0);

    /* bad arguments */
    a.max = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &a), -EINVAL);
    a.max = 1;
    a.owner = "";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_claim_work, &a), -EINVAL);
    ah_store_close(s);
}

typedef struct {
    int n, stop_after;
    char ids[4][48];
    int64_t attempts[4];
    char owners[4][48];
    int rc;
} suite_returned_t;

static int suite_returned_cb(void *ud, const ah_run_rec_t *r)
{
    suite_returned_t *t = ud;
    if (t->n < 4) {
        snprintf(t->ids[t->n], sizeof(t->ids[0]), "%s", r->id);
        snprintf(t->owners[t->n], sizeof(t->owners[0]), "%s", r->lease_owner ? r->lease_owner : "");
        t->attempts[t->n] = r->attempt;
    }
    t->n++;
    return t->stop_after && t->n >= t->stop_after ? 7 : 0;
}

static int suite_update_returning_work(ah_db_t *db, void *arg)
{
    suite_returned_t *t = arg;
    ah_db_val_t a[4] = {ah_db_text("node-r"), ah_db_text("run_r1"), ah_db_text("run_r2"),
                        ah_db_text("run_r3")};
    return ah_store_run_update_returning(
        db, "lease_owner = ?, attempt = attempt + 1 WHERE id IN (?, ?, ?) AND status = 'queued'", a,
        4, suite_returned_cb, t);
}

static int suite_update_returning_bad_work(ah_db_t *db, void *arg)
{
    return ah_store_run_update_returning(db, "", NULL, 0, suite_returned_cb, arg);
}

/* One UPDATE ... RETURNING hands back every changed run as written, and only those. */
static void suite_test_run_update_returning(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_add_run(s, "run_r1", AH_RUN_QUEUED, 10, NULL, 0);
    suite_add_run(s, "run_r2", AH_RUN_QUEUED, 20, NULL, 0);
    suite_add_run(s, "run_r3", AH_RUN_COMPLETED, 30, NULL, 0);
    suite_returned_t t = {0};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_returning_work, &t), 0);
    assert_int_equal(t.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_true(strcmp(t.ids[i], "run_r1") == 0 || strcmp(t.ids[i], "run_r2") == 0);
        assert_string_equal(t.owners[i], "node-r");
        assert_int_equal(t.attempts[i], 1);
    }
    assert_string_not_equal(t.ids[0], t.ids[1]);
    assert_int_equal(
        suite_count(s, "SELECT COUNT(*) FROM runs WHERE lease_owner = 'node-r' AND attempt = 1"),
        2);
    /* A callback's nonzero value is returned; the statement's changes stay. */
    suite_returned_t u = {.stop_after = 1};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_returning_work, &u), 7);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE attempt = 2"), 2);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_returning_bad_work, &u),
                     -EINVAL);
    ah_store_close(s);
}

typedef struct {
    const char *id, *owner;
    bool unowned_ok;
    int attempt;
} suite_owned_t;

static int suite_update_owned_work(ah_db_t *db, void *arg)
{
    suite_owned_t *o = arg;
    ah_run_rec_t r = suite_run(o->id, AH_RUN_COMPLETED, 50);
    r.attempt = o->attempt;
    r.output = "done";
    r.updated_at = 60;
    return ah_store_run_update_owned(db, &r, o->owner, o->unowned_ok);
}

/* A run is written only while it is the writer's: another's (or a missing one) is -ESTALE. */
static void suite_test_run_update_owned(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_add_run(s, "run_o1", AH_RUN_RUNNING, 10, "node-a", 100);
    suite_add_run(s, "run_o2", AH_RUN_REQUIRES_ACTION, 20, NULL, 0);
    suite_owned_t o = {"run_o1", "node-b", false, 0};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), -ESTALE);
    o.owner = "node-a";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE id = 'run_o1' AND status = "
                                    "'completed' AND output = 'done'"),
                     1);
    /* No owner (parked): only when the caller accepts that. */
    o.id = "run_o2";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), -ESTALE);
    o.unowned_ok = true;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE status = 'completed'"), 2);
    /* Claimed again meanwhile, even by the same owner: the older attempt's write is stale. */
    suite_add_run(s, "run_o3", AH_RUN_RUNNING, 30, "node-a", 100);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_exec_work,
                                   (void *)"UPDATE runs SET attempt = attempt + 1 WHERE id = "
                                           "'run_o3'"),
                     0);
    o = (suite_owned_t){"run_o3", "node-a", false, 0};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), -ESTALE);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE id = 'run_o3' AND status = "
                                    "'running'"),
                     1);
    o.attempt = 1;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM runs WHERE status = 'completed'"), 3);
    o.id = "run_missing";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), -ESTALE);
    o.owner = "";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_update_owned_work, &o), -EINVAL);
    ah_store_close(s);
}

typedef struct {
    const char *id, *owner;
    int64_t attempt;
} suite_fence_t;

/* A tool result stored at once: fenced, then its event appended, as the runtime does. */
static int suite_fenced_event_work(ah_db_t *db, void *arg)
{
    suite_fence_t *f = arg;
    int rc = ah_store_run_fence(db, f->id, f->owner, f->attempt);
    if (rc)
        return rc;
    ah_run_event_t e;
    memset(&e, 0, sizeof(e));
    snprintf(e.run_id, sizeof(e.run_id), "%s", f->id);
    snprintf(e.type, sizeof(e.type), "tool.result");
    e.seq = 1;
    e.data = (char *)"{}";
    e.ts = 1;
    return ah_store_run_events_append(db, &e, 1);
}

static void suite_test_run_fence(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_add_run(s, "run_f1", AH_RUN_RUNNING, 10, "node-a", 100);
    /* Claimed again (attempt 1 -> 2): the first attempt's late write adds nothing. */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_exec_work,
                                   (void *)"UPDATE runs SET attempt = attempt + 1 WHERE id = "
                                           "'run_f1'"),
                     0);
    suite_fence_t f = {"run_f1", "node-a", 0};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_fenced_event_work, &f), -ESTALE);
    f.owner = "node-b";
    f.attempt = 1;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_fenced_event_work, &f), -ESTALE);
    f.id = "run_missing";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_fenced_event_work, &f), -ESTALE);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM run_events"), 0);
    /* The current attempt writes. */
    f = (suite_fence_t){"run_f1", "node-a", 1};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_fenced_event_work, &f), 0);
    assert_int_equal(suite_count(s, "SELECT COUNT(*) FROM run_events WHERE run_id = 'run_f1' AND "
                                    "type = 'tool.result'"),
                     1);
    f.owner = "";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_fenced_event_work, &f), -EINVAL);
    ah_store_close(s);
}

typedef struct {
    const char *hash;
    int rc;
    char found[65];
} suite_hashed_t;

static int suite_insert_hashed_work(ah_db_t *db, void *arg)
{
    suite_hashed_t *h = arg;
    ah_run_rec_t r = suite_run("run_h1", AH_RUN_QUEUED, ah_wall_ms());
    r.idempotency_key = "idem-h1";
    int rc = ah_store_run_insert_hashed(db, &r, h->hash);
    if (rc < 0)
        return rc;
    ah_run_rec_t got;
    rc = ah_store_run_find_idempotent(db, "key_a", "idem-h1", 0, &got, h->found);
    if (rc == 0)
        ah_run_rec_free(&got);
    return rc;
}

/* A run inserted with its request hash is found by its Idempotency-Key with that hash. */
static void suite_test_run_insert_hashed(void **state)
{
    (void)state;
    ah_store_t *s = suite_store(AH_STORE_MIGRATE, 0);
    suite_hashed_t h = {.hash = "abc"};
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_insert_hashed_work, &h), -EINVAL);
    h.hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, suite_insert_hashed_work, &h), 0);
    assert_string_equal(h.found, h.hash);
    ah_store_close(s);
}

#define SUITE_CLAIM_RUNS    60
#define SUITE_CLAIM_THREADS 4

typedef struct {
    ah_store_t *s;
    char owner[16];
    int claimed;
    int rc;
} suite_claimer_t;

static void *suite_claim_thread(void *arg)
{
    suite_claimer_t *c = arg;
    for (;;) {
        suite_claim_job_t j = {.owner = c->owner, .now = 1000, .lease_ms = 60000, .max = 2};
        int rc = ah_store_call(c->s, AH_STORE_WRITE, suite_claim_work, &j);
        if (rc == -EBUSY)
            continue;
        if (rc <= 0) {
            c->rc = rc;
            return NULL;
        }
        c->claimed += rc;
    }
}

/* Replicas claiming at once: every run is taken exactly once. */
static void suite_test_claim_concurrent(void **state)
{
    (void)state;
    ah_store_t *s[2] = {suite_store(AH_STORE_MIGRATE, 0), suite_store(0, 0)};
    for (int i = 0; i < SUITE_CLAIM_RUNS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "run_%02d", i);
        suite_add_run(s[0], id, AH_RUN_QUEUED, i, NULL, 0);
    }
    suite_claimer_t c[SUITE_CLAIM_THREADS];
    pthread_t th[SUITE_CLAIM_THREADS];
    for (int i = 0; i < SUITE_CLAIM_THREADS; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].s = s[i % 2];
        snprintf(c[i].owner, sizeof(c[i].owner), "node-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, suite_claim_thread, &c[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < SUITE_CLAIM_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(c[i].rc, 0);
        total += c[i].claimed;
    }
    assert_int_equal(total, SUITE_CLAIM_RUNS);
    assert_int_equal(suite_count(s[0], "SELECT COUNT(*) FROM runs WHERE attempt = 1 AND "
                                       "status = 'running'"),
                     SUITE_CLAIM_RUNS);
    ah_store_close(s[0]);
    ah_store_close(s[1]);
}

/*
 * The cmocka entries of the suite, each on a fresh database made by setup
 * (suite_setup, or a wrapper that calls it).
 */
#define AH_STORE_SUITE_TESTS(setup)                                                                \
    cmocka_unit_test_setup(suite_test_db_types, setup),                                            \
        cmocka_unit_test_setup(suite_test_db_errors, setup),                                       \
        cmocka_unit_test_setup(suite_test_db_cache, setup),                                        \
        cmocka_unit_test_setup(suite_test_db_txn, setup),                                          \
        cmocka_unit_test_setup(suite_test_db_txn_control, setup),                                  \
        cmocka_unit_test_setup(suite_test_db_deferred, setup),                                     \
        cmocka_unit_test_setup(suite_test_db_busy, setup),                                         \
        cmocka_unit_test_setup(suite_test_open_migrate, setup),                                    \
        cmocka_unit_test_setup(suite_test_migrate_concurrent, setup),                              \
        cmocka_unit_test_setup(suite_test_group_commit, setup),                                    \
        cmocka_unit_test_setup(suite_test_commit_failure, setup),                                  \
        cmocka_unit_test_setup(suite_test_pipeline, setup),                                        \
        cmocka_unit_test_setup(suite_test_keys, setup),                                            \
        cmocka_unit_test_setup(suite_test_audit, setup),                                           \
        cmocka_unit_test_setup(suite_test_usage, setup),                                           \
        cmocka_unit_test_setup(suite_test_agents, setup),                                          \
        cmocka_unit_test_setup(suite_test_runs, setup),                                            \
        cmocka_unit_test_setup(suite_test_claim, setup),                                           \
        cmocka_unit_test_setup(suite_test_run_update_returning, setup),                            \
        cmocka_unit_test_setup(suite_test_run_update_owned, setup),                                \
        cmocka_unit_test_setup(suite_test_run_fence, setup),                                       \
        cmocka_unit_test_setup(suite_test_run_insert_hashed, setup),                               \
        cmocka_unit_test_setup(suite_test_claim_concurrent, setup)

#endif
