/*
 * sse.h - Server-Sent Events writer over a streaming response.
 *
 * Formats events per the HTML Living Standard, section 9.2 (event stream
 * interpretation): "event:", "id:" and one "data:" line per line of data,
 * ended by a blank line. Used by the gateway (OpenAI chunks) and the runs API
 * (run events, resumable by Last-Event-ID).
 */
#ifndef AH_HTTP_SSE_H
#define AH_HTTP_SSE_H

#include <stddef.h>

#include "http/server.h"

/**
 * Starts an event stream: 200, Content-Type text/event-stream, no caching,
 * X-Accel-Buffering: no (so proxies do not hold events). 0 or -EPIPE.
 */
int ah_sse_start(ah_http_req_t *r);

/**
 * Sends one event. event and id may be NULL (omitted). data may contain
 * newlines (split into several data: lines). Returns what
 * ah_http_stream_write returns (0, -EPIPE, -ENOBUFS) or -ENOMEM.
 */
int ah_sse_send(ah_http_req_t *r, const char *event, const char *id, const char *data, size_t n);

/** Sends a comment line (": text"), e.g. a keep-alive ping. */
int ah_sse_comment(ah_http_req_t *r, const char *text);

/** Formats one event into out (for callers that batch or store events). 0 or -ENOMEM/-E2BIG. */
int ah_sse_format(ah_buf_t *out, const char *event, const char *id, const char *data, size_t n);

#endif
