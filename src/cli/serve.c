/*
 * serve.c - `agenthub serve`: wires config, store, keyring, metrics and the
 * HTTP server together, then runs until a signal.
 *
 * Shutdown (docs/operations.md): the first SIGTERM/SIGINT turns /readyz to
 * 503 and closes the listeners at once; requests in flight get up to
 * server.shutdown_grace_s to finish; then the process exits 0. A second
 * signal exits at once with status 1.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agents/mcp.h"
#include "agents/sandbox.h"
#include "agents/webhooks.h"
#include "api/api.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/ticker.h"
#include "obs/metrics.h"
#include "http/client.h"
#include "obs/process.h"

static void serve_usage(FILE *f)
{
    fputs("usage: agenthub serve [-c FILE] [--listen ADDR] [--workers N]\n"
          "\n"
          "Runs the hub. Stops gracefully on SIGTERM or SIGINT.\n"
          "\n"
          "options:\n"
          "  -c, --config FILE   configuration file (default ./agenthub.yaml if present)\n"
          "  --listen ADDR       override server.listen (host:port; port 0 = any free port)\n"
          "  --workers N         override server.workers (0 = one per core)\n"
          "  -h, --help          show this help\n",
          f);
}

static void health_check(ah_app_t *app, bool first)
{
    bool ok = ah_store_ping(app->store) == 0;
    if (!first && ok != atomic_load(&app->store_ok))
        ah_log(ok ? AH_LOG_INFO : AH_LOG_ERROR, "store",
               ok ? "store reachable again" : "store unreachable: /readyz answers 503", AH_LF_END);
    atomic_store(&app->store_ok, ok);
    int cur = 0, latest = 0;
    if (ok && ah_store_schema_status(app->store, &cur, &latest) == 0) {
        atomic_store(&app->schema_version, cur);
        atomic_store(&app->schema_ok, cur == latest);
    }
}

/* The health thread's tick: pings the store every second so /readyz never blocks a loop. */
static void health_tick(void *arg)
{
    health_check(arg, false);
}

/* First start: no key at all and no configured admin key -> create one and show it once. */
static int bootstrap_admin(ah_app_t *app)
{
    if (app->cfg->auth.admin_key && app->cfg->auth.admin_key[0])
        return 0;
    ah_key_rec_t *recs = NULL;
    size_t n = 0;
    int rc = ah_keys_list(app->store, true, &recs, &n);
    free(recs);
    if (rc || n > 0)
        return rc;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    rc = ah_keys_create(app->store, "admin (first start)", "admin", NULL, 0, "bootstrap", NULL, key,
                        sizeof(key), &rec);
    if (rc)
        return rc;
    printf("First start: created admin API key %s. It is shown once; keep it now:\n\n    %s\n\n",
           rec.id, key);
    fflush(stdout);
    explicit_bzero(key, sizeof(key));
    return 0;
}

static void banner(const ah_app_t *app, const char *addr, int workers)
{
    const ah_config_t *cfg = app->cfg;
    printf("agenthub %s listening on http://%s (%d workers, store %s)\n", AH_VERSION, addr, workers,
           ah_store_backend(app->store));
    printf("Try (AGENTHUB_KEY = the admin key shown at first start, or one from `agenthub keys "
           "create`):\n"
           "    curl http://%s/readyz\n",
           addr);
    if (cfg->n_models > 0)
        printf("    curl http://%s/v1/chat/completions -H \"Authorization: Bearer $AGENTHUB_KEY\" "
               "\\\n         -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
               "\"hello\"}]}'\n",
               addr, cfg->models[0].name);
    fflush(stdout);
}

/* Exec tools need the sandbox: say so at start when it does not work here. */
static void sandbox_check(void)
{
    ah_sandbox_info_t info;
    ah_sandbox_probe(&info);
    if (info.ok)
        ah_log(AH_LOG_INFO, "sandbox", "sandbox available", AH_LF_STR("bwrap", info.bwrap),
               AH_LF_STR("version", info.version), AH_LF_DBL("probe_ms", info.probe_ms), AH_LF_END);
    else
        ah_log(AH_LOG_WARN, "sandbox",
               "sandbox unavailable: exec tools refuse to run unless they say sandbox: none",
               AH_LF_STR("reason", info.reason), AH_LF_END);
}

/* Waits for SIGTERM/SIGINT; returns the signal. */
static int wait_signal(const sigset_t *set, double timeout_s)
{
    struct timespec ts = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e9)};
    siginfo_t si;
    int sig;
    /* EINTR: SIGSTOP/SIGCONT, a debugger attaching: not a request to stop. */
    do
        sig = timeout_s < 0 ? sigwaitinfo(set, &si) : sigtimedwait(set, &si, &ts);
    while (sig < 0 && errno == EINTR);
    return sig;
}

int ah_cli_serve(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"listen", required_argument, NULL, 'l'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *listen = NULL;
    long workers = -1;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cfg_path = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'w': {
            char *end;
            workers = strtol(optarg, &end, 10);
            if (*end || workers < 0 || workers > 1024) {
                fprintf(stderr, "agenthub serve: --workers takes a number from 0 to 1024\n");
                return 2;
            }
            break;
        }
        case 'h':
            serve_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "agenthub serve: unknown or incomplete option \"%s\"\n\n",
                    argv[optind - 1]);
            serve_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "agenthub serve: unexpected argument \"%s\"\n\n", argv[optind]);
        serve_usage(stderr);
        return 2;
    }

    /* Signals go to this thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    ah_config_t cfg;
    int rc = ah_cli_load_config(cfg_path, &cfg);
    if (rc)
        return rc;
    if (listen) {
        free(cfg.server.listen);
        cfg.server.listen = strdup(listen);
    }
    if (workers >= 0)
        cfg.server.workers = (int)workers;
    /* AGENTHUB_ADMIN_KEY is the documented short name for auth.admin_key. */
    const char *env_admin = getenv("AGENTHUB_ADMIN_KEY");
    if (env_admin && *env_admin && !(cfg.auth.admin_key && *cfg.auth.admin_key)) {
        free(cfg.auth.admin_key);
        cfg.auth.admin_key = strdup(env_admin);
    }
    ah_log_level_t level;
    if (ah_log_level_parse(cfg.log.level, &level) == 0)
        ah_log_set_level(level);

    int exit_code = 1;
    ah_app_t app = {.cfg = &cfg};
    ah_router_t *router = NULL;
    ah_ticker_t *health = NULL;
    ah_buf_t err;
    ah_buf_init(&err, 0);
    uint64_t t0 = ah_mono_ns();

    ah_metrics_init();
    ah_process_metrics_register();
    long nofile = ah_process_raise_nofile();
    /* A proxied request holds two descriptors: the client's and the upstream's. */
    if (nofile > 0 && (long)cfg.server.max_connections * 2 + 64 > nofile)
        ah_log(AH_LOG_WARN, "process",
               "the open-files limit is below what server.max_connections needs (about two "
               "per connection: client + upstream); raise it (ulimit -n) or lower "
               "server.max_connections",
               AH_LF_INT("open_files_limit", nofile),
               AH_LF_INT("max_connections", (long long)cfg.server.max_connections), AH_LF_END);
    ah_http_client_global_init();
    app.started_at = time(NULL);
    app.gateway = ah_gateway_new(&cfg, &err);
    if (!app.gateway) {
        fprintf(stderr, "agenthub serve: %s\n", err.data ? err.data : "cannot build the gateway");
        exit_code = 2;
        goto out;
    }
    ah_gateway_metrics_init(app.gateway);
    if (ah_api_metrics_init(&app) != 0)
        ah_log(AH_LOG_WARN, "metrics", "some metrics could not be registered", AH_LF_END);

    rc = ah_store_open(&cfg, AH_STORE_MIGRATE, &app.store, &err);
    if (rc) {
        ah_log(AH_LOG_ERROR, "store", "cannot open the store",
               AH_LF_STR("error", err.data ? err.data : strerror(-rc)), AH_LF_END);
        fprintf(stderr, "agenthub serve: %s\n", err.data ? err.data : strerror(-rc));
        goto out;
    }
    health_check(&app, true);

    /* Agents: apply agents_dir (like `agenthub agents apply -f DIR`), then cache them. */
    if (cfg.agents_dir && cfg.agents_dir[0]) {
        ah_buf_t report = AH_BUF_INIT, text = AH_BUF_INIT;
        ah_agent_errors_t aerrs = AH_AGENT_ERRORS_INIT;
        rc = ah_registry_apply_path(app.store, &cfg, cfg.agents_dir, "agents_dir", 0, &report,
                                    &aerrs);
        for (char *line = report.data, *nl; line && *line; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl)
                break;
            *nl = '\0';
            ah_log(AH_LOG_INFO, "agents", "agent applied", AH_LF_STR("result", line), AH_LF_END);
        }
        if (rc < 0) {
            ah_agent_errors_format(&aerrs, &text);
            fprintf(stderr, "agenthub serve: agents_dir %s: %s%s", cfg.agents_dir,
                    text.data ? "invalid agents:\n" : strerror(-rc), text.data ? text.data : "\n");
            ah_log(AH_LOG_ERROR, "agents", "cannot apply agents_dir",
                   AH_LF_STR("dir", cfg.agents_dir),
                   AH_LF_STR("error", text.data ? text.data : strerror(-rc)), AH_LF_END);
        }
        ah_buf_free(&report);
        ah_buf_free(&text);
        ah_agent_errors_free(&aerrs);
        if (rc < 0) {
            exit_code = 2;
            goto out;
        }
    }
    app.registry = ah_registry_new(app.store, 1.0);
    if (!app.registry || (rc = ah_registry_start(app.registry)) != 0) {
        ah_log(AH_LOG_ERROR, "agents", "cannot load the agent registry", AH_LF_END);
        goto out;
    }

    router = ah_router_new();
    if (!router || ah_api_register(router) != 0) {
        ah_log(AH_LOG_ERROR, "http", "cannot build the route table", AH_LF_END);
        goto out;
    }
    ah_http_server_opts_t so = {
        .listen = cfg.server.listen,
        .workers = cfg.server.workers,
        .max_body_bytes = cfg.server.max_body_bytes,
        .max_header_bytes = cfg.server.max_header_bytes,
        .max_headers = cfg.server.max_headers,
        .max_connections = cfg.server.max_connections,
        .header_timeout_s = cfg.server.header_timeout_s,
        .body_timeout_s = cfg.server.body_timeout_s,
        .idle_timeout_s = cfg.server.idle_timeout_s,
        .access_log = cfg.server.access_log,
        .router = router,
        .dispatch = ah_api_dispatch,
        .on_complete = ah_api_on_complete,
        .on_worker_start = ah_api_on_worker_start,
        .on_worker_stop = ah_api_on_worker_stop,
        .ud = &app,
    };
    rc = ah_http_server_new(&so, &app.server, &err);
    if (rc) {
        ah_log(AH_LOG_ERROR, "http", "cannot start the HTTP server",
               AH_LF_STR("error", err.data ? err.data : strerror(-rc)), AH_LF_END);
        fprintf(stderr, "agenthub serve: %s\n", err.data ? err.data : strerror(-rc));
        goto out;
    }
    /* After the bind: a server that cannot listen must not mint the first admin key. */
    if ((rc = bootstrap_admin(&app)) != 0) {
        ah_log(AH_LOG_ERROR, "auth", "cannot create the first admin key",
               AH_LF_STR("error", strerror(-rc)), AH_LF_END);
        goto out;
    }
    app.keyring = ah_keyring_new(app.store, cfg.auth.admin_key, cfg.auth.key_cache_refresh_s);
    if (!app.keyring || (rc = ah_keyring_start(app.keyring)) != 0) {
        ah_log(AH_LOG_ERROR, "auth", "cannot load API keys", AH_LF_END);
        goto out;
    }
    /* The limiter hooks itself into the recorder: create it before the flusher starts. */
    app.usage = ah_usage_new(app.store, NULL);
    app.limits = app.usage ? ah_limits_new(&cfg, app.store, app.usage, NULL) : NULL;
    if (!app.limits || (rc = ah_limits_start(app.limits)) != 0 ||
        (rc = ah_usage_start(app.usage)) != 0) {
        ah_log(AH_LOG_ERROR, "limits", "cannot start rate limits and usage accounting", AH_LF_END);
        goto out;
    }
    ah_webhooks_opts_t wo = {.secret = cfg.webhooks.secret,
                             .max_attempts = cfg.webhooks.max_attempts,
                             .timeout_s = cfg.webhooks.timeout_s};
    app.webhooks = ah_webhooks_new(app.store, &wo);
    if (!app.webhooks || ah_webhooks_start(app.webhooks) != 0) {
        ah_log(AH_LOG_ERROR, "webhooks", "cannot start webhook deliveries", AH_LF_END);
        goto out;
    }
    /* Runs attribute their model calls to the usage recorder: after it exists. */
    ah_runtime_deps_t rd = {.cfg = &cfg,
                            .store = app.store,
                            .gateway = app.gateway,
                            .registry = app.registry,
                            .usage = app.usage,
                            .webhooks = app.webhooks,
                            .limits = app.limits};
    app.runtime = ah_runtime_new(&rd);
    if (!app.runtime) {
        ah_log(AH_LOG_ERROR, "runtime", "cannot create the agent runtime", AH_LF_END);
        goto out;
    }
    ah_runtime_metrics_init(app.runtime);
    sandbox_check();
    /* Not fatal: /readyz then keeps the state found at start. */
    health = ah_ticker_new("ah-health", 1.0, health_tick, &app);
    int hrc = health ? ah_ticker_start(health) : -errno;
    if (hrc != 0)
        ah_log(AH_LOG_WARN, "store",
               "cannot start the store health thread: /readyz will not follow the store",
               AH_LF_STR("error", strerror(-hrc)), AH_LF_END);
    if ((rc = ah_http_server_start(app.server)) != 0) {
        ah_log(AH_LOG_ERROR, "http", "cannot start worker threads",
               AH_LF_STR("error", strerror(-rc)), AH_LF_END);
        goto out;
    }
    char addr[96];
    ah_http_server_addr(app.server, addr, sizeof(addr));
    ah_log(AH_LOG_INFO, "http", "listening", AH_LF_STR("addr", addr),
           AH_LF_INT("workers", ah_http_server_workers(app.server)),
           AH_LF_STR("store", ah_store_backend(app.store)),
           AH_LF_STR("config", cfg.path ? cfg.path : "(defaults)"),
           AH_LF_DBL("startup_ms", (double)(ah_mono_ns() - t0) / 1e6), AH_LF_END);
    banner(&app, addr, ah_http_server_workers(app.server));

    int sig = wait_signal(&sigs, -1);
    ah_log(AH_LOG_INFO, "server", "shutdown started: draining",
           AH_LF_STR("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"),
           AH_LF_DBL("grace_s", cfg.server.shutdown_grace_s), AH_LF_END);
    uint64_t deadline = ah_mono_ns() + (uint64_t)(cfg.server.shutdown_grace_s * 1e9);
    /* Claim no more runs; those executing here get the grace period too. */
    ah_runtime_drain(app.runtime, deadline);
    ah_http_server_drain(app.server);
    for (;;) {
        ah_http_server_stats_t st;
        ah_http_server_stats(app.server, &st);
        if (st.connections == 0 && st.in_flight == 0 && ah_runtime_running(app.runtime) == 0)
            break;
        if (ah_mono_ns() >= deadline)
            break;
        if (wait_signal(&sigs, 0.05) > 0) {
            ah_log(AH_LOG_WARN, "server", "second signal: exiting now", AH_LF_END);
            _exit(1);
        }
    }
    rc = ah_http_server_wait(app.server, ah_mono_ns() >= deadline ? 0 : 1.0);
    if (rc == -ETIMEDOUT || ah_mono_ns() >= deadline) {
        ah_http_server_stats_t st;
        ah_http_server_stats(app.server, &st);
        ah_log(AH_LOG_WARN, "server", "grace period over: cut remaining connections",
               AH_LF_INT("connections", st.connections), AH_LF_END);
    }
    /* The workers stopped: runs still unfinished here go to the other replicas now. */
    ah_runtime_hand_back(app.runtime);
    ah_log(AH_LOG_INFO, "server", "shutdown complete", AH_LF_END);
    exit_code = 0;

out:
    ah_ticker_free(health); /* stops the health thread first: it reads app.store */
    if (app.server && exit_code != 0)
        ah_http_server_wait(app.server, 0); /* never started or failed: stop what runs */
    ah_keyring_free(app.keyring);
    ah_http_server_free(app.server);
    ah_runtime_free(app.runtime);   /* workers have detached */
    ah_webhooks_free(app.webhooks); /* pending deliveries stay in the outbox */
    ah_registry_free(app.registry); /* after the workers: handlers may hold it */
    ah_limits_free(app.limits);     /* workers have stopped and detached */
    ah_usage_free(app.usage);       /* writes the last rows: before the store closes */
    ah_router_free(router);
    ah_gateway_free(app.gateway);
    ah_store_close(app.store);
    ah_mcp_global_cleanup(); /* reaps MCP server processes of freed clients */
    ah_http_client_global_cleanup();
    ah_sandbox_shutdown(); /* after the loops stopped: no sandbox callback can run */
    ah_metrics_shutdown();
    ah_config_free(&cfg);
    ah_buf_free(&err);
    return exit_code;
}
