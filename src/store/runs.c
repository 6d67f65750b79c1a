/*
 * runs.c - run rows and run events; see runs.h. Portable SQL only.
 *
 * Every reader selects the same 29 columns in the same order (RUN_COLS);
 * the cheaper readers put NULL in place of the columns they skip, so one
 * row decoder serves them all.
 */
#include "store/runs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_NCOLS 29
#define RUN_COLS                                                                                   \
    "id, agent, agent_version, status, mode, input, output, error, error_code, session_id, "       \
    "key_id, tenant, metadata, limits, state, turns, prompt_tokens, completion_tokens, cost_usd, " \
    "lease_owner, lease_expires_at, attempt, idempotency_key, webhook_url, created_at, "           \
    "started_at, finished_at, updated_at, last_event_seq"
/* RUN_COLS without limits and state. */
#define RUN_COLS_SUMMARY                                                                           \
    "id, agent, agent_version, status, mode, input, output, error, error_code, session_id, "       \
    "key_id, tenant, metadata, NULL, NULL, turns, prompt_tokens, completion_tokens, cost_usd, "    \
    "lease_owner, lease_expires_at, attempt, idempotency_key, webhook_url, created_at, "           \
    "started_at, finished_at, updated_at, last_event_seq"
/* RUN_COLS without any text column of unbounded size. */
#define RUN_COLS_HEAD                                                                              \
    "id, agent, agent_version, status, mode, NULL, NULL, NULL, NULL, NULL, "                       \
    "key_id, tenant, NULL, NULL, NULL, turns, prompt_tokens, completion_tokens, cost_usd, "        \
    "NULL, lease_expires_at, attempt, NULL, NULL, created_at, "                                    \
    "started_at, finished_at, updated_at, last_event_seq"

#define RUN_LIST_DEFAULT   50
#define RUN_LIST_MAX       1000
#define EVENT_LIST_DEFAULT 10000

static const char *const all_statuses[] = {
    AH_RUN_QUEUED, AH_RUN_RUNNING,   AH_RUN_REQUIRES_ACTION, AH_RUN_COMPLETED,
    AH_RUN_FAILED, AH_RUN_CANCELLED, AH_RUN_EXPIRED,
};

bool ah_run_status_final(const char *status)
{
    return status && (strcmp(status, AH_RUN_COMPLETED) == 0 || strcmp(status, AH_RUN_FAILED) == 0 ||
                      strcmp(status, AH_RUN_CANCELLED) == 0 || strcmp(status, AH_RUN_EXPIRED) == 0);
}

bool ah_run_status_valid(const char *status)
{
    if (!status)
        return false;
    for (size_t i = 0; i < sizeof(all_statuses) / sizeof(all_statuses[0]); i++) {
        if (strcmp(status, all_statuses[i]) == 0)
            return true;
    }
    return false;
}

static bool terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

#define FIELD_OK(r, f) terminated((r)->f, sizeof((r)->f))

/* ---- records ---- */

void ah_run_rec_free(ah_run_rec_t *r)
{
    if (!r)
        return;
    char **strs[] = {&r->input,       &r->output,          &r->error,      &r->error_code,
                     &r->session_id,  &r->metadata,        &r->limits,     &r->state,
                     &r->lease_owner, &r->idempotency_key, &r->webhook_url};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

static int dup_str(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    size_t n = strlen(src);
    char *p = malloc(n + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p, src, n + 1);
    *dst = p;
    return 0;
}

int ah_run_rec_copy(ah_run_rec_t *dst, const ah_run_rec_t *src)
{
    *dst = *src;
    int rc = 0;
    rc |= dup_str(&dst->input, src->input);
    rc |= dup_str(&dst->output, src->output);
    rc |= dup_str(&dst->error, src->error);
    rc |= dup_str(&dst->error_code, src->error_code);
    rc |= dup_str(&dst->session_id, src->session_id);
    rc |= dup_str(&dst->metadata, src->metadata);
    rc |= dup_str(&dst->limits, src->limits);
    rc |= dup_str(&dst->state, src->state);
    rc |= dup_str(&dst->lease_owner, src->lease_owner);
    rc |= dup_str(&dst->idempotency_key, src->idempotency_key);
    rc |= dup_str(&dst->webhook_url, src->webhook_url);
    if (rc) {
        ah_run_rec_free(dst);
        return -ENOMEM;
    }
    return 0;
}

/* Fills a record from a RUN_COLS row. 0, -E2BIG (a fixed field too long), -ENOMEM, -EIO. */
static int from_row(const ah_db_val_t *c, int ncols, ah_run_rec_t *r)
{
    memset(r, 0, sizeof(*r));
    if (ncols != RUN_NCOLS)
        return -EIO;
    int big = 0;
    big |= ah_db_val_copy(&c[0], r->id, sizeof(r->id));
    big |= ah_db_val_copy(&c[1], r->agent, sizeof(r->agent));
    r->agent_version = ah_db_val_int(&c[2]);
    big |= ah_db_val_copy(&c[3], r->status, sizeof(r->status));
    big |= ah_db_val_copy(&c[4], r->mode, sizeof(r->mode));
    big |= ah_db_val_copy(&c[10], r->key_id, sizeof(r->key_id));
    big |= ah_db_val_copy(&c[11], r->tenant, sizeof(r->tenant));
    r->turns = (int)ah_db_val_int(&c[15]);
    r->prompt_tokens = ah_db_val_int(&c[16]);
    r->completion_tokens = ah_db_val_int(&c[17]);
    r->cost_usd = ah_db_val_dbl(&c[18]);
    r->lease_expires_at = ah_db_val_int(&c[20]);
    r->attempt = (int)ah_db_val_int(&c[21]);
    r->created_at = ah_db_val_int(&c[24]);
    r->started_at = ah_db_val_int(&c[25]);
    r->finished_at = ah_db_val_int(&c[26]);
    r->updated_at = ah_db_val_int(&c[27]);
    r->last_event_seq = ah_db_val_int(&c[28]);
    if (big)
        return -E2BIG;
    struct {
        int col;
        char **dst;
    } strs[] = {
        {5, &r->input},        {6, &r->output},           {7, &r->error},       {8, &r->error_code},
        {9, &r->session_id},   {12, &r->metadata},        {13, &r->limits},     {14, &r->state},
        {19, &r->lease_owner}, {22, &r->idempotency_key}, {23, &r->webhook_url}};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        int rc = ah_db_val_dup(&c[strs[i].col], strs[i].dst);
        if (rc < 0) {
            ah_run_rec_free(r);
            return rc;
        }
    }
    return 0;
}

/* ---- writes ---- */

/* hash: runs.request_hash (64 hex digits), or NULL for none. */
static int run_insert(ah_db_t *db, const ah_run_rec_t *r, const char *hash)
{
    if (!FIELD_OK(r, id) || !FIELD_OK(r, agent) || !FIELD_OK(r, status) || !FIELD_OK(r, mode) ||
        !FIELD_OK(r, key_id) || !FIELD_OK(r, tenant))
        return -EINVAL;
    if (!r->id[0] || !r->agent[0] || !r->mode[0] || !ah_run_status_valid(r->status) || !r->input)
        return -EINVAL;
    ah_db_val_t a[RUN_NCOLS + 1] = {
        ah_db_text(r->id),
        ah_db_text(r->agent),
        ah_db_int(r->agent_version),
        ah_db_text(r->status),
        ah_db_text(r->mode),
        ah_db_text(r->input),
        ah_db_text(r->output),
        ah_db_text(r->error),
        ah_db_text_or_null(r->error_code),
        ah_db_text_or_null(r->session_id),
        ah_db_text(r->key_id),
        ah_db_text(r->tenant[0] ? r->tenant : "default"),
        ah_db_text_or_null(r->metadata),
        ah_db_text_or_null(r->limits),
        ah_db_text_or_null(r->state),
        ah_db_int(r->turns),
        ah_db_int(r->prompt_tokens),
        ah_db_int(r->completion_tokens),
        ah_db_dbl(r->cost_usd),
        ah_db_text_or_null(r->lease_owner),
        ah_db_int_or_null(r->lease_expires_at),
        ah_db_int(r->attempt),
        /* "" must be NULL: NULLs never collide in the unique (key_id, idempotency_key) index. */
        ah_db_text_or_null(r->idempotency_key),
        ah_db_text_or_null(r->webhook_url),
        ah_db_int(r->created_at),
        ah_db_int_or_null(r->started_at),
        ah_db_int_or_null(r->finished_at),
        ah_db_int(r->updated_at ? r->updated_at : r->created_at),
        ah_db_int(r->last_event_seq),
        ah_db_text(hash ? hash : ""),
    };
    if (hash)
        return ah_db_query(
            db,
            "INSERT INTO runs (" RUN_COLS ", request_hash) VALUES (?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?)",
            a, RUN_NCOLS + 1, NULL, NULL);
    return ah_db_query(db,
                       "INSERT INTO runs (" RUN_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       a, RUN_NCOLS, NULL, NULL);
}

int ah_store_run_insert(ah_db_t *db, const ah_run_rec_t *r)
{
    return run_insert(db, r, NULL);
}

int ah_store_run_insert_hashed(ah_db_t *db, const ah_run_rec_t *r, const char *request_hash)
{
    if (!request_hash || strlen(request_hash) != 64)
        return -EINVAL;
    return run_insert(db, r, request_hash);
}

#define RUN_UPDATE_SET                                                                             \
    "UPDATE runs SET status = ?, output = ?, error = ?, error_code = ?, state = ?, turns = ?, "    \
    "prompt_tokens = ?, completion_tokens = ?, cost_usd = ?, started_at = ?, finished_at = ?, "    \
    "updated_at = ?, last_event_seq = ? WHERE id = ?"

/* owner NULL: any owner; else only while lease_owner is owner (or, if unowned_ok, while it
 * is still parked: requires_action with no owner; a run another replica ended meanwhile is
 * not overwritten), and while the row is still at r->attempt: a claim counts a new attempt,
 * so the write of an attempt that this same node has since claimed again is stale too. */
static int run_update(ah_db_t *db, const ah_run_rec_t *r, const char *owner, bool unowned_ok)
{
    if (!FIELD_OK(r, id) || !FIELD_OK(r, status) || !r->id[0] || !ah_run_status_valid(r->status))
        return -EINVAL;
    ah_db_val_t a[17] = {
        ah_db_text(r->status),
        ah_db_text(r->output),
        ah_db_text(r->error),
        ah_db_text_or_null(r->error_code),
        ah_db_text_or_null(r->state),
        ah_db_int(r->turns),
        ah_db_int(r->prompt_tokens),
        ah_db_int(r->completion_tokens),
        ah_db_dbl(r->cost_usd),
        ah_db_int_or_null(r->started_at),
        ah_db_int_or_null(r->finished_at),
        ah_db_int(r->updated_at),
        ah_db_int(r->last_event_seq),
        ah_db_text(r->id),
        ah_db_text(owner ? owner : ""),
        ah_db_int(unowned_ok),
        ah_db_int(r->attempt),
    };
    /* ah_db_write_one: with deferred writes on, the check costs no round trip (db.h). */
    if (!owner)
        return ah_db_write_one(db, RUN_UPDATE_SET, a, 14, -ENOENT);
    return ah_db_write_one(db,
                           RUN_UPDATE_SET " AND (lease_owner = ? OR (? = 1 AND "
                                          "(lease_owner IS NULL OR lease_owner = '') AND "
                                          "status = 'requires_action')) AND attempt = ?",
                           a, 17, -ESTALE);
}

int ah_store_run_fence(ah_db_t *db, const char *run_id, const char *owner, int64_t attempt)
{
    if (!run_id || !owner || !*owner)
        return -EINVAL;
    ah_db_val_t a[3] = {ah_db_text(run_id), ah_db_text(owner), ah_db_int(attempt)};
    /* A no-op UPDATE: it takes the row lock, which a SELECT would not without FOR UPDATE
     * (not portable), and its "no row changed" is checked by ah_db_write_one. */
    return ah_db_write_one(db,
                           "UPDATE runs SET updated_at = updated_at WHERE id = ? AND lease_owner = "
                           "? AND attempt = ?",
                           a, 3, -ESTALE);
}

int ah_store_run_update(ah_db_t *db, const ah_run_rec_t *r)
{
    return run_update(db, r, NULL, false);
}

int ah_store_run_update_owned(ah_db_t *db, const ah_run_rec_t *r, const char *owner,
                              bool unowned_ok)
{
    if (!owner || !*owner)
        return -EINVAL;
    return run_update(db, r, owner, unowned_ok);
}

/* ---- reads ---- */

typedef struct {
    ah_run_rec_t *out;
    int rc;
    bool found;
} get_ctx_t;

static int get_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    get_ctx_t *g = ud;
    g->rc = from_row(cols, ncols, g->out);
    g->found = true;
    return 1;
}

static int get_one(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs,
                   ah_run_rec_t *out)
{
    memset(out, 0, sizeof(*out));
    get_ctx_t g = {out, 0, false};
    int rc = ah_db_query(db, sql, args, nargs, get_row, &g);
    if (rc < 0)
        return rc;
    if (!g.found)
        return -ENOENT;
    return g.rc;
}

int ah_store_run_get(ah_db_t *db, const char *id, ah_run_rec_t *out)
{
    if (!id || !*id)
        return -EINVAL;
    ah_db_val_t arg = ah_db_text(id);
    return get_one(db, "SELECT " RUN_COLS " FROM runs WHERE id = ?", &arg, 1, out);
}

int ah_store_run_get_head(ah_db_t *db, const char *id, ah_run_rec_t *out)
{
    if (!id || !*id)
        return -EINVAL;
    ah_db_val_t arg = ah_db_text(id);
    return get_one(db, "SELECT " RUN_COLS_HEAD " FROM runs WHERE id = ?", &arg, 1, out);
}

int ah_store_run_get_by_idempotency(ah_db_t *db, const char *key_id, const char *idem,
                                    ah_run_rec_t *out)
{
    if (!key_id || !idem || !*idem)
        return -EINVAL;
    ah_db_val_t args[2] = {ah_db_text(key_id), ah_db_text(idem)};
    return get_one(db, "SELECT " RUN_COLS " FROM runs WHERE key_id = ? AND idempotency_key = ?",
                   args, 2, out);
}

typedef struct {
    int (*cb)(void *ud, const ah_run_rec_t *r);
    void *ud;
} list_ctx_t;

static int list_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    list_ctx_t *l = ud;
    ah_run_rec_t r;
    int rc = from_row(cols, ncols, &r);
    if (rc < 0)
        return rc;
    rc = l->cb(l->ud, &r);
    ah_run_rec_free(&r);
    return rc;
}

int ah_store_run_update_returning(ah_db_t *db, const char *set_where, const ah_db_val_t *args,
                                  int nargs, int (*cb)(void *ud, const ah_run_rec_t *r), void *ud)
{
    if (!set_where || !*set_where || !cb)
        return -EINVAL;
    static const char head[] = "UPDATE runs SET ", tail[] = " RETURNING " RUN_COLS;
    size_t n = strlen(set_where);
    char *sql = malloc(sizeof(head) + n + sizeof(tail));
    if (!sql)
        return -ENOMEM;
    memcpy(sql, head, sizeof(head) - 1);
    memcpy(sql + sizeof(head) - 1, set_where, n);
    memcpy(sql + sizeof(head) - 1 + n, tail, sizeof(tail));
    list_ctx_t l = {cb, ud};
    int rc = ah_db_query(db, sql, args, nargs, list_row, &l);
    free(sql);
    return rc;
}

static int list_cols(ah_db_t *db, const char *cols, const ah_run_filter_t *f,
                     int (*cb)(void *ud, const ah_run_rec_t *r), void *ud)
{
    if (!f || !cb)
        return -EINVAL;
    /* At most 32 distinct statement texts (one per filter combination): the
     * statement cache keeps them all. */
    char sql[768];
    ah_db_val_t args[6];
    int n = 0;
    size_t off = 0;
    int w = snprintf(sql, sizeof(sql), "SELECT %s FROM runs WHERE 1 = 1", cols);
    if (w < 0 || (size_t)w >= sizeof(sql))
        return -EINVAL;
    off = (size_t)w;
    struct {
        const char *value;
        const char *clause;
    } conds[] = {
        {f->agent, " AND agent = ?"},
        {f->status, " AND status = ?"},
        {f->session_id, " AND session_id = ?"},
        {f->key_id, " AND key_id = ?"},
    };
    for (size_t i = 0; i < sizeof(conds) / sizeof(conds[0]); i++) {
        if (!conds[i].value)
            continue;
        w = snprintf(sql + off, sizeof(sql) - off, "%s", conds[i].clause);
        if (w < 0 || (size_t)w >= sizeof(sql) - off)
            return -EINVAL;
        off += (size_t)w;
        args[n++] = ah_db_text(conds[i].value);
    }
    if (f->before > 0) {
        w = snprintf(sql + off, sizeof(sql) - off, " AND created_at < ?");
        if (w < 0 || (size_t)w >= sizeof(sql) - off)
            return -EINVAL;
        off += (size_t)w;
        args[n++] = ah_db_int(f->before);
    }
    w = snprintf(sql + off, sizeof(sql) - off, " ORDER BY created_at DESC, id DESC LIMIT ?");
    if (w < 0 || (size_t)w >= sizeof(sql) - off)
        return -EINVAL;
    int limit = f->limit <= 0             ? RUN_LIST_DEFAULT
                : f->limit > RUN_LIST_MAX ? RUN_LIST_MAX
                                          : f->limit;
    args[n++] = ah_db_int(limit);
    list_ctx_t l = {cb, ud};
    return ah_db_query(db, sql, args, n, list_row, &l);
}

int ah_store_run_list(ah_db_t *db, const ah_run_filter_t *f,
                      int (*cb)(void *ud, const ah_run_rec_t *r), void *ud)
{
    return list_cols(db, RUN_COLS, f, cb, ud);
}

int ah_store_run_list_summary(ah_db_t *db, const ah_run_filter_t *f,
                              int (*cb)(void *ud, const ah_run_rec_t *r), void *ud)
{
    return list_cols(db, RUN_COLS_SUMMARY, f, cb, ud);
}

/* ---- events ---- */

/* Rows per INSERT of ah_store_run_events_append: one statement text per count, all cached. */
#define EVENTS_PER_INSERT 8

int ah_store_run_events_append(ah_db_t *db, const ah_run_event_t *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!FIELD_OK(&ev[i], run_id) || !FIELD_OK(&ev[i], type) || !ev[i].run_id[0] ||
            !ev[i].type[0] || ev[i].seq <= 0)
            return -EINVAL;
    }
    /* A step's events in one statement (up to 8 rows each): one statement for the server
     * to run instead of one per event. */
    for (size_t i = 0; i < n;) {
        size_t m = n - i < EVENTS_PER_INSERT ? n - i : EVENTS_PER_INSERT;
        static const char head[] = "INSERT INTO run_events (run_id, seq, type, data, ts) VALUES "
                                   "(?, ?, ?, ?, ?)",
                          more[] = ", (?, ?, ?, ?, ?)";
        char sql[sizeof(head) + (EVENTS_PER_INSERT - 1) * (sizeof(more) - 1)];
        size_t len = sizeof(head) - 1;
        memcpy(sql, head, len);
        ah_db_val_t a[EVENTS_PER_INSERT * 5];
        for (size_t r = 0; r < m; r++) {
            const ah_run_event_t *e = &ev[i + r];
            if (r > 0) {
                memcpy(sql + len, more, sizeof(more) - 1);
                len += sizeof(more) - 1;
            }
            a[r * 5 + 0] = ah_db_text(e->run_id);
            a[r * 5 + 1] = ah_db_int(e->seq);
            a[r * 5 + 2] = ah_db_text(e->type);
            a[r * 5 + 3] = ah_db_text(e->data ? e->data : "{}");
            a[r * 5 + 4] = ah_db_int(e->ts);
        }
        sql[len] = '\0';
        int rc = ah_db_query(db, sql, a, (int)(m * 5), NULL, NULL);
        if (rc < 0)
            return rc;
        i += m;
    }
    return 0;
}

int ah_store_run_event_add(ah_db_t *db, const char *run_id, const char *type, const char *data,
                           int64_t ts)
{
    ah_run_event_t e;
    memset(&e, 0, sizeof(e));
    if (!run_id || !type || strlen(run_id) >= sizeof(e.run_id) || strlen(type) >= sizeof(e.type))
        return -EINVAL;
    snprintf(e.run_id, sizeof(e.run_id), "%s", run_id);
    snprintf(e.type, sizeof(e.type), "%s", type);
    ah_db_val_t id = ah_db_text(run_id);
    int64_t last = 0;
    int rc = ah_db_query_int(db, "SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = ?",
                             &id, 1, &last);
    if (rc)
        return rc;
    e.seq = last + 1;
    e.data = (char *)(data ? data : "{}");
    e.ts = ts;
    rc = ah_store_run_events_append(db, &e, 1);
    if (rc)
        return rc;
    ah_db_val_t up[3] = {ah_db_int(e.seq), ah_db_text(run_id), ah_db_int(e.seq)};
    return ah_db_query(db, "UPDATE runs SET last_event_seq = ? WHERE id = ? AND last_event_seq < ?",
                       up, 3, NULL, NULL);
}

typedef struct {
    int (*cb)(void *ud, const ah_run_event_t *e);
    void *ud;
} ev_ctx_t;

static int event_row(void *ud, const ah_db_val_t *c, int ncols)
{
    ev_ctx_t *l = ud;
    if (ncols != 5)
        return -EIO;
    ah_run_event_t e;
    memset(&e, 0, sizeof(e));
    if (ah_db_val_copy(&c[0], e.run_id, sizeof(e.run_id)) != 0 ||
        ah_db_val_copy(&c[2], e.type, sizeof(e.type)) != 0)
        return -E2BIG;
    e.seq = ah_db_val_int(&c[1]);
    /* Row TEXT is NUL-terminated and lives until the callback returns (db.h): no copy. */
    e.data = c[3].type == AH_DB_TEXT ? (char *)c[3].s : (char *)"{}";
    e.ts = ah_db_val_int(&c[4]);
    return l->cb(l->ud, &e);
}

int ah_store_run_events_list(ah_db_t *db, const char *run_id, int64_t after, int limit,
                             int (*cb)(void *ud, const ah_run_event_t *e), void *ud)
{
    if (!run_id || !*run_id || !cb)
        return -EINVAL;
    ev_ctx_t l = {cb, ud};
    ah_db_val_t a[3] = {ah_db_text(run_id), ah_db_int(after < 0 ? 0 : after),
                        ah_db_int(limit <= 0 ? EVENT_LIST_DEFAULT : limit)};
    return ah_db_query(db,
                       "SELECT run_id, seq, type, data, ts FROM run_events "
                       "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                       a, 3, event_row, &l);
}
