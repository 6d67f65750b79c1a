/* audit.c - audit-log rows; see audit.h. */
#include "store/audit.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/clock.h"
#include "core/ids.h"

/*
 * Ids sort like the rows were written: "aud_" + 12 hex digits of ts + a
 * 6-hex-digit per-process sequence + random base62, so ORDER BY ts, id keeps
 * this process's rows of one millisecond in insertion order.
 */
static int audit_id(char *out, size_t outsz, int64_t ts)
{
    static atomic_uint seq;
    unsigned n = atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed) & 0xffffffu;
    int len = snprintf(out, outsz, "aud_%012llx%06x", (unsigned long long)ts, n);
    if (len < 0 || (size_t)len >= outsz)
        return -ENOSPC;
    unsigned char rnd[8];
    int rc = ah_random_bytes(rnd, sizeof(rnd));
    if (rc < 0)
        return rc;
    rc = ah_base62_encode(rnd, sizeof(rnd), out + len, outsz - (size_t)len);
    return rc < 0 ? rc : 0;
}

int ah_store_audit_insert(ah_db_t *db, const char *actor, const char *action, const char *target,
                          const char *detail_json, const char *request_id)
{
    if (!action || !*action)
        return -EINVAL;
    int64_t ts = ah_wall_ms();
    char id[48];
    int rc = audit_id(id, sizeof(id), ts);
    if (rc < 0)
        return rc;
    ah_db_val_t args[7] = {
        ah_db_text(id),     ah_db_int(ts),           ah_db_text(actor),      ah_db_text(action),
        ah_db_text(target), ah_db_text(detail_json), ah_db_text(request_id),
    };
    return ah_db_query(db,
                       "INSERT INTO audit_log (id, ts, actor, action, target, detail, request_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       args, 7, NULL, NULL);
}

typedef struct {
    ah_audit_fn cb;
    void *ud;
} list_ctx_t;

/* TEXT columns from a row are NUL-terminated (db.h); NULL stays NULL. */
static const char *text_or_null(const ah_db_val_t *v)
{
    return v->type == AH_DB_NULL ? NULL : v->s;
}

static int list_row(void *ud, const ah_db_val_t *c, int ncols)
{
    list_ctx_t *l = ud;
    if (ncols != 7)
        return -EIO;
    ah_audit_rec_t r = {
        .id = text_or_null(&c[0]),
        .ts = ah_db_val_int(&c[1]),
        .actor = text_or_null(&c[2]),
        .action = text_or_null(&c[3]),
        .target = text_or_null(&c[4]),
        .detail = text_or_null(&c[5]),
        .request_id = text_or_null(&c[6]),
    };
    return l->cb(l->ud, &r);
}

int ah_store_audit_list(ah_db_t *db, int64_t since_ms, int limit, ah_audit_fn cb, void *ud)
{
    if (!cb || limit < 1 || limit > AH_AUDIT_LIST_MAX)
        return -EINVAL;
    list_ctx_t l = {cb, ud};
    ah_db_val_t args[2] = {ah_db_int(since_ms), ah_db_int(limit)};
    return ah_db_query(db,
                       "SELECT id, ts, actor, action, target, detail, request_id FROM audit_log "
                       "WHERE ts >= ? ORDER BY ts, id LIMIT ?",
                       args, 2, list_row, &l);
}
