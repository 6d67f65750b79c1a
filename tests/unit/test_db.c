/*
 * test_db.c - the backend-neutral SQL layer (store/db.h) on SQLite: value
 * binding and reading for every type, error mapping, the statement cache,
 * transactions and savepoints, URL handling.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/db.h"

static char tmpdir[256];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ah_test_db_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static ah_db_t *open_mem(void)
{
    ah_db_t *db = NULL;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_db_open("sqlite://:memory:", NULL, &db, &err), 0);
    ah_buf_free(&err);
    return db;
}

typedef struct {
    int rows;
    ah_db_val_t cols[8];
    char text[8][64]; /* copies: row values are valid only in the callback */
    int ncols;
} capture_t;

static int capture(void *ud, const ah_db_val_t *cols, int ncols)
{
    capture_t *c = ud;
    c->rows++;
    c->ncols = ncols;
    for (int i = 0; i < ncols && i < 8; i++) {
        c->cols[i] = cols[i];
        if (cols[i].type == AH_DB_TEXT || cols[i].type == AH_DB_BLOB) {
            assert_true(cols[i].n < sizeof(c->text[i]));
            memcpy(c->text[i], cols[i].s, cols[i].n);
            c->cols[i].s = c->text[i];
        }
    }
    return 0;
}

static void test_bind_all_types(void **state)
{
    ah_db_t *db = open_mem();
    assert_string_equal(ah_db_backend_name(db), "sqlite");
    assert_int_equal(ah_db_exec(db, "CREATE TABLE t (i BIGINT, d DOUBLE PRECISION, s TEXT, "
                                    "b BLOB, n TEXT)"),
                     0);
    const unsigned char blob[5] = {0, 1, 2, 0, 255};
    ah_db_val_t args[5] = {ah_db_int(INT64_MIN + 1), ah_db_dbl(3.25), ah_db_text("héllo 'x'"),
                           ah_db_blob(blob, sizeof(blob)), ah_db_null()};
    assert_int_equal(ah_db_query(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", args, 5, NULL, NULL),
                     0);
    assert_int_equal(ah_db_changes(db), 1);

    capture_t c = {0};
    assert_int_equal(ah_db_query(db, "SELECT i, d, s, b, n FROM t", NULL, 0, capture, &c), 0);
    assert_int_equal(c.rows, 1);
    assert_int_equal(c.ncols, 5);
    assert_int_equal(c.cols[0].type, AH_DB_INT);
    assert_true(c.cols[0].i == INT64_MIN + 1);
    assert_int_equal(c.cols[1].type, AH_DB_DBL);
    assert_true(c.cols[1].d == 3.25);
    assert_int_equal(c.cols[2].type, AH_DB_TEXT);
    assert_int_equal(c.cols[2].n, strlen("héllo 'x'"));
    assert_memory_equal(c.cols[2].s, "héllo 'x'", c.cols[2].n);
    assert_int_equal(c.cols[3].type, AH_DB_BLOB);
    assert_int_equal(c.cols[3].n, sizeof(blob));
    assert_memory_equal(c.cols[3].s, blob, sizeof(blob));
    assert_int_equal(c.cols[4].type, AH_DB_NULL);

    /* textn binds exactly n bytes; text(NULL) and text_or_null("") are NULL */
    ah_db_val_t a2[2] = {ah_db_textn("abcdef", 3), ah_db_text(NULL)};
    memset(&c, 0, sizeof(c));
    assert_int_equal(ah_db_query(db, "SELECT ?, ?", a2, 2, capture, &c), 0);
    assert_int_equal(c.cols[0].n, 3);
    assert_memory_equal(c.cols[0].s, "abc", 3);
    assert_int_equal(c.cols[1].type, AH_DB_NULL);
    assert_int_equal(ah_db_text_or_null("").type, AH_DB_NULL);
    assert_int_equal(ah_db_int_or_null(0).type, AH_DB_NULL);
    assert_int_equal(ah_db_int_or_null(7).type, AH_DB_INT);
    ah_db_close(db);
}

static void test_val_conversions(void **state)
{
    ah_db_val_t t = ah_db_text("1234567890123");
    assert_true(ah_db_val_int(&t) == 1234567890123LL);
    ah_db_val_t tn = ah_db_textn("42xyz", 2);
    assert_int_equal(ah_db_val_int(&tn), 42);
    ah_db_val_t d = ah_db_dbl(2.9);
    assert_int_equal(ah_db_val_int(&d), 2);
    ah_db_val_t td = ah_db_text("0.5");
    assert_true(ah_db_val_dbl(&td) == 0.5);
    ah_db_val_t n = ah_db_null();
    assert_int_equal(ah_db_val_int(&n), 0);

    char out[8];
    assert_int_equal(ah_db_val_copy(&n, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    ah_db_val_t i = ah_db_int(-17);
    assert_int_equal(ah_db_val_copy(&i, out, sizeof(out)), 0);
    assert_string_equal(out, "-17");
    ah_db_val_t s = ah_db_text("1234567");
    assert_int_equal(ah_db_val_copy(&s, out, sizeof(out)), 0);
    assert_string_equal(out, "1234567");
    ah_db_val_t big = ah_db_text("12345678");
    assert_int_equal(ah_db_val_copy(&big, out, sizeof(out)), -E2BIG);
    assert_string_equal(out, "");
}

static void test_error_mapping(void **state)
{
    ah_db_t *db = open_mem();
    assert_int_equal(ah_db_exec(db, "CREATE TABLE u (id TEXT PRIMARY KEY, email TEXT UNIQUE, "
                                    "name TEXT NOT NULL)"),
                     0);
    ah_db_val_t a[3] = {ah_db_text("1"), ah_db_text("a@x"), ah_db_text("A")};
    const char *ins = "INSERT INTO u (id, email, name) VALUES (?, ?, ?)";
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), 0);
    /* same primary key */
    a[1] = ah_db_text("b@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    assert_non_null(strstr(ah_db_errmsg(db), "UNIQUE"));
    /* same unique column */
    a[0] = ah_db_text("2");
    a[1] = ah_db_text("a@x");
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EEXIST);
    /* NOT NULL is not a duplicate */
    a[1] = ah_db_text("c@x");
    a[2] = ah_db_null();
    assert_int_equal(ah_db_query(db, ins, a, 3, NULL, NULL), -EIO);
    /* syntax error, missing table */
    assert_int_equal(ah_db_query(db, "SELEC 1", NULL, 0, NULL, NULL), -EIO);
    assert_non_null(strstr(ah_db_errmsg(db), "syntax"));
    assert_int_equal(ah_db_query(db, "SELECT * FROM nope", NULL, 0, NULL, NULL), -EIO);
    assert_int_equal(ah_db_exec(db, "INSERT INTO nope VALUES (1)"), -EIO);
    assert_non_null(strstr(ah_db_errmsg(db), "nope"));
    /* placeholder / argument count mismatch, two statements, empty */
    assert_int_equal(ah_db_query(db, ins, a, 2, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, "SELECT 1; SELECT 2", NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, "  ", NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(ah_db_query(db, NULL, NULL, 0, NULL, NULL), -EINVAL);
    /* a trailing semicolon is fine */
    int64_t v = 0;
    assert_int_equal(ah_db_query_int(db, "SELECT 5;", NULL, 0, &v), 0);
    assert_int_equal(v, 5);
    ah_db_close(db);
}

static void test_busy(void **state)
{
    char url[320];
    snprintf(url, sizeof(url), "sqlite://%s/busy.db", tmpdir);
    ah_db_opts_t o = {.busy_timeout_ms = 20};
    ah_db_t *a = NULL, *b = NULL;
    assert_int_equal(ah_db_open(url, &o, &a, NULL), 0);
    assert_int_equal(ah_db_open(url, &o, &b, NULL), 0);
    assert_int_equal(ah_db_exec(a, "CREATE TABLE t (x INTEGER)"), 0);
    assert_int_equal(ah_db_begin(a, true), 0);
    assert_int_equal(ah_db_begin(b, true), -EBUSY);
    assert_false(ah_db_in_txn(b));
    /* WAL: a reader is not blocked by the writer's open transaction */
    int64_t n = -1;
    assert_int_equal(ah_db_query_int(b, "SELECT COUNT(*) FROM t", NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ah_db_commit(a), 0);
    assert_int_equal(ah_db_begin(b, true), 0);
    assert_int_equal(ah_db_rollback(b), 0);
    ah_db_close(a);
    ah_db_close(b);
}

typedef struct {
    ah_db_t *db;
    int outer, inner;
} nest_t;

static int inner_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    ((nest_t *)ud)->inner++;
    return 0;
}

/* Runs the same SQL as the outer query: the cached statement is busy, so a private one is used. */
static int outer_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    nest_t *n = ud;
    n->outer++;
    assert_int_equal(ah_db_query(n->db, "SELECT x FROM t ORDER BY x", NULL, 0, inner_row, n), 0);
    return 0;
}

static int stop_at_two(void *ud, const ah_db_val_t *cols, int ncols)
{
    int *seen = ud;
    return ++*seen == 2 ? 77 : 0;
}

static void test_stmt_cache(void **state)
{
    ah_db_t *db = NULL;
    ah_db_opts_t o = {.stmt_cache_size = 3};
    assert_int_equal(ah_db_open("sqlite://:memory:", &o, &db, NULL), 0);
    assert_int_equal(ah_db_exec(db, "CREATE TABLE t (x INTEGER)"), 0);
    ah_db_stats_t st0, st;
    ah_db_stats(db, &st0);
    for (int i = 0; i < 10; i++) {
        ah_db_val_t a = ah_db_int(i);
        assert_int_equal(ah_db_query(db, "INSERT INTO t (x) VALUES (?)", &a, 1, NULL, NULL), 0);
    }
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_misses - st0.stmt_cache_misses, 1);
    assert_int_equal(st.stmt_cache_hits - st0.stmt_cache_hits, 9);

    /* Keyed by content, not pointer: one buffer reused for different SQL. */
    char sql[64];
    int64_t v;
    for (int i = 0; i < 5; i++) {
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM t WHERE x >= %d", i);
        assert_int_equal(ah_db_query_int(db, sql, NULL, 0, &v), 0);
        assert_int_equal(v, 10 - i);
    }
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_entries, 3); /* bounded */
    assert_true(st.stmt_cache_evictions >= 3);

    /* Nested use of the same statement from a row callback. */
    nest_t n = {db, 0, 0};
    assert_int_equal(ah_db_query(db, "SELECT x FROM t ORDER BY x", NULL, 0, outer_row, &n), 0);
    assert_int_equal(n.outer, 10);
    assert_int_equal(n.inner, 100);

    /* A callback's nonzero value stops the query and is returned; the statement is reusable. */
    int seen = 0;
    assert_int_equal(ah_db_query(db, "SELECT x FROM t ORDER BY x", NULL, 0, stop_at_two, &seen),
                     77);
    assert_int_equal(seen, 2);
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(ah_db_query_int(db, "SELECT x FROM t WHERE x > 100", NULL, 0, &v), -ENOENT);
    ah_db_close(db);

    /* Cache disabled still works. */
    ah_db_opts_t off = {.no_stmt_cache = true};
    assert_int_equal(ah_db_open("sqlite://:memory:", &off, &db, NULL), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT 3", NULL, 0, &v), 0);
    assert_int_equal(ah_db_query_int(db, "SELECT 3", NULL, 0, &v), 0);
    ah_db_stats(db, &st);
    assert_int_equal(st.stmt_cache_entries, 0);
    assert_int_equal(st.stmt_cache_hits, 0);
    ah_db_close(db);
}

static void test_txn_savepoints(void **state)
{
    ah_db_t *db = open_mem();
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
    assert_int_equal(ah_db_exec(db, "INSERT INTO t VALUES (3)"), 0);
    assert_int_equal(ah_db_release(db, "sp2"), 0);
    assert_int_equal(ah_db_commit(db), 0);
    assert_false(ah_db_in_txn(db));
    assert_int_equal(ah_db_query_int(db, "SELECT SUM(x) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 4);

    assert_int_equal(ah_db_begin(db, false), 0);
    assert_int_equal(ah_db_exec(db, "DELETE FROM t"), 0);
    assert_int_equal(ah_db_rollback(db), 0);
    assert_int_equal(ah_db_rollback(db), 0); /* no transaction: a no-op */
    assert_int_equal(ah_db_query_int(db, "SELECT COUNT(*) FROM t", NULL, 0, &v), 0);
    assert_int_equal(v, 2);

    /* identifiers are checked: no SQL through a savepoint name */
    assert_int_equal(ah_db_savepoint(db, "x; DROP TABLE t"), -EINVAL);
    assert_int_equal(ah_db_savepoint(db, "1abc"), -EINVAL);
    assert_int_equal(ah_db_savepoint(db, ""), -EINVAL);
    assert_true(ah_db_ident_ok("_a1"));
    assert_int_equal(ah_db_table_exists(db, "t"), 1);
    assert_int_equal(ah_db_table_exists(db, "nope"), 0);
    assert_int_equal(ah_db_table_exists(db, "t'--"), -EINVAL);
    ah_db_close(db);
}

static void test_open_urls(void **state)
{
    ah_db_t *db = NULL;
    ah_buf_t err = AH_BUF_INIT;

    assert_int_equal(ah_db_open("postgres://u:secret@127.0.0.1:1/db", NULL, &db, &err), -EIO);
    assert_null(db);
    assert_non_null(err.data);
    assert_null(strstr(err.data, "secret"));
    ah_buf_reset(&err);

    assert_int_equal(ah_db_open("mysql://u:secret@h/db", NULL, &db, &err), -EINVAL);
    assert_non_null(strstr(err.data, "unknown scheme \"mysql\""));
    assert_null(strstr(err.data, "secret"));
    ah_buf_reset(&err);

    assert_int_equal(ah_db_open("sqlite://", NULL, &db, &err), -EINVAL);
    assert_non_null(strstr(err.data, "needs a file path"));
    ah_buf_reset(&err);
    assert_int_equal(ah_db_open("", NULL, &db, &err), -EINVAL);
    ah_buf_reset(&err);

    /* Absolute path (sqlite:///abs) with a missing parent: created (one level). */
    char url[400], path[400];
    snprintf(url, sizeof(url), "sqlite://%s/newdir/a.db", tmpdir);
    assert_int_equal(url[9], '/');
    assert_int_equal(ah_db_open(url, NULL, &db, &err), 0);
    ah_db_close(db);
    snprintf(path, sizeof(path), "%s/newdir/a.db", tmpdir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);

    /* Two missing levels: a clear error naming the directory. */
    snprintf(url, sizeof(url), "sqlite://%s/no/such/a.db", tmpdir);
    assert_int_equal(ah_db_open(url, NULL, &db, &err), -ENOENT);
    snprintf(path, sizeof(path), "cannot create directory \"%s/no/such\"", tmpdir);
    assert_non_null(strstr(err.data, path));
    ah_buf_reset(&err);

    /* Relative path: sqlite://./x is relative to the working directory. */
    char cwd[256];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(ah_db_open("sqlite://./rel/r.db", NULL, &db, &err), 0);
    ah_db_close(db);
    assert_int_equal(stat("rel/r.db", &sb), 0);
    assert_int_equal(chdir(cwd), 0);

    /* Read-only open of a missing file fails instead of creating it. */
    ah_db_opts_t ro = {.readonly = true};
    snprintf(url, sizeof(url), "sqlite://%s/missing.db", tmpdir);
    assert_int_equal(ah_db_open(url, &ro, &db, &err), -EIO);
    assert_non_null(strstr(err.data, "cannot open SQLite database"));
    ah_buf_free(&err);
}

static void test_wal_and_pragmas(void **state)
{
    char url[320];
    snprintf(url, sizeof(url), "sqlite://%s/wal.db", tmpdir);
    ah_db_t *db = NULL;
    assert_int_equal(ah_db_open(url, NULL, &db, NULL), 0);
    capture_t c = {0};
    assert_int_equal(ah_db_query(db, "PRAGMA journal_mode", NULL, 0, capture, &c), 0);
    assert_string_equal(c.text[0], "wal");
    int64_t v;
    assert_int_equal(ah_db_query_int(db, "PRAGMA foreign_keys", NULL, 0, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(ah_db_query_int(db, "PRAGMA synchronous", NULL, 0, &v), 0);
    assert_int_equal(v, 1); /* NORMAL */
    ah_db_close(db);

    /* A read-only connection refuses writes. */
    ah_db_opts_t ro = {.readonly = true};
    assert_int_equal(ah_db_open(url, &ro, &db, NULL), 0);
    assert_int_equal(ah_db_exec(db, "CREATE TABLE x (a INTEGER)"), -EIO);
    ah_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bind_all_types), cmocka_unit_test(test_val_conversions),
        cmocka_unit_test(test_error_mapping),  cmocka_unit_test(test_busy),
        cmocka_unit_test(test_stmt_cache),     cmocka_unit_test(test_txn_savepoints),
        cmocka_unit_test(test_open_urls),      cmocka_unit_test(test_wal_and_pragmas),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
