/* test_http_resp.c - upstream response heads and body framing (http/resp.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "http/resp.h"

typedef struct hdrs {
    char text[512]; /* "name=value;" */
    size_t n;
    int fail_with;
} hdrs_t;

static int collect(void *ud, const char *name, size_t nl, const char *value, size_t vl)
{
    hdrs_t *h = ud;
    size_t used = strlen(h->text);
    snprintf(h->text + used, sizeof(h->text) - used, "%.*s=%.*s;", (int)nl, name, (int)vl, value);
    h->n++;
    return h->fail_with;
}

/* Parses the final head of s (skipping interim ones); returns where the body starts, or rc. */
static long head(const char *s, bool head_request, ah_http_resp_t *r, hdrs_t *h)
{
    size_t off = 0;
    for (;;) {
        long n = ah_http_resp_head(r, s + off, strlen(s) - off, 65536, head_request, collect, h);
        if (n <= 0)
            return n;
        off += (size_t)n;
        if (r->status >= 200)
            return (long)off;
    }
}

/* Feeds the body in pieces of step bytes; returns the decoded payload in out. */
static int body(ah_http_resp_t *r, const char *s, size_t step, char *out, size_t *out_n,
                size_t *left)
{
    char buf[256];
    size_t len = strlen(s), off = 0;
    *out_n = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        size_t n = len - off < step ? len - off : step;
        memcpy(buf, s + off, n);
        size_t used, got;
        rc = ah_http_resp_body(r, buf, n, &used, &got);
        memcpy(out + *out_n, buf, got);
        *out_n += got;
        off += used;
        if (used < n && rc == 0)
            break;
    }
    out[*out_n] = '\0';
    *left = len - off;
    return rc;
}

static void test_content_length(void **st)
{
    (void)st;
    ah_http_resp_t r;
    hdrs_t h = {0};
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
                    "helloNEXT";
    long off = head(s, false, &r, &h);
    assert_true(off > 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.content_length, 5);
    assert_int_equal(r.mode, AH_HTTP_BODY_LENGTH);
    assert_true(r.keep_alive);
    assert_string_equal(h.text, "Content-Type=text/plain;Content-Length=5;");
    char out[64];
    size_t n, left;
    assert_int_equal(body(&r, s + off, 2, out, &n, &left), 1);
    assert_string_equal(out, "hello");
    assert_int_equal(left, 4); /* "NEXT" is not this response's */
    assert_true(ah_http_resp_eof(&r));
}

static void test_chunked_with_trailers_any_split(void **st)
{
    (void)st;
    const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *b = "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
    for (size_t step = 1; step <= strlen(b); step++) {
        ah_http_resp_t r;
        hdrs_t h = {0};
        assert_true(head(s, false, &r, &h) > 0);
        assert_int_equal(r.mode, AH_HTTP_BODY_CHUNKED);
        assert_int_equal(r.content_length, -1);
        char out[64];
        size_t n, left;
        assert_int_equal(body(&r, b, step, out, &n, &left), 1);
        assert_string_equal(out, "hello, world");
        assert_int_equal(left, 0);
        assert_true(r.keep_alive);
    }
    /* Cut before the last chunk: the close does not complete it. */
    ah_http_resp_t r;
    hdrs_t h = {0};
    assert_true(head(s, false, &r, &h) > 0);
    char out[64];
    size_t n, left;
    assert_int_equal(body(&r, "5\r\nhello\r\n", 3, out, &n, &left), 0);
    assert_string_equal(out, "hello");
    assert_false(ah_http_resp_eof(&r));
    /* Malformed chunk size. */
    assert_true(head(s, false, &r, &h) > 0);
    assert_int_equal(body(&r, "zz\r\n", 4, out, &n, &left), AH_HTTP_PARSE_BAD);
}

static void test_until_close(void **st)
{
    (void)st;
    ah_http_resp_t r;
    hdrs_t h = {0};
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
    long off = head(s, false, &r, &h);
    assert_true(off > 0);
    assert_int_equal(r.mode, AH_HTTP_BODY_CLOSE);
    assert_false(r.keep_alive);
    char out[64];
    size_t n, left;
    assert_int_equal(body(&r, s + off, 4, out, &n, &left), 0);
    assert_string_equal(out, "all of it");
    assert_true(ah_http_resp_eof(&r)); /* the close ends it */
    /* Transfer-Encoding not ending in chunked runs to the close too. */
    assert_true(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
                     false, &r, &h) > 0);
    assert_int_equal(r.mode, AH_HTTP_BODY_CLOSE);
    assert_int_equal(r.content_length, -1);
    assert_false(r.keep_alive);
    /* Content-Length cut short is not complete. */
    assert_true(head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false, &r, &h) > 0);
    assert_false(ah_http_resp_eof(&r));
}

static void test_no_body_cases(void **st)
{
    (void)st;
    const char *cases[] = {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                           "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                           "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    for (size_t i = 0; i < 3; i++) {
        ah_http_resp_t r;
        hdrs_t h = {0};
        assert_true(head(cases[i], false, &r, &h) > 0);
        assert_int_equal(r.mode, AH_HTTP_BODY_NONE);
        assert_true(r.done);
        assert_true(r.keep_alive);
    }
    /* HEAD: the Content-Length describes a body that is not sent. */
    ah_http_resp_t r;
    hdrs_t h = {0};
    assert_true(head("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", true, &r, &h) > 0);
    assert_int_equal(r.mode, AH_HTTP_BODY_NONE);
    assert_int_equal(r.content_length, 11);
    assert_true(r.done);
}

static void test_interim_and_connection(void **st)
{
    (void)st;
    ah_http_resp_t r;
    hdrs_t h = {0};
    const char *s = "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                    "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
    assert_true(head(s, false, &r, &h) > 0);
    assert_int_equal(r.status, 404);
    assert_false(r.keep_alive);
    assert_int_equal(h.n, 2); /* interim heads' headers are not reported */
    assert_true(head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, &r, &h) > 0);
    assert_false(r.keep_alive);
    assert_true(head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                     false, &r, &h) > 0);
    assert_true(r.keep_alive);
    assert_int_equal(r.minor, 0);
    /* Reason phrase is optional. */
    assert_true(head("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, &r, &h) > 0);
    assert_int_equal(r.status, 200);
}

static void test_bad_heads_and_limits(void **st)
{
    (void)st;
    const char *bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_http_resp_t r;
        hdrs_t h = {0};
        assert_int_equal(head(bad[i], false, &r, &h), AH_HTTP_PARSE_BAD);
    }
    ah_http_resp_t r;
    hdrs_t h = {0};
    /* Incomplete head: more bytes needed. */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Len", false, &r, &h), 0);
    /* Over the limit without an end. */
    char big[300];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    assert_int_equal(ah_http_resp_head(&r, big, strlen(big), 256, false, NULL, NULL),
                     AH_HTTP_PARSE_HEADERS_BIG);
    /* The header callback can stop the parse with its own code. */
    h.fail_with = -E2BIG;
    assert_int_equal(head("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", false, &r, &h), -E2BIG);
    assert_int_equal(h.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked_with_trailers_any_split),
        cmocka_unit_test(test_until_close),
        cmocka_unit_test(test_no_body_cases),
        cmocka_unit_test(test_interim_and_connection),
        cmocka_unit_test(test_bad_heads_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
