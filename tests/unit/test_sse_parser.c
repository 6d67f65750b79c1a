/* test_sse_parser.c - incremental SSE parser (http/sse_parser.h), per HTML 9.2.6. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/sse_parser.h"

#define S(lit) lit, sizeof(lit) - 1

/* Records events as "type|id|data\n" (data bytes escaped so NUL and LF show). */
typedef struct {
    ah_buf_t log;
    int count;
    int stop_at; /* return 99 from this event number (1-based), 0 = never */
} rec_t;

static int on_event(void *ud, const char *event, const char *data, size_t len, const char *id)
{
    rec_t *r = ud;
    r->count++;
    assert_int_equal(data[len], '\0');
    ah_buf_puts(&r->log, event);
    ah_buf_putc(&r->log, '|');
    ah_buf_puts(&r->log, id);
    ah_buf_putc(&r->log, '|');
    ah_buf_json_escape(&r->log, data, len);
    ah_buf_putc(&r->log, '\n');
    return r->stop_at && r->count == r->stop_at ? 99 : 0;
}

static void rec_init(rec_t *r)
{
    ah_buf_init(&r->log, 0);
    ah_buf_puts(&r->log, "");
    r->count = 0;
    r->stop_at = 0;
}

/* Parses s (n bytes) in one feed; returns the log (caller frees) and the result in *rc. */
static char *parse_whole(const char *s, size_t n, size_t max, int *rc)
{
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, max);
    *rc = ah_sse_parser_feed(&p, s, n, on_event, &r);
    ah_sse_parser_free(&p);
    return ah_buf_steal(&r.log);
}

static char *parse_split(const char *s, size_t n, const size_t *cuts, size_t ncuts, size_t max,
                         int *rc)
{
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, max);
    size_t at = 0;
    *rc = 0;
    for (size_t k = 0; k <= ncuts && !*rc; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        *rc = ah_sse_parser_feed(&p, s + at, end - at, on_event, &r);
        at = end;
    }
    ah_sse_parser_free(&p);
    return ah_buf_steal(&r.log);
}

static void expect(const char *stream, const char *want)
{
    int rc;
    char *got = parse_whole(stream, strlen(stream), 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(got, want);
    free(got);
}

static void test_spec_examples(void **st)
{
    (void)st;
    /* HTML 9.2.6 examples. */
    expect("data: YHOO\ndata: +2\ndata: 10\n\n", "message||YHOO\\n+2\\n10\n");
    expect(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
           "data:  third event\n\n",
           "message|1|first event\nmessage||second event\nmessage|| third event\n");
    /* Empty data, a lone newline, and an unterminated block that is discarded. */
    expect("data\n\ndata\ndata\n\ndata:", "message||\nmessage||\\n\n");
    expect("data:test\n\ndata: test\n\n", "message||test\nmessage||test\n");
    expect("event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n",
           "add||73857293\nremove||2153\n");
}

static void test_fields(void **st)
{
    (void)st;
    /* Only one leading space is stripped; tabs are kept; colons in values stay. */
    expect("data:  two\n\ndata:\tt\n\ndata: a:b: c\n\n",
           "message|| two\nmessage||\\tt\nmessage||a:b: c\n");
    /* Field names are exact: case, leading spaces and unknown names are ignored. */
    expect("Data: x\n data: y\nfoo: z\ndata: ok\n\n", "message||ok\n");
    /* A field without colon has an empty value. */
    expect("event\ndata\n\n", "message||\n");
    /* Comments anywhere, even between data lines. */
    expect(":c1\ndata: a\n: c2\ndata: b\n:\n\n", "message||a\\nb\n");
}

static void test_event_and_id_persistence(void **st)
{
    (void)st;
    /* The event type is per event; the id persists until changed. */
    expect("event: add\nid: 7\ndata: 1\n\ndata: 2\n\n", "add|7|1\nmessage|7|2\n");
    /* An event with no data dispatches nothing but still sets the id and clears the type. */
    expect("event: x\nid: 8\n\ndata: y\n\n", "message|8|y\n");
    /* "id" without value resets; an id containing NUL is ignored. */
    expect("id: 5\ndata: a\n\nid\ndata: b\n\n", "message|5|a\nmessage||b\n");
    int rc;
    static const char nul_id[] = "id: 3\ndata: a\n\nid: x\0y\ndata: b\n\n";
    char *got = parse_whole(nul_id, sizeof(nul_id) - 1, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(got, "message|3|a\nmessage|3|b\n");
    free(got);
    /* NUL bytes inside data are kept (data_len is the truth). */
    static const char nul_data[] = "data: a\0b\n\n";
    got = parse_whole(nul_data, sizeof(nul_data) - 1, 0, &rc);
    assert_string_equal(got, "message||a\\u0000b\n");
    free(got);
    /* Last id and retry are exposed. */
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, 0);
    const char *s = "retry: 3000\nid: abc\nretry: 12x\nretry\n\n";
    assert_int_equal(ah_sse_parser_feed(&p, s, strlen(s), on_event, &r), 0);
    assert_int_equal(p.retry_ms, 3000);
    assert_string_equal(ah_sse_parser_last_id(&p), "abc");
    assert_int_equal(r.count, 0);
    ah_sse_parser_free(&p);
    ah_buf_free(&r.log);
}

static void test_line_endings(void **st)
{
    (void)st;
    expect("data: a\r\ndata: b\r\n\r\n", "message||a\\nb\n");
    expect("data: a\rdata: b\r\r", "message||a\\nb\n");
    expect("data: a\ndata: b\r\rdata: c\n\r\n", "message||a\\nb\nmessage||c\n");
    /* CR LF LF is a line end then a blank line, CR CR LF is two line ends. */
    expect("data: a\r\n\ndata: b\r\r\n", "message||a\nmessage||b\n");
}

static void test_crlf_split_across_feeds(void **st)
{
    (void)st;
    /* A CR ending one feed and the LF starting the next are one line end: the
     * LF must not be taken for a blank line that dispatches early. */
    const char *s = "data: a\r\ndata: b\r\n\r\n";
    size_t cuts[] = {8};
    int rc;
    char *got = parse_split(s, strlen(s), cuts, 1, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(got, "message||a\\nb\n");
    free(got);
    /* CR at the end of a feed followed by an empty feed, then the LF. */
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, 0);
    assert_int_equal(ah_sse_parser_feed(&p, "data: x\r", 8, on_event, &r), 0);
    assert_int_equal(ah_sse_parser_feed(&p, "", 0, on_event, &r), 0);
    assert_int_equal(ah_sse_parser_feed(&p, "\n\r", 2, on_event, &r), 0);
    assert_int_equal(ah_sse_parser_feed(&p, "\n", 1, on_event, &r), 0);
    assert_string_equal(r.log.data, "message||x\n");
    assert_false(ah_sse_parser_pending(&p));
    ah_sse_parser_free(&p);
    ah_buf_free(&r.log);
}

static void test_bom(void **st)
{
    (void)st;
    expect("\xEF\xBB\xBF"
           "data: x\n\n",
           "message||x\n");
    /* Only one BOM is dropped: a second one is part of the first field name. */
    expect("\xEF\xBB\xBF\xEF\xBB\xBF"
           "data: x\n\ndata: y\n\n",
           "message||y\n");
    /* A BOM split byte by byte. */
    const char *s = "\xEF\xBB\xBF"
                    "data: z\n\n";
    size_t cuts[] = {1, 2, 3};
    int rc;
    char *got = parse_split(s, strlen(s), cuts, 3, 0, &rc);
    assert_string_equal(got, "message||z\n");
    free(got);
    /* A partial BOM is ordinary bytes: here it becomes part of a field name. */
    const char *partial = "\xEF\xBB"
                          "data: q\n\ndata: w\n\n";
    size_t cut1[] = {1};
    got = parse_split(partial, strlen(partial), cut1, 1, 0, &rc);
    assert_string_equal(got, "message||w\n");
    free(got);
    /* A BOM later in the stream is data. */
    expect("data: \xEF\xBB\xBF\n\n", "message||\xEF\xBB\xBF\n");
}

/* A stream exercising everything; every split must give the same events. */
static const char mixed[] = "\xEF\xBB\xBF: hello\r\n"
                            "event: message_start\r\n"
                            "data: {\"a\":1}\r\n\r\n"
                            "id: 42\nretry: 10\ndata: line1\rdata:line2\r\r"
                            "event: x\n\n"
                            "data\n\n"
                            "event: ping\ndata: {}\r\n"
                            "\r"
                            "data:  sp\n"
                            "id\n\n"
                            "data: tail-not-dispatched";

static void test_every_split_point(void **st)
{
    (void)st;
    size_t n = sizeof(mixed) - 1;
    int rc;
    char *want = parse_whole(mixed, n, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(want, "message_start||{\\\"a\\\":1}\n"
                              "message|42|line1\\nline2\n"
                              "message|42|\n"
                              "ping|42|{}\n"
                              "message|| sp\n");
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j += 7) {
            size_t cuts[] = {i, j};
            char *got = parse_split(mixed, n, cuts, 2, 0, &rc);
            assert_int_equal(rc, 0);
            assert_string_equal(got, want);
            free(got);
        }
    }
    /* One byte per feed. */
    size_t cuts[sizeof(mixed)];
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    char *got = parse_split(mixed, n, cuts, n, 0, &rc);
    assert_string_equal(got, want);
    free(got);
    free(want);
}

static void test_pending(void **st)
{
    (void)st;
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, 0);
    assert_false(ah_sse_parser_pending(&p));
    assert_int_equal(ah_sse_parser_feed(&p, "data: x\n", 8, on_event, &r), 0);
    assert_true(ah_sse_parser_pending(&p));
    assert_int_equal(ah_sse_parser_feed(&p, "\n", 1, on_event, &r), 0);
    assert_false(ah_sse_parser_pending(&p));
    assert_int_equal(ah_sse_parser_feed(&p, "da", 2, on_event, &r), 0);
    assert_true(ah_sse_parser_pending(&p));
    ah_sse_parser_free(&p);
    ah_buf_free(&r.log);
}

static void test_limits(void **st)
{
    (void)st;
    int rc;
    char *got;
    /* Exactly max bytes of data is fine, one more is -E2BIG. */
    got = parse_whole(S("data: 0123456789abcdef\n\n"), 16, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(got, "message||0123456789abcdef\n");
    free(got);
    got = parse_whole(S("data: 0123456789abcdefg\n\n"), 16, &rc);
    assert_int_equal(rc, -E2BIG);
    assert_string_equal(got, "");
    free(got);
    /* Many short data lines add up. */
    got = parse_whole(S("data: 01234567\ndata: 01234567\n\n"), 16, &rc);
    assert_int_equal(rc, -E2BIG);
    free(got);
    /* Events before the offending one are still delivered. */
    got = parse_whole(S("data: ok\n\nevent: 0123456789abcdefXX\n"), 16, &rc);
    assert_int_equal(rc, -E2BIG);
    assert_string_equal(got, "message||ok\n");
    free(got);
    /* A long line is refused whether it arrives whole or in pieces, even a comment. */
    char line[64];
    memset(line, 'x', sizeof(line));
    line[0] = ':';
    got = parse_whole(line, sizeof(line), 16, &rc);
    assert_int_equal(rc, -E2BIG);
    free(got);
    line[sizeof(line) - 1] = '\n';
    got = parse_whole(line, sizeof(line), 16, &rc);
    assert_int_equal(rc, -E2BIG);
    free(got);
    size_t cuts[] = {10, 20, 30, 40};
    got = parse_split(line, sizeof(line), cuts, 4, 16, &rc);
    assert_int_equal(rc, -E2BIG);
    free(got);
    /* The error is sticky. */
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    ah_sse_parser_init(&p, 4);
    assert_int_equal(ah_sse_parser_feed(&p, "id: 12345\n", 10, on_event, &r), -E2BIG);
    assert_int_equal(ah_sse_parser_feed(&p, "data: a\n\n", 9, on_event, &r), -E2BIG);
    assert_int_equal(r.count, 0);
    ah_sse_parser_free(&p);
    ah_buf_free(&r.log);
}

static void test_callback_stop(void **st)
{
    (void)st;
    ah_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    r.stop_at = 2;
    ah_sse_parser_init(&p, 0);
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    assert_int_equal(ah_sse_parser_feed(&p, s, strlen(s), on_event, &r), 99);
    assert_int_equal(r.count, 2);
    assert_int_equal(ah_sse_parser_feed(&p, "data: 4\n\n", 9, on_event, &r), 99);
    assert_int_equal(r.count, 2);
    ah_sse_parser_free(&p);
    /* Reusable after free + init. */
    ah_sse_parser_init(&p, 0);
    r.stop_at = 0;
    assert_int_equal(ah_sse_parser_feed(&p, "data: 5\n\n", 9, on_event, &r), 0);
    assert_int_equal(r.count, 3);
    ah_sse_parser_free(&p);
    ah_buf_free(&r.log);
}

static int count_only(void *ud, const char *event, const char *data, size_t len, const char *id)
{
    (void)event;
    (void)data;
    (void)id;
    *(size_t *)ud += len;
    return 0;
}

/* Many events through one parser reuse its buffers (no growth per event). */
static void test_buffer_reuse(void **st)
{
    (void)st;
    ah_sse_parser_t p;
    ah_sse_parser_init(&p, 0);
    size_t total = 0;
    const char *ev = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n";
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ah_sse_parser_feed(&p, ev, strlen(ev), count_only, &total), 0);
    size_t cap = p.data.cap;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ah_sse_parser_feed(&p, ev, strlen(ev), count_only, &total), 0);
    assert_int_equal(p.data.cap, cap);
    assert_int_equal(total, 2000 * strlen("{\"type\":\"content_block_delta\"}"));
    ah_sse_parser_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_event_and_id_persistence),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_crlf_split_across_feeds),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_buffer_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
