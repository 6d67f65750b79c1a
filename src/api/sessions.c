/*
 * sessions.c - GET /v1/sessions/{id} (a session's conversation memory) and
 * DELETE /v1/sessions/{id} (forget it). The memory itself is kept by the
 * runtime through store/sessions.h; this file only shows and deletes it.
 *
 * Visibility is that of runs: an admin sees every session, any other role
 * only the sessions of its own key, and someone else's session answers 404
 * exactly like a missing (or expired) one. A session that a run holds cannot
 * be deleted (409): the run would write its memory back when it ends.
 *
 * GET renders the JSON on the store's reader thread; the completion only
 * writes it out on the request's loop.
 */
#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/jscan.h"
#include "store/audit.h"
#include "store/sessions.h"

typedef struct session_job {
    ah_http_req_t *req;
    char id[AH_SESSION_ID_MAX + 1];
    char owner[48];       /* "" = any (admin) */
    char actor[48];       /* for the audit row */
    char request_id[72];  /* for the audit row */
    char busy_run_id[48]; /* DELETE: the run holding it */
    bool held;            /* DELETE: refused because a run holds it (not a store error) */
    ah_buf_t out;
} session_job_t;

static void not_found(ah_http_req_t *req)
{
    ah_http_reply_error(req, 404, NULL, "session_not_found", "id",
                        "no session with this id (it never existed, expired, or belongs to "
                        "another API key)");
}

static int put_str(ah_buf_t *b, const char *s)
{
    int rc = ah_buf_putc(b, '"');
    if (rc == 0)
        rc = ah_buf_json_escape(b, s, strlen(s));
    if (rc == 0)
        rc = ah_buf_putc(b, '"');
    return rc;
}

/* Appends the session object (see GET in docs/runs.md). 0 or -ENOMEM / -E2BIG. */
static int session_json(const ah_session_rec_t *s, ah_buf_t *b)
{
    int rc = ah_buf_puts(b, "{\"id\":");
    if (rc == 0)
        rc = put_str(b, s->id);
    if (rc == 0)
        rc = ah_buf_puts(b, ",\"object\":\"session\",\"agent\":");
    if (rc == 0)
        rc = put_str(b, s->agent);
    if (rc == 0)
        rc = ah_buf_puts(b, ",\"messages\":");
    /* Stored by us, but the answer must parse whatever a row holds. */
    const char *m = s->messages ? s->messages : "[]";
    size_t n = strlen(m);
    if (rc == 0)
        rc = n && m[0] == '[' && ah_json_validate(m, n, NULL) == 0 ? ah_buf_append(b, m, n)
                                                                   : ah_buf_puts(b, "[]");
    if (rc == 0)
        rc = ah_buf_puts(b, ",\"active_run_id\":");
    if (rc == 0)
        rc = s->active_run_id[0] ? put_str(b, s->active_run_id) : ah_buf_puts(b, "null");
    if (rc == 0)
        rc = ah_buf_printf(b, ",\"created_at\":%lld,\"updated_at\":%lld,\"expires_at\":%lld}",
                           (long long)s->created_at, (long long)s->updated_at,
                           (long long)s->expires_at);
    return rc;
}

/* A job for the path's session, or NULL after answering (404 or 503). */
static session_job_t *job_new(ah_http_req_t *req, const ah_principal_t *who)
{
    const char *id = ah_http_req_param(req, "id");
    if (!ah_session_id_valid(id)) {
        not_found(req);
        return NULL;
    }
    session_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return NULL;
    }
    j->req = req;
    memcpy(j->id, id, strlen(id) + 1);
    if (who && who->role < AH_ROLE_ADMIN)
        snprintf(j->owner, sizeof(j->owner), "%s", who->key_id);
    if (who)
        snprintf(j->actor, sizeof(j->actor), "%s", who->key_id);
    snprintf(j->request_id, sizeof(j->request_id), "%s", ah_http_req_id(req));
    ah_buf_init(&j->out, 0);
    return j;
}

static void job_free(session_job_t *j)
{
    ah_buf_free(&j->out);
    free(j);
}

static void submit(ah_http_req_t *req, ah_app_t *app, session_job_t *j, unsigned flags,
                   ah_store_work_fn work, ah_store_done_fn done)
{
    int rc = ah_store_submit(app->store, flags, work, done, ah_http_req_loop(req), j);
    if (rc) {
        job_free(j);
        ah_api_store_error(req, rc);
    }
}

/* ---- GET /v1/sessions/{id} ---- */

static int get_work(ah_db_t *db, void *arg)
{
    session_job_t *j = arg;
    ah_session_rec_t s;
    int rc = ah_store_session_get(db, j->id, j->owner[0] ? j->owner : NULL, ah_wall_ms(), &s);
    if (rc < 0)
        return rc;
    rc = session_json(&s, &j->out);
    ah_session_rec_free(&s);
    return rc;
}

static void get_done(int rc, void *arg)
{
    session_job_t *j = arg;
    if (rc >= 0)
        ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
    else if (rc == -ENOENT)
        not_found(j->req);
    else
        ah_api_store_error(j->req, rc);
    job_free(j);
}

void ah_api_sessions_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    session_job_t *j = job_new(req, who);
    if (j)
        submit(req, app, j, AH_STORE_READ, get_work, get_done);
}

/* ---- DELETE /v1/sessions/{id} ---- */

static int delete_work(ah_db_t *db, void *arg)
{
    session_job_t *j = arg;
    int rc = ah_store_session_delete(db, j->id, j->owner[0] ? j->owner : NULL, ah_wall_ms(),
                                     j->busy_run_id);
    /* The batch's COMMIT can fail with -EBUSY too: done must tell the two apart. */
    j->held = rc == -EBUSY;
    if (rc < 0)
        return rc;
    return ah_store_audit_insert(db, j->actor[0] ? j->actor : NULL, "session.delete", j->id, NULL,
                                 j->request_id[0] ? j->request_id : NULL);
}

static void delete_done(int rc, void *arg)
{
    session_job_t *j = arg;
    if (rc >= 0) {
        ah_buf_reset(&j->out);
        if (ah_buf_puts(&j->out, "{\"id\":") == 0 && put_str(&j->out, j->id) == 0 &&
            ah_buf_puts(&j->out, ",\"object\":\"session\",\"deleted\":true}") == 0)
            ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
        else
            ah_api_out_of_memory(j->req);
    } else if (rc == -ENOENT) {
        not_found(j->req);
    } else if (j->held && j->busy_run_id[0]) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "run %s is using this session; cancel it (POST /v1/runs/%s/cancel) or wait for "
                 "it to finish, then delete the session",
                 j->busy_run_id, j->busy_run_id);
        ah_http_reply_error(j->req, 409, "conflict_error", "session_busy", "id", msg);
    } else if (j->held) {
        /* A run took the session between our read and the delete. */
        ah_http_reply_error(j->req, 409, "conflict_error", "session_busy", "id",
                            "a run is using this session; wait for it to finish, then delete "
                            "the session");
    } else {
        ah_api_store_error(j->req, rc);
    }
    job_free(j);
}

void ah_api_sessions_delete(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    session_job_t *j = job_new(req, who);
    if (j)
        submit(req, app, j, AH_STORE_WRITE, delete_work, delete_done);
}
