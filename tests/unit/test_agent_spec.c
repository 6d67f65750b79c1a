/*
 * test_agent_spec.c - agent documents (src/agents/spec.c): valid specs and
 * their defaults, YAML and JSON alike, canonical JSON and hashes, every kind
 * of error with its exact path and line, the context checks, the YAML
 * printer, and every file of examples/agents/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agents/spec.h"
#include "core/config.h"

/* Lines 1-5 of every document below; spec fields start on line 6. */
#define HEAD                                                                                       \
    "apiVersion: agenthub/v1\n"                                                                    \
    "kind: Agent\n"                                                                                \
    "metadata:\n"                                                                                  \
    "  name: support\n"                                                                            \
    "spec:\n"

static int parse(const char *text, ah_agent_format_t fmt, ah_agent_spec_list_t *l,
                 ah_agent_errors_t *e)
{
    return ah_agent_spec_parse("a.yaml", text, strlen(text), fmt, l, e);
}

static void dump_errors(const ah_agent_errors_t *e)
{
    ah_buf_t b = AH_BUF_INIT;
    ah_agent_errors_format(e, &b);
    print_error("errors:\n%s", b.data ? b.data : "(none)\n");
    ah_buf_free(&b);
}

/* Parses text, expecting failure rc with an error at path/line whose message contains msg. */
static void expect_error_rc(const char *text, int rc, const char *path, int line, const char *msg)
{
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    int got = parse(text, AH_AGENT_FMT_AUTO, &l, &e);
    if (got != rc) {
        print_error("rc %d, expected %d\n", got, rc);
        dump_errors(&e);
        fail();
    }
    assert_int_equal(l.n, 0);
    bool found = false;
    for (size_t i = 0; i < e.n && !found; i++)
        found = strcmp(e.v[i].path, path) == 0 && e.v[i].line == line &&
                strstr(e.v[i].message, msg) != NULL;
    if (!found) {
        print_error("no error at line %d, path [%s], containing [%s]\n", line, path, msg);
        dump_errors(&e);
        fail();
    }
    ah_agent_errors_free(&e);
}

static void expect_error(const char *text, const char *path, int line, const char *msg)
{
    expect_error_rc(text, -EINVAL, path, line, msg);
}

static ah_agent_spec_t *parse_one(const char *text, ah_agent_format_t fmt)
{
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    int rc = parse(text, fmt, &l, &e);
    if (rc != 0 || l.n != 1) {
        print_error("rc %d, %zu specs\n", rc, l.n);
        dump_errors(&e);
        fail();
    }
    ah_agent_errors_free(&e);
    ah_agent_spec_t *s = l.v[0];
    free(l.v);
    return s;
}

/* ------------------------------------------------------------- valid */

static const char full_yaml[] =
    "apiVersion: agenthub/v1\n"
    "kind: Agent\n"
    "metadata:\n"
    "  name: support\n"
    "  labels: { team: cx, tier: 1 }\n"
    "spec:\n"
    "  model: fast\n"
    "  instructions: |\n"
    "    Answer questions.\n"
    "  tools:\n"
    "    - type: http\n"
    "      name: get_order\n"
    "      description: Look up an order\n"
    "      url: http://orders/api/{id}\n"
    "      method: get\n"
    "      parameters: { type: object, properties: { id: { type: string } }, required: [id] }\n"
    "      headers: { Authorization: \"Bearer ${ORDERS_TOKEN}\" }\n"
    "      timeout_s: 500ms\n"
    "    - { type: mcp, server: { url: \"http://mcp:3001/mcp\" }, allow: [search_docs] }\n"
    "    - type: mcp\n"
    "      server: { command: [npx, -y, \"@modelcontextprotocol/server-everything\"], env: { A: "
    "\"1\" } }\n"
    "      prefix: ev_\n"
    "    - type: exec\n"
    "      name: run_python\n"
    "      command: [python3, \"-\"]\n"
    "      sandbox: { network: false, memory_mb: 512, cpu_s: 5, timeout_s: 1m, "
    "max_output_bytes: 64KiB }\n"
    "    - { type: exec, name: shell, command: [sh], sandbox: none }\n"
    "  handoffs: [ billing ]\n"
    "  approval: { tools: [ get_order, search_docs, ev_anything ] }\n"
    "  limits: { max_turns: 5, max_tokens: 50000, max_cost_usd: 0.5, timeout_s: 120 }\n"
    "  session: { ttl_s: 3600, max_messages: 50 }\n"
    "  canary: { version: 2, weight: 10 }\n";

static void test_full_spec(void **state)
{
    (void)state;
    ah_agent_spec_t *s = parse_one(full_yaml, AH_AGENT_FMT_YAML);
    assert_string_equal(s->name, "support");
    assert_int_equal(s->n_labels, 2);
    assert_string_equal(s->labels[0].key, "team");
    assert_string_equal(s->labels[1].key, "tier");
    assert_string_equal(s->labels[1].value, "1"); /* a plain number read as its text */
    assert_string_equal(s->model, "fast");
    assert_int_equal(s->model_line, 7);
    assert_string_equal(s->instructions, "Answer questions.\n");
    assert_int_equal(s->n_tools, 5);

    const ah_agent_tool_t *t = &s->tools[0];
    assert_int_equal(t->type, AH_TOOL_HTTP);
    assert_int_equal(t->line, 11);
    assert_string_equal(t->name, "get_order");
    assert_string_equal(t->http.method, "GET");
    assert_string_equal(t->http.url, "http://orders/api/{id}");
    assert_int_equal(t->http.n_headers, 1);
    assert_string_equal(t->http.headers[0].value, "Bearer ${ORDERS_TOKEN}"); /* kept as text */
    assert_true(t->timeout_s > 0.4999 && t->timeout_s < 0.5001);
    assert_int_equal(t->http.max_response_bytes, 1024 * 1024);
    assert_string_equal(t->parameters,
                        "{\"properties\":{\"id\":{\"type\":\"string\"}},\"required\":"
                        "[\"id\"],\"type\":\"object\"}");
    assert_ptr_equal(ah_agent_spec_tool(s, "get_order"), t);

    t = &s->tools[1];
    assert_int_equal(t->type, AH_TOOL_MCP);
    assert_null(t->name);
    assert_string_equal(t->mcp.url, "http://mcp:3001/mcp");
    assert_int_equal(t->mcp.n_allow, 1);
    assert_string_equal(t->mcp.prefix, "");
    assert_true(t->timeout_s == 30);

    t = &s->tools[2];
    assert_null(t->mcp.url);
    assert_int_equal(t->mcp.n_command, 3);
    assert_string_equal(t->mcp.command[2], "@modelcontextprotocol/server-everything");
    assert_int_equal(t->mcp.n_env, 1);
    assert_string_equal(t->mcp.prefix, "ev_");

    t = &s->tools[3];
    assert_int_equal(t->type, AH_TOOL_EXEC);
    assert_int_equal(t->exec.n_command, 2);
    assert_false(t->exec.sandbox.none);
    assert_false(t->exec.sandbox.network);
    assert_int_equal(t->exec.sandbox.memory_mb, 512);
    assert_true(t->exec.sandbox.cpu_s == 5);
    assert_true(t->exec.sandbox.timeout_s == 60);
    assert_int_equal(t->exec.sandbox.max_output_bytes, 64 * 1024);
    assert_string_equal(t->parameters, "{\"properties\":{},\"type\":\"object\"}");
    assert_true(s->tools[4].exec.sandbox.none);

    assert_int_equal(s->n_handoffs, 1);
    assert_string_equal(s->handoffs[0], "billing");
    assert_int_equal(s->handoff_lines[0], 28);
    assert_int_equal(s->n_approval_tools, 3);
    assert_int_equal(s->limits.max_turns, 5);
    assert_int_equal(s->limits.max_tokens, 50000);
    assert_true(s->limits.max_cost_usd == 0.5);
    assert_true(s->limits.timeout_s == 120);
    assert_int_equal(s->limits.loop_detect, 3);
    assert_int_equal(s->limits.max_tool_calls_per_turn, 32);
    assert_int_equal(s->limits.concurrency, 0);
    assert_true(s->session.ttl_s == 3600);
    assert_int_equal(s->session.max_messages, 50);
    assert_int_equal(s->canary.version, 2);
    assert_int_equal(s->canary.weight, 10);
    assert_int_equal(strlen(s->hash), 64);
    assert_int_equal(s->version, 0);
    ah_agent_spec_unref(s);
}

static void test_defaults(void **state)
{
    (void)state;
    ah_agent_spec_t *s = parse_one(HEAD "  model: mock\n", AH_AGENT_FMT_AUTO);
    assert_string_equal(s->instructions, "");
    assert_int_equal(s->n_tools, 0);
    assert_int_equal(s->n_labels, 0);
    assert_int_equal(s->limits.max_turns, 10);
    assert_true(s->limits.timeout_s == 300);
    assert_int_equal(s->limits.loop_detect, 3);
    assert_int_equal(s->limits.concurrency, 0);
    assert_int_equal(s->limits.max_tokens, 0);
    assert_true(s->session.ttl_s == 86400);
    assert_int_equal(s->session.max_messages, 200);
    assert_int_equal(s->canary.version, 0);
    assert_string_equal(
        s->json, "{\"apiVersion\":\"agenthub/v1\",\"kind\":\"Agent\",\"metadata\":{\"name\":"
                 "\"support\"},\"spec\":{\"instructions\":\"\",\"limits\":{\"concurrency\":0,"
                 "\"loop_detect\":3,\"max_tool_calls_per_turn\":32,\"max_turns\":10,"
                 "\"timeout_s\":300},\"model\":\"mock\",\"session\":{\"max_messages\":200,"
                 "\"ttl_s\":86400},\"tools\":[]}}");
    ah_agent_spec_unref(s);
}

/* The same agent written differently (YAML, JSON, defaults spelt out) has one hash. */
static void test_canonical_and_hash(void **state)
{
    (void)state;
    ah_agent_spec_t *a = parse_one(HEAD "  model: mock\n", AH_AGENT_FMT_YAML);
    ah_agent_spec_t *b = parse_one(
        "{\"kind\":\"Agent\",\"apiVersion\":\"agenthub/v1\",\"metadata\":{\"name\":\"support\"},"
        "\"spec\":{\"model\":\"mock\",\"limits\":{\"max_turns\":10,\"timeout_s\":\"5m\"},"
        "\"tools\":[],\"session\":null}}",
        AH_AGENT_FMT_AUTO);
    assert_string_equal(a->json, b->json);
    assert_string_equal(a->hash, b->hash);
    ah_agent_spec_t *c =
        parse_one(HEAD "  model: mock\n  limits: { max_turns: 11 }\n", AH_AGENT_FMT_YAML);
    assert_string_not_equal(a->hash, c->hash);

    /* Parsing the canonical JSON gives it back unchanged, for a spec using every field. */
    ah_agent_spec_t *f = parse_one(full_yaml, AH_AGENT_FMT_YAML);
    ah_agent_spec_t *g = parse_one(f->json, AH_AGENT_FMT_JSON);
    assert_string_equal(f->json, g->json);
    assert_string_equal(f->hash, g->hash);

    /* And so does its YAML print. */
    ah_buf_t y = AH_BUF_INIT;
    assert_int_equal(ah_agent_json_to_yaml(f->json, f->json_len, &y), 0);
    ah_agent_spec_t *h = parse_one(y.data, AH_AGENT_FMT_YAML);
    assert_string_equal(f->json, h->json);
    ah_buf_free(&y);

    ah_agent_spec_unref(a);
    ah_agent_spec_unref(b);
    ah_agent_spec_unref(c);
    ah_agent_spec_unref(f);
    ah_agent_spec_unref(g);
    ah_agent_spec_unref(h);
}

static void test_json_to_yaml_quotes(void **state)
{
    (void)state;
    ah_buf_t y = AH_BUF_INIT;
    const char *j =
        "{\"a\":\"123\",\"b\":\"true\",\"c\":\"\",\"d\":\"x: y\",\"e\":\"line1\\nline2\","
        "\"f\":1.5,\"g\":null,\"h\":[],\"i\":\"-\"}";
    assert_int_equal(ah_agent_json_to_yaml(j, strlen(j), &y), 0);
    assert_non_null(strstr(y.data, "a: \"123\"\n"));
    assert_non_null(strstr(y.data, "b: \"true\"\n"));
    assert_non_null(strstr(y.data, "c: \"\"\n"));
    assert_non_null(strstr(y.data, "f: 1.5\n"));
    assert_non_null(strstr(y.data, "g: null\n"));
    assert_non_null(strstr(y.data, "h: []\n"));
    assert_non_null(strstr(y.data, "e: |-\n  line1\n  line2\n"));
    ah_buf_free(&y);
    assert_int_equal(ah_agent_json_to_yaml("{", 1, &y), -EINVAL);
    ah_buf_free(&y);
}

static void test_multi_documents(void **state)
{
    (void)state;
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    const char *yaml = HEAD "  model: a\n"
                            "---\n"
                            "---\n"
                            "# only a comment\n"
                            "---\n"
                            "apiVersion: agenthub/v1\n"
                            "kind: Agent\n"
                            "metadata: { name: billing }\n"
                            "spec: { model: b }\n";
    assert_int_equal(parse(yaml, AH_AGENT_FMT_YAML, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0]->name, "support");
    assert_int_equal(l.v[0]->line, 1);
    assert_string_equal(l.v[1]->name, "billing");
    assert_int_equal(l.v[1]->line, 11);
    ah_agent_spec_list_free(&l);

    /* A JSON array (or a YAML sequence) is a list of agents. */
    const char *json =
        "[{\"apiVersion\":\"agenthub/v1\",\"kind\":\"Agent\",\"metadata\":{\"name\":"
        "\"a\"},\"spec\":{\"model\":\"m\"}},{\"apiVersion\":\"agenthub/v1\",\"kind\":"
        "\"Agent\",\"metadata\":{\"name\":\"b\"},\"spec\":{\"modle\":\"m\"}}]";
    assert_int_equal(parse(json, AH_AGENT_FMT_AUTO, &l, &e), -EINVAL);
    assert_int_equal(l.n, 0); /* all or nothing */
    assert_true(e.n >= 1);
    assert_int_equal(e.v[0].doc, 1); /* the second document, no line in JSON */
    assert_int_equal(e.v[0].line, 0);
    ah_buf_t b = AH_BUF_INIT;
    ah_agent_errors_format(&e, &b);
    assert_non_null(strstr(
        b.data, "a.yaml: document 2: spec.modle: unknown field (did you mean \"model\"?)\n"));
    ah_buf_free(&b);
    ah_agent_errors_free(&e);

    /* Empty and comment-only sources hold no agent, and that is not an error. */
    assert_int_equal(parse("", AH_AGENT_FMT_AUTO, &l, &e), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(parse("# nothing\n", AH_AGENT_FMT_AUTO, &l, &e), 0);
    assert_int_equal(l.n, 0);
    ah_agent_spec_list_free(&l);
}

/* -------------------------------------------------------------- errors */

static void test_error_document_level(void **state)
{
    (void)state;
    expect_error("just text\n", "", 1, "expected an agent document");
    expect_error("apiVersion: agenthub/v2\nkind: Agent\nmetadata: {name: a}\nspec: {model: m}\n",
                 "apiVersion", 1, "unsupported version \"agenthub/v2\" (supported: agenthub/v1)");
    expect_error("kind: Agent\nmetadata: {name: a}\nspec: {model: m}\n", "apiVersion", 1,
                 "required field is missing");
    expect_error("apiVersion: agenthub/v1\nkind: Agnet\nmetadata: {name: a}\nspec: {model: m}\n",
                 "kind", 2, "unknown kind \"Agnet\" (did you mean \"Agent\"? known: Agent)");
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nmetdata: {name: a}\nspec: {model: m}\n",
                 "metdata", 3, "unknown field (did you mean \"metadata\"?)");
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nspec: {model: m}\n", "metadata", 1,
                 "required field is missing");
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: a}\n", "spec", 1,
                 "required field is missing");
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: a}\nspec: [1]\n", "spec",
                 4, "expected a mapping");
}

static void test_error_name(void **state)
{
    (void)state;
    const char *bad[] = {
        "Support", "-x",  "a b",
        "_x",      "x.y", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char doc[512];
        snprintf(doc, sizeof(doc),
                 "apiVersion: agenthub/v1\nkind: Agent\nmetadata:\n  name: \"%s\"\nspec: {model: "
                 "m}\n",
                 bad[i]);
        expect_error(doc, "metadata.name", 4, "invalid agent name");
    }
    assert_true(ah_agent_name_ok("a"));
    assert_true(ah_agent_name_ok("0-agent_x"));
    assert_true(ah_agent_name_ok(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 64 */
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nmetadata:\n  labels: {\"bad key!\": x}\n"
                 "  name: a\nspec: {model: m}\n",
                 "metadata.labels.bad key!", 4, "invalid name");
    expect_error("apiVersion: agenthub/v1\nkind: Agent\nmetadata:\n  nmae: a\nspec: {model: m}\n",
                 "metadata.nmae", 4, "unknown field (did you mean \"name\"?)");
}

static void test_error_spec_fields(void **state)
{
    (void)state;
    /* A missing field is reported where its mapping starts. */
    expect_error(HEAD "  instructions: hi\n", "spec.model", 6,
                 "required field is missing (a model name or alias from the configuration)");
    expect_error(HEAD "  model: m\n  tols: []\n", "spec.tols", 7,
                 "unknown field (did you mean \"tools\"?)");
    expect_error(HEAD "  model: m\n  zzzzzzzz: 1\n", "spec.zzzzzzzz", 7,
                 "unknown field (known fields: model, instructions, tools, handoffs, approval, "
                 "limits, session, canary, webhook_url)");
    expect_error(HEAD "  model: [a]\n", "spec.model", 6, "expected a string, got a sequence");
    expect_error(HEAD "  model: true\n", "spec.model", 6,
                 "expected a string, got the boolean true");
    expect_error(HEAD "  model: m\n  limits: { max_turns: 0 }\n", "spec.limits.max_turns", 7,
                 "expected an integer from 1 to 1000, got \"0\"");
    expect_error(HEAD "  model: m\n  limits:\n    timeout_s: soon\n", "spec.limits.timeout_s", 8,
                 "expected a duration from 1 to 604800 seconds");
    expect_error(HEAD "  model: m\n  limits: { max_cost_usd: -1 }\n", "spec.limits.max_cost_usd", 7,
                 "expected a number from 0 to 1000000");
    expect_error(HEAD "  model: m\n  limits: { loop_detect: x }\n", "spec.limits.loop_detect", 7,
                 "expected an integer from 0 to 100");
    expect_error(HEAD "  model: m\n  limits: { concurency: 2 }\n", "spec.limits.concurency", 7,
                 "did you mean \"concurrency\"?");
    expect_error(HEAD "  model: m\n  session: { ttl_s: 0 }\n", "spec.session.ttl_s", 7,
                 "expected a duration");
    expect_error(HEAD "  model: m\n  canary: { version: 2, weight: 101 }\n", "spec.canary.weight",
                 7, "expected an integer from 0 to 100, got \"101\"");
    expect_error(HEAD "  model: m\n  canary: { weight: 5 }\n", "spec.canary.version", 7,
                 "required field is missing");
    expect_error(HEAD "  model: m\n  handoffs: [support]\n", "spec.handoffs[0]", 7,
                 "an agent cannot hand off to itself");
    expect_error(HEAD "  model: m\n  handoffs:\n    - billing\n    - billing\n", "spec.handoffs[1]",
                 9, "\"billing\" is listed twice");
    expect_error(HEAD "  model: m\n  handoffs: [Billing]\n", "spec.handoffs[0]", 7,
                 "invalid agent name");
    expect_error(HEAD "  model: m\n  handoffs: billing\n", "spec.handoffs", 7,
                 "expected a sequence of strings");
}

static void test_error_tools(void **state)
{
    (void)state;
    const char *t = HEAD "  model: m\n"
                         "  tools:\n"
                         "    - { type: exec, name: a, command: [x] }\n"
                         "    - type: htp\n"
                         "      name: b\n";
    expect_error(t, "spec.tools[1].type", 9, "unknown tool type \"htp\" (known: http, mcp, exec)");
    expect_error(HEAD "  model: m\n  tools:\n    - { name: a }\n", "spec.tools[0].type", 8,
                 "required field is missing (known: http, mcp, exec)");
    expect_error(HEAD "  model: m\n  tools:\n    - [a]\n", "spec.tools[0]", 8,
                 "expected a mapping");
    expect_error(HEAD "  model: m\n  tools:\n    - type: http\n      name: a\n      url: "
                      "http://x\n      servr: {}\n",
                 "spec.tools[0].servr", 11,
                 "unknown field (known fields for http tools: type, "
                 "name, description, parameters, url, method, headers, "
                 "timeout_s, max_response_bytes)");
    /* Duplicate names, also through an MCP server's prefix + allow list. */
    expect_error(HEAD "  model: m\n  tools:\n"
                      "    - { type: exec, name: get_order, command: [x] }\n"
                      "    - { type: http, name: get_order, url: \"http://x\" }\n",
                 "spec.tools[1].name", 9,
                 "duplicate tool name \"get_order\" (also spec.tools[0]); names must be unique "
                 "within an agent");
    expect_error(HEAD "  model: m\n  tools:\n"
                      "    - { type: exec, name: docs_search, command: [x] }\n"
                      "    - type: mcp\n"
                      "      server: { url: \"http://m/mcp\" }\n"
                      "      prefix: docs_\n"
                      "      allow:\n"
                      "        - search\n",
                 "spec.tools[1].allow[0]", 13, "duplicate tool name \"docs_search\"");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: http, name: \"bad name\", url: "
                      "\"http://x\" }\n",
                 "spec.tools[0].name", 8, "invalid tool name \"bad name\"");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: http, url: \"http://x\" }\n",
                 "spec.tools[0].name", 8, "required field is missing");

    /* http */
    expect_error(HEAD "  model: m\n  tools:\n    - { type: http, name: a, url: \"ftp://x\" }\n",
                 "spec.tools[0].url", 8, "expected an http:// or https:// URL, got \"ftp://x\"");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: http, name: a }\n", "spec.tools[0].url",
                 8, "required field is missing");
    expect_error(HEAD "  model: m\n  tools:\n    - type: http\n      name: a\n      url: "
                      "\"http://x/{id}\"\n",
                 "spec.tools[0].url", 10,
                 "placeholder {id} is not an argument (add id to parameters.properties)");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: http, name: a, url: \"http://x\", "
                      "method: FETCH }\n",
                 "spec.tools[0].method", 8, "unknown method \"FETCH\"");
    expect_error(HEAD "  model: m\n  tools:\n    - type: http\n      name: a\n      url: "
                      "\"http://x\"\n      parameters: { type: string }\n",
                 "spec.tools[0].parameters.type", 11, "must be \"object\"");
    expect_error(HEAD "  model: m\n  tools:\n    - type: http\n      name: a\n      url: "
                      "\"http://x\"\n      headers: { \"Bad Header\": x }\n",
                 "spec.tools[0].headers.Bad Header", 11, "invalid name");
    expect_error(HEAD "  model: m\n  tools:\n    - type: http\n      name: a\n      url: "
                      "\"http://x\"\n      max_response_bytes: 1TiB\n",
                 "spec.tools[0].max_response_bytes", 11, "expected a size");

    /* mcp */
    expect_error(HEAD "  model: m\n  tools:\n    - type: mcp\n      server: { url: \"http://x\", "
                      "command: [a] }\n",
                 "spec.tools[0].server", 9, "give either url or command, not both");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: mcp, server: {} }\n",
                 "spec.tools[0].server", 8, "needs url");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: mcp }\n", "spec.tools[0].server", 8,
                 "required field is missing");
    expect_error(HEAD "  model: m\n  tools:\n    - type: mcp\n      server: { command: [] }\n",
                 "spec.tools[0].server.command", 9, "must name the program to run");
    expect_error(HEAD "  model: m\n  tools:\n    - type: mcp\n      server: { url: \"http://x\" }\n"
                      "      prefix: \"no spaces\"\n",
                 "spec.tools[0].prefix", 10, "invalid prefix");
    expect_error(HEAD "  model: m\n  tools:\n    - type: mcp\n      server: { url: \"http://x\" }\n"
                      "      name: x\n",
                 "spec.tools[0].name", 10, "unknown field (known fields for mcp tools");

    /* exec */
    expect_error(HEAD "  model: m\n  tools:\n    - { type: exec, name: a }\n",
                 "spec.tools[0].command", 8, "required field is missing");
    expect_error(HEAD "  model: m\n  tools:\n    - { type: exec, name: a, command: [x], sandbox: "
                      "off }\n",
                 "spec.tools[0].sandbox", 8,
                 "expected a mapping of sandbox limits, or none (to run without a sandbox), got "
                 "\"off\"");
    expect_error(HEAD "  model: m\n  tools:\n    - type: exec\n      name: a\n      command: [x]\n"
                      "      sandbox:\n        memory_mb: 1\n",
                 "spec.tools[0].sandbox.memory_mb", 12,
                 "expected an integer from 16 to 65536, got \"1\"");
    expect_error(HEAD "  model: m\n  tools:\n    - type: exec\n      name: a\n      command: [x]\n"
                      "      sandbox: { network: maybe }\n",
                 "spec.tools[0].sandbox.network", 11, "expected true or false, got \"maybe\"");

    /* approval */
    expect_error(HEAD "  model: m\n  tools:\n    - { type: exec, name: refund_order, command: [x] "
                      "}\n  approval:\n    tools: [refund_ordr]\n",
                 "spec.approval.tools[0]", 10,
                 "unknown tool \"refund_ordr\" (did you mean \"refund_order\"?)");
    expect_error(HEAD "  model: m\n  approval: { tools: [x], users: [y] }\n", "spec.approval.users",
                 7, "unknown field");
    expect_error(HEAD "  model: m\n  approval:\n    timeout_s: 0\n", "spec.approval.timeout_s", 8,
                 "");

    /* webhook_url: the same rule as a run's */
    expect_error(HEAD "  model: m\n  webhook_url: ftp://hooks.example.com/x\n", "spec.webhook_url",
                 7, "expected an http:// or https:// URL with a host, got \"ftp://hooks.example");
    expect_error(HEAD "  model: m\n  webhook_url: \"https:///nohost\"\n", "spec.webhook_url", 7,
                 "expected an http:// or https:// URL with a host");
    expect_error(HEAD "  model: m\n  webhook_url: [a]\n", "spec.webhook_url", 7,
                 "expected a string, got a sequence");
}

/* A per-agent webhook_url and approval timeout are kept, and part of the canonical form. */
static void test_webhook_and_approval_timeout(void **state)
{
    (void)state;
    ah_agent_spec_t *s =
        parse_one(HEAD "  model: mock\n  tools:\n    - { type: exec, name: refund, "
                       "command: [x] }\n  approval: { tools: [refund], timeout_s: "
                       "2h }\n  webhook_url: https://hooks.example.com/a?b=1\n",
                  AH_AGENT_FMT_YAML);
    assert_string_equal(s->webhook_url, "https://hooks.example.com/a?b=1");
    assert_true(s->approval_timeout_s == 7200);
    assert_non_null(strstr(s->json, "\"webhook_url\":\"https://hooks.example.com/a?b=1\""));
    assert_non_null(strstr(s->json, "\"approval\":{\"timeout_s\":7200,\"tools\":[\"refund\"]}"));
    ah_agent_spec_t *again = parse_one(s->json, AH_AGENT_FMT_AUTO);
    assert_string_equal(again->hash, s->hash);
    ah_agent_spec_t *d = parse_one(HEAD "  model: mock\n", AH_AGENT_FMT_YAML);
    assert_null(d->webhook_url);
    assert_true(d->approval_timeout_s == 0);
    ah_agent_spec_unref(s);
    ah_agent_spec_unref(again);
    ah_agent_spec_unref(d);
}

static void test_error_limits_sizes(void **state)
{
    (void)state;
    /* 129 tools */
    ah_buf_t b = AH_BUF_INIT;
    ah_buf_puts(&b, HEAD "  model: m\n  tools:\n");
    for (int i = 0; i <= AH_AGENT_MAX_TOOLS; i++)
        ah_buf_printf(&b, "    - { type: exec, name: t%d, command: [x] }\n", i);
    expect_error(b.data, "spec.tools", 8, "has 129 tools; the limit is 128");
    ah_buf_free(&b);

    /* instructions > 256 KiB */
    ah_buf_puts(&b, HEAD "  model: m\n  instructions: \"");
    for (int i = 0; i < AH_AGENT_INSTRUCTIONS_MAX + 1; i++)
        ah_buf_putc(&b, 'x');
    ah_buf_puts(&b, "\"\n");
    expect_error(b.data, "spec.instructions", 7, "the limit is 262144");
    ah_buf_free(&b);

    /* the document itself > 1 MiB */
    ah_buf_puts(&b, HEAD "  model: m\n");
    while (b.len <= AH_AGENT_DOC_MAX_BYTES)
        ah_buf_puts(&b, "# padding padding padding padding padding padding padding padding\n");
    expect_error_rc(b.data, -E2BIG, "", 0, "at most 1048576 bytes");
    ah_buf_free(&b);

    /* nesting */
    ah_buf_puts(&b, "{\"a\":");
    for (int i = 0; i < 100; i++)
        ah_buf_puts(&b, "[");
    for (int i = 0; i < 100; i++)
        ah_buf_puts(&b, "]");
    ah_buf_puts(&b, "}");
    expect_error_rc(b.data, -E2BIG, "", 0, "nested deeper");
    ah_buf_free(&b);
}

static void test_error_syntax(void **state)
{
    (void)state;
    expect_error_rc(HEAD "  model: [unclosed\n", -EBADMSG, "", 7, "not valid YAML");
    expect_error_rc("{\"apiVersion\": \"agenthub/v1\",\n \"kind\": }", -EBADMSG, "", 2,
                    "not valid JSON");
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    /* JSON forced: YAML is refused. */
    assert_int_equal(parse(HEAD "  model: m\n", AH_AGENT_FMT_JSON, &l, &e), -EBADMSG);
    ah_agent_errors_free(&e);
    /* Duplicate keys are a syntax error in both. */
    assert_int_equal(parse("{\"kind\":\"Agent\",\"kind\":\"Agent\"}", AH_AGENT_FMT_JSON, &l, &e),
                     -EBADMSG);
    ah_agent_errors_free(&e);
    assert_int_equal(parse("kind: Agent\nkind: Agent\n", AH_AGENT_FMT_YAML, &l, &e), -EBADMSG);
    ah_agent_errors_free(&e);
    /* Text starting with { is JSON when sniffed; YAML flow style needs the YAML format. */
    const char *flow =
        "{apiVersion: agenthub/v1, kind: Agent, metadata: {name: a}, spec: {model: m}}";
    assert_int_equal(parse(flow, AH_AGENT_FMT_AUTO, &l, &e), -EBADMSG);
    ah_agent_errors_free(&e);
    assert_int_equal(parse(flow, AH_AGENT_FMT_YAML, &l, &e), 0);
    assert_int_equal(l.n, 1);
    ah_agent_spec_list_free(&l);
}

/* Every problem of a document is reported at once, in line order. */
static void test_all_errors_in_order(void **state)
{
    (void)state;
    const char *text = "apiVersion: agenthub/v1\n"
                       "kind: Agnet\n"
                       "metadata:\n"
                       "  name: Support\n"
                       "spec:\n"
                       "  modle: fast\n"
                       "  tools:\n"
                       "    - { type: htp }\n"
                       "  limits: { max_turns: 0 }\n";
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    assert_int_equal(parse(text, AH_AGENT_FMT_AUTO, &l, &e), -EINVAL);
    ah_buf_t b = AH_BUF_INIT;
    ah_agent_errors_format(&e, &b);
    assert_string_equal(
        b.data, "a.yaml:2: kind: unknown kind \"Agnet\" (did you mean \"Agent\"? known: Agent)\n"
                "a.yaml:4: metadata.name: invalid agent name \"Support\" (1-64 characters: "
                "lowercase letters, digits, _ and -, starting with a letter or digit)\n"
                "a.yaml:6: spec.modle: unknown field (did you mean \"model\"?)\n"
                "a.yaml:6: spec.model: required field is missing (a model name or alias from the "
                "configuration)\n"
                "a.yaml:8: spec.tools[0].type: unknown tool type \"htp\" (known: http, mcp, exec)\n"
                "a.yaml:9: spec.limits.max_turns: expected an integer from 1 to 1000, got \"0\"\n");
    ah_buf_free(&b);
    ah_agent_errors_free(&e);
}

/* -------------------------------------------------------------- context */

static bool known_agent(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "billing") == 0;
}

static bool known_version(void *ud, const char *name, int64_t v)
{
    (void)ud;
    return strcmp(name, "support") == 0 && v <= 3;
}

static void test_context(void **state)
{
    (void)state;
    ah_config_t cfg;
    ah_buf_t err = AH_BUF_INIT;
    const char *conf = "providers: [{name: local, type: mock}]\n"
                       "models:\n"
                       "  - { name: fast, aliases: [gpt-4o-mini], targets: [{provider: local, "
                       "model: echo}] }\n"
                       "  - { name: mock, targets: [{provider: local, model: echo}] }\n";
    char *env[] = {NULL};
    assert_int_equal(ah_config_load_string(&cfg, "c.yaml", conf, strlen(conf), env, &err), 0);
    ah_agent_context_t ctx = {&cfg, known_agent, known_version, NULL};

    ah_agent_spec_t *ok = parse_one(HEAD "  model: gpt-4o-mini\n  handoffs: [billing]\n"
                                         "  canary: { version: 3, weight: 50 }\n",
                                    AH_AGENT_FMT_YAML);
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    assert_int_equal(ah_agent_spec_check_context(ok, &ctx, &e), 0);
    assert_int_equal(e.n, 0);

    ah_agent_spec_t *bad = parse_one(HEAD "  model: fsat\n  handoffs: [billing, nobody]\n"
                                          "  canary:\n    version: 4\n    weight: 50\n",
                                     AH_AGENT_FMT_YAML);
    assert_int_equal(ah_agent_spec_check_context(bad, &ctx, &e), -EINVAL);
    ah_buf_t b = AH_BUF_INIT;
    ah_agent_errors_format(&e, &b);
    assert_string_equal(
        b.data, "a.yaml:6: spec.model: unknown model \"fsat\" (did you mean \"fast\"? configured: "
                "fast, mock)\n"
                "a.yaml:7: spec.handoffs[1]: unknown agent \"nobody\" (apply it first, or in the "
                "same batch)\n"
                "a.yaml:9: spec.canary.version: agent \"support\" has no version 4 (see its "
                "versions)\n");
    assert_string_equal(e.v[0].path, "spec.model");
    ah_buf_free(&b);
    ah_agent_errors_free(&e);

    /* Callbacks left NULL are not checked. */
    ah_agent_context_t none = {NULL, NULL, NULL, NULL};
    assert_int_equal(ah_agent_spec_check_context(bad, &none, &e), 0);

    ah_agent_spec_unref(ok);
    ah_agent_spec_unref(bad);
    ah_config_free(&cfg);
    ah_buf_free(&err);
}

static void test_refcount(void **state)
{
    (void)state;
    ah_agent_spec_t *s = parse_one(HEAD "  model: m\n", AH_AGENT_FMT_YAML);
    assert_ptr_equal(ah_agent_spec_ref(s), s);
    ah_agent_spec_unref(s);
    assert_string_equal(s->name, "support"); /* still alive: one reference left */
    ah_agent_spec_unref(s);
    ah_agent_spec_unref(NULL);
}

/* ------------------------------------------------------------- files */

static void test_load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/ah_spec_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/a.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"apiVersion\":\"agenthub/v1\",\"kind\":\"Agent\",\"metadata\":{\"name\":\"j\"},"
          "\"spec\":{\"model\":\"m\"}}",
          f);
    fclose(f);
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    assert_int_equal(ah_agent_spec_load_file(path, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0]->source, path);
    ah_agent_spec_list_free(&l);
    unlink(path);
    assert_int_equal(ah_agent_spec_load_file(path, &l, &e), -ENOENT);
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.v[0].message, "cannot read"));
    ah_agent_errors_free(&e);
    assert_int_equal(ah_agent_spec_load_file(dir, &l, &e), -EISDIR);
    ah_agent_errors_free(&e);
    rmdir(dir);
}

/* Every example agent shipped in examples/agents/ is valid. */
static void test_examples_validate(void **state)
{
    (void)state;
    const char *src = getenv("AH_TEST_SRCDIR");
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/examples/agents", src ? src : "..");
    DIR *d = opendir(dir);
    if (!d) {
        print_error("cannot open %s (set AH_TEST_SRCDIR to the source tree)\n", dir);
        fail();
    }
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || (strcmp(de->d_name + l - 5, ".yaml") && strcmp(de->d_name + l - 4, ".yml") &&
                      strcmp(de->d_name + l - 5, ".json")))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        ah_agent_spec_list_t list;
        ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
        int rc = ah_agent_spec_load_file(path, &list, &e);
        if (rc != 0 || list.n == 0) {
            print_error("%s: rc %d\n", path, rc);
            dump_errors(&e);
            fail();
        }
        for (size_t i = 0; i < list.n; i++)
            assert_string_equal(list.v[i]->model, "mock"); /* the example config's model */
        n += (int)list.n;
        ah_agent_spec_list_free(&list);
        ah_agent_errors_free(&e);
    }
    closedir(d);
    assert_true(n >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_spec),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_canonical_and_hash),
        cmocka_unit_test(test_json_to_yaml_quotes),
        cmocka_unit_test(test_multi_documents),
        cmocka_unit_test(test_error_document_level),
        cmocka_unit_test(test_error_name),
        cmocka_unit_test(test_error_spec_fields),
        cmocka_unit_test(test_error_tools),
        cmocka_unit_test(test_webhook_and_approval_timeout),
        cmocka_unit_test(test_error_limits_sizes),
        cmocka_unit_test(test_error_syntax),
        cmocka_unit_test(test_all_errors_in_order),
        cmocka_unit_test(test_context),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_examples_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
