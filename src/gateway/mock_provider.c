/*
 * mock_provider.c - the "mock" provider type: the deterministic mock model
 * (mock.h) answering in process, with the faults and delays its model options
 * ask for ("echo?ttft_ms=50&token_ms=5", "x?status=429&fail_times=2" ...).
 *
 * It produces exactly what an OpenAI upstream would send, and the call engine
 * plays that back through the same code as a real upstream, so retries,
 * fallbacks, breakers, stream relay and usage accounting behave the same.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/mock.h"
#include "gateway/provider.h"

void ah_gw_local_free(ah_gw_local_t *l)
{
    ah_buf_free(&l->body);
    for (size_t i = 0; i < l->n_frames; i++)
        ah_buf_free(&l->frames[i]);
    free(l->frames);
    memset(l, 0, sizeof(*l));
    l->drop_after = -1;
}

static int fault(const ah_mock_opts_t *o, ah_gw_local_t *l)
{
    l->status = o->status;
    l->retry_after_s = o->retry_after_s >= 0 ? o->retry_after_s : 0;
    if (o->retry_after_ms >= 0)
        l->retry_after_s = o->retry_after_ms / 1000.0;
    char msg[96];
    snprintf(msg, sizeof(msg), "mock fault: HTTP %d", o->status);
    ah_gw_error_json(&l->body, o->status == 429 ? "rate_limit_error" : "server_error", "mock_fault",
                     msg);
    return 0;
}

static int dump(json_t *j, ah_buf_t *out)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return -ENOMEM;
    int rc = ah_buf_puts(out, s);
    free(s);
    return rc;
}

int ah_gw_local_run(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *upstream_model,
                    ah_gw_local_t *l, ah_buf_t *err)
{
    (void)p;
    memset(l, 0, sizeof(*l));
    l->drop_after = -1;
    ah_mock_opts_t o;
    if (ah_mock_opts_parse(upstream_model, &o, err) != 0)
        return -EINVAL;
    l->latency_s = o.latency_ms / 1000.0;
    l->ttft_s = (o.ttft_ms + o.latency_ms) / 1000.0;
    l->gap_s = o.token_ms / 1000.0;
    l->drop_after = o.drop_after;
    if (ah_mock_count_request(upstream_model, &o))
        return fault(&o, l);
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->len, 0, &jerr);
    if (!body) {
        ah_buf_printf(err, "request body: %s", jerr.text);
        return -EINVAL;
    }
    /* The answer names the public model, as the client asked. */
    const char *model = req->model;
    long long created = (long long)time(NULL);
    int rc = 0;
    l->status = 200;
    if (req->kind == AH_GW_EMBEDDINGS) {
        json_t *e = ah_mock_embeddings(body, model, err);
        json_decref(body);
        if (!e)
            return err->len ? -EINVAL : -ENOMEM;
        return dump(e, &l->body);
    }
    ah_mock_reply_t r;
    rc = ah_mock_chat(body, &r, err);
    json_decref(body);
    if (rc)
        return rc;
    if (!req->stream) {
        rc = o.malformed ? ah_buf_puts(&l->body, "{\"id\":\"chatcmpl-mock\",\"choices\":[")
                         : dump(ah_mock_chat_completion(&r, model, created), &l->body);
        ah_mock_reply_free(&r);
        return rc;
    }
    /* The engine asks upstreams for usage on every stream, as it does over HTTP. */
    ah_mock_stream_t st;
    rc = ah_mock_chat_chunks(&r, model, created, true, &st);
    ah_mock_reply_free(&r);
    if (rc)
        return rc;
    l->frames = calloc(st.n + 1, sizeof(ah_buf_t));
    if (!l->frames) {
        ah_mock_stream_free(&st);
        return -ENOMEM;
    }
    for (size_t i = 0; i < st.n; i++) {
        ah_buf_t *f = &l->frames[l->n_frames++];
        ah_buf_puts(f, "data: ");
        if (o.malformed && i == st.n / 2)
            ah_buf_puts(f, "{\"choices\":[{\"delta\":");
        else
            ah_buf_append(f, st.ev[i].data, st.ev[i].len);
        ah_buf_puts(f, "\n\n");
    }
    ah_buf_puts(&l->frames[l->n_frames++], "data: [DONE]\n\n");
    ah_mock_stream_free(&st);
    return 0;
}

const ah_provider_ops_t ah_provider_mock = {
    .type = "mock",
    .in_process = true,
    .has_embeddings = true,
    .response = ah_gw_openai_response,
    .stream_event = ah_gw_openai_stream_event,
    .error = ah_gw_openai_error,
};
