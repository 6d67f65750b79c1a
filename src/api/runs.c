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
#include "http/sse.h"

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

static const ah_run_observer_t observer = {on_created, on_event, on_done};

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
        ah_http_reply_error(req, 503, NULL, "overloaded", NULL, "out of memory");
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
                           "webhook_url, limits)",
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
    char *input_s = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    char *md_s = md ? json_dumps(md, JSON_COMPACT) : NULL;
    char *lim_s = lim ? json_dumps(lim, JSON_COMPACT) : NULL;
    ah_run_opts_t o = {
        .agent = ah_http_req_param(req, "name"),
        .input_json = input_s,
        .mode = mode,
        .session_id = json_string_value(sid),
        .metadata_json = md_s,
        .limits_json = lim_s,
        .webhook_url = json_string_value(wh),
        .idempotency_key = ah_http_req_header_str(req, "idempotency-key"),
        .request_id = ah_http_req_id(req),
        .who = who,
    };
    start_run(req, app, who, &o);
    free(input_s);
    free(md_s);
    free(lim_s);
    json_decref(in);
}

void ah_api_runs_cancel(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    const char *id = ah_http_req_param(req, "id");
    if (!id || ah_runtime_cancel(app->runtime, id) != 0) {
        ah_http_reply_error(req, 409, "conflict_error", "run_not_running", "id",
                            "no such run is running in this process (it finished, or does not "
                            "exist: GET /v1/runs/{id} tells)");
        return;
    }
    char body[160];
    int n = snprintf(body, sizeof(body),
                     "{\"id\":\"%s\",\"object\":\"run\",\"status\":\"cancelling\"}", id);
    ah_http_reply_json(req, 202, body, (size_t)n);
}
