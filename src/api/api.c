/*
 * api.c - route table, authentication, role checks and HTTP metrics.
 *
 * Auth order for a route that needs a role: "Authorization: Bearer KEY" or
 * "x-api-key: KEY" -> keyring lookup (in memory; no store read) -> role
 * check. Failures answer 401 (no, unknown, revoked or expired key) or 403
 * (role too low) in the OpenAI error shape; the key itself is never logged.
 */
#include "api/api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "agents/queue.h"
#include "core/log.h"
#include "obs/metrics.h"

typedef struct api_route {
    ah_http_method_t method;
    const char *pattern;
    ah_api_handler_fn fn;
    ah_role_t role; /* AH_ROLE_NONE = public */
} api_route_t;

static const api_route_t routes[] = {
    {AH_HTTP_GET, "/healthz", ah_api_healthz, AH_ROLE_NONE},
    {AH_HTTP_GET, "/readyz", ah_api_readyz, AH_ROLE_NONE},
    {AH_HTTP_GET, "/metrics", ah_api_metrics, AH_ROLE_NONE},
    {AH_HTTP_POST, "/v1/chat/completions", ah_api_chat, AH_ROLE_USER},
    {AH_HTTP_POST, "/v1/embeddings", ah_api_embeddings, AH_ROLE_USER},
    {AH_HTTP_GET, "/v1/models", ah_api_models, AH_ROLE_VIEWER},
    {AH_HTTP_POST, "/v1/keys", ah_api_keys_create, AH_ROLE_ADMIN},
    {AH_HTTP_GET, "/v1/keys", ah_api_keys_list, AH_ROLE_ADMIN},
    {AH_HTTP_GET, "/v1/keys/{id}", ah_api_keys_get, AH_ROLE_ADMIN},
    {AH_HTTP_DELETE, "/v1/keys/{id}", ah_api_keys_revoke, AH_ROLE_ADMIN},
    {AH_HTTP_GET, "/v1/keys/{id}/limits", ah_api_key_limits_get, AH_ROLE_ADMIN},
    {AH_HTTP_PUT, "/v1/keys/{id}/limits", ah_api_key_limits_put, AH_ROLE_ADMIN},
    {AH_HTTP_GET, "/v1/usage", ah_api_usage, AH_ROLE_VIEWER},
    {AH_HTTP_POST, "/v1/agents", ah_api_agents_create, AH_ROLE_DEVELOPER},
    {AH_HTTP_GET, "/v1/agents", ah_api_agents_list, AH_ROLE_VIEWER},
    {AH_HTTP_GET, "/v1/agents/{name}", ah_api_agents_get, AH_ROLE_VIEWER},
    {AH_HTTP_DELETE, "/v1/agents/{name}", ah_api_agents_archive, AH_ROLE_DEVELOPER},
    {AH_HTTP_GET, "/v1/agents/{name}/versions", ah_api_agents_versions, AH_ROLE_VIEWER},
    {AH_HTTP_POST, "/v1/agents/{name}/rollback", ah_api_agents_rollback, AH_ROLE_DEVELOPER},
    {AH_HTTP_POST, "/v1/agents/{name}/runs", ah_api_runs_create, AH_ROLE_USER},
    {AH_HTTP_GET, "/v1/runs", ah_api_runs_list, AH_ROLE_VIEWER},
    {AH_HTTP_GET, "/v1/runs/{id}", ah_api_runs_get, AH_ROLE_VIEWER},
    {AH_HTTP_GET, "/v1/runs/{id}/events", ah_api_runs_events, AH_ROLE_VIEWER},
    {AH_HTTP_POST, "/v1/runs/{id}/cancel", ah_api_runs_cancel, AH_ROLE_USER},
    {AH_HTTP_POST, "/v1/runs/{id}/approvals", ah_api_runs_approve, AH_ROLE_DEVELOPER},
    {AH_HTTP_GET, "/v1/sessions/{id}", ah_api_sessions_get, AH_ROLE_VIEWER},
    {AH_HTTP_GET, "/v1/webhooks/deliveries", ah_api_webhooks_list, AH_ROLE_ADMIN},
    {AH_HTTP_GET, "/v1/webhooks/deliveries/{id}", ah_api_webhooks_get, AH_ROLE_ADMIN},
    {AH_HTTP_POST, "/v1/webhooks/deliveries/{id}/retry", ah_api_webhooks_retry, AH_ROLE_ADMIN},
    {AH_HTTP_DELETE, "/v1/sessions/{id}", ah_api_sessions_delete, AH_ROLE_USER},
};

int ah_api_register(ah_router_t *r)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = ah_router_add(r, routes[i].method, routes[i].pattern, (void *)&routes[i],
                               (unsigned)routes[i].role);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- metrics ---- */

static ah_metric_family_t *m_requests, *m_duration;

static double stat_connections(void *ud)
{
    ah_app_t *app = ud;
    ah_http_server_stats_t st;
    if (!app->server)
        return 0;
    ah_http_server_stats(app->server, &st);
    return (double)st.connections;
}

static double stat_in_flight(void *ud)
{
    ah_app_t *app = ud;
    ah_http_server_stats_t st;
    if (!app->server)
        return 0;
    ah_http_server_stats(app->server, &st);
    return (double)st.in_flight;
}

static double stat_rejected(void *ud)
{
    ah_app_t *app = ud;
    ah_http_server_stats_t st;
    if (!app->server)
        return 0;
    ah_http_server_stats(app->server, &st);
    return (double)st.rejected_overload;
}

static double stat_keys(void *ud)
{
    ah_app_t *app = ud;
    return app->keyring ? (double)ah_keyring_count(app->keyring) : 0;
}

static double stat_store_queue(void *ud)
{
    ah_app_t *app = ud;
    ah_store_stats_t st;
    if (!app->store)
        return 0;
    ah_store_stats(app->store, &st);
    return (double)(st.write_queue + st.read_queue);
}

static double stat_store_batches(void *ud)
{
    ah_app_t *app = ud;
    ah_store_stats_t st;
    if (!app->store)
        return 0;
    ah_store_stats(app->store, &st);
    return (double)st.batches;
}

static double stat_store_errors(void *ud)
{
    ah_app_t *app = ud;
    ah_store_stats_t st;
    if (!app->store)
        return 0;
    ah_store_stats(app->store, &st);
    return (double)st.errors;
}

static double stat_ready(void *ud)
{
    ah_app_t *app = ud;
    return atomic_load(&app->store_ok) && atomic_load(&app->schema_ok) &&
           !(app->server && ah_http_server_draining(app->server));
}

int ah_api_metrics_init(ah_app_t *app)
{
    static const char *const req_labels[] = {"method", "route", "status"};
    static const char *const dur_labels[] = {"method", "route"};
    m_requests =
        ah_metrics_counter("agenthub_http_requests_total",
                           "HTTP requests finished, by method, route and status.", 3, req_labels);
    m_duration = ah_metrics_histogram(
        "agenthub_http_request_duration_seconds",
        "Time from a complete request head to the terminal reply, by method and route.", 2,
        dur_labels, ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    int rc = 0;
    rc |= ah_metrics_gauge_fn("agenthub_http_connections", "Open client connections.",
                              stat_connections, app);
    rc |= ah_metrics_gauge_fn("agenthub_http_requests_in_flight", "Requests being handled now.",
                              stat_in_flight, app);
    rc |= ah_metrics_counter_fn("agenthub_http_connections_rejected_total",
                                "Connections refused with 503 at server.max_connections.",
                                stat_rejected, app);
    rc |= ah_metrics_gauge_fn("agenthub_auth_keys_cached", "API keys held in the in-memory cache.",
                              stat_keys, app);
    rc |= ah_metrics_gauge_fn("agenthub_store_queue_depth",
                              "Store jobs waiting for a store thread.", stat_store_queue, app);
    rc |=
        ah_metrics_counter_fn("agenthub_store_batches_total",
                              "Store write transactions (group commits).", stat_store_batches, app);
    rc |= ah_metrics_counter_fn("agenthub_store_errors_total", "Store jobs that failed.",
                                stat_store_errors, app);
    rc |= ah_metrics_gauge_fn("agenthub_ready", "1 when /readyz answers 200.", stat_ready, app);
    return (!m_requests || !m_duration || rc) ? -ENOMEM : 0;
}

void ah_api_on_complete(ah_http_req_t *req, const ah_route_t *route, int status,
                        uint64_t duration_ns, void *ud)
{
    (void)ud;
    const char *method = ah_http_method_name(ah_http_req_method(req));
    /* Unmatched paths share one label value: arbitrary paths must not create series. */
    const char *rname = route ? route->pattern : "unmatched";
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    ah_counter_inc(ah_metrics_series(m_requests, method, rname, st));
    ah_hist_observe(ah_metrics_series(m_duration, method, rname), (double)duration_ns / 1e9);
}

void ah_api_on_worker_start(ah_loop_t *loop, int index, void *ud)
{
    ah_app_t *app = ud;
    ah_metrics_thread_init();
    if (app->keyring)
        ah_keyring_attach(app->keyring, loop);
    if (app->limits && ah_limits_attach(app->limits, loop) != 0)
        ah_log(AH_LOG_ERROR, "limits", "cannot attach the rate limiter to a worker",
               AH_LF_INT("worker", index), AH_LF_END);
    if (app->gateway && ah_gateway_attach(app->gateway, loop) != 0)
        ah_log(AH_LOG_ERROR, "gateway", "cannot create the upstream client for a worker",
               AH_LF_INT("worker", index), AH_LF_END);
    if (app->runtime &&
        (ah_runtime_attach(app->runtime, loop) != 0 || ah_queue_attach(app->runtime, loop) != 0))
        ah_log(AH_LOG_ERROR, "runtime", "cannot set up the runtime for a worker",
               AH_LF_INT("worker", index), AH_LF_END);
}

void ah_api_on_worker_stop(ah_loop_t *loop, int index, void *ud)
{
    ah_app_t *app = ud;
    if (app->runtime) {
        ah_runtime_finish_local(app->runtime, loop); /* shutdown: runs get the grace period */
        size_t cut = ah_runtime_abandon(app->runtime);
        if (cut)
            ah_log(AH_LOG_INFO, "runtime",
                   "worker stopped with runs executing: they are handed back",
                   AH_LF_INT("worker", index), AH_LF_INT("runs", (int64_t)cut), AH_LF_END);
        ah_queue_stop(app->runtime);
    }
    /*
     * Answers the store still owes this loop (writes of the runs just stopped,
     * a claim, usage reads) run here now, before what they use is freed and
     * before the loop itself is: none is dropped with its memory.
     */
    int owed = ah_loop_settle(loop, 10.0);
    if (owed)
        ah_log(AH_LOG_WARN, "server", "worker stopped with store answers still owed",
               AH_LF_INT("worker", index), AH_LF_INT("answers", owed), AH_LF_END);
    if (app->runtime) {
        ah_queue_detach(app->runtime);
        ah_runtime_detach(app->runtime);
    }
    if (app->gateway)
        ah_gateway_detach(app->gateway);
    if (app->limits)
        ah_limits_detach(app->limits, loop);
}

/* ---- auth and dispatch ---- */

/* Extracts the presented key: "Authorization: Bearer X" or "x-api-key: X". */
static const char *presented_key(ah_http_req_t *req, size_t *len)
{
    size_t n;
    const char *v = ah_http_req_header(req, "authorization", &n);
    if (v) {
        if (n > 7 && strncasecmp(v, "bearer ", 7) == 0) {
            v += 7;
            n -= 7;
            while (n && *v == ' ') {
                v++;
                n--;
            }
            *len = n;
            return v;
        }
        *len = 0;
        return v; /* another scheme: reported as invalid */
    }
    v = ah_http_req_header(req, "x-api-key", &n);
    if (v) {
        *len = n;
        return v;
    }
    return NULL;
}

void ah_api_dispatch(ah_http_req_t *req, const ah_route_t *route, void *ud)
{
    ah_app_t *app = ud;
    const api_route_t *ar = route->handler;
    if (ar->role == AH_ROLE_NONE) {
        ar->fn(req, app, NULL);
        return;
    }
    size_t klen = 0;
    const char *key = presented_key(req, &klen);
    if (!key) {
        ah_http_reply_error(req, 401, "authentication_error", "missing_api_key", NULL,
                            "no API key: send \"Authorization: Bearer <key>\" or \"x-api-key: "
                            "<key>\"");
        return;
    }
    ah_principal_t *who = ah_arena_alloc(ah_http_req_arena(req), sizeof(*who));
    if (!who) {
        ah_api_out_of_memory(req);
        return;
    }
    int rc = klen ? ah_keyring_lookup(app->keyring, key, klen, who) : -ENOENT;
    if (rc == -EKEYEXPIRED) {
        ah_http_reply_error(req, 401, "authentication_error", "expired_api_key", NULL,
                            "this API key has expired: create a new one");
        return;
    }
    if (rc != 0) {
        ah_http_reply_error(req, 401, "authentication_error", "invalid_api_key", NULL,
                            "invalid API key (unknown or revoked)");
        return;
    }
    if (!ah_role_allows(who->role, ar->role)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "this route needs role %s; key %s has role %s",
                 ah_role_name(ar->role), who->key_id, ah_role_name(who->role));
        ah_http_reply_error(req, 403, "permission_error", "insufficient_role", NULL, msg);
        return;
    }
    ah_http_req_set_ctx(req, who);
    ar->fn(req, app, who);
}

void ah_api_invalid(ah_http_req_t *req, int status, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ah_http_reply_error(req, status, "invalid_request_error",
                        status == 422 ? "invalid_value" : "invalid_request", param, msg);
}

bool ah_api_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool ah_api_page_params(ah_http_req_t *req, int def, int max, const char *item, int *limit,
                        long long *before)
{
    const char *v;
    long long n;
    *limit = def;
    *before = 0;
    if ((v = ah_http_req_query(req, "limit"))) {
        if (!ah_api_parse_int(v, 1, max, &n)) {
            ah_api_invalid(req, 400, "limit", "limit must be a number from 1 to %d", max);
            return false;
        }
        *limit = (int)n;
    }
    if ((v = ah_http_req_query(req, "before"))) {
        if (!ah_api_parse_int(v, 1, INT64_MAX, &n)) {
            ah_api_invalid(req, 400, "before",
                           "before must be a time in ms since the epoch (the created_at of the "
                           "last %s of the previous page)",
                           item);
            return false;
        }
        *before = n;
    }
    return true;
}

void ah_api_store_error(ah_http_req_t *req, int rc)
{
    if (rc == -EBUSY)
        ah_http_req_add_header(req, "Retry-After", "1");
    ah_http_reply_error(req, 503, NULL, "store_unavailable", NULL,
                        rc == -EBUSY ? "the store is busy; retry"
                                     : "the store failed this request");
}

void ah_api_out_of_memory(ah_http_req_t *req)
{
    ah_http_reply_error(req, 503, NULL, "overloaded", NULL, "out of memory");
}
