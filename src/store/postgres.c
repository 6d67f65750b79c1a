/*
 * postgres.c - the PostgreSQL backend of db.h (libpq), for postgres:// and
 * postgresql:// storage URLs. The URL goes to libpq as is, so everything
 * libpq accepts there works (?sslmode=verify-full, ?connect_timeout=5,
 * host lists, PG* environment variables for what the URL leaves out).
 *
 * Blocking by design: every libpq call here waits for the server. That is
 * what keeps the event loops non-blocking: connections belong to store
 * threads (store.h), which exist to wait on the database, and no loop thread
 * ever touches one. Do not call these functions from a loop.
 *
 * - `?` placeholders are rewritten to $1..$n (not inside quoted strings,
 *   quoted identifiers, dollar quotes or comments). Parameter types are left
 *   for the server to infer from the statement, as SQLite would take any
 *   value; where it cannot (SELECT ?, ? + ?), the statement is prepared again
 *   with types taken from the arguments.
 * - Statements are prepared once (PQprepare, names "ahs<N>") and cached per
 *   connection by SQL text, least recently used evicted (DEALLOCATE), like
 *   sqlite.c. Inside a transaction a first PREPARE runs under a savepoint so
 *   that a statement that does not prepare fails alone, not the transaction
 *   (SQLite's behaviour).
 * - Results are whole PGresults (no single-row mode), so a row callback may
 *   run other queries on the connection. Values come back in text format and
 *   are decoded by column type: integers and booleans as AH_DB_INT, float
 *   and non-integral numeric as AH_DB_DBL (SUM(BIGINT) is numeric: an
 *   integral one is INT), bytea as AH_DB_BLOB, anything else as TEXT.
 * - SQLSTATE 23505 is -EEXIST; 40001, 40P01 and 55P03 are -EBUSY (lock_timeout
 *   is set to the busy timeout, so a lock wait ends in 55P03 like SQLite's
 *   SQLITE_BUSY); a lost connection is -EIO. The next call on an idle
 *   connection reconnects (PQreset) and re-prepares lazily; a connection lost
 *   inside a transaction keeps failing until the caller rolls back, so no
 *   statement of a half-gone transaction runs outside it.
 */
#include "store/db.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* Declared here until db.h lists it next to ah_db_sqlite_backend. */
extern const ah_db_backend_t ah_db_postgres_backend;

#define STMT_CACHE_DEFAULT 128
#define STMT_CACHE_MAX     4096
#define STACK_COLS         16
#define MAX_PARAMS         65535             /* the protocol's Int16 parameter count */
#define MAX_FIELD          ((size_t)1 << 30) /* largest text or bytea value */
#define BUSY_DEFAULT_MS    5000
#define PREPARE_SAVEPOINT  "ah_pg_prepare"
#define PEND_MAX           1024 /* commands and deferred writes held back at most */
#define PEND_LEN           96   /* longest command ("RELEASE SAVEPOINT <name>") */

/* pg_advisory_xact_lock key of migrations: "agenthub" in ASCII. */
#define MIGRATE_LOCK_KEY INT64_C(0x6167656e74687562)

/* Type OIDs (src/include/catalog/pg_type.dat; fixed across versions). */
#define OID_BOOL    16
#define OID_BYTEA   17
#define OID_INT8    20
#define OID_INT2    21
#define OID_INT4    23
#define OID_TEXT    25
#define OID_OID     26
#define OID_FLOAT4  700
#define OID_FLOAT8  701
#define OID_NUMERIC 1700

typedef struct stmt_ent {
    uint64_t hash;
    size_t len;
    char *sql;     /* our copy of the caller's text (the cache key) */
    char name[24]; /* server-side prepared statement */
    int nparams;
    uint64_t last_used;
} stmt_ent_t;

/* A command or deferred write held back until the next statement (see pipelined). */
typedef struct pend_ent {
    char text[PEND_LEN]; /* a control command; "" for a deferred write */
    char name[24];       /* the deferred write's prepared statement */
    int nparams;
    void *block; /* the write's parameters: values, lengths, formats and bytes, one malloc */
    const char **vals;
    int *lens, *fmts;
    int tag;     /* ah_db_job_tag when it was held back */
    int none_rc; /* ah_db_write_one: its error when the write changed no row; else 0 */
} pend_ent_t;

typedef struct pg_db {
    ah_db_t base; /* must be first */
    PGconn *conn;
    bool readonly;
    int lock_timeout_ms;
    /*
     * A transaction begun through this layer is open. Kept apart from
     * PQtransactionStatus because that reads "unknown" once the connection is
     * lost, and a lost transaction must fail until it is rolled back.
     */
    bool txn;
    bool configured; /* session_setup ran on this session */
    /*
     * Transaction control commands (BEGIN, SAVEPOINT, RELEASE) not sent yet:
     * they go out in one pipeline with the next statement, so a group-commit
     * batch costs no round trip per job for its savepoints (see pipelined).
     */
    pend_ent_t *pend;
    int npend, pend_cap;
    int ndeferred; /* deferred writes among them */
    int tag;       /* ah_db_job_tag: tag of what is held back from now on */
    int none_rc;   /* ah_db_write_one: none_rc for the write being held back */
    /* A held-back statement failed (ah_db_batch_failed): its tag and error. */
    bool failed;
    int fail_tag, fail_rc;
    bool pend_begin; /* pend holds a BEGIN: the server has no transaction yet */
    bool defer;      /* ah_db_defer_writes is on */
    stmt_ent_t *cache;
    int cache_cap;
    int cache_n;
    uint64_t tick;
    uint64_t next_stmt;
    ah_db_stats_t stats;
    int64_t changes;
    /* Scratch for one call, reused: needed only until libpq has sent the query. */
    char *sql;
    size_t sql_cap;
    char *wrap; /* ah_db_write_one's statement text */
    size_t wrap_cap;
    char *argtext;
    size_t argtext_cap;
    const char **pvals;
    int *plens, *pfmts;
    int pcap;
    char err[512];
} pg_db_t;

static pg_db_t *PG(ah_db_t *db)
{
    return (pg_db_t *)db;
}

/* ---- errors ------------------------------------------------------------ */

static int fail_msg(pg_db_t *d, int err, const char *msg)
{
    snprintf(d->err, sizeof(d->err), "%s", msg);
    return err;
}

/* Drops the trailing newline libpq puts on its messages. */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

static int map_sqlstate(const char *state)
{
    if (!state)
        return -EIO;
    if (strcmp(state, "23505") == 0) /* unique_violation */
        return -EEXIST;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
        return -EBUSY; /* serialization_failure, deadlock_detected, lock_not_available */
    if (strcmp(state, "53200") == 0) /* out_of_memory */
        return -ENOMEM;
    return -EIO;
}

static bool conn_ok(const pg_db_t *d)
{
    return PQstatus(d->conn) == CONNECTION_OK;
}

/* The error of a failed call: the server's message, or the lost connection. */
static int fail_res(pg_db_t *d, const PGresult *res)
{
    if (!conn_ok(d)) {
        snprintf(d->err, sizeof(d->err), "connection to PostgreSQL lost: %s",
                 PQerrorMessage(d->conn));
        chomp(d->err);
        return -EIO;
    }
    if (!res) {
        snprintf(d->err, sizeof(d->err), "%s", PQerrorMessage(d->conn));
        chomp(d->err);
        return -ENOMEM; /* libpq returns no result only when it cannot allocate one */
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    /* The primary message only: DETAIL can quote row values (keys, hashes). */
    if (primary)
        snprintf(d->err, sizeof(d->err), "%s (SQLSTATE %s)", primary, state ? state : "?");
    else
        snprintf(d->err, sizeof(d->err), "%s", PQresultErrorMessage(res));
    chomp(d->err);
    return map_sqlstate(state);
}

static bool is_sqlstate(const PGresult *res, const char *state)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s && strcmp(s, state) == 0;
}

/* Notices (e.g. "relation already exists, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", message);
    chomp(msg);
    ah_log(AH_LOG_DEBUG, "store", "PostgreSQL notice", AH_LF_STR("notice", msg), AH_LF_END);
}

/* ---- statement cache --------------------------------------------------- */

static stmt_ent_t *cache_find(pg_db_t *d, uint64_t hash, const char *sql, size_t len)
{
    for (int i = 0; i < d->cache_n; i++) {
        stmt_ent_t *e = &d->cache[i];
        if (e->hash == hash && e->len == len && memcmp(e->sql, sql, len) == 0)
            return e;
    }
    return NULL;
}

/* Forgets every entry without telling the server (after a reconnect it has none). */
static void cache_forget(pg_db_t *d)
{
    for (int i = 0; i < d->cache_n; i++)
        free(d->cache[i].sql);
    d->cache_n = 0;
}

static void deallocate(pg_db_t *d, const char *name)
{
    char sql[48];
    snprintf(sql, sizeof(sql), "DEALLOCATE %s", name);
    /* A failure leaves a statement on the server until the connection closes: harmless. */
    PQclear(PQexec(d->conn, sql));
}

/*
 * Records statement `name` (already prepared) under sql, evicting the least
 * recently used entry when full. copy is a malloc'd copy of sql, taken over.
 */
static stmt_ent_t *cache_put(pg_db_t *d, uint64_t hash, char *copy, size_t len, const char *name,
                             int nparams)
{
    stmt_ent_t *e;
    if (d->cache_n < d->cache_cap) {
        e = &d->cache[d->cache_n++];
    } else {
        e = &d->cache[0];
        for (int i = 1; i < d->cache_n; i++) {
            if (d->cache[i].last_used < e->last_used)
                e = &d->cache[i];
        }
        deallocate(d, e->name);
        free(e->sql);
        d->stats.stmt_cache_evictions++;
    }
    e->hash = hash;
    e->len = len;
    e->sql = copy;
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->nparams = nparams;
    e->last_used = ++d->tick;
    return e;
}

/* ---- connection -------------------------------------------------------- */

/* Forgets what is held back (see pipelined). */
static void pend_clear(pg_db_t *d)
{
    for (int i = 0; i < d->npend; i++) {
        free(d->pend[i].block);
        d->pend[i].block = NULL;
    }
    d->npend = 0;
    d->ndeferred = 0;
    d->pend_begin = false;
}

/* Forgets a failure ah_db_batch_failed has not reported (the transaction ended anyway). */
static void fail_clear(pg_db_t *d)
{
    d->failed = false;
}

/* Runs one statement without parameters; rows are ignored. 0 or -errno. */
static int simple_raw(pg_db_t *d, const char *sql)
{
    PGresult *res = PQexec(d->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
        rc = fail_res(d, res);
    PQclear(res);
    return rc;
}

/*
 * Settings every session gets, at open and after each reconnect.
 * idle_in_transaction_session_timeout: a transaction of ours never waits on
 * anything but the server between statements, so one that stays idle as long
 * as others would wait for its locks belongs to a stalled process (SIGSTOP, a
 * frozen VM). The server then ends that session and frees its row locks, so
 * other replicas can take its runs over; the stalled process finds its
 * connection gone when it wakes and its batch fails.
 */
static int session_setup(pg_db_t *d)
{
    char sql[224];
    snprintf(sql, sizeof(sql),
             "SET lock_timeout = %d; SET idle_in_transaction_session_timeout = %d; "
             "SET standard_conforming_strings = on; SET default_transaction_read_only = %s",
             d->lock_timeout_ms, d->lock_timeout_ms, d->readonly ? "on" : "off");
    int rc = simple_raw(d, sql);
    d->configured = rc == 0;
    return rc;
}

static int reconnect(pg_db_t *d)
{
    cache_forget(d); /* the server dropped our prepared statements with the session */
    pend_clear(d);
    fail_clear(d);
    d->txn = false;
    d->configured = false;
    PQreset(d->conn);
    if (!conn_ok(d)) {
        snprintf(d->err, sizeof(d->err), "cannot reconnect to PostgreSQL: %s",
                 PQerrorMessage(d->conn));
        chomp(d->err);
        return -EIO;
    }
    int rc = session_setup(d);
    if (rc == 0)
        ah_log(AH_LOG_WARN, "store", "reconnected to PostgreSQL", AH_LF_END);
    return rc;
}

/*
 * An idle connection has nothing to read unless the server spoke first: a
 * shutting-down server sends FATAL (57P01) and closes. Reads that without
 * blocking (the error goes to the notice processor, then EOF marks the
 * connection bad). True when the connection is still good.
 */
static bool idle_conn_alive(pg_db_t *d)
{
    for (int i = 0; i < 8; i++) {
        struct pollfd p = {.fd = PQsocket(d->conn), .events = POLLIN};
        int n = poll(&p, 1, 0);
        if (n == 0 || (n < 0 && errno == EINTR))
            return true;
        if (n < 0 || !PQconsumeInput(d->conn) || !conn_ok(d))
            return false;
    }
    return conn_ok(d);
}

/*
 * Makes sure the connection is usable before a call. An idle connection is
 * checked without blocking (PQconsumeInput reads what the server sent: after
 * a restart, its goodbye and EOF) and re-established if it is gone. Inside a
 * transaction nothing is re-established: the transaction died with the
 * connection, and the caller must see that until it rolls back.
 */
static int ensure_conn(pg_db_t *d)
{
    if (conn_ok(d) && (PQtransactionStatus(d->conn) != PQTRANS_IDLE || idle_conn_alive(d)))
        return d->configured ? 0 : session_setup(d); /* a read-only reader must never write */
    if (d->txn)
        return fail_msg(d, -EIO,
                        "connection to PostgreSQL lost inside a transaction (the server rolled "
                        "it back)");
    return reconnect(d);
}

/* Keeps d->txn in step with the server while the connection is up. */
static void sync_txn(pg_db_t *d)
{
    if (conn_ok(d))
        d->txn = PQtransactionStatus(d->conn) != PQTRANS_IDLE;
}

/* ---- placeholders ------------------------------------------------------ */

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (unsigned char)c >= 0x80;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Length of a dollar-quote opening tag at p ("$$" or "$tag$"), or 0. A tag
 * does not start with a digit ($1 is a parameter).
 */
static size_t dollar_tag(const char *p)
{
    size_t i = 1;
    if (p[i] >= '0' && p[i] <= '9')
        return 0;
    while (ident_char(p[i]) && p[i] != '$')
        i++;
    return p[i] == '$' ? i + 1 : 0;
}

static int grow(void **p, size_t *cap, size_t want, size_t elem)
{
    if (want <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < want)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/*
 * Copies sql (len bytes) into d->sql with each `?` outside literals and
 * comments replaced by $1, $2 ...; *nparams gets their count. Refuses a second
 * statement (-EINVAL, like sqlite.c) and an empty one; drops a trailing `;`.
 */
static int rewrite(pg_db_t *d, const char *sql, size_t len, int *nparams)
{
    size_t marks = 0;
    for (size_t i = 0; i < len; i++)
        marks += sql[i] == '?';
    if (grow((void **)&d->sql, &d->sql_cap, len + marks * 5 + 1, 1) < 0)
        return fail_msg(d, -ENOMEM, "out of memory");
    char *out = d->sql;
    size_t o = 0;
    int n = 0;
    bool content = false; /* anything but blanks and comments seen */
    size_t i = 0;
    while (i < len) {
        char c = sql[i];
        if (c == '\'') {
            /* E'...' strings take backslash escapes; standard ones only '' */
            bool esc = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                       (i < 2 || !ident_char(sql[i - 2]));
            size_t j = i + 1;
            for (; j < len; j++) {
                if (esc && sql[j] == '\\' && j + 1 < len) {
                    j++;
                } else if (sql[j] == '\'') {
                    if (j + 1 < len && sql[j + 1] == '\'')
                        j++;
                    else
                        break;
                }
            }
            j = j < len ? j + 1 : len;
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
            content = true;
        } else if (c == '"') {
            size_t j = i + 1;
            for (; j < len; j++) {
                if (sql[j] == '"') {
                    if (j + 1 < len && sql[j + 1] == '"')
                        j++;
                    else
                        break;
                }
            }
            j = j < len ? j + 1 : len;
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
            content = true;
        } else if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
            size_t j = i;
            while (j < len && sql[j] != '\n')
                j++;
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
        } else if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
            size_t j = i + 2;
            int depth = 1; /* PostgreSQL's block comments nest */
            while (j < len && depth > 0) {
                if (sql[j] == '/' && j + 1 < len && sql[j + 1] == '*') {
                    depth++;
                    j += 2;
                } else if (sql[j] == '*' && j + 1 < len && sql[j + 1] == '/') {
                    depth--;
                    j += 2;
                } else {
                    j++;
                }
            }
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
        } else if (c == '$' && (i == 0 || !ident_char(sql[i - 1])) && dollar_tag(sql + i)) {
            size_t tag = dollar_tag(sql + i);
            size_t j = i + tag;
            while (j < len &&
                   !(sql[j] == '$' && j + tag <= len && memcmp(sql + j, sql + i, tag) == 0))
                j++;
            j = j + tag <= len ? j + tag : len;
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
            content = true;
        } else if (c == '?') {
            if (i + 1 < len && sql[i + 1] >= '0' && sql[i + 1] <= '9')
                return fail_msg(d, -EINVAL, "numbered placeholders (?1) are not portable: use ?");
            if (n == MAX_PARAMS)
                return fail_msg(d, -EINVAL, "more than 65535 placeholders");
            o += (size_t)snprintf(out + o, 7, "$%d", ++n);
            i++;
            content = true;
        } else if (c == ';') {
            for (size_t j = i + 1; j < len; j++) {
                if (!blank(sql[j]) && sql[j] != ';')
                    return fail_msg(d, -EINVAL,
                                    "ah_db_query runs one statement (use ah_db_exec for scripts)");
            }
            break;
        } else {
            out[o++] = c;
            i++;
            if (!blank(c))
                content = true;
        }
    }
    out[o] = '\0';
    if (!content)
        return fail_msg(d, -EINVAL, "empty statement");
    *nparams = n;
    return 0;
}

/* ---- parameters -------------------------------------------------------- */

/*
 * Fills d->pvals/plens/pfmts for args. Numbers and text go in text format
 * (text copied to add the NUL libpq needs), blobs in binary format straight
 * from the caller's memory. Valid until the next call on d.
 */
static int bind_args(pg_db_t *d, const ah_db_val_t *args, int nargs)
{
    if (nargs == 0)
        return 0;
    if (d->pcap < nargs) {
        size_t want = (size_t)nargs;
        const char **v = realloc(d->pvals, want * sizeof(*v));
        if (v)
            d->pvals = v;
        int *l = v ? realloc(d->plens, want * sizeof(*l)) : NULL;
        if (l)
            d->plens = l;
        int *f = l ? realloc(d->pfmts, want * sizeof(*f)) : NULL;
        if (!f)
            return fail_msg(d, -ENOMEM, "out of memory");
        d->pfmts = f;
        d->pcap = nargs;
    }
    size_t need = 0;
    for (int i = 0; i < nargs; i++) {
        const ah_db_val_t *v = &args[i];
        if ((v->type == AH_DB_TEXT || v->type == AH_DB_BLOB) && v->n > MAX_FIELD)
            return fail_msg(d, -E2BIG, "a value is larger than PostgreSQL's 1 GB field limit");
        if (v->type == AH_DB_INT || v->type == AH_DB_DBL) {
            need += 32;
        } else if (v->type == AH_DB_TEXT) {
            if (v->n && memchr(v->s, '\0', v->n))
                return fail_msg(d, -EINVAL,
                                "a text value contains a NUL byte (PostgreSQL text cannot hold "
                                "one; bind it as a blob)");
            need += v->n + 1;
        } else if (v->type != AH_DB_NULL && v->type != AH_DB_BLOB) {
            return fail_msg(d, -EINVAL, "unknown value type");
        }
    }
    if (grow((void **)&d->argtext, &d->argtext_cap, need ? need : 1, 1) < 0)
        return fail_msg(d, -ENOMEM, "out of memory");
    size_t off = 0;
    for (int i = 0; i < nargs; i++) {
        const ah_db_val_t *v = &args[i];
        char *p = d->argtext + off;
        d->plens[i] = 0;
        d->pfmts[i] = 0;
        switch (v->type) {
        case AH_DB_INT:
            snprintf(p, 32, "%" PRId64, v->i);
            d->pvals[i] = p;
            off += 32;
            break;
        case AH_DB_DBL:
            if (isnan(v->d))
                snprintf(p, 32, "NaN");
            else if (isinf(v->d))
                snprintf(p, 32, "%sInfinity", v->d < 0 ? "-" : "");
            else
                snprintf(p, 32, "%.17g", v->d);
            d->pvals[i] = p;
            off += 32;
            break;
        case AH_DB_TEXT:
            if (v->n)
                memcpy(p, v->s, v->n);
            p[v->n] = '\0';
            d->pvals[i] = p;
            off += v->n + 1;
            break;
        case AH_DB_BLOB:
            d->pvals[i] = v->s ? v->s : "";
            d->plens[i] = (int)v->n;
            d->pfmts[i] = 1;
            break;
        default:
            d->pvals[i] = NULL;
            break;
        }
    }
    return 0;
}

static Oid oid_of(const ah_db_val_t *v)
{
    switch (v->type) {
    case AH_DB_INT:
        return OID_INT8;
    case AH_DB_DBL:
        return OID_FLOAT8;
    case AH_DB_BLOB:
        return OID_BYTEA;
    default:
        return OID_TEXT;
    }
}

/*
 * Prepares d->sql as `name`. Parameter types
 * are inferred by the server; where it cannot (SQLSTATE 42P18, 42725) the
 * statement is prepared again with the arguments' types. Inside a transaction
 * this runs under a savepoint, so a failed PREPARE does not abort the
 * transaction.
 */
static int prepare(pg_db_t *d, const char *name, const ah_db_val_t *args, int nargs)
{
    bool guard = PQtransactionStatus(d->conn) == PQTRANS_INTRANS;
    int rc;
    if (guard && (rc = simple_raw(d, "SAVEPOINT " PREPARE_SAVEPOINT)) < 0)
        return rc;
    PGresult *res = PQprepare(d->conn, name, d->sql, nargs, NULL);
    /* 42P18 indeterminate_datatype (SELECT ?), 42725 ambiguous_function (? + ?) */
    if (res && PQresultStatus(res) != PGRES_COMMAND_OK &&
        (is_sqlstate(res, "42P18") || is_sqlstate(res, "42725"))) {
        PQclear(res);
        res = NULL;
        Oid *types = malloc((size_t)nargs * sizeof(*types));
        if (types) {
            for (int i = 0; i < nargs; i++)
                types[i] = oid_of(&args[i]);
            if (guard && (rc = simple_raw(d, "ROLLBACK TO SAVEPOINT " PREPARE_SAVEPOINT)) < 0) {
                free(types);
                return rc;
            }
            res = PQprepare(d->conn, name, d->sql, nargs, types);
            free(types);
        }
    }
    rc = res && PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : fail_res(d, res);
    PQclear(res);
    if (guard && conn_ok(d)) {
        char keep[sizeof(d->err)];
        memcpy(keep, d->err, sizeof(keep)); /* the prepare error is the one to report */
        int grc = 0;
        if (rc < 0)
            grc = simple_raw(d, "ROLLBACK TO SAVEPOINT " PREPARE_SAVEPOINT);
        if (grc == 0)
            grc = simple_raw(d, "RELEASE SAVEPOINT " PREPARE_SAVEPOINT);
        memcpy(d->err, keep, sizeof(keep));
        if (rc == 0 && grc < 0)
            rc = grc;
    }
    return rc;
}

/* ---- results ----------------------------------------------------------- */

/* Rows changed, as sqlite3_changes counts them: only INSERT, UPDATE, DELETE (and MERGE). */
static void note_changes(pg_db_t *d, PGresult *res)
{
    const char *cmd = PQcmdStatus(res);
    if (strncmp(cmd, "INSERT ", 7) == 0 || strncmp(cmd, "UPDATE ", 7) == 0 ||
        strncmp(cmd, "DELETE ", 7) == 0 || strncmp(cmd, "MERGE ", 6) == 0)
        d->changes = strtoll(PQcmdTuples(res), NULL, 10);
}

/* A numeric that is an integer fitting int64 is INT; anything else DBL. */
static void read_numeric(const char *s, ah_db_val_t *v)
{
    char *end = NULL;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (errno == 0 && end != s && *end == '\0') {
        v->type = AH_DB_INT;
        v->i = i;
    } else {
        v->type = AH_DB_DBL;
        v->d = strtod(s, NULL);
    }
}

/*
 * Decodes column c of row r. bytea is unescaped into *blob (PQfreemem'd by
 * the caller after the row callback).
 */
static int read_col(PGresult *res, int r, int c, ah_db_val_t *v, unsigned char **blob)
{
    memset(v, 0, sizeof(*v));
    *blob = NULL;
    if (PQgetisnull(res, r, c)) {
        v->type = AH_DB_NULL;
        return 0;
    }
    const char *s = PQgetvalue(res, r, c);
    switch (PQftype(res, c)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        v->type = AH_DB_INT;
        v->i = strtoll(s, NULL, 10);
        break;
    case OID_BOOL:
        v->type = AH_DB_INT;
        v->i = s[0] == 't';
        break;
    case OID_FLOAT4:
    case OID_FLOAT8:
        v->type = AH_DB_DBL;
        v->d = strtod(s, NULL);
        break;
    case OID_NUMERIC:
        read_numeric(s, v);
        break;
    case OID_BYTEA: {
        size_t n = 0;
        *blob = PQunescapeBytea((const unsigned char *)s, &n);
        if (!*blob)
            return -ENOMEM;
        v->type = AH_DB_BLOB;
        v->s = (const char *)*blob;
        v->n = n;
        break;
    }
    default:
        v->type = AH_DB_TEXT;
        v->s = s;
        v->n = (size_t)PQgetlength(res, r, c);
        break;
    }
    return 0;
}

static int deliver_rows(pg_db_t *d, PGresult *res, ah_db_row_fn cb, void *ud)
{
    int nrows = PQntuples(res);
    int ncols = PQnfields(res);
    if (!cb || nrows == 0)
        return 0;
    ah_db_val_t stack_cols[STACK_COLS];
    unsigned char *stack_blobs[STACK_COLS];
    ah_db_val_t *cols = stack_cols;
    unsigned char **blobs = stack_blobs;
    if (ncols > STACK_COLS) {
        cols = calloc((size_t)ncols, sizeof(*cols));
        blobs = calloc((size_t)ncols, sizeof(*blobs));
        if (!cols || !blobs) {
            free(cols);
            free(blobs);
            return fail_msg(d, -ENOMEM, "out of memory");
        }
    }
    int result = 0;
    for (int r = 0; r < nrows && result == 0; r++) {
        int c = 0;
        for (; c < ncols; c++) {
            if (read_col(res, r, c, &cols[c], &blobs[c]) < 0) {
                result = fail_msg(d, -ENOMEM, "out of memory");
                break;
            }
        }
        if (result == 0)
            result = cb(ud, cols, ncols);
        for (int k = 0; k < c; k++)
            PQfreemem(blobs[k]);
    }
    if (cols != stack_cols) {
        free(cols);
        free(blobs);
    }
    return result;
}

/* Takes over res: success statuses deliver rows, anything else maps to -errno. */
static int finish(pg_db_t *d, PGresult *res, ah_db_row_fn cb, void *ud, bool script)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc;
    switch (st) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
        note_changes(d, res);
        sync_txn(d);
        rc = deliver_rows(d, res, cb, ud);
        break;
    case PGRES_EMPTY_QUERY:
        rc = script ? 0 : fail_msg(d, -EINVAL, "empty statement");
        break;
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR:
    case PGRES_BAD_RESPONSE:
        rc = fail_res(d, res);
        sync_txn(d);
        break;
    default:
        rc = fail_msg(d, -EINVAL, "COPY and other streaming statements are not supported");
        break;
    }
    PQclear(res);
    return rc;
}

/* ---- pipelined transaction control --------------------------------------- */

/*
 * Reads one pipelined query's results up to its terminating NULL: the first
 * is kept in *out (NULL when none came). False when the connection broke.
 */
static bool pipe_collect(pg_db_t *d, PGresult **out)
{
    *out = NULL;
    for (int i = 0; i < 64; i++) {
        PGresult *r = PQgetResult(d->conn);
        if (!r)
            return true;
        if (!*out)
            *out = r;
        else
            PQclear(r);
        if (!conn_ok(d))
            return false;
    }
    return false;
}

/*
 * The error of held-back entry p, whose result r failed: a write of
 * ah_db_write_one that changed no row fails in the server with
 * division_by_zero (see pg_write_one), which is its none_rc.
 */
static int pend_error(pg_db_t *d, const pend_ent_t *p, const PGresult *r)
{
    if (p->none_rc && is_sqlstate(r, "22012"))
        return fail_msg(d, p->none_rc, "the write changed no row");
    return fail_res(d, r);
}

/*
 * Sends the held-back entries (control commands, deferred writes) and then
 * the statement (prepared `name` with the bound arguments, or parameterless
 * `sql`; neither: the entries alone) in one pipeline: one round trip instead
 * of one each. The entries are sent as they were held back, so the server
 * sees the same sequence as before. 0 with the statement's result in *out (to
 * be finished by the caller; NULL without a statement), or the error of the
 * first entry that failed (the server then skipped the rest and the
 * statement), which is also recorded with its tag for ah_db_batch_failed.
 */
static int pipelined(pg_db_t *d, const char *name, const char *sql, int nargs, PGresult **out)
{
    *out = NULL;
    int n = d->npend;
    if (!PQenterPipelineMode(d->conn)) {
        pend_clear(d);
        return fail_res(d, NULL);
    }
    bool sent = true;
    for (int i = 0; i < n && sent; i++) {
        const pend_ent_t *p = &d->pend[i];
        if (p->text[0])
            sent = PQsendQueryParams(d->conn, p->text, 0, NULL, NULL, NULL, NULL, 0) == 1;
        else
            sent = PQsendQueryPrepared(d->conn, p->name, p->nparams, p->vals, p->lens, p->fmts,
                                       0) == 1;
    }
    if (sent && name)
        sent = PQsendQueryPrepared(d->conn, name, nargs, d->pvals, d->plens, d->pfmts, 0) == 1;
    else if (sent && sql)
        sent = PQsendQueryParams(d->conn, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    if (sent)
        sent = PQpipelineSync(d->conn) == 1;
    if (!sent) {
        /* Nothing was read: the connection is gone or libpq is out of memory. */
        pend_clear(d);
        int rc = fail_res(d, NULL);
        if (conn_ok(d))
            rc = fail_msg(d, -EIO, "cannot send a pipeline to PostgreSQL");
        return rc;
    }
    int rc = 0;
    bool alive = true;
    for (int i = 0; i < n && alive; i++) {
        PGresult *r;
        alive = pipe_collect(d, &r);
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (alive && rc == 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
            st != PGRES_PIPELINE_ABORTED) {
            rc = pend_error(d, &d->pend[i], r);
            if (!d->failed) {
                d->failed = true;
                d->fail_tag = d->pend[i].tag;
                d->fail_rc = rc;
            }
        }
        PQclear(r);
    }
    pend_clear(d); /* libpq copied what it sent */
    if (alive && (name || sql)) {
        alive = pipe_collect(d, out);
        if (rc < 0 || (*out && PQresultStatus(*out) == PGRES_PIPELINE_ABORTED)) {
            PQclear(*out);
            *out = NULL;
        }
    }
    if (alive) {
        PGresult *r = PQgetResult(d->conn); /* PGRES_PIPELINE_SYNC */
        PQclear(r);
        alive = conn_ok(d) && PQexitPipelineMode(d->conn) == 1;
    }
    sync_txn(d);
    if (!alive) {
        PQclear(*out);
        *out = NULL;
        return fail_res(d, NULL);
    }
    if (rc == 0 && (name || sql) && !*out)
        rc = fail_msg(d, -EIO, "PostgreSQL skipped a pipelined statement");
    return rc;
}

/*
 * The next free entry of what is held back (tagged with the current job), or
 * NULL with *rc set: past PEND_MAX what is held back is sent first.
 */
static pend_ent_t *pend_slot(pg_db_t *d, int *rc)
{
    *rc = 0;
    if (d->npend == PEND_MAX) {
        PGresult *none;
        *rc = pipelined(d, NULL, NULL, 0, &none);
        if (*rc < 0)
            return NULL;
    }
    if (d->npend == d->pend_cap) {
        int cap = d->pend_cap ? d->pend_cap * 2 : 32;
        pend_ent_t *p = realloc(d->pend, (size_t)cap * sizeof(*p));
        if (!p) {
            *rc = fail_msg(d, -ENOMEM, "out of memory");
            return NULL;
        }
        d->pend = p;
        d->pend_cap = cap;
    }
    pend_ent_t *p = &d->pend[d->npend];
    memset(p, 0, sizeof(*p));
    p->tag = d->tag;
    return p;
}

/*
 * Holds a control command back until the next statement (pipelined). The
 * connection is checked now, so a BEGIN on a dead idle connection still
 * reconnects first.
 */
static int pend_push(pg_db_t *d, const char *verb, const char *name)
{
    int rc = ensure_conn(d);
    if (rc < 0)
        return rc;
    pend_ent_t *p = pend_slot(d, &rc);
    if (!p)
        return rc;
    int n = snprintf(p->text, PEND_LEN, "%s%s%s", verb, name ? " " : "", name ? name : "");
    if (n < 0 || n >= PEND_LEN)
        return fail_msg(d, -EINVAL, "savepoint name too long");
    d->npend++;
    return 0;
}

/*
 * Holds back prepared statement `name` with the bound arguments (copied) as
 * a deferred write. 0, or the error of sending what was held back when full.
 */
static int pend_write(pg_db_t *d, const char *name, int nargs)
{
    int rc;
    pend_ent_t *p = pend_slot(d, &rc);
    if (!p)
        return rc;
    size_t bytes = 0;
    for (int i = 0; i < nargs; i++) {
        if (d->pvals[i])
            bytes += d->pfmts[i] ? (size_t)d->plens[i] : strlen(d->pvals[i]) + 1;
    }
    size_t head = (size_t)nargs * (sizeof(char *) + 2 * sizeof(int));
    char *block = malloc(head + bytes + 1);
    if (!block)
        return fail_msg(d, -ENOMEM, "out of memory");
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->nparams = nargs;
    p->none_rc = d->none_rc;
    p->block = block;
    p->vals = (const char **)(void *)block;
    p->lens = (int *)(void *)(block + (size_t)nargs * sizeof(char *));
    p->fmts = p->lens + nargs;
    char *data = block + head;
    for (int i = 0; i < nargs; i++) {
        p->lens[i] = d->plens[i];
        p->fmts[i] = d->pfmts[i];
        p->vals[i] = NULL;
        if (!d->pvals[i])
            continue;
        size_t n = d->pfmts[i] ? (size_t)d->plens[i] : strlen(d->pvals[i]) + 1;
        memcpy(data, d->pvals[i], n);
        p->vals[i] = data;
        data += n;
    }
    d->npend++;
    d->ndeferred++;
    return 0;
}

/* Sends what is held back on its own (before a statement that cannot be pipelined). */
static int pend_flush(pg_db_t *d)
{
    if (!d->npend)
        return 0;
    PGresult *none;
    return pipelined(d, NULL, NULL, 0, &none);
}

/* ---- backend functions ------------------------------------------------- */

static int pg_query(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs,
                    ah_db_row_fn cb, void *ud)
{
    pg_db_t *d = PG(db);
    if (nargs > MAX_PARAMS)
        return fail_msg(d, -EINVAL, "more than 65535 arguments");
    int rc = ensure_conn(d);
    if (rc < 0)
        return rc;
    size_t len = strlen(sql);
    uint64_t hash = ah_db_sql_hash(sql, len);
    stmt_ent_t *e = d->cache_cap ? cache_find(d, hash, sql, len) : NULL;
    char name[24] = "";
    int nparams;
    if (e) {
        d->stats.stmt_cache_hits++;
        e->last_used = ++d->tick;
        nparams = e->nparams;
        snprintf(name, sizeof(name), "%s", e->name);
    } else {
        rc = rewrite(d, sql, len, &nparams);
        if (rc < 0)
            return rc;
    }
    if (nparams != nargs) {
        char msg[128];
        snprintf(msg, sizeof(msg), "statement has %d placeholders but %d arguments were given",
                 nparams, nargs);
        return fail_msg(d, -EINVAL, msg);
    }
    rc = bind_args(d, args, nargs);
    if (rc < 0)
        return rc;
    if (!e) {
        d->stats.stmt_cache_misses++;
        rc = pend_flush(d); /* PREPARE guards itself with a savepoint inside a transaction */
        if (rc < 0)
            return rc;
        char *copy = NULL;
        if (d->cache_cap) {
            copy = malloc(len + 1);
            if (!copy)
                return fail_msg(d, -ENOMEM, "out of memory");
            memcpy(copy, sql, len + 1);
        }
        /* Named even when not cached: the unnamed statement dies at the next simple query
         * (the RELEASE of the prepare savepoint). */
        snprintf(name, sizeof(name), "ahs%" PRIu64, ++d->next_stmt);
        rc = prepare(d, name, args, nargs);
        if (rc < 0) {
            free(copy);
            return rc;
        }
        if (copy)
            e = cache_put(d, hash, copy, len, name, nparams);
    }
    if (e && !cb && d->defer && d->txn) {
        d->changes = 0;
        return pend_write(d, name, nargs);
    }
    PGresult *res = NULL;
    if (d->npend) {
        rc = pipelined(d, name, NULL, nargs, &res);
        if (rc < 0)
            return rc;
    } else {
        res = PQexecPrepared(d->conn, name, nargs, d->pvals, d->plens, d->pfmts,
                             0 /* text results */);
    }
    if (!e)
        deallocate(d, name); /* before the rows: a row callback may run queries */
    return finish(d, res, cb, ud, false);
}

static int simple(pg_db_t *d, const char *sql)
{
    int rc = ensure_conn(d);
    if (rc == 0)
        rc = pend_flush(d); /* a script may hold several statements: not pipelined */
    if (rc < 0)
        return rc;
    return finish(d, PQexec(d->conn, sql), NULL, NULL, true);
}

/* One parameterless statement, pipelined behind what is held back. */
static int simple_one(pg_db_t *d, const char *sql)
{
    int rc = ensure_conn(d);
    if (rc < 0)
        return rc;
    if (!d->npend)
        return finish(d, PQexec(d->conn, sql), NULL, NULL, true);
    PGresult *res;
    rc = pipelined(d, NULL, sql, 0, &res);
    return rc < 0 ? rc : finish(d, res, NULL, NULL, true);
}

static int pg_exec(ah_db_t *db, const char *sql)
{
    return simple(PG(db), sql);
}

static int64_t pg_changes(ah_db_t *db)
{
    return PG(db)->changes;
}

static int pg_begin(ah_db_t *db, bool immediate)
{
    /* No BEGIN IMMEDIATE: PostgreSQL locks rows, not the database, as it writes them. */
    (void)immediate;
    pg_db_t *d = PG(db);
    if (d->txn)
        return simple_one(d, "BEGIN"); /* the server warns and carries on, as before */
    int rc = pend_push(d, "BEGIN", NULL);
    if (rc == 0) {
        d->txn = true;
        d->pend_begin = true;
    }
    return rc;
}

static int pg_commit(ah_db_t *db)
{
    pg_db_t *d = PG(db);
    if (!conn_ok(d)) {
        d->txn = false;
        return fail_msg(d, -EIO, "connection to PostgreSQL lost: the transaction was rolled back");
    }
    if (d->pend_begin) { /* nothing of it reached the server */
        pend_clear(d);
        d->txn = false;
        return 0;
    }
    PGresult *res = NULL;
    if (d->npend) {
        int prc = pipelined(d, NULL, "COMMIT", 0, &res);
        if (prc < 0) {
            d->txn = false;
            sync_txn(d);
            return prc;
        }
    } else {
        res = PQexec(d->conn, "COMMIT");
    }
    /* COMMIT of a transaction an error aborted succeeds, as a ROLLBACK: that is a failure. */
    bool rolled_back =
        res && PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    int rc = finish(d, res, NULL, NULL, false);
    d->txn = false;
    sync_txn(d);
    fail_clear(d);
    if (rc == 0 && rolled_back)
        rc = fail_msg(d, -EIO,
                      "the transaction was rolled back instead of committed: a statement in it "
                      "had failed");
    return rc;
}

static int pg_rollback(ah_db_t *db)
{
    pg_db_t *d = PG(db);
    d->txn = false;
    pend_clear(d); /* held back, never sent: nothing to undo there */
    fail_clear(d);
    /* Nothing to undo: no transaction, or the server ended it with the connection. */
    if (!conn_ok(d) || PQtransactionStatus(d->conn) == PQTRANS_IDLE)
        return 0;
    int rc = finish(d, PQexec(d->conn, "ROLLBACK"), NULL, NULL, false);
    sync_txn(d);
    return rc;
}

/* SAVEPOINT and RELEASE are held back and pipelined with the next statement. */
static int pg_savepoint(ah_db_t *db, const char *name)
{
    return pend_push(PG(db), "SAVEPOINT", name);
}

static int pg_release(ah_db_t *db, const char *name)
{
    return pend_push(PG(db), "RELEASE SAVEPOINT", name);
}

static int pg_rollback_to(ah_db_t *db, const char *name)
{
    pg_db_t *d = PG(db);
    char sql[PEND_LEN];
    int n = snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT %s", name);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return fail_msg(d, -EINVAL, "savepoint name too long");
    return simple_one(d, sql);
}

static void pg_defer_writes(ah_db_t *db, bool on)
{
    PG(db)->defer = on;
}

/* Sends deferred writes now (with what is held back before them): their error, or 0. */
static int pg_flush_deferred(ah_db_t *db)
{
    pg_db_t *d = PG(db);
    return d->ndeferred ? pend_flush(d) : 0;
}

/*
 * A write that must change a row. Held back (deferred writes on, inside a
 * transaction), it goes out as
 *   WITH ah_w AS (<sql> RETURNING 1) SELECT 1 / COUNT(*) FROM ah_w
 * so that changing no row is an error in the server (division_by_zero,
 * mapped to none_rc by pend_error): it aborts the transaction like any failed
 * deferred write, and the job's savepoint takes the job back. Otherwise it
 * runs at once and the rows changed are counted here.
 */
static int pg_write_one(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs,
                        int none_rc)
{
    pg_db_t *d = PG(db);
    if (!d->defer || !d->txn || !d->cache_cap || none_rc >= 0) {
        int rc = pg_query(db, sql, args, nargs, NULL, NULL);
        return rc < 0 ? rc : d->changes > 0 ? 0 : none_rc;
    }
    static const char head[] = "WITH ah_w AS (",
                      tail[] = " RETURNING 1) SELECT 1 / COUNT(*) FROM ah_w";
    size_t n = strlen(sql);
    if (grow((void **)&d->wrap, &d->wrap_cap, sizeof(head) + n + sizeof(tail), 1) < 0)
        return fail_msg(d, -ENOMEM, "out of memory");
    memcpy(d->wrap, head, sizeof(head) - 1);
    memcpy(d->wrap + sizeof(head) - 1, sql, n);
    memcpy(d->wrap + sizeof(head) - 1 + n, tail, sizeof(tail));
    d->none_rc = none_rc;
    int rc = pg_query(db, d->wrap, args, nargs, NULL, NULL);
    d->none_rc = 0;
    return rc;
}

static void pg_job_tag(ah_db_t *db, int tag)
{
    PG(db)->tag = tag;
}

static bool pg_batch_failed(ah_db_t *db, int *tag, int *rc)
{
    pg_db_t *d = PG(db);
    if (!d->failed)
        return false;
    *tag = d->fail_tag;
    *rc = d->fail_rc;
    d->failed = false;
    pend_clear(d); /* the server would skip it: the transaction is aborted */
    return true;
}

static const char *pg_errmsg(ah_db_t *db)
{
    return PG(db)->err;
}

static int pg_table_exists(ah_db_t *db, const char *table)
{
    ah_db_val_t arg = ah_db_text(table);
    int64_t n = 0;
    /* Resolved like an unquoted name in a statement: search_path, folded to lower case. */
    int rc = ah_db_query_int(db, "SELECT to_regclass(?) IS NOT NULL", &arg, 1, &n);
    return rc < 0 ? rc : n > 0;
}

static bool pg_in_txn(ah_db_t *db)
{
    pg_db_t *d = PG(db);
    if (!conn_ok(d) || d->pend_begin)
        return d->txn;
    return PQtransactionStatus(d->conn) != PQTRANS_IDLE;
}

/*
 * Migrators take a transaction-scoped advisory lock first: a second process
 * waits here (up to lock_timeout, then -EBUSY) and then sees the first one's
 * schema_migrations rows. COMMIT or ROLLBACK releases it, so no error path
 * can leave it held.
 */
static int pg_migrate_lock(ah_db_t *db)
{
    ah_db_val_t key = ah_db_int(MIGRATE_LOCK_KEY);
    return pg_query(db, "SELECT pg_advisory_xact_lock(?)", &key, 1, NULL, NULL);
}

static void pg_stats(ah_db_t *db, ah_db_stats_t *out)
{
    pg_db_t *d = PG(db);
    *out = d->stats;
    out->stmt_cache_entries = d->cache_n;
}

static void pg_close(ah_db_t *db)
{
    pg_db_t *d = PG(db);
    pend_clear(d);
    free(d->pend);
    cache_forget(d);
    free(d->cache);
    PQfinish(d->conn); /* ends the session: the server drops its statements and locks */
    free(d->sql);
    free(d->wrap);
    free(d->argtext);
    free(d->pvals);
    free(d->plens);
    free(d->pfmts);
    free(d);
}

/*
 * Replaces each occurrence of secret in msg by "***": libpq's URL parse
 * errors quote the part they choke on, which can be the password.
 */
static void scrub(char *msg, size_t size, const char *secret, size_t slen)
{
    if (!secret || slen == 0)
        return;
    char *p;
    while ((p = memmem(msg, strlen(msg), secret, slen)) != NULL) {
        size_t tail = strlen(p + slen);
        if ((size_t)(p - msg) + 3 + tail >= size)
            break;
        memmove(p + 3, p + slen, tail + 1);
        memcpy(p, "***", 3);
    }
}

/* The raw password of postgres://user:PASSWORD@host/..., or NULL. */
static const char *url_password(const char *url, size_t *len)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth; i++) {
        if (p[i] == '@')
            at = p + i;
    }
    if (!at)
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || colon + 1 == at)
        return NULL;
    *len = (size_t)(at - colon - 1);
    return colon + 1;
}

static void open_error(ah_buf_t *err, const char *url, const char *what, const char *detail)
{
    if (!err)
        return;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", detail ? detail : "");
    chomp(msg);
    /* One line: libpq's messages carry newlines and tabs (hints, one line per host tried). */
    char *w = msg;
    for (const char *r = msg; *r; r++) {
        bool space = *r == '\n' || *r == '\t' || *r == ' ';
        if (!space || (w > msg && w[-1] != ' '))
            *w++ = space ? ' ' : *r;
    }
    *w = '\0';
    size_t plen = 0;
    const char *pw = url_password(url, &plen);
    scrub(msg, sizeof(msg), pw, plen);
    ah_buf_printf(err, "storage.url: %s: %s", what, msg);
}

static int pg_open(const char *url, const ah_db_opts_t *opts, ah_db_t **out, ah_buf_t *err)
{
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(url, &perr);
    if (!parsed) {
        open_error(err, url, "not a valid PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB)",
                   perr ? perr : "out of memory");
        PQfreemem(perr);
        return perr ? -EINVAL : -ENOMEM;
    }
    PQconninfoFree(parsed);

    pg_db_t *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->base.be = &ah_db_postgres_backend;
    d->tag = -1;
    d->readonly = opts->readonly;
    d->lock_timeout_ms = opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : BUSY_DEFAULT_MS;
    if (!opts->no_stmt_cache) {
        int cap = opts->stmt_cache_size > 0 ? opts->stmt_cache_size : STMT_CACHE_DEFAULT;
        d->cache_cap = cap > STMT_CACHE_MAX ? STMT_CACHE_MAX : cap;
        d->cache = calloc((size_t)d->cache_cap, sizeof(*d->cache));
        if (!d->cache) {
            free(d);
            return -ENOMEM;
        }
    }
    /*
     * Keywords before dbname are defaults the URL may override; the one after
     * it is forced (this program speaks UTF-8 only). Keepalives notice a
     * server that vanished without closing (host down, network cut) in about
     * a minute instead of the kernel's two hours.
     */
    const char *const keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "dbname",           "client_encoding", NULL};
    const char *const vals[] = {"10", "agenthub", "30", "10", "3", url, "UTF8", NULL};
    d->conn = PQconnectdbParams(keys, vals, 1);
    if (!d->conn) {
        pg_close(&d->base);
        return -ENOMEM;
    }
    PQsetNoticeProcessor(d->conn, on_notice, NULL);
    if (!conn_ok(d)) {
        open_error(err, url, "cannot connect to PostgreSQL", PQerrorMessage(d->conn));
        pg_close(&d->base);
        return -EIO;
    }
    int rc = session_setup(d);
    if (rc < 0) {
        open_error(err, url, "cannot configure the PostgreSQL session", d->err);
        pg_close(&d->base);
        return rc;
    }
    *out = &d->base;
    return 0;
}

const ah_db_backend_t ah_db_postgres_backend = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .query = pg_query,
    .changes = pg_changes,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .savepoint = pg_savepoint,
    .release = pg_release,
    .rollback_to = pg_rollback_to,
    .errmsg = pg_errmsg,
    .table_exists = pg_table_exists,
    .in_txn = pg_in_txn,
    .migrate_lock = pg_migrate_lock,
    .stats = pg_stats,
    .defer_writes = pg_defer_writes,
    .flush_deferred = pg_flush_deferred,
    .write_one = pg_write_one,
    .job_tag = pg_job_tag,
    .batch_failed = pg_batch_failed,
};
