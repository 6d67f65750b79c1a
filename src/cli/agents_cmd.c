/*
 * agents_cmd.c - `agenthub agents apply|list|get|versions|rollback|archive`:
 * the agent registry from the command line, straight against the store (the
 * same jobs the /v1/agents API uses, audit rows with actor "cli"). A running
 * hub sees the change within about a second (agents/registry.h).
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents/registry.h"
#include "agents/spec.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "core/clock.h"
#include "store/agents.h"
#include "store/audit.h"
#include "store/store.h"

#define CLI_ACTOR "cli"

static const char usage_main[] =
    "usage: agenthub agents <command> [options]\n"
    "\n"
    "Manages agents (docs/agents.md). Commands:\n"
    "  apply      create or update agents from YAML/JSON files\n"
    "  list       list agents\n"
    "  get        print an agent's spec\n"
    "  versions   list an agent's versions\n"
    "  rollback   make an older version current\n"
    "  archive    archive an agent (its versions and runs stay)\n"
    "\n"
    "Run `agenthub agents <command> --help` for the options of each.\n";

static const char usage_apply[] =
    "usage: agenthub agents apply -f FILE|DIR [--dry-run] [-c FILE]\n"
    "\n"
    "Validates agent documents (apiVersion: agenthub/v1, kind: Agent) and stores each\n"
    "as a new version when it differs from the agent's current version. A directory\n"
    "means every *.yaml, *.yml and *.json file in it. Nothing is written unless every\n"
    "document is valid; problems are printed as FILE:LINE: field: message (exit 2).\n"
    "\n"
    "  -f, --file PATH      file or directory to apply (may be repeated)\n"
    "  --dry-run            check everything and print what would change; write nothing\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml): models, store\n"
    "  -h, --help           show this help\n";

static const char usage_list[] =
    "usage: agenthub agents list [--all] [--json] [-c FILE]\n"
    "\n"
    "Lists agents: name, current and latest version, model, labels, last change (UTC).\n"
    "\n"
    "  --all                include archived agents\n"
    "  --json               print a JSON array\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_get[] =
    "usage: agenthub agents get NAME [--version N] [--yaml|--json] [-c FILE]\n"
    "\n"
    "Prints the agent's current spec (or version N) with every default filled in,\n"
    "as YAML (default; it can be applied again) or JSON.\n"
    "\n"
    "  --version N          a stored version instead of the current one\n"
    "  --yaml, --json       output format (default YAML)\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_versions[] =
    "usage: agenthub agents versions NAME [--json] [-c FILE]\n"
    "\n"
    "Lists every stored version of the agent, oldest first; * marks the current one.\n"
    "\n"
    "  --json               print a JSON array\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_rollback[] =
    "usage: agenthub agents rollback NAME --version N [-c FILE]\n"
    "\n"
    "Makes stored version N the agent's current version (no new version is written;\n"
    "the change is in the audit log). New runs use it within about a second.\n"
    "\n"
    "  --version N          the version to make current (see `agenthub agents versions`)\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

static const char usage_archive[] =
    "usage: agenthub agents archive NAME [-c FILE]\n"
    "\n"
    "Archives the agent: it is no longer listed or run. Its versions and runs stay;\n"
    "applying a spec for it again restores it as a new version.\n"
    "\n"
    "  -c, --config FILE    configuration file (default ./agenthub.yaml)\n"
    "  -h, --help           show this help\n";

/* Parses a version number (1..). */
static bool parse_version(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1)
        return false;
    *out = v;
    return true;
}

/* Parses the common options of a command taking a NAME: returns 0 to go on, or an exit code + 1. */
typedef struct name_opts {
    const char *config, *name, *version;
    bool json, yaml, all;
} name_opts_t;

static int parse_name_cmd(int argc, char **argv, const char *cmd, const char *usage,
                          bool takes_name, bool takes_version, bool takes_format, name_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m = 0;
        if (ah_cli_is_help(a)) {
            fputs(usage, stdout);
            return 1;
        } else if (takes_format && strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (takes_format && strcmp(a, "--yaml") == 0 && strcmp(cmd, "get") == 0) {
            o->yaml = true;
        } else if (!takes_name && strcmp(a, "--all") == 0) {
            o->all = true;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--config", "-c", &o->config)) ||
                   (takes_version &&
                    (m = ah_cli_opt_value(argc, argv, &i, "--version", NULL, &o->version)))) {
            if (m < 0) {
                fprintf(stderr, "agenthub agents %s: %s needs a value\n\n%s", cmd, a, usage);
                return 3;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "agenthub agents %s: unknown option \"%s\"\n\n%s", cmd, a, usage);
            return 3;
        } else if (!takes_name || o->name) {
            fprintf(stderr, "agenthub agents %s: unexpected argument \"%s\"\n\n%s", cmd, a, usage);
            return 3;
        } else {
            o->name = a;
        }
    }
    if (takes_name && !o->name) {
        fprintf(stderr, "agenthub agents %s: the agent name is required\n\n%s", cmd, usage);
        return 3;
    }
    if (o->json && o->yaml) {
        fprintf(stderr, "agenthub agents %s: --json and --yaml exclude each other\n", cmd);
        return 3;
    }
    if (takes_name && !ah_agent_name_ok(o->name)) {
        fprintf(stderr,
                "agenthub agents %s: \"%s\" is not an agent name ([a-z0-9][a-z0-9_-]{0,63})\n", cmd,
                o->name);
        return 3;
    }
    return 0;
}

/* ---- apply ---- */

static int cmd_apply(int argc, char **argv)
{
    const char *config_path = NULL;
    const char *paths[64];
    size_t n_paths = 0;
    bool dry = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int m;
        if (ah_cli_is_help(a)) {
            fputs(usage_apply, stdout);
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry = true;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--file", "-f", &v))) {
            if (m < 0) {
                fprintf(stderr, "agenthub agents apply: %s needs a value\n\n%s", a, usage_apply);
                return 2;
            }
            if (n_paths == sizeof(paths) / sizeof(paths[0])) {
                fprintf(stderr, "agenthub agents apply: at most 64 -f options\n");
                return 2;
            }
            paths[n_paths++] = v;
        } else if ((m = ah_cli_opt_value(argc, argv, &i, "--config", "-c", &config_path))) {
            if (m < 0) {
                fprintf(stderr, "agenthub agents apply: %s needs a value\n\n%s", a, usage_apply);
                return 2;
            }
        } else {
            fprintf(stderr, "agenthub agents apply: %s \"%s\"\n\n%s",
                    a[0] == '-' ? "unknown option" : "unexpected argument (use -f)", a,
                    usage_apply);
            return 2;
        }
    }
    if (n_paths == 0) {
        fprintf(stderr, "agenthub agents apply: -f FILE|DIR is required\n\n%s", usage_apply);
        return 2;
    }
    ah_config_t cfg;
    ah_store_t *s;
    int rc = ah_cli_open_store("agents apply", config_path, &cfg, &s);
    if (rc)
        return rc;
    int exit_code = 0;
    for (size_t p = 0; p < n_paths; p++) {
        ah_buf_t report = AH_BUF_INIT, text = AH_BUF_INIT;
        ah_agent_errors_t errs = AH_AGENT_ERRORS_INIT;
        rc = ah_registry_apply_path(s, &cfg, paths[p], CLI_ACTOR, dry ? AH_REGISTRY_DRY_RUN : 0,
                                    &report, &errs);
        if (report.data)
            fputs(report.data, stdout);
        if (rc >= 0 && report.len == 0)
            printf("%s: no agent documents\n", paths[p]);
        fflush(stdout);
        ah_agent_errors_format(&errs, &text);
        if (text.data)
            fputs(text.data, stderr);
        if (rc == -EAGAIN) {
            fprintf(stderr, "agenthub agents apply: an agent was changed by someone else at the "
                            "same time; run the command again\n");
            exit_code = 1;
        } else if (rc == -EINVAL || (rc < 0 && errs.n > 0)) {
            fprintf(stderr, "agenthub agents apply: %s: nothing applied\n", paths[p]);
            exit_code = 2;
        } else if (rc < 0) {
            fprintf(stderr, "agenthub agents apply: %s: %s\n", paths[p], strerror(-rc));
            exit_code = 1;
        }
        ah_buf_free(&report);
        ah_buf_free(&text);
        ah_agent_errors_free(&errs);
        if (exit_code)
            break;
    }
    ah_cli_close_store(&cfg, s);
    return exit_code;
}

/* ---- list ---- */

typedef struct list_job {
    bool all;
    json_t *rows;
} list_job_t;

static int list_row(void *ud, const ah_agent_row_t *row, const char *spec_json, size_t len)
{
    list_job_t *l = ud;
    if (row->archived_at && !l->all)
        return 0;
    json_t *spec = json_loadb(spec_json, len, 0, NULL);
    json_t *labels = json_object_get(json_object_get(spec, "metadata"), "labels");
    json_t *model = json_object_get(json_object_get(spec, "spec"), "model");
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:O?, s:o, s:b, s:o, s:I, s:I}", "name", row->name, "current_version",
        (json_int_t)row->current_version, "latest_version", (json_int_t)row->latest_version,
        "model", model, "labels", labels ? json_incref(labels) : json_object(), "archived",
        row->archived_at != 0, "archived_at",
        row->archived_at ? json_integer(row->archived_at) : json_null(), "created_at",
        (json_int_t)row->created_at, "updated_at", (json_int_t)row->updated_at);
    json_decref(spec);
    if (!o || json_array_append_new(l->rows, o) != 0)
        return -ENOMEM;
    return 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    list_job_t *l = arg;
    return ah_store_agent_list(db, -1, list_row, l);
}

static void labels_text(json_t *labels, char *out, size_t n)
{
    size_t o = 0;
    const char *k;
    json_t *v;
    out[0] = '\0';
    json_object_foreach(labels, k, v)
    {
        int w = snprintf(out + o, n - o, "%s%s=%s", o ? "," : "", k, json_string_value(v));
        if (w < 0 || (size_t)w >= n - o) {
            if (n > 4)
                memcpy(out + n - 4, "...", 4);
            return;
        }
        o += (size_t)w;
    }
}

static int cmd_list(int argc, char **argv)
{
    name_opts_t o;
    int rc = parse_name_cmd(argc, argv, "list", usage_list, false, false, true, &o);
    if (rc)
        return rc - 1;
    ah_config_t cfg;
    ah_store_t *s;
    if ((rc = ah_cli_open_store("agents list", o.config, &cfg, &s)) != 0)
        return rc;
    list_job_t l = {o.all, json_array()};
    rc = l.rows ? ah_store_call(s, AH_STORE_READ, list_work, &l) : -ENOMEM;
    ah_cli_close_store(&cfg, s);
    if (rc) {
        json_decref(l.rows);
        fprintf(stderr, "agenthub agents list: cannot read the agents: %s\n", strerror(-rc));
        return 1;
    }
    if (o.json)
        return ah_cli_print_json("agents", l.rows);
    if (json_array_size(l.rows) == 0) {
        printf("no agents (apply one with `agenthub agents apply -f FILE`)\n");
        json_decref(l.rows);
        return 0;
    }
    int wname = 4, wmodel = 5;
    size_t i;
    json_t *r;
    json_array_foreach(l.rows, i, r)
    {
        int n = (int)strlen(json_string_value(json_object_get(r, "name")));
        const char *m = json_string_value(json_object_get(r, "model"));
        int mn = m ? (int)strlen(m) : 1;
        if (n > wname)
            wname = n;
        if (mn > wmodel)
            wmodel = mn > 40 ? 40 : mn;
    }
    printf("%-*s  %7s  %6s  %-*s  %-20s  %-8s  %s\n", wname, "NAME", "VERSION", "LATEST", wmodel,
           "MODEL", "UPDATED", "STATUS", "LABELS");
    json_array_foreach(l.rows, i, r)
    {
        char when[AH_CLI_TIME_BUFSZ], labels[256];
        ah_cli_format_time(json_integer_value(json_object_get(r, "updated_at")), when);
        labels_text(json_object_get(r, "labels"), labels, sizeof(labels));
        const char *m = json_string_value(json_object_get(r, "model"));
        printf("%-*s  %7lld  %6lld  %-*.40s  %-20s  %-8s  %s\n", wname,
               json_string_value(json_object_get(r, "name")),
               (long long)json_integer_value(json_object_get(r, "current_version")),
               (long long)json_integer_value(json_object_get(r, "latest_version")), wmodel,
               m ? m : "-", when,
               json_is_true(json_object_get(r, "archived")) ? "archived" : "active", labels);
    }
    json_decref(l.rows);
    return 0;
}

/* ---- get ---- */

typedef struct get_job {
    const char *name;
    int64_t version;
    ah_agent_row_t row;
    ah_agent_version_rec_t vrec;
    char *spec;
} get_job_t;

static int get_work(ah_db_t *db, void *arg)
{
    get_job_t *g = arg;
    int rc = ah_store_agent_get(db, g->name, &g->row);
    if (rc)
        return rc;
    rc = ah_store_agent_version_get(db, g->name, g->version ? g->version : g->row.current_version,
                                    &g->vrec, &g->spec);
    return rc == -ENOENT ? -ENXIO : rc;
}

static int cmd_get(int argc, char **argv)
{
    name_opts_t o;
    int rc = parse_name_cmd(argc, argv, "get", usage_get, true, true, true, &o);
    if (rc)
        return rc - 1;
    get_job_t g = {.name = o.name};
    if (o.version && !parse_version(o.version, &g.version)) {
        fprintf(stderr, "agenthub agents get: --version takes a whole number from 1, not \"%s\"\n",
                o.version);
        return 2;
    }
    ah_config_t cfg;
    ah_store_t *s;
    if ((rc = ah_cli_open_store("agents get", o.config, &cfg, &s)) != 0)
        return rc;
    rc = ah_store_call(s, AH_STORE_READ, get_work, &g);
    ah_cli_close_store(&cfg, s);
    int exit_code = 0;
    if (rc == -ENOENT) {
        fprintf(stderr, "agenthub agents get: no agent named \"%s\" (see `agenthub agents list`)\n",
                o.name);
        exit_code = 1;
    } else if (rc == -ENXIO) {
        fprintf(stderr, "agenthub agents get: agent \"%s\" has no version %lld (versions 1-%lld)\n",
                o.name, (long long)g.version, (long long)g.row.latest_version);
        exit_code = 1;
    } else if (rc) {
        fprintf(stderr, "agenthub agents get: cannot read the agent: %s\n", strerror(-rc));
        exit_code = 1;
    } else if (o.json) {
        exit_code = ah_cli_print_json("agents", json_loads(g.spec, 0, NULL));
    } else {
        ah_buf_t y = AH_BUF_INIT;
        if (ah_agent_json_to_yaml(g.spec, strlen(g.spec), &y) != 0 || !y.data) {
            fprintf(stderr, "agenthub agents get: cannot print the spec as YAML\n");
            exit_code = 1;
        } else {
            printf("# agent %s, version %lld%s\n%s", o.name, (long long)g.vrec.version,
                   g.vrec.version == g.row.current_version ? " (current)" : "", y.data);
        }
        ah_buf_free(&y);
    }
    free(g.spec);
    return exit_code;
}

/* ---- versions ---- */

typedef struct versions_job {
    const char *name;
    ah_agent_row_t row;
    json_t *rows;
} versions_job_t;

static int version_row(void *ud, const ah_agent_version_rec_t *v)
{
    versions_job_t *j = ud;
    json_t *o = json_pack("{s:I, s:b, s:s, s:I, s:s}", "version", (json_int_t)v->version, "current",
                          v->version == j->row.current_version, "spec_hash", v->spec_hash,
                          "created_at", (json_int_t)v->created_at, "created_by", v->created_by);
    if (!o || json_array_append_new(j->rows, o) != 0)
        return -ENOMEM;
    return 0;
}

static int versions_work(ah_db_t *db, void *arg)
{
    versions_job_t *j = arg;
    int rc = ah_store_agent_get(db, j->name, &j->row);
    return rc ? rc : ah_store_agent_versions(db, j->name, version_row, j);
}

static int cmd_versions(int argc, char **argv)
{
    name_opts_t o;
    int rc = parse_name_cmd(argc, argv, "versions", usage_versions, true, false, true, &o);
    if (rc)
        return rc - 1;
    ah_config_t cfg;
    ah_store_t *s;
    if ((rc = ah_cli_open_store("agents versions", o.config, &cfg, &s)) != 0)
        return rc;
    versions_job_t j = {.name = o.name, .rows = json_array()};
    rc = j.rows ? ah_store_call(s, AH_STORE_READ, versions_work, &j) : -ENOMEM;
    ah_cli_close_store(&cfg, s);
    if (rc) {
        json_decref(j.rows);
        if (rc == -ENOENT)
            fprintf(stderr,
                    "agenthub agents versions: no agent named \"%s\" (see `agenthub agents "
                    "list`)\n",
                    o.name);
        else
            fprintf(stderr, "agenthub agents versions: cannot read the versions: %s\n",
                    strerror(-rc));
        return 1;
    }
    if (o.json)
        return ah_cli_print_json("agents", j.rows);
    printf("  %7s  %-20s  %-24s  %s\n", "VERSION", "CREATED", "BY", "SPEC HASH");
    size_t i;
    json_t *r;
    json_array_foreach(j.rows, i, r)
    {
        char when[AH_CLI_TIME_BUFSZ];
        ah_cli_format_time(json_integer_value(json_object_get(r, "created_at")), when);
        const char *by = json_string_value(json_object_get(r, "created_by"));
        printf("%s %7lld  %-20s  %-24.24s  %.12s\n",
               json_is_true(json_object_get(r, "current")) ? "*" : " ",
               (long long)json_integer_value(json_object_get(r, "version")), when,
               by && *by ? by : "-", json_string_value(json_object_get(r, "spec_hash")));
    }
    if (j.row.archived_at)
        printf("(archived)\n");
    json_decref(j.rows);
    return 0;
}

/* ---- rollback, archive ---- */

typedef struct change_job {
    const char *name;
    int64_t version, previous;
    ah_agent_row_t row;
    bool already;
} change_job_t;

static int audit_change(ah_db_t *db, const char *name, const char *action, json_t *detail)
{
    char *d = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    if (!d)
        return -ENOMEM;
    char target[AH_STORE_AGENT_NAME_MAX + 8];
    snprintf(target, sizeof(target), "agent:%s", name);
    int rc = ah_store_audit_insert(db, CLI_ACTOR, action, target, d, NULL);
    free(d);
    return rc;
}

static int rollback_work(ah_db_t *db, void *arg)
{
    change_job_t *c = arg;
    int rc = ah_store_agent_rollback(db, c->name, c->version, ah_wall_ms(), &c->previous, &c->row);
    if (rc || c->previous == c->version)
        return rc;
    return audit_change(db, c->name, "agent.rollback",
                        json_pack("{s:I, s:I}", "version", (json_int_t)c->version,
                                  "previous_version", (json_int_t)c->previous));
}

static int cmd_rollback(int argc, char **argv)
{
    name_opts_t o;
    int rc = parse_name_cmd(argc, argv, "rollback", usage_rollback, true, true, false, &o);
    if (rc)
        return rc - 1;
    change_job_t c = {.name = o.name};
    if (!o.version) {
        fprintf(stderr, "agenthub agents rollback: --version N is required\n\n%s", usage_rollback);
        return 2;
    }
    if (!parse_version(o.version, &c.version)) {
        fprintf(stderr,
                "agenthub agents rollback: --version takes a whole number from 1, not \"%s\"\n",
                o.version);
        return 2;
    }
    ah_config_t cfg;
    ah_store_t *s;
    if ((rc = ah_cli_open_store("agents rollback", o.config, &cfg, &s)) != 0)
        return rc;
    rc = ah_store_call(s, AH_STORE_WRITE, rollback_work, &c);
    ah_cli_close_store(&cfg, s);
    switch (rc) {
    case 0:
        if (c.previous == c.version)
            printf("agent/%s: version %lld is already current\n", o.name, (long long)c.version);
        else
            printf("agent/%s: rolled back to version %lld (was %lld)\n", o.name,
                   (long long)c.version, (long long)c.previous);
        return 0;
    case -ENOENT:
        fprintf(stderr, "agenthub agents rollback: no agent named \"%s\"\n", o.name);
        return 1;
    case -ENXIO:
        fprintf(stderr,
                "agenthub agents rollback: agent \"%s\" has no version %lld (versions 1-%lld)\n",
                o.name, (long long)c.version, (long long)c.row.latest_version);
        return 1;
    case -EPERM:
        fprintf(stderr,
                "agenthub agents rollback: agent \"%s\" is archived; apply a spec to restore it\n",
                o.name);
        return 1;
    default:
        fprintf(stderr, "agenthub agents rollback: cannot roll back: %s\n", strerror(-rc));
        return 1;
    }
}

static int archive_work(ah_db_t *db, void *arg)
{
    change_job_t *c = arg;
    int rc = ah_store_agent_archive(db, c->name, ah_wall_ms(), &c->row);
    if (rc == -EALREADY) {
        c->already = true;
        return 0;
    }
    if (rc)
        return rc;
    return audit_change(db, c->name, "agent.archive",
                        json_pack("{s:I}", "current_version", (json_int_t)c->row.current_version));
}

static int cmd_archive(int argc, char **argv)
{
    name_opts_t o;
    int rc = parse_name_cmd(argc, argv, "archive", usage_archive, true, false, false, &o);
    if (rc)
        return rc - 1;
    change_job_t c = {.name = o.name};
    ah_config_t cfg;
    ah_store_t *s;
    if ((rc = ah_cli_open_store("agents archive", o.config, &cfg, &s)) != 0)
        return rc;
    rc = ah_store_call(s, AH_STORE_WRITE, archive_work, &c);
    ah_cli_close_store(&cfg, s);
    if (rc == 0) {
        printf("agent/%s: %s\n", o.name, c.already ? "already archived" : "archived");
        return 0;
    }
    if (rc == -ENOENT)
        fprintf(stderr, "agenthub agents archive: no agent named \"%s\"\n", o.name);
    else
        fprintf(stderr, "agenthub agents archive: cannot archive: %s\n", strerror(-rc));
    return 1;
}

int ah_cli_agents(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "agenthub agents: a command is required\n\n%s", usage_main);
        return 2;
    }
    const char *cmd = argv[1];
    if (ah_cli_is_help(cmd)) {
        fputs(usage_main, stdout);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"apply", cmd_apply},       {"list", cmd_list},         {"get", cmd_get},
                {"versions", cmd_versions}, {"rollback", cmd_rollback}, {"archive", cmd_archive}};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "agenthub agents: unknown command \"%s\"\n\n%s", cmd, usage_main);
    return 2;
}
