/* runs_idem.c - Idempotency-Key lookups and the canonical request hash; see runs_idem.h. */
#include "store/runs_idem.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"

bool ah_run_idem_key_valid(const char *key)
{
    if (!key || !*key)
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++, n++) {
        if (*p < 0x20 || *p > 0x7e || n >= AH_RUN_IDEM_KEY_MAX)
            return false;
    }
    return true;
}

/* A JSON field: parsed, or as a string when the text is not JSON. NULL for NULL. */
static json_t *json_field(const char *text)
{
    if (!text)
        return NULL;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

static void set_opt(json_t *o, const char *name, json_t *v)
{
    if (v)
        json_object_set_new(o, name, v);
}

void ah_run_request_hash(const char *agent, const char *input_json, const char *mode,
                         const char *session_id, const char *metadata_json, const char *limits_json,
                         const char *webhook_url, const char *multitask, char out[65])
{
    json_t *o = json_object();
    if (o) {
        set_opt(o, "agent", agent ? json_string(agent) : NULL);
        set_opt(o, "input", json_field(input_json));
        set_opt(o, "mode", json_string(mode ? mode : "sync"));
        set_opt(o, "session_id", session_id ? json_string(session_id) : NULL);
        set_opt(o, "metadata", json_field(metadata_json));
        set_opt(o, "limits", json_field(limits_json));
        set_opt(o, "webhook_url", webhook_url ? json_string(webhook_url) : NULL);
        set_opt(o, "multitask", json_string(multitask ? multitask : "reject"));
    }
    /* JSON_SORT_KEYS sorts nested objects too: the text is canonical at every depth. */
    char *s = o ? json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(o);
    if (!s) {
        /* Out of memory: a hash no request has, so a repeat is a mismatch (409), never a
         * false match that would hand back someone's different run. */
        memset(out, '!', 64);
        out[64] = '\0';
        return;
    }
    ah_sha256_hex(s, strlen(s), out);
    free(s);
}

typedef struct {
    char id[48];
    char hash[65];
    bool found;
} idem_ctx_t;

static int idem_row(void *ud, const ah_db_val_t *c, int ncols)
{
    idem_ctx_t *x = ud;
    if (ncols != 2 || ah_db_val_copy(&c[0], x->id, sizeof(x->id)) != 0)
        return -EIO;
    if (ah_db_val_copy(&c[1], x->hash, sizeof(x->hash)) != 0)
        x->hash[0] = '\0'; /* not ours: unknown */
    x->found = true;
    return 1;
}

int ah_store_run_find_idempotent(ah_db_t *db, const char *key_id, const char *idem_key,
                                 int64_t since_ms, ah_run_rec_t *out, char hash_out[65])
{
    memset(out, 0, sizeof(*out));
    hash_out[0] = '\0';
    if (!ah_run_idem_key_valid(idem_key))
        return -EINVAL;
    idem_ctx_t x;
    memset(&x, 0, sizeof(x));
    ah_db_val_t a[3] = {ah_db_text(key_id ? key_id : ""), ah_db_text(idem_key),
                        ah_db_int(since_ms)};
    int rc = ah_db_query(db,
                         "SELECT id, request_hash FROM runs WHERE key_id = ? AND "
                         "idempotency_key = ? AND created_at >= ?",
                         a, 3, idem_row, &x);
    if (rc < 0)
        return rc;
    if (!x.found)
        return -ENOENT;
    rc = ah_store_run_get(db, x.id, out);
    if (rc < 0)
        return rc;
    memcpy(hash_out, x.hash, sizeof(x.hash));
    return 0;
}

int ah_store_run_set_request_hash(ah_db_t *db, const char *run_id, const char *hash)
{
    if (!run_id || !*run_id || !hash || strlen(hash) != 64)
        return -EINVAL;
    ah_db_val_t a[2] = {ah_db_text(hash), ah_db_text(run_id)};
    int rc = ah_db_query(db, "UPDATE runs SET request_hash = ? WHERE id = ?", a, 2, NULL, NULL);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) > 0 ? 0 : -ENOENT;
}

int ah_store_run_idem_expire(ah_db_t *db, const char *key_id, const char *idem_key,
                             int64_t before_ms)
{
    if (!ah_run_idem_key_valid(idem_key))
        return -EINVAL;
    ah_db_val_t a[3] = {ah_db_text(key_id ? key_id : ""), ah_db_text(idem_key),
                        ah_db_int(before_ms)};
    int rc = ah_db_query(db,
                         "UPDATE runs SET idempotency_key = NULL WHERE key_id = ? AND "
                         "idempotency_key = ? AND created_at < ?",
                         a, 3, NULL, NULL);
    if (rc < 0)
        return rc;
    return (int)ah_db_changes(db);
}
