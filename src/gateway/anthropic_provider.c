/*
 * anthropic_provider.c - the "anthropic" provider type: the Messages API,
 * with the OpenAI <-> Anthropic translation of anthropic.h in both
 * directions (requests, answers, stream events, errors).
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/anthropic.h"
#include "gateway/provider.h"

#define ANTHROPIC_VERSION "2023-06-01"

static int anthropic_build(const ah_gw_prov_t *p, const ah_gw_request_t *req,
                           const char *upstream_model, ah_gw_upstream_t *up, ah_buf_t *err)
{
    if (req->kind != AH_GW_CHAT) {
        ah_buf_puts(err, "anthropic providers do not serve embeddings");
        return -EINVAL;
    }
    json_error_t jerr;
    json_t *in = json_loadb(req->body, req->len, 0, &jerr);
    if (!in) {
        ah_buf_printf(err, "request body: %s", jerr.text);
        return -EINVAL;
    }
    json_t *out = NULL;
    int rc = ah_anthropic_request(in, upstream_model, &out, err, NULL);
    json_decref(in);
    if (rc)
        return rc;
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (!s)
        return -ENOMEM;
    ah_buf_puts(&up->body, s);
    free(s);
    size_t bl = strlen(p->base_url);
    while (bl && p->base_url[bl - 1] == '/')
        bl--;
    ah_buf_append(&up->url, p->base_url, bl);
    ah_buf_puts(&up->url, "/v1/messages");
    if (p->cfg->api_key && p->cfg->api_key[0])
        ah_gw_upstream_header(up, "x-api-key", p->cfg->api_key);
    ah_gw_upstream_header(up, "anthropic-version",
                          p->cfg->api_version && p->cfg->api_version[0] ? p->cfg->api_version
                                                                        : ANTHROPIC_VERSION);
    ah_gw_upstream_header(up, "Content-Type", "application/json");
    if (req->request_id)
        ah_gw_upstream_header(up, "x-request-id", req->request_id);
    return 0;
}

static int anthropic_response(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *body,
                              size_t n, ah_buf_t *out, ah_llm_usage_t *usage)
{
    (void)p;
    ah_buf_t err;
    ah_buf_init(&err, 0);
    int rc = ah_anthropic_response(body, n, req->model, out, usage, &err);
    ah_buf_free(&err);
    return rc ? -EINVAL : 0;
}

static void *anthropic_stream_new(const ah_gw_prov_t *p, const ah_gw_request_t *req)
{
    (void)p;
    ah_anthropic_stream_t *st = calloc(1, sizeof(*st));
    if (st && ah_anthropic_stream_init(st, NULL, req->model, (int64_t)time(NULL),
                                       req->include_usage) != 0) {
        free(st);
        return NULL;
    }
    return st;
}

static int anthropic_stream_event(void *vst, const ah_gw_request_t *req, const char *event,
                                  const char *data, size_t n, ah_buf_t *out, ah_llm_usage_t *usage,
                                  bool *done)
{
    (void)req;
    ah_anthropic_stream_t *st = vst;
    if (!st)
        return -ENOMEM;
    size_t before = out->len;
    int rc = ah_anthropic_stream_event(st, event, data, n, out);
    *usage = st->usage;
    if (rc < 0) {
        /* The error object is not a frame: the engine sends its own error event. */
        out->len = before;
        if (out->data)
            out->data[before] = '\0';
        return -EINVAL;
    }
    *done = ah_anthropic_stream_done(st);
    return 0;
}

static void anthropic_stream_free(void *vst)
{
    ah_anthropic_stream_t *st = vst;
    if (!st)
        return;
    ah_anthropic_stream_free(st);
    free(st);
}

static int anthropic_error(int status, const char *body, size_t n, ah_buf_t *out)
{
    int rc = ah_anthropic_error(status, body, n, out);
    return rc < 0 ? 502 : rc;
}

const ah_provider_ops_t ah_provider_anthropic = {
    .type = "anthropic",
    .build = anthropic_build,
    .response = anthropic_response,
    .stream_new = anthropic_stream_new,
    .stream_event = anthropic_stream_event,
    .stream_free = anthropic_stream_free,
    .error = anthropic_error,
};
