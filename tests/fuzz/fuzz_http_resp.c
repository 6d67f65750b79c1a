/*
 * fuzz_http_resp.c - libFuzzer target for the upstream response parser
 * (http/resp.h): the first byte picks the request kind (HEAD or not) and how
 * the rest is split into reads; heads (interim 1xx included) then the body are
 * parsed the way the client does, asserting the in-place decoder's bounds.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/resp.h"

static int count_header(void *ud, const char *name, size_t nl, const char *value, size_t vl)
{
    size_t *n = ud;
    assert(nl > 0 && name && (value || vl == 0));
    (*n)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool head_request = data[0] & 1;
    size_t step = (size_t)(data[0] >> 1) + 1; /* body read size: 1..128 */
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1, off = 0, headers = 0;
    ah_http_resp_t r;
    long hl;
    for (;;) {
        hl =
            ah_http_resp_head(&r, buf + off, len - off, 4096, head_request, count_header, &headers);
        if (hl <= 0)
            break;
        assert((size_t)hl <= len - off);
        off += (size_t)hl;
        if (r.status >= 200)
            break;
    }
    if (hl > 0) {
        while (off < len) {
            size_t n = len - off < step ? len - off : step;
            size_t used, out;
            int rc = ah_http_resp_body(&r, buf + off, n, &used, &out);
            assert(used <= n && out <= used);
            if (rc != 0 || used == 0)
                break;
            off += used;
        }
        ah_http_resp_eof(&r);
    }
    free(buf);
    return 0;
}
