/* keys.c - API-key rows; see keys.h. Portable SQL only. */
#include "store/keys.h"

#include <errno.h>
#include <string.h>

#define KEY_COLS                                                                                   \
    "id, name, hash, prefix, role, tenant, created_at, updated_at, revoked_at, expires_at, "       \
    "created_by"

static bool terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

#define FIELD_OK(k, f) terminated((k)->f, sizeof((k)->f))

int ah_store_key_insert(ah_db_t *db, const ah_key_rec_t *k)
{
    if (!FIELD_OK(k, id) || !FIELD_OK(k, name) || !FIELD_OK(k, hash) || !FIELD_OK(k, prefix) ||
        !FIELD_OK(k, role) || !FIELD_OK(k, tenant) || !FIELD_OK(k, created_by))
        return -EINVAL;
    if (!k->id[0] || !k->name[0] || !k->hash[0] || !k->prefix[0] || !k->role[0])
        return -EINVAL;
    ah_db_val_t args[11] = {
        ah_db_text(k->id),
        ah_db_text(k->name),
        ah_db_text(k->hash),
        ah_db_text(k->prefix),
        ah_db_text(k->role),
        ah_db_text(k->tenant[0] ? k->tenant : "default"),
        ah_db_int(k->created_at),
        ah_db_int(k->updated_at),
        ah_db_int_or_null(k->revoked_at),
        ah_db_int_or_null(k->expires_at),
        ah_db_text_or_null(k->created_by),
    };
    return ah_db_query(db,
                       "INSERT INTO keys (" KEY_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       args, 11, NULL, NULL);
}

int ah_store_key_revoke(ah_db_t *db, const char *id, int64_t now_ms)
{
    if (!id || !*id)
        return -EINVAL;
    ah_db_val_t args[3] = {ah_db_int(now_ms), ah_db_int(now_ms), ah_db_text(id)};
    int rc = ah_db_query(db,
                         "UPDATE keys SET revoked_at = ?, updated_at = ? "
                         "WHERE id = ? AND revoked_at IS NULL",
                         args, 3, NULL, NULL);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) > 0 ? 0 : -ENOENT;
}

/* Fills a record from a KEY_COLS row. 0 or -E2BIG. */
static int from_row(const ah_db_val_t *c, int ncols, ah_key_rec_t *k)
{
    if (ncols != 11)
        return -EIO;
    memset(k, 0, sizeof(*k));
    int rc = 0;
    rc |= ah_db_val_copy(&c[0], k->id, sizeof(k->id));
    rc |= ah_db_val_copy(&c[1], k->name, sizeof(k->name));
    rc |= ah_db_val_copy(&c[2], k->hash, sizeof(k->hash));
    rc |= ah_db_val_copy(&c[3], k->prefix, sizeof(k->prefix));
    rc |= ah_db_val_copy(&c[4], k->role, sizeof(k->role));
    rc |= ah_db_val_copy(&c[5], k->tenant, sizeof(k->tenant));
    k->created_at = ah_db_val_int(&c[6]);
    k->updated_at = ah_db_val_int(&c[7]);
    k->revoked_at = ah_db_val_int(&c[8]);
    k->expires_at = ah_db_val_int(&c[9]);
    rc |= ah_db_val_copy(&c[10], k->created_by, sizeof(k->created_by));
    return rc ? -E2BIG : 0;
}

typedef struct {
    ah_key_rec_t *out;
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

static int get_by(ah_db_t *db, const char *sql, const char *value, ah_key_rec_t *out)
{
    if (!value || !*value)
        return -EINVAL;
    get_ctx_t g = {out, 0, false};
    ah_db_val_t arg = ah_db_text(value);
    int rc = ah_db_query(db, sql, &arg, 1, get_row, &g);
    if (rc < 0)
        return rc;
    if (!g.found)
        return -ENOENT;
    return g.rc;
}

int ah_store_key_get(ah_db_t *db, const char *id, ah_key_rec_t *out)
{
    return get_by(db, "SELECT " KEY_COLS " FROM keys WHERE id = ?", id, out);
}

int ah_store_key_get_by_hash(ah_db_t *db, const char *hash, ah_key_rec_t *out)
{
    return get_by(db, "SELECT " KEY_COLS " FROM keys WHERE hash = ?", hash, out);
}

typedef struct {
    ah_key_fn cb;
    void *ud;
} list_ctx_t;

static int list_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    list_ctx_t *l = ud;
    ah_key_rec_t k;
    int rc = from_row(cols, ncols, &k);
    if (rc < 0)
        return rc;
    return l->cb(l->ud, &k);
}

int ah_store_key_list(ah_db_t *db, int64_t updated_since_ms, ah_key_fn cb, void *ud)
{
    if (!cb)
        return -EINVAL;
    list_ctx_t l = {cb, ud};
    ah_db_val_t arg = ah_db_int(updated_since_ms);
    return ah_db_query(db,
                       "SELECT " KEY_COLS " FROM keys WHERE updated_at > ? ORDER BY updated_at, id",
                       &arg, 1, list_row, &l);
}

int ah_store_key_count(ah_db_t *db, int64_t *n)
{
    return ah_db_query_int(db, "SELECT COUNT(*) FROM keys", NULL, 0, n);
}
