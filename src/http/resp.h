/*
 * resp.h - HTTP/1.1 response parsing for the upstream client (RFC 9112): the
 * status line and headers, then the body framing (Content-Length, chunked,
 * until close, none) decoded in place.
 *
 * Pure functions over bytes like parser.h (whose header-line, Content-Length
 * and chunked helpers it uses): no I/O, no allocation, fuzzed by
 * tests/fuzz/fuzz_http_resp.c. The caller keeps the bytes; header pointers
 * handed to the header callback are valid only during that call.
 *
 * Use: ah_http_resp_head() on the bytes received until it returns a length
 * (a 1xx interim head: drop that many bytes and call it again; the final
 * head: drop them and go on with the body), then ah_http_resp_body() on each
 * piece of what follows until it returns 1, and ah_http_resp_eof() when the
 * connection closes first.
 */
#ifndef AH_HTTP_RESP_H
#define AH_HTTP_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"

typedef enum ah_http_body_mode {
    AH_HTTP_BODY_NONE = 0, /* HEAD, 1xx, 204, 304, Content-Length: 0 */
    AH_HTTP_BODY_LENGTH,   /* Content-Length bytes */
    AH_HTTP_BODY_CHUNKED,  /* Transfer-Encoding ending in chunked */
    AH_HTTP_BODY_CLOSE,    /* until the server closes the connection */
} ah_http_body_mode_t;

typedef struct ah_http_resp {
    int status;             /* 100..999 */
    int minor;              /* HTTP/1.<minor> */
    int64_t content_length; /* -1 when absent (or overridden by Transfer-Encoding) */
    bool keep_alive;        /* the connection may carry another request afterwards */
    ah_http_body_mode_t mode;
    uint64_t remaining;   /* AH_HTTP_BODY_LENGTH: bytes still to come */
    ah_http_chunked_t ch; /* AH_HTTP_BODY_CHUNKED: decoder state */
    bool done;            /* the body is complete */
} ah_http_resp_t;

/*
 * Called for each header of a final (>= 200) head, in order. A non-zero
 * return stops parsing and is what ah_http_resp_head returns.
 */
typedef int (*ah_http_resp_header_fn)(void *ud, const char *name, size_t name_len,
                                      const char *value, size_t value_len);

/**
 * Parses a response head at the start of buf[0..len). head_request says the
 * request was HEAD (no body whatever the headers say). Returns:
 *   > 0  the head's length; r is filled (status, framing). A 1xx head (other
 *        than 101) is interim: its headers are not reported, drop its bytes
 *        and parse the next head.
 *   0    more bytes are needed
 *   AH_HTTP_PARSE_HEADERS_BIG  max bytes passed without the end of the head
 *   AH_HTTP_PARSE_BAD          malformed status line or header, conflicting
 *                              Content-Length values, 101 (never asked for)
 *   or the non-zero value fn returned.
 */
long ah_http_resp_head(ah_http_resp_t *r, const char *buf, size_t len, size_t max,
                       bool head_request, ah_http_resp_header_fn fn, void *ud);

/**
 * Decodes body bytes buf[0..len) in place: the payload they carry is moved to
 * buf[0..*out_len) (never longer than its encoding), *consumed says how many
 * input bytes were used (the rest belong to whatever follows the response).
 * Returns 1 when the body is complete (r->done), 0 when more is expected,
 * AH_HTTP_PARSE_BAD on a malformed chunked encoding.
 */
int ah_http_resp_body(ah_http_resp_t *r, char *buf, size_t len, size_t *consumed, size_t *out_len);

/**
 * The connection closed: true when that completes the response (a body
 * delimited by the close, or one already complete), false when the response
 * was cut short.
 */
bool ah_http_resp_eof(ah_http_resp_t *r);

#endif
