/*
 * webhooks.c - the webhook outbox through the API (admin):
 *
 *   GET  /v1/webhooks/deliveries?status=&run_id=&limit=&before=   newest first
 *   GET  /v1/webhooks/deliveries/{id}                             one, with its payload
 *   POST /v1/webhooks/deliveries/{id}/retry                       dead -> pending (202)
 *
 * Each handler validates on the loop and submits one store job; the JSON is
 * built by the job on the store thread and the completion only writes it out
 * on the request's loop. A retried delivery is due at once; the delivery
 * thread picks it up at its next poll (webhooks poll every second) or at
 * once when kicked. docs/webhooks.md describes the objects.
 */
#include "api/api.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/audit.h"
#include "store/webhooks.h"

#define LIST_DEFAULT 50
#define LIST_MAX     100

/* ---- helpers ---- */

static void not_found(ah_http_req_t *req)
{
    ah_http_reply_error(req, 404, NULL, "delivery_not_found", "id",
                        "no webhook delivery with this id");
}

static json_t *int_or_null(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

/* The API object of a delivery (payload included when the record has it). */
static json_t *delivery_json(const ah_webhook_rec_t *r)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I}", "id", r->id, "object",
                  "webhook_delivery", "run_id", r->run_id, "url", r->url ? r->url : "", "event",
                  r->event, "status", r->status, "attempts", r->attempts, "created_at",
                  (json_int_t)r->created_at, "updated_at", (json_int_t)r->updated_at);
    if (!o)
        return NULL;
    bool pending = strcmp(r->status, AH_WEBHOOK_PENDING) == 0;
    json_object_set_new(o, "next_attempt_at",
                        pending ? json_integer(r->next_attempt_at) : json_null());
    json_object_set_new(o, "delivered_at", int_or_null(r->delivered_at));
    json_object_set_new(o, "last_status", int_or_null(r->last_status));
    json_object_set_new(o, "last_error", r->last_error ? json_string(r->last_error) : json_null());
    if (r->payload) {
        /* Stored by the runtime as JSON; shown as a string if it ever is not. */
        json_t *p = json_loads(r->payload, JSON_DECODE_ANY, NULL);
        json_object_set_new(o, "payload", p ? p : json_string(r->payload));
    }
    return o;
}

/* Encodes o (stolen) into *out. 0 or -ENOMEM. */
static int dump(json_t *o, char **out)
{
    *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *out ? 0 : -ENOMEM;
}

static void reply_text(ah_http_req_t *req, int status, char *json)
{
    ah_http_reply_json(req, status, json, strlen(json));
}

/* ---- GET /v1/webhooks/deliveries ---- */

typedef struct list_job {
    ah_http_req_t *req;
    ah_webhook_filter_t f;
    char status[16];
    char run_id[48];
    int limit; /* deliveries answered; f.limit is one more, to tell has_more */
    json_t *data;
    char *out;
} list_job_t;

static int list_cb(void *ud, const ah_webhook_rec_t *r)
{
    list_job_t *j = ud;
    json_t *o = delivery_json(r);
    if (!o || json_array_append_new(j->data, o) != 0)
        return -ENOMEM;
    return 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    list_job_t *j = arg;
    j->data = json_array();
    if (!j->data)
        return -ENOMEM;
    int rc = ah_store_webhook_list(db, &j->f, list_cb, j);
    if (rc < 0)
        return rc;
    size_t n = json_array_size(j->data);
    bool more = n > (size_t)j->limit;
    if (more) {
        /* `before` is a strict ms cursor: end the page before the deliveries
         * that share the first left-out one's millisecond (as GET /v1/runs). */
        json_int_t cut = json_integer_value(
            json_object_get(json_array_get(j->data, (size_t)j->limit), "created_at"));
        size_t k = (size_t)j->limit;
        while (k > 1 && json_integer_value(
                            json_object_get(json_array_get(j->data, k - 1), "created_at")) == cut)
            k--;
        if (json_integer_value(json_object_get(json_array_get(j->data, k - 1), "created_at")) ==
            cut)
            k = (size_t)j->limit;
        while (json_array_size(j->data) > k)
            json_array_remove(j->data, json_array_size(j->data) - 1);
    }
    json_t *o = json_pack("{s:s, s:O, s:b}", "object", "list", "data", j->data, "has_more", more);
    return dump(o, &j->out);
}

static void list_done(int rc, void *arg)
{
    list_job_t *j = arg;
    if (rc >= 0)
        reply_text(j->req, 200, j->out);
    else
        ah_api_store_error(j->req, rc);
    json_decref(j->data);
    free(j->out);
    free(j);
}

void ah_api_webhooks_list(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    list_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    const char *v;
    if ((v = ah_http_req_query(req, "status")) && *v) {
        if (!ah_webhook_status_valid(v)) {
            ah_api_invalid(req, 400, "status",
                           "status must be one of pending, delivered, dead (got \"%.32s\")", v);
            goto fail;
        }
        snprintf(j->status, sizeof(j->status), "%s", v);
        j->f.status = j->status;
    }
    if ((v = ah_http_req_query(req, "run_id")) && *v) {
        if (strlen(v) >= sizeof(j->run_id)) {
            ah_api_invalid(req, 400, "run_id", "run_id is not a run id (too long)");
            goto fail;
        }
        snprintf(j->run_id, sizeof(j->run_id), "%s", v);
        j->f.run_id = j->run_id;
    }
    long long before;
    if (!ah_api_page_params(req, LIST_DEFAULT, LIST_MAX, "delivery", &j->limit, &before))
        goto fail;
    j->f.limit = j->limit + 1;
    j->f.before = before;
    int rc =
        ah_store_submit(app->store, AH_STORE_READ, list_work, list_done, ah_http_req_loop(req), j);
    if (rc) {
        ah_api_store_error(req, rc);
        goto fail;
    }
    return;
fail:
    free(j);
}

/* ---- GET /v1/webhooks/deliveries/{id} and POST .../retry ---- */

typedef struct one_job {
    ah_http_req_t *req;
    char id[48];
    char actor[48];
    char request_id[64];
    char status[16]; /* retry refused: the delivery's status */
    char *out;
} one_job_t;

static one_job_t *one_job_new(ah_http_req_t *req)
{
    const char *id = ah_http_req_param(req, "id");
    size_t n = id ? strlen(id) : 0;
    one_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return NULL;
    }
    if (n == 0 || n >= sizeof(j->id)) {
        free(j);
        not_found(req);
        return NULL;
    }
    j->req = req;
    memcpy(j->id, id, n + 1);
    return j;
}

static int get_work(ah_db_t *db, void *arg)
{
    one_job_t *j = arg;
    ah_webhook_rec_t r;
    int rc = ah_store_webhook_get(db, j->id, &r);
    if (rc < 0)
        return rc;
    rc = dump(delivery_json(&r), &j->out);
    ah_webhook_rec_free(&r);
    return rc;
}

static void get_done(int rc, void *arg)
{
    one_job_t *j = arg;
    if (rc >= 0)
        reply_text(j->req, 200, j->out);
    else if (rc == -ENOENT)
        not_found(j->req);
    else
        ah_api_store_error(j->req, rc);
    free(j->out);
    free(j);
}

void ah_api_webhooks_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    (void)who;
    one_job_t *j = one_job_new(req);
    if (!j)
        return;
    int rc =
        ah_store_submit(app->store, AH_STORE_READ, get_work, get_done, ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}

static int retry_work(ah_db_t *db, void *arg)
{
    one_job_t *j = arg;
    int rc = ah_store_webhook_retry(db, j->id, ah_wall_ms());
    ah_webhook_rec_t r;
    if (rc == 0 || rc == -EALREADY) {
        int grc = ah_store_webhook_get(db, j->id, &r);
        if (grc < 0)
            return grc;
        if (rc == -EALREADY) {
            snprintf(j->status, sizeof(j->status), "%s", r.status);
            ah_webhook_rec_free(&r);
            return rc;
        }
        /* The payload is not repeated in the answer: GET the delivery for it. */
        free(r.payload);
        r.payload = NULL;
        rc = dump(delivery_json(&r), &j->out);
        ah_webhook_rec_free(&r);
    }
    if (rc == 0)
        rc = ah_store_audit_insert(db, j->actor[0] ? j->actor : NULL, "webhook.retry", j->id, "{}",
                                   j->request_id[0] ? j->request_id : NULL);
    return rc;
}

static void retry_done(int rc, void *arg)
{
    one_job_t *j = arg;
    if (rc >= 0)
        reply_text(j->req, 202, j->out);
    else if (rc == -ENOENT)
        not_found(j->req);
    else if (rc == -EALREADY)
        ah_http_reply_error(j->req, 409, NULL, "delivery_not_dead", "id",
                            strcmp(j->status, AH_WEBHOOK_DELIVERED) == 0
                                ? "this delivery was delivered; only dead deliveries can be retried"
                                : "this delivery is pending (being retried already); only dead "
                                  "deliveries can be retried");
    else
        ah_api_store_error(j->req, rc);
    free(j->out);
    free(j);
}

void ah_api_webhooks_retry(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    one_job_t *j = one_job_new(req);
    if (!j)
        return;
    if (who)
        snprintf(j->actor, sizeof(j->actor), "%s", who->key_id);
    snprintf(j->request_id, sizeof(j->request_id), "%s", ah_http_req_id(req));
    int rc = ah_store_submit(app->store, AH_STORE_WRITE, retry_work, retry_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}
