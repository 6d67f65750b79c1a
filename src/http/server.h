/*
 * server.h - the HTTP/1.1 server: N worker threads, one event loop and one
 * SO_REUSEPORT listening socket each, keep-alive, limits, graceful drain.
 *
 * Life of a request: a worker reads bytes, finds and parses the head
 * (parser.h), enforces the limits (431 head too big, 413 body too big, 408
 * slow client, 503 too many connections), reads the body (Content-Length or
 * chunked), matches the router, and calls opts.dispatch (or the route's
 * handler) on the worker's thread. The handler answers at once or later -
 * after a store job or an upstream call posted back to the same loop - with
 * exactly one terminal call: ah_http_reply*() or ah_http_stream_end(). Until
 * then the request stays valid even if the client has gone (see
 * ah_http_req_on_abort).
 *
 * Every response carries x-request-id (the client's, when it is a sane token,
 * or a generated one). Errors the server produces itself use the OpenAI error
 * JSON shape. Thread safety: everything taking an ah_http_req_t must be called
 * on that request's worker thread; ah_http_server_drain/_stats are thread-safe.
 */
#ifndef AH_HTTP_SERVER_H
#define AH_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/loop.h"
#include "http/parser.h"
#include "http/router.h"

typedef struct ah_http_server ah_http_server_t;
typedef struct ah_http_req ah_http_req_t;

/** A route handler: runs on the worker thread. */
typedef void (*ah_http_handler_fn)(ah_http_req_t *req);

typedef struct ah_http_server_opts {
    const char *listen; /* "host:port"; port 0 picks a free port (see ah_http_server_addr) */
    int workers;        /* threads; 0 = number of cores */
    size_t max_body_bytes;
    size_t max_header_bytes;
    int max_headers;
    int max_connections;
    size_t max_output_bytes; /* unsent response bytes per connection before a stream fails; 0 = 8
                                MiB */
    size_t arena_cap;        /* per-request arena cap; 0 = 4 MiB */
    double header_timeout_s;
    double body_timeout_s;
    double idle_timeout_s;
    bool access_log;
    const ah_router_t *router; /* routes whose handler is an ah_http_handler_fn */
    /* Called instead of route->handler when set (the API layer's auth step). */
    void (*dispatch)(ah_http_req_t *req, const ah_route_t *route, void *ud);
    /* Called once per finished request (metrics), on the worker thread. route may be NULL. */
    void (*on_complete)(ah_http_req_t *req, const ah_route_t *route, int status,
                        uint64_t duration_ns, void *ud);
    /* Called on each worker thread before it serves (attach caches, init metrics shards). */
    void (*on_worker_start)(ah_loop_t *loop, int index, void *ud);
    /* Called on each worker thread after its last connection closed (release per-thread state). */
    void (*on_worker_stop)(ah_loop_t *loop, int index, void *ud);
    void *ud;
} ah_http_server_opts_t;

typedef struct ah_http_server_stats {
    long connections; /* open now */
    long in_flight;   /* requests being handled now */
    uint64_t accepted;
    uint64_t rejected_overload; /* 503 at accept for max_connections */
} ah_http_server_stats_t;

/**
 * Creates the server and binds its listening sockets (so an address in use is
 * reported here, with a message in err). Does not start threads. 0, or a
 * negative errno with err filled. The router and opts strings must outlive it.
 */
int ah_http_server_new(const ah_http_server_opts_t *opts, ah_http_server_t **out, ah_buf_t *err);

/** The bound address ("127.0.0.1:43121") into buf. */
void ah_http_server_addr(const ah_http_server_t *s, char *buf, size_t n);

/** Number of worker threads. */
int ah_http_server_workers(const ah_http_server_t *s);

/** Starts the worker threads. 0 or -errno. */
int ah_http_server_start(ah_http_server_t *s);

/**
 * Starts a graceful drain (thread-safe, idempotent): listeners close, idle
 * keep-alive connections close, requests in flight finish and their
 * connections close after the response.
 */
void ah_http_server_drain(ah_http_server_t *s);

/** True once a drain started. Thread-safe. */
bool ah_http_server_draining(const ah_http_server_t *s);

/**
 * Waits up to grace_s seconds for every worker to finish its connections,
 * then stops the workers. Returns 0 when all finished in time, -ETIMEDOUT
 * when connections were cut.
 */
int ah_http_server_wait(ah_http_server_t *s, double grace_s);

/** Counters summed over workers. Thread-safe. */
void ah_http_server_stats(const ah_http_server_t *s, ah_http_server_stats_t *st);

/** Frees the server. Workers must have stopped (ah_http_server_wait). */
void ah_http_server_free(ah_http_server_t *s);

/* ---- request accessors (worker thread only) ---- */

ah_http_method_t ah_http_req_method(const ah_http_req_t *r);
const char *ah_http_req_path(const ah_http_req_t *r, size_t *len);
/** Header value by case-insensitive name, or NULL. Not NUL-terminated: use len. */
const char *ah_http_req_header(const ah_http_req_t *r, const char *name, size_t *len);
/** Header value copied NUL-terminated into the arena, or NULL. */
const char *ah_http_req_header_str(ah_http_req_t *r, const char *name);
/** Query parameter, percent-decoded into the arena, or NULL. */
const char *ah_http_req_query(ah_http_req_t *r, const char *name);
/** Path parameter of the matched route ("name" for "{name}"), or NULL. */
const char *ah_http_req_param(const ah_http_req_t *r, const char *name);
/** The request body (NUL-terminated for convenience; len is the truth). */
const char *ah_http_req_body(const ah_http_req_t *r, size_t *len);
/** The request id (echoed x-request-id or generated). */
const char *ah_http_req_id(const ah_http_req_t *r);
/** The client's address "ip:port". */
const char *ah_http_req_remote(const ah_http_req_t *r);
/** The request's arena: freed when the request ends. */
ah_arena_t *ah_http_req_arena(ah_http_req_t *r);
/** The worker's loop, for posting work back to this thread. */
ah_loop_t *ah_http_req_loop(const ah_http_req_t *r);
/** The matched route. */
const ah_route_t *ah_http_req_route(const ah_http_req_t *r);
/** A slot for the layer above (e.g. the authenticated principal). */
void ah_http_req_set_ctx(ah_http_req_t *r, void *ctx);
void *ah_http_req_ctx(const ah_http_req_t *r);
/** Monotonic ns when the request head was complete. */
uint64_t ah_http_req_start_ns(const ah_http_req_t *r);

/* ---- responses (worker thread only; exactly one terminal call per request) ---- */

/** Adds a response header (copied). Before the reply or stream start. 0 or -ENOMEM. */
int ah_http_req_add_header(ah_http_req_t *r, const char *name, const char *value);

/** Terminal: sends a complete response. ctype may be NULL when len is 0. */
void ah_http_reply(ah_http_req_t *r, int status, const char *ctype, const char *body, size_t len);

/** Terminal: sends a JSON body (application/json). */
void ah_http_reply_json(ah_http_req_t *r, int status, const char *json, size_t len);

/**
 * Terminal: sends an OpenAI-shaped error:
 * {"error":{"message":...,"type":...,"param":...,"code":...}}. param and code
 * may be NULL (JSON null).
 */
void ah_http_reply_error(ah_http_req_t *r, int status, const char *type, const char *code,
                         const char *param, const char *message);

/** The OpenAI error "type" conventionally used for an HTTP status. */
const char *ah_http_error_type(int status);

/** Starts a chunked streaming response. 0, or -EPIPE when the client is gone. */
int ah_http_stream_start(ah_http_req_t *r, int status, const char *ctype);

/**
 * Sends bytes of a streaming response (one chunk). 0; -EPIPE when the client
 * is gone; -ENOBUFS when more than max_output_bytes wait unsent (slow client):
 * the caller should stop producing and end the stream.
 */
int ah_http_stream_write(ah_http_req_t *r, const char *p, size_t n);

/** Unsent bytes queued for the client now. */
size_t ah_http_stream_pending(const ah_http_req_t *r);

/** Calls cb once every queued byte was written (for flow control). */
void ah_http_req_on_drain(ah_http_req_t *r, void (*cb)(void *ud), void *ud);

/** Terminal for streams: sends the last chunk. */
void ah_http_stream_end(ah_http_req_t *r);

/**
 * Calls cb when the client goes away before the terminal call (to cancel
 * upstream work). The request stays valid; the handler must still make its
 * terminal call, which then only frees it.
 */
void ah_http_req_on_abort(ah_http_req_t *r, void (*cb)(void *ud), void *ud);

/** True when the client has gone. */
bool ah_http_req_aborted(const ah_http_req_t *r);

/**
 * Terminal: closes the connection at once without finishing the response
 * (unsent bytes are dropped; a stream gets no last chunk). For fault
 * injection and for giving up on a client.
 */
void ah_http_req_close(ah_http_req_t *r);

/** The status of the response sent (0 before). */
int ah_http_req_status(const ah_http_req_t *r);

#endif
