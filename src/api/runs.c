/*
 * runs.c - POST /v1/agents/{name}/runs (sync, stream, async) and
 * POST /v1/runs/{id}/cancel. The run itself is the runtime's (src/agents/);
 * this file maps its observer to HTTP: one JSON answer (sync), an SSE stream
 * of run events (stream), or 202 as soon as the run is stored (async). A
 * client that leaves does not stop the run: it is detached and goes on.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/runs_json.h"
#include "agents/approvals.h"
#include "agents/cancels.h"
#include "agents/queue.h"
#include "agents/webhooks.h"
#include "http/sse.h"
#include "core/clock.h"
#include "store/audit.h"
#include "store/db.h"
#include "store/runs_idem.h"
#include "store/sessions.h"

typedef struct run_http {
    ah_http_req_t *req; /* NULL after the terminal call */
    ah_run_t *run;
    char mode[12];
    bool streaming;
} run_http_t;

static void reply_run(ah_http_req_t *req, int status, const ah_run_rec_t *rec)
{
    ah_buf_t b;
    ah_buf_init(&b, 0);
    if (ah_api_run_json(rec, &b) != 0)
        ah_http_reply_error(req, 500, NULL, "internal_error", NULL, "cannot render the run");
    else
        ah_http_reply_json(req, status, b.data, b.len);
    ah_buf_free(&b);
}

static void on_created(void *ud, const ah_run_rec_t *run)
{
    run_http_t *h = ud;
    if (!h->req)
        return;
    if (strcmp(h->mode, "async") == 0) {
        ah_http_req_t *req = h->req;
        h->req = NULL;
        ah_run_detach(h->run);
        reply_run(req, 202, run);
        free(h);
    } else if (strcmp(h->mode, "stream") == 0) {
        h->streaming = true;
        ah_http_req_add_header(h->req, "x-agenthub-run-id", run->id);
        ah_sse_start(h->req);
    }
}

static void on_event(void *ud, int64_t seq, const char *type, const char *data, size_t n)
{
    run_http_t *h = ud;
    if (!h->req || !h->streaming)
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)seq);
    ah_sse_send(h->req, type, id, data, n);
}

static void on_done(void *ud, const ah_run_rec_t *run)
{
    run_http_t *h = ud;
    if (h->req) {
        ah_http_req_t *req = h->req;
        h->req = NULL;
        if (h->streaming)
            ah_http_stream_end(req);
        else
            reply_run(req, 200, run);
    }
    free(h);
}

static void on_abort(void *ud)
{
    run_http_t *h = ud;
    ah_http_req_t *req = h->req;
    h->req = NULL;
    ah_run_detach(h->run); /* the run goes on, stored, without this client */
    if (h->streaming)
        ah_http_stream_end(req);
    else
        ah_http_reply(req, 499, NULL, NULL, 0);
    free(h);
}

static void on_refused(void *ud, int status, const char *code, const char *msg,
                       const ah_run_rec_t *run)
{
    run_http_t *h = ud;
    ah_http_req_t *req = h->req;
    h->req = NULL;
    if (req && h->streaming) {
        /* The event stream has begun (a run stopped mid-way): the error is its last event. */
        json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type",
                              ah_http_error_type(status), "param", "code", code);
        char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        ah_sse_send(req, "error", NULL, s ? s : "{}", s ? strlen(s) : 2);
        free(s);
        ah_http_stream_end(req);
    } else if (req) {
        if (status == 202 && run)
            reply_run(req, 202, run);
        else if (status == 503) {
            ah_http_req_add_header(req, "Retry-After", "1");
            ah_http_reply_error(req, status, NULL, code, NULL, msg);
        } else
            ah_http_reply_error(req, status, "conflict_error", code, NULL, msg);
    }
    free(h);
}

static const ah_run_observer_t observer = {
    .created = on_created, .event = on_event, .refused = on_refused, .done = on_done};

/* The runtime's messages start with the field they are about ("limits.max_turns: ..."). */
static const char *field_of(const char *msg, char *buf, size_t n)
{
    const char *colon = strstr(msg, ": ");
    size_t len = colon ? (size_t)(colon - msg) : 0;
    if (!len || len >= n || memchr(msg, ' ', len))
        return NULL;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    /* "input[3]" names the input field. */
    char *br = strchr(buf, '[');
    if (br && strncmp(buf, "input", 5) == 0)
        *br = '\0';
    return buf;
}

/* Starts a run for an already validated request; answers errors itself. */
static void start_run(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who,
                      const ah_run_opts_t *o)
{
    run_http_t *h = calloc(1, sizeof(*h));
    if (!h) {
        ah_api_out_of_memory(req);
        return;
    }
    h->req = req;
    snprintf(h->mode, sizeof(h->mode), "%s", o->mode);
    ah_buf_t err;
    ah_buf_init(&err, 0);
    (void)who;
    int rc = ah_runtime_start(app->runtime, ah_http_req_loop(req), o, &observer, h, &h->run, &err);
    if (rc) {
        free(h);
        const char *m = err.data ? err.data : "cannot start the run";
        char param[64];
        if (rc == -ENOENT)
            ah_http_reply_error(req, 404, "not_found_error", "agent_not_found", "name", m);
        else if (rc == -EINVAL)
            ah_http_reply_error(req, 422, "invalid_request_error", "invalid_value",
                                field_of(m, param, sizeof(param)), m);
        else if (rc == -EBUSY)
            ah_http_reply_error(req, 429, "rate_limit_error", "agent_concurrency_limit", NULL, m);
        else
            ah_http_reply_error(req, 503, NULL, "overloaded", NULL, m);
        ah_buf_free(&err);
        return;
    }
    ah_buf_free(&err);
    ah_http_req_on_abort(req, on_abort, h);
}

/* ---- Idempotency-Key: a repeat gets the first run (same body) or 409 (another body) ---- */

typedef struct idem_job {
    ah_http_req_t *req;
    ah_app_t *app;
    ah_principal_t who;
    bool has_who;
    char key_id[48];
    char *idem, *hash, *agent, *input, *mode, *session, *metadata, *limits, *webhook, *multitask;
    ah_run_rec_t rec;
    char found_hash[65];
    int rc;
} idem_job_t;

static char *dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void idem_free(idem_job_t *j)
{
    free(j->idem);
    free(j->hash);
    free(j->agent);
    free(j->input);
    free(j->mode);
    free(j->session);
    free(j->metadata);
    free(j->limits);
    free(j->webhook);
    free(j->multitask);
    ah_run_rec_free(&j->rec);
    free(j);
}

static int idem_work(ah_db_t *db, void *arg)
{
    idem_job_t *j = arg;
    j->rc = ah_store_run_find_idempotent(
        db, j->key_id, j->idem, ah_wall_ms() - AH_RUN_IDEM_WINDOW_MS, &j->rec, j->found_hash);
    return 0;
}

static void idem_done(int rc, void *arg)
{
    idem_job_t *j = arg;
    (void)rc;
    if (j->rc == 0) {
        if (j->found_hash[0] && strcmp(j->found_hash, j->hash) != 0) {
            ah_http_reply_error(j->req, 409, "conflict_error", "idempotency_key_reused",
                                "Idempotency-Key",
                                "this Idempotency-Key was used with a different request in the "
                                "last 24 h");
        } else {
            ah_http_req_add_header(j->req, "Idempotent-Replayed", "true");
            reply_run(j->req, 200, &j->rec);
        }
    } else if (j->rc == -ENOENT) {
        ah_run_opts_t o = {
            .agent = j->agent,
            .input_json = j->input,
            .mode = j->mode,
            .session_id = j->session,
            .metadata_json = j->metadata,
            .limits_json = j->limits,
            .webhook_url = j->webhook,
            .idempotency_key = j->idem,
            .request_hash = j->hash,
            .multitask = j->multitask,
            .request_id = ah_http_req_id(j->req),
            .who = j->has_who ? &j->who : NULL,
        };
        start_run(j->req, j->app, o.who, &o);
    } else {
        ah_http_reply_error(j->req, 503, NULL, "store_unavailable", NULL,
                            "the store could not check the Idempotency-Key; retry");
    }
    idem_free(j);
}

static void idem_lookup(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who,
                        const ah_run_opts_t *o)
{
    idem_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    j->app = app;
    if (who) {
        j->who = *who;
        j->has_who = true;
        snprintf(j->key_id, sizeof(j->key_id), "%s", who->key_id);
    }
    j->idem = dup0(o->idempotency_key);
    j->hash = dup0(o->request_hash);
    j->agent = dup0(o->agent);
    j->input = dup0(o->input_json);
    j->mode = dup0(o->mode);
    j->session = dup0(o->session_id);
    j->metadata = dup0(o->metadata_json);
    j->limits = dup0(o->limits_json);
    j->webhook = dup0(o->webhook_url);
    j->multitask = dup0(o->multitask);
    if (ah_store_submit(app->store, AH_STORE_READ, idem_work, idem_done, ah_http_req_loop(req),
                        j) != 0) {
        idem_free(j);
        ah_http_reply_error(req, 503, NULL, "store_busy", NULL, "the store is busy; retry");
    }
}

void ah_api_runs_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    size_t n;
    const char *body = ah_http_req_body(req, &n);
    json_error_t je;
    json_t *in = json_loadb(body, n, 0, &je);
    if (!json_is_object(in)) {
        json_decref(in);
        ah_api_invalid(req, 400, NULL, "the body must be a JSON object: %s",
                       in ? "got another JSON value" : je.text);
        return;
    }
    static const char *const known[] = {"input",       "mode",   "session_id", "metadata",
                                        "webhook_url", "limits", "multitask"};
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok = ok || strcmp(k, known[i]) == 0;
        if (!ok) {
            ah_api_invalid(req, 422, k,
                           "unknown field \"%s\" (known: input, mode, session_id, metadata, "
                           "webhook_url, limits, multitask)",
                           k);
            json_decref(in);
            return;
        }
    }
    json_t *input = json_object_get(in, "input");
    const char *mode = json_string_value(json_object_get(in, "mode"));
    if (!mode)
        mode = "sync";
    if (strcmp(mode, "sync") && strcmp(mode, "stream") && strcmp(mode, "async")) {
        ah_api_invalid(req, 422, "mode", "mode must be sync, stream or async");
        json_decref(in);
        return;
    }
    if (!input || (!json_is_string(input) && !json_is_array(input))) {
        ah_api_invalid(req, 422, "input", "input must be a string or an array of chat messages");
        json_decref(in);
        return;
    }
    json_t *md = json_object_get(in, "metadata"), *lim = json_object_get(in, "limits");
    json_t *sid = json_object_get(in, "session_id"), *wh = json_object_get(in, "webhook_url");
    if ((md && !json_is_object(md)) || (lim && !json_is_object(lim)) ||
        (sid && !json_is_string(sid)) || (wh && !json_is_string(wh))) {
        ah_api_invalid(req, 422,
                       md && !json_is_object(md)     ? "metadata"
                       : lim && !json_is_object(lim) ? "limits"
                       : sid && !json_is_string(sid) ? "session_id"
                                                     : "webhook_url",
                       "this field has the wrong type");
        json_decref(in);
        return;
    }
    const char *multitask = json_string_value(json_object_get(in, "multitask"));
    if (json_object_get(in, "multitask") &&
        (!multitask || (strcmp(multitask, "reject") && strcmp(multitask, "enqueue")))) {
        ah_api_invalid(req, 422, "multitask", "multitask must be reject or enqueue");
        json_decref(in);
        return;
    }
    if (sid && !ah_session_id_valid(json_string_value(sid))) {
        ah_api_invalid(req, 422, "session_id",
                       "session_id must be 1-128 letters, digits, '-', '_', '.' or ':'");
        json_decref(in);
        return;
    }
    if (wh && !ah_webhook_url_ok(json_string_value(wh))) {
        ah_api_invalid(req, 422, "webhook_url", "webhook_url must be an http:// or https:// URL");
        json_decref(in);
        return;
    }
    const char *idem = ah_http_req_header_str(req, "idempotency-key");
    if (idem && !ah_run_idem_key_valid(idem)) {
        ah_api_invalid(req, 400, NULL, "Idempotency-Key must be 1-255 printable ASCII characters");
        json_decref(in);
        return;
    }
    char *input_s = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    char *md_s = md ? json_dumps(md, JSON_COMPACT) : NULL;
    char *lim_s = lim ? json_dumps(lim, JSON_COMPACT) : NULL;
    char hash[65];
    ah_run_request_hash(ah_http_req_param(req, "name"), input_s, mode, json_string_value(sid), md_s,
                        lim_s, json_string_value(wh), multitask, hash);
    ah_run_opts_t o = {
        .agent = ah_http_req_param(req, "name"),
        .input_json = input_s,
        .mode = mode,
        .session_id = json_string_value(sid),
        .metadata_json = md_s,
        .limits_json = lim_s,
        .webhook_url = json_string_value(wh),
        .idempotency_key = idem,
        .request_hash = hash,
        .multitask = multitask,
        .request_id = ah_http_req_id(req),
        .who = who,
    };
    if (idem)
        idem_lookup(req, app, who, &o);
    else
        start_run(req, app, who, &o);
    free(input_s);
    free(md_s);
    free(lim_s);
    json_decref(in);
}

typedef struct cancel_job {
    ah_http_req_t *req;
    ah_app_t *app;
    char id[48], key_id[48], agent[80];
    bool any_key;
    ah_cancel_outcome_t outcome;
} cancel_job_t;

/* Not executing here: a queued or parked run ends in the store; one executing elsewhere is
 * asked to stop through the store (cancels.h). */
static int cancel_work(ah_db_t *db, void *arg)
{
    cancel_job_t *j = arg;
    return ah_cancel_store(db, j->id, j->any_key ? NULL : j->key_id, ah_wall_ms(), j->agent,
                           &j->outcome);
}

static void reply_cancel(ah_http_req_t *req, const char *id, const char *status)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"id\":\"%s\",\"object\":\"run\",\"status\":\"%s\"}", id,
                     status);
    ah_http_reply_json(req, 202, body, (size_t)n);
}

static void cancel_done(int rc, void *arg)
{
    cancel_job_t *j = arg;
    if (rc) {
        ah_api_store_error(j->req, rc);
    } else if (j->outcome == AH_CANCEL_UNKNOWN) {
        ah_http_reply_error(j->req, 404, NULL, "run_not_found", "id", "no such run");
    } else if (j->outcome == AH_CANCEL_ENDED) {
        ah_runtime_ended_in_store(j->app->runtime, j->agent, AH_RUN_CANCELLED);
        reply_cancel(j->req, j->id, "cancelled");
    } else if (j->outcome == AH_CANCEL_REQUESTED) {
        /* It may have started here meanwhile: no need to wait for the poll then. */
        ah_runtime_cancel(j->app->runtime, j->id, NULL);
        reply_cancel(j->req, j->id, "cancelling");
    } else {
        ah_http_reply_error(j->req, 409, "conflict_error", "run_not_running", "id",
                            "the run already ended (GET /v1/runs/{id} tells how)");
    }
    free(j);
}

void ah_api_runs_cancel(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    const char *id = ah_http_req_param(req, "id");
    bool admin = who && who->role >= AH_ROLE_ADMIN;
    const char *owner = admin ? NULL : (who ? who->key_id : "");
    if (id && ah_runtime_cancel(app->runtime, id, owner) == 0) {
        /* Stored too, so the run still ends cancelled if its final write fails. */
        ah_cancel_remember(app->store, id);
        reply_cancel(req, id, "cancelling");
        return;
    }
    cancel_job_t *j = calloc(1, sizeof(*j));
    if (!j || !id) {
        free(j);
        ah_http_reply_error(req, 404, NULL, "run_not_found", "id", "no such run");
        return;
    }
    j->req = req;
    j->app = app;
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->key_id, sizeof(j->key_id), "%s", who ? who->key_id : "");
    j->any_key = admin;
    if (ah_store_submit(app->store, AH_STORE_WRITE, cancel_work, cancel_done, ah_http_req_loop(req),
                        j) != 0) {
        free(j);
        ah_http_reply_error(req, 503, NULL, "store_busy", NULL, "the store is busy; retry");
    }
}

/* ---- approvals ---- */

/* A decision is a store job: the run waits parked in the store, so any replica can take it. */
typedef struct approval_req {
    ah_http_req_t *req;
    char run_id[48], call_id[128], actor[48];
    char *reason;
    bool approve, resumable;
    char msg[200];
    int rc;
} approval_req_t;

static int approve_work(ah_db_t *db, void *arg)
{
    approval_req_t *a = arg;
    ah_approval_t ap = {.run_id = a->run_id,
                        .tool_call_id = a->call_id,
                        .approve = a->approve,
                        .reason = a->reason,
                        .by = a->actor};
    a->rc = ah_approval_decide(db, &ap, ah_wall_ms(), &a->resumable, a->msg, sizeof(a->msg));
    /* A refusal is an answer, not a store failure: the job itself succeeded (nothing written). */
    return a->rc == -ENOENT || a->rc == -ESRCH || a->rc == -ENXIO || a->rc == -EALREADY ? 0 : a->rc;
}

static void approve_done(int rc, void *arg)
{
    approval_req_t *a = arg;
    if (rc == 0 && a->rc == 0) {
        if (a->resumable)
            ah_queue_kick(); /* this replica's claimer resumes it now (or another's first) */
        char body[320];
        int n = snprintf(body, sizeof(body),
                         "{\"run_id\":\"%s\",\"tool_call_id\":\"%s\",\"decision\":\"%s\"}",
                         a->run_id, a->call_id, a->approve ? "approve" : "reject");
        ah_http_reply_json(a->req, 200, body, (size_t)n);
    } else if (rc == 0 && a->rc == -ENOENT) {
        ah_http_reply_error(a->req, 404, NULL, "run_not_found", "id", a->msg);
    } else if (rc == 0 && a->rc == -ENXIO) {
        ah_http_reply_error(a->req, 404, NULL, "tool_call_not_found", "tool_call_id", a->msg);
    } else if (rc == 0) {
        ah_http_reply_error(a->req, 409, "conflict_error",
                            a->rc == -EALREADY ? "already_decided" : "run_not_waiting", NULL,
                            a->msg);
    } else {
        ah_api_store_error(a->req, rc);
    }
    free(a->reason);
    free(a);
}

void ah_api_runs_approve(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    size_t n;
    const char *body = ah_http_req_body(req, &n);
    json_t *in = json_loadb(body, n, 0, NULL);
    const char *call = json_string_value(json_object_get(in, "tool_call_id"));
    const char *decision = json_string_value(json_object_get(in, "decision"));
    json_t *reason = json_object_get(in, "reason");
    if (!json_is_object(in)) {
        ah_api_invalid(req, 400, NULL, "the body must be a JSON object");
    } else if (!call || !*call) {
        ah_api_invalid(req, 422, "tool_call_id", "tool_call_id is required");
    } else if (!decision || (strcmp(decision, "approve") && strcmp(decision, "reject"))) {
        ah_api_invalid(req, 422, "decision", "decision must be approve or reject");
    } else if (reason && !json_is_string(reason)) {
        ah_api_invalid(req, 422, "reason", "reason must be a string");
    } else {
        approval_req_t *a = calloc(1, sizeof(*a));
        const char *id = ah_http_req_param(req, "id");
        if (!a) {
            ah_api_store_error(req, -ENOMEM);
        } else {
            a->req = req;
            snprintf(a->run_id, sizeof(a->run_id), "%s", id ? id : "");
            snprintf(a->call_id, sizeof(a->call_id), "%s", call);
            snprintf(a->actor, sizeof(a->actor), "%s", who ? who->key_id : "");
            a->approve = decision[0] == 'a';
            a->reason = json_is_string(reason) ? strdup(json_string_value(reason)) : NULL;
            if (ah_store_submit(app->store, AH_STORE_WRITE, approve_work, approve_done,
                                ah_http_req_loop(req), a) != 0) {
                free(a->reason);
                free(a);
                ah_http_reply_error(req, 503, NULL, "store_busy", NULL, "the store is busy; retry");
            }
        }
    }
    json_decref(in);
}
