/*
 * agents.c - the agent registry API (DESIGN.md section 4):
 *   POST   /v1/agents                  apply a spec (JSON or YAML body): a new version, or
 *                                      "unchanged" when it equals the current one
 *   GET    /v1/agents                  list (?include_archived=true, ?label=KEY=VALUE[,...])
 *   GET    /v1/agents/{name}           current spec and version (?version=N for another;
 *                                      "Accept: application/yaml" for YAML)
 *   GET    /v1/agents/{name}/versions  history
 *   POST   /v1/agents/{name}/rollback  {"version": N} makes N current
 *   DELETE /v1/agents/{name}           archive (versions and runs stay)
 *
 * Parsing and spec validation run on the loop (CPU only, bounded by the
 * 1 MiB document cap); checks that need the store (handoff agents, canary
 * versions) run inside the write job, so what is validated is what is
 * written. Changes are merged into app->registry before the answer, so the
 * next run on this process uses them; other replicas pick them up within
 * about a second (agents/registry.h). Every change writes an audit row.
 */
#include "api/api.h"

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agents/registry.h"
#include "agents/spec.h"
#include "core/clock.h"
#include "store/agents.h"
#include "store/audit.h"

#define SOURCE_NAME       "<request>"
#define MAX_LABEL_FILTERS 16

/* One store job. ah_registry_put_work receives the job pointer, so put comes first. */
typedef struct agent_job {
    ah_registry_put_t put;
    ah_http_req_t *req;
    ah_app_t *app;
    ah_agent_spec_list_t specs;
    char name[AH_STORE_AGENT_NAME_MAX + 1];
    char actor[48];
    char request_id[80];
    int64_t version, previous;
    bool include_archived, yaml, already;
    ah_agent_kv_t filters[MAX_LABEL_FILTERS];
    size_t n_filters;
    char *filter_text;
    ah_agent_row_t row;
    ah_agent_version_rec_t vrec;
    char *spec_json;
    json_t *out;
    ah_registry_update_t *update;
} agent_job_t;
_Static_assert(offsetof(agent_job_t, put) == 0, "ah_registry_put_work receives the job pointer");

static agent_job_t *job_new(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    agent_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return NULL;
    }
    j->req = req;
    j->app = app;
    if (who)
        snprintf(j->actor, sizeof(j->actor), "%s", who->key_id);
    snprintf(j->request_id, sizeof(j->request_id), "%s", ah_http_req_id(req));
    return j;
}

static void job_free(agent_job_t *j)
{
    ah_registry_put_clear(&j->put);
    ah_agent_spec_list_free(&j->specs);
    ah_registry_update_free(j->update);
    free(j->spec_json);
    free(j->filter_text);
    json_decref(j->out);
    free(j);
}

static void reply_json_obj(ah_http_req_t *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!s)
        ah_http_reply_error(req, 500, NULL, "internal_error", NULL, "could not encode the reply");
    else
        ah_http_reply_json(req, status, s, strlen(s));
    free(s);
}

static void agent_store_error(ah_http_req_t *req, int rc)
{
    if (rc == -EAGAIN) {
        ah_http_reply_error(req, 409, NULL, "conflict", NULL,
                            "the agent was changed by another request at the same time; retry");
        return;
    }
    ah_api_store_error(req, rc);
}

static void submit(agent_job_t *j, unsigned flags, ah_store_work_fn work, ah_store_done_fn done)
{
    int rc = ah_store_submit(j->app->store, flags, work, done, ah_http_req_loop(j->req), j);
    if (rc) {
        ah_http_req_t *req = j->req;
        job_free(j);
        agent_store_error(req, rc);
    }
}

static void not_found(ah_http_req_t *req, const char *name)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "no agent named \"%.64s\" (see GET /v1/agents)", name ? name : "");
    ah_http_reply_error(req, 404, NULL, "agent_not_found", "name", msg);
}

/* The {name} path parameter when it is a valid agent name, else replies 404 and returns NULL. */
static const char *path_name(ah_http_req_t *req)
{
    const char *name = ah_http_req_param(req, "name");
    if (!name || !ah_agent_name_ok(name)) {
        not_found(req, name);
        return NULL;
    }
    return name;
}

/* A job on the agent the path names (404 for a bad name, 503 out of memory: then NULL). */
static agent_job_t *named_job(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    const char *name = path_name(req);
    agent_job_t *j = name ? job_new(req, app, who) : NULL;
    if (j)
        memcpy(j->name, name, strlen(name) + 1);
    return j;
}

static json_t *ms_or_null(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

/*
 * 400/413/422 with every problem: error.message is the first one
 * ("PATH: MESSAGE (line N)"), error.param its path, and error.errors the
 * whole list [{param, message, line}].
 */
static void reply_spec_errors(ah_http_req_t *req, int status, const ah_agent_errors_t *errs)
{
    json_t *list = json_array();
    ah_buf_t first = AH_BUF_INIT;
    const char *param = NULL;
    for (size_t i = 0; errs && i < errs->n; i++) {
        const ah_agent_error_t *e = &errs->v[i];
        json_t *o =
            json_pack("{s:s?, s:s}", "param", e->path[0] ? e->path : NULL, "message", e->message);
        if (o) {
            json_object_set_new(o, "line", e->line > 0 ? json_integer(e->line) : json_null());
            json_array_append_new(list, o);
        }
        if (i == 0) {
            param = e->path[0] ? e->path : NULL;
            if (param)
                ah_buf_printf(&first, "%s: ", param);
            ah_buf_puts(&first, e->message);
            if (e->line > 0)
                ah_buf_printf(&first, " (line %d)", e->line);
        }
    }
    size_t total = (errs ? errs->n + errs->more : 0);
    if (total > 1)
        ah_buf_printf(&first, " (and %zu more problem%s: see error.errors)", total - 1,
                      total > 2 ? "s" : "");
    if (!first.data)
        ah_buf_puts(&first, "invalid agent spec");
    json_t *err = json_pack("{s:s, s:s, s:s, s:s?, s:o}", "message", first.data, "type",
                            "invalid_request_error", "code",
                            status == 422 ? "invalid_value" : "invalid_request", "param", param,
                            "errors", list);
    json_t *o = err ? json_pack("{s:o}", "error", err) : NULL;
    reply_json_obj(req, status, o);
    json_decref(o);
    ah_buf_free(&first);
}

/* ---- POST /v1/agents ---- */

static ah_agent_format_t body_format(ah_http_req_t *req)
{
    size_t n;
    const char *ct = ah_http_req_header(req, "content-type", &n);
    if (!ct)
        return AH_AGENT_FMT_AUTO;
    size_t l = 0;
    while (l < n && ct[l] != ';' && ct[l] != ' ')
        l++;
    static const char *const yaml[] = {"application/yaml", "application/x-yaml", "text/yaml",
                                       "text/x-yaml"};
    for (size_t i = 0; i < sizeof(yaml) / sizeof(yaml[0]); i++)
        if (l == strlen(yaml[i]) && strncasecmp(ct, yaml[i], l) == 0)
            return AH_AGENT_FMT_YAML;
    if ((l == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
        (l > 5 && strncasecmp(ct + l - 5, "+json", 5) == 0))
        return AH_AGENT_FMT_JSON;
    return AH_AGENT_FMT_AUTO; /* text/plain, form-encoded (curl -d) ...: sniff */
}

static void create_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    ah_registry_put_t *p = &j->put;
    if (rc == 0) {
        const ah_agent_spec_t *s = j->specs.v[0];
        const ah_agent_put_result_t *r = &p->results[0];
        if (j->app->registry && p->updates && p->updates[0]) {
            ah_registry_update_apply(j->app->registry, p->updates[0]);
            p->updates[0] = NULL;
        }
        json_t *o = json_pack("{s:s, s:s, s:I, s:b, s:b, s:s}", "object", "agent.version", "name",
                              s->name, "version", (json_int_t)r->version, "created", r->changed,
                              "unchanged", !r->changed, "spec_hash", s->hash);
        if (o) {
            json_object_set_new(o, "previous_version",
                                r->previous_version ? json_integer(r->previous_version)
                                                    : json_null());
            json_object_set_new(o, "restored", json_boolean(r->unarchived));
        }
        reply_json_obj(j->req, r->changed ? 201 : 200, o);
        json_decref(o);
    } else if (rc == -EINVAL && p->errs.n) {
        reply_spec_errors(j->req, 422, &p->errs);
    } else {
        agent_store_error(j->req, rc);
    }
    job_free(j);
}

void ah_api_agents_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    size_t blen;
    const char *body = ah_http_req_body(req, &blen);
    agent_job_t *j = job_new(req, app, who);
    if (!j)
        return;
    ah_agent_errors_t errs = AH_AGENT_ERRORS_INIT;
    int rc = ah_agent_spec_parse(SOURCE_NAME, body ? body : "", blen, body_format(req), &j->specs,
                                 &errs);
    if (rc == 0 && j->specs.n != 1) {
        ah_agent_errors_add(&errs, SOURCE_NAME, 0, -1, "",
                            j->specs.n == 0
                                ? "the body holds no agent document (apiVersion: agenthub/v1, "
                                  "kind: Agent, metadata, spec)"
                                : "one agent per request (the body holds %zu); apply several "
                                  "with `agenthub agents apply -f DIR`",
                            j->specs.n);
        rc = -EINVAL;
    }
    if (rc) {
        int status = 422;
        if (rc == -EBADMSG)
            status = 400;
        else if (rc == -E2BIG)
            status = blen > AH_AGENT_DOC_MAX_BYTES ? 413 : 400;
        else if (rc == -ENOMEM)
            status = 503;
        if (status == 503)
            ah_api_out_of_memory(req);
        else
            reply_spec_errors(req, status, &errs);
        ah_agent_errors_free(&errs);
        job_free(j);
        return;
    }
    ah_agent_errors_free(&errs);
    j->put.specs = j->specs.v;
    j->put.n = j->specs.n;
    j->put.cfg = app->cfg;
    j->put.actor = j->actor;
    j->put.request_id = j->request_id;
    j->put.want_updates = true;
    submit(j, AH_STORE_WRITE, ah_registry_put_work, create_done);
}

/* ---- GET /v1/agents ---- */

static bool labels_match(const agent_job_t *j, json_t *labels)
{
    for (size_t i = 0; i < j->n_filters; i++) {
        const char *v = json_string_value(json_object_get(labels, j->filters[i].key));
        if (!v || strcmp(v, j->filters[i].value) != 0)
            return false;
    }
    return true;
}

/* On the store thread: one agent as a list item. */
static int list_row(void *ud, const ah_agent_row_t *row, const char *spec_json, size_t len)
{
    agent_job_t *j = ud;
    if (row->archived_at && !j->include_archived)
        return 0;
    json_t *spec = json_loadb(spec_json, len, 0, NULL);
    json_t *labels = json_object_get(json_object_get(spec, "metadata"), "labels");
    json_t *model = json_object_get(json_object_get(spec, "spec"), "model");
    if (!labels_match(j, labels)) {
        json_decref(spec);
        return 0;
    }
    json_t *lab = labels ? json_incref(labels) : json_object();
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:I, s:O?, s:o, s:b, s:o, s:I, s:I}", "object", "agent", "name",
                  row->name, "current_version", (json_int_t)row->current_version, "latest_version",
                  (json_int_t)row->latest_version, "model", model, "labels", lab, "archived",
                  row->archived_at != 0, "archived_at", ms_or_null(row->archived_at), "created_at",
                  (json_int_t)row->created_at, "updated_at", (json_int_t)row->updated_at);
    json_decref(spec);
    if (!o || json_array_append_new(j->out, o) != 0)
        return -ENOMEM;
    return 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    agent_job_t *j = arg;
    j->out = json_array();
    if (!j->out)
        return -ENOMEM;
    return ah_store_agent_list(db, -1, list_row, j);
}

static void list_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    if (rc == 0) {
        json_t *o = json_pack("{s:s, s:O}", "object", "list", "data", j->out);
        reply_json_obj(j->req, 200, o);
        json_decref(o);
    } else {
        agent_store_error(j->req, rc);
    }
    job_free(j);
}

/* "team=cx,tier=1" into j->filters. false when malformed. */
static bool parse_filters(agent_job_t *j, const char *text)
{
    j->filter_text = strdup(text);
    if (!j->filter_text)
        return false;
    char *save = NULL;
    for (char *tok = strtok_r(j->filter_text, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || j->n_filters == MAX_LABEL_FILTERS)
            return false;
        *eq = '\0';
        j->filters[j->n_filters++] = (ah_agent_kv_t){tok, eq + 1};
    }
    return true;
}

void ah_api_agents_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    agent_job_t *j = job_new(req, app, who);
    if (!j)
        return;
    const char *v = ah_http_req_query(req, "include_archived");
    j->include_archived = v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
    if ((v = ah_http_req_query(req, "label")) && *v && !parse_filters(j, v)) {
        job_free(j);
        ah_api_invalid(req, 400, "label",
                       "label filter must look like KEY=VALUE[,KEY=VALUE] (at most %d)",
                       MAX_LABEL_FILTERS);
        return;
    }
    submit(j, AH_STORE_READ, list_work, list_done);
}

/* ---- GET /v1/agents/{name} ---- */

static int get_work(ah_db_t *db, void *arg)
{
    agent_job_t *j = arg;
    int rc = ah_store_agent_get(db, j->name, &j->row);
    if (rc)
        return rc;
    rc = ah_store_agent_version_get(db, j->name, j->version ? j->version : j->row.current_version,
                                    &j->vrec, &j->spec_json);
    return rc == -ENOENT ? -ENXIO : rc;
}

static void get_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    if (rc == -ENOENT) {
        not_found(j->req, j->name);
    } else if (rc == -ENXIO) {
        char msg[200];
        snprintf(msg, sizeof(msg), "agent \"%s\" has no version %lld (versions 1-%lld)", j->name,
                 (long long)j->version, (long long)j->row.latest_version);
        ah_http_reply_error(j->req, 404, NULL, "version_not_found", "version", msg);
    } else if (rc) {
        agent_store_error(j->req, rc);
    } else if (j->yaml) {
        ah_buf_t y = AH_BUF_INIT;
        if (ah_agent_json_to_yaml(j->spec_json, strlen(j->spec_json), &y) == 0)
            ah_http_reply(j->req, 200, "application/yaml", y.data ? y.data : "", y.len);
        else
            ah_http_reply_error(j->req, 500, NULL, "internal_error", NULL,
                                "could not encode the reply");
        ah_buf_free(&y);
    } else {
        json_t *spec = json_loads(j->spec_json, 0, NULL);
        json_t *o = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:b, s:o, s:I, s:I, s:s, s:I, s:s, s:o?}", "object", "agent",
            "name", j->row.name, "version", (json_int_t)j->vrec.version, "current_version",
            (json_int_t)j->row.current_version, "latest_version", (json_int_t)j->row.latest_version,
            "archived", j->row.archived_at != 0, "archived_at", ms_or_null(j->row.archived_at),
            "created_at", (json_int_t)j->row.created_at, "updated_at",
            (json_int_t)j->row.updated_at, "spec_hash", j->vrec.spec_hash, "version_created_at",
            (json_int_t)j->vrec.created_at, "version_created_by", j->vrec.created_by, "spec", spec);
        reply_json_obj(j->req, 200, o);
        json_decref(o);
    }
    job_free(j);
}

/* Reads ?version=N (1..) into j->version; replies 400 and returns false when malformed. */
static bool query_version(agent_job_t *j)
{
    const char *v = ah_http_req_query(j->req, "version");
    if (!v || !*v)
        return true;
    long long n;
    if (!ah_api_parse_int(v, 1, INT64_MAX, &n)) {
        ah_api_invalid(j->req, 400, "version", "version must be a whole number from 1");
        return false;
    }
    j->version = n;
    return true;
}

void ah_api_agents_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    agent_job_t *j = named_job(req, app, who);
    if (!j)
        return;
    if (!query_version(j)) {
        job_free(j);
        return;
    }
    size_t n;
    const char *accept = ah_http_req_header(req, "accept", &n);
    j->yaml = accept && memmem(accept, n, "yaml", 4) != NULL;
    submit(j, AH_STORE_READ, get_work, get_done);
}

/* ---- GET /v1/agents/{name}/versions ---- */

static int version_row(void *ud, const ah_agent_version_rec_t *v)
{
    agent_job_t *j = ud;
    json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:s, s:b}", "object", "agent.version", "version",
                          (json_int_t)v->version, "spec_hash", v->spec_hash, "created_at",
                          (json_int_t)v->created_at, "created_by", v->created_by, "current",
                          v->version == j->row.current_version);
    if (!o || json_array_append_new(j->out, o) != 0)
        return -ENOMEM;
    return 0;
}

static int versions_work(ah_db_t *db, void *arg)
{
    agent_job_t *j = arg;
    int rc = ah_store_agent_get(db, j->name, &j->row);
    if (rc)
        return rc;
    j->out = json_array();
    if (!j->out)
        return -ENOMEM;
    return ah_store_agent_versions(db, j->name, version_row, j);
}

static void versions_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    if (rc == 0) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:b, s:O}", "object", "list", "name", j->row.name,
                              "current_version", (json_int_t)j->row.current_version, "archived",
                              j->row.archived_at != 0, "data", j->out);
        reply_json_obj(j->req, 200, o);
        json_decref(o);
    } else if (rc == -ENOENT) {
        not_found(j->req, j->name);
    } else {
        agent_store_error(j->req, rc);
    }
    job_free(j);
}

void ah_api_agents_versions(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    agent_job_t *j = named_job(req, app, who);
    if (j)
        submit(j, AH_STORE_READ, versions_work, versions_done);
}

/* ---- POST /v1/agents/{name}/rollback ---- */

static int audit(ah_db_t *db, agent_job_t *j, const char *action, json_t *detail)
{
    char *d = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    if (!d)
        return -ENOMEM;
    char target[AH_STORE_AGENT_NAME_MAX + 8];
    snprintf(target, sizeof(target), "agent:%s", j->name);
    int rc = ah_store_audit_insert(db, j->actor, action, target, d, j->request_id);
    free(d);
    return rc;
}

static int rollback_work(ah_db_t *db, void *arg)
{
    agent_job_t *j = arg;
    int rc = ah_store_agent_rollback(db, j->name, j->version, ah_wall_ms(), &j->previous, &j->row);
    if (rc || j->previous == j->version)
        return rc;
    rc = audit(db, j, "agent.rollback",
               json_pack("{s:I, s:I}", "version", (json_int_t)j->version, "previous_version",
                         (json_int_t)j->previous));
    if (rc == 0)
        rc = ah_registry_update_read(db, j->name, &j->update);
    return rc;
}

static void rollback_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    char msg[200];
    if (rc == 0) {
        if (j->app->registry && j->update) {
            ah_registry_update_apply(j->app->registry, j->update);
            j->update = NULL;
        }
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:b}", "object", "agent.rollback", "name",
                              j->name, "version", (json_int_t)j->version, "previous_version",
                              (json_int_t)j->previous, "changed", j->previous != j->version);
        reply_json_obj(j->req, 200, o);
        json_decref(o);
    } else if (rc == -ENOENT) {
        not_found(j->req, j->name);
    } else if (rc == -ENXIO) {
        snprintf(msg, sizeof(msg), "agent \"%s\" has no version %lld (versions 1-%lld)", j->name,
                 (long long)j->version, (long long)j->row.latest_version);
        ah_api_invalid(j->req, 422, "version", "%s", msg);
    } else if (rc == -EPERM) {
        snprintf(msg, sizeof(msg),
                 "agent \"%s\" is archived; apply a spec (POST /v1/agents) to restore it", j->name);
        ah_http_reply_error(j->req, 409, NULL, "agent_archived", NULL, msg);
    } else {
        agent_store_error(j->req, rc);
    }
    job_free(j);
}

void ah_api_agents_rollback(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    const char *name = path_name(req);
    if (!name)
        return;
    size_t blen;
    const char *body = ah_http_req_body(req, &blen);
    json_error_t jerr;
    json_t *in = json_loadb(body ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!in || !json_is_object(in)) {
        json_decref(in);
        ah_api_invalid(req, 400, NULL, "request body must be a JSON object {\"version\": N}: %s",
                       in ? "got another JSON type" : jerr.text);
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(in, key, v)
    {
        if (strcmp(key, "version") != 0) {
            ah_api_invalid(req, 422, key, "unknown field \"%.64s\" (known: version)", key);
            json_decref(in);
            return;
        }
    }
    v = json_object_get(in, "version");
    if (!v || !json_is_integer(v) || json_integer_value(v) < 1) {
        ah_api_invalid(req, 422, "version",
                       v ? "version must be a whole number from 1"
                         : "field \"version\" is required (the version to make current)");
        json_decref(in);
        return;
    }
    agent_job_t *j = job_new(req, app, who);
    if (!j) {
        json_decref(in);
        return;
    }
    j->version = json_integer_value(v);
    json_decref(in);
    memcpy(j->name, name, strlen(name) + 1);
    submit(j, AH_STORE_WRITE, rollback_work, rollback_done);
}

/* ---- DELETE /v1/agents/{name} ---- */

static int archive_work(ah_db_t *db, void *arg)
{
    agent_job_t *j = arg;
    int rc = ah_store_agent_archive(db, j->name, ah_wall_ms(), &j->row);
    if (rc == -EALREADY) {
        j->already = true;
        return 0;
    }
    if (rc)
        return rc;
    rc = audit(db, j, "agent.archive",
               json_pack("{s:I}", "current_version", (json_int_t)j->row.current_version));
    if (rc == 0)
        rc = ah_registry_update_read(db, j->name, &j->update);
    return rc;
}

static void archive_done(int rc, void *arg)
{
    agent_job_t *j = arg;
    if (rc == 0) {
        if (j->app->registry && j->update) {
            ah_registry_update_apply(j->app->registry, j->update);
            j->update = NULL;
        }
        json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:b}", "object", "agent", "name",
                              j->row.name, "archived", 1, "archived_at",
                              (json_int_t)j->row.archived_at, "current_version",
                              (json_int_t)j->row.current_version, "already_archived", j->already);
        reply_json_obj(j->req, 200, o);
        json_decref(o);
    } else if (rc == -ENOENT) {
        not_found(j->req, j->name);
    } else {
        agent_store_error(j->req, rc);
    }
    job_free(j);
}

void ah_api_agents_archive(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    agent_job_t *j = named_job(req, app, who);
    if (j)
        submit(j, AH_STORE_WRITE, archive_work, archive_done);
}
