/*
 * test_anthropic.c - OpenAI <-> Anthropic Messages translation
 * (gateway/anthropic.h): requests, answers, errors and streams. JSON is
 * compared parsed (json_equal), never as text. Fixture JSON is written with
 * ' for " to stay readable; js()/qs() swap them back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "gateway/anthropic.h"
#include "http/sse_parser.h"

static char *qs(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++)
        if (*p == '\'')
            *p = '"';
    return r;
}

static json_t *js(const char *s)
{
    char *t = qs(s);
    json_error_t je;
    json_t *j = json_loads(t, 0, &je);
    if (!j)
        fail_msg("bad fixture JSON: %s: %s", je.text, t);
    free(t);
    return j;
}

static void assert_json(const json_t *got, const char *want_q)
{
    json_t *want = js(want_q);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
        char *w = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT);
        print_error("got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* Translates an OpenAI request (quoted fixture); asserts success and compares. */
static void req_ok(const char *openai_q, const char *want_q)
{
    json_t *in = js(openai_q), *out = NULL;
    ah_buf_t err = AH_BUF_INIT;
    const char *param = "unset";
    int rc = ah_anthropic_request(in, "claude-x", &out, &err, &param);
    if (rc)
        fail_msg("rc %d: %s", rc, err.data ? err.data : "");
    assert_json(out, want_q);
    json_decref(out);
    json_decref(in);
    ah_buf_free(&err);
}

/* Asserts the request is refused with 400 naming param, and err containing needle. */
static void req_bad(const char *openai_q, const char *param_want, const char *needle)
{
    json_t *in = js(openai_q), *out = (json_t *)1;
    ah_buf_t err = AH_BUF_INIT;
    const char *param = "unset";
    assert_int_equal(ah_anthropic_request(in, "claude-x", &out, &err, &param), -EINVAL);
    assert_null(out);
    if (param_want) {
        assert_non_null(param);
        assert_string_equal(param, param_want);
    }
    assert_non_null(err.data);
    if (!strstr(err.data, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err.data, needle);
    json_decref(in);
    ah_buf_free(&err);
}

/* ---- request ---- */

static void test_request_basic(void **st)
{
    (void)st;
    req_ok("{'model':'fast','messages':[{'role':'system','content':'Be brief.'},"
           "{'role':'developer','content':[{'type':'text','text':'Use metric units.'}]},"
           "{'role':'user','content':'Hi','name':'bob'}],"
           "'temperature':1.5,'top_p':0.9,'stop':'END','stream':true,"
           "'stream_options':{'include_usage':true},'metadata':{'user':'u-42'},"
           "'seed':7,'presence_penalty':0.5,'frequency_penalty':0.1,'logit_bias':{'50256':-100},"
           "'store':false,'service_tier':'auto','user':'ignored-when-metadata-user'}",
           "{'model':'claude-x','max_tokens':4096,'temperature':1.0,'top_p':0.9,"
           "'stop_sequences':['END'],'stream':true,'metadata':{'user_id':'u-42'},"
           "'system':'Be brief.\\nUse metric units.',"
           "'messages':[{'role':'user','content':[{'type':'text','text':'Hi'}]}]}");
    /* max_completion_tokens wins over max_tokens; stop arrays; user -> metadata.user_id. */
    req_ok("{'messages':[{'role':'user','content':'Hi'}],'max_tokens':10,"
           "'max_completion_tokens':20,'stop':['a','','b'],'temperature':0.2,'user':'end-user',"
           "'stream':false,'n':1,'logprobs':false,'response_format':{'type':'text'}}",
           "{'model':'claude-x','max_tokens':20,'temperature':0.2,'stop_sequences':['a','b'],"
           "'metadata':{'user_id':'end-user'},"
           "'messages':[{'role':'user','content':[{'type':'text','text':'Hi'}]}]}");
    req_ok("{'messages':[{'role':'user','content':'Hi'}],'max_tokens':10}",
           "{'model':'claude-x','max_tokens':10,"
           "'messages':[{'role':'user','content':[{'type':'text','text':'Hi'}]}]}");
}

static void test_request_content_parts(void **st)
{
    (void)st;
    req_ok("{'messages':[{'role':'user','content':["
           "{'type':'text','text':'What is this?'},{'type':'text','text':''},"
           "{'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo=',"
           "'detail':'high'}},"
           "{'type':'image_url','image_url':{'url':'https://example.com/cat.jpg'}},"
           "{'type':'file','file':{'filename':'a.pdf','file_data':"
           "'data:application/pdf;base64,JVBERi0='}}]}]}",
           "{'model':'claude-x','max_tokens':4096,'messages':[{'role':'user','content':["
           "{'type':'text','text':'What is this?'},"
           "{'type':'image','source':{'type':'base64','media_type':'image/png',"
           "'data':'iVBORw0KGgo='}},"
           "{'type':'image','source':{'type':'url','url':'https://example.com/cat.jpg'}},"
           "{'type':'document','source':{'type':'base64','media_type':'application/pdf',"
           "'data':'JVBERi0='}}]}]}");
    /* Empty content is dropped, so the empty user turn disappears and the two
     * assistant turns around it merge. */
    req_ok("{'messages':[{'role':'user','content':'a'},{'role':'assistant','content':'b'},"
           "{'role':'user','content':''},{'role':'assistant','content':[{'type':'text','text':'c'},"
           "{'type':'refusal','refusal':'no'}]}]}",
           "{'model':'claude-x','max_tokens':4096,'messages':["
           "{'role':'user','content':[{'type':'text','text':'a'}]},"
           "{'role':'assistant','content':[{'type':'text','text':'b'},{'type':'text','text':'c'},"
           "{'type':'text','text':'no'}]}]}");
}

/* A full agent loop: tools offered, two parallel calls, their results, a follow-up. */
static void test_request_tool_conversation(void **st)
{
    (void)st;
    req_ok(
        "{'model':'smart','messages':["
        "{'role':'system','content':'You are a weather bot.'},"
        "{'role':'user','content':'Weather in Paris and the time there?'},"
        "{'role':'assistant','content':'Let me check.','tool_calls':["
        "{'id':'toolu_1','type':'function','function':{'name':'get_weather',"
        "'arguments':'{\\'city\\':\\'Paris\\'}'}},"
        "{'id':'toolu_2','type':'function','function':{'name':'get_time','arguments':''}}]},"
        "{'role':'tool','tool_call_id':'toolu_1','content':'18C, cloudy'},"
        "{'role':'tool','tool_call_id':'toolu_2','content':[{'type':'text','text':'14:05'}]},"
        "{'role':'user','content':'Thanks. Tomorrow?'},"
        "{'role':'assistant','content':null,'tool_calls':[{'id':'toolu_3','type':'function',"
        "'function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\',\\'day\\':1}'}}]},"
        "{'role':'tool','tool_call_id':'toolu_3','content':''}],"
        "'tools':[{'type':'function','function':{'name':'get_weather',"
        "'description':'Weather for a city','parameters':{'type':'object','properties':"
        "{'city':{'type':'string'},'day':{'type':'integer'}},'required':['city']},'strict':true}},"
        "{'type':'function','function':{'name':'get_time'}}],"
        "'tool_choice':'auto','parallel_tool_calls':true}",
        "{'model':'claude-x','max_tokens':4096,'system':'You are a weather bot.','messages':["
        "{'role':'user','content':[{'type':'text','text':'Weather in Paris and the time there?'}]},"
        "{'role':'assistant','content':[{'type':'text','text':'Let me check.'},"
        "{'type':'tool_use','id':'toolu_1','name':'get_weather','input':{'city':'Paris'}},"
        "{'type':'tool_use','id':'toolu_2','name':'get_time','input':{}}]},"
        "{'role':'user','content':["
        "{'type':'tool_result','tool_use_id':'toolu_1','content':'18C, cloudy'},"
        "{'type':'tool_result','tool_use_id':'toolu_2','content':[{'type':'text','text':'14:05'}]},"
        "{'type':'text','text':'Thanks. Tomorrow?'}]},"
        "{'role':'assistant','content':[{'type':'tool_use','id':'toolu_3','name':'get_weather',"
        "'input':{'city':'Paris','day':1}}]},"
        "{'role':'user','content':[{'type':'tool_result','tool_use_id':'toolu_3'}]}],"
        "'tools':[{'name':'get_weather','description':'Weather for a city','input_schema':"
        "{'type':'object','properties':{'city':{'type':'string'},'day':{'type':'integer'}},"
        "'required':['city']}},"
        "{'name':'get_time','input_schema':{'type':'object'}}],"
        "'tool_choice':{'type':'auto'}}");
}

static void test_request_merge_order(void **st)
{
    (void)st;
    /* A user message before tool results in the same turn: tool_result blocks go first. */
    req_ok("{'messages':[{'role':'assistant','tool_calls':[{'id':'t1','function':{'name':'f',"
           "'arguments':'{}'}}]},{'role':'user','content':'note'},"
           "{'role':'tool','tool_call_id':'t1','content':'r1'},{'role':'user','content':'more'}]}",
           "{'model':'claude-x','max_tokens':4096,'messages':["
           "{'role':'assistant','content':[{'type':'tool_use','id':'t1','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'t1','content':'r1'},"
           "{'type':'text','text':'note'},{'type':'text','text':'more'}]}]}");
}

static void test_request_tool_choice(void **st)
{
    (void)st;
    const char *tools = "'tools':[{'type':'function','function':{'name':'f','parameters':{}}}]";
    const char *cases[][2] = {
        {"'tool_choice':'auto'", "{'type':'auto'}"},
        {"'tool_choice':'required'", "{'type':'any'}"},
        {"'tool_choice':'none'", "{'type':'none'}"},
        {"'tool_choice':{'type':'function','function':{'name':'f'}}", "{'type':'tool','name':'f'}"},
        {"'parallel_tool_calls':false", "{'type':'auto','disable_parallel_tool_use':true}"},
        {"'tool_choice':'required','parallel_tool_calls':false",
         "{'type':'any','disable_parallel_tool_use':true}"},
        {"'tool_choice':{'type':'function','function':{'name':'f'}},'parallel_tool_calls':false",
         "{'type':'tool','name':'f','disable_parallel_tool_use':true}"},
        {"'tool_choice':'none','parallel_tool_calls':false", "{'type':'none'}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[512], want[512];
        snprintf(in, sizeof(in), "{'messages':[{'role':'user','content':'x'}],%s,%s}", tools,
                 cases[i][0]);
        snprintf(want, sizeof(want),
                 "{'model':'claude-x','max_tokens':4096,'messages':[{'role':'user','content':"
                 "[{'type':'text','text':'x'}]}],'tools':[{'name':'f','input_schema':{'type':"
                 "'object'}}],'tool_choice':%s}",
                 cases[i][1]);
        req_ok(in, want);
    }
    /* No tool_choice at all: none sent (Anthropic's default is auto). */
    req_ok("{'messages':[{'role':'user','content':'x'}],'tools':[],'tool_choice':'auto'}",
           "{'model':'claude-x','max_tokens':4096,'messages':[{'role':'user','content':"
           "[{'type':'text','text':'x'}]}]}");
}

static void test_request_errors(void **st)
{
    (void)st;
    req_bad("{'messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':["
            "{'id':'t','type':'function','function':{'name':'f','arguments':'{oops'}}]}]}",
            "messages[1].tool_calls[0].function.arguments", "is not valid JSON");
    req_bad("{'messages':[{'role':'assistant','tool_calls':[{'id':'t','function':{'name':'f',"
            "'arguments':'[1]'}}]}]}",
            "messages[0].tool_calls[0].function.arguments", "must be a JSON object");
    req_bad("{'messages':[{'role':'assistant','tool_calls':[{'function':{'name':'f'}}]}]}",
            "messages[0].tool_calls[0]", "id");
    req_bad("{'messages':[{'role':'user','content':'x'}],'n':2}", "n", "n=1");
    req_bad("{'messages':[{'role':'user','content':'x'}],'logprobs':true}", "logprobs", "");
    req_bad("{'messages':[{'role':'user','content':'x'}],'response_format':{'type':'json_schema',"
            "'json_schema':{}}}",
            "response_format", "json_schema");
    req_bad("{'messages':[{'role':'user','content':'x'}],'max_tokens':0}", "max_tokens",
            "positive integer");
    req_bad("{'messages':[{'role':'user','content':'x'}],'temperature':3}", "temperature",
            "0 and 2");
    req_bad("{'messages':[{'role':'user','content':'x'}],'stop':[1]}", "stop", "strings");
    req_bad("{'messages':[{'role':'user','content':'x'}],'tool_choice':'required'}", "tool_choice",
            "requires tools");
    req_bad("{'messages':[{'role':'user','content':'x'}],'tool_choice':'sometimes',"
            "'tools':[{'type':'function','function':{'name':'f'}}]}",
            "tool_choice", "sometimes");
    req_bad("{'messages':[{'role':'user','content':'x'}],'tools':[{'type':'custom',"
            "'custom':{'name':'f'}}]}",
            "tools[0]", "function");
    req_bad("{'messages':[{'role':'wizard','content':'x'}]}", "messages[0].role", "wizard");
    req_bad("{'messages':[{'role':'function','name':'f','content':'x'}]}", "messages[0].role",
            "deprecated");
    req_bad("{'messages':[]}", "messages", "at least one");
    req_bad("{'messages':[{'role':'system','content':'only a system prompt'}]}", "messages",
            "at least one");
    req_bad("{'model':'x'}", "messages", "required");
    req_bad("{'messages':[{'role':'user','content':[{'type':'image_url','image_url':"
            "{'url':'ftp://x/y.png'}}]}]}",
            "messages[0].content[0].image_url.url", "http");
    req_bad("{'messages':[{'role':'user','content':[{'type':'image_url','image_url':"
            "{'url':'data:image/png,abc'}}]}]}",
            "messages[0].content[0].image_url.url", "base64");
    req_bad("{'messages':[{'role':'user','content':[{'type':'input_audio','input_audio':{}}]}]}",
            "messages[0].content[0]", "audio");
    req_bad("{'messages':[{'role':'user','content':[{'type':'file','file':{'file_id':'f-1'}}]}]}",
            "messages[0].content[0].file.file_data", "file_id");
    req_bad("{'messages':[{'role':'tool','content':'x'}]}", "messages[0].tool_call_id",
            "non-empty");
    req_bad("{'messages':[{'role':'system','content':[{'type':'image_url'}]}]}",
            "messages[0].content[0]", "text");
    req_bad("{'messages':[{'role':'user','content':'x'}],'functions':[{'name':'f'}]}", "functions",
            "tools");
    /* Not an object at all. */
    json_t *arr = json_array(), *out = NULL;
    ah_buf_t err = AH_BUF_INIT;
    const char *param = "unset";
    assert_int_equal(ah_anthropic_request(arr, "m", &out, &err, &param), -EINVAL);
    assert_null(param);
    json_decref(arr);
    ah_buf_free(&err);
}

/* ---- response ---- */

/* Translates an Anthropic answer; checks created, drops it, and returns the object. */
static json_t *resp(const char *anthropic_q, ah_llm_usage_t *u)
{
    char *body = qs(anthropic_q);
    ah_buf_t out = AH_BUF_INIT, err = AH_BUF_INIT;
    int rc = ah_anthropic_response(body, strlen(body), "smart", &out, u, &err);
    if (rc)
        fail_msg("rc %d: %s", rc, err.data ? err.data : "");
    json_t *j = json_loadb(out.data, out.len, 0, NULL);
    assert_non_null(j);
    json_int_t created = json_integer_value(json_object_get(j, "created"));
    assert_true(llabs((long long)(created - (json_int_t)time(NULL))) < 5);
    json_object_del(j, "created");
    free(body);
    ah_buf_free(&out);
    ah_buf_free(&err);
    return j;
}

static const char text_message[] =
    "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','type':'message','role':'assistant',"
    "'content':[{'type':'text','text':'Hello'},{'type':'text','text':'!'}],"
    "'model':'claude-sonnet-4-5','stop_reason':'end_turn','stop_sequence':null,"
    "'usage':{'input_tokens':25,'output_tokens':15}}";

static void test_response_text(void **st)
{
    (void)st;
    ah_llm_usage_t u;
    json_t *j = resp(text_message, &u);
    assert_json(j, "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion',"
                   "'model':'smart','choices':[{'index':0,'message':{'role':'assistant',"
                   "'content':'Hello!','refusal':null},'logprobs':null,'finish_reason':'stop'}],"
                   "'usage':{'prompt_tokens':25,'completion_tokens':15,'total_tokens':40,"
                   "'prompt_tokens_details':{'cached_tokens':0}}}");
    json_decref(j);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 25);
    assert_int_equal(u.completion_tokens, 15);
    assert_int_equal(u.cached_tokens, 0);
}

static const char tools_message[] =
    "{'id':'msg_014p7gG3wDgGV9EUtLvnow3U','type':'message','role':'assistant',"
    "'model':'claude-opus-4-6','content':["
    "{'type':'thinking','thinking':'hmm','signature':'sig'},"
    "{'type':'text','text':'Okay, checking the weather for San Francisco, CA:'},"
    "{'type':'tool_use','id':'toolu_01T1x1fJ34qAmk2tNTrN7Up6','name':'get_weather',"
    "'input':{'location':'San Francisco, CA','unit':'fahrenheit'}},"
    "{'type':'tool_use','id':'toolu_02','name':'get_time','input':"
    "{'timezone':'America/Los_Angeles'}},"
    "{'type':'tool_use','id':'toolu_03','name':'ping','input':{}}],"
    "'stop_reason':'tool_use','stop_sequence':null,"
    "'usage':{'input_tokens':472,'cache_creation_input_tokens':100,"
    "'cache_read_input_tokens':2000,'output_tokens':89}}";

static void test_response_tool_use(void **st)
{
    (void)st;
    ah_llm_usage_t u;
    json_t *j = resp(tools_message, &u);
    /* arguments are JSON strings: compare them parsed. */
    json_t *tcs = json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "tool_calls");
    assert_int_equal(json_array_size(tcs), 3);
    const char *want_args[] = {"{'location':'San Francisco, CA','unit':'fahrenheit'}",
                               "{'timezone':'America/Los_Angeles'}", "{}"};
    for (size_t i = 0; i < 3; i++) {
        json_t *fn = json_object_get(json_array_get(tcs, i), "function");
        const char *a = json_string_value(json_object_get(fn, "arguments"));
        assert_non_null(a);
        json_t *parsed = json_loads(a, 0, NULL);
        assert_json(parsed, want_args[i]);
        json_decref(parsed);
        json_object_set_new(fn, "arguments", json_string("<checked>"));
    }
    assert_json(j, "{'id':'msg_014p7gG3wDgGV9EUtLvnow3U','object':'chat.completion',"
                   "'model':'smart','choices':[{'index':0,'message':{'role':'assistant',"
                   "'content':'Okay, checking the weather for San Francisco, CA:','refusal':null,"
                   "'tool_calls':["
                   "{'id':'toolu_01T1x1fJ34qAmk2tNTrN7Up6','type':'function','function':"
                   "{'name':'get_weather','arguments':'<checked>'}},"
                   "{'id':'toolu_02','type':'function','function':{'name':'get_time',"
                   "'arguments':'<checked>'}},"
                   "{'id':'toolu_03','type':'function','function':{'name':'ping',"
                   "'arguments':'<checked>'}}]},"
                   "'logprobs':null,'finish_reason':'tool_calls'}],"
                   "'usage':{'prompt_tokens':2572,'completion_tokens':89,'total_tokens':2661,"
                   "'prompt_tokens_details':{'cached_tokens':2000}}}");
    json_decref(j);
    assert_int_equal(u.prompt_tokens, 2572);
    assert_int_equal(u.cached_tokens, 2000);
    assert_int_equal(u.completion_tokens, 89);
}

static void test_response_finish_and_edge(void **st)
{
    (void)st;
    const char *map[][2] = {{"'end_turn'", "stop"},
                            {"'stop_sequence'", "stop"},
                            {"'max_tokens'", "length"},
                            {"'tool_use'", "tool_calls"},
                            {"'refusal'", "content_filter"},
                            {"'pause_turn'", "stop"},
                            {"'model_context_window_exceeded'", "length"},
                            {"null", "stop"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{'id':'m','type':'message','content':[],'stop_reason':%s}",
                 map[i][0]);
        ah_llm_usage_t u;
        json_t *j = resp(body, &u);
        json_t *c = json_array_get(json_object_get(j, "choices"), 0);
        assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), map[i][1]);
        /* No text block: content is null; no usage in the answer: none reported. */
        assert_true(json_is_null(json_object_get(json_object_get(c, "message"), "content")));
        assert_null(json_object_get(j, "usage"));
        assert_false(u.present);
        json_decref(j);
    }
    /* Malformed answers are -EINVAL with a reason; out stays untouched. */
    const char *bad[] = {"not json", "[1]", "{'type':'message'}", "{'type':'completion'}",
                         "{'type':'error','error':{'type':'api_error','message':'boom'}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *body = qs(bad[i]);
        ah_buf_t out = AH_BUF_INIT, err = AH_BUF_INIT;
        ah_llm_usage_t u = {.present = true};
        assert_int_equal(ah_anthropic_response(body, strlen(body), "m", &out, &u, &err), -EINVAL);
        assert_int_equal(out.len, 0);
        assert_false(u.present);
        assert_true(err.len > 0);
        free(body);
        ah_buf_free(&err);
    }
}

/* ---- errors ---- */

static void err_case(int status, const char *body_q, int want_status, const char *want_q)
{
    char *body = body_q ? qs(body_q) : NULL;
    ah_buf_t out = AH_BUF_INIT;
    assert_int_equal(ah_anthropic_error(status, body, body ? strlen(body) : 0, &out), want_status);
    json_t *j = json_loadb(out.data, out.len, 0, NULL);
    assert_non_null(j);
    assert_json(j, want_q);
    json_decref(j);
    ah_buf_free(&out);
    free(body);
}

static void test_errors(void **st)
{
    (void)st;
    err_case(400,
             "{'type':'error','error':{'type':'invalid_request_error','message':"
             "'messages: roles must alternate'},'request_id':'req_1'}",
             400,
             "{'error':{'message':'anthropic: messages: roles must alternate','type':"
             "'invalid_request_error','param':null,'code':null}}");
    err_case(
        401,
        "{'type':'error','error':{'type':'authentication_error','message':'invalid x-api-key'}}",
        502,
        "{'error':{'message':'the upstream provider (anthropic) rejected the gateway\\u0027s "
        "credentials: invalid x-api-key','type':'server_error','param':null,"
        "'code':'upstream_authentication_error'}}");
    err_case(403, "{'type':'error','error':{'type':'permission_error','message':'no'}}", 502,
             "{'error':{'message':'the upstream provider (anthropic) denied the gateway\\u0027s "
             "credentials access: no','type':'server_error','param':null,"
             "'code':'upstream_permission_error'}}");
    err_case(404, "{'type':'error','error':{'type':'not_found_error','message':'model: x'}}", 502,
             "{'error':{'message':'the upstream provider (anthropic) does not know the configured "
             "model or endpoint: model: x','type':'server_error','param':null,"
             "'code':'upstream_not_found'}}");
    err_case(413, "{'type':'error','error':{'type':'request_too_large','message':'too big'}}", 413,
             "{'error':{'message':'anthropic: too big','type':'invalid_request_error',"
             "'param':null,'code':'request_too_large'}}");
    err_case(429, "{'type':'error','error':{'type':'rate_limit_error','message':'slow down'}}", 429,
             "{'error':{'message':'anthropic: slow down','type':'rate_limit_error',"
             "'param':null,'code':'rate_limit_exceeded'}}");
    err_case(500, "{'type':'error','error':{'type':'api_error','message':'Internal error'}}", 502,
             "{'error':{'message':'anthropic: Internal error','type':'server_error',"
             "'param':null,'code':'upstream_error'}}");
    err_case(529, "{'type':'error','error':{'type':'overloaded_error','message':'Overloaded'}}",
             503,
             "{'error':{'message':'anthropic: Overloaded','type':'server_error',"
             "'param':null,'code':'upstream_overloaded'}}");
    err_case(504, "{'type':'error','error':{'type':'timeout_error','message':'timeout'}}", 504,
             "{'error':{'message':'anthropic: timeout','type':'timeout_error',"
             "'param':null,'code':'upstream_timeout'}}");
    err_case(402, "{'type':'error','error':{'type':'billing_error','message':'pay'}}", 502,
             "{'error':{'message':'the upstream provider (anthropic) refused the request for "
             "billing reasons: pay','type':'server_error','param':null,"
             "'code':'upstream_billing_error'}}");
    /* Not JSON (a proxy's HTML page), or no body: decided by the status alone. */
    err_case(529, "<html>overloaded</html>", 503,
             "{'error':{'message':'anthropic returned HTTP 529','type':'server_error',"
             "'param':null,'code':'upstream_overloaded'}}");
    err_case(429, NULL, 429,
             "{'error':{'message':'anthropic returned HTTP 429','type':'rate_limit_error',"
             "'param':null,'code':'rate_limit_exceeded'}}");
    err_case(502, "bad gateway", 502,
             "{'error':{'message':'anthropic returned HTTP 502','type':'server_error',"
             "'param':null,'code':'upstream_error'}}");
    /* An unknown type falls back to the status. */
    err_case(400, "{'type':'error','error':{'type':'brand_new_error','message':'m'}}", 400,
             "{'error':{'message':'anthropic: m','type':'invalid_request_error','param':null,"
             "'code':null}}");
}

/* ---- stream ---- */

typedef struct {
    ah_anthropic_stream_t *st;
    ah_buf_t out;
    int last_rc;
} pipe_t;

static int to_translator(void *ud, const char *event, const char *data, size_t n, const char *id)
{
    (void)id;
    pipe_t *p = ud;
    p->last_rc = ah_anthropic_stream_event(p->st, event, data, n, &p->out);
    return p->last_rc < 0 ? 1 : 0;
}

/* Runs an upstream SSE byte stream through the SSE parser and the translator. */
static void run_stream(ah_anthropic_stream_t *st, const char *sse_q, pipe_t *p)
{
    char *sse = qs(sse_q);
    ah_sse_parser_t parser;
    ah_sse_parser_init(&parser, 0);
    p->st = st;
    p->last_rc = 0;
    ah_buf_init(&p->out, 0);
    int rc = ah_sse_parser_feed(&parser, sse, strlen(sse), to_translator, p);
    assert_true(rc == 0 || rc == 1);
    ah_sse_parser_free(&parser);
    free(sse);
}

/* Reassembles OpenAI chunk frames into {id, content, tool_calls, finish_reason, usage}. */
typedef struct {
    json_t *msg;
    int chunks;
} assembled_t;

static int on_chunk(void *ud, const char *event, const char *data, size_t n, const char *id)
{
    (void)event;
    (void)id;
    assembled_t *a = ud;
    json_error_t je;
    json_t *c = json_loadb(data, n, 0, &je);
    if (!c)
        fail_msg("chunk is not JSON: %s: %.*s", je.text, (int)n, data);
    a->chunks++;
    assert_string_equal(json_string_value(json_object_get(c, "object")), "chat.completion.chunk");
    assert_string_equal(json_string_value(json_object_get(c, "model")), "smart");
    assert_int_equal(json_integer_value(json_object_get(c, "created")), 1700000000);
    json_object_set(a->msg, "id", json_object_get(c, "id"));
    json_t *usage = json_object_get(c, "usage");
    if (usage && !json_is_null(usage))
        json_object_set(a->msg, "usage", usage);
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *delta = json_object_get(choice, "delta");
    json_t *fr = json_object_get(choice, "finish_reason");
    if (fr && !json_is_null(fr))
        json_object_set(a->msg, "finish_reason", fr);
    const char *text = json_string_value(json_object_get(delta, "content"));
    if (text) {
        const char *prev = json_string_value(json_object_get(a->msg, "content"));
        size_t n1 = prev ? strlen(prev) : 0, n2 = strlen(text);
        char *cat = malloc(n1 + n2 + 1);
        memcpy(cat, prev ? prev : "", n1);
        memcpy(cat + n1, text, n2 + 1);
        json_object_set_new(a->msg, "content", json_string(cat));
        free(cat);
    }
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(delta, "tool_calls"), i, tc)
    {
        json_t *calls = json_object_get(a->msg, "tool_calls");
        if (!calls) {
            calls = json_array();
            json_object_set_new(a->msg, "tool_calls", calls);
        }
        size_t idx = (size_t)json_integer_value(json_object_get(tc, "index"));
        if (idx == json_array_size(calls)) /* a new call starts with id, type and name */
            json_array_append_new(
                calls, json_pack("{s:O, s:O, s:{s:O, s:s}}", "id", json_object_get(tc, "id"),
                                 "type", json_object_get(tc, "type"), "function", "name",
                                 json_object_get(json_object_get(tc, "function"), "name"),
                                 "arguments", ""));
        assert_true(idx < json_array_size(calls));
        json_t *fn = json_object_get(json_array_get(calls, idx), "function");
        const char *prev = json_string_value(json_object_get(fn, "arguments"));
        const char *more =
            json_string_value(json_object_get(json_object_get(tc, "function"), "arguments"));
        if (more) {
            char *cat = malloc(strlen(prev) + strlen(more) + 1);
            memcpy(cat, prev, strlen(prev));
            memcpy(cat + strlen(prev), more, strlen(more) + 1);
            json_object_set_new(fn, "arguments", json_string(cat));
            free(cat);
        }
    }
    json_decref(c);
    return 0;
}

static json_t *assemble(const ah_buf_t *frames, int *n_chunks)
{
    assembled_t a = {json_object(), 0};
    ah_sse_parser_t p;
    ah_sse_parser_init(&p, 0);
    assert_int_equal(ah_sse_parser_feed(&p, frames->data, frames->len, on_chunk, &a), 0);
    assert_false(ah_sse_parser_pending(&p)); /* every frame is complete */
    ah_sse_parser_free(&p);
    if (n_chunks)
        *n_chunks = a.chunks;
    return a.msg;
}

/* The same projection of a non-stream answer; tool arguments parsed in both. */
static json_t *project(json_t *completion)
{
    json_t *choice = json_array_get(json_object_get(completion, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    json_t *p = json_object();
    json_object_set(p, "id", json_object_get(completion, "id"));
    json_t *content = json_object_get(msg, "content");
    /* A stream always starts with content "", so null and "" compare equal. */
    json_object_set_new(p, "content",
                        json_string(json_is_string(content) ? json_string_value(content) : ""));
    if (json_object_get(msg, "tool_calls"))
        json_object_set(p, "tool_calls", json_object_get(msg, "tool_calls"));
    json_object_set(p, "finish_reason", json_object_get(choice, "finish_reason"));
    if (json_object_get(completion, "usage"))
        json_object_set(p, "usage", json_object_get(completion, "usage"));
    return p;
}

static void parse_arguments(json_t *m)
{
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(m, "tool_calls"), i, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        json_error_t je;
        json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, &je);
        if (!args)
            fail_msg("arguments do not parse: %s", je.text);
        json_object_set_new(fn, "arguments", args);
    }
}

static void assert_same_answer(json_t *streamed, const char *anthropic_q)
{
    json_t *whole = resp(anthropic_q, NULL);
    json_t *p = project(whole);
    if (!json_object_get(streamed, "content"))
        json_object_set_new(streamed, "content", json_string(""));
    parse_arguments(p);
    parse_arguments(streamed);
    char *w = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    char *g = json_dumps(streamed, JSON_COMPACT | JSON_SORT_KEYS);
    if (!json_equal(p, streamed))
        fail_msg("stream assembled:\n%s\nnon-stream:\n%s", g, w);
    free(w);
    free(g);
    json_decref(p);
    json_decref(whole);
}

/* The Anthropic streaming docs' basic example (a text answer). */
static const char text_stream[] =
    "event: message_start\n"
    "data: {'type': 'message_start', 'message': {'id': 'msg_01XFDUDYJgAACzvnptvVoYEL', "
    "'type': 'message', 'role': 'assistant', 'content': [], 'model': 'claude-sonnet-4-5', "
    "'stop_reason': null, 'stop_sequence': null, 'usage': {'input_tokens': 25, "
    "'output_tokens': 1}}}\n\n"
    "event: content_block_start\n"
    "data: {'type': 'content_block_start', 'index': 0, 'content_block': {'type': 'text', "
    "'text': ''}}\n\n"
    "event: ping\n"
    "data: {'type': 'ping'}\n\n"
    "event: content_block_delta\n"
    "data: {'type': 'content_block_delta', 'index': 0, 'delta': {'type': 'text_delta', "
    "'text': 'Hello'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type': 'content_block_delta', 'index': 0, 'delta': {'type': 'text_delta', "
    "'text': '!'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type': 'content_block_stop', 'index': 0}\n\n"
    "event: message_delta\n"
    "data: {'type': 'message_delta', 'delta': {'stop_reason': 'end_turn', "
    "'stop_sequence':null}, 'usage': {'output_tokens': 15}}\n\n"
    "event: message_stop\n"
    "data: {'type': 'message_stop'}\n\n";

static void test_stream_text(void **st_)
{
    (void)st_;
    ah_anthropic_stream_t st;
    assert_int_equal(ah_anthropic_stream_init(&st, NULL, "smart", 1700000000, false), 0);
    pipe_t p;
    run_stream(&st, text_stream, &p);
    assert_int_equal(p.last_rc, 0);
    assert_true(ah_anthropic_stream_done(&st));
    /* Exact chunks: role, two content deltas, finish. */
    const char *want[] = {
        "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion.chunk',"
        "'created':1700000000,'model':'smart','choices':[{'index':0,'delta':{'role':'assistant',"
        "'content':''},'finish_reason':null}]}",
        "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion.chunk',"
        "'created':1700000000,'model':'smart','choices':[{'index':0,'delta':{'content':'Hello'},"
        "'finish_reason':null}]}",
        "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion.chunk',"
        "'created':1700000000,'model':'smart','choices':[{'index':0,'delta':{'content':'!'},"
        "'finish_reason':null}]}",
        "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion.chunk',"
        "'created':1700000000,'model':'smart','choices':[{'index':0,'delta':{},"
        "'finish_reason':'stop'}]}",
    };
    const char *s = p.out.data;
    for (size_t i = 0; i < 4; i++) {
        assert_memory_equal(s, "data: ", 6);
        const char *end = strstr(s, "\n\n");
        assert_non_null(end);
        json_t *c = json_loadb(s + 6, (size_t)(end - s - 6), 0, NULL);
        assert_non_null(c);
        assert_json(c, want[i]);
        json_decref(c);
        s = end + 2;
    }
    assert_string_equal(s, ""); /* nothing else: no [DONE], no usage chunk */
    json_t *m = assemble(&p.out, NULL);
    assert_same_answer(m, "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','type':'message','content':["
                          "{'type':'text','text':'Hello!'}],'stop_reason':'end_turn'}");
    json_decref(m);
    assert_true(st.usage.present);
    assert_int_equal(st.usage.prompt_tokens, 25);
    assert_int_equal(st.usage.completion_tokens, 15);
    ah_buf_free(&p.out);
    ah_anthropic_stream_free(&st);
}

/* The docs' tool-use stream, with a second tool call, a no-argument call and cache usage. */
static const char tools_stream[] =
    "event: message_start\n"
    "data: {'type':'message_start','message':{'id':'msg_014p7gG3wDgGV9EUtLvnow3U','type':"
    "'message','role':'assistant','model':'claude-opus-4-6','stop_sequence':null,'usage':"
    "{'input_tokens':472,'cache_creation_input_tokens':100,'cache_read_input_tokens':2000,"
    "'output_tokens':2},'content':[],'stop_reason':null}}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':0,'content_block':{'type':'thinking',"
    "'thinking':''}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'thinking_delta',"
    "'thinking':'hmm'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'signature_delta',"
    "'signature':'sig'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':0}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':1,'content_block':{'type':'text','text':''}}\n\n"
    "event: ping\n"
    "data: {'type': 'ping'}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':1,'delta':{'type':'text_delta','text':"
    "'Okay'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':1,'delta':{'type':'text_delta','text':"
    "', checking the weather for San Francisco, CA:'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':1}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':2,'content_block':{'type':'tool_use','id':"
    "'toolu_01T1x1fJ34qAmk2tNTrN7Up6','name':'get_weather','input':{}}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':''}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':'{\\'location\\':'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':' \\'San'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':' Francisc'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':'o, CA\\', \\'unit\\': \\'fah'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':'renheit\\'}'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':2}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':3,'content_block':{'type':'tool_use','id':"
    "'toolu_02','name':'get_time','input':{}}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':3,'delta':{'type':'input_json_delta',"
    "'partial_json':'{\\'timezone\\': \\'America/Los_Angeles\\'}'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':3}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':4,'content_block':{'type':'tool_use','id':"
    "'toolu_03','name':'ping','input':{}}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':4}\n\n"
    "event: message_delta\n"
    "data: {'type':'message_delta','delta':{'stop_reason':'tool_use','stop_sequence':null},"
    "'usage':{'output_tokens':89}}\n\n"
    "event: message_stop\n"
    "data: {'type':'message_stop'}\n\n";

static void test_stream_parallel_tools(void **st_)
{
    (void)st_;
    ah_anthropic_stream_t st;
    assert_int_equal(ah_anthropic_stream_init(&st, NULL, "smart", 1700000000, true), 0);
    pipe_t p;
    run_stream(&st, tools_stream, &p);
    assert_int_equal(p.last_rc, 0);
    assert_true(ah_anthropic_stream_done(&st));
    /* Tool indexes count tool_use blocks only: 0, 1, 2 although they are blocks 2, 3, 4. */
    assert_non_null(strstr(p.out.data, "\"tool_calls\":[{\"index\":0,\"id\":\"toolu_01T1x1fJ34q"));
    assert_non_null(strstr(p.out.data, "\"tool_calls\":[{\"index\":1,\"id\":\"toolu_02\""));
    assert_non_null(strstr(p.out.data, "\"tool_calls\":[{\"index\":2,\"id\":\"toolu_03\""));
    assert_null(strstr(p.out.data, "hmm")); /* thinking is not forwarded */
    /* include_usage: usage null on every chunk, then a usage chunk with no choices. */
    const char *last = p.out.data;
    for (const char *q; (q = strstr(last + 1, "data: ")) != NULL;)
        last = q;
    json_t *u = json_loads(last + 6, 0, NULL);
    assert_non_null(u);
    assert_json(u,
                "{'id':'msg_014p7gG3wDgGV9EUtLvnow3U','object':'chat.completion.chunk',"
                "'created':1700000000,'model':'smart','choices':[],'usage':{'prompt_tokens':2572,"
                "'completion_tokens':89,'total_tokens':2661,'prompt_tokens_details':"
                "{'cached_tokens':2000}}}");
    json_decref(u);
    int n_chunks = 0;
    json_t *m = assemble(&p.out, &n_chunks);
    /* role + 2 text + (start + 5 args) + (start + 1 args) + (start + "{}") + finish + usage */
    assert_int_equal(n_chunks, 1 + 2 + 6 + 2 + 2 + 1 + 1);
    assert_same_answer(m, tools_message);
    json_decref(m);
    assert_int_equal(st.usage.prompt_tokens, 2572);
    assert_int_equal(st.usage.cached_tokens, 2000);
    assert_int_equal(st.usage.completion_tokens, 89);
    ah_buf_free(&p.out);
    ah_anthropic_stream_free(&st);
}

static int feed_event(ah_anthropic_stream_t *st, const char *event, const char *data_q,
                      ah_buf_t *out)
{
    char *d = qs(data_q);
    int rc = ah_anthropic_stream_event(st, event, d, strlen(d), out);
    free(d);
    return rc;
}

static void test_stream_errors_and_edges(void **st_)
{
    (void)st_;
    ah_anthropic_stream_t st;
    ah_buf_t out = AH_BUF_INIT;
    assert_int_equal(ah_anthropic_stream_init(&st, "chatcmpl-", "smart", 1700000000, false), 0);
    assert_int_equal(
        feed_event(&st, "message_start",
                   "{'type':'message_start','message':{'id':'msg_1','usage':{'input_tokens':7}}}",
                   &out),
        0);
    assert_non_null(strstr(out.data, "\"id\":\"chatcmpl-msg_1\""));
    ah_buf_reset(&out);
    /* ping and unknown event types produce nothing. */
    assert_int_equal(feed_event(&st, "ping", "{'type':'ping'}", &out), 0);
    assert_int_equal(feed_event(&st, "brand_new", "{'type':'brand_new'}", &out), 0);
    assert_int_equal(out.len, 0);
    /* The event name may be missing (default "message"): the data's type is used. */
    assert_int_equal(feed_event(&st, "message",
                                "{'type':'content_block_delta','index':0,'delta':"
                                "{'type':'text_delta','text':'a\\nb'}}",
                                &out),
                     0);
    assert_non_null(strstr(out.data, "\"content\":\"a\\nb\""));
    ah_buf_reset(&out);
    /* An error event mid-stream: -EREMOTEIO and an OpenAI error object. */
    assert_int_equal(feed_event(&st, "error",
                                "{'type':'error','error':{'type':'overloaded_error','message':"
                                "'Overloaded'}}",
                                &out),
                     -EREMOTEIO);
    json_t *e = json_loadb(out.data, out.len, 0, NULL);
    assert_json(e, "{'error':{'message':'anthropic: Overloaded','type':'server_error','param':null,"
                   "'code':'upstream_overloaded'}}");
    json_decref(e);
    assert_false(ah_anthropic_stream_done(&st)); /* cut before message_stop */
    ah_buf_reset(&out);
    assert_int_equal(feed_event(&st, "error", "<not json>", &out), -EREMOTEIO);
    e = json_loadb(out.data, out.len, 0, NULL);
    assert_json(e, "{'error':{'message':'anthropic ended the stream with an error','type':"
                   "'server_error','param':null,'code':'upstream_error'}}");
    json_decref(e);
    assert_int_equal(st.usage.prompt_tokens, 7);
    ah_buf_reset(&out);
    /* Malformed events: -EINVAL and an error object, nothing else. */
    const char *bad[][2] = {{"content_block_delta", "not json"},
                            {"content_block_delta", "[1,2]"},
                            {"content_block_start", "{'index':-1,'content_block':{'type':'text'}}"},
                            {"content_block_start", "{'index':99999,'content_block':{}}"},
                            {"content_block_start", "{'index':0}"},
                            {"content_block_delta", "{'index':0}"},
                            {"message_start", "{'message':{'id':'again'}}"},
                            {NULL, "{'no':'type'}"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ah_buf_reset(&out);
        assert_int_equal(feed_event(&st, bad[i][0], bad[i][1], &out), -EINVAL);
        e = json_loadb(out.data, out.len, 0, NULL);
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "code")),
                            "upstream_malformed");
        json_decref(e);
    }
    /* A stop without message_delta still ends with a finish_reason; later events are ignored. */
    ah_buf_reset(&out);
    assert_int_equal(feed_event(&st, "message_stop", "{'type':'message_stop'}", &out), 0);
    assert_non_null(strstr(out.data, "\"finish_reason\":\"stop\""));
    assert_true(ah_anthropic_stream_done(&st));
    ah_buf_reset(&out);
    assert_int_equal(feed_event(&st, "content_block_delta", "garbage", &out), 0);
    assert_int_equal(out.len, 0);
    ah_anthropic_stream_free(&st);

    /* A refusal and a length stop map like the non-stream answer. */
    assert_int_equal(ah_anthropic_stream_init(&st, NULL, "smart", 1, false), 0);
    ah_buf_reset(&out);
    assert_int_equal(feed_event(&st, "message_delta",
                                "{'delta':{'stop_reason':'refusal'},'usage':{'output_tokens':3}}",
                                &out),
                     0);
    assert_non_null(strstr(out.data, "\"finish_reason\":\"content_filter\""));
    assert_int_equal(st.usage.completion_tokens, 3);
    ah_anthropic_stream_free(&st);

    /* A full output buffer: -E2BIG and out unchanged. */
    assert_int_equal(ah_anthropic_stream_init(&st, NULL, "smart", 1, false), 0);
    ah_buf_t small;
    ah_buf_init(&small, 16);
    assert_int_equal(feed_event(&st, "message_start", "{'message':{'id':'m'}}", &small), -E2BIG);
    assert_int_equal(small.len, 0);
    ah_buf_free(&small);
    ah_anthropic_stream_free(&st);
    ah_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_request_content_parts),
        cmocka_unit_test(test_request_tool_conversation),
        cmocka_unit_test(test_request_merge_order),
        cmocka_unit_test(test_request_tool_choice),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_response_text),
        cmocka_unit_test(test_response_tool_use),
        cmocka_unit_test(test_response_finish_and_edge),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_parallel_tools),
        cmocka_unit_test(test_stream_errors_and_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
