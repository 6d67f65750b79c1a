/*
 * test_suggest.c - "did you mean" hints (core/suggest.h): the edit distance
 * (edits, adjacent swaps, case, the length cap) and the pick of a candidate
 * (length-scaled bound, closest wins, first wins a tie, refusals).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/suggest.h"

static void test_distance_edits(void **state)
{
    (void)state;
    assert_int_equal(ah_suggest_distance("", ""), 0);
    assert_int_equal(ah_suggest_distance("", "abc"), 3);
    assert_int_equal(ah_suggest_distance("abc", ""), 3);
    assert_int_equal(ah_suggest_distance("openai", "openai"), 0);
    assert_int_equal(ah_suggest_distance("opnai", "openai"), 1);   /* insertion */
    assert_int_equal(ah_suggest_distance("openaii", "openai"), 1); /* deletion */
    assert_int_equal(ah_suggest_distance("opexai", "openai"), 1);  /* substitution */
    assert_int_equal(ah_suggest_distance("kitten", "sitting"), 3);
}

static void test_distance_swap_and_case(void **state)
{
    (void)state;
    /* An adjacent swap is one edit, not two. */
    assert_int_equal(ah_suggest_distance("opeani", "openai"), 1);
    assert_int_equal(ah_suggest_distance("ba", "ab"), 1);
    /* Case does not count. */
    assert_int_equal(ah_suggest_distance("OpenAI", "openai"), 0);
    assert_int_equal(ah_suggest_distance("OPEANI", "openai"), 1);
}

static void test_distance_length_cap(void **state)
{
    (void)state;
    char w64[65], w65[66];
    memset(w64, 'a', 64);
    w64[64] = '\0';
    memset(w65, 'a', 65);
    w65[65] = '\0';
    assert_int_equal(ah_suggest_distance(w64, w64), 0);
    assert_true(ah_suggest_distance(w65, w65) == SIZE_MAX);
    assert_true(ah_suggest_distance("a", w65) == SIZE_MAX);
    assert_true(ah_suggest_distance(w65, "a") == SIZE_MAX);
}

static void test_suggest_picks_closest(void **state)
{
    (void)state;
    const char *const types[] = {"openai", "azure", "anthropic", "mock"};
    assert_string_equal(ah_suggest("opnai", types, 4), "openai");
    assert_string_equal(ah_suggest("antropic", types, 4), "anthropic");
    assert_string_equal(ah_suggest("MOCK", types, 4), "mock");
    assert_null(ah_suggest("postgres", types, 4));
    /* The closer one wins over an earlier one that is also within bounds. */
    const char *const near[] = {"debugs", "debug"};
    assert_string_equal(ah_suggest("debug", near, 2), "debug");
    /* A tie goes to the first. */
    const char *const tie[] = {"warm", "ward"};
    assert_string_equal(ah_suggest("warn", tie, 2), "warm");
}

static void test_suggest_bound_scales_with_length(void **state)
{
    (void)state;
    /* Up to 3 characters: 1 edit. */
    const char *const s3[] = {"xyz"};
    assert_non_null(ah_suggest("xya", s3, 1));
    assert_null(ah_suggest("xab", s3, 1));
    /* Up to 8: 2 edits. */
    const char *const s8[] = {"abcdefgh"};
    assert_non_null(ah_suggest("abcdefxx", s8, 1));
    assert_null(ah_suggest("abcdexxx", s8, 1));
    /* Longer: 3 edits. */
    const char *const s9[] = {"abcdefghi"};
    assert_non_null(ah_suggest("abcdefxxx", s9, 1));
    assert_null(ah_suggest("abcdexxxx", s9, 1));
}

static void test_suggest_refusals(void **state)
{
    (void)state;
    const char *const one[] = {"info"};
    assert_null(ah_suggest(NULL, one, 1));
    assert_null(ah_suggest("", one, 1));
    assert_null(ah_suggest("info", one, 0));
    assert_null(ah_suggest("info", NULL, 0));

    /* Past the candidate cap nothing is compared, even an exact match. */
    static const char *many[AH_SUGGEST_MAX_CAND + 1];
    for (size_t i = 0; i < AH_SUGGEST_MAX_CAND + 1; i++)
        many[i] = "info";
    assert_string_equal(ah_suggest("info", many, AH_SUGGEST_MAX_CAND), "info");
    assert_null(ah_suggest("info", many, AH_SUGGEST_MAX_CAND + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance_edits),
        cmocka_unit_test(test_distance_swap_and_case),
        cmocka_unit_test(test_distance_length_cap),
        cmocka_unit_test(test_suggest_picks_closest),
        cmocka_unit_test(test_suggest_bound_scales_with_length),
        cmocka_unit_test(test_suggest_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
