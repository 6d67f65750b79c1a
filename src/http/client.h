/*
 * client.h - the upstream HTTP client driven by one worker's event loop, for
 * the LLM gateway's provider calls and anything else that talks HTTP out of a
 * worker. Plain http:// to an IP literal or localhost takes a native
 * keep-alive HTTP/1.1 path; everything else (https://, host names, proxies)
 * goes through one libcurl multi handle (curl's multi_socket API on
 * libevent). Both keep the contract below.
 *
 * Threads: one ah_http_client_t per loop. A client and every call it made are
 * used only on that loop's thread; nothing here blocks the loop (DNS runs on
 * curl's resolver threads, sockets are non-blocking).
 *
 * Life of a call: ah_http_call_start() copies what it needs from the options
 * (URL, method, headers, body) and returns at once; on_headers runs once when
 * the final status line and headers are in, on_data for each body piece (stream
 * mode), then on_done exactly once. The client owns the call object and frees
 * it when on_done returns, or inside ah_http_call_cancel(); after that the
 * pointer is dead. Callbacks only ever run from the loop, never from inside an
 * ah_http_* function.
 *
 * Re-entrancy: from any callback you may start new calls (a retry from
 * on_done), cancel any call (including this one), pause or resume. You may not
 * free the client from a callback.
 *
 * Performance: call objects (and their curl easy handles) are pooled per
 * client, and connections stay open in keep-alive pools (HTTP/1.1 for
 * http://, HTTP/2 when an https:// server offers it). See
 * docs/internals/client.md.
 */
#ifndef AH_HTTP_CLIENT_H
#define AH_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"

typedef struct ah_http_client ah_http_client_t;
typedef struct ah_http_call ah_http_call_t;

/* Which deadline ended a call that failed with -ETIMEDOUT. */
typedef enum ah_http_timeout_kind {
    AH_HTTP_TIMEOUT_NONE = 0,
    AH_HTTP_TIMEOUT_CONNECT,    /* DNS + TCP + TLS did not finish in connect_timeout_s */
    AH_HTTP_TIMEOUT_FIRST_BYTE, /* no complete response head within first_byte_timeout_s */
    AH_HTTP_TIMEOUT_TOTAL,      /* the whole call took longer than total_timeout_s */
} ah_http_timeout_kind_t;

typedef struct ah_http_client_opts {
    size_t max_connections;      /* idle keep-alive pool size (per path); 0 = 256 */
    size_t max_host_connections; /* per host:port; 0 = no limit (over it, calls queue) */
    const char *user_agent;      /* NULL = "agenthub/<version>"; copied */
    long dns_cache_s;            /* how long a resolved name is reused; 0 = 300, -1 = forever */
    size_t max_idle_calls;       /* finished call objects kept for reuse; 0 = max_connections */
    bool curl_only; /* every call through libcurl, none on the native http:// path (comparisons) */
} ah_http_client_opts_t;

typedef struct ah_http_call_opts {
    const char *method; /* "GET" (NULL means GET), "POST", "PUT", "PATCH", "DELETE", "HEAD" */
    const char *url;    /* http:// or https:// only; copied */
    /*
     * "Name: value" strings, NULL-terminated array; copied. "Name:" removes a
     * header curl would add by itself (e.g. "Accept:"). CR or LF in a header
     * is refused (-EINVAL). "Expect:" is always added (no 100-continue wait).
     */
    const char *const *headers;
    const char *body; /* request body, copied (may be NULL with body_len 0) */
    size_t body_len;
    double connect_timeout_s;    /* DNS + connect + TLS; <= 0 means 10 s */
    double first_byte_timeout_s; /* from start until the response head is complete; <= 0: none */
    double total_timeout_s;      /* from start until the end of the body; <= 0: none */
    size_t max_response_bytes;   /* body cap (buffered or streamed); 0 = 64 MiB; over it: -E2BIG */
    bool stream;                 /* true: body via on_data as it arrives; false: buffered */
    /* Once, when the final status line and headers are complete (1xx are skipped). Optional. */
    void (*on_headers)(ah_http_call_t *c, int status, void *ud);
    /* Stream mode: each piece of the (de-chunked) body, in order. p is valid during the call. */
    void (*on_data)(ah_http_call_t *c, const char *p, size_t n, void *ud);
    /*
     * Exactly once unless the call was cancelled or the client freed. rc:
     *   0             a complete response, whatever its status (404 and 500 are not errors)
     *   -ECONNREFUSED could not connect (refused, unreachable)
     *   -EHOSTUNREACH the host name did not resolve
     *   -ETIMEDOUT    a deadline passed (ah_http_call_timeout_kind says which)
     *   -ECONNRESET   the connection dropped before the response was complete
     *   -E2BIG        body over max_response_bytes, or response head over 64 KiB
     *   -EINVAL       malformed URL or a scheme other than http/https
     *   -ENOMEM       out of memory
     *   -EIO          anything else (TLS, protocol errors); see ah_http_call_error
     */
    void (*on_done)(ah_http_call_t *c, int rc, void *ud);
    void *ud;
} ah_http_call_opts_t;

typedef struct ah_http_client_stats {
    uint64_t started;     /* calls accepted by ah_http_call_start */
    uint64_t completed;   /* on_done calls with rc 0 */
    uint64_t failed;      /* on_done calls with rc != 0 */
    uint64_t cancelled;   /* ah_http_call_cancel on a call in flight */
    uint64_t connections; /* TCP connections opened (reuse keeps this low) */
    uint64_t wakeups;     /* times the loop drove a call (socket or timer events) */
    uint64_t native;      /* calls started on the native http:// path (not libcurl) */
    size_t in_flight;     /* calls started and not yet finished */
    size_t idle_calls;    /* pooled call objects ready for reuse */
} ah_http_client_stats_t;

/**
 * Initialises libcurl for the process. Call once from main before starting
 * threads (the client also takes a reference itself, which is enough with a
 * thread-safe libcurl, but explicit is better). 0 or -EIO.
 */
int ah_http_client_global_init(void);

/** Drops the reference taken by ah_http_client_global_init (at exit, after all clients). */
void ah_http_client_global_cleanup(void);

/**
 * Creates a client driven by loop (which must outlive it). opts may be NULL
 * for the defaults. Call on the loop's thread. NULL on failure (out of
 * memory, curl could not initialise).
 */
ah_http_client_t *ah_http_client_new(ah_loop_t *loop, const ah_http_client_opts_t *opts);

/**
 * Frees the client: cancels every call in flight (no callbacks run, their
 * connections close) and closes the pool. Not from inside one of its
 * callbacks. NULL is a no-op.
 */
void ah_http_client_free(ah_http_client_t *cl);

/** Counters of this client (loop thread only). */
void ah_http_client_stats(const ah_http_client_t *cl, ah_http_client_stats_t *st);

/**
 * Starts a call. Everything in o is copied; o itself may be freed on return.
 * On success sets *out (when out is not NULL) to the call, owned by the
 * client, and returns 0: on_done will run later, never before this returns.
 * Returns -EINVAL (no url or on_done, CR/LF in a header, unknown method) or
 * -ENOMEM; then no callback runs.
 */
int ah_http_call_start(ah_http_client_t *cl, const ah_http_call_opts_t *o, ah_http_call_t **out);

/**
 * Aborts the call: the transfer stops, its connection is closed (so the
 * upstream sees the client gone; an HTTP/2 stream is reset instead) and the
 * call is freed. No callback of this call runs after this returns. Safe from
 * any callback, including the call's own on_headers/on_data. From the call's
 * own on_done it does nothing (the call is finishing anyway). Idempotent
 * until the call is freed.
 */
void ah_http_call_cancel(ah_http_call_t *c);

/**
 * Flow control: stops body delivery (on_data) until ah_http_call_resume.
 * Effective at once: no on_data runs after pause returns. curl stops reading
 * the socket, so TCP pushes back on the upstream. Deadlines keep running.
 */
void ah_http_call_pause(ah_http_call_t *c);

/** Restarts delivery after ah_http_call_pause; on_data resumes from the loop, not from here. */
void ah_http_call_resume(ah_http_call_t *c);

/**
 * Switches the body mode; only before the first body byte (e.g. from
 * on_headers, to buffer the JSON error body of a streaming request that got
 * a 429). 0, or -EINVAL when body bytes were already delivered.
 */
int ah_http_call_set_stream(ah_http_call_t *c, bool stream);

/** The response status (200...), 0 before the head is complete. */
int ah_http_call_status(const ah_http_call_t *c);

/**
 * A response header's value by case-insensitive name (the first one when
 * repeated), NUL-terminated, or NULL. Valid from on_headers until on_done
 * returns.
 */
const char *ah_http_call_header(const ah_http_call_t *c, const char *name);

/**
 * Iterates response headers in arrival order: start with *pos = 0; returns
 * false at the end. Same lifetime as ah_http_call_header.
 */
bool ah_http_call_header_next(const ah_http_call_t *c, size_t *pos, const char **name,
                              const char **value);

/**
 * Buffered mode: the body received so far (complete in on_done),
 * NUL-terminated for convenience; len is the truth. Never NULL. Valid until
 * on_done returns. In stream mode it is empty.
 */
const char *ah_http_call_body(const ah_http_call_t *c, size_t *len);

/** Body bytes received so far (both modes). */
size_t ah_http_call_body_bytes(const ah_http_call_t *c);

/** A human-readable reason for a failed call ("" when none). Valid until on_done returns. */
const char *ah_http_call_error(const ah_http_call_t *c);

/** For rc == -ETIMEDOUT: which deadline passed; AH_HTTP_TIMEOUT_NONE otherwise. */
ah_http_timeout_kind_t ah_http_call_timeout_kind(const ah_http_call_t *c);

/** Seconds from start to the complete response head; 0 before it. */
double ah_http_call_ttfb_s(const ah_http_call_t *c);

#endif
