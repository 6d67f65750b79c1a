/* runs_json.c - JSON rendering of runs and run events; see runs_json.h. */
#include "api/runs_json.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "core/jscan.h"

static int put_str(ah_buf_t *b, const char *s)
{
    if (!s)
        return ah_buf_puts(b, "null");
    int rc = ah_buf_putc(b, '"');
    if (rc == 0)
        rc = ah_buf_json_escape(b, s, strlen(s));
    if (rc == 0)
        rc = ah_buf_putc(b, '"');
    return rc;
}

/* Embeds stored JSON text as is; text that does not parse becomes a JSON
 * string (the reply must stay valid whatever a row holds); NULL gives absent. */
static int put_json(ah_buf_t *b, const char *s, const char *absent)
{
    if (!s)
        return ah_buf_puts(b, absent);
    size_t n = strlen(s);
    if (n && ah_json_validate(s, n, NULL) == 0)
        return ah_buf_append(b, s, n);
    return put_str(b, s);
}

static int put_time(ah_buf_t *b, const char *name, int64_t ms)
{
    if (!ms)
        return ah_buf_printf(b, ",\"%s\":null", name);
    return ah_buf_printf(b, ",\"%s\":%lld", name, (long long)ms);
}

/* Keeps the first error: later appends are skipped once one failed. */
#define PUT(call)                                                                                  \
    do {                                                                                           \
        if (rc == 0)                                                                               \
            rc = (call);                                                                           \
    } while (0)

int ah_api_run_json(const ah_run_rec_t *r, ah_buf_t *out)
{
    int rc = 0;
    PUT(ah_buf_puts(out, "{\"id\":"));
    PUT(put_str(out, r->id));
    PUT(ah_buf_puts(out, ",\"object\":\"run\",\"agent\":"));
    PUT(put_str(out, r->agent));
    PUT(ah_buf_printf(out, ",\"agent_version\":%lld,\"status\":", (long long)r->agent_version));
    PUT(put_str(out, r->status));
    PUT(ah_buf_puts(out, ",\"mode\":"));
    PUT(put_str(out, r->mode));
    PUT(ah_buf_puts(out, ",\"input\":"));
    PUT(put_json(out, r->input, "null"));
    PUT(ah_buf_puts(out, ",\"output\":"));
    PUT(put_str(out, r->output));
    if (r->error || r->error_code) {
        PUT(ah_buf_puts(out, ",\"error\":{\"code\":"));
        PUT(put_str(out, r->error_code));
        PUT(ah_buf_puts(out, ",\"message\":"));
        PUT(put_str(out, r->error ? r->error : ""));
        PUT(ah_buf_putc(out, '}'));
    } else {
        PUT(ah_buf_puts(out, ",\"error\":null"));
    }
    PUT(ah_buf_puts(out, ",\"session_id\":"));
    PUT(put_str(out, r->session_id));
    PUT(ah_buf_puts(out, ",\"metadata\":"));
    PUT(put_json(out, r->metadata, "{}"));
    /* NaN or infinity is not JSON. */
    double cost = isfinite(r->cost_usd) ? r->cost_usd : 0.0;
    PUT(ah_buf_printf(out,
                      ",\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                      "\"total_tokens\":%lld,\"cost_usd\":%.10g},\"turns\":%d",
                      (long long)r->prompt_tokens, (long long)r->completion_tokens,
                      (long long)(r->prompt_tokens + r->completion_tokens), cost, r->turns));
    PUT(ah_buf_printf(out, ",\"created_at\":%lld", (long long)r->created_at));
    PUT(put_time(out, "started_at", r->started_at));
    PUT(put_time(out, "finished_at", r->finished_at));
    PUT(ah_buf_putc(out, '}'));
    return rc;
}

int ah_api_run_event_json(const ah_run_event_t *e, ah_buf_t *out)
{
    int rc = 0;
    PUT(ah_buf_printf(out, "{\"id\":%lld,\"type\":", (long long)e->seq));
    PUT(put_str(out, e->type));
    PUT(ah_buf_puts(out, ",\"data\":"));
    PUT(put_json(out, e->data, "{}"));
    PUT(ah_buf_printf(out, ",\"created_at\":%lld}", (long long)e->ts));
    return rc;
}
