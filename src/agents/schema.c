/* schema.c - JSON Schema subset validation for tool arguments; see schema.h. */
#include "agents/schema.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static bool type_matches(const char *want, const json_t *v)
{
    const char *have = type_of(v);
    if (strcmp(want, have) == 0)
        return true;
    if (strcmp(want, "number") == 0 && json_is_integer(v))
        return true;
    if (strcmp(want, "integer") == 0 && json_is_real(v)) {
        double d = json_real_value(v);
        return d == floor(d);
    }
    return false;
}

__attribute__((format(printf, 3, 4))) static int fail(ah_buf_t *err, const char *path,
                                                      const char *fmt, ...)
{
    ah_buf_printf(err, "%s: ", *path ? path : "arguments");
    va_list ap;
    va_start(ap, fmt);
    ah_buf_vprintf(err, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static double num(const json_t *v)
{
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

/* UTF-8 code points in s. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

static int validate(const json_t *schema, const json_t *v, char *path, size_t plen, ah_buf_t *err,
                    int depth)
{
    if (depth > MAX_DEPTH || !json_is_object(schema))
        return 0; /* true / {} / too deep: accept */
    const json_t *t = json_object_get(schema, "type");
    if (json_is_string(t)) {
        if (!type_matches(json_string_value(t), v))
            return fail(err, path, "expected %s, got %s", json_string_value(t), type_of(v));
    } else if (json_is_array(t)) {
        size_t i;
        const json_t *e;
        bool ok = false;
        json_array_foreach(t, i, e) if (json_is_string(e) && type_matches(json_string_value(e), v))
            ok = true;
        if (!ok)
            return fail(err, path, "has the wrong type (%s)", type_of(v));
    }
    const json_t *en = json_object_get(schema, "enum");
    if (json_is_array(en)) {
        size_t i;
        const json_t *e;
        bool ok = false;
        json_array_foreach(en, i, e) if (json_equal(e, v)) ok = true;
        if (!ok) {
            char *allowed = json_dumps(en, JSON_COMPACT);
            int rc = fail(err, path, "must be one of %s", allowed);
            free(allowed);
            return rc;
        }
    }
    const json_t *cn = json_object_get(schema, "const");
    if (cn && !json_equal(cn, v))
        return fail(err, path, "must be the constant value given by the schema");
    if (json_is_number(v)) {
        const json_t *k;
        char b[64];
        if ((k = json_object_get(schema, "minimum")) && json_is_number(k) && num(v) < num(k)) {
            snprintf(b, sizeof(b), "%g", num(k));
            return fail(err, path, "must be >= %s", b);
        }
        if ((k = json_object_get(schema, "maximum")) && json_is_number(k) && num(v) > num(k)) {
            snprintf(b, sizeof(b), "%g", num(k));
            return fail(err, path, "must be <= %s", b);
        }
        if ((k = json_object_get(schema, "exclusiveMinimum")) && json_is_number(k) &&
            num(v) <= num(k)) {
            snprintf(b, sizeof(b), "%g", num(k));
            return fail(err, path, "must be > %s", b);
        }
        if ((k = json_object_get(schema, "exclusiveMaximum")) && json_is_number(k) &&
            num(v) >= num(k)) {
            snprintf(b, sizeof(b), "%g", num(k));
            return fail(err, path, "must be < %s", b);
        }
    }
    if (json_is_string(v)) {
        const json_t *k;
        size_t len = utf8_chars(json_string_value(v));
        if ((k = json_object_get(schema, "minLength")) && json_is_integer(k) &&
            (json_int_t)len < json_integer_value(k))
            return fail(err, path, "is too short");
        if ((k = json_object_get(schema, "maxLength")) && json_is_integer(k) &&
            (json_int_t)len > json_integer_value(k))
            return fail(err, path, "is too long");
    }
    if (json_is_array(v)) {
        const json_t *k;
        if ((k = json_object_get(schema, "minItems")) && json_is_integer(k) &&
            (json_int_t)json_array_size(v) < json_integer_value(k))
            return fail(err, path, "has too few items");
        if ((k = json_object_get(schema, "maxItems")) && json_is_integer(k) &&
            (json_int_t)json_array_size(v) > json_integer_value(k))
            return fail(err, path, "has too many items");
        const json_t *items = json_object_get(schema, "items");
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            size_t n = strlen(path);
            snprintf(path + n, plen - n, "[%zu]", i);
            int rc = validate(items, e, path, plen, err, depth + 1);
            path[n] = '\0';
            if (rc)
                return rc;
        }
    }
    if (json_is_object(v)) {
        const json_t *req = json_object_get(schema, "required");
        size_t i;
        const json_t *e;
        json_array_foreach(req, i, e)
        {
            if (json_is_string(e) && !json_object_get(v, json_string_value(e))) {
                size_t n = strlen(path);
                snprintf(path + n, plen - n, "%s%s", n ? "." : "", json_string_value(e));
                int rc = fail(err, path, "is required");
                path[n] = '\0';
                return rc;
            }
        }
        const json_t *props = json_object_get(schema, "properties");
        const json_t *addl = json_object_get(schema, "additionalProperties");
        const char *k;
        const json_t *pv;
        json_object_foreach((json_t *)v, k, pv)
        {
            const json_t *ps = json_is_object(props) ? json_object_get(props, k) : NULL;
            size_t n = strlen(path);
            snprintf(path + n, plen - n, "%s%s", n ? "." : "", k);
            int rc = 0;
            if (ps)
                rc = validate(ps, pv, path, plen, err, depth + 1);
            else if (json_is_false(addl))
                rc = fail(err, path, "is not an allowed property");
            else if (json_is_object(addl))
                rc = validate(addl, pv, path, plen, err, depth + 1);
            path[n] = '\0';
            if (rc)
                return rc;
        }
    }
    return 0;
}

int ah_schema_validate(const json_t *schema, const json_t *value, ah_buf_t *err)
{
    char path[512] = "";
    return validate(schema, value, path, sizeof(path), err, 0);
}
