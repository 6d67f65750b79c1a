/*
 * webhooks.c - the webhook outbox rows; see webhooks.h. Portable SQL only:
 * the claim is a SELECT of candidates followed by one conditional UPDATE per
 * row, which both SQLite (one writer) and PostgreSQL (the UPDATE re-checks
 * its WHERE after waiting for a concurrent writer's row lock, READ
 * COMMITTED) make exclusive without backend-specific SKIP LOCKED.
 *
 * For delivered and dead rows next_attempt_at holds the time they got there,
 * so the (status, next_attempt_at) index also serves retention (prune).
 */
#include "store/webhooks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"

#define WH_NCOLS 13
#define WH_COLS                                                                                    \
    "id, run_id, url, event, payload, status, attempts, next_attempt_at, last_error, "             \
    "last_status, created_at, updated_at, delivered_at"
/* WH_COLS without the payload. */
#define WH_COLS_LIST                                                                               \
    "id, run_id, url, event, NULL, status, attempts, next_attempt_at, last_error, "                \
    "last_status, created_at, updated_at, delivered_at"

#define LIST_DEFAULT  50
#define LIST_MAX      1000
#define CLAIM_MAX     1000
#define BACKOFF_SHIFT 40 /* 2^40 ms is 35 years: past any sane cap, far from overflow */

int64_t ah_webhook_backoff_ms(int attempts, int64_t base_ms, int64_t max_ms)
{
    if (base_ms < 1)
        base_ms = 1;
    if (max_ms < base_ms)
        max_ms = base_ms;
    int shift = attempts < 1 ? 0 : attempts - 1;
    if (shift > BACKOFF_SHIFT)
        shift = BACKOFF_SHIFT;
    /* base <= max, and the comparison below happens before a shift could overflow. */
    int64_t d = base_ms;
    for (int i = 0; i < shift; i++) {
        if (d > max_ms / 2)
            return max_ms;
        d *= 2;
    }
    return d < max_ms ? d : max_ms;
}

bool ah_webhook_status_valid(const char *status)
{
    return status &&
           (strcmp(status, AH_WEBHOOK_PENDING) == 0 || strcmp(status, AH_WEBHOOK_DELIVERED) == 0 ||
            strcmp(status, AH_WEBHOOK_DEAD) == 0);
}

void ah_webhook_rec_free(ah_webhook_rec_t *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->payload);
    free(r->last_error);
    r->url = r->payload = r->last_error = NULL;
}

/* Fills a record from a WH_COLS row. 0, -E2BIG (a fixed field too long), -ENOMEM, -EIO. */
static int from_row(const ah_db_val_t *c, int ncols, ah_webhook_rec_t *r)
{
    memset(r, 0, sizeof(*r));
    if (ncols != WH_NCOLS)
        return -EIO;
    int big = 0;
    big |= ah_db_val_copy(&c[0], r->id, sizeof(r->id));
    big |= ah_db_val_copy(&c[1], r->run_id, sizeof(r->run_id));
    big |= ah_db_val_copy(&c[3], r->event, sizeof(r->event));
    big |= ah_db_val_copy(&c[5], r->status, sizeof(r->status));
    if (big)
        return -E2BIG;
    r->attempts = (int)ah_db_val_int(&c[6]);
    r->next_attempt_at = ah_db_val_int(&c[7]);
    r->last_status = (int)ah_db_val_int(&c[9]);
    r->created_at = ah_db_val_int(&c[10]);
    r->updated_at = ah_db_val_int(&c[11]);
    r->delivered_at = ah_db_val_int(&c[12]);
    int rc = ah_db_val_dup(&c[2], &r->url);
    if (rc == 0)
        rc = ah_db_val_dup(&c[4], &r->payload);
    if (rc == 0)
        rc = ah_db_val_dup(&c[8], &r->last_error);
    if (rc < 0)
        ah_webhook_rec_free(r);
    return rc;
}

/* ---- enqueue ---- */

int ah_store_webhook_enqueue_id(ah_db_t *db, const char *id, const char *run_id, const char *url,
                                const char *event, const char *payload_json, int64_t now)
{
    if (!id || !*id || strlen(id) >= sizeof(((ah_webhook_rec_t *)0)->id) || !run_id || !*run_id ||
        strlen(run_id) >= sizeof(((ah_webhook_rec_t *)0)->run_id) || !url || !*url ||
        strlen(url) > AH_WEBHOOK_URL_MAX || !event || !*event ||
        strlen(event) >= sizeof(((ah_webhook_rec_t *)0)->event) || !payload_json ||
        strlen(payload_json) > AH_WEBHOOK_PAYLOAD_MAX)
        return -EINVAL;
    ah_db_val_t a[8] = {
        ah_db_text(id),           ah_db_text(run_id), ah_db_text(url), ah_db_text(event),
        ah_db_text(payload_json), ah_db_int(now),     ah_db_int(now),  ah_db_int(now),
    };
    return ah_db_query(db,
                       "INSERT INTO webhooks_outbox (id, run_id, url, event, payload, status, "
                       "attempts, next_attempt_at, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                       a, 8, NULL, NULL);
}

int ah_store_webhook_enqueue(ah_db_t *db, const char *run_id, const char *url, const char *event,
                             const char *payload_json, int64_t now)
{
    char id[48];
    int rc = ah_id_new(id, sizeof(id), "whd", 16);
    if (rc < 0)
        return rc;
    return ah_store_webhook_enqueue_id(db, id, run_id, url, event, payload_json, now);
}

int ah_store_webhook_exists(ah_db_t *db, const char *run_id, const char *url)
{
    if (!run_id || !url)
        return -EINVAL;
    ah_db_val_t a[2] = {ah_db_text(run_id), ah_db_text(url)};
    int64_t n = 0;
    int rc = ah_db_query_int(
        db, "SELECT COUNT(*) FROM webhooks_outbox WHERE run_id = ? AND url = ?", a, 2, &n);
    if (rc < 0)
        return rc;
    return n > 0;
}

/* ---- claim ---- */

typedef struct {
    char (*ids)[48];
    int n, cap;
} id_list_t;

static int collect_id(void *ud, const ah_db_val_t *cols, int ncols)
{
    id_list_t *l = ud;
    if (ncols < 1 || l->n >= l->cap)
        return -EIO;
    if (ah_db_val_copy(&cols[0], l->ids[l->n], sizeof(l->ids[0])) != 0)
        return 0; /* an id this long was not written by us: skip it */
    l->n++;
    return 0;
}

typedef struct {
    ah_webhook_rec_t *out;
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

int ah_store_webhook_get(ah_db_t *db, const char *id, ah_webhook_rec_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!id || !*id)
        return -EINVAL;
    get_ctx_t g = {out, 0, false};
    ah_db_val_t arg = ah_db_text(id);
    int rc = ah_db_query(db, "SELECT " WH_COLS " FROM webhooks_outbox WHERE id = ?", &arg, 1,
                         get_row, &g);
    if (rc < 0)
        return rc;
    if (!g.found)
        return -ENOENT;
    return g.rc;
}

int ah_store_webhook_claim(ah_db_t *db, int64_t now, int64_t lease_ms, int limit,
                           int (*cb)(void *ud, const ah_webhook_rec_t *r), void *ud)
{
    if (limit < 1 || limit > CLAIM_MAX || lease_ms < 1 || !cb)
        return -EINVAL;
    id_list_t l = {calloc((size_t)limit, sizeof(*l.ids)), 0, limit};
    if (!l.ids)
        return -ENOMEM;
    ah_db_val_t a[2] = {ah_db_int(now), ah_db_int(limit)};
    int rc = ah_db_query(db,
                         "SELECT id FROM webhooks_outbox WHERE status = 'pending' AND "
                         "next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                         a, 2, collect_id, &l);
    int claimed = 0;
    for (int i = 0; rc >= 0 && i < l.n; i++) {
        ah_db_val_t u[4] = {ah_db_int(now + lease_ms), ah_db_int(now), ah_db_text(l.ids[i]),
                            ah_db_int(now)};
        rc = ah_db_query(db,
                         "UPDATE webhooks_outbox SET next_attempt_at = ?, updated_at = ? "
                         "WHERE id = ? AND status = 'pending' AND next_attempt_at <= ?",
                         u, 4, NULL, NULL);
        if (rc < 0)
            break;
        if (ah_db_changes(db) != 1)
            continue; /* another claimer was first */
        ah_webhook_rec_t r;
        rc = ah_store_webhook_get(db, l.ids[i], &r);
        if (rc < 0)
            break;
        claimed++;
        rc = cb(ud, &r);
        ah_webhook_rec_free(&r);
        if (rc != 0)
            break;
    }
    free(l.ids);
    if (rc != 0)
        return rc;
    return claimed;
}

/* ---- outcomes ---- */

int ah_store_webhook_delivered(ah_db_t *db, const char *id, int claimed_attempts, int http_status,
                               int64_t now)
{
    if (!id || !*id)
        return -EINVAL;
    /* A success is a fact: it is recorded even if the lease ran out and another
     * sender took the row (only its status is checked), so the row stops
     * being retried as soon as one copy got through. */
    ah_db_val_t a[6] = {ah_db_int(claimed_attempts + 1),
                        ah_db_int(http_status),
                        ah_db_int(now),
                        ah_db_int(now),
                        ah_db_int(now),
                        ah_db_text(id)};
    int rc = ah_db_query(db,
                         "UPDATE webhooks_outbox SET status = 'delivered', attempts = ?, "
                         "last_status = ?, last_error = NULL, delivered_at = ?, "
                         "next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                         a, 6, NULL, NULL);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) == 1 ? 0 : -ENOENT;
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence; into out (max + 1). */
static void cut_utf8(const char *s, char *out, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

int ah_store_webhook_failed(ah_db_t *db, const char *id, int claimed_attempts, int http_status,
                            const char *error, bool permanent, const ah_webhook_policy_t *p,
                            int64_t now)
{
    if (!id || !*id || !p || p->max_attempts < 1 || claimed_attempts < 0)
        return -EINVAL;
    int attempts = claimed_attempts + 1;
    bool dead = permanent || attempts >= p->max_attempts;
    int64_t next =
        dead ? now : now + ah_webhook_backoff_ms(attempts, p->backoff_base_ms, p->backoff_max_ms);
    char err[AH_WEBHOOK_ERROR_MAX + 1];
    cut_utf8(error && *error ? error : "failed", err, AH_WEBHOOK_ERROR_MAX);
    ah_db_val_t a[8] = {
        ah_db_text(dead ? AH_WEBHOOK_DEAD : AH_WEBHOOK_PENDING),
        ah_db_int(attempts),
        ah_db_int(next),
        ah_db_int_or_null(http_status),
        ah_db_text(err),
        ah_db_int(now),
        ah_db_text(id),
        ah_db_int(claimed_attempts),
    };
    int rc =
        ah_db_query(db,
                    "UPDATE webhooks_outbox SET status = ?, attempts = ?, next_attempt_at = ?, "
                    "last_status = ?, last_error = ?, updated_at = ? "
                    "WHERE id = ? AND status = 'pending' AND attempts = ?",
                    a, 8, NULL, NULL);
    if (rc < 0)
        return rc;
    if (ah_db_changes(db) != 1)
        return -ENOENT;
    return dead ? 1 : 0;
}

int ah_store_webhook_release(ah_db_t *db, const char *id, int claimed_attempts, int64_t now)
{
    if (!id || !*id)
        return -EINVAL;
    ah_db_val_t a[4] = {ah_db_int(now), ah_db_int(now), ah_db_text(id),
                        ah_db_int(claimed_attempts)};
    int rc = ah_db_query(db,
                         "UPDATE webhooks_outbox SET next_attempt_at = ?, updated_at = ? "
                         "WHERE id = ? AND status = 'pending' AND attempts = ?",
                         a, 4, NULL, NULL);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) == 1 ? 0 : -ENOENT;
}

int ah_store_webhook_retry(ah_db_t *db, const char *id, int64_t now)
{
    if (!id || !*id)
        return -EINVAL;
    ah_db_val_t a[3] = {ah_db_int(now), ah_db_int(now), ah_db_text(id)};
    int rc = ah_db_query(db,
                         "UPDATE webhooks_outbox SET status = 'pending', attempts = 0, "
                         "next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'dead'",
                         a, 3, NULL, NULL);
    if (rc < 0)
        return rc;
    if (ah_db_changes(db) == 1)
        return 0;
    int64_t n = 0;
    ah_db_val_t arg = ah_db_text(id);
    rc = ah_db_query_int(db, "SELECT COUNT(*) FROM webhooks_outbox WHERE id = ?", &arg, 1, &n);
    if (rc < 0)
        return rc;
    return n ? -EALREADY : -ENOENT;
}

/* ---- reads ---- */

typedef struct {
    int (*cb)(void *ud, const ah_webhook_rec_t *r);
    void *ud;
} list_ctx_t;

static int list_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    list_ctx_t *l = ud;
    ah_webhook_rec_t r;
    int rc = from_row(cols, ncols, &r);
    if (rc < 0)
        return rc;
    rc = l->cb(l->ud, &r);
    ah_webhook_rec_free(&r);
    return rc;
}

int ah_store_webhook_list(ah_db_t *db, const ah_webhook_filter_t *f,
                          int (*cb)(void *ud, const ah_webhook_rec_t *r), void *ud)
{
    if (!f || !cb || (f->status && !ah_webhook_status_valid(f->status)) || f->limit < 0 ||
        f->limit > LIST_MAX)
        return -EINVAL;
    /* At most 8 statement texts (one per filter combination): all stay cached. */
    char sql[512];
    ah_db_val_t args[4];
    int n = 0;
    int w = snprintf(sql, sizeof(sql),
                     "SELECT " WH_COLS_LIST " FROM webhooks_outbox WHERE 1 = 1%s%s%s"
                     " ORDER BY created_at DESC, id DESC LIMIT ?",
                     f->status ? " AND status = ?" : "", f->run_id ? " AND run_id = ?" : "",
                     f->before > 0 ? " AND created_at < ?" : "");
    if (w < 0 || (size_t)w >= sizeof(sql))
        return -EINVAL;
    if (f->status)
        args[n++] = ah_db_text(f->status);
    if (f->run_id)
        args[n++] = ah_db_text(f->run_id);
    if (f->before > 0)
        args[n++] = ah_db_int(f->before);
    args[n++] = ah_db_int(f->limit ? f->limit : LIST_DEFAULT);
    list_ctx_t l = {cb, ud};
    return ah_db_query(db, sql, args, n, list_row, &l);
}

int ah_store_webhook_count(ah_db_t *db, const char *status, int64_t *out)
{
    if (!ah_webhook_status_valid(status) || !out)
        return -EINVAL;
    ah_db_val_t arg = ah_db_text(status);
    return ah_db_query_int(db, "SELECT COUNT(*) FROM webhooks_outbox WHERE status = ?", &arg, 1,
                           out);
}

int ah_store_webhook_prune(ah_db_t *db, int64_t before, int limit)
{
    if (limit < 1)
        return -EINVAL;
    /* DELETE ... LIMIT is not portable; a bounded sub-select is. */
    ah_db_val_t a[2] = {ah_db_int(before), ah_db_int(limit)};
    int rc = ah_db_query(db,
                         "DELETE FROM webhooks_outbox WHERE id IN (SELECT id FROM webhooks_outbox "
                         "WHERE status = 'delivered' AND next_attempt_at < ? "
                         "ORDER BY next_attempt_at LIMIT ?)",
                         a, 2, NULL, NULL);
    if (rc < 0)
        return rc;
    return (int)ah_db_changes(db);
}
