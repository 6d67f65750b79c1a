/*
 * chat.c - POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models:
 * the OpenAI-compatible face of the gateway.
 *
 * The handler validates the body with the scanning parser (no tree is built:
 * the body goes upstream as the client sent it), resolves the model, and
 * starts a gateway call whose sink writes the answer: one JSON reply, or an
 * SSE stream ending with "data: [DONE]" (or, when the upstream broke
 * mid-stream, an error event and no [DONE]). A client that disconnects
 * cancels the upstream request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/jscan.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/limits.h"
#include "gateway/usage.h"
#include "obs/metrics.h"

/*
 * One chat or embeddings request. Heap-allocated, not in the request arena:
 * a non-stream answer ends the HTTP request (and frees its arena) before the
 * gateway's done callback, which still needs this for accounting.
 */
typedef struct chat_ctx {
    ah_http_req_t *req; /* NULL once the terminal HTTP call was made */
    ah_app_t *app;
    ah_principal_t who;
    ah_gw_call_t *call;
    ah_gw_request_t gr;
    ah_limits_ticket_t ticket;
    ah_limits_result_t lres;
    uint64_t t0;
    int status;
    bool streaming;         /* the SSE response has started */
    bool admission_pending; /* waiting for Redis: the callback frees */
    bool aborted;
    int in_sink;       /* inside a gateway sink callback: on_abort must not free */
    bool free_pending; /* free when the outermost sink callback returns */
    char model[256];
    char request_id[72];
} chat_ctx_t;

static void sink_enter(chat_ctx_t *x)
{
    x->in_sink++;
}

/* Leaves a sink callback; frees x if that was asked meanwhile. false: x is gone. */
static bool sink_leave(chat_ctx_t *x)
{
    if (--x->in_sink == 0 && x->free_pending) {
        free(x);
        return false;
    }
    return true;
}

static void add_gateway_headers(chat_ctx_t *x, const ah_gw_result_t *r)
{
    ah_http_req_t *req = x->req;
    char v[32];
    if (r->provider)
        ah_http_req_add_header(req, "x-agenthub-provider", r->provider);
    if (r->model)
        ah_http_req_add_header(req, "x-agenthub-model", r->model);
    if (r->upstream_model)
        ah_http_req_add_header(req, "x-agenthub-upstream-model", r->upstream_model);
    snprintf(v, sizeof(v), "%d", r->attempts);
    ah_http_req_add_header(req, "x-agenthub-attempts", v);
    if (r->retry_after_s > 0 && (r->status == 429 || r->status == 503)) {
        snprintf(v, sizeof(v), "%.0f", r->retry_after_s < 1 ? 1 : r->retry_after_s);
        ah_http_req_add_header(req, "Retry-After", v);
    }
    uint64_t total = ah_mono_ns() - x->t0;
    uint64_t over = total > r->upstream_ns ? total - r->upstream_ns : 0;
    snprintf(v, sizeof(v), "%llu", (unsigned long long)(over / 1000));
    ah_http_req_add_header(req, "x-agenthub-overhead-us", v);
}

static void sink_head(void *ud, const ah_gw_result_t *r)
{
    chat_ctx_t *x = ud;
    x->status = r->status;
    if (!x->req)
        return;
    sink_enter(x);
    add_gateway_headers(x, r);
    if (x->gr.stream && r->status == 200) {
        ah_http_req_add_header(x->req, "Cache-Control", "no-cache");
        ah_http_req_add_header(x->req, "X-Accel-Buffering", "no");
        x->streaming = true;
        ah_http_stream_start(x->req, 200, "text/event-stream");
    }
    sink_leave(x);
}

static void end_stream(chat_ctx_t *x)
{
    if (x->req) {
        ah_http_req_t *req = x->req;
        x->req = NULL;
        ah_http_stream_end(req);
    }
}

static void sink_data(void *ud, const char *p, size_t n)
{
    chat_ctx_t *x = ud;
    if (!x->req)
        return;
    if (!x->streaming) {
        ah_http_req_t *req = x->req;
        x->req = NULL;
        ah_http_reply_json(req, x->status, p, n);
        return;
    }
    sink_enter(x);
    int rc = ah_http_stream_write(x->req, p, n);
    if (rc == -ENOBUFS && x->call) {
        /* The client reads slower than the model writes: stop paying for tokens. */
        ah_log(AH_LOG_WARN, "gateway", "client too slow: stream cut", AH_LF_STR("model", x->model),
               AH_LF_END);
        ah_gateway_cancel(x->call); /* no more sink calls: this one frees x */
        x->call = NULL;
        if (x->app->limits)
            ah_limits_finish(x->app->limits, &x->ticket, 0);
        end_stream(x);
        x->free_pending = true;
    }
    sink_leave(x);
}

/* Metrics, the usage row (which also feeds the key's budget) and the rate limiter's tokens. */
static void account(chat_ctx_t *x, const ah_gw_result_t *r)
{
    ah_app_t *app = x->app;
    const char *model = r->model ? r->model : x->model;
    uint64_t total = ah_mono_ns() - x->t0;
    uint64_t over = total > r->upstream_ns ? total - r->upstream_ns : 0;
    double cost = r->model_cfg ? ah_usage_cost(&r->model_cfg->price, r->usage.prompt_tokens,
                                               r->usage.cached_tokens, r->usage.completion_tokens)
                               : 0;
    ah_gateway_account(app->gateway, x->who.key_id, model, &r->usage, cost, over,
                       x->gr.stream && r->status == 200 ? r->ttft_ns : 0);
    if (app->usage) {
        ah_usage_rec_t u = {
            .request_id = x->request_id,
            .key_id = x->who.key_id,
            .tenant = x->who.tenant,
            .model = model,
            .provider = r->provider ? r->provider : "",
            .upstream_model = r->upstream_model ? r->upstream_model : "",
            .prompt_tokens = r->usage.prompt_tokens,
            .completion_tokens = r->usage.completion_tokens,
            .cached_tokens = r->usage.cached_tokens,
            .cost_usd = cost,
            .latency_ms = (int64_t)(total / 1000000),
            .ttft_ms = x->gr.stream && r->status == 200 ? (int64_t)(r->ttft_ns / 1000000) : -1,
            .status = r->status,
            .stream = x->gr.stream,
            .attempts = r->attempts,
        };
        ah_usage_record(app->usage, &u);
    }
    if (app->limits)
        ah_limits_finish(app->limits, &x->ticket,
                         r->usage.prompt_tokens + r->usage.completion_tokens);
}

static void sink_done(void *ud, int rc, const ah_gw_result_t *r)
{
    chat_ctx_t *x = ud;
    x->call = NULL;
    sink_enter(x);
    x->free_pending = true;
    account(x, r);
    if (x->streaming) {
        if (rc == 0 && x->req)
            ah_http_stream_write(x->req, "data: [DONE]\n\n", 14);
        end_stream(x);
    } else if (x->req) {
        ah_http_req_t *req = x->req;
        x->req = NULL;
        ah_http_reply_error(req, 502, NULL, "upstream_error", NULL, "empty upstream answer");
    }
    sink_leave(x);
}

static void on_abort(void *ud)
{
    chat_ctx_t *x = ud;
    x->aborted = true;
    if (x->call) {
        /* No tokens paid for nobody: the upstream request is closed. */
        ah_gateway_cancel(x->call);
        x->call = NULL;
    }
    /* The terminal call only frees the request now. */
    if (x->req) {
        ah_http_req_t *req = x->req;
        x->req = NULL;
        if (x->streaming)
            ah_http_stream_end(req);
        else
            ah_http_reply(req, 499, NULL, NULL, 0);
    }
    if (x->admission_pending)
        return; /* the limiter's callback frees x */
    if (x->free_pending)
        return; /* sink_done runs: it accounts and frees */
    if (x->app->limits)
        ah_limits_finish(x->app->limits, &x->ticket, 0);
    if (x->in_sink)
        x->free_pending = true; /* the sink callback that wrote to the gone client frees */
    else
        free(x);
}

static const ah_gw_sink_t sink = {sink_head, sink_data, sink_done};

static void bad(ah_http_req_t *req, int status, const char *param, const char *code,
                const char *msg)
{
    ah_http_reply_error(req, status, "invalid_request_error", code, param, msg);
}

/* Validates the body and fills gr in one scan of it. false when an error reply was sent. */
static bool parse_request(ah_http_req_t *req, ah_gw_kind_t kind, ah_gw_request_t *gr)
{
    enum { K_MODEL, K_MESSAGES, K_STREAM, K_STREAM_OPTIONS, K_INPUT, K_N };
    static const char *const keys[K_N] = {"model", "messages", "stream", "stream_options", "input"};
    size_t n;
    const char *body = ah_http_req_body(req, &n);
    size_t off = 0;
    if (n == 0) {
        bad(req, 400, NULL, "invalid_json", "the request body is empty: send a JSON object");
        return false;
    }
    ah_jspan_t f[K_N];
    int rc = ah_json_object_scan(body, n, keys, K_N, f, NULL, &off);
    if (rc == -EPROTO) {
        bad(req, 400, NULL, "invalid_request", "the request body must be a JSON object");
        return false;
    }
    if (rc) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the request body is not valid JSON (error at byte %zu)", off);
        bad(req, 400, NULL, "invalid_json", msg);
        return false;
    }
    memset(gr, 0, sizeof(*gr));
    gr->kind = kind;
    gr->body = body;
    gr->len = n;
    gr->request_id = ah_http_req_id(req);
    gr->spans_set = true;
    gr->model_span = f[K_MODEL];
    gr->stream_options_span = f[K_STREAM_OPTIONS];
    if (f[K_MODEL].type != AH_JSON_STRING) {
        bad(req, 400, "model", "invalid_request", "you must provide a model parameter (a string)");
        return false;
    }
    ah_buf_t mb;
    ah_buf_init(&mb, 512);
    if (ah_json_str(&f[K_MODEL], &mb) != 0 || mb.len == 0) {
        ah_buf_free(&mb);
        bad(req, 400, "model", "invalid_request", "model must be a non-empty string");
        return false;
    }
    gr->model = ah_arena_strndup(ah_http_req_arena(req), mb.data, mb.len);
    ah_buf_free(&mb);
    if (kind == AH_GW_CHAT) {
        if (f[K_MESSAGES].type != AH_JSON_ARRAY || ah_json_array_empty(&f[K_MESSAGES])) {
            bad(req, 400, "messages", "invalid_request",
                "messages must be a non-empty array of messages");
            return false;
        }
        ah_json_type_t st = f[K_STREAM].type;
        if (st != AH_JSON_NONE && st != AH_JSON_TRUE && st != AH_JSON_FALSE && st != AH_JSON_NULL) {
            bad(req, 400, "stream", "invalid_type", "stream must be a boolean");
            return false;
        }
        gr->stream = st == AH_JSON_TRUE;
        ah_jspan_t iu;
        if (gr->stream && f[K_STREAM_OPTIONS].type == AH_JSON_OBJECT &&
            ah_json_member(&f[K_STREAM_OPTIONS], "include_usage", &iu) == 0)
            gr->include_usage = iu.type == AH_JSON_TRUE;
    } else if (f[K_INPUT].type != AH_JSON_STRING && f[K_INPUT].type != AH_JSON_ARRAY) {
        bad(req, 400, "input", "invalid_request",
            "input must be a string or an array of strings or token arrays");
        return false;
    }
    return true;
}

static int add_header(void *ctx, const char *name, const char *value)
{
    return ah_http_req_add_header(ctx, name, value);
}

/* Replies an error and frees x (before any gateway call). */
static void fail(chat_ctx_t *x, int status, const char *type, const char *code, const char *param,
                 const char *msg)
{
    if (x->req)
        ah_http_reply_error(x->req, status, type, code, param, msg);
    free(x);
}

/* The rate limiter's decision: go on to the gateway, or 429. */
static void admitted(void *ud, const ah_limits_result_t *res)
{
    chat_ctx_t *x = ud;
    x->admission_pending = false;
    if (x->aborted) {
        ah_limits_finish(x->app->limits, &x->ticket, 0);
        free(x);
        return;
    }
    ah_http_req_t *req = x->req;
    ah_limits_add_headers(res, add_header, req);
    if (res->status == 429) {
        x->req = NULL;
        ah_http_reply_error(req, 429, "rate_limit_error", res->code, NULL, res->message);
        free(x);
        return;
    }
    int rc = ah_gateway_start(x->app->gateway, ah_http_req_loop(req), &x->gr, &sink, x, &x->call);
    if (rc) {
        ah_limits_finish(x->app->limits, &x->ticket, 0);
        if (rc == -ENOTSUP) {
            char msg[300];
            snprintf(msg, sizeof(msg), "model `%.200s` does not support %s", x->model,
                     x->gr.kind == AH_GW_EMBEDDINGS ? "embeddings" : "chat completions");
            fail(x, 400, "invalid_request_error", "model_not_supported", "model", msg);
        } else {
            fail(x, 503, NULL, "overloaded", NULL, "could not start the request");
        }
        return;
    }
    ah_http_req_on_abort(req, on_abort, x);
}

static void start(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who, ah_gw_kind_t kind)
{
    chat_ctx_t *x = calloc(1, sizeof(*x));
    if (!x) {
        ah_api_out_of_memory(req);
        return;
    }
    x->req = req;
    x->app = app;
    if (who)
        x->who = *who;
    x->t0 = ah_http_req_start_ns(req);
    snprintf(x->request_id, sizeof(x->request_id), "%s", ah_http_req_id(req));
    if (!parse_request(req, kind, &x->gr)) {
        free(x);
        return;
    }
    snprintf(x->model, sizeof(x->model), "%s", x->gr.model);
    x->gr.model = x->model;
    x->gr.request_id = x->request_id;
    if (kind == AH_GW_CHAT && strncmp(x->model, "agent:", 6) == 0 && app->runtime) {
        ah_api_agent_chat(req, app, who, x->model + 6, x->gr.body, x->gr.len);
        free(x);
        return;
    }
    if (!ah_gateway_model(app->gateway, x->model)) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "The model `%.200s` does not exist or you do not have access to it "
                 "(GET /v1/models lists them).",
                 x->model);
        fail(x, 404, "invalid_request_error", "model_not_found", "model", msg);
        return;
    }
    if (!app->limits) {
        ah_limits_result_t none = {0};
        admitted(x, &none);
        return;
    }
    /* Reserve the prompt's rough size now so a burst is seen at once; finish corrects it. */
    int rc = ah_limits_admit(app->limits, ah_http_req_loop(req), x->who.key_id, x->model,
                             (int64_t)(x->gr.len / 4), &x->ticket, &x->lres, admitted, x);
    if (rc == 0) {
        admitted(x, &x->lres);
    } else if (rc == -EINPROGRESS) {
        x->admission_pending = true;
        ah_http_req_on_abort(req, on_abort, x);
    } else {
        fail(x, 503, NULL, "overloaded", NULL, "rate limiter unavailable");
    }
}

void ah_api_chat(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    start(req, app, who, AH_GW_CHAT);
}

void ah_api_embeddings(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    start(req, app, who, AH_GW_EMBEDDINGS);
}

void ah_api_models(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    const ah_config_t *cfg = app->cfg;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    ah_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const ah_config_model_t *m = &cfg->models[i];
        for (size_t a = 0; a <= m->n_aliases; a++) {
            const char *id = a == 0 ? m->name : m->aliases[a - 1];
            ah_buf_puts(&b, first ? "{\"id\":\"" : ",{\"id\":\"");
            first = false;
            ah_buf_json_escape(&b, id, strlen(id));
            ah_buf_printf(&b, "\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"agenthub\"",
                          (long long)app->started_at);
            if (a > 0) {
                ah_buf_puts(&b, ",\"alias_of\":\"");
                ah_buf_json_escape(&b, m->name, strlen(m->name));
                ah_buf_putc(&b, '"');
            }
            ah_buf_putc(&b, '}');
        }
    }
    char **agents = NULL;
    size_t n_agents = 0;
    if (app->registry && ah_registry_names(app->registry, &agents, &n_agents) == 0) {
        for (size_t i = 0; i < n_agents; i++) {
            ah_buf_puts(&b, first ? "{\"id\":\"agent:" : ",{\"id\":\"agent:");
            first = false;
            ah_buf_json_escape(&b, agents[i], strlen(agents[i]));
            ah_buf_printf(&b, "\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"agenthub\"}",
                          (long long)app->started_at);
        }
        ah_registry_names_free(agents, n_agents);
    }
    ah_buf_puts(&b, "]}");
    ah_http_reply_json(req, 200, b.data, b.len);
    ah_buf_free(&b);
}
