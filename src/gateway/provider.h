/*
 * provider.h - what the gateway's call engine (call.c) needs from a provider
 * type: how to build the upstream request, and how to turn the upstream's
 * answer, stream events and errors into the OpenAI format. One ops table per
 * type: openai.c (openai, azure), anthropic_provider.c, mock_provider.c.
 * Internal to src/gateway/.
 */
#ifndef AH_GW_PROVIDER_H
#define AH_GW_PROVIDER_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/config.h"
#include "gateway/gateway.h"

#define AH_GW_MAX_HEADERS 8

/* The HTTP request of one attempt. headers point into hbuf. */
typedef struct ah_gw_upstream {
    ah_buf_t url;
    ah_buf_t body;
    ah_buf_t hbuf; /* "Name: value\0Name: value\0..." */
    size_t hoff[AH_GW_MAX_HEADERS];
    const char *headers[AH_GW_MAX_HEADERS + 1]; /* set by ah_gw_upstream_finish */
    int n_headers;
} ah_gw_upstream_t;

/*
 * What an in-process provider (mock) produced for one attempt, played back by
 * the call engine as if it came over HTTP: a status and body, or SSE frames
 * in the OpenAI upstream format, with the delays the model options asked for.
 */
typedef struct ah_gw_local {
    int status;
    double retry_after_s;
    ah_buf_t body;    /* non-stream answer or error body */
    ah_buf_t *frames; /* stream: "data: ...\n\n" frames, the last "data: [DONE]" */
    size_t n_frames;
    double latency_s; /* before a non-stream answer */
    double ttft_s;    /* before the first frame */
    double gap_s;     /* between frames */
    long drop_after;  /* cut the stream after this many frames; -1 = never */
} ah_gw_local_t;

/* A provider as configured, with its ops. */
typedef struct ah_gw_prov {
    const ah_config_provider_t *cfg;
    const struct ah_provider_ops *ops;
    const char *base_url; /* cfg->base_url or the type's default */
} ah_gw_prov_t;

typedef struct ah_provider_ops {
    const char *type;
    bool in_process;     /* answers without HTTP (mock): see mock_provider.c */
    bool has_embeddings; /* may serve /v1/embeddings */
    /* Fills up (url, headers, body) for a chat or embeddings request. 0 or -EINVAL + err. */
    int (*build)(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *upstream_model,
                 ah_gw_upstream_t *up, ah_buf_t *err);
    /*
     * A 2xx non-stream body: fills usage and either leaves out empty (the body
     * is forwarded as it is) or writes the OpenAI body to out. 0 or -EINVAL
     * (malformed upstream answer: a 502 for the client).
     */
    int (*response)(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *body, size_t n,
                    ah_buf_t *out, ah_llm_usage_t *usage);
    /* Stream translation state for one attempt (NULL ops = stateless). */
    void *(*stream_new)(const ah_gw_prov_t *p, const ah_gw_request_t *req);
    /*
     * One upstream SSE event: appends zero or more OpenAI SSE frames to out,
     * updates usage, sets *done at the stream's normal end. 0, or -EINVAL
     * (malformed event: the stream fails with an error frame).
     */
    int (*stream_event)(void *st, const ah_gw_request_t *req, const char *event, const char *data,
                        size_t n, ah_buf_t *out, ah_llm_usage_t *usage, bool *done);
    void (*stream_free)(void *st);
    /* An upstream error answer (non-2xx) as OpenAI error JSON into out; returns the status to use.
     */
    int (*error)(int status, const char *body, size_t n, ah_buf_t *out);
} ah_provider_ops_t;

extern const ah_provider_ops_t ah_provider_openai;
extern const ah_provider_ops_t ah_provider_azure;
extern const ah_provider_ops_t ah_provider_anthropic;
extern const ah_provider_ops_t ah_provider_mock;

/**
 * In-process providers: runs the request and fills out. 0, or -EINVAL with a
 * message in err for a request the provider cannot take (a 400).
 */
int ah_gw_local_run(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *upstream_model,
                    ah_gw_local_t *out, ah_buf_t *err);

/** Frees what out holds; it may be run again. */
void ah_gw_local_free(ah_gw_local_t *out);

/* The OpenAI-format handlers, shared by the types whose upstream speaks OpenAI. */
int ah_gw_openai_response(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *body,
                          size_t n, ah_buf_t *out, ah_llm_usage_t *usage);
int ah_gw_openai_stream_event(void *st, const ah_gw_request_t *req, const char *event,
                              const char *data, size_t n, ah_buf_t *out, ah_llm_usage_t *usage,
                              bool *done);
int ah_gw_openai_error(int status, const char *body, size_t n, ah_buf_t *out);

/** Adds "Name: value" to up's headers. 0 or -E2BIG/-ENOMEM. */
int ah_gw_upstream_header(ah_gw_upstream_t *up, const char *name, const char *value);

/** Points headers[] into hbuf (call once all headers are added). */
void ah_gw_upstream_finish(ah_gw_upstream_t *up);

/** Frees up's buffers. */
void ah_gw_upstream_free(ah_gw_upstream_t *up);

/**
 * Copies an OpenAI request body replacing "model" with model and, for a
 * stream, forcing stream_options.include_usage so usage can be accounted.
 * Other fields pass through untouched. 0 or -EINVAL.
 */
int ah_gw_rewrite_openai_body(const ah_gw_request_t *req, const char *model, bool drop_model,
                              ah_buf_t *out);

/** Reads OpenAI "usage" from a body or chunk (absent or null: usage->present false). */
void ah_gw_openai_usage(const char *json, size_t n, ah_llm_usage_t *usage);

/** Writes an OpenAI error JSON object. */
void ah_gw_error_json(ah_buf_t *out, const char *type, const char *code, const char *message);

#endif
