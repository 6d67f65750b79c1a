/*
 * keys_cmd.c - `agenthub keys create|list|revoke`: API key management from
 * the command line, straight against the store (the same jobs the /v1/keys
 * API uses, with audit rows whose actor is "cli"). A running hub sees a new or
 * revoked key within auth.key_cache_refresh_s.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/keys.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "core/clock.h"
#include "store/store.h"

#define CLI_ACTOR        "cli"
#define MAX_EXPIRES_DAYS 36500

static const char usage_main[] = "usage: agenthub keys <command> [options]\n"
                                 "\n"
                                 "Manages API keys. Commands:\n"
                                 "  create   create a key and print it (once)\n"
                                 "  list     list keys (never the keys themselves)\n"
                                 "  revoke   revoke a key by id\n"
                                 "\n"
                                 "Run `agenthub keys <command> --help` for the options of each.\n";

static const char usage_create[] =
    "usage: agenthub keys create --name NAME [--role ROLE] [--tenant T] [--expires-days N]\n"
    "                            [--json] [-c FILE]\n"
    "\n"
    "Creates an API key and prints it. The key is shown only this once: only its\n"
    "SHA-256 is stored.\n"
    "\n"
    "  --name NAME          what the key is for (1-127 printable ASCII characters)\n"
    "  --role ROLE          admin, developer, user or viewer (default user)\n"
    "  --tenant T           tenant the key belongs to (default \"default\")\n"
    "  --expires-days N     the key stops working after N days (default never)\n"
    "  --json               print the result as a JSON object\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_list[] =
    "usage: agenthub keys list [--json] [-c FILE]\n"
    "\n"
    "Lists every key, revoked ones included: id, name, prefix, role, tenant,\n"
    "creation time and status. Times are UTC.\n"
    "\n"
    "  --json               print a JSON array (times in ms since the epoch)\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_revoke[] =
    "usage: agenthub keys revoke ID [-c FILE]\n"
    "\n"
    "Revokes the key with id ID (key_...). Running hubs stop accepting it within\n"
    "auth.key_cache_refresh_s (default 1 s).\n"
    "\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static json_t *ms_or_null(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

static const char *key_status(const ah_key_rec_t *k, int64_t now)
{
    if (k->revoked_at)
        return "revoked";
    if (k->expires_at && k->expires_at <= now)
        return "expired";
    return "active";
}

static json_t *key_json(const ah_key_rec_t *k, int64_t now)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:s}", "id", k->id, "name",
                     k->name, "prefix", k->prefix, "role", k->role, "tenant", k->tenant, "status",
                     key_status(k, now), "created_at", (json_int_t)k->created_at, "revoked_at",
                     ms_or_null(k->revoked_at), "expires_at", ms_or_null(k->expires_at),
                     "created_by", k->created_by);
}

static int cmd_create(int argc, char **argv)
{
    const char *config_path = NULL, *name = NULL, *role = NULL, *tenant = NULL, *days = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        if (ah_cli_is_help(a)) {
            fputs(usage_create, stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--name", NULL, &name)) ||
                   (m = ah_cli_opt_value(argc, argv, &i, "--role", NULL, &role)) ||
                   (m = ah_cli_opt_value(argc, argv, &i, "--tenant", NULL, &tenant)) ||
                   (m = ah_cli_opt_value(argc, argv, &i, "--expires-days", NULL, &days)) ||
                   (m = ah_cli_opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
            if (m < 0) {
                fprintf(stderr, "agenthub keys create: %s needs a value\n\n%s", a, usage_create);
                return 2;
            }
        } else {
            fprintf(stderr, "agenthub keys create: unknown option \"%s\"\n\n%s", a, usage_create);
            return 2;
        }
    }
    if (!name) {
        fprintf(stderr, "agenthub keys create: --name is required\n\n%s", usage_create);
        return 2;
    }
    int64_t now = ah_wall_ms();
    int64_t expires_at = 0;
    if (days) {
        char *end = NULL;
        errno = 0;
        long n = strtol(days, &end, 10);
        if (errno || end == days || *end || n < 1 || n > MAX_EXPIRES_DAYS) {
            fprintf(stderr,
                    "agenthub keys create: --expires-days: \"%s\" is not a whole number "
                    "of days from 1 to %d\n",
                    days, MAX_EXPIRES_DAYS);
            return 2;
        }
        expires_at = now + (int64_t)n * 86400000;
    }
    const char *problem = ah_key_params_error(name, role, tenant, expires_at, now);
    if (problem) {
        fprintf(stderr, "agenthub keys create: --%s\n", problem);
        return 2;
    }

    ah_config_t cfg;
    ah_store_t *s;
    int rc = ah_cli_open_store("keys create", config_path, &cfg, &s);
    if (rc)
        return rc;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    rc = ah_keys_create(s, name, role, tenant, expires_at, CLI_ACTOR, NULL, key, sizeof(key), &rec);
    ah_cli_close_store(&cfg, s);
    if (rc) {
        fprintf(stderr, "agenthub keys create: cannot create the key: %s\n", strerror(-rc));
        return 1;
    }
    int exit_code = 0;
    if (json) {
        json_t *j = key_json(&rec, now);
        if (j && json_object_set_new(j, "key", json_string(key)) != 0) {
            json_decref(j);
            j = NULL;
        }
        exit_code = ah_cli_print_json("keys", j);
    } else {
        char expires[AH_CLI_TIME_BUFSZ] = "never";
        if (rec.expires_at)
            ah_cli_format_time(rec.expires_at, expires);
        printf("id:      %s\nname:    %s\nrole:    %s\ntenant:  %s\nprefix:  %s\nexpires: %s\n"
               "key:     %s\n",
               rec.id, rec.name, rec.role, rec.tenant, rec.prefix, expires, key);
    }
    explicit_bzero(key, sizeof(key));
    fflush(stdout);
    fprintf(stderr, "Save the key now: only its hash is stored, it cannot be shown again.\n");
    return exit_code;
}

/* Width of the widest value of a column (at least the header's). */
static int col_width(const ah_key_rec_t *recs, size_t n, size_t off, const char *header)
{
    size_t w = strlen(header);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen((const char *)&recs[i] + off);
        if (l > w)
            w = l;
    }
    return (int)w;
}

static int cmd_list(int argc, char **argv)
{
    const char *config_path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        if (ah_cli_is_help(a)) {
            fputs(usage_list, stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
            if (m < 0) {
                fprintf(stderr, "agenthub keys list: %s needs a value\n\n%s", a, usage_list);
                return 2;
            }
        } else {
            fprintf(stderr, "agenthub keys list: unknown option \"%s\"\n\n%s", a, usage_list);
            return 2;
        }
    }
    ah_config_t cfg;
    ah_store_t *s;
    int rc = ah_cli_open_store("keys list", config_path, &cfg, &s);
    if (rc)
        return rc;
    ah_key_rec_t *recs = NULL;
    size_t n = 0;
    rc = ah_keys_list(s, true, &recs, &n);
    ah_cli_close_store(&cfg, s);
    if (rc) {
        fprintf(stderr, "agenthub keys list: cannot read the keys: %s\n", strerror(-rc));
        return 1;
    }
    int64_t now = ah_wall_ms();
    int exit_code = 0;
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) {
            if (json_array_append_new(arr, key_json(&recs[i], now)) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        exit_code = ah_cli_print_json("keys", arr);
    } else if (n == 0) {
        printf("no keys (create one with `agenthub keys create --name NAME`)\n");
    } else {
        int wid = col_width(recs, n, offsetof(ah_key_rec_t, id), "ID");
        int wname = col_width(recs, n, offsetof(ah_key_rec_t, name), "NAME");
        int wprefix = col_width(recs, n, offsetof(ah_key_rec_t, prefix), "PREFIX");
        int wrole = col_width(recs, n, offsetof(ah_key_rec_t, role), "ROLE");
        int wtenant = col_width(recs, n, offsetof(ah_key_rec_t, tenant), "TENANT");
        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-20s  %s\n", wid, "ID", wname, "NAME", wprefix,
               "PREFIX", wrole, "ROLE", wtenant, "TENANT", "CREATED", "STATUS");
        for (size_t i = 0; i < n; i++) {
            const ah_key_rec_t *k = &recs[i];
            char created[AH_CLI_TIME_BUFSZ], when[AH_CLI_TIME_BUFSZ], status[2 * AH_CLI_TIME_BUFSZ];
            ah_cli_format_time(k->created_at, created);
            if (k->revoked_at) {
                ah_cli_format_time(k->revoked_at, when);
                snprintf(status, sizeof(status), "revoked %s", when);
            } else if (k->expires_at) {
                ah_cli_format_time(k->expires_at, when);
                snprintf(status, sizeof(status), "%s %s",
                         k->expires_at <= now ? "expired" : "active, expires", when);
            } else {
                snprintf(status, sizeof(status), "active");
            }
            printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-20s  %s\n", wid, k->id, wname, k->name, wprefix,
                   k->prefix, wrole, k->role, wtenant, k->tenant, created, status);
        }
    }
    free(recs);
    return exit_code;
}

static int cmd_revoke(int argc, char **argv)
{
    const char *config_path = NULL, *id = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        if (ah_cli_is_help(a)) {
            fputs(usage_revoke, stdout);
            return 0;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
            if (m < 0) {
                fprintf(stderr, "agenthub keys revoke: %s needs a value\n\n%s", a, usage_revoke);
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "agenthub keys revoke: unknown option \"%s\"\n\n%s", a, usage_revoke);
            return 2;
        } else if (id) {
            fprintf(stderr,
                    "agenthub keys revoke: one key id at a time (got \"%s\" and \"%s\")\n\n%s", id,
                    a, usage_revoke);
            return 2;
        } else {
            id = a;
        }
    }
    if (!id || !*id) {
        fprintf(stderr, "agenthub keys revoke: the key id is required\n\n%s", usage_revoke);
        return 2;
    }
    if (strlen(id) >= sizeof(((ah_key_rec_t *)0)->id)) {
        fprintf(stderr, "agenthub keys revoke: no key with id \"%s\"\n", id);
        return 1;
    }
    ah_config_t cfg;
    ah_store_t *s;
    int rc = ah_cli_open_store("keys revoke", config_path, &cfg, &s);
    if (rc)
        return rc;
    ah_key_rec_t rec;
    rc = ah_keys_revoke(s, id, CLI_ACTOR, NULL, &rec);
    ah_cli_close_store(&cfg, s);
    char when[AH_CLI_TIME_BUFSZ];
    switch (rc) {
    case 0:
        printf("revoked %s (%s, %s)\n", rec.id, rec.name, rec.prefix);
        return 0;
    case -EALREADY:
        ah_cli_format_time(rec.revoked_at, when);
        printf("%s (%s) was already revoked at %s\n", rec.id, rec.name, when);
        return 0;
    case -ENOENT:
        fprintf(stderr, "agenthub keys revoke: no key with id \"%s\" (see `agenthub keys list`)\n",
                id);
        return 1;
    default:
        fprintf(stderr, "agenthub keys revoke: cannot revoke the key: %s\n", strerror(-rc));
        return 1;
    }
}

int ah_cli_keys(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "agenthub keys: a command is required\n\n%s", usage_main);
        return 2;
    }
    const char *cmd = argv[1];
    if (ah_cli_is_help(cmd)) {
        fputs(usage_main, stdout);
        return 0;
    }
    /* Each command sees argv[0] = its own name. */
    if (strcmp(cmd, "create") == 0)
        return cmd_create(argc - 1, argv + 1);
    if (strcmp(cmd, "list") == 0)
        return cmd_list(argc - 1, argv + 1);
    if (strcmp(cmd, "revoke") == 0)
        return cmd_revoke(argc - 1, argv + 1);
    fprintf(stderr, "agenthub keys: unknown command \"%s\"\n\n%s", cmd, usage_main);
    return 2;
}
