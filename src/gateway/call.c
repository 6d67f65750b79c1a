/*
 * call.c - one gateway call: candidates, attempts, retries with backoff,
 * fallbacks, breakers, timeouts, stream relay. See gateway.h for the rules.
 *
 * State machine (all on the worker loop that started the call):
 *
 *   start -> next_candidate -> attempt --(upstream answers)--> finish
 *                 ^   |            |  \--(retriable failure)--> backoff -> attempt
 *                 |   |            \--(failure, no retries left)--+
 *                 +---+--- breaker open: skip <-------------------+
 *
 * A stream "commits" when its first frame is ready for the client: before
 * that an attempt may still be retried or replaced by a fallback; after it,
 * an upstream failure ends the client's stream with an error frame.
 */
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "gateway/internal.h"
#include "http/sse_parser.h"

#define MAX_CANDIDATES    32
#define BACKOFF_BASE_S    0.25
#define BACKOFF_MAX_S     8.0
#define RETRY_AFTER_CAP_S 30.0
#define MAX_UPSTREAM_BODY (16u << 20)

enum timer_kind { T_NONE, T_START, T_BACKOFF, T_FIRST_TOKEN, T_LOCAL };

struct ah_gw_call {
    ah_gateway_t *gw;
    gw_worker_t *w;
    ah_gw_request_t req;
    ah_gw_sink_t sink;
    void *ud;
    gw_model_t *model;
    gw_target_t *cand[MAX_CANDIDATES];
    int n_cand, ci, tries;
    ah_gw_result_t res;
    bool committed, finished, cancelled;
    int busy;     /* > 0 while an entry point runs: the free waits for the outermost */
    unsigned gen; /* attempt number: lets a caller notice a new attempt started under it */
    /* current attempt */
    gw_target_t *target;
    ah_gw_upstream_t up;
    ah_http_call_t *http;
    int up_status;
    void *sst;
    ah_sse_parser_t sse;
    bool sse_init;
    ah_buf_t frames;
    bool stream_done;
    uint64_t t_start, t_attempt, t_wait_start;
    struct event *timer;
    enum timer_kind timer_kind;
    /* last failure */
    int last_status;   /* upstream HTTP status, 0 for transport */
    int last_rc;       /* transport rc */
    ah_buf_t last_err; /* OpenAI error JSON */
    double retry_after_s;
    /* in-process providers (mock): what to play back */
    ah_gw_local_t local;
    size_t local_i;
};

static void next_candidate(ah_gw_call_t *c);
static void attempt(ah_gw_call_t *c);

/* ---- helpers ---- */

static void call_free(ah_gw_call_t *c)
{
    if (c->http)
        ah_http_call_cancel(c->http);
    if (c->timer)
        event_free(c->timer);
    if (c->sst && c->target && c->target->prov->ops->stream_free)
        c->target->prov->ops->stream_free(c->sst);
    if (c->sse_init)
        ah_sse_parser_free(&c->sse);
    ah_gw_upstream_free(&c->up);
    ah_gw_local_free(&c->local);
    ah_buf_free(&c->frames);
    ah_buf_free(&c->last_err);
    free(c);
}

static void hold(ah_gw_call_t *c)
{
    c->busy++;
}

/* Ends an entry point; frees the call when it finished or was cancelled meanwhile. */
static void release(ah_gw_call_t *c)
{
    if (--c->busy == 0 && (c->finished || c->cancelled))
        call_free(c);
}

static bool gone(const ah_gw_call_t *c)
{
    return c->finished || c->cancelled;
}

/* Calls into the sink; false when the call ended meanwhile (the caller must stop). */
static bool sink_head(ah_gw_call_t *c)
{
    if (gone(c))
        return false;
    c->sink.head(c->ud, &c->res);
    return !gone(c);
}

static bool sink_data(ah_gw_call_t *c, const char *p, size_t n)
{
    if (gone(c))
        return false;
    c->sink.data(c->ud, p, n);
    return !gone(c);
}

static void sink_done(ah_gw_call_t *c, int rc)
{
    if (gone(c))
        return;
    c->finished = true;
    gw_metrics_t *m = &c->gw->m;
    char st[8];
    snprintf(st, sizeof(st), "%d", c->res.status);
    ah_counter_inc(ah_metrics_series(m->requests, c->res.model ? c->res.model : c->req.model,
                                     c->res.provider ? c->res.provider : "", st));
    c->sink.done(c->ud, rc, &c->res);
}

static void timer_stop(ah_gw_call_t *c)
{
    if (c->timer)
        event_del(c->timer);
    c->timer_kind = T_NONE;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static void timer_start(ah_gw_call_t *c, enum timer_kind kind, double secs)
{
    if (!c->timer)
        c->timer = evtimer_new(ah_loop_base(c->w->loop), on_timer, c);
    if (!c->timer)
        return;
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    c->timer_kind = kind;
    evtimer_add(c->timer, &tv);
}

/* Adds the current attempt's duration to the upstream time (once). */
static void attempt_time(ah_gw_call_t *c)
{
    if (!c->t_attempt)
        return;
    uint64_t took = ah_mono_ns() - c->t_attempt;
    c->t_attempt = 0;
    c->res.upstream_ns += took;
    ah_hist_observe(ah_metrics_series(c->gw->m.upstream, c->target->prov->cfg->name),
                    (double)took / 1e9);
}

static void end_attempt(ah_gw_call_t *c)
{
    timer_stop(c);
    if (c->http) {
        ah_http_call_cancel(c->http);
        c->http = NULL;
    }
    if (c->sst && c->target->prov->ops->stream_free)
        c->target->prov->ops->stream_free(c->sst);
    c->sst = NULL;
    if (c->sse_init) {
        ah_sse_parser_free(&c->sse);
        c->sse_init = false;
    }
    ah_gw_upstream_free(&c->up);
    ah_gw_local_free(&c->local);
    c->local_i = 0;
    ah_buf_reset(&c->frames);
    c->up_status = 0;
    c->stream_done = false;
    attempt_time(c);
}

static bool retriable_status(int st)
{
    return st == 408 || st == 409 || st == 425 || st == 429 || st >= 500;
}

/* ---- outcomes ---- */

/* A final answer that is an error (no retry makes sense, or none left). */
static void finish_error(ah_gw_call_t *c, int status, const char *code, const char *json, size_t n)
{
    c->res.status = status;
    c->res.error_code = code;
    if (!sink_head(c))
        return;
    if (!sink_data(c, json, n))
        return;
    sink_done(c, 0);
}

/*
 * Every candidate failed. What the client sees (DESIGN.md section 4): the
 * upstream's 429 stays a 429 (with its Retry-After), so clients back off;
 * timeouts are 504; anything else the upstreams did wrong is a 502.
 */
static void give_up(ah_gw_call_t *c)
{
    ah_buf_t b;
    ah_buf_init(&b, 0);
    int status;
    const char *code;
    char msg[320];
    if (c->res.attempts == 0) {
        status = 503;
        code = "no_available_target";
        c->res.retry_after_s = 1;
        ah_gw_error_json(&b, "server_error", code,
                         "every target of this model is unavailable (circuit breakers open); "
                         "retry later");
    } else if (c->last_status == 429) {
        finish_error(c, 429, "rate_limit_exceeded", c->last_err.data, c->last_err.len);
        ah_buf_free(&b);
        return;
    } else if (c->last_status == 408 || c->last_status == 504 || c->last_rc == -ETIMEDOUT) {
        status = 504;
        code = "upstream_timeout";
        ah_gw_error_json(&b, "timeout_error", code,
                         c->last_status ? "the upstream timed out"
                                        : "the upstream did not answer in time");
    } else if (c->last_status) {
        status = 502;
        code = "upstream_error";
        snprintf(msg, sizeof(msg), "the upstream failed: HTTP %d from provider %s", c->last_status,
                 c->res.provider ? c->res.provider : "?");
        ah_gw_error_json(&b, "server_error", code, msg);
    } else if (c->last_rc == -ECONNREFUSED || c->last_rc == -EHOSTUNREACH ||
               c->last_rc == -ECONNRESET) {
        status = 502;
        code = "upstream_unreachable";
        ah_gw_error_json(&b, "server_error", code,
                         c->last_err.len ? c->last_err.data : "the upstream could not be reached");
    } else {
        status = 502;
        code = "upstream_error";
        ah_gw_error_json(&b, "server_error", code,
                         c->last_err.len ? c->last_err.data : "the upstream request failed");
    }
    finish_error(c, status, code, b.data, b.len);
    ah_buf_free(&b);
}

/* The attempt failed in a way another try may fix. */
static void attempt_failed(ah_gw_call_t *c, bool count_breaker)
{
    gw_target_t *t = c->target;
    end_attempt(c);
    if (count_breaker)
        ah_breaker_record(&t->breaker, false, ah_mono_ns());
    int max_retries = t->prov->cfg->max_retries;
    if (c->tries <= max_retries && ah_breaker_state(&t->breaker) != AH_BREAKER_OPEN) {
        double delay = BACKOFF_BASE_S * (double)(1u << (c->tries - 1 < 6 ? c->tries - 1 : 6));
        if (delay > BACKOFF_MAX_S)
            delay = BACKOFF_MAX_S;
        /* Full jitter between half and all of the step keeps retries from synchronising. */
        delay = delay / 2 + (delay / 2) * (double)(ah_gw_rand(c->w) % 1000) / 1000.0;
        if (c->retry_after_s > 0) {
            if (c->retry_after_s > RETRY_AFTER_CAP_S)
                goto next; /* the upstream asks for longer than we wait: try elsewhere */
            delay = c->retry_after_s;
        }
        ah_counter_inc(ah_metrics_series(c->gw->m.retries, t->prov->cfg->name));
        c->t_wait_start = ah_mono_ns();
        timer_start(c, T_BACKOFF, delay);
        return;
    }
next:
    c->ci++;
    next_candidate(c);
}

static void record_failure(ah_gw_call_t *c, int status, int rc, const char *msg)
{
    c->last_status = status;
    c->last_rc = rc;
    ah_buf_reset(&c->last_err);
    if (msg)
        ah_buf_puts(&c->last_err, msg);
}

/* ---- streams ---- */

static bool commit_stream(ah_gw_call_t *c)
{
    if (c->committed)
        return true;
    c->committed = true;
    c->res.status = 200;
    c->res.ttft_ns = ah_mono_ns() - c->t_start;
    timer_stop(c);
    return sink_head(c);
}

static int on_sse_event(void *ud, const char *event, const char *data, size_t n, const char *id)
{
    ah_gw_call_t *c = ud;
    (void)id;
    const ah_provider_ops_t *ops = c->target->prov->ops;
    int rc = ops->stream_event(c->sst, &c->req, event, data, n, &c->frames, &c->res.usage,
                               &c->stream_done);
    return rc < 0 ? rc : 0;
}

/* Sends frames gathered so far. false: the call is gone (cancelled). */
static bool flush_frames(ah_gw_call_t *c)
{
    if (!c->frames.len)
        return true;
    if (!commit_stream(c))
        return false;
    bool ok = sink_data(c, c->frames.data, c->frames.len);
    if (ok)
        ah_buf_reset(&c->frames);
    return ok;
}

/* The stream broke after commit: error frame, then done with rc < 0. */
static void stream_broken(ah_gw_call_t *c, const char *message)
{
    gw_target_t *t = c->target;
    end_attempt(c);
    ah_breaker_record(&t->breaker, false, ah_mono_ns());
    ah_buf_t b;
    ah_buf_init(&b, 0);
    ah_buf_puts(&b, "data: ");
    ah_gw_error_json(&b, "server_error", "upstream_stream_error", message);
    ah_buf_puts(&b, "\n\n");
    c->res.error_code = "upstream_stream_error";
    bool alive = sink_data(c, b.data, b.len);
    ah_buf_free(&b);
    if (alive)
        sink_done(c, -EIO);
}

/* ---- upstream callbacks (HTTP and local share them) ---- */

static void up_headers(ah_gw_call_t *c, int status)
{
    c->up_status = status;
    if (status >= 200 && status < 300 && c->req.stream) {
        const ah_provider_ops_t *ops = c->target->prov->ops;
        ah_sse_parser_init(&c->sse, 1u << 20);
        c->sse_init = true;
        c->sst = ops->stream_new ? ops->stream_new(c->target->prov, &c->req) : NULL;
    }
}

static void up_data(ah_gw_call_t *c, const char *p, size_t n)
{
    if (!(c->up_status >= 200 && c->up_status < 300 && c->req.stream))
        return; /* buffered by the client */
    int rc = ah_sse_parser_feed(&c->sse, p, n, on_sse_event, c);
    if (rc < 0) {
        if (c->committed) {
            stream_broken(c, "the upstream sent a malformed stream");
        } else {
            record_failure(c, 0, -EIO, "the upstream sent a malformed stream");
            attempt_failed(c, true);
        }
        return;
    }
    flush_frames(c);
}

static void up_done(ah_gw_call_t *c, int rc, const char *body, size_t blen, double retry_after)
{
    gw_target_t *t = c->target;
    const ah_provider_ops_t *ops = t->prov->ops;
    c->http = NULL;
    int st = c->up_status;
    if (rc == 0 && st >= 200 && st < 300) {
        if (c->req.stream) {
            if (!c->stream_done) {
                if (c->committed) {
                    stream_broken(c, "the upstream stream ended before its end marker");
                } else {
                    record_failure(c, 0, -ECONNRESET, "the upstream stream ended early");
                    attempt_failed(c, true);
                }
                return;
            }
            ah_breaker_record(&t->breaker, true, ah_mono_ns());
            if (!flush_frames(c))
                return;
            if (!commit_stream(c))
                return;
            end_attempt(c);
            sink_done(c, 0);
            return;
        }
        ah_buf_t out;
        ah_buf_init(&out, 0);
        if (ops->response(t->prov, &c->req, body, blen, &out, &c->res.usage) != 0) {
            ah_buf_free(&out);
            record_failure(c, 0, -EIO, "the upstream answered with a malformed body");
            attempt_failed(c, true);
            return;
        }
        ah_breaker_record(&t->breaker, true, ah_mono_ns());
        /* body may live in the attempt (in-process answers): send it before the attempt ends. */
        timer_stop(c);
        attempt_time(c);
        c->res.status = st;
        c->res.ttft_ns = ah_mono_ns() - c->t_start;
        if (sink_head(c) && sink_data(c, out.len ? out.data : body, out.len ? out.len : blen))
            sink_done(c, 0);
        ah_buf_free(&out);
        return;
    }
    if (rc == 0) {
        /* An HTTP error answer from the upstream. */
        ah_buf_t err;
        ah_buf_init(&err, 0);
        int cst = ops->error(st, body, blen, &err);
        ah_buf_reset(&c->last_err);
        ah_buf_append(&c->last_err, err.data ? err.data : "", err.len);
        ah_buf_free(&err);
        c->last_status = cst;
        c->last_rc = 0;
        c->retry_after_s = retry_after;
        c->res.retry_after_s = retry_after;
        if (retriable_status(st)) {
            attempt_failed(c, st != 429);
            return;
        }
        end_attempt(c);
        finish_error(c, cst, "upstream_error", c->last_err.data, c->last_err.len);
        return;
    }
    if (c->committed) {
        stream_broken(c, rc == -ETIMEDOUT ? "the upstream stream timed out"
                                          : "the upstream connection broke mid-stream");
        return;
    }
    record_failure(c, 0, rc, NULL);
    attempt_failed(c, true);
}

/* libcurl-backed attempts */

static void http_on_headers(ah_http_call_t *h, int status, void *ud)
{
    (void)h;
    up_headers(ud, status);
}

static void http_on_data(ah_http_call_t *h, const char *p, size_t n, void *ud)
{
    ah_gw_call_t *c = ud;
    (void)h;
    hold(c);
    up_data(c, p, n);
    release(c);
}

static double parse_retry_after(const char *v)
{
    if (!v)
        return 0;
    char *end;
    double d = strtod(v, &end);
    return end != v && d >= 0 ? d : 0;
}

static void http_on_done(ah_http_call_t *h, int rc, void *ud)
{
    ah_gw_call_t *c = ud;
    size_t blen = 0;
    const char *body = ah_http_call_body(h, &blen);
    int st = ah_http_call_status(h);
    /* Only an error answer's Retry-After matters: no header search for a 2xx. */
    double ra =
        st >= 200 && st < 300 ? 0 : parse_retry_after(ah_http_call_header(h, "retry-after"));
    hold(c);
    c->http = NULL; /* finishing: not to be cancelled */
    if (rc == -ETIMEDOUT)
        record_failure(c, 0, rc, "the upstream did not answer in time");
    up_done(c, rc, body ? body : "", blen, ra);
    release(c);
}

/* ---- timers ---- */

static void local_step(ah_gw_call_t *c);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    ah_gw_call_t *c = arg;
    (void)fd;
    (void)what;
    enum timer_kind k = c->timer_kind;
    c->timer_kind = T_NONE;
    hold(c);
    switch (k) {
    case T_START:
        next_candidate(c);
        break;
    case T_BACKOFF:
        c->res.upstream_ns += ah_mono_ns() - c->t_wait_start;
        attempt(c);
        break;
    case T_FIRST_TOKEN:
        record_failure(c, 0, -ETIMEDOUT, "no first token within first_token_timeout_s");
        attempt_failed(c, true);
        break;
    case T_LOCAL:
        local_step(c);
        break;
    default:
        break;
    }
    release(c);
}

/* ---- in-process providers: play back what the provider produced ---- */

static void local_step(ah_gw_call_t *c)
{
    ah_gw_local_t *l = &c->local;
    unsigned gen = c->gen;
    if (c->local_i == 0 && !c->up_status) {
        up_headers(c, l->status);
        if (!(l->status >= 200 && l->status < 300) || !c->req.stream) {
            up_done(c, 0, l->body.data ? l->body.data : "", l->body.len, l->retry_after_s);
            return;
        }
    }
    while (c->local_i < l->n_frames) {
        if (l->drop_after >= 0 && c->local_i >= (size_t)l->drop_after) {
            up_done(c, -ECONNRESET, "", 0, 0);
            return;
        }
        const ah_buf_t *f = &l->frames[c->local_i++];
        up_data(c, f->data, f->len);
        if (gone(c) || c->gen != gen)
            return; /* the call ended, or the stream failed and another attempt runs */
        if (l->gap_s > 0 && c->local_i < l->n_frames) {
            timer_start(c, T_LOCAL, l->gap_s);
            return;
        }
    }
    up_done(c, 0, "", 0, 0);
}

/* ---- attempts ---- */

static void attempt(ah_gw_call_t *c)
{
    gw_target_t *t = c->target;
    const ah_gw_prov_t *p = t->prov;
    c->tries++;
    c->gen++;
    c->res.attempts++;
    c->res.provider = p->cfg->name;
    c->res.upstream_model = t->cfg->model;
    c->res.model = t->model->cfg->name;
    c->res.model_cfg = t->model->cfg;
    c->retry_after_s = 0;
    c->t_attempt = ah_mono_ns();
    ah_buf_t err;
    ah_buf_init(&err, 0);
    if (p->ops->in_process) {
        int rc = ah_gw_local_run(p, &c->req, t->cfg->model, &c->local, &err);
        if (rc) {
            /* A request the provider cannot take (bad options): final 400. */
            ah_buf_t b;
            ah_buf_init(&b, 0);
            ah_gw_error_json(&b, "invalid_request_error", "invalid_request",
                             err.data ? err.data : "invalid request");
            ah_buf_free(&err);
            end_attempt(c);
            finish_error(c, 400, "invalid_request", b.data, b.len);
            ah_buf_free(&b);
            return;
        }
        ah_buf_free(&err);
        double first = c->req.stream ? c->local.ttft_s : c->local.latency_s;
        if (first > 0)
            timer_start(c, T_LOCAL, first);
        else
            local_step(c);
        return;
    }
    int rc = p->ops->build(p, &c->req, t->cfg->model, &c->up, &err);
    if (rc) {
        ah_buf_t b;
        ah_buf_init(&b, 0);
        ah_gw_error_json(&b, "invalid_request_error", "invalid_request",
                         err.data ? err.data : "the request cannot be sent to this provider");
        ah_buf_free(&err);
        end_attempt(c);
        finish_error(c, 400, "invalid_request", b.data, b.len);
        ah_buf_free(&b);
        return;
    }
    ah_buf_free(&err);
    ah_gw_upstream_finish(&c->up);
    const ah_config_provider_t *pc = p->cfg;
    ah_http_call_opts_t o = {
        .method = "POST",
        .url = c->up.url.data,
        .headers = c->up.headers,
        .body = c->up.body.data,
        .body_len = c->up.body.len,
        .connect_timeout_s = pc->connect_timeout_s,
        .first_byte_timeout_s = pc->first_token_timeout_s,
        .total_timeout_s = pc->timeout_s,
        .max_response_bytes = MAX_UPSTREAM_BODY,
        .stream = c->req.stream,
        .on_headers = http_on_headers,
        .on_data = http_on_data,
        .on_done = http_on_done,
        .ud = c,
    };
    rc = ah_http_call_start(c->w->client, &o, &c->http);
    if (rc) {
        c->http = NULL;
        record_failure(c, 0, rc, "could not start the upstream request");
        attempt_failed(c, false);
        return;
    }
    if (c->req.stream && pc->first_token_timeout_s > 0)
        timer_start(c, T_FIRST_TOKEN, pc->first_token_timeout_s);
}

static void next_candidate(ah_gw_call_t *c)
{
    while (c->ci < c->n_cand) {
        gw_target_t *t = c->cand[c->ci];
        if (c->req.kind == AH_GW_EMBEDDINGS && !t->prov->ops->has_embeddings) {
            c->ci++;
            continue;
        }
        if (!ah_breaker_allow(&t->breaker, ah_mono_ns())) {
            c->ci++;
            continue;
        }
        gw_model_t *prev = c->target ? c->target->model : c->model;
        if (prev != t->model)
            ah_counter_inc(
                ah_metrics_series(c->gw->m.fallbacks, prev->cfg->name, t->model->cfg->name));
        c->target = t;
        c->tries = 0;
        attempt(c);
        return;
    }
    give_up(c);
}

/* Appends m's targets in weighted random order, then its fallbacks' (no model twice). */
static void add_candidates(ah_gw_call_t *c, gw_model_t *m, gw_model_t **seen, int *n_seen)
{
    for (int i = 0; i < *n_seen; i++)
        if (seen[i] == m)
            return;
    if (*n_seen >= MAX_CANDIDATES)
        return;
    seen[(*n_seen)++] = m;
    bool used[MAX_CANDIDATES] = {false};
    size_t nt = m->n_targets < MAX_CANDIDATES ? m->n_targets : MAX_CANDIDATES;
    int remaining = m->total_weight;
    for (size_t k = 0; k < nt && c->n_cand < MAX_CANDIDATES; k++) {
        int r = remaining > 0 ? (int)(ah_gw_rand(c->w) % (uint64_t)remaining) : 0;
        size_t pick = 0;
        for (size_t i = 0; i < nt; i++) {
            if (used[i])
                continue;
            int wgt = m->targets[i].cfg->weight > 0 ? m->targets[i].cfg->weight : 1;
            pick = i;
            if (r < wgt)
                break;
            r -= wgt;
        }
        used[pick] = true;
        remaining -= m->targets[pick].cfg->weight > 0 ? m->targets[pick].cfg->weight : 1;
        c->cand[c->n_cand++] = &m->targets[pick];
    }
    for (size_t f = 0; f < m->n_fallbacks; f++)
        add_candidates(c, m->fallbacks[f], seen, n_seen);
}

int ah_gateway_start(ah_gateway_t *gw, ah_loop_t *loop, const ah_gw_request_t *req,
                     const ah_gw_sink_t *sink, void *ud, ah_gw_call_t **out)
{
    gw_worker_t *w = ah_gw_tl_worker;
    if (!w || w->gw != gw || w->loop != loop)
        return -EINVAL;
    gw_model_t *m = ah_gw_find_model(gw, req->model);
    if (!m)
        return -ENOENT;
    ah_gw_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->gw = gw;
    c->w = w;
    c->req = *req;
    c->sink = *sink;
    c->ud = ud;
    c->model = m;
    c->t_start = ah_mono_ns();
    c->res.model = m->cfg->name;
    c->res.model_cfg = m->cfg;
    ah_buf_init(&c->frames, 0);
    ah_buf_init(&c->last_err, 0);
    gw_model_t *seen[MAX_CANDIDATES] = {0};
    int n_seen = 0;
    add_candidates(c, m, seen, &n_seen);
    bool servable = false;
    for (int i = 0; i < c->n_cand; i++)
        if (req->kind != AH_GW_EMBEDDINGS || c->cand[i]->prov->ops->has_embeddings)
            servable = true;
    if (!servable) {
        call_free(c);
        return -ENOTSUP;
    }
    /*
     * The first step runs from the loop, so the caller holds the handle before
     * any sink call: the timer event is made active rather than armed with
     * 0 s, so it runs later in this loop turn instead of after one more
     * epoll_wait (timer_stop takes it off the active queue too).
     */
    c->timer = evtimer_new(ah_loop_base(w->loop), on_timer, c);
    if (!c->timer) {
        call_free(c);
        return -ENOMEM;
    }
    c->timer_kind = T_START;
    event_active(c->timer, EV_TIMEOUT, 1);
    *out = c;
    return 0;
}

void ah_gateway_cancel(ah_gw_call_t *c)
{
    if (!c || c->cancelled || c->finished)
        return;
    c->cancelled = true;
    if (c->http) {
        ah_http_call_cancel(c->http);
        c->http = NULL;
    }
    timer_stop(c);
    if (c->busy == 0)
        call_free(c);
}
