/*
 * openai.c - the "openai" and "azure" provider types: OpenAI and every
 * OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together, Groq ...), and
 * Azure OpenAI deployments.
 *
 * The body is forwarded as the client sent it: only "model" is replaced and,
 * for streams, stream_options.include_usage is forced on so every streamed
 * request is accounted exactly (the usage chunk is dropped again when the
 * client did not ask for it). Responses pass through byte for byte, keeping
 * the provider's id, created and system_fingerprint.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/jscan.h"
#include "gateway/provider.h"

int ah_gw_upstream_header(ah_gw_upstream_t *up, const char *name, const char *value)
{
    if (up->n_headers >= AH_GW_MAX_HEADERS)
        return -E2BIG;
    /* Offsets, not pointers: hbuf may move while it grows (see ah_gw_upstream_finish). */
    size_t off = up->hbuf.len;
    int rc = ah_buf_printf(&up->hbuf, "%s: %s", name, value);
    if (rc == 0)
        rc = ah_buf_putc(&up->hbuf, '\0');
    if (rc)
        return rc;
    up->hoff[up->n_headers++] = off;
    return 0;
}

void ah_gw_upstream_finish(ah_gw_upstream_t *up)
{
    for (int i = 0; i < up->n_headers; i++)
        up->headers[i] = up->hbuf.data + up->hoff[i];
    up->headers[up->n_headers] = NULL;
}

void ah_gw_upstream_free(ah_gw_upstream_t *up)
{
    ah_buf_free(&up->url);
    ah_buf_free(&up->body);
    ah_buf_free(&up->hbuf);
    up->n_headers = 0;
}

void ah_gw_error_json(ah_buf_t *out, const char *type, const char *code, const char *message)
{
    ah_buf_puts(out, "{\"error\":{\"message\":\"");
    ah_buf_json_escape(out, message, strlen(message));
    ah_buf_puts(out, "\",\"type\":\"");
    ah_buf_puts(out, type);
    ah_buf_puts(out, "\",\"param\":null,\"code\":");
    if (code) {
        ah_buf_putc(out, '"');
        ah_buf_puts(out, code);
        ah_buf_putc(out, '"');
    } else {
        ah_buf_puts(out, "null");
    }
    ah_buf_puts(out, "}}");
}

int ah_gw_rewrite_openai_body(const ah_gw_request_t *req, const char *model, bool drop_model,
                              ah_buf_t *out)
{
    ah_jspan_t root, mv, so;
    bool force_usage = req->stream && !req->include_usage;
    bool has_model, has_so;
    if (req->spans_set) {
        /* The caller scanned the body already: trust its spans (they point into req->body). */
        size_t i = 0;
        while (i < req->len && req->body[i] != '{')
            i++;
        size_t e = req->len;
        while (e > i && req->body[e - 1] != '}')
            e--;
        if (e <= i)
            return -EINVAL;
        root.p = req->body + i;
        root.n = e - i;
        root.type = AH_JSON_OBJECT;
        mv = req->model_span;
        so = req->stream_options_span;
        has_model = mv.type != AH_JSON_NONE;
        has_so = force_usage && so.type != AH_JSON_NONE;
    } else {
        if (ah_json_value(req->body, req->len, &root) < 0 || root.type != AH_JSON_OBJECT)
            return -EINVAL;
        has_model = ah_json_member(&root, "model", &mv) == 0;
        has_so = force_usage && ah_json_member(&root, "stream_options", &so) == 0;
    }
    int rc = ah_buf_reserve(out, req->len + 64);
    if (rc)
        return rc;

    /* Copy the object, splicing the two values; spans are in document order. */
    const char *p = root.p;
    const char *end = root.p + root.n;
    const ah_jspan_t *first = NULL, *second = NULL;
    if (has_model && has_so) {
        first = mv.p < so.p ? &mv : &so;
        second = mv.p < so.p ? &so : &mv;
    } else if (has_model) {
        first = &mv;
    } else if (has_so) {
        first = &so;
    }
    const ah_jspan_t *spans[2] = {first, second};
    for (int i = 0; i < 2 && spans[i]; i++) {
        const ah_jspan_t *s = spans[i];
        ah_buf_append(out, p, (size_t)(s->p - p));
        if (s == &mv) {
            if (drop_model) {
                ah_buf_puts(out, "null");
            } else {
                ah_buf_putc(out, '"');
                ah_buf_json_escape(out, model, strlen(model));
                ah_buf_putc(out, '"');
            }
        } else {
            ah_buf_puts(out, "{\"include_usage\":true}");
        }
        p = s->p + s->n;
    }
    /* Up to the closing brace, then what must be added. */
    const char *close = end - 1;
    ah_buf_append(out, p, (size_t)(close - p));
    size_t last = out->len;
    while (last > 0 && strchr(" \t\r\n", out->data[last - 1]))
        last--;
    bool empty = last > 0 && out->data[last - 1] == '{';
    if (!has_model && !drop_model) {
        ah_buf_puts(out, empty ? "\"model\":\"" : ",\"model\":\"");
        ah_buf_json_escape(out, model, strlen(model));
        ah_buf_putc(out, '"');
        empty = false;
    }
    if (force_usage && !has_so)
        ah_buf_puts(out, empty ? "\"stream_options\":{\"include_usage\":true}"
                               : ",\"stream_options\":{\"include_usage\":true}");
    return ah_buf_putc(out, '}');
}

/* Reads an OpenAI usage object span into u. */
static void usage_from_span(const ah_jspan_t *usage, ah_llm_usage_t *u)
{
    ah_jspan_t v;
    int64_t x;
    if (usage->type != AH_JSON_OBJECT)
        return;
    u->present = true;
    if (ah_json_member(usage, "prompt_tokens", &v) == 0 && ah_json_int(&v, &x) == 0)
        u->prompt_tokens = x;
    if (ah_json_member(usage, "completion_tokens", &v) == 0 && ah_json_int(&v, &x) == 0)
        u->completion_tokens = x;
    if (ah_json_path(usage, "prompt_tokens_details.cached_tokens", &v) == 0 &&
        ah_json_int(&v, &x) == 0)
        u->cached_tokens = x;
}

void ah_gw_openai_usage(const char *json, size_t n, ah_llm_usage_t *u)
{
    static const char *const keys[] = {"usage"};
    ah_jspan_t usage;
    if (ah_json_object_scan(json, n, keys, 1, &usage, NULL, NULL) == 0)
        usage_from_span(&usage, u);
}

static int openai_build(const ah_gw_prov_t *p, const ah_gw_request_t *req,
                        const char *upstream_model, ah_gw_upstream_t *up, ah_buf_t *err)
{
    const char *path = req->kind == AH_GW_EMBEDDINGS ? "/embeddings" : "/chat/completions";
    size_t bl = strlen(p->base_url);
    while (bl && p->base_url[bl - 1] == '/')
        bl--;
    ah_buf_append(&up->url, p->base_url, bl);
    ah_buf_puts(&up->url, path);
    if (p->cfg->api_key && p->cfg->api_key[0]) {
        ah_buf_t auth;
        ah_buf_init(&auth, 0);
        ah_buf_printf(&auth, "Bearer %s", p->cfg->api_key);
        ah_gw_upstream_header(up, "Authorization", auth.data);
        ah_buf_free(&auth);
    }
    ah_gw_upstream_header(up, "Content-Type", "application/json");
    if (req->request_id)
        ah_gw_upstream_header(up, "x-request-id", req->request_id);
    if (ah_gw_rewrite_openai_body(req, upstream_model, false, &up->body) != 0) {
        ah_buf_puts(err, "request body is not a JSON object");
        return -EINVAL;
    }
    return 0;
}

static int azure_build(const ah_gw_prov_t *p, const ah_gw_request_t *req,
                       const char *upstream_model, ah_gw_upstream_t *up, ah_buf_t *err)
{
    /* https://{resource}.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version=V
     */
    const char *path = req->kind == AH_GW_EMBEDDINGS ? "embeddings" : "chat/completions";
    size_t bl = strlen(p->base_url);
    while (bl && p->base_url[bl - 1] == '/')
        bl--;
    ah_buf_append(&up->url, p->base_url, bl);
    ah_buf_printf(&up->url, "/openai/deployments/%s/%s?api-version=%s", upstream_model, path,
                  p->cfg->api_version && p->cfg->api_version[0] ? p->cfg->api_version
                                                                : "2024-10-21");
    if (p->cfg->api_key && p->cfg->api_key[0])
        ah_gw_upstream_header(up, "api-key", p->cfg->api_key);
    ah_gw_upstream_header(up, "Content-Type", "application/json");
    if (req->request_id)
        ah_gw_upstream_header(up, "x-request-id", req->request_id);
    /* The deployment names the model; the body keeps the client's fields. */
    if (ah_gw_rewrite_openai_body(req, upstream_model, false, &up->body) != 0) {
        ah_buf_puts(err, "request body is not a JSON object");
        return -EINVAL;
    }
    return 0;
}

int ah_gw_openai_response(const ah_gw_prov_t *p, const ah_gw_request_t *req, const char *body,
                          size_t n, ah_buf_t *out, ah_llm_usage_t *usage)
{
    (void)p;
    (void)req;
    (void)out; /* forwarded unchanged */
    /* One pass validates the whole answer and finds its usage. */
    static const char *const keys[] = {"usage"};
    ah_jspan_t u;
    if (ah_json_object_scan(body, n, keys, 1, &u, NULL, NULL) != 0)
        return -EINVAL;
    usage_from_span(&u, usage);
    return 0;
}

int ah_gw_openai_stream_event(void *st, const ah_gw_request_t *req, const char *event,
                              const char *data, size_t n, ah_buf_t *out, ah_llm_usage_t *usage,
                              bool *done)
{
    (void)st;
    (void)event;
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        *done = true;
        return 0;
    }
    /* One pass validates the chunk and finds usage and choices. */
    static const char *const keys[] = {"usage", "choices"};
    ah_jspan_t f[2];
    if (ah_json_object_scan(data, n, keys, 2, f, NULL, NULL) != 0)
        return -EINVAL;
    /* Usage comes in the last chunk (choices: []) when include_usage is on. */
    if (f[0].type == AH_JSON_OBJECT) {
        ah_llm_usage_t u = {0};
        usage_from_span(&f[0], &u);
        *usage = u;
        if (!req->include_usage && f[1].type == AH_JSON_ARRAY && ah_json_array_empty(&f[1]))
            return 0; /* asked for by the gateway, not by the client */
    }
    ah_buf_puts(out, "data: ");
    /* The usage we forced adds "usage":null to every chunk: hide it from a client that did not
     * ask, as OpenAI does. */
    const char *un = !req->include_usage ? memmem(data, n, ",\"usage\":null", 13) : NULL;
    if (un) {
        ah_buf_append(out, data, (size_t)(un - data));
        ah_buf_append(out, un + 13, n - (size_t)(un - data) - 13);
    } else {
        ah_buf_append(out, data, n);
    }
    return ah_buf_puts(out, "\n\n");
}

int ah_gw_openai_error(int status, const char *body, size_t n, ah_buf_t *out)
{
    /* The gateway's own credentials or model mapping are wrong: not the client's fault. */
    if (status == 401 || status == 402 || status == 403 || status == 404) {
        char m[200];
        snprintf(m, sizeof(m),
                 "the upstream refused the gateway's request (HTTP %d): check the provider's "
                 "api_key, base_url and model",
                 status);
        ah_gw_error_json(out, "server_error", "upstream_config", m);
        return 502;
    }
    ah_jspan_t root, err;
    if (ah_json_value(body, n, &root) >= 0 && root.type == AH_JSON_OBJECT &&
        ah_json_member(&root, "error", &err) == 0 && err.type == AH_JSON_OBJECT) {
        ah_buf_append(out, root.p, root.n); /* already OpenAI-shaped */
        return status;
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "upstream answered HTTP %d without an OpenAI error body", status);
    ah_gw_error_json(out, status >= 500 ? "server_error" : "invalid_request_error",
                     "upstream_error", msg);
    return status;
}

const ah_provider_ops_t ah_provider_openai = {
    .type = "openai",
    .has_embeddings = true,
    .build = openai_build,
    .response = ah_gw_openai_response,
    .stream_event = ah_gw_openai_stream_event,
    .error = ah_gw_openai_error,
};

const ah_provider_ops_t ah_provider_azure = {
    .type = "azure",
    .has_embeddings = true,
    .build = azure_build,
    .response = ah_gw_openai_response,
    .stream_event = ah_gw_openai_stream_event,
    .error = ah_gw_openai_error,
};
