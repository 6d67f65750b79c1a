/* agents.c - agent registry rows; see agents.h. Portable SQL only. */
#include "store/agents.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_COLS                                                                                 \
    "a.name, a.current_version, a.latest_version, a.revision, a.archived_at, a.created_at, "       \
    "a.updated_at"
#define N_AGENT_COLS 7

static bool name_ok(const char *name)
{
    return name && *name && strlen(name) <= AH_STORE_AGENT_NAME_MAX;
}

static int row_from(const ah_db_val_t *c, int ncols, ah_agent_row_t *r)
{
    if (ncols < N_AGENT_COLS)
        return -EIO;
    memset(r, 0, sizeof(*r));
    if (ah_db_val_copy(&c[0], r->name, sizeof(r->name)) != 0)
        return -E2BIG;
    r->current_version = ah_db_val_int(&c[1]);
    r->latest_version = ah_db_val_int(&c[2]);
    r->revision = ah_db_val_int(&c[3]);
    r->archived_at = ah_db_val_int(&c[4]);
    r->created_at = ah_db_val_int(&c[5]);
    r->updated_at = ah_db_val_int(&c[6]);
    return 0;
}

typedef struct {
    ah_agent_row_t *out;
    int rc;
    bool found;
} get_ctx_t;

static int get_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    get_ctx_t *g = ud;
    g->rc = row_from(cols, ncols, g->out);
    g->found = true;
    return 1;
}

int ah_store_agent_get(ah_db_t *db, const char *name, ah_agent_row_t *out)
{
    if (!name_ok(name))
        return -EINVAL;
    get_ctx_t g = {out, 0, false};
    ah_db_val_t arg = ah_db_text(name);
    int rc = ah_db_query(db, "SELECT " AGENT_COLS " FROM agents a WHERE a.name = ?", &arg, 1,
                         get_row, &g);
    if (rc < 0)
        return rc;
    return g.found ? g.rc : -ENOENT;
}

int ah_store_agent_version_exists(ah_db_t *db, const char *name, int64_t version)
{
    if (!name_ok(name))
        return -EINVAL;
    ah_db_val_t args[2] = {ah_db_text(name), ah_db_int(version)};
    int64_t n = 0;
    int rc = ah_db_query_int(
        db, "SELECT COUNT(*) FROM agent_versions WHERE name = ? AND version = ?", args, 2, &n);
    if (rc < 0)
        return rc;
    return n > 0;
}

int ah_store_agent_put(ah_db_t *db, const char *name, const char *spec_json, size_t spec_len,
                       const char *spec_hash, int64_t canary_version, const char *created_by,
                       int64_t now_ms, ah_agent_put_result_t *out)
{
    if (!name_ok(name) || !spec_json || !spec_len || !spec_hash || strlen(spec_hash) != 64 ||
        canary_version < 0)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    ah_agent_row_t cur;
    int rc = ah_store_agent_get(db, name, &cur);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    bool exists = rc == 0;
    if (canary_version) {
        rc = ah_store_agent_version_exists(db, name, canary_version);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return -ENXIO;
    }
    if (exists) {
        out->previous_version = cur.current_version;
        ah_agent_version_rec_t v;
        rc = ah_store_agent_version_get(db, name, cur.current_version, &v, NULL);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        if (rc == 0 && !cur.archived_at && strcmp(v.spec_hash, spec_hash) == 0) {
            out->row = cur;
            out->version = cur.current_version;
            return 0;
        }
    }
    int64_t version = exists ? cur.latest_version + 1 : 1;
    ah_db_val_t vargs[6] = {
        ah_db_text(name),      ah_db_int(version), ah_db_textn(spec_json, spec_len),
        ah_db_text(spec_hash), ah_db_int(now_ms),  ah_db_text_or_null(created_by),
    };
    rc = ah_db_query(db,
                     "INSERT INTO agent_versions (name, version, spec_json, spec_hash, created_at, "
                     "created_by) VALUES (?, ?, ?, ?, ?, ?)",
                     vargs, 6, NULL, NULL);
    if (rc == -EEXIST)
        return -EAGAIN; /* another writer took this version number */
    if (rc < 0)
        return rc;
    if (exists) {
        /* Only if nobody changed the row since we read it (PostgreSQL: concurrent writers). */
        ah_db_val_t args[5] = {ah_db_int(version), ah_db_int(version), ah_db_int(now_ms),
                               ah_db_text(name), ah_db_int(cur.revision)};
        rc = ah_db_query(db,
                         "UPDATE agents SET current_version = ?, latest_version = ?, "
                         "revision = revision + 1, archived_at = NULL, updated_at = ? "
                         "WHERE name = ? AND revision = ?",
                         args, 5, NULL, NULL);
        if (rc == 0 && ah_db_changes(db) != 1)
            rc = -EAGAIN;
    } else {
        ah_db_val_t args[3] = {ah_db_text(name), ah_db_int(now_ms), ah_db_int(now_ms)};
        rc = ah_db_query(db,
                         "INSERT INTO agents (name, current_version, latest_version, revision, "
                         "archived_at, created_at, updated_at) VALUES (?, 1, 1, 1, NULL, ?, ?)",
                         args, 3, NULL, NULL);
        if (rc == -EEXIST)
            rc = -EAGAIN; /* created concurrently */
    }
    if (rc < 0)
        return rc;
    rc = ah_store_agent_get(db, name, &out->row);
    if (rc < 0)
        return rc;
    out->version = out->row.current_version;
    out->changed = true;
    out->unarchived = exists && cur.archived_at != 0;
    return 0;
}

typedef struct {
    ah_agent_version_rec_t *rec;
    char **spec;
    int rc;
    bool found;
} vget_ctx_t;

static int vrec_from(const ah_db_val_t *c, int ncols, ah_agent_version_rec_t *v)
{
    if (ncols < 4)
        return -EIO;
    memset(v, 0, sizeof(*v));
    v->version = ah_db_val_int(&c[0]);
    v->created_at = ah_db_val_int(&c[2]);
    if (ah_db_val_copy(&c[1], v->spec_hash, sizeof(v->spec_hash)) != 0 ||
        ah_db_val_copy(&c[3], v->created_by, sizeof(v->created_by)) != 0)
        return -E2BIG;
    return 0;
}

static int vget_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    vget_ctx_t *g = ud;
    g->found = true;
    ah_agent_version_rec_t tmp;
    g->rc = vrec_from(cols, ncols, g->rec ? g->rec : &tmp);
    if (g->rc == 0 && g->spec) {
        if (ncols < 5 || cols[4].type == AH_DB_NULL) {
            g->rc = -EIO;
            return 1;
        }
        char *s = malloc(cols[4].n + 1);
        if (!s) {
            g->rc = -ENOMEM;
            return 1;
        }
        memcpy(s, cols[4].s, cols[4].n);
        s[cols[4].n] = '\0';
        *g->spec = s;
    }
    return 1;
}

int ah_store_agent_version_get(ah_db_t *db, const char *name, int64_t version,
                               ah_agent_version_rec_t *rec, char **spec_json)
{
    if (spec_json)
        *spec_json = NULL;
    if (!name_ok(name) || version < 0)
        return -EINVAL;
    vget_ctx_t g = {rec, spec_json, 0, false};
    ah_db_val_t args[2] = {ah_db_text(name), ah_db_int(version)};
    int rc;
    /* The spec text is only read when asked for: it can be large. */
    if (version == 0)
        rc = ah_db_query(db,
                         spec_json ? "SELECT v.version, v.spec_hash, v.created_at, v.created_by, "
                                     "v.spec_json FROM agents a JOIN agent_versions v ON v.name = "
                                     "a.name AND v.version = a.current_version WHERE a.name = ?"
                                   : "SELECT v.version, v.spec_hash, v.created_at, v.created_by "
                                     "FROM agents a JOIN agent_versions v ON v.name = a.name AND "
                                     "v.version = a.current_version WHERE a.name = ?",
                         args, 1, vget_row, &g);
    else
        rc = ah_db_query(db,
                         spec_json ? "SELECT version, spec_hash, created_at, created_by, spec_json "
                                     "FROM agent_versions WHERE name = ? AND version = ?"
                                   : "SELECT version, spec_hash, created_at, created_by "
                                     "FROM agent_versions WHERE name = ? AND version = ?",
                         args, 2, vget_row, &g);
    if (rc < 0)
        return rc;
    if (!g.found)
        return -ENOENT;
    if (g.rc < 0 && spec_json) {
        free(*spec_json);
        *spec_json = NULL;
    }
    return g.rc;
}

typedef struct {
    ah_agent_list_fn cb;
    void *ud;
} list_ctx_t;

static int list_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    list_ctx_t *l = ud;
    ah_agent_row_t r;
    int rc = row_from(cols, ncols, &r);
    if (rc < 0)
        return rc;
    if (ncols < N_AGENT_COLS + 1 || cols[N_AGENT_COLS].type == AH_DB_NULL)
        return -EIO;
    return l->cb(l->ud, &r, cols[N_AGENT_COLS].s, cols[N_AGENT_COLS].n);
}

int ah_store_agent_list(ah_db_t *db, int64_t updated_since_ms, ah_agent_list_fn cb, void *ud)
{
    if (!cb)
        return -EINVAL;
    list_ctx_t l = {cb, ud};
    ah_db_val_t arg = ah_db_int(updated_since_ms);
    return ah_db_query(db,
                       "SELECT " AGENT_COLS ", v.spec_json FROM agents a JOIN agent_versions v "
                       "ON v.name = a.name AND v.version = a.current_version "
                       "WHERE a.updated_at > ? ORDER BY a.name",
                       &arg, 1, list_row, &l);
}

typedef struct {
    ah_agent_version_fn cb;
    void *ud;
} vlist_ctx_t;

static int vlist_row(void *ud, const ah_db_val_t *cols, int ncols)
{
    vlist_ctx_t *l = ud;
    ah_agent_version_rec_t v;
    int rc = vrec_from(cols, ncols, &v);
    if (rc < 0)
        return rc;
    return l->cb(l->ud, &v);
}

int ah_store_agent_versions(ah_db_t *db, const char *name, ah_agent_version_fn cb, void *ud)
{
    if (!name_ok(name) || !cb)
        return -EINVAL;
    vlist_ctx_t l = {cb, ud};
    ah_db_val_t arg = ah_db_text(name);
    return ah_db_query(db,
                       "SELECT version, spec_hash, created_at, created_by FROM agent_versions "
                       "WHERE name = ? ORDER BY version",
                       &arg, 1, vlist_row, &l);
}

int ah_store_agent_rollback(ah_db_t *db, const char *name, int64_t version, int64_t now_ms,
                            int64_t *previous, ah_agent_row_t *out)
{
    if (!name_ok(name) || version < 1)
        return -EINVAL;
    ah_agent_row_t cur;
    int rc = ah_store_agent_get(db, name, &cur);
    if (rc < 0)
        return rc;
    if (previous)
        *previous = cur.current_version;
    if (out)
        *out = cur;
    if (cur.archived_at)
        return -EPERM;
    rc = ah_store_agent_version_exists(db, name, version);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return -ENXIO;
    if (version == cur.current_version)
        return 0;
    ah_db_val_t args[4] = {ah_db_int(version), ah_db_int(now_ms), ah_db_text(name),
                           ah_db_int(cur.revision)};
    rc = ah_db_query(db,
                     "UPDATE agents SET current_version = ?, revision = revision + 1, "
                     "updated_at = ? WHERE name = ? AND revision = ?",
                     args, 4, NULL, NULL);
    if (rc < 0)
        return rc;
    if (ah_db_changes(db) != 1)
        return -EAGAIN;
    return out ? ah_store_agent_get(db, name, out) : 0;
}

int ah_store_agent_archive(ah_db_t *db, const char *name, int64_t now_ms, ah_agent_row_t *out)
{
    if (!name_ok(name))
        return -EINVAL;
    ah_agent_row_t cur;
    int rc = ah_store_agent_get(db, name, &cur);
    if (rc < 0)
        return rc;
    if (out)
        *out = cur;
    if (cur.archived_at)
        return -EALREADY;
    ah_db_val_t args[3] = {ah_db_int(now_ms), ah_db_int(now_ms), ah_db_text(name)};
    rc = ah_db_query(db,
                     "UPDATE agents SET archived_at = ?, revision = revision + 1, updated_at = ? "
                     "WHERE name = ? AND archived_at IS NULL",
                     args, 3, NULL, NULL);
    if (rc < 0)
        return rc;
    if (ah_db_changes(db) != 1)
        return -EAGAIN;
    return out ? ah_store_agent_get(db, name, out) : 0;
}
