/*
 * test_registry.c - the agent registry: the store rows (store/agents.h), the
 * apply job and `apply -f PATH`, and the in-memory cache (agents/registry.h)
 * against a real SQLite store in a temporary directory: versions, unchanged
 * detection, rollback, archive, canary picks, refresh from the store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agents/registry.h"
#include "agents/spec.h"
#include "core/clock.h"
#include "core/log.h"
#include "store/agents.h"
#include "store/store.h"

typedef struct fixture {
    char dir[64];
    char url[128];
    ah_config_t store_cfg; /* storage only */
    ah_config_t cfg;       /* models, for the context checks */
    ah_store_t *store;
} fixture_t;

static const char models_yaml[] = "providers: [{name: local, type: mock}]\n"
                                  "models:\n"
                                  "  - { name: mock, targets: [{provider: local, model: echo}] }\n"
                                  "  - { name: fast, targets: [{provider: local, model: echo}] }\n";

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/ah_registry_XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->url, sizeof(f->url), "sqlite://%s/db", f->dir);
    f->store_cfg.storage.url = f->url;
    f->store_cfg.storage.busy_timeout_ms = 5000;
    f->store_cfg.storage.max_batch = 256;
    ah_buf_t err = AH_BUF_INIT;
    char *env[] = {NULL};
    if (ah_config_load_string(&f->cfg, "c.yaml", models_yaml, strlen(models_yaml), env, &err) !=
            0 ||
        ah_store_open(&f->store_cfg, AH_STORE_MIGRATE, &f->store, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.data ? err.data : "?");
        ah_buf_free(&err);
        return -1;
    }
    ah_buf_free(&err);
    *state = f;
    return 0;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            rm_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ah_store_close(f->store);
    ah_config_free(&f->cfg);
    rm_tree(f->dir);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static ah_agent_spec_t *spec_of(const char *text)
{
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    int rc = ah_agent_spec_parse("t.yaml", text, strlen(text), AH_AGENT_FMT_AUTO, &l, &e);
    if (rc || l.n != 1) {
        ah_buf_t b = AH_BUF_INIT;
        ah_agent_errors_format(&e, &b);
        print_error("parse failed (%d): %s\n", rc, b.data ? b.data : "");
        ah_buf_free(&b);
        fail();
    }
    ah_agent_errors_free(&e);
    ah_agent_spec_t *s = l.v[0];
    free(l.v);
    return s;
}

static char *agent_doc(const char *name, const char *spec_body)
{
    ah_buf_t b = AH_BUF_INIT;
    ah_buf_printf(&b, "apiVersion: agenthub/v1\nkind: Agent\nmetadata: { name: %s }\nspec:\n%s",
                  name, spec_body);
    return ah_buf_steal(&b);
}

/* Applies one document through the put job. rc of the job; *r filled on success. */
static int put(fixture_t *f, const char *name, const char *spec_body, ah_agent_put_result_t *r,
               ah_registry_update_t **update)
{
    char *doc = agent_doc(name, spec_body);
    ah_agent_spec_t *s = spec_of(doc);
    free(doc);
    ah_agent_spec_t *specs[1] = {s};
    ah_registry_put_t p = {
        .specs = specs, .n = 1, .cfg = &f->cfg, .actor = "test", .want_updates = update != NULL};
    int rc = ah_store_call(f->store, AH_STORE_WRITE, ah_registry_put_work, &p);
    if (rc == 0 && r)
        *r = p.results[0];
    if (rc == 0 && update) {
        *update = p.updates[0];
        p.updates[0] = NULL;
    }
    if (rc == -EINVAL) {
        ah_buf_t b = AH_BUF_INIT;
        ah_agent_errors_format(&p.errs, &b);
        print_message("put errors: %s", b.data ? b.data : "");
        ah_buf_free(&b);
    }
    ah_registry_put_clear(&p);
    ah_agent_spec_unref(s);
    return rc;
}

typedef struct op {
    const char *name;
    int64_t version, prev;
    ah_agent_row_t row;
    int64_t versions[16];
    char hashes[16][65];
    size_t n;
    ah_registry_update_t *update;
} op_t;

static int rollback_w(ah_db_t *db, void *arg)
{
    op_t *o = arg;
    int rc = ah_store_agent_rollback(db, o->name, o->version, ah_wall_ms(), &o->prev, &o->row);
    if (rc == 0)
        rc = ah_registry_update_read(db, o->name, &o->update);
    return rc;
}

static int archive_w(ah_db_t *db, void *arg)
{
    op_t *o = arg;
    int rc = ah_store_agent_archive(db, o->name, ah_wall_ms(), &o->row);
    if (rc == 0)
        rc = ah_registry_update_read(db, o->name, &o->update);
    return rc;
}

static int get_w(ah_db_t *db, void *arg)
{
    op_t *o = arg;
    return ah_store_agent_get(db, o->name, &o->row);
}

static int version_cb(void *ud, const ah_agent_version_rec_t *v)
{
    op_t *o = ud;
    if (o->n < 16) {
        o->versions[o->n] = v->version;
        memcpy(o->hashes[o->n], v->spec_hash, 65);
        o->n++;
    }
    return 0;
}

static int versions_w(ah_db_t *db, void *arg)
{
    op_t *o = arg;
    o->n = 0;
    return ah_store_agent_versions(db, o->name, version_cb, o);
}

static int op(fixture_t *f, unsigned flags, ah_store_work_fn w, op_t *o)
{
    ah_registry_update_free(o->update);
    o->update = NULL;
    return ah_store_call(f->store, flags, w, o);
}

/* ---- store: versions ---- */

static void test_versions_unchanged_rollback(void **state)
{
    fixture_t *f = *state;
    ah_agent_put_result_t r;
    const char *A = "  model: mock\n  instructions: A\n";
    const char *B = "  model: mock\n  instructions: B\n";

    assert_int_equal(put(f, "sup", A, &r, NULL), 0);
    assert_true(r.changed);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.previous_version, 0);

    /* Same spec, written differently (defaults spelt out, comments): unchanged. */
    assert_int_equal(put(f, "sup",
                         "  # a comment\n  instructions: A\n  model: mock\n"
                         "  limits: { max_turns: 10 }\n",
                         &r, NULL),
                     0);
    assert_false(r.changed);
    assert_int_equal(r.version, 1);

    assert_int_equal(put(f, "sup", B, &r, NULL), 0);
    assert_true(r.changed);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.previous_version, 1);
    assert_int_equal(r.row.latest_version, 2);

    /* Rollback moves the pointer; history stays. */
    op_t o = {.name = "sup", .version = 1};
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), 0);
    assert_int_equal(o.prev, 2);
    assert_int_equal(o.row.current_version, 1);
    assert_int_equal(o.row.latest_version, 2);
    /* Rolling back to the current version changes nothing. */
    int64_t rev = o.row.revision;
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), 0);
    assert_int_equal(o.prev, 1);
    assert_int_equal(op(f, AH_STORE_READ, get_w, &o), 0);
    assert_int_equal(o.row.revision, rev);

    /* "Unchanged" compares with the current version (1 now), and new versions follow the latest. */
    assert_int_equal(put(f, "sup", A, &r, NULL), 0);
    assert_false(r.changed);
    assert_int_equal(put(f, "sup", B, &r, NULL), 0);
    assert_true(r.changed);
    assert_int_equal(r.version, 3);

    assert_int_equal(op(f, AH_STORE_READ, versions_w, &o), 0);
    assert_int_equal(o.n, 3);
    assert_int_equal(o.versions[0], 1);
    assert_int_equal(o.versions[2], 3);
    assert_string_equal(o.hashes[1], o.hashes[2]); /* v2 and v3 are the same spec */
    assert_string_not_equal(o.hashes[0], o.hashes[1]);

    o.version = 9;
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), -ENXIO);
    o.name = "nobody";
    o.version = 1;
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), -ENOENT);
    assert_int_equal(op(f, AH_STORE_READ, get_w, &o), -ENOENT);
    ah_registry_update_free(o.update);
}

static void test_archive_and_restore(void **state)
{
    fixture_t *f = *state;
    ah_agent_put_result_t r;
    const char *A = "  model: mock\n";
    assert_int_equal(put(f, "arc", A, &r, NULL), 0);
    op_t o = {.name = "arc"};
    assert_int_equal(op(f, AH_STORE_WRITE, archive_w, &o), 0);
    assert_true(o.row.archived_at > 0);
    assert_int_equal(op(f, AH_STORE_WRITE, archive_w, &o), -EALREADY);
    o.version = 1;
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), -EPERM);

    /* Applying again restores it, always as a new version (even with the same spec). */
    assert_int_equal(put(f, "arc", A, &r, NULL), 0);
    assert_true(r.changed);
    assert_true(r.unarchived);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.row.archived_at, 0);
    assert_int_equal(put(f, "arc", A, &r, NULL), 0);
    assert_false(r.changed);
    ah_registry_update_free(o.update);
}

/* ---- the put job's context checks ---- */

static void test_put_context(void **state)
{
    fixture_t *f = *state;
    ah_agent_put_result_t r;
    assert_int_equal(put(f, "ctx", "  model: fsat\n", &r, NULL), -EINVAL);
    assert_int_equal(put(f, "ctx", "  model: mock\n  handoffs: [nobody]\n", &r, NULL), -EINVAL);
    assert_int_equal(
        put(f, "ctx", "  model: mock\n  canary: { version: 1, weight: 5 }\n", &r, NULL), -EINVAL);
    op_t o = {.name = "ctx"};
    assert_int_equal(op(f, AH_STORE_READ, get_w, &o), -ENOENT); /* nothing written */

    assert_int_equal(put(f, "ctx", "  model: mock\n", &r, NULL), 0);
    /* Now version 1 exists: a canary may point at it. */
    assert_int_equal(
        put(f, "ctx", "  model: fast\n  canary: { version: 1, weight: 5 }\n", &r, NULL), 0);
    assert_int_equal(r.version, 2);
    /* Handoffs: to an existing agent, not an archived one. */
    assert_int_equal(put(f, "ctx2", "  model: mock\n  handoffs: [ctx]\n", &r, NULL), 0);
    assert_int_equal(op(f, AH_STORE_WRITE, archive_w, &o), 0);
    assert_int_equal(put(f, "ctx3", "  model: mock\n  handoffs: [ctx]\n", &r, NULL), -EINVAL);
    ah_registry_update_free(o.update);

    /* The errors name the field. */
    ah_agent_spec_t *s = spec_of("apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: e}\n"
                                 "spec:\n  model: fsat\n");
    ah_agent_spec_t *specs[1] = {s};
    ah_registry_put_t p = {.specs = specs, .n = 1, .cfg = &f->cfg, .actor = "test"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, ah_registry_put_work, &p), -EINVAL);
    assert_int_equal(p.errs.n, 1);
    assert_string_equal(p.errs.v[0].path, "spec.model");
    assert_int_equal(p.errs.v[0].line, 5);
    assert_string_equal(p.errs.v[0].message,
                        "unknown model \"fsat\" (did you mean \"fast\"? configured: mock, fast)");
    ah_registry_put_clear(&p);
    ah_agent_spec_unref(s);
}

/* ---- the cache ---- */

static void test_registry_apply_get(void **state)
{
    fixture_t *f = *state;
    ah_registry_t *reg = ah_registry_new(NULL, 1);
    assert_non_null(reg);
    ah_agent_spec_t *s;
    assert_int_equal(ah_registry_get(reg, "reg", &s), -ENOENT);

    ah_registry_update_t *u1 = NULL, *u2 = NULL;
    ah_agent_put_result_t r;
    assert_int_equal(put(f, "reg", "  model: mock\n  instructions: one\n", &r, &u1), 0);
    assert_int_equal(ah_registry_update_apply(reg, u1), 0);
    assert_int_equal(ah_registry_get(reg, "reg", &s), 0);
    assert_int_equal(s->version, 1);
    assert_string_equal(s->instructions, "one");
    assert_true(ah_registry_exists(reg, "reg"));
    assert_int_equal(ah_registry_count(reg), 1);

    /* A reference outlives the registry's switch to a newer version. */
    assert_int_equal(put(f, "reg", "  model: mock\n  instructions: two\n", &r, &u2), 0);
    assert_int_equal(ah_registry_update_apply(reg, u2), 0);
    assert_string_equal(s->instructions, "one");
    ah_agent_spec_unref(s);
    assert_int_equal(ah_registry_get(reg, "reg", &s), 0);
    assert_int_equal(s->version, 2);
    ah_agent_spec_unref(s);

    /* An older revision arriving late (a slow refresh) does not undo a newer one. */
    ah_registry_update_t *older = NULL;
    assert_int_equal(put(f, "reg", "  model: mock\n  instructions: three\n", &r, &older), 0);
    op_t o = {.name = "reg", .version = 1};
    assert_int_equal(op(f, AH_STORE_WRITE, rollback_w, &o), 0); /* a newer revision */
    assert_int_equal(ah_registry_update_apply(reg, o.update), 0);
    o.update = NULL;
    assert_int_equal(ah_registry_update_apply(reg, older), 0);
    assert_int_equal(ah_registry_get(reg, "reg", &s), 0);
    assert_int_equal(s->version, 1);
    assert_string_equal(s->instructions, "one");
    ah_agent_spec_unref(s);

    /* names for /v1/models; archived agents drop out. */
    char **names;
    size_t n;
    assert_int_equal(ah_registry_names(reg, &names, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "reg");
    ah_registry_names_free(names, n);
    assert_int_equal(op(f, AH_STORE_WRITE, archive_w, &o), 0);
    assert_int_equal(ah_registry_update_apply(reg, o.update), 0);
    o.update = NULL;
    assert_int_equal(ah_registry_get(reg, "reg", &s), -ENOENT);
    assert_false(ah_registry_exists(reg, "reg"));
    assert_int_equal(ah_registry_names(reg, &names, &n), 0);
    assert_int_equal(n, 0);
    ah_registry_names_free(names, n);
    ah_registry_free(reg);
}

static void test_canary_pick(void **state)
{
    fixture_t *f = *state;
    ah_registry_t *reg = ah_registry_new(NULL, 1);
    ah_registry_update_t *u = NULL;
    ah_agent_put_result_t r;
    assert_int_equal(put(f, "can", "  model: mock\n  instructions: stable\n", &r, NULL), 0);
    assert_int_equal(put(f, "can",
                         "  model: mock\n  instructions: next\n"
                         "  canary: { version: 1, weight: 30 }\n",
                         &r, &u),
                     0);
    assert_int_equal(r.version, 2);
    assert_int_equal(ah_registry_update_apply(reg, u), 0);

    /* rnd % 100 < weight picks the canary: exactly 30% over a full cycle of residues. */
    int canary = 0;
    for (uint64_t rnd = 0; rnd < 10000; rnd++) {
        ah_agent_spec_t *s;
        int64_t v;
        assert_int_equal(ah_registry_pick(reg, "can", rnd, &s, &v), 0);
        assert_int_equal(v, s->version);
        if (v == 1) {
            canary++;
            assert_string_equal(s->instructions, "stable");
        } else {
            assert_int_equal(v, 2);
        }
        ah_agent_spec_unref(s);
    }
    assert_int_equal(canary, 3000);

    /* And with real random numbers, close to 30%. */
    srandom(42);
    canary = 0;
    for (int i = 0; i < 10000; i++) {
        ah_agent_spec_t *s;
        int64_t v;
        uint64_t rnd = ((uint64_t)random() << 31) ^ (uint64_t)random();
        assert_int_equal(ah_registry_pick(reg, "can", rnd, &s, &v), 0);
        canary += v == 1;
        ah_agent_spec_unref(s);
    }
    assert_in_range(canary, 2700, 3300);

    /* get ignores the canary. */
    ah_agent_spec_t *s;
    assert_int_equal(ah_registry_get(reg, "can", &s), 0);
    assert_int_equal(s->version, 2);
    ah_agent_spec_unref(s);

    /* weight 0 never, weight 100 always. */
    const int weights[] = {0, 100};
    for (int w = 0; w < 2; w++) {
        char body[128];
        snprintf(body, sizeof(body), "  model: mock\n  canary: { version: 1, weight: %d }\n",
                 weights[w]);
        assert_int_equal(put(f, "can", body, &r, &u), 0);
        assert_int_equal(ah_registry_update_apply(reg, u), 0);
        for (uint64_t rnd = 0; rnd < 200; rnd++) {
            int64_t v;
            assert_int_equal(ah_registry_pick(reg, "can", rnd, &s, &v), 0);
            assert_int_equal(v, weights[w] ? 1 : r.version);
            ah_agent_spec_unref(s);
        }
    }
    assert_int_equal(ah_registry_pick(reg, "nobody", 0, &s, NULL), -ENOENT);
    ah_registry_free(reg);
}

/* Another "replica" changes agents through the store; the refresher picks it up. */
static void test_refresh_from_store(void **state)
{
    fixture_t *f = *state;
    ah_agent_put_result_t r;
    assert_int_equal(put(f, "ref", "  model: mock\n  instructions: v1\n", &r, NULL), 0);

    ah_registry_t *reg = ah_registry_new(f->store, 0.02);
    assert_int_equal(ah_registry_start(reg), 0);
    ah_agent_spec_t *s;
    assert_int_equal(ah_registry_get(reg, "ref", &s), 0); /* the first load is synchronous */
    assert_int_equal(s->version, 1);
    ah_agent_spec_unref(s);

    assert_int_equal(put(f, "ref", "  model: mock\n  instructions: v2\n", &r, NULL), 0);
    uint64_t deadline = ah_mono_ns() + 5000000000ull;
    int64_t seen = 0;
    while (ah_mono_ns() < deadline) {
        if (ah_registry_get(reg, "ref", &s) == 0) {
            seen = s->version;
            ah_agent_spec_unref(s);
            if (seen == 2)
                break;
        }
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    assert_int_equal(seen, 2);

    op_t o = {.name = "ref"};
    assert_int_equal(op(f, AH_STORE_WRITE, archive_w, &o), 0);
    deadline = ah_mono_ns() + 5000000000ull;
    while (ah_mono_ns() < deadline && ah_registry_exists(reg, "ref"))
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    assert_false(ah_registry_exists(reg, "ref"));

    /* refresh_now reads at once. */
    assert_int_equal(put(f, "ref2", "  model: mock\n", &r, NULL), 0);
    assert_int_equal(ah_registry_refresh_now(reg), 0);
    assert_true(ah_registry_exists(reg, "ref2"));
    ah_registry_kick(reg);
    ah_registry_free(reg);
    ah_registry_update_free(o.update);
}

/* ---- apply -f PATH ---- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void test_apply_path(void **state)
{
    fixture_t *f = *state;
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/agents", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* a hands off to b, defined in a later file of the same batch. */
    write_file(dir, "a.yaml",
               "apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: pa}\n"
               "spec:\n  model: mock\n  handoffs: [pb]\n");
    write_file(dir, "b.json",
               "{\"apiVersion\":\"agenthub/v1\",\"kind\":\"Agent\",\"metadata\":"
               "{\"name\":\"pb\"},\"spec\":{\"model\":\"mock\"}}");
    write_file(dir, "notes.txt", "not an agent");
    write_file(dir, ".hidden.yaml", "garbage: [");

    ah_buf_t report = AH_BUF_INIT;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    assert_int_equal(ah_registry_apply_path(f->store, &f->cfg, dir, "test", 0, &report, &e), 2);
    assert_string_equal(report.data, "agent/pa: created version 1\nagent/pb: created version 1\n");
    ah_buf_reset(&report);
    assert_int_equal(ah_registry_apply_path(f->store, &f->cfg, dir, "test", 0, &report, &e), 2);
    assert_string_equal(report.data,
                        "agent/pa: unchanged (version 1)\nagent/pb: unchanged (version 1)\n");
    assert_int_equal(e.n, 0);

    /* Dry run: says what would happen, writes nothing. */
    write_file(dir, "a.yaml",
               "apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: pa}\n"
               "spec:\n  model: fast\n  handoffs: [pb]\n");
    ah_buf_reset(&report);
    assert_int_equal(
        ah_registry_apply_path(f->store, &f->cfg, dir, "test", AH_REGISTRY_DRY_RUN, &report, &e),
        2);
    assert_string_equal(report.data,
                        "agent/pa: would create version 2\nagent/pb: unchanged (version 1)\n");
    op_t o = {.name = "pa"};
    assert_int_equal(op(f, AH_STORE_READ, get_w, &o), 0);
    assert_int_equal(o.row.latest_version, 1);

    /* One bad file: every problem with FILE:LINE, and nothing is written. */
    write_file(dir, "c.yaml",
               "apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: pc}\n"
               "spec:\n  model: mock\n  tools:\n    - type: htp\n");
    ah_buf_reset(&report);
    assert_int_equal(ah_registry_apply_path(f->store, &f->cfg, dir, "test", 0, &report, &e),
                     -EINVAL);
    ah_buf_t text = AH_BUF_INIT;
    ah_agent_errors_format(&e, &text);
    char want[1024];
    snprintf(want, sizeof(want),
             "%s/c.yaml:7: spec.tools[0].type: unknown tool type \"htp\" (known: http, mcp, "
             "exec)\n",
             dir);
    assert_string_equal(text.data, want);
    assert_int_equal(op(f, AH_STORE_READ, get_w, &o), 0);
    assert_int_equal(o.row.latest_version, 1);
    ah_agent_errors_free(&e);
    ah_buf_reset(&text);

    /* The same agent twice. */
    write_file(dir, "c.yaml",
               "apiVersion: agenthub/v1\nkind: Agent\nmetadata: {name: pb}\n"
               "spec:\n  model: mock\n");
    assert_int_equal(ah_registry_apply_path(f->store, &f->cfg, dir, "test", 0, &report, &e),
                     -EINVAL);
    ah_agent_errors_format(&e, &text);
    snprintf(want, sizeof(want),
             "%s/c.yaml:1: metadata.name: agent \"pb\" is also defined at %s/b.json\n", dir, dir);
    assert_string_equal(text.data, want);
    ah_agent_errors_free(&e);
    ah_buf_free(&text);

    /* A missing path. */
    assert_int_equal(
        ah_registry_apply_path(f->store, &f->cfg, "/nonexistent/agents", "test", 0, &report, &e),
        -ENOENT);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.v[0].message, "cannot read: No such file or directory");
    ah_agent_errors_free(&e);
    ah_buf_free(&report);
}

int main(void)
{
    ah_log_set_level(AH_LOG_WARN); /* no migration chatter */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_versions_unchanged_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_and_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_apply_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canary_pick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_from_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
