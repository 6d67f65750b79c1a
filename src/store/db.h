/*
 * db.h - a thin, backend-neutral SQL layer: one connection (ah_db_t), typed
 * values, `?` placeholders, rows delivered to a callback.
 *
 * Backends (SQLite now, PostgreSQL later) implement ah_db_backend_t; callers
 * only use the ah_db_* functions, so the same store code runs on both.
 * SQL passed here must be portable (see docs/internals/store.md): `?`
 * placeholders (the PostgreSQL backend rewrites them to $n), TEXT / BIGINT /
 * INTEGER / DOUBLE PRECISION, no backend-specific functions.
 *
 * A connection is not thread-safe: one thread at a time uses it (the store
 * gives each connection to one thread). Errors are -EBUSY (database busy or
 * locked), -EEXIST (unique or primary-key violation), -EINVAL (bad argument or
 * SQL the layer refuses), -ENOMEM, or -EIO for anything else; ah_db_errmsg()
 * then holds the backend's detail.
 */
#ifndef AH_DB_H
#define AH_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct ah_db ah_db_t;

typedef enum { AH_DB_NULL = 0, AH_DB_INT, AH_DB_DBL, AH_DB_TEXT, AH_DB_BLOB } ah_db_type_t;

/*
 * One value: a bound argument or a column of a result row. For TEXT and BLOB,
 * s points at n bytes (TEXT is also NUL-terminated when it comes from a row).
 * Row values point into the backend's memory and are valid only during the
 * row callback; copy what you keep.
 */
typedef struct ah_db_val {
    ah_db_type_t type;
    int64_t i;
    double d;
    const char *s;
    size_t n;
} ah_db_val_t;

static inline ah_db_val_t ah_db_null(void)
{
    ah_db_val_t v = {AH_DB_NULL, 0, 0.0, NULL, 0};
    return v;
}

static inline ah_db_val_t ah_db_int(int64_t i)
{
    ah_db_val_t v = {AH_DB_INT, i, 0.0, NULL, 0};
    return v;
}

static inline ah_db_val_t ah_db_dbl(double d)
{
    ah_db_val_t v = {AH_DB_DBL, 0, d, NULL, 0};
    return v;
}

/** TEXT from a NUL-terminated string; NULL gives SQL NULL. */
ah_db_val_t ah_db_text(const char *s);

/** TEXT of n bytes (need not be NUL-terminated); s NULL gives SQL NULL. */
ah_db_val_t ah_db_textn(const char *s, size_t n);

/** BLOB of n bytes; p NULL gives SQL NULL. */
ah_db_val_t ah_db_blob(const void *p, size_t n);

/** INT, or SQL NULL when i is 0 (for "0 = not set" timestamps such as revoked_at). */
static inline ah_db_val_t ah_db_int_or_null(int64_t i)
{
    return i ? ah_db_int(i) : ah_db_null();
}

/** TEXT, or SQL NULL when s is NULL or "". */
ah_db_val_t ah_db_text_or_null(const char *s);

/*
 * Reading columns portably: a backend may hand back a number as TEXT
 * (PostgreSQL's text format), so read through these rather than v->i.
 */

/** Column as an integer: INT as is, DBL truncated, TEXT parsed (0 if not a number), NULL 0. */
int64_t ah_db_val_int(const ah_db_val_t *v);

/** Column as a double (same conversions as ah_db_val_int). */
double ah_db_val_dbl(const ah_db_val_t *v);

/** FNV-1a of a statement's text: the backends' prepared-statement caches key on it. */
uint64_t ah_db_sql_hash(const char *sql, size_t n);

/**
 * Copies a TEXT/BLOB column into out (size outsz, NUL-terminated; NULL gives "").
 * Numbers are formatted in decimal. Returns 0, or -E2BIG when it does not fit
 * (out then holds "").
 */
int ah_db_val_copy(const ah_db_val_t *v, char *out, size_t outsz);

/**
 * A TEXT/BLOB column as a new NUL-terminated heap string in *out (the caller
 * frees it); SQL NULL gives *out = NULL. Returns 0, -ENOMEM, or -EIO for a
 * number column (*out is NULL on failure).
 */
int ah_db_val_dup(const ah_db_val_t *v, char **out);

/**
 * Row callback: cols[0..ncols) are the row's columns in SELECT order.
 * Return 0 to continue, nonzero to stop: that value is returned by the query.
 */
typedef int (*ah_db_row_fn)(void *ud, const ah_db_val_t *cols, int ncols);

typedef struct ah_db_opts {
    int busy_timeout_ms; /* wait this long for a lock before -EBUSY; default 5000 */
    int stmt_cache_size; /* prepared statements kept per connection; 0 = default (128) */
    bool readonly;       /* refuse writes on this connection */
    bool no_stmt_cache;  /* disable the statement cache (tests, one-shot tools) */
    /*
     * SQLite: checkpoint the WAL from a background thread (own connection)
     * instead of inside commits; the store's writer sets it. Ignored by other
     * backends and by read-only or :memory: connections.
     */
    bool bg_checkpoint;
} ah_db_opts_t;

typedef struct ah_db_stats {
    uint64_t stmt_cache_hits;
    uint64_t stmt_cache_misses;
    uint64_t stmt_cache_evictions;
    int stmt_cache_entries;
} ah_db_stats_t;

/* ah_db_t.caps bits */
#define AH_DB_CAP_PRIVATE 0x1u /* data visible only to this connection (SQLite :memory:) */

/*
 * A backend. All functions receive connections it opened. Transactions are
 * flat (begin/commit/rollback) plus named savepoints inside them.
 */
typedef struct ah_db_backend {
    const char *name; /* "sqlite", "postgres" */
    /* url is the full storage URL; on failure appends a user-facing line to err. */
    int (*open)(const char *url, const ah_db_opts_t *opts, ah_db_t **out, ah_buf_t *err);
    void (*close)(ah_db_t *db);
    int (*exec)(ah_db_t *db, const char *sql);
    int (*query)(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, ah_db_row_fn cb,
                 void *ud);
    int64_t (*changes)(ah_db_t *db);
    int (*begin)(ah_db_t *db, bool immediate);
    int (*commit)(ah_db_t *db);
    int (*rollback)(ah_db_t *db);
    int (*savepoint)(ah_db_t *db, const char *name);
    int (*release)(ah_db_t *db, const char *name);
    int (*rollback_to)(ah_db_t *db, const char *name);
    const char *(*errmsg)(ah_db_t *db);
    /* 1 if the table exists, 0 if not, or -errno. */
    int (*table_exists)(ah_db_t *db, const char *table);
    /* True while a transaction is open on the connection. */
    bool (*in_txn)(ah_db_t *db);
    /*
     * Called first inside each migration transaction to serialise migrators
     * across processes. NULL when begin(db, true) already does (SQLite's
     * BEGIN IMMEDIATE); PostgreSQL will take pg_advisory_xact_lock here.
     */
    int (*migrate_lock)(ah_db_t *db);
    void (*stats)(ah_db_t *db, ah_db_stats_t *out);
    /*
     * Housekeeping the store's writer runs when its queue is empty, after the
     * batch's done callbacks went out (SQLite: finish a WAL checkpoint). NULL
     * when there is none.
     */
    void (*idle)(ah_db_t *db);
    /* See ah_db_defer_writes; NULL: statements always run at once. */
    void (*defer_writes)(ah_db_t *db, bool on);
    /* Sends the deferred writes now: 0 or the first one's error. NULL: none are. */
    int (*flush_deferred)(ah_db_t *db);
    /* See ah_db_write_one; NULL: ah_db_query, then ah_db_changes. */
    int (*write_one)(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int none_rc);
    /* See ah_db_job_tag and ah_db_batch_failed; NULL: statements never outlive their job. */
    void (*job_tag)(ah_db_t *db, int tag);
    bool (*batch_failed)(ah_db_t *db, int *tag, int *rc);
} ah_db_backend_t;

/*
 * The part of every connection the neutral layer sees. A backend's connection
 * struct starts with this; nothing outside src/store/<backend>.c looks past it.
 */
struct ah_db {
    const ah_db_backend_t *be;
    unsigned caps; /* AH_DB_CAP_* */
};

extern const ah_db_backend_t ah_db_sqlite_backend;
extern const ah_db_backend_t ah_db_postgres_backend;

/**
 * Opens a connection to url: sqlite://PATH (sqlite://./data/agenthub.db is
 * relative to the working directory, sqlite:///var/lib/agenthub/db absolute,
 * sqlite://:memory: a private in-memory database). postgres:// and
 * postgresql:// open the PostgreSQL backend (postgres.c). opts may be NULL (defaults).
 * On success *out is owned by the caller (ah_db_close). On failure returns
 * -errno and appends one user-facing line to err (when err is not NULL).
 */
int ah_db_open(const char *url, const ah_db_opts_t *opts, ah_db_t **out, ah_buf_t *err);

/** Closes the connection and frees everything it owns. NULL is a no-op. */
void ah_db_close(ah_db_t *db);

/** The backend's name ("sqlite"). */
const char *ah_db_backend_name(const ah_db_t *db);

/** Runs one or more ;-separated statements without arguments (migrations). 0 or -errno. */
int ah_db_exec(ah_db_t *db, const char *sql);

/**
 * Runs one statement with nargs arguments bound to its `?` placeholders in
 * order, calling cb (may be NULL) for each result row. Returns 0 when all rows
 * were delivered, the callback's nonzero value when it stopped early, or
 * -errno. Statements are prepared once and cached per connection, keyed by
 * their text. cb may run other queries on the same connection.
 */
int ah_db_query(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, ah_db_row_fn cb,
                void *ud);

/**
 * Runs a query expected to return one integer in its first column (COUNT,
 * MAX, SELECT 1). 0 and *out set; -ENOENT when there was no row; -errno.
 * A NULL value gives 0.
 */
int ah_db_query_int(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int64_t *out);

/** Rows inserted, updated or deleted by the last statement. */
int64_t ah_db_changes(ah_db_t *db);

/** BEGIN; immediate takes the write lock now (SQLite BEGIN IMMEDIATE). 0 or -errno. */
int ah_db_begin(ah_db_t *db, bool immediate);
int ah_db_commit(ah_db_t *db);
int ah_db_rollback(ah_db_t *db);

/**
 * Savepoints inside a transaction. name is an identifier ([A-Za-z_][A-Za-z0-9_]*,
 * at most 63 chars; -EINVAL otherwise). rollback_to undoes the work since the
 * savepoint and keeps it open; release forgets it, keeping the work.
 */
int ah_db_savepoint(ah_db_t *db, const char *name);
int ah_db_release(ah_db_t *db, const char *name);
int ah_db_rollback_to(ah_db_t *db, const char *name);

/** True while a transaction is open. */
bool ah_db_in_txn(ah_db_t *db);

/** Takes the cross-process migration lock inside the current transaction, if the backend needs one.
 */
int ah_db_migrate_lock(ah_db_t *db);

/** 1 if table exists, 0 if not, -errno. */
int ah_db_table_exists(ah_db_t *db, const char *table);

/** Detail of the last error on this connection ("" when none). Valid until the next call. */
const char *ah_db_errmsg(ah_db_t *db);

/** Connection counters (statement cache). */
void ah_db_stats(ah_db_t *db, ah_db_stats_t *out);

/** The backend's idle-time housekeeping (see ah_db_backend_t.idle); a no-op without one. */
void ah_db_idle(ah_db_t *db);

/**
 * While on, inside a transaction, a statement without a row callback may be
 * held back and sent with the next statement that is not (PostgreSQL: one
 * pipeline, one round trip for both); it then returns 0 at once, and its
 * error, if any, is returned by that next statement (which the server skips),
 * or by RELEASE (which then sends it) / COMMIT. Turn it off before a
 * statement whose outcome you need (ah_db_changes counts only statements run
 * at once). For writes whose failure fails the job anyway, placed before a
 * statement of the same job. SQLite and backends without it: no effect.
 */
void ah_db_defer_writes(ah_db_t *db, bool on);

/**
 * Sends the writes ah_db_defer_writes held back, now: 0, or the error of the
 * first that failed (the transaction is then aborted until a rollback to a
 * savepoint before it). The store's writer calls it after each job, so a
 * deferred write's failure fails its own job.
 */
int ah_db_flush_deferred(ah_db_t *db);

/**
 * Runs a write that must change a row (an UPDATE or DELETE with its own
 * check in the WHERE, e.g. an owner fence): 0 when it changed one or more,
 * none_rc (< 0, e.g. -ESTALE) when it changed none, or -errno. With deferred
 * writes on (PostgreSQL, inside a transaction) it is held back like any
 * deferred write and the server makes the check: a write that changed no row
 * fails there, so its job fails with none_rc and is rolled back to its
 * savepoint, without a round trip of its own. SQLite: runs it at once.
 */
int ah_db_write_one(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int none_rc);

/*
 * Pipelined batches (PostgreSQL). The store's writer may leave a job's held-
 * back statements (deferred writes, savepoint commands) unsent when the job
 * returns, so a whole group-commit batch travels in a few round trips. A
 * statement that then fails belongs to an earlier job: the server skips
 * everything after it until that job's savepoint is rolled back. Held-back
 * statements carry the tag set when they were held back, so the writer can
 * tell which job failed (and run the later ones again).
 */

/** Tags the statements held back from now on (the writer: the job's index in its batch; -1 none).
 */
void ah_db_job_tag(ah_db_t *db, int tag);

/**
 * True when a held-back statement failed since the last call: *tag is its
 * tag and *rc its error (the none_rc of ah_db_write_one for a write that
 * changed no row). The transaction is then aborted down to that job's
 * savepoint: what is still held back is dropped (the server would skip it),
 * and the caller rolls back to the savepoint. False (and nothing changed)
 * otherwise, and always on backends that send every statement at once.
 */
bool ah_db_batch_failed(ah_db_t *db, int *tag, int *rc);

/** True when the backend can leave statements unsent past the end of a job (ah_db_job_tag). */
bool ah_db_can_pipeline(const ah_db_t *db);

/** True when name is a valid savepoint/table identifier (see ah_db_savepoint). */
bool ah_db_ident_ok(const char *name);

#endif
