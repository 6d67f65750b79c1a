/*
 * internal.h - structures shared by the HTTP server's files (server.c owns
 * workers and listeners, conn.c the connection state machine, response.c
 * replies and request accessors). Not for use outside src/http/.
 */
#ifndef AH_HTTP_INTERNAL_H
#define AH_HTTP_INTERNAL_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "http/server.h"

typedef struct worker worker_t;
typedef struct conn conn_t;

typedef struct resp_header {
    struct resp_header *next;
    const char *name;
    const char *value;
} resp_header_t;

struct ah_http_req {
    conn_t *conn;
    ah_arena_t arena;
    ah_http_head_t head;
    ah_buf_t body;
    const ah_route_t *route;
    ah_route_params_t params;
    char id[72];
    void *ctx;
    uint64_t start_ns;
    int status;
    bool active;        /* between head parsed and terminal call */
    bool done;          /* terminal call made */
    bool streaming;     /* stream started */
    bool handler_owned; /* a handler holds a reference until its terminal call */
    bool body_chunked;
    ah_http_chunked_t chunked;
    resp_header_t *resp_headers;
    void (*abort_cb)(void *);
    void *abort_ud;
    void (*drain_cb)(void *);
    void *drain_ud;
    size_t bytes_out;
};

enum conn_state {
    C_HEAD,    /* waiting for / reading a request head */
    C_BODY,    /* reading the body */
    C_HANDLER, /* the handler owns the request */
    C_CLOSED   /* socket closed; memory lives until the last reference drops */
};

enum deadline_kind { DL_NONE, DL_IDLE, DL_HEAD, DL_BODY, DL_WRITE };

struct conn {
    worker_t *w;
    conn_t *prev, *next; /* worker's list of open connections */
    int fd;
    int refs;
    enum conn_state state;
    struct event *rev, *wev;
    ah_buf_t in;
    ah_buf_t out;
    size_t out_off;
    bool close_after; /* close once the current response is written */
    bool in_process;  /* inside process_input (no re-entry) */
    bool saw_bytes;   /* bytes of the current head arrived */
    bool write_armed;
    enum deadline_kind dl_kind;
    uint64_t deadline_ns;
    char remote[64];
    ah_http_req_t req; /* one request at a time (no pipelined overlap) */
};

struct worker {
    ah_http_server_t *srv;
    int index;
    ah_loop_t *loop;
    pthread_t thread;
    int listen_fd;
    struct event *accept_ev;
    struct event *tick_ev;
    conn_t *conns;
    long n_conns;
    conn_t *free_conns; /* closed connections kept for reuse with their buffers */
    int n_free;
    atomic_long stat_conns;
    atomic_long stat_in_flight;
    atomic_ullong stat_accepted;
    atomic_ullong stat_rejected;
    bool draining;
    bool stopped;
    bool accept_paused;  /* out of fds: accepting again at the next tick */
    uint64_t fd_warn_ns; /* last "out of file descriptors" warning */
    long fd_warn_skipped;
    atomic_bool finished; /* loop returned */
    ah_buf_t access_log;
    char date[40];
    time_t date_sec;
    char log_ts[24]; /* access log: "YYYY-MM-DDTHH:MM:SS" of log_sec */
    time_t log_sec;
    uint64_t rng[2]; /* request-id generator state */
};

struct ah_http_server {
    ah_http_server_opts_t o;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char addr_str[80];
    worker_t *workers;
    int n_workers;
    atomic_bool draining;
    atomic_long total_conns;
    pthread_mutex_t mu; /* guards done_cv waits */
    pthread_cond_t done_cv;
    int n_finished;
};

/* conn.c */
void ah_http_conn_accept(worker_t *w, int fd, const struct sockaddr *sa, socklen_t slen);
void ah_http_conn_close(conn_t *c);
void ah_http_conn_tick(worker_t *w, uint64_t now);
void ah_http_conn_flush(conn_t *c);
void ah_http_conn_unref(conn_t *c);
void ah_http_conn_drain(conn_t *c);
void ah_http_conn_free_cache(worker_t *w);
void ah_http_conn_request_done(conn_t *c); /* the terminal call was made */

/* response.c */
void ah_http_write_error(conn_t *c, ah_http_req_t *r, int status, const char *code,
                         const char *message, bool close);
const char *ah_http_status_text(int status);
void ah_http_req_reset(ah_http_req_t *r);

/* server.c */
void ah_http_worker_conn_gone(worker_t *w);
void ah_http_worker_refresh_date(worker_t *w);
void ah_http_worker_gen_id(worker_t *w, char *out, size_t n);
void ah_http_worker_access_log(worker_t *w, ah_http_req_t *r, uint64_t dur_ns);

#endif
