/*
 * fuzz_anthropic.c - libFuzzer target for the OpenAI <-> Anthropic
 * translation (gateway/anthropic.h). Byte 0 picks the path, the rest is
 * the input:
 *   0: an OpenAI request body -> ah_anthropic_request (result must serialise)
 *   1: an Anthropic answer    -> ah_anthropic_response (output must be JSON)
 *   2: an Anthropic SSE byte stream -> SSE parser -> stream translator
 *      (every frame written must be "data: <JSON>\n\n")
 *   3: an error body, status from byte 1 -> ah_anthropic_error
 * No crash, no leak (ASan), no invalid JSON out.
 */
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/anthropic.h"
#include "http/sse_parser.h"

static void must_be_json(const char *p, size_t n)
{
    json_t *j = json_loadb(p, n, JSON_ALLOW_NUL, NULL);
    if (!j)
        abort();
    json_decref(j);
}

/* Checks that out holds only complete "data: {json}\n\n" frames. */
static void check_frames(const ah_buf_t *out, size_t from)
{
    if (out->len == from)
        return;
    const char *s = out->data + from, *end = out->data + out->len;
    while (s < end) {
        if (end - s < 8 || memcmp(s, "data: ", 6) != 0)
            abort();
        const char *nl = memmem(s, (size_t)(end - s), "\n\n", 2);
        if (!nl)
            abort();
        must_be_json(s + 6, (size_t)(nl - s - 6));
        s = nl + 2;
    }
}

typedef struct {
    ah_anthropic_stream_t st;
    ah_buf_t out;
} pipe_t;

static int on_event(void *ud, const char *event, const char *data, size_t n, const char *id)
{
    (void)id;
    pipe_t *p = ud;
    size_t mark = p->out.len;
    int rc = ah_anthropic_stream_event(&p->st, event, data, n, &p->out);
    if (rc == -EINVAL || rc == -EREMOTEIO) {
        must_be_json(p->out.data + mark, p->out.len - mark);
        return 1;
    }
    if (rc)
        abort(); /* no memory limit here: only the two protocol errors are possible */
    check_frames(&p->out, mark);
    /* Keep memory flat over long inputs. */
    ah_buf_reset(&p->out);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0: {
        json_t *req = json_loadb(in, n, 0, NULL);
        if (!req)
            return 0;
        json_t *out = NULL;
        ah_buf_t err = AH_BUF_INIT;
        const char *param = NULL;
        int rc = ah_anthropic_request(req, "claude-fuzz", &out, &err, &param);
        if (rc == 0) {
            char *s = json_dumps(out, JSON_COMPACT);
            if (!s || out == NULL)
                abort();
            free(s);
        } else if (rc == -EINVAL) {
            /* The message is set; the param, if any, lives inside err's memory. */
            if (!err.data || (param && (param < err.data || param >= err.data + err.cap)))
                abort();
        } else {
            abort();
        }
        json_decref(out);
        json_decref(req);
        ah_buf_free(&err);
        break;
    }
    case 1: {
        ah_buf_t out = AH_BUF_INIT, err = AH_BUF_INIT;
        ah_llm_usage_t u;
        int rc = ah_anthropic_response(in, n, "m", &out, &u, &err);
        if (rc == 0)
            must_be_json(out.data, out.len);
        else if (rc != -EINVAL || out.len)
            abort();
        ah_buf_free(&out);
        ah_buf_free(&err);
        break;
    }
    case 2: {
        pipe_t p;
        ah_buf_init(&p.out, 0);
        if (ah_anthropic_stream_init(&p.st, (data[0] & 4) ? "chatcmpl-" : NULL, "m\"odel",
                                     1700000000, data[0] & 8) != 0)
            abort();
        ah_sse_parser_t parser;
        ah_sse_parser_init(&parser, 4096);
        ah_sse_parser_feed(&parser, in, n, on_event, &p);
        ah_sse_parser_free(&parser);
        if (p.st.usage.present &&
            (p.st.usage.prompt_tokens < 0 || p.st.usage.completion_tokens < 0))
            abort();
        ah_anthropic_stream_free(&p.st);
        ah_buf_free(&p.out);
        break;
    }
    default: {
        if (n < 1)
            return 0;
        static const int statuses[] = {400, 401, 402, 403, 404, 413, 429, 500, 502, 504, 529, 0};
        ah_buf_t out = AH_BUF_INIT;
        int st = ah_anthropic_error(statuses[(uint8_t)in[0] % 12], in + 1, n - 1, &out);
        if (st < 400 || st > 599)
            abort();
        must_be_json(out.data, out.len);
        ah_buf_free(&out);
        break;
    }
    }
    return 0;
}
