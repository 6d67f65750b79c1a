/* test_yaml.c - the bounded YAML tree (src/core/yaml.c): shape, positions, limits, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/yaml.h"

static int load(ah_yaml_t *y, const char *text, const ah_yaml_limits_t *lim, ah_buf_t *err)
{
    return ah_yaml_load_string(y, "t.yaml", text, strlen(text), lim, err);
}

static void assert_has(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle)) {
        print_error("expected to find [%s] in [%s]\n", needle, hay ? hay : "(null)");
        fail();
    }
}

static void test_map_seq_and_positions(void **state)
{
    (void)state;
    const char *text = "# comment\n"
                       "server:\n"
                       "  listen: \"127.0.0.1:8080\"\n"
                       "  workers: 4\n"
                       "list:\n"
                       "  - a\n"
                       "  - 'b'\n"
                       "  - { k: v }\n"
                       "empty:\n";
    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, text, NULL, &err), 0);
    assert_int_equal(y.n_docs, 1);
    const ah_yaml_node_t *root = ah_yaml_root(&y);
    assert_int_equal(root->kind, AH_YAML_MAP);
    assert_int_equal(root->n, 3);
    /* Key order is file order, with each key's own line. */
    assert_string_equal(root->pairs[0].key, "server");
    assert_int_equal(root->pairs[0].key_line, 2);
    assert_string_equal(root->pairs[1].key, "list");
    assert_int_equal(root->pairs[1].key_line, 5);
    assert_string_equal(root->pairs[2].key, "empty");
    assert_int_equal(root->pairs[2].key_line, 9);

    const ah_yaml_node_t *server = ah_yaml_map_get(root, "server");
    assert_non_null(server);
    assert_int_equal(server->kind, AH_YAML_MAP);
    const ah_yaml_pair_t *listen = ah_yaml_map_pair(server, "listen");
    assert_non_null(listen);
    assert_int_equal(listen->key_line, 3);
    assert_int_equal(listen->key_col, 3);
    assert_string_equal(listen->value->str, "127.0.0.1:8080");
    assert_true(listen->value->quoted);
    assert_int_equal(listen->value->line, 3);
    assert_int_equal(listen->value->col, 11);
    const ah_yaml_node_t *workers = ah_yaml_map_get(server, "workers");
    assert_string_equal(workers->str, "4");
    assert_false(workers->quoted);
    assert_int_equal(workers->line, 4);

    const ah_yaml_node_t *list = ah_yaml_map_get(root, "list");
    assert_int_equal(list->kind, AH_YAML_SEQ);
    assert_int_equal(list->n, 3);
    assert_int_equal(list->line, 6);
    assert_string_equal(list->items[0]->str, "a");
    assert_int_equal(list->items[0]->line, 6);
    assert_false(list->items[0]->quoted);
    assert_true(list->items[1]->quoted);
    assert_int_equal(list->items[1]->line, 7);
    assert_int_equal(list->items[2]->kind, AH_YAML_MAP);
    assert_int_equal(list->items[2]->line, 8);
    assert_string_equal(ah_yaml_map_get(list->items[2], "k")->str, "v");

    assert_true(ah_yaml_is_null(ah_yaml_map_get(root, "empty")));
    assert_null(ah_yaml_map_get(root, "missing"));
    assert_null(ah_yaml_map_get(list, "k")); /* not a mapping */
    assert_null(err.data);
    ah_yaml_free(&y);
    assert_int_equal(y.n_docs, 0);
}

static void test_nulls_quotes_and_tags(void **state)
{
    (void)state;
    const char *text = "a: ~\nb: null\nc: \"null\"\nd: ''\ne: !!str 12\nf: |\n  block\n"
                       "g: \"x\\0y\"\nh: NULL\ni: nil\n";
    ah_yaml_t y = AH_YAML_INIT;
    assert_int_equal(load(&y, text, NULL, NULL), 0);
    const ah_yaml_node_t *r = ah_yaml_root(&y);
    assert_true(ah_yaml_is_null(ah_yaml_map_get(r, "a")));
    assert_true(ah_yaml_is_null(ah_yaml_map_get(r, "b")));
    assert_false(ah_yaml_is_null(ah_yaml_map_get(r, "c")));
    assert_false(ah_yaml_is_null(ah_yaml_map_get(r, "d")));
    assert_true(ah_yaml_map_get(r, "e")->quoted);
    assert_string_equal(ah_yaml_map_get(r, "e")->tag, "tag:yaml.org,2002:str");
    assert_true(ah_yaml_map_get(r, "f")->quoted);
    assert_string_equal(ah_yaml_map_get(r, "f")->str, "block\n");
    const ah_yaml_node_t *g = ah_yaml_map_get(r, "g");
    assert_int_equal(g->len, 3); /* the NUL is kept, and visible through len */
    assert_int_equal(strlen(g->str), 1);
    assert_true(ah_yaml_is_null(ah_yaml_map_get(r, "h")));
    assert_false(ah_yaml_is_null(ah_yaml_map_get(r, "i")));
    assert_true(ah_yaml_is_null(NULL));
    assert_string_equal(ah_yaml_kind_name(AH_YAML_SEQ), "sequence");
    ah_yaml_free(&y);
}

static void test_multi_document(void **state)
{
    (void)state;
    const char *text = "kind: Agent\nname: a\n---\nkind: Agent\nname: b\n---\n- x\n...\n";
    ah_yaml_t y = AH_YAML_INIT;
    assert_int_equal(load(&y, text, NULL, NULL), 0);
    assert_int_equal(y.n_docs, 3);
    assert_string_equal(ah_yaml_map_get(y.docs[0], "name")->str, "a");
    assert_int_equal(y.docs[0]->line, 1);
    assert_string_equal(ah_yaml_map_get(y.docs[1], "name")->str, "b");
    assert_int_equal(y.docs[1]->line, 4);
    assert_int_equal(y.docs[2]->kind, AH_YAML_SEQ);
    assert_int_equal(y.docs[2]->line, 7);
    ah_yaml_free(&y);

    /* Anchors do not cross documents. */
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, "a: &x 1\n---\nb: *x\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:3:4: unknown alias *x");
    ah_buf_free(&err);

    /* Document cap. */
    ah_yaml_limits_t lim = {.max_docs = 2};
    assert_int_equal(load(&y, "a\n---\nb\n---\nc\n", &lim, &err), -E2BIG);
    assert_has(err.data, "more than 2 documents");
    ah_buf_free(&err);
}

static void test_empty_input(void **state)
{
    (void)state;
    ah_yaml_t y = AH_YAML_INIT;
    assert_int_equal(load(&y, "", NULL, NULL), 0);
    assert_int_equal(y.n_docs, 0);
    assert_null(ah_yaml_root(&y));
    ah_yaml_free(&y);
    assert_int_equal(load(&y, "# only a comment\n\n", NULL, NULL), 0);
    assert_int_equal(y.n_docs, 0);
    ah_yaml_free(&y);
    assert_int_equal(ah_yaml_load_string(&y, NULL, NULL, 0, NULL, NULL), 0);
    ah_yaml_free(&y);
}

static void test_parse_error_positions(void **state)
{
    (void)state;
    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, "a: [1, 2\nb: 3\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:2:2: did not find expected ',' or ']'");
    assert_has(err.data, "at line 1");
    assert_null(y.docs);
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "a: 1\n  b: 2\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:2:4: mapping values are not allowed");
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "a:\n\tb: 1\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:2:1:");
    assert_has(err.data, "not tabs");
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "a: ok\nb: \xff\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:2:4: invalid leading UTF-8 octet");
    ah_buf_free(&err);
}

static void test_keys_must_be_unique_scalars(void **state)
{
    (void)state;
    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, "a: 1\nb: 2\na: 3\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:3:1: duplicate key \"a\" (first at line 1");
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "x:\n  k: 1\n  k: 2\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:3:3: duplicate key \"k\"");
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "? [a, b]\n: 1\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:1:3: mapping keys must be plain strings, not a sequence");
    ah_buf_free(&err);
}

static void test_aliases_share_nodes(void **state)
{
    (void)state;
    ah_yaml_t y = AH_YAML_INIT;
    assert_int_equal(
        load(&y, "base: &b { k: v, n: 1 }\ncopy: *b\nkey: &s name\n*s : 2\n", NULL, NULL), 0);
    const ah_yaml_node_t *r = ah_yaml_root(&y);
    assert_ptr_equal(ah_yaml_map_get(r, "base"), ah_yaml_map_get(r, "copy"));
    assert_string_equal(ah_yaml_map_get(r, "name")->str, "2");
    assert_int_equal(ah_yaml_map_pair(r, "name")->key_line, 4);
    ah_yaml_free(&y);

    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, "a: *nope\n", NULL, &err), -EINVAL);
    assert_has(err.data, "t.yaml:1:4: unknown alias *nope");
    ah_buf_reset(&err);
    /* A node cannot contain an alias to itself: no cycles. */
    assert_int_equal(load(&y, "a: &r [ *r ]\n", NULL, &err), -EINVAL);
    assert_has(err.data, "unknown alias *r");
    ah_buf_free(&err);
}

static void test_billion_laughs(void **state)
{
    (void)state;
    const char *text =
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(load(&y, text, NULL, &err), -E2BIG);
    assert_has(err.data, "t.yaml:6:11:"); /* f: 9^6 strings, past the cap */
    assert_has(err.data, "more than 200000 nodes");
    ah_buf_reset(&err);

    /* The alias cap trips even when the expansion stays small. */
    ah_buf_t many = AH_BUF_INIT;
    ah_buf_puts(&many, "x: &x 1\nl: [");
    for (int i = 0; i < 65; i++)
        ah_buf_puts(&many, i ? ",*x" : "*x");
    ah_buf_puts(&many, "]\n");
    assert_int_equal(load(&y, many.data, NULL, &err), -E2BIG);
    assert_has(err.data, "more than 64 aliases (*x)");
    ah_buf_free(&many);
    ah_buf_free(&err);
}

static void test_limits(void **state)
{
    (void)state;
    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;

    /* Depth: 64 levels pass, 65 fail. */
    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = '\0';
    assert_int_equal(load(&y, deep, NULL, &err), 0);
    ah_yaml_free(&y);
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    assert_int_equal(load(&y, deep, NULL, &err), -E2BIG);
    assert_has(err.data, "t.yaml:1:65: nesting deeper than 64 levels");
    ah_buf_reset(&err);

    ah_yaml_limits_t lim = {.max_bytes = 8};
    assert_int_equal(load(&y, "key: value\n", &lim, &err), -E2BIG);
    assert_has(err.data, "t.yaml: larger than 8 bytes");
    ah_buf_reset(&err);

    lim = (ah_yaml_limits_t){.max_nodes = 5};
    assert_int_equal(load(&y, "[1, 2, 3, 4, 5]", &lim, &err), -E2BIG);
    assert_has(err.data, "more than 5 nodes");
    ah_buf_reset(&err);
    assert_int_equal(load(&y, "[1, 2, 3, 4]", &lim, &err), 0); /* 5 nodes: at the cap */
    ah_yaml_free(&y);

    lim = (ah_yaml_limits_t){.max_depth = 2};
    assert_int_equal(load(&y, "a: { b: { c: 1 } }", &lim, &err), -E2BIG);
    assert_has(err.data, "nesting deeper than 2 levels");
    ah_buf_free(&err);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ah_test_yaml_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "a: 1\nb:\n  - x\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    ah_yaml_t y = AH_YAML_INIT;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_yaml_load_file(&y, path, NULL, &err), 0);
    assert_string_equal(y.name, path);
    assert_int_equal(ah_yaml_map_get(ah_yaml_root(&y), "b")->line, 3);
    ah_yaml_free(&y);

    ah_yaml_limits_t lim = {.max_bytes = 4};
    assert_int_equal(ah_yaml_load_file(&y, path, &lim, &err), -E2BIG);
    assert_has(err.data, "larger than 4 bytes");
    ah_buf_reset(&err);
    unlink(path);

    assert_int_equal(ah_yaml_load_file(&y, path, NULL, &err), -ENOENT);
    assert_has(err.data, "cannot read: No such file or directory");
    ah_buf_reset(&err);
    assert_int_equal(ah_yaml_load_file(&y, "/tmp", NULL, &err), -EISDIR);
    ah_buf_free(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_seq_and_positions),
        cmocka_unit_test(test_nulls_quotes_and_tags),
        cmocka_unit_test(test_multi_document),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_parse_error_positions),
        cmocka_unit_test(test_keys_must_be_unique_scalars),
        cmocka_unit_test(test_aliases_share_nodes),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
