/* test_arena_buf.c - the arena (core/arena.h), buffers (core/buf.h) and ids (core/ids.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "http/sse.h"

static void test_arena_alloc_and_cap(void **st)
{
    (void)st;
    ah_arena_t a;
    ah_arena_init(&a, 256, 1024);
    char *p = ah_arena_alloc(&a, 10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
    char *q = ah_arena_alloc(&a, 10);
    assert_true(q >= p + 10);
    /* A large allocation gets its own block; the cap still holds. */
    assert_non_null(ah_arena_alloc(&a, 600));
    assert_null(ah_arena_alloc(&a, 600));
    assert_true(a.used <= 1024);
    char *s = ah_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    ah_arena_reset(&a);
    assert_true(a.used <= 256);
    assert_non_null(ah_arena_calloc(&a, 100));
    ah_arena_free(&a);
    assert_int_equal(a.used, 0);
}

static void test_buf_basics(void **st)
{
    (void)st;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    assert_int_equal(ah_buf_puts(&b, "abc"), 0);
    assert_int_equal(ah_buf_printf(&b, "-%d-", 42), 0);
    assert_string_equal(b.data, "abc-42-");
    assert_int_equal(ah_buf_put_u64(&b, 18446744073709551615ull), 0);
    assert_string_equal(b.data, "abc-42-18446744073709551615");
    ah_buf_consume(&b, 4);
    assert_string_equal(b.data, "42-18446744073709551615");
    char big[1000];
    memset(big, 'x', sizeof(big));
    big[999] = 0;
    assert_int_equal(ah_buf_printf(&b, "%s", big), 0);
    assert_int_equal(b.len, 23 + 999);
    ah_buf_free(&b);
}

static void test_buf_limit(void **st)
{
    (void)st;
    ah_buf_t b;
    ah_buf_init(&b, 8);
    assert_int_equal(ah_buf_puts(&b, "12345678"), 0);
    assert_int_equal(ah_buf_putc(&b, '9'), -E2BIG);
    assert_int_equal(b.len, 8);
    ah_buf_free(&b);
}

static void test_json_escape(void **st)
{
    (void)st;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    const char in[] = "a\"b\\c\nd\x01";
    assert_int_equal(ah_buf_json_escape(&b, in, sizeof(in) - 1), 0);
    assert_string_equal(b.data, "a\\\"b\\\\c\\nd\\u0001");
    ah_buf_free(&b);
}

static void test_ids_and_hash(void **st)
{
    (void)st;
    char a[64], b[64];
    assert_int_equal(ah_id_new(a, sizeof(a), "run", 16), 0);
    assert_int_equal(ah_id_new(b, sizeof(b), "run", 16), 0);
    assert_memory_equal(a, "run_", 4);
    assert_int_equal(strlen(a), 4 + 22);
    assert_string_not_equal(a, b);
    unsigned char zero[4] = {0};
    char out[16];
    assert_int_equal(ah_base62_encode(zero, 4, out, sizeof(out)), 6);
    assert_string_equal(out, "000000");
    assert_int_equal(ah_base62_encode(zero, 4, out, 3), -ENOSPC);
    char hex[65];
    ah_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(ah_ct_equal("abcd", "abcd", 4));
    assert_false(ah_ct_equal("abcd", "abce", 4));
}

static void test_sse_format(void **st)
{
    (void)st;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    assert_int_equal(ah_sse_format(&b, "message.delta", "7", "line1\nline2\r\nline3", 18), 0);
    assert_string_equal(b.data, "event: message.delta\nid: 7\ndata: line1\ndata: line2\ndata: "
                                "line3\n\n");
    ah_buf_reset(&b);
    assert_int_equal(ah_sse_format(&b, NULL, NULL, "[DONE]", 6), 0);
    assert_string_equal(b.data, "data: [DONE]\n\n");
    ah_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alloc_and_cap), cmocka_unit_test(test_buf_basics),
        cmocka_unit_test(test_buf_limit),           cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_ids_and_hash),        cmocka_unit_test(test_sse_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
