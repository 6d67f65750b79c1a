/*
 * migrate.h - numbered schema migrations.
 *
 * Each src/store/migrations/NNNN_name.sql is embedded into the binary at build
 * time (scripts/embed_migrations.cmake) as one ah_migration_t, ordered by
 * version. The database records what it has in
 * schema_migrations(version, name, applied_at). Applying takes the
 * database's write lock per migration (SQLite BEGIN IMMEDIATE; PostgreSQL an
 * advisory lock), so replicas starting together apply each migration once.
 */
#ifndef AH_MIGRATE_H
#define AH_MIGRATE_H

#include "core/buf.h"
#include "store/db.h"

/* Field order is fixed: the generated array initialises them positionally. */
typedef struct ah_migration {
    int version;      /* NNNN from the file name */
    const char *name; /* "0001_init" */
    const char *sql;  /* the file's text: portable SQL, may hold several statements */
} ah_migration_t;

/* Generated (build/generated/migrations_data.c). */
extern const ah_migration_t ah_migrations[];
extern const int ah_migrations_count;

/** Called after each migration is committed. */
typedef void (*ah_migrate_applied_fn)(void *ud, const ah_migration_t *m);

/**
 * Applies every embedded migration the database lacks, lowest version first,
 * each in its own transaction together with its schema_migrations row.
 * on_applied (may be NULL) is told of each one once it is committed.
 * Returns the number applied (0 when the schema was current), or:
 *   -EPROTO   the database has a version newer than this binary knows;
 *   -EBUSY    another process held the database lock past the busy timeout;
 *   -EINVAL   the embedded migrations are malformed (duplicate version);
 *   -errno    a migration failed (it is rolled back; earlier ones stay).
 * On failure appends one user-facing line to err (may be NULL).
 * Must not be called inside a transaction.
 */
int ah_migrate_apply(ah_db_t *db, ah_migrate_applied_fn on_applied, void *ud, ah_buf_t *err);

/**
 * Reads the schema version: *current = highest applied version (0 for an empty
 * database), *latest = highest embedded version. Works on a read-only
 * connection. 0 or -errno.
 */
int ah_migrate_status(ah_db_t *db, int *current, int *latest);

/** Highest embedded version (0 when there are none). */
int ah_migrate_latest(void);

/**
 * Checks that *current is usable by this binary: 0, or -EPROTO with the
 * "database schema version X is newer than this agenthub (latest Y)" line
 * appended to err.
 */
int ah_migrate_check_newer(int current, int latest, ah_buf_t *err);

#endif
