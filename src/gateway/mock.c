/* mock.c - the deterministic mock model; see mock.h for the rules. */
#include "gateway/mock.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

/* Characters per streamed chunk: one token each (tokens are ceil(chars / 4)). */
#define CHUNK_CHARS 4
/* Most inputs one embeddings request may carry (OpenAI's limit). */
#define EMBED_MAX_INPUTS 2048

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* Byte length of the first max_chars characters of s[0..n). */
static size_t utf8_prefix(const char *s, size_t n, size_t max_chars)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (chars == max_chars)
                return i;
            chars++;
        }
    }
    return n;
}

static long chars_to_tokens(size_t chars)
{
    return (long)((chars + CHUNK_CHARS - 1) / CHUNK_CHARS);
}

long ah_mock_tokens(const char *s, size_t n)
{
    return chars_to_tokens(utf8_chars(s, n));
}

static int fail_inval(ah_buf_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail_inval(ah_buf_t *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        ah_buf_vprintf(err, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* ---- options ---- */

enum {
    OPT_STATUS,
    OPT_RETRY_AFTER,
    OPT_RETRY_AFTER_MS,
    OPT_FAIL_TIMES,
    OPT_TTFT_MS,
    OPT_TOKEN_MS,
    OPT_LATENCY_MS,
    OPT_DROP_AFTER,
    OPT_MALFORMED,
    OPT_COUNT
};

static const struct {
    const char *name;
    long min, max;
} opt_defs[OPT_COUNT] = {
    [OPT_STATUS] = {"status", 400, 599},
    [OPT_RETRY_AFTER] = {"retry_after", 0, 3600},
    [OPT_RETRY_AFTER_MS] = {"retry_after_ms", 0, AH_MOCK_DELAY_MAX_MS},
    [OPT_FAIL_TIMES] = {"fail_times", 0, 1000000000},
    [OPT_TTFT_MS] = {"ttft_ms", 0, AH_MOCK_DELAY_MAX_MS},
    [OPT_TOKEN_MS] = {"token_ms", 0, AH_MOCK_DELAY_MAX_MS},
    [OPT_LATENCY_MS] = {"latency_ms", 0, AH_MOCK_DELAY_MAX_MS},
    [OPT_DROP_AFTER] = {"drop_after", 0, 1000000000},
    [OPT_MALFORMED] = {"malformed", 0, 1},
};

#define KNOWN_OPTS                                                                                 \
    "status, retry_after, retry_after_ms, fail_times, ttft_ms, token_ms, latency_ms, "             \
    "drop_after, malformed"

int ah_mock_opts_parse(const char *model, ah_mock_opts_t *o, ah_buf_t *err)
{
    memset(o, 0, sizeof(*o));
    o->retry_after_s = o->retry_after_ms = o->drop_after = -1;
    if (!model)
        model = "";
    size_t len = strlen(model);
    if (len >= AH_MOCK_MODEL_MAX)
        return fail_inval(err, "model name is longer than %d bytes", AH_MOCK_MODEL_MAX - 1);
    const char *q = memchr(model, '?', len);
    size_t base = q ? (size_t)(q - model) : len;
    memcpy(o->model, model, base);
    o->model[base] = '\0';
    if (!q)
        return 0;
    const char *p = q + 1, *end = model + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        size_t seg = amp ? (size_t)(amp - p) : (size_t)(end - p);
        const char *eq = memchr(p, '=', seg);
        size_t klen = eq ? (size_t)(eq - p) : seg;
        if (seg > 0) {
            int which = -1;
            for (int i = 0; i < OPT_COUNT; i++)
                if (strlen(opt_defs[i].name) == klen && memcmp(opt_defs[i].name, p, klen) == 0)
                    which = i;
            if (which < 0)
                return fail_inval(
                    err, "model \"%s\": unknown mock option \"%.*s\" (known: " KNOWN_OPTS ")",
                    model, (int)klen, p);
            const char *v = eq ? eq + 1 : p + seg;
            size_t vlen = (size_t)(p + seg - v);
            long val = 0;
            bool ok = vlen > 0 && vlen <= 10;
            for (size_t i = 0; ok && i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    ok = false;
                else
                    val = val * 10 + (v[i] - '0');
            }
            if (!ok || val < opt_defs[which].min || val > opt_defs[which].max)
                return fail_inval(err,
                                  "model \"%s\": mock option %s needs an integer from %ld to %ld "
                                  "(got \"%.*s\")",
                                  model, opt_defs[which].name, opt_defs[which].min,
                                  opt_defs[which].max, (int)vlen, v);
            switch (which) {
            case OPT_STATUS:
                o->status = (int)val;
                break;
            case OPT_RETRY_AFTER:
                o->retry_after_s = (int)val;
                break;
            case OPT_RETRY_AFTER_MS:
                o->retry_after_ms = (int)val;
                break;
            case OPT_FAIL_TIMES:
                o->fail_times = (int)val;
                break;
            case OPT_TTFT_MS:
                o->ttft_ms = (int)val;
                break;
            case OPT_TOKEN_MS:
                o->token_ms = (int)val;
                break;
            case OPT_LATENCY_MS:
                o->latency_ms = (int)val;
                break;
            case OPT_DROP_AFTER:
                o->drop_after = (int)val;
                break;
            default:
                o->malformed = val != 0;
                break;
            }
        }
        p += seg + 1;
    }
    if (o->fail_times > 0 && o->status == 0)
        o->status = 500;
    return 0;
}

/* ---- reading requests ---- */

/* Prompt accounting: characters seen and a digest of them (the response id). */
typedef struct scan {
    size_t chars;
    uint64_t hash;
} scan_t;

static void scan_text(scan_t *s, const char *p, size_t n)
{
    s->chars += utf8_chars(p, n);
    s->hash = fnv1a(s->hash, p, n);
}

static int scan_json(scan_t *s, const json_t *v)
{
    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!d)
        return -ENOMEM;
    scan_text(s, d, strlen(d));
    free(d);
    return 0;
}

static bool is_text_part(const json_t *part)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    return json_is_string(json_object_get(part, "text")) &&
           (!type || strcmp(type, "text") == 0 || strcmp(type, "input_text") == 0 ||
            strcmp(type, "output_text") == 0);
}

/*
 * Appends the text of an OpenAI content value or an Anthropic content / tool
 * result value (a string, or an array of parts whose text parts are joined by
 * "\n") to out. Other parts (images, audio) carry no text.
 */
static int content_text(const json_t *content, ah_buf_t *out)
{
    if (json_is_string(content))
        return ah_buf_append(out, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return 0;
    size_t i;
    const json_t *part;
    bool first = true;
    int rc = 0;
    json_array_foreach(content, i, part)
    {
        if (!is_text_part(part))
            continue;
        const json_t *t = json_object_get(part, "text");
        if (!first)
            rc |= ah_buf_putc(out, '\n');
        rc |= ah_buf_append(out, json_string_value(t), json_string_length(t));
        first = false;
    }
    return rc ? -ENOMEM : 0;
}

/* Tool names a request offers (borrowed from the request). */
typedef struct offered {
    const char **names;
    size_t n;
} offered_t;

static int offered_add(offered_t *o, const char *name)
{
    if (!name || !*name)
        return 0;
    const char **nn = realloc(o->names, (o->n + 1) * sizeof(*nn));
    if (!nn)
        return -ENOMEM;
    o->names = nn;
    o->names[o->n++] = name;
    return 0;
}

static bool offered_has(const offered_t *o, const char *name, size_t len)
{
    for (size_t i = 0; i < o->n; i++)
        if (strlen(o->names[i]) == len && memcmp(o->names[i], name, len) == 0)
            return true;
    return false;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int add_call(ah_mock_reply_t *r, const char *id_prefix, size_t n, const char *name,
                    size_t name_len, char *args)
{
    ah_mock_call_t *calls = realloc(r->calls, (r->n_calls + 1) * sizeof(*calls));
    if (!calls) {
        free(args);
        return -ENOMEM;
    }
    r->calls = calls;
    ah_mock_call_t *c = &calls[r->n_calls];
    char id[48];
    snprintf(id, sizeof(id), "%s%zu", id_prefix, n);
    c->id = strdup(id);
    c->name = strndup(name, name_len);
    c->arguments = args;
    if (!c->id || !c->name || !c->arguments) {
        free(c->id);
        free(c->name);
        free(c->arguments);
        return -ENOMEM;
    }
    r->n_calls++;
    return 0;
}

/*
 * Finds every "call_tool NAME {args}" phrase in text whose NAME is offered
 * and adds it as a call. A phrase whose "{...}" is not a JSON object does not
 * count. Ids continue from prior (calls already in the conversation).
 */
static int parse_calls(const char *text, size_t n, const offered_t *off, const char *id_prefix,
                       size_t prior, ah_mock_reply_t *r)
{
    static const char kw[] = "call_tool";
    const size_t kwl = sizeof(kw) - 1;
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), kw, kwl);
        if (!hit)
            break;
        const char *q = hit + kwl;
        p = q;
        if ((hit > text && is_name_char(hit[-1])) || q >= end || !is_space(*q))
            continue;
        while (q < end && is_space(*q))
            q++;
        const char *name = q;
        while (q < end && is_name_char(*q))
            q++;
        size_t name_len = (size_t)(q - name);
        if (name_len == 0)
            continue;
        const char *a = q;
        while (a < end && (*a == ' ' || *a == '\t'))
            a++;
        char *args = NULL;
        if (a < end && *a == '{') {
            json_error_t je;
            json_t *obj = json_loadb(a, (size_t)(end - a), JSON_DISABLE_EOF_CHECK, &je);
            if (!json_is_object(obj)) {
                json_decref(obj);
                continue;
            }
            p = a + je.position;
            if (offered_has(off, name, name_len)) {
                args = json_dumps(obj, JSON_COMPACT);
                if (!args) {
                    json_decref(obj);
                    return -ENOMEM;
                }
            }
            json_decref(obj);
        } else {
            p = q;
            if (offered_has(off, name, name_len) && !(args = strdup("{}")))
                return -ENOMEM;
        }
        if (!args)
            continue; /* a tool the request does not offer */
        int rc = add_call(r, id_prefix, prior + r->n_calls + 1, name, name_len, args);
        if (rc)
            return rc;
    }
    return 0;
}

static int set_text(ah_mock_reply_t *r, ah_buf_t *text)
{
    r->text_len = text->len;
    r->text = ah_buf_steal(text);
    return r->text ? 0 : -ENOMEM;
}

/* Cuts a text answer to max_tokens and computes the completion tokens. */
static void finish_reply(ah_mock_reply_t *r, const json_t *req, scan_t *sc)
{
    r->prompt_tokens = chars_to_tokens(sc->chars);
    snprintf(r->digest, sizeof(r->digest), "%016llx", (unsigned long long)sc->hash);
    if (r->n_calls) {
        size_t chars = 0;
        for (size_t i = 0; i < r->n_calls; i++)
            chars += utf8_chars(r->calls[i].name, strlen(r->calls[i].name)) +
                     utf8_chars(r->calls[i].arguments, strlen(r->calls[i].arguments));
        r->completion_tokens = chars_to_tokens(chars);
        r->finish = AH_MOCK_FINISH_TOOL_CALLS;
        return;
    }
    json_t *mt = json_object_get(req, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(req, "max_tokens");
    json_int_t max = json_is_integer(mt) ? json_integer_value(mt) : 0;
    r->finish = AH_MOCK_FINISH_STOP;
    if (max > 0 && (uint64_t)max < (uint64_t)SIZE_MAX / CHUNK_CHARS) {
        size_t cut = utf8_prefix(r->text, r->text_len, (size_t)max * CHUNK_CHARS);
        if (cut < r->text_len) {
            r->text_len = cut;
            r->text[cut] = '\0';
            r->finish = AH_MOCK_FINISH_LENGTH;
        }
    }
    r->completion_tokens = ah_mock_tokens(r->text, r->text_len);
}

void ah_mock_reply_free(ah_mock_reply_t *r)
{
    if (!r)
        return;
    free(r->text);
    for (size_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].id);
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    memset(r, 0, sizeof(*r));
}

/* Shared tail of both dialects: rule 1, 2 or 3 given what the scan found. */
static int decide(ah_mock_reply_t *r, ah_buf_t *results, size_t n_results, const char *user,
                  size_t user_len, const offered_t *off, const char *id_prefix, size_t prior)
{
    ah_buf_t text;
    ah_buf_init(&text, 0);
    int rc = 0;
    if (n_results > 0) {
        rc |= ah_buf_puts(&text, "tool said: ");
        rc |= ah_buf_append(&text, results->data ? results->data : "", results->len);
        return rc ? (ah_buf_free(&text), -ENOMEM) : set_text(r, &text);
    }
    if (off->n && user) {
        rc = parse_calls(user, user_len, off, id_prefix, prior, r);
        if (rc || r->n_calls) {
            ah_buf_free(&text);
            return rc;
        }
    }
    rc |= ah_buf_puts(&text, "echo: ");
    rc |= ah_buf_append(&text, user ? user : "", user_len);
    return rc ? (ah_buf_free(&text), -ENOMEM) : set_text(r, &text);
}

/* Appends one tool result to the " | "-joined list. */
static int add_result(ah_buf_t *results, size_t *n, const json_t *content)
{
    int rc = 0;
    if ((*n)++ > 0)
        rc |= ah_buf_puts(results, " | ");
    rc |= content_text(content, results);
    return rc ? -ENOMEM : 0;
}

/* ---- OpenAI chat ---- */

int ah_mock_chat(const json_t *req, ah_mock_reply_t *out, ah_buf_t *err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(req))
        return fail_inval(err, "the request body must be a JSON object");
    const json_t *msgs = json_object_get(req, "messages");
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0)
        return fail_inval(err, "messages: expected a non-empty array of messages");

    scan_t sc = {0, FNV_OFFSET};
    offered_t off = {NULL, 0};
    ah_buf_t tmp = AH_BUF_INIT, user = AH_BUF_INIT, results = AH_BUF_INIT;
    size_t prior = 0, n_results = 0;
    int rc = 0;
    bool have_user = false;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            rc = fail_inval(err, "messages[%zu]: expected an object with a string \"role\"", i);
            break;
        }
        const json_t *content = json_object_get(m, "content");
        const char *text;
        size_t text_len;
        if (json_is_string(content)) { /* the common case: no copy */
            text = json_string_value(content);
            text_len = json_string_length(content);
        } else {
            ah_buf_reset(&tmp);
            if ((rc = content_text(content, &tmp)) != 0)
                break;
            text = tmp.data ? tmp.data : "";
            text_len = tmp.len;
        }
        scan_text(&sc, text, text_len);
        if (strcmp(role, "tool") == 0) {
            rc = add_result(&results, &n_results, content);
        } else {
            n_results = 0; /* only results that end the conversation count */
            ah_buf_reset(&results);
        }
        if (rc == 0 && strcmp(role, "user") == 0) {
            ah_buf_reset(&user);
            rc = ah_buf_append(&user, text, text_len);
            have_user = true;
        }
        const json_t *tcs = json_object_get(m, "tool_calls");
        size_t k;
        const json_t *tc;
        json_array_foreach(tcs, k, tc)
        {
            const json_t *fn = json_object_get(tc, "function");
            const json_t *nm = json_object_get(fn, "name"), *ar = json_object_get(fn, "arguments");
            if (json_is_string(nm))
                scan_text(&sc, json_string_value(nm), json_string_length(nm));
            if (json_is_string(ar))
                scan_text(&sc, json_string_value(ar), json_string_length(ar));
            prior++;
        }
    }

    const json_t *tools = json_object_get(req, "tools");
    if (rc == 0 && json_array_size(tools) > 0) {
        rc = scan_json(&sc, tools);
        const json_t *choice = json_object_get(req, "tool_choice");
        bool none = json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0;
        size_t k;
        const json_t *t;
        json_array_foreach(tools, k, t)
        {
            if (rc || none)
                break;
            rc = offered_add(
                &off, json_string_value(json_object_get(json_object_get(t, "function"), "name")));
        }
    }
    if (rc == 0)
        rc = decide(out, &results, n_results, have_user ? (user.data ? user.data : "") : NULL,
                    user.len, &off, "call_", prior);
    if (rc == 0)
        finish_reply(out, req, &sc);
    else
        ah_mock_reply_free(out);
    free(off.names);
    ah_buf_free(&tmp);
    ah_buf_free(&user);
    ah_buf_free(&results);
    return rc;
}

/* ---- Anthropic messages ---- */

int ah_mock_messages(const json_t *req, ah_mock_reply_t *out, ah_buf_t *err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(req))
        return fail_inval(err, "the request body must be a JSON object");
    const json_t *msgs = json_object_get(req, "messages");
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0)
        return fail_inval(err, "messages: expected a non-empty array of messages");

    scan_t sc = {0, FNV_OFFSET};
    offered_t off = {NULL, 0};
    ah_buf_t tmp = AH_BUF_INIT, user = AH_BUF_INIT, results = AH_BUF_INIT;
    size_t prior = 0, n_results = 0;
    int rc = 0;
    bool have_user = false;

    const json_t *system = json_object_get(req, "system");
    if (system) {
        rc = content_text(system, &tmp);
        if (rc == 0)
            scan_text(&sc, tmp.data ? tmp.data : "", tmp.len);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            rc = fail_inval(err, "messages.%zu: expected an object with a string \"role\"", i);
            break;
        }
        const json_t *content = json_object_get(m, "content");
        n_results = 0;
        ah_buf_reset(&results);
        ah_buf_reset(&tmp);
        if ((rc = content_text(content, &tmp)) != 0)
            break;
        scan_text(&sc, tmp.data ? tmp.data : "", tmp.len);
        size_t k;
        const json_t *b;
        json_array_foreach(content, k, b)
        {
            const char *type = json_string_value(json_object_get(b, "type"));
            if (!type || rc)
                continue;
            if (strcmp(type, "tool_use") == 0) {
                const json_t *nm = json_object_get(b, "name");
                if (json_is_string(nm))
                    scan_text(&sc, json_string_value(nm), json_string_length(nm));
                const json_t *input = json_object_get(b, "input");
                if (input)
                    rc = scan_json(&sc, input);
                prior++;
            } else if (strcmp(type, "tool_result") == 0) {
                size_t before = results.len;
                rc = add_result(&results, &n_results, json_object_get(b, "content"));
                if (rc == 0) {
                    const char *rs = results.data ? results.data : "";
                    size_t sep = n_results > 1 ? 3 : 0; /* " | " is not part of the prompt */
                    scan_text(&sc, rs + before + sep, results.len - before - sep);
                }
            }
        }
        if (rc == 0 && strcmp(role, "user") == 0) {
            ah_buf_reset(&user);
            rc = ah_buf_append(&user, tmp.data ? tmp.data : "", tmp.len);
            have_user = true;
        }
    }
    /* Tool results count only in the last message (Anthropic puts them in a user turn). */
    const json_t *tools = json_object_get(req, "tools");
    if (rc == 0 && json_array_size(tools) > 0) {
        rc = scan_json(&sc, tools);
        const json_t *choice = json_object_get(req, "tool_choice");
        const char *ctype = json_string_value(json_object_get(choice, "type"));
        bool none = ctype && strcmp(ctype, "none") == 0;
        size_t k;
        const json_t *t;
        json_array_foreach(tools, k, t)
        {
            if (rc || none)
                break;
            rc = offered_add(&off, json_string_value(json_object_get(t, "name")));
        }
    }
    if (rc == 0)
        rc = decide(out, &results, n_results, have_user ? (user.data ? user.data : "") : NULL,
                    user.len, &off, "toolu_", prior);
    if (rc == 0)
        finish_reply(out, req, &sc);
    else
        ah_mock_reply_free(out);
    free(off.names);
    ah_buf_free(&tmp);
    ah_buf_free(&user);
    ah_buf_free(&results);
    return rc;
}

/* ---- building JSON ---- */

/* json_object_set_new that remembers a failure in *bad (v may be NULL after ENOMEM). */
static void put(json_t *o, const char *k, json_t *v, bool *bad)
{
    if (!o || !v || json_object_set_new(o, k, v) != 0) {
        json_decref(v);
        *bad = true;
    }
}

static void append(json_t *a, json_t *v, bool *bad)
{
    if (!a || !v || json_array_append_new(a, v) != 0) {
        json_decref(v);
        *bad = true;
    }
}

static const char *finish_reason(const ah_mock_reply_t *r)
{
    switch (r->finish) {
    case AH_MOCK_FINISH_TOOL_CALLS:
        return "tool_calls";
    case AH_MOCK_FINISH_LENGTH:
        return "length";
    default:
        return "stop";
    }
}

static json_t *usage_json(const ah_mock_reply_t *r)
{
    bool bad = false;
    json_t *u = json_object();
    put(u, "prompt_tokens", json_integer(r->prompt_tokens), &bad);
    put(u, "completion_tokens", json_integer(r->completion_tokens), &bad);
    put(u, "total_tokens", json_integer(r->prompt_tokens + r->completion_tokens), &bad);
    json_t *pd = json_object();
    put(pd, "cached_tokens", json_integer(0), &bad);
    put(u, "prompt_tokens_details", pd, &bad);
    json_t *cd = json_object();
    put(cd, "reasoning_tokens", json_integer(0), &bad);
    put(u, "completion_tokens_details", cd, &bad);
    if (bad) {
        json_decref(u);
        return NULL;
    }
    return u;
}

static json_t *tool_calls_json(const ah_mock_reply_t *r)
{
    bool bad = false;
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_calls; i++) {
        json_t *c = json_object(), *fn = json_object();
        put(c, "id", json_string(r->calls[i].id), &bad);
        put(c, "type", json_string("function"), &bad);
        put(fn, "name", json_string(r->calls[i].name), &bad);
        put(fn, "arguments", json_string(r->calls[i].arguments), &bad);
        put(c, "function", fn, &bad);
        append(a, c, &bad);
    }
    if (bad) {
        json_decref(a);
        return NULL;
    }
    return a;
}

json_t *ah_mock_chat_completion(const ah_mock_reply_t *r, const char *model, long long created)
{
    bool bad = false;
    char id[48];
    snprintf(id, sizeof(id), "chatcmpl-mock-%s", r->digest);
    json_t *msg = json_object();
    put(msg, "role", json_string("assistant"), &bad);
    put(msg, "content", r->text ? json_stringn(r->text, r->text_len) : json_null(), &bad);
    put(msg, "refusal", json_null(), &bad);
    if (r->n_calls)
        put(msg, "tool_calls", tool_calls_json(r), &bad);
    json_t *choice = json_object();
    put(choice, "index", json_integer(0), &bad);
    put(choice, "message", msg, &bad);
    put(choice, "logprobs", json_null(), &bad);
    put(choice, "finish_reason", json_string(finish_reason(r)), &bad);
    json_t *choices = json_array();
    append(choices, choice, &bad);

    json_t *o = json_object();
    put(o, "id", json_string(id), &bad);
    put(o, "object", json_string("chat.completion"), &bad);
    put(o, "created", json_integer(created), &bad);
    put(o, "model", json_string(model ? model : ""), &bad);
    put(o, "system_fingerprint", json_string("fp_mock"), &bad);
    put(o, "choices", choices, &bad);
    put(o, "usage", usage_json(r), &bad);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- streams ---- */

static int stream_push(ah_mock_stream_t *s, const char *name, ah_buf_t *data, bool token)
{
    ah_mock_event_t *ev = realloc(s->ev, (s->n + 1) * sizeof(*ev));
    if (!ev)
        return -ENOMEM;
    s->ev = ev;
    size_t len = data->len;
    char *d = ah_buf_steal(data);
    if (!d)
        return -ENOMEM;
    ev[s->n++] = (ah_mock_event_t){.name = name, .data = d, .len = len, .token = token};
    return 0;
}

static int stream_push_json(ah_mock_stream_t *s, const char *name, json_t *o, bool token)
{
    if (!o)
        return -ENOMEM;
    char *d = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!d)
        return -ENOMEM;
    ah_buf_t b = AH_BUF_INIT;
    int rc = ah_buf_puts(&b, d);
    free(d);
    if (rc == 0)
        rc = stream_push(s, name, &b, token);
    ah_buf_free(&b);
    return rc;
}

void ah_mock_stream_free(ah_mock_stream_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->ev[i].data);
    free(s->ev);
    s->ev = NULL;
    s->n = 0;
}

/* What every chat.completion.chunk shares, up to the delta: built once per stream. */
typedef struct chunker {
    ah_buf_t prefix; /* {"id":...,"choices":[{"index":0,"delta": */
    bool include_usage;
    ah_mock_stream_t *out;
} chunker_t;

/* One chunk with delta (JSON text) and finish_reason (NULL = null). */
static int chunk(chunker_t *ck, const char *delta, size_t delta_len, const char *finish, bool token)
{
    ah_buf_t b = AH_BUF_INIT;
    int rc = ah_buf_append(&b, ck->prefix.data, ck->prefix.len);
    rc |= ah_buf_append(&b, delta, delta_len);
    rc |= ah_buf_puts(&b, ",\"logprobs\":null,\"finish_reason\":");
    if (finish) {
        rc |= ah_buf_putc(&b, '"');
        rc |= ah_buf_puts(&b, finish);
        rc |= ah_buf_putc(&b, '"');
    } else {
        rc |= ah_buf_puts(&b, "null");
    }
    rc |= ah_buf_puts(&b, ck->include_usage ? "}],\"usage\":null}" : "}]}");
    if (rc == 0)
        rc = stream_push(ck->out, NULL, &b, token);
    ah_buf_free(&b);
    return rc ? -ENOMEM : 0;
}

/* Chunks carrying text 4 characters at a time: open + escaped piece + close. */
static int chunk_pieces(chunker_t *ck, const char *open, const char *close, const char *s, size_t n)
{
    ah_buf_t d = AH_BUF_INIT;
    int rc = 0;
    size_t off = 0;
    while (off < n && rc == 0) {
        size_t len = utf8_prefix(s + off, n - off, CHUNK_CHARS);
        ah_buf_reset(&d);
        rc |= ah_buf_puts(&d, open);
        rc |= ah_buf_json_escape(&d, s + off, len);
        rc |= ah_buf_puts(&d, close);
        if (rc == 0)
            rc = chunk(ck, d.data, d.len, NULL, true);
        off += len;
    }
    ah_buf_free(&d);
    return rc ? -ENOMEM : 0;
}

int ah_mock_chat_chunks(const ah_mock_reply_t *r, const char *model, long long created,
                        bool include_usage, ah_mock_stream_t *out)
{
    memset(out, 0, sizeof(*out));
    chunker_t ck = {AH_BUF_INIT, include_usage, out};
    int rc = ah_buf_puts(&ck.prefix, "{\"id\":\"chatcmpl-mock-");
    rc |= ah_buf_puts(&ck.prefix, r->digest);
    rc |= ah_buf_puts(&ck.prefix, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    rc |= ah_buf_printf(&ck.prefix, "%lld", created);
    rc |= ah_buf_puts(&ck.prefix, ",\"model\":\"");
    rc |= ah_buf_json_escape(&ck.prefix, model ? model : "", model ? strlen(model) : 0);
    rc |= ah_buf_puts(&ck.prefix, "\",\"system_fingerprint\":\"fp_mock\",");
    size_t head_len = ck.prefix.len; /* what the usage chunk shares */
    rc |= ah_buf_puts(&ck.prefix, "\"choices\":[{\"index\":0,\"delta\":");
    if (rc) {
        ah_buf_free(&ck.prefix);
        return -ENOMEM;
    }
    if (r->n_calls) {
        static const char role[] = "{\"role\":\"assistant\",\"content\":null,\"refusal\":null}";
        rc = chunk(&ck, role, sizeof(role) - 1, NULL, false);
        ah_buf_t d = AH_BUF_INIT;
        for (size_t i = 0; i < r->n_calls && rc == 0; i++) {
            const ah_mock_call_t *c = &r->calls[i];
            ah_buf_reset(&d);
            rc |= ah_buf_printf(&d, "{\"tool_calls\":[{\"index\":%zu,\"id\":\"", i);
            rc |= ah_buf_json_escape(&d, c->id, strlen(c->id));
            rc |= ah_buf_puts(&d, "\",\"type\":\"function\",\"function\":{\"name\":\"");
            rc |= ah_buf_json_escape(&d, c->name, strlen(c->name));
            rc |= ah_buf_puts(&d, "\",\"arguments\":\"\"}}]}");
            if (rc == 0)
                rc = chunk(&ck, d.data, d.len, NULL, false);
            char open[96];
            snprintf(open, sizeof(open),
                     "{\"tool_calls\":[{\"index\":%zu,\"function\":{\"arguments\":\"", i);
            if (rc == 0)
                rc = chunk_pieces(&ck, open, "\"}}]}", c->arguments, strlen(c->arguments));
        }
        ah_buf_free(&d);
    } else {
        static const char role[] = "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}";
        rc = chunk(&ck, role, sizeof(role) - 1, NULL, false);
        if (rc == 0)
            rc = chunk_pieces(&ck, "{\"content\":\"", "\"}", r->text ? r->text : "", r->text_len);
    }
    if (rc == 0)
        rc = chunk(&ck, "{}", 2, finish_reason(r), false);
    if (rc == 0 && include_usage) {
        json_t *u = usage_json(r);
        char *us = u ? json_dumps(u, JSON_COMPACT) : NULL;
        json_decref(u);
        ah_buf_t b = AH_BUF_INIT;
        rc = us ? 0 : -ENOMEM;
        if (rc == 0) {
            rc |= ah_buf_append(&b, ck.prefix.data, head_len);
            rc |= ah_buf_puts(&b, "\"choices\":[],\"usage\":");
            rc |= ah_buf_puts(&b, us);
            rc |= ah_buf_putc(&b, '}');
            if (rc == 0)
                rc = stream_push(out, NULL, &b, false);
        }
        free(us);
        ah_buf_free(&b);
        rc = rc ? -ENOMEM : 0;
    }
    ah_buf_free(&ck.prefix);
    if (rc)
        ah_mock_stream_free(out);
    return rc;
}

/* ---- Anthropic output ---- */

static const char *stop_reason(const ah_mock_reply_t *r)
{
    switch (r->finish) {
    case AH_MOCK_FINISH_TOOL_CALLS:
        return "tool_use";
    case AH_MOCK_FINISH_LENGTH:
        return "max_tokens";
    default:
        return "end_turn";
    }
}

static json_t *anthropic_usage(long input, long output)
{
    bool bad = false;
    json_t *u = json_object();
    put(u, "input_tokens", json_integer(input), &bad);
    put(u, "cache_creation_input_tokens", json_integer(0), &bad);
    put(u, "cache_read_input_tokens", json_integer(0), &bad);
    put(u, "output_tokens", json_integer(output), &bad);
    if (bad) {
        json_decref(u);
        return NULL;
    }
    return u;
}

/* The tool_use block of call c; input is the parsed arguments (or {} in the stream start). */
static json_t *tool_use_block(const ah_mock_call_t *c, bool with_input)
{
    bool bad = false;
    json_t *b = json_object();
    put(b, "type", json_string("tool_use"), &bad);
    put(b, "id", json_string(c->id), &bad);
    put(b, "name", json_string(c->name), &bad);
    json_t *input = with_input ? json_loads(c->arguments, 0, NULL) : json_object();
    put(b, "input", input ? input : json_object(), &bad);
    if (bad) {
        json_decref(b);
        return NULL;
    }
    return b;
}

static json_t *message_skeleton(const ah_mock_reply_t *r, const char *model, bool final)
{
    bool bad = false;
    char id[48];
    snprintf(id, sizeof(id), "msg_mock_%s", r->digest);
    json_t *o = json_object();
    put(o, "id", json_string(id), &bad);
    put(o, "type", json_string("message"), &bad);
    put(o, "role", json_string("assistant"), &bad);
    put(o, "model", json_string(model ? model : ""), &bad);
    json_t *content = json_array();
    if (final && r->n_calls) {
        for (size_t i = 0; i < r->n_calls; i++)
            append(content, tool_use_block(&r->calls[i], true), &bad);
    } else if (final) {
        json_t *t = json_object();
        put(t, "type", json_string("text"), &bad);
        put(t, "text", json_stringn(r->text ? r->text : "", r->text_len), &bad);
        append(content, t, &bad);
    }
    put(o, "content", content, &bad);
    put(o, "stop_reason", final ? json_string(stop_reason(r)) : json_null(), &bad);
    put(o, "stop_sequence", json_null(), &bad);
    /* message_start reports output_tokens 1, as the API does; message_delta has the total. */
    put(o, "usage", anthropic_usage(r->prompt_tokens, final ? r->completion_tokens : 1), &bad);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *ah_mock_message(const ah_mock_reply_t *r, const char *model)
{
    return message_skeleton(r, model, true);
}

/* content_block_delta events carrying s 4 characters at a time. */
static int block_pieces(ah_mock_stream_t *out, size_t index, const char *delta_type,
                        const char *field, const char *s, size_t n)
{
    ah_buf_t d = AH_BUF_INIT;
    int rc = 0;
    size_t off = 0;
    while (off < n && rc == 0) {
        size_t len = utf8_prefix(s + off, n - off, CHUNK_CHARS);
        ah_buf_reset(&d);
        rc |= ah_buf_printf(&d,
                            "{\"type\":\"content_block_delta\",\"index\":%zu,\"delta\":{\"type\":"
                            "\"%s\",\"%s\":\"",
                            index, delta_type, field);
        rc |= ah_buf_json_escape(&d, s + off, len);
        rc |= ah_buf_puts(&d, "\"}}");
        if (rc == 0)
            rc = stream_push(out, "content_block_delta", &d, true);
        off += len;
    }
    ah_buf_free(&d);
    return rc ? -ENOMEM : 0;
}

static int block_start(ah_mock_stream_t *out, size_t index, json_t *block)
{
    if (!block)
        return -ENOMEM;
    return stream_push_json(out, "content_block_start",
                            json_pack("{s:s, s:I, s:o}", "type", "content_block_start", "index",
                                      (json_int_t)index, "content_block", block),
                            false);
}

static int block_stop(ah_mock_stream_t *out, size_t index)
{
    return stream_push_json(
        out, "content_block_stop",
        json_pack("{s:s, s:I}", "type", "content_block_stop", "index", (json_int_t)index), false);
}

int ah_mock_message_events(const ah_mock_reply_t *r, const char *model, ah_mock_stream_t *out)
{
    memset(out, 0, sizeof(*out));
    json_t *msg = message_skeleton(r, model, false);
    int rc = stream_push_json(
        out, "message_start",
        msg ? json_pack("{s:s, s:o}", "type", "message_start", "message", msg) : NULL, false);
    if (rc == 0)
        rc = stream_push_json(out, "ping", json_pack("{s:s}", "type", "ping"), false);
    if (r->n_calls) {
        for (size_t i = 0; i < r->n_calls && rc == 0; i++) {
            const ah_mock_call_t *c = &r->calls[i];
            rc = block_start(out, i, tool_use_block(c, false));
            if (rc == 0)
                rc = block_pieces(out, i, "input_json_delta", "partial_json", c->arguments,
                                  strlen(c->arguments));
            if (rc == 0)
                rc = block_stop(out, i);
        }
    } else if (rc == 0) {
        rc = block_start(out, 0, json_pack("{s:s, s:s}", "type", "text", "text", ""));
        if (rc == 0)
            rc = block_pieces(out, 0, "text_delta", "text", r->text ? r->text : "", r->text_len);
        if (rc == 0)
            rc = block_stop(out, 0);
    }
    if (rc == 0)
        rc = stream_push_json(out, "message_delta",
                              json_pack("{s:s, s:{s:s, s:n}, s:{s:I}}", "type", "message_delta",
                                        "delta", "stop_reason", stop_reason(r), "stop_sequence",
                                        "usage", "output_tokens", (json_int_t)r->completion_tokens),
                              false);
    if (rc == 0)
        rc = stream_push_json(out, "message_stop", json_pack("{s:s}", "type", "message_stop"),
                              false);
    if (rc)
        ah_mock_stream_free(out);
    return rc;
}

const char *ah_mock_anthropic_error_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

json_t *ah_mock_anthropic_error(int status, const char *message)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                     ah_mock_anthropic_error_type(status), "message", message ? message : "");
}

/* ---- embeddings ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A unit vector of dims floats that depends only on seed. */
static void embed_vector(uint64_t seed, size_t dims, float *v)
{
    double norm = 0;
    uint64_t x = seed;
    for (size_t i = 0; i < dims; i++) {
        double d = (double)(splitmix64(&x) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        v[i] = (float)d;
        norm += d * d;
    }
    norm = sqrt(norm);
    for (size_t i = 0; i < dims && norm > 0; i++)
        v[i] = (float)(v[i] / norm);
}

static json_t *embedding_value(const float *v, size_t dims, bool base64)
{
    if (!base64) {
        bool bad = false;
        json_t *a = json_array();
        for (size_t i = 0; i < dims; i++)
            append(a, json_real((double)v[i]), &bad);
        if (bad) {
            json_decref(a);
            return NULL;
        }
        return a;
    }
    /* base64 of the little-endian float32 array, as the OpenAI API sends it. */
    unsigned char raw[AH_MOCK_EMBED_MAX_DIM * 4];
    for (size_t i = 0; i < dims; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++)
            raw[i * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
    }
    size_t enc_len = 4 * ((dims * 4 + 2) / 3) + 1;
    unsigned char *enc = malloc(enc_len);
    if (!enc)
        return NULL;
    EVP_EncodeBlock(enc, raw, (int)(dims * 4));
    json_t *s = json_string((const char *)enc);
    free(enc);
    return s;
}

/* Digest and token count of one input: a string or an array of token ids. */
static int embed_input(const json_t *in, uint64_t *seed, long *tokens)
{
    if (json_is_string(in)) {
        *seed = fnv1a(FNV_OFFSET, json_string_value(in), json_string_length(in));
        *tokens = ah_mock_tokens(json_string_value(in), json_string_length(in));
        return 0;
    }
    if (!json_is_array(in) || json_array_size(in) == 0)
        return -EINVAL;
    uint64_t h = FNV_OFFSET ^ 0x746f6b656e73ull; /* token ids never collide with text */
    size_t i;
    const json_t *t;
    json_array_foreach(in, i, t)
    {
        if (!json_is_integer(t))
            return -EINVAL;
        int64_t id = json_integer_value(t);
        h = fnv1a(h, &id, sizeof(id));
    }
    *seed = h;
    *tokens = (long)json_array_size(in);
    return 0;
}

json_t *ah_mock_embeddings(const json_t *req, const char *model, ah_buf_t *err)
{
    if (!json_is_object(req)) {
        fail_inval(err, "the request body must be a JSON object");
        return NULL;
    }
    const json_t *input = json_object_get(req, "input");
    /* One input (a string or a token array) or a list of them. */
    bool single = json_is_string(input) ||
                  (json_is_array(input) && json_is_integer(json_array_get(input, 0)));
    size_t n = single ? 1 : json_array_size(input);
    if (!input || (!single && (!json_is_array(input) || n == 0))) {
        fail_inval(err, "input: expected a string, an array of strings or an array of token "
                        "arrays");
        return NULL;
    }
    if (n > EMBED_MAX_INPUTS) {
        fail_inval(err, "input: at most %d inputs per request (got %zu)", EMBED_MAX_INPUTS, n);
        return NULL;
    }
    const json_t *dj = json_object_get(req, "dimensions");
    json_int_t dims = AH_MOCK_EMBED_DIMS;
    if (dj && !json_is_null(dj)) {
        dims = json_is_integer(dj) ? json_integer_value(dj) : 0;
        if (dims < 1 || dims > AH_MOCK_EMBED_MAX_DIM) {
            fail_inval(err, "dimensions: expected an integer from 1 to %d", AH_MOCK_EMBED_MAX_DIM);
            return NULL;
        }
    }
    const char *fmt = json_string_value(json_object_get(req, "encoding_format"));
    if (fmt && strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0) {
        fail_inval(err, "encoding_format: expected \"float\" or \"base64\" (got \"%s\")", fmt);
        return NULL;
    }
    bool base64 = fmt && strcmp(fmt, "base64") == 0;
    float *v = malloc((size_t)dims * sizeof(float));
    json_t *data = json_array();
    bool bad = !v || !data;
    long total = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        const json_t *in = single ? input : json_array_get(input, i);
        uint64_t seed;
        long tokens;
        if (embed_input(in, &seed, &tokens) != 0) {
            fail_inval(
                err, "input[%zu]: expected a string or a non-empty array of integer token ids", i);
            free(v);
            json_decref(data);
            return NULL;
        }
        total += tokens;
        embed_vector(seed ^ (uint64_t)dims, (size_t)dims, v);
        json_t *e = json_object();
        put(e, "object", json_string("embedding"), &bad);
        put(e, "index", json_integer((json_int_t)i), &bad);
        put(e, "embedding", embedding_value(v, (size_t)dims, base64), &bad);
        append(data, e, &bad);
    }
    free(v);
    json_t *o = json_object();
    put(o, "object", json_string("list"), &bad);
    put(o, "data", data, &bad);
    put(o, "model", json_string(model ? model : ""), &bad);
    put(o, "usage",
        json_pack("{s:I, s:I}", "prompt_tokens", (json_int_t)total, "total_tokens",
                  (json_int_t)total),
        &bad);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- counters ---- */

#define COUNTER_BUCKETS 256

typedef struct counter {
    struct counter *next;
    uint64_t requests, aborted, failed;
    char model[];
} counter_t;

/* g_mu guards g_buckets, g_n_counters and every counter's fields. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static counter_t *g_buckets[COUNTER_BUCKETS];
static size_t g_n_counters;
static atomic_ullong g_requests, g_aborted, g_failed;

/* The counter of model, created when create is set and there is room. Under g_mu. */
static counter_t *counter_get(const char *model, bool create)
{
    size_t len = strlen(model);
    size_t b = fnv1a(FNV_OFFSET, model, len) % COUNTER_BUCKETS;
    for (counter_t *c = g_buckets[b]; c; c = c->next)
        if (strcmp(c->model, model) == 0)
            return c;
    if (!create || g_n_counters >= AH_MOCK_MAX_COUNTERS)
        return NULL;
    counter_t *c = calloc(1, sizeof(*c) + len + 1);
    if (!c)
        return NULL;
    memcpy(c->model, model, len + 1);
    c->next = g_buckets[b];
    g_buckets[b] = c;
    g_n_counters++;
    return c;
}

bool ah_mock_count_request(const char *model, const ah_mock_opts_t *opts)
{
    atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
    bool fail = opts && opts->status != 0;
    pthread_mutex_lock(&g_mu);
    counter_t *c = counter_get(model ? model : "", true);
    if (c) {
        c->requests++;
        if (fail && opts->fail_times > 0 && c->requests > (uint64_t)opts->fail_times)
            fail = false;
        if (fail)
            c->failed++;
    }
    pthread_mutex_unlock(&g_mu);
    if (fail)
        atomic_fetch_add_explicit(&g_failed, 1, memory_order_relaxed);
    return fail;
}

void ah_mock_count_abort(const char *model)
{
    atomic_fetch_add_explicit(&g_aborted, 1, memory_order_relaxed);
    pthread_mutex_lock(&g_mu);
    counter_t *c = counter_get(model ? model : "", false);
    if (c)
        c->aborted++;
    pthread_mutex_unlock(&g_mu);
}

json_t *ah_mock_stats(void)
{
    bool bad = false;
    json_t *by = json_object();
    pthread_mutex_lock(&g_mu);
    for (size_t b = 0; b < COUNTER_BUCKETS; b++)
        for (counter_t *c = g_buckets[b]; c; c = c->next)
            put(by, c->model,
                json_pack("{s:I, s:I, s:I}", "requests", (json_int_t)c->requests, "aborted",
                          (json_int_t)c->aborted, "failed", (json_int_t)c->failed),
                &bad);
    pthread_mutex_unlock(&g_mu);
    json_t *o = json_object();
    put(o, "requests", json_integer((json_int_t)atomic_load(&g_requests)), &bad);
    put(o, "aborted", json_integer((json_int_t)atomic_load(&g_aborted)), &bad);
    put(o, "failed", json_integer((json_int_t)atomic_load(&g_failed)), &bad);
    put(o, "by_model", by, &bad);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void ah_mock_stats_reset(void)
{
    pthread_mutex_lock(&g_mu);
    for (size_t b = 0; b < COUNTER_BUCKETS; b++) {
        counter_t *c = g_buckets[b];
        while (c) {
            counter_t *next = c->next;
            free(c);
            c = next;
        }
        g_buckets[b] = NULL;
    }
    g_n_counters = 0;
    atomic_store(&g_requests, 0);
    atomic_store(&g_aborted, 0);
    atomic_store(&g_failed, 0);
    pthread_mutex_unlock(&g_mu);
}
