/*
 * db.c - backend selection by URL scheme and the backend-neutral helpers of
 * db.h (value constructors, column conversions, argument checks). Everything
 * that talks to a database engine lives in the backend files.
 */
#include "store/db.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ah_db_val_t ah_db_text(const char *s)
{
    return s ? ah_db_textn(s, strlen(s)) : ah_db_null();
}

ah_db_val_t ah_db_textn(const char *s, size_t n)
{
    if (!s)
        return ah_db_null();
    ah_db_val_t v = {AH_DB_TEXT, 0, 0.0, s, n};
    return v;
}

ah_db_val_t ah_db_blob(const void *p, size_t n)
{
    if (!p)
        return ah_db_null();
    ah_db_val_t v = {AH_DB_BLOB, 0, 0.0, (const char *)p, n};
    return v;
}

ah_db_val_t ah_db_text_or_null(const char *s)
{
    return s && *s ? ah_db_text(s) : ah_db_null();
}

int64_t ah_db_val_int(const ah_db_val_t *v)
{
    switch (v->type) {
    case AH_DB_INT:
        return v->i;
    case AH_DB_DBL:
        return (int64_t)v->d;
    case AH_DB_TEXT: {
        /* Text need not be NUL-terminated when it came from ah_db_textn: copy it. */
        char tmp[32];
        if (!v->s || v->n == 0 || v->n >= sizeof(tmp))
            return 0;
        memcpy(tmp, v->s, v->n);
        tmp[v->n] = '\0';
        return strtoll(tmp, NULL, 10);
    }
    default:
        return 0;
    }
}

double ah_db_val_dbl(const ah_db_val_t *v)
{
    switch (v->type) {
    case AH_DB_INT:
        return (double)v->i;
    case AH_DB_DBL:
        return v->d;
    case AH_DB_TEXT: {
        char tmp[64];
        if (!v->s || v->n == 0 || v->n >= sizeof(tmp))
            return 0.0;
        memcpy(tmp, v->s, v->n);
        tmp[v->n] = '\0';
        return strtod(tmp, NULL);
    }
    default:
        return 0.0;
    }
}

uint64_t ah_db_sql_hash(const char *sql, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)sql[i];
        h *= 1099511628211ull;
    }
    return h;
}

int ah_db_val_copy(const ah_db_val_t *v, char *out, size_t outsz)
{
    if (outsz == 0)
        return -E2BIG;
    out[0] = '\0';
    int n;
    switch (v->type) {
    case AH_DB_NULL:
        return 0;
    case AH_DB_INT:
        n = snprintf(out, outsz, "%" PRId64, v->i);
        break;
    case AH_DB_DBL:
        n = snprintf(out, outsz, "%.17g", v->d);
        break;
    default:
        if (v->n >= outsz)
            return -E2BIG;
        if (v->n)
            memcpy(out, v->s, v->n);
        out[v->n] = '\0';
        return 0;
    }
    if (n < 0 || (size_t)n >= outsz) {
        out[0] = '\0';
        return -E2BIG;
    }
    return 0;
}

int ah_db_val_dup(const ah_db_val_t *v, char **out)
{
    *out = NULL;
    if (v->type == AH_DB_NULL)
        return 0;
    if (v->type != AH_DB_TEXT && v->type != AH_DB_BLOB)
        return -EIO;
    char *p = malloc(v->n + 1);
    if (!p)
        return -ENOMEM;
    if (v->n)
        memcpy(p, v->s, v->n);
    p[v->n] = '\0';
    *out = p;
    return 0;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int ah_db_open(const char *url, const ah_db_opts_t *opts, ah_db_t **out, ah_buf_t *err)
{
    *out = NULL;
    ah_db_opts_t defaults = {.busy_timeout_ms = 5000};
    if (!opts)
        opts = &defaults;
    if (!url || !*url) {
        if (err)
            ah_buf_puts(err, "storage.url: empty (set it to sqlite://PATH, e.g. "
                             "sqlite://./data/agenthub.db)");
        return -EINVAL;
    }
    if (has_prefix(url, "sqlite://"))
        return ah_db_sqlite_backend.open(url, opts, out, err);
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return ah_db_postgres_backend.open(url, opts, out, err);
    if (err) {
        /* Only the scheme is echoed: the rest of a URL may carry a password. */
        const char *colon = strstr(url, "://");
        int len = colon ? (int)(colon - url) : 0;
        if (len > 32)
            len = 32;
        ah_buf_printf(err,
                      "storage.url: unknown scheme \"%.*s\" (known: sqlite://PATH, "
                      "postgres://USER@HOST/DB)",
                      len, url);
    }
    return -EINVAL;
}

void ah_db_close(ah_db_t *db)
{
    if (db)
        db->be->close(db);
}

const char *ah_db_backend_name(const ah_db_t *db)
{
    return db->be->name;
}

int ah_db_exec(ah_db_t *db, const char *sql)
{
    if (!sql)
        return -EINVAL;
    return db->be->exec(db, sql);
}

int ah_db_query(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, ah_db_row_fn cb,
                void *ud)
{
    if (!sql || nargs < 0 || (nargs > 0 && !args))
        return -EINVAL;
    return db->be->query(db, sql, args, nargs, cb, ud);
}

typedef struct {
    int64_t v;
    bool got;
} int_result_t;

static int int_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    int_result_t *r = ud;
    if (ncols > 0)
        r->v = ah_db_val_int(&cols[0]);
    r->got = true;
    return 1; /* first row only */
}

int ah_db_query_int(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int64_t *out)
{
    int_result_t r = {0, false};
    int rc = ah_db_query(db, sql, args, nargs, int_row, &r);
    if (rc < 0)
        return rc;
    if (!r.got)
        return -ENOENT;
    *out = r.v;
    return 0;
}

int64_t ah_db_changes(ah_db_t *db)
{
    return db->be->changes(db);
}

int ah_db_begin(ah_db_t *db, bool immediate)
{
    return db->be->begin(db, immediate);
}

int ah_db_commit(ah_db_t *db)
{
    return db->be->commit(db);
}

int ah_db_rollback(ah_db_t *db)
{
    return db->be->rollback(db);
}

bool ah_db_ident_ok(const char *name)
{
    if (!name || !*name || strlen(name) > 63)
        return false;
    for (const char *p = name; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        bool digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && p != name))
            return false;
    }
    return true;
}

int ah_db_savepoint(ah_db_t *db, const char *name)
{
    return ah_db_ident_ok(name) ? db->be->savepoint(db, name) : -EINVAL;
}

int ah_db_release(ah_db_t *db, const char *name)
{
    return ah_db_ident_ok(name) ? db->be->release(db, name) : -EINVAL;
}

int ah_db_rollback_to(ah_db_t *db, const char *name)
{
    return ah_db_ident_ok(name) ? db->be->rollback_to(db, name) : -EINVAL;
}

bool ah_db_in_txn(ah_db_t *db)
{
    return db->be->in_txn(db);
}

int ah_db_migrate_lock(ah_db_t *db)
{
    return db->be->migrate_lock ? db->be->migrate_lock(db) : 0;
}

int ah_db_table_exists(ah_db_t *db, const char *table)
{
    return ah_db_ident_ok(table) ? db->be->table_exists(db, table) : -EINVAL;
}

const char *ah_db_errmsg(ah_db_t *db)
{
    const char *m = db->be->errmsg(db);
    return m ? m : "";
}

void ah_db_idle(ah_db_t *db)
{
    if (db->be->idle)
        db->be->idle(db);
}

void ah_db_defer_writes(ah_db_t *db, bool on)
{
    if (db->be->defer_writes)
        db->be->defer_writes(db, on);
}

int ah_db_flush_deferred(ah_db_t *db)
{
    return db->be->flush_deferred ? db->be->flush_deferred(db) : 0;
}

int ah_db_write_one(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int none_rc)
{
    if (db->be->write_one)
        return db->be->write_one(db, sql, args, nargs, none_rc);
    int rc = ah_db_query(db, sql, args, nargs, NULL, NULL);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) > 0 ? 0 : none_rc;
}

void ah_db_job_tag(ah_db_t *db, int tag)
{
    if (db->be->job_tag)
        db->be->job_tag(db, tag);
}

bool ah_db_batch_failed(ah_db_t *db, int *tag, int *rc)
{
    return db->be->batch_failed ? db->be->batch_failed(db, tag, rc) : false;
}

bool ah_db_can_pipeline(const ah_db_t *db)
{
    return db->be->job_tag && db->be->batch_failed;
}

void ah_db_stats(ah_db_t *db, ah_db_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (db->be->stats)
        db->be->stats(db, out);
}
