/*
 * run_cmd.c - `agenthub run AGENT "input"`: runs an agent in this process,
 * with the same runtime, gateway and store as the server (no HTTP, no key),
 * streaming the answer to stdout. Exit 0 when the run completed, 1 when it
 * failed or was cancelled, 2 for usage and configuration errors.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents/mcp.h"
#include "agents/registry.h"
#include "agents/runtime.h"
#include "agents/sandbox.h"
#include "cli/cli.h"
#include "core/log.h"
#include "gateway/usage.h"
#include "http/client.h"

static void run_usage(FILE *f)
{
    fputs("usage: agenthub run AGENT INPUT [-c FILE] [--json] [--session ID]\n"
          "\n"
          "Runs an agent in this process against the configured store and models, and prints\n"
          "its answer as it streams (tool calls on stderr).\n"
          "\n"
          "options:\n"
          "  -c, --config FILE   configuration file (default ./agenthub.yaml if present)\n"
          "  --json              print the finished run as JSON instead of streaming text\n"
          "  --session ID        conversation memory to use\n"
          "  -h, --help          show this help\n",
          f);
}

typedef struct cli_run {
    ah_loop_t *loop;
    bool json;
    int exit_code;
} cli_run_t;

static void on_event(void *ud, int64_t seq, const char *type, const char *data, size_t n)
{
    cli_run_t *x = ud;
    (void)seq;
    if (x->json)
        return;
    json_t *d = json_loadb(data, n, 0, NULL);
    if (strcmp(type, "message.delta") == 0) {
        fputs(json_string_value(json_object_get(d, "delta")) ?: "", stdout);
        fflush(stdout);
    } else if (strcmp(type, "message.completed") == 0) {
        if (json_string_value(json_object_get(d, "content")))
            fputc('\n', stdout);
    } else if (strcmp(type, "tool.call") == 0) {
        char *args = json_dumps(json_object_get(d, "arguments"), JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(stderr, "[tool] %s(%s)\n", json_string_value(json_object_get(d, "name")) ?: "?",
                args ? args : "");
        free(args);
    } else if (strcmp(type, "handoff") == 0) {
        fprintf(stderr, "[handoff] %s -> %s\n",
                json_string_value(json_object_get(d, "from")) ?: "?",
                json_string_value(json_object_get(d, "to")) ?: "?");
    }
    json_decref(d);
}

static void on_done(void *ud, const ah_run_rec_t *run)
{
    cli_run_t *x = ud;
    bool ok = strcmp(run->status, AH_RUN_COMPLETED) == 0;
    x->exit_code = ok ? 0 : 1;
    if (x->json) {
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:i, s:I, s:I, s:f}", "id", run->id,
                      "agent", run->agent, "status", run->status, "output", run->output,
                      "error_code", run->error_code, "error", run->error, "turns", run->turns,
                      "prompt_tokens", (json_int_t)run->prompt_tokens, "completion_tokens",
                      (json_int_t)run->completion_tokens, "cost_usd", run->cost_usd);
        char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else if (!ok) {
        fprintf(stderr, "agenthub run: run %s %s: %s\n", run->id, run->status,
                run->error ? run->error : "");
    }
    ah_loop_stop(x->loop);
}

int ah_cli_run(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"session", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *session = NULL;
    bool json = false;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cfg_path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 's':
            session = optarg;
            break;
        case 'h':
            run_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "agenthub run: unknown or incomplete option \"%s\"\n\n",
                    argv[optind - 1]);
            run_usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "agenthub run: expected AGENT and INPUT\n\n");
        run_usage(stderr);
        return 2;
    }
    const char *agent = argv[optind], *input = argv[optind + 1];
    signal(SIGPIPE, SIG_IGN);
    ah_config_t cfg;
    int rc = ah_cli_load_config(cfg_path, &cfg);
    if (rc)
        return rc;
    ah_log_level_t level;
    ah_log_set_level(ah_log_level_parse(cfg.log.level, &level) == 0 && level > AH_LOG_WARN
                         ? level
                         : AH_LOG_WARN);
    int exit_code = 1;
    ah_buf_t err = AH_BUF_INIT;
    ah_store_t *store = NULL;
    ah_registry_t *reg = NULL;
    ah_gateway_t *gw = NULL;
    ah_usage_t *usage = NULL;
    ah_runtime_t *rt = NULL;
    ah_loop_t *loop = NULL;
    bool gw_attached = false, rt_attached = false;
    ah_http_client_global_init();
    if ((rc = ah_store_open(&cfg, AH_STORE_MIGRATE, &store, &err)) != 0) {
        fprintf(stderr, "agenthub run: %s\n", err.data ? err.data : strerror(-rc));
        goto out;
    }
    reg = ah_registry_new(store, 1.0);
    gw = ah_gateway_new(&cfg, &err);
    usage = ah_usage_new(store, NULL);
    loop = ah_loop_new();
    if (!reg || ah_registry_start(reg) != 0 || !gw || !usage || ah_usage_start(usage) != 0 ||
        !loop) {
        fprintf(stderr, "agenthub run: cannot start: %s\n", err.data ? err.data : "out of memory");
        goto out;
    }
    ah_sandbox_info_t sb;
    ah_sandbox_probe(&sb); /* exec tools need to know whether the sandbox works here */
    ah_runtime_deps_t d = {
        .cfg = &cfg, .store = store, .gateway = gw, .registry = reg, .usage = usage};
    rt = ah_runtime_new(&d);
    gw_attached = rt && ah_gateway_attach(gw, loop) == 0;
    rt_attached = gw_attached && ah_runtime_attach(rt, loop) == 0;
    if (!rt_attached) {
        fprintf(stderr, "agenthub run: cannot start the runtime\n");
        goto out;
    }
    /* The input is text, or a JSON array of messages when it parses as one. */
    json_t *arr = json_loads(input, 0, NULL);
    char *input_json = json_is_array(arr) ? json_dumps(arr, JSON_COMPACT)
                                          : json_dumps(json_string(input), JSON_ENCODE_ANY);
    json_decref(arr);
    cli_run_t x = {.loop = loop, .json = json, .exit_code = 1};
    ah_run_observer_t obs = {.event = on_event, .done = on_done};
    ah_run_opts_t o = {
        .agent = agent, .input_json = input_json, .mode = "sync", .session_id = session};
    ah_run_t *run = NULL;
    rc = ah_runtime_start(rt, loop, &o, &obs, &x, &run, &err);
    free(input_json);
    if (rc) {
        fprintf(stderr, "agenthub run: %s\n", err.data ? err.data : strerror(-rc));
        exit_code = rc == -ENOENT || rc == -EINVAL ? 2 : 1;
        goto out;
    }
    ah_loop_run(loop);
    exit_code = x.exit_code;
out:
    if (rt_attached)
        ah_runtime_detach(rt);
    if (gw_attached)
        ah_gateway_detach(gw);
    ah_runtime_free(rt);
    ah_usage_free(usage); /* writes the run's usage rows */
    ah_registry_free(reg);
    ah_gateway_free(gw);
    ah_store_close(store);
    ah_loop_free(loop);
    ah_sandbox_shutdown();
    ah_mcp_global_cleanup();
    ah_http_client_global_cleanup();
    ah_config_free(&cfg);
    ah_buf_free(&err);
    return exit_code;
}
