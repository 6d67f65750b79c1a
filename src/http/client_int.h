/*
 * client_int.h - what the two halves of the upstream client share: the call
 * and client structs and the few functions both paths use to end a call.
 * client.c is the public API and the libcurl path (https://, proxies, host
 * names); client_h1.c is the native HTTP/1.1 path for plain http:// to IP
 * literals and localhost. Not for use outside src/http/client*.c.
 */
#ifndef AH_HTTP_CLIENT_INT_H
#define AH_HTTP_CLIENT_INT_H

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/client.h"

#define AH_HTTP_DEFAULT_CONNECT_S 10.0
#define AH_HTTP_MAX_RESPONSE_HEAD (64u << 10)

typedef struct h1conn h1conn_t;
typedef struct h1host h1host_t;
typedef struct h1pool h1pool_t;

enum call_state {
    CS_IDLE,    /* in the client's free list */
    CS_PENDING, /* started from inside curl: waiting for run_pending to add it */
    CS_ACTIVE,  /* added to the multi handle, or (native) waiting for/on a connection */
    CS_DONE     /* on_done running, or cancelled and waiting to be reaped */
};

struct ah_http_call {
    ah_http_client_t *cl;
    CURL *easy;                  /* curl path only; created the first time it is needed */
    ah_http_call_t *prev, *next; /* live list (or free list: next only) */
    ah_http_call_t *pnext;       /* pending queue */
    bool queued;                 /* on the pending queue */
    bool release_on_pop;         /* finished while queued: release when popped */
    enum call_state state;
    bool in_multi;
    bool cancelled;
    bool headers_done;
    bool stream;
    bool want_pause;  /* the user asked for a pause */
    bool curl_paused; /* we returned CURL_WRITEFUNC_PAUSE and have not unpaused yet */
    bool fb_armed, total_armed;
    struct event *fb_timer, *total_timer;

    void (*on_headers)(ah_http_call_t *, int, void *);
    void (*on_data)(ah_http_call_t *, const char *, size_t, void *);
    void (*on_done)(ah_http_call_t *, int, void *);
    void *ud;
    size_t max_body;

    /* Request: curl keeps pointers into these, so they live as long as the call. */
    ah_buf_t req_body;
    char *hdr_mem;
    size_t hdr_mem_cap;
    struct curl_slist *hdr_nodes;
    size_t hdr_nodes_cap;

    /* Native path (client_h1.c). */
    bool native;
    bool busy;        /* a read frame is delivering to this call: cancel only marks it */
    bool h1_paused;   /* reading stopped for a pause; resume queues a restart */
    bool h1_resume;   /* queued: restart delivery from the loop */
    bool is_head;     /* HEAD request: no body whatever the headers say */
    bool waiting;     /* in its host's queue for a connection (max_host_connections) */
    bool retried;     /* already retried once after a stale pooled connection */
    int deferred_rc;  /* queued: fail with this from the loop (errors found inside start) */
    double connect_s; /* connect deadline */
    h1host_t *host;   /* host:port pool */
    h1conn_t *conn;   /* the connection carrying it, when it has one */
    ah_http_call_t *wnext;
    ah_buf_t req_head; /* request line and headers */

    /* Response. */
    int status;
    ah_buf_t resp_head; /* "name\0value\0" pairs */
    ah_buf_t body;
    size_t body_bytes;
    int abort_rc; /* why we aborted from a curl callback (-E2BIG, -ENOMEM) */
    ah_http_timeout_kind_t tkind;
    uint64_t start_ns, headers_ns;
    char errbuf[CURL_ERROR_SIZE];
    char msg[CURL_ERROR_SIZE + 64];
};

typedef struct sockctx sockctx_t;

struct ah_http_client {
    ah_loop_t *loop;
    struct event_base *base;
    CURLM *multi;
    CURLSH *share;
    struct event *timer_ev; /* curl's own timeout (CURLMOPT_TIMERFUNCTION) */
    struct event *defer_ev; /* runs the pending queue from the loop */
    char *user_agent;
    size_t max_connections;
    size_t max_host_connections;
    long dns_cache_s;
    size_t max_idle;
    ah_http_call_t *live;
    ah_http_call_t *idle;
    ah_http_call_t *pq_head, *pq_tail;
    sockctx_t **socks; /* by fd */
    size_t socks_cap;
    int in_curl;  /* > 0 while inside curl_multi_socket_action / curl_easy_pause */
    int cb_depth; /* > 0 while a user callback runs */
    bool freeing;
    bool proxy_env;      /* a proxy variable is set: curl looks them up per transfer */
    bool native_ok;      /* plain http:// may take the native path (no http proxy, not curl_only) */
    uint64_t fd_warn_ns; /* last "out of file descriptors" warning */
    long fd_warn_skipped;
    h1pool_t *h1; /* native path's hosts and connections; NULL until first used */
    ah_http_client_stats_t st;
};

/* ---- client.c, used by client_h1.c ---- */

/** Puts c on the pending queue, run from the loop by run_pending (never inside a call). */
void ah_http_call_enqueue(ah_http_call_t *c);

/** Ends a call with rc: on_done (unless cancelled), then recycles it. Loop context only. */
void ah_http_call_finish(ah_http_call_t *c, int rc);

/** Returns a finished call to the free list (or frees it). */
void ah_http_call_release(ah_http_call_t *c);

/** Logs "out of file descriptors" at most once a second (socket() failed with err). */
void ah_http_client_warn_fds(ah_http_client_t *cl, int err);

/* ---- client_h1.c ---- */

/* ah_h1_prepare: this URL is not for the native path; use libcurl. */
#define AH_H1_UNSUPPORTED 1

/**
 * Prepares native call c (fields reset, body already in c->req_body): parses
 * the URL, finds its host pool and builds the request head. 0, or
 * AH_H1_UNSUPPORTED when the URL is not plain http:// to an IP literal or
 * localhost without credentials (printable ASCII only): the call goes to
 * libcurl; or -EINVAL (CR/LF in a header) / -ENOMEM. Nothing has started.
 */
int ah_h1_prepare(ah_http_call_t *c, const ah_http_call_opts_t *o, const char *method,
                  bool has_body);

/**
 * Sends prepared call c on a pooled connection, a new one, or queues it for
 * its host. No callback from here: failures reach on_done from the loop.
 */
void ah_h1_dispatch(ah_http_call_t *c);

/** Detaches c from its connection (closing it: the upstream sees the client go) or queue. */
void ah_h1_detach(ah_http_call_t *c);

/** The call is released: it no longer holds its host pool. */
void ah_h1_forget(ah_http_call_t *c);

/** Runs what was queued for native call c: a deferred failure or a resume. Loop only. */
void ah_h1_run_pending(ah_http_call_t *c);

/** Resume after pause: queues the restart (delivery happens from the loop). */
void ah_h1_resume(ah_http_call_t *c);

/** Closes every native connection and frees the pool (client free; no callbacks). */
void ah_h1_free(ah_http_client_t *cl);

#endif
