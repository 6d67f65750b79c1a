/*
 * runs_claim.c - claiming runs and renewing their leases; see runs_claim.h.
 *
 * The claim is the one statement of the store that differs per backend
 * (docs/internals/store.md: backend-specific SQL lives behind a function):
 *   - SQLite: UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING id. The
 *     writer holds the database lock for the whole transaction, so no other
 *     claimer can see the rows in between.
 *   - PostgreSQL: the candidates are locked in a CTE with FOR UPDATE SKIP
 *     LOCKED, then updated. Rows another replica is claiming right now are
 *     skipped instead of waited for, and a row whose lease another replica
 *     renewed meanwhile is re-checked against the condition (READ COMMITTED
 *     re-evaluates locked rows) and left out.
 * Both return the claimed ids; the records are then read in the same
 * transaction with ah_store_run_get, so callers get exactly what was written.
 */
#include "store/runs_claim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CLAIMABLE "status = 'queued' OR (status = 'running' AND lease_expires_at < ?)"

/* args: owner, lease until, now, now (condition), max */
static const char *const claim_sqlite =
    "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?, "
    "attempt = attempt + 1, updated_at = ? WHERE id IN (SELECT id FROM runs WHERE " CLAIMABLE
    " ORDER BY created_at, id LIMIT ?) RETURNING id";

/* args: now (condition), max, owner, lease until, now */
static const char *const claim_postgres =
    "WITH picked AS (SELECT id FROM runs WHERE " CLAIMABLE
    " ORDER BY created_at, id LIMIT ? FOR UPDATE SKIP LOCKED) "
    "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?, "
    "attempt = attempt + 1, updated_at = ? WHERE id IN (SELECT id FROM picked) RETURNING id";

/* Ids per heartbeat statement; a shorter tail repeats its last id (one statement text). */
#define BEAT_CHUNK 32
#define Q4         "?, ?, ?, ?"
#define Q32        Q4 ", " Q4 ", " Q4 ", " Q4 ", " Q4 ", " Q4 ", " Q4 ", " Q4
static const char *const beat_sql =
    "UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND status IN ('running', "
    "'requires_action') AND id IN (" Q32 ")";

typedef struct {
    char (*ids)[48];
    int n, cap;
    int rc;
} claimed_t;

static int claimed_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    claimed_t *c = ud;
    if (ncols != 1 || c->n >= c->cap) {
        c->rc = -EIO;
        return 0; /* keep stepping: SQLite finishes the UPDATE either way */
    }
    if (ah_db_val_copy(&cols[0], c->ids[c->n], sizeof(c->ids[0])) != 0) {
        c->rc = -E2BIG;
        return 0;
    }
    c->n++;
    return 0;
}

int ah_store_run_claim(ah_db_t *db, const char *owner, int64_t now_ms, int64_t lease_ms, int max,
                       int (*cb)(void *ud, const ah_run_rec_t *r), void *ud)
{
    if (!owner || !*owner || max < 1 || max > AH_RUN_CLAIM_MAX || lease_ms <= 0)
        return -EINVAL;
    claimed_t c = {calloc((size_t)max, sizeof(*c.ids)), 0, max, 0};
    if (!c.ids)
        return -ENOMEM;
    int rc;
    if (strcmp(ah_db_backend_name(db), "postgres") == 0) {
        ah_db_val_t a[5] = {ah_db_int(now_ms), ah_db_int(max), ah_db_text(owner),
                            ah_db_int(now_ms + lease_ms), ah_db_int(now_ms)};
        rc = ah_db_query(db, claim_postgres, a, 5, claimed_row, &c);
    } else {
        ah_db_val_t a[5] = {ah_db_text(owner), ah_db_int(now_ms + lease_ms), ah_db_int(now_ms),
                            ah_db_int(now_ms), ah_db_int(max)};
        rc = ah_db_query(db, claim_sqlite, a, 5, claimed_row, &c);
    }
    if (rc == 0)
        rc = c.rc;
    for (int i = 0; rc == 0 && i < c.n; i++) {
        ah_run_rec_t r;
        rc = ah_store_run_get(db, c.ids[i], &r);
        if (rc < 0)
            break;
        rc = cb ? cb(ud, &r) : 0;
        ah_run_rec_free(&r);
    }
    free(c.ids);
    return rc == 0 ? c.n : rc;
}

int ah_store_run_heartbeat(ah_db_t *db, const char *owner, const char *const *ids, size_t n,
                           int64_t lease_until)
{
    if (!owner || !*owner || (n > 0 && !ids))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!ids[i])
            return -EINVAL;
    }
    int64_t renewed = 0;
    for (size_t off = 0; off < n; off += BEAT_CHUNK) {
        size_t len = n - off < BEAT_CHUNK ? n - off : BEAT_CHUNK;
        ah_db_val_t a[2 + BEAT_CHUNK];
        a[0] = ah_db_int(lease_until);
        a[1] = ah_db_text(owner);
        for (size_t i = 0; i < BEAT_CHUNK; i++)
            a[2 + i] = ah_db_text(ids[off + (i < len ? i : len - 1)]);
        int rc = ah_db_query(db, beat_sql, a, 2 + BEAT_CHUNK, NULL, NULL);
        if (rc < 0)
            return rc;
        renewed += ah_db_changes(db);
    }
    return renewed > INT32_MAX ? INT32_MAX : (int)renewed;
}
