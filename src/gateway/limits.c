/*
 * limits.c - rate limits, concurrency and budgets for gateway requests:
 * local token buckets in striped tables, the Redis mode (hiredis async +
 * Lua), the per-key policy cache and the budget reconcile. See limits.h and
 * docs/internals/limits.md.
 */
#include "gateway/limits.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/ticker.h"
#include "obs/metrics.h"

#define DAY_MS          86400000LL
#define DAY_SLOTS       32 /* days of local spend kept per key: covers the longest month */
#define STRIPES         64
#define TLS_SLOTS       4
#define MAX_POLICY_ROWS 1000000
#define RESOLVE_EVERY_S 30
#define NS_PER_S        1000000000ull

/* Ticket flags. */
#define T_ADMITTED   0x1u
#define T_LOCAL_CONC 0x2u /* holds a local concurrency slot */
#define T_LOCAL_TPM  0x4u /* est_tokens were reserved in the local buckets */
#define T_REDIS      0x8u /* admitted by Redis: finish goes there */

/* Limit slots, in the order the Redis script takes them. */
enum { L_KRPM = 0, L_KTPM, L_KCONC, L_MRPM, L_MTPM, L_N };

/* ---- small helpers ---- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---- calendar (proleptic Gregorian, UTC; H. Hinnant's algorithms) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void ah_budget_period_bounds(ah_budget_period_t p, int64_t now_ms, int64_t *start, int64_t *end)
{
    int64_t day = floor_div(now_ms, DAY_MS);
    switch (p) {
    case AH_BUDGET_DAILY:
        *start = day * DAY_MS;
        *end = *start + DAY_MS;
        return;
    case AH_BUDGET_WEEKLY: {
        int64_t wd = ((day + 3) % 7 + 7) % 7; /* 1970-01-01 was a Thursday; Monday = 0 */
        *start = (day - wd) * DAY_MS;
        *end = *start + 7 * DAY_MS;
        return;
    }
    case AH_BUDGET_MONTHLY: {
        int64_t y;
        unsigned m, d;
        civil_from_days(day, &y, &m, &d);
        *start = days_from_civil(y, m, 1) * DAY_MS;
        *end = (m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1)) * DAY_MS;
        return;
    }
    default:
        *start = 0;
        *end = INT64_MAX;
        return;
    }
}

static const char *const period_names[] = {"", "daily", "weekly", "monthly", "total"};

int ah_budget_period_parse(const char *s, ah_budget_period_t *out)
{
    if (!s || !*s) {
        *out = AH_BUDGET_NONE;
        return 0;
    }
    for (int i = 1; i <= AH_BUDGET_TOTAL; i++) {
        if (strcmp(s, period_names[i]) == 0) {
            *out = (ah_budget_period_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *ah_budget_period_name(ah_budget_period_t p)
{
    return (p >= AH_BUDGET_NONE && p <= AH_BUDGET_TOTAL) ? period_names[p] : "";
}

void ah_limits_utc_format(int64_t ms, bool date_only, char *out, size_t n)
{
    int64_t day = floor_div(ms, DAY_MS);
    int64_t rem = ms - day * DAY_MS;
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    if (date_only)
        snprintf(out, n, "%04lld-%02u-%02u", (long long)y, m, d);
    else
        snprintf(out, n, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ", (long long)y, m, d,
                 (long long)(rem / 3600000), (long long)(rem / 60000 % 60),
                 (long long)(rem / 1000 % 60));
}

/* Reads exactly n digits at *p into *out, advancing p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9')
            return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int ah_limits_utc_parse(const char *s, int64_t *ms, bool *date_only)
{
    if (!s || !*s)
        return -EINVAL;
    if (strlen(s) > 40)
        return -EINVAL;
    bool all_digits = true;
    for (const char *q = s; *q; q++)
        all_digits &= *q >= '0' && *q <= '9';
    if (all_digits) {
        if (strlen(s) > 15) /* past year 33000: not a time anyone means */
            return -EINVAL;
        *ms = strtoll(s, NULL, 10);
        *date_only = false;
        return 0;
    }
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31)
        return -EINVAL;
    int64_t day = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t cy;
    unsigned cm, cd;
    civil_from_days(day, &cy, &cm, &cd);
    if (cd != (unsigned)d) /* 2023-02-30 */
        return -EINVAL;
    *date_only = *p == '\0';
    if (!*date_only) {
        if (*p != 'T' && *p != ' ')
            return -EINVAL;
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            return -EINVAL;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec))
                return -EINVAL;
            if (*p == '.') {
                p++;
                int nd = 0, f = 0;
                while (*p >= '0' && *p <= '9') {
                    if (nd < 3) {
                        f = f * 10 + (*p - '0');
                        nd++;
                    }
                    p++;
                }
                if (nd == 0)
                    return -EINVAL;
                while (nd++ < 3)
                    f *= 10;
                frac = f;
            }
        }
        if (*p == 'Z')
            p++;
        if (*p || h > 23 || mi > 59 || sec > 60)
            return -EINVAL;
    }
    *ms = day * DAY_MS + (int64_t)h * 3600000 + (int64_t)mi * 60000 + (int64_t)sec * 1000 + frac;
    return 0;
}

void ah_limits_format_duration(double seconds, char *out, size_t n)
{
    if (!(seconds > 0) || n == 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (seconds > 1e9)
        seconds = 1e9;
    long long ms = llround(seconds * 1000.0);
    if (ms <= 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ms < 1000) {
        snprintf(out, n, "%lldms", ms);
        return;
    }
    long long h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    char secs[24];
    if (frac) {
        snprintf(secs, sizeof(secs), "%lld.%03lld", s, frac);
        size_t len = strlen(secs);
        while (secs[len - 1] == '0')
            secs[--len] = '\0';
    } else {
        snprintf(secs, sizeof(secs), "%lld", s);
    }
    if (h)
        snprintf(out, n, "%lldh%lldm%ss", h, m, secs);
    else if (m)
        snprintf(out, n, "%lldm%ss", m, secs);
    else
        snprintf(out, n, "%ss", secs);
}

/* ---- token buckets ---- */

/* A bucket holding up to cap units, refilled at cap per minute. level may be negative (debt). */
typedef struct bucket {
    double level;
    uint64_t t_ns;
    bool init;
} bucket_t;

static void bucket_refill(bucket_t *b, int64_t cap, uint64_t now)
{
    if (!b->init) {
        b->level = (double)cap;
        b->t_ns = now;
        b->init = true;
        return;
    }
    if (now > b->t_ns) {
        b->level += (double)(now - b->t_ns) * (double)cap / 60e9;
        b->t_ns = now;
    }
    if (b->level > (double)cap)
        b->level = (double)cap;
    if (b->level < -(double)cap)
        b->level = -(double)cap;
}

static void bucket_take(bucket_t *b, int64_t cap, double n)
{
    b->level -= n;
    if (b->level > (double)cap)
        b->level = (double)cap;
    if (b->level < -(double)cap)
        b->level = -(double)cap;
}

/* ---- per-key state ---- */

typedef struct keystate {
    struct keystate *next; /* stripe chain */
    uint64_t hash;
    char id[48];
    /* policy (key_limits; -1 = the config default) */
    int64_t p_rpm, p_tpm, p_conc;
    double budget; /* < 0 = none */
    ah_budget_period_t period;
    int64_t policy_at; /* updated_at of the row applied */
    /* rate limits */
    bucket_t rpm, tpm;
    int64_t in_flight;
    /* spend: other nodes' rows since others_start, plus this process's per UTC day */
    double others;
    int64_t others_start; /* INT64_MIN = not known for any period */
    int64_t day[DAY_SLOTS];
    double day_cost[DAY_SLOTS];
    double mine_total;
} keystate_t;

typedef struct stripe {
    pthread_mutex_t mu; /* guards the chains and every field of their keystates */
    keystate_t **slots;
    size_t nslots, n;
} __attribute__((aligned(64))) stripe_t;

typedef struct modelstate {
    pthread_mutex_t mu; /* guards the buckets */
    int64_t rpm, tpm;
    bucket_t brpm, btpm;
    const char *name;
} __attribute__((aligned(64))) modelstate_t;

/* Name or alias -> model index; open addressing, at most half full. */
typedef struct model_slot {
    const char *name;
    int index;
} model_slot_t;

/* ---- Redis ---- */

enum { RS_DOWN = 0, RS_CONNECTING, RS_UP };
enum { OP_ADMIT = 1, OP_FINISH };

#define OP_MAXARGS 16
#define OP_ARGLEN  192

typedef struct rctx rctx_t;

typedef struct op {
    struct op *prev, *next; /* rctx's pending admissions, in send order */
    rctx_t *rc;
    int kind;
    bool answered; /* the caller got its decision (timeout); only free on the reply */
    bool resent;   /* already resent with EVAL after NOSCRIPT */
    bool linked;
    uint64_t deadline_ns;
    /* admission */
    ah_limits_ticket_t *t;
    ah_limits_cb cb;
    void *ud;
    keystate_t *ks;
    int model;
    int64_t est;
    int64_t caps[L_N];
    char member[48];
    /* the command, kept for a resend */
    int argc;
    const char *argv[OP_MAXARGS];
    size_t lens[OP_MAXARGS];
    char buf[OP_MAXARGS][OP_ARGLEN];
} op_t;

struct rctx {
    rctx_t *next;
    ah_limits_t *lim;
    ah_loop_t *loop;
    redisAsyncContext *ac; /* NULL while down */
    int state;
    uint64_t retry_at_ns;
    struct event *timer; /* fires at the oldest pending admission's deadline */
    op_t *head, *tail;
    bool closing; /* being freed: callbacks only free their ops */
};

struct ah_limits {
    uint64_t gen;
    const ah_config_t *cfg;
    ah_store_t *store;
    ah_usage_t *usage;
    double refresh_s, reconcile_s;
    uint64_t (*mono_ns)(void *ud);
    int64_t (*wall_ms)(void *ud);
    void *clock_ud;

    stripe_t stripes[STRIPES];
    modelstate_t *models;
    size_t nmodels;
    model_slot_t *mslots;
    size_t mmask;

    /* Redis */
    bool redis;
    char redis_host[256];
    int redis_port, redis_db;
    char redis_user[128], redis_pass[256];
    pthread_mutex_t addr_mu; /* guards redis_ip */
    char redis_ip[64];
    int redis_timeout_ms;
    char node[32];
    atomic_uint_fast64_t member_seq;
    atomic_bool redis_down; /* an outage was logged and not yet recovered */
    atomic_bool warned_unattached;
    atomic_int redis_up; /* attached loops connected now */
    bool closing;
    pthread_mutex_t att_mu; /* guards atts */
    rctx_t *atts;

    /* refresher */
    pthread_mutex_t refresh_mu; /* serialises refresh and reconcile runs */
    int64_t last_seen;          /* under refresh_mu */
    bool last_refresh_failed, last_reconcile_failed;
    atomic_bool reconcile_wanted;
    ah_ticker_t *refresher; /* runs refresher_tick every refresh_s once started */
    bool started;           /* ah_limits_start ran (caller's thread only) */
    /* refresher thread only (set by start before it exists): when each job is due */
    uint64_t next_full, next_reconcile, next_resolve;

    ah_metric_series_t *m_rej_rate, *m_rej_budget, *m_rej_conc, *m_fallback;
};

static atomic_uint_fast64_t next_gen = 1;

/* The rctx of each (limiter, loop) this thread has used: a cache of the att list. */
static __thread struct {
    uint64_t gen;
    ah_loop_t *loop;
    rctx_t *rc;
} tls_rc[TLS_SLOTS];

static uint64_t now_ns(ah_limits_t *lim)
{
    return lim->mono_ns ? lim->mono_ns(lim->clock_ud) : ah_mono_ns();
}

static int64_t now_ms(ah_limits_t *lim)
{
    return lim->wall_ms ? lim->wall_ms(lim->clock_ud) : ah_wall_ms();
}

/* ---- key table ---- */

static stripe_t *stripe_of(ah_limits_t *lim, uint64_t h)
{
    return &lim->stripes[h % STRIPES];
}

static keystate_t *ks_find(stripe_t *s, uint64_t h, const char *id)
{
    if (!s->nslots)
        return NULL;
    for (keystate_t *k = s->slots[(h / STRIPES) & (s->nslots - 1)]; k; k = k->next) {
        if (k->hash == h && strcmp(k->id, id) == 0)
            return k;
    }
    return NULL;
}

static int stripe_grow(stripe_t *s)
{
    size_t n = s->nslots ? s->nslots * 2 : 16;
    keystate_t **slots = calloc(n, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < s->nslots; i++) {
        keystate_t *k = s->slots[i];
        while (k) {
            keystate_t *next = k->next;
            size_t j = (k->hash / STRIPES) & (n - 1);
            k->next = slots[j];
            slots[j] = k;
            k = next;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
    return 0;
}

/*
 * Finds (or, with create, makes) id's state and returns it with its stripe
 * locked (*sp). NULL (nothing locked) when absent or on ENOMEM.
 */
static keystate_t *ks_lock(ah_limits_t *lim, const char *key_id, bool create, stripe_t **sp)
{
    char id[48];
    copy_str(id, sizeof(id), key_id);
    uint64_t h = fnv1a(id);
    stripe_t *s = stripe_of(lim, h);
    pthread_mutex_lock(&s->mu);
    keystate_t *k = ks_find(s, h, id);
    if (!k && create) {
        if (s->n >= s->nslots && stripe_grow(s) != 0) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        k = calloc(1, sizeof(*k));
        if (!k) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        k->hash = h;
        memcpy(k->id, id, sizeof(k->id));
        k->p_rpm = k->p_tpm = k->p_conc = -1;
        k->budget = -1;
        k->others_start = INT64_MIN;
        for (int i = 0; i < DAY_SLOTS; i++)
            k->day[i] = -1;
        size_t j = (h / STRIPES) & (s->nslots - 1);
        k->next = s->slots[j];
        s->slots[j] = k;
        s->n++;
    }
    if (!k) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    *sp = s;
    return k;
}

static int64_t eff(int64_t policy, int dflt)
{
    return policy >= 0 ? policy : (dflt > 0 ? dflt : 0);
}

static void key_caps(const ah_limits_t *lim, const keystate_t *k, int64_t caps[L_N])
{
    caps[L_KRPM] = k ? eff(k->p_rpm, lim->cfg->limits.default_rpm) : 0;
    caps[L_KTPM] = k ? eff(k->p_tpm, lim->cfg->limits.default_tpm) : 0;
    caps[L_KCONC] = k ? eff(k->p_conc, lim->cfg->limits.default_concurrency) : 0;
}

/* ---- spend ---- */

/* This process's spend of k since period start `start` up to now (under the stripe lock). */
static double mine_since(const keystate_t *k, ah_budget_period_t p, int64_t start, int64_t now)
{
    if (p == AH_BUDGET_TOTAL)
        return k->mine_total;
    int64_t d0 = floor_div(start, DAY_MS), d1 = floor_div(now, DAY_MS);
    double sum = 0;
    for (int i = 0; i < DAY_SLOTS; i++) {
        if (k->day[i] >= d0 && k->day[i] <= d1)
            sum += k->day_cost[i];
    }
    return sum;
}

/* Spend in the current period (under the stripe lock). Asks for a reconcile when others is stale.
 */
static double spent_locked(ah_limits_t *lim, keystate_t *k, int64_t now, int64_t *start,
                           int64_t *end)
{
    ah_budget_period_bounds(k->period, now, start, end);
    double others = 0;
    if (k->others_start == *start)
        others = k->others;
    else if (lim->store)
        atomic_store_explicit(&lim->reconcile_wanted, true, memory_order_relaxed);
    return others + mine_since(k, k->period, *start, now);
}

/* Usage recorder hook: a request of key_id finished at ts and cost cost. */
static void on_spend(void *ud, const char *key_id, int64_t ts, double cost)
{
    ah_limits_t *lim = ud;
    if (!key_id || !*key_id || !(cost > 0))
        return;
    stripe_t *s;
    keystate_t *k = ks_lock(lim, key_id, true, &s);
    if (!k)
        return;
    k->mine_total += cost;
    int64_t d = floor_div(ts, DAY_MS);
    if (d >= 0) {
        int i = (int)(d % DAY_SLOTS);
        if (k->day[i] < d) {
            k->day[i] = d;
            k->day_cost[i] = 0;
        }
        if (k->day[i] == d)
            k->day_cost[i] += cost;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- decisions ---- */

typedef struct view {
    int64_t cap; /* 0 = no such limit */
    double level;
} view_t;

static double refill_s(const view_t *v, double target)
{
    return target <= v->level ? 0 : (target - v->level) * 60.0 / (double)v->cap;
}

/* Picks the tighter of two limits of one kind for the headers; NULL when neither applies. */
static const view_t *tighter(const view_t *a, const view_t *b)
{
    if (!a->cap)
        return b->cap ? b : NULL;
    if (!b->cap)
        return a;
    return floor(b->level) < floor(a->level) ? b : a;
}

static void fill_headers(ah_limits_result_t *res, const view_t v[L_N])
{
    const view_t *r = tighter(&v[L_KRPM], &v[L_MRPM]);
    if (r) {
        res->has_requests = true;
        res->limit_requests = r->cap;
        res->remaining_requests = r->level > 0 ? (int64_t)floor(r->level) : 0;
        res->reset_requests_s = refill_s(r, (double)r->cap);
    }
    const view_t *t = tighter(&v[L_KTPM], &v[L_MTPM]);
    if (t) {
        res->has_tokens = true;
        res->limit_tokens = t->cap;
        res->remaining_tokens = t->level > 0 ? (int64_t)floor(t->level) : 0;
        res->reset_tokens_s = refill_s(t, (double)t->cap);
    }
}

/* Fills a refusal by limit slot `which` (L_*). */
static void refuse(ah_limits_t *lim, ah_limits_result_t *res, int which, const view_t v[L_N],
                   const char *key_id, const char *model)
{
    char wait_str[32];
    res->status = 429;
    res->retry = true;
    if (which == L_KCONC) {
        res->code = AH_LIMITS_CODE_CONCURRENCY;
        res->retry_after_s = 1;
        snprintf(res->message, sizeof(res->message),
                 "Too many concurrent requests for API key %s: limit %lld. Retry when one of "
                 "them finishes.",
                 key_id, (long long)v[L_KCONC].cap);
        ah_counter_inc(lim->m_rej_conc);
        return;
    }
    res->code = AH_LIMITS_CODE_RATE;
    res->retry_after_s = refill_s(&v[which], 1.0);
    if (res->retry_after_s < 0.001)
        res->retry_after_s = 0.001;
    ah_limits_format_duration(res->retry_after_s, wait_str, sizeof(wait_str));
    bool tokens = which == L_KTPM || which == L_MTPM;
    bool on_model = which == L_MRPM || which == L_MTPM;
    snprintf(res->message, sizeof(res->message),
             "Rate limit reached for %s per minute on %s %s: limit %lld. Please try again in %s.",
             tokens ? "tokens" : "requests", on_model ? "model" : "API key",
             on_model ? model : key_id, (long long)v[which].cap, wait_str);
    ah_counter_inc(lim->m_rej_rate);
}

/* Budget check under the stripe lock: true (and res filled) when k is at or over its budget. */
static bool over_budget(ah_limits_t *lim, keystate_t *k, ah_limits_result_t *res)
{
    if (k->budget < 0 || k->period == AH_BUDGET_NONE)
        return false;
    int64_t now = now_ms(lim), start, end;
    double spent = spent_locked(lim, k, now, &start, &end);
    if (spent < k->budget)
        return false;
    res->status = 429;
    res->code = AH_LIMITS_CODE_BUDGET;
    res->retry = false;
    char when[32];
    if (k->period == AH_BUDGET_TOTAL) {
        /* Never resets: clients are told not to retry; Retry-After is only a courtesy. */
        res->retry_after_s = 86400;
        snprintf(res->message, sizeof(res->message),
                 "Budget exceeded for API key %s: spent $%.4f of its total budget of $%.2f. "
                 "Raise the budget (PUT /v1/keys/%s/limits) to continue.",
                 k->id, spent, k->budget, k->id);
    } else {
        res->retry_after_s = (double)(end - now) / 1000.0;
        ah_limits_utc_format(end, false, when, sizeof(when));
        snprintf(res->message, sizeof(res->message),
                 "Budget exceeded for API key %s: spent $%.4f of its %s budget of $%.2f. It "
                 "resets at %s.",
                 k->id, spent, ah_budget_period_name(k->period), k->budget, when);
    }
    ah_counter_inc(lim->m_rej_budget);
    return true;
}

/*
 * The local decision. k's stripe and then the model's mutex are held
 * together so that the checks and the takes are one atomic step (lock
 * order: stripe before model, everywhere). locked: the caller holds k's
 * stripe (it is released here).
 */
static void admit_local(ah_limits_t *lim, keystate_t *k, int mi, int64_t est, ah_limits_ticket_t *t,
                        ah_limits_result_t *res, const char *key_id, const char *model,
                        bool skip_budget, bool locked)
{
    uint64_t now = now_ns(lim);
    int64_t caps[L_N] = {0};
    view_t v[L_N];
    memset(v, 0, sizeof(v));
    stripe_t *s = k ? stripe_of(lim, k->hash) : NULL;
    modelstate_t *m = mi >= 0 ? &lim->models[mi] : NULL;
    if (s && !locked)
        pthread_mutex_lock(&s->mu);
    if (k && !skip_budget && over_budget(lim, k, res)) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (m)
        pthread_mutex_lock(&m->mu);
    key_caps(lim, k, caps);
    caps[L_MRPM] = m ? m->rpm : 0;
    caps[L_MTPM] = m ? m->tpm : 0;
    bucket_t *b[L_N] = {k ? &k->rpm : NULL, k ? &k->tpm : NULL, NULL, m ? &m->brpm : NULL,
                        m ? &m->btpm : NULL};
    for (int i = 0; i < L_N; i++) {
        v[i].cap = caps[i];
        if (i != L_KCONC && caps[i] > 0) {
            bucket_refill(b[i], caps[i], now);
            v[i].level = b[i]->level;
        }
    }
    if (k)
        v[L_KCONC].level = (double)k->in_flight;

    int deny = -1;
    if (caps[L_KCONC] > 0 && k->in_flight >= caps[L_KCONC])
        deny = L_KCONC;
    else if (caps[L_KRPM] > 0 && v[L_KRPM].level < 1)
        deny = L_KRPM;
    else if (caps[L_KTPM] > 0 && v[L_KTPM].level <= 0)
        deny = L_KTPM;
    else if (caps[L_MRPM] > 0 && v[L_MRPM].level < 1)
        deny = L_MRPM;
    else if (caps[L_MTPM] > 0 && v[L_MTPM].level <= 0)
        deny = L_MTPM;

    if (deny < 0) {
        for (int i = 0; i < L_N; i++) {
            if (i == L_KCONC || caps[i] <= 0)
                continue;
            bool tok = i == L_KTPM || i == L_MTPM;
            bucket_take(b[i], caps[i], tok ? (double)est : 1.0);
            v[i].level = b[i]->level;
        }
        if (k)
            k->in_flight++;
    }
    if (m)
        pthread_mutex_unlock(&m->mu);
    if (s)
        pthread_mutex_unlock(&s->mu);

    fill_headers(res, v);
    if (deny >= 0) {
        refuse(lim, res, deny, v, key_id, model);
        return;
    }
    t->ks = k;
    t->model = mi;
    t->est_tokens = est;
    t->flags = T_ADMITTED | T_LOCAL_TPM | (k ? T_LOCAL_CONC : 0);
}

static void finish_local(ah_limits_t *lim, ah_limits_ticket_t *t, int64_t tokens)
{
    keystate_t *k = t->ks;
    modelstate_t *m = t->model >= 0 ? &lim->models[t->model] : NULL;
    double delta = (t->flags & T_LOCAL_TPM) ? (double)(tokens - t->est_tokens) : 0;
    uint64_t now = now_ns(lim);
    if (k) {
        stripe_t *s = stripe_of(lim, k->hash);
        pthread_mutex_lock(&s->mu);
        if ((t->flags & T_LOCAL_CONC) && k->in_flight > 0)
            k->in_flight--;
        int64_t cap = eff(k->p_tpm, lim->cfg->limits.default_tpm);
        if (delta != 0 && cap > 0) {
            bucket_refill(&k->tpm, cap, now);
            bucket_take(&k->tpm, cap, delta);
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (m && delta != 0 && m->tpm > 0) {
        pthread_mutex_lock(&m->mu);
        bucket_refill(&m->btpm, m->tpm, now);
        bucket_take(&m->btpm, m->tpm, delta);
        pthread_mutex_unlock(&m->mu);
    }
}

/* ---- Redis: scripts ---- */

/*
 * Admission. KEYS: key rpm, key tpm, key concurrency (zset), model rpm, model
 * tpm. ARGV 1..5: the limits in that order (0 = none), 6: tokens to reserve,
 * 7: concurrency member, 8: lease ms. Buckets are hashes {l = level, t = ms};
 * the server's clock (TIME) is the only clock, so replicas' skew does not
 * matter. Returns {refused slot (0 = admitted, else 1..5), key rpm level,
 * key tpm level, concurrency count, model rpm level, model tpm level};
 * levels in thousandths, after the take.
 */
static const char admit_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local cap = {}\n"
    "for i = 1, 5 do cap[i] = tonumber(ARGV[i]) end\n"
    "local lvl = {0, 0, 0, 0, 0}\n"
    "for _, i in ipairs({1, 2, 4, 5}) do\n"
    "  if cap[i] > 0 then\n"
    "    local v = redis.call('HMGET', KEYS[i], 'l', 't')\n"
    "    local l = tonumber(v[1])\n"
    "    if l == nil then l = cap[i]\n"
    "    else\n"
    "      l = l + math.max(0, now - tonumber(v[2])) * cap[i] / 60000\n"
    "      if l > cap[i] then l = cap[i] end\n"
    "    end\n"
    "    lvl[i] = l\n"
    "  end\n"
    "end\n"
    "if cap[3] > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
    "  lvl[3] = redis.call('ZCARD', KEYS[3])\n"
    "end\n"
    "local deny = 0\n"
    "if cap[3] > 0 and lvl[3] >= cap[3] then deny = 3\n"
    "elseif cap[1] > 0 and lvl[1] < 1 then deny = 1\n"
    "elseif cap[2] > 0 and lvl[2] <= 0 then deny = 2\n"
    "elseif cap[4] > 0 and lvl[4] < 1 then deny = 4\n"
    "elseif cap[5] > 0 and lvl[5] <= 0 then deny = 5 end\n"
    "if deny == 0 then\n"
    "  local est = tonumber(ARGV[6])\n"
    "  for _, i in ipairs({1, 2, 4, 5}) do\n"
    "    if cap[i] > 0 then\n"
    "      local take = 1\n"
    "      if i == 2 or i == 5 then take = est end\n"
    "      lvl[i] = math.max(-cap[i], lvl[i] - take)\n"
    "      redis.call('HSET', KEYS[i], 'l', tostring(lvl[i]), 't', tostring(now))\n"
    "      redis.call('PEXPIRE', KEYS[i], 120000)\n"
    "    end\n"
    "  end\n"
    "  if cap[3] > 0 then\n"
    "    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[7])\n"
    "    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[8]))\n"
    "    lvl[3] = lvl[3] + 1\n"
    "  end\n"
    "end\n"
    "return {deny, math.floor(lvl[1] * 1000), math.floor(lvl[2] * 1000), lvl[3],\n"
    "        math.floor(lvl[4] * 1000), math.floor(lvl[5] * 1000)}\n";

/*
 * Finish. KEYS: key tpm, key concurrency, model tpm. ARGV: key tpm limit,
 * model tpm limit, tokens to charge (may be negative: a refund of the
 * reservation), concurrency member ("" = none).
 */
static const char finish_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local d = tonumber(ARGV[3])\n"
    "local function charge(k, cap)\n"
    "  local v = redis.call('HMGET', k, 'l', 't')\n"
    "  local l = tonumber(v[1])\n"
    "  if l == nil then l = cap\n"
    "  else l = math.min(cap, l + math.max(0, now - tonumber(v[2])) * cap / 60000) end\n"
    "  l = math.min(cap, math.max(-cap, l - d))\n"
    "  redis.call('HSET', k, 'l', tostring(l), 't', tostring(now))\n"
    "  redis.call('PEXPIRE', k, 120000)\n"
    "end\n"
    "if d ~= 0 and tonumber(ARGV[1]) > 0 then charge(KEYS[1], tonumber(ARGV[1])) end\n"
    "if d ~= 0 and tonumber(ARGV[2]) > 0 then charge(KEYS[3], tonumber(ARGV[2])) end\n"
    "if ARGV[4] ~= '' then redis.call('ZREM', KEYS[2], ARGV[4]) end\n"
    "return 1\n";

static char admit_sha[41], finish_sha[41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    if (EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

static void compute_shas(void)
{
    sha1_hex(admit_lua, admit_sha);
    sha1_hex(finish_lua, finish_sha);
}

/* ---- Redis: configuration ---- */

/* redis://[[user]:password@]host[:port][/db]. 0, or -EINVAL with why set. */
static int redis_url_parse(ah_limits_t *lim, const char *url, const char **why)
{
    static const char scheme[] = "redis://";
    lim->redis_port = 6379;
    lim->redis_db = 0;
    if (strncmp(url, "rediss://", 9) == 0) {
        *why = "TLS (rediss://) is not supported; use redis:// on a private network";
        return -EINVAL;
    }
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        *why = "expected redis://[:password@]host[:port][/db]";
        return -EINVAL;
    }
    const char *p = url + sizeof(scheme) - 1;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < end; q++) {
        if (*q == '@')
            at = q;
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : 0;
        const char *pw = colon ? colon + 1 : p;
        size_t plen = (size_t)(at - pw);
        if (ulen >= sizeof(lim->redis_user) || plen >= sizeof(lim->redis_pass)) {
            *why = "user or password too long";
            return -EINVAL;
        }
        memcpy(lim->redis_user, p, ulen);
        lim->redis_user[ulen] = '\0';
        memcpy(lim->redis_pass, pw, plen);
        lim->redis_pass[plen] = '\0';
        p = at + 1;
    }
    const char *hend = end;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) {
            *why = "unterminated [IPv6] host";
            return -EINVAL;
        }
        if ((size_t)(rb - p - 1) >= sizeof(lim->redis_host))
            return *why = "host too long", -EINVAL;
        memcpy(lim->redis_host, p + 1, (size_t)(rb - p - 1));
        lim->redis_host[rb - p - 1] = '\0';
        hend = rb + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if ((size_t)(hend - p) >= sizeof(lim->redis_host))
            return *why = "host too long", -EINVAL;
        memcpy(lim->redis_host, p, (size_t)(hend - p));
        lim->redis_host[hend - p] = '\0';
    }
    if (!lim->redis_host[0]) {
        *why = "no host";
        return -EINVAL;
    }
    if (hend < end) {
        if (*hend != ':') {
            *why = "unexpected text after the host";
            return -EINVAL;
        }
        char *e;
        long port = strtol(hend + 1, &e, 10);
        if (e != end || port < 1 || port > 65535) {
            *why = "port must be a number from 1 to 65535";
            return -EINVAL;
        }
        lim->redis_port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 1000000) {
            *why = "database must be a number (redis://host:6379/0)";
            return -EINVAL;
        }
        lim->redis_db = (int)db;
    }
    return 0;
}

/* Resolves the Redis host to a numeric address (blocking: never on a loop). */
static int redis_resolve(ah_limits_t *lim)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(lim->redis_host, NULL, &hints, &ai);
    if (rc != 0 || !ai) {
        ah_log(AH_LOG_WARN, "limits", "cannot resolve the Redis host; using the local limiter",
               AH_LF_STR("host", lim->redis_host), AH_LF_STR("error", gai_strerror(rc)), AH_LF_END);
        if (ai)
            freeaddrinfo(ai);
        return -EHOSTUNREACH;
    }
    char ip[64] = "";
    const void *addr = ai->ai_family == AF_INET6
                           ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                           : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    inet_ntop(ai->ai_family, addr, ip, sizeof(ip));
    freeaddrinfo(ai);
    pthread_mutex_lock(&lim->addr_mu);
    memcpy(lim->redis_ip, ip, sizeof(ip));
    pthread_mutex_unlock(&lim->addr_mu);
    return 0;
}

/* ---- Redis: health ---- */

static void redis_failed(ah_limits_t *lim, const char *why)
{
    if (!atomic_exchange(&lim->redis_down, true))
        ah_log(AH_LOG_WARN, "limits",
               "Redis is unreachable: rate limits fall back to this process's local limiter "
               "until it answers again",
               AH_LF_STR("reason", why), AH_LF_STR("host", lim->redis_host),
               AH_LF_INT("port", lim->redis_port), AH_LF_END);
}

static void redis_ok(ah_limits_t *lim)
{
    if (atomic_load_explicit(&lim->redis_down, memory_order_relaxed) &&
        atomic_exchange(&lim->redis_down, false))
        ah_log(AH_LOG_INFO, "limits", "Redis answers again: shared rate limits resumed", AH_LF_END);
}

static void rc_set_state(rctx_t *rc, int state)
{
    if (rc->state == RS_UP && state != RS_UP)
        atomic_fetch_sub(&rc->lim->redis_up, 1);
    else if (rc->state != RS_UP && state == RS_UP)
        atomic_fetch_add(&rc->lim->redis_up, 1);
    rc->state = state;
}

static void rc_down(rctx_t *rc)
{
    rc->ac = NULL;
    rc_set_state(rc, RS_DOWN);
    rc->retry_at_ns = ah_mono_ns() + (uint64_t)AH_LIMITS_REDIS_RETRY_MS * 1000000ull;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rctx_t *rc = ac->data;
    if (!rc || rc->ac != ac)
        return;
    if (status != REDIS_OK) {
        rc_down(rc); /* hiredis frees ac after this returns */
        redis_failed(rc->lim, ac->errstr ? ac->errstr : "connect failed");
        return;
    }
    rc_set_state(rc, RS_UP);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rctx_t *rc = ac->data;
    if (!rc || rc->ac != ac)
        return;
    rc_down(rc);
    if (status != REDIS_OK && !rc->closing)
        redis_failed(rc->lim, ac->errstr ? ac->errstr : "connection lost");
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *rep = r;
    rctx_t *rc = ac->data;
    if (rc && rep && rep->type == REDIS_REPLY_ERROR && !rc->closing)
        ah_log(AH_LOG_ERROR, "limits", "Redis refused the connection setup (AUTH/SELECT)",
               AH_LF_STR("error", rep->str ? rep->str : "?"), AH_LF_STR("command", priv),
               AH_LF_END);
}

/* Opens rc's connection (non-blocking: the address is numeric). */
static void rc_connect(rctx_t *rc)
{
    ah_limits_t *lim = rc->lim;
    char ip[64];
    pthread_mutex_lock(&lim->addr_mu);
    memcpy(ip, lim->redis_ip, sizeof(ip));
    pthread_mutex_unlock(&lim->addr_mu);
    if (!ip[0]) {
        rc_down(rc);
        redis_failed(lim, "host not resolved");
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(ip, lim->redis_port);
    if (!ac || ac->err) {
        redis_failed(lim, ac && ac->errstr ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        rc_down(rc);
        return;
    }
    ac->data = rc;
    if (redisLibeventAttach(ac, ah_loop_base(rc->loop)) != REDIS_OK) {
        redisAsyncFree(ac);
        rc_down(rc);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rc->ac = ac;
    rc_set_state(rc, RS_CONNECTING);
    /* Queued before any script: hiredis sends commands in order once connected. */
    if (lim->redis_pass[0]) {
        if (lim->redis_user[0])
            redisAsyncCommand(ac, on_setup_reply, (void *)"AUTH", "AUTH %s %s", lim->redis_user,
                              lim->redis_pass);
        else
            redisAsyncCommand(ac, on_setup_reply, (void *)"AUTH", "AUTH %s", lim->redis_pass);
    }
    if (lim->redis_db)
        redisAsyncCommand(ac, on_setup_reply, (void *)"SELECT", "SELECT %d", lim->redis_db);
}

/* True when rc can take a command now (connecting counts: hiredis queues it). */
static bool rc_usable(rctx_t *rc)
{
    if (rc->ac)
        return true;
    if (ah_mono_ns() < rc->retry_at_ns)
        return false;
    rc_connect(rc);
    return rc->ac != NULL;
}

static rctx_t *rc_find(ah_limits_t *lim, ah_loop_t *loop)
{
    if (!loop)
        return NULL;
    for (int i = 0; i < TLS_SLOTS; i++) {
        if (tls_rc[i].gen == lim->gen && tls_rc[i].loop == loop)
            return tls_rc[i].rc;
    }
    pthread_mutex_lock(&lim->att_mu);
    rctx_t *rc = lim->atts;
    while (rc && rc->loop != loop)
        rc = rc->next;
    pthread_mutex_unlock(&lim->att_mu);
    if (rc) {
        int slot = 0;
        for (int i = 0; i < TLS_SLOTS; i++) {
            if (tls_rc[i].gen == 0) {
                slot = i;
                break;
            }
        }
        tls_rc[slot].gen = lim->gen;
        tls_rc[slot].loop = loop;
        tls_rc[slot].rc = rc;
    }
    return rc;
}

/* ---- Redis: operations ---- */

static void op_unlink(op_t *op)
{
    if (!op->linked)
        return;
    rctx_t *rc = op->rc;
    if (op->prev)
        op->prev->next = op->next;
    else
        rc->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        rc->tail = op->prev;
    op->prev = op->next = NULL;
    op->linked = false;
}

static void op_arg(op_t *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void op_arg(op_t *op, const char *fmt, ...)
{
    char *dst = op->buf[op->argc];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, OP_ARGLEN, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n >= OP_ARGLEN)
        n = OP_ARGLEN - 1;
    op->argv[op->argc] = dst;
    op->lens[op->argc] = (size_t)n;
    op->argc++;
}

/* A Redis key naming a model: the name itself, or a hash when it is too long for a slot. */
static void op_model_key(op_t *op, const char *model, const char *suffix)
{
    if (strlen(model) < OP_ARGLEN - 32)
        op_arg(op, "ah:rl:m:%s:%s", model, suffix);
    else
        op_arg(op, "ah:rl:m:#%016llx:%s", (unsigned long long)fnv1a(model), suffix);
}

static void admit_reply(redisAsyncContext *ac, void *r, void *priv);
static void finish_reply(redisAsyncContext *ac, void *r, void *priv);

static int op_send(op_t *op)
{
    return redisAsyncCommandArgv(op->rc->ac, op->kind == OP_ADMIT ? admit_reply : finish_reply, op,
                                 op->argc, op->argv, op->lens) == REDIS_OK
               ? 0
               : -EIO;
}

/* Resends op with EVAL (the server lost its script cache: restart, SCRIPT FLUSH). */
static bool op_resend_eval(op_t *op, redisReply *rep)
{
    if (op->resent || !rep || rep->type != REDIS_REPLY_ERROR || !rep->str ||
        strncmp(rep->str, "NOSCRIPT", 8) != 0 || !op->rc->ac)
        return false;
    op->resent = true;
    const char *script = op->kind == OP_ADMIT ? admit_lua : finish_lua;
    op->argv[0] = "EVAL";
    op->lens[0] = 4;
    op->argv[1] = script;
    op->lens[1] = strlen(script);
    return op_send(op) == 0;
}

/* Answers an admission locally because Redis could not (fail open). */
static void op_fail_open(op_t *op)
{
    ah_limits_t *lim = op->rc->lim;
    ah_limits_result_t res;
    memset(&res, 0, sizeof(res));
    memset(op->t, 0, sizeof(*op->t));
    op->t->model = -1;
    admit_local(lim, op->ks, op->model, op->est, op->t, &res, op->ks ? op->ks->id : "",
                op->model >= 0 ? lim->models[op->model].name : "", true, false);
    res.fail_open = true;
    ah_counter_inc(lim->m_fallback);
    op->cb(op->ud, &res);
}

static bool reply_ok(const redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 6)
        return false;
    for (size_t i = 0; i < 6; i++) {
        if (rep->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    }
    return true;
}

static void admit_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    op_t *op = priv;
    redisReply *rep = r;
    ah_limits_t *lim = op->rc->lim;
    if (op->answered || op->rc->closing) {
        op_unlink(op);
        free(op);
        return;
    }
    if (op_resend_eval(op, rep))
        return;
    op_unlink(op);
    if (!reply_ok(rep)) {
        redis_failed(lim,
                     rep && rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "no reply");
        op_fail_open(op);
        free(op);
        return;
    }
    redis_ok(lim);
    view_t v[L_N];
    for (int i = 0; i < L_N; i++) {
        long long x = rep->element[i + 1]->integer;
        v[i].cap = op->caps[i];
        v[i].level = i == L_KCONC ? (double)x : (double)x / 1000.0;
    }
    int deny = (int)rep->element[0]->integer;
    ah_limits_result_t res;
    memset(&res, 0, sizeof(res));
    res.redis = true;
    fill_headers(&res, v);
    memset(op->t, 0, sizeof(*op->t));
    op->t->model = -1;
    if (deny >= 1 && deny <= L_N) {
        refuse(lim, &res, deny - 1, v, op->ks ? op->ks->id : "",
               op->model >= 0 ? lim->models[op->model].name : "");
    } else {
        op->t->ks = op->ks;
        op->t->model = op->model;
        op->t->est_tokens = op->est;
        op->t->loop = op->rc->loop;
        op->t->flags = T_ADMITTED | T_REDIS;
        if (op->caps[L_KCONC] > 0)
            memcpy(op->t->member, op->member, sizeof(op->t->member));
    }
    op->cb(op->ud, &res);
    free(op);
}

static void finish_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    op_t *op = priv;
    if (!op->rc->closing && op_resend_eval(op, r))
        return;
    free(op);
}

static void arm_timer(rctx_t *rc)
{
    if (!rc->head || evtimer_pending(rc->timer, NULL))
        return;
    uint64_t now = ah_mono_ns();
    uint64_t delay = rc->head->deadline_ns > now ? rc->head->deadline_ns - now : 0;
    struct timeval tv = {(time_t)(delay / 1000000000ull),
                         (suseconds_t)(delay % 1000000000ull / 1000)};
    evtimer_add(rc->timer, &tv);
}

/* The oldest admission waited past redis_timeout_ms: answer locally, drop the connection. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rctx_t *rc = arg;
    ah_limits_t *lim = rc->lim;
    uint64_t now = ah_mono_ns();
    if (!rc->head || rc->head->deadline_ns > now) {
        arm_timer(rc);
        return;
    }
    /* Down first, so that admissions made by the callbacks below go local at once. */
    redisAsyncContext *ac = rc->ac;
    rc_down(rc);
    redis_failed(lim, "timeout");
    while (rc->head && rc->head->deadline_ns <= now) {
        op_t *op = rc->head;
        op_unlink(op);
        op->answered = true; /* freed by its reply callback, run by redisAsyncFree below */
        op_fail_open(op);
    }
    if (ac)
        redisAsyncFree(ac); /* the remaining ops get a NULL reply: they fail open too */
    arm_timer(rc);
}

static int redis_admit(ah_limits_t *lim, rctx_t *rc, keystate_t *k, int mi, int64_t est,
                       const int64_t caps[L_N], ah_limits_ticket_t *t, ah_limits_cb cb, void *ud)
{
    op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    pthread_once(&sha_once, compute_shas);
    op->rc = rc;
    op->kind = OP_ADMIT;
    op->t = t;
    op->cb = cb;
    op->ud = ud;
    op->ks = k;
    op->model = mi;
    op->est = est;
    memcpy(op->caps, caps, sizeof(op->caps));
    snprintf(op->member, sizeof(op->member), "%s:%llu", lim->node,
             (unsigned long long)atomic_fetch_add(&lim->member_seq, 1));
    const char *kid = k ? k->id : "";
    const char *model = mi >= 0 ? lim->models[mi].name : "";
    op_arg(op, "EVALSHA");
    op_arg(op, "%s", admit_sha);
    op_arg(op, "5");
    op_arg(op, "ah:rl:k:%s:rpm", kid);
    op_arg(op, "ah:rl:k:%s:tpm", kid);
    op_arg(op, "ah:rl:k:%s:conc", kid);
    op_model_key(op, model, "rpm");
    op_model_key(op, model, "tpm");
    for (int i = 0; i < L_N; i++)
        op_arg(op, "%lld", (long long)caps[i]);
    op_arg(op, "%lld", (long long)est);
    op_arg(op, "%s", op->member);
    op_arg(op, "%d", AH_LIMITS_CONC_LEASE_MS);
    if (op_send(op) != 0) {
        free(op);
        return -EIO;
    }
    op->deadline_ns = ah_mono_ns() + (uint64_t)lim->redis_timeout_ms * 1000000ull;
    op->linked = true;
    op->prev = rc->tail;
    if (rc->tail)
        rc->tail->next = op;
    else
        rc->head = op;
    rc->tail = op;
    arm_timer(rc);
    return -EINPROGRESS;
}

/* Sends a finish on rc (on its loop's thread). Best effort: leases expire anyway. */
static void redis_finish_send(rctx_t *rc, const ah_limits_ticket_t *t, int64_t tokens)
{
    ah_limits_t *lim = rc->lim;
    keystate_t *k = t->ks;
    int64_t caps[L_N] = {0};
    key_caps(lim, k, caps);
    int64_t mtpm = t->model >= 0 ? lim->models[t->model].tpm : 0;
    int64_t delta = tokens - t->est_tokens;
    bool charge = delta != 0 && (caps[L_KTPM] > 0 || mtpm > 0);
    if ((!charge && !t->member[0]) || !rc_usable(rc))
        return;
    op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return;
    pthread_once(&sha_once, compute_shas);
    op->rc = rc;
    op->kind = OP_FINISH;
    const char *kid = k ? k->id : "";
    op_arg(op, "EVALSHA");
    op_arg(op, "%s", finish_sha);
    op_arg(op, "3");
    op_arg(op, "ah:rl:k:%s:tpm", kid);
    op_arg(op, "ah:rl:k:%s:conc", kid);
    op_model_key(op, t->model >= 0 ? lim->models[t->model].name : "", "tpm");
    op_arg(op, "%lld", (long long)caps[L_KTPM]);
    op_arg(op, "%lld", (long long)mtpm);
    op_arg(op, "%lld", (long long)delta);
    op_arg(op, "%s", t->member);
    if (op_send(op) != 0)
        free(op);
}

/* A finish handed to the ticket's loop from another thread. */
typedef struct finish_msg {
    ah_limits_t *lim;
    ah_limits_ticket_t t;
    int64_t tokens;
} finish_msg_t;

static void finish_post_cb(void *arg)
{
    finish_msg_t *fm = arg;
    rctx_t *rc = rc_find(fm->lim, fm->t.loop);
    if (rc && !fm->lim->closing)
        redis_finish_send(rc, &fm->t, fm->tokens);
    free(fm);
}

/* ---- public: admission ---- */

static int model_find(const ah_limits_t *lim, const char *name)
{
    if (!name || !lim->mslots)
        return -1;
    for (size_t i = fnv1a(name) & lim->mmask;; i = (i + 1) & lim->mmask) {
        if (!lim->mslots[i].name)
            return -1;
        if (strcmp(lim->mslots[i].name, name) == 0)
            return lim->mslots[i].index;
    }
}

int ah_limits_admit(ah_limits_t *lim, ah_loop_t *loop, const char *key_id, const char *model,
                    int64_t est_tokens, ah_limits_ticket_t *t, ah_limits_result_t *res,
                    ah_limits_cb cb, void *ud)
{
    if (!t || !res)
        return -EINVAL;
    memset(res, 0, sizeof(*res));
    memset(t, 0, sizeof(*t));
    t->model = -1;
    if (est_tokens < 0)
        est_tokens = 0;
    int mi = model_find(lim, model);
    const char *mname = mi >= 0 ? lim->models[mi].name : "";
    /* Keystates live until ah_limits_free: the pointer stays valid after the unlock. */
    stripe_t *s = NULL;
    keystate_t *k = key_id && *key_id ? ks_lock(lim, key_id, true, &s) : NULL;
    const char *kid = k ? k->id : "";

    if (!lim->redis || !cb) {
        admit_local(lim, k, mi, est_tokens, t, res, kid, mname, false, k != NULL);
        return 0;
    }
    int64_t caps[L_N] = {0};
    if (k) {
        bool over = over_budget(lim, k, res);
        key_caps(lim, k, caps);
        pthread_mutex_unlock(&s->mu);
        if (over)
            return 0;
    }
    caps[L_MRPM] = mi >= 0 ? lim->models[mi].rpm : 0;
    caps[L_MTPM] = mi >= 0 ? lim->models[mi].tpm : 0;
    bool any = false;
    for (int i = 0; i < L_N; i++)
        any |= caps[i] > 0;
    if (!any) {
        admit_local(lim, k, mi, est_tokens, t, res, kid, mname, true, false);
        return 0;
    }
    rctx_t *rc = rc_find(lim, loop);
    if (rc && rc_usable(rc)) {
        int rc2 = redis_admit(lim, rc, k, mi, est_tokens, caps, t, cb, ud);
        if (rc2 == -EINPROGRESS)
            return rc2;
    }
    if (rc)
        redis_failed(lim, rc->ac ? "send failed" : "not connected");
    else if (!atomic_exchange(&lim->warned_unattached, true))
        ah_log(AH_LOG_WARN, "limits",
               "rate limit admission on a loop without a Redis connection "
               "(ah_limits_attach missing?): decided by the local limiter",
               AH_LF_END);
    admit_local(lim, k, mi, est_tokens, t, res, kid, mname, true, false);
    res->fail_open = true;
    ah_counter_inc(lim->m_fallback);
    return 0;
}

void ah_limits_finish(ah_limits_t *lim, ah_limits_ticket_t *t, int64_t tokens)
{
    if (!t || !(t->flags & T_ADMITTED))
        return;
    if (tokens < 0)
        tokens = 0;
    if (t->flags & T_REDIS) {
        rctx_t *rc = NULL;
        for (int i = 0; i < TLS_SLOTS; i++) {
            if (tls_rc[i].gen == lim->gen && tls_rc[i].loop == t->loop)
                rc = tls_rc[i].rc;
        }
        if (rc) {
            redis_finish_send(rc, t, tokens); /* on the loop's thread */
        } else {
            finish_msg_t *fm = malloc(sizeof(*fm));
            if (fm) {
                fm->lim = lim;
                fm->t = *t;
                fm->tokens = tokens;
                if (ah_loop_post(t->loop, finish_post_cb, fm) != 0)
                    free(fm);
            }
        }
    } else {
        finish_local(lim, t, tokens);
    }
    t->flags = 0;
}

/* Up to four of these per answer: digits by hand, snprintf was 2 % of a request's instructions. */
static int add_int(int (*add)(void *, const char *, const char *), void *ctx, const char *name,
                   long long v)
{
    char buf[24];
    char *p = buf + sizeof(buf);
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    *--p = '\0';
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return add(ctx, name, p);
}

void ah_limits_add_headers(const ah_limits_result_t *res,
                           int (*add)(void *ctx, const char *name, const char *value), void *ctx)
{
    char buf[48];
    if (res->has_requests) {
        add_int(add, ctx, "x-ratelimit-limit-requests", res->limit_requests);
        add_int(add, ctx, "x-ratelimit-remaining-requests", res->remaining_requests);
        ah_limits_format_duration(res->reset_requests_s, buf, sizeof(buf));
        add(ctx, "x-ratelimit-reset-requests", buf);
    }
    if (res->has_tokens) {
        add_int(add, ctx, "x-ratelimit-limit-tokens", res->limit_tokens);
        add_int(add, ctx, "x-ratelimit-remaining-tokens", res->remaining_tokens);
        ah_limits_format_duration(res->reset_tokens_s, buf, sizeof(buf));
        add(ctx, "x-ratelimit-reset-tokens", buf);
    }
    if (res->status == 429) {
        double ra = res->retry_after_s > 0 ? res->retry_after_s : 1;
        /* Rounded up (never tell a client to come back early), ignoring float noise. */
        add_int(add, ctx, "retry-after", (long long)ceil(ra < 1 ? 1 : ra - 1e-9));
        add_int(add, ctx, "retry-after-ms", (long long)ceil(ra * 1000 - 1e-6));
        add(ctx, "x-should-retry", res->retry ? "true" : "false");
    }
}

/* ---- policy ---- */

/* Applies one row to k (under its stripe lock). */
static void policy_set(ah_limits_t *lim, keystate_t *k, const ah_key_limits_rec_t *r,
                       ah_budget_period_t period)
{
    if (r->updated_at < k->policy_at)
        return; /* a refresh read this row before a newer apply: keep the newer */
    bool budget = r->budget_usd >= 0 && period != AH_BUDGET_NONE;
    ah_budget_period_t np = budget ? period : AH_BUDGET_NONE;
    if (budget && (k->period != np || k->budget < 0))
        atomic_store(&lim->reconcile_wanted, true);
    k->p_rpm = r->rpm;
    k->p_tpm = r->tpm;
    k->p_conc = r->concurrency;
    k->budget = budget ? r->budget_usd : -1;
    k->period = np;
    k->policy_at = r->updated_at;
}

static int apply_row(ah_limits_t *lim, const ah_key_limits_rec_t *r)
{
    ah_budget_period_t p = AH_BUDGET_NONE;
    if (r->budget_usd >= 0 && ah_budget_period_parse(r->budget_period, &p) != 0)
        return -EINVAL;
    if (r->budget_usd >= 0 && p == AH_BUDGET_NONE)
        p = AH_BUDGET_MONTHLY;
    stripe_t *s;
    keystate_t *k = ks_lock(lim, r->key_id, true, &s);
    if (!k)
        return -ENOMEM;
    policy_set(lim, k, r, p);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int ah_limits_apply(ah_limits_t *lim, const ah_key_limits_rec_t *rec)
{
    int rc = apply_row(lim, rec);
    if (rc == 0 && rec->budget_usd >= 0) {
        atomic_store(&lim->reconcile_wanted, true);
        ah_ticker_kick(lim->refresher);
    }
    return rc;
}

void ah_limits_key_status(ah_limits_t *lim, const char *key_id, ah_limits_key_status_t *out)
{
    memset(out, 0, sizeof(*out));
    out->budget_usd = -1;
    int64_t caps[L_N] = {0};
    stripe_t *s;
    keystate_t *k = key_id && *key_id ? ks_lock(lim, key_id, false, &s) : NULL;
    key_caps(lim, k, caps);
    if (!k) {
        /* Never seen: the defaults. */
        out->rpm = eff(-1, lim->cfg->limits.default_rpm);
        out->tpm = eff(-1, lim->cfg->limits.default_tpm);
        out->concurrency = eff(-1, lim->cfg->limits.default_concurrency);
        out->period_end_ms = INT64_MAX;
        return;
    }
    out->rpm = caps[L_KRPM];
    out->tpm = caps[L_KTPM];
    out->concurrency = caps[L_KCONC];
    out->in_flight = k->in_flight;
    out->budget_usd = k->budget;
    out->period = k->period;
    if (k->budget >= 0 && k->period != AH_BUDGET_NONE)
        out->spent_usd =
            spent_locked(lim, k, now_ms(lim), &out->period_start_ms, &out->period_end_ms);
    pthread_mutex_unlock(&s->mu);
}

/* ---- refresher: key_limits and reconcile ---- */

typedef struct rows {
    ah_key_limits_rec_t *r;
    size_t n, cap;
    int64_t since;
} rows_t;

static int rows_cb(void *ud, const ah_key_limits_rec_t *r)
{
    rows_t *rs = ud;
    if (rs->n == rs->cap) {
        if (rs->cap >= MAX_POLICY_ROWS)
            return -E2BIG;
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        ah_key_limits_rec_t *p = realloc(rs->r, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        rs->r = p;
        rs->cap = cap;
    }
    rs->r[rs->n++] = *r;
    return 0;
}

static int rows_work(ah_db_t *db, void *arg)
{
    rows_t *rs = arg;
    return ah_store_key_limits_list(db, rs->since, rows_cb, rs);
}

static int refresh_once(ah_limits_t *lim, bool full)
{
    if (!lim->store)
        return 0;
    pthread_mutex_lock(&lim->refresh_mu);
    rows_t rs = {NULL, 0, 0, full ? -1 : lim->last_seen - AH_LIMITS_OVERLAP_MS};
    int rc = ah_store_call(lim->store, AH_STORE_READ, rows_work, &rs);
    if (rc == 0) {
        for (size_t i = 0; i < rs.n; i++) {
            if (rs.r[i].updated_at > lim->last_seen)
                lim->last_seen = rs.r[i].updated_at;
            if (apply_row(lim, &rs.r[i]) == -EINVAL)
                ah_log(AH_LOG_WARN, "limits",
                       "key_limits row has an unknown budget_period; "
                       "its budget is ignored",
                       AH_LF_STR("key_id", rs.r[i].key_id),
                       AH_LF_STR("budget_period", rs.r[i].budget_period), AH_LF_END);
        }
    }
    free(rs.r);
    if (rc && !lim->last_refresh_failed)
        ah_log(AH_LOG_WARN, "limits", "key limits refresh failed; keeping the last ones read",
               AH_LF_INT("errno", -rc), AH_LF_END);
    else if (!rc && lim->last_refresh_failed)
        ah_log(AH_LOG_INFO, "limits", "key limits refresh recovered", AH_LF_END);
    lim->last_refresh_failed = rc != 0;
    pthread_mutex_unlock(&lim->refresh_mu);
    return rc;
}

typedef struct sum_item {
    char key_id[48];
    ah_budget_period_t period;
    int64_t start;
    double sum;
} sum_item_t;

typedef struct sums {
    sum_item_t *it;
    size_t n;
    const char *node;
} sums_t;

static int sums_work(ah_db_t *db, void *arg)
{
    sums_t *ss = arg;
    for (size_t i = 0; i < ss->n; i++) {
        int rc = ah_store_usage_cost_since(db, ss->it[i].key_id, ss->it[i].start, ss->node,
                                           &ss->it[i].sum);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int reconcile_once(ah_limits_t *lim)
{
    if (!lim->store)
        return 0;
    pthread_mutex_lock(&lim->refresh_mu);
    atomic_store(&lim->reconcile_wanted, false);
    int64_t now = now_ms(lim);
    sums_t ss = {NULL, 0, lim->usage ? ah_usage_node(lim->usage) : NULL};
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; i < STRIPES && rc == 0; i++) {
        stripe_t *s = &lim->stripes[i];
        pthread_mutex_lock(&s->mu);
        for (size_t j = 0; j < s->nslots && rc == 0; j++) {
            for (keystate_t *k = s->slots[j]; k; k = k->next) {
                if (k->budget < 0 || k->period == AH_BUDGET_NONE)
                    continue;
                if (ss.n == cap) {
                    size_t nc = cap ? cap * 2 : 32;
                    sum_item_t *p = realloc(ss.it, nc * sizeof(*p));
                    if (!p) {
                        rc = -ENOMEM;
                        break;
                    }
                    ss.it = p;
                    cap = nc;
                }
                sum_item_t *it = &ss.it[ss.n++];
                memcpy(it->key_id, k->id, sizeof(it->key_id));
                it->period = k->period;
                int64_t end;
                ah_budget_period_bounds(k->period, now, &it->start, &end);
                it->sum = 0;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (rc == 0 && ss.n > 0)
        rc = ah_store_call(lim->store, AH_STORE_READ, sums_work, &ss);
    if (rc == 0) {
        for (size_t i = 0; i < ss.n; i++) {
            stripe_t *s;
            keystate_t *k = ks_lock(lim, ss.it[i].key_id, false, &s);
            if (!k)
                continue;
            if (k->period == ss.it[i].period) {
                k->others = ss.it[i].sum;
                k->others_start = ss.it[i].start;
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
    free(ss.it);
    if (rc && !lim->last_reconcile_failed)
        ah_log(AH_LOG_WARN, "limits",
               "budget reconcile failed; budgets use the last spend read plus local spend",
               AH_LF_INT("errno", -rc), AH_LF_END);
    else if (!rc && lim->last_reconcile_failed)
        ah_log(AH_LOG_INFO, "limits", "budget reconcile recovered", AH_LF_END);
    lim->last_reconcile_failed = rc != 0;
    pthread_mutex_unlock(&lim->refresh_mu);
    return rc;
}

/*
 * The refresher thread's tick (core/ticker.h), every refresh_s or on a kick:
 * the key_limits refresh (full every AH_LIMITS_FULL_RESYNC_S), the budget
 * reconcile when due or wanted, and the Redis address when due or missing.
 */
static void refresher_tick(void *arg)
{
    ah_limits_t *lim = arg;
    uint64_t now = ah_mono_ns();
    bool full = now >= lim->next_full;
    if (full)
        lim->next_full = now + (uint64_t)AH_LIMITS_FULL_RESYNC_S * NS_PER_S;
    refresh_once(lim, full);
    if (now >= lim->next_reconcile || atomic_load(&lim->reconcile_wanted)) {
        lim->next_reconcile = now + (uint64_t)(lim->reconcile_s * 1e9);
        reconcile_once(lim);
    }
    bool unresolved = false;
    if (lim->redis) {
        pthread_mutex_lock(&lim->addr_mu);
        unresolved = lim->redis_ip[0] == '\0';
        pthread_mutex_unlock(&lim->addr_mu);
    }
    if (lim->redis && (now >= lim->next_resolve || unresolved)) {
        lim->next_resolve = now + (uint64_t)RESOLVE_EVERY_S * NS_PER_S;
        redis_resolve(lim);
    }
}

/* ---- lifetime ---- */

static int models_init(ah_limits_t *lim)
{
    const ah_config_t *cfg = lim->cfg;
    lim->nmodels = cfg->n_models;
    if (!lim->nmodels)
        return 0;
    lim->models = aligned_alloc(64, lim->nmodels * sizeof(modelstate_t));
    if (!lim->models)
        return -ENOMEM;
    memset(lim->models, 0, lim->nmodels * sizeof(modelstate_t));
    size_t names = 0;
    for (size_t i = 0; i < cfg->n_models; i++) {
        modelstate_t *m = &lim->models[i];
        pthread_mutex_init(&m->mu, NULL);
        m->rpm = cfg->models[i].rpm > 0 ? cfg->models[i].rpm : 0;
        m->tpm = cfg->models[i].tpm > 0 ? cfg->models[i].tpm : 0;
        m->name = cfg->models[i].name ? cfg->models[i].name : "";
        names += 1 + cfg->models[i].n_aliases;
    }
    size_t cap = 16;
    while (cap < 2 * names)
        cap *= 2;
    lim->mslots = calloc(cap, sizeof(*lim->mslots));
    if (!lim->mslots)
        return -ENOMEM;
    lim->mmask = cap - 1;
    for (size_t i = 0; i < cfg->n_models; i++) {
        for (size_t a = 0; a <= cfg->models[i].n_aliases; a++) {
            const char *n = a == 0 ? cfg->models[i].name : cfg->models[i].aliases[a - 1];
            if (!n)
                continue;
            size_t j = fnv1a(n) & lim->mmask;
            while (lim->mslots[j].name && strcmp(lim->mslots[j].name, n) != 0)
                j = (j + 1) & lim->mmask;
            if (!lim->mslots[j].name) {
                lim->mslots[j].name = n;
                lim->mslots[j].index = (int)i;
            }
        }
    }
    return 0;
}

ah_limits_t *ah_limits_new(const ah_config_t *cfg, ah_store_t *store, ah_usage_t *usage,
                           const ah_limits_opts_t *opts)
{
    ah_limits_t *lim = aligned_alloc(64, sizeof(*lim));
    if (!lim)
        return NULL;
    memset(lim, 0, sizeof(*lim));
    lim->gen = atomic_fetch_add(&next_gen, 1);
    lim->cfg = cfg;
    lim->store = store;
    lim->usage = usage;
    lim->refresh_s = opts && opts->refresh_s > 0 ? opts->refresh_s : AH_LIMITS_REFRESH_S;
    lim->reconcile_s = opts && opts->reconcile_s > 0 ? opts->reconcile_s : AH_LIMITS_RECONCILE_S;
    if (lim->refresh_s < 0.01)
        lim->refresh_s = 0.01;
    if (lim->refresh_s > 3600)
        lim->refresh_s = 3600;
    if (lim->reconcile_s < 0.01)
        lim->reconcile_s = 0.01;
    if (lim->reconcile_s > 86400)
        lim->reconcile_s = 86400;
    lim->redis_timeout_ms =
        opts && opts->redis_timeout_ms > 0 ? opts->redis_timeout_ms : AH_LIMITS_REDIS_TIMEOUT_MS;
    if (opts) {
        lim->mono_ns = opts->mono_ns;
        lim->wall_ms = opts->wall_ms;
        lim->clock_ud = opts->clock_ud;
    }
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&lim->stripes[i].mu, NULL);
    pthread_mutex_init(&lim->addr_mu, NULL);
    pthread_mutex_init(&lim->att_mu, NULL);
    pthread_mutex_init(&lim->refresh_mu, NULL);

    lim->refresher = ah_ticker_new("ah-limits", lim->refresh_s, refresher_tick, lim);
    if (!lim->refresher || models_init(lim) != 0 ||
        ah_id_new(lim->node, sizeof(lim->node), "l", 9) != 0) {
        ah_limits_free(lim);
        return NULL;
    }
    const char *url = opts && opts->redis_url ? opts->redis_url : cfg->redis.url;
    if (url && *url) {
        const char *why = NULL;
        if (redis_url_parse(lim, url, &why) != 0) {
            ah_log(AH_LOG_ERROR, "limits", "redis.url is invalid", AH_LF_STR("error", why),
                   AH_LF_END);
            ah_limits_free(lim);
            return NULL;
        }
        lim->redis = true;
        redis_resolve(lim); /* retried by the refresher when it fails */
    }

    static const char *const code_label[] = {"code"};
    ah_metric_family_t *rej = ah_metrics_counter(
        "agenthub_ratelimit_rejected_total",
        "Gateway requests refused with 429, by code (rate_limit_exceeded, budget_exceeded, "
        "concurrency_limit).",
        1, code_label);
    lim->m_rej_rate = ah_metrics_series(rej, AH_LIMITS_CODE_RATE);
    lim->m_rej_budget = ah_metrics_series(rej, AH_LIMITS_CODE_BUDGET);
    lim->m_rej_conc = ah_metrics_series(rej, AH_LIMITS_CODE_CONCURRENCY);
    lim->m_fallback = ah_metrics_series0(ah_metrics_counter(
        "agenthub_ratelimit_redis_fallback_total",
        "Admissions decided by the local limiter because Redis could not answer (fail open).", 0,
        NULL));
    if (usage)
        ah_usage_set_spend_hook(usage, on_spend, lim);
    return lim;
}

int ah_limits_start(ah_limits_t *lim)
{
    if (lim->started || !lim->store)
        return 0;
    int rc = refresh_once(lim, true);
    int rc2 = reconcile_once(lim);
    if (!rc)
        rc = rc2;
    uint64_t t0 = ah_mono_ns();
    lim->next_full = t0 + (uint64_t)AH_LIMITS_FULL_RESYNC_S * NS_PER_S;
    lim->next_reconcile = t0 + (uint64_t)(lim->reconcile_s * 1e9);
    lim->next_resolve = t0 + (uint64_t)RESOLVE_EVERY_S * NS_PER_S;
    int trc = ah_ticker_start(lim->refresher);
    if (trc != 0) {
        ah_log(AH_LOG_ERROR, "limits", "could not start the key limits refresher",
               AH_LF_INT("errno", -trc), AH_LF_END);
        return trc;
    }
    lim->started = true;
    return rc;
}

int ah_limits_attach(ah_limits_t *lim, ah_loop_t *loop)
{
    if (!lim->redis)
        return 0;
    pthread_mutex_lock(&lim->att_mu);
    for (rctx_t *r = lim->atts; r; r = r->next) {
        if (r->loop == loop) {
            pthread_mutex_unlock(&lim->att_mu);
            return -EEXIST;
        }
    }
    pthread_mutex_unlock(&lim->att_mu);
    rctx_t *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return -ENOMEM;
    rc->lim = lim;
    rc->loop = loop;
    rc->timer = evtimer_new(ah_loop_base(loop), on_timer, rc);
    if (!rc->timer) {
        free(rc);
        return -ENOMEM;
    }
    rc_connect(rc);
    pthread_mutex_lock(&lim->att_mu);
    rc->next = lim->atts;
    lim->atts = rc;
    pthread_mutex_unlock(&lim->att_mu);
    return 0;
}

static void rc_free(rctx_t *rc)
{
    rc->closing = true;
    if (rc->ac) {
        redisAsyncContext *ac = rc->ac;
        rc_down(rc);
        redisAsyncFree(ac); /* pending ops get NULL replies and, closing, are only freed */
    }
    /* Ops the caller was already answered for (timeouts) were freed by their callbacks. */
    while (rc->head) {
        op_t *op = rc->head;
        op_unlink(op);
        free(op);
    }
    if (rc->timer)
        event_free(rc->timer);
    for (int i = 0; i < TLS_SLOTS; i++) {
        if (tls_rc[i].rc == rc)
            memset(&tls_rc[i], 0, sizeof(tls_rc[i]));
    }
    free(rc);
}

int ah_limits_detach(ah_limits_t *lim, ah_loop_t *loop)
{
    pthread_mutex_lock(&lim->att_mu);
    rctx_t **pp = &lim->atts;
    while (*pp && (*pp)->loop != loop)
        pp = &(*pp)->next;
    rctx_t *rc = *pp;
    if (rc)
        *pp = rc->next;
    pthread_mutex_unlock(&lim->att_mu);
    if (!rc)
        return -ENOENT;
    rc_free(rc);
    return 0;
}

int ah_limits_refresh_now(ah_limits_t *lim)
{
    return refresh_once(lim, true);
}

int ah_limits_reconcile_now(ah_limits_t *lim)
{
    return reconcile_once(lim);
}

int ah_limits_redis_connected(ah_limits_t *lim)
{
    return atomic_load(&lim->redis_up);
}

bool ah_limits_redis_enabled(const ah_limits_t *lim)
{
    return lim->redis;
}

void ah_limits_free(ah_limits_t *lim)
{
    if (!lim)
        return;
    ah_ticker_free(lim->refresher); /* joins the refresher before anything else goes */
    if (lim->usage)
        ah_usage_set_spend_hook(lim->usage, NULL, NULL);
    lim->closing = true;
    rctx_t *rc = lim->atts;
    while (rc) {
        rctx_t *next = rc->next;
        rc_free(rc);
        rc = next;
    }
    for (int i = 0; i < STRIPES; i++) {
        stripe_t *s = &lim->stripes[i];
        for (size_t j = 0; j < s->nslots; j++) {
            keystate_t *k = s->slots[j];
            while (k) {
                keystate_t *next = k->next;
                free(k);
                k = next;
            }
        }
        free(s->slots);
        pthread_mutex_destroy(&s->mu);
    }
    for (size_t i = 0; lim->models && i < lim->nmodels; i++)
        pthread_mutex_destroy(&lim->models[i].mu);
    free(lim->models);
    free(lim->mslots);
    pthread_mutex_destroy(&lim->addr_mu);
    pthread_mutex_destroy(&lim->att_mu);
    pthread_mutex_destroy(&lim->refresh_mu);
    explicit_bzero(lim->redis_pass, sizeof(lim->redis_pass));
    free(lim);
}
