/* router.c - segment-wise path matching; see router.h.
 *
 * Tens of routes, so a linear scan over pre-split patterns is both simplest
 * and fast (no allocation unless a route has parameters). */
#include "http/router.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEGMENTS 16

typedef struct seg {
    const char *s; /* literal text, or param name */
    size_t n;
    bool param;
} seg_t;

typedef struct entry {
    ah_route_t route;
    seg_t segs[MAX_SEGMENTS];
    size_t n_segs;
    size_t n_params;
} entry_t;

struct ah_router {
    entry_t *entries;
    int n, cap;
};

ah_router_t *ah_router_new(void)
{
    return calloc(1, sizeof(ah_router_t));
}

static int split_pattern(const char *pattern, entry_t *e)
{
    const char *p = pattern;
    if (*p != '/')
        return -EINVAL;
    e->n_segs = 0;
    e->n_params = 0;
    while (*p == '/') {
        p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - s);
        if (n == 0 && *p == '\0' && e->n_segs > 0)
            return -EINVAL; /* trailing slash */
        if (n == 0 && *p == '\0')
            break; /* the root "/" */
        if (e->n_segs >= MAX_SEGMENTS || n == 0)
            return -EINVAL;
        seg_t *g = &e->segs[e->n_segs++];
        if (s[0] == '{') {
            if (n < 3 || s[n - 1] != '}' || e->n_params >= AH_ROUTER_MAX_PARAMS)
                return -EINVAL;
            g->s = s + 1;
            g->n = n - 2;
            g->param = true;
            e->n_params++;
        } else {
            g->s = s;
            g->n = n;
            g->param = false;
        }
    }
    return *p ? -EINVAL : 0;
}

int ah_router_add(ah_router_t *r, ah_http_method_t method, const char *pattern, void *handler,
                  unsigned flags)
{
    for (int i = 0; i < r->n; i++)
        if (r->entries[i].route.method == method &&
            strcmp(r->entries[i].route.pattern, pattern) == 0)
            return -EEXIST;
    entry_t e = {0};
    int rc = split_pattern(pattern, &e);
    if (rc)
        return rc;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 32;
        entry_t *ne = realloc(r->entries, (size_t)cap * sizeof(*ne));
        if (!ne)
            return -ENOMEM;
        r->entries = ne;
        r->cap = cap;
    }
    e.route.method = method;
    e.route.pattern = pattern;
    e.route.handler = handler;
    e.route.flags = flags;
    e.route.index = r->n;
    r->entries[r->n++] = e;
    return 0;
}

int ah_router_count(const ah_router_t *r)
{
    return r->n;
}

const ah_route_t *ah_router_at(const ah_router_t *r, int index)
{
    return index >= 0 && index < r->n ? &r->entries[index].route : NULL;
}

/* Splits path into segments; returns count or -1 when too many/empty segment. */
static int split_path(const char *path, size_t len, seg_t *segs)
{
    size_t i = 0;
    int n = 0;
    if (len == 0 || path[0] != '/')
        return -1;
    if (len == 1)
        return 0;
    while (i < len && path[i] == '/') {
        i++;
        size_t s = i;
        while (i < len && path[i] != '/')
            i++;
        if (i == s)
            return -1; /* "//" or trailing "/" */
        if (n >= MAX_SEGMENTS)
            return -1;
        segs[n].s = path + s;
        segs[n].n = i - s;
        n++;
    }
    return n;
}

/* Scores a match: higher = more literal segments. -1 = no match. */
static int match_entry(const entry_t *e, const seg_t *segs, int n)
{
    if ((size_t)n != e->n_segs)
        return -1;
    int score = 0;
    for (int i = 0; i < n; i++) {
        const seg_t *g = &e->segs[i];
        if (g->param)
            continue;
        if (g->n != segs[i].n || memcmp(g->s, segs[i].s, g->n) != 0)
            return -1;
        score++;
    }
    return score;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char *pct_decode(ah_arena_t *a, const char *s, size_t n)
{
    char *out = ah_arena_alloc(a, n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
            out[o++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

int ah_router_match(const ah_router_t *r, ah_http_method_t method, const char *path, size_t len,
                    ah_arena_t *arena, const ah_route_t **out, ah_route_params_t *params,
                    char *allow, size_t allow_n)
{
    seg_t segs[MAX_SEGMENTS];
    int n = split_path(path, len, segs);
    if (n < 0)
        return AH_ROUTE_NOT_FOUND;
    ah_http_method_t want = method == AH_HTTP_HEAD ? AH_HTTP_GET : method;
    const entry_t *best = NULL;
    int best_score = -1;
    bool path_matched = false;
    unsigned allowed = 0;
    for (int i = 0; i < r->n; i++) {
        const entry_t *e = &r->entries[i];
        int sc = match_entry(e, segs, n);
        if (sc < 0)
            continue;
        path_matched = true;
        allowed |= 1u << e->route.method;
        if (e->route.method == want && sc > best_score) {
            best = e;
            best_score = sc;
        }
    }
    if (!best) {
        if (!path_matched)
            return AH_ROUTE_NOT_FOUND;
        if (allow && allow_n) {
            size_t o = 0;
            allow[0] = '\0';
            for (int m = 0; m < AH_HTTP_METHOD_COUNT; m++) {
                if (!(allowed & (1u << m)))
                    continue;
                int w = snprintf(allow + o, allow_n - o, "%s%s", o ? ", " : "",
                                 ah_http_method_name((ah_http_method_t)m));
                if (w < 0 || (size_t)w >= allow_n - o)
                    break;
                o += (size_t)w;
            }
        }
        return AH_ROUTE_BAD_METHOD;
    }
    params->n = 0;
    for (int i = 0; i < n; i++) {
        if (!best->segs[i].param)
            continue;
        char *v = pct_decode(arena, segs[i].s, segs[i].n);
        if (!v)
            return -ENOMEM;
        params->names[params->n] = best->segs[i].s; /* not NUL-terminated: see ah_route_param */
        params->values[params->n] = v;
        params->n++;
    }
    *out = &best->route;
    return AH_ROUTE_FOUND;
}

const char *ah_route_param(const ah_route_params_t *p, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < p->n; i++)
        if (strncmp(p->names[i], name, nl) == 0 && p->names[i][nl] == '}')
            return p->values[i];
    return NULL;
}

void ah_router_free(ah_router_t *r)
{
    if (!r)
        return;
    free(r->entries);
    free(r);
}
