/* health.c - liveness, readiness and the Prometheus scrape. */
#include "api/api.h"

#include <stdio.h>

#include "obs/metrics.h"

void ah_api_healthz(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)app;
    (void)who;
    /* Answering at all proves the worker's loop turns: that is liveness. */
    static const char body[] = "{\"status\":\"ok\"}";
    ah_http_reply_json(req, 200, body, sizeof(body) - 1);
}

void ah_api_readyz(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    bool store = atomic_load(&app->store_ok);
    bool schema = atomic_load(&app->schema_ok);
    bool draining = app->server && ah_http_server_draining(app->server);
    bool ready = store && schema && !draining;
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"checks\":{\"store\":\"%s\",\"migrations\":\"%s\","
                     "\"draining\":%s},\"schema_version\":%d}",
                     ready ? "ready" : "not_ready", store ? "ok" : "unreachable",
                     schema ? "current" : "pending", draining ? "true" : "false",
                     atomic_load(&app->schema_version));
    if (!ready)
        ah_http_req_add_header(req, "Retry-After", "1");
    ah_http_reply_json(req, ready ? 200 : 503, body, (size_t)n);
}

void ah_api_metrics(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)app;
    (void)who;
    ah_buf_t out;
    ah_buf_init(&out, 0);
    if (ah_metrics_render(&out) != 0) {
        ah_buf_free(&out);
        ah_http_reply_error(req, 500, NULL, "metrics_failed", NULL, "could not render metrics");
        return;
    }
    ah_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data ? out.data : "",
                  out.len);
    ah_buf_free(&out);
}
