/*
 * registry.c - the agent cache (refreshed from the store), the apply job and
 * `apply -f PATH`; see registry.h and docs/internals/registry.md.
 */
#include "agents/registry.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/ticker.h"
#include "store/audit.h"

#define APPLY_RETRIES  3 /* apply_path re-runs after a concurrent writer won a race */
#define FULL_RESYNC_NS ((uint64_t)AH_REGISTRY_FULL_RESYNC_S * 1000000000ull)

/* One agent. Specs hold one reference each. */
typedef struct entry {
    char name[AH_STORE_AGENT_NAME_MAX + 1];
    int64_t revision;
    bool archived;
    ah_agent_spec_t *spec;   /* current version; NULL when archived or unreadable */
    ah_agent_spec_t *canary; /* canary version, or NULL */
} entry_t;

struct ah_registry {
    ah_store_t *store;
    double refresh_s;

    pthread_mutex_t mu; /* guards entries, n, cap, last_seen; never held across I/O */
    entry_t *entries;   /* sorted by name */
    size_t n, cap;
    int64_t last_seen; /* highest updated_at read from the store */

    pthread_mutex_t refresh_mu; /* serialises refreshes */
    bool last_refresh_failed;   /* under refresh_mu */

    ah_ticker_t *refresher; /* runs refresher_tick every refresh_s once started */
    bool started;           /* ah_registry_start ran (caller's thread only) */
    uint64_t next_full;     /* refresher thread only (set by start before it exists) */
};

struct ah_registry_update {
    ah_agent_row_t row;
    char *spec_json; /* current version */
    int64_t canary_version;
    char *canary_json; /* NULL when none, or when that version is missing */
};

/* ---- table ---- */

/* Index of name, or -(insertion point) - 1. Under mu. */
static long find(const ah_registry_t *reg, const char *name)
{
    size_t lo = 0, hi = reg->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(reg->entries[mid].name, name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

static void entry_clear(entry_t *e)
{
    ah_agent_spec_unref(e->spec);
    ah_agent_spec_unref(e->canary);
    e->spec = e->canary = NULL;
}

static void refresher_tick(void *arg);

/* ---- public: lifetime ---- */

ah_registry_t *ah_registry_new(ah_store_t *store, double refresh_s)
{
    ah_registry_t *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    reg->store = store;
    reg->refresh_s = refresh_s > 0 ? refresh_s : 1.0;
    if (reg->refresh_s < 0.01)
        reg->refresh_s = 0.01;
    if (reg->refresh_s > 3600)
        reg->refresh_s = 3600;
    reg->refresher = ah_ticker_new("ah-registry", reg->refresh_s, refresher_tick, reg);
    if (!reg->refresher) {
        free(reg);
        return NULL;
    }
    pthread_mutex_init(&reg->mu, NULL);
    pthread_mutex_init(&reg->refresh_mu, NULL);
    return reg;
}

void ah_registry_free(ah_registry_t *reg)
{
    if (!reg)
        return;
    ah_ticker_free(reg->refresher); /* joins the refresher before the table goes */
    for (size_t i = 0; i < reg->n; i++)
        entry_clear(&reg->entries[i]);
    free(reg->entries);
    pthread_mutex_destroy(&reg->mu);
    pthread_mutex_destroy(&reg->refresh_mu);
    free(reg);
}

/* ---- public: lookups ---- */

int ah_registry_pick(ah_registry_t *reg, const char *name, uint64_t rnd, ah_agent_spec_t **spec,
                     int64_t *version)
{
    *spec = NULL;
    if (!name)
        return -ENOENT;
    pthread_mutex_lock(&reg->mu);
    long i = find(reg, name);
    ah_agent_spec_t *s = NULL;
    if (i >= 0 && !reg->entries[i].archived && reg->entries[i].spec) {
        const entry_t *e = &reg->entries[i];
        s = e->spec;
        if (e->canary && (int)(rnd % 100) < e->spec->canary.weight)
            s = e->canary;
        ah_agent_spec_ref(s);
    }
    pthread_mutex_unlock(&reg->mu);
    if (!s)
        return -ENOENT;
    *spec = s;
    if (version)
        *version = s->version;
    return 0;
}

int ah_registry_get(ah_registry_t *reg, const char *name, ah_agent_spec_t **spec)
{
    *spec = NULL;
    if (!name)
        return -ENOENT;
    pthread_mutex_lock(&reg->mu);
    long i = find(reg, name);
    ah_agent_spec_t *s = NULL;
    if (i >= 0 && !reg->entries[i].archived && reg->entries[i].spec)
        s = ah_agent_spec_ref(reg->entries[i].spec);
    pthread_mutex_unlock(&reg->mu);
    *spec = s;
    return s ? 0 : -ENOENT;
}

bool ah_registry_exists(ah_registry_t *reg, const char *name)
{
    if (!name)
        return false;
    pthread_mutex_lock(&reg->mu);
    long i = find(reg, name);
    bool ok = i >= 0 && !reg->entries[i].archived && reg->entries[i].spec;
    pthread_mutex_unlock(&reg->mu);
    return ok;
}

int ah_registry_names(ah_registry_t *reg, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    pthread_mutex_lock(&reg->mu);
    char **v = calloc(reg->n ? reg->n : 1, sizeof(*v));
    size_t k = 0;
    int rc = v ? 0 : -ENOMEM;
    for (size_t i = 0; v && i < reg->n; i++) {
        if (reg->entries[i].archived || !reg->entries[i].spec)
            continue;
        v[k] = strdup(reg->entries[i].name);
        if (!v[k]) {
            rc = -ENOMEM;
            break;
        }
        k++;
    }
    pthread_mutex_unlock(&reg->mu);
    if (rc) {
        ah_registry_names_free(v, k);
        return rc;
    }
    *names = v;
    *n = k;
    return 0;
}

void ah_registry_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

size_t ah_registry_count(ah_registry_t *reg)
{
    pthread_mutex_lock(&reg->mu);
    size_t k = 0;
    for (size_t i = 0; i < reg->n; i++)
        k += !reg->entries[i].archived && reg->entries[i].spec;
    pthread_mutex_unlock(&reg->mu);
    return k;
}

/* ---- updates ---- */

void ah_registry_update_free(ah_registry_update_t *u)
{
    if (!u)
        return;
    free(u->spec_json);
    free(u->canary_json);
    free(u);
}

/* spec.canary.version of a canonical spec, or 0. */
static int64_t canary_of(const char *json)
{
    json_t *j = json_loads(json, 0, NULL);
    json_t *v = json_object_get(json_object_get(json_object_get(j, "spec"), "canary"), "version");
    int64_t c = json_is_integer(v) ? json_integer_value(v) : 0;
    json_decref(j);
    return c > 0 ? c : 0;
}

/* Fills u's canary from the store, given its row and current spec. */
static int read_canary(ah_db_t *db, ah_registry_update_t *u)
{
    u->canary_version = canary_of(u->spec_json);
    if (!u->canary_version)
        return 0;
    int rc = ah_store_agent_version_get(db, u->row.name, u->canary_version, NULL, &u->canary_json);
    return rc == -ENOENT ? 0 : rc; /* a missing canary version: runs use the current one */
}

int ah_registry_update_read(ah_db_t *db, const char *name, ah_registry_update_t **out)
{
    *out = NULL;
    ah_registry_update_t *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    int rc = ah_store_agent_get(db, name, &u->row);
    if (rc == 0)
        rc = ah_store_agent_version_get(db, name, u->row.current_version, NULL, &u->spec_json);
    if (rc == 0)
        rc = read_canary(db, u);
    if (rc) {
        ah_registry_update_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* Parses stored spec text; NULL (logged) when this binary cannot read it. */
static ah_agent_spec_t *parse_stored(const char *name, int64_t version, const char *json)
{
    char source[128];
    snprintf(source, sizeof(source), "store:%s@v%lld", name, (long long)version);
    ah_agent_spec_list_t l;
    ah_agent_errors_t errs = AH_AGENT_ERRORS_INIT;
    int rc = ah_agent_spec_parse(source, json, strlen(json), AH_AGENT_FMT_JSON, &l, &errs);
    if (rc || l.n != 1) {
        ah_buf_t b = AH_BUF_INIT;
        ah_agent_errors_format(&errs, &b);
        ah_log(AH_LOG_ERROR, "agents",
               "a stored agent spec cannot be read; the agent is not served",
               AH_LF_STR("agent", name), AH_LF_INT("version", version),
               AH_LF_STR("error", b.data ? b.data : "?"), AH_LF_END);
        ah_buf_free(&b);
        ah_agent_errors_free(&errs);
        ah_agent_spec_list_free(&l);
        return NULL;
    }
    ah_agent_errors_free(&errs);
    ah_agent_spec_t *s = l.v[0];
    s->version = version; /* before anyone else sees it */
    free(l.v);
    return s;
}

/* A cached spec of (name, version) with a new reference, or NULL. Under mu. */
static ah_agent_spec_t *cached(const ah_registry_t *reg, const char *name, int64_t version)
{
    long i = find(reg, name);
    if (i < 0)
        return NULL;
    const entry_t *e = &reg->entries[i];
    if (e->spec && e->spec->version == version)
        return ah_agent_spec_ref(e->spec);
    if (e->canary && e->canary->version == version)
        return ah_agent_spec_ref(e->canary);
    return NULL;
}

/* Revision of the cached entry for name, or -1. */
static int64_t cached_revision(ah_registry_t *reg, const char *name)
{
    pthread_mutex_lock(&reg->mu);
    long i = find(reg, name);
    int64_t r = i >= 0 ? reg->entries[i].revision : -1;
    pthread_mutex_unlock(&reg->mu);
    return r;
}

/* Inserts or replaces the entry (taking the spec references) if rev is newer. Under mu. */
static int merge_locked(ah_registry_t *reg, const ah_agent_row_t *row, ah_agent_spec_t *spec,
                        ah_agent_spec_t *canary)
{
    long i = find(reg, row->name);
    if (i >= 0 && reg->entries[i].revision >= row->revision) {
        ah_agent_spec_unref(spec);
        ah_agent_spec_unref(canary);
        return 0;
    }
    if (i < 0) {
        if (reg->n == reg->cap) {
            size_t cap = reg->cap ? reg->cap * 2 : 16;
            entry_t *v = realloc(reg->entries, cap * sizeof(*v));
            if (!v) {
                ah_agent_spec_unref(spec);
                ah_agent_spec_unref(canary);
                return -ENOMEM;
            }
            reg->entries = v;
            reg->cap = cap;
        }
        size_t at = (size_t)(-i - 1);
        memmove(&reg->entries[at + 1], &reg->entries[at], (reg->n - at) * sizeof(entry_t));
        reg->n++;
        i = (long)at;
        memset(&reg->entries[i], 0, sizeof(entry_t));
        memcpy(reg->entries[i].name, row->name, sizeof(row->name));
    }
    entry_t *e = &reg->entries[i];
    entry_clear(e);
    e->revision = row->revision;
    e->archived = row->archived_at != 0;
    e->spec = spec;
    e->canary = canary;
    return 0;
}

int ah_registry_update_apply(ah_registry_t *reg, ah_registry_update_t *u)
{
    if (!u)
        return -EINVAL;
    int rc = 0;
    if (cached_revision(reg, u->row.name) >= u->row.revision) {
        ah_registry_update_free(u);
        return 0;
    }
    pthread_mutex_lock(&reg->mu);
    ah_agent_spec_t *spec = cached(reg, u->row.name, u->row.current_version);
    ah_agent_spec_t *canary =
        u->canary_version ? cached(reg, u->row.name, u->canary_version) : NULL;
    pthread_mutex_unlock(&reg->mu);
    /* Parse outside the lock: it is the slow part. */
    if (!spec && u->spec_json)
        spec = parse_stored(u->row.name, u->row.current_version, u->spec_json);
    if (!canary && u->canary_json)
        canary = parse_stored(u->row.name, u->canary_version, u->canary_json);
    if (!spec) {
        /* Remember the revision anyway (the agent is not served), so the refresher does not
         * re-read and re-log it every second. */
        ah_agent_spec_unref(canary);
        pthread_mutex_lock(&reg->mu);
        merge_locked(reg, &u->row, NULL, NULL);
        pthread_mutex_unlock(&reg->mu);
        ah_registry_update_free(u);
        return -EINVAL;
    }
    if (canary && spec->canary.version != canary->version) {
        ah_agent_spec_unref(canary);
        canary = NULL;
    }
    pthread_mutex_lock(&reg->mu);
    rc = merge_locked(reg, &u->row, spec, canary);
    pthread_mutex_unlock(&reg->mu);
    ah_registry_update_free(u);
    return rc;
}

/* ---- refresh ---- */

typedef struct refresh_job {
    ah_registry_t *reg;
    int64_t since;
    int64_t max_updated;
    ah_registry_update_t **v;
    size_t n, cap;
} refresh_job_t;

static int refresh_row(void *ud, const ah_agent_row_t *row, const char *spec_json, size_t len)
{
    refresh_job_t *j = ud;
    if (row->updated_at > j->max_updated)
        j->max_updated = row->updated_at;
    /* Unchanged since we cached it: skip the copy (and the parse). */
    if (cached_revision(j->reg, row->name) >= row->revision)
        return 0;
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        ah_registry_update_t **v = realloc(j->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        j->v = v;
        j->cap = cap;
    }
    ah_registry_update_t *u = calloc(1, sizeof(*u));
    if (!u || !(u->spec_json = strndup(spec_json, len))) {
        free(u);
        return -ENOMEM;
    }
    u->row = *row;
    j->v[j->n++] = u;
    return 0;
}

static int refresh_work(ah_db_t *db, void *arg)
{
    refresh_job_t *j = arg;
    int rc = ah_store_agent_list(db, j->since, refresh_row, j);
    for (size_t i = 0; rc == 0 && i < j->n; i++)
        rc = read_canary(db, j->v[i]);
    return rc;
}

static int refresh_once(ah_registry_t *reg, bool full)
{
    pthread_mutex_lock(&reg->refresh_mu);
    refresh_job_t j = {reg, -1, 0, NULL, 0, 0};
    pthread_mutex_lock(&reg->mu);
    if (!full)
        j.since = reg->last_seen - AH_REGISTRY_OVERLAP_MS;
    pthread_mutex_unlock(&reg->mu);
    int rc = ah_store_call(reg->store, AH_STORE_READ, refresh_work, &j);
    size_t applied = 0;
    for (size_t i = 0; i < j.n; i++) {
        if (rc == 0) {
            int arc = ah_registry_update_apply(reg, j.v[i]);
            if (arc == -ENOMEM)
                rc = arc;
            applied++;
        } else {
            ah_registry_update_free(j.v[i]);
        }
    }
    free(j.v);
    if (rc == 0) {
        pthread_mutex_lock(&reg->mu);
        if (j.max_updated > reg->last_seen)
            reg->last_seen = j.max_updated;
        pthread_mutex_unlock(&reg->mu);
        if (applied)
            ah_log(AH_LOG_DEBUG, "agents", "agent registry refreshed",
                   AH_LF_INT("changed", applied), AH_LF_BOOL("full", full), AH_LF_END);
    }
    if (rc && !reg->last_refresh_failed)
        ah_log(AH_LOG_WARN, "agents", "agent registry refresh failed; serving the last specs read",
               AH_LF_INT("errno", -rc), AH_LF_END);
    else if (!rc && reg->last_refresh_failed)
        ah_log(AH_LOG_INFO, "agents", "agent registry refresh recovered", AH_LF_END);
    reg->last_refresh_failed = rc != 0;
    pthread_mutex_unlock(&reg->refresh_mu);
    return rc;
}

/* The refresher thread's tick (core/ticker.h): incremental, full every FULL_RESYNC_NS. */
static void refresher_tick(void *arg)
{
    ah_registry_t *reg = arg;
    bool full = ah_mono_ns() >= reg->next_full;
    if (full)
        reg->next_full = ah_mono_ns() + FULL_RESYNC_NS;
    refresh_once(reg, full); /* logs its own failures */
}

int ah_registry_start(ah_registry_t *reg)
{
    if (!reg->store || reg->started)
        return 0;
    int rc = refresh_once(reg, true);
    reg->next_full = ah_mono_ns() + FULL_RESYNC_NS;
    int trc = ah_ticker_start(reg->refresher);
    if (trc != 0) {
        ah_log(AH_LOG_ERROR, "agents", "could not start the agent registry refresher",
               AH_LF_INT("errno", -trc), AH_LF_END);
        return -EAGAIN;
    }
    reg->started = true;
    return rc;
}

int ah_registry_refresh_now(ah_registry_t *reg)
{
    return reg->store ? refresh_once(reg, true) : 0;
}

void ah_registry_kick(ah_registry_t *reg)
{
    ah_ticker_kick(reg->refresher);
}

/* ---- the apply job ---- */

typedef struct put_ctx {
    ah_db_t *db;
    const ah_registry_put_t *p;
    int err; /* a store error seen by a callback */
} put_ctx_t;

static bool ctx_agent_exists(void *ud, const char *name)
{
    put_ctx_t *c = ud;
    for (size_t i = 0; i < c->p->n; i++)
        if (strcmp(c->p->specs[i]->name, name) == 0)
            return true;
    ah_agent_row_t row;
    int rc = ah_store_agent_get(c->db, name, &row);
    if (rc < 0 && rc != -ENOENT && rc != -EINVAL && !c->err)
        c->err = rc;
    return rc == 0 && !row.archived_at;
}

static bool ctx_version_exists(void *ud, const char *name, int64_t version)
{
    put_ctx_t *c = ud;
    int rc = ah_store_agent_version_exists(c->db, name, version);
    if (rc < 0 && !c->err)
        c->err = rc;
    return rc > 0;
}

static int audit_put(ah_db_t *db, const ah_registry_put_t *p, const ah_agent_spec_t *s,
                     const ah_agent_put_result_t *r)
{
    json_t *d =
        json_pack("{s:I, s:I, s:s, s:b}", "version", (json_int_t)r->version, "previous_version",
                  (json_int_t)r->previous_version, "spec_hash", s->hash, "restored", r->unarchived);
    char *detail = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    if (!detail)
        return -ENOMEM;
    char target[AH_STORE_AGENT_NAME_MAX + 8];
    snprintf(target, sizeof(target), "agent:%s", s->name);
    int rc = ah_store_audit_insert(db, p->actor, "agent.apply", target, detail, p->request_id);
    free(detail);
    return rc;
}

int ah_registry_put_work(ah_db_t *db, void *arg)
{
    ah_registry_put_t *p = arg;
    put_ctx_t c = {db, p, 0};
    ah_agent_context_t ctx = {p->cfg, ctx_agent_exists, ctx_version_exists, &c};
    int bad = 0;
    for (size_t i = 0; i < p->n; i++)
        if (ah_agent_spec_check_context(p->specs[i], &ctx, &p->errs) != 0)
            bad = 1;
    if (c.err)
        return c.err;
    if (bad)
        return -EINVAL;
    p->results = calloc(p->n ? p->n : 1, sizeof(*p->results));
    if (p->want_updates)
        p->updates = calloc(p->n ? p->n : 1, sizeof(*p->updates));
    if (!p->results || (p->want_updates && !p->updates))
        return -ENOMEM;
    int64_t now = p->now_ms ? p->now_ms : ah_wall_ms();
    for (size_t i = 0; i < p->n; i++) {
        const ah_agent_spec_t *s = p->specs[i];
        ah_agent_put_result_t *r = &p->results[i];
        int rc = ah_store_agent_put(db, s->name, s->json, s->json_len, s->hash, s->canary.version,
                                    p->actor, now, r);
        if (rc == -ENXIO) {
            /* The context check passed, so another writer raced us; report it as such. */
            rc = -EAGAIN;
        }
        if (rc == 0 && r->changed)
            rc = audit_put(db, p, s, r);
        if (rc == 0 && p->want_updates)
            rc = ah_registry_update_read(db, s->name, &p->updates[i]);
        if (rc)
            return rc;
    }
    return p->dry_run ? -ECANCELED : 0;
}

void ah_registry_put_clear(ah_registry_put_t *p)
{
    for (size_t i = 0; p->updates && i < p->n; i++)
        ah_registry_update_free(p->updates[i]);
    free(p->updates);
    free(p->results);
    p->updates = NULL;
    p->results = NULL;
    ah_agent_errors_free(&p->errs);
}

/* ---- apply -f PATH ---- */

static bool agent_file(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.')
        return false;
    return (n > 5 && strcasecmp(name + n - 5, ".yaml") == 0) ||
           (n > 4 && strcasecmp(name + n - 4, ".yml") == 0) ||
           (n > 5 && strcasecmp(name + n - 5, ".json") == 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files to apply: path itself, or its agent files sorted. */
static int list_files(const char *path, char ***out, size_t *n, ah_agent_errors_t *errs)
{
    *out = NULL;
    *n = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        ah_agent_errors_add(errs, path, 0, -1, "", "cannot read: %s", strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        char **v = calloc(1, sizeof(*v));
        if (!v || !(v[0] = strdup(path))) {
            free(v);
            return -ENOMEM;
        }
        *out = v;
        *n = 1;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) {
        int e = errno;
        ah_agent_errors_add(errs, path, 0, -1, "", "cannot read: %s", strerror(e));
        return -e;
    }
    char **v = NULL;
    size_t k = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!agent_file(de->d_name))
            continue;
        if (k == AH_REGISTRY_MAX_FILES) {
            ah_agent_errors_add(errs, path, 0, -1, "", "holds more than %d agent files",
                                AH_REGISTRY_MAX_FILES);
            rc = -E2BIG;
            break;
        }
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        ah_buf_t b = AH_BUF_INIT;
        ah_buf_printf(&b, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", de->d_name);
        if (!b.data) {
            rc = -ENOMEM;
            break;
        }
        v[k++] = ah_buf_steal(&b);
    }
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < k; i++)
            free(v[i]);
        free(v);
        return rc;
    }
    if (k > 1)
        qsort(v, k, sizeof(*v), cmp_str);
    *out = v;
    *n = k;
    return 0;
}

int ah_registry_apply_path(ah_store_t *store, const ah_config_t *cfg, const char *path,
                           const char *actor, unsigned flags, ah_buf_t *report,
                           ah_agent_errors_t *errs)
{
    char **files = NULL;
    size_t n_files = 0;
    int rc = list_files(path, &files, &n_files, errs);
    if (rc)
        return rc;
    ah_agent_spec_t **specs = NULL;
    size_t n = 0, cap = 0;
    int parse_rc = 0;
    for (size_t f = 0; f < n_files; f++) {
        ah_agent_spec_list_t l;
        int prc = ah_agent_spec_load_file(files[f], &l, errs);
        if (prc) {
            if (!parse_rc || prc == -ENOMEM)
                parse_rc = prc;
            continue;
        }
        for (size_t i = 0; i < l.n; i++) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                ah_agent_spec_t **nv = realloc(specs, ncap * sizeof(*nv));
                if (!nv) {
                    parse_rc = -ENOMEM;
                    break;
                }
                specs = nv;
                cap = ncap;
            }
            specs[n++] = ah_agent_spec_ref(l.v[i]);
        }
        ah_agent_spec_list_free(&l);
    }
    /* The same agent twice would make the result depend on file order. */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(specs[i]->name, specs[j]->name) == 0) {
                char at[32] = "";
                if (specs[j]->line > 0)
                    snprintf(at, sizeof(at), ":%d", specs[j]->line);
                ah_agent_errors_add(errs, specs[i]->source, specs[i]->line, -1, "metadata.name",
                                    "agent \"%s\" is also defined at %s%s", specs[i]->name,
                                    specs[j]->source, at);
                if (!parse_rc)
                    parse_rc = -EINVAL;
                break;
            }
        }
    }
    if (parse_rc) {
        rc = parse_rc == -EBADMSG || parse_rc == -E2BIG ? -EINVAL : parse_rc;
        goto out;
    }
    if (n == 0)
        goto out;
    bool dry = flags & AH_REGISTRY_DRY_RUN;
    ah_registry_put_t p;
    /* -EAGAIN: another writer (a replica applying the same agents_dir at the same moment) got
     * there first; the next attempt sees its rows, usually as "unchanged". */
    for (int attempt = 0;; attempt++) {
        p = (ah_registry_put_t){.specs = specs, .n = n, .cfg = cfg, .actor = actor, .dry_run = dry};
        rc = ah_store_call(store, AH_STORE_WRITE, ah_registry_put_work, &p);
        if (rc != -EAGAIN || attempt == APPLY_RETRIES)
            break;
        ah_registry_put_clear(&p);
    }
    if (rc == (dry ? -ECANCELED : 0)) {
        for (size_t i = 0; i < n; i++) {
            const ah_agent_put_result_t *r = &p.results[i];
            if (!r->changed)
                ah_buf_printf(report, "agent/%s: unchanged (version %lld)\n", specs[i]->name,
                              (long long)r->version);
            else
                ah_buf_printf(report, "agent/%s: %s version %lld%s\n", specs[i]->name,
                              dry ? "would create" : "created", (long long)r->version,
                              r->unarchived ? " (restored from archive)" : "");
        }
        rc = (int)n;
    }
    /* Context errors are the caller's to print: move them over. */
    for (size_t i = 0; i < p.errs.n; i++) {
        const ah_agent_error_t *e = &p.errs.v[i];
        ah_agent_errors_add(errs, e->source, e->line, e->doc, e->path, "%s", e->message);
    }
    if (errs)
        errs->more += p.errs.more;
    ah_registry_put_clear(&p);
out:
    for (size_t i = 0; i < n; i++)
        ah_agent_spec_unref(specs[i]);
    free(specs);
    for (size_t f = 0; f < n_files; f++)
        free(files[f]);
    free(files);
    return rc;
}
