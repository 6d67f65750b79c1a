/*
 * config.c - loads, checks and prints agenthub's configuration; see config.h
 * and docs/internals/config.md.
 *
 * Every scalar setting is one row of a schema table (path, type, range,
 * offset, default, flags, help). The same rows drive the defaults (parsed
 * from their text like any value), the YAML walk, the AGENTHUB_* environment
 * overrides, KEY_file secrets, error messages, the dump and the reference
 * table, so adding a setting is adding a row. What no table can say (listen
 * addresses, URL schemes, provider types, references between models and
 * providers) is checked in the validate_* functions at the end.
 *
 * A load never stops at the first problem: each one is appended to errs as
 * "FILE:LINE: path: message (hint)" (or "AGENTHUB_VAR: path: ..." for the
 * environment) and the load fails once everything has been looked at.
 */
#include "core/config.h"

#include "core/suggest.h"
#include "core/yaml.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define MAX_ERRORS      100   /* errors printed; past this, one "N more" line */
#define MAX_KEPT        1000  /* errors kept for sorting */
#define SECRET_FILE_MAX 65536 /* *_file contents */
#define KEY_MAX         128   /* longer keys are reported, never matched */
#define DEFAULT_FILE    "agenthub.yaml"

/* ---------------------------------------------------------------- schema */

typedef enum { T_STR, T_INT, T_SIZE, T_DBL, T_DUR, T_BOOL } ftype_t;

enum {
    F_SECRET = 1, /* never printed: dumped as "***" */
    F_URL = 2,    /* may carry user:password@ or ?password=: masked when printed */
};

typedef struct field {
    const char *path; /* relative to the schema's struct: "server.listen", "weight" */
    ftype_t type;
    size_t off;
    double min, max; /* inclusive range for numbers */
    const char *def; /* default, parsed like a value from the file */
    unsigned flags;
    const char *help;
} field_t;

#define GiB (1024.0 * 1024.0 * 1024.0)
#define MiB (1024.0 * 1024.0)

#define TOP(m) offsetof(ah_config_t, m)
static const field_t top_fields[] = {
    {"server.listen", T_STR, TOP(server.listen), 0, 0, "127.0.0.1:8080", 0,
     "address the API listens on: HOST:PORT, [IPv6]:PORT, or :PORT for all interfaces; "
     "port 0 = any free port"},
    {"server.workers", T_INT, TOP(server.workers), 0, 1024, "0", 0,
     "worker threads, one event loop each; 0 = one per CPU core"},
    {"server.max_body_bytes", T_SIZE, TOP(server.max_body_bytes), 1024, GiB, "1048576", 0,
     "largest request body; bigger requests get 413"},
    {"server.max_header_bytes", T_SIZE, TOP(server.max_header_bytes), 1024, MiB, "16384", 0,
     "largest request line + headers; bigger get 431"},
    {"server.max_headers", T_INT, TOP(server.max_headers), 1, 10000, "100", 0,
     "most header lines per request; more get 431"},
    {"server.max_connections", T_INT, TOP(server.max_connections), 1, 1000000, "10000", 0,
     "open connections per process; past it new ones get 503 + Retry-After"},
    {"server.header_timeout_s", T_DUR, TOP(server.header_timeout_s), 0.001, 3600, "10", 0,
     "time allowed to send the request headers (408 after)"},
    {"server.body_timeout_s", T_DUR, TOP(server.body_timeout_s), 0.001, 3600, "30", 0,
     "longest pause while sending the body (408 after)"},
    {"server.idle_timeout_s", T_DUR, TOP(server.idle_timeout_s), 0.001, 86400, "60", 0,
     "keep-alive connections idle this long are closed"},
    {"server.shutdown_grace_s", T_DUR, TOP(server.shutdown_grace_s), 0, 3600, "30", 0,
     "on SIGTERM, time given to in-flight requests and agent runs before they are cut (unfinished "
     "runs are handed to other replicas)"},
    {"server.metrics_listen", T_STR, TOP(server.metrics_listen), 0, 0, "", 0,
     "separate HOST:PORT for /metrics; empty = served on server.listen"},
    {"server.access_log", T_BOOL, TOP(server.access_log), 0, 0, "true", 0,
     "one JSON log line per request"},
    {"storage.url", T_STR, TOP(storage.url), 0, 0, "sqlite://./data/agenthub.db", F_URL,
     "sqlite://PATH (embedded) or postgres://USER:PASSWORD@HOST:PORT/DB"},
    {"storage.busy_timeout_ms", T_INT, TOP(storage.busy_timeout_ms), 0, 600000, "5000", 0,
     "SQLite: how long a writer waits for a lock"},
    {"storage.max_batch", T_INT, TOP(storage.max_batch), 1, 100000, "256", 0,
     "group commit: most writes per transaction"},
    {"storage.queue_max", T_INT, TOP(storage.queue_max), 1, 1000000, "10000", 0,
     "store jobs waiting per store thread before new work is refused (503 store_busy)"},
    {"redis.url", T_STR, TOP(redis.url), 0, 0, "", F_URL,
     "optional redis://[:PASSWORD@]HOST:PORT/DB for shared rate limits and cache"},
    {"auth.admin_key", T_STR, TOP(auth.admin_key), 0, 0, "", F_SECRET,
     "bootstrap admin API key (secret; prefer admin_key_file or AGENTHUB_AUTH_ADMIN_KEY)"},
    {"auth.key_cache_refresh_s", T_DUR, TOP(auth.key_cache_refresh_s), 0.01, 3600, "1", 0,
     "how often API keys are reloaded from the store"},
    {"auth.jwt.issuer", T_STR, TOP(auth.jwt.issuer), 0, 0, "", 0,
     "accepted JWT issuer (iss); empty = JWTs not accepted"},
    {"auth.jwt.jwks_url", T_STR, TOP(auth.jwt.jwks_url), 0, 0, "", F_URL,
     "https URL of the issuer's signing keys (JWKS)"},
    {"auth.jwt.audience", T_STR, TOP(auth.jwt.audience), 0, 0, "", 0,
     "required JWT audience (aud); empty = not checked"},
    {"log.level", T_STR, TOP(log.level), 0, 0, "info", 0, "debug, info, warn or error"},
    {"limits.default_rpm", T_INT, TOP(limits.default_rpm), 0, INT_MAX, "600", 0,
     "requests per minute per API key unless the key says otherwise; 0 = unlimited"},
    {"limits.default_tpm", T_INT, TOP(limits.default_tpm), 0, INT_MAX, "200000", 0,
     "tokens per minute per API key; 0 = unlimited"},
    {"limits.default_concurrency", T_INT, TOP(limits.default_concurrency), 0, 1000000, "32", 0,
     "requests in flight per API key; 0 = unlimited"},
    {"retention.runs_days", T_DUR, TOP(retention.runs_days), 0, 36500, "30", 0,
     "finished runs and their events older than this are deleted (small batches); 0 = keep"},
    {"retention.usage_days", T_DUR, TOP(retention.usage_days), 0, 36500, "400", 0,
     "usage rows older than this are deleted (small batches); 0 = keep"},
    {"webhooks.secret", T_STR, TOP(webhooks.secret), 0, 0, "", F_SECRET,
     "key that signs webhook deliveries (X-Agenthub-Signature); empty = unsigned"},
    {"webhooks.max_attempts", T_INT, TOP(webhooks.max_attempts), 1, 100, "8", 0,
     "delivery attempts (backoff 1 s, 2 s, 4 s ... capped at 1 h) before a delivery is dead"},
    {"webhooks.timeout_s", T_DUR, TOP(webhooks.timeout_s), 0.1, 600, "10", 0,
     "one delivery attempt, connect to last byte"},
    {"runs.lease_s", T_DUR, TOP(runs.lease_s), 1, 3600, "30", 0,
     "a replica's claim on a run; renewed by heartbeat, taken over by another replica after it "
     "expires"},
    {"runs.max_concurrent", T_INT, TOP(runs.max_concurrent), 1, 1000000, "1000", 0,
     "runs one replica executes at once; more wait queued"},
    {"runs.queue_ttl_s", T_DUR, TOP(runs.queue_ttl_s), 1, 31536000, "3600", 0,
     "queued runs not started within this time end as expired"},
    {"runs.claim_interval_s", T_DUR, TOP(runs.claim_interval_s), 0.05, 60, "0.5", 0,
     "how often a replica looks for queued or orphaned runs"},
    {"agents_dir", T_STR, TOP(agents_dir), 0, 0, "", 0,
     "directory of agent YAML files applied at start (like kubectl apply); empty = none"},
};
#define N_TOP (sizeof(top_fields) / sizeof(top_fields[0]))

#define PROV(m) offsetof(ah_config_provider_t, m)
static const field_t provider_fields[] = {
    {"name", T_STR, PROV(name), 0, 0, "", 0, "unique name models refer to ([A-Za-z0-9_.-])"},
    {"type", T_STR, PROV(type), 0, 0, "", 0, "mock, openai, azure or anthropic"},
    {"base_url", T_STR, PROV(base_url), 0, 0, "", F_URL,
     "API root; defaults: openai https://api.openai.com/v1, anthropic https://api.anthropic.com; "
     "required for azure (https://RESOURCE.openai.azure.com)"},
    {"api_key", T_STR, PROV(api_key), 0, 0, "", F_SECRET,
     "credential (secret; prefer api_key_file or ${ENV_VAR})"},
    {"api_version", T_STR, PROV(api_version), 0, 0, "", 0,
     "azure api-version (default 2024-10-21), anthropic-version (default 2023-06-01)"},
    {"connect_timeout_s", T_DUR, PROV(connect_timeout_s), 0.001, 600, "10", 0,
     "TCP + TLS connect timeout"},
    {"first_token_timeout_s", T_DUR, PROV(first_token_timeout_s), 0.001, 3600, "60", 0,
     "time to the first response byte / streamed token"},
    {"timeout_s", T_DUR, PROV(timeout_s), 0.001, 86400, "600", 0, "whole request timeout"},
    {"max_retries", T_INT, PROV(max_retries), 0, 10, "2", 0,
     "retries on 429/5xx/connect errors before falling back"},
    {"breaker_failures", T_INT, PROV(breaker_failures), 1, 1000, "5", 0,
     "consecutive failures that open a target's circuit breaker"},
    {"breaker_error_rate", T_DBL, PROV(breaker_error_rate), 0.01, 1, "0.5", 0,
     "error rate over the last 20 outcomes (at least 10) that opens the breaker"},
    {"breaker_open_s", T_DUR, PROV(breaker_open_s), 0.01, 3600, "30", 0,
     "time a breaker stays open before one probe request is let through"},
};
#define N_PROV (sizeof(provider_fields) / sizeof(provider_fields[0]))

#define MOD(m) offsetof(ah_config_model_t, m)
static const field_t model_fields[] = {
    {"name", T_STR, MOD(name), 0, 0, "", 0,
     "name clients send as \"model\" ([A-Za-z0-9_.:/-], not starting with agent:)"},
    {"rpm", T_INT, MOD(rpm), 0, INT_MAX, "0", 0,
     "requests per minute for this model; 0 = unlimited"},
    {"tpm", T_INT, MOD(tpm), 0, INT_MAX, "0", 0, "tokens per minute for this model; 0 = unlimited"},
    {"price.input_per_mtok", T_DBL, MOD(price.input_per_mtok), 0, 1e6, "0", 0,
     "USD per million input tokens"},
    {"price.output_per_mtok", T_DBL, MOD(price.output_per_mtok), 0, 1e6, "0", 0,
     "USD per million output tokens"},
    {"price.cached_input_per_mtok", T_DBL, MOD(price.cached_input_per_mtok), 0, 1e6, "0", 0,
     "USD per million cached input tokens; default = input_per_mtok"},
};
#define N_MODEL (sizeof(model_fields) / sizeof(model_fields[0]))

#define TGT(m) offsetof(ah_config_target_t, m)
static const field_t target_fields[] = {
    {"provider", T_STR, TGT(provider), 0, 0, "", 0, "name of a configured provider"},
    {"model", T_STR, TGT(model), 0, 0, "", 0,
     "the provider's model id (gpt-4o-mini, echo, claude-sonnet-4-5 ...)"},
    {"weight", T_INT, TGT(weight), 1, 1000000, "1", 0,
     "share of traffic among this model's targets"},
};
#define N_TARGET (sizeof(target_fields) / sizeof(target_fields[0]))

typedef struct schema {
    const char *prefix; /* for the reference table: "", "providers[].", ... */
    const field_t *fields;
    size_t n;
    const char *const *specials; /* keys handled by code at the schema's top level */
} schema_t;

static const char *const top_specials[] = {"providers", "models", NULL};
static const char *const model_specials[] = {"aliases", "targets", "fallbacks", NULL};

static const schema_t top_schema = {"", top_fields, N_TOP, top_specials};
static const schema_t provider_schema = {"providers[].", provider_fields, N_PROV, NULL};
static const schema_t model_schema = {"models[].", model_fields, N_MODEL, model_specials};
static const schema_t target_schema = {"models[].targets[].", target_fields, N_TARGET, NULL};

static const char *const provider_types[] = {"openai", "azure", "anthropic", "mock", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* --------------------------------------------------------- load context */

typedef struct src {
    int line;        /* line in the file; 0 = not from the file */
    const char *env; /* environment variable name, when from the environment */
} src_t;

/* What the file and the environment said about one field. */
typedef struct slot {
    const ah_yaml_node_t *val;  /* KEY: value */
    const ah_yaml_node_t *file; /* KEY_file: path */
    int file_line;
    bool set; /* the value did not come from the default */
    src_t src;
} slot_t;

typedef struct list_meta {
    const ah_yaml_node_t *node;
    int *lines; /* line of each item */
} list_meta_t;

typedef struct item_meta {
    bool bad; /* not a mapping: reported, not validated further */
    int line;
    slot_t *slots;
    /* models only */
    list_meta_t aliases, fallbacks;
    const ah_yaml_node_t *targets_node;
    struct item_meta *targets;
} item_meta_t;

typedef struct kept_err {
    int line; /* -1 for the environment, 0 for the whole file */
    size_t order;
    char *text;
} kept_err_t;

typedef struct ctx {
    const char *file; /* name used in messages */
    char **env;
    ah_buf_t *errs;
    int n_errs;
    kept_err_t *kept; /* errors so far, sorted by line when the load ends */
    size_t n_kept, cap_kept;
    bool oom;
    slot_t top[N_TOP];
    char env_names[N_TOP][96];
    char env_file_names[N_TOP][96];
    const ah_yaml_node_t *providers_node, *models_node;
    item_meta_t *prov_meta; /* one per provider when from the file */
    item_meta_t *model_meta;
} ctx_t;

/* Grows a malloc'd vector of elem-sized items to hold one more. */
static int vec_reserve(void **vec, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *nv = realloc(*vec, ncap * elem);
    if (!nv)
        return -ENOMEM;
    *vec = nv;
    *cap = ncap;
    return 0;
}

static void errf(ctx_t *x, src_t src, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void errf(ctx_t *x, src_t src, const char *path, const char *fmt, ...)
{
    x->n_errs++;
    if (!x->errs || x->n_kept >= MAX_KEPT)
        return;
    ah_buf_t b = AH_BUF_INIT;
    if (src.env)
        ah_buf_printf(&b, "%s: ", src.env);
    else if (src.line > 0)
        ah_buf_printf(&b, "%s:%d: ", x->file, src.line);
    else
        ah_buf_printf(&b, "%s: ", x->file);
    if (path && *path)
        ah_buf_printf(&b, "%s: ", path);
    va_list ap;
    va_start(ap, fmt);
    ah_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    ah_buf_putc(&b, '\n');
    if (vec_reserve((void **)&x->kept, &x->cap_kept, x->n_kept, sizeof(*x->kept)) || !b.data) {
        /* No room to sort it: write it now rather than lose it. */
        if (b.data)
            ah_buf_append(x->errs, b.data, b.len);
        ah_buf_free(&b);
        return;
    }
    x->kept[x->n_kept] = (kept_err_t){src.env ? -1 : src.line, x->n_kept, ah_buf_steal(&b)};
    x->n_kept++;
}

static int cmp_kept(const void *a, const void *b)
{
    const kept_err_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* Writes the collected errors in file order (environment and whole-file ones first). */
static void flush_errors(ctx_t *x)
{
    if (x->n_kept > 1)
        qsort(x->kept, x->n_kept, sizeof(*x->kept), cmp_kept);
    for (size_t i = 0; i < x->n_kept; i++) {
        if (i < MAX_ERRORS && x->kept[i].text)
            ah_buf_puts(x->errs, x->kept[i].text);
        free(x->kept[i].text);
    }
    if (x->n_errs > MAX_ERRORS)
        ah_buf_printf(x->errs, "%s: %d more errors not shown; fix the ones above first\n", x->file,
                      x->n_errs - MAX_ERRORS);
    free(x->kept);
    x->kept = NULL;
    x->n_kept = x->cap_kept = 0;
}

static void oom(ctx_t *x)
{
    if (!x->oom)
        errf(x, (src_t){0, NULL}, NULL, "out of memory");
    x->oom = true;
}

static src_t at(int line)
{
    return (src_t){line, NULL};
}

/* Where a field's value came from, or the fallback line when it is a default. */
static src_t slot_src(const slot_t *sl, int fallback_line)
{
    return sl && sl->set ? sl->src : at(fallback_line);
}

/* A value as shown in a message: quoted, cut at 60 bytes, control bytes as '?'. */
static const char *shown(char out[80], const char *s)
{
    size_t o = 0, n = strlen(s);
    out[o++] = '"';
    for (size_t i = 0; i < n && o < 64; i++)
        out[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (o >= 64 && n > 63) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static const char *env_get(const ctx_t *x, const char *name, size_t nlen)
{
    char **env = x->env ? x->env : environ;
    if (!env)
        return NULL;
    for (char **e = env; *e; e++)
        if (strncmp(*e, name, nlen) == 0 && (*e)[nlen] == '=')
            return *e + nlen + 1;
    return NULL;
}

static size_t count_list(const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    return n;
}

static void join_list(char *out, size_t outsz, const char *const *list, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + o, outsz - o, "%s%s", i ? ", " : "", list[i]);
        if (w < 0 || (size_t)w >= outsz - o) {
            if (outsz > 4)
                memcpy(out + outsz - 4, "...", 4);
            return;
        }
        o += (size_t)w;
    }
}

/* --------------------------------------------------------- value parsing */

static void fmt_num(char *out, size_t n, double v)
{
    /* Shortest text that reads back as the same double. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void fmt_size(char *out, size_t n, double v)
{
    if (v >= GiB && fmod(v, GiB) == 0)
        snprintf(out, n, "%.0fGiB", v / GiB);
    else if (v >= MiB && fmod(v, MiB) == 0)
        snprintf(out, n, "%.0fMiB", v / MiB);
    else if (v >= 1024 && fmod(v, 1024) == 0)
        snprintf(out, n, "%.0fKiB", v / 1024);
    else
        snprintf(out, n, "%.0f", v);
}

/* "an integer from 0 to 1024" ...: what a field accepts, for messages and the reference. */
static void describe(const field_t *f, char *out, size_t n)
{
    char lo[40], hi[40];
    switch (f->type) {
    case T_STR:
        snprintf(out, n, "a string");
        break;
    case T_INT:
        snprintf(out, n, "an integer from %.0f to %.0f", f->min, f->max);
        break;
    case T_SIZE:
        fmt_size(lo, sizeof(lo), f->min);
        fmt_size(hi, sizeof(hi), f->max);
        snprintf(out, n, "a size from %s to %s (bytes, or with k/M/G, KiB/MiB/GiB)", lo, hi);
        break;
    case T_DBL:
        fmt_num(lo, sizeof(lo), f->min);
        fmt_num(hi, sizeof(hi), f->max);
        snprintf(out, n, "a number from %s to %s", lo, hi);
        break;
    case T_DUR:
        fmt_num(lo, sizeof(lo), f->min);
        fmt_num(hi, sizeof(hi), f->max);
        snprintf(out, n, "a duration from %s to %s seconds (like 30, 2.5, 500ms, 5m)", lo, hi);
        break;
    case T_BOOL:
        snprintf(out, n, "true or false");
        break;
    }
}

static int parse_int(const char *s, long long *out)
{
    const char *p = s + (*s == '+' || *s == '-');
    if (!isdigit((unsigned char)*p))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, double *out)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    static const struct {
        const char *sfx;
        double mult;
    } units[] = {{"", 1},     {"b", 1},     {"k", 1024}, {"kb", 1024}, {"kib", 1024}, {"m", MiB},
                 {"mb", MiB}, {"mib", MiB}, {"g", GiB},  {"gb", GiB},  {"gib", GiB}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].sfx) == 0) {
            *out = (double)v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

static int parse_double(const char *s, double *out, bool duration)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v))
        return -1;
    if (*end && duration) {
        if (strcmp(end, "ms") == 0)
            v /= 1000;
        else if (strcmp(end, "s") == 0)
            ;
        else if (strcmp(end, "m") == 0)
            v *= 60;
        else if (strcmp(end, "h") == 0)
            v *= 3600;
        else
            return -1;
    } else if (*end) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/*
 * Parses text into the field; on a bad value reports it at src under path.
 * Returns 0, -EINVAL (reported) or -ENOMEM.
 */
static int apply_text(ctx_t *x, const field_t *f, void *base, const char *text, size_t len,
                      src_t src, const char *path)
{
    char *p = (char *)base + f->off;
    char want[160], got[80];
    if (memchr(text, '\0', len)) {
        errf(x, src, path, "contains a NUL byte");
        return -EINVAL;
    }
    if (f->type == T_STR) {
        char *s = strndup(text, len);
        if (!s)
            return -ENOMEM;
        free(*(char **)p);
        *(char **)p = s;
        return 0;
    }
    /* Numbers and booleans: text is NUL-terminated by every caller. */
    long long iv;
    double dv;
    bool bv;
    int bad = 0;
    switch (f->type) {
    case T_INT:
        bad = parse_int(text, &iv) || iv < (long long)f->min || iv > (long long)f->max;
        if (!bad)
            memcpy(p, &(int){(int)iv}, sizeof(int));
        break;
    case T_SIZE:
        bad = parse_size(text, &dv) || dv < f->min || dv > f->max;
        if (!bad)
            memcpy(p, &(size_t){(size_t)dv}, sizeof(size_t));
        break;
    case T_DBL:
    case T_DUR:
        bad = parse_double(text, &dv, f->type == T_DUR) || dv < f->min || dv > f->max;
        if (!bad)
            memcpy(p, &dv, sizeof(dv));
        break;
    case T_BOOL:
        bad = parse_bool(text, &bv);
        if (!bad)
            memcpy(p, &bv, sizeof(bv));
        break;
    case T_STR:
        break;
    }
    if (bad) {
        describe(f, want, sizeof(want));
        errf(x, src, path, "expected %s, got %s", want, shown(got, text));
        return -EINVAL;
    }
    return 0;
}

static int apply_defaults(ctx_t *x, const schema_t *s, void *base)
{
    for (size_t i = 0; i < s->n; i++) {
        int rc = apply_text(x, &s->fields[i], base, s->fields[i].def, strlen(s->fields[i].def),
                            at(0), s->fields[i].path);
        if (rc)
            return rc;
    }
    return 0;
}

/* --------------------------------------------------------- ${VAR}, files */

/*
 * Expands ${NAME} and ${NAME:-default} (default when unset or empty) into
 * out; "$${" is a literal "${". 0, or -EINVAL after reporting.
 */
static int expand(ctx_t *x, const char *s, size_t len, src_t src, const char *path, ah_buf_t *out)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] != '$') {
            size_t j = i;
            while (j < len && s[j] != '$')
                j++;
            if (ah_buf_append(out, s + i, j - i))
                goto nomem;
            i = j;
            continue;
        }
        if (i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
            if (ah_buf_puts(out, "${"))
                goto nomem;
            i += 3;
            continue;
        }
        if (i + 1 >= len || s[i + 1] != '{') {
            if (ah_buf_putc(out, '$'))
                goto nomem;
            i++;
            continue;
        }
        size_t name = i + 2, j = name;
        while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_'))
            j++;
        size_t nlen = j - name;
        bool has_def = j + 1 < len && s[j] == ':' && s[j + 1] == '-';
        const char *def = NULL;
        size_t dlen = 0;
        if (has_def) {
            def = s + j + 2;
            const char *close = memchr(def, '}', len - (j + 2));
            if (close) {
                dlen = (size_t)(close - def);
                j = (size_t)(close - s);
            } else {
                j = len;
            }
        }
        if (nlen == 0 || isdigit((unsigned char)s[name]) || nlen > 255 || j >= len || s[j] != '}') {
            errf(x, src, path,
                 "malformed ${...} (write ${NAME} or ${NAME:-default}; $${ for a literal \"${\")");
            return -EINVAL;
        }
        char var[256];
        memcpy(var, s + name, nlen);
        var[nlen] = '\0';
        const char *v = env_get(x, var, nlen);
        if (has_def && (!v || !*v)) {
            if (ah_buf_append(out, def, dlen))
                goto nomem;
        } else if (!v) {
            errf(x, src, path,
                 "environment variable %s is not set (export it, or give a default: "
                 "${%s:-value})",
                 var, var);
            return -EINVAL;
        } else if (ah_buf_puts(out, v)) {
            goto nomem;
        }
        i = j + 1;
    }
    /* Makes out a C string even when nothing was appended. */
    if (ah_buf_append(out, "", 0) == 0)
        return 0;
nomem:
    oom(x);
    return -ENOMEM;
}

/* Reads a secret file (regular file, at most SECRET_FILE_MAX), one trailing newline cut. */
static int read_secret(ctx_t *x, const char *fpath, src_t src, const char *path, ah_buf_t *out)
{
    char shown_path[80];
    /* O_NONBLOCK: a FIFO named by mistake must not hang the load. */
    int fd = open(fpath, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        errf(x, src, path, "cannot read %s: %s", shown(shown_path, fpath), strerror(errno));
        return -EINVAL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errf(x, src, path, "cannot read %s: not a regular file", shown(shown_path, fpath));
        return -EINVAL;
    }
    int rc = 0;
    char chunk[4096];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errf(x, src, path, "cannot read %s: %s", shown(shown_path, fpath), strerror(errno));
            rc = -EINVAL;
            break;
        }
        if (n == 0)
            break;
        if (out->len + (size_t)n > SECRET_FILE_MAX) {
            errf(x, src, path, "%s is larger than %d bytes (is it the right file?)",
                 shown(shown_path, fpath), SECRET_FILE_MAX);
            rc = -EINVAL;
            break;
        }
        if (ah_buf_append(out, chunk, (size_t)n)) {
            oom(x);
            rc = -ENOMEM;
            break;
        }
    }
    close(fd);
    if (rc)
        return rc;
    if (out->len && out->data[out->len - 1] == '\n') {
        out->len--;
        if (out->len && out->data[out->len - 1] == '\r')
            out->len--;
    }
    if (ah_buf_append(out, "", 0)) {
        oom(x);
        return -ENOMEM;
    }
    out->data[out->len] = '\0';
    return 0;
}

/* --------------------------------------------------------- YAML walk */

static int field_find(const schema_t *s, const char *path)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->fields[i].path, path) == 0)
            return (int)i;
    return -1;
}

/* True when some field lives below prefix ("server" for "server.listen"). */
static bool is_section(const schema_t *s, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < s->n; i++)
        if (strncmp(s->fields[i].path, prefix, n) == 0 && s->fields[i].path[n] == '.')
            return true;
    return false;
}

static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Reports an unknown key with the closest known key at the same level. */
static void unknown_key(ctx_t *x, const schema_t *s, const char *rel, const char *key, src_t src,
                        const char *path)
{
    const char *known[64], *cands[128];
    char names[64][64], file_names[64][72];
    size_t nk = 0, nc = 0, nf = 0;
    size_t rl = strlen(rel);
    for (size_t i = 0; i < s->n && nk < 64; i++) {
        const char *p = s->fields[i].path;
        if (rl && (strncmp(p, rel, rl) != 0 || p[rl] != '.'))
            continue;
        const char *child = p + (rl ? rl + 1 : 0);
        size_t clen = strcspn(child, ".");
        bool dup = false;
        for (size_t k = 0; k < nk; k++)
            if (strlen(known[k]) == clen && strncmp(known[k], child, clen) == 0)
                dup = true;
        if (dup)
            continue;
        snprintf(names[nk], sizeof(names[nk]), "%.*s", (int)clen, child);
        known[nk] = names[nk];
        cands[nc++] = names[nk];
        if (!child[clen] && s->fields[i].type == T_STR && nf < 64) {
            snprintf(file_names[nf], sizeof(file_names[nf]), "%s_file", names[nk]);
            cands[nc++] = file_names[nf++];
        }
        nk++;
    }
    for (size_t i = 0; !rl && s->specials && s->specials[i] && nk < 64; i++) {
        known[nk++] = s->specials[i];
        cands[nc++] = s->specials[i];
    }
    const char *best = ah_suggest(key, cands, nc);
    if (best) {
        errf(x, src, path, "unknown key (did you mean \"%s\"?)", best);
    } else {
        char list[512];
        join_list(list, sizeof(list), known, nk);
        errf(x, src, path, "unknown key (known keys here: %s)", list);
    }
}

typedef void (*special_fn)(ctx_t *x, const ah_yaml_pair_t *pr, const char *path, void *ud);

static void walk(ctx_t *x, const schema_t *s, slot_t *slots, const ah_yaml_node_t *map,
                 const char *rel, const char *disp, special_fn special, void *ud)
{
    for (size_t i = 0; i < map->n; i++) {
        const ah_yaml_pair_t *pr = &map->pairs[i];
        const ah_yaml_node_t *v = pr->value;
        char key[KEY_MAX + 1], cand[2 * KEY_MAX], path[512], want[160], kshown[80];
        src_t ksrc = at(pr->key_line);
        bool key_ok = pr->key_len <= KEY_MAX && strlen(pr->key) == pr->key_len;
        snprintf(key, sizeof(key), "%s", key_ok ? pr->key : "?");
        snprintf(cand, sizeof(cand), "%s%s%s", rel, *rel ? "." : "", key);
        snprintf(path, sizeof(path), "%s%s%s", disp, *disp ? "." : "", key);
        if (!key_ok) {
            snprintf(path, sizeof(path), "%s%s%s", disp, *disp ? "." : "", shown(kshown, pr->key));
            errf(x, ksrc, path, "unknown key");
            continue;
        }
        int fi = field_find(s, cand);
        if (fi >= 0) {
            if (v->kind != AH_YAML_SCALAR) {
                describe(&s->fields[fi], want, sizeof(want));
                errf(x, at(v->line), path, "expected %s, got a %s", want,
                     ah_yaml_kind_name(v->kind));
                continue;
            }
            slots[fi].val = v;
            continue;
        }
        size_t kl = strlen(cand);
        if (kl > 5 && strcmp(cand + kl - 5, "_file") == 0) {
            cand[kl - 5] = '\0';
            fi = field_find(s, cand);
            if (fi >= 0 && s->fields[fi].type == T_STR) {
                if (v->kind != AH_YAML_SCALAR) {
                    errf(x, at(v->line), path, "expected a file path, got a %s",
                         ah_yaml_kind_name(v->kind));
                    continue;
                }
                slots[fi].file = v;
                slots[fi].file_line = v->line;
                continue;
            }
            cand[kl - 5] = '_';
        }
        if (is_section(s, cand)) {
            if (v->kind == AH_YAML_MAP)
                walk(x, s, slots, v, cand, path, special, ud);
            else if (!ah_yaml_is_null(v))
                errf(x, at(v->line), path, "expected a mapping of settings (%s: { ... }), got a %s",
                     key, ah_yaml_kind_name(v->kind));
            continue;
        }
        if (!*rel && in_list(s->specials, key)) {
            special(x, pr, path, ud);
            continue;
        }
        unknown_key(x, s, rel, key, ksrc, path);
    }
}

/* AGENTHUB_ + path upper-cased with dots as underscores. */
static void env_name_of(char *out, size_t n, const char *path, const char *suffix)
{
    int w = snprintf(out, n, "AGENTHUB_%s%s", path, suffix);
    if (w < 0)
        return;
    for (char *p = out + 9; *p; p++)
        *p = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
}

/*
 * Turns what the file (and, for the top level, the environment) said about
 * each field into values in base. The environment wins over the file; in one
 * layer, giving both KEY and KEY_file is an error.
 */
static void resolve(ctx_t *x, const schema_t *s, slot_t *slots, void *base, const char *disp,
                    bool use_env)
{
    for (size_t i = 0; i < s->n; i++) {
        const field_t *f = &s->fields[i];
        slot_t *sl = &slots[i];
        char path[512], fpath[520];
        snprintf(path, sizeof(path), "%s%s%s", disp, *disp ? "." : "", f->path);
        snprintf(fpath, sizeof(fpath), "%s_file", path);
        ah_buf_t text = AH_BUF_INIT;
        src_t src = {0, NULL};
        int rc = 0;
        const char *ev = NULL, *evf = NULL;
        if (use_env) {
            env_name_of(x->env_names[i], sizeof(x->env_names[i]), f->path, "");
            env_name_of(x->env_file_names[i], sizeof(x->env_file_names[i]), f->path, "_FILE");
            ev = env_get(x, x->env_names[i], strlen(x->env_names[i]));
            if (f->type == T_STR)
                evf = env_get(x, x->env_file_names[i], strlen(x->env_file_names[i]));
        }
        if (ev && evf) {
            errf(x, (src_t){0, x->env_names[i]}, path, "both %s and %s are set; keep one",
                 x->env_names[i], x->env_file_names[i]);
            continue;
        } else if (ev) {
            src = (src_t){0, x->env_names[i]};
            rc = ah_buf_puts(&text, ev) ? -ENOMEM : 0;
        } else if (evf) {
            src = (src_t){0, x->env_file_names[i]};
            rc = read_secret(x, evf, src, path, &text);
        } else if (sl->val && sl->file) {
            char k[128];
            const char *dot = strrchr(f->path, '.');
            snprintf(k, sizeof(k), "%s", dot ? dot + 1 : f->path);
            errf(x, at(sl->file_line), fpath, "both %s and %s_file are set; keep one", k, k);
            continue;
        } else if (sl->val) {
            if (ah_yaml_is_null(sl->val))
                continue;
            src = at(sl->val->line);
            rc = expand(x, sl->val->str, sl->val->len, src, path, &text);
        } else if (sl->file) {
            if (ah_yaml_is_null(sl->file))
                continue;
            src = at(sl->file_line);
            ah_buf_t fname = AH_BUF_INIT;
            rc = expand(x, sl->file->str, sl->file->len, src, fpath, &fname);
            if (!rc && memchr(fname.data, '\0', fname.len)) {
                errf(x, src, fpath, "contains a NUL byte");
                rc = -EINVAL;
            }
            if (!rc)
                rc = read_secret(x, fname.data, src, fpath, &text);
            ah_buf_free(&fname);
        } else {
            continue;
        }
        if (rc == -ENOMEM)
            oom(x);
        if (!rc)
            rc = apply_text(x, f, base, text.data ? text.data : "", text.len, src, path);
        if (rc == -ENOMEM)
            oom(x);
        ah_buf_free(&text);
        if (!rc) {
            sl->set = true;
            sl->src = src;
        }
    }
}

/* --------------------------------------------------------- lists */

static void top_special(ctx_t *x, const ah_yaml_pair_t *pr, const char *path, void *ud)
{
    (void)path;
    (void)ud;
    if (strcmp(pr->key, "providers") == 0)
        x->providers_node = pr->value;
    else
        x->models_node = pr->value;
}

static void model_special(ctx_t *x, const ah_yaml_pair_t *pr, const char *path, void *ud)
{
    item_meta_t *m = ud;
    (void)x;
    (void)path;
    if (strcmp(pr->key, "aliases") == 0)
        m->aliases.node = pr->value;
    else if (strcmp(pr->key, "fallbacks") == 0)
        m->fallbacks.node = pr->value;
    else
        m->targets_node = pr->value;
}

/* Checks that node is a sequence of at most max items; reports otherwise. */
static bool check_seq(ctx_t *x, const ah_yaml_node_t *node, const char *path, size_t max,
                      const char *example)
{
    if (node->kind != AH_YAML_SEQ) {
        errf(x, at(node->line), path, "expected a list like %s, got a %s", example,
             ah_yaml_kind_name(node->kind));
        return false;
    }
    if (node->n > max) {
        errf(x, at(node->line), path, "%zu entries; at most %zu are allowed", node->n, max);
        return false;
    }
    return true;
}

/* A list of plain strings (aliases, fallbacks), ${VAR}-expanded. */
static void load_str_list(ctx_t *x, list_meta_t *lm, const char *path, size_t max, char ***out,
                          size_t *n_out)
{
    if (!lm->node || ah_yaml_is_null(lm->node))
        return;
    if (!check_seq(x, lm->node, path, max, "[ a, b ]"))
        return;
    size_t n = lm->node->n;
    if (n == 0)
        return;
    *out = calloc(n, sizeof(char *));
    lm->lines = calloc(n, sizeof(int));
    if (!*out || !lm->lines) {
        oom(x);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const ah_yaml_node_t *it = lm->node->items[i];
        char ipath[600];
        snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
        lm->lines[*n_out] = it->line;
        if (it->kind != AH_YAML_SCALAR || ah_yaml_is_null(it)) {
            errf(x, at(it->line), ipath, "expected a name, got %s",
                 it->kind == AH_YAML_SCALAR ? "nothing" : ah_yaml_kind_name(it->kind));
            continue;
        }
        ah_buf_t text = AH_BUF_INIT;
        int rc = expand(x, it->str, it->len, at(it->line), ipath, &text);
        if (!rc && memchr(text.data, '\0', text.len)) {
            errf(x, at(it->line), ipath, "contains a NUL byte");
            rc = -EINVAL;
        }
        if (!rc) {
            (*out)[*n_out] = ah_buf_steal(&text);
            if (!(*out)[*n_out])
                oom(x);
            else
                (*n_out)++;
        }
        ah_buf_free(&text);
    }
}

/*
 * One mapping of a list (a provider, a model, a model's target): the schema's
 * defaults, then its fields from the document. Something else than a mapping
 * is reported with an example (like) and marks the item bad. Returns 0, 1 for
 * a bad item (reported), -1 out of memory (reported).
 */
static int load_item(ctx_t *x, const schema_t *s, const ah_yaml_node_t *it, void *obj,
                     item_meta_t *meta, const char *path, const char *like, special_fn special)
{
    meta->line = it->line;
    if (apply_defaults(x, s, obj)) {
        oom(x);
        return -1;
    }
    if (it->kind != AH_YAML_MAP) {
        errf(x, at(it->line), path, "expected a mapping like %s, got a %s", like,
             ah_yaml_kind_name(it->kind));
        meta->bad = true;
        return 1;
    }
    meta->slots = calloc(s->n, sizeof(slot_t));
    if (!meta->slots) {
        oom(x);
        return -1;
    }
    walk(x, s, meta->slots, it, "", path, special, meta);
    resolve(x, s, meta->slots, obj, path, false);
    return 0;
}

static void load_targets(ctx_t *x, ah_config_model_t *m, item_meta_t *mm, const char *disp)
{
    char path[600];
    snprintf(path, sizeof(path), "%s.targets", disp);
    const ah_yaml_node_t *node = mm->targets_node;
    if (!node || ah_yaml_is_null(node))
        return;
    if (!check_seq(x, node, path, AH_CONFIG_MAX_TARGETS, "[ { provider: local, model: echo } ]"))
        return;
    if (node->n == 0)
        return;
    m->targets = calloc(node->n, sizeof(*m->targets));
    mm->targets = calloc(node->n, sizeof(*mm->targets));
    if (!m->targets || !mm->targets) {
        oom(x);
        return;
    }
    for (size_t i = 0; i < node->n; i++) {
        const ah_yaml_node_t *it = node->items[i];
        ah_config_target_t *t = &m->targets[i];
        m->n_targets++;
        char ipath[640];
        snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
        if (load_item(x, &target_schema, it, t, &mm->targets[i], ipath,
                      "{ provider: local, model: echo }", NULL) < 0)
            return;
    }
}

static void load_providers(ctx_t *x, ah_config_t *c)
{
    const ah_yaml_node_t *node = x->providers_node;
    if (!check_seq(x, node, "providers", AH_CONFIG_MAX_PROVIDERS,
                   "[ { name: local, type: mock } ]"))
        return;
    if (node->n == 0)
        return;
    c->providers = calloc(node->n, sizeof(*c->providers));
    x->prov_meta = calloc(node->n, sizeof(*x->prov_meta));
    if (!c->providers || !x->prov_meta) {
        oom(x);
        return;
    }
    for (size_t i = 0; i < node->n; i++) {
        const ah_yaml_node_t *it = node->items[i];
        ah_config_provider_t *p = &c->providers[i];
        c->n_providers++;
        p->line = it->line;
        char path[64];
        snprintf(path, sizeof(path), "providers[%zu]", i);
        if (load_item(x, &provider_schema, it, p, &x->prov_meta[i], path,
                      "{ name: local, type: mock }", NULL) < 0)
            return;
    }
}

static void load_models(ctx_t *x, ah_config_t *c)
{
    const ah_yaml_node_t *node = x->models_node;
    if (!check_seq(x, node, "models", AH_CONFIG_MAX_MODELS,
                   "[ { name: fast, targets: [ { provider: local, model: echo } ] } ]"))
        return;
    if (node->n == 0)
        return;
    c->models = calloc(node->n, sizeof(*c->models));
    x->model_meta = calloc(node->n, sizeof(*x->model_meta));
    if (!c->models || !x->model_meta) {
        oom(x);
        return;
    }
    for (size_t i = 0; i < node->n; i++) {
        const ah_yaml_node_t *it = node->items[i];
        ah_config_model_t *m = &c->models[i];
        item_meta_t *mm = &x->model_meta[i];
        c->n_models++;
        m->line = it->line;
        char path[64], sub[96];
        snprintf(path, sizeof(path), "models[%zu]", i);
        int rc = load_item(x, &model_schema, it, m, mm, path, "{ name: fast, targets: [ ... ] }",
                           model_special);
        if (rc < 0)
            return;
        if (rc > 0)
            continue;
        int ci = field_find(&model_schema, "price.cached_input_per_mtok");
        if (!mm->slots[ci].set)
            m->price.cached_input_per_mtok = m->price.input_per_mtok;
        snprintf(sub, sizeof(sub), "%s.aliases", path);
        load_str_list(x, &mm->aliases, sub, AH_CONFIG_MAX_ALIASES, &m->aliases, &m->n_aliases);
        snprintf(sub, sizeof(sub), "%s.fallbacks", path);
        load_str_list(x, &mm->fallbacks, sub, AH_CONFIG_MAX_FALLBACKS, &m->fallbacks,
                      &m->n_fallbacks);
        load_targets(x, m, mm, path);
    }
}

static int default_lists(ah_config_t *c, bool providers, bool models)
{
    if (providers) {
        c->providers = calloc(1, sizeof(*c->providers));
        if (!c->providers)
            return -ENOMEM;
        c->n_providers = 1;
        ah_config_provider_t *p = &c->providers[0];
        ctx_t x = {.file = "defaults"};
        if (apply_defaults(&x, &provider_schema, p))
            return -ENOMEM;
        free(p->name);
        free(p->type);
        p->name = strdup("local");
        p->type = strdup("mock");
        if (!p->name || !p->type)
            return -ENOMEM;
    }
    if (models) {
        c->models = calloc(1, sizeof(*c->models));
        if (!c->models)
            return -ENOMEM;
        c->n_models = 1;
        ah_config_model_t *m = &c->models[0];
        ctx_t x = {.file = "defaults"};
        if (apply_defaults(&x, &model_schema, m))
            return -ENOMEM;
        free(m->name);
        m->name = strdup("mock");
        m->targets = calloc(1, sizeof(*m->targets));
        if (!m->name || !m->targets)
            return -ENOMEM;
        m->n_targets = 1;
        if (apply_defaults(&x, &target_schema, &m->targets[0]))
            return -ENOMEM;
        free(m->targets[0].provider);
        free(m->targets[0].model);
        m->targets[0].provider = strdup("local");
        m->targets[0].model = strdup("echo");
        if (!m->targets[0].provider || !m->targets[0].model)
            return -ENOMEM;
    }
    return 0;
}

/* --------------------------------------------------------- validation */

/* NULL when s is HOST:PORT, [IPV6]:PORT or :PORT; else what is wrong. */
static const char *listen_problem(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return "expected [IPV6]:PORT like [::1]:8080";
        char host[64];
        size_t hl = (size_t)(close - s - 1);
        if (hl >= sizeof(host))
            return "invalid IPv6 address";
        memcpy(host, s + 1, hl);
        host[hl] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return "invalid IPv6 address in brackets";
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return "expected HOST:PORT like 127.0.0.1:8080, [::1]:8080 or :8080";
        if (memchr(s, ':', (size_t)(colon - s)))
            return "put IPv6 addresses in brackets, like [::1]:8080";
        for (const char *p = s; p < colon; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
                return "invalid host name (letters, digits, '.', '-')";
    }
    long long port;
    if (parse_int(colon + 1, &port) || colon[1] == '+' || colon[1] == '-' || port < 0 ||
        port > 65535)
        return "port must be a number from 0 to 65535 (0 = any free port)";
    return NULL;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

static bool is_http_url(const char *s)
{
    return (has_prefix(s, "http://") && s[7]) || (has_prefix(s, "https://") && s[8]);
}

/*
 * Copies a URL with its password (user:PASSWORD@ and password=/secret=/
 * token=/key= query values) replaced by ***. Used for dumps and messages.
 */
static int mask_url(ah_buf_t *out, const char *url)
{
    const char *scheme = strstr(url, "://");
    if (!scheme)
        return ah_buf_puts(out, url);
    const char *auth = scheme + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at_sign = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at_sign = p;
    int rc = 0;
    const char *rest = auth;
    if (at_sign) {
        const char *colon = memchr(auth, ':', (size_t)(at_sign - auth));
        if (colon) {
            rc |= ah_buf_append(out, url, (size_t)(colon + 1 - url));
            rc |= ah_buf_puts(out, "***");
            rest = at_sign;
        }
    }
    if (rest == auth)
        rc |= ah_buf_append(out, url, (size_t)(auth - url));
    /* Query parameters that hold credentials. */
    const char *q = strchr(rest, '?');
    if (!q) {
        rc |= ah_buf_puts(out, rest);
        return rc ? -ENOMEM : 0;
    }
    rc |= ah_buf_append(out, rest, (size_t)(q + 1 - rest));
    const char *p = q + 1;
    while (*p) {
        size_t plen = strcspn(p, "&#");
        const char *eq = memchr(p, '=', plen);
        bool secret = false;
        if (eq) {
            char name[64];
            size_t nl = (size_t)(eq - p) < sizeof(name) - 1 ? (size_t)(eq - p) : sizeof(name) - 1;
            for (size_t i = 0; i < nl; i++)
                name[i] = (char)tolower((unsigned char)p[i]);
            name[nl] = '\0';
            secret = strstr(name, "pass") || strstr(name, "secret") || strstr(name, "token") ||
                     strstr(name, "key");
        }
        if (secret) {
            rc |= ah_buf_append(out, p, (size_t)(eq + 1 - p));
            rc |= ah_buf_puts(out, "***");
        } else {
            rc |= ah_buf_append(out, p, plen);
        }
        p += plen;
        if (*p == '&') {
            rc |= ah_buf_putc(out, '&');
            p++;
        } else if (*p == '#') {
            rc |= ah_buf_puts(out, p);
            break;
        }
    }
    return rc ? -ENOMEM : 0;
}

/* A URL for a message: masked, then quoted and cut like shown(). */
static const char *shown_url(char out[80], const char *url)
{
    ah_buf_t b = AH_BUF_INIT;
    if (mask_url(&b, url) || !b.data) {
        ah_buf_free(&b);
        return shown(out, "");
    }
    shown(out, b.data);
    ah_buf_free(&b);
    return out;
}

static bool valid_name(const char *s, const char *extra)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-' &&
            !strchr(extra, *p))
            return false;
    return strlen(s) <= 128;
}

static src_t top_src(const ctx_t *x, const char *path)
{
    int i = field_find(&top_schema, path);
    return i >= 0 ? slot_src(&x->top[i], 0) : at(0);
}

static void validate_top(ctx_t *x, ah_config_t *c)
{
    const char *why;
    char got[80];
    if ((why = listen_problem(c->server.listen)))
        errf(x, top_src(x, "server.listen"), "server.listen", "%s, got %s", why,
             shown(got, c->server.listen));
    if (*c->server.metrics_listen) {
        if ((why = listen_problem(c->server.metrics_listen)))
            errf(x, top_src(x, "server.metrics_listen"), "server.metrics_listen", "%s, got %s", why,
                 shown(got, c->server.metrics_listen));
        else if (strcmp(c->server.metrics_listen, c->server.listen) == 0)
            errf(x, top_src(x, "server.metrics_listen"), "server.metrics_listen",
                 "same address as server.listen (leave it empty to serve /metrics there)");
    }
    const char *u = c->storage.url;
    bool sqlite = has_prefix(u, "sqlite://");
    if (!(sqlite && u[9]) && !has_prefix(u, "postgres://") && !has_prefix(u, "postgresql://"))
        errf(x, top_src(x, "storage.url"), "storage.url",
             "unsupported URL %s (use sqlite://PATH, e.g. sqlite://./data/agenthub.db, or "
             "postgres://USER@HOST/DB)",
             shown_url(got, u));
    if (*c->redis.url && !has_prefix(c->redis.url, "redis://"))
        errf(x, top_src(x, "redis.url"), "redis.url",
             "unsupported URL %s (use redis://HOST:PORT/DB, or leave it empty)",
             shown_url(got, c->redis.url));
    for (const char *p = c->auth.admin_key; *p; p++) {
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
            errf(x, top_src(x, "auth.admin_key"), "auth.admin_key",
                 "contains whitespace or control characters (a stray newline in the secret "
                 "file?)");
            break;
        }
    }
    if (*c->auth.jwt.jwks_url && !is_http_url(c->auth.jwt.jwks_url))
        errf(x, top_src(x, "auth.jwt.jwks_url"), "auth.jwt.jwks_url",
             "expected an http(s):// URL, got %s", shown_url(got, c->auth.jwt.jwks_url));
    if ((*c->auth.jwt.issuer || *c->auth.jwt.audience) && !*c->auth.jwt.jwks_url)
        errf(x, top_src(x, *c->auth.jwt.issuer ? "auth.jwt.issuer" : "auth.jwt.audience"),
             "auth.jwt.jwks_url",
             "required when auth.jwt.issuer or audience is set (the URL of the issuer's JWKS)");
    if (!in_list(log_levels, c->log.level)) {
        const char *best = ah_suggest(c->log.level, log_levels, count_list(log_levels));
        char hint[64] = "";
        if (best)
            snprintf(hint, sizeof(hint), "did you mean \"%s\"? ", best);
        errf(x, top_src(x, "log.level"), "log.level",
             "unknown level %s (%sknown: debug, info, "
             "warn, error)",
             shown(got, c->log.level), hint);
    }
    if (*c->agents_dir) {
        struct stat st;
        if (stat(c->agents_dir, &st) != 0)
            errf(x, top_src(x, "agents_dir"), "agents_dir", "cannot open %s: %s",
                 shown(got, c->agents_dir), strerror(errno));
        else if (!S_ISDIR(st.st_mode))
            errf(x, top_src(x, "agents_dir"), "agents_dir", "%s is not a directory",
                 shown(got, c->agents_dir));
    }
}

/* A name and where it was defined, sortable; for duplicate checks and lookups. */
typedef struct name_ref {
    const char *name;
    size_t idx;   /* provider or model index */
    size_t alias; /* 0 = the name itself, k = aliases[k-1] */
    int line;
} name_ref_t;

static int cmp_name_ref(const void *a, const void *b)
{
    const name_ref_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->idx != y->idx)
        return x->idx < y->idx ? -1 : 1;
    return x->alias < y->alias ? -1 : (x->alias > y->alias);
}

static const name_ref_t *name_lookup(const name_ref_t *refs, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(refs[mid].name, name);
        if (c == 0) {
            while (mid > 0 && strcmp(refs[mid - 1].name, name) == 0)
                mid--;
            return &refs[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static src_t item_src(const item_meta_t *meta, size_t i, const schema_t *s, const char *field,
                      int fallback)
{
    if (!meta || !meta[i].slots)
        return at(fallback);
    return slot_src(&meta[i].slots[field_find(s, field)], meta[i].line);
}

static void validate_providers(ctx_t *x, ah_config_t *c, name_ref_t **refs_out, size_t *n_out)
{
    char got[80], path[96];
    name_ref_t *refs = calloc(c->n_providers + 1, sizeof(*refs));
    if (!refs) {
        oom(x);
        return;
    }
    size_t nr = 0;
    for (size_t i = 0; i < c->n_providers; i++) {
        ah_config_provider_t *p = &c->providers[i];
        const item_meta_t *pm = x->prov_meta;
        if (pm && pm[i].bad)
            continue;
        src_t name_src = item_src(pm, i, &provider_schema, "name", p->line);
        src_t type_src = item_src(pm, i, &provider_schema, "type", p->line);
        src_t url_src = item_src(pm, i, &provider_schema, "base_url", p->line);
        snprintf(path, sizeof(path), "providers[%zu].name", i);
        if (!*p->name)
            errf(x, name_src, path, "required (a short name models refer to, like openai)");
        else if (!valid_name(p->name, ""))
            errf(x, name_src, path, "invalid name %s (use letters, digits, '_', '.', '-')",
                 shown(got, p->name));
        else
            refs[nr++] = (name_ref_t){p->name, i, 0, name_src.line};
        snprintf(path, sizeof(path), "providers[%zu].type", i);
        if (!*p->type) {
            errf(x, type_src, path, "required (one of: openai, azure, anthropic, mock)");
            continue;
        }
        if (!in_list(provider_types, p->type)) {
            const char *best = ah_suggest(p->type, provider_types, count_list(provider_types));
            char hint[64] = "";
            if (best)
                snprintf(hint, sizeof(hint), "did you mean \"%s\"? ", best);
            errf(x, type_src, path,
                 "unknown provider type %s (%sknown: openai, azure, anthropic, "
                 "mock)",
                 shown(got, p->type), hint);
            continue;
        }
        snprintf(path, sizeof(path), "providers[%zu].base_url", i);
        const char *def_url = NULL, *def_version = NULL;
        if (strcmp(p->type, "openai") == 0)
            def_url = "https://api.openai.com/v1";
        else if (strcmp(p->type, "anthropic") == 0) {
            def_url = "https://api.anthropic.com";
            def_version = "2023-06-01";
        } else if (strcmp(p->type, "azure") == 0) {
            def_version = "2024-10-21";
            if (!*p->base_url)
                errf(x, url_src, path,
                     "required for azure providers (https://RESOURCE.openai.azure.com)");
        }
        if (!*p->base_url && def_url) {
            free(p->base_url);
            if (!(p->base_url = strdup(def_url)))
                oom(x);
        }
        if (!*p->api_version && def_version) {
            free(p->api_version);
            if (!(p->api_version = strdup(def_version)))
                oom(x);
        }
        if (p->base_url && *p->base_url && !is_http_url(p->base_url))
            errf(x, url_src, path, "expected an http:// or https:// URL, got %s",
                 shown_url(got, p->base_url));
    }
    qsort(refs, nr, sizeof(*refs), cmp_name_ref);
    for (size_t i = 1; i < nr; i++) {
        if (strcmp(refs[i].name, refs[i - 1].name) == 0) {
            snprintf(path, sizeof(path), "providers[%zu].name", refs[i].idx);
            errf(x, at(refs[i].line), path,
                 "duplicate provider name %s (also providers[%zu] at line %d; names must be "
                 "unique)",
                 shown(got, refs[i].name), refs[i - 1].idx, refs[i - 1].line);
        }
    }
    *refs_out = refs;
    *n_out = nr;
}

/* Collects candidate names from refs for a suggestion (refs are sorted, may repeat). */
static const char *suggest_ref(const char *word, const name_ref_t *refs, size_t n)
{
    if (n == 0 || n > AH_SUGGEST_MAX_CAND)
        return NULL;
    const char **cands = malloc(n * sizeof(*cands));
    if (!cands)
        return NULL;
    for (size_t i = 0; i < n; i++)
        cands[i] = refs[i].name;
    const char *best = ah_suggest(word, cands, n);
    free(cands);
    return best;
}

static void list_names(char *out, size_t n, const name_ref_t *refs, size_t nr)
{
    const char *names[16];
    size_t k = 0;
    for (size_t i = 0; i < nr && k < 16; i++)
        if (i == 0 || strcmp(refs[i].name, refs[i - 1].name) != 0)
            names[k++] = refs[i].name;
    join_list(out, n, names, k);
}

static void validate_models(ctx_t *x, ah_config_t *c, const name_ref_t *prefs, size_t npr)
{
    char got[80], path[160], hint[160], names[256];
    size_t total = c->n_models;
    for (size_t i = 0; i < c->n_models; i++)
        total += c->models[i].n_aliases;
    name_ref_t *refs = calloc(total + 1, sizeof(*refs));
    if (!refs) {
        oom(x);
        return;
    }
    size_t nr = 0;
    list_names(names, sizeof(names), prefs, npr);
    for (size_t i = 0; i < c->n_models; i++) {
        ah_config_model_t *m = &c->models[i];
        item_meta_t *mm = x->model_meta ? &x->model_meta[i] : NULL;
        if (mm && mm->bad)
            continue;
        src_t name_src = item_src(x->model_meta, i, &model_schema, "name", m->line);
        snprintf(path, sizeof(path), "models[%zu].name", i);
        if (!*m->name)
            errf(x, name_src, path, "required (the name clients send as \"model\", like fast)");
        else if (!valid_name(m->name, ":/") || has_prefix(m->name, "agent:"))
            errf(x, name_src, path,
                 "invalid name %s (letters, digits, '_', '.', '-', ':', '/'; agent: is reserved "
                 "for agents)",
                 shown(got, m->name));
        else
            refs[nr++] = (name_ref_t){m->name, i, 0, name_src.line};
        for (size_t a = 0; a < m->n_aliases; a++) {
            int line = mm && mm->aliases.lines ? mm->aliases.lines[a] : m->line;
            snprintf(path, sizeof(path), "models[%zu].aliases[%zu]", i, a);
            if (!valid_name(m->aliases[a], ":/") || has_prefix(m->aliases[a], "agent:"))
                errf(x, at(line), path,
                     "invalid name %s (letters, digits, '_', '.', '-', ':', '/'; agent: is "
                     "reserved for agents)",
                     shown(got, m->aliases[a]));
            else
                refs[nr++] = (name_ref_t){m->aliases[a], i, a + 1, line};
        }
        snprintf(path, sizeof(path), "models[%zu].targets", i);
        if (m->n_targets == 0)
            errf(x, at(mm && mm->targets_node ? mm->targets_node->line : m->line), path,
                 "at least one target is required (targets: [ { provider: local, model: echo } "
                 "])");
        for (size_t t = 0; t < m->n_targets; t++) {
            ah_config_target_t *tg = &m->targets[t];
            const item_meta_t *tm = mm && mm->targets ? mm->targets : NULL;
            if (tm && tm[t].bad)
                continue;
            int tline = tm ? tm[t].line : m->line;
            src_t psrc = item_src(tm, t, &target_schema, "provider", tline);
            src_t msrc = item_src(tm, t, &target_schema, "model", tline);
            snprintf(path, sizeof(path), "models[%zu].targets[%zu].provider", i, t);
            if (!*tg->provider) {
                errf(x, psrc, path, "required (the name of a configured provider: %s)", names);
            } else if (!name_lookup(prefs, npr, tg->provider)) {
                const char *best = suggest_ref(tg->provider, prefs, npr);
                hint[0] = '\0';
                if (best)
                    snprintf(hint, sizeof(hint), "did you mean \"%s\"? ", best);
                errf(x, psrc, path, "unknown provider %s (%sconfigured: %s)",
                     shown(got, tg->provider), hint, npr ? names : "none");
            }
            snprintf(path, sizeof(path), "models[%zu].targets[%zu].model", i, t);
            if (!*tg->model)
                errf(x, msrc, path,
                     "required (the provider's model id, like gpt-4o-mini, or echo for mock)");
        }
    }
    qsort(refs, nr, sizeof(*refs), cmp_name_ref);
    for (size_t i = 1; i < nr; i++) {
        if (strcmp(refs[i].name, refs[i - 1].name) != 0)
            continue;
        const name_ref_t *first = name_lookup(refs, nr, refs[i].name);
        if (refs[i].alias)
            snprintf(path, sizeof(path), "models[%zu].aliases[%zu]", refs[i].idx,
                     refs[i].alias - 1);
        else
            snprintf(path, sizeof(path), "models[%zu].name", refs[i].idx);
        errf(x, at(refs[i].line), path,
             "%s is already used by models[%zu] (line %d); model names and aliases must be "
             "unique",
             shown(got, refs[i].name), first->idx, first->line);
    }
    for (size_t i = 0; i < c->n_models; i++) {
        ah_config_model_t *m = &c->models[i];
        item_meta_t *mm = x->model_meta ? &x->model_meta[i] : NULL;
        if (mm && mm->bad)
            continue;
        for (size_t f = 0; f < m->n_fallbacks; f++) {
            int line = mm && mm->fallbacks.lines ? mm->fallbacks.lines[f] : m->line;
            snprintf(path, sizeof(path), "models[%zu].fallbacks[%zu]", i, f);
            const name_ref_t *r = name_lookup(refs, nr, m->fallbacks[f]);
            if (!r) {
                const char *best = suggest_ref(m->fallbacks[f], refs, nr);
                hint[0] = '\0';
                if (best)
                    snprintf(hint, sizeof(hint), " (did you mean \"%s\"?)", best);
                errf(x, at(line), path, "unknown model %s%s", shown(got, m->fallbacks[f]), hint);
            } else if (r->idx == i) {
                errf(x, at(line), path,
                     "a model cannot fall back to itself (name another model, or remove it)");
            }
        }
    }
    free(refs);
}

/* --------------------------------------------------------- load */

static void meta_free(item_meta_t *meta, size_t n)
{
    if (!meta)
        return;
    for (size_t i = 0; i < n; i++) {
        free(meta[i].slots);
        free(meta[i].aliases.lines);
        free(meta[i].fallbacks.lines);
        if (meta[i].targets) {
            size_t nt = meta[i].targets_node ? meta[i].targets_node->n : 0;
            meta_free(meta[i].targets, nt);
        }
    }
    free(meta);
}

/* Builds c from the document root (NULL = none), the environment and the defaults. */
static int build(ah_config_t *c, const char *name, const ah_yaml_node_t *root, char **env,
                 ah_buf_t *errs)
{
    ctx_t *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->file = name;
    x->env = env;
    x->errs = errs;
    int rc = apply_defaults(x, &top_schema, c);
    if (rc) {
        free(x);
        return rc;
    }
    if (root && !ah_yaml_is_null(root)) {
        if (root->kind != AH_YAML_MAP)
            errf(x, at(root->line), NULL,
                 "expected a mapping of sections (server:, storage:, providers: ...), got a %s",
                 ah_yaml_kind_name(root->kind));
        else
            walk(x, &top_schema, x->top, root, "", "", top_special, NULL);
    }
    resolve(x, &top_schema, x->top, c, "", true);

    bool has_providers = x->providers_node && !ah_yaml_is_null(x->providers_node);
    bool has_models = x->models_node && !ah_yaml_is_null(x->models_node);
    if (has_providers)
        load_providers(x, c);
    if (has_models)
        load_models(x, c);
    if (default_lists(c, !has_providers, !has_providers && !has_models))
        oom(x);

    if (!x->oom) {
        name_ref_t *prefs = NULL;
        size_t npr = 0;
        validate_top(x, c);
        validate_providers(x, c, &prefs, &npr);
        if (prefs)
            validate_models(x, c, prefs, npr);
        free(prefs);
    }
    meta_free(x->prov_meta, c->n_providers);
    meta_free(x->model_meta, c->n_models);
    if (x->errs)
        flush_errors(x);
    rc = x->oom ? -ENOMEM : (x->n_errs ? -EINVAL : 0);
    free(x);
    return rc;
}

int ah_config_load_string(ah_config_t *c, const char *name, const char *text, size_t len,
                          char **env, ah_buf_t *errs)
{
    memset(c, 0, sizeof(*c));
    if (!name)
        name = "<config>";
    ah_yaml_t y = AH_YAML_INIT;
    int rc = ah_yaml_load_string(&y, name, text, len, NULL, errs);
    if (rc)
        return rc == -ENOMEM ? rc : -EINVAL;
    if (y.n_docs > 1) {
        if (errs)
            ah_buf_printf(errs,
                          "%s:%d: a config file holds one YAML document; found another one here "
                          "(remove the extra '---')\n",
                          name, y.docs[1]->line);
        ah_yaml_free(&y);
        return -EINVAL;
    }
    rc = build(c, name, ah_yaml_root(&y), env, errs);
    ah_yaml_free(&y);
    if (!rc && !(c->path = strdup(name)))
        rc = -ENOMEM;
    if (rc)
        ah_config_free(c);
    return rc;
}

int ah_config_load(ah_config_t *c, const char *path, char **env, ah_buf_t *errs)
{
    memset(c, 0, sizeof(*c));
    bool explicit = path != NULL;
    if (!path) {
        struct stat st;
        if (stat(DEFAULT_FILE, &st) != 0) {
            /* No file: the built-in defaults, still open to the environment. */
            int rc = build(c, "(built-in defaults)", NULL, env, errs);
            if (rc)
                ah_config_free(c);
            return rc;
        }
        path = DEFAULT_FILE;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (errs)
            ah_buf_printf(errs, "%s: cannot read the config file: %s%s\n", path, strerror(e),
                          explicit && e == ENOENT ? " (check the -c/--config path)" : "");
        return e == ENOENT ? -ENOENT : -EINVAL;
    }
    ah_buf_t data = AH_BUF_INIT;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (errs)
            ah_buf_printf(errs, "%s: cannot read the config file: not a regular file\n", path);
        rc = -EINVAL;
    }
    char chunk[16384];
    while (!rc) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errs)
                ah_buf_printf(errs, "%s: cannot read the config file: %s\n", path, strerror(errno));
            rc = -EINVAL;
            break;
        }
        if (n == 0)
            break;
        if (data.len + (size_t)n > AH_YAML_MAX_BYTES) {
            if (errs)
                ah_buf_printf(errs, "%s: larger than %d bytes; is it the right file?\n", path,
                              AH_YAML_MAX_BYTES);
            rc = -EINVAL;
            break;
        }
        if (ah_buf_append(&data, chunk, (size_t)n)) {
            rc = -ENOMEM;
            break;
        }
    }
    close(fd);
    if (!rc)
        rc = ah_config_load_string(c, path, data.data ? data.data : "", data.len, env, errs);
    ah_buf_free(&data);
    return rc;
}

int ah_config_defaults(ah_config_t *c)
{
    memset(c, 0, sizeof(*c));
    ctx_t *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->file = "defaults";
    int rc = apply_defaults(x, &top_schema, c);
    free(x);
    if (!rc)
        rc = default_lists(c, true, true);
    if (rc)
        ah_config_free(c);
    return rc;
}

/* --------------------------------------------------------- dump */

/*
 * Writes s as a YAML double-quoted scalar that loads back to s: escapes,
 * Unicode line breaks (which YAML would fold) and "${" (which the loader
 * would expand) included.
 */
static int put_quoted(ah_buf_t *out, const char *s)
{
    int rc = ah_buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
        if (p[0] == '$' && p[1] == '{' && ah_buf_putc(out, '$')) /* "$${" reads as "${" */
            break;
        if (p[0] == 0xC2 && p[1] == 0x85) {
            rc = ah_buf_puts(out, "\\N");
            p++;
        } else if (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) {
            rc = ah_buf_puts(out, p[2] == 0xA8 ? "\\L" : "\\P");
            p += 2;
        } else if (p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) {
            rc = ah_buf_puts(out, "\\uFEFF");
            p += 2;
        } else if (*p == '"' || *p == '\\')
            rc = ah_buf_putc(out, '\\') || ah_buf_putc(out, (char)*p);
        else if (*p == '\n')
            rc = ah_buf_puts(out, "\\n");
        else if (*p == '\t')
            rc = ah_buf_puts(out, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            rc = ah_buf_printf(out, "\\x%02x", *p);
        else
            rc = ah_buf_putc(out, (char)*p);
    }
    return rc || ah_buf_putc(out, '"') ? -ENOMEM : 0;
}

static int put_value(ah_buf_t *out, const field_t *f, const void *base)
{
    const char *p = (const char *)base + f->off;
    char num[64];
    int iv;
    size_t zv;
    double dv;
    bool bv;
    switch (f->type) {
    case T_STR: {
        const char *s = *(char *const *)p ? *(char *const *)p : "";
        if ((f->flags & F_SECRET) && *s)
            return ah_buf_puts(out, "\"***\"");
        if (f->flags & F_URL) {
            ah_buf_t m = AH_BUF_INIT;
            int rc = mask_url(&m, s);
            if (!rc)
                rc = put_quoted(out, m.data ? m.data : "");
            ah_buf_free(&m);
            return rc;
        }
        return put_quoted(out, s);
    }
    case T_INT:
        memcpy(&iv, p, sizeof(iv));
        return ah_buf_printf(out, "%d", iv);
    case T_SIZE:
        memcpy(&zv, p, sizeof(zv));
        return ah_buf_printf(out, "%zu", zv);
    case T_DBL:
    case T_DUR:
        memcpy(&dv, p, sizeof(dv));
        fmt_num(num, sizeof(num), dv);
        return ah_buf_puts(out, num);
    case T_BOOL:
        memcpy(&bv, p, sizeof(bv));
        return ah_buf_puts(out, bv ? "true" : "false");
    }
    return 0;
}

/*
 * Writes the fields of one struct as nested YAML at indent. first_prefix, when
 * not NULL, replaces the indentation of the first line ("  - " for a list item).
 */
static int dump_fields(ah_buf_t *out, const field_t *fields, size_t n, const void *base, int indent,
                       const char **first_prefix)
{
    const char *prev = "";
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *path = fields[i].path;
        /* Components shared with the previous path are already open. */
        size_t common = 0, depth = 0;
        for (size_t k = 0; path[k] && prev[k] == path[k]; k++)
            if (path[k] == '.') {
                common = k + 1;
                depth++;
            }
        const char *comp = path + common;
        for (;;) {
            const char *dot = strchr(comp, '.');
            size_t clen = dot ? (size_t)(dot - comp) : strlen(comp);
            if (first_prefix && *first_prefix) {
                rc |= ah_buf_puts(out, *first_prefix);
                *first_prefix = NULL;
            } else {
                rc |= ah_buf_printf(out, "%*s", indent + 2 * (int)depth, "");
            }
            rc |= ah_buf_append(out, comp, clen);
            rc |= ah_buf_puts(out, dot ? ":\n" : ": ");
            if (!dot)
                break;
            comp = dot + 1;
            depth++;
        }
        rc |= put_value(out, &fields[i], base);
        rc |= ah_buf_putc(out, '\n');
        prev = path;
    }
    return rc ? -ENOMEM : 0;
}

static int dump_str_list(ah_buf_t *out, int indent, const char *key, char **items, size_t n)
{
    int rc = ah_buf_printf(out, "%*s%s: [", indent, "", key);
    for (size_t i = 0; i < n && !rc; i++) {
        rc |= ah_buf_puts(out, i ? ", " : "");
        rc |= put_quoted(out, items[i]);
    }
    rc |= ah_buf_puts(out, "]\n");
    return rc ? -ENOMEM : 0;
}

int ah_config_dump(const ah_config_t *c, ah_buf_t *out)
{
    int rc = ah_buf_printf(out,
                           "# agenthub effective configuration (%s)\n# secrets are shown as "
                           "\"***\"\n",
                           c->path ? c->path : "built-in defaults");
    /* agents_dir is the last top-level row (keep it so): print it after the lists. */
    rc |= dump_fields(out, top_fields, N_TOP - 1, c, 0, NULL);
    rc |= ah_buf_puts(out, c->n_providers ? "providers:\n" : "providers: []\n");
    for (size_t i = 0; i < c->n_providers && !rc; i++) {
        const char *dash = "  - ";
        rc |= dump_fields(out, provider_fields, N_PROV, &c->providers[i], 4, &dash);
    }
    rc |= ah_buf_puts(out, c->n_models ? "models:\n" : "models: []\n");
    for (size_t i = 0; i < c->n_models && !rc; i++) {
        const ah_config_model_t *m = &c->models[i];
        const char *dash = "  - ";
        rc |= dump_fields(out, model_fields, 1, m, 4, &dash);
        rc |= dump_str_list(out, 4, "aliases", m->aliases, m->n_aliases);
        rc |= ah_buf_puts(out, m->n_targets ? "    targets:\n" : "    targets: []\n");
        for (size_t t = 0; t < m->n_targets && !rc; t++) {
            const char *tdash = "      - ";
            rc |= dump_fields(out, target_fields, N_TARGET, &m->targets[t], 8, &tdash);
        }
        rc |= dump_str_list(out, 4, "fallbacks", m->fallbacks, m->n_fallbacks);
        rc |= dump_fields(out, model_fields + 1, N_MODEL - 1, m, 4, NULL);
    }
    rc |= dump_fields(out, top_fields + N_TOP - 1, 1, c, 0, NULL);
    return rc ? -ENOMEM : 0;
}

/* --------------------------------------------------------- reference */

static int reference_rows(ah_buf_t *out, const schema_t *s)
{
    int rc = 0;
    char want[160], env[128];
    for (size_t i = 0; i < s->n && !rc; i++) {
        const field_t *f = &s->fields[i];
        describe(f, want, sizeof(want));
        if (*s->prefix)
            snprintf(env, sizeof(env), "-");
        else
            env_name_of(env, sizeof(env), f->path, "");
        rc |= ah_buf_printf(out, "| `%s%s` | %s | `%s` | %s%s%s%s | %s%s |\n", s->prefix, f->path,
                            want, *f->def ? f->def : "\"\"", *s->prefix ? "" : "`", env,
                            *s->prefix ? "" : "`",
                            f->type == T_STR && !*s->prefix ? " (+`_FILE`)" : "", f->help,
                            f->flags & F_SECRET ? " **secret**" : "");
    }
    return rc;
}

int ah_config_reference(ah_buf_t *out)
{
    int rc = ah_buf_puts(out, "| key | type | default | environment | meaning |\n"
                              "| --- | --- | --- | --- | --- |\n");
    rc |= reference_rows(out, &top_schema);
    rc |= reference_rows(out, &provider_schema);
    rc |= reference_rows(out, &model_schema);
    rc |= ah_buf_puts(out, "| `models[].aliases` | a list of names | `[]` | - | other names "
                           "clients may send for this model |\n"
                           "| `models[].targets` | a list of targets | required | - | where "
                           "requests go, chosen by weight |\n"
                           "| `models[].fallbacks` | a list of model names | `[]` | - | models "
                           "tried in order when every target fails |\n");
    rc |= reference_rows(out, &target_schema);
    return rc ? -ENOMEM : 0;
}

/* --------------------------------------------------------- lookups, free */

const ah_config_provider_t *ah_config_provider_find(const ah_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_providers; i++)
        if (c->providers[i].name && strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

const ah_config_model_t *ah_config_model_find(const ah_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_models; i++) {
        const ah_config_model_t *m = &c->models[i];
        if (m->name && strcmp(m->name, name) == 0)
            return m;
        for (size_t a = 0; a < m->n_aliases; a++)
            if (strcmp(m->aliases[a], name) == 0)
                return m;
    }
    return NULL;
}

static void free_strings(const schema_t *s, void *base)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->fields[i].type == T_STR) {
            char **p = (char **)((char *)base + s->fields[i].off);
            free(*p);
            *p = NULL;
        }
    }
}

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

void ah_config_free(ah_config_t *c)
{
    free_strings(&top_schema, c);
    for (size_t i = 0; i < c->n_providers; i++)
        free_strings(&provider_schema, &c->providers[i]);
    free(c->providers);
    for (size_t i = 0; i < c->n_models; i++) {
        ah_config_model_t *m = &c->models[i];
        free_strings(&model_schema, m);
        free_list(m->aliases, m->n_aliases);
        free_list(m->fallbacks, m->n_fallbacks);
        for (size_t t = 0; t < m->n_targets; t++)
            free_strings(&target_schema, &m->targets[t]);
        free(m->targets);
    }
    free(c->models);
    free(c->path);
    memset(c, 0, sizeof(*c));
}
