/* usage.c - usage rows and key_limits rows; see usage.h. Portable SQL only. */
#include "store/usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "store/store.h"

#define USAGE_COLS                                                                                 \
    "ts, request_id, key_id, tenant, model, provider, upstream_model, prompt_tokens, "             \
    "completion_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, status, stream, attempts, "  \
    "agent, run_id, node"
#define USAGE_NCOLS 19
#define ROW_PARAMS  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

/* Rows per multi-row INSERT: 32 * 19 = 608 parameters, far below SQLite's (32766) and
 * PostgreSQL's (65535) limits, and few enough statement texts for the statement cache. */
#define INSERT_CHUNK 32

static char multi_sql[64 + sizeof(USAGE_COLS) + INSERT_CHUNK * (sizeof(ROW_PARAMS) + 2)];
static pthread_once_t multi_once = PTHREAD_ONCE_INIT;

static void build_multi_sql(void)
{
    size_t off = (size_t)snprintf(multi_sql, sizeof(multi_sql),
                                  "INSERT INTO usage (" USAGE_COLS ") VALUES ");
    for (int i = 0; i < INSERT_CHUNK; i++) {
        int n = snprintf(multi_sql + off, sizeof(multi_sql) - off, "%s" ROW_PARAMS, i ? ", " : "");
        off += (size_t)n;
    }
}

static bool terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

#define FIELD_OK(r, f) terminated((r)->f, sizeof((r)->f))

static bool row_ok(const ah_usage_row_t *r)
{
    return FIELD_OK(r, request_id) && FIELD_OK(r, key_id) && FIELD_OK(r, tenant) &&
           FIELD_OK(r, model) && FIELD_OK(r, provider) && FIELD_OK(r, upstream_model) &&
           FIELD_OK(r, agent) && FIELD_OK(r, run_id) && FIELD_OK(r, node);
}

static void bind_row(ah_db_val_t *a, const ah_usage_row_t *r)
{
    a[0] = ah_db_int(r->ts);
    a[1] = ah_db_text_or_null(r->request_id);
    a[2] = ah_db_text(r->key_id);
    a[3] = ah_db_text(r->tenant[0] ? r->tenant : "default");
    a[4] = ah_db_text(r->model);
    a[5] = ah_db_text_or_null(r->provider);
    a[6] = ah_db_text_or_null(r->upstream_model);
    a[7] = ah_db_int(r->prompt_tokens);
    a[8] = ah_db_int(r->completion_tokens);
    a[9] = ah_db_int(r->cached_tokens);
    a[10] = ah_db_dbl(r->cost_usd);
    a[11] = r->latency_ms < 0 ? ah_db_null() : ah_db_int(r->latency_ms);
    a[12] = r->ttft_ms < 0 ? ah_db_null() : ah_db_int(r->ttft_ms);
    a[13] = ah_db_int(r->status);
    a[14] = ah_db_int(r->stream ? 1 : 0);
    a[15] = ah_db_int(r->attempts);
    a[16] = ah_db_text_or_null(r->agent);
    a[17] = ah_db_text_or_null(r->run_id);
    a[18] = ah_db_text(r->node);
}

int ah_store_usage_insert(ah_db_t *db, const ah_usage_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!row_ok(&rows[i]))
            return -EINVAL;
    }
    pthread_once(&multi_once, build_multi_sql);
    ah_db_val_t args[INSERT_CHUNK * USAGE_NCOLS];
    size_t i = 0;
    for (; i + INSERT_CHUNK <= n; i += INSERT_CHUNK) {
        for (size_t j = 0; j < INSERT_CHUNK; j++)
            bind_row(&args[j * USAGE_NCOLS], &rows[i + j]);
        int rc = ah_db_query(db, multi_sql, args, INSERT_CHUNK * USAGE_NCOLS, NULL, NULL);
        if (rc < 0)
            return rc;
        ah_store_yield_point(); /* a 500-row batch is ~1 ms of CPU: give way between chunks */
    }
    for (; i < n; i++) {
        bind_row(args, &rows[i]);
        int rc = ah_db_query(db, "INSERT INTO usage (" USAGE_COLS ") VALUES " ROW_PARAMS, args,
                             USAGE_NCOLS, NULL, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int dbl_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    if (ncols >= 1)
        *(double *)ud = ah_db_val_dbl(&cols[0]);
    return 0;
}

int ah_store_usage_cost_since(ah_db_t *db, const char *key_id, int64_t since_ms,
                              const char *exclude_node, double *out)
{
    if (!key_id)
        return -EINVAL;
    *out = 0;
    ah_db_val_t args[3] = {ah_db_text(key_id), ah_db_int(since_ms),
                           ah_db_text(exclude_node ? exclude_node : "")};
    if (exclude_node)
        return ah_db_query(db,
                           "SELECT COALESCE(SUM(cost_usd), 0) FROM usage "
                           "WHERE key_id = ? AND ts >= ? AND node <> ?",
                           args, 3, dbl_row, out);
    return ah_db_query(db,
                       "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE key_id = ? AND ts >= ?",
                       args, 2, dbl_row, out);
}

typedef struct {
    ah_usage_agg_fn cb;
    void *ud;
    unsigned group;
} agg_ctx_t;

static int agg_row(void *ud, const ah_db_val_t *c, int ncols)
{
    agg_ctx_t *a = ud;
    if (ncols != 8)
        return -EIO;
    ah_usage_agg_t g = {
        .key_id = (a->group & AH_USAGE_GROUP_KEY) ? (c[0].type == AH_DB_TEXT ? c[0].s : "") : NULL,
        .model = (a->group & AH_USAGE_GROUP_MODEL) ? (c[1].type == AH_DB_TEXT ? c[1].s : "") : NULL,
        .day = (a->group & AH_USAGE_GROUP_DAY) ? ah_db_val_int(&c[2]) : -1,
        .requests = ah_db_val_int(&c[3]),
        .prompt_tokens = ah_db_val_int(&c[4]),
        .completion_tokens = ah_db_val_int(&c[5]),
        .cached_tokens = ah_db_val_int(&c[6]),
        .cost_usd = ah_db_val_dbl(&c[7]),
    };
    if (g.requests == 0)
        return 0; /* the ungrouped total over no rows */
    return a->cb(a->ud, &g);
}

/* Appends s to the comma-separated list in buf. */
static int list_add(char *buf, size_t n, const char *s)
{
    size_t len = strlen(buf);
    int w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", s);
    return (w < 0 || (size_t)w >= n - len) ? -E2BIG : 0;
}

int ah_store_usage_aggregate(ah_db_t *db, const ah_usage_filter_t *f, ah_usage_agg_fn cb, void *ud)
{
    if (!f || !cb || f->limit < 1 || f->limit > AH_USAGE_AGG_MAX ||
        (f->group & ~AH_USAGE_GROUP_ALL) || f->from_ms > f->to_ms)
        return -EINVAL;
    /* The day is ts / 86400000: integer division on BIGINT in both engines. */
    const char *kcol = (f->group & AH_USAGE_GROUP_KEY) ? "key_id" : "NULL";
    const char *mcol = (f->group & AH_USAGE_GROUP_MODEL) ? "model" : "NULL";
    const char *dcol = (f->group & AH_USAGE_GROUP_DAY) ? "ts / 86400000" : "-1";
    char groups[96] = "";
    if (f->group & AH_USAGE_GROUP_DAY)
        list_add(groups, sizeof(groups), "ts / 86400000");
    if (f->group & AH_USAGE_GROUP_KEY)
        list_add(groups, sizeof(groups), "key_id");
    if (f->group & AH_USAGE_GROUP_MODEL)
        list_add(groups, sizeof(groups), "model");

    ah_db_val_t args[5];
    int nargs = 0;
    args[nargs++] = ah_db_int(f->from_ms);
    args[nargs++] = ah_db_int(f->to_ms);
    if (f->key_id)
        args[nargs++] = ah_db_text(f->key_id);
    if (f->model)
        args[nargs++] = ah_db_text(f->model);
    args[nargs++] = ah_db_int(f->limit);

    char sql[768];
    int w = snprintf(sql, sizeof(sql),
                     "SELECT %s, %s, %s, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
                     "SUM(cached_tokens), SUM(cost_usd) FROM usage WHERE ts >= ? AND ts < ?%s%s"
                     "%s%s%s%s LIMIT ?",
                     kcol, mcol, dcol, f->key_id ? " AND key_id = ?" : "",
                     f->model ? " AND model = ?" : "", groups[0] ? " GROUP BY " : "", groups,
                     groups[0] ? " ORDER BY " : "", groups);
    if (w < 0 || (size_t)w >= sizeof(sql))
        return -E2BIG;
    agg_ctx_t a = {cb, ud, f->group};
    return ah_db_query(db, sql, args, nargs, agg_row, &a);
}

/* ---- key_limits ---- */

#define KL_COLS "key_id, rpm, tpm, concurrency, budget_usd, budget_period, updated_at"

void ah_key_limits_init(ah_key_limits_rec_t *r, const char *key_id)
{
    memset(r, 0, sizeof(*r));
    if (key_id) {
        size_t n = strnlen(key_id, sizeof(r->key_id) - 1);
        memcpy(r->key_id, key_id, n);
    }
    r->rpm = r->tpm = r->concurrency = -1;
    r->budget_usd = -1;
}

static ah_db_val_t opt_int(int64_t v)
{
    return v < 0 ? ah_db_null() : ah_db_int(v);
}

int ah_store_key_limits_upsert(ah_db_t *db, const ah_key_limits_rec_t *r)
{
    if (!FIELD_OK(r, key_id) || !FIELD_OK(r, budget_period) || !r->key_id[0])
        return -EINVAL;
    bool budget = r->budget_usd >= 0;
    ah_db_val_t args[7] = {
        ah_db_text(r->key_id),
        opt_int(r->rpm),
        opt_int(r->tpm),
        opt_int(r->concurrency),
        budget ? ah_db_dbl(r->budget_usd) : ah_db_null(),
        budget ? ah_db_text_or_null(r->budget_period) : ah_db_null(),
        ah_db_int(r->updated_at),
    };
    /* ON CONFLICT ... DO UPDATE: the same text on SQLite >= 3.24 and PostgreSQL >= 9.5. */
    return ah_db_query(db,
                       "INSERT INTO key_limits (" KL_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (key_id) DO UPDATE SET rpm = excluded.rpm, "
                       "tpm = excluded.tpm, concurrency = excluded.concurrency, "
                       "budget_usd = excluded.budget_usd, budget_period = excluded.budget_period, "
                       "updated_at = excluded.updated_at",
                       args, 7, NULL, NULL);
}

static int64_t col_opt_int(const ah_db_val_t *v)
{
    return v->type == AH_DB_NULL ? -1 : ah_db_val_int(v);
}

static int kl_from_row(const ah_db_val_t *c, int ncols, ah_key_limits_rec_t *r)
{
    if (ncols != 7)
        return -EIO;
    memset(r, 0, sizeof(*r));
    int rc = 0;
    rc |= ah_db_val_copy(&c[0], r->key_id, sizeof(r->key_id));
    r->rpm = col_opt_int(&c[1]);
    r->tpm = col_opt_int(&c[2]);
    r->concurrency = col_opt_int(&c[3]);
    r->budget_usd = c[4].type == AH_DB_NULL ? -1 : ah_db_val_dbl(&c[4]);
    rc |= ah_db_val_copy(&c[5], r->budget_period, sizeof(r->budget_period));
    r->updated_at = ah_db_val_int(&c[6]);
    return rc ? -E2BIG : 0;
}

typedef struct {
    ah_key_limits_rec_t *out;
    int rc;
    bool found;
} kl_get_t;

static int kl_get_row(void *ud, const ah_db_val_t *c, int ncols)
{
    kl_get_t *g = ud;
    g->rc = kl_from_row(c, ncols, g->out);
    g->found = true;
    return 1;
}

int ah_store_key_limits_get(ah_db_t *db, const char *key_id, ah_key_limits_rec_t *out)
{
    if (!key_id || !*key_id)
        return -EINVAL;
    kl_get_t g = {out, 0, false};
    ah_db_val_t arg = ah_db_text(key_id);
    int rc = ah_db_query(db, "SELECT " KL_COLS " FROM key_limits WHERE key_id = ?", &arg, 1,
                         kl_get_row, &g);
    if (rc < 0)
        return rc;
    return g.found ? g.rc : -ENOENT;
}

typedef struct {
    ah_key_limits_fn cb;
    void *ud;
} kl_list_t;

static int kl_list_row(void *ud, const ah_db_val_t *c, int ncols)
{
    kl_list_t *l = ud;
    ah_key_limits_rec_t r;
    int rc = kl_from_row(c, ncols, &r);
    if (rc == -E2BIG)
        return 0; /* a key id longer than any this program makes: not one of ours */
    if (rc)
        return rc;
    return l->cb(l->ud, &r);
}

int ah_store_key_limits_list(ah_db_t *db, int64_t since_ms, ah_key_limits_fn cb, void *ud)
{
    if (!cb)
        return -EINVAL;
    kl_list_t l = {cb, ud};
    ah_db_val_t arg = ah_db_int(since_ms);
    return ah_db_query(db,
                       "SELECT " KL_COLS " FROM key_limits WHERE updated_at > ? "
                       "ORDER BY updated_at, key_id",
                       &arg, 1, kl_list_row, &l);
}
