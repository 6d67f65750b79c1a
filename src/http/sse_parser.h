/*
 * sse_parser.h - incremental Server-Sent Events parser (client side).
 *
 * Reads an upstream text/event-stream (OpenAI, Anthropic, any SSE source)
 * exactly as the HTML Living Standard, section 9.2.6 "Interpreting an event
 * stream", says a user agent must: CR, LF and CRLF line ends (a CRLF may be
 * split across two feeds), one leading UTF-8 BOM dropped, ':' comment lines,
 * the fields event / data / id / retry with one leading space stripped from
 * the value, data lines joined with LF, dispatch on a blank line, no dispatch
 * when the data buffer is empty, an id persisting across events, and an
 * unterminated last event discarded at end of stream.
 *
 * Bytes are passed through as they are: the spec decodes the stream as UTF-8
 * (invalid sequences become U+FFFD); we leave validation to the consumer,
 * which parses the data as JSON and rejects bad UTF-8 there.
 *
 * Memory: the parser owns four reusable buffers (partial line, data, event
 * type, last event id), each bounded by max_event_bytes, so a hostile
 * upstream cannot make it hold more than about 4 x max_event_bytes.
 * No I/O, no global state; one parser per stream, not thread-safe.
 */
#ifndef AH_HTTP_SSE_PARSER_H
#define AH_HTTP_SSE_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/** max_event_bytes used when ah_sse_parser_init is given 0. */
#define AH_SSE_DEFAULT_MAX_EVENT_BYTES (1u << 20)

/**
 * Slack allowed on one line beyond max_event_bytes, so that a data value of
 * exactly max_event_bytes still fits after its "data: " prefix.
 */
#define AH_SSE_LINE_SLACK 16

/**
 * Called once per dispatched event. event is the event type ("message" when
 * the stream gave none), data the joined data lines without the final LF
 * (data_len bytes, also NUL-terminated; may contain NUL bytes), id the last
 * event ID seen on the stream so far ("" when none). All three point into
 * the parser and are valid only during the call. Return 0 to go on, nonzero
 * to stop parsing (ah_sse_parser_feed then returns that value).
 */
typedef int (*ah_sse_event_cb)(void *ud, const char *event, const char *data, size_t data_len,
                               const char *id);

typedef struct ah_sse_parser {
    ah_buf_t line;  /* bytes of a line not yet ended by CR/LF */
    ah_buf_t data;  /* data buffer (each value followed by LF) */
    ah_buf_t event; /* event type buffer */
    ah_buf_t id;    /* last event ID buffer (persists across events) */
    size_t max_event_bytes;
    int64_t retry_ms;  /* last valid "retry:" value, -1 if none */
    int err;           /* sticky result once nonzero */
    unsigned bom_seen; /* bytes of a leading BOM matched so far */
    bool started;      /* past the point where a BOM may appear */
    bool skip_lf;      /* previous feed ended in CR: drop a leading LF */
} ah_sse_parser_t;

/**
 * Initialises p. max_event_bytes bounds the data of one event, the event
 * type, the id and one line (plus AH_SSE_LINE_SLACK); 0 selects
 * AH_SSE_DEFAULT_MAX_EVENT_BYTES. Allocates nothing until fed.
 */
void ah_sse_parser_init(ah_sse_parser_t *p, size_t max_event_bytes);

/**
 * Parses n more bytes of the stream, calling on_event for each complete
 * event, in order. Returns 0 when all bytes were consumed; -E2BIG when a
 * line, an event's data, its type or the id grows past the bound; -ENOMEM;
 * or the first nonzero value returned by on_event (the rest of buf is then
 * not parsed). Any nonzero result is sticky: later feeds return it at once,
 * because the stream position is lost. Splitting the same bytes into any
 * sequence of feeds yields the same events and the same result.
 */
int ah_sse_parser_feed(ah_sse_parser_t *p, const char *buf, size_t n, ah_sse_event_cb on_event,
                       void *ud);

/** The last event ID buffer (""), e.g. for a reconnect's Last-Event-ID. */
const char *ah_sse_parser_last_id(const ah_sse_parser_t *p);

/**
 * True when bytes of an event not yet ended by a blank line are pending;
 * per the spec they are discarded at end of stream, which a caller may want
 * to report as a truncated stream.
 */
bool ah_sse_parser_pending(const ah_sse_parser_t *p);

/** Frees the buffers; p may be initialised again afterwards. */
void ah_sse_parser_free(ah_sse_parser_t *p);

#endif
