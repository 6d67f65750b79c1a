/*
 * webhooks.c - the webhook deliverer described in webhooks.h: payloads and
 * signatures, and the delivery thread (claim -> curl multi -> outcome).
 *
 * The thread's cycle, all on its own thread:
 *
 *   claim due rows (when a slot is free and a kick came or the poll is due)
 *   -> start one curl easy transfer per row on the multi handle
 *   -> curl_multi_perform, then record every finished transfer's outcome in
 *      one store write
 *   -> curl_multi_poll until a socket is ready, the next poll is due, or a
 *      kick/stop (curl_multi_wakeup)
 *
 * State owned by the thread only: the multi handle's transfers and the
 * in-flight list. Shared with other threads: the stop/kick flags and the
 * counters (atomics); curl_multi_wakeup is documented thread-safe.
 */
#include "agents/webhooks.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/runs_json.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "store/webhooks.h"

#define IN_FLIGHT_DEFAULT   16
#define IN_FLIGHT_MAX       1000
#define POLL_DEFAULT_S      1.0
#define BACKOFF_BASE_MS     1000
#define BACKOFF_MAX_MS      3600000
#define LEASE_EXTRA_S       60.0
#define RETENTION_DEFAULT_S (7 * 86400.0)
#define STOP_GRACE_S        2.0
#define GAUGE_EVERY_NS      (5 * 1000000000ull)
#define PRUNE_EVERY_NS      (3600 * 1000000000ull)
#define PRUNE_BATCH         1000
#define SNIPPET_MAX         200 /* bytes of a failed answer's body kept in last_error */
#define MAX_WAIT_MS         1000
#define TAG                 "webhooks"

/* ---- signatures ---- */

/* Lowercase hex HMAC-SHA256 of "<t>.<body>" into hex[65]; t is the literal text. */
static int sign_hex(const char *secret, const char *t, size_t tlen, const char *body, size_t n,
                    char hex[2 * AH_SHA256_LEN + 1])
{
    size_t total = tlen + 1 + n;
    char *msg = malloc(total ? total : 1);
    if (!msg)
        return -ENOMEM;
    memcpy(msg, t, tlen);
    msg[tlen] = '.';
    if (n)
        memcpy(msg + tlen + 1, body, n);
    unsigned char mac[AH_SHA256_LEN];
    int rc = ah_hmac_sha256(secret, strlen(secret), msg, total, mac);
    free(msg);
    if (rc < 0)
        return rc;
    ah_hex(mac, sizeof(mac), hex);
    explicit_bzero(mac, sizeof(mac));
    return 0;
}

int ah_webhook_sign(const char *secret, int64_t t, const char *body, size_t n,
                    char out[AH_WEBHOOK_SIG_MAX])
{
    if (!secret || !*secret || t < 0 || (!body && n))
        return -EINVAL;
    char ts[24];
    int tl = snprintf(ts, sizeof(ts), "%lld", (long long)t);
    if (tl < 0 || (size_t)tl >= sizeof(ts))
        return -EINVAL;
    char hex[2 * AH_SHA256_LEN + 1];
    int rc = sign_hex(secret, ts, (size_t)tl, body ? body : "", n, hex);
    if (rc < 0)
        return rc;
    int w = snprintf(out, AH_WEBHOOK_SIG_MAX, "t=%s,v1=%s", ts, hex);
    return w > 0 && w < AH_WEBHOOK_SIG_MAX ? 0 : -EINVAL;
}

#define VERIFY_MAX_V1 8 /* v1 entries looked at (a receiver rotating secrets sends 2) */

int ah_webhook_verify(const char *secret, const char *header, const char *body, size_t n,
                      int64_t now, int64_t tolerance_s)
{
    if (!secret || !*secret || !header || (!body && n))
        return -EINVAL;
    const char *t = NULL, *v1[VERIFY_MAX_V1];
    size_t tlen = 0;
    int nv1 = 0;
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        size_t len = (size_t)(end - p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len > 2 && p[0] == 't' && p[1] == '=') {
            if (t)
                return -EINVAL; /* two timestamps: which one was signed? */
            t = p + 2;
            tlen = len - 2;
            if (tlen > 18)
                return -EINVAL;
            for (size_t i = 0; i < tlen; i++) {
                if (!isdigit((unsigned char)t[i]))
                    return -EINVAL;
            }
        } else if (len == 3 + 2 * AH_SHA256_LEN && strncmp(p, "v1=", 3) == 0) {
            if (nv1 < VERIFY_MAX_V1)
                v1[nv1++] = p + 3;
        }
        p = end;
    }
    if (!t || !nv1)
        return -EINVAL;
    char hex[2 * AH_SHA256_LEN + 1];
    int rc = sign_hex(secret, t, tlen, body ? body : "", n, hex);
    if (rc < 0)
        return rc;
    bool match = false;
    for (int i = 0; i < nv1; i++)
        match |= ah_ct_equal(v1[i], hex, 2 * AH_SHA256_LEN);
    if (!match)
        return -EBADMSG;
    int64_t ts = 0;
    for (size_t i = 0; i < tlen; i++)
        ts = ts * 10 + (t[i] - '0'); /* at most 18 digits: no overflow */
    if (tolerance_s >= 0 && (ts > now + tolerance_s || ts < now - tolerance_s))
        return -ETIME;
    return 0;
}

/* ---- producing ---- */

const char *ah_webhook_event_for_status(const char *status)
{
    if (!status)
        return NULL;
    if (strcmp(status, AH_RUN_COMPLETED) == 0)
        return AH_WEBHOOK_RUN_COMPLETED;
    if (strcmp(status, AH_RUN_FAILED) == 0 || strcmp(status, AH_RUN_EXPIRED) == 0)
        return AH_WEBHOOK_RUN_FAILED;
    if (strcmp(status, AH_RUN_CANCELLED) == 0)
        return AH_WEBHOOK_RUN_CANCELLED;
    return NULL;
}

bool ah_webhook_url_ok(const char *url)
{
    if (!url)
        return false;
    size_t n = strlen(url);
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    if (n > AH_WEBHOOK_URL_MAX || n == skip || strchr("/?#@:", url[skip]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= ' ' || c == 0x7f)
            return false;
    }
    return true;
}

int ah_webhook_run_payload(const char *delivery_id, const char *event, const ah_run_rec_t *r,
                           int64_t now_ms, ah_buf_t *out)
{
    if (!delivery_id || !event || !r || now_ms < 0)
        return -EINVAL;
    int rc = ah_buf_puts(out, "{\"id\":\"");
    if (rc == 0)
        rc = ah_buf_json_escape(out, delivery_id, strlen(delivery_id));
    if (rc == 0)
        rc = ah_buf_puts(out, "\",\"object\":\"event\",\"type\":\"");
    if (rc == 0)
        rc = ah_buf_json_escape(out, event, strlen(event));
    if (rc == 0)
        rc = ah_buf_puts(out, "\",\"created_at\":");
    if (rc == 0)
        rc = ah_buf_put_u64(out, (unsigned long long)now_ms);
    if (rc == 0)
        rc = ah_buf_puts(out, ",\"data\":");
    if (rc == 0)
        rc = ah_api_run_json(r, out);
    if (rc == 0)
        rc = ah_buf_putc(out, '}');
    return rc;
}

int ah_webhook_enqueue_run(ah_db_t *db, const ah_run_rec_t *r, const char *url, int64_t now_ms)
{
    if (!r || !url || !*url)
        return 0;
    const char *event = ah_webhook_event_for_status(r->status);
    if (!event)
        return 0;
    if (strlen(url) > AH_WEBHOOK_URL_MAX) {
        /* The API refuses these; never fail a run's final state for one. */
        ah_log(AH_LOG_WARN, TAG, "webhook_url too long: no delivery", AH_LF_STR("run_id", r->id),
               AH_LF_END);
        return 0;
    }
    int rc = ah_store_webhook_exists(db, r->id, url);
    if (rc != 0)
        return rc < 0 ? rc : 0; /* already enqueued when the run was first stored final */
    char id[48];
    rc = ah_id_new(id, sizeof(id), "whd", 16);
    if (rc < 0)
        return rc;
    ah_buf_t b;
    ah_buf_init(&b, AH_WEBHOOK_PAYLOAD_MAX);
    rc = ah_webhook_run_payload(id, event, r, now_ms, &b);
    if (rc == -E2BIG) {
        ah_log(AH_LOG_ERROR, TAG, "webhook payload over 8 MiB: no delivery",
               AH_LF_STR("run_id", r->id), AH_LF_END);
        ah_buf_free(&b);
        return 0;
    }
    if (rc == 0)
        rc = ah_store_webhook_enqueue_id(db, id, r->id, url, event, b.data, now_ms);
    ah_buf_free(&b);
    return rc;
}

int ah_webhook_enqueue_run_id(ah_db_t *db, const char *run_id, int64_t now_ms)
{
    ah_run_rec_t r;
    int rc = ah_store_run_get(db, run_id, &r);
    if (rc < 0)
        return rc;
    rc = ah_webhook_enqueue_run(db, &r, r.webhook_url, now_ms);
    ah_run_rec_free(&r);
    return rc;
}

/* ---- the deliverer ---- */

typedef struct delivery {
    ah_webhook_rec_t rec; /* as claimed (attempts before this one) */
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    char snippet[SNIPPET_MAX + 1];
    size_t snippet_n;
    /* outcome, filled when the transfer ends */
    bool done, ok, permanent;
    int http_status;
    char error[AH_WEBHOOK_ERROR_MAX + 1];
    int store_rc; /* of the outcome write: 1 = dead */
    struct delivery *next;
} delivery_t;

struct ah_webhooks {
    ah_store_t *store;
    char *secret; /* NULL = unsigned */
    ah_webhook_policy_t policy;
    double timeout_s;
    int max_in_flight;
    uint64_t poll_ns;
    int64_t lease_ms;
    int64_t retention_ms; /* 0 = keep */
    uint64_t grace_ns;

    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t start_mu; /* guards started (start vs free) */
    bool started;
    atomic_bool stop;
    atomic_bool kicked;

    /* thread only */
    delivery_t *flight; /* transfers running */
    int n_flight;
    bool more_due; /* the last claim was cut by the free slots: more rows may be due */

    atomic_uint_fast64_t n_delivered, n_failed, n_dead, n_released, n_in_flight;
    ah_metric_series_t *m_delivered, *m_failed, *m_dead, *m_pending;
};

/* scheme://host[:port] of url, without userinfo or path (those may carry tokens). */
static void url_host(const char *url, char *out, size_t outsz)
{
    const char *s = strstr(url, "://");
    size_t scheme = s ? (size_t)(s - url) + 3 : 0;
    const char *h = url + scheme;
    size_t hl = strcspn(h, "/?#");
    const char *at = memchr(h, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    snprintf(out, outsz, "%.*s%.*s", (int)scheme, url, (int)hl, h);
}

static void delivery_free(delivery_t *d)
{
    if (!d)
        return;
    if (d->easy)
        curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->hdrs);
    ah_webhook_rec_free(&d->rec);
    free(d);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    delivery_t *d = ud;
    size_t n = size * nmemb;
    size_t room = SNIPPET_MAX - d->snippet_n;
    size_t k = n < room ? n : room;
    memcpy(d->snippet + d->snippet_n, p, k);
    d->snippet_n += k;
    d->snippet[d->snippet_n] = '\0';
    return n; /* the rest is read and dropped */
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
    char line[256];
    int w = snprintf(line, sizeof(line), "%s: %s", name, value);
    if (w < 0 || (size_t)w >= sizeof(line))
        return -EINVAL;
    struct curl_slist *nl = curl_slist_append(*l, line);
    if (!nl)
        return -ENOMEM;
    *l = nl;
    return 0;
}

/* Marks d finished with a failure reason (no transfer or a failed one). */
static void set_failed(delivery_t *d, int http_status, bool permanent, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_failed(delivery_t *d, int http_status, bool permanent, const char *fmt, ...)
{
    d->done = true;
    d->ok = false;
    d->permanent = permanent;
    d->http_status = http_status;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(d->error, sizeof(d->error), fmt, ap);
    va_end(ap);
    if (w < 0)
        snprintf(d->error, sizeof(d->error), "failed");
}

/* Sets up the transfer of a claimed row. 0, or -errno (d is then marked failed or left for
 * release). */
static int start_transfer(ah_webhooks_t *w, delivery_t *d)
{
    if (!ah_webhook_url_ok(d->rec.url)) {
        set_failed(d, 0, true,
                   "webhook_url is not an http:// or https:// URL with a host; fix the agent or "
                   "run and retry");
        return -EINVAL;
    }
    char sig[AH_WEBHOOK_SIG_MAX];
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%d", d->rec.attempts + 1);
    size_t n = strlen(d->rec.payload);
    int rc = 0;
    if (w->secret)
        rc = ah_webhook_sign(w->secret, ah_wall_ms() / 1000, d->rec.payload, n, sig);
    if (rc == 0)
        rc = add_header(&d->hdrs, "Content-Type", "application/json");
    if (rc == 0)
        rc = add_header(&d->hdrs, "X-Agenthub-Event", d->rec.event);
    if (rc == 0)
        rc = add_header(&d->hdrs, "X-Agenthub-Delivery", d->rec.id);
    if (rc == 0)
        rc = add_header(&d->hdrs, "X-Agenthub-Attempt", attempt);
    if (rc == 0 && w->secret)
        rc = add_header(&d->hdrs, "X-Agenthub-Signature", sig);
    if (rc == 0) {
        /* No "Expect: 100-continue" round trip before the body. */
        struct curl_slist *nl = curl_slist_append(d->hdrs, "Expect:");
        rc = nl ? 0 : -ENOMEM;
        if (nl)
            d->hdrs = nl;
    }
    if (rc < 0)
        return rc;
    d->easy = curl_easy_init();
    if (!d->easy)
        return -ENOMEM;
    long timeout_ms = (long)(w->timeout_s * 1000.0);
    if (timeout_ms < 1)
        timeout_ms = 1;
    CURL *e = d->easy;
    CURLcode cc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (cc == CURLE_OK)                                                                        \
            cc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SETOPT(CURLOPT_URL, d->rec.url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85 */
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDS, d->rec.payload); /* not copied: lives in d until cleanup */
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    SETOPT(CURLOPT_HTTPHEADER, d->hdrs);
    SETOPT(CURLOPT_USERAGENT, "agenthub/" AH_VERSION);
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer that is not 2xx */
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, d);
    SETOPT(CURLOPT_ERRORBUFFER, d->errbuf);
    SETOPT(CURLOPT_PRIVATE, d);
#undef SETOPT
    if (cc != CURLE_OK) {
        set_failed(d, 0, cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT,
                   "could not set up the request: %s", curl_easy_strerror(cc));
        return -EINVAL;
    }
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK)
        return -ENOMEM;
    return 0;
}

/* Turns a finished transfer into its outcome. */
static void finish_transfer(ah_webhooks_t *w, delivery_t *d, CURLcode res)
{
    if (res == CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && code <= 299) {
            d->done = true;
            d->ok = true;
            d->http_status = (int)code;
            return;
        }
        /* Keep printable bytes of the answer: it usually says why. */
        for (size_t i = 0; i < d->snippet_n; i++) {
            unsigned char c = (unsigned char)d->snippet[i];
            if (c < ' ' || c == 0x7f)
                d->snippet[i] = ' ';
        }
        set_failed(d, (int)code, false, "HTTP %ld%s%s", code, d->snippet_n ? ": " : "", d->snippet);
        return;
    }
    const char *why = d->errbuf[0] ? d->errbuf : curl_easy_strerror(res);
    if (res == CURLE_OPERATION_TIMEDOUT)
        set_failed(d, 0, false, "timed out after %.3g s (webhooks.timeout_s): %s", w->timeout_s,
                   why);
    else
        set_failed(d, 0, res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_URL_MALFORMAT, "%s",
                   why);
}

/* ---- store jobs (run through ah_store_call: this thread may block) ---- */

typedef struct claim_job {
    ah_webhooks_t *w;
    int limit;
    delivery_t *got; /* claimed, newest first */
    int n;
} claim_job_t;

static int claim_one(void *ud, const ah_webhook_rec_t *r)
{
    claim_job_t *j = ud;
    delivery_t *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->rec = *r;
    d->rec.url = r->url ? strdup(r->url) : NULL;
    d->rec.payload = r->payload ? strdup(r->payload) : NULL;
    d->rec.last_error = NULL;
    if (!d->rec.url || !d->rec.payload) {
        delivery_free(d);
        return -ENOMEM;
    }
    d->next = j->got;
    j->got = d;
    j->n++;
    return 0;
}

static int claim_work(ah_db_t *db, void *arg)
{
    claim_job_t *j = arg;
    /* A failed claim is rolled back (its job fails): drop what was collected. */
    int rc = ah_store_webhook_claim(db, ah_wall_ms(), j->w->lease_ms, j->limit, claim_one, j);
    if (rc < 0) {
        while (j->got) {
            delivery_t *d = j->got;
            j->got = d->next;
            delivery_free(d);
        }
        j->n = 0;
    }
    return rc;
}

typedef struct outcome_job {
    ah_webhooks_t *w;
    delivery_t *list;
} outcome_job_t;

static int outcome_work(ah_db_t *db, void *arg)
{
    outcome_job_t *j = arg;
    int64_t now = ah_wall_ms();
    for (delivery_t *d = j->list; d; d = d->next) {
        if (d->ok)
            d->store_rc =
                ah_store_webhook_delivered(db, d->rec.id, d->rec.attempts, d->http_status, now);
        else
            d->store_rc = ah_store_webhook_failed(db, d->rec.id, d->rec.attempts, d->http_status,
                                                  d->error, d->permanent, &j->w->policy, now);
        /* -ENOENT: another sender's outcome won (lease ran out); nothing to undo. */
        if (d->store_rc < 0 && d->store_rc != -ENOENT)
            return d->store_rc;
    }
    return 0;
}

static int release_work(ah_db_t *db, void *arg)
{
    outcome_job_t *j = arg;
    int64_t now = ah_wall_ms();
    for (delivery_t *d = j->list; d; d = d->next) {
        int rc = ah_store_webhook_release(db, d->rec.id, d->rec.attempts, now);
        if (rc < 0 && rc != -ENOENT)
            return rc;
    }
    return 0;
}

typedef struct count_job {
    int64_t pending;
} count_job_t;

static int count_work(ah_db_t *db, void *arg)
{
    return ah_store_webhook_count(db, AH_WEBHOOK_PENDING, &((count_job_t *)arg)->pending);
}

typedef struct prune_job {
    int64_t before;
} prune_job_t;

static int prune_work(ah_db_t *db, void *arg)
{
    return ah_store_webhook_prune(db, ((prune_job_t *)arg)->before, PRUNE_BATCH);
}

/* ---- the cycle ---- */

/* Records the outcomes of the finished deliveries in list, counts them, frees them. */
static void record_outcomes(ah_webhooks_t *w, delivery_t *list)
{
    if (!list)
        return;
    outcome_job_t j = {w, list};
    int rc = ah_store_call(w->store, AH_STORE_WRITE, outcome_work, &j);
    if (rc < 0)
        ah_log(AH_LOG_ERROR, TAG,
               "cannot record webhook outcomes; the rows are sent again when their lease ends",
               AH_LF_INT("rc", rc), AH_LF_END);
    while (list) {
        delivery_t *d = list;
        list = d->next;
        char host[160];
        url_host(d->rec.url, host, sizeof(host));
        if (d->ok) {
            atomic_fetch_add(&w->n_delivered, 1);
            ah_counter_inc(w->m_delivered);
            ah_log(AH_LOG_DEBUG, TAG, "webhook delivered", AH_LF_STR("delivery", d->rec.id),
                   AH_LF_STR("run_id", d->rec.run_id), AH_LF_STR("target", host),
                   AH_LF_INT("status", d->http_status), AH_LF_END);
        } else {
            atomic_fetch_add(&w->n_failed, 1);
            ah_counter_inc(w->m_failed);
            bool dead = rc == 0 && d->store_rc == 1;
            if (dead) {
                atomic_fetch_add(&w->n_dead, 1);
                ah_counter_inc(w->m_dead);
            }
            ah_log(dead ? AH_LOG_WARN : AH_LOG_INFO, TAG,
                   dead ? "webhook dead-lettered (retry: POST /v1/webhooks/deliveries/{id}/retry)"
                        : "webhook attempt failed; retrying with backoff",
                   AH_LF_STR("delivery", d->rec.id), AH_LF_STR("run_id", d->rec.run_id),
                   AH_LF_STR("target", host), AH_LF_INT("attempt", d->rec.attempts + 1),
                   AH_LF_STR("error", d->error), AH_LF_END);
        }
        delivery_free(d);
    }
}

/* Claims up to the free slots and starts their transfers. */
static void claim_and_start(ah_webhooks_t *w)
{
    int free_slots = w->max_in_flight - w->n_flight;
    if (free_slots <= 0)
        return;
    claim_job_t j = {w, free_slots, NULL, 0};
    int rc = ah_store_call(w->store, AH_STORE_WRITE, claim_work, &j);
    if (rc < 0) {
        ah_log(AH_LOG_WARN, TAG, "cannot claim webhook deliveries; trying again later",
               AH_LF_INT("rc", rc), AH_LF_END);
        w->more_due = false;
        return;
    }
    w->more_due = j.n == free_slots;
    delivery_t *not_started = NULL, *failed_now = NULL;
    while (j.got) {
        delivery_t *d = j.got;
        j.got = d->next;
        if (start_transfer(w, d) == 0) {
            d->next = w->flight;
            w->flight = d;
            w->n_flight++;
            atomic_fetch_add(&w->n_in_flight, 1);
        } else if (d->done) {
            d->next = failed_now;
            failed_now = d;
        } else {
            d->next = not_started;
            not_started = d;
        }
    }
    record_outcomes(w, failed_now);
    if (not_started) {
        ah_log(AH_LOG_WARN, TAG, "cannot start webhook deliveries (out of memory); given back",
               AH_LF_END);
        outcome_job_t rj = {w, not_started};
        (void)ah_store_call(w->store, AH_STORE_WRITE, release_work, &rj); /* else the lease ends */
        while (not_started) {
            delivery_t *d = not_started;
            not_started = d->next;
            delivery_free(d);
        }
    }
}

/* Collects the transfers curl finished, records their outcomes. Returns how many. */
static int reap(ah_webhooks_t *w)
{
    delivery_t *done = NULL;
    int n = 0;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        delivery_t *d = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
        CURLcode res = m->data.result;
        curl_multi_remove_handle(w->multi, m->easy_handle);
        for (delivery_t **pp = &w->flight; *pp; pp = &(*pp)->next) {
            if (*pp == d) {
                *pp = d->next;
                break;
            }
        }
        w->n_flight--;
        atomic_fetch_sub(&w->n_in_flight, 1);
        finish_transfer(w, d, res);
        d->next = done;
        done = d;
        n++;
    }
    record_outcomes(w, done);
    return n;
}

/* Aborts what is still in flight at stop and gives it back to the outbox, due now. */
static void release_flight(ah_webhooks_t *w)
{
    if (!w->flight)
        return;
    for (delivery_t *d = w->flight; d; d = d->next)
        curl_multi_remove_handle(w->multi, d->easy);
    outcome_job_t j = {w, w->flight};
    int rc = ah_store_call(w->store, AH_STORE_WRITE, release_work, &j);
    if (rc < 0)
        ah_log(AH_LOG_WARN, TAG,
               "cannot give back webhook deliveries; they are due when their "
               "lease ends",
               AH_LF_INT("rc", rc), AH_LF_END);
    while (w->flight) {
        delivery_t *d = w->flight;
        w->flight = d->next;
        if (rc == 0)
            atomic_fetch_add(&w->n_released, 1);
        atomic_fetch_sub(&w->n_in_flight, 1);
        delivery_free(d);
    }
    w->n_flight = 0;
}

static void refresh_gauge(ah_webhooks_t *w)
{
    count_job_t j = {0};
    if (ah_store_call(w->store, AH_STORE_READ, count_work, &j) == 0)
        ah_gauge_set(w->m_pending, (double)j.pending);
}

static void prune(ah_webhooks_t *w)
{
    if (!w->retention_ms)
        return;
    prune_job_t j = {ah_wall_ms() - w->retention_ms};
    int rc = ah_store_call(w->store, AH_STORE_WRITE, prune_work, &j);
    if (rc < 0)
        ah_log(AH_LOG_WARN, TAG, "cannot prune delivered webhooks", AH_LF_INT("rc", rc), AH_LF_END);
}

static int ms_until(uint64_t now, uint64_t at)
{
    if (at <= now)
        return 0;
    uint64_t ms = (at - now + 999999u) / 1000000u;
    return ms > MAX_WAIT_MS ? MAX_WAIT_MS : (int)ms;
}

static void *deliver_main(void *arg)
{
    ah_webhooks_t *w = arg;
    (void)pthread_setname_np(pthread_self(), "ah-webhooks"); /* only for ps/top/gdb */
    uint64_t now = ah_mono_ns();
    /* Rows left from before (a restart, another replica's crash) are claimed at once. */
    uint64_t next_claim = now, next_gauge = now, next_prune = now;
    bool stopping = false;
    uint64_t stop_at = 0;
    for (;;) {
        now = ah_mono_ns();
        if (!stopping && atomic_load(&w->stop)) {
            stopping = true;
            stop_at = now + w->grace_ns;
        }
        if (stopping && (w->n_flight == 0 || now >= stop_at))
            break;
        if (!stopping && w->n_flight < w->max_in_flight &&
            (atomic_load(&w->kicked) || now >= next_claim)) {
            /* Cleared before the claim reads: a kick after this is seen by the next one. */
            atomic_store(&w->kicked, false);
            claim_and_start(w);
            next_claim = now + w->poll_ns;
        }
        if (!stopping && now >= next_gauge) {
            refresh_gauge(w);
            next_gauge = now + GAUGE_EVERY_NS;
        }
        if (!stopping && now >= next_prune) {
            prune(w);
            next_prune = now + PRUNE_EVERY_NS;
        }
        int running = 0;
        curl_multi_perform(w->multi, &running);
        if (reap(w) > 0 && w->more_due)
            next_claim = now; /* slots freed while more rows were due */
        now = ah_mono_ns();
        int wait_ms;
        if (stopping) {
            wait_ms = ms_until(now, stop_at);
        } else {
            wait_ms = ms_until(now, next_claim < next_gauge ? next_claim : next_gauge);
            if (w->n_flight >= w->max_in_flight) /* no claim possible: sleep on the sockets */
                wait_ms = ms_until(now, next_gauge);
        }
        if (atomic_load(&w->kicked) && w->n_flight < w->max_in_flight && !stopping)
            wait_ms = 0;
        curl_multi_poll(w->multi, NULL, 0, wait_ms, NULL);
    }
    release_flight(w);
    refresh_gauge(w);
    return NULL;
}

/* ---- lifecycle ---- */

ah_webhooks_t *ah_webhooks_new(ah_store_t *store, const ah_webhooks_opts_t *o)
{
    ah_webhooks_opts_t d = {0};
    if (!o)
        o = &d;
    if (!store || o->max_attempts < 0 || o->timeout_s < 0 || o->max_in_flight < 0 ||
        o->max_in_flight > IN_FLIGHT_MAX || o->poll_interval_s < 0 || o->backoff_base_ms < 0 ||
        o->backoff_max_ms < 0 || o->lease_s < 0) {
        errno = EINVAL;
        return NULL;
    }
    ah_webhooks_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->store = store;
    w->policy.max_attempts = o->max_attempts ? o->max_attempts : AH_WEBHOOKS_MAX_ATTEMPTS_DEFAULT;
    w->policy.backoff_base_ms = o->backoff_base_ms ? o->backoff_base_ms : BACKOFF_BASE_MS;
    w->policy.backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : BACKOFF_MAX_MS;
    w->timeout_s = o->timeout_s > 0 ? o->timeout_s : AH_WEBHOOKS_TIMEOUT_S_DEFAULT;
    w->max_in_flight = o->max_in_flight ? o->max_in_flight : IN_FLIGHT_DEFAULT;
    double poll = o->poll_interval_s > 0 ? o->poll_interval_s : POLL_DEFAULT_S;
    w->poll_ns = (uint64_t)(poll * 1e9);
    double lease = o->lease_s > 0 ? o->lease_s : w->timeout_s + LEASE_EXTRA_S;
    /* A lease shorter than a transfer would let another replica send it too. */
    if (lease <= w->timeout_s) {
        free(w);
        errno = EINVAL;
        return NULL;
    }
    w->lease_ms = (int64_t)(lease * 1000.0);
    double keep = o->retention_s == 0 ? RETENTION_DEFAULT_S : o->retention_s;
    w->retention_ms = keep < 0 ? 0 : (int64_t)(keep * 1000.0);
    double grace = o->stop_grace_s == 0 ? STOP_GRACE_S : o->stop_grace_s;
    w->grace_ns = grace < 0 ? 0 : (uint64_t)(grace * 1e9);
    if (o->secret && *o->secret && !(w->secret = strdup(o->secret))) {
        free(w);
        return NULL;
    }
    w->multi = curl_multi_init();
    if (!w->multi) {
        ah_webhooks_free(w);
        errno = EIO;
        return NULL;
    }
    pthread_mutex_init(&w->start_mu, NULL);
    atomic_init(&w->stop, false);
    atomic_init(&w->kicked, false);

    w->m_delivered = ah_metrics_series0(ah_metrics_counter(
        "agenthub_webhooks_delivered_total", "Webhook deliveries answered with a 2xx.", 0, NULL));
    w->m_failed = ah_metrics_series0(ah_metrics_counter(
        "agenthub_webhooks_failed_total",
        "Webhook delivery attempts that failed (non-2xx, timeout, connection error).", 0, NULL));
    w->m_dead = ah_metrics_series0(ah_metrics_counter(
        "agenthub_webhooks_dead_total",
        "Webhook deliveries dead-lettered after webhooks.max_attempts.", 0, NULL));
    w->m_pending = ah_metrics_series0(ah_metrics_gauge(
        "agenthub_webhooks_pending", "Webhook deliveries waiting in the outbox.", 0, NULL));
    return w;
}

int ah_webhooks_start(ah_webhooks_t *w)
{
    pthread_mutex_lock(&w->start_mu);
    if (w->started || atomic_load(&w->stop)) {
        pthread_mutex_unlock(&w->start_mu);
        return -EALREADY;
    }
    int rc = pthread_create(&w->thread, NULL, deliver_main, w);
    if (rc == 0)
        w->started = true;
    pthread_mutex_unlock(&w->start_mu);
    if (rc == 0 && !w->secret)
        ah_log(AH_LOG_WARN, TAG, "webhooks.secret is not set: webhook deliveries are sent unsigned",
               AH_LF_END);
    return -rc;
}

void ah_webhooks_kick(ah_webhooks_t *w)
{
    if (!w)
        return;
    atomic_store(&w->kicked, true);
    curl_multi_wakeup(w->multi);
}

void ah_webhooks_free(ah_webhooks_t *w)
{
    if (!w)
        return;
    if (w->multi) {
        pthread_mutex_lock(&w->start_mu);
        atomic_store(&w->stop, true);
        bool join = w->started;
        w->started = false;
        pthread_mutex_unlock(&w->start_mu);
        curl_multi_wakeup(w->multi);
        if (join)
            pthread_join(w->thread, NULL);
        curl_multi_cleanup(w->multi);
        pthread_mutex_destroy(&w->start_mu);
    }
    if (w->secret) {
        explicit_bzero(w->secret, strlen(w->secret));
        free(w->secret);
    }
    free(w);
}

void ah_webhooks_stats(ah_webhooks_t *w, ah_webhooks_stats_t *out)
{
    out->delivered = atomic_load(&w->n_delivered);
    out->failed = atomic_load(&w->n_failed);
    out->dead = atomic_load(&w->n_dead);
    out->released = atomic_load(&w->n_released);
    out->in_flight = atomic_load(&w->n_in_flight);
}
