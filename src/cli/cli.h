/*
 * cli.h - the `agenthub` subcommands that live outside main.c, and helpers
 * they share. main.c only dispatches: argv[0] of each entry point is the
 * subcommand's own name ("config"), and the return value is the process exit
 * code (0 success, 1 runtime failure, 2 usage or configuration error).
 */
#ifndef AH_CLI_H
#define AH_CLI_H

#include "core/config.h"

/**
 * `agenthub config check|show [-c FILE]`: validates the configuration
 * ("FILE: ok", or every error on stderr) or prints the effective
 * configuration as YAML with secrets masked. Returns the exit code: 0, or 2
 * for configuration errors and bad usage.
 */
int ah_cli_config(int argc, char **argv);

/* Other subcommands, each in its own src/cli/ file (same argv and exit-code
 * conventions): serve.c, migrate_cmd.c, keys_cmd.c. */
int ah_cli_serve(int argc, char **argv);
int ah_cli_migrate(int argc, char **argv);
int ah_cli_keys(int argc, char **argv);

/**
 * `agenthub agents apply|list|get|versions|rollback|archive`: the agent
 * registry against the store (agents_cmd.c). Returns the exit code: 0, 1
 * runtime failure, 2 usage or invalid documents.
 */
int ah_cli_agents(int argc, char **argv);

/**
 * Loads the configuration for a command (path NULL = ./agenthub.yaml if
 * present, else the built-in defaults; the process environment applies).
 * On success returns 0 and fills out (the caller frees it with
 * ah_config_free). On failure prints every error to stderr and returns 2,
 * the exit code to use; out is then empty.
 */
int ah_cli_load_config(const char *path, ah_config_t *out);

/**
 * `agenthub mock-llm [--listen ADDR] [--workers N] [--grace S] [--access-log]`:
 * serves the deterministic mock model (gateway/mock.h) over HTTP in the
 * OpenAI and Anthropic dialects with fault injection (docs/mock-llm.md).
 * Runs until SIGTERM/SIGINT. Returns the exit code: 0, 1, or 2 for bad usage.
 */
int ah_cli_mock_llm(int argc, char **argv);

/** agenthub run AGENT INPUT: runs an agent in process and prints its answer. */
int ah_cli_run(int argc, char **argv);

#endif
