/*
 * gateway.h - the LLM gateway: OpenAI-compatible chat completions and
 * embeddings routed over providers, callable without HTTP.
 *
 * The API layer (src/api/chat.c) and the agent runtime both call
 * ah_gateway_start(); results come back through a sink on the caller's event
 * loop. A call walks an ordered list of candidates - the requested model's
 * targets (weighted random order), then each fallback model's - retrying a
 * target on connect errors, timeouts, 408/429/5xx with exponential backoff and
 * jitter (honouring Retry-After up to a cap), skipping targets whose circuit
 * breaker is open, and never retrying once a byte has reached the client.
 *
 * Threads: ah_gateway_new/free on the main thread; ah_gateway_attach once on
 * each worker loop's thread; everything else on a worker thread for calls
 * that worker started.
 */
#ifndef AH_GATEWAY_H
#define AH_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/jscan.h"
#include "core/loop.h"
#include "gateway/usage_types.h"

typedef struct ah_gateway ah_gateway_t;
typedef struct ah_gw_call ah_gw_call_t;

typedef enum { AH_GW_CHAT = 0, AH_GW_EMBEDDINGS } ah_gw_kind_t;

typedef struct ah_gw_request {
    ah_gw_kind_t kind;
    const char *body; /* the client's JSON object (validated); must outlive the call */
    size_t len;
    const char *model; /* public model name or alias as requested */
    bool stream;
    bool include_usage; /* the client asked for stream_options.include_usage */
    const char *request_id;
    /*
     * Optional, from the caller's own scan of body (saves rescanning on the
     * hot path): spans of the top-level "model" and "stream_options" values
     * (type AH_JSON_NONE when absent). Only read when spans_set is true.
     */
    bool spans_set;
    ah_jspan_t model_span;
    ah_jspan_t stream_options_span;
} ah_gw_request_t;

typedef struct ah_gw_result {
    int status;                 /* HTTP status for the client */
    const char *model;          /* public model that served (a fallback's name if one did) */
    const char *provider;       /* provider name that served or was tried last */
    const char *upstream_model; /* the provider's model name */
    int attempts;               /* upstream attempts made */
    ah_llm_usage_t usage;
    uint64_t upstream_ns;   /* time waiting on upstreams, including backoff sleeps */
    uint64_t ttft_ns;       /* start to first token (stream) or to the complete answer */
    const char *error_code; /* when status is not 2xx */
    double retry_after_s;   /* for a 429/503 answer: seconds the client should wait (0 = none) */
    const ah_config_model_t *model_cfg; /* model that served (price table) */
} ah_gw_result_t;

/*
 * Where a call's output goes. head comes once, before any data; then data
 * (a non-stream answer in one piece; a stream as OpenAI SSE frames
 * "data: {...}\n\n", without the final "data: [DONE]"); then done once. rc 0:
 * the answer is complete (it may be an error answer: see r->status); < 0: a
 * stream broke after head (an error frame was already passed to data).
 */
typedef struct ah_gw_sink {
    void (*head)(void *ud, const ah_gw_result_t *r);
    void (*data)(void *ud, const char *p, size_t n);
    void (*done)(void *ud, int rc, const ah_gw_result_t *r);
} ah_gw_sink_t;

/** Builds the routing tables from cfg (kept by pointer: it must outlive the gateway). NULL + err.
 */
ah_gateway_t *ah_gateway_new(const ah_config_t *cfg, ah_buf_t *err);

/** Creates this worker's upstream client. Call on the loop's thread before any call. 0/-errno. */
int ah_gateway_attach(ah_gateway_t *gw, ah_loop_t *loop);

/** Releases this worker's upstream client (on the loop's thread, after its calls ended). */
void ah_gateway_detach(ah_gateway_t *gw);

/** Frees the gateway. Every worker must have detached. */
void ah_gateway_free(ah_gateway_t *gw);

/** The model configured under this name or alias, or NULL. */
const ah_config_model_t *ah_gateway_model(const ah_gateway_t *gw, const char *name);

/**
 * Starts a call on the calling worker's loop. The sink runs on that loop. On
 * success *out is the call handle (valid until sink->done returns or
 * ah_gateway_cancel). Returns 0, -ENOENT (unknown model: nothing was called),
 * -ENOTSUP (no target of the model can serve this kind, e.g. embeddings on
 * a chat-only provider), -ENOMEM.
 */
int ah_gateway_start(ah_gateway_t *gw, ah_loop_t *loop, const ah_gw_request_t *req,
                     const ah_gw_sink_t *sink, void *ud, ah_gw_call_t **out);

/** Cancels a call (the client left): upstream connections close; no sink call after this. */
void ah_gateway_cancel(ah_gw_call_t *c);

/**
 * Records a finished request's tokens, cost, overhead and time to first token
 * in the gateway metrics (thread-safe, lock-free). ttft_ns 0 = not a stream.
 */
void ah_gateway_account(ah_gateway_t *gw, const char *key_id, const char *model,
                        const ah_llm_usage_t *u, double cost_usd, uint64_t overhead_ns,
                        uint64_t ttft_ns);

/** Registers the gateway's metric families (idempotent). */
int ah_gateway_metrics_init(ah_gateway_t *gw);

#endif
