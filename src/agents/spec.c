/*
 * spec.c - agent documents -> validated ah_agent_spec_t; see spec.h and
 * docs/agents.md.
 *
 * Both input formats end up as the same tree: YAML through core/yaml.h (with
 * line numbers), JSON through jansson and then converted to ah_yaml nodes
 * (strings as quoted scalars, everything else as plain scalars, line 0). One
 * walker then validates every document against the schema, collecting every
 * problem, and fills the spec; the canonical JSON is printed from the filled
 * spec (not from the input), so defaults and formatting differences vanish.
 */
#include "agents/spec.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "agents/webhooks.h"
#include "core/crypto.h"
#include "core/suggest.h"
#include "core/yaml.h"
#include "store/webhooks.h"

#define PATH_LEN           320
#define MAX_DEPTH          64          /* nesting, YAML and JSON alike */
#define DESCRIPTION_MAX    8192        /* tool descriptions */
#define PARAMETERS_MAX     (64 * 1024) /* one tool's JSON schema, as JSON */
#define URL_MAX            2048
#define ARG_MAX_LEN        4096 /* one argv element */
#define MAX_ARGS           64   /* argv elements */
#define MAX_HEADERS        64
#define HEADER_VALUE_MAX   4096
#define MAX_ENV            64
#define ENV_VALUE_MAX      4096
#define LABEL_KEY_MAX      63
#define LABEL_VALUE_MAX    256
#define MODEL_NAME_MAX     256
#define PREFIX_MAX         32
#define MAX_ALLOW          256
#define CANONICAL_MAX      (4 * 1024 * 1024) /* aliases can expand a 1 MiB document */
#define DEFAULT_PARAMETERS "{\"properties\":{},\"type\":\"object\"}"
#define SANDBOX_NONE       "none"

#define MiB (1024.0 * 1024.0)

/* ------------------------------------------------------------------ errors */

static void errors_vadd(ah_agent_errors_t *errs, const char *source, int line, int doc,
                        const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void errors_vadd(ah_agent_errors_t *errs, const char *source, int line, int doc,
                        const char *path, const char *fmt, va_list ap)
{
    if (!errs)
        return;
    if (errs->n >= AH_AGENT_MAX_ERRORS) {
        errs->more++;
        return;
    }
    if (errs->n == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        ah_agent_error_t *v = realloc(errs->v, cap * sizeof(*v));
        if (!v) {
            errs->more++;
            return;
        }
        errs->v = v;
        errs->cap = cap;
    }
    ah_buf_t m = AH_BUF_INIT;
    ah_buf_vprintf(&m, fmt, ap);
    ah_agent_error_t e = {strdup(source ? source : "<input>"), line, doc, strdup(path ? path : ""),
                          ah_buf_steal(&m)};
    if (!e.source || !e.path || !e.message) {
        free(e.source);
        free(e.path);
        free(e.message);
        errs->more++;
        return;
    }
    errs->v[errs->n++] = e;
}

void ah_agent_errors_add(ah_agent_errors_t *errs, const char *source, int line, int doc,
                         const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errors_vadd(errs, source, line, doc, path, fmt, ap);
    va_end(ap);
}

void ah_agent_errors_free(ah_agent_errors_t *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->v[i].source);
        free(errs->v[i].path);
        free(errs->v[i].message);
    }
    free(errs->v);
    memset(errs, 0, sizeof(*errs));
}

int ah_agent_errors_format(const ah_agent_errors_t *errs, ah_buf_t *out)
{
    int rc = 0;
    for (size_t i = 0; errs && i < errs->n; i++) {
        const ah_agent_error_t *e = &errs->v[i];
        if (e->line > 0)
            rc |= ah_buf_printf(out, "%s:%d: ", e->source, e->line);
        else if (e->doc >= 0)
            rc |= ah_buf_printf(out, "%s: document %d: ", e->source, e->doc + 1);
        else
            rc |= ah_buf_printf(out, "%s: ", e->source);
        if (e->path[0])
            rc |= ah_buf_printf(out, "%s: ", e->path);
        rc |= ah_buf_printf(out, "%s\n", e->message);
    }
    if (errs && errs->more)
        rc |= ah_buf_printf(out, "%zu more problems not shown; fix the ones above first\n",
                            errs->more);
    return rc ? -ENOMEM : 0;
}

/* Stable sort of errs->v[from..n) by (doc, line): source order within one parse. */
static void errors_sort_from(ah_agent_errors_t *errs, size_t from)
{
    for (size_t i = from + 1; i < errs->n; i++) {
        ah_agent_error_t e = errs->v[i];
        size_t j = i;
        while (j > from && (errs->v[j - 1].doc > e.doc ||
                            (errs->v[j - 1].doc == e.doc && errs->v[j - 1].line > e.line))) {
            errs->v[j] = errs->v[j - 1];
            j--;
        }
        errs->v[j] = e;
    }
}

static void join_list(char *out, size_t outsz, const char *const *list, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + o, outsz - o, "%s%s", i ? ", " : "", list[i]);
        if (w < 0 || (size_t)w >= outsz - o) {
            if (outsz > 4)
                memcpy(out + outsz - 4, "...", 4);
            return;
        }
        o += (size_t)w;
    }
}

static size_t list_len(const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    return n;
}

/* -------------------------------------------------------------- text checks */

/* Well-formed UTF-8 as jansson accepts it: no overlongs, surrogates or > U+10FFFF. */
static bool utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

bool ah_agent_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AH_AGENT_NAME_MAX)
        return false;
    if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || isdigit(c) || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool tool_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '-')
            return false;
    }
    return true;
}

static bool label_key_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > LABEL_KEY_MAX || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && !strchr("._/-", c))
            return false;
    }
    return true;
}

static bool header_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isalnum(c) && !strchr("!#$%&'*+-.^_`|~", c))
            return false;
    }
    return true;
}

static bool env_name_ok(const char *s)
{
    if (!*s || isdigit((unsigned char)*s))
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A value as shown in a message: quoted, cut at 60 bytes, control bytes as '?'. */
static const char *shown(char out[80], const char *s)
{
    size_t o = 0, n = strlen(s);
    out[o++] = '"';
    for (size_t i = 0; i < n && o < 64; i++)
        out[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '"') ? '?' : s[i];
    if (o >= 64 && n > 63) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------- validation context */

typedef struct vx {
    ah_agent_errors_t *errs;
    const char *source;
    int doc; /* -1 when the source holds one document */
    int nerr;
    ah_arena_t *a;
    bool oom;
} vx_t;

static void verr(vx_t *x, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void verr(vx_t *x, int line, const char *path, const char *fmt, ...)
{
    x->nerr++;
    va_list ap;
    va_start(ap, fmt);
    errors_vadd(x->errs, x->source, line, x->doc, path, fmt, ap);
    va_end(ap);
}

static void oom(vx_t *x)
{
    if (!x->oom)
        verr(x, 0, "", "out of memory");
    x->oom = true;
}

static char *xstrndup(vx_t *x, const char *s, size_t n)
{
    char *p = ah_arena_strndup(x->a, s, n);
    if (!p)
        oom(x);
    return p;
}

static void *xcalloc(vx_t *x, size_t n, size_t size)
{
    if (n && size > SIZE_MAX / n) {
        oom(x);
        return NULL;
    }
    void *p = ah_arena_calloc(x->a, (n * size) != 0 ? n * size : 1);
    if (!p)
        oom(x);
    return p;
}

static void path_key(char out[PATH_LEN], const char *base, const char *key)
{
    char k[80];
    size_t n = strlen(key), o = 0;
    for (size_t i = 0; i < n && o < 64; i++)
        k[o++] = ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) ? '?' : key[i];
    if (n > 64) {
        memcpy(k + o, "...", 3);
        o += 3;
    }
    k[o] = '\0';
    snprintf(out, PATH_LEN, "%s%s%s", base, *base ? "." : "", k);
}

static void path_idx(char out[PATH_LEN], const char *base, size_t i)
{
    /* A path longer than PATH_LEN is cut: it only names a place in an error message. */
    int n = snprintf(out, PATH_LEN, "%s", base);
    if (n >= 0 && n < PATH_LEN)
        snprintf(out + n, PATH_LEN - (size_t)n, "[%lu]", (unsigned long)i);
}

static const char *got(char out[80], const ah_yaml_node_t *n)
{
    if (n->kind == AH_YAML_SCALAR)
        return shown(out, n->str);
    snprintf(out, 80, "a %s", ah_yaml_kind_name(n->kind));
    return out;
}

/* The value of key in map, or NULL when absent or null (`key:` / `key: null`). */
static const ah_yaml_node_t *field(const ah_yaml_node_t *map, const char *key)
{
    const ah_yaml_node_t *v = ah_yaml_map_get(map, key);
    return ah_yaml_is_null(v) ? NULL : v;
}

static int field_line(const ah_yaml_node_t *map, const char *key)
{
    const ah_yaml_pair_t *p = ah_yaml_map_pair(map, key);
    return p ? p->key_line : map->line;
}

static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Reports every key of map not in known (NULL-terminated), with a "did you mean". */
static void check_keys(vx_t *x, const ah_yaml_node_t *map, const char *path,
                       const char *const *known, const char *what)
{
    for (size_t i = 0; i < map->n; i++) {
        const ah_yaml_pair_t *pr = &map->pairs[i];
        if (strlen(pr->key) == pr->key_len && in_list(known, pr->key))
            continue;
        char p[PATH_LEN], list[512];
        path_key(p, path, pr->key);
        const char *best =
            strlen(pr->key) == pr->key_len ? ah_suggest(pr->key, known, list_len(known)) : NULL;
        if (best) {
            verr(x, pr->key_line, p, "unknown field (did you mean \"%s\"?)", best);
        } else {
            join_list(list, sizeof(list), known, list_len(known));
            verr(x, pr->key_line, p, "unknown field (known fields%s%s: %s)", what ? " for " : "",
                 what ? what : "", list);
        }
    }
}

static bool want_kind(vx_t *x, const ah_yaml_node_t *n, ah_yaml_kind_t kind, const char *path,
                      const char *hint)
{
    if (n->kind == kind)
        return true;
    char g[80];
    verr(x, n->line, path, "expected a %s%s%s, got %s", ah_yaml_kind_name(kind), hint ? " " : "",
         hint ? hint : "", got(g, n));
    return false;
}

static bool bool_text(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = false;
            return true;
        }
    }
    return false;
}

/* true/false as the YAML 1.2 core schema spells them. */
static bool core_bool(const char *s)
{
    static const char *const v[] = {"true", "True", "TRUE", "false", "False", "FALSE"};
    for (size_t i = 0; i < 6; i++)
        if (strcmp(s, v[i]) == 0)
            return true;
    return false;
}

/*
 * A string field. Plain numbers are taken as their text (`name: 2024`);
 * plain booleans are refused (YAML 1.1 readers would not agree on them).
 * Returns 1 and sets *out (arena copy), 0 when absent (n NULL/null), -1 when
 * reported.
 */
static int get_str(vx_t *x, const ah_yaml_node_t *n, const char *path, size_t max, const char **out)
{
    if (ah_yaml_is_null(n))
        return 0;
    if (n->kind != AH_YAML_SCALAR) {
        verr(x, n->line, path, "expected a string, got a %s", ah_yaml_kind_name(n->kind));
        return -1;
    }
    if (!n->quoted && core_bool(n->str)) {
        verr(x, n->line, path, "expected a string, got the boolean %s (quote it if you mean text)",
             n->str);
        return -1;
    }
    if (n->len != strlen(n->str)) {
        verr(x, n->line, path, "contains a NUL byte");
        return -1;
    }
    if (!utf8_ok(n->str, n->len)) {
        verr(x, n->line, path, "is not valid UTF-8");
        return -1;
    }
    if (n->len > max) {
        verr(x, n->line, path, "is %zu bytes long; the limit is %zu", n->len, max);
        return -1;
    }
    *out = xstrndup(x, n->str, n->len);
    return *out ? 1 : -1;
}

static int parse_ll(const char *s, long long *out)
{
    const char *p = s + (*s == '+' || *s == '-');
    if (!isdigit((unsigned char)*p))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int get_int(vx_t *x, const ah_yaml_node_t *n, const char *path, long long min, long long max,
                   long long *out)
{
    if (ah_yaml_is_null(n))
        return 0;
    char g[80];
    long long v;
    if (n->kind != AH_YAML_SCALAR || parse_ll(n->str, &v) || v < min || v > max) {
        verr(x, n->line, path, "expected an integer from %lld to %lld, got %s", min, max,
             got(g, n));
        return -1;
    }
    *out = v;
    return 1;
}

static void fmt_num(char *out, size_t n, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* A number, or with duration, also "500ms", "30s", "5m", "1h" (seconds). */
static int get_num(vx_t *x, const ah_yaml_node_t *n, const char *path, double min, double max,
                   bool duration, double *out)
{
    if (ah_yaml_is_null(n))
        return 0;
    double v = NAN;
    if (n->kind == AH_YAML_SCALAR && n->str[0] && !isspace((unsigned char)n->str[0])) {
        errno = 0;
        char *end;
        v = strtod(n->str, &end);
        if (errno || end == n->str || !isfinite(v) || isalpha((unsigned char)n->str[0]) ||
            strpbrk(n->str, "xX"))
            v = NAN;
        else if (*end && duration && strcmp(end, "ms") == 0)
            v /= 1000;
        else if (*end && duration && strcmp(end, "s") == 0)
            ;
        else if (*end && duration && strcmp(end, "m") == 0)
            v *= 60;
        else if (*end && duration && strcmp(end, "h") == 0)
            v *= 3600;
        else if (*end)
            v = NAN;
    }
    if (isnan(v) || v < min || v > max) {
        char g[80], lo[40], hi[40];
        fmt_num(lo, sizeof(lo), min);
        fmt_num(hi, sizeof(hi), max);
        verr(x, n->line, path, "expected %s from %s to %s%s, got %s",
             duration ? "a duration" : "a number", lo, hi,
             duration ? " seconds (like 30, 2.5, 500ms, 5m)" : "", got(g, n));
        return -1;
    }
    *out = v;
    return 1;
}

/* A byte count: an integer, or with k/M/G or KiB/MiB/GiB. */
static int get_size(vx_t *x, const ah_yaml_node_t *n, const char *path, double min, double max,
                    size_t *out)
{
    if (ah_yaml_is_null(n))
        return 0;
    double v = -1;
    if (n->kind == AH_YAML_SCALAR && isdigit((unsigned char)n->str[0])) {
        errno = 0;
        char *end;
        unsigned long long u = strtoull(n->str, &end, 10);
        static const struct {
            const char *sfx;
            double mult;
        } units[] = {{"", 1},           {"b", 1},           {"k", 1024},        {"kb", 1024},
                     {"kib", 1024},     {"m", MiB},         {"mb", MiB},        {"mib", MiB},
                     {"g", 1024 * MiB}, {"gb", 1024 * MiB}, {"gib", 1024 * MiB}};
        for (size_t i = 0; !errno && i < sizeof(units) / sizeof(units[0]); i++)
            if (strcasecmp(end, units[i].sfx) == 0)
                v = (double)u * units[i].mult;
    }
    if (v < min || v > max) {
        char g[80];
        verr(x, n->line, path, "expected a size from %.0f to %.0f bytes (or with KiB/MiB), got %s",
             min, max, got(g, n));
        return -1;
    }
    *out = (size_t)v;
    return 1;
}

static int get_bool(vx_t *x, const ah_yaml_node_t *n, const char *path, bool *out)
{
    if (ah_yaml_is_null(n))
        return 0;
    char g[80];
    if (n->kind != AH_YAML_SCALAR || !bool_text(n->str, out)) {
        verr(x, n->line, path, "expected true or false, got %s", got(g, n));
        return -1;
    }
    return 1;
}

/*
 * A sequence of strings, each at most max_len bytes, at most max_items of
 * them. Returns the number of items (arena array in *out, lines in *lines if
 * not NULL), 0 when absent, -1 when reported (bad items are reported too).
 */
static int get_str_list(vx_t *x, const ah_yaml_node_t *n, const char *path, size_t max_items,
                        size_t max_len, const char *const **out, int **lines)
{
    *out = NULL;
    if (lines)
        *lines = NULL;
    if (ah_yaml_is_null(n))
        return 0;
    if (!want_kind(x, n, AH_YAML_SEQ, path, "of strings"))
        return -1;
    if (n->n > max_items) {
        verr(x, n->line, path, "has %zu items; the limit is %zu", n->n, max_items);
        return -1;
    }
    const char **v = xcalloc(x, n->n + 1, sizeof(*v));
    int *ln = lines ? xcalloc(x, n->n + 1, sizeof(*ln)) : NULL;
    if (!v || (lines && !ln))
        return -1;
    int bad = 0;
    for (size_t i = 0; i < n->n; i++) {
        char p[PATH_LEN];
        path_idx(p, path, i);
        const ah_yaml_node_t *it = n->items[i];
        if (ah_yaml_is_null(it)) {
            verr(x, it->line, p, "expected a string, got null");
            bad = 1;
            continue;
        }
        if (get_str(x, it, p, max_len, &v[i]) < 0)
            bad = 1;
        if (ln)
            ln[i] = it->line;
    }
    if (bad)
        return -1;
    *out = v;
    if (lines)
        *lines = ln;
    return (int)n->n;
}

/* A mapping of string -> string, keys checked by key_ok. Sorted by key when sort. */
static int get_str_map(vx_t *x, const ah_yaml_node_t *n, const char *path, size_t max_items,
                       size_t max_len, bool (*key_ok)(const char *), const char *key_rule,
                       bool sort, const ah_agent_kv_t **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (ah_yaml_is_null(n))
        return 0;
    if (!want_kind(x, n, AH_YAML_MAP, path, "of names to strings"))
        return -1;
    if (n->n > max_items) {
        verr(x, n->line, path, "has %zu entries; the limit is %zu", n->n, max_items);
        return -1;
    }
    ah_agent_kv_t *v = xcalloc(x, n->n + 1, sizeof(*v));
    if (!v)
        return -1;
    int bad = 0;
    for (size_t i = 0; i < n->n; i++) {
        const ah_yaml_pair_t *pr = &n->pairs[i];
        char p[PATH_LEN], g[80];
        path_key(p, path, pr->key);
        if (strlen(pr->key) != pr->key_len || !key_ok(pr->key)) {
            verr(x, pr->key_line, p, "invalid name %s (%s)", shown(g, pr->key), key_rule);
            bad = 1;
            continue;
        }
        v[i].key = xstrndup(x, pr->key, pr->key_len);
        if (ah_yaml_is_null(pr->value)) {
            v[i].value = "";
            continue;
        }
        if (get_str(x, pr->value, p, max_len, &v[i].value) < 0) {
            bad = 1;
            continue;
        }
        if (has_ctl(v[i].value)) {
            verr(x, pr->value->line, p, "contains control characters (newline, tab ...)");
            bad = 1;
        }
    }
    if (bad || x->oom)
        return -1;
    if (sort) {
        for (size_t i = 1; i < n->n; i++) {
            ah_agent_kv_t e = v[i];
            size_t j = i;
            while (j > 0 && strcmp(v[j - 1].key, e.key) > 0) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = e;
        }
    }
    *out = v;
    *nout = n->n;
    return 1;
}

/* ------------------------------------------------------ YAML node -> JSON */

static bool plain_int(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    if (!*p)
        return false;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

/* YAML 1.2 core schema float (without .inf/.nan, which JSON cannot hold). */
static bool plain_float(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    bool digits = false;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits = true;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits = true;
        }
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

/*
 * Converts a node to JSON with the YAML 1.2 core schema (plain null, true,
 * false, integers and floats are typed; everything else is a string).
 * *budget bounds the bytes of text produced (aliases can repeat a subtree).
 * NULL with *why set on failure.
 */
static json_t *node_to_json(const ah_yaml_node_t *n, size_t *budget, const char **why)
{
    if (n->kind == AH_YAML_SCALAR) {
        if (n->len + 8 > *budget) {
            *why = "is too large";
            return NULL;
        }
        *budget -= n->len + 8;
        if (!n->quoted) {
            bool b;
            if (ah_yaml_is_null(n))
                return json_null();
            if (core_bool(n->str)) {
                bool_text(n->str, &b);
                return json_boolean(b);
            }
            long long ll;
            if (plain_int(n->str) && parse_ll(n->str, &ll) == 0)
                return json_integer(ll);
            if (plain_float(n->str)) {
                double d = strtod(n->str, NULL);
                if (isfinite(d))
                    return json_real(d);
            }
        }
        if (n->len != strlen(n->str) || !utf8_ok(n->str, n->len)) {
            *why = "holds a string that is not valid UTF-8 text";
            return NULL;
        }
        json_t *s = json_stringn(n->str, n->len);
        if (!s)
            *why = "out of memory";
        return s;
    }
    json_t *out = n->kind == AH_YAML_MAP ? json_object() : json_array();
    if (!out) {
        *why = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < n->n; i++) {
        const ah_yaml_node_t *child = n->kind == AH_YAML_MAP ? n->pairs[i].value : n->items[i];
        json_t *c = node_to_json(child, budget, why);
        if (!c) {
            json_decref(out);
            return NULL;
        }
        int rc;
        if (n->kind == AH_YAML_MAP) {
            const ah_yaml_pair_t *pr = &n->pairs[i];
            if (pr->key_len != strlen(pr->key) || !utf8_ok(pr->key, pr->key_len)) {
                json_decref(c);
                json_decref(out);
                *why = "holds a key that is not valid UTF-8 text";
                return NULL;
            }
            rc = json_object_set_new(out, pr->key, c);
        } else {
            rc = json_array_append_new(out, c);
        }
        if (rc) {
            json_decref(out);
            *why = "out of memory";
            return NULL;
        }
    }
    return out;
}

/* ------------------------------------------------------ JSON -> YAML nodes */

typedef struct jconv {
    ah_arena_t *a;
    int depth;
} jconv_t;

static ah_yaml_node_t *json_to_node(jconv_t *c, json_t *j, int *err)
{
    ah_yaml_node_t *n = ah_arena_calloc(c->a, sizeof(*n));
    if (!n) {
        *err = -ENOMEM;
        return NULL;
    }
    char num[64];
    const char *text = NULL;
    size_t len = 0;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (++c->depth > MAX_DEPTH) {
            *err = -E2BIG;
            return NULL;
        }
        n->kind = AH_YAML_MAP;
        n->n = json_object_size(j);
        n->pairs = ah_arena_calloc(c->a, (n->n ? n->n : 1) * sizeof(*n->pairs));
        if (!n->pairs) {
            *err = -ENOMEM;
            return NULL;
        }
        size_t i = 0;
        const char *key;
        size_t klen;
        json_t *v;
        void *tmp;
        json_object_keylen_foreach_safe(j, tmp, key, klen, v)
        {
            n->pairs[i].key = ah_arena_strndup(c->a, key, klen);
            n->pairs[i].key_len = klen;
            n->pairs[i].value = json_to_node(c, v, err);
            if (!n->pairs[i].key || !n->pairs[i].value) {
                if (!*err)
                    *err = -ENOMEM;
                return NULL;
            }
            i++;
        }
        c->depth--;
        return n;
    }
    case JSON_ARRAY: {
        if (++c->depth > MAX_DEPTH) {
            *err = -E2BIG;
            return NULL;
        }
        n->kind = AH_YAML_SEQ;
        n->n = json_array_size(j);
        n->items = ah_arena_calloc(c->a, (n->n ? n->n : 1) * sizeof(*n->items));
        if (!n->items) {
            *err = -ENOMEM;
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++) {
            n->items[i] = json_to_node(c, json_array_get(j, i), err);
            if (!n->items[i])
                return NULL;
        }
        c->depth--;
        return n;
    }
    case JSON_STRING:
        n->quoted = true;
        text = json_string_value(j);
        len = json_string_length(j);
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        text = num;
        len = strlen(num);
        break;
    case JSON_REAL:
        fmt_num(num, sizeof(num), json_real_value(j));
        if (!strpbrk(num, ".eE")) {
            size_t l = strlen(num);
            if (l + 2 < sizeof(num))
                memcpy(num + l, ".0", 3); /* keeps it a float, not an integer */
        }
        text = num;
        len = strlen(num);
        break;
    case JSON_TRUE:
        text = "true";
        len = 4;
        break;
    case JSON_FALSE:
        text = "false";
        len = 5;
        break;
    case JSON_NULL:
        text = "null";
        len = 4;
        break;
    }
    n->kind = AH_YAML_SCALAR;
    n->str = ah_arena_strndup(c->a, text, len);
    n->len = len;
    if (!n->str) {
        *err = -ENOMEM;
        return NULL;
    }
    return n;
}

/* ------------------------------------------------------------- spec walk */

static const char *const top_keys[] = {"apiVersion", "kind", "metadata", "spec", NULL};
static const char *const meta_keys[] = {"name", "labels", NULL};
static const char *const spec_keys[] = {
    "model",  "instructions", "tools",  "handoffs",    "approval",
    "limits", "session",      "canary", "webhook_url", NULL};
static const char *const http_keys[] = {
    "type",   "name",    "description", "parameters",         "url",
    "method", "headers", "timeout_s",   "max_response_bytes", NULL};
static const char *const mcp_keys[] = {"type", "server", "allow", "prefix", "timeout_s", NULL};
static const char *const exec_keys[] = {"type",    "name",    "description", "parameters",
                                        "command", "sandbox", NULL};
static const char *const server_keys[] = {"url", "command", "env", NULL};
static const char *const sandbox_keys[] = {"network",   "memory_mb",        "cpu_s",
                                           "timeout_s", "max_output_bytes", NULL};
static const char *const approval_keys[] = {"tools", "timeout_s", NULL};
static const char *const limits_keys[] = {"max_turns",
                                          "max_tokens",
                                          "max_cost_usd",
                                          "timeout_s",
                                          "max_tool_calls_per_turn",
                                          "loop_detect",
                                          "concurrency",
                                          NULL};
static const char *const session_keys[] = {"ttl_s", "max_messages", NULL};
static const char *const canary_keys[] = {"version", "weight", NULL};
static const char *const tool_types[] = {"http", "mcp", "exec", NULL};
static const char *const http_methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};

const char *ah_agent_tool_type_name(ah_tool_type_t t)
{
    switch (t) {
    case AH_TOOL_HTTP:
        return "http";
    case AH_TOOL_MCP:
        return "mcp";
    case AH_TOOL_EXEC:
        return "exec";
    }
    return "?";
}

static bool url_ok(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

/* parameters: a JSON schema object; kept as compact, key-sorted JSON text. */
static void walk_parameters(vx_t *x, const ah_yaml_node_t *n, const char *path, const char **out,
                            json_t **schema)
{
    *out = DEFAULT_PARAMETERS;
    *schema = NULL;
    if (ah_yaml_is_null(n))
        return;
    if (!want_kind(x, n, AH_YAML_MAP, path, "(a JSON schema object)"))
        return;
    size_t budget = PARAMETERS_MAX;
    const char *why = NULL;
    json_t *j = node_to_json(n, &budget, &why);
    if (!j) {
        if (why && strcmp(why, "is too large") == 0)
            verr(x, n->line, path, "is larger than %d KiB", PARAMETERS_MAX / 1024);
        else
            verr(x, n->line, path, "%s", why ? why : "cannot be converted to JSON");
        return;
    }
    json_t *type = json_object_get(j, "type");
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "object") == 0)) {
        char p[PATH_LEN];
        path_key(p, path, "type");
        const ah_yaml_node_t *tn = ah_yaml_map_get(n, "type");
        verr(x, tn ? tn->line : n->line, p,
             "must be \"object\": tool arguments are a JSON object (put fields under "
             "properties)");
        json_decref(j);
        return;
    }
    json_t *props = json_object_get(j, "properties");
    if (props && !json_is_object(props)) {
        char p[PATH_LEN];
        path_key(p, path, "properties");
        verr(x, field_line(n, "properties"), p, "expected a mapping of argument names to schemas");
        json_decref(j);
        return;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    if (!text) {
        json_decref(j);
        oom(x);
        return;
    }
    if (strlen(text) > PARAMETERS_MAX) {
        verr(x, n->line, path, "is larger than %d KiB", PARAMETERS_MAX / 1024);
    } else {
        *out = xstrndup(x, text, strlen(text));
        *schema = j;
        j = NULL;
    }
    free(text);
    json_decref(j);
}

/* Every {name} placeholder of an http tool's URL must be an argument. */
static void check_placeholders(vx_t *x, const char *url, int line, const char *path, json_t *schema)
{
    json_t *props = schema ? json_object_get(schema, "properties") : NULL;
    for (const char *p = strchr(url, '{'); p; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        if (!end) {
            verr(x, line, path, "unclosed \"{\" (placeholders look like {id})");
            return;
        }
        size_t n = (size_t)(end - p - 1);
        char name[AH_AGENT_TOOL_NAME_MAX + 1];
        if (n == 0 || n > AH_AGENT_TOOL_NAME_MAX) {
            verr(x, line, path, "empty or overlong placeholder (placeholders look like {id})");
            return;
        }
        memcpy(name, p + 1, n);
        name[n] = '\0';
        if (!props || !json_object_get(props, name))
            verr(x, line, path,
                 "placeholder {%s} is not an argument (add %s to parameters.properties)", name,
                 name);
    }
}

static void walk_sandbox(vx_t *x, const ah_yaml_node_t *n, const char *path, ah_agent_sandbox_t *sb)
{
    *sb = (ah_agent_sandbox_t){false, false, 256, 10, 30, 1024 * 1024};
    if (ah_yaml_is_null(n))
        return;
    if (n->kind == AH_YAML_SCALAR) {
        if (strcmp(n->str, SANDBOX_NONE) == 0) {
            sb->none = true;
            return;
        }
        char g[80];
        verr(x, n->line, path,
             "expected a mapping of sandbox limits, or none (to run without a sandbox), got %s",
             got(g, n));
        return;
    }
    if (!want_kind(x, n, AH_YAML_MAP, path, "of sandbox limits"))
        return;
    check_keys(x, n, path, sandbox_keys, NULL);
    char p[PATH_LEN];
    long long ll;
    path_key(p, path, "network");
    get_bool(x, field(n, "network"), p, &sb->network);
    path_key(p, path, "memory_mb");
    if (get_int(x, field(n, "memory_mb"), p, 16, 65536, &ll) > 0)
        sb->memory_mb = (int)ll;
    path_key(p, path, "cpu_s");
    get_num(x, field(n, "cpu_s"), p, 0.1, 3600, true, &sb->cpu_s);
    path_key(p, path, "timeout_s");
    get_num(x, field(n, "timeout_s"), p, 0.1, 3600, true, &sb->timeout_s);
    path_key(p, path, "max_output_bytes");
    get_size(x, field(n, "max_output_bytes"), p, 1024, 64 * MiB, &sb->max_output_bytes);
}

/* A command: a non-empty argv list. */
static void walk_command(vx_t *x, const ah_yaml_node_t *parent, const char *key, const char *path,
                         const char *const **argv, size_t *argc, bool required)
{
    const ah_yaml_node_t *n = field(parent, key);
    char p[PATH_LEN];
    path_key(p, path, key);
    if (!n) {
        if (required)
            verr(x, field_line(parent, key), p,
                 "required field is missing (the program and its arguments, like "
                 "[\"python3\", \"-\"])");
        return;
    }
    int c = get_str_list(x, n, p, MAX_ARGS, ARG_MAX_LEN, argv, NULL);
    if (c == 0)
        verr(x, n->line, p, "must name the program to run (like [\"python3\", \"-\"])");
    else if (c > 0 && !(*argv)[0][0])
        verr(x, n->line, p, "the program name (first item) is empty");
    *argc = c > 0 ? (size_t)c : 0;
}

static void walk_tool(vx_t *x, const ah_yaml_node_t *n, const char *path, ah_agent_tool_t *t,
                      bool *skip)
{
    *skip = true;
    t->line = n->line;
    if (!want_kind(x, n, AH_YAML_MAP, path, "(a tool: { type: http | mcp | exec, ... })"))
        return;
    char p[PATH_LEN], g[80];
    path_key(p, path, "type");
    const ah_yaml_node_t *tn = field(n, "type");
    const char *type = NULL;
    if (!tn) {
        verr(x, field_line(n, "type"), p, "required field is missing (known: http, mcp, exec)");
        return;
    }
    if (get_str(x, tn, p, 64, &type) <= 0)
        return;
    if (strcmp(type, "http") == 0) {
        t->type = AH_TOOL_HTTP;
    } else if (strcmp(type, "mcp") == 0) {
        t->type = AH_TOOL_MCP;
    } else if (strcmp(type, "exec") == 0) {
        t->type = AH_TOOL_EXEC;
    } else {
        char list[64];
        join_list(list, sizeof(list), tool_types, 3);
        verr(x, tn->line, p, "unknown tool type %s (known: %s)", shown(g, type), list);
        return;
    }
    *skip = false;
    const char *const *keys =
        t->type == AH_TOOL_HTTP ? http_keys : (t->type == AH_TOOL_MCP ? mcp_keys : exec_keys);
    char what[32];
    snprintf(what, sizeof(what), "%s tools", type);
    check_keys(x, n, path, keys, what);
    t->description = "";
    t->parameters = DEFAULT_PARAMETERS;
    t->timeout_s = 30;

    json_t *schema = NULL;
    if (t->type != AH_TOOL_MCP) {
        path_key(p, path, "name");
        const ah_yaml_node_t *nn = field(n, "name");
        if (!nn)
            verr(x, field_line(n, "name"), p,
                 "required field is missing (the name the model calls the tool by)");
        else if (get_str(x, nn, p, 256, &t->name) > 0 &&
                 !tool_name_ok(t->name, AH_AGENT_TOOL_NAME_MAX))
            verr(x, nn->line, p, "invalid tool name %s (1-64 of A-Z a-z 0-9 _ -)",
                 shown(g, t->name));
        path_key(p, path, "description");
        get_str(x, field(n, "description"), p, DESCRIPTION_MAX, &t->description);
        path_key(p, path, "parameters");
        walk_parameters(x, field(n, "parameters"), p, &t->parameters, &schema);
    }

    if (t->type == AH_TOOL_HTTP) {
        path_key(p, path, "url");
        const ah_yaml_node_t *un = field(n, "url");
        if (!un) {
            verr(x, field_line(n, "url"), p,
                 "required field is missing (the endpoint: http://host/path/{arg})");
        } else if (get_str(x, un, p, URL_MAX, &t->http.url) > 0) {
            if (!url_ok(t->http.url) || has_ctl(t->http.url) || strchr(t->http.url, ' '))
                verr(x, un->line, p, "expected an http:// or https:// URL, got %s",
                     shown(g, t->http.url));
            else
                check_placeholders(x, t->http.url, un->line, p, schema);
        }
        t->http.method = "GET";
        path_key(p, path, "method");
        const ah_yaml_node_t *mn = field(n, "method");
        const char *m = NULL;
        if (get_str(x, mn, p, 16, &m) > 0) {
            size_t i;
            for (i = 0; http_methods[i] && strcasecmp(http_methods[i], m) != 0; i++)
                ;
            if (http_methods[i])
                t->http.method = http_methods[i];
            else
                verr(x, mn->line, p, "unknown method %s (known: GET, POST, PUT, PATCH, DELETE)",
                     shown(g, m));
        }
        path_key(p, path, "headers");
        get_str_map(x, field(n, "headers"), p, MAX_HEADERS, HEADER_VALUE_MAX, header_name_ok,
                    "an HTTP header name", false, &t->http.headers, &t->http.n_headers);
        path_key(p, path, "timeout_s");
        get_num(x, field(n, "timeout_s"), p, 0.001, 3600, true, &t->timeout_s);
        t->http.max_response_bytes = 1024 * 1024;
        path_key(p, path, "max_response_bytes");
        get_size(x, field(n, "max_response_bytes"), p, 1, 64 * MiB, &t->http.max_response_bytes);
    } else if (t->type == AH_TOOL_MCP) {
        t->mcp.prefix = "";
        path_key(p, path, "server");
        const ah_yaml_node_t *sn = field(n, "server");
        if (!sn) {
            verr(x, field_line(n, "server"), p,
                 "required field is missing ({ url: http://host/mcp } or { command: [...] })");
        } else if (want_kind(x, sn, AH_YAML_MAP, p, "({ url: ... } or { command: [...] })")) {
            char sp[PATH_LEN];
            check_keys(x, sn, p, server_keys, NULL);
            const ah_yaml_node_t *su = field(sn, "url"), *sc = field(sn, "command");
            if (su && sc) {
                verr(x, sn->line, p, "give either url or command, not both");
            } else if (!su && !sc) {
                verr(x, sn->line, p,
                     "needs url (an MCP server over HTTP) or command (one started over stdio)");
            } else if (su) {
                path_key(sp, p, "url");
                if (get_str(x, su, sp, URL_MAX, &t->mcp.url) > 0 &&
                    (!url_ok(t->mcp.url) || has_ctl(t->mcp.url) || strchr(t->mcp.url, ' ')))
                    verr(x, su->line, sp, "expected an http:// or https:// URL, got %s",
                         shown(g, t->mcp.url));
                if (field(sn, "env")) {
                    path_key(sp, p, "env");
                    verr(x, field_line(sn, "env"), sp,
                         "env is for servers started with command, not url");
                }
            } else {
                walk_command(x, sn, "command", p, &t->mcp.command, &t->mcp.n_command, true);
                path_key(sp, p, "env");
                get_str_map(x, field(sn, "env"), sp, MAX_ENV, ENV_VALUE_MAX, env_name_ok,
                            "an environment variable name: A-Z a-z 0-9 _", false, &t->mcp.env,
                            &t->mcp.n_env);
            }
        }
        path_key(p, path, "prefix");
        const ah_yaml_node_t *pn = field(n, "prefix");
        if (get_str(x, pn, p, 256, &t->mcp.prefix) > 0 && t->mcp.prefix[0] &&
            !tool_name_ok(t->mcp.prefix, PREFIX_MAX))
            verr(x, pn->line, p, "invalid prefix %s (1-%d of A-Z a-z 0-9 _ -)",
                 shown(g, t->mcp.prefix), PREFIX_MAX);
        path_key(p, path, "allow");
        int *lines = NULL;
        int c = get_str_list(x, field(n, "allow"), p, MAX_ALLOW, 256, &t->mcp.allow, &lines);
        for (int i = 0; i < c; i++) {
            char ip[PATH_LEN];
            path_idx(ip, p, (size_t)i);
            if (!tool_name_ok(t->mcp.allow[i], AH_AGENT_TOOL_NAME_MAX))
                verr(x, lines[i], ip, "invalid tool name %s (1-64 of A-Z a-z 0-9 _ -)",
                     shown(g, t->mcp.allow[i]));
            else if (strlen(t->mcp.prefix) + strlen(t->mcp.allow[i]) > AH_AGENT_TOOL_NAME_MAX)
                verr(x, lines[i], ip, "prefix + name is longer than %d characters",
                     AH_AGENT_TOOL_NAME_MAX);
        }
        t->mcp.n_allow = c > 0 ? (size_t)c : 0;
        path_key(p, path, "timeout_s");
        get_num(x, field(n, "timeout_s"), p, 0.001, 3600, true, &t->timeout_s);
    } else {
        walk_command(x, n, "command", path, &t->exec.command, &t->exec.n_command, true);
        path_key(p, path, "sandbox");
        walk_sandbox(x, field(n, "sandbox"), p, &t->exec.sandbox);
        t->timeout_s = t->exec.sandbox.timeout_s;
    }
    json_decref(schema);
}

/* Names a tool entry gives the model: its name, or prefix+allow for mcp. */
typedef struct tname {
    const char *name; /* arena */
    size_t tool;
} tname_t;

static void walk_tools(vx_t *x, const ah_yaml_node_t *n, const char *path, ah_agent_spec_t *s,
                       bool *open_mcp, const char *const **open_prefixes, size_t *n_open)
{
    *open_mcp = false;
    *n_open = 0;
    if (ah_yaml_is_null(n))
        return;
    if (!want_kind(x, n, AH_YAML_SEQ, path, "of tools"))
        return;
    if (n->n > AH_AGENT_MAX_TOOLS) {
        verr(x, n->line, path, "has %zu tools; the limit is %d", n->n, AH_AGENT_MAX_TOOLS);
        return;
    }
    ah_agent_tool_t *tools = xcalloc(x, n->n + 1, sizeof(*tools));
    const char **prefixes = xcalloc(x, n->n + 1, sizeof(*prefixes));
    if (!tools || !prefixes)
        return;
    size_t max_names = 0;
    for (size_t i = 0; i < n->n; i++) {
        char p[PATH_LEN];
        path_idx(p, path, i);
        bool skip;
        walk_tool(x, n->items[i], p, &tools[i], &skip);
        if (!skip && tools[i].type == AH_TOOL_MCP) {
            max_names += tools[i].mcp.n_allow;
            if (tools[i].mcp.n_allow == 0) {
                *open_mcp = true;
                prefixes[(*n_open)++] = tools[i].mcp.prefix ? tools[i].mcp.prefix : "";
            }
        } else if (!skip) {
            max_names++;
        }
    }
    s->tools = tools;
    s->n_tools = n->n;
    *open_prefixes = prefixes;

    /* Duplicate names within the agent: http/exec names and every allowed MCP name. */
    tname_t *names = xcalloc(x, max_names + 1, sizeof(*names));
    if (!names)
        return;
    size_t nn = 0;
    for (size_t i = 0; i < n->n; i++) {
        const ah_agent_tool_t *t = &tools[i];
        size_t k = t->type == AH_TOOL_MCP ? t->mcp.n_allow : (t->type && t->name ? 1 : 0);
        for (size_t a = 0; a < k && nn < max_names; a++) {
            const char *name = t->name;
            char p[PATH_LEN];
            int line = t->line;
            if (t->type == AH_TOOL_MCP) {
                ah_buf_t b = AH_BUF_INIT;
                ah_buf_printf(&b, "%s%s", t->mcp.prefix, t->mcp.allow[a]);
                name = b.data ? xstrndup(x, b.data, b.len) : NULL;
                ah_buf_free(&b);
                if (!name)
                    return;
                char tp[PATH_LEN], ap[PATH_LEN];
                path_idx(tp, path, i);
                path_key(ap, tp, "allow");
                path_idx(p, ap, a);
                const ah_yaml_node_t *al = field(n->items[i], "allow");
                if (al && a < al->n)
                    line = al->items[a]->line;
            } else {
                char tp[PATH_LEN];
                path_idx(tp, path, i);
                path_key(p, tp, "name");
                const ah_yaml_node_t *nm = field(n->items[i], "name");
                if (nm)
                    line = nm->line;
            }
            for (size_t j = 0; j < nn; j++) {
                if (strcmp(names[j].name, name) == 0) {
                    char g[80];
                    verr(x, line, p,
                         "duplicate tool name %s (also %s[%zu]); names must be unique "
                         "within an agent",
                         shown(g, name), path, names[j].tool);
                    break;
                }
            }
            names[nn++] = (tname_t){name, i};
        }
    }
}

static bool tool_name_known(const ah_agent_spec_t *s, const char *name, bool open_mcp,
                            const char *const *open_prefixes, size_t n_open)
{
    for (size_t i = 0; i < s->n_tools; i++) {
        const ah_agent_tool_t *t = &s->tools[i];
        if (t->type == AH_TOOL_MCP) {
            size_t pl = strlen(t->mcp.prefix);
            for (size_t a = 0; a < t->mcp.n_allow; a++)
                if (strncmp(name, t->mcp.prefix, pl) == 0 &&
                    strcmp(name + pl, t->mcp.allow[a]) == 0)
                    return true;
        } else if (t->name && strcmp(t->name, name) == 0) {
            return true;
        }
    }
    /* An MCP server without an allow list may offer any name (with its prefix). */
    for (size_t i = 0; open_mcp && i < n_open; i++)
        if (strncmp(name, open_prefixes[i], strlen(open_prefixes[i])) == 0)
            return true;
    return false;
}

static void walk_approval(vx_t *x, const ah_yaml_node_t *n, ah_agent_spec_t *s, bool open_mcp,
                          const char *const *open_prefixes, size_t n_open)
{
    if (ah_yaml_is_null(n))
        return;
    if (!want_kind(x, n, AH_YAML_MAP, "spec.approval", "({ tools: [names] })"))
        return;
    check_keys(x, n, "spec.approval", approval_keys, NULL);
    get_num(x, field(n, "timeout_s"), "spec.approval.timeout_s", 1, 30 * 86400.0, true,
            &s->approval_timeout_s);
    int *lines = NULL;
    int c = get_str_list(x, field(n, "tools"), "spec.approval.tools", AH_AGENT_MAX_TOOLS * 4, 256,
                         &s->approval_tools, &lines);
    if (c <= 0)
        return;
    s->n_approval_tools = (size_t)c;
    const char *cands[AH_AGENT_MAX_TOOLS + 1];
    size_t nc = 0;
    for (size_t i = 0; i < s->n_tools && nc < AH_AGENT_MAX_TOOLS; i++)
        if (s->tools[i].name)
            cands[nc++] = s->tools[i].name;
    for (int i = 0; i < c; i++) {
        char p[PATH_LEN], g[80];
        path_idx(p, "spec.approval.tools", (size_t)i);
        const char *name = s->approval_tools[i];
        for (int j = 0; j < i; j++)
            if (strcmp(s->approval_tools[j], name) == 0)
                verr(x, lines[i], p, "%s is listed twice", shown(g, name));
        if (tool_name_known(s, name, open_mcp, open_prefixes, n_open))
            continue;
        const char *best = ah_suggest(name, cands, nc);
        if (best)
            verr(x, lines[i], p, "unknown tool %s (did you mean \"%s\"?)", shown(g, name), best);
        else
            verr(x, lines[i], p, "unknown tool %s (not a tool of this agent)", shown(g, name));
    }
}

static void walk_limits(vx_t *x, const ah_yaml_node_t *n, ah_agent_limits_t *l)
{
    *l = (ah_agent_limits_t){10, 0, 0, 300, 32, 3, 0};
    if (ah_yaml_is_null(n))
        return;
    if (!want_kind(x, n, AH_YAML_MAP, "spec.limits", "of limits"))
        return;
    check_keys(x, n, "spec.limits", limits_keys, NULL);
    long long v;
    if (get_int(x, field(n, "max_turns"), "spec.limits.max_turns", 1, 1000, &v) > 0)
        l->max_turns = (int)v;
    if (get_int(x, field(n, "max_tokens"), "spec.limits.max_tokens", 0, 1000000000LL, &v) > 0)
        l->max_tokens = v;
    get_num(x, field(n, "max_cost_usd"), "spec.limits.max_cost_usd", 0, 1e6, false,
            &l->max_cost_usd);
    get_num(x, field(n, "timeout_s"), "spec.limits.timeout_s", 1, 7 * 86400, true, &l->timeout_s);
    if (get_int(x, field(n, "max_tool_calls_per_turn"), "spec.limits.max_tool_calls_per_turn", 1,
                1024, &v) > 0)
        l->max_tool_calls_per_turn = (int)v;
    if (get_int(x, field(n, "loop_detect"), "spec.limits.loop_detect", 0, 100, &v) > 0)
        l->loop_detect = (int)v;
    if (get_int(x, field(n, "concurrency"), "spec.limits.concurrency", 0, 1000000, &v) > 0)
        l->concurrency = (int)v;
}

static void walk_session(vx_t *x, const ah_yaml_node_t *n, ah_agent_spec_t *s)
{
    s->session.ttl_s = 86400;
    s->session.max_messages = 200;
    if (ah_yaml_is_null(n))
        return;
    if (!want_kind(x, n, AH_YAML_MAP, "spec.session", "of session settings"))
        return;
    check_keys(x, n, "spec.session", session_keys, NULL);
    long long v;
    get_num(x, field(n, "ttl_s"), "spec.session.ttl_s", 1, 365 * 86400.0, true, &s->session.ttl_s);
    if (get_int(x, field(n, "max_messages"), "spec.session.max_messages", 1, 100000, &v) > 0)
        s->session.max_messages = (int)v;
}

static void walk_canary(vx_t *x, const ah_yaml_node_t *n, ah_agent_spec_t *s)
{
    if (ah_yaml_is_null(n))
        return;
    s->canary_line = n->line;
    if (!want_kind(x, n, AH_YAML_MAP, "spec.canary", "({ version: N, weight: 0-100 })"))
        return;
    check_keys(x, n, "spec.canary", canary_keys, NULL);
    long long v = 0, w = 0;
    const ah_yaml_node_t *vn = field(n, "version"), *wn = field(n, "weight");
    if (!vn)
        verr(x, field_line(n, "version"), "spec.canary.version",
             "required field is missing (the stored version that gets part of the runs)");
    else if (get_int(x, vn, "spec.canary.version", 1, INT64_MAX / 2, &v) > 0)
        s->canary_line = vn->line;
    if (!wn)
        verr(x, field_line(n, "weight"), "spec.canary.weight",
             "required field is missing (percent of runs, 0-100)");
    else
        get_int(x, wn, "spec.canary.weight", 0, 100, &w);
    s->canary.version = v;
    s->canary.weight = (int)w;
}

static void walk_handoffs(vx_t *x, const ah_yaml_node_t *n, ah_agent_spec_t *s)
{
    int *lines = NULL;
    int c = get_str_list(x, n, "spec.handoffs", AH_AGENT_MAX_HANDOFFS, 256, &s->handoffs, &lines);
    if (c <= 0)
        return;
    s->n_handoffs = (size_t)c;
    s->handoff_lines = lines;
    for (int i = 0; i < c; i++) {
        char p[PATH_LEN], g[80];
        path_idx(p, "spec.handoffs", (size_t)i);
        const char *h = s->handoffs[i];
        if (!ah_agent_name_ok(h)) {
            verr(x, lines[i], p, "invalid agent name %s ([a-z0-9][a-z0-9_-]{0,63})", shown(g, h));
            continue;
        }
        if (s->name && strcmp(h, s->name) == 0)
            verr(x, lines[i], p, "an agent cannot hand off to itself");
        for (int j = 0; j < i; j++)
            if (strcmp(s->handoffs[j], h) == 0)
                verr(x, lines[i], p, "%s is listed twice", shown(g, h));
    }
}

static void walk_metadata(vx_t *x, const ah_yaml_node_t *doc, ah_agent_spec_t *s)
{
    const ah_yaml_node_t *m = field(doc, "metadata");
    if (!m) {
        verr(x, field_line(doc, "metadata"), "metadata",
             "required field is missing (metadata: { name: my-agent })");
        return;
    }
    if (!want_kind(x, m, AH_YAML_MAP, "metadata", "({ name: ..., labels: {...} })"))
        return;
    check_keys(x, m, "metadata", meta_keys, NULL);
    const ah_yaml_node_t *nn = field(m, "name");
    char g[80];
    if (!nn) {
        verr(x, field_line(m, "name"), "metadata.name", "required field is missing");
    } else if (get_str(x, nn, "metadata.name", 256, &s->name) > 0 && !ah_agent_name_ok(s->name)) {
        verr(x, nn->line, "metadata.name",
             "invalid agent name %s (1-64 characters: lowercase letters, digits, _ and -, "
             "starting with a letter or digit)",
             shown(g, s->name));
        s->name = NULL;
    }
    get_str_map(x, field(m, "labels"), "metadata.labels", AH_AGENT_MAX_LABELS, LABEL_VALUE_MAX,
                label_key_ok, "1-63 of A-Z a-z 0-9 . _ / -, starting with a letter or digit", true,
                &s->labels, &s->n_labels);
}

/* The same check as a run's webhook_url (webhooks.c), so an agent never stores a URL that
 * every delivery would dead-letter. */
static void walk_webhook(vx_t *x, const ah_yaml_node_t *n, ah_agent_spec_t *s)
{
    const char *url = NULL;
    char g[80];
    if (get_str(x, n, "spec.webhook_url", AH_WEBHOOK_URL_MAX, &url) <= 0)
        return;
    if (!ah_webhook_url_ok(url)) {
        verr(x, n->line, "spec.webhook_url",
             "expected an http:// or https:// URL with a host, got %s", shown(g, url));
        return;
    }
    s->webhook_url = url;
}

static void walk_spec(vx_t *x, const ah_yaml_node_t *doc, ah_agent_spec_t *s)
{
    const ah_yaml_node_t *sp = field(doc, "spec");
    char g[80];
    if (!sp) {
        verr(x, field_line(doc, "spec"), "spec",
             "required field is missing (spec: { model: ..., instructions: ..., tools: [...] })");
        return;
    }
    if (!want_kind(x, sp, AH_YAML_MAP, "spec", "of agent settings"))
        return;
    check_keys(x, sp, "spec", spec_keys, NULL);

    const ah_yaml_node_t *mn = field(sp, "model");
    s->model_line = field_line(sp, "model");
    if (!mn) {
        verr(x, field_line(sp, "model"), "spec.model",
             "required field is missing (a model name or alias from the configuration)");
    } else if (get_str(x, mn, "spec.model", MODEL_NAME_MAX, &s->model) > 0) {
        s->model_line = mn->line;
        if (!s->model[0] || has_ctl(s->model)) {
            verr(x, mn->line, "spec.model", "expected a model name, got %s", shown(g, s->model));
            s->model = NULL;
        }
    }
    s->instructions = "";
    get_str(x, field(sp, "instructions"), "spec.instructions", AH_AGENT_INSTRUCTIONS_MAX,
            &s->instructions);

    bool open_mcp = false;
    const char *const *open_prefixes = NULL;
    size_t n_open = 0;
    walk_tools(x, field(sp, "tools"), "spec.tools", s, &open_mcp, &open_prefixes, &n_open);
    walk_handoffs(x, field(sp, "handoffs"), s);
    walk_approval(x, field(sp, "approval"), s, open_mcp, open_prefixes, n_open);
    walk_limits(x, field(sp, "limits"), &s->limits);
    walk_session(x, field(sp, "session"), s);
    walk_canary(x, field(sp, "canary"), s);
    walk_webhook(x, field(sp, "webhook_url"), s);
}

/* ------------------------------------------------------------- canonical */

static json_t *num_json(double d)
{
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
        return json_integer((json_int_t)d);
    return json_real(d);
}

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *kv_object(const ah_agent_kv_t *v, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        json_object_set_new(o, v[i].key, json_string(v[i].value));
    return o;
}

static json_t *tool_json(const ah_agent_tool_t *t)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "type", json_string(ah_agent_tool_type_name(t->type)));
    if (t->type != AH_TOOL_MCP) {
        json_object_set_new(o, "name", json_string(t->name));
        if (t->description[0])
            json_object_set_new(o, "description", json_string(t->description));
        json_object_set_new(o, "parameters", json_loads(t->parameters, 0, NULL));
    }
    switch (t->type) {
    case AH_TOOL_HTTP:
        json_object_set_new(o, "url", json_string(t->http.url));
        json_object_set_new(o, "method", json_string(t->http.method));
        if (t->http.n_headers)
            json_object_set_new(o, "headers", kv_object(t->http.headers, t->http.n_headers));
        json_object_set_new(o, "timeout_s", num_json(t->timeout_s));
        json_object_set_new(o, "max_response_bytes",
                            json_integer((json_int_t)t->http.max_response_bytes));
        break;
    case AH_TOOL_MCP: {
        json_t *srv = json_object();
        if (t->mcp.url) {
            json_object_set_new(srv, "url", json_string(t->mcp.url));
        } else {
            json_object_set_new(srv, "command", str_array(t->mcp.command, t->mcp.n_command));
            if (t->mcp.n_env)
                json_object_set_new(srv, "env", kv_object(t->mcp.env, t->mcp.n_env));
        }
        json_object_set_new(o, "server", srv);
        if (t->mcp.n_allow)
            json_object_set_new(o, "allow", str_array(t->mcp.allow, t->mcp.n_allow));
        if (t->mcp.prefix[0])
            json_object_set_new(o, "prefix", json_string(t->mcp.prefix));
        json_object_set_new(o, "timeout_s", num_json(t->timeout_s));
        break;
    }
    case AH_TOOL_EXEC: {
        json_object_set_new(o, "command", str_array(t->exec.command, t->exec.n_command));
        const ah_agent_sandbox_t *sb = &t->exec.sandbox;
        if (sb->none) {
            json_object_set_new(o, "sandbox", json_string(SANDBOX_NONE));
        } else {
            json_object_set_new(o, "sandbox",
                                json_pack("{s:b, s:i, s:o, s:o, s:I}", "network", sb->network,
                                          "memory_mb", sb->memory_mb, "cpu_s", num_json(sb->cpu_s),
                                          "timeout_s", num_json(sb->timeout_s), "max_output_bytes",
                                          (json_int_t)sb->max_output_bytes));
        }
        break;
    }
    }
    return o;
}

/* Builds spec->json and spec->hash from the filled spec. 0 or -ENOMEM/-E2BIG. */
static int build_canonical(ah_agent_spec_t *s)
{
    json_t *meta = json_pack("{s:s}", "name", s->name);
    if (meta && s->n_labels)
        json_object_set_new(meta, "labels", kv_object(s->labels, s->n_labels));
    json_t *tools = json_array();
    for (size_t i = 0; tools && i < s->n_tools; i++)
        json_array_append_new(tools, tool_json(&s->tools[i]));
    const ah_agent_limits_t *l = &s->limits;
    json_t *limits =
        json_pack("{s:i, s:o, s:i, s:i, s:i}", "max_turns", l->max_turns, "timeout_s",
                  num_json(l->timeout_s), "max_tool_calls_per_turn", l->max_tool_calls_per_turn,
                  "loop_detect", l->loop_detect, "concurrency", l->concurrency);
    if (limits && l->max_tokens)
        json_object_set_new(limits, "max_tokens", json_integer(l->max_tokens));
    if (limits && l->max_cost_usd > 0)
        json_object_set_new(limits, "max_cost_usd", num_json(l->max_cost_usd));
    json_t *spec =
        json_pack("{s:s, s:s, s:o, s:o, s:{s:o, s:i}}", "model", s->model, "instructions",
                  s->instructions, "tools", tools, "limits", limits, "session", "ttl_s",
                  num_json(s->session.ttl_s), "max_messages", s->session.max_messages);
    if (spec && s->n_handoffs)
        json_object_set_new(spec, "handoffs", str_array(s->handoffs, s->n_handoffs));
    if (spec && s->n_approval_tools) {
        json_t *ap = json_pack("{s:o}", "tools", str_array(s->approval_tools, s->n_approval_tools));
        if (ap && s->approval_timeout_s > 0)
            json_object_set_new(ap, "timeout_s", num_json(s->approval_timeout_s));
        json_object_set_new(spec, "approval", ap);
    }
    if (spec && s->webhook_url)
        json_object_set_new(spec, "webhook_url", json_string(s->webhook_url));
    if (spec && s->canary.version)
        json_object_set_new(spec, "canary",
                            json_pack("{s:I, s:i}", "version", (json_int_t)s->canary.version,
                                      "weight", s->canary.weight));
    json_t *doc = json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", AH_AGENT_API_VERSION, "kind",
                            AH_AGENT_KIND, "metadata", meta, "spec", spec);
    if (!doc)
        return -ENOMEM;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    if (n > CANONICAL_MAX) {
        free(text);
        return -E2BIG;
    }
    s->json = ah_arena_strndup(&s->arena, text, n);
    s->json_len = n;
    if (s->json)
        ah_sha256_hex(text, n, s->hash);
    free(text);
    return s->json ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------------ parse */

static ah_agent_spec_t *spec_new(const char *source)
{
    ah_agent_spec_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    ah_arena_init(&s->arena, 4096, 0);
    s->source = ah_arena_strndup(&s->arena, source, strlen(source));
    if (!s->source) {
        ah_arena_free(&s->arena);
        free(s);
        return NULL;
    }
    return s;
}

ah_agent_spec_t *ah_agent_spec_ref(ah_agent_spec_t *spec)
{
    atomic_fetch_add_explicit(&spec->refs, 1, memory_order_relaxed);
    return spec;
}

void ah_agent_spec_unref(ah_agent_spec_t *spec)
{
    if (!spec)
        return;
    if (atomic_fetch_sub_explicit(&spec->refs, 1, memory_order_acq_rel) == 1) {
        ah_arena_free(&spec->arena);
        free(spec);
    }
}

void ah_agent_spec_list_free(ah_agent_spec_list_t *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++)
        ah_agent_spec_unref(list->v[i]);
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

/* Validates one document; returns a spec or NULL (problems reported). */
static ah_agent_spec_t *walk_doc(vx_t *x, const ah_yaml_node_t *doc)
{
    if (doc->kind != AH_YAML_MAP) {
        char g[80];
        verr(x, doc->line, "",
             "expected an agent document (a mapping with apiVersion, kind, metadata and spec), "
             "got %s",
             got(g, doc));
        return NULL;
    }
    ah_agent_spec_t *s = spec_new(x->source);
    if (!s) {
        oom(x);
        return NULL;
    }
    s->line = doc->line;
    x->a = &s->arena;
    x->nerr = 0;
    char g[80];

    check_keys(x, doc, "", top_keys, NULL);
    const ah_yaml_node_t *av = field(doc, "apiVersion"), *kd = field(doc, "kind");
    const char *text = NULL;
    if (!av)
        verr(x, field_line(doc, "apiVersion"), "apiVersion",
             "required field is missing (apiVersion: " AH_AGENT_API_VERSION ")");
    else if (get_str(x, av, "apiVersion", 256, &text) > 0 &&
             strcmp(text, AH_AGENT_API_VERSION) != 0)
        verr(x, av->line, "apiVersion",
             "unsupported version %s (supported: " AH_AGENT_API_VERSION ")", shown(g, text));
    if (!kd)
        verr(x, field_line(doc, "kind"), "kind",
             "required field is missing (kind: " AH_AGENT_KIND ")");
    else if (get_str(x, kd, "kind", 256, &text) > 0 && strcmp(text, AH_AGENT_KIND) != 0) {
        static const char *const kinds[] = {AH_AGENT_KIND, NULL};
        const char *best = ah_suggest(text, kinds, 1);
        verr(x, kd->line, "kind", "unknown kind %s (%s%s%sknown: " AH_AGENT_KIND ")",
             shown(g, text), best ? "did you mean \"" : "", best ? best : "", best ? "\"? " : "");
    }
    walk_metadata(x, doc, s);
    walk_spec(x, doc, s);

    if (x->nerr == 0) {
        int rc = build_canonical(s);
        if (rc == -E2BIG)
            verr(x, doc->line, "", "the agent is larger than %d MiB once YAML aliases are expanded",
                 CANONICAL_MAX / (1024 * 1024));
        else if (rc)
            oom(x);
    }
    x->a = NULL;
    if (x->nerr) {
        ah_agent_spec_unref(s);
        return NULL;
    }
    return s;
}

static bool looks_json(const char *text, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    return i < len && (text[i] == '{' || text[i] == '[');
}

/* Parses JSON into a node tree in arena a. Roots are the documents. */
static int load_json(const char *source, const char *text, size_t len, ah_arena_t *a,
                     ah_yaml_node_t **root, ah_agent_errors_t *errs)
{
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        ah_agent_errors_add(errs, source, jerr.line > 0 ? jerr.line : 0, -1, "",
                            "not valid JSON: %s", jerr.text);
        return -EBADMSG;
    }
    jconv_t c = {a, 0};
    int err = 0;
    *root = json_to_node(&c, j, &err);
    json_decref(j);
    if (!*root) {
        if (err == -E2BIG)
            ah_agent_errors_add(errs, source, 0, -1, "", "nested deeper than %d levels", MAX_DEPTH);
        return err ? err : -ENOMEM;
    }
    return 0;
}

int ah_agent_spec_parse(const char *source, const char *text, size_t len, ah_agent_format_t fmt,
                        ah_agent_spec_list_t *out, ah_agent_errors_t *errs)
{
    out->v = NULL;
    out->n = 0;
    if (!source)
        source = "<input>";
    size_t err_start = errs ? errs->n : 0;
    if (len > AH_AGENT_DOC_MAX_BYTES) {
        ah_agent_errors_add(errs, source, 0, -1, "",
                            "is %zu bytes; an agent source may hold at most %d bytes (1 MiB)", len,
                            AH_AGENT_DOC_MAX_BYTES);
        return -E2BIG;
    }
    ah_yaml_t y = AH_YAML_INIT;
    ah_arena_t ja;
    ah_arena_init(&ja, 16384, 0);
    const ah_yaml_node_t *const *roots = NULL;
    ah_yaml_node_t *jroot = NULL;
    size_t n_roots = 0;
    int rc = 0;

    if (fmt == AH_AGENT_FMT_JSON || (fmt == AH_AGENT_FMT_AUTO && looks_json(text, len))) {
        rc = load_json(source, text, len, &ja, &jroot, errs);
        if (rc == 0) {
            roots = (const ah_yaml_node_t *const *)&jroot;
            n_roots = 1;
        }
    } else {
        ah_buf_t yerr = AH_BUF_INIT;
        ah_yaml_limits_t lim = {AH_AGENT_DOC_MAX_BYTES, MAX_DEPTH, 0, 0, AH_AGENT_MAX_DOCS + 1};
        rc = ah_yaml_load_string(&y, source, text, len, &lim, &yerr);
        if (rc == 0) {
            roots = (const ah_yaml_node_t *const *)y.docs;
            n_roots = y.n_docs;
        } else if (rc != -ENOMEM) {
            /* "NAME:LINE:COL: message": keep the line, drop the prefix. */
            int line = 0;
            const char *msg = yerr.data ? yerr.data : "cannot parse";
            size_t sl = strlen(source);
            if (strncmp(msg, source, sl) == 0 && msg[sl] == ':') {
                const char *p = msg + sl + 1;
                char *end;
                long l = strtol(p, &end, 10);
                if (end != p && *end == ':' && l > 0 && l < INT32_MAX) {
                    line = (int)l;
                    p = end + 1;
                    strtol(p, &end, 10);
                    if (end != p && *end == ':')
                        p = end + 1;
                }
                while (*p == ' ')
                    p++;
                msg = p;
            }
            size_t ml = strlen(msg);
            while (ml && msg[ml - 1] == '\n')
                ml--;
            ah_agent_errors_add(errs, source, line, -1, "", "%s%.*s",
                                rc == -EINVAL ? "not valid YAML: " : "", (int)ml, msg);
            if (rc == -EINVAL)
                rc = -EBADMSG;
        }
        ah_buf_free(&yerr);
    }
    if (rc) {
        ah_yaml_free(&y);
        ah_arena_free(&ja);
        return rc;
    }

    /* Documents: each root, or each item of a root sequence (a list of agents). */
    size_t n_docs = 0;
    for (size_t i = 0; i < n_roots; i++) {
        if (roots[i]->kind == AH_YAML_SEQ)
            n_docs += roots[i]->n;
        else if (!ah_yaml_is_null(roots[i]))
            n_docs++;
    }
    if (n_docs > AH_AGENT_MAX_DOCS) {
        ah_agent_errors_add(errs, source, 0, -1, "", "holds %zu agents; the limit is %d", n_docs,
                            AH_AGENT_MAX_DOCS);
        ah_yaml_free(&y);
        ah_arena_free(&ja);
        return -E2BIG;
    }
    out->v = calloc(n_docs ? n_docs : 1, sizeof(*out->v));
    if (!out->v) {
        ah_yaml_free(&y);
        ah_arena_free(&ja);
        return -ENOMEM;
    }
    vx_t x = {errs, source, -1, 0, NULL, false};
    int total = 0, d = 0;
    for (size_t i = 0; i < n_roots; i++) {
        size_t k = roots[i]->kind == AH_YAML_SEQ ? roots[i]->n : !ah_yaml_is_null(roots[i]);
        for (size_t j = 0; j < k; j++, d++) {
            const ah_yaml_node_t *doc =
                roots[i]->kind == AH_YAML_SEQ ? roots[i]->items[j] : roots[i];
            x.doc = n_docs > 1 ? d : -1;
            ah_agent_spec_t *s = walk_doc(&x, doc);
            total += x.nerr;
            if (s)
                out->v[out->n++] = s;
        }
    }
    ah_yaml_free(&y);
    ah_arena_free(&ja);
    if (errs)
        errors_sort_from(errs, err_start);
    if (total || x.oom) {
        ah_agent_spec_list_free(out);
        return x.oom ? -ENOMEM : -EINVAL;
    }
    if (out->n == 0) {
        free(out->v); /* nothing to free later for a source without agents */
        out->v = NULL;
    }
    return 0;
}

int ah_agent_spec_load_file(const char *path, ah_agent_spec_list_t *out, ah_agent_errors_t *errs)
{
    out->v = NULL;
    out->n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = fd < 0 ? errno : (S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
        if (fd >= 0)
            close(fd);
        ah_agent_errors_add(errs, path, 0, -1, "", "cannot read: %s", strerror(e));
        return -e;
    }
    size_t cap = AH_AGENT_DOC_MAX_BYTES + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            ah_agent_errors_add(errs, path, 0, -1, "", "cannot read: %s", strerror(e));
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap)
            break; /* one byte past the limit is enough to refuse it */
    }
    close(fd);
    ah_agent_format_t fmt = AH_AGENT_FMT_AUTO;
    size_t pl = strlen(path);
    if (pl > 5 && strcasecmp(path + pl - 5, ".json") == 0)
        fmt = AH_AGENT_FMT_JSON;
    else if ((pl > 5 && strcasecmp(path + pl - 5, ".yaml") == 0) ||
             (pl > 4 && strcasecmp(path + pl - 4, ".yml") == 0))
        fmt = AH_AGENT_FMT_YAML;
    int rc = ah_agent_spec_parse(path, buf, n, fmt, out, errs);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- context */

int ah_agent_spec_check_context(const ah_agent_spec_t *s, const ah_agent_context_t *ctx,
                                ah_agent_errors_t *errs)
{
    int bad = 0;
    char g[80];
    if (ctx->cfg && !ah_config_model_find(ctx->cfg, s->model)) {
        const char *cands[AH_SUGGEST_MAX_CAND] = {0};
        size_t nc = 0;
        for (size_t i = 0; i < ctx->cfg->n_models && nc < AH_SUGGEST_MAX_CAND; i++) {
            const ah_config_model_t *m = &ctx->cfg->models[i];
            cands[nc++] = m->name;
            for (size_t a = 0; a < m->n_aliases && nc < AH_SUGGEST_MAX_CAND; a++)
                cands[nc++] = m->aliases[a];
        }
        const char *best = ah_suggest(s->model, cands, nc);
        char list[512];
        const char *names[32] = {0};
        size_t nn = 0;
        for (size_t i = 0; i < ctx->cfg->n_models && nn < 32; i++)
            names[nn++] = ctx->cfg->models[i].name;
        join_list(list, sizeof(list), names, nn);
        ah_agent_errors_add(errs, s->source, s->model_line, -1, "spec.model",
                            "unknown model %s (%s%s%sconfigured: %s)", shown(g, s->model),
                            best ? "did you mean \"" : "", best ? best : "", best ? "\"? " : "",
                            nn ? list : "none");
        bad = 1;
    }
    for (size_t i = 0; ctx->agent_exists && i < s->n_handoffs; i++) {
        if (ctx->agent_exists(ctx->ud, s->handoffs[i]))
            continue;
        char p[PATH_LEN];
        path_idx(p, "spec.handoffs", i);
        ah_agent_errors_add(errs, s->source, s->handoff_lines ? s->handoff_lines[i] : 0, -1, p,
                            "unknown agent %s (apply it first, or in the same batch)",
                            shown(g, s->handoffs[i]));
        bad = 1;
    }
    if (ctx->version_exists && s->canary.version &&
        !ctx->version_exists(ctx->ud, s->name, s->canary.version)) {
        ah_agent_errors_add(errs, s->source, s->canary_line, -1, "spec.canary.version",
                            "agent \"%s\" has no version %lld (see its versions)", s->name,
                            (long long)s->canary.version);
        bad = 1;
    }
    return bad ? -EINVAL : 0;
}

const ah_agent_tool_t *ah_agent_spec_tool(const ah_agent_spec_t *spec, const char *name)
{
    for (size_t i = 0; i < spec->n_tools; i++)
        if (spec->tools[i].name && strcmp(spec->tools[i].name, name) == 0)
            return &spec->tools[i];
    return NULL;
}

/* ---------------------------------------------------------- JSON -> YAML */

static int emit_write(void *ud, unsigned char *buf, size_t size)
{
    return ah_buf_append(ud, buf, size) == 0;
}

/* True when a plain scalar with this text would read back as the same string. */
static bool plain_safe_string(const char *s, size_t n)
{
    bool b;
    if (n == 0 || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0 || bool_text(s, &b) ||
        plain_int(s) || plain_float(s) || strcasecmp(s, ".inf") == 0 ||
        strcasecmp(s, "-.inf") == 0 || strcasecmp(s, ".nan") == 0)
        return false;
    /* 0x.., 0o.., 1_000 and dates are read as numbers by some YAML readers. */
    if (isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.')
        return false;
    return true;
}

static int emit_scalar(yaml_emitter_t *em, const char *s, size_t n, bool string)
{
    yaml_event_t ev;
    bool plain = !string || plain_safe_string(s, n);
    yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
    if (string && memchr(s, '\n', n))
        style = YAML_LITERAL_SCALAR_STYLE;
    else if (!plain)
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, plain, 1, style))
        return -ENOMEM;
    return yaml_emitter_emit(em, &ev) ? 0 : -EINVAL;
}

static size_t key_rank(const char *key)
{
    static const char *const first[] = {
        "apiVersion",  "kind",         "metadata", "spec",   "name",   "type",    "model", "labels",
        "description", "instructions", "url",      "method", "server", "command", NULL};
    for (size_t i = 0; first[i]; i++)
        if (strcmp(first[i], key) == 0)
            return i;
    return 100;
}

static int emit_json(yaml_emitter_t *em, json_t *j)
{
    yaml_event_t ev;
    char num[64];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -EINVAL;
        /* Keys a reader looks for first (name, type, model...) lead; the rest keep their order. */
        size_t n = json_object_size(j), k = 0;
        const char **keys = malloc((n ? n : 1) * sizeof(*keys));
        if (!keys)
            return -ENOMEM;
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            size_t w = k++;
            while (w > 0 && key_rank(keys[w - 1]) > key_rank(key)) {
                keys[w] = keys[w - 1];
                w--;
            }
            keys[w] = key;
        }
        for (size_t i = 0; i < k; i++) {
            if (emit_scalar(em, keys[i], strlen(keys[i]), true) ||
                emit_json(em, json_object_get(j, keys[i]))) {
                free(keys);
                return -EINVAL;
            }
        }
        free(keys);
        yaml_mapping_end_event_initialize(&ev);
        return yaml_emitter_emit(em, &ev) ? 0 : -EINVAL;
    }
    case JSON_ARRAY: {
        /* Short lists of scalars read best inline: [a, b]. */
        bool flow = json_array_size(j) == 0;
        if (!yaml_sequence_start_event_initialize(
                &ev, NULL, NULL, 1, flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -EINVAL;
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (emit_json(em, v))
                return -EINVAL;
        }
        yaml_sequence_end_event_initialize(&ev);
        return yaml_emitter_emit(em, &ev) ? 0 : -EINVAL;
    }
    case JSON_STRING:
        return emit_scalar(em, json_string_value(j), json_string_length(j), true);
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return emit_scalar(em, num, strlen(num), false);
    case JSON_REAL:
        fmt_num(num, sizeof(num), json_real_value(j));
        return emit_scalar(em, num, strlen(num), false);
    case JSON_TRUE:
        return emit_scalar(em, "true", 4, false);
    case JSON_FALSE:
        return emit_scalar(em, "false", 5, false);
    case JSON_NULL:
        return emit_scalar(em, "null", 4, false);
    }
    return -EINVAL;
}

int ah_agent_json_to_yaml(const char *json, size_t len, ah_buf_t *out)
{
    json_t *j = json_loadb(json, len, JSON_DECODE_ANY, NULL);
    if (!j)
        return -EINVAL;
    yaml_emitter_t em;
    if (!yaml_emitter_initialize(&em)) {
        json_decref(j);
        return -ENOMEM;
    }
    yaml_emitter_set_output(&em, emit_write, out);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, 100);
    yaml_event_t ev;
    int rc = -EINVAL;
    if (yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
        yaml_emitter_emit(&em, &ev) &&
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
        yaml_emitter_emit(&em, &ev) && emit_json(&em, j) == 0 &&
        yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
        yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
        yaml_emitter_flush(&em))
        rc = 0;
    yaml_emitter_delete(&em);
    json_decref(j);
    return rc;
}
