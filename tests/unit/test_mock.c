/* test_mock.c - the deterministic mock model (gateway/mock.h): rules, tokens, options, dialects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <string.h>

#include "gateway/mock.h"

static json_t *parse(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    return j;
}

/* Runs the OpenAI rules on a request given as JSON text. */
static void chat(const char *req_json, ah_mock_reply_t *r)
{
    json_t *req = parse(req_json);
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_mock_chat(req, r, &err);
    if (rc)
        fail_msg("ah_mock_chat: %d %s", rc, err.data ? err.data : "");
    ah_buf_free(&err);
    json_decref(req);
}

static void messages(const char *req_json, ah_mock_reply_t *r)
{
    json_t *req = parse(req_json);
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_mock_messages(req, r, &err);
    if (rc)
        fail_msg("ah_mock_messages: %d %s", rc, err.data ? err.data : "");
    ah_buf_free(&err);
    json_decref(req);
}

#define TOOLS_WT                                                                                   \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{}}}" \
    ","                                                                                            \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]"

static void test_echo(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat("{\"messages\":[{\"role\":\"system\",\"content\":\"be nice\"},"
         "{\"role\":\"user\",\"content\":\"first\"},{\"role\":\"assistant\",\"content\":\"x\"},"
         "{\"role\":\"user\",\"content\":\"hello world\"}]}",
         &r);
    assert_string_equal(r.text, "echo: hello world");
    assert_int_equal(r.text_len, 17);
    assert_int_equal(r.n_calls, 0);
    assert_int_equal(r.finish, AH_MOCK_FINISH_STOP);
    ah_mock_reply_free(&r);

    /* Content parts: text parts joined by "\n", images ignored. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}},"
         "{\"type\":\"text\",\"text\":\"b\"}]}]}",
         &r);
    assert_string_equal(r.text, "echo: a\nb");
    ah_mock_reply_free(&r);

    /* The last user message counts even when an assistant turn follows. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
         "{\"role\":\"assistant\",\"content\":\"a\"}]}",
         &r);
    assert_string_equal(r.text, "echo: q");
    ah_mock_reply_free(&r);
}

static void test_bad_requests(void **st)
{
    (void)st;
    const char *bad[] = {"[]",
                         "{}",
                         "{\"messages\":[]}",
                         "{\"messages\":\"hi\"}",
                         "{\"messages\":[{\"content\":\"no role\"}]}",
                         "{\"messages\":[1]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *req = parse(bad[i]);
        ah_buf_t err = AH_BUF_INIT;
        ah_mock_reply_t r;
        assert_int_equal(ah_mock_chat(req, &r, &err), -EINVAL);
        assert_non_null(err.data);
        assert_non_null(strstr(err.data, i == 0 ? "JSON object" : "messages"));
        assert_null(r.text);
        assert_int_equal(ah_mock_messages(req, &r, NULL), -EINVAL);
        ah_buf_free(&err);
        json_decref(req);
    }
}

static void test_tool_call_single(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat("{\"messages\":[{\"role\":\"user\",\"content\":"
         "\"please call_tool get_weather {\\\"city\\\": \\\"Paris\\\", \\\"n\\\": [1, 2]} now\"}],"
         " " TOOLS_WT "}",
         &r);
    assert_null(r.text);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].id, "call_1");
    assert_string_equal(r.calls[0].name, "get_weather");
    assert_string_equal(r.calls[0].arguments, "{\"city\":\"Paris\",\"n\":[1,2]}");
    assert_int_equal(r.finish, AH_MOCK_FINISH_TOOL_CALLS);
    /* name (11) + arguments (26) = 37 characters = 10 tokens */
    assert_int_equal(r.completion_tokens, 10);
    ah_mock_reply_free(&r);
}

static void test_tool_call_parallel(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat("{\"messages\":[{\"role\":\"user\",\"content\":"
         "\"call_tool get_time and call_tool get_weather {\\\"city\\\":\\\"Oslo\\\"} "
         "and call_tool get_time {\\\"tz\\\":\\\"UTC\\\"}\"}], " TOOLS_WT "}",
         &r);
    assert_int_equal(r.n_calls, 3);
    assert_string_equal(r.calls[0].id, "call_1");
    assert_string_equal(r.calls[0].name, "get_time");
    assert_string_equal(r.calls[0].arguments, "{}");
    assert_string_equal(r.calls[1].id, "call_2");
    assert_string_equal(r.calls[1].name, "get_weather");
    assert_string_equal(r.calls[1].arguments, "{\"city\":\"Oslo\"}");
    assert_string_equal(r.calls[2].id, "call_3");
    assert_string_equal(r.calls[2].arguments, "{\"tz\":\"UTC\"}");
    ah_mock_reply_free(&r);

    /* Ids continue after the calls already in the conversation (unique across turns). */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"call_tool get_time\"},"
         "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
         "\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},"
         "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"noon\"},"
         "{\"role\":\"assistant\",\"content\":\"it is noon\"},"
         "{\"role\":\"user\",\"content\":\"call_tool get_time again\"}], " TOOLS_WT "}",
         &r);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].id, "call_2");
    ah_mock_reply_free(&r);
}

static void test_tool_not_offered(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    /* No tools at all. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"call_tool get_time\"}]}", &r);
    assert_string_equal(r.text, "echo: call_tool get_time");
    ah_mock_reply_free(&r);
    /* A tool the request does not offer, a phrase glued to a word, bad JSON args. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":"
         "\"call_tool delete_all {} xcall_tool get_time call_tool get_weather {bad\"}], " TOOLS_WT
         "}",
         &r);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.text, "echo: call_tool delete_all {} xcall_tool get_time call_tool "
                                "get_weather {bad");
    ah_mock_reply_free(&r);
    /* Only the offered one of two phrases is called. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":"
         "\"call_tool nope {} call_tool get_time\"}], " TOOLS_WT "}",
         &r);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].name, "get_time");
    assert_string_equal(r.calls[0].id, "call_1");
    ah_mock_reply_free(&r);
    /* tool_choice "none" forbids calls. */
    chat("{\"tool_choice\":\"none\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"call_tool get_time\"}], " TOOLS_WT "}",
         &r);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.text, "echo: call_tool get_time");
    ah_mock_reply_free(&r);
}

static void test_tool_result(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"call_tool get_time\"},"
         "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
         "\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},"
         "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"12:00\"}], " TOOLS_WT "}",
         &r);
    assert_string_equal(r.text, "tool said: 12:00");
    assert_int_equal(r.finish, AH_MOCK_FINISH_STOP);
    ah_mock_reply_free(&r);

    /* Parallel results are joined in order; parts content works too. */
    chat("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
         "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"A\"},"
         "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":\"text\","
         "\"text\":\"B\"}]}]}",
         &r);
    assert_string_equal(r.text, "tool said: A | B");
    ah_mock_reply_free(&r);
}

static void test_tokens(void **st)
{
    (void)st;
    assert_int_equal(ah_mock_tokens("", 0), 0);
    assert_int_equal(ah_mock_tokens("abcd", 4), 1);
    assert_int_equal(ah_mock_tokens("abcde", 5), 2);
    /* Characters, not bytes: 4 two-byte characters are one token. */
    assert_int_equal(ah_mock_tokens("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8), 1);

    ah_mock_reply_t r;
    /* prompt: "sys" (3) + "hello world" (11) = 14 chars -> 4 tokens; answer 17 chars -> 5. */
    chat("{\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},"
         "{\"role\":\"user\",\"content\":\"hello world\"}]}",
         &r);
    assert_int_equal(r.prompt_tokens, 4);
    assert_int_equal(r.completion_tokens, 5);
    ah_mock_reply_free(&r);

    /* The tools' compact JSON counts in the prompt. */
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
    char req[512];
    snprintf(req, sizeof(req),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":%s}", tools);
    chat(req, &r);
    assert_int_equal(r.prompt_tokens, (long)((2 + strlen(tools) + 3) / 4));
    ah_mock_reply_free(&r);

    /* max_tokens cuts a text answer: finish "length". */
    chat("{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hello world\"}]}", &r);
    assert_string_equal(r.text, "echo: he");
    assert_int_equal(r.completion_tokens, 2);
    assert_int_equal(r.finish, AH_MOCK_FINISH_LENGTH);
    ah_mock_reply_free(&r);
    chat("{\"max_completion_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         &r);
    assert_int_equal(r.finish, AH_MOCK_FINISH_STOP);
    ah_mock_reply_free(&r);
}

static void test_opts_parse(void **st)
{
    (void)st;
    ah_mock_opts_t o;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_mock_opts_parse("echo", &o, &err), 0);
    assert_string_equal(o.model, "echo");
    assert_int_equal(o.status, 0);
    assert_int_equal(o.retry_after_s, -1);
    assert_int_equal(o.retry_after_ms, -1);
    assert_int_equal(o.drop_after, -1);
    assert_false(o.malformed);

    assert_int_equal(ah_mock_opts_parse("gpt-test?status=429&retry_after=1&fail_times=2", &o, &err),
                     0);
    assert_string_equal(o.model, "gpt-test");
    assert_int_equal(o.status, 429);
    assert_int_equal(o.retry_after_s, 1);
    assert_int_equal(o.fail_times, 2);

    assert_int_equal(
        ah_mock_opts_parse("x?ttft_ms=50&token_ms=5&latency_ms=7&retry_after_ms=20", &o, &err), 0);
    assert_int_equal(o.ttft_ms, 50);
    assert_int_equal(o.token_ms, 5);
    assert_int_equal(o.latency_ms, 7);
    assert_int_equal(o.retry_after_ms, 20);

    assert_int_equal(ah_mock_opts_parse("?drop_after=3", &o, &err), 0);
    assert_string_equal(o.model, "");
    assert_int_equal(o.drop_after, 3);
    assert_int_equal(ah_mock_opts_parse("?malformed=1&", &o, &err), 0);
    assert_true(o.malformed);
    /* fail_times alone fails with 500. */
    assert_int_equal(ah_mock_opts_parse("m?fail_times=1", &o, &err), 0);
    assert_int_equal(o.status, 500);
    assert_int_equal(ah_mock_opts_parse(NULL, &o, &err), 0);

    /* Errors name the option. */
    assert_int_equal(ah_mock_opts_parse("x?status=429&colour=red", &o, &err), -EINVAL);
    assert_non_null(strstr(err.data, "unknown mock option \"colour\""));
    assert_non_null(strstr(err.data, "known: status"));
    const char *bad[] = {
        "x?status=200",  "x?status=abc",          "x?status=", "x?status", "x?ttft_ms=-1",
        "x?malformed=2", "x?token_ms=99999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_buf_reset(&err);
        assert_int_equal(ah_mock_opts_parse(bad[i], &o, &err), -EINVAL);
        assert_non_null(strstr(err.data, "mock option"));
    }
    char longname[AH_MOCK_MODEL_MAX + 8];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(ah_mock_opts_parse(longname, &o, NULL), -EINVAL);
    ah_buf_free(&err);
}

static char finish_buf[32];

/* Concatenates the content deltas of chunks and checks their common shape. */
static void reassemble(const ah_mock_stream_t *s, ah_buf_t *content, ah_buf_t *args,
                       const char **finish, json_t **usage)
{
    *finish = NULL;
    *usage = NULL;
    for (size_t i = 0; i < s->n; i++) {
        assert_null(s->ev[i].name);
        json_t *c = parse(s->ev[i].data);
        assert_string_equal(json_string_value(json_object_get(c, "object")),
                            "chat.completion.chunk");
        assert_string_equal(json_string_value(json_object_get(c, "model")), "m1");
        assert_int_equal(json_integer_value(json_object_get(c, "created")), 1700000000);
        json_t *choices = json_object_get(c, "choices");
        if (json_array_size(choices) == 0) {
            assert_int_equal(i, s->n - 1); /* the usage chunk is last */
            *usage = json_incref(json_object_get(c, "usage"));
        } else {
            json_t *ch = json_array_get(choices, 0);
            json_t *d = json_object_get(ch, "delta");
            const char *t = json_string_value(json_object_get(d, "content"));
            if (t)
                ah_buf_puts(content, t);
            json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
            const char *a =
                json_string_value(json_object_get(json_object_get(tc, "function"), "arguments"));
            if (a)
                ah_buf_puts(args, a);
            const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
            if (fr) {
                assert_null(*finish); /* only one chunk has a finish_reason */
                snprintf(finish_buf, sizeof(finish_buf), "%s", fr);
                *finish = finish_buf;
            }
        }
        json_decref(c);
    }
}

static void test_chat_stream(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo w\xc3\xb6rld, streaming\"}]}",
        &r);
    json_t *full = ah_mock_chat_completion(&r, "m1", 1700000000);
    assert_non_null(full);
    json_t *msg = json_object_get(json_array_get(json_object_get(full, "choices"), 0), "message");
    const char *want = json_string_value(json_object_get(msg, "content"));
    assert_string_equal(want, r.text);
    assert_string_equal(json_string_value(json_object_get(full, "system_fingerprint")), "fp_mock");
    assert_int_equal(strncmp(json_string_value(json_object_get(full, "id")), "chatcmpl-mock-", 14),
                     0);
    json_t *u = json_object_get(full, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     r.prompt_tokens + r.completion_tokens);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"),
                                                        "cached_tokens")),
                     0);

    ah_mock_stream_t s;
    assert_int_equal(ah_mock_chat_chunks(&r, "m1", 1700000000, true, &s), 0);
    /* role chunk + one chunk per token + finish chunk + usage chunk */
    assert_int_equal(s.n, (size_t)(1 + r.completion_tokens + 1 + 1));
    size_t tokens = 0;
    for (size_t i = 0; i < s.n; i++)
        tokens += s.ev[i].token;
    assert_int_equal(tokens, r.completion_tokens);
    ah_buf_t content = AH_BUF_INIT, args = AH_BUF_INIT;
    const char *finish;
    json_t *usage;
    reassemble(&s, &content, &args, &finish, &usage);
    assert_string_equal(content.data, want);
    assert_string_equal(finish, "stop");
    assert_non_null(usage);
    assert_true(json_equal(usage, u));
    /* Every chunk has the completion's id. */
    json_t *c0 = parse(s.ev[0].data);
    assert_string_equal(json_string_value(json_object_get(c0, "id")),
                        json_string_value(json_object_get(full, "id")));
    assert_true(json_is_null(json_object_get(c0, "usage")));
    json_decref(c0);
    json_decref(usage);
    ah_mock_stream_free(&s);

    /* Without include_usage: no usage chunk, no usage key. */
    assert_int_equal(ah_mock_chat_chunks(&r, "m1", 1700000000, false, &s), 0);
    assert_int_equal(s.n, (size_t)(1 + r.completion_tokens + 1));
    json_t *last = parse(s.ev[s.n - 1].data);
    assert_null(json_object_get(last, "usage"));
    json_decref(last);
    ah_mock_stream_free(&s);
    ah_buf_free(&content);
    ah_buf_free(&args);
    json_decref(full);
    ah_mock_reply_free(&r);
}

static void test_chat_stream_tool_calls(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    chat("{\"messages\":[{\"role\":\"user\",\"content\":"
         "\"call_tool get_weather {\\\"city\\\":\\\"Z\xc3\xbcrich\\\"}\"}], " TOOLS_WT "}",
         &r);
    assert_int_equal(r.n_calls, 1);
    json_t *full = ah_mock_chat_completion(&r, "m1", 1700000000);
    json_t *choice = json_array_get(json_object_get(full, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")), "tool_calls");
    json_t *msg = json_object_get(choice, "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "id")), "call_1");
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");

    ah_mock_stream_t s;
    assert_int_equal(ah_mock_chat_chunks(&r, "m1", 1700000000, false, &s), 0);
    ah_buf_t content = AH_BUF_INIT, args = AH_BUF_INIT;
    const char *finish;
    json_t *usage;
    reassemble(&s, &content, &args, &finish, &usage);
    assert_null(content.data);
    assert_string_equal(args.data, r.calls[0].arguments);
    assert_string_equal(finish, "tool_calls");
    assert_null(usage);
    /* The first tool chunk carries id, type and name. */
    json_t *c1 = parse(s.ev[1].data);
    json_t *d = json_array_get(
        json_object_get(json_object_get(json_array_get(json_object_get(c1, "choices"), 0), "delta"),
                        "tool_calls"),
        0);
    assert_string_equal(json_string_value(json_object_get(d, "id")), "call_1");
    assert_int_equal(json_integer_value(json_object_get(d, "index")), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "function"), "name")),
                        "get_weather");
    json_decref(c1);
    ah_mock_stream_free(&s);
    ah_buf_free(&content);
    ah_buf_free(&args);
    json_decref(full);
    ah_mock_reply_free(&r);
}

#define ATOOLS                                                                                     \
    "\"tools\":[{\"name\":\"get_weather\",\"description\":\"w\",\"input_schema\":{\"type\":"       \
    "\"object\"}}]"

static void test_anthropic(void **st)
{
    (void)st;
    ah_mock_reply_t r;
    messages("{\"model\":\"claude\",\"max_tokens\":100,\"system\":\"sys\",\"messages\":["
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello\"}]}]}",
             &r);
    assert_string_equal(r.text, "echo: hello");
    assert_int_equal(r.prompt_tokens, 2); /* "sys" + "hello" = 8 chars */
    json_t *m = ah_mock_message(&r, "claude");
    assert_string_equal(json_string_value(json_object_get(m, "type")), "message");
    assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(m, "stop_reason")), "end_turn");
    assert_int_equal(strncmp(json_string_value(json_object_get(m, "id")), "msg_mock_", 9), 0);
    json_t *blk = json_array_get(json_object_get(m, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(blk, "type")), "text");
    assert_string_equal(json_string_value(json_object_get(blk, "text")), "echo: hello");
    json_t *u = json_object_get(m, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 2);
    assert_int_equal(json_integer_value(json_object_get(u, "output_tokens")), 3);
    json_decref(m);

    /* Stream: event names match data types; text deltas rebuild the text. */
    ah_mock_stream_t s;
    assert_int_equal(ah_mock_message_events(&r, "claude", &s), 0);
    const char *order[] = {"message_start",       "ping",
                           "content_block_start", "content_block_delta",
                           "content_block_delta", "content_block_delta",
                           "content_block_stop",  "message_delta",
                           "message_stop"};
    assert_int_equal(s.n, sizeof(order) / sizeof(order[0]));
    ah_buf_t text = AH_BUF_INIT;
    for (size_t i = 0; i < s.n; i++) {
        assert_string_equal(s.ev[i].name, order[i]);
        json_t *e = parse(s.ev[i].data);
        assert_string_equal(json_string_value(json_object_get(e, "type")), s.ev[i].name);
        if (strcmp(s.ev[i].name, "content_block_delta") == 0) {
            json_t *d = json_object_get(e, "delta");
            assert_string_equal(json_string_value(json_object_get(d, "type")), "text_delta");
            ah_buf_puts(&text, json_string_value(json_object_get(d, "text")));
        }
        if (strcmp(s.ev[i].name, "message_delta") == 0) {
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(e, "delta"), "stop_reason")),
                "end_turn");
            assert_int_equal(
                json_integer_value(json_object_get(json_object_get(e, "usage"), "output_tokens")),
                3);
        }
        if (i == 0) {
            json_t *msg = json_object_get(e, "message");
            assert_int_equal(json_array_size(json_object_get(msg, "content")), 0);
            assert_true(json_is_null(json_object_get(msg, "stop_reason")));
        }
        json_decref(e);
    }
    assert_string_equal(text.data, "echo: hello");
    ah_buf_free(&text);
    ah_mock_stream_free(&s);
    ah_mock_reply_free(&r);

    /* tool_use, then tool_result. */
    messages("{\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"call_tool get_weather {\\\"city\\\":\\\"Rome\\\"}\"}], " ATOOLS "}",
             &r);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].id, "toolu_1");
    assert_int_equal(r.finish, AH_MOCK_FINISH_TOOL_CALLS);
    m = ah_mock_message(&r, "claude");
    assert_string_equal(json_string_value(json_object_get(m, "stop_reason")), "tool_use");
    blk = json_array_get(json_object_get(m, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(blk, "type")), "tool_use");
    assert_string_equal(json_string_value(json_object_get(blk, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(json_object_get(blk, "input"), "city")),
                        "Rome");
    json_t *input = json_incref(json_object_get(blk, "input"));
    json_decref(m);
    assert_int_equal(ah_mock_message_events(&r, "claude", &s), 0);
    ah_buf_t pj = AH_BUF_INIT;
    for (size_t i = 0; i < s.n; i++) {
        json_t *e = parse(s.ev[i].data);
        if (strcmp(s.ev[i].name, "content_block_start") == 0) {
            json_t *cb = json_object_get(e, "content_block");
            assert_string_equal(json_string_value(json_object_get(cb, "type")), "tool_use");
            assert_string_equal(json_string_value(json_object_get(cb, "id")), "toolu_1");
            assert_int_equal(json_object_size(json_object_get(cb, "input")), 0);
        }
        if (strcmp(s.ev[i].name, "content_block_delta") == 0) {
            json_t *d = json_object_get(e, "delta");
            assert_string_equal(json_string_value(json_object_get(d, "type")), "input_json_delta");
            ah_buf_puts(&pj, json_string_value(json_object_get(d, "partial_json")));
        }
        json_decref(e);
    }
    json_t *rebuilt = parse(pj.data);
    assert_true(json_equal(rebuilt, input));
    json_decref(rebuilt);
    json_decref(input);
    ah_buf_free(&pj);
    ah_mock_stream_free(&s);
    ah_mock_reply_free(&r);

    messages(
        "{\"max_tokens\":100,\"messages\":["
        "{\"role\":\"user\",\"content\":\"call_tool get_weather {}\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\","
        "\"name\":\"get_weather\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\","
        "\"content\":[{\"type\":\"text\",\"text\":\"sunny\"}]}]}], " ATOOLS "}",
        &r);
    assert_string_equal(r.text, "tool said: sunny");
    ah_mock_reply_free(&r);

    /* A second call in the conversation gets the next id; max_tokens -> "max_tokens". */
    messages("{\"max_tokens\":1,\"messages\":["
             "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\","
             "\"name\":\"get_weather\",\"input\":{}}]},"
             "{\"role\":\"user\",\"content\":\"more text here\"}]}",
             &r);
    assert_string_equal(r.text, "echo");
    assert_int_equal(r.finish, AH_MOCK_FINISH_LENGTH);
    m = ah_mock_message(&r, "claude");
    assert_string_equal(json_string_value(json_object_get(m, "stop_reason")), "max_tokens");
    json_decref(m);
    ah_mock_reply_free(&r);

    json_t *e = ah_mock_anthropic_error(429, "slow down");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "error");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "type")),
                        "rate_limit_error");
    json_decref(e);
    assert_string_equal(ah_mock_anthropic_error_type(529), "overloaded_error");
    assert_string_equal(ah_mock_anthropic_error_type(500), "api_error");
}

static json_t *embed(const char *req_json, ah_buf_t *err)
{
    json_t *req = parse(req_json);
    json_t *out = ah_mock_embeddings(req, "e1", err);
    json_decref(req);
    return out;
}

static void test_embeddings(void **st)
{
    (void)st;
    ah_buf_t err = AH_BUF_INIT;
    json_t *a = embed("{\"input\":[\"alpha\",\"beta\",\"alpha\"]}", &err);
    assert_non_null(a);
    json_t *b = embed("{\"input\":\"alpha\"}", &err);
    json_t *data = json_object_get(a, "data");
    assert_int_equal(json_array_size(data), 3);
    json_t *v0 = json_object_get(json_array_get(data, 0), "embedding");
    json_t *v1 = json_object_get(json_array_get(data, 1), "embedding");
    json_t *v2 = json_object_get(json_array_get(data, 2), "embedding");
    assert_int_equal(json_array_size(v0), AH_MOCK_EMBED_DIMS);
    assert_true(json_equal(v0, v2));
    assert_false(json_equal(v0, v1));
    assert_true(json_equal(
        v0, json_object_get(json_array_get(json_object_get(b, "data"), 0), "embedding")));
    double norm = 0;
    for (size_t i = 0; i < json_array_size(v0); i++)
        norm += pow(json_real_value(json_array_get(v0, i)), 2);
    assert_true(fabs(norm - 1.0) < 1e-5);
    json_t *u = json_object_get(a, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 2 + 1 + 2);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 5);
    assert_string_equal(json_string_value(json_object_get(a, "model")), "e1");
    assert_string_equal(json_string_value(json_object_get(a, "object")), "list");

    /* base64: the same floats, little-endian float32. */
    json_t *c = embed("{\"input\":\"alpha\",\"encoding_format\":\"base64\"}", &err);
    const char *b64 = json_string_value(
        json_object_get(json_array_get(json_object_get(c, "data"), 0), "embedding"));
    assert_non_null(b64);
    unsigned char raw[AH_MOCK_EMBED_DIMS * 4 + 4];
    int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)strlen(b64));
    assert_true(n >= AH_MOCK_EMBED_DIMS * 4);
    for (size_t i = 0; i < AH_MOCK_EMBED_DIMS; i++) {
        uint32_t bits = (uint32_t)raw[i * 4] | (uint32_t)raw[i * 4 + 1] << 8 |
                        (uint32_t)raw[i * 4 + 2] << 16 | (uint32_t)raw[i * 4 + 3] << 24;
        float f;
        memcpy(&f, &bits, 4);
        assert_true((double)f == json_real_value(json_array_get(v0, i)));
    }

    /* dimensions, token ids. */
    json_t *d = embed("{\"input\":[[1,2,3],[4]],\"dimensions\":3}", &err);
    json_t *dv = json_object_get(json_array_get(json_object_get(d, "data"), 1), "embedding");
    assert_int_equal(json_array_size(dv), 3);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(d, "usage"), "prompt_tokens")), 4);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);

    const char *bad[] = {"{}",
                         "{\"input\":[]}",
                         "{\"input\":3}",
                         "{\"input\":[\"a\",3]}",
                         "{\"input\":\"a\",\"dimensions\":0}",
                         "{\"input\":\"a\",\"encoding_format\":\"hex\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_buf_reset(&err);
        assert_null(embed(bad[i], &err));
        assert_true(err.len > 0);
    }
    ah_buf_free(&err);
}

static void test_counters(void **st)
{
    (void)st;
    ah_mock_stats_reset();
    ah_mock_opts_t o;
    assert_int_equal(ah_mock_opts_parse("m?status=503&fail_times=2", &o, NULL), 0);
    assert_true(ah_mock_count_request("m?status=503&fail_times=2", &o));
    assert_true(ah_mock_count_request("m?status=503&fail_times=2", &o));
    assert_false(ah_mock_count_request("m?status=503&fail_times=2", &o));
    assert_false(ah_mock_count_request("m?status=503&fail_times=2", &o));
    /* Without fail_times every request fails; without status none does. */
    assert_int_equal(ah_mock_opts_parse("m?status=500", &o, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_true(ah_mock_count_request("m?status=500", &o));
    assert_int_equal(ah_mock_opts_parse("echo", &o, NULL), 0);
    assert_false(ah_mock_count_request("echo", &o));
    ah_mock_count_abort("echo");

    json_t *s = ah_mock_stats();
    assert_int_equal(json_integer_value(json_object_get(s, "requests")), 8);
    assert_int_equal(json_integer_value(json_object_get(s, "aborted")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "failed")), 5);
    json_t *m = json_object_get(json_object_get(s, "by_model"), "m?status=503&fail_times=2");
    assert_int_equal(json_integer_value(json_object_get(m, "requests")), 4);
    assert_int_equal(json_integer_value(json_object_get(m, "failed")), 2);
    json_t *e = json_object_get(json_object_get(s, "by_model"), "echo");
    assert_int_equal(json_integer_value(json_object_get(e, "aborted")), 1);
    json_decref(s);
    ah_mock_stats_reset();
    s = ah_mock_stats();
    assert_int_equal(json_integer_value(json_object_get(s, "requests")), 0);
    assert_int_equal(json_object_size(json_object_get(s, "by_model")), 0);
    json_decref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_tool_call_single),
        cmocka_unit_test(test_tool_call_parallel),
        cmocka_unit_test(test_tool_not_offered),
        cmocka_unit_test(test_tool_result),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_opts_parse),
        cmocka_unit_test(test_chat_stream),
        cmocka_unit_test(test_chat_stream_tool_calls),
        cmocka_unit_test(test_anthropic),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
