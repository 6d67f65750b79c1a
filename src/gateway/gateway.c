/*
 * gateway.c - routing tables built from the config, per-worker state, and the
 * gateway's metrics. The call engine is call.c.
 */
#include "gateway/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "core/log.h"

_Thread_local gw_worker_t *ah_gw_tl_worker;

static const ah_provider_ops_t *ops_for(const char *type)
{
    if (strcmp(type, "openai") == 0)
        return &ah_provider_openai;
    if (strcmp(type, "azure") == 0)
        return &ah_provider_azure;
    if (strcmp(type, "anthropic") == 0)
        return &ah_provider_anthropic;
    if (strcmp(type, "mock") == 0)
        return &ah_provider_mock;
    return NULL;
}

static const char *default_base_url(const char *type)
{
    if (strcmp(type, "openai") == 0)
        return "https://api.openai.com/v1";
    if (strcmp(type, "anthropic") == 0)
        return "https://api.anthropic.com";
    return "";
}

static gw_model_t *find_model(ah_gateway_t *gw, const char *name)
{
    for (size_t i = 0; i < gw->n_models; i++) {
        const ah_config_model_t *m = gw->models[i].cfg;
        if (strcmp(m->name, name) == 0)
            return &gw->models[i];
        for (size_t a = 0; a < m->n_aliases; a++)
            if (strcmp(m->aliases[a], name) == 0)
                return &gw->models[i];
    }
    return NULL;
}

gw_model_t *ah_gw_find_model(const ah_gateway_t *gw, const char *name)
{
    return find_model((ah_gateway_t *)gw, name);
}

const ah_config_model_t *ah_gateway_model(const ah_gateway_t *gw, const char *name)
{
    gw_model_t *m = find_model((ah_gateway_t *)gw, name);
    return m ? m->cfg : NULL;
}

ah_gateway_t *ah_gateway_new(const ah_config_t *cfg, ah_buf_t *err)
{
    ah_gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return NULL;
    gw->cfg = cfg;
    gw->provs = calloc(cfg->n_providers ? cfg->n_providers : 1, sizeof(ah_gw_prov_t));
    gw->models = calloc(cfg->n_models ? cfg->n_models : 1, sizeof(gw_model_t));
    if (!gw->provs || !gw->models)
        goto fail;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const ah_config_provider_t *p = &cfg->providers[i];
        ah_gw_prov_t *gp = &gw->provs[i];
        gp->cfg = p;
        gp->ops = ops_for(p->type);
        if (!gp->ops) {
            ah_buf_printf(err, "providers[%zu].type: unknown provider type \"%s\"", i, p->type);
            goto fail;
        }
        gp->base_url = p->base_url && p->base_url[0] ? p->base_url : default_base_url(p->type);
        gw->n_provs++;
    }
    for (size_t i = 0; i < cfg->n_models; i++) {
        const ah_config_model_t *m = &cfg->models[i];
        gw_model_t *gm = &gw->models[i];
        gm->cfg = m;
        gm->targets = calloc(m->n_targets ? m->n_targets : 1, sizeof(gw_target_t));
        if (!gm->targets)
            goto fail;
        gw->n_models++;
        for (size_t t = 0; t < m->n_targets; t++) {
            gw_target_t *gt = &gm->targets[t];
            gt->cfg = &m->targets[t];
            gt->model = gm;
            for (size_t p = 0; p < gw->n_provs; p++)
                if (strcmp(gw->provs[p].cfg->name, m->targets[t].provider) == 0)
                    gt->prov = &gw->provs[p];
            if (!gt->prov) {
                ah_buf_printf(err, "models[%zu].targets[%zu].provider: unknown provider \"%s\"", i,
                              t, m->targets[t].provider);
                goto fail;
            }
            ah_breaker_opts_t bo = {.failures = gt->prov->cfg->breaker_failures,
                                    .error_rate = gt->prov->cfg->breaker_error_rate,
                                    .open_s = gt->prov->cfg->breaker_open_s};
            ah_breaker_init(&gt->breaker, &bo);
            gm->n_targets++;
            gm->total_weight += m->targets[t].weight > 0 ? m->targets[t].weight : 1;
        }
    }
    for (size_t i = 0; i < gw->n_models; i++) {
        gw_model_t *gm = &gw->models[i];
        const ah_config_model_t *m = gm->cfg;
        gm->fallbacks = calloc(m->n_fallbacks ? m->n_fallbacks : 1, sizeof(gw_model_t *));
        if (!gm->fallbacks)
            goto fail;
        for (size_t f = 0; f < m->n_fallbacks; f++) {
            gw_model_t *fm = find_model(gw, m->fallbacks[f]);
            if (!fm) {
                ah_buf_printf(err, "models[%zu].fallbacks[%zu]: unknown model \"%s\"", i, f,
                              m->fallbacks[f]);
                goto fail;
            }
            gm->fallbacks[gm->n_fallbacks++] = fm;
        }
    }
    return gw;
fail:
    ah_gateway_free(gw);
    return NULL;
}

int ah_gateway_attach(ah_gateway_t *gw, ah_loop_t *loop)
{
    gw_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->gw = gw;
    w->loop = loop;
    ah_http_client_opts_t co = {.max_connections = 1024, .max_host_connections = 0};
    w->client = ah_http_client_new(loop, &co);
    if (!w->client) {
        free(w);
        return -ENOMEM;
    }
    ah_random_bytes(w->rng, sizeof(w->rng));
    w->rng[0] |= 1;
    ah_gw_tl_worker = w;
    return 0;
}

void ah_gateway_detach(ah_gateway_t *gw)
{
    gw_worker_t *w = ah_gw_tl_worker;
    if (!w || w->gw != gw)
        return;
    ah_http_client_free(w->client);
    free(w);
    ah_gw_tl_worker = NULL;
}

void ah_gateway_free(ah_gateway_t *gw)
{
    if (!gw)
        return;
    for (size_t i = 0; i < gw->n_models; i++) {
        for (size_t t = 0; t < gw->models[i].n_targets; t++)
            ah_breaker_destroy(&gw->models[i].targets[t].breaker);
        free(gw->models[i].targets);
        free(gw->models[i].fallbacks);
    }
    free(gw->models);
    free(gw->provs);
    free(gw);
}

uint64_t ah_gw_rand(gw_worker_t *w)
{
    uint64_t x = w->rng[0], y = w->rng[1];
    w->rng[0] = y;
    x ^= x << 23;
    w->rng[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return w->rng[1] + y;
}

/* ---- metrics ---- */

static double breaker_value(void *ud)
{
    return (double)ah_breaker_state((const ah_breaker_t *)ud);
}

int ah_gateway_metrics_init(ah_gateway_t *gw)
{
    static const char *const req_l[] = {"model", "provider", "status"};
    static const char *const prov_l[] = {"provider"};
    static const char *const model_l[] = {"model"};
    static const char *const tok_l[] = {"key", "model", "type"};
    static const char *const cost_l[] = {"key", "model"};
    static const char *const fb_l[] = {"from", "to"};
    static const char *const br_l[] = {"provider", "model"};
    gw_metrics_t *m = &gw->m;
    m->requests =
        ah_metrics_counter("agenthub_gateway_requests_total",
                           "Gateway requests by public model, serving provider, status.", 3, req_l);
    m->upstream =
        ah_metrics_histogram("agenthub_gateway_upstream_latency_seconds",
                             "Upstream attempt latency to the complete answer.", 1, prov_l,
                             ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    m->ttft = ah_metrics_histogram("agenthub_gateway_time_to_first_token_seconds",
                                   "Request start to the first token sent (streams).", 1, model_l,
                                   ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    m->overhead =
        ah_metrics_histogram("agenthub_gateway_overhead_seconds",
                             "Time spent in agenthub per gateway request, excluding upstream time.",
                             0, NULL, ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
    m->tokens = ah_metrics_counter(
        "agenthub_gateway_tokens_total",
        "Tokens by API key, model and type (prompt, completion, cached).", 3, tok_l);
    m->cost =
        ah_metrics_counter("agenthub_gateway_cost_usd_total",
                           "Cost in USD from the price table, by API key and model.", 2, cost_l);
    m->retries = ah_metrics_counter("agenthub_gateway_retries_total",
                                    "Upstream attempts retried on the same target.", 1, prov_l);
    m->fallbacks =
        ah_metrics_counter("agenthub_gateway_fallbacks_total",
                           "Requests moved from one model to a fallback model.", 2, fb_l);
    ah_metric_family_t *br =
        ah_metrics_gauge("agenthub_gateway_breaker_state",
                         "Circuit breaker per target: 0 closed, 1 half-open, 2 open.", 2, br_l);
    for (size_t i = 0; i < gw->n_models; i++)
        for (size_t t = 0; t < gw->models[i].n_targets; t++) {
            gw_target_t *gt = &gw->models[i].targets[t];
            ah_metrics_series_fn(ah_metrics_series(br, gt->prov->cfg->name, gt->cfg->model),
                                 breaker_value, &gt->breaker);
        }
    return m->requests && m->overhead ? 0 : -ENOMEM;
}

void ah_gateway_account(ah_gateway_t *gw, const char *key_id, const char *model,
                        const ah_llm_usage_t *u, double cost_usd, uint64_t overhead_ns,
                        uint64_t ttft_ns)
{
    gw_metrics_t *m = &gw->m;
    ah_hist_observe(ah_metrics_series0(m->overhead), (double)overhead_ns / 1e9);
    if (ttft_ns)
        ah_hist_observe(ah_metrics_series(m->ttft, model), (double)ttft_ns / 1e9);
    if (!u->present)
        return;
    ah_counter_add(ah_metrics_series(m->tokens, key_id, model, "prompt"), (double)u->prompt_tokens);
    ah_counter_add(ah_metrics_series(m->tokens, key_id, model, "completion"),
                   (double)u->completion_tokens);
    if (u->cached_tokens)
        ah_counter_add(ah_metrics_series(m->tokens, key_id, model, "cached"),
                       (double)u->cached_tokens);
    if (cost_usd > 0)
        ah_counter_add(ah_metrics_series(m->cost, key_id, model), cost_usd);
}
