/* test_http_parser.c - request head parsing and chunked bodies (http/parser.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "http/parser.h"

static int parse(const char *s, ah_http_head_t *h, ah_http_header_t *hdrs, size_t max)
{
    long end = ah_http_head_end(s, strlen(s), 8192);
    if (end <= 0)
        return end == 0 ? 1 : (int)end;
    h->headers = hdrs;
    return ah_http_parse_head(s, (size_t)end, h, max);
}

static void test_simple_get(void **st)
{
    (void)st;
    ah_http_header_t hd[16];
    ah_http_head_t h;
    const char *req = "GET /v1/models?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Thing:  v v \r\n\r\n";
    assert_int_equal(parse(req, &h, hd, 16), 0);
    assert_int_equal(h.method, AH_HTTP_GET);
    assert_int_equal(h.path_len, 10);
    assert_memory_equal(h.path, "/v1/models", 10);
    assert_int_equal(h.query_len, 7);
    assert_memory_equal(h.query, "x=1&y=2", 7);
    assert_int_equal(h.n_headers, 2);
    size_t n;
    const char *v = ah_http_head_get(&h, "x-thing", &n);
    assert_non_null(v);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "v v", 3);
    assert_true(h.keep_alive);
    assert_int_equal(h.content_length, -1);
}

static void test_incomplete_and_lf_only(void **st)
{
    (void)st;
    const char *part = "GET / HTTP/1.1\r\nHost: a\r\n";
    assert_int_equal(ah_http_head_end(part, strlen(part), 8192), 0);
    const char *lf = "\r\nGET / HTTP/1.1\nHost: a\n\nBODY";
    long e = ah_http_head_end(lf, strlen(lf), 8192);
    assert_int_equal(e, (long)strlen(lf) - 4);
    ah_http_header_t hd[4];
    ah_http_head_t h = {.headers = hd};
    assert_int_equal(ah_http_parse_head(lf, (size_t)e, &h, 4), 0);
    assert_int_equal(h.n_headers, 1);
}

static void test_head_too_big(void **st)
{
    (void)st;
    char big[300];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    assert_int_equal(ah_http_head_end(big, sizeof(big), 256), AH_HTTP_PARSE_HEADERS_BIG);
}

static void test_errors(void **st)
{
    (void)st;
    ah_http_header_t hd[2];
    ah_http_head_t h;
    assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_VERSION);
    assert_int_equal(parse("BREW / HTTP/1.1\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_NOT_IMPL);
    assert_int_equal(parse("GET /\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("GET http://x/ HTTP/1.1\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &h, hd, 2),
                     AH_HTTP_PARSE_HEADERS_BIG);
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &h, hd, 2),
                     AH_HTTP_PARSE_BAD);
    assert_int_equal(
        parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &h, hd, 2),
        AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                           "2\r\n\r\n",
                           &h, hd, 2),
                     AH_HTTP_PARSE_BAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &h, hd, 2),
                     AH_HTTP_PARSE_NOT_IMPL);
    assert_int_equal(parse("GET /a\x01 HTTP/1.1\r\n\r\n", &h, hd, 2), AH_HTTP_PARSE_BAD);
}

static void test_connection_semantics(void **st)
{
    (void)st;
    ah_http_header_t hd[4];
    ah_http_head_t h;
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &h, hd, 4), 0);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &h, hd, 4), 0);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h, hd, 4), 0);
    assert_true(h.keep_alive);
    assert_int_equal(
        parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", &h, hd, 4),
        0);
    assert_true(h.expect_continue);
    assert_int_equal(h.content_length, 5);
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &h, hd, 4), 0);
    assert_true(h.chunked);
}

static void test_chunked_whole_and_split(void **st)
{
    (void)st;
    const char *body = "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    size_t len = strlen(body);
    /* All at once. */
    ah_http_chunked_t d;
    ah_http_chunked_init(&d);
    char out[128];
    size_t used, produced;
    assert_int_equal(ah_http_chunked_decode(&d, body, len, &used, out, &produced), 1);
    assert_int_equal(produced, 12);
    assert_memory_equal(out, "hello, world", 12);
    assert_int_equal(used, len - 4);
    /* One byte at a time gives the same result. */
    ah_http_chunked_init(&d);
    char acc[128];
    size_t alen = 0;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        rc = ah_http_chunked_decode(&d, body + i, 1, &used, out, &produced);
        memcpy(acc + alen, out, produced);
        alen += produced;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(alen, 12);
    assert_memory_equal(acc, "hello, world", 12);
}

static void test_chunked_errors(void **st)
{
    (void)st;
    ah_http_chunked_t d;
    char out[64];
    size_t used, produced;
    ah_http_chunked_init(&d);
    assert_int_equal(ah_http_chunked_decode(&d, "zz\r\n", 4, &used, out, &produced),
                     AH_HTTP_PARSE_BAD);
    ah_http_chunked_init(&d);
    assert_int_equal(ah_http_chunked_decode(&d, "1\r\nab\r\n", 7, &used, out, &produced),
                     AH_HTTP_PARSE_BAD);
    ah_http_chunked_init(&d);
    assert_int_equal(
        ah_http_chunked_decode(&d, "ffffffffffffffffff\r\n", 20, &used, out, &produced),
        AH_HTTP_PARSE_BAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),           cmocka_unit_test(test_incomplete_and_lf_only),
        cmocka_unit_test(test_head_too_big),         cmocka_unit_test(test_errors),
        cmocka_unit_test(test_connection_semantics), cmocka_unit_test(test_chunked_whole_and_split),
        cmocka_unit_test(test_chunked_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
