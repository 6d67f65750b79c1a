/*
 * usage.c - GET /v1/usage: requests, tokens and cost from the usage rows,
 * grouped by key, model and UTC day.
 *
 * Query: group_by (comma list of key, model, day; default all three; empty
 * for one total), from and to (a date "2024-06-01", a UTC time
 * "2024-06-01T12:00:00Z" or ms since the epoch; a date as `to` includes that
 * whole day; default the last 30 days), key_id, model, limit (groups,
 * 1..9999, default 1000). Admins see every key; any other role sees only
 * its own key (asking for another key is 403).
 *
 * Rows are written in batches, so a request shows up here within the usage
 * flush interval (1 s). The JSON is built on the store's reader thread from
 * the aggregate rows and sent from the request's loop.
 */
#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/usage.h"

#define USAGE_DEFAULT_DAYS  30
#define USAGE_DEFAULT_LIMIT 1000
#define DAY_MS              86400000LL

typedef struct usage_job {
    ah_http_req_t *req;
    ah_usage_filter_t f;
    int limit; /* groups answered; f.limit is one more, to tell has_more */
    char key_id[48];
    char model[256];
    ah_buf_t out;
    int n;
    bool more;
} usage_job_t;

static int put_str_or_null(ah_buf_t *b, const char *s)
{
    if (!s)
        return ah_buf_puts(b, "null");
    int rc = ah_buf_putc(b, '"');
    rc |= ah_buf_json_escape(b, s, strlen(s));
    rc |= ah_buf_putc(b, '"');
    return rc;
}

/* On the store thread: one group as a JSON object. */
static int group_cb(void *ud, const ah_usage_agg_t *a)
{
    usage_job_t *j = ud;
    if (j->n == j->limit) {
        j->more = true;
        return 1;
    }
    ah_buf_t *b = &j->out;
    int rc = ah_buf_puts(b, j->n ? ",{\"key_id\":" : "{\"key_id\":");
    rc |= put_str_or_null(b, a->key_id);
    rc |= ah_buf_puts(b, ",\"model\":");
    rc |= put_str_or_null(b, a->model);
    if (a->day >= 0) {
        char day[16];
        ah_limits_utc_format(a->day * DAY_MS, true, day, sizeof(day));
        rc |= ah_buf_printf(b, ",\"day\":\"%s\"", day);
    } else {
        rc |= ah_buf_puts(b, ",\"day\":null");
    }
    rc |= ah_buf_printf(b,
                        ",\"requests\":%lld,\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                        "\"cached_tokens\":%lld,\"cost_usd\":%.10g}",
                        (long long)a->requests, (long long)a->prompt_tokens,
                        (long long)a->completion_tokens, (long long)a->cached_tokens, a->cost_usd);
    j->n++;
    return rc ? -ENOMEM : 0;
}

static int usage_work(ah_db_t *db, void *arg)
{
    usage_job_t *j = arg;
    if (ah_buf_puts(&j->out, "{\"object\":\"list\",\"data\":[") != 0)
        return -ENOMEM;
    int rc = ah_store_usage_aggregate(db, &j->f, group_cb, j);
    if (rc < 0)
        return rc;
    return ah_buf_printf(&j->out, "],\"has_more\":%s}", j->more ? "true" : "false") ? -ENOMEM : 0;
}

static void usage_done(int rc, void *arg)
{
    usage_job_t *j = arg;
    if (rc == 0) {
        ah_http_reply_json(j->req, 200, j->out.data, j->out.len);
    } else {
        ah_api_store_error(j->req, rc);
    }
    ah_buf_free(&j->out);
    free(j);
}

/* Parses group_by; false on an unknown name. */
static bool parse_group(const char *s, unsigned *out)
{
    *out = 0;
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t n = strcspn(s, ", ");
        if (n == 0)
            break;
        if (n == 3 && strncmp(s, "key", 3) == 0)
            *out |= AH_USAGE_GROUP_KEY;
        else if (n == 5 && strncmp(s, "model", 5) == 0)
            *out |= AH_USAGE_GROUP_MODEL;
        else if (n == 3 && strncmp(s, "day", 3) == 0)
            *out |= AH_USAGE_GROUP_DAY;
        else
            return false;
        s += n;
    }
    return true;
}

void ah_api_usage(ah_http_req_t *req, ah_app_t *app, const ah_principal_t *who)
{
    usage_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ah_api_out_of_memory(req);
        return;
    }
    j->req = req;
    ah_buf_init(&j->out, 0);
    const char *v;

    j->f.group = AH_USAGE_GROUP_ALL;
    if ((v = ah_http_req_query(req, "group_by")) && !parse_group(v, &j->f.group)) {
        ah_api_invalid(req, 400, "group_by",
                       "group_by is a comma-separated list of key, model, day (got \"%.64s\")", v);
        goto fail;
    }
    j->limit = USAGE_DEFAULT_LIMIT;
    if ((v = ah_http_req_query(req, "limit"))) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end || n < 1 || n > AH_USAGE_AGG_MAX - 1) {
            ah_api_invalid(req, 400, "limit", "limit must be a number from 1 to %d",
                           AH_USAGE_AGG_MAX - 1);
            goto fail;
        }
        j->limit = (int)n;
    }
    j->f.limit = j->limit + 1;

    bool date_only;
    j->f.to_ms = ah_wall_ms() + 1;
    if ((v = ah_http_req_query(req, "to"))) {
        if (ah_limits_utc_parse(v, &j->f.to_ms, &date_only) != 0) {
            ah_api_invalid(req, 400, "to",
                           "to must be a date (2024-06-30), a UTC time (2024-06-30T12:00:00Z) "
                           "or ms since the epoch");
            goto fail;
        }
        if (date_only)
            j->f.to_ms += DAY_MS; /* through the end of that day */
    }
    j->f.from_ms = j->f.to_ms - USAGE_DEFAULT_DAYS * DAY_MS;
    if ((v = ah_http_req_query(req, "from")) &&
        ah_limits_utc_parse(v, &j->f.from_ms, &date_only) != 0) {
        ah_api_invalid(req, 400, "from",
                       "from must be a date (2024-06-01), a UTC time (2024-06-01T00:00:00Z) or "
                       "ms since the epoch");
        goto fail;
    }
    if (j->f.from_ms > j->f.to_ms) {
        ah_api_invalid(req, 400, "from", "from is after to");
        goto fail;
    }

    if ((v = ah_http_req_query(req, "model")) && *v) {
        if (strlen(v) >= sizeof(j->model)) {
            ah_api_invalid(req, 400, "model", "model is too long");
            goto fail;
        }
        memcpy(j->model, v, strlen(v) + 1);
        j->f.model = j->model;
    }
    const char *key = ah_http_req_query(req, "key_id");
    if (key && !*key)
        key = NULL;
    if (who->role != AH_ROLE_ADMIN) {
        if (key && strcmp(key, who->key_id) != 0) {
            ah_http_reply_error(req, 403, "permission_error", "insufficient_role", "key_id",
                                "only an admin key may read the usage of other keys");
            goto fail;
        }
        key = who->key_id;
    }
    if (key) {
        if (strlen(key) >= sizeof(j->key_id)) {
            ah_api_invalid(req, 400, "key_id", "key_id is too long");
            goto fail;
        }
        memcpy(j->key_id, key, strlen(key) + 1);
        j->f.key_id = j->key_id;
    }

    int rc = ah_store_submit(app->store, AH_STORE_READ, usage_work, usage_done,
                             ah_http_req_loop(req), j);
    if (rc) {
        ah_api_store_error(req, rc);
        goto fail;
    }
    return;
fail:
    ah_buf_free(&j->out);
    free(j);
}
