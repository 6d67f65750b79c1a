/*
 * limits.c - GET/PUT /v1/keys/{id}/limits (admin): a key's rate limits
 * (rpm, tpm, concurrency) and spend budget (budget_usd per budget_period).
 *
 * PUT merges: a field left out keeps its value, null clears it (back to the
 * limits.* default of the config, or no budget), a value sets it. Both
 * answers show the stored overrides, the effective limits, and, with a
 * budget, the spend of the current period as this process sees it. A change
 * is applied to this process's limiter before the answer; other replicas
 * pick it up within a second (docs/internals/limits.md).
 */
#include "api/api.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/audit.h"
#include "store/keys.h"
#include "store/usage.h"

enum { F_ABSENT = 0, F_NULL, F_SET };

typedef struct field {
    int state;
    int64_t i;
    double d;
    char s[16];
} field_t;

typedef struct limits_job {
    ah_http_req_t *req;
    ah_app_t *app;
    char id[48];
    char actor[48];
    char request_id[128];
    field_t rpm, tpm, conc, budget, period;
    int64_t now;
    ah_key_limits_rec_t rec; /* the row after the job */
} limits_job_t;

static void reply_obj(ah_http_req_t *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    if (!s)
        ah_http_reply_error(req, 500, NULL, "internal_error", NULL, "could not encode the reply");
    else
        ah_http_reply_json(req, status, s, strlen(s));
    free(s);
    json_decref(o);
}

static json_t *opt_int(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

static json_t *limits_json(ah_app_t *app, const ah_key_limits_rec_t *r)
{
    bool budget = r->budget_usd >= 0;
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "object", json_string("key_limits"));
    json_object_set_new(o, "key_id", json_string(r->key_id));
    json_object_set_new(o, "rpm", opt_int(r->rpm));
    json_object_set_new(o, "tpm", opt_int(r->tpm));
    json_object_set_new(o, "concurrency", opt_int(r->concurrency));
    json_object_set_new(o, "budget_usd", budget ? json_real(r->budget_usd) : json_null());
    json_object_set_new(o, "budget_period",
                        budget && r->budget_period[0] ? json_string(r->budget_period)
                                                      : json_null());
    json_object_set_new(o, "updated_at", r->updated_at ? json_integer(r->updated_at) : json_null());
    if (!app->limits)
        return o;
    ah_limits_key_status_t st;
    ah_limits_key_status(app->limits, r->key_id, &st);
    json_object_set_new(o, "effective",
                        json_pack("{s:I, s:I, s:I}", "rpm", (json_int_t)st.rpm, "tpm",
                                  (json_int_t)st.tpm, "concurrency", (json_int_t)st.concurrency));
    json_object_set_new(o, "in_flight", json_integer(st.in_flight));
    if (st.budget_usd >= 0 && st.period != AH_BUDGET_NONE) {
        json_t *sp = json_object();
        json_object_set_new(sp, "period", json_string(ah_budget_period_name(st.period)));
        if (st.period == AH_BUDGET_TOTAL) {
            json_object_set_new(sp, "period_start", json_null());
            json_object_set_new(sp, "period_end", json_null());
        } else {
            char b[32];
            ah_limits_utc_format(st.period_start_ms, false, b, sizeof(b));
            json_object_set_new(sp, "period_start", json_string(b));
            ah_limits_utc_format(st.period_end_ms, false, b, sizeof(b));
            json_object_set_new(sp, "period_end", json_string(b));
        }
        json_object_set_new(sp, "spent_usd", json_real(st.spent_usd));
        double left = st.budget_usd - st.spent_usd;
        json_object_set_new(sp, "remaining_usd", json_real(left > 0 ? left : 0));
        json_object_set_new(o, "spend", sp);
    } else {
        json_object_set_new(o, "spend", json_null());
    }
    return o;
}

/* ---- store work ---- */

/* Reads the key (404 when unknown) and its row (defaults when there is none). */
static int load(ah_db_t *db, limits_job_t *j)
{
    ah_key_rec_t k;
    int rc = ah_store_key_get(db, j->id, &k);
    if (rc)
        return rc;
    rc = ah_store_key_limits_get(db, j->id, &j->rec);
    if (rc == -ENOENT) {
        ah_key_limits_init(&j->rec, j->id);
        rc = 0;
    }
    return rc;
}

static int get_work(ah_db_t *db, void *arg)
{
    return load(db, arg);
}

static void merge_int(int64_t *dst, const field_t *f)
{
    if (f->state == F_NULL)
        *dst = -1;
    else if (f->state == F_SET)
        *dst = f->i;
}

static int put_work(ah_db_t *db, void *arg)
{
    limits_job_t *j = arg;
    int rc = load(db, j);
    if (rc)
        return rc;
    ah_key_limits_rec_t *r = &j->rec;
    int64_t prev = r->updated_at;
    merge_int(&r->rpm, &j->rpm);
    merge_int(&r->tpm, &j->tpm);
    merge_int(&r->concurrency, &j->conc);
    if (j->budget.state == F_NULL)
        r->budget_usd = -1;
    else if (j->budget.state == F_SET)
        r->budget_usd = j->budget.d;
    if (j->period.state == F_NULL)
        r->budget_period[0] = '\0';
    else if (j->period.state == F_SET)
        memcpy(r->budget_period, j->period.s, sizeof(r->budget_period));
    if (r->budget_usd < 0)
        r->budget_period[0] = '\0'; /* no budget, no period */
    else if (!r->budget_period[0])
        memcpy(r->budget_period, "monthly", sizeof("monthly"));
    /* Strictly increasing, so caches order this change after any earlier one. */
    r->updated_at = j->now > prev ? j->now : prev + 1;
    rc = ah_store_key_limits_upsert(db, r);
    if (rc)
        return rc;
    json_t *d =
        json_pack("{s:o, s:o, s:o, s:o, s:o}", "rpm", opt_int(r->rpm), "tpm", opt_int(r->tpm),
                  "concurrency", opt_int(r->concurrency), "budget_usd",
                  r->budget_usd >= 0 ? json_real(r->budget_usd) : json_null(), "budget_period",
                  r->budget_period[0] ? json_string(r->budget_period) : json_null());
    char *detail = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    rc = ah_store_audit_insert(db, j->actor, "key.limits", j->id, detail, j->request_id);
    free(detail);
    return rc;
}

static void done(int rc, void *arg, bool put)
{
    limits_job_t *j = arg;
    if (rc == 0) {
        if (put && j->app->limits)
            ah_limits_apply(j->app->limits, &j->rec);
        reply_obj(j->req, 200, limits_json(j->app, &j->rec));
    } else if (rc == -ENOENT) {
        ah_http_reply_error(j->req, 404, NULL, "key_not_found", "id", "no API key with this id");
    } else {
        ah_api_store_error(j->req, rc);
    }
    free(j);
}

static void get_done(int rc, void *arg)
{
    done(rc, arg, false);
}

static void put_done(int rc, void *arg)
{
    done(rc, arg, true);
}

/* ---- handlers ---- */

static limits_job_t *new_job(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    const char *id = ah_http_req_param(req, "id");
    limits_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return NULL;
    }
    if (!id || !*id || strlen(id) >= sizeof(j->id)) {
        free(j);
        ah_http_reply_error(req, 404, NULL, "key_not_found", "id", "no API key with this id");
        return NULL;
    }
    j->req = req;
    j->app = app;
    memcpy(j->id, id, strlen(id) + 1);
    if (who)
        snprintf(j->actor, sizeof(j->actor), "%s", who->key_id);
    snprintf(j->request_id, sizeof(j->request_id), "%s", ah_http_req_id(req));
    j->now = ah_wall_ms();
    return j;
}

void ah_api_key_limits_get(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    limits_job_t *j = new_job(req, app, who);
    if (!j)
        return;
    int rc =
        ah_store_submit(app->store, AH_STORE_READ, get_work, get_done, ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}

/* Reads an optional integer limit: null, or 0 (unlimited) .. AH_LIMITS_MAX_LIMIT. */
static bool parse_limit(json_t *v, field_t *f)
{
    if (json_is_null(v)) {
        f->state = F_NULL;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > AH_LIMITS_MAX_LIMIT)
        return false;
    f->state = F_SET;
    f->i = json_integer_value(v);
    return true;
}

void ah_api_key_limits_put(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    size_t blen;
    const char *body = ah_http_req_body(req, &blen);
    json_error_t jerr;
    json_t *in = json_loadb(body, blen, 0, &jerr);
    if (!in || !json_is_object(in)) {
        json_decref(in);
        ah_api_invalid(req, 400, NULL, "request body must be a JSON object: %s",
                       in ? "got another JSON type" : jerr.text);
        return;
    }
    limits_job_t *j = new_job(req, app, who);
    if (!j) {
        json_decref(in);
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(in, key, v)
    {
        const char *bad = NULL;
        if (strcmp(key, "rpm") == 0) {
            if (!parse_limit(v, &j->rpm))
                bad = "rpm must be null (the default) or an integer from 0 (unlimited) to "
                      "1000000000";
        } else if (strcmp(key, "tpm") == 0) {
            if (!parse_limit(v, &j->tpm))
                bad = "tpm must be null (the default) or an integer from 0 (unlimited) to "
                      "1000000000";
        } else if (strcmp(key, "concurrency") == 0) {
            if (!parse_limit(v, &j->conc))
                bad = "concurrency must be null (the default) or an integer from 0 (unlimited) "
                      "to 1000000000";
        } else if (strcmp(key, "budget_usd") == 0) {
            if (json_is_null(v)) {
                j->budget.state = F_NULL;
            } else if (json_is_number(v) && isfinite(json_number_value(v)) &&
                       json_number_value(v) >= 0 &&
                       json_number_value(v) <= AH_LIMITS_MAX_BUDGET_USD) {
                j->budget.state = F_SET;
                j->budget.d = json_number_value(v);
            } else {
                bad = "budget_usd must be null (no budget) or a number of US dollars from 0 to "
                      "1000000000";
            }
        } else if (strcmp(key, "budget_period") == 0) {
            ah_budget_period_t p;
            if (json_is_null(v)) {
                j->period.state = F_NULL;
            } else if (json_is_string(v) && json_string_length(v) > 0 &&
                       ah_budget_period_parse(json_string_value(v), &p) == 0) {
                j->period.state = F_SET;
                snprintf(j->period.s, sizeof(j->period.s), "%s", ah_budget_period_name(p));
            } else {
                bad = "budget_period must be one of daily, weekly, monthly, total (calendar "
                      "UTC) or null";
            }
        } else {
            ah_api_invalid(req, 422, key,
                           "unknown field \"%s\" (known: rpm, tpm, concurrency, budget_usd, "
                           "budget_period)",
                           key);
            json_decref(in);
            free(j);
            return;
        }
        if (bad) {
            ah_api_invalid(req, 422, key, "%s", bad);
            json_decref(in);
            free(j);
            return;
        }
    }
    json_decref(in);
    int rc =
        ah_store_submit(app->store, AH_STORE_WRITE, put_work, put_done, ah_http_req_loop(req), j);
    if (rc) {
        free(j);
        ah_api_store_error(req, rc);
    }
}
