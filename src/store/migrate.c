/*
 * migrate.c - applies the embedded migrations (migrate.h).
 *
 * Each migration is one transaction: take the lock, (re)read what is applied,
 * run the lowest missing migration and record it, commit. Re-reading under
 * the lock is what makes two processes starting together safe: the one that
 * waited sees the other's row and moves on.
 */
#include "store/migrate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

#define MAX_APPLIED 4096 /* versions tracked per pass; far beyond any real schema */

static const char *const create_table = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                        " version INTEGER PRIMARY KEY,"
                                        " name TEXT NOT NULL,"
                                        " applied_at BIGINT NOT NULL)";

int ah_migrate_latest(void)
{
    int latest = 0;
    for (int i = 0; i < ah_migrations_count; i++) {
        if (ah_migrations[i].version > latest)
            latest = ah_migrations[i].version;
    }
    return latest;
}

int ah_migrate_check_newer(int current, int latest, ah_buf_t *err)
{
    if (current <= latest)
        return 0;
    if (err)
        ah_buf_printf(err,
                      "database schema version %d is newer than this agenthub (latest %d): "
                      "upgrade agenthub",
                      current, latest);
    return -EPROTO;
}

/* The embedded list must be strictly ascending: the build sorts by file name. */
static int check_embedded(ah_buf_t *err)
{
    for (int i = 1; i < ah_migrations_count; i++) {
        if (ah_migrations[i].version <= ah_migrations[i - 1].version) {
            if (err)
                ah_buf_printf(err,
                              "migrations %s and %s have the same or descending version "
                              "(renumber one of src/store/migrations/*.sql)",
                              ah_migrations[i - 1].name, ah_migrations[i].name);
            return -EINVAL;
        }
    }
    return 0;
}

typedef struct {
    int versions[MAX_APPLIED];
    int n;
    int max;
} applied_t;

static int applied_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    applied_t *a = ud;
    int v = (int)ah_db_val_int(&cols[0]);
    if (v > a->max)
        a->max = v;
    if (a->n < MAX_APPLIED)
        a->versions[a->n++] = v;
    return 0;
}

static bool is_applied(const applied_t *a, int version)
{
    for (int i = 0; i < a->n; i++) {
        if (a->versions[i] == version)
            return true;
    }
    return false;
}

int ah_migrate_status(ah_db_t *db, int *current, int *latest)
{
    *latest = ah_migrate_latest();
    *current = 0;
    int rc = ah_db_table_exists(db, "schema_migrations");
    if (rc <= 0)
        return rc;
    int64_t v = 0;
    rc = ah_db_query_int(db, "SELECT MAX(version) FROM schema_migrations", NULL, 0, &v);
    if (rc < 0)
        return rc;
    *current = (int)v;
    return 0;
}

static void say_failed(ah_db_t *db, ah_buf_t *err, const char *what, int rc)
{
    if (!err)
        return;
    if (rc == -EBUSY)
        ah_buf_printf(err,
                      "%s: database is locked by another process (is another agenthub migrating? "
                      "retry, or raise storage.busy_timeout_ms): %s",
                      what, ah_db_errmsg(db));
    else
        ah_buf_printf(err, "%s: %s", what, ah_db_errmsg(db));
}

/*
 * One pass under the lock: applies the lowest missing migration, if any.
 * Returns 1 when one was applied, 0 when none was missing, -errno.
 */
static int apply_one(ah_db_t *db, ah_migrate_applied_fn on_applied, void *ud, ah_buf_t *err)
{
    int rc = ah_db_begin(db, true);
    if (rc < 0) {
        say_failed(db, err, "migrations: cannot lock the database", rc);
        return rc;
    }
    rc = ah_db_migrate_lock(db);
    if (rc < 0) {
        say_failed(db, err, "migrations: cannot take the migration lock", rc);
        goto fail;
    }
    rc = ah_db_exec(db, create_table);
    if (rc < 0) {
        say_failed(db, err, "migrations: cannot create schema_migrations", rc);
        goto fail;
    }
    applied_t *a = calloc(1, sizeof(*a));
    if (!a) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ah_db_query(db, "SELECT version FROM schema_migrations", NULL, 0, applied_row, a);
    if (rc < 0) {
        free(a);
        say_failed(db, err, "migrations: cannot read schema_migrations", rc);
        goto fail;
    }
    rc = ah_migrate_check_newer(a->max, ah_migrate_latest(), err);
    const ah_migration_t *m = NULL;
    for (int i = 0; rc == 0 && i < ah_migrations_count && !m; i++) {
        if (!is_applied(a, ah_migrations[i].version))
            m = &ah_migrations[i];
    }
    free(a);
    if (rc < 0)
        goto fail;
    if (!m) {
        rc = ah_db_rollback(db); /* nothing written: just drop the lock */
        return rc < 0 ? rc : 0;
    }

    rc = ah_db_exec(db, m->sql);
    if (rc < 0) {
        if (err)
            ah_buf_printf(err, "migration %s failed: %s", m->name, ah_db_errmsg(db));
        goto fail;
    }
    ah_db_val_t args[3] = {ah_db_int(m->version), ah_db_text(m->name), ah_db_int(ah_wall_ms())};
    rc = ah_db_query(db,
                     "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                     args, 3, NULL, NULL);
    if (rc < 0) {
        say_failed(db, err, "migrations: cannot record the migration", rc);
        goto fail;
    }
    rc = ah_db_commit(db);
    if (rc < 0) {
        say_failed(db, err, "migrations: commit failed", rc);
        goto fail;
    }
    ah_log(AH_LOG_INFO, "store", "migration applied", AH_LF_STR("migration", m->name),
           AH_LF_INT("version", m->version), AH_LF_END);
    if (on_applied)
        on_applied(ud, m);
    return 1;

fail:
    ah_db_rollback(db);
    return rc;
}

int ah_migrate_apply(ah_db_t *db, ah_migrate_applied_fn on_applied, void *ud, ah_buf_t *err)
{
    if (ah_db_in_txn(db)) {
        if (err)
            ah_buf_puts(err, "migrations: called inside a transaction");
        return -EINVAL;
    }
    int rc = check_embedded(err);
    if (rc < 0)
        return rc;
    int applied = 0;
    /* Bounded: each pass applies one migration or stops. */
    for (int pass = 0; pass <= ah_migrations_count; pass++) {
        rc = apply_one(db, on_applied, ud, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return applied;
        applied++;
    }
    return applied;
}
