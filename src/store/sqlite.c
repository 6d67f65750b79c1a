/*
 * sqlite.c - the SQLite backend of db.h.
 *
 * Each connection is opened with SQLITE_OPEN_NOMUTEX (the store gives it to
 * one thread at a time, so SQLite's own mutexes would be pure cost), in WAL
 * mode with synchronous=NORMAL (durable at checkpoint, never corrupt; a power
 * cut can lose the last commits but not tear them), foreign_keys=ON and the
 * configured busy timeout. Prepared statements are cached per connection in a
 * small table keyed by the SQL text, evicting the least recently used.
 *
 * The store's writer connection (opts->bg_checkpoint) does not checkpoint
 * inside its commits, so a COMMIT only appends to the WAL (no fsync with
 * synchronous=NORMAL):
 *  - at CKPT_FRAMES frames its WAL hook wakes a checkpointer thread with its
 *    own connection, which copies the WAL back (PASSIVE: it never waits for,
 *    nor blocks, the writer or readers), fsyncs included;
 *  - the WAL can only start over from its beginning once every frame is
 *    copied, and the writer commits while the thread copies; so when the
 *    thread is through and the WAL holds CKPT_IDLE_FRAMES, the writer copies
 *    the frames left itself, when its queue is empty and no job waits for it
 *    (the idle hook; a few hundred frames, and the two fsyncs);
 *  - past CKPT_HARD_FRAMES (a writer that never pauses) it checkpoints right
 *    after a commit, as SQLite's auto-checkpoint does: the WAL stays bounded.
 */
#include "store/db.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/log.h"

#define STMT_CACHE_DEFAULT 128
#define STMT_CACHE_MAX     4096
#define STACK_COLS         16
#define CKPT_FRAMES        1000 /* wake the checkpointer at this many WAL frames (SQLite's default) */
#define CKPT_AGAIN_FRAMES  1000 /* and again each time the WAL grew by this many more */
#define CKPT_IDLE_FRAMES   2000 /* the idle writer finishes the copy from this size (~8 MB) */
#define CKPT_HARD_FRAMES   8000 /* the writer checkpoints after a commit past this (~32 MB) */

/* The background checkpointer of a writer connection (see the top of the file). */
typedef struct ckpt {
    sqlite3 *h; /* its own connection, used only by its thread */
    pthread_t th;
    pthread_mutex_t mu; /* guards want, stop and running */
    pthread_cond_t cv;
    bool want, stop, running;
    atomic_bool copied; /* the thread is through: the writer copies the rest when idle */
    int next_frames;    /* writer thread only: wake it when the WAL reaches this */
    int last_frames;    /* writer thread only: WAL size after the previous commit */
} ckpt_t;

typedef struct stmt_ent {
    uint64_t hash;
    size_t len;
    char *sql; /* our copy of the text: the caller's may be a reused buffer */
    sqlite3_stmt *st;
    uint64_t last_used;
    bool in_use; /* a query on it is running (a row callback may nest queries) */
} stmt_ent_t;

typedef struct sqlite_db {
    ah_db_t base; /* must be first */
    sqlite3 *h;
    stmt_ent_t *cache;
    int cache_cap;
    int cache_n;
    uint64_t tick;
    ah_db_stats_t stats;
    ckpt_t *ckpt; /* NULL unless opts->bg_checkpoint */
    char err[512];
} sqlite_db_t;

static sqlite_db_t *SQ(ah_db_t *db)
{
    return (sqlite_db_t *)db;
}

/* Maps an (extended) SQLite result code to the db.h error contract. */
static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return -EEXIST;
        return -EIO;
    default:
        return -EIO;
    }
}

static int fail(sqlite_db_t *d, int rc)
{
    snprintf(d->err, sizeof(d->err), "%s", sqlite3_errmsg(d->h));
    return map_rc(rc);
}

static int fail_msg(sqlite_db_t *d, int err, const char *msg)
{
    snprintf(d->err, sizeof(d->err), "%s", msg);
    return err;
}

static stmt_ent_t *cache_find(sqlite_db_t *d, uint64_t hash, const char *sql, size_t len)
{
    for (int i = 0; i < d->cache_n; i++) {
        stmt_ent_t *e = &d->cache[i];
        if (e->hash == hash && e->len == len && memcmp(e->sql, sql, len) == 0)
            return e;
    }
    return NULL;
}

/*
 * Keeps st in the cache. Returns its entry, or NULL when it could not be
 * cached (cache off, out of memory, every entry busy): the caller then
 * finalizes st itself after use.
 */
static stmt_ent_t *cache_put(sqlite_db_t *d, uint64_t hash, const char *sql, size_t len,
                             sqlite3_stmt *st)
{
    if (d->cache_cap == 0)
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, sql, len);
    copy[len] = '\0';
    stmt_ent_t *e = NULL;
    if (d->cache_n < d->cache_cap) {
        e = &d->cache[d->cache_n++];
    } else {
        for (int i = 0; i < d->cache_n; i++) {
            stmt_ent_t *c = &d->cache[i];
            if (!c->in_use && (!e || c->last_used < e->last_used))
                e = c;
        }
        if (!e) {
            free(copy);
            return NULL;
        }
        sqlite3_finalize(e->st);
        free(e->sql);
        d->stats.stmt_cache_evictions++;
    }
    e->hash = hash;
    e->len = len;
    e->sql = copy;
    e->st = st;
    e->in_use = false;
    e->last_used = 0;
    return e;
}

static bool only_space(const char *p)
{
    for (; p && *p; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';')
            return false;
    }
    return true;
}

static int bind_args(sqlite_db_t *d, sqlite3_stmt *st, const ah_db_val_t *args, int nargs)
{
    int want = sqlite3_bind_parameter_count(st);
    if (want != nargs) {
        char msg[128];
        snprintf(msg, sizeof(msg), "statement has %d placeholders but %d arguments were given",
                 want, nargs);
        return fail_msg(d, -EINVAL, msg);
    }
    for (int i = 0; i < nargs; i++) {
        const ah_db_val_t *v = &args[i];
        int rc;
        /* SQLITE_STATIC: the caller's memory outlives the step; bindings are cleared after. */
        switch (v->type) {
        case AH_DB_NULL:
            rc = sqlite3_bind_null(st, i + 1);
            break;
        case AH_DB_INT:
            rc = sqlite3_bind_int64(st, i + 1, v->i);
            break;
        case AH_DB_DBL:
            rc = sqlite3_bind_double(st, i + 1, v->d);
            break;
        case AH_DB_TEXT:
            rc = sqlite3_bind_text64(st, i + 1, v->s ? v->s : "", v->n, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case AH_DB_BLOB:
            rc = sqlite3_bind_blob64(st, i + 1, v->s ? v->s : "", v->n, SQLITE_STATIC);
            break;
        default:
            return fail_msg(d, -EINVAL, "unknown value type");
        }
        if (rc != SQLITE_OK)
            return fail(d, rc);
    }
    return 0;
}

static void read_col(sqlite3_stmt *st, int i, ah_db_val_t *v)
{
    memset(v, 0, sizeof(*v));
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        v->type = AH_DB_INT;
        v->i = sqlite3_column_int64(st, i);
        break;
    case SQLITE_FLOAT:
        v->type = AH_DB_DBL;
        v->d = sqlite3_column_double(st, i);
        break;
    case SQLITE_TEXT:
        v->type = AH_DB_TEXT;
        v->s = (const char *)sqlite3_column_text(st, i); /* before _bytes, per the docs */
        v->n = (size_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        v->type = AH_DB_BLOB;
        v->s = sqlite3_column_blob(st, i);
        v->n = (size_t)sqlite3_column_bytes(st, i);
        break;
    default:
        v->type = AH_DB_NULL;
        break;
    }
}

static int step_rows(sqlite_db_t *d, sqlite3_stmt *st, ah_db_row_fn cb, void *ud)
{
    int ncols = sqlite3_column_count(st);
    ah_db_val_t stack_cols[STACK_COLS];
    ah_db_val_t *cols = stack_cols;
    if (ncols > STACK_COLS) {
        cols = calloc((size_t)ncols, sizeof(*cols));
        if (!cols)
            return fail_msg(d, -ENOMEM, "out of memory");
    }
    int result = 0;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            result = fail(d, rc);
            break;
        }
        if (!cb)
            continue;
        for (int i = 0; i < ncols; i++)
            read_col(st, i, &cols[i]);
        int r = cb(ud, cols, ncols);
        if (r != 0) {
            result = r;
            break;
        }
    }
    if (cols != stack_cols)
        free(cols);
    return result;
}

static int sq_query(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs,
                    ah_db_row_fn cb, void *ud)
{
    sqlite_db_t *d = SQ(db);
    size_t len = strlen(sql);
    uint64_t hash = ah_db_sql_hash(sql, len);
    stmt_ent_t *e = cache_find(d, hash, sql, len);
    sqlite3_stmt *st = NULL;
    bool owned = false; /* st is ours to finalize after this query */

    if (e && !e->in_use) {
        st = e->st;
        d->stats.stmt_cache_hits++;
    } else {
        const char *tail = NULL;
        unsigned pflags = d->cache_cap ? SQLITE_PREPARE_PERSISTENT : 0;
        int rc = sqlite3_prepare_v3(d->h, sql, (int)len + 1, pflags, &st, &tail);
        if (rc != SQLITE_OK)
            return fail(d, rc);
        if (!st)
            return fail_msg(d, -EINVAL, "empty statement");
        if (!only_space(tail)) {
            sqlite3_finalize(st);
            return fail_msg(d, -EINVAL,
                            "ah_db_query runs one statement (use ah_db_exec for "
                            "scripts)");
        }
        d->stats.stmt_cache_misses++;
        if (!e) {
            e = cache_put(d, hash, sql, len, st);
            owned = e == NULL;
        } else {
            e = NULL; /* the cached copy is busy in an outer query: use a private one */
            owned = true;
        }
    }
    if (e) {
        e->in_use = true;
        e->last_used = ++d->tick;
    }

    int result = bind_args(d, st, args, nargs);
    if (result == 0)
        result = step_rows(d, st, cb, ud);

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (e)
        e->in_use = false;
    if (owned)
        sqlite3_finalize(st);
    return result;
}

static int sq_exec(ah_db_t *db, const char *sql)
{
    sqlite_db_t *d = SQ(db);
    char *msg = NULL;
    int rc = sqlite3_exec(d->h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(d->err, sizeof(d->err), "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return map_rc(rc);
    }
    return 0;
}

static int64_t sq_changes(ah_db_t *db)
{
#if SQLITE_VERSION_NUMBER >= 3037000
    return sqlite3_changes64(SQ(db)->h);
#else
    return sqlite3_changes(SQ(db)->h);
#endif
}

static int sq_begin(ah_db_t *db, bool immediate)
{
    return sq_query(db, immediate ? "BEGIN IMMEDIATE" : "BEGIN", NULL, 0, NULL, NULL);
}

static int sq_commit(ah_db_t *db)
{
    return sq_query(db, "COMMIT", NULL, 0, NULL, NULL);
}

static int sq_rollback(ah_db_t *db)
{
    sqlite_db_t *d = SQ(db);
    /* SQLite may already have rolled back on its own (I/O error, SQLITE_FULL). */
    if (sqlite3_get_autocommit(d->h))
        return 0;
    return sq_query(db, "ROLLBACK", NULL, 0, NULL, NULL);
}

static int named(ah_db_t *db, const char *verb, const char *name)
{
    char sql[96];
    int n = snprintf(sql, sizeof(sql), "%s %s", verb, name);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return fail_msg(SQ(db), -EINVAL, "savepoint name too long");
    return sq_query(db, sql, NULL, 0, NULL, NULL);
}

static int sq_savepoint(ah_db_t *db, const char *name)
{
    return named(db, "SAVEPOINT", name);
}

static int sq_release(ah_db_t *db, const char *name)
{
    return named(db, "RELEASE", name);
}

static int sq_rollback_to(ah_db_t *db, const char *name)
{
    return named(db, "ROLLBACK TO", name);
}

static const char *sq_errmsg(ah_db_t *db)
{
    return SQ(db)->err;
}

static int sq_table_exists(ah_db_t *db, const char *table)
{
    ah_db_val_t arg = ah_db_text(table);
    int64_t n = 0;
    int rc = ah_db_query_int(
        db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", &arg, 1, &n);
    return rc < 0 ? rc : n > 0;
}

static bool sq_in_txn(ah_db_t *db)
{
    return !sqlite3_get_autocommit(SQ(db)->h);
}

static void sq_stats(ah_db_t *db, ah_db_stats_t *out)
{
    sqlite_db_t *d = SQ(db);
    *out = d->stats;
    out->stmt_cache_entries = d->cache_n;
}

/* ---- background checkpoints -------------------------------------------- */

static void *ckpt_main(void *p)
{
    ckpt_t *c = p;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->want && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        c->want = false;
        c->running = true;
        pthread_mutex_unlock(&c->mu);
        /* SQLITE_BUSY here only means another checkpoint is running: the next wake retries. */
        if (sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) ==
            SQLITE_OK)
            atomic_store(&c->copied, true);
        pthread_mutex_lock(&c->mu);
        c->running = false;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* WAL hook of the writer connection: runs on the writer thread after each commit. */
static int ckpt_hook(void *ud, sqlite3 *h, const char *dbname, int frames)
{
    ckpt_t *c = ud;
    if (frames < c->last_frames)
        c->next_frames = CKPT_FRAMES; /* the WAL restarted from its beginning */
    c->last_frames = frames;
    if (frames >= CKPT_HARD_FRAMES) {
        /* Wait out the thread's pass and keep it from starting one: this one must copy it all. */
        pthread_mutex_lock(&c->mu);
        while (c->running)
            pthread_cond_wait(&c->cv, &c->mu);
        sqlite3_wal_checkpoint_v2(h, dbname, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_unlock(&c->mu);
        c->next_frames = CKPT_FRAMES;
    } else if (frames >= c->next_frames) {
        c->next_frames = frames + CKPT_AGAIN_FRAMES;
        pthread_mutex_lock(&c->mu);
        c->want = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

/* The writer's queue is empty: copy what the thread left, so the WAL starts over. */
static void sq_idle(ah_db_t *db)
{
    ckpt_t *c = SQ(db)->ckpt;
    if (c && atomic_load_explicit(&c->copied, memory_order_relaxed) &&
        atomic_exchange(&c->copied, false) && c->last_frames >= CKPT_IDLE_FRAMES &&
        sqlite3_wal_checkpoint_v2(SQ(db)->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) ==
            SQLITE_BUSY)
        atomic_store(&c->copied, true); /* the thread is at it again: next time */
}

static void ckpt_stop(sqlite_db_t *d)
{
    ckpt_t *c = d->ckpt;
    if (!c)
        return;
    sqlite3_wal_hook(d->h, NULL, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    sqlite3_close_v2(c->h);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    d->ckpt = NULL;
}

/*
 * Starts the checkpointer of a writer connection. Without it (no memory, no
 * thread) the connection keeps SQLite's auto-checkpoint: slower commits, same
 * data.
 */
static void ckpt_start(sqlite_db_t *d, const char *path)
{
    ckpt_t *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->next_frames = CKPT_FRAMES;
    /* The journal mode is learnt from the file: until then a checkpoint is a no-op. */
    if (sqlite3_open_v2(path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(c->h, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK) {
        ah_log(AH_LOG_WARN, "store", "cannot open the SQLite checkpointer connection",
               AH_LF_STR("error", c->h ? sqlite3_errmsg(c->h) : "out of memory"), AH_LF_END);
        sqlite3_close_v2(c->h);
        free(c);
        return;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread takes no signals */
    int rc = pthread_create(&c->th, NULL, ckpt_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        sqlite3_close_v2(c->h);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return;
    }
    pthread_setname_np(c->th, "ah-store-ckpt");
    d->ckpt = c;
    /* Replaces SQLite's auto-checkpoint, which is itself a WAL hook. */
    sqlite3_wal_hook(d->h, ckpt_hook, c);
}

static void sq_close(ah_db_t *db)
{
    sqlite_db_t *d = SQ(db);
    ckpt_stop(d); /* first: the writer's close then checkpoints what is left, as the last one */
    for (int i = 0; i < d->cache_n; i++) {
        sqlite3_finalize(d->cache[i].st);
        free(d->cache[i].sql);
    }
    free(d->cache);
    sqlite3_close_v2(d->h);
    free(d);
}

/* Row callback: copies column 0 into the char[16] at ud. */
static int copy_first_col(void *ud, const ah_db_val_t *cols, int ncols)
{
    if (ncols > 0)
        ah_db_val_copy(&cols[0], ud, 16);
    return 1;
}

/*
 * Switches the file to WAL. Changing the journal mode can fail with
 * SQLITE_BUSY without going through the busy handler (another process is
 * switching it at the same moment, e.g. replicas starting together), so retry
 * here until the busy timeout.
 */
static int set_wal(sqlite_db_t *d, const char *path, int busy_timeout_ms, bool *wal)
{
    char mode[16] = "";
    int rc;
    for (int waited_ms = 0;; waited_ms += 10) {
        rc = sq_query(&d->base, "PRAGMA journal_mode = WAL", NULL, 0, copy_first_col, mode);
        if (rc != -EBUSY || waited_ms >= busy_timeout_ms)
            break;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (rc < 0)
        return rc;
    *wal = strcmp(mode, "wal") == 0;
    if (!*wal)
        ah_log(AH_LOG_WARN, "store", "SQLite WAL mode unavailable; reads will wait for writes",
               AH_LF_STR("path", path), AH_LF_STR("journal_mode", mode), AH_LF_END);
    return 0;
}

/*
 * Creates the database file's directory when it is missing (one level: a
 * deeper missing path is more likely a typo than an intent).
 */
static int ensure_parent_dir(const char *path, ah_buf_t *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    size_t n = (size_t)(slash - path);
    char dir[4096];
    if (n >= sizeof(dir)) {
        if (err)
            ah_buf_puts(err, "storage.url: database path too long (at most 4095 bytes)");
        return -ENAMETOOLONG;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return 0;
        if (err)
            ah_buf_printf(err, "storage.url: \"%s\" is not a directory (fix the database path)",
                          dir);
        return -ENOTDIR;
    }
    if (mkdir(dir, 0750) == 0 || errno == EEXIST)
        return 0;
    int e = errno;
    if (err)
        ah_buf_printf(err,
                      "storage.url: cannot create directory \"%s\" for the database: %s (create "
                      "it, or point storage.url at an existing directory)",
                      dir, strerror(e));
    return -e;
}

static int sq_open(const char *url, const ah_db_opts_t *opts, ah_db_t **out, ah_buf_t *err)
{
    const char *path = url + strlen("sqlite://");
    if (!*path) {
        if (err)
            ah_buf_puts(err, "storage.url: sqlite:// needs a file path (e.g. "
                             "sqlite://./data/agenthub.db or sqlite:///var/lib/agenthub/db)");
        return -EINVAL;
    }
    bool memory = strcmp(path, ":memory:") == 0;
    if (!memory && !opts->readonly) {
        int rc = ensure_parent_dir(path, err);
        if (rc < 0)
            return rc;
    }

    sqlite_db_t *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->base.be = &ah_db_sqlite_backend;
    d->base.caps = memory ? AH_DB_CAP_PRIVATE : 0;
    if (!opts->no_stmt_cache) {
        int cap = opts->stmt_cache_size > 0 ? opts->stmt_cache_size : STMT_CACHE_DEFAULT;
        d->cache_cap = cap > STMT_CACHE_MAX ? STMT_CACHE_MAX : cap;
        d->cache = calloc((size_t)d->cache_cap, sizeof(*d->cache));
        if (!d->cache) {
            free(d);
            return -ENOMEM;
        }
    }

    int flags = SQLITE_OPEN_NOMUTEX | (opts->readonly ? SQLITE_OPEN_READONLY
                                                      : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &d->h, flags, NULL);
    if (rc != SQLITE_OK) {
        if (err)
            ah_buf_printf(err, "storage.url: cannot open SQLite database \"%s\": %s", path,
                          d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc));
        int e = map_rc(rc);
        sq_close(&d->base);
        return e;
    }
    sqlite3_extended_result_codes(d->h, 1);
    sqlite3_busy_timeout(d->h, opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000);

    const char *pragmas = "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";
    rc = sq_exec(&d->base, pragmas);
    bool wal = false;
    if (rc == 0 && !memory && !opts->readonly) {
        /* WAL is a property of the file: set once by the writer, readers inherit it. */
        rc = set_wal(d, path, opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000, &wal);
    }
    if (rc < 0) {
        if (err)
            ah_buf_printf(err, "storage.url: cannot configure SQLite database \"%s\": %s", path,
                          d->err);
        sq_close(&d->base);
        return rc;
    }
    if (wal && opts->bg_checkpoint)
        ckpt_start(d, path);
    *out = &d->base;
    return 0;
}

const ah_db_backend_t ah_db_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .query = sq_query,
    .changes = sq_changes,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .errmsg = sq_errmsg,
    .table_exists = sq_table_exists,
    .in_txn = sq_in_txn,
    .migrate_lock = NULL, /* BEGIN IMMEDIATE already serialises migrators */
    .stats = sq_stats,
    .idle = sq_idle,
};
