/*
 * anthropic.c - OpenAI Chat Completions <-> Anthropic Messages translation;
 * see anthropic.h and docs/internals/anthropic.md for the mapping tables.
 *
 * Requests and whole answers are built with jansson (once per call, clarity
 * first). Stream chunks are written by hand into the caller's buffer: they
 * are produced once per token, and all share a precomputed head
 * ({"id","object","created","model"}), so a text delta costs one JSON parse
 * of the upstream event and a few appends.
 */
#include "gateway/anthropic.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small helpers ---- */

/*
 * Appends to one buffer are OR-ed together below (each is 0 or a negative
 * errno); this turns the mix back into one errno: -E2BIG when the caller's
 * buffer limit was hit, else -ENOMEM.
 */
static int buf_rc(int rc)
{
    return rc == 0 ? 0 : rc == -E2BIG ? -E2BIG : -ENOMEM;
}

static void buf_truncate(ah_buf_t *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

static int dump_cb(const char *p, size_t n, void *ud)
{
    return ah_buf_append(ud, p, n) ? -1 : 0;
}

/* Appends j as compact JSON; out is unchanged on failure. */
static int append_json(ah_buf_t *out, const json_t *j)
{
    size_t mark = out->len;
    if (json_dump_callback(j, dump_cb, out, JSON_COMPACT) != 0) {
        buf_truncate(out, mark);
        return -ENOMEM;
    }
    return 0;
}

/* Sets key to a new value; a NULL value (failed allocation) is reported, not ignored. */
static int set_new(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v) ? -ENOMEM : 0;
}

static const char *str_or(const json_t *j, const char *dflt)
{
    const char *s = json_string_value(j);
    return s ? s : dflt;
}

static bool is_str(const json_t *j, const char *s)
{
    const char *v = json_string_value(j);
    return v && strcmp(v, s) == 0;
}

/* ---- errors: Anthropic error type -> OpenAI error and status ---- */

typedef struct {
    const char *anthropic_type;
    int status;           /* status answered to the client */
    const char *type;     /* OpenAI error type */
    const char *code;     /* OpenAI error code, NULL for null */
    const char *upstream; /* non-NULL: the fault is the gateway's upstream setup, say so */
} err_map_t;

/*
 * Anthropic's documented error types (API errors page). 401/403/404/402 are
 * about the gateway's key, account or configured model, not the client's
 * request: answering them with the same status would make an SDK report
 * "invalid API key" for the client's (valid) hub key. They become 502.
 */
static const err_map_t err_map[] = {
    {"invalid_request_error", 400, "invalid_request_error", NULL, NULL},
    {"request_too_large", 413, "invalid_request_error", "request_too_large", NULL},
    {"rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded", NULL},
    {"authentication_error", 502, "server_error", "upstream_authentication_error",
     "rejected the gateway's credentials"},
    {"permission_error", 502, "server_error", "upstream_permission_error",
     "denied the gateway's credentials access"},
    {"billing_error", 502, "server_error", "upstream_billing_error",
     "refused the request for billing reasons"},
    {"not_found_error", 502, "server_error", "upstream_not_found",
     "does not know the configured model or endpoint"},
    {"api_error", 502, "server_error", "upstream_error", NULL},
    {"overloaded_error", 503, "server_error", "upstream_overloaded", NULL},
    {"timeout_error", 504, "timeout_error", "upstream_timeout", NULL},
};

static const err_map_t *err_by_type(const char *type)
{
    for (size_t i = 0; type && i < sizeof(err_map) / sizeof(err_map[0]); i++)
        if (strcmp(err_map[i].anthropic_type, type) == 0)
            return &err_map[i];
    return NULL;
}

static const err_map_t *err_by_status(int status)
{
    static const err_map_t other = {"api_error", 502, "server_error", "upstream_error", NULL};
    const char *t;
    switch (status) {
    case 400:
        t = "invalid_request_error";
        break;
    case 401:
        t = "authentication_error";
        break;
    case 402:
        t = "billing_error";
        break;
    case 403:
        t = "permission_error";
        break;
    case 404:
        t = "not_found_error";
        break;
    case 413:
        t = "request_too_large";
        break;
    case 429:
        t = "rate_limit_error";
        break;
    case 408:
    case 504:
        t = "timeout_error";
        break;
    case 529:
        t = "overloaded_error";
        break;
    default:
        return &other;
    }
    return err_by_type(t);
}

/* Appends {"error":{"message","type","param":null,"code"}}. */
static int write_error(ah_buf_t *out, const char *message, const char *type, const char *code)
{
    json_t *e = json_object(), *o = json_object();
    int rc = (!e || !o) ? -ENOMEM : 0;
    if (!rc) {
        rc |= set_new(e, "message", json_string(message));
        rc |= set_new(e, "type", json_string(type));
        rc |= set_new(e, "param", json_null());
        rc |= set_new(e, "code", code ? json_string(code) : json_null());
        rc |= json_object_set(o, "error", e) ? -ENOMEM : 0;
    }
    if (!rc)
        rc = append_json(out, o);
    json_decref(e);
    json_decref(o);
    return rc ? -ENOMEM : 0;
}

/* Writes the OpenAI form of an Anthropic error {"type","message"} object; returns the status. */
static int translate_error(int status, const json_t *error, ah_buf_t *out)
{
    const char *atype = json_string_value(json_object_get(error, "type"));
    const char *amsg = json_string_value(json_object_get(error, "message"));
    const err_map_t *m = err_by_type(atype);
    if (!m)
        m = err_by_status(status);
    ah_buf_t msg = AH_BUF_INIT;
    int rc;
    if (m->upstream)
        rc = ah_buf_printf(&msg, "the upstream provider (anthropic) %s: %s", m->upstream,
                           amsg && *amsg ? amsg
                           : atype       ? atype
                                         : "no details");
    else if (amsg && *amsg)
        rc = ah_buf_printf(&msg, "anthropic: %s", amsg);
    else if (status > 0)
        rc = ah_buf_printf(&msg, "anthropic returned HTTP %d%s%s", status, atype ? " " : "",
                           atype ? atype : "");
    else /* an error event inside a stream */
        rc = ah_buf_printf(&msg, "anthropic ended the stream with an error%s%s", atype ? ": " : "",
                           atype ? atype : "");
    if (!rc)
        rc = write_error(out, msg.data, m->type, m->code);
    ah_buf_free(&msg);
    return rc ? rc : m->status;
}

int ah_anthropic_error(int http_status, const char *body, size_t len, ah_buf_t *openai_error_json)
{
    json_t *j = body && len ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;
    /* {"type":"error","error":{"type":..,"message":..},"request_id":..} */
    json_t *error = json_object_get(j, "error");
    int rc = translate_error(http_status, json_is_object(error) ? error : NULL, openai_error_json);
    json_decref(j);
    return rc;
}

/* ---- request: OpenAI -> Anthropic ---- */

typedef struct {
    ah_buf_t *err;
    const char **err_param;
    json_t *messages; /* Anthropic messages being built */
    ah_buf_t system;  /* joined system/developer text */
} req_t;

static void path_fmt(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats a field path for an error message; a path cut short is still useful. */
static void path_fmt(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(dst, n, fmt, ap);
    va_end(ap);
    if (r < 0)
        dst[0] = '\0';
}

static int req_fail(req_t *c, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Records a 400 error: err gets "param: message"; the param itself is stored
 * after the message's NUL in err's memory so *err_param needs no owner.
 */
static int req_fail(req_t *c, const char *param, const char *fmt, ...)
{
    ah_buf_t *e = c->err;
    if (c->err_param)
        *c->err_param = NULL;
    if (!e)
        return -EINVAL;
    ah_buf_reset(e);
    if (param && ah_buf_printf(e, "%s: ", param))
        return -ENOMEM;
    va_list ap;
    va_start(ap, fmt);
    int rc = ah_buf_vprintf(e, fmt, ap);
    va_end(ap);
    if (rc)
        return rc == -E2BIG ? -EINVAL : -ENOMEM;
    if (param && c->err_param) {
        size_t pl = strlen(param);
        if (ah_buf_reserve(e, pl + 1) == 0) {
            char *dst = e->data + e->len + 1;
            memcpy(dst, param, pl + 1);
            *c->err_param = dst;
        }
    }
    return -EINVAL;
}

static bool is_tool_result(const json_t *block)
{
    return is_str(json_object_get(block, "type"), "tool_result");
}

/*
 * Adds blocks (reference stolen) as a message of role, merged into the
 * previous message when it has the same role: Anthropic requires user and
 * assistant turns to alternate, OpenAI does not. In a user turn tool_result
 * blocks go before any other block, as Anthropic requires.
 */
static int push_blocks(req_t *c, const char *role, json_t *blocks)
{
    size_t n = json_array_size(c->messages);
    json_t *last = n ? json_array_get(c->messages, n - 1) : NULL;
    int rc = 0;
    if (json_array_size(blocks) == 0) {
        json_decref(blocks);
        return 0;
    }
    if (last && is_str(json_object_get(last, "role"), role)) {
        json_t *dst = json_object_get(last, "content");
        size_t i;
        json_t *b;
        json_array_foreach(blocks, i, b)
        {
            if (is_tool_result(b)) {
                size_t pos = 0;
                while (pos < json_array_size(dst) && is_tool_result(json_array_get(dst, pos)))
                    pos++;
                rc |= json_array_insert(dst, pos, b);
            } else {
                rc |= json_array_append(dst, b);
            }
        }
        json_decref(blocks);
        return rc ? -ENOMEM : 0;
    }
    json_t *m = json_object();
    if (!m) {
        json_decref(blocks);
        return -ENOMEM;
    }
    rc |= set_new(m, "role", json_string(role));
    rc |= set_new(m, "content", blocks);
    rc |= json_array_append_new(c->messages, m);
    return rc ? -ENOMEM : 0;
}

static json_t *text_block(const json_t *text)
{
    json_t *b = json_object();
    if (b &&
        (set_new(b, "type", json_string("text")) ||
         set_new(b, "text", json_stringn(json_string_value(text), json_string_length(text))))) {
        json_decref(b);
        return NULL;
    }
    return b;
}

/*
 * Parses "data:<media type>[;param]*;base64,<data>" into its media type and
 * data. Returns false when url is not a base64 data URL.
 */
static bool parse_data_url(const char *url, size_t len, const char **mt, size_t *mt_len,
                           const char **data, size_t *data_len)
{
    if (len < 5 || memcmp(url, "data:", 5) != 0)
        return false;
    const char *comma = memchr(url, ',', len);
    if (!comma)
        return false;
    const char *head = url + 5;
    size_t head_len = (size_t)(comma - head);
    if (head_len < 7 || memcmp(comma - 7, ";base64", 7) != 0)
        return false;
    const char *semi = memchr(head, ';', head_len);
    *mt = head;
    *mt_len = (size_t)(semi - head);
    *data = comma + 1;
    *data_len = len - (size_t)(*data - url);
    return *mt_len > 0;
}

/* {"type":kind,"source":{"type":"base64","media_type":..,"data":..}} */
static json_t *base64_block(const char *kind, const char *mt, size_t mt_len, const char *data,
                            size_t data_len)
{
    json_t *b = json_object(), *src = json_object();
    int rc = (!b || !src) ? -ENOMEM : 0;
    if (!rc) {
        rc |= set_new(src, "type", json_string("base64"));
        rc |= set_new(src, "media_type", json_stringn(mt, mt_len));
        rc |= set_new(src, "data", json_stringn(data, data_len));
        rc |= set_new(b, "type", json_string(kind));
        rc |= json_object_set(b, "source", src) ? -ENOMEM : 0;
    }
    json_decref(src);
    if (rc) {
        json_decref(b);
        return NULL;
    }
    return b;
}

static int image_part(req_t *c, const json_t *part, const char *path, json_t **out)
{
    char p[160];
    const json_t *iu = json_object_get(part, "image_url");
    const json_t *url = json_is_object(iu) ? json_object_get(iu, "url") : iu;
    path_fmt(p, sizeof(p), "%s.image_url.url", path);
    if (!json_is_string(url))
        return req_fail(c, p, "must be a string (an https URL or a base64 data URL)");
    const char *u = json_string_value(url);
    size_t n = json_string_length(url);
    const char *mt, *data;
    size_t mt_len, data_len;
    if (parse_data_url(u, n, &mt, &mt_len, &data, &data_len)) {
        *out = base64_block("image", mt, mt_len, data, data_len);
    } else if (n >= 5 && memcmp(u, "data:", 5) == 0) {
        return req_fail(c, p, "a data URL must look like data:image/png;base64,<data>");
    } else if ((n > 7 && memcmp(u, "http://", 7) == 0) ||
               (n > 8 && memcmp(u, "https://", 8) == 0)) {
        json_t *b = json_object(), *src = json_object();
        int rc = (!b || !src) ? -ENOMEM : 0;
        if (!rc) {
            rc |= set_new(src, "type", json_string("url"));
            rc |= set_new(src, "url", json_stringn(u, n));
            rc |= set_new(b, "type", json_string("image"));
            rc |= json_object_set(b, "source", src) ? -ENOMEM : 0;
        }
        json_decref(src);
        if (rc) {
            json_decref(b);
            b = NULL;
        }
        *out = b;
    } else {
        return req_fail(c, p, "must be an http(s) URL or a base64 data URL");
    }
    return *out ? 0 : -ENOMEM;
}

/* OpenAI file part with inline file_data (PDF) -> Anthropic document block. */
static int file_part(req_t *c, const json_t *part, const char *path, json_t **out)
{
    char p[160];
    const json_t *f = json_object_get(part, "file");
    const json_t *fd = json_object_get(f, "file_data");
    path_fmt(p, sizeof(p), "%s.file.file_data", path);
    if (!json_is_string(fd))
        return req_fail(c, p,
                        "is required: file_id references OpenAI's file store, which anthropic "
                        "cannot read; send the file inline as a base64 data URL");
    const char *mt, *data;
    size_t mt_len, data_len;
    if (!parse_data_url(json_string_value(fd), json_string_length(fd), &mt, &mt_len, &data,
                        &data_len))
        return req_fail(c, p, "must be a base64 data URL (data:application/pdf;base64,<data>)");
    if (mt_len != 15 || memcmp(mt, "application/pdf", 15) != 0)
        return req_fail(c, p, "only application/pdf files are supported by anthropic");
    *out = base64_block("document", mt, mt_len, data, data_len);
    return *out ? 0 : -ENOMEM;
}

/*
 * Converts OpenAI message content (string, array of parts, or null) into
 * Anthropic blocks appended to blocks. Empty text is dropped: Anthropic
 * rejects empty text blocks while OpenAI allows "".
 */
static int content_blocks(req_t *c, const json_t *content, size_t mi, bool assistant,
                          json_t *blocks)
{
    char p[160];
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        if (json_string_length(content) == 0)
            return 0;
        return json_array_append_new(blocks, text_block(content)) ? -ENOMEM : 0;
    }
    if (!json_is_array(content)) {
        path_fmt(p, sizeof(p), "messages[%zu].content", mi);
        return req_fail(c, p, "must be a string, an array of content parts, or null");
    }
    size_t j;
    const json_t *part;
    json_array_foreach(content, j, part)
    {
        path_fmt(p, sizeof(p), "messages[%zu].content[%zu]", mi, j);
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type)
            return req_fail(c, p, "must be an object with a string \"type\"");
        json_t *b = NULL;
        int rc;
        if (strcmp(type, "text") == 0 || (assistant && strcmp(type, "refusal") == 0)) {
            const json_t *t = json_object_get(part, type[0] == 't' ? "text" : "refusal");
            if (!json_is_string(t))
                return req_fail(c, p, "a %s part needs a string \"%s\"", type, type);
            if (json_string_length(t) == 0)
                continue;
            b = text_block(t);
            rc = b ? 0 : -ENOMEM;
        } else if (!assistant && strcmp(type, "image_url") == 0) {
            rc = image_part(c, part, p, &b);
        } else if (!assistant && strcmp(type, "file") == 0) {
            rc = file_part(c, part, p, &b);
        } else if (!assistant && strcmp(type, "input_audio") == 0) {
            return req_fail(c, p, "audio input is not supported by anthropic models");
        } else {
            return req_fail(c, p, "content part type \"%s\" is not supported here", type);
        }
        if (rc)
            return rc;
        if (json_array_append_new(blocks, b))
            return -ENOMEM;
    }
    return 0;
}

/* Text of content (string or array of text parts) appended to out, parts joined by sep. */
static int content_text(req_t *c, const json_t *content, const char *path, ah_buf_t *out,
                        const char *sep)
{
    char p[160];
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        size_t n = json_string_length(content);
        if (n && out->len && ah_buf_puts(out, sep))
            return -ENOMEM;
        return n ? (ah_buf_append(out, json_string_value(content), n) ? -ENOMEM : 0) : 0;
    }
    if (!json_is_array(content))
        return req_fail(c, path, "must be a string or an array of text parts");
    size_t j;
    const json_t *part;
    json_array_foreach(content, j, part)
    {
        const json_t *t = json_object_get(part, "text");
        if (!is_str(json_object_get(part, "type"), "text") || !json_is_string(t)) {
            path_fmt(p, sizeof(p), "%s[%zu]", path, j);
            return req_fail(c, p, "only text parts are supported here");
        }
        size_t n = json_string_length(t);
        if (n == 0)
            continue;
        if (out->len && ah_buf_puts(out, sep))
            return -ENOMEM;
        if (ah_buf_append(out, json_string_value(t), n))
            return -ENOMEM;
    }
    return 0;
}

/* True when s (n bytes) is empty or only JSON whitespace. */
static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

static int tool_calls_blocks(req_t *c, const json_t *tcs, size_t mi, json_t *blocks)
{
    char p[160];
    if (!tcs || json_is_null(tcs))
        return 0;
    if (!json_is_array(tcs)) {
        path_fmt(p, sizeof(p), "messages[%zu].tool_calls", mi);
        return req_fail(c, p, "must be an array");
    }
    size_t k;
    const json_t *tc;
    json_array_foreach(tcs, k, tc)
    {
        path_fmt(p, sizeof(p), "messages[%zu].tool_calls[%zu]", mi, k);
        const json_t *type = json_object_get(tc, "type");
        const json_t *id = json_object_get(tc, "id");
        const json_t *fn = json_object_get(tc, "function");
        const json_t *name = json_object_get(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        if (!json_is_object(tc))
            return req_fail(c, p, "must be an object");
        if (type && !is_str(type, "function"))
            return req_fail(c, p, "only tool calls of type \"function\" are supported");
        if (!json_is_string(id) || json_string_length(id) == 0)
            return req_fail(c, p, "needs a non-empty string \"id\"");
        if (!json_is_string(name)) {
            path_fmt(p, sizeof(p), "messages[%zu].tool_calls[%zu].function.name", mi, k);
            return req_fail(c, p, "must be a string");
        }
        json_t *input;
        if (!args || json_is_null(args) ||
            (json_is_string(args) && blank(json_string_value(args), json_string_length(args)))) {
            input = json_object(); /* a call without arguments */
        } else {
            path_fmt(p, sizeof(p), "messages[%zu].tool_calls[%zu].function.arguments", mi, k);
            if (!json_is_string(args))
                return req_fail(c, p, "must be a string of JSON");
            json_error_t je;
            input = json_loadb(json_string_value(args), json_string_length(args), 0, &je);
            if (!input)
                return req_fail(c, p, "is not valid JSON (%s at position %d)", je.text,
                                je.position);
            if (!json_is_object(input)) {
                json_decref(input);
                return req_fail(c, p, "must be a JSON object");
            }
        }
        json_t *b = json_object();
        int rc = (!b || !input) ? -ENOMEM : 0;
        if (!rc) {
            rc |= set_new(b, "type", json_string("tool_use"));
            rc |= set_new(b, "id", json_stringn(json_string_value(id), json_string_length(id)));
            rc |=
                set_new(b, "name", json_stringn(json_string_value(name), json_string_length(name)));
            rc |= json_object_set(b, "input", input) ? -ENOMEM : 0;
        }
        json_decref(input);
        if (rc || json_array_append_new(blocks, b)) {
            if (rc)
                json_decref(b);
            return -ENOMEM;
        }
    }
    return 0;
}

/* role "tool" -> a tool_result block in a user turn. */
static int tool_message(req_t *c, const json_t *m, size_t mi)
{
    char p[160];
    const json_t *id = json_object_get(m, "tool_call_id");
    if (!json_is_string(id) || json_string_length(id) == 0) {
        path_fmt(p, sizeof(p), "messages[%zu].tool_call_id", mi);
        return req_fail(c, p, "must be a non-empty string");
    }
    json_t *b = json_object(), *blocks = json_array();
    int rc = (!b || !blocks) ? -ENOMEM : 0;
    if (!rc) {
        rc |= set_new(b, "type", json_string("tool_result"));
        rc |=
            set_new(b, "tool_use_id", json_stringn(json_string_value(id), json_string_length(id)));
    }
    const json_t *content = json_object_get(m, "content");
    if (!rc && json_is_string(content)) {
        if (json_string_length(content))
            rc = set_new(b, "content",
                         json_stringn(json_string_value(content), json_string_length(content)));
    } else if (!rc && content && !json_is_null(content)) {
        /* Array of text parts: kept as text blocks inside the tool_result. */
        json_t *inner = json_array();
        path_fmt(p, sizeof(p), "messages[%zu].content", mi);
        if (!json_is_array(content)) {
            rc = req_fail(c, p, "must be a string or an array of text parts");
        } else {
            size_t j;
            const json_t *part;
            json_array_foreach(content, j, part)
            {
                const json_t *t = json_object_get(part, "text");
                if (!is_str(json_object_get(part, "type"), "text") || !json_is_string(t)) {
                    path_fmt(p, sizeof(p), "messages[%zu].content[%zu]", mi, j);
                    rc = req_fail(c, p, "tool messages may only contain text parts");
                    break;
                }
                if (json_string_length(t) && json_array_append_new(inner, text_block(t))) {
                    rc = -ENOMEM;
                    break;
                }
            }
        }
        if (!rc && json_array_size(inner))
            rc = json_object_set(b, "content", inner) ? -ENOMEM : 0;
        json_decref(inner);
    }
    if (!rc && json_array_append(blocks, b))
        rc = -ENOMEM;
    json_decref(b);
    if (rc) {
        json_decref(blocks);
        return rc;
    }
    return push_blocks(c, "user", blocks);
}

static int translate_messages(req_t *c, const json_t *msgs)
{
    char p[160];
    if (!json_is_array(msgs))
        return req_fail(c, "messages", "is required and must be an array");
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m)
    {
        path_fmt(p, sizeof(p), "messages[%zu].role", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role)
            return req_fail(c, p, "each message must be an object with a string \"role\"");
        const json_t *content = json_object_get(m, "content");
        int rc;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            /* Anthropic has one top-level system prompt: every system message goes there. */
            path_fmt(p, sizeof(p), "messages[%zu].content", i);
            rc = content_text(c, content, p, &c->system, "\n");
        } else if (strcmp(role, "user") == 0) {
            json_t *blocks = json_array();
            rc = blocks ? content_blocks(c, content, i, false, blocks) : -ENOMEM;
            if (rc)
                json_decref(blocks);
            else
                rc = push_blocks(c, "user", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            const json_t *fc = json_object_get(m, "function_call");
            if (fc && !json_is_null(fc)) {
                path_fmt(p, sizeof(p), "messages[%zu].function_call", i);
                return req_fail(c, p, "is deprecated and not supported; use tool_calls");
            }
            json_t *blocks = json_array();
            rc = blocks ? content_blocks(c, content, i, true, blocks) : -ENOMEM;
            if (!rc)
                rc = tool_calls_blocks(c, json_object_get(m, "tool_calls"), i, blocks);
            if (rc)
                json_decref(blocks);
            else
                rc = push_blocks(c, "assistant", blocks);
        } else if (strcmp(role, "tool") == 0) {
            rc = tool_message(c, m, i);
        } else if (strcmp(role, "function") == 0) {
            return req_fail(c, p, "role \"function\" is deprecated and not supported; use tool");
        } else {
            return req_fail(c, p,
                            "unknown role \"%s\" (known: system, developer, user, "
                            "assistant, tool)",
                            role);
        }
        if (rc)
            return rc;
    }
    if (json_array_size(c->messages) == 0)
        return req_fail(c, "messages",
                        "must contain at least one user or assistant message "
                        "with content");
    return 0;
}

static int translate_tools(req_t *c, const json_t *req, json_t *o)
{
    char p[96];
    const json_t *tools = json_object_get(req, "tools");
    const json_t *choice = json_object_get(req, "tool_choice");
    const json_t *parallel = json_object_get(req, "parallel_tool_calls");
    size_t n_tools = 0;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return req_fail(c, "tools", "must be an array");
        json_t *out = json_array();
        if (!out || set_new(o, "tools", out))
            return -ENOMEM;
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t)
        {
            path_fmt(p, sizeof(p), "tools[%zu]", i);
            const json_t *fn = json_object_get(t, "function");
            const json_t *name = json_object_get(fn, "name");
            const json_t *desc = json_object_get(fn, "description");
            const json_t *params = json_object_get(fn, "parameters");
            if (!is_str(json_object_get(t, "type"), "function") || !json_is_object(fn))
                return req_fail(c, p, "only tools of type \"function\" are supported");
            if (!json_is_string(name) || json_string_length(name) == 0) {
                path_fmt(p, sizeof(p), "tools[%zu].function.name", i);
                return req_fail(c, p, "must be a non-empty string");
            }
            if (params && !json_is_null(params) && !json_is_object(params)) {
                path_fmt(p, sizeof(p), "tools[%zu].function.parameters", i);
                return req_fail(c, p, "must be a JSON Schema object");
            }
            json_t *schema = json_is_object(params) ? json_deep_copy(params) : json_object();
            json_t *tool = json_object();
            int rc = (!schema || !tool) ? -ENOMEM : 0;
            /* Anthropic requires an object schema; OpenAI allows {} for "no parameters". */
            if (!rc && !json_object_get(schema, "type"))
                rc = set_new(schema, "type", json_string("object"));
            if (!rc) {
                rc |= set_new(tool, "name",
                              json_stringn(json_string_value(name), json_string_length(name)));
                if (json_is_string(desc))
                    rc |= set_new(tool, "description",
                                  json_stringn(json_string_value(desc), json_string_length(desc)));
                rc |= json_object_set(tool, "input_schema", schema) ? -ENOMEM : 0;
            }
            json_decref(schema);
            if (rc || json_array_append_new(out, tool)) {
                if (rc)
                    json_decref(tool);
                return -ENOMEM;
            }
        }
        n_tools = json_array_size(out);
        if (n_tools == 0)
            json_object_del(o, "tools");
    }

    const char *kind = NULL; /* Anthropic tool_choice.type */
    const char *forced = NULL;
    if (json_is_string(choice)) {
        const char *s = json_string_value(choice);
        if (strcmp(s, "auto") == 0)
            kind = "auto";
        else if (strcmp(s, "required") == 0)
            kind = "any";
        else if (strcmp(s, "none") == 0)
            kind = "none";
        else
            return req_fail(c, "tool_choice", "unknown value \"%s\" (known: auto, required, none)",
                            s);
    } else if (json_is_object(choice)) {
        const json_t *name = json_object_get(json_object_get(choice, "function"), "name");
        if (!is_str(json_object_get(choice, "type"), "function") || !json_is_string(name))
            return req_fail(
                c, "tool_choice",
                "only {\"type\":\"function\",\"function\":{\"name\":...}} is supported");
        kind = "tool";
        forced = json_string_value(name);
    } else if (choice && !json_is_null(choice)) {
        return req_fail(c, "tool_choice", "must be a string or an object");
    }
    if (n_tools == 0) {
        /* Without tools only "auto"/"none" make sense, and then they change nothing. */
        if (kind && (strcmp(kind, "any") == 0 || strcmp(kind, "tool") == 0))
            return req_fail(c, "tool_choice", "requires tools");
        return 0;
    }
    bool no_parallel = json_is_false(parallel);
    if (!kind && !no_parallel)
        return 0;
    json_t *tc = json_object();
    if (!tc || set_new(o, "tool_choice", tc))
        return -ENOMEM;
    int rc = set_new(tc, "type", json_string(kind ? kind : "auto"));
    if (forced)
        rc |= set_new(tc, "name", json_string(forced));
    /* "none" takes no disable_parallel_tool_use: there are no calls to limit. */
    if (no_parallel && strcmp(kind ? kind : "auto", "none") != 0)
        rc |= set_new(tc, "disable_parallel_tool_use", json_true());
    return rc;
}

/* Rejects fields whose meaning Anthropic cannot honour (silently dropping them would lie). */
static int refuse_unsupported(req_t *c, const json_t *req)
{
    const json_t *v;
    if ((v = json_object_get(req, "n")) && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) != 1))
        return req_fail(c, "n", "only n=1 is supported by anthropic models");
    if (json_is_true(json_object_get(req, "logprobs")))
        return req_fail(c, "logprobs", "log probabilities are not available from anthropic");
    if ((v = json_object_get(req, "top_logprobs")) && json_is_integer(v) &&
        json_integer_value(v) > 0)
        return req_fail(c, "top_logprobs", "log probabilities are not available from anthropic");
    v = json_object_get(json_object_get(req, "response_format"), "type");
    if (v && !is_str(v, "text"))
        return req_fail(c, "response_format",
                        "type \"%s\" is not supported for anthropic models; describe the format "
                        "in the prompt or use a tool",
                        str_or(v, "?"));
    if ((v = json_object_get(req, "audio")) && !json_is_null(v))
        return req_fail(c, "audio", "audio output is not supported by anthropic models");
    size_t i;
    const json_t *mod;
    json_array_foreach(json_object_get(req, "modalities"), i, mod)
    {
        if (!is_str(mod, "text"))
            return req_fail(c, "modalities", "only the \"text\" modality is supported");
    }
    if ((v = json_object_get(req, "functions")) && !json_is_null(v))
        return req_fail(c, "functions", "is deprecated and not supported; use tools");
    if ((v = json_object_get(req, "function_call")) && !json_is_null(v))
        return req_fail(c, "function_call", "is deprecated and not supported; use tool_choice");
    if ((v = json_object_get(req, "web_search_options")) && !json_is_null(v))
        return req_fail(c, "web_search_options",
                        "web search is not supported for anthropic "
                        "models through this gateway");
    return 0;
}

static int translate_params(req_t *c, const json_t *req, json_t *o)
{
    const json_t *v;
    json_int_t max_tokens = AH_ANTHROPIC_DEFAULT_MAX_TOKENS;
    const char *mt_name = "max_completion_tokens";
    v = json_object_get(req, mt_name);
    if (!v || json_is_null(v)) {
        mt_name = "max_tokens";
        v = json_object_get(req, mt_name);
    }
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return req_fail(c, mt_name, "must be a positive integer");
        max_tokens = json_integer_value(v);
    }
    int rc = set_new(o, "max_tokens", json_integer(max_tokens));

    if ((v = json_object_get(req, "temperature")) && !json_is_null(v)) {
        double t = json_number_value(v);
        if (!json_is_number(v) || t < 0 || t > 2)
            return req_fail(c, "temperature", "must be a number between 0 and 2");
        /* OpenAI's range is 0..2, Anthropic's 0..1: clamp so one request fits both. */
        rc |= set_new(o, "temperature", json_real(t > 1 ? 1.0 : t));
    }
    if ((v = json_object_get(req, "top_p")) && !json_is_null(v)) {
        double t = json_number_value(v);
        if (!json_is_number(v) || t < 0 || t > 1)
            return req_fail(c, "top_p", "must be a number between 0 and 1");
        rc |= set_new(o, "top_p", json_real(t));
    }
    if ((v = json_object_get(req, "stop")) && !json_is_null(v)) {
        json_t *seq = json_array();
        if (!seq || set_new(o, "stop_sequences", seq))
            return -ENOMEM;
        if (json_is_string(v)) {
            if (json_string_length(v))
                rc |= json_array_append_new(
                    seq, json_stringn(json_string_value(v), json_string_length(v)));
        } else if (json_is_array(v)) {
            size_t i;
            const json_t *s;
            json_array_foreach(v, i, s)
            {
                if (!json_is_string(s))
                    return req_fail(c, "stop", "must be a string or an array of strings");
                if (json_string_length(s))
                    rc |= json_array_append_new(
                        seq, json_stringn(json_string_value(s), json_string_length(s)));
            }
        } else {
            return req_fail(c, "stop", "must be a string or an array of strings");
        }
        if (json_array_size(seq) == 0)
            json_object_del(o, "stop_sequences");
    }
    if ((v = json_object_get(req, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return req_fail(c, "stream", "must be a boolean");
        if (json_is_true(v))
            rc |= set_new(o, "stream", json_true());
    }
    /* End-user id for Anthropic's abuse detection: metadata.user, else user, else
     * safety_identifier. */
    const json_t *user = json_object_get(json_object_get(req, "metadata"), "user");
    if (!json_is_string(user))
        user = json_object_get(req, "user");
    if (!json_is_string(user))
        user = json_object_get(req, "safety_identifier");
    if (json_is_string(user) && json_string_length(user)) {
        json_t *md = json_object();
        if (!md || set_new(o, "metadata", md))
            return -ENOMEM;
        rc |=
            set_new(md, "user_id", json_stringn(json_string_value(user), json_string_length(user)));
    }
    return rc ? -ENOMEM : 0;
}

int ah_anthropic_request(const json_t *openai_req, const char *upstream_model, json_t **out,
                         ah_buf_t *err, const char **err_param)
{
    req_t c = {.err = err, .err_param = err_param};
    ah_buf_init(&c.system, 0);
    *out = NULL;
    if (err_param)
        *err_param = NULL;
    if (!json_is_object(openai_req))
        return req_fail(&c, NULL, "the request body must be a JSON object");
    int rc = refuse_unsupported(&c, openai_req);
    if (rc)
        return rc;
    json_t *o = json_object();
    c.messages = json_array();
    if (!o || !c.messages) {
        json_decref(o);
        json_decref(c.messages);
        return -ENOMEM;
    }
    rc = set_new(o, "model", json_string(upstream_model ? upstream_model : ""));
    if (!rc)
        rc = translate_params(&c, openai_req, o);
    if (!rc)
        rc = translate_messages(&c, json_object_get(openai_req, "messages"));
    if (!rc && c.system.len)
        rc = set_new(o, "system", json_stringn(c.system.data, c.system.len));
    if (!rc)
        rc = json_object_set(o, "messages", c.messages) ? -ENOMEM : 0;
    if (!rc)
        rc = translate_tools(&c, openai_req, o);
    json_decref(c.messages);
    ah_buf_free(&c.system);
    if (rc) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

/* ---- response: Anthropic -> OpenAI ---- */

/* Largest token count taken from an upstream (far above any real context). */
#define AH_ANTHROPIC_MAX_TOKEN_COUNT ((int64_t)1 << 40)

/* Anthropic stop_reason -> OpenAI finish_reason. */
static const char *finish_reason(const char *stop)
{
    if (!stop)
        return "stop";
    if (strcmp(stop, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop, "max_tokens") == 0 || strcmp(stop, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn, unknown */
}

static int64_t count_of(const json_t *usage, const char *key, bool *seen)
{
    const json_t *v = json_object_get(usage, key);
    if (!json_is_integer(v))
        return -1;
    *seen = true;
    json_int_t n = json_integer_value(v);
    /* Bounded so that sums cannot overflow, whatever an upstream sends. */
    return n < 0 ? 0 : n > AH_ANTHROPIC_MAX_TOKEN_COUNT ? AH_ANTHROPIC_MAX_TOKEN_COUNT : (int64_t)n;
}

static void usage_set(ah_llm_usage_t *u, int64_t in, int64_t cache_read, int64_t cache_creation,
                      int64_t out)
{
    /* Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens includes
     * them. */
    u->prompt_tokens = in + cache_read + cache_creation;
    u->completion_tokens = out;
    u->cached_tokens = cache_read;
    u->present = true;
}

static json_t *usage_json(const ah_llm_usage_t *u)
{
    json_t *o = json_object(), *d = json_object();
    int rc = (!o || !d) ? -ENOMEM : 0;
    if (!rc) {
        rc |= set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
        rc |= set_new(o, "completion_tokens", json_integer(u->completion_tokens));
        rc |= set_new(o, "total_tokens", json_integer(u->prompt_tokens + u->completion_tokens));
        rc |= set_new(d, "cached_tokens", json_integer(u->cached_tokens));
        rc |= json_object_set(o, "prompt_tokens_details", d) ? -ENOMEM : 0;
    }
    json_decref(d);
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int resp_fail(ah_buf_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int resp_fail(ah_buf_t *err, const char *fmt, ...)
{
    if (err) {
        ah_buf_reset(err);
        va_list ap;
        va_start(ap, fmt);
        int rc = ah_buf_vprintf(err, fmt, ap);
        va_end(ap);
        if (rc == -ENOMEM)
            return rc;
    }
    return -EINVAL;
}

/* The tool_calls entry for a tool_use block. */
static json_t *tool_call_json(const json_t *block)
{
    const json_t *input = json_object_get(block, "input");
    char *args = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    json_t *tc = json_object(), *fn = json_object();
    int rc = (!tc || !fn || !args) ? -ENOMEM : 0;
    if (!rc) {
        const json_t *id = json_object_get(block, "id");
        const json_t *name = json_object_get(block, "name");
        rc |= set_new(tc, "id", json_stringn(str_or(id, ""), json_string_length(id)));
        rc |= set_new(tc, "type", json_string("function"));
        rc |= set_new(fn, "name", json_stringn(str_or(name, ""), json_string_length(name)));
        rc |= set_new(fn, "arguments", json_string(args));
        rc |= json_object_set(tc, "function", fn) ? -ENOMEM : 0;
    }
    free(args);
    json_decref(fn);
    if (rc) {
        json_decref(tc);
        return NULL;
    }
    return tc;
}

int ah_anthropic_response(const char *body, size_t len, const char *public_model, ah_buf_t *out,
                          ah_llm_usage_t *usage, ah_buf_t *err)
{
    if (usage)
        memset(usage, 0, sizeof(*usage));
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    if (!j)
        return resp_fail(err, "anthropic answer is not JSON: %s at position %d", je.text,
                         je.position);
    int rc = 0;
    const json_t *type = json_object_get(j, "type");
    const json_t *content = json_object_get(j, "content");
    if (!json_is_object(j)) {
        rc = resp_fail(err, "anthropic answer is not a JSON object");
    } else if (is_str(type, "error")) {
        rc = resp_fail(err, "anthropic answered with an error: %s",
                       str_or(json_object_get(json_object_get(j, "error"), "message"), "?"));
    } else if (!is_str(type, "message") || !json_is_array(content)) {
        rc = resp_fail(err, "anthropic answer is not a message (type %s, content %s)",
                       str_or(type, "missing"), json_is_array(content) ? "array" : "missing");
    }
    if (rc) {
        json_decref(j);
        return rc;
    }

    ah_buf_t text = AH_BUF_INIT;
    bool has_text = false;
    json_t *tool_calls = json_array();
    json_t *o = json_object(), *choice = json_object(), *msg = json_object(),
           *choices = json_array();
    rc = (!tool_calls || !o || !choice || !msg || !choices) ? -ENOMEM : 0;
    size_t i;
    const json_t *b;
    json_array_foreach(content, i, b)
    {
        if (rc)
            break;
        const json_t *btype = json_object_get(b, "type");
        if (is_str(btype, "text")) {
            const json_t *t = json_object_get(b, "text");
            has_text = true;
            if (json_string_length(t) &&
                ah_buf_append(&text, json_string_value(t), json_string_length(t)))
                rc = -ENOMEM;
        } else if (is_str(btype, "tool_use")) {
            rc = json_array_append_new(tool_calls, tool_call_json(b)) ? -ENOMEM : 0;
        }
        /* thinking, redacted_thinking, server tool blocks: no OpenAI counterpart. */
    }
    ah_llm_usage_t u = {0};
    const json_t *ju = json_object_get(j, "usage");
    if (json_is_object(ju)) {
        bool seen = false;
        int64_t in = count_of(ju, "input_tokens", &seen);
        int64_t cr = count_of(ju, "cache_read_input_tokens", &seen);
        int64_t cc = count_of(ju, "cache_creation_input_tokens", &seen);
        int64_t ot = count_of(ju, "output_tokens", &seen);
        if (seen)
            usage_set(&u, in < 0 ? 0 : in, cr < 0 ? 0 : cr, cc < 0 ? 0 : cc, ot < 0 ? 0 : ot);
    }
    if (!rc) {
        const json_t *id = json_object_get(j, "id");
        rc |= set_new(o, "id", json_stringn(str_or(id, ""), json_string_length(id)));
        rc |= set_new(o, "object", json_string("chat.completion"));
        rc |= set_new(o, "created", json_integer((json_int_t)time(NULL)));
        rc |= set_new(o, "model", json_string(public_model ? public_model : ""));
        rc |= set_new(msg, "role", json_string("assistant"));
        rc |= set_new(msg, "content",
                      has_text || text.len ? json_stringn(text.data ? text.data : "", text.len)
                                           : json_null());
        rc |= set_new(msg, "refusal", json_null());
        if (json_array_size(tool_calls))
            rc |= json_object_set(msg, "tool_calls", tool_calls) ? -ENOMEM : 0;
        rc |= set_new(choice, "index", json_integer(0));
        rc |= json_object_set(choice, "message", msg) ? -ENOMEM : 0;
        rc |= set_new(choice, "logprobs", json_null());
        rc |= set_new(
            choice, "finish_reason",
            json_string(finish_reason(json_string_value(json_object_get(j, "stop_reason")))));
        rc |= json_array_append(choices, choice) ? -ENOMEM : 0;
        rc |= json_object_set(o, "choices", choices) ? -ENOMEM : 0;
        if (u.present)
            rc |= set_new(o, "usage", usage_json(&u));
    }
    if (!rc)
        rc = append_json(out, o);
    rc = rc ? -ENOMEM : 0;
    if (!rc && usage)
        *usage = u;
    ah_buf_free(&text);
    json_decref(tool_calls);
    json_decref(msg);
    json_decref(choice);
    json_decref(choices);
    json_decref(o);
    json_decref(j);
    return rc;
}

/* ---- stream: Anthropic events -> OpenAI chunks ---- */

int ah_anthropic_stream_init(ah_anthropic_stream_t *st, const char *id_prefix,
                             const char *public_model, int64_t created, bool include_usage)
{
    memset(st, 0, sizeof(*st));
    ah_buf_init(&st->id_prefix, 0);
    ah_buf_init(&st->model_json, 0);
    ah_buf_init(&st->head, 0);
    st->created = created;
    st->include_usage = include_usage;
    int rc = 0;
    if (id_prefix && *id_prefix)
        rc |= ah_buf_json_escape(&st->id_prefix, id_prefix, strlen(id_prefix));
    if (public_model && *public_model)
        rc |= ah_buf_json_escape(&st->model_json, public_model, strlen(public_model));
    if (rc) {
        ah_anthropic_stream_free(st);
        return -ENOMEM;
    }
    return 0;
}

void ah_anthropic_stream_free(ah_anthropic_stream_t *st)
{
    ah_buf_free(&st->id_prefix);
    ah_buf_free(&st->model_json);
    ah_buf_free(&st->head);
    free(st->blocks);
    st->blocks = NULL;
    st->n_blocks = 0;
}

bool ah_anthropic_stream_done(const ah_anthropic_stream_t *st)
{
    return st->done;
}

static int build_head(ah_anthropic_stream_t *st, const char *id, size_t id_len)
{
    ah_buf_t *h = &st->head;
    ah_buf_reset(h);
    int rc = ah_buf_puts(h, "{\"id\":\"");
    if (st->id_prefix.len)
        rc |= ah_buf_append(h, st->id_prefix.data, st->id_prefix.len);
    if (id_len)
        rc |= ah_buf_json_escape(h, id, id_len);
    rc |= ah_buf_printf(h, "\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"",
                        (long long)st->created);
    if (st->model_json.len)
        rc |= ah_buf_append(h, st->model_json.data, st->model_json.len);
    rc |= ah_buf_putc(h, '"');
    return buf_rc(rc);
}

/* "data: {head,"choices":[{"index":0,"delta":{" */
static int chunk_open(ah_anthropic_stream_t *st, ah_buf_t *out)
{
    if (!st->head.len && build_head(st, "unknown", 7))
        return -ENOMEM;
    int rc = ah_buf_puts(out, "data: ");
    rc |= ah_buf_append(out, st->head.data, st->head.len);
    rc |= ah_buf_puts(out, ",\"choices\":[{\"index\":0,\"delta\":{");
    return buf_rc(rc);
}

/* "},"finish_reason":..}][,"usage":null]}\n\n" */
static int chunk_close(ah_anthropic_stream_t *st, ah_buf_t *out, const char *finish)
{
    int rc = ah_buf_puts(out, "},\"finish_reason\":");
    if (finish) {
        rc |= ah_buf_putc(out, '"');
        rc |= ah_buf_puts(out, finish);
        rc |= ah_buf_putc(out, '"');
    } else {
        rc |= ah_buf_puts(out, "null");
    }
    rc |= ah_buf_puts(out, st->include_usage ? "}],\"usage\":null}\n\n" : "}]}\n\n");
    return buf_rc(rc);
}

static int emit_content(ah_anthropic_stream_t *st, ah_buf_t *out, const json_t *text)
{
    size_t n = json_string_length(text);
    if (n == 0)
        return 0;
    int rc = chunk_open(st, out);
    rc |= ah_buf_puts(out, "\"content\":\"");
    rc |= ah_buf_json_escape(out, json_string_value(text), n);
    rc |= ah_buf_putc(out, '"');
    rc |= chunk_close(st, out, NULL);
    return buf_rc(rc);
}

/* {"tool_calls":[{"index":T,"function":{"arguments":"<args>"}}]} */
static int emit_args(ah_anthropic_stream_t *st, ah_buf_t *out, int tool, const char *args, size_t n)
{
    int rc = chunk_open(st, out);
    rc |= ah_buf_printf(out, "\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":\"", tool);
    rc |= ah_buf_json_escape(out, args, n);
    rc |= ah_buf_puts(out, "\"}}]");
    rc |= chunk_close(st, out, NULL);
    return buf_rc(rc);
}

static int emit_finish(ah_anthropic_stream_t *st, ah_buf_t *out, const char *finish)
{
    st->finish_sent = true;
    int rc = chunk_open(st, out);
    rc |= chunk_close(st, out, finish);
    return buf_rc(rc);
}

static void read_usage(ah_anthropic_stream_t *st, const json_t *u)
{
    if (!json_is_object(u))
        return;
    bool seen = false;
    int64_t v;
    /* message_delta counts are cumulative, so a later value replaces an earlier one. */
    if ((v = count_of(u, "input_tokens", &seen)) >= 0)
        st->input_tokens = v;
    if ((v = count_of(u, "cache_read_input_tokens", &seen)) >= 0)
        st->cache_read_tokens = v;
    if ((v = count_of(u, "cache_creation_input_tokens", &seen)) >= 0)
        st->cache_creation_tokens = v;
    if ((v = count_of(u, "output_tokens", &seen)) >= 0)
        st->output_tokens = v;
    if (seen)
        usage_set(&st->usage, st->input_tokens, st->cache_read_tokens, st->cache_creation_tokens,
                  st->output_tokens);
}

/* The block record for index (grown on demand, bounded); NULL when out of range or memory. */
static ah_anthropic_block_t *block_at(ah_anthropic_stream_t *st, const json_t *index, bool create,
                                      int *rc)
{
    *rc = 0;
    if (!json_is_integer(index) || json_integer_value(index) < 0 ||
        json_integer_value(index) >= AH_ANTHROPIC_MAX_BLOCKS) {
        *rc = -EINVAL;
        return NULL;
    }
    size_t i = (size_t)json_integer_value(index);
    if (i >= st->n_blocks) {
        if (!create)
            return NULL;
        size_t n = st->n_blocks ? st->n_blocks : 4;
        while (n <= i)
            n *= 2;
        ah_anthropic_block_t *nb = realloc(st->blocks, n * sizeof(*nb));
        if (!nb) {
            *rc = -ENOMEM;
            return NULL;
        }
        for (size_t k = st->n_blocks; k < n; k++)
            nb[k] = (ah_anthropic_block_t){.tool_index = -1, .args_sent = false};
        st->blocks = nb;
        st->n_blocks = n;
    }
    return &st->blocks[i];
}

static int on_message_start(ah_anthropic_stream_t *st, const json_t *j, ah_buf_t *out)
{
    const json_t *msg = json_object_get(j, "message");
    if (!json_is_object(msg) || st->started)
        return -EINVAL;
    st->started = true;
    const json_t *id = json_object_get(msg, "id");
    int rc = json_is_string(id) ? build_head(st, json_string_value(id), json_string_length(id))
                                : build_head(st, "unknown", 7);
    read_usage(st, json_object_get(msg, "usage"));
    if (rc)
        return rc;
    rc = chunk_open(st, out);
    rc |= ah_buf_puts(out, "\"role\":\"assistant\",\"content\":\"\"");
    rc |= chunk_close(st, out, NULL);
    return buf_rc(rc);
}

static int on_block_start(ah_anthropic_stream_t *st, const json_t *j, ah_buf_t *out)
{
    const json_t *cb = json_object_get(j, "content_block");
    int rc;
    ah_anthropic_block_t *b = block_at(st, json_object_get(j, "index"), true, &rc);
    if (!b)
        return rc;
    if (!json_is_object(cb))
        return -EINVAL;
    const json_t *type = json_object_get(cb, "type");
    if (is_str(type, "text"))
        return emit_content(st, out, json_object_get(cb, "text"));
    if (!is_str(type, "tool_use"))
        return 0; /* thinking, server tools: not part of an OpenAI answer */
    const json_t *id = json_object_get(cb, "id");
    const json_t *name = json_object_get(cb, "name");
    const json_t *input = json_object_get(cb, "input");
    b->tool_index = st->n_tools++;
    b->args_sent = false;
    char *args = NULL;
    if (json_object_size(input)) { /* not the usual {}: send it as the first arguments */
        args = json_dumps(input, JSON_COMPACT);
        if (!args)
            return -ENOMEM;
        b->args_sent = true;
    }
    rc = chunk_open(st, out);
    rc |= ah_buf_printf(out, "\"tool_calls\":[{\"index\":%d,\"id\":\"", b->tool_index);
    rc |= ah_buf_json_escape(out, str_or(id, ""), json_string_length(id));
    rc |= ah_buf_puts(out, "\",\"type\":\"function\",\"function\":{\"name\":\"");
    rc |= ah_buf_json_escape(out, str_or(name, ""), json_string_length(name));
    rc |= ah_buf_puts(out, "\",\"arguments\":\"");
    if (args)
        rc |= ah_buf_json_escape(out, args, strlen(args));
    rc |= ah_buf_puts(out, "\"}}]");
    rc |= chunk_close(st, out, NULL);
    free(args);
    return buf_rc(rc);
}

static int on_block_delta(ah_anthropic_stream_t *st, const json_t *j, ah_buf_t *out)
{
    const json_t *delta = json_object_get(j, "delta");
    if (!json_is_object(delta))
        return -EINVAL;
    const json_t *type = json_object_get(delta, "type");
    if (is_str(type, "text_delta"))
        return emit_content(st, out, json_object_get(delta, "text"));
    if (!is_str(type, "input_json_delta"))
        return 0; /* thinking_delta, signature_delta, citations_delta */
    int rc;
    ah_anthropic_block_t *b = block_at(st, json_object_get(j, "index"), false, &rc);
    const json_t *part = json_object_get(delta, "partial_json");
    if (!b || b->tool_index < 0)
        return rc; /* a server tool's input, or a block never started */
    if (!json_is_string(part))
        return -EINVAL;
    if (json_string_length(part) == 0)
        return 0;
    b->args_sent = true;
    return emit_args(st, out, b->tool_index, json_string_value(part), json_string_length(part));
}

static int on_block_stop(ah_anthropic_stream_t *st, const json_t *j, ah_buf_t *out)
{
    int rc;
    ah_anthropic_block_t *b = block_at(st, json_object_get(j, "index"), false, &rc);
    if (!b || b->tool_index < 0 || b->args_sent)
        return rc;
    /* A call without arguments streams no input_json_delta bytes; send "{}" so the
     * assembled arguments parse, as in the non-stream answer. */
    b->args_sent = true;
    return emit_args(st, out, b->tool_index, "{}", 2);
}

static int on_message_delta(ah_anthropic_stream_t *st, const json_t *j, ah_buf_t *out)
{
    const json_t *delta = json_object_get(j, "delta");
    read_usage(st, json_object_get(j, "usage"));
    const char *stop = json_string_value(json_object_get(delta, "stop_reason"));
    if (!stop || st->finish_sent)
        return 0;
    return emit_finish(st, out, finish_reason(stop));
}

static int on_message_stop(ah_anthropic_stream_t *st, ah_buf_t *out)
{
    int rc = 0;
    if (!st->finish_sent)
        rc |= emit_finish(st, out, "stop");
    if (st->include_usage) {
        ah_llm_usage_t u = st->usage;
        if (!st->head.len && build_head(st, "unknown", 7))
            return -ENOMEM;
        rc |= ah_buf_puts(out, "data: ");
        rc |= ah_buf_append(out, st->head.data, st->head.len);
        rc |= ah_buf_printf(out,
                            ",\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,"
                            "\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                            "\"prompt_tokens_details\":{\"cached_tokens\":%lld}}}\n\n",
                            (long long)u.prompt_tokens, (long long)u.completion_tokens,
                            (long long)(u.prompt_tokens + u.completion_tokens),
                            (long long)u.cached_tokens);
    }
    if (!rc)
        st->done = true;
    return buf_rc(rc);
}

int ah_anthropic_stream_event(ah_anthropic_stream_t *st, const char *event, const char *data,
                              size_t n, ah_buf_t *out)
{
    if (st->done || (event && strcmp(event, "ping") == 0))
        return 0;
    size_t mark = out->len;
    json_t *j = json_loadb(data, n, JSON_ALLOW_NUL, NULL);
    const char *type = event && *event && strcmp(event, "message") != 0
                           ? event
                           : json_string_value(json_object_get(j, "type"));
    int rc;
    if (type && strcmp(type, "error") == 0)
        rc = -EREMOTEIO; /* even when its data is unreadable, the upstream gave up */
    else if (!json_is_object(j) || !type)
        rc = -EINVAL;
    else if (strcmp(type, "content_block_delta") == 0)
        rc = on_block_delta(st, j, out);
    else if (strcmp(type, "content_block_start") == 0)
        rc = on_block_start(st, j, out);
    else if (strcmp(type, "content_block_stop") == 0)
        rc = on_block_stop(st, j, out);
    else if (strcmp(type, "message_start") == 0)
        rc = on_message_start(st, j, out);
    else if (strcmp(type, "message_delta") == 0)
        rc = on_message_delta(st, j, out);
    else if (strcmp(type, "message_stop") == 0)
        rc = on_message_stop(st, out);
    else
        rc = 0; /* ping and event types added after this was written */
    if (rc)
        buf_truncate(out, mark);
    if (rc == -EREMOTEIO) {
        /* {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}} */
        const json_t *e = json_object_get(j, "error");
        if (translate_error(0, json_is_object(e) ? e : NULL, out) < 0)
            rc = -ENOMEM;
    } else if (rc == -EINVAL) {
        if (write_error(out, "the upstream provider (anthropic) sent a malformed stream event",
                        "server_error", "upstream_malformed"))
            rc = -ENOMEM;
    }
    json_decref(j);
    return rc;
}
