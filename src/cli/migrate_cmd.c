/*
 * migrate_cmd.c - `agenthub migrate [-c FILE] [--status]`: applies the schema
 * migrations the database lacks (the same ones `agenthub serve` applies at
 * start), or with --status only reports the versions.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "store/store.h"

static const char usage[] =
    "usage: agenthub migrate [-c FILE] [--status]\n"
    "\n"
    "Applies the database schema migrations this agenthub has and the database\n"
    "(storage.url) lacks. Safe to run while other replicas start: each migration\n"
    "is applied once, under the database's lock.\n"
    "\n"
    "  -c, --config FILE   configuration file (default ./agenthub.yaml)\n"
    "      --status        print the current and latest schema version; change nothing\n"
    "  -h, --help          show this help\n";

static void print_applied(void *ud, const ah_migration_t *m)
{
    int *n = ud;
    printf("applied %s\n", m->name);
    fflush(stdout);
    (*n)++;
}

static int run(const ah_config_t *cfg, bool status_only)
{
    ah_buf_t err = AH_BUF_INIT;
    ah_store_t *s = NULL;
    int exit_code = 1;
    if (ah_store_open(cfg, 0, &s, &err) < 0) {
        fprintf(stderr, "agenthub migrate: %s\n", err.data ? err.data : "cannot open the store");
        goto out;
    }
    int current = 0, latest = 0;
    if (status_only) {
        int rc = ah_store_schema_status(s, &current, &latest);
        if (rc < 0) {
            fprintf(stderr, "agenthub migrate: cannot read the schema version: %s\n",
                    strerror(-rc));
            goto out;
        }
        int pending = 0;
        for (int i = 0; i < ah_migrations_count; i++)
            pending += ah_migrations[i].version > current;
        printf("schema version %d, latest %d", current, latest);
        if (pending)
            printf(" (%d pending: run `agenthub migrate`)\n", pending);
        else
            printf(" (current)\n");
        exit_code = 0;
        goto out;
    }
    int applied = 0;
    int rc = ah_store_migrate(s, print_applied, &applied, &err);
    if (rc < 0) {
        fprintf(stderr, "agenthub migrate: %s\n", err.data ? err.data : strerror(-rc));
        goto out;
    }
    if (ah_store_schema_status(s, &current, &latest) < 0)
        current = latest = ah_migrate_latest();
    if (applied == 0)
        printf("schema is current (version %d)\n", current);
    else
        printf("schema is now at version %d\n", current);
    exit_code = 0;
out:
    ah_store_close(s);
    ah_buf_free(&err);
    return exit_code;
}

int ah_cli_migrate(int argc, char **argv)
{
    const char *config_path = NULL;
    bool status_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--status") == 0) {
            status_only = true;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "agenthub migrate: %s needs a file name\n\n%s", a, usage);
                return 2;
            }
            config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            config_path = a + 9;
        } else {
            fprintf(stderr, "agenthub migrate: unknown option \"%s\"\n\n%s", a, usage);
            return 2;
        }
    }
    ah_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    int rc = ah_cli_load_config(config_path, &cfg);
    if (rc != 0)
        return rc;
    int exit_code = run(&cfg, status_only);
    ah_config_free(&cfg);
    return exit_code;
}
