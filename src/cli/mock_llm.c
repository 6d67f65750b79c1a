/*
 * mock_llm.c - `agenthub mock-llm`: the mock model (gateway/mock.h) over HTTP,
 * speaking the OpenAI (chat completions, embeddings, models) and Anthropic
 * (messages) dialects, with faults and latency chosen by options in the
 * request's "model" (docs/mock-llm.md). It is the upstream of integration
 * tests and benchmarks, so the plain non-streaming answer takes no timer, no
 * allocation beyond the JSON it must parse and write, and one lock (the
 * per-model counters).
 *
 * Delays never block a loop: each delayed or streamed answer is a job driven
 * by one libevent timer on the request's worker loop. A client that goes away
 * stops the job's timer (ah_http_req_on_abort), is logged as "client
 * disconnected" and counted in GET /mock/stats, so a test can check that an
 * upstream saw a connection close.
 *
 * Shutdown: SIGTERM/SIGINT drains (listeners close, answers in flight finish)
 * for up to --grace seconds, as `agenthub serve` does; a second signal exits.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "core/log.h"
#include "gateway/mock.h"
#include "http/server.h"
#include "http/sse.h"
#include "obs/process.h"

#define DEFAULT_LISTEN  "127.0.0.1:18080"
#define DEFAULT_GRACE_S 10.0
#define MAX_BODY_BYTES  (16u << 20)

typedef enum { EP_CHAT, EP_EMBEDDINGS, EP_MESSAGES } endpoint_t;

static const char *const endpoint_path[] = {"/v1/chat/completions", "/v1/embeddings",
                                            "/v1/messages"};

/* ---- small helpers ---- */

static void reply_json_obj(ah_http_req_t *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) {
        ah_http_reply_error(req, 500, NULL, NULL, NULL, "mock-llm: out of memory");
        return;
    }
    ah_http_reply_json(req, status, s, strlen(s));
    free(s);
}

/* An error body in the endpoint's dialect (OpenAI shape, or Anthropic's). */
static char *error_body(endpoint_t ep, int status, const char *param, const char *message)
{
    json_t *o;
    if (ep == EP_MESSAGES) {
        o = ah_mock_anthropic_error(status, message);
    } else {
        const char *code = status == 429 ? "rate_limit_exceeded" : NULL;
        o = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type",
                      ah_http_error_type(status), "param", param, "code", code);
    }
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static void reply_error(ah_http_req_t *req, endpoint_t ep, int status, const char *param,
                        const char *message)
{
    char *body = error_body(ep, status, param, message);
    if (!body) {
        ah_http_reply_error(req, 500, NULL, NULL, NULL, "mock-llm: out of memory");
        return;
    }
    ah_http_reply_json(req, status, body, strlen(body));
    free(body);
}

/* ---- jobs: answers that wait (latency, pacing) or stream ---- */

typedef enum { PH_HEAD, PH_BODY } phase_t;

typedef struct job {
    ah_http_req_t *req;
    struct event *timer;
    endpoint_t ep;
    phase_t phase;
    bool stream;
    bool fault; /* the answer is the injected error in body */
    ah_mock_opts_t opts;
    char model[AH_MOCK_MODEL_MAX]; /* the full model string, for counters and logs */
    /* non-streaming answer */
    int status;
    char *body;
    size_t body_len;
    /* streaming answer */
    ah_mock_stream_t ev;
    size_t next;         /* next event to send */
    size_t sent;         /* events sent (the malformed one included) */
    size_t malformed_at; /* a malformed event goes before this one; SIZE_MAX = none */
    bool busy;           /* inside job_run: an abort only marks the job */
    bool aborted;
    bool streaming; /* the SSE head was sent */
} job_t;

static void job_run(job_t *j);

static void job_free(job_t *j)
{
    if (j->timer)
        event_free(j->timer);
    free(j->body);
    ah_mock_stream_free(&j->ev);
    free(j);
}

/* Makes the terminal call (unless made) and frees the job. */
static void job_end(job_t *j, bool terminal_done)
{
    if (!terminal_done) {
        if (j->streaming)
            ah_http_stream_end(j->req);
        else
            ah_http_reply(j->req, 499, NULL, NULL, 0); /* the client is gone: only frees */
    }
    job_free(j);
}

static void on_abort(void *ud)
{
    job_t *j = ud;
    j->aborted = true;
    if (j->timer)
        evtimer_del(j->timer);
    ah_mock_count_abort(j->model);
    ah_log(AH_LOG_INFO, "mock", "client disconnected",
           AH_LF_STR("request_id", ah_http_req_id(j->req)), AH_LF_STR("path", endpoint_path[j->ep]),
           AH_LF_STR("model", j->model), AH_LF_BOOL("stream", j->stream),
           AH_LF_INT("chunks_sent", j->sent), AH_LF_END);
    if (!j->busy)
        job_end(j, false);
}

static void on_timer(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    job_run(ud);
}

static void arm(job_t *j, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(j->timer, &tv);
}

/* Cuts the connection once every byte already queued reached the socket. */
static void cut_when_drained(void *ud)
{
    job_t *j = ud;
    if (j->aborted) {
        job_end(j, false);
        return;
    }
    ah_http_req_close(j->req); /* terminal: the connection ends without the rest */
    job_end(j, true);
}

static void cut(job_t *j)
{
    if (ah_http_stream_pending(j->req) > 0 && !j->aborted) {
        ah_http_req_on_drain(j->req, cut_when_drained, j);
        return;
    }
    cut_when_drained(j);
}

/* Appends event e (or, when malformed, the first half of its JSON) to out. */
static int format_event(ah_buf_t *out, const ah_mock_event_t *e, bool malformed)
{
    return ah_sse_format(out, e->name, NULL, e->data, malformed ? e->len / 2 : e->len);
}

typedef enum { STEP_WAIT, STEP_DONE, STEP_GONE } step_t;

/*
 * Sends the events due now: every event up to and including the next token
 * (the first step also sends what precedes the first token), then waits
 * token_ms. Ends the stream after the last event, or cuts it at drop_after.
 * STEP_WAIT: the timer is armed. STEP_DONE: the job ended and was freed (or
 * waits to be cut). STEP_GONE: the client left; the caller ends the job.
 */
static step_t send_due(job_t *j)
{
    ah_buf_t out = AH_BUF_INIT;
    bool token_sent = false, cut_now = false;
    int rc = 0;
    while (j->next < j->ev.n) {
        const ah_mock_event_t *e = &j->ev.ev[j->next];
        if (j->opts.drop_after >= 0 && j->sent >= (size_t)j->opts.drop_after) {
            cut_now = true;
            break;
        }
        if (e->token && token_sent && j->opts.token_ms > 0)
            break;
        bool malformed = j->next == j->malformed_at;
        if (malformed)
            j->malformed_at = SIZE_MAX; /* sent before the event itself, which follows whole */
        else
            j->next++;
        rc |= format_event(&out, e, malformed);
        j->sent++;
        token_sent |= e->token && !malformed;
    }
    bool last = j->next == j->ev.n && !cut_now;
    if (last && j->opts.drop_after >= 0 && j->sent >= (size_t)j->opts.drop_after)
        cut_now = true; /* drop_after = every chunk: the stream still never ends cleanly */
    else if (last && j->ep != EP_MESSAGES)
        rc |= ah_buf_puts(&out, "data: [DONE]\n\n");
    if (rc == 0 && out.len > 0)
        rc = ah_http_stream_write(j->req, out.data, out.len);
    ah_buf_free(&out);
    if (j->aborted || rc == -EPIPE)
        return STEP_GONE;
    if (rc != 0) { /* -ENOBUFS (client too slow), -ENOMEM */
        ah_log(AH_LOG_WARN, "mock", "stream stopped early", AH_LF_STR("error", strerror(-rc)),
               AH_LF_STR("request_id", ah_http_req_id(j->req)), AH_LF_END);
        last = true;
        cut_now = false;
    }
    if (cut_now) {
        j->busy = false;
        cut(j);
        return STEP_DONE;
    }
    if (last) {
        ah_http_stream_end(j->req);
        job_free(j);
        return STEP_DONE;
    }
    arm(j, j->opts.token_ms);
    return STEP_WAIT;
}

/* One step of a job: on its first call and on each timer. */
static void job_run(job_t *j)
{
    j->busy = true;
    if (j->phase == PH_HEAD) {
        if (!j->stream || j->fault) {
            if (j->opts.drop_after >= 0 && !j->fault) {
                j->busy = false;
                cut(j); /* a non-streaming answer with drop_after: no answer at all */
                return;
            }
            ah_http_reply_json(j->req, j->status, j->body, j->body_len);
            job_free(j);
            return;
        }
        j->phase = PH_BODY;
        int rc = ah_sse_start(j->req);
        j->streaming = true;
        if (rc == 0 && !j->aborted && j->opts.ttft_ms > 0) {
            arm(j, j->opts.ttft_ms);
            j->busy = false;
            return;
        }
        if (rc != 0 || j->aborted) {
            job_end(j, false);
            return;
        }
    }
    switch (send_due(j)) {
    case STEP_WAIT:
        j->busy = false;
        break;
    case STEP_DONE:
        break;
    case STEP_GONE:
        job_end(j, false);
        break;
    }
}

/* ---- model endpoints ---- */

/* Sends an answer now, or through a job when it must wait or stream. */
static void deliver(job_t *j)
{
    if (j->opts.latency_ms == 0 && (!j->stream || j->fault) &&
        (j->fault || j->opts.drop_after < 0)) {
        ah_http_reply_json(j->req, j->status, j->body, j->body_len);
        job_free(j);
        return;
    }
    j->timer = evtimer_new(ah_loop_base(ah_http_req_loop(j->req)), on_timer, j);
    if (!j->timer) {
        ah_http_reply_error(j->req, 500, NULL, NULL, NULL, "mock-llm: cannot create a timer");
        job_free(j);
        return;
    }
    ah_http_req_on_abort(j->req, on_abort, j);
    if (j->opts.latency_ms > 0) {
        arm(j, j->opts.latency_ms);
        return;
    }
    job_run(j);
}

static void add_retry_headers(ah_http_req_t *req, const ah_mock_opts_t *o)
{
    char v[24];
    if (o->retry_after_s >= 0) {
        snprintf(v, sizeof(v), "%d", o->retry_after_s);
        ah_http_req_add_header(req, "Retry-After", v);
    }
    if (o->retry_after_ms >= 0) {
        snprintf(v, sizeof(v), "%d", o->retry_after_ms);
        ah_http_req_add_header(req, "retry-after-ms", v);
    }
}

/* Builds the success answer of a non-fault request into the job. 0, or an HTTP status. */
static int build_answer(job_t *j, const json_t *in, ah_buf_t *err)
{
    json_t *out = NULL;
    ah_mock_reply_t r;
    long long created = (long long)time(NULL);
    int rc = 0;
    if (j->ep == EP_EMBEDDINGS) {
        out = ah_mock_embeddings(in, j->model, err);
        if (!out)
            return err->len ? 400 : 500;
    } else {
        rc = j->ep == EP_CHAT ? ah_mock_chat(in, &r, err) : ah_mock_messages(in, &r, err);
        if (rc)
            return rc == -EINVAL ? 400 : 500;
        if (j->stream && j->ep == EP_CHAT) {
            const json_t *so = json_object_get(in, "stream_options");
            bool usage = json_is_true(json_object_get(so, "include_usage"));
            rc = ah_mock_chat_chunks(&r, j->model, created, usage, &j->ev);
        } else if (j->stream) {
            rc = ah_mock_message_events(&r, j->model, &j->ev);
        } else {
            out = j->ep == EP_CHAT ? ah_mock_chat_completion(&r, j->model, created)
                                   : ah_mock_message(&r, j->model);
            rc = out ? 0 : -ENOMEM;
        }
        ah_mock_reply_free(&r);
        if (rc)
            return 500;
    }
    if (j->stream) {
        j->malformed_at = j->opts.malformed ? j->ev.n / 2 : SIZE_MAX;
        return 0;
    }
    j->body = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (!j->body)
        return 500;
    j->body_len = strlen(j->body);
    if (j->opts.malformed)
        j->body_len /= 2; /* a body cut in the middle: invalid JSON */
    j->status = 200;
    return 0;
}

static void handle_model_call(ah_http_req_t *req, endpoint_t ep)
{
    size_t blen;
    const char *body = ah_http_req_body(req, &blen);
    json_error_t jerr;
    json_t *in = json_loadb(body, blen, 0, &jerr);
    if (!json_is_object(in)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the request body is not a JSON object: %s (line %d)",
                 in ? "another JSON value" : jerr.text, jerr.line);
        json_decref(in);
        reply_error(req, ep, 400, NULL, msg);
        return;
    }
    const char *model = json_string_value(json_object_get(in, "model"));
    if (!model) {
        json_decref(in);
        reply_error(req, ep, 400, "model", "model: required (a string)");
        return;
    }
    job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        json_decref(in);
        ah_http_reply_error(req, 500, NULL, NULL, NULL, "mock-llm: out of memory");
        return;
    }
    j->req = req;
    j->ep = ep;
    j->malformed_at = SIZE_MAX;
    j->stream = ep != EP_EMBEDDINGS && json_is_true(json_object_get(in, "stream"));
    ah_buf_t err = AH_BUF_INIT;
    if (ah_mock_opts_parse(model, &j->opts, &err) != 0) {
        reply_error(req, ep, 400, "model", err.data);
        goto done;
    }
    snprintf(j->model, sizeof(j->model), "%s", model);
    j->fault = ah_mock_count_request(model, &j->opts);
    if (j->fault) {
        char msg[AH_MOCK_MODEL_MAX + 96];
        snprintf(msg, sizeof(msg), "mock-llm: injected status %d for model \"%s\"", j->opts.status,
                 model);
        j->status = j->opts.status;
        j->body = error_body(ep, j->status, NULL, msg);
        if (!j->body) {
            ah_http_reply_error(req, 500, NULL, NULL, NULL, "mock-llm: out of memory");
            goto done;
        }
        j->body_len = strlen(j->body);
        add_retry_headers(req, &j->opts);
    } else {
        int status = build_answer(j, in, &err);
        if (status) {
            reply_error(req, ep, status, NULL,
                        err.len ? err.data : "mock-llm: out of memory building the answer");
            goto done;
        }
    }
    json_decref(in);
    ah_buf_free(&err);
    deliver(j); /* owns j now */
    return;
done:
    json_decref(in);
    ah_buf_free(&err);
    job_free(j);
}

static void h_chat(ah_http_req_t *req)
{
    handle_model_call(req, EP_CHAT);
}

static void h_embeddings(ah_http_req_t *req)
{
    handle_model_call(req, EP_EMBEDDINGS);
}

static void h_messages(ah_http_req_t *req)
{
    handle_model_call(req, EP_MESSAGES);
}

/* ---- other routes ---- */

static const char *const listed_models[] = {"echo", "gpt-test", "mock"};

static void h_models(ah_http_req_t *req)
{
    bool anthropic = ah_http_req_header(req, "anthropic-version", NULL) != NULL;
    json_t *data = json_array();
    for (size_t i = 0; i < sizeof(listed_models) / sizeof(listed_models[0]); i++) {
        json_t *m = anthropic ? json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id",
                                          listed_models[i], "display_name", listed_models[i],
                                          "created_at", "2024-01-01T00:00:00Z")
                              : json_pack("{s:s, s:s, s:i, s:s}", "id", listed_models[i], "object",
                                          "model", "created", 0, "owned_by", "agenthub-mock");
        if (json_array_append_new(data, m) != 0) {
            json_decref(data);
            data = NULL;
            break;
        }
    }
    json_t *o = !data       ? NULL
                : anthropic ? json_pack("{s:o, s:b, s:s, s:s}", "data", data, "has_more", 0,
                                        "first_id", listed_models[0], "last_id", "mock")
                            : json_pack("{s:s, s:o}", "object", "list", "data", data);
    reply_json_obj(req, 200, o);
}

static void h_healthz(ah_http_req_t *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    ah_http_reply_json(req, 200, ok, sizeof(ok) - 1);
}

static void h_stats(ah_http_req_t *req)
{
    reply_json_obj(req, 200, ah_mock_stats());
}

static void h_reset(ah_http_req_t *req)
{
    ah_mock_stats_reset();
    reply_json_obj(req, 200, ah_mock_stats());
}

/* ---- command ---- */

static void usage(FILE *f)
{
    fputs("usage: agenthub mock-llm [--listen ADDR] [--workers N] [--grace S] [--access-log]\n"
          "\n"
          "Serves the deterministic mock model over HTTP in the OpenAI and Anthropic\n"
          "dialects, with faults and latency chosen by options in the request's model\n"
          "(\"gpt-test?status=429&retry_after=1\"; see docs/mock-llm.md).\n"
          "Stops gracefully on SIGTERM or SIGINT.\n"
          "\n"
          "options:\n"
          "  --listen ADDR   host:port to listen on (default " DEFAULT_LISTEN "; port 0 = any)\n"
          "  --workers N     worker threads (default 0 = one per core)\n"
          "  --grace S       seconds answers in flight get at shutdown (default 10)\n"
          "  --access-log    log every request\n"
          "  -h, --help      show this help\n",
          f);
}

static int wait_signal(const sigset_t *set, double timeout_s)
{
    siginfo_t si;
    if (timeout_s < 0)
        return sigwaitinfo(set, &si);
    struct timespec ts = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e9)};
    return sigtimedwait(set, &si, &ts);
}

static int parse_args(int argc, char **argv, const char **listen, long *workers, double *grace,
                      bool *access_log)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'}, {"workers", required_argument, NULL, 'w'},
        {"grace", required_argument, NULL, 'g'},  {"access-log", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'l':
            *listen = optarg;
            break;
        case 'w':
            *workers = strtol(optarg, &end, 10);
            if (*end || end == optarg || *workers < 0 || *workers > 1024) {
                fprintf(stderr, "agenthub mock-llm: --workers takes a number from 0 to 1024\n");
                return 2;
            }
            break;
        case 'g':
            *grace = strtod(optarg, &end);
            if (*end || end == optarg || !(*grace >= 0 && *grace <= 3600)) {
                fprintf(stderr, "agenthub mock-llm: --grace takes seconds from 0 to 3600\n");
                return 2;
            }
            break;
        case 'a':
            *access_log = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "agenthub mock-llm: unknown or incomplete option \"%s\"\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "agenthub mock-llm: unexpected argument \"%s\"\n\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1; /* go on */
}

static int add_routes(ah_router_t *r)
{
    int rc = 0;
    rc |= ah_router_add(r, AH_HTTP_POST, "/v1/chat/completions", (void *)h_chat, 0);
    rc |= ah_router_add(r, AH_HTTP_POST, "/v1/embeddings", (void *)h_embeddings, 0);
    rc |= ah_router_add(r, AH_HTTP_POST, "/v1/messages", (void *)h_messages, 0);
    /* Azure OpenAI's paths: the deployment is in the path, the model options in the body. */
    rc |= ah_router_add(r, AH_HTTP_POST, "/openai/deployments/{deployment}/chat/completions",
                        (void *)h_chat, 0);
    rc |= ah_router_add(r, AH_HTTP_POST, "/openai/deployments/{deployment}/embeddings",
                        (void *)h_embeddings, 0);
    rc |= ah_router_add(r, AH_HTTP_GET, "/v1/models", (void *)h_models, 0);
    rc |= ah_router_add(r, AH_HTTP_GET, "/healthz", (void *)h_healthz, 0);
    rc |= ah_router_add(r, AH_HTTP_GET, "/mock/stats", (void *)h_stats, 0);
    rc |= ah_router_add(r, AH_HTTP_POST, "/mock/reset", (void *)h_reset, 0);
    return rc ? -EINVAL : 0;
}

int ah_cli_mock_llm(int argc, char **argv)
{
    const char *listen = DEFAULT_LISTEN;
    long workers = 0;
    double grace = DEFAULT_GRACE_S;
    bool access_log = false;
    int rc = parse_args(argc, argv, &listen, &workers, &grace, &access_log);
    if (rc >= 0)
        return rc;

    /* Signals go to this thread only: block them before any thread starts. */
    ah_process_raise_nofile(); /* each of its up to 10,000 connections is a descriptor */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int exit_code = 1;
    ah_http_server_t *srv = NULL;
    ah_buf_t err = AH_BUF_INIT;
    ah_router_t *router = ah_router_new();
    if (!router || add_routes(router) != 0) {
        fprintf(stderr, "agenthub mock-llm: cannot build the route table\n");
        goto out;
    }
    ah_http_server_opts_t so = {
        .listen = listen,
        .workers = (int)workers,
        .max_body_bytes = MAX_BODY_BYTES,
        .header_timeout_s = 10,
        .body_timeout_s = 30,
        .idle_timeout_s = 75,
        .access_log = access_log,
        .router = router,
    };
    rc = ah_http_server_new(&so, &srv, &err);
    if (rc) {
        ah_log(AH_LOG_ERROR, "http", "cannot start the HTTP server",
               AH_LF_STR("error", err.data ? err.data : strerror(-rc)), AH_LF_END);
        fprintf(stderr, "agenthub mock-llm: %s\n", err.data ? err.data : strerror(-rc));
        goto out;
    }
    char addr[96];
    ah_http_server_addr(srv, addr, sizeof(addr));
    if ((rc = ah_http_server_start(srv)) != 0) {
        ah_log(AH_LOG_ERROR, "http", "cannot start worker threads",
               AH_LF_STR("error", strerror(-rc)), AH_LF_END);
        goto out;
    }
    ah_log(AH_LOG_INFO, "http", "listening", AH_LF_STR("addr", addr),
           AH_LF_INT("workers", ah_http_server_workers(srv)), AH_LF_STR("mode", "mock-llm"),
           AH_LF_END);
    printf("agenthub mock-llm listening on http://%s (%d workers)\n", addr,
           ah_http_server_workers(srv));
    fflush(stdout);

    int sig = wait_signal(&sigs, -1);
    ah_log(AH_LOG_INFO, "server", "shutdown started: draining",
           AH_LF_STR("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"), AH_LF_DBL("grace_s", grace),
           AH_LF_END);
    ah_http_server_drain(srv);
    uint64_t deadline = ah_mono_ns() + (uint64_t)(grace * 1e9);
    for (;;) {
        ah_http_server_stats_t st;
        ah_http_server_stats(srv, &st);
        if ((st.connections == 0 && st.in_flight == 0) || ah_mono_ns() >= deadline)
            break;
        if (wait_signal(&sigs, 0.05) > 0) {
            ah_log(AH_LOG_WARN, "server", "second signal: exiting now", AH_LF_END);
            _exit(1);
        }
    }
    if (ah_http_server_wait(srv, ah_mono_ns() >= deadline ? 0 : 1.0) == -ETIMEDOUT)
        ah_log(AH_LOG_WARN, "server", "grace period over: cut remaining connections", AH_LF_END);
    ah_log(AH_LOG_INFO, "server", "shutdown complete", AH_LF_END);
    exit_code = 0;

out:
    if (srv && exit_code != 0)
        ah_http_server_wait(srv, 0);
    ah_http_server_free(srv);
    ah_router_free(router);
    ah_mock_stats_reset();
    ah_buf_free(&err);
    return exit_code;
}
