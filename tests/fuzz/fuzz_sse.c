/*
 * fuzz_sse.c - libFuzzer target for the SSE parser (http/sse_parser.h).
 *
 * Input layout: byte 0 = number k of split sizes (0..15), bytes 1..k = split
 * sizes (each 1..256; 0 means 1), the rest = the stream. The stream is parsed
 * once whole and once fed in pieces of those sizes (cycled); both runs must
 * give the same events (compared by a running hash), the same result and the
 * same last id. A small max_event_bytes is used so the limit path is hit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/sse_parser.h"

typedef struct {
    uint64_t hash;
    size_t events;
} acc_t;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int on_event(void *ud, const char *event, const char *data, size_t len, const char *id)
{
    acc_t *a = ud;
    if (data[len] != '\0')
        abort();
    a->hash = fnv(a->hash, event, strlen(event) + 1);
    a->hash = fnv(a->hash, id, strlen(id) + 1);
    a->hash = fnv(a->hash, &len, sizeof(len));
    a->hash = fnv(a->hash, data, len);
    a->events++;
    /* Stop on a marker so the callback-stop path is covered too. */
    return len == 4 && memcmp(data, "STOP", 4) == 0 ? 7 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t k = data[0] & 15;
    if (size < 1 + k)
        return 0;
    const uint8_t *splits = data + 1;
    const char *s = (const char *)data + 1 + k;
    size_t n = size - 1 - k;
    size_t max = 64 + (data[0] >> 4) * 64;

    ah_sse_parser_t whole, split;
    acc_t a = {1469598103934665603ull, 0}, b = {1469598103934665603ull, 0};

    ah_sse_parser_init(&whole, max);
    int rc1 = ah_sse_parser_feed(&whole, s, n, on_event, &a);

    ah_sse_parser_init(&split, max);
    int rc2 = 0;
    size_t at = 0, i = 0;
    while (at < n && rc2 == 0) {
        size_t step = k ? splits[i++ % k] : 1;
        if (step == 0)
            step = 1;
        if (step > n - at)
            step = n - at;
        rc2 = ah_sse_parser_feed(&split, s + at, step, on_event, &b);
        at += step;
    }
    if (rc2 == 0 && k && splits[0] == 0) /* an empty feed must change nothing */
        rc2 = ah_sse_parser_feed(&split, s + n, 0, on_event, &b);

    if (rc1 != rc2 || a.hash != b.hash || a.events != b.events)
        abort();
    if (rc1 == 0 && (strcmp(ah_sse_parser_last_id(&whole), ah_sse_parser_last_id(&split)) != 0 ||
                     ah_sse_parser_pending(&whole) != ah_sse_parser_pending(&split)))
        abort();
    ah_sse_parser_free(&whole);
    ah_sse_parser_free(&split);
    return 0;
}
