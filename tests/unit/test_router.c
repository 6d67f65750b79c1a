/* test_router.c - route matching, parameters, 404/405 (http/router.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "http/router.h"

static int h1, h2, h3, h4;

static ah_router_t *make(void)
{
    ah_router_t *r = ah_router_new();
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/healthz", &h1, 0), 0);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/v1/agents/{name}", &h2, 0), 0);
    assert_int_equal(ah_router_add(r, AH_HTTP_POST, "/v1/agents/{name}/runs", &h3, 7), 0);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/v1/agents/special", &h4, 0), 0);
    assert_int_equal(ah_router_add(r, AH_HTTP_DELETE, "/v1/agents/{name}", &h2, 0), 0);
    return r;
}

static int match(ah_router_t *r, ah_http_method_t m, const char *path, const ah_route_t **out,
                 ah_route_params_t *p, ah_arena_t *a, char *allow)
{
    return ah_router_match(r, m, path, strlen(path), a, out, p, allow, 64);
}

static void test_match_and_params(void **st)
{
    (void)st;
    ah_router_t *r = make();
    ah_arena_t a;
    ah_arena_init(&a, 1024, 0);
    const ah_route_t *rt;
    ah_route_params_t p;
    char allow[64];
    assert_int_equal(match(r, AH_HTTP_GET, "/healthz", &rt, &p, &a, allow), AH_ROUTE_FOUND);
    assert_ptr_equal(rt->handler, &h1);
    assert_int_equal(match(r, AH_HTTP_POST, "/v1/agents/sup%20port/runs", &rt, &p, &a, allow),
                     AH_ROUTE_FOUND);
    assert_ptr_equal(rt->handler, &h3);
    assert_int_equal(rt->flags, 7);
    assert_string_equal(ah_route_param(&p, "name"), "sup port");
    assert_null(ah_route_param(&p, "nam"));
    /* Literal beats parameter. */
    assert_int_equal(match(r, AH_HTTP_GET, "/v1/agents/special", &rt, &p, &a, allow),
                     AH_ROUTE_FOUND);
    assert_ptr_equal(rt->handler, &h4);
    /* HEAD uses GET routes. */
    assert_int_equal(match(r, AH_HTTP_HEAD, "/healthz", &rt, &p, &a, allow), AH_ROUTE_FOUND);
    ah_arena_free(&a);
    ah_router_free(r);
}

static void test_not_found_and_method(void **st)
{
    (void)st;
    ah_router_t *r = make();
    ah_arena_t a;
    ah_arena_init(&a, 1024, 0);
    const ah_route_t *rt;
    ah_route_params_t p;
    char allow[64];
    assert_int_equal(match(r, AH_HTTP_GET, "/nope", &rt, &p, &a, allow), AH_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, AH_HTTP_GET, "/healthz/", &rt, &p, &a, allow), AH_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, AH_HTTP_GET, "//healthz", &rt, &p, &a, allow), AH_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, AH_HTTP_GET, "/v1/agents//runs", &rt, &p, &a, allow),
                     AH_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, AH_HTTP_PUT, "/v1/agents/x", &rt, &p, &a, allow),
                     AH_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, DELETE");
    ah_arena_free(&a);
    ah_router_free(r);
}

static void test_bad_patterns(void **st)
{
    (void)st;
    ah_router_t *r = ah_router_new();
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "nope", &h1, 0), -EINVAL);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/a/", &h1, 0), -EINVAL);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/a/{}", &h1, 0), -EINVAL);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/a", &h1, 0), 0);
    assert_int_equal(ah_router_add(r, AH_HTTP_GET, "/a", &h1, 0), -EEXIST);
    assert_int_equal(ah_router_count(r), 1);
    ah_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_and_params),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_bad_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
