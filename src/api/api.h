/*
 * api.h - the HTTP API: the only layer that maps HTTP to the modules below it
 * (DESIGN.md section 4). It owns the route table, authentication and role
 * checks on each route, the OpenAI-shaped errors of the API, and the HTTP
 * metrics. Handlers run on a worker's event loop and never block: store work
 * goes through ah_store_submit and comes back to the same loop.
 */
#ifndef AH_API_H
#define AH_API_H

#include <stdatomic.h>
#include <stdbool.h>

#include "agents/registry.h"
#include "agents/runtime.h"
#include "auth/keyring.h"
#include "gateway/gateway.h"
#include "gateway/limits.h"
#include "gateway/usage.h"
#include "core/config.h"
#include "http/router.h"
#include "http/server.h"
#include "store/store.h"

/* Everything a handler may need; one per process, built by `agenthub serve`. */
typedef struct ah_app {
    const ah_config_t *cfg;
    ah_store_t *store;
    ah_keyring_t *keyring;
    ah_http_server_t *server;
    ah_gateway_t *gateway;
    ah_limits_t *limits;          /* rate limits and budgets (gateway/limits.h) */
    ah_usage_t *usage;            /* usage recorder (gateway/usage.h) */
    ah_registry_t *registry;      /* agent specs (agents/registry.h) */
    ah_runtime_t *runtime;        /* runs (agents/runtime.h) */
    struct ah_webhooks *webhooks; /* run webhooks (agents/webhooks.h) */
    int64_t started_at;           /* unix seconds */
    atomic_bool store_ok;         /* last store ping succeeded (set by the health thread) */
    atomic_bool schema_ok;        /* migrations current */
    atomic_int schema_version;
} ah_app_t;

/** A route handler: who is the authenticated caller (NULL on public routes). */
typedef void (*ah_api_handler_fn)(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);

/** Registers every route of the API. 0 or -errno. */
int ah_api_register(ah_router_t *r);

/** Registers the API's metric families; call once before serving. 0 or -ENOMEM. */
int ah_api_metrics_init(ah_app_t *app);

/** The server hooks (opts.dispatch, on_complete, on_worker_start; ud = the app). */
void ah_api_dispatch(ah_http_req_t *req, const ah_route_t *route, void *ud);
void ah_api_on_complete(ah_http_req_t *req, const ah_route_t *route, int status,
                        uint64_t duration_ns, void *ud);
void ah_api_on_worker_start(ah_loop_t *loop, int index, void *ud);
void ah_api_on_worker_stop(ah_loop_t *loop, int index, void *ud);

/* Helpers for handlers. */

/** Replies 400/422 style errors: invalid_request_error with param. */
void ah_api_invalid(ah_http_req_t *req, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Replies 503 store_unavailable for a failed store call rc (-EBUSY: the
 *  queue is full, "retry" with Retry-After: 1; anything else: the store failed). */
void ah_api_store_error(ah_http_req_t *req, int rc);

/** Replies 503 overloaded: "out of memory". */
void ah_api_out_of_memory(ah_http_req_t *req);

/** Parses a decimal integer in [lo, hi] (digits only, no sign or spaces).
 *  false when s is NULL, empty or not such a number. */
bool ah_api_parse_int(const char *s, long long lo, long long hi, long long *out);

/** Reads the list-page query parameters ?limit= (1..max, default def) and
 *  ?before= (ms since the epoch; 0 when absent). `item` names what a page
 *  holds ("run", "delivery") in the error. Replies 400 and returns false when
 *  either is malformed. */
bool ah_api_page_params(ah_http_req_t *req, int def, int max, const char *item, int *limit,
                        long long *before);

/* Handlers, grouped by file. */
void ah_api_healthz(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_readyz(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_metrics(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_keys_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_keys_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_keys_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_chat(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_embeddings(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_models(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_keys_revoke(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_key_limits_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_key_limits_put(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_usage(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_webhooks_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_webhooks_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_webhooks_retry(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_sessions_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_sessions_delete(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_approve(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_cancel(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_runs_events(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
/** "model": "agent:NAME" on /v1/chat/completions (body already validated). */
void ah_api_agent_chat(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who,
                       const char *agent, const char *body, size_t n);
void ah_api_agents_create(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_agents_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_agents_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_agents_versions(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_agents_rollback(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);
void ah_api_agents_archive(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who);

#endif
