/*
 * router.h - maps (method, path) to a route, with {param} path segments.
 *
 * Patterns are literal segments and {name} segments ("/v1/agents/{name}/runs").
 * A {name} segment matches one non-empty path segment; parameters come back
 * percent-decoded. Literal segments win over parameters when both match. The
 * route table is built once at start and then only read, so every worker
 * thread can share one router without locks.
 */
#ifndef AH_HTTP_ROUTER_H
#define AH_HTTP_ROUTER_H

#include <stddef.h>

#include "core/arena.h"
#include "http/parser.h"

#define AH_ROUTER_MAX_PARAMS 4

typedef struct ah_route {
    ah_http_method_t method;
    const char *pattern; /* also the "route" label in metrics and logs */
    void *handler;       /* opaque to the router: the caller's function pointer */
    unsigned flags;      /* opaque to the router: e.g. the role a route needs */
    int index;           /* position in the table, for per-route counters */
} ah_route_t;

typedef struct ah_route_params {
    size_t n;
    const char *names[AH_ROUTER_MAX_PARAMS]; /* point into the pattern: use ah_route_param */
    char *values[AH_ROUTER_MAX_PARAMS];      /* NUL-terminated, in the request arena */
} ah_route_params_t;

typedef struct ah_router ah_router_t;

/** Creates an empty router. NULL on ENOMEM. */
ah_router_t *ah_router_new(void);

/**
 * Adds a route. pattern must start with '/' and is not copied (use literals).
 * Returns 0, -EINVAL (malformed pattern, too many params), -EEXIST (same
 * method and pattern), -ENOMEM.
 */
int ah_router_add(ah_router_t *r, ah_http_method_t method, const char *pattern, void *handler,
                  unsigned flags);

/** Number of routes added (route indexes are 0..count-1). */
int ah_router_count(const ah_router_t *r);

/** Route with this index. */
const ah_route_t *ah_router_at(const ah_router_t *r, int index);

/* ah_router_match results */
enum { AH_ROUTE_FOUND = 0, AH_ROUTE_NOT_FOUND = -404, AH_ROUTE_BAD_METHOD = -405 };

/**
 * Matches path[0..len) for method. On AH_ROUTE_FOUND sets *out and fills
 * params (values allocated from arena; -ENOMEM if it is full). On
 * AH_ROUTE_BAD_METHOD, writes the allowed methods ("GET, POST") to allow
 * (size allow_n) when allow is not NULL. HEAD matches GET routes.
 */
int ah_router_match(const ah_router_t *r, ah_http_method_t method, const char *path, size_t len,
                    ah_arena_t *arena, const ah_route_t **out, ah_route_params_t *params,
                    char *allow, size_t allow_n);

/** Value of path parameter name ("name" for "{name}"), or NULL. */
const char *ah_route_param(const ah_route_params_t *p, const char *name);

/** Frees the router (not the patterns it was given). */
void ah_router_free(ah_router_t *r);

#endif
