/*
 * agent_chat.c - `"model": "agent:NAME"` on /v1/chat/completions: any
 * OpenAI client can call an agent. The request's messages are the run's
 * input; the run's final answer comes back as a chat.completion, or, for
 * stream: true, its message.delta events as chat.completion.chunk frames
 * ending with a finish_reason chunk and "data: [DONE]". A failed run is an
 * OpenAI error (non-stream) or an error event (stream).
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "http/sse.h"

typedef struct agent_chat {
    ah_http_req_t *req;
    ah_run_t *run;
    bool stream, include_usage, started;
    char id[64];
    char model[128];
    long long created;
} agent_chat_t;

static void write_chunk(agent_chat_t *x, json_t *delta, const char *finish, json_t *usage)
{
    json_t *choices = json_array();
    if (delta)
        json_array_append_new(choices, json_pack("{s:i, s:o, s:s?}", "index", 0, "delta", delta,
                                                 "finish_reason", finish));
    json_t *c =
        json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", x->id, "object", "chat.completion.chunk",
                  "created", (json_int_t)x->created, "model", x->model, "choices", choices);
    if (usage)
        json_object_set_new(c, "usage", usage);
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (s) {
        ah_buf_t b;
        ah_buf_init(&b, 0);
        ah_buf_puts(&b, "data: ");
        ah_buf_puts(&b, s);
        ah_buf_puts(&b, "\n\n");
        ah_http_stream_write(x->req, b.data, b.len);
        ah_buf_free(&b);
        free(s);
    }
}

static void on_created(void *ud, const ah_run_rec_t *run)
{
    agent_chat_t *x = ud;
    snprintf(x->id, sizeof(x->id), "chatcmpl-%s", run->id);
    if (!x->req || !x->stream)
        return;
    ah_http_req_add_header(x->req, "x-agenthub-run-id", run->id);
    ah_http_req_add_header(x->req, "Cache-Control", "no-cache");
    ah_http_stream_start(x->req, 200, "text/event-stream");
    x->started = true;
    write_chunk(x, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, NULL);
}

static void on_event(void *ud, int64_t seq, const char *type, const char *data, size_t n)
{
    agent_chat_t *x = ud;
    (void)seq;
    if (!x->req || !x->started || strcmp(type, "message.delta") != 0)
        return;
    json_t *d = json_loadb(data, n, 0, NULL);
    const char *text = json_string_value(json_object_get(d, "delta"));
    if (text)
        write_chunk(x, json_pack("{s:s}", "content", text), NULL, NULL);
    json_decref(d);
}

static json_t *usage_json(const ah_run_rec_t *run)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)run->prompt_tokens,
                     "completion_tokens", (json_int_t)run->completion_tokens, "total_tokens",
                     (json_int_t)(run->prompt_tokens + run->completion_tokens));
}

/* An OpenAI-shaped error as the last chunk of a started stream (the caller ends it). */
static void stream_error(ah_http_req_t *req, const char *type, const char *code, const char *msg)
{
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", type,
                          "param", "code", code);
    char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    ah_buf_t b;
    ah_buf_init(&b, 0);
    ah_buf_printf(&b, "data: %s\n\n", s ? s : "{}");
    ah_http_stream_write(req, b.data, b.len);
    ah_buf_free(&b);
    free(s);
}

static void on_done(void *ud, const ah_run_rec_t *run)
{
    agent_chat_t *x = ud;
    ah_http_req_t *req = x->req;
    x->req = NULL;
    if (!req) {
        free(x);
        return;
    }
    bool ok = strcmp(run->status, AH_RUN_COMPLETED) == 0;
    bool waiting = strcmp(run->status, AH_RUN_REQUIRES_ACTION) == 0;
    char msg[600];
    if (waiting)
        snprintf(msg, sizeof(msg),
                 "the agent run %s waits for a human to approve a tool call: decide with POST "
                 "/v1/runs/%s/approvals, then read the answer with GET /v1/runs/%s",
                 run->id, run->id, run->id);
    else
        snprintf(msg, sizeof(msg), "the agent run %s %s: %s", run->id, run->status,
                 run->error ? run->error : "no answer");
    const char *code = waiting           ? "requires_action"
                       : run->error_code ? run->error_code
                                         : "run_failed";
    if (x->started) {
        x->req = req;
        if (ok) {
            write_chunk(x, json_object(), "stop", NULL);
            if (x->include_usage)
                write_chunk(x, NULL, NULL, usage_json(run));
            ah_http_stream_write(req, "data: [DONE]\n\n", 14);
        } else {
            stream_error(req, "server_error", code, msg);
        }
        x->req = NULL;
        ah_http_stream_end(req);
    } else if (ok) {
        json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s}, s:s}], s:o}", "id",
                              x->id, "object", "chat.completion", "created", (json_int_t)x->created,
                              "model", x->model, "choices", "index", 0, "message", "role",
                              "assistant", "content", run->output ? run->output : "",
                              "finish_reason", "stop", "usage", usage_json(run));
        char *s = c ? json_dumps(c, JSON_COMPACT) : NULL;
        json_decref(c);
        ah_http_req_add_header(req, "x-agenthub-run-id", run->id);
        ah_http_reply_json(req, 200, s ? s : "{}", s ? strlen(s) : 2);
        free(s);
    } else {
        ah_http_req_add_header(req, "x-agenthub-run-id", run->id);
        ah_http_reply_error(req, waiting ? 409 : 502, waiting ? "conflict_error" : "server_error",
                            code, NULL, msg);
    }
    free(x);
}

static void on_abort(void *ud)
{
    agent_chat_t *x = ud;
    ah_http_req_t *req = x->req;
    x->req = NULL;
    ah_run_detach(x->run);
    if (x->started)
        ah_http_stream_end(req);
    else
        ah_http_reply(req, 499, NULL, NULL, 0);
    free(x);
}

static void on_refused(void *ud, int status, const char *code, const char *msg,
                       const ah_run_rec_t *run)
{
    agent_chat_t *x = ud;
    (void)run;
    if (x->req && x->started) {
        /* The stream has begun (a run stopped mid-way): the error is its last chunk. */
        ah_http_req_t *req = x->req;
        x->req = NULL;
        stream_error(req, ah_http_error_type(status), code, msg);
        ah_http_stream_end(req);
    } else if (x->req && status == 503) {
        ah_http_req_add_header(x->req, "Retry-After", "1");
        ah_http_reply_error(x->req, status, NULL, code, NULL, msg);
    } else if (x->req)
        ah_http_reply_error(x->req, status == 202 ? 409 : status, "invalid_request_error", code,
                            NULL, msg);
    free(x);
}

static const ah_run_observer_t observer = {
    .created = on_created, .event = on_event, .refused = on_refused, .done = on_done};

void ah_api_agent_chat(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who,
                       const char *agent, const char *body, size_t n)
{
    json_t *in = json_loadb(body, n, 0, NULL);
    json_t *msgs = json_object_get(in, "messages");
    agent_chat_t *x = calloc(1, sizeof(*x));
    char *input = msgs ? json_dumps(msgs, JSON_COMPACT) : NULL;
    if (!x || !input) {
        free(x);
        free(input);
        json_decref(in);
        ah_http_reply_error(req, 400, "invalid_request_error", "invalid_request", "messages",
                            "messages must be a non-empty array of messages");
        return;
    }
    x->req = req;
    x->stream = json_is_true(json_object_get(in, "stream"));
    x->include_usage =
        json_is_true(json_object_get(json_object_get(in, "stream_options"), "include_usage"));
    x->created = (long long)time(NULL);
    snprintf(x->model, sizeof(x->model), "agent:%s", agent);
    json_decref(in);
    ah_run_opts_t o = {
        .agent = agent,
        .input_json = input,
        .mode = x->stream ? "stream" : "sync",
        .request_id = ah_http_req_id(req),
        .who = who,
    };
    ah_buf_t err;
    ah_buf_init(&err, 0);
    int rc = ah_runtime_start(app->runtime, ah_http_req_loop(req), &o, &observer, x, &x->run, &err);
    free(input);
    if (rc) {
        free(x);
        if (rc == -ENOENT) {
            char m[300];
            snprintf(m, sizeof(m), "The model `agent:%.200s` does not exist: no such agent.",
                     agent);
            ah_http_reply_error(req, 404, "invalid_request_error", "model_not_found", "model", m);
        } else {
            ah_http_reply_error(req, rc == -EBUSY ? 429 : 400, "invalid_request_error",
                                rc == -EBUSY ? "agent_concurrency_limit" : "invalid_request", NULL,
                                err.data ? err.data : "cannot start the agent");
        }
        ah_buf_free(&err);
        return;
    }
    ah_buf_free(&err);
    ah_http_req_on_abort(req, on_abort, x);
}
