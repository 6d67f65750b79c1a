/*
 * common.c - helpers shared by the store-backed subcommands (see common.h).
 */
#include "cli/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/buf.h"

int ah_cli_opt_value(int argc, char **argv, int *i, const char *name, const char *alias,
                     const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (strcmp(a, name) != 0 && !(alias && strcmp(a, alias) == 0))
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *val = argv[++*i];
    return 1;
}

bool ah_cli_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

void ah_cli_format_time(int64_t ms, char out[AH_CLI_TIME_BUFSZ])
{
    /* Floor division, so times before 1970 land on the right day. */
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t sod = secs - days * 86400;
    /* civil_from_days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms"). */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    snprintf(out, AH_CLI_TIME_BUFSZ, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lldZ", (long long)y,
             (long long)m, (long long)d, (long long)(sod / 3600), (long long)(sod / 60 % 60),
             (long long)(sod % 60));
}

int ah_cli_print_json(const char *cmd, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text) {
        fprintf(stderr, "agenthub %s: out of memory\n", cmd);
        return 1;
    }
    puts(text);
    free(text);
    return 0;
}

int ah_cli_open_store(const char *cmd, const char *cfg_path, ah_config_t *cfg, ah_store_t **store)
{
    memset(cfg, 0, sizeof(*cfg));
    *store = NULL;
    int rc = ah_cli_load_config(cfg_path, cfg);
    if (rc != 0)
        return rc;
    ah_buf_t err = AH_BUF_INIT;
    rc = ah_store_open(cfg, AH_STORE_MIGRATE, store, &err);
    if (rc < 0) {
        fprintf(stderr, "agenthub %s: %s\n", cmd, err.data ? err.data : "cannot open the store");
        ah_buf_free(&err);
        ah_config_free(cfg);
        *store = NULL;
        return 1;
    }
    ah_buf_free(&err);
    return 0;
}

void ah_cli_close_store(ah_config_t *cfg, ah_store_t *store)
{
    ah_store_close(store);
    ah_config_free(cfg);
}
