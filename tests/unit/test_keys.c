/* test_keys.c - API key format, hashing, roles and validation (auth/keys.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/keys.h"
#include "core/clock.h"
#include "core/crypto.h"

static bool all_base62(const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

static void test_generate_format(void **state)
{
    (void)state;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    int64_t before = ah_wall_ms();
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, "ci bot", NULL, NULL, 0), 0);

    assert_int_equal(strlen(key), 47);
    assert_int_equal(AH_KEY_LEN, 47);
    assert_memory_equal(key, "ahk_", 4);
    assert_true(all_base62(key + 4));
    assert_true(ah_key_format_ok(key, strlen(key)));

    assert_int_equal(strlen(rec.prefix), 12);
    assert_memory_equal(rec.prefix, key, 12);

    char hex[65];
    ah_sha256_hex(key, strlen(key), hex);
    assert_string_equal(rec.hash, hex);

    assert_int_equal(strlen(rec.id), 4 + 17);
    assert_memory_equal(rec.id, "key_", 4);
    assert_true(all_base62(rec.id + 4));

    assert_string_equal(rec.name, "ci bot");
    assert_string_equal(rec.role, "user");
    assert_string_equal(rec.tenant, "default");
    assert_true(rec.created_at >= before && rec.created_at <= ah_wall_ms());
    assert_int_equal(rec.updated_at, rec.created_at);
    assert_int_equal(rec.revoked_at, 0);
    assert_int_equal(rec.expires_at, 0);
    assert_string_equal(rec.created_by, "");
}

static void test_generate_fields(void **state)
{
    (void)state;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    assert_int_equal(
        ah_key_generate(key, sizeof(key), &rec, "ops", "admin", "team-a.prod_1", 1234567890123LL),
        0);
    assert_string_equal(rec.role, "admin");
    assert_string_equal(rec.tenant, "team-a.prod_1");
    assert_int_equal(rec.expires_at, 1234567890123LL);
}

static void test_generate_errors(void **state)
{
    (void)state;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, "", NULL, NULL, 0), -EINVAL);
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, NULL, NULL, NULL, 0), -EINVAL);
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, "x", "root", NULL, 0), -EINVAL);
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, "x", NULL, "a b", 0), -EINVAL);
    assert_int_equal(ah_key_generate(key, sizeof(key), &rec, "x", NULL, NULL, -5), -EINVAL);
    assert_int_equal(ah_key_generate(key, AH_KEY_LEN, &rec, "x", NULL, NULL, 0), -ENOSPC);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_unique(void **state)
{
    (void)state;
    enum { N = 1000 };
    char(*keys)[AH_KEY_BUFSZ] = calloc(N, AH_KEY_BUFSZ);
    char(*ids)[48] = calloc(N, 48);
    char(*prefixes)[16] = calloc(N, 16);
    assert_non_null(keys);
    assert_non_null(ids);
    assert_non_null(prefixes);
    for (int i = 0; i < N; i++) {
        ah_key_rec_t rec;
        assert_int_equal(ah_key_generate(keys[i], AH_KEY_BUFSZ, &rec, "k", NULL, NULL, 0), 0);
        assert_int_equal(strlen(keys[i]), AH_KEY_LEN);
        assert_true(ah_key_format_ok(keys[i], AH_KEY_LEN));
        memcpy(ids[i], rec.id, 48);
        memcpy(prefixes[i], rec.prefix, 16);
    }
    qsort(keys, N, AH_KEY_BUFSZ, cmp_str);
    qsort(ids, N, 48, cmp_str);
    qsort(prefixes, N, 16, cmp_str);
    for (int i = 1; i < N; i++) {
        assert_string_not_equal(keys[i - 1], keys[i]);
        assert_string_not_equal(ids[i - 1], ids[i]);
        /* 8 base62 chars = 47 bits: a collision in 1000 is ~1e-9. */
        assert_string_not_equal(prefixes[i - 1], prefixes[i]);
    }
    free(keys);
    free(ids);
    free(prefixes);
}

static void test_hash(void **state)
{
    (void)state;
    char hex[65], again[65];
    ah_key_hash_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *k = "ahk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";
    ah_key_hash_hex(k, strlen(k), hex);
    ah_key_hash_hex(k, strlen(k), again);
    assert_string_equal(hex, again);
    assert_int_equal(strlen(hex), 64);

    unsigned char raw[32], direct[32];
    assert_int_equal(ah_key_hash_from_hex(hex, raw), 0);
    ah_sha256(k, strlen(k), direct);
    assert_memory_equal(raw, direct, 32);
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (hex[i] >= 'a' && hex[i] <= 'f') ? (char)(hex[i] - 32) : hex[i];
    assert_int_equal(ah_key_hash_from_hex(upper, raw), 0);
    assert_memory_equal(raw, direct, 32);

    assert_int_equal(ah_key_hash_from_hex("abc", raw), -EINVAL);
    assert_int_equal(ah_key_hash_from_hex(NULL, raw), -EINVAL);
    char bad[66];
    memcpy(bad, hex, 65);
    bad[10] = 'g';
    assert_int_equal(ah_key_hash_from_hex(bad, raw), -EINVAL);
    memcpy(bad, hex, 64);
    bad[64] = '0';
    bad[65] = '\0';
    assert_int_equal(ah_key_hash_from_hex(bad, raw), -EINVAL); /* 65 chars */
}

static void test_format_ok(void **state)
{
    (void)state;
    const char *good = "ahk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";
    assert_int_equal(strlen(good), 47);
    assert_true(ah_key_format_ok(good, 47));
    assert_false(ah_key_format_ok(good, 46));
    assert_false(ah_key_format_ok(good, 0));
    assert_false(ah_key_format_ok(NULL, 47));
    char k[48];
    memcpy(k, good, 48);
    k[0] = 'A';
    assert_false(ah_key_format_ok(k, 47));
    memcpy(k, good, 48);
    k[20] = '-';
    assert_false(ah_key_format_ok(k, 47));
    memcpy(k, good, 48);
    k[46] = '\0';
    assert_false(ah_key_format_ok(k, 47));
    assert_false(ah_key_format_ok("sk-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi", 47));
}

static void test_roles(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        ah_role_t r;
    } ok[] = {{"viewer", AH_ROLE_VIEWER},
              {"user", AH_ROLE_USER},
              {"developer", AH_ROLE_DEVELOPER},
              {"admin", AH_ROLE_ADMIN}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ah_role_t r = AH_ROLE_NONE;
        assert_int_equal(ah_role_parse(ok[i].s, &r), 0);
        assert_int_equal(r, ok[i].r);
        assert_string_equal(ah_role_name(r), ok[i].s);
    }
    const char *bad[] = {"", "Admin", "root", "none", "admin ", "users"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_role_t r = AH_ROLE_USER;
        assert_int_equal(ah_role_parse(bad[i], &r), -EINVAL);
        assert_int_equal(r, AH_ROLE_USER); /* untouched */
    }
    ah_role_t r;
    assert_int_equal(ah_role_parse(NULL, &r), -EINVAL);
    assert_string_equal(ah_role_name(AH_ROLE_NONE), "none");
    assert_string_equal(ah_role_name((ah_role_t)99), "none");

    /* admin > developer > user > viewer */
    assert_true(ah_role_allows(AH_ROLE_ADMIN, AH_ROLE_ADMIN));
    assert_true(ah_role_allows(AH_ROLE_ADMIN, AH_ROLE_VIEWER));
    assert_true(ah_role_allows(AH_ROLE_DEVELOPER, AH_ROLE_USER));
    assert_true(ah_role_allows(AH_ROLE_USER, AH_ROLE_USER));
    assert_true(ah_role_allows(AH_ROLE_VIEWER, AH_ROLE_VIEWER));
    assert_false(ah_role_allows(AH_ROLE_DEVELOPER, AH_ROLE_ADMIN));
    assert_false(ah_role_allows(AH_ROLE_USER, AH_ROLE_DEVELOPER));
    assert_false(ah_role_allows(AH_ROLE_VIEWER, AH_ROLE_USER));
    assert_false(ah_role_allows(AH_ROLE_NONE, AH_ROLE_VIEWER));
    assert_false(ah_role_allows(AH_ROLE_ADMIN, AH_ROLE_NONE));
    assert_false(ah_role_allows((ah_role_t)7, AH_ROLE_VIEWER));
}

static void test_names(void **state)
{
    (void)state;
    char name[200];
    assert_int_equal(ah_key_name_check("a"), 0);
    assert_int_equal(ah_key_name_check("CI deploy key #2 (prod) ~!@"), 0);
    assert_int_equal(ah_key_name_check(""), -EINVAL);
    assert_int_equal(ah_key_name_check(NULL), -EINVAL);
    assert_int_equal(AH_KEY_NAME_MAX, 127);
    memset(name, 'n', sizeof(name));
    name[127] = '\0';
    assert_int_equal(ah_key_name_check(name), 0);
    name[127] = 'n';
    name[128] = '\0';
    assert_int_equal(ah_key_name_check(name), -EINVAL);
    assert_int_equal(ah_key_name_check("tab\there"), -EINVAL);
    assert_int_equal(ah_key_name_check("new\nline"), -EINVAL);
    assert_int_equal(ah_key_name_check("del\x7f"), -EINVAL);
    assert_int_equal(ah_key_name_check("caf\xc3\xa9"), -EINVAL);
}

static void test_tenants(void **state)
{
    (void)state;
    char t[80];
    assert_int_equal(ah_key_tenant_check("default"), 0);
    assert_int_equal(ah_key_tenant_check("Team_A.prod-1"), 0);
    assert_int_equal(ah_key_tenant_check(""), -EINVAL);
    assert_int_equal(ah_key_tenant_check(NULL), -EINVAL);
    assert_int_equal(ah_key_tenant_check("a b"), -EINVAL);
    assert_int_equal(ah_key_tenant_check("a/b"), -EINVAL);
    memset(t, 't', sizeof(t));
    t[63] = '\0';
    assert_int_equal(ah_key_tenant_check(t), 0);
    t[63] = 't';
    t[64] = '\0';
    assert_int_equal(ah_key_tenant_check(t), -EINVAL);
}

static void test_params_error(void **state)
{
    (void)state;
    int64_t now = 1700000000000LL;
    assert_null(ah_key_params_error("n", NULL, NULL, 0, now));
    assert_null(ah_key_params_error("n", "", "", 0, now));
    assert_null(ah_key_params_error("n", "viewer", "t1", now + 1, now));
    const char *e = ah_key_params_error("", NULL, NULL, 0, now);
    assert_non_null(e);
    assert_non_null(strstr(e, "name"));
    e = ah_key_params_error("n", "owner", NULL, 0, now);
    assert_non_null(e);
    assert_non_null(strstr(e, "role"));
    assert_non_null(strstr(e, "admin, developer, user, viewer"));
    e = ah_key_params_error("n", NULL, "x y", 0, now);
    assert_non_null(e);
    assert_non_null(strstr(e, "tenant"));
    e = ah_key_params_error("n", NULL, NULL, now, now);
    assert_non_null(e);
    assert_non_null(strstr(e, "expires_at"));
    assert_non_null(ah_key_params_error("n", NULL, NULL, -1, now));
}

static void test_create_prepare(void **state)
{
    (void)state;
    ah_keys_create_arg_t a;
    assert_int_equal(
        ah_keys_create_prepare(&a, "svc", "developer", "acme", 0, "key_actor", "req_1"), 0);
    assert_null(a.error);
    assert_true(ah_key_format_ok(a.key, strlen(a.key)));
    assert_string_equal(a.rec.created_by, "key_actor");
    assert_string_equal(a.rec.role, "developer");
    assert_string_equal(a.actor, "key_actor");
    assert_string_equal(a.request_id, "req_1");
    char hex[65];
    ah_key_hash_hex(a.key, strlen(a.key), hex);
    assert_string_equal(a.rec.hash, hex);

    assert_int_equal(ah_keys_create_prepare(&a, "svc", "boss", NULL, 0, NULL, NULL), -EINVAL);
    assert_non_null(a.error);
    assert_non_null(strstr(a.error, "role"));
    char long_req[200];
    memset(long_req, 'r', sizeof(long_req));
    long_req[199] = '\0';
    assert_int_equal(ah_keys_create_prepare(&a, "svc", NULL, NULL, 0, NULL, long_req), -EINVAL);
    assert_non_null(a.error);

    ah_keys_revoke_arg_t r;
    assert_int_equal(ah_keys_revoke_prepare(&r, "key_abc", "cli", NULL), 0);
    assert_string_equal(r.id, "key_abc");
    assert_true(r.now_ms > 0);
    assert_int_equal(ah_keys_revoke_prepare(&r, "", "cli", NULL), -EINVAL);
    assert_int_equal(ah_keys_revoke_prepare(&r, NULL, "cli", NULL), -EINVAL);
    char long_id[100];
    memset(long_id, 'i', sizeof(long_id));
    long_id[99] = '\0';
    assert_int_equal(ah_keys_revoke_prepare(&r, long_id, "cli", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_format),
        cmocka_unit_test(test_generate_fields),
        cmocka_unit_test(test_generate_errors),
        cmocka_unit_test(test_unique),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_format_ok),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_params_error),
        cmocka_unit_test(test_create_prepare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
