/*
 * config_cmd.c - `agenthub config check` and `agenthub config show`, and the
 * config loading every other command shares (ah_cli_load_config).
 */
#include "cli/cli.h"

#include "core/buf.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: agenthub config check [-c FILE]\n"
    "       agenthub config show [-c FILE]\n"
    "\n"
    "  check   validate the configuration: prints \"FILE: ok\", or every problem\n"
    "          as FILE:LINE: key: message, and exits 2\n"
    "  show    print the effective configuration (defaults + file + environment)\n"
    "          as YAML, secrets shown as \"***\"\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   configuration file (default: ./agenthub.yaml if it\n"
    "                      exists, else the built-in defaults)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Every key can be overridden by AGENTHUB_<SECTION>_<KEY> environment\n"
    "variables; see docs/configuration.md.\n";

static void usage(FILE *out)
{
    fputs(usage_text, out);
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "agenthub config: %s%s%s\n\n", what, arg ? " " : "", arg ? arg : "");
    usage(stderr);
    return 2;
}

/* Prints errs to stderr, each line as is; returns the number of lines. */
static int print_errors(const ah_buf_t *errs)
{
    int lines = 0;
    if (errs->len) {
        fwrite(errs->data, 1, errs->len, stderr);
        for (size_t i = 0; i < errs->len; i++)
            lines += errs->data[i] == '\n';
    }
    return lines;
}

int ah_cli_load_config(const char *path, ah_config_t *out)
{
    ah_buf_t errs = AH_BUF_INIT;
    int rc = ah_config_load(out, path, NULL, &errs);
    if (rc) {
        if (print_errors(&errs) == 0)
            fprintf(stderr, "%s: cannot load the configuration: %s\n",
                    path ? path : "agenthub.yaml", strerror(-rc));
        ah_buf_free(&errs);
        return 2;
    }
    ah_buf_free(&errs);
    return 0;
}

int ah_cli_config(int argc, char **argv)
{
    const char *sub = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc)
                return usage_error("missing FILE after", a);
            path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
        } else if (strncmp(a, "-c", 2) == 0 && a[2]) {
            path = a + 2;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option", a);
        } else if (!sub) {
            sub = a;
        } else {
            return usage_error("unexpected argument", a);
        }
    }
    if (path && !*path)
        return usage_error("the config FILE must not be empty", NULL);
    if (!sub)
        return usage_error("missing subcommand (check or show)", NULL);
    bool check = strcmp(sub, "check") == 0;
    if (!check && strcmp(sub, "show") != 0)
        return usage_error("unknown subcommand (use check or show):", sub);

    ah_config_t c;
    ah_buf_t errs = AH_BUF_INIT;
    int rc = ah_config_load(&c, path, NULL, &errs);
    if (rc) {
        int n = print_errors(&errs);
        ah_buf_free(&errs);
        if (n == 0)
            fprintf(stderr, "%s: cannot load the configuration: %s\n",
                    path ? path : "agenthub.yaml", strerror(-rc));
        else if (check && n > 1)
            fprintf(stderr, "%s: %d problem%s found\n", path ? path : "agenthub.yaml", n,
                    n == 1 ? "" : "s");
        return 2;
    }
    ah_buf_free(&errs);
    int exit_code = 0;
    if (check) {
        printf("%s: ok\n", c.path ? c.path : "built-in defaults (no agenthub.yaml)");
    } else {
        ah_buf_t out = AH_BUF_INIT;
        if (ah_config_dump(&c, &out) == 0) {
            fwrite(out.data, 1, out.len, stdout);
        } else {
            fputs("agenthub config show: out of memory\n", stderr);
            exit_code = 1;
        }
        ah_buf_free(&out);
    }
    ah_config_free(&c);
    if (fflush(stdout) != 0)
        exit_code = 1;
    return exit_code;
}
