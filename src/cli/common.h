/*
 * common.h - helpers the store-backed subcommands (`agenthub agents`,
 * `agenthub keys`) share: option matching, UTC time text, JSON output, and
 * loading the configuration plus opening the store with migrations.
 *
 * Every `cmd` argument is the command as the user typed it after "agenthub"
 * ("keys list"); it prefixes the error lines printed to stderr.
 */
#ifndef AH_CLI_COMMON_H
#define AH_CLI_COMMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "store/store.h"

/* Size of ah_cli_format_time's output; room for any int64 ms. */
#define AH_CLI_TIME_BUFSZ 64

/**
 * Matches argv[*i] against option `name` (and `alias`, may be NULL) taking a
 * value, as "--name VALUE" or "--name=VALUE". Returns 1 and sets *val (a
 * pointer into argv) when matched, advancing *i past a separate value; 0 when
 * argv[*i] is another option; -1 when the value is missing.
 */
int ah_cli_opt_value(int argc, char **argv, int *i, const char *name, const char *alias,
                     const char **val);

/** Whether arg is "-h" or "--help". */
bool ah_cli_is_help(const char *arg);

/** Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SSZ" (UTC, proleptic Gregorian). */
void ah_cli_format_time(int64_t ms, char out[AH_CLI_TIME_BUFSZ]);

/**
 * Prints j to stdout as indented JSON and releases it (takes ownership; j may
 * be NULL, from a failed allocation). Returns the exit code: 0, or 1 after
 * "agenthub CMD: out of memory" on stderr.
 */
int ah_cli_print_json(const char *cmd, json_t *j);

/**
 * Loads the configuration (cfg_path NULL: see ah_cli_load_config) into *cfg
 * and opens its store with migrations into *store. Returns 0, the caller then
 * owns both and releases them with ah_cli_close_store; or the exit code (2
 * configuration error, 1 store failure, printed to stderr) with *cfg empty
 * and *store NULL.
 */
int ah_cli_open_store(const char *cmd, const char *cfg_path, ah_config_t *cfg, ah_store_t **store);

/** Closes what ah_cli_open_store opened: the store, then the configuration. */
void ah_cli_close_store(ah_config_t *cfg, ah_store_t *store);

#endif
