/* internal.h - structures shared by gateway.c and call.c. Not for use outside src/gateway/. */
#ifndef AH_GW_INTERNAL_H
#define AH_GW_INTERNAL_H

#include "gateway/breaker.h"
#include "gateway/gateway.h"
#include "gateway/provider.h"
#include "http/client.h"
#include "obs/metrics.h"

typedef struct gw_model gw_model_t;

typedef struct gw_target {
    const ah_config_target_t *cfg;
    gw_model_t *model;
    ah_gw_prov_t *prov;
    ah_breaker_t breaker;
} gw_target_t;

struct gw_model {
    const ah_config_model_t *cfg;
    gw_target_t *targets;
    size_t n_targets;
    int total_weight;
    gw_model_t **fallbacks;
    size_t n_fallbacks;
};

typedef struct gw_metrics {
    ah_metric_family_t *requests, *upstream, *ttft, *overhead, *tokens, *cost, *retries, *fallbacks;
} gw_metrics_t;

struct ah_gateway {
    const ah_config_t *cfg;
    ah_gw_prov_t *provs;
    size_t n_provs;
    gw_model_t *models;
    size_t n_models;
    gw_metrics_t m;
};

/* One per worker thread (ah_gateway_attach). */
typedef struct gw_worker {
    ah_gateway_t *gw;
    ah_loop_t *loop;
    ah_http_client_t *client;
    uint64_t rng[2];
} gw_worker_t;

extern _Thread_local gw_worker_t *ah_gw_tl_worker;

gw_model_t *ah_gw_find_model(const ah_gateway_t *gw, const char *name);
uint64_t ah_gw_rand(gw_worker_t *w);

#endif
