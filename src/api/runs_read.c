/*
 * runs_read.c - the read side of runs: GET /v1/runs, GET /v1/runs/{id} and
 * GET /v1/runs/{id}/events (JSON, or a resumable SSE stream that follows a
 * live run).
 *
 * Visibility: an admin sees every run; any other role only the runs started
 * with its own key. Someone else's run answers 404, exactly like a missing
 * one, so run ids cannot be probed.
 *
 * Every store read is a READ job; the JSON (or SSE text) is built on the
 * store's reader thread and the completion only writes it out on the
 * request's loop.
 *
 * Following a run (SSE): one `follow_t` per stream drives a small state
 * machine on the request's loop. A store job reads the run's status and the
 * events after the last one sent; its completion writes them, then either
 * ends the stream (the run is final and everything was sent) or arms the
 * poll timer (200 ms; at once when the batch was cut short). Exactly one of
 * {a store job, the poll timer} is pending at any time, and only the job's
 * completion or the timer callback ever ends the stream and frees the
 * follower; the abort and ping callbacks only mark it gone and wake the timer
 * (they can run inside our own stream writes, see ah_http_conn_close).
 */
#include "api/api.h"

#include <ctype.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "api/runs_json.h"
#include "core/log.h"
#include "http/sse.h"
#include "store/runs.h"

#define RUNS_LIST_DEFAULT   50
#define RUNS_LIST_MAX       100
#define EVENTS_LIST_DEFAULT 1000
#define EVENTS_LIST_MAX     10000

#define FOLLOW_POLL_MS     200
#define FOLLOW_PING_S      15
#define FOLLOW_BATCH       500       /* events per store read */
#define FOLLOW_BATCH_BYTES (1 << 20) /* SSE text per store read */
#define FOLLOW_MAX_PENDING (1 << 20) /* unsent bytes before we stop reading ahead */
/* A final run whose last_event_seq is above what the log holds: wait this many
 * polls for the missing events before ending the stream anyway. */
#define FOLLOW_TAIL_POLLS 25

/* ---- helpers ---- */

static void not_found(ah_http_req_t *req)
{
    ah_http_reply_error(req, 404, NULL, "run_not_found", "id", "no run with this id");
}

/* The run id of the path, or NULL when it cannot name a run (then: 404). */
static bool copy_run_id(ah_http_req_t *req, char *out, size_t outsz)
{
    const char *id = ah_http_req_param(req, "id");
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= outsz)
        return false;
    memcpy(out, id, n + 1);
    return true;
}

/* Owner restriction of a principal: "" (none) for admins, else its key id. */
static void owner_of(const ah_principal_t *who, char *key_id, size_t n)
{
    key_id[0] = '\0';
    if (who && who->role < AH_ROLE_ADMIN)
        snprintf(key_id, n, "%s", who->key_id);
}

static bool visible(const ah_run_rec_t *r, const char *owner)
{
    return !owner[0] || strcmp(r->key_id, owner) == 0;
}

static bool wants_sse(ah_http_req_t *req)
{
    const char *a = ah_http_req_header_str(req, "accept");
    return a && strcasestr(a, "text/event-stream") != NULL;
}

/* ---- GET /v1/runs ---- */

typedef struct list_job {
    ah_http_req_t *req;
    ah_run_filter_t f;
    char owner[48];
    int limit; /* runs answered; f.limit is one more, to tell has_more */
    int n;
    size_t offs[RUNS_LIST_MAX + 1];     /* where each run starts in out (before its comma) */
    int64_t created[RUNS_LIST_MAX + 1]; /* its created_at */
    ah_buf_t out;
} list_job_t;

static int list_cb(void *ud, const ah_run_rec_t *r)
{
    list_job_t *j = ud;
    if (j->n > j->limit)
        return 1;
    j->offs[j->n] = j->out.len;
    j->created[j->n] = r->created_at;
    if (j->n && ah_buf_putc(&j->out, ',') != 0)
        return -ENOMEM;
    int rc = ah_api_run_json(r, &j->out);
    if (rc < 0)
        return rc;
    j->n++;
    return 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    list_job_t *j = arg;
    if (ah_buf_puts(&j->out, "{\"object\":\"list\",\"data\":[") != 0)
        return -ENOMEM;
    int rc = ah_store_run_list_summary(db, &j->f, list_cb, j);
    if (rc < 0)
        return rc;
    bool more = j->n > j->limit;
    if (more) {
        /*
         * The next page is asked for with before = the last created_at shown,
         * and `before` is strict: runs sharing that millisecond with the first
         * run left out would be skipped. So the page stops before them and
         * they come first on the next page (unless the whole page is that one
         * millisecond: nothing can be done with a ms cursor then).
         */
        int k = j->limit;
        while (k > 1 && j->created[k - 1] == j->created[j->limit])
            k--;
        if (j->created[k - 1] == j->created[j->limit])
            k = j->limit;
        j->out.len = j->offs[k];
        j->out.data[j->out.len] = '\0';
    }
    return ah_buf_printf(&j->out, "],\"has_more\":%s}", more ? "true" : "false") ? -ENOMEM : 0;
}

static void list_done(int rc, void *arg)
{
    list_job_t *j = arg;
    if (rc >= 0)
        ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
    else
        ah_api_store_error(j->req, rc);
    ah_buf_free(&j->out);
    free(j);
}

void ah_api_runs_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    list_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    ah_buf_init(&j->out, 0);
    const char *v;

    /* Query strings live in the request's arena until the terminal reply. */
    if ((v = ah_http_req_query(req, "agent")) && *v)
        j->f.agent = v;
    if ((v = ah_http_req_query(req, "session_id")) && *v)
        j->f.session_id = v;
    if ((v = ah_http_req_query(req, "status")) && *v) {
        if (!ah_run_status_valid(v)) {
            ah_api_invalid(req, 400, "status",
                           "status must be one of queued, running, requires_action, completed, "
                           "failed, cancelled, expired (got \"%.32s\")",
                           v);
            goto fail;
        }
        j->f.status = v;
    }
    long long before;
    if (!ah_api_page_params(req, RUNS_LIST_DEFAULT, RUNS_LIST_MAX, "run", &j->limit, &before))
        goto fail;
    j->f.limit = j->limit + 1;
    j->f.before = before;
    owner_of(who, j->owner, sizeof(j->owner));
    if (j->owner[0])
        j->f.key_id = j->owner;

    int rc =
        ah_store_submit(app->store, AH_STORE_READ, list_work, list_done, ah_http_req_loop(req), j);
    if (rc) {
        ah_api_store_error(req, rc);
        goto fail;
    }
    return;
fail:
    ah_buf_free(&j->out);
    free(j);
}

/* ---- GET /v1/runs/{id} ---- */

typedef struct get_job {
    ah_http_req_t *req;
    char id[48];
    char owner[48];
    ah_buf_t out;
} get_job_t;

static int get_work(ah_db_t *db, void *arg)
{
    get_job_t *j = arg;
    ah_run_rec_t r;
    int rc = ah_store_run_get(db, j->id, &r);
    if (rc < 0)
        return rc;
    rc = visible(&r, j->owner) ? ah_api_run_json(&r, &j->out) : -ENOENT;
    ah_run_rec_free(&r);
    return rc;
}

static void get_done(int rc, void *arg)
{
    get_job_t *j = arg;
    if (rc >= 0)
        ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
    else if (rc == -ENOENT)
        not_found(j->req);
    else
        ah_api_store_error(j->req, rc);
    ah_buf_free(&j->out);
    free(j);
}

void ah_api_runs_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    get_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    if (!copy_run_id(req, j->id, sizeof(j->id))) {
        free(j);
        not_found(req);
        return;
    }
    j->req = req;
    ah_buf_init(&j->out, 0);
    owner_of(who, j->owner, sizeof(j->owner));
    int rc =
        ah_store_submit(app->store, AH_STORE_READ, get_work, get_done, ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}

/* ---- GET /v1/runs/{id}/events as JSON ---- */

typedef struct events_job {
    ah_http_req_t *req;
    char id[48];
    char owner[48];
    int64_t after;
    int limit;
    int n;
    ah_buf_t out;
} events_job_t;

static int events_cb(void *ud, const ah_run_event_t *e)
{
    events_job_t *j = ud;
    if (j->n == j->limit) {
        j->n++; /* one more than asked: has_more */
        return 1;
    }
    if (j->n && ah_buf_putc(&j->out, ',') != 0)
        return -ENOMEM;
    int rc = ah_api_run_event_json(e, &j->out);
    if (rc < 0)
        return rc;
    j->n++;
    return 0;
}

static int events_work(ah_db_t *db, void *arg)
{
    events_job_t *j = arg;
    ah_run_rec_t r;
    int rc = ah_store_run_get_head(db, j->id, &r);
    if (rc < 0)
        return rc;
    if (!visible(&r, j->owner))
        return -ENOENT;
    if (ah_buf_puts(&j->out, "{\"object\":\"list\",\"data\":[") != 0)
        return -ENOMEM;
    rc = ah_store_run_events_list(db, j->id, j->after, j->limit + 1, events_cb, j);
    if (rc < 0)
        return rc;
    return ah_buf_printf(&j->out, "],\"has_more\":%s}", j->n > j->limit ? "true" : "false")
               ? -ENOMEM
               : 0;
}

static void events_done(int rc, void *arg)
{
    events_job_t *j = arg;
    if (rc >= 0)
        ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
    else if (rc == -ENOENT)
        not_found(j->req);
    else
        ah_api_store_error(j->req, rc);
    ah_buf_free(&j->out);
    free(j);
}

/* ---- GET /v1/runs/{id}/events as SSE, following the run ---- */

typedef struct follow {
    ah_http_req_t *req;
    ah_app_t *app;
    struct event *poll_ev; /* one-shot: the next store read */
    struct event *ping_ev; /* persistent: the keep-alive comment */
    char id[48];
    char owner[48];
    int64_t after;      /* seq of the last event sent */
    char sent_type[32]; /* its type */
    bool started;       /* the SSE head went out */
    bool in_flight;     /* a store job runs: it owns the fields below */
    bool gone;          /* the client left or a write failed: end at the next step */
    int final_polls;    /* reads that saw a final status */
    int stalled_polls;  /* of those, reads that brought no event while some were missing */
    /* Written by the store job, read by its completion. */
    ah_buf_t out; /* SSE text of the batch */
    int batch_n;
    int64_t batch_last;
    char batch_type[32];
    bool batch_full; /* cut at FOLLOW_BATCH events or bytes: read again at once */
    bool final;
    int64_t last_event_seq;
} follow_t;

static int follow_event(void *ud, const ah_run_event_t *e)
{
    follow_t *f = ud;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)e->seq);
    int rc = ah_sse_format(&f->out, e->type, id, e->data, strlen(e->data));
    if (rc < 0)
        return rc;
    f->batch_n++;
    f->batch_last = e->seq;
    snprintf(f->batch_type, sizeof(f->batch_type), "%s", e->type);
    if (f->batch_n >= FOLLOW_BATCH || f->out.len >= FOLLOW_BATCH_BYTES) {
        f->batch_full = true;
        return 1;
    }
    return 0;
}

static int follow_work(ah_db_t *db, void *arg)
{
    follow_t *f = arg;
    ah_run_rec_t r;
    /* Status first, events second: the events read then sees at least every
     * event committed before the status it judged final. */
    int rc = ah_store_run_get_head(db, f->id, &r);
    if (rc < 0)
        return rc;
    if (!visible(&r, f->owner))
        return -ENOENT;
    f->final = ah_run_status_final(r.status);
    f->last_event_seq = r.last_event_seq;
    ah_buf_reset(&f->out);
    f->batch_n = 0;
    f->batch_full = false;
    f->batch_last = f->after;
    rc = ah_store_run_events_list(db, f->id, f->after, FOLLOW_BATCH, follow_event, f);
    return rc < 0 ? rc : 0;
}

static void follow_tick(evutil_socket_t fd, short what, void *arg);
static void follow_done(int rc, void *arg);

static void follow_arm(follow_t *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(f->poll_ev, &tv);
}

static void follow_free(follow_t *f)
{
    if (f->poll_ev)
        event_free(f->poll_ev);
    if (f->ping_ev)
        event_free(f->ping_ev);
    ah_buf_free(&f->out);
    free(f);
}

/* Terminal: ends the stream (or drops a request that never got its head). */
static void follow_finish(follow_t *f)
{
    ah_http_req_on_abort(f->req, NULL, NULL);
    if (f->started)
        ah_http_stream_end(f->req);
    else
        ah_http_req_close(f->req);
    follow_free(f);
}

/* May run inside our own writes (abort callback): only marks and wakes. */
static void follow_gone(void *arg)
{
    follow_t *f = arg;
    f->gone = true;
    if (!f->in_flight)
        follow_arm(f, 0);
}

static void follow_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    follow_t *f = arg;
    if (!f->gone && ah_sse_comment(f->req, "ping") != 0)
        follow_gone(f);
}

static bool terminal_event(const char *type)
{
    return strcmp(type, "run.completed") == 0 || strcmp(type, "run.failed") == 0 ||
           strcmp(type, "run.cancelled") == 0 || strcmp(type, "run.expired") == 0;
}

static void follow_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    follow_t *f = arg;
    /* A draining server ends streams: the client resumes elsewhere with Last-Event-ID. */
    if (f->gone || (f->app->server && ah_http_server_draining(f->app->server))) {
        follow_finish(f);
        return;
    }
    /* A slow client: do not read ahead of what it takes. */
    if (ah_http_stream_pending(f->req) > FOLLOW_MAX_PENDING) {
        follow_arm(f, FOLLOW_POLL_MS);
        return;
    }
    int rc = ah_store_submit(f->app->store, AH_STORE_READ, follow_work, follow_done,
                             ah_http_req_loop(f->req), f);
    if (rc == -EBUSY) {
        follow_arm(f, FOLLOW_POLL_MS);
    } else if (rc) {
        ah_log(AH_LOG_WARN, "api", "run events stream ended: cannot read the store",
               AH_LF_STR("run_id", f->id), AH_LF_INT("errno", -rc), AH_LF_END);
        follow_finish(f);
    } else {
        f->in_flight = true;
    }
}

static void follow_done(int rc, void *arg)
{
    follow_t *f = arg;
    f->in_flight = false;
    if (f->gone) {
        follow_finish(f);
        return;
    }
    if (rc < 0 && !f->started) {
        ah_http_req_on_abort(f->req, NULL, NULL);
        if (rc == -ENOENT)
            not_found(f->req);
        else
            ah_api_store_error(f->req, rc);
        follow_free(f);
        return;
    }
    if (rc < 0) {
        if (rc != -ENOENT)
            ah_log(AH_LOG_WARN, "api", "run events stream ended: store read failed",
                   AH_LF_STR("run_id", f->id), AH_LF_INT("errno", -rc), AH_LF_END);
        follow_finish(f);
        return;
    }
    if (!f->started) {
        f->started = true;
        if (ah_sse_start(f->req) != 0) {
            follow_finish(f);
            return;
        }
        struct timeval ping = {FOLLOW_PING_S, 0};
        event_add(f->ping_ev, &ping);
    }
    if (f->batch_n) {
        if (ah_http_stream_write(f->req, f->out.data, f->out.len) != 0) {
            follow_finish(f); /* gone, or -ENOBUFS: a client this slow resumes later */
            return;
        }
        f->after = f->batch_last;
        memcpy(f->sent_type, f->batch_type, sizeof(f->sent_type));
    }
    ah_buf_reset(&f->out);
    if (f->final && !f->batch_full) {
        f->final_polls++;
        if (f->after >= f->last_event_seq) {
            /* Done when the last event sent closes the run, or after one more
             * read found nothing: a run.* event written just after the final
             * status is not lost. */
            if (terminal_event(f->sent_type) || f->final_polls >= 2) {
                follow_finish(f);
                return;
            }
        } else if (f->batch_n) {
            f->stalled_polls = 0;
        } else if (++f->stalled_polls > FOLLOW_TAIL_POLLS) {
            ah_log(AH_LOG_WARN, "api",
                   "run events stream ended: events promised by the run are missing",
                   AH_LF_STR("run_id", f->id), AH_LF_INT("sent", f->after),
                   AH_LF_INT("last_event_seq", f->last_event_seq), AH_LF_END);
            follow_finish(f);
            return;
        }
    }
    follow_arm(f, f->batch_full ? 0 : FOLLOW_POLL_MS);
}

static void events_follow(ah_http_req_t *req, ah_app_t *app, const char *id, const char *owner,
                          int64_t after)
{
    follow_t *f = calloc(1, sizeof(*f));
    if (!f) {
        ah_api_out_of_memory(req);
        return;
    }
    f->req = req;
    f->app = app;
    f->after = after;
    snprintf(f->id, sizeof(f->id), "%s", id);
    snprintf(f->owner, sizeof(f->owner), "%s", owner);
    ah_buf_init(&f->out, 0);
    struct event_base *base = ah_loop_base(ah_http_req_loop(req));
    f->poll_ev = event_new(base, -1, 0, follow_tick, f);
    f->ping_ev = event_new(base, -1, EV_PERSIST, follow_ping, f);
    if (!f->poll_ev || !f->ping_ev) {
        follow_free(f);
        ah_api_out_of_memory(req);
        return;
    }
    int rc = ah_store_submit(app->store, AH_STORE_READ, follow_work, follow_done,
                             ah_http_req_loop(req), f);
    if (rc) {
        follow_free(f);
        ah_api_store_error(req, rc);
        return;
    }
    f->in_flight = true;
    ah_http_req_on_abort(req, follow_gone, f);
}

void ah_api_runs_events(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    char id[48], owner[48];
    if (!copy_run_id(req, id, sizeof(id))) {
        not_found(req);
        return;
    }
    owner_of(who, owner, sizeof(owner));
    bool sse = wants_sse(req);

    /* Last-Event-ID (an EventSource reconnecting) wins over ?after. */
    long long after = 0;
    const char *v = sse ? ah_http_req_header_str(req, "last-event-id") : NULL;
    const char *param = "Last-Event-ID";
    if (!v || !*v) {
        v = ah_http_req_query(req, "after");
        param = "after";
    }
    if (v && *v && !ah_api_parse_int(v, 0, INT64_MAX, &after)) {
        ah_api_invalid(req, 400, param, "%s must be an event id (a number >= 0)", param);
        return;
    }
    if (sse) {
        events_follow(req, app, id, owner, after);
        return;
    }

    events_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    j->after = after;
    memcpy(j->id, id, sizeof(id));
    memcpy(j->owner, owner, sizeof(owner));
    ah_buf_init(&j->out, 0);
    j->limit = EVENTS_LIST_DEFAULT;
    long long n;
    if ((v = ah_http_req_query(req, "limit"))) {
        if (!ah_api_parse_int(v, 1, EVENTS_LIST_MAX, &n)) {
            ah_api_invalid(req, 400, "limit", "limit must be a number from 1 to %d",
                           EVENTS_LIST_MAX);
            free(j);
            return;
        }
        j->limit = (int)n;
    }
    int rc = ah_store_submit(app->store, AH_STORE_READ, events_work, events_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}
