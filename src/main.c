/* main.c - the agenthub command line: subcommand dispatch only (src/cli/ does the work). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fputs("usage: agenthub <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve          run the hub (HTTP API, gateway, agent runtime)\n"
          "  config check   validate a configuration file\n"
          "  config show    print the effective configuration (secrets masked)\n"
          "  migrate        apply database migrations\n"
          "  keys           create, list and revoke API keys\n"
          "  agents         apply, list, get, version and roll back agents\n"
          "  run            run an agent once in this process: agenthub run AGENT \"input\"\n"
          "  mock-llm       serve the mock model over HTTP (OpenAI + Anthropic) for tests and "
          "benchmarks\n"
          "  version        print the version\n"
          "\n"
          "Run `agenthub <command> --help` for a command's options.\n",
          f);
}

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
} command_t;

static int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        puts("usage: agenthub version\n\nPrints the version and build information.");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "agenthub version: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    printf("agenthub %s (%s)\n", AH_VERSION, __VERSION__);
    return 0;
}

static const command_t commands[] = {
    {"serve", ah_cli_serve},       {"config", ah_cli_config}, {"migrate", ah_cli_migrate},
    {"keys", ah_cli_keys},         {"agents", ah_cli_agents}, {"run", ah_cli_run},
    {"mock-llm", ah_cli_mock_llm}, {"version", cmd_version},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "agenthub: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
