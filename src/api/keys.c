/*
 * keys.c - POST/GET/DELETE /v1/keys (admin): API keys.
 *
 * Every handler validates on the loop, submits one store job, and answers
 * from the job's completion on the same loop. A created or revoked key is
 * applied to the keyring before the answer, so this process honours the
 * change for the very next request; other replicas within
 * auth.key_cache_refresh_s.
 */
#include "api/api.h"

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

/* One store job. The store hands the same pointer to the work function (which
 * expects the auth module's argument struct) and to the completion here, so
 * the argument union must come first. */
typedef struct key_job {
    union {
        ah_keys_create_arg_t create;
        ah_keys_revoke_arg_t revoke;
        ah_keys_list_arg_t list;
    } u;
    ah_http_req_t *req;
    ah_app_t *app;
    char id[48];
} key_job_t;
_Static_assert(offsetof(key_job_t, u) == 0, "the work functions receive the job pointer");

static json_t *key_json(const ah_key_rec_t *k)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "id", k->id, "object", "api_key",
                          "name", k->name, "prefix", k->prefix, "role", k->role, "tenant",
                          k->tenant, "created_at", (json_int_t)k->created_at);
    if (!o)
        return NULL;
    json_object_set_new(o, "expires_at", k->expires_at ? json_integer(k->expires_at) : json_null());
    json_object_set_new(o, "revoked_at", k->revoked_at ? json_integer(k->revoked_at) : json_null());
    json_object_set_new(o, "created_by", json_string(k->created_by));
    return o;
}

static void reply_json_obj(ah_http_req_t *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!s)
        ah_http_reply_error(req, 500, NULL, "internal_error", NULL, "could not encode the reply");
    else
        ah_http_reply_json(req, status, s, strlen(s));
    free(s);
    json_decref(o);
}

/* ---- create ---- */

static void create_done(int rc, void *arg)
{
    key_job_t *j = arg;
    ah_keys_create_arg_t *a = &j->u.create;
    if (rc == 0) {
        ah_keyring_apply(j->app->keyring, &a->rec);
        json_t *o = key_json(&a->rec);
        if (o)
            json_object_set_new(o, "key", json_string(a->key));
        reply_json_obj(j->req, 201, o);
    } else {
        ah_api_store_error(j->req, rc);
    }
    explicit_bzero(a->key, sizeof(a->key));
    free(j);
}

void ah_api_keys_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    size_t blen;
    const char *body = ah_http_req_body(req, &blen);
    json_error_t jerr;
    json_t *in = json_loadb(body, blen, 0, &jerr);
    if (!in || !json_is_object(in)) {
        json_decref(in);
        ah_api_invalid(req, 400, NULL, "request body must be a JSON object: %s",
                       in ? "got another JSON type" : jerr.text);
        return;
    }
    const char *name = NULL, *role = NULL, *tenant = NULL;
    json_t *v;
    int bad = 0;
    const char *bad_field = NULL;
    if ((v = json_object_get(in, "name")) && !(name = json_string_value(v)))
        bad_field = "name";
    if ((v = json_object_get(in, "role")) && !(role = json_string_value(v)))
        bad_field = "role";
    if ((v = json_object_get(in, "tenant")) && !(tenant = json_string_value(v)))
        bad_field = "tenant";
    int64_t expires_at = 0;
    if ((v = json_object_get(in, "expires_in_days"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 36500)
            bad_field = "expires_in_days";
        else
            expires_at = ah_wall_ms() + json_integer_value(v) * 86400000LL;
    }
    const char *key;
    json_object_foreach(in, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "role") && strcmp(key, "tenant") &&
            strcmp(key, "expires_in_days")) {
            bad = 1;
            bad_field = key;
        }
    }
    if (bad_field) {
        ah_api_invalid(req, 422, bad_field,
                       bad ? "unknown field \"%s\" (known: name, role, tenant, expires_in_days)"
                           : "field \"%s\" has the wrong type",
                       bad_field);
        json_decref(in);
        return;
    }
    if (!name) {
        ah_api_invalid(req, 422, "name", "field \"name\" is required");
        json_decref(in);
        return;
    }
    key_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        json_decref(in);
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    j->app = app;
    int rc = ah_keys_create_prepare(&j->u.create, name, role, tenant, expires_at, who->key_id,
                                    ah_http_req_id(req));
    json_decref(in);
    if (rc == -EINVAL) {
        /* The auth module's messages start with the field name ("role: unknown role ..."). */
        const char *msg = j->u.create.error ? j->u.create.error : "invalid key";
        const char *param = NULL;
        static const char *const fields[] = {"name", "role", "tenant", "expires_at"};
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
            size_t fl = strlen(fields[f]);
            if (strncmp(msg, fields[f], fl) == 0 && msg[fl] == ':')
                param = strcmp(fields[f], "expires_at") == 0 ? "expires_in_days" : fields[f];
        }
        ah_api_invalid(req, 422, param, "%s", msg);
        free(j);
        return;
    }
    if (rc == 0)
        rc = ah_store_submit(app->store, AH_STORE_WRITE, ah_keys_create_work, create_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        explicit_bzero(j->u.create.key, sizeof(j->u.create.key));
        free(j);
        ah_api_store_error(req, rc);
    }
}

/* ---- list ---- */

static void list_done(int rc, void *arg)
{
    key_job_t *j = arg;
    if (rc == 0) {
        json_t *data = json_array();
        for (size_t i = 0; data && i < j->u.list.n; i++)
            json_array_append_new(data, key_json(&j->u.list.recs[i]));
        reply_json_obj(j->req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
    } else {
        ah_api_store_error(j->req, rc);
    }
    ah_keys_list_free(&j->u.list);
    free(j);
}

void ah_api_keys_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    key_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    j->app = app;
    const char *rev = ah_http_req_query(req, "include_revoked");
    j->u.list.include_revoked = rev && (strcmp(rev, "true") == 0 || strcmp(rev, "1") == 0);
    int rc = ah_store_submit(app->store, AH_STORE_READ, ah_keys_list_work, list_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}

/* ---- get ---- */

static int get_work(ah_db_t *db, void *arg)
{
    key_job_t *j = arg;
    return ah_store_key_get(db, j->id, &j->u.revoke.rec);
}

static void get_done(int rc, void *arg)
{
    key_job_t *j = arg;
    if (rc == 0)
        reply_json_obj(j->req, 200, key_json(&j->u.revoke.rec));
    else if (rc == -ENOENT)
        ah_http_reply_error(j->req, 404, NULL, "key_not_found", "id", "no API key with this id");
    else
        ah_api_store_error(j->req, rc);
    free(j);
}

void ah_api_keys_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    const char *id = ah_http_req_param(req, "id");
    key_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    if (!id || strlen(id) >= sizeof(j->id)) {
        free(j);
        ah_http_reply_error(req, 404, NULL, "key_not_found", "id", "no API key with this id");
        return;
    }
    j->req = req;
    j->app = app;
    memcpy(j->id, id, strlen(id) + 1);
    int rc =
        ah_store_submit(app->store, AH_STORE_READ, get_work, get_done, ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}

/* ---- revoke ---- */

static void revoke_done(int rc, void *arg)
{
    key_job_t *j = arg;
    if (rc == 0 || rc == -EALREADY) {
        if (rc == 0)
            ah_keyring_apply(j->app->keyring, &j->u.revoke.rec);
        json_t *o = key_json(&j->u.revoke.rec);
        if (o)
            json_object_set_new(o, "revoked", json_true());
        reply_json_obj(j->req, 200, o);
    } else if (rc == -ENOENT) {
        ah_http_reply_error(j->req, 404, NULL, "key_not_found", "id", "no API key with this id");
    } else {
        ah_api_store_error(j->req, rc);
    }
    free(j);
}

void ah_api_keys_revoke(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    const char *id = ah_http_req_param(req, "id");
    key_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    j->app = app;
    if (ah_keys_revoke_prepare(&j->u.revoke, id ? id : "", who->key_id, ah_http_req_id(req))) {
        free(j);
        ah_http_reply_error(req, 404, NULL, "key_not_found", "id", "no API key with this id");
        return;
    }
    int rc = ah_store_submit(app->store, AH_STORE_WRITE, ah_keys_revoke_work, revoke_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}
