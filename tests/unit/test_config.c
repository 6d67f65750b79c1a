/*
 * test_config.c - configuration loading (src/core/config.c): defaults, a full
 * file, every kind of error with its exact line, ${VAR}, AGENTHUB_* overrides,
 * *_file secrets, the masked dump, and that the docs list every key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"

static char *no_env[] = {NULL};

static void assert_has(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle)) {
        print_error("expected to find [%s] in [%s]\n", needle, hay ? hay : "(null)");
        fail();
    }
}

static void assert_lacks(const char *hay, const char *needle)
{
    if (hay && strstr(hay, needle)) {
        print_error("did not expect [%s] in [%s]\n", needle, hay);
        fail();
    }
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* Loads text as "t.yaml"; errs collects the messages. */
static int load(ah_config_t *c, const char *text, char **env, ah_buf_t *errs)
{
    return ah_config_load_string(c, "t.yaml", text, strlen(text), env ? env : no_env, errs);
}

/* Loads text that must be valid. */
static void load_ok(ah_config_t *c, const char *text, char **env)
{
    ah_buf_t errs = AH_BUF_INIT;
    int rc = load(c, text, env, &errs);
    if (rc) {
        print_error("unexpected errors (%d):\n%s", rc, errs.data ? errs.data : "");
        fail();
    }
    ah_buf_free(&errs);
}

/* Loads text that must fail with -EINVAL, returning the messages (caller frees). */
static char *load_bad(const char *text, char **env)
{
    ah_config_t c;
    ah_buf_t errs = AH_BUF_INIT;
    int rc = load(&c, text, env, &errs);
    if (rc != -EINVAL) {
        print_error("expected -EINVAL, got %d, for:\n%s", rc, text);
        fail();
    }
    assert_null(c.providers); /* freed on failure */
    assert_null(c.server.listen);
    assert_non_null(errs.data);
    return ah_buf_steal(&errs);
}

static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/ah_test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return path;
}

static void check_defaults(const ah_config_t *c)
{
    assert_string_equal(c->server.listen, "127.0.0.1:8080");
    assert_int_equal(c->server.workers, 0);
    assert_int_equal(c->server.max_body_bytes, 1048576);
    assert_int_equal(c->server.max_header_bytes, 16384);
    assert_int_equal(c->server.max_headers, 100);
    assert_int_equal(c->server.max_connections, 10000);
    assert_true(c->server.header_timeout_s == 10);
    assert_true(c->server.body_timeout_s == 30);
    assert_true(c->server.idle_timeout_s == 60);
    assert_true(c->server.shutdown_grace_s == 30);
    assert_string_equal(c->server.metrics_listen, "");
    assert_true(c->server.access_log);
    assert_string_equal(c->storage.url, "sqlite://./data/agenthub.db");
    assert_int_equal(c->storage.busy_timeout_ms, 5000);
    assert_int_equal(c->storage.max_batch, 256);
    assert_int_equal(c->storage.queue_max, 10000);
    assert_string_equal(c->redis.url, "");
    assert_string_equal(c->auth.admin_key, "");
    assert_true(c->auth.key_cache_refresh_s == 1);
    assert_string_equal(c->auth.jwt.issuer, "");
    assert_string_equal(c->log.level, "info");
    assert_int_equal(c->limits.default_rpm, 600);
    assert_int_equal(c->limits.default_tpm, 200000);
    assert_int_equal(c->limits.default_concurrency, 32);
    assert_string_equal(c->agents_dir, "");
    /* Zero config still serves: one in-process mock provider and model. */
    assert_int_equal(c->n_providers, 1);
    assert_string_equal(c->providers[0].name, "local");
    assert_string_equal(c->providers[0].type, "mock");
    assert_int_equal(c->n_models, 1);
    assert_string_equal(c->models[0].name, "mock");
    assert_int_equal(c->models[0].n_targets, 1);
    assert_string_equal(c->models[0].targets[0].provider, "local");
    assert_string_equal(c->models[0].targets[0].model, "echo");
    assert_int_equal(c->models[0].targets[0].weight, 1);
    assert_ptr_equal(ah_config_model_find(c, "mock"), &c->models[0]);
    assert_ptr_equal(ah_config_provider_find(c, "local"), &c->providers[0]);
}

static void test_defaults(void **state)
{
    (void)state;
    ah_config_t c;
    assert_int_equal(ah_config_defaults(&c), 0);
    check_defaults(&c);
    assert_null(c.path);
    ah_config_free(&c);
    assert_null(c.server.listen);

    /* An empty file and a comment-only file mean the same. */
    load_ok(&c, "", NULL);
    check_defaults(&c);
    assert_string_equal(c.path, "t.yaml");
    ah_config_free(&c);
    load_ok(&c, "# nothing here\n", NULL);
    check_defaults(&c);
    ah_config_free(&c);
    /* Empty sections keep their defaults. */
    load_ok(&c, "server:\nstorage: {}\nlimits:\n  default_rpm:\n", NULL);
    check_defaults(&c);
    ah_config_free(&c);
}

static const char full_yaml[] =
    "server:\n"
    "  listen: \"[::1]:9090\"\n"
    "  workers: 4\n"
    "  max_body_bytes: 2MiB\n"
    "  max_header_bytes: 32k\n"
    "  header_timeout_s: 500ms\n"
    "  idle_timeout_s: 2m\n"
    "  shutdown_grace_s: 0\n"
    "  metrics_listen: \":9100\"\n"
    "  access_log: false\n"
    "storage:\n"
    "  url: postgres://hub:pw@db:5432/agenthub\n"
    "  max_batch: 64\n"
    "redis: { url: \"redis://:redispw@cache:6379/0\" }\n"
    "auth:\n"
    "  admin_key: \"${ADMIN:-changeme-admin-key}\"\n"
    "  key_cache_refresh_s: 2.5\n"
    "  jwt: { issuer: https://idp.example, jwks_url: https://idp.example/jwks, audience: hub }\n"
    "log: { level: debug }\n"
    "limits: { default_rpm: 0, default_tpm: 1000, default_concurrency: 8 }\n"
    "providers:\n"
    "  - { name: local, type: mock }\n"
    "  - name: openai\n"
    "    type: openai\n"
    "    api_key: ${OPENAI_API_KEY}\n"
    "    max_retries: 0\n"
    "  - { name: claude, type: anthropic, api_key: sk-ant-xyz, timeout_s: 90 }\n"
    "  - { name: az, type: azure, base_url: \"https://r.openai.azure.com\", api_key: k }\n"
    "models:\n"
    "  - name: fast\n"
    "    aliases: [gpt-4o-mini, quick]\n"
    "    targets:\n"
    "      - { provider: openai, model: gpt-4o-mini, weight: 9 }\n"
    "      - { provider: local, model: echo }\n"
    "    fallbacks: [smart]\n"
    "    price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }\n"
    "    rpm: 100\n"
    "  - name: smart\n"
    "    targets: [ { provider: claude, model: claude-sonnet-4-5 } ]\n"
    "    price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 }\n"
    "agents_dir: /tmp\n";

static char *full_env[] = {"OPENAI_API_KEY=sk-openai-secret", "HOME=/root", NULL};

static void test_full_file(void **state)
{
    (void)state;
    ah_config_t c;
    load_ok(&c, full_yaml, full_env);
    assert_string_equal(c.server.listen, "[::1]:9090");
    assert_int_equal(c.server.workers, 4);
    assert_int_equal(c.server.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(c.server.max_header_bytes, 32 * 1024);
    assert_true(c.server.header_timeout_s == 0.5);
    assert_true(c.server.idle_timeout_s == 120);
    assert_true(c.server.shutdown_grace_s == 0);
    assert_string_equal(c.server.metrics_listen, ":9100");
    assert_false(c.server.access_log);
    assert_string_equal(c.storage.url, "postgres://hub:pw@db:5432/agenthub");
    assert_int_equal(c.storage.max_batch, 64);
    assert_int_equal(c.storage.busy_timeout_ms, 5000);
    assert_string_equal(c.redis.url, "redis://:redispw@cache:6379/0");
    assert_string_equal(c.auth.admin_key, "changeme-admin-key");
    assert_true(c.auth.key_cache_refresh_s == 2.5);
    assert_string_equal(c.auth.jwt.audience, "hub");
    assert_string_equal(c.log.level, "debug");
    assert_int_equal(c.limits.default_rpm, 0);
    assert_string_equal(c.agents_dir, "/tmp");

    assert_int_equal(c.n_providers, 4);
    const ah_config_provider_t *p = ah_config_provider_find(&c, "openai");
    assert_non_null(p);
    assert_string_equal(p->api_key, "sk-openai-secret");
    assert_string_equal(p->base_url, "https://api.openai.com/v1");
    assert_int_equal(p->max_retries, 0);
    assert_int_equal(p->line, 23);
    p = ah_config_provider_find(&c, "claude");
    assert_string_equal(p->base_url, "https://api.anthropic.com");
    assert_string_equal(p->api_version, "2023-06-01");
    assert_true(p->timeout_s == 90);
    assert_true(p->connect_timeout_s == 10);
    p = ah_config_provider_find(&c, "az");
    assert_string_equal(p->api_version, "2024-10-21");
    assert_null(ah_config_provider_find(&c, "nope"));

    assert_int_equal(c.n_models, 2);
    const ah_config_model_t *m = ah_config_model_find(&c, "gpt-4o-mini");
    assert_non_null(m);
    assert_string_equal(m->name, "fast");
    assert_ptr_equal(ah_config_model_find(&c, "quick"), m);
    assert_int_equal(m->line, 30);
    assert_int_equal(m->n_targets, 2);
    assert_int_equal(m->targets[0].weight, 9);
    assert_int_equal(m->targets[1].weight, 1);
    assert_string_equal(m->targets[1].model, "echo");
    assert_int_equal(m->n_fallbacks, 1);
    assert_string_equal(m->fallbacks[0], "smart");
    assert_true(m->price.input_per_mtok == 0.15);
    assert_true(m->price.output_per_mtok == 0.60);
    assert_true(m->price.cached_input_per_mtok == 0.15); /* defaults to input */
    assert_int_equal(m->rpm, 100);
    m = ah_config_model_find(&c, "smart");
    assert_true(m->price.cached_input_per_mtok == 0.3);
    assert_null(ah_config_model_find(&c, "mock")); /* models given: no default model */
    ah_config_free(&c);
}

static void test_unknown_key_suggests(void **state)
{
    (void)state;
    char *e = load_bad("server:\n  workers: 2\n  lisen: \"0.0.0.0:80\"\n", NULL);
    assert_has(e, "t.yaml:3: server.lisen: unknown key (did you mean \"listen\"?)\n");
    assert_int_equal(count_lines(e), 1);
    free(e);
    e = load_bad("sever:\n  listen: \":80\"\n", NULL);
    assert_has(e, "t.yaml:1: sever: unknown key (did you mean \"server\"?)");
    free(e);
    e = load_bad("auth:\n  jwt:\n    isuer: x\n", NULL);
    assert_has(e, "t.yaml:3: auth.jwt.isuer: unknown key (did you mean \"issuer\"?)");
    free(e);
    e = load_bad("auth:\n  admin_key_fil: /x\n", NULL);
    assert_has(e, "t.yaml:2: auth.admin_key_fil: unknown key (did you mean \"admin_key_file\"?)");
    free(e);
    e = load_bad("providers:\n  - { name: a, type: mock, apikey: x }\n", NULL);
    assert_has(e, "t.yaml:2: providers[0].apikey: unknown key (did you mean \"api_key\"?)");
    free(e);
    /* Nothing close: the known keys are listed instead. */
    e = load_bad("redis:\n  zzzzzz: 1\n", NULL);
    assert_has(e, "t.yaml:2: redis.zzzzzz: unknown key (known keys here: url)");
    free(e);
}

static void test_wrong_types(void **state)
{
    (void)state;
    char *e = load_bad("# c\n\nserver:\n  listen: \":80\"\n  workers: many\n", NULL);
    assert_has(e, "t.yaml:5: server.workers: expected an integer from 0 to 1024, got \"many\"");
    free(e);
    e = load_bad("server:\n  workers: 2000\n  access_log: maybe\n  max_body_bytes: 5X\n"
                 "  idle_timeout_s: -1\n  listen: [a]\n",
                 NULL);
    assert_has(e, "t.yaml:2: server.workers: expected an integer from 0 to 1024, got \"2000\"");
    assert_has(e, "t.yaml:3: server.access_log: expected true or false, got \"maybe\"");
    assert_has(e, "t.yaml:4: server.max_body_bytes: expected a size from 1KiB to 1GiB");
    assert_has(e, "t.yaml:5: server.idle_timeout_s: expected a duration from 0.001 to 86400");
    assert_has(e, "t.yaml:6: server.listen: expected a string, got a sequence");
    free(e);
    e = load_bad("server: 8080\n", NULL);
    assert_has(e, "t.yaml:1: server: expected a mapping of settings");
    free(e);
    e = load_bad("- a\n- b\n", NULL);
    assert_has(e, "t.yaml:1: expected a mapping of sections");
    free(e);
    e = load_bad("models:\n  - name: m\n    targets: [ { provider: local, model: echo } ]\n"
                 "    price: { input_per_mtok: -1 }\n",
                 NULL);
    assert_has(e, "t.yaml:4: models[0].price.input_per_mtok: expected a number from 0 to 1000000");
    free(e);
}

static void test_bad_provider_type(void **state)
{
    (void)state;
    char *e = load_bad("providers:\n  - { name: local, type: mock }\n  - name: openai\n"
                       "    type: opnai\n",
                       NULL);
    assert_has(e, "t.yaml:4: providers[1].type: unknown provider type \"opnai\" (did you mean "
                  "\"openai\"? known: openai, azure, anthropic, mock)");
    free(e);
    e = load_bad("providers:\n  - { name: x }\n  - { name: y, type: azure }\n"
                 "  - { name: z, type: openai, base_url: ftp://x }\n  - nope\n",
                 NULL);
    assert_has(e, "t.yaml:2: providers[0].type: required");
    assert_has(e, "t.yaml:3: providers[1].base_url: required for azure providers");
    assert_has(e, "t.yaml:4: providers[2].base_url: expected an http:// or https:// URL");
    assert_has(e, "t.yaml:5: providers[3]: expected a mapping like { name: local, type: mock }");
    free(e);
}

static void test_duplicate_provider(void **state)
{
    (void)state;
    char *e = load_bad("providers:\n  - { name: local, type: mock }\n  - { name: b, type: mock }\n"
                       "  - { name: local, type: openai }\n  - { name: \"bad name\", type: mock }\n"
                       "  - { type: mock }\n",
                       NULL);
    assert_has(e, "t.yaml:4: providers[2].name: duplicate provider name \"local\" (also "
                  "providers[0] at line 2");
    assert_has(e, "t.yaml:5: providers[3].name: invalid name \"bad name\"");
    assert_has(e, "t.yaml:6: providers[4].name: required");
    free(e);
}

static void test_model_errors(void **state)
{
    (void)state;
    char *e = load_bad("providers:\n"
                       "  - { name: local, type: mock }\n"
                       "  - { name: openai, type: openai }\n"
                       "models:\n"
                       "  - name: fast\n"
                       "    targets:\n"
                       "      - { provider: opena, model: gpt-4o-mini }\n"
                       "      - { provider: local }\n"
                       "    fallbacks: [ smrt, fast ]\n"
                       "  - name: smart\n"
                       "    aliases: [ fast ]\n"
                       "  - name: \"agent:x\"\n"
                       "    targets: [ { provider: local, model: echo, weight: 0 } ]\n",
                       NULL);
    assert_has(e, "t.yaml:7: models[0].targets[0].provider: unknown provider \"opena\" (did you "
                  "mean \"openai\"? configured: local, openai)");
    assert_has(e, "t.yaml:8: models[0].targets[1].model: required");
    assert_has(e, "t.yaml:9: models[0].fallbacks[0]: unknown model \"smrt\" (did you mean "
                  "\"smart\"?)");
    assert_has(e, "t.yaml:9: models[0].fallbacks[1]: a model cannot fall back to itself");
    assert_has(e, "t.yaml:10: models[1].targets: at least one target is required");
    assert_has(e, "t.yaml:11: models[1].aliases[0]: \"fast\" is already used by models[0] (line "
                  "5)");
    assert_has(e, "t.yaml:12: models[2].name: invalid name \"agent:x\"");
    assert_has(e, "t.yaml:13: models[2].targets[0].weight: expected an integer from 1 to 1000000");
    /* Errors come out in file order. */
    assert_true(strstr(e, "t.yaml:7:") < strstr(e, "t.yaml:13:"));
    free(e);
    /* A fallback to an alias of another model is fine. */
    ah_config_t c;
    load_ok(&c,
            "models:\n  - { name: a, targets: [ { provider: local, model: echo } ], fallbacks: "
            "[ bee ] }\n  - { name: b, aliases: [ bee ], targets: [ { provider: local, model: "
            "echo } ] }\n",
            NULL);
    assert_int_equal(c.n_models, 2);
    assert_int_equal(c.n_providers, 1); /* providers default to local even when models are given */
    ah_config_free(&c);
}

static void test_var_expansion(void **state)
{
    (void)state;
    char *env[] = {"KEY=from-env", "EMPTY=", "PORT=9000", NULL};
    ah_config_t c;
    load_ok(&c,
            "server:\n  listen: \"127.0.0.1:${PORT}\"\n  workers: ${WORKERS:-3}\n"
            "auth:\n  admin_key: \"${KEY}\"\n"
            "storage:\n  url: \"sqlite://${EMPTY:-dflt}-$${LITERAL}-$x\"\n",
            env);
    assert_string_equal(c.server.listen, "127.0.0.1:9000");
    assert_int_equal(c.server.workers, 3);
    assert_string_equal(c.auth.admin_key, "from-env");
    assert_string_equal(c.storage.url, "sqlite://dflt-${LITERAL}-$x");
    ah_config_free(&c);

    char *e =
        load_bad("storage:\n  url: sqlite://x\nredis:\n  url: \"redis://:${REDIS_PW}@h\"\n", env);
    assert_has(e, "t.yaml:4: redis.url: environment variable REDIS_PW is not set (export it, or "
                  "give a default: ${REDIS_PW:-value})");
    free(e);
    e = load_bad("log:\n  level: \"${LEVEL\"\n", env);
    assert_has(e, "t.yaml:2: log.level: malformed ${...}");
    free(e);
    e = load_bad("models:\n  - name: m\n    aliases: [ \"${NOPE}\" ]\n"
                 "    targets: [ { provider: local, model: echo } ]\n",
                 env);
    assert_has(e, "t.yaml:3: models[0].aliases[0]: environment variable NOPE is not set");
    free(e);
}

static void test_env_overrides(void **state)
{
    (void)state;
    char *env[] = {"AGENTHUB_SERVER_LISTEN=0.0.0.0:9999",
                   "AGENTHUB_LOG_LEVEL=warn",
                   "AGENTHUB_STORAGE_URL=postgres://u@db/hub",
                   "AGENTHUB_AUTH_ADMIN_KEY=adm",
                   "AGENTHUB_AUTH_JWT_ISSUER=iss",
                   "AGENTHUB_AUTH_JWT_JWKS_URL=https://j",
                   "AGENTHUB_SERVER_ACCESS_LOG=off",
                   "AGENTHUB_SERVER_MAX_BODY_BYTES=64k",
                   "AGENTHUB_AGENTS_DIR=/tmp",
                   NULL};
    ah_config_t c;
    load_ok(&c, "server:\n  listen: \"127.0.0.1:1\"\nlog: { level: error }\n", env);
    assert_string_equal(c.server.listen, "0.0.0.0:9999");
    assert_string_equal(c.log.level, "warn");
    assert_string_equal(c.storage.url, "postgres://u@db/hub");
    assert_string_equal(c.auth.admin_key, "adm");
    assert_string_equal(c.auth.jwt.issuer, "iss");
    assert_false(c.server.access_log);
    assert_int_equal(c.server.max_body_bytes, 65536);
    assert_string_equal(c.agents_dir, "/tmp");
    ah_config_free(&c);

    /* Defaults only (no file) are open to the environment too. */
    assert_int_equal(ah_config_load_string(&c, "none", "", 0, env, NULL), 0);
    assert_string_equal(c.server.listen, "0.0.0.0:9999");
    ah_config_free(&c);

    /* A bad value names the variable, not a file line. */
    char *bad[] = {"AGENTHUB_SERVER_WORKERS=many", "AGENTHUB_SERVER_LISTEN=nohost", NULL};
    char *e = load_bad("server:\n  workers: 2\n", bad);
    assert_has(e, "AGENTHUB_SERVER_WORKERS: server.workers: expected an integer from 0 to 1024, "
                  "got \"many\"\n");
    assert_has(e, "AGENTHUB_SERVER_LISTEN: server.listen: expected HOST:PORT");
    free(e);
}

static void test_file_secrets(void **state)
{
    (void)state;
    char *admin = write_temp("admin-from-file\n");
    char *api = write_temp("sk-from-file\r\n");
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "auth:\n  admin_key_file: %s\nproviders:\n  - name: openai\n    type: openai\n"
             "    api_key_file: \"%s\"\n",
             admin, api);
    ah_config_t c;
    load_ok(&c, yaml, NULL);
    assert_string_equal(c.auth.admin_key, "admin-from-file");
    assert_string_equal(c.providers[0].api_key, "sk-from-file");
    ah_config_free(&c);

    /* AGENTHUB_<KEY>_FILE works like KEY_file and wins over the file's value. */
    char envvar[256];
    snprintf(envvar, sizeof(envvar), "AGENTHUB_AUTH_ADMIN_KEY_FILE=%s", api);
    char *env[] = {envvar, NULL};
    load_ok(&c, "auth:\n  admin_key: inline\n", env);
    assert_string_equal(c.auth.admin_key, "sk-from-file");
    ah_config_free(&c);

    /* Both KEY and KEY_file in the file. */
    snprintf(yaml, sizeof(yaml), "auth:\n  admin_key: x\n  admin_key_file: %s\n", admin);
    char *e = load_bad(yaml, NULL);
    assert_has(e, "t.yaml:3: auth.admin_key_file: both admin_key and admin_key_file are set; "
                  "keep one");
    free(e);

    /* Both in the environment. */
    char *env2[] = {envvar, "AGENTHUB_AUTH_ADMIN_KEY=x", NULL};
    e = load_bad("", env2);
    assert_has(e, "AGENTHUB_AUTH_ADMIN_KEY: auth.admin_key: both AGENTHUB_AUTH_ADMIN_KEY and "
                  "AGENTHUB_AUTH_ADMIN_KEY_FILE are set");
    free(e);

    /* Missing files name the line and the path. */
    e = load_bad("storage:\n  url_file: /nonexistent/db-url\nproviders:\n"
                 "  - { name: o, type: openai, api_key_file: /nonexistent/key }\n",
                 NULL);
    assert_has(e, "t.yaml:2: storage.url_file: cannot read \"/nonexistent/db-url\": No such file "
                  "or directory");
    assert_has(e, "t.yaml:4: providers[0].api_key_file: cannot read \"/nonexistent/key\"");
    free(e);
    e = load_bad("auth:\n  admin_key_file: /tmp\n", NULL);
    assert_has(e, "t.yaml:2: auth.admin_key_file: cannot read \"/tmp\": not a regular file");
    free(e);

    /* Two trailing newlines: the second one is kept and caught. */
    char *twice = write_temp("key\n\n");
    snprintf(yaml, sizeof(yaml), "auth:\n  admin_key_file: %s\n", twice);
    e = load_bad(yaml, NULL);
    assert_has(e, "t.yaml:2: auth.admin_key: contains whitespace or control characters");
    free(e);

    unlink(admin);
    unlink(api);
    unlink(twice);
    free(admin);
    free(api);
    free(twice);
}

static void test_missing_file_and_default_path(void **state)
{
    (void)state;
    ah_config_t c;
    ah_buf_t errs = AH_BUF_INIT;
    assert_int_equal(ah_config_load(&c, "/nonexistent/agenthub.yaml", no_env, &errs), -ENOENT);
    assert_has(errs.data, "/nonexistent/agenthub.yaml: cannot read the config file: No such file "
                          "or directory");
    ah_buf_free(&errs);

    char *path = write_temp("server:\n  workers: 3\n");
    assert_int_equal(ah_config_load(&c, path, no_env, &errs), 0);
    assert_string_equal(c.path, path);
    assert_int_equal(c.server.workers, 3);
    ah_config_free(&c);
    unlink(path);
    free(path);

    /* path == NULL: ./agenthub.yaml when present, else the defaults. */
    char cwd[PATH_MAX], dir[] = "/tmp/ah_test_cfgdir_XXXXXX";
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(ah_config_load(&c, NULL, no_env, &errs), 0);
    assert_null(c.path);
    check_defaults(&c);
    ah_config_free(&c);
    FILE *f = fopen("agenthub.yaml", "w");
    assert_non_null(f);
    fputs("server:\n  workers: 7\n  bogus: 1\n", f);
    fclose(f);
    assert_int_equal(ah_config_load(&c, NULL, no_env, &errs), -EINVAL);
    assert_has(errs.data, "agenthub.yaml:3: server.bogus: unknown key");
    ah_buf_free(&errs);
    unlink("agenthub.yaml");
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
}

static void test_validation(void **state)
{
    (void)state;
    static const char *good[] = {"127.0.0.1:8080", "[::1]:8080", ":8080",      "localhost:1",
                                 "0.0.0.0:65535",  "[::]:80",    "127.0.0.1:0" /* any free port */};
    static const char *bad[] = {"8080",  "::1:8080", "[::1]8080", "host:65536",
                                "host:", "[zz]:80",  "a b:80",    "h:+80"};
    char yaml[256];
    ah_config_t c;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), "server:\n  listen: \"%s\"\n", good[i]);
        load_ok(&c, yaml, NULL);
        ah_config_free(&c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "server:\n  listen: \"%s\"\n", bad[i]);
        char *e = load_bad(yaml, NULL);
        assert_has(e, "t.yaml:2: server.listen: ");
        free(e);
    }
    char *e =
        load_bad("log:\n  level: verbose\nstorage:\n  url: mysql://x\nredis:\n  url: http://r\n"
                 "server:\n  metrics_listen: \"127.0.0.1:8080\"\nauth:\n  jwt:\n"
                 "    issuer: me\nagents_dir: /nonexistent-agents\n",
                 NULL);
    assert_has(e, "t.yaml:2: log.level: unknown level \"verbose\" (known: debug, info, warn, "
                  "error)");
    assert_has(e, "t.yaml:4: storage.url: unsupported URL \"mysql://x\"");
    assert_has(e, "t.yaml:6: redis.url: unsupported URL \"http://r\"");
    assert_has(e, "t.yaml:8: server.metrics_listen: same address as server.listen");
    assert_has(e, "t.yaml:11: auth.jwt.jwks_url: required when auth.jwt.issuer");
    assert_has(e, "t.yaml:12: agents_dir: cannot open \"/nonexistent-agents\"");
    assert_int_equal(count_lines(e), 6);
    free(e);
    load_ok(&c, "storage: { url: \"sqlite://:memory:\" }\nredis: { url: redis://h:6379 }\n", NULL);
    ah_config_free(&c);
    load_ok(&c, "storage: { url: \"postgresql://u@h/db\" }\n", NULL);
    ah_config_free(&c);
}

static void test_multiple_errors_all_reported(void **state)
{
    (void)state;
    char *e = load_bad("server:\n"
                       "  lisen: x\n"
                       "  workers: -1\n"
                       "log: { level: loud }\n"
                       "providers:\n"
                       "  - { name: a, type: opnai }\n"
                       "  - { name: a, type: mock }\n"
                       "models:\n"
                       "  - { name: m, targets: [ { provider: zz, model: x } ], fallbacks: [ q ] "
                       "}\n",
                       NULL);
    assert_has(e, "t.yaml:2:");
    assert_has(e, "t.yaml:3:");
    assert_has(e, "t.yaml:4:");
    assert_has(e, "t.yaml:6:");
    assert_has(e, "t.yaml:7:");
    assert_has(e, "t.yaml:9: models[0].targets[0].provider");
    assert_has(e, "t.yaml:9: models[0].fallbacks[0]");
    assert_int_equal(count_lines(e), 7);
    free(e);

    /* Past the cap, one line says how many more there are. */
    ah_buf_t big = AH_BUF_INIT;
    ah_buf_puts(&big, "server:\n");
    for (int i = 0; i < 150; i++)
        ah_buf_printf(&big, "  bad%d: 1\n", i);
    e = load_bad(big.data, NULL);
    assert_int_equal(count_lines(e), 101);
    assert_has(e, "t.yaml: 50 more errors not shown");
    free(e);
    ah_buf_free(&big);
}

static void test_yaml_errors(void **state)
{
    (void)state;
    char *e = load_bad("server:\n  listen: [\n", NULL);
    assert_has(e, "t.yaml:3:1: ");
    free(e);
    e = load_bad("a: 1\n---\nb: 2\n", NULL);
    assert_has(e, "t.yaml:3: a config file holds one YAML document");
    free(e);
    e = load_bad("server:\n  workers: 1\n  workers: 2\n", NULL);
    assert_has(e, "t.yaml:3:3: duplicate key \"workers\" (first at line 2");
    free(e);
    e = load_bad("auth:\n  admin_key: \"a\\0b\"\n", NULL);
    assert_has(e, "t.yaml:2: auth.admin_key: contains a NUL byte");
    free(e);
}

static void test_dump_masks_secrets(void **state)
{
    (void)state;
    ah_config_t c;
    load_ok(&c, full_yaml, full_env);
    ah_buf_t out = AH_BUF_INIT;
    assert_int_equal(ah_config_dump(&c, &out), 0);
    assert_lacks(out.data, "sk-openai-secret");
    assert_lacks(out.data, "sk-ant-xyz");
    assert_lacks(out.data, "changeme-admin-key");
    assert_lacks(out.data, "redispw");
    assert_lacks(out.data, ":pw@");
    assert_has(out.data, "  admin_key: \"***\"\n");
    assert_has(out.data, "  url: \"postgres://hub:***@db:5432/agenthub\"\n");
    assert_has(out.data, "  url: \"redis://:***@cache:6379/0\"\n");
    assert_has(out.data, "    api_key: \"***\"\n");
    assert_has(out.data, "  listen: \"[::1]:9090\"\n");
    assert_has(out.data, "  max_body_bytes: 2097152\n");
    assert_has(out.data, "  - name: \"fast\"\n    aliases: [\"gpt-4o-mini\", \"quick\"]\n");
    assert_has(out.data, "      - provider: \"openai\"\n        model: \"gpt-4o-mini\"\n"
                         "        weight: 9\n");
    assert_has(out.data, "    price:\n      input_per_mtok: 0.15\n      output_per_mtok: 0.6\n");
    assert_has(out.data, "auth:\n  admin_key: \"***\"\n  key_cache_refresh_s: 2.5\n  jwt:\n"
                         "    issuer: \"https://idp.example\"\n");

    /* The dump is itself a valid config that loads to the same dump. */
    ah_config_t again;
    load_ok(&again, out.data, no_env);
    ah_buf_t out2 = AH_BUF_INIT;
    assert_int_equal(ah_config_dump(&again, &out2), 0);
    const char *body1 = strchr(out.data, '\n'), *body2 = strchr(out2.data, '\n');
    assert_string_equal(body1, body2);
    ah_config_free(&again);
    ah_buf_free(&out2);
    ah_buf_free(&out);
    ah_config_free(&c);

    /* Passwords in URL query strings are masked too; empty secrets stay empty. */
    load_ok(&c, "storage: { url: \"postgres://h/db?sslmode=require&password=hunter2\" }\n", NULL);
    assert_int_equal(ah_config_dump(&c, &out), 0);
    assert_has(out.data, "url: \"postgres://h/db?sslmode=require&password=***\"");
    assert_has(out.data, "  admin_key: \"\"\n");
    ah_buf_free(&out);
    ah_config_free(&c);
}

static void test_reference_is_documented(void **state)
{
    (void)state;
    ah_buf_t ref = AH_BUF_INIT;
    assert_int_equal(ah_config_reference(&ref), 0);
    assert_has(ref.data, "| `server.listen` |");
    assert_has(ref.data, "`AGENTHUB_SERVER_LISTEN`");
    assert_has(ref.data, "| `models[].targets[].weight` |");

    const char *src = getenv("AH_TEST_SRCDIR");
    if (!src) {
        ah_buf_free(&ref);
        skip();
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/docs/configuration.md", src);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    ah_buf_t doc = AH_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        ah_buf_append(&doc, chunk, n);
    fclose(f);
    /* Every key the schema knows appears, backquoted, in the reference doc. */
    for (const char *p = ref.data; (p = strstr(p, "\n| `")); p++) {
        const char *start = p + 3, *end = strchr(start + 1, '`');
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(end - start + 1), start);
        if (!strstr(doc.data, key)) {
            print_error("docs/configuration.md does not document %s\n", key);
            fail();
        }
    }
    ah_buf_free(&doc);
    ah_buf_free(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_unknown_key_suggests),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_provider_type),
        cmocka_unit_test(test_duplicate_provider),
        cmocka_unit_test(test_model_errors),
        cmocka_unit_test(test_var_expansion),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_file_secrets),
        cmocka_unit_test(test_missing_file_and_default_path),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_multiple_errors_all_reported),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_dump_masks_secrets),
        cmocka_unit_test(test_reference_is_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
