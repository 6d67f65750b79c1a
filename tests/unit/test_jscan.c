/*
 * test_jscan.c - the span-based JSON scanner (core/jscan.h): validation with
 * error offsets, the single-pass top-level pick, member and path lookup with
 * escaped keys, string unescaping (simple escapes, \u, surrogate pairs, lone
 * surrogates), integers and arrays.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/jscan.h"

static ah_jspan_t span_of(const char *s)
{
    ah_jspan_t v;
    assert_true(ah_json_value(s, strlen(s), &v) > 0);
    return v;
}

static void test_validate(void **state)
{
    (void)state;
    const char *good[] = {"{}", " [1, 2.5e3, -0, true, false, null] ", "\"a\\u00e9\\n\"",
                          "{\"a\":{\"b\":[{}]}}"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(ah_json_validate(good[i], strlen(good[i]), NULL), 0);

    size_t off = 99;
    assert_int_equal(ah_json_validate("{\"a\":1,}", 8, &off), -EINVAL);
    assert_int_equal(off, 7); /* the '}' after a trailing comma */
    assert_int_equal(ah_json_validate("[01]", 4, NULL), -EINVAL);
    assert_int_equal(ah_json_validate("\"\\x\"", 4, NULL), -EINVAL);
    assert_int_equal(ah_json_validate("{} {}", 5, NULL), -EINVAL);
    assert_int_equal(ah_json_validate("", 0, NULL), -EINVAL);

    /* Nesting deeper than AH_JSON_MAX_DEPTH is refused, not recursed into. */
    char deep[2 * (AH_JSON_MAX_DEPTH + 2)];
    size_t d = AH_JSON_MAX_DEPTH + 2;
    memset(deep, '[', d);
    memset(deep + d, ']', d);
    assert_int_equal(ah_json_validate(deep, sizeof(deep), NULL), -EINVAL);
}

static void test_object_scan(void **state)
{
    (void)state;
    const char *body =
        "{\"model\":\"m1\",\"x\":{\"model\":\"inner\"},\"stream\":true,\"model\":\"m2\"}";
    const char *keys[] = {"model", "stream", "absent"};
    ah_jspan_t out[3], root;
    assert_int_equal(ah_json_object_scan(body, strlen(body), keys, 3, out, &root, NULL), 0);
    assert_true(ah_json_str_eq(&out[0], "m2")); /* the last one wins; nested keys do not count */
    assert_int_equal(out[1].type, AH_JSON_TRUE);
    assert_int_equal(out[2].type, AH_JSON_NONE);
    assert_int_equal(root.type, AH_JSON_OBJECT);

    assert_int_equal(ah_json_object_scan("[1]", 3, keys, 3, out, NULL, NULL), -EPROTO);
    size_t off = 0;
    assert_int_equal(ah_json_object_scan("{\"a\":", 5, keys, 3, out, NULL, &off), -EINVAL);
    assert_int_equal(off, 5);
}

static void test_member_and_path(void **state)
{
    (void)state;
    ah_jspan_t obj = span_of("{\"usage\":{\"prompt_tokens\":12,\"d\\u0065tails\":{\"n\":7}},"
                             "\"tab\\tkey\":1}");
    ah_jspan_t v;
    assert_int_equal(ah_json_path(&obj, "usage.prompt_tokens", &v), 0);
    int64_t n;
    assert_int_equal(ah_json_int(&v, &n), 0);
    assert_int_equal(n, 12);
    /* Keys match after unescaping. */
    assert_int_equal(ah_json_path(&obj, "usage.details.n", &v), 0);
    assert_int_equal(ah_json_int(&v, &n), 0);
    assert_int_equal(n, 7);
    assert_int_equal(ah_json_member(&obj, "tab\tkey", &v), 0);
    assert_int_equal(ah_json_member(&obj, "tab", &v), -ENOENT);
    assert_int_equal(ah_json_path(&obj, "usage.missing", &v), -ENOENT);

    ah_jspan_t arr = span_of("[1]");
    assert_int_equal(ah_json_member(&arr, "a", &v), -EINVAL);
}

static void test_str_unescape(void **state)
{
    (void)state;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    ah_jspan_t s = span_of("\"a\\n\\t\\\"\\\\\\/b\\u00e9\\ud83d\\ude00\"");
    assert_int_equal(ah_json_str(&s, &b), 0);
    assert_string_equal(b.data, "a\n\t\"\\/b\xc3\xa9\xf0\x9f\x98\x80");

    /* A lone surrogate becomes U+FFFD rather than invalid UTF-8. */
    ah_buf_reset(&b);
    s = span_of("\"x\\ud800y\"");
    assert_int_equal(ah_json_str(&s, &b), 0);
    assert_string_equal(b.data, "x\xef\xbf\xbdy");

    ah_jspan_t num = span_of("12");
    assert_int_equal(ah_json_str(&num, &b), -EINVAL);
    ah_buf_free(&b);
}

static void test_int_and_arrays(void **state)
{
    (void)state;
    int64_t n;
    ah_jspan_t v = span_of("-9223372036854775808");
    assert_int_equal(ah_json_int(&v, &n), 0);
    assert_true(n == INT64_MIN);
    v = span_of("9223372036854775807");
    assert_int_equal(ah_json_int(&v, &n), 0);
    assert_true(n == INT64_MAX);
    v = span_of("9223372036854775808");
    assert_int_equal(ah_json_int(&v, &n), -EINVAL);
    v = span_of("9999999999999999999"); /* 19 digits, past INT64_MAX */
    assert_int_equal(ah_json_int(&v, &n), -EINVAL);
    v = span_of("-9223372036854775809");
    assert_int_equal(ah_json_int(&v, &n), -EINVAL);
    v = span_of("1.5");
    assert_int_equal(ah_json_int(&v, &n), -EINVAL);

    ah_jspan_t a = span_of("[ {\"a\":[1,2]}, \"x\", 3 ]");
    assert_int_equal(ah_json_array_len(&a), 3);
    assert_false(ah_json_array_empty(&a));
    ah_jspan_t e = span_of(" [ ] ");
    assert_int_equal(ah_json_array_len(&e), 0);
    assert_true(ah_json_array_empty(&e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),        cmocka_unit_test(test_object_scan),
        cmocka_unit_test(test_member_and_path), cmocka_unit_test(test_str_unescape),
        cmocka_unit_test(test_int_and_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
