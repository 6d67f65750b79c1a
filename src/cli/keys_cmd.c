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
#include "core/clock.h"
#include "store/store.h"

#define CLI_ACTOR        "cli"
#define MAX_EXPIRES_DAYS 36500
#define TIME_BUFSZ       64 /* format_time output; room for any int64 ms */

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

/*
 * Matches option `name` (and `alias`, may be NULL) taking a value, as
 * "--name VALUE" or "--name=VALUE". Returns 1 and sets *val when matched,
 * 0 when argv[*i] is another option, -1 when the value is missing.
 */
static int opt_value(int argc, char **argv, int *i, const char *name, const char *alias,
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

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SSZ" (UTC, proleptic Gregorian). */
static void format_time(int64_t ms, char out[TIME_BUFSZ])
{
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
    snprintf(out, TIME_BUFSZ, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lldZ", (long long)y,
             (long long)m, (long long)d, (long long)(sod / 3600), (long long)(sod / 60 % 60),
             (long long)(sod % 60));
}

/* Loads the config and opens the store with migrations. 0, or an exit code (store NULL). */
static int open_store(const char *cmd, const char *config_path, ah_config_t *cfg, ah_store_t **s)
{
    memset(cfg, 0, sizeof(*cfg));
    *s = NULL;
    int rc = ah_cli_load_config(config_path, cfg);
    if (rc != 0)
        return rc;
    ah_buf_t err = AH_BUF_INIT;
    rc = ah_store_open(cfg, AH_STORE_MIGRATE, s, &err);
    if (rc < 0) {
        fprintf(stderr, "agenthub keys %s: %s\n", cmd,
                err.data ? err.data : "cannot open the store");
        ah_buf_free(&err);
        ah_config_free(cfg);
        *s = NULL;
        return 1;
    }
    ah_buf_free(&err);
    return 0;
}

static void close_store(ah_config_t *cfg, ah_store_t *s)
{
    ah_store_close(s);
    ah_config_free(cfg);
}

static int print_json(json_t *j)
{
    if (!j) {
        fprintf(stderr, "agenthub keys: out of memory\n");
        return 1;
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) {
        fprintf(stderr, "agenthub keys: out of memory\n");
        return 1;
    }
    puts(text);
    free(text);
    return 0;
}

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
        if (is_help(a)) {
            fputs(usage_create, stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((m = opt_value(argc, argv, &i, "--name", NULL, &name)) ||
                   (m = opt_value(argc, argv, &i, "--role", NULL, &role)) ||
                   (m = opt_value(argc, argv, &i, "--tenant", NULL, &tenant)) ||
                   (m = opt_value(argc, argv, &i, "--expires-days", NULL, &days)) ||
                   (m = opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
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
    int rc = open_store("create", config_path, &cfg, &s);
    if (rc)
        return rc;
    char key[AH_KEY_BUFSZ];
    ah_key_rec_t rec;
    rc = ah_keys_create(s, name, role, tenant, expires_at, CLI_ACTOR, NULL, key, sizeof(key), &rec);
    close_store(&cfg, s);
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
        exit_code = print_json(j);
    } else {
        char expires[TIME_BUFSZ] = "never";
        if (rec.expires_at)
            format_time(rec.expires_at, expires);
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
        if (is_help(a)) {
            fputs(usage_list, stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((m = opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
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
    int rc = open_store("list", config_path, &cfg, &s);
    if (rc)
        return rc;
    ah_key_rec_t *recs = NULL;
    size_t n = 0;
    rc = ah_keys_list(s, true, &recs, &n);
    close_store(&cfg, s);
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
        exit_code = print_json(arr);
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
            char created[TIME_BUFSZ], when[TIME_BUFSZ], status[2 * TIME_BUFSZ];
            format_time(k->created_at, created);
            if (k->revoked_at) {
                format_time(k->revoked_at, when);
                snprintf(status, sizeof(status), "revoked %s", when);
            } else if (k->expires_at) {
                format_time(k->expires_at, when);
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
        if (is_help(a)) {
            fputs(usage_revoke, stdout);
            return 0;
        } else if ((m = opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
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
    int rc = open_store("revoke", config_path, &cfg, &s);
    if (rc)
        return rc;
    ah_key_rec_t rec;
    rc = ah_keys_revoke(s, id, CLI_ACTOR, NULL, &rec);
    close_store(&cfg, s);
    char when[TIME_BUFSZ];
    switch (rc) {
    case 0:
        printf("revoked %s (%s, %s)\n", rec.id, rec.name, rec.prefix);
        return 0;
    case -EALREADY:
        format_time(rec.revoked_at, when);
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
    if (is_help(cmd)) {
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
