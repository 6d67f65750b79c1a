/*
 * test_db.c - what the SQL layer (store/db.h) does outside a database and
 * what only SQLite has: value conversions and constructors, URL handling,
 * WAL and pragmas. Binding, errors, the statement cache, transactions and
 * lock waits are in store_suite.h, run on SQLite and PostgreSQL by
 * test_store_pg.c.
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

    /* The _or_null constructors: an empty string or a zero is SQL NULL. */
    assert_int_equal(ah_db_text_or_null("").type, AH_DB_NULL);
    assert_int_equal(ah_db_text_or_null("a").type, AH_DB_TEXT);
    assert_int_equal(ah_db_int_or_null(0).type, AH_DB_NULL);
    assert_int_equal(ah_db_int_or_null(7).type, AH_DB_INT);

    /* ah_db_val_dup: a heap copy of text (bytes as is), NULL for NULL, numbers refused. */
    char *dup = (char *)1;
    assert_int_equal(ah_db_val_dup(&n, &dup), 0);
    assert_null(dup);
    ah_db_val_t part = ah_db_textn("abc", 2);
    assert_int_equal(ah_db_val_dup(&part, &dup), 0);
    assert_string_equal(dup, "ab");
    free(dup);
    ah_db_val_t empty = ah_db_textn("", 0);
    assert_int_equal(ah_db_val_dup(&empty, &dup), 0);
    assert_string_equal(dup, "");
    free(dup);
    assert_int_equal(ah_db_val_dup(&i, &dup), -EIO);
    assert_null(dup);
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_val_conversions),
        cmocka_unit_test(test_open_urls),
        cmocka_unit_test(test_wal_and_pragmas),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
