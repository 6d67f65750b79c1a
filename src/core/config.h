/*
 * config.h - agenthub's configuration: one YAML file, environment overrides,
 * ${VAR} expansion and *_file secrets, validated up front.
 *
 * Loading order (docs/configuration.md):
 *   1. built-in defaults (every field below has one);
 *   2. the YAML file (-c FILE; default ./agenthub.yaml if it exists);
 *   3. ${VAR} / ${VAR:-default} expansion inside YAML scalars;
 *   4. AGENTHUB_<SECTION>_<KEY> environment variables for every scalar
 *      (AGENTHUB_SERVER_LISTEN, AGENTHUB_STORAGE_URL, AGENTHUB_LOG_LEVEL ...);
 *   5. KEY_file keys (api_key_file, admin_key_file, url_file ...): the named
 *      file's content, trailing newline stripped, becomes KEY;
 *   6. validation of every field, collecting all errors, each naming
 *      file:line, the field path, what is wrong and the fix.
 *
 * The loaded ah_config_t owns all its strings; free with ah_config_free.
 * Nothing here is thread-safe to mutate; after load it is read-only and may be
 * shared by every thread.
 */
#ifndef AH_CONFIG_H
#define AH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef struct ah_config_price {
    double input_per_mtok;        /* USD per million input tokens */
    double output_per_mtok;       /* USD per million output tokens */
    double cached_input_per_mtok; /* USD per million cached input tokens (default = input) */
} ah_config_price_t;

typedef struct ah_config_provider {
    char *name;
    char *type;        /* "mock", "openai", "azure", "anthropic" */
    char *base_url;    /* provider default when empty */
    char *api_key;     /* secret: never printed */
    char *api_version; /* azure, anthropic */
    double connect_timeout_s;
    double first_token_timeout_s;
    double timeout_s; /* total */
    int max_retries;
    int breaker_failures;      /* consecutive failures that open a target's breaker */
    double breaker_error_rate; /* 0..1 over the recent window */
    double breaker_open_s;     /* open time before a half-open probe */
    int line;                  /* line in the config file, for later errors (0 = not from file) */
} ah_config_provider_t;

typedef struct ah_config_target {
    char *provider;
    char *model;
    int weight; /* default 1 */
} ah_config_target_t;

typedef struct ah_config_model {
    char *name;
    char **aliases;
    size_t n_aliases;
    ah_config_target_t *targets;
    size_t n_targets;
    char **fallbacks; /* names of other models, in order */
    size_t n_fallbacks;
    ah_config_price_t price;
    int rpm; /* per-model limits; 0 = unlimited */
    int tpm;
    int line;
} ah_config_model_t;

typedef struct ah_config {
    char *path; /* file loaded, or NULL when defaults only */

    struct {
        char *listen;            /* "127.0.0.1:8080" */
        int workers;             /* 0 = number of cores */
        size_t max_body_bytes;   /* 413 past this; default 1 MiB */
        size_t max_header_bytes; /* 431 past this; default 16 KiB (request line + headers) */
        int max_headers;         /* 431 past this many header lines; default 100 */
        int max_connections;     /* per process; 503 + Retry-After past it; default 10000 */
        double header_timeout_s; /* 408 when headers are not complete in time; default 10 */
        double body_timeout_s;   /* 408 when the body stalls this long; default 30 */
        double idle_timeout_s;   /* keep-alive idle close; default 60 */
        double shutdown_grace_s; /* default 30 */
        char *metrics_listen;    /* optional separate address for /metrics */
        bool access_log;         /* one JSON line per request; default true */
    } server;

    struct {
        char *url;           /* "sqlite://./data/agenthub.db" or "postgres://..." */
        int busy_timeout_ms; /* SQLite busy timeout; default 5000 */
        int max_batch;       /* group commit: most writes per transaction; default 256 */
        int queue_max;       /* jobs waiting per store thread before refusing; default 10000 */
    } storage;

    struct {
        char *url; /* optional "redis://host:port/db" */
    } redis;

    struct {
        char *admin_key;            /* secret; from AGENTHUB_AUTH_ADMIN_KEY or admin_key_file */
        double key_cache_refresh_s; /* how often keys are reloaded from the store; default 1 */
        struct {
            char *issuer;
            char *jwks_url;
            char *audience;
        } jwt;
    } auth;

    struct {
        char *level; /* debug, info, warn, error */
    } log;

    struct {
        int default_rpm;
        int default_tpm;
        int default_concurrency;
    } limits;

    ah_config_provider_t *providers;
    size_t n_providers;
    ah_config_model_t *models;
    size_t n_models;

    char *agents_dir;

    struct {
        double runs_days;  /* finished runs + events kept this long; 0 = forever; default 30 */
        double usage_days; /* usage rows kept this long; 0 = forever; default 400 */
    } retention;

    struct {
        char *secret;     /* signs webhook deliveries; secret */
        int max_attempts; /* default 8 */
        double timeout_s; /* default 10 */
    } webhooks;

    struct {
        double lease_s;          /* claim on a run, renewed by heartbeat; default 30 */
        int max_concurrent;      /* runs executing at once per replica; default 1000 */
        double queue_ttl_s;      /* queued runs expire after this; default 3600 */
        double claim_interval_s; /* how often to look for runs to claim; default 0.5 */
    } runs;
} ah_config_t;

/** Fills c with the built-in defaults (what runs with no file). 0 or -ENOMEM. */
int ah_config_defaults(ah_config_t *c);

/**
 * Loads path (NULL = ./agenthub.yaml if present, else defaults only) with the
 * environment env (NULL-terminated "K=V" array; NULL = the process's environ),
 * then validates. On success returns 0 and fills c. On failure returns -EINVAL
 * (or -ENOENT for a missing explicitly named file) and appends to errs one line
 * per problem, "FILE:LINE: field.path: what is wrong (fix)"; c is then freed.
 */
int ah_config_load(ah_config_t *c, const char *path, char **env, ah_buf_t *errs);

/**
 * Like ah_config_load but parses len bytes of YAML text held in memory; name
 * is what messages call it ("config.yaml", "<stdin>"). An empty text gives
 * the defaults (plus env). Same results and ownership as ah_config_load.
 */
int ah_config_load_string(ah_config_t *c, const char *name, const char *text, size_t len,
                          char **env, ah_buf_t *errs);

/**
 * Appends the effective configuration as YAML to out, with every secret
 * (api_key, admin_key, passwords inside URLs) shown as "***".
 */
int ah_config_dump(const ah_config_t *c, ah_buf_t *out);

/** Returns the provider named name, or NULL. */
const ah_config_provider_t *ah_config_provider_find(const ah_config_t *c, const char *name);

/** Returns the model whose name or alias is name, or NULL. */
const ah_config_model_t *ah_config_model_find(const ah_config_t *c, const char *name);

/** Frees everything c owns; c may be loaded again. */
void ah_config_free(ah_config_t *c);

/**
 * Appends a Markdown table of every key the schema knows (path, type and
 * range, default, environment variable, meaning), in schema order. Used to
 * keep docs/configuration.md in step with the code.
 */
int ah_config_reference(ah_buf_t *out);

/* Caps on the lists of a config file (each a clear error when exceeded). */
#define AH_CONFIG_MAX_PROVIDERS 256
#define AH_CONFIG_MAX_MODELS    4096
#define AH_CONFIG_MAX_TARGETS   64 /* per model */
#define AH_CONFIG_MAX_ALIASES   64 /* per model */
#define AH_CONFIG_MAX_FALLBACKS 16 /* per model */

#endif
