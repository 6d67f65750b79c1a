/*
 * jscan.h - a validating JSON scanner that finds values without building a
 * tree, for the gateway's hot path.
 *
 * The gateway forwards request and response bodies mostly untouched: it only
 * needs a few fields ("model", "stream", "usage"...). Parsing a whole body
 * into a tree and printing it again costs more than everything else on the
 * path, so this module validates the text (RFC 8259 grammar, depth-limited)
 * and returns spans - pointers into the caller's bytes. Use jansson where a
 * body must really be transformed (e.g. the Anthropic translation).
 */
#ifndef AH_JSCAN_H
#define AH_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef enum {
    AH_JSON_NONE = 0,
    AH_JSON_OBJECT,
    AH_JSON_ARRAY,
    AH_JSON_STRING,
    AH_JSON_NUMBER,
    AH_JSON_TRUE,
    AH_JSON_FALSE,
    AH_JSON_NULL
} ah_json_type_t;

/* A value inside a document: p points at its first byte ('{', '"', '1'...), n covers it. */
typedef struct ah_jspan {
    const char *p;
    size_t n;
    ah_json_type_t type;
} ah_jspan_t;

#define AH_JSON_MAX_DEPTH 64

/**
 * Checks that s[0..n) is exactly one JSON value (surrounding whitespace
 * allowed). Returns 0, or -EINVAL with *err_off (may be NULL) set to the
 * byte offset of the first error.
 */
int ah_json_validate(const char *s, size_t n, size_t *err_off);

/**
 * Validates s[0..n) as one JSON object (surrounding whitespace allowed) in a
 * single pass and picks top-level members on the way: out[i] gets the span
 * of member keys[i] (type AH_JSON_NONE when absent; the last one wins when a
 * key repeats). root (may be NULL) gets the object's span. Returns 0,
 * -EINVAL when s is not valid JSON (*err_off set, may be NULL), or -EPROTO
 * when it is valid JSON but not an object. The hot path's way to read a body.
 */
int ah_json_object_scan(const char *s, size_t n, const char *const *keys, size_t nkeys,
                        ah_jspan_t *out, ah_jspan_t *root, size_t *err_off);

/** True when an array span has no elements (cheap: looks at the first token only). */
bool ah_json_array_empty(const ah_jspan_t *v);

/**
 * Scans the value starting at s[0..n) (after whitespace) and fills out with
 * its span. Returns the offset just past the value, or -EINVAL.
 */
long ah_json_value(const char *s, size_t n, ah_jspan_t *out);

/**
 * Finds member key of the object span obj (top level only). Returns 0 and
 * fills out, -ENOENT when absent, -EINVAL when obj is not a valid object.
 * Keys are compared byte-wise after unescaping simple escapes.
 */
int ah_json_member(const ah_jspan_t *obj, const char *key, ah_jspan_t *out);

/** Dotted path lookup through objects: "usage.prompt_tokens_details.cached_tokens". */
int ah_json_path(const ah_jspan_t *obj, const char *path, ah_jspan_t *out);

/** Integer value of a number span (must be an integer in int64 range). 0 or -EINVAL. */
int ah_json_int(const ah_jspan_t *v, int64_t *out);

/** Unescapes a string span into out (appended, NUL-terminated). 0, -EINVAL, -E2BIG, -ENOMEM. */
int ah_json_str(const ah_jspan_t *v, ah_buf_t *out);

/** True when the string span equals s exactly (no escapes in the span). */
bool ah_json_str_eq(const ah_jspan_t *v, const char *s);

/**
 * Calls cb for each element of an array span (stops and returns cb's nonzero
 * result). 0, or -EINVAL when v is not a valid array.
 */
int ah_json_array_each(const ah_jspan_t *v, int (*cb)(void *ud, const ah_jspan_t *elem), void *ud);

/** Number of elements of an array span, or -EINVAL. */
long ah_json_array_len(const ah_jspan_t *v);

#endif
