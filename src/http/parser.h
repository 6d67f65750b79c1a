/*
 * parser.h - HTTP/1.1 request head and chunked-body parsing (RFC 9112).
 *
 * Pure functions over bytes: no I/O, no allocation, so they are easy to test
 * and to fuzz (tests/fuzz/fuzz_http.c). The server finds the end of the head
 * with ah_http_head_end(), copies the head into the request's arena and parses
 * it there, so header pointers stay valid for the request's whole life.
 *
 * Strictness where it matters for safety (request smuggling): Content-Length
 * must be digits and agree when repeated; Transfer-Encoding other than a lone
 * "chunked" is refused; both together are refused; obsolete line folding and
 * whitespace before the colon are refused.
 */
#ifndef AH_HTTP_PARSER_H
#define AH_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse results (negative): each maps to the status the server answers. */
enum {
    AH_HTTP_PARSE_BAD = -400,         /* malformed: 400 */
    AH_HTTP_PARSE_HEADERS_BIG = -431, /* too many or too large headers: 431 */
    AH_HTTP_PARSE_NOT_IMPL = -501,    /* unknown method or transfer coding: 501 */
    AH_HTTP_PARSE_VERSION = -505,     /* not HTTP/1.0 or 1.1: 505 */
};

typedef enum {
    AH_HTTP_GET = 0,
    AH_HTTP_HEAD,
    AH_HTTP_POST,
    AH_HTTP_PUT,
    AH_HTTP_DELETE,
    AH_HTTP_PATCH,
    AH_HTTP_OPTIONS,
    AH_HTTP_METHOD_COUNT
} ah_http_method_t;

typedef struct ah_http_header {
    const char *name;
    size_t name_len;
    const char *value; /* leading/trailing whitespace removed */
    size_t value_len;
} ah_http_header_t;

typedef struct ah_http_head {
    ah_http_method_t method;
    const char *path; /* request target up to '?' */
    size_t path_len;
    const char *query; /* after '?', without it; NULL when none */
    size_t query_len;
    int minor;                 /* HTTP/1.<minor> */
    ah_http_header_t *headers; /* caller-provided array */
    size_t n_headers;
    int64_t content_length; /* -1 when absent */
    bool chunked;
    bool keep_alive; /* from version and Connection */
    bool expect_continue;
} ah_http_head_t;

/**
 * Looks for the end of a request head in buf[0..len). Returns the head's
 * length including the blank line, 0 when more bytes are needed, or
 * AH_HTTP_PARSE_HEADERS_BIG when max bytes passed without an end.
 * Leading empty lines (allowed by RFC 9112 2.2) are part of the head.
 */
long ah_http_head_end(const char *buf, size_t len, size_t max);

/**
 * Parses a complete head (as found by ah_http_head_end) into h. h->headers
 * must point to an array of max_headers entries. Pointers in h point into buf.
 * Returns 0 or a negative AH_HTTP_PARSE_* code.
 */
int ah_http_parse_head(const char *buf, size_t len, ah_http_head_t *h, size_t max_headers);

/** Method name ("GET"...). */
const char *ah_http_method_name(ah_http_method_t m);

/** Finds a header by case-insensitive name; returns its value or NULL (*vlen set). */
const char *ah_http_head_get(const ah_http_head_t *h, const char *name, size_t *vlen);

/* Building blocks shared by the request parser here and the response parser (resp.h). */

/**
 * Length of the line starting at p (without its CR LF or LF); sets *next to
 * the start of the following line (end when there is no LF).
 */
size_t ah_http_line(const char *p, const char *end, const char **next);

/**
 * Parses one header line p[0..n) (without its line end) into hd: the name must
 * be a token with no whitespace before the colon, the value has no control
 * characters and loses surrounding whitespace; obs-fold is refused. Pointers
 * in hd point into p. 0 or AH_HTTP_PARSE_BAD.
 */
int ah_http_parse_header_line(const char *p, size_t n, ah_http_header_t *hd);

/** True when the comma-separated list v[0..n) holds tok (case-insensitive). */
bool ah_http_token_list_has(const char *v, size_t n, const char *tok);

/** A Content-Length value: 1 to 18 digits, nothing else. 0 or AH_HTTP_PARSE_BAD. */
int ah_http_parse_content_length(const char *v, size_t n, int64_t *out);

/* Incremental decoder for a chunked request body (RFC 9112 7.1). */
typedef struct ah_http_chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    unsigned digits;
} ah_http_chunked_t;

/** Resets d to the start of a chunked body. */
void ah_http_chunked_init(ah_http_chunked_t *d);

/**
 * Decodes input in[0..len): writes the payload bytes it carries to out (which
 * must have room for len bytes; payload is never longer than its encoding),
 * sets *out_len to how many were written and *consumed to the input bytes
 * used. Returns 1 when the body (and any trailers) ended, 0 when more input is
 * needed, AH_HTTP_PARSE_BAD on malformed input.
 */
int ah_http_chunked_decode(ah_http_chunked_t *d, const char *in, size_t len, size_t *consumed,
                           char *out, size_t *out_len);

#endif
