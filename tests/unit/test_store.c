/*
 * test_store.c - the store (store.h), migrations (migrate.h), key and audit
 * rows, on a SQLite file in a temporary directory: open + migrate, schema
 * status and refusal of newer schemas, group commit with failing jobs, the
 * bounded queues, blocking calls, loop delivery and close draining the queues.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "store/audit.h"
#include "store/keys.h"
#include "store/store.h"

static char tmpdir[256];
static char url[400];
static int db_seq;

/* Each test gets its own database file. */
static int setup(void **state)
{
    snprintf(url, sizeof(url), "sqlite://%s/t%d/agenthub.db", tmpdir, ++db_seq);
    return 0;
}

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ah_test_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    ah_log_set_level(AH_LOG_OFF); /* the tests provoke errors the store logs */
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Only the storage fields: the store reads nothing else (config.c is not needed). */
static ah_config_t make_cfg(const char *u, int max_batch)
{
    ah_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.storage.url = (char *)u;
    cfg.storage.busy_timeout_ms = 5000;
    cfg.storage.max_batch = max_batch;
    return cfg;
}

static ah_store_t *open_store(unsigned flags, size_t queue_max, int max_batch)
{
    ah_config_t cfg = make_cfg(url, max_batch);
    ah_store_opts_t o = {.flags = flags, .queue_max = queue_max};
    ah_store_t *s = NULL;
    ah_buf_t err = AH_BUF_INIT;
    int rc = ah_store_open_ex(&cfg, &o, &s, &err);
    if (rc != 0)
        fprintf(stderr, "open: %d %s\n", rc, err.data ? err.data : "");
    assert_int_equal(rc, 0);
    ah_buf_free(&err);
    return s;
}

/* ---- helpers: a gate that holds the writer, a completion counter ----- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
} gate_t;

static void gate_init(gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->released = false;
}

static void gate_destroy(gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static int gate_work(ah_db_t *db, void *arg)
{
    gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void gate_wait_entered(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->released = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} counter_t;

static void counter_init(counter_t *c)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->n = 0;
}

static void counter_destroy(counter_t *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void counter_add(counter_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits (bounded: 20 s) until the counter reaches want; returns the count seen. */
static int counter_wait(counter_t *c, int want)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&c->mu);
    while (c->n < want) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            break;
    }
    int n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static int exec_work(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, arg);
}

static int64_t count_rows(ah_store_t *s, const char *sql);

/* ---- open, migrations ------------------------------------------------- */

static void test_open_migrate_status(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_string_equal(ah_store_backend(s), "sqlite");
    int cur = -1, latest = -1;
    assert_int_equal(ah_store_schema_status(s, &cur, &latest), 0);
    assert_true(latest >= 1);
    assert_int_equal(latest, ah_migrate_latest());
    assert_int_equal(cur, latest);
    assert_int_equal(ah_store_ping(s), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM schema_migrations"), ah_migrations_count);
    ah_store_close(s);

    /* Second open: nothing to apply. */
    s = open_store(AH_STORE_MIGRATE, 0, 0);
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_store_migrate(s, NULL, NULL, &err), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM schema_migrations"), ah_migrations_count);
    ah_store_close(s);
    ah_buf_free(&err);
}

static void on_applied(void *ud, const ah_migration_t *m)
{
    char *names = ud;
    strncat(names, m->name, 255 - strlen(names));
    strncat(names, " ", 255 - strlen(names));
}

static void test_migrate_later(void **state)
{
    /* Opened without MIGRATE: empty schema, status 0, then ah_store_migrate applies. */
    ah_store_t *s = open_store(0, 0, 0);
    int cur = -1, latest = -1;
    assert_int_equal(ah_store_schema_status(s, &cur, &latest), 0);
    assert_int_equal(cur, 0);
    char names[256] = "";
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_store_migrate(s, on_applied, names, &err), ah_migrations_count);
    assert_non_null(strstr(names, "0001_init "));
    assert_int_equal(ah_store_schema_status(s, &cur, &latest), 0);
    assert_int_equal(cur, latest);
    ah_store_close(s);
    ah_buf_free(&err);
}

static void test_newer_schema_refused(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, exec_work,
                                   "INSERT INTO schema_migrations (version, name, applied_at) "
                                   "VALUES (999, '0999_future', 0)"),
                     0);
    ah_store_close(s);

    char want[160];
    snprintf(want, sizeof(want),
             "database schema version 999 is newer than this agenthub (latest %d): upgrade "
             "agenthub",
             ah_migrate_latest());
    unsigned flag_sets[2] = {AH_STORE_MIGRATE, 0};
    for (int i = 0; i < 2; i++) {
        ah_config_t cfg = make_cfg(url, 0);
        ah_buf_t err = AH_BUF_INIT;
        s = (ah_store_t *)1;
        assert_int_equal(ah_store_open(&cfg, flag_sets[i], &s, &err), -EPROTO);
        assert_null(s);
        assert_non_null(err.data);
        assert_non_null(strstr(err.data, want));
        ah_buf_free(&err);
    }
}

static void test_open_errors(void **state)
{
    /* A PostgreSQL server that is not there: a clear error, no store. */
    ah_config_t cfg = make_cfg("postgres://agenthub@127.0.0.1:1/agenthub", 0);
    ah_store_t *s = NULL;
    ah_buf_t err = AH_BUF_INIT;
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, &err), -EIO);
    assert_null(s);
    assert_non_null(err.data);
    ah_buf_free(&err);

    char bad[400];
    snprintf(bad, sizeof(bad), "sqlite://%s/a/b/c/x.db", tmpdir);
    cfg = make_cfg(bad, 0);
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, &err), -ENOENT);
    assert_non_null(strstr(err.data, "cannot create directory"));
    ah_buf_free(&err);
}

/* ---- keys and audit ---------------------------------------------------- */

static ah_key_rec_t make_key(const char *id, const char *hash, int64_t updated)
{
    ah_key_rec_t k;
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%s", id);
    snprintf(k.name, sizeof(k.name), "name of %s", id);
    snprintf(k.hash, sizeof(k.hash), "%s", hash);
    snprintf(k.prefix, sizeof(k.prefix), "ahk_%.4s", hash);
    snprintf(k.role, sizeof(k.role), "admin");
    k.created_at = updated;
    k.updated_at = updated;
    return k;
}

typedef struct {
    ah_key_rec_t keys[8];
    int n;
} key_list_t;

static int collect_key(void *ud, const ah_key_rec_t *k)
{
    key_list_t *l = ud;
    if (l->n < 8)
        l->keys[l->n] = *k;
    l->n++;
    return 0;
}

typedef struct {
    ah_key_rec_t rec;
    const char *id;
    int64_t since, now;
    key_list_t list;
    int64_t count;
} key_job_t;

static int key_insert_work(ah_db_t *db, void *arg)
{
    return ah_store_key_insert(db, &((key_job_t *)arg)->rec);
}

static int key_get_work(ah_db_t *db, void *arg)
{
    key_job_t *j = arg;
    return ah_store_key_get(db, j->id, &j->rec);
}

static int key_list_work(ah_db_t *db, void *arg)
{
    key_job_t *j = arg;
    j->list.n = 0;
    return ah_store_key_list(db, j->since, collect_key, &j->list);
}

static int key_revoke_work(ah_db_t *db, void *arg)
{
    key_job_t *j = arg;
    return ah_store_key_revoke(db, j->id, j->now);
}

static int key_count_work(ah_db_t *db, void *arg)
{
    return ah_store_key_count(db, &((key_job_t *)arg)->count);
}

static void test_keys(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    const char *h1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *h2 = "2222222222222222222222222222222222222222222222222222222222222222";
    const char *h3 = "3333333333333333333333333333333333333333333333333333333333333333";
    key_job_t j;
    memset(&j, 0, sizeof(j));

    j.rec = make_key("key_a", h1, 1000);
    snprintf(j.rec.created_by, sizeof(j.rec.created_by), "admin");
    j.rec.expires_at = 9000;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), 0);
    j.rec = make_key("key_b", h2, 2000);
    snprintf(j.rec.tenant, sizeof(j.rec.tenant), "acme");
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), 0);

    /* duplicates: same id, same hash */
    j.rec = make_key("key_a", h3, 3000);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), -EEXIST);
    j.rec = make_key("key_c", h1, 3000);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), -EEXIST);
    /* missing required field */
    j.rec = make_key("key_d", h3, 3000);
    j.rec.role[0] = '\0';
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), -EINVAL);

    /* get */
    memset(&j.rec, 0, sizeof(j.rec));
    j.id = "key_a";
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_get_work, &j), 0);
    assert_string_equal(j.rec.id, "key_a");
    assert_string_equal(j.rec.name, "name of key_a");
    assert_string_equal(j.rec.hash, h1);
    assert_string_equal(j.rec.role, "admin");
    assert_string_equal(j.rec.tenant, "default");
    assert_string_equal(j.rec.created_by, "admin");
    assert_int_equal(j.rec.created_at, 1000);
    assert_int_equal(j.rec.revoked_at, 0);
    assert_int_equal(j.rec.expires_at, 9000);
    j.id = "key_zzz";
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_get_work, &j), -ENOENT);

    /* list: all, then incremental */
    j.since = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_list_work, &j), 0);
    assert_int_equal(j.list.n, 2);
    assert_string_equal(j.list.keys[0].id, "key_a");
    assert_string_equal(j.list.keys[1].id, "key_b");
    assert_string_equal(j.list.keys[1].tenant, "acme");
    j.since = 1000;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_list_work, &j), 0);
    assert_int_equal(j.list.n, 1);
    assert_string_equal(j.list.keys[0].id, "key_b");
    j.since = 2000;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_list_work, &j), 0);
    assert_int_equal(j.list.n, 0);

    /* revoke: shows up in the next incremental refresh */
    j.id = "key_a";
    j.now = 5000;
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_revoke_work, &j), 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_revoke_work, &j), -ENOENT);
    j.id = "key_nope";
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_revoke_work, &j), -ENOENT);
    j.since = 2000;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_list_work, &j), 0);
    assert_int_equal(j.list.n, 1);
    assert_string_equal(j.list.keys[0].id, "key_a");
    assert_int_equal(j.list.keys[0].revoked_at, 5000);
    assert_int_equal(j.list.keys[0].updated_at, 5000);
    j.since = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_list_work, &j), 0);
    assert_int_equal(j.list.n, 2);
    assert_string_equal(j.list.keys[0].id, "key_b"); /* ordered by updated_at */

    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_count_work, &j), 0);
    assert_int_equal(j.count, 2);
    ah_store_close(s);
}

typedef struct {
    int n;
    char first_id[48], first_actor[32], first_request[32], detail[64];
    int64_t ts;
    int later_actor_null; /* rows after the first with a NULL actor */
} audit_seen_t;

/* Runs on a store thread: records only; the test thread asserts. */
static int collect_audit(void *ud, const ah_audit_rec_t *r)
{
    audit_seen_t *a = ud;
    if (a->n == 0) {
        snprintf(a->first_id, sizeof(a->first_id), "%s", r->id ? r->id : "(null)");
        snprintf(a->first_actor, sizeof(a->first_actor), "%s", r->actor ? r->actor : "(null)");
        snprintf(a->first_request, sizeof(a->first_request), "%s",
                 r->request_id ? r->request_id : "(null)");
        snprintf(a->detail, sizeof(a->detail), "%s", r->detail ? r->detail : "(null)");
        a->ts = r->ts;
    } else if (!r->actor) {
        a->later_actor_null++;
    }
    a->n++;
    return 0;
}

static int audit_insert_work(ah_db_t *db, void *arg)
{
    int rc = ah_store_audit_insert(db, "key_admin", "key.create", "key_a", "{\"role\":\"admin\"}",
                                   "req_1");
    if (rc == 0)
        rc = ah_store_audit_insert(db, NULL, "key.revoke", "key_a", NULL, NULL);
    if (rc == 0)
        rc = ah_store_audit_insert(db, NULL, "agent.apply", NULL, NULL, NULL);
    if (rc == 0 && ah_store_audit_insert(db, NULL, NULL, NULL, NULL, NULL) != -EINVAL)
        rc = -EPROTO;
    return rc;
}

typedef struct {
    int64_t since;
    int limit;
    audit_seen_t seen;
} audit_list_t;

static int audit_list_work(ah_db_t *db, void *arg)
{
    audit_list_t *l = arg;
    memset(&l->seen, 0, sizeof(l->seen));
    return ah_store_audit_list(db, l->since, l->limit, collect_audit, &l->seen);
}

static void test_audit(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    int64_t before = ah_wall_ms();
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, audit_insert_work, NULL), 0);
    audit_list_t l = {.since = 0, .limit = 2};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, audit_list_work, &l), 0);
    assert_int_equal(l.seen.n, 2);
    assert_string_equal(l.seen.detail, "{\"role\":\"admin\"}");
    assert_true(strncmp(l.seen.first_id, "aud_", 4) == 0);
    assert_string_equal(l.seen.first_actor, "key_admin");
    assert_string_equal(l.seen.first_request, "req_1");
    assert_int_equal(l.seen.later_actor_null, 1);
    assert_true(l.seen.ts >= before && l.seen.ts <= ah_wall_ms());
    l.limit = 100;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, audit_list_work, &l), 0);
    assert_int_equal(l.seen.n, 3);
    l.since = ah_wall_ms() + 60000;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, audit_list_work, &l), 0);
    assert_int_equal(l.seen.n, 0);
    l.limit = 0;
    assert_int_equal(ah_store_call(s, AH_STORE_READ, audit_list_work, &l), -EINVAL);
    ah_store_close(s);
}

/* ---- jobs, group commit ---------------------------------------------- */

#define N_JOBS 1000

typedef struct {
    int i;
    int rc;
    atomic_int calls;
    counter_t *done;
} gc_job_t;

/* Job i inserts row i; every 10th fails after inserting (must be rolled back alone). */
static int gc_work(ah_db_t *db, void *arg)
{
    gc_job_t *j = arg;
    ah_db_val_t v = ah_db_int(j->i);
    int rc = ah_db_query(db, "INSERT INTO gc (i) VALUES (?)", &v, 1, NULL, NULL);
    if (rc < 0)
        return rc;
    if (j->i % 10 == 7)
        return -ECANCELED;
    if (j->i % 10 == 3) /* duplicate: a real constraint error inside the batch */
        return ah_db_query(db, "INSERT INTO gc (i) VALUES (?)", &v, 1, NULL, NULL);
    return j->i;
}

static void gc_done(int rc, void *arg)
{
    gc_job_t *j = arg;
    j->rc = rc;
    atomic_fetch_add(&j->calls, 1);
    counter_add(j->done);
}

typedef struct {
    ah_store_t *s;
    gc_job_t *jobs;
    int submitted;
} submitter_t;

static void *submit_thread(void *arg)
{
    submitter_t *t = arg;
    for (int i = 0; i < N_JOBS; i++) {
        if (ah_store_submit(t->s, AH_STORE_WRITE, gc_work, gc_done, NULL, &t->jobs[i]) == 0)
            t->submitted++;
    }
    return NULL;
}

static int count_work(ah_db_t *db, void *arg)
{
    int64_t *n = arg;
    const char *sql = (const char *)(intptr_t)n[1];
    return ah_db_query_int(db, sql, NULL, 0, &n[0]);
}

static int64_t count_rows(ah_store_t *s, const char *sql)
{
    int64_t n[2] = {-1, (int64_t)(intptr_t)sql};
    assert_int_equal(ah_store_call(s, AH_STORE_READ, count_work, n), 0);
    return n[0];
}

static void test_group_commit(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 64);
    assert_int_equal(
        ah_store_call(s, AH_STORE_WRITE, exec_work, "CREATE TABLE gc (i INTEGER PRIMARY KEY)"), 0);
    ah_store_stats_t st0;
    ah_store_stats(s, &st0);

    /* Hold the writer so the 1000 jobs queue up and are committed in batches. */
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate);

    counter_t done;
    counter_init(&done);
    gc_job_t *jobs = calloc(N_JOBS, sizeof(*jobs));
    for (int i = 0; i < N_JOBS; i++) {
        jobs[i].i = i;
        jobs[i].rc = 12345;
        jobs[i].done = &done;
    }
    submitter_t t = {s, jobs, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, submit_thread, &t), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.submitted, N_JOBS);
    ah_store_stats_t st;
    ah_store_stats(s, &st);
    assert_int_equal(st.write_queue, N_JOBS);
    gate_release(&gate);

    assert_int_equal(counter_wait(&done, N_JOBS), N_JOBS);
    int ok = 0, failed = 0;
    for (int i = 0; i < N_JOBS; i++) {
        assert_int_equal(atomic_load(&jobs[i].calls), 1);
        if (i % 10 == 7) {
            assert_int_equal(jobs[i].rc, -ECANCELED);
            failed++;
        } else if (i % 10 == 3) {
            assert_int_equal(jobs[i].rc, -EEXIST);
            failed++;
        } else {
            assert_int_equal(jobs[i].rc, i);
            ok++;
        }
    }
    /* Exactly the successful jobs' rows are there. */
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM gc"), ok);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM gc WHERE i % 10 = 7 OR i % 10 = 3"), 0);

    ah_store_stats(s, &st);
    assert_int_equal(st.writes - st0.writes, N_JOBS + 1);
    assert_int_equal(st.errors - st0.errors, failed);
    /* 1000 jobs of at most 64 per transaction: 16 batches (+1 for the gate). */
    assert_int_equal(st.batches - st0.batches, 1 + (N_JOBS + 63) / 64);
    assert_int_equal(st.max_batch_len, 64);
    assert_int_equal(st.write_queue, 0);
    ah_store_close(s);
    free(jobs);
    counter_destroy(&done);
    gate_destroy(&gate);
}

typedef struct {
    int rc;
    counter_t *done;
} simple_t;

static void simple_done(int rc, void *arg)
{
    simple_t *x = arg;
    x->rc = rc;
    counter_add(x->done);
}

static int insert_parent(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, "INSERT INTO parent (id) VALUES (1)");
}

/* Violates a deferred foreign key: passes its savepoint, fails at COMMIT. */
static int insert_orphan(ah_db_t *db, void *arg)
{
    return ah_db_exec(db, "INSERT INTO child (pid) VALUES (42)");
}

static void test_commit_failure_fails_batch(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, exec_work,
                                   "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                                   "CREATE TABLE child (pid INTEGER REFERENCES parent (id) "
                                   "DEFERRABLE INITIALLY DEFERRED)"),
                     0);
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate);
    counter_t done;
    counter_init(&done);
    simple_t a = {1, &done}, b = {1, &done};
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, insert_parent, simple_done, NULL, &a), 0);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, insert_orphan, simple_done, NULL, &b), 0);
    gate_release(&gate);
    assert_int_equal(counter_wait(&done, 2), 2);
    assert_int_equal(a.rc, -EIO);
    assert_int_equal(b.rc, -EIO);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM parent"), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM child"), 0);
    /* The writer recovers: the next batch commits. */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, insert_parent, NULL), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM parent"), 1);
    ah_store_close(s);
    counter_destroy(&done);
    gate_destroy(&gate);
}

static int return_42(ah_db_t *db, void *arg)
{
    return 42;
}

static int nested_call(ah_db_t *db, void *arg)
{
    return ah_store_call(arg, AH_STORE_READ, return_42, NULL);
}

static int commits_itself(ah_db_t *db, void *arg)
{
    return ah_db_begin(db, false);
}

static void test_call_and_flags(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    assert_int_equal(ah_store_call(s, AH_STORE_READ, return_42, NULL), 42);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, return_42, NULL), 42);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE | AH_STORE_NOTXN, return_42, NULL), 42);
    /* blocking from a store thread would deadlock: refused */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, nested_call, s), -EDEADLK);
    /* flags */
    assert_int_equal(ah_store_call(s, 0, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | AH_STORE_WRITE, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | AH_STORE_NOTXN, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_READ | 0x100, return_42, NULL), -EINVAL);
    assert_int_equal(ah_store_submit(s, AH_STORE_READ, NULL, NULL, NULL, NULL), -EINVAL);
    /* a NOTXN job that leaves a transaction open is rolled back and fails */
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE | AH_STORE_NOTXN, commits_itself, NULL),
                     -EINVAL);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, return_42, NULL), 42);
    ah_store_close(s);
}

static void test_bounded_queue(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 5, 0);
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate); /* the gate job is running, not queued */
    counter_t done;
    counter_init(&done);
    simple_t x[6];
    for (int i = 0; i < 5; i++) {
        x[i] = (simple_t){1, &done};
        assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, return_42, simple_done, NULL, &x[i]),
                         0);
    }
    x[5] = (simple_t){1, &done};
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, return_42, simple_done, NULL, &x[5]),
                     -EBUSY);
    ah_store_stats_t st;
    ah_store_stats(s, &st);
    assert_int_equal(st.write_queue, 5);
    assert_int_equal(st.rejected, 1);
    /* The reader has its own queue and connection: reads proceed while the writer is held. */
    assert_int_equal(ah_store_ping(s), 0);
    gate_release(&gate);
    assert_int_equal(counter_wait(&done, 5), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(x[i].rc, 42);
    ah_store_close(s);
    counter_destroy(&done);
    gate_destroy(&gate);
}

static void test_close_drains_queue(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 8);
    assert_int_equal(
        ah_store_call(s, AH_STORE_WRITE, exec_work, "CREATE TABLE gc (i INTEGER PRIMARY KEY)"), 0);
    gate_t gate;
    gate_init(&gate);
    assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gate_work, NULL, NULL, &gate), 0);
    gate_wait_entered(&gate);
    counter_t done;
    counter_init(&done);
    gc_job_t jobs[50];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 50; i++) {
        jobs[i].i = i * 10; /* never a failing index */
        jobs[i].done = &done;
        assert_int_equal(ah_store_submit(s, AH_STORE_WRITE, gc_work, gc_done, NULL, &jobs[i]), 0);
    }
    gate_release(&gate);
    ah_store_close(s); /* returns only after the 50 queued jobs ran */
    assert_int_equal(counter_wait(&done, 50), 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(jobs[i].rc, i * 10);

    /* and they were committed */
    s = open_store(0, 0, 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM gc"), 50);
    ah_store_close(s);
    counter_destroy(&done);
    gate_destroy(&gate);
}

/* Done callbacks posted to a loop run on the loop's thread. */
typedef struct {
    ah_loop_t *loop;
    pthread_t loop_thread;
    bool on_loop_thread;
    int rc;
} loop_job_t;

static void *loop_main(void *arg)
{
    ah_loop_run(arg);
    return NULL;
}

static void loop_done(int rc, void *arg)
{
    loop_job_t *j = arg;
    j->rc = rc;
    j->on_loop_thread = pthread_equal(pthread_self(), j->loop_thread);
    ah_loop_stop(j->loop);
}

static void test_loop_delivery(void **state)
{
    ah_store_t *s = open_store(AH_STORE_MIGRATE, 0, 0);
    loop_job_t j = {0};
    j.loop = ah_loop_new();
    assert_non_null(j.loop);
    j.rc = 1;
    assert_int_equal(pthread_create(&j.loop_thread, NULL, loop_main, j.loop), 0);
    assert_int_equal(ah_store_submit(s, AH_STORE_READ, return_42, loop_done, j.loop, &j), 0);
    assert_int_equal(pthread_join(j.loop_thread, NULL), 0); /* the done callback stops the loop */
    assert_int_equal(j.rc, 42);
    assert_true(j.on_loop_thread);
    ah_store_close(s);
    ah_loop_free(j.loop);
}

/* sqlite://:memory: has one connection: reads go to the writer thread and see the writes. */
static void test_memory_store(void **state)
{
    ah_config_t cfg = make_cfg("sqlite://:memory:", 0);
    ah_store_t *s = NULL;
    assert_int_equal(ah_store_open(&cfg, AH_STORE_MIGRATE, &s, NULL), 0);
    key_job_t j;
    memset(&j, 0, sizeof(j));
    j.rec = make_key("key_m", "abcd", 10);
    assert_int_equal(ah_store_call(s, AH_STORE_WRITE, key_insert_work, &j), 0);
    j.id = "key_m";
    memset(&j.rec, 0, sizeof(j.rec));
    assert_int_equal(ah_store_call(s, AH_STORE_READ, key_get_work, &j), 0);
    assert_string_equal(j.rec.hash, "abcd");
    assert_int_equal(ah_store_ping(s), 0);
    ah_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_migrate_status, setup),
        cmocka_unit_test_setup(test_migrate_later, setup),
        cmocka_unit_test_setup(test_newer_schema_refused, setup),
        cmocka_unit_test_setup(test_open_errors, setup),
        cmocka_unit_test_setup(test_keys, setup),
        cmocka_unit_test_setup(test_audit, setup),
        cmocka_unit_test_setup(test_group_commit, setup),
        cmocka_unit_test_setup(test_commit_failure_fails_batch, setup),
        cmocka_unit_test_setup(test_call_and_flags, setup),
        cmocka_unit_test_setup(test_bounded_queue, setup),
        cmocka_unit_test_setup(test_close_drains_queue, setup),
        cmocka_unit_test_setup(test_loop_delivery, setup),
        cmocka_unit_test_setup(test_memory_store, setup),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
