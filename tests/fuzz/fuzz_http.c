/*
 * fuzz_http.c - libFuzzer target for request parsing and routing: arbitrary
 * bytes go through head detection, head parsing, routing against the real
 * API route table, and (for the remainder) the chunked body decoder.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "http/parser.h"
#include "http/router.h"

static ah_router_t *router;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router) {
        router = ah_router_new();
        ah_api_register(router);
    }
    const char *buf = (const char *)data;
    long end = ah_http_head_end(buf, size, 16384);
    if (end <= 0)
        return 0;
    ah_http_header_t hdrs[64];
    ah_http_head_t h = {.headers = hdrs};
    if (ah_http_parse_head(buf, (size_t)end, &h, 64) != 0)
        return 0;
    ah_arena_t arena;
    ah_arena_init(&arena, 1024, 65536);
    const ah_route_t *route;
    ah_route_params_t params;
    char allow[64];
    ah_router_match(router, h.method, h.path, h.path_len, &arena, &route, &params, allow,
                    sizeof(allow));
    ah_arena_free(&arena);
    if (h.chunked) {
        size_t rest = size - (size_t)end;
        char *out = malloc(rest + 1);
        ah_http_chunked_t d;
        ah_http_chunked_init(&d);
        size_t used, produced;
        if (out)
            ah_http_chunked_decode(&d, buf + end, rest, &used, out, &produced);
        free(out);
    }
    return 0;
}
