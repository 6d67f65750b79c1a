/*
 * test_runs_store.c - run rows and run events (store/runs.h) on a real SQLite
 * store in a temporary directory, through ah_store_call like the API and the
 * runtime use them: insert/get/update, list filters and pagination, the event
 * log, idempotency keys, and the record helpers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/runs.h"
#include "store/store.h"
#include "testutil.h"

/* The fixture: a real SQLite store in a temporary directory (testutil.h). */
typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "runs", 64);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

/* ---- store jobs ---- */

static int insert_work(ah_db_t *db, void *arg)
{
    return ah_store_run_insert(db, arg);
}

static int update_work(ah_db_t *db, void *arg)
{
    return ah_store_run_update(db, arg);
}

typedef struct get_arg {
    const char *id;
    const char *key_id; /* with idem: by idempotency key */
    const char *idem;
    bool head;
    ah_run_rec_t out;
} get_arg_t;

static int get_work(ah_db_t *db, void *arg)
{
    get_arg_t *g = arg;
    if (g->idem)
        return ah_store_run_get_by_idempotency(db, g->key_id, g->idem, &g->out);
    if (g->head)
        return ah_store_run_get_head(db, g->id, &g->out);
    return ah_store_run_get(db, g->id, &g->out);
}

#define LIST_MAX 64

typedef struct list_arg {
    ah_run_filter_t f;
    bool summary;
    int n;
    char ids[LIST_MAX][48];
    int64_t created[LIST_MAX];
    bool had_state[LIST_MAX];
    int stop_after; /* 0 = never */
} list_arg_t;

static int list_cb(void *ud, const ah_run_rec_t *r)
{
    list_arg_t *l = ud;
    if (l->n == LIST_MAX)
        return -E2BIG;
    snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", r->id);
    l->created[l->n] = r->created_at;
    l->had_state[l->n] = r->state != NULL;
    l->n++;
    return l->stop_after && l->n == l->stop_after ? 7 : 0;
}

static int list_work(ah_db_t *db, void *arg)
{
    list_arg_t *l = arg;
    l->n = 0;
    return l->summary ? ah_store_run_list_summary(db, &l->f, list_cb, l)
                      : ah_store_run_list(db, &l->f, list_cb, l);
}

typedef struct events_arg {
    const ah_run_event_t *ev;
    size_t nev;
    const char *run_id;
    int64_t after;
    int limit;
    int n;
    int64_t seqs[64];
    char types[64][32];
    char data[64][64];
    int64_t ts[64];
} events_arg_t;

static int append_work(ah_db_t *db, void *arg)
{
    events_arg_t *a = arg;
    return ah_store_run_events_append(db, a->ev, a->nev);
}

static int event_cb(void *ud, const ah_run_event_t *e)
{
    events_arg_t *a = ud;
    if (a->n == 64)
        return -E2BIG;
    a->seqs[a->n] = e->seq;
    snprintf(a->types[a->n], sizeof(a->types[0]), "%s", e->type);
    snprintf(a->data[a->n], sizeof(a->data[0]), "%s", e->data);
    a->ts[a->n] = e->ts;
    if (strcmp(e->run_id, a->run_id) != 0)
        return -EIO;
    a->n++;
    return 0;
}

static int events_list_work(ah_db_t *db, void *arg)
{
    events_arg_t *a = arg;
    a->n = 0;
    return ah_store_run_events_list(db, a->run_id, a->after, a->limit, event_cb, a);
}

/* ---- helpers ---- */

/* A run with only the required fields; strings point at literals (never freed). */
static ah_run_rec_t make_run(const char *id, const char *agent, const char *status, int64_t at)
{
    ah_run_rec_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.agent, sizeof(r.agent), "%s", agent);
    snprintf(r.status, sizeof(r.status), "%s", status);
    snprintf(r.mode, sizeof(r.mode), "async");
    snprintf(r.key_id, sizeof(r.key_id), "key_a");
    r.agent_version = 1;
    r.input = (char *)"\"hello\"";
    r.created_at = at;
    r.updated_at = at;
    return r;
}

static void insert_ok(fixture_t *f, ah_run_rec_t *r)
{
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, r), 0);
}

static list_arg_t *list(fixture_t *f, const ah_run_filter_t *flt, bool summary)
{
    list_arg_t *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->f = *flt;
    l->summary = summary;
    assert_true(ah_store_call(f->store, AH_STORE_READ, list_work, l) >= 0);
    return l;
}

/* ---- tests ---- */

static void test_status_helpers(void **state)
{
    (void)state;
    assert_true(ah_run_status_final("completed"));
    assert_true(ah_run_status_final("failed"));
    assert_true(ah_run_status_final("cancelled"));
    assert_true(ah_run_status_final("expired"));
    assert_false(ah_run_status_final("running"));
    assert_false(ah_run_status_final("requires_action"));
    assert_false(ah_run_status_final(NULL));
    assert_true(ah_run_status_valid("queued"));
    assert_true(ah_run_status_valid("requires_action"));
    assert_false(ah_run_status_valid("done"));
    assert_false(ah_run_status_valid(""));
    assert_false(ah_run_status_valid(NULL));
}

static void test_insert_get_roundtrip(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_1", "support", AH_RUN_QUEUED, 1000);
    r.agent_version = 7;
    snprintf(r.mode, sizeof(r.mode), "sync");
    snprintf(r.tenant, sizeof(r.tenant), "acme");
    r.input = (char *)"[{\"role\":\"user\",\"content\":\"hi\"}]";
    r.session_id = (char *)"sess_1";
    r.metadata = (char *)"{\"ticket\":42}";
    r.limits = (char *)"{\"max_turns\":3}";
    r.state = (char *)"{\"messages\":[]}";
    r.webhook_url = (char *)"https://example.com/hook";
    r.idempotency_key = (char *)"idem-1";
    r.attempt = 2;
    r.lease_owner = (char *)"node-a";
    r.lease_expires_at = 5000;
    r.updated_at = 1001;
    insert_ok(f, &r);

    get_arg_t g = {.id = "run_1"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), 0);
    ah_run_rec_t *o = &g.out;
    assert_string_equal(o->id, "run_1");
    assert_string_equal(o->agent, "support");
    assert_int_equal(o->agent_version, 7);
    assert_string_equal(o->status, "queued");
    assert_string_equal(o->mode, "sync");
    assert_string_equal(o->input, r.input);
    assert_null(o->output);
    assert_null(o->error);
    assert_null(o->error_code);
    assert_string_equal(o->session_id, "sess_1");
    assert_string_equal(o->key_id, "key_a");
    assert_string_equal(o->tenant, "acme");
    assert_string_equal(o->metadata, "{\"ticket\":42}");
    assert_string_equal(o->limits, "{\"max_turns\":3}");
    assert_string_equal(o->state, "{\"messages\":[]}");
    assert_string_equal(o->webhook_url, "https://example.com/hook");
    assert_string_equal(o->idempotency_key, "idem-1");
    assert_string_equal(o->lease_owner, "node-a");
    assert_int_equal(o->lease_expires_at, 5000);
    assert_int_equal(o->attempt, 2);
    assert_int_equal(o->created_at, 1000);
    assert_int_equal(o->updated_at, 1001);
    assert_int_equal(o->started_at, 0);
    assert_int_equal(o->finished_at, 0);
    assert_int_equal(o->turns, 0);
    assert_int_equal(o->last_event_seq, 0);
    ah_run_rec_free(o);
    assert_null(o->input);

    /* The head read: same numbers, no text. */
    get_arg_t h = {.id = "run_1", .head = true};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &h), 0);
    assert_string_equal(h.out.status, "queued");
    assert_string_equal(h.out.key_id, "key_a");
    assert_int_equal(h.out.agent_version, 7);
    assert_int_equal(h.out.created_at, 1000);
    assert_null(h.out.input);
    assert_null(h.out.state);
    assert_null(h.out.metadata);
    ah_run_rec_free(&h.out);

    get_arg_t missing = {.id = "run_nope"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &missing), -ENOENT);
    missing.head = true;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &missing), -ENOENT);

    /* Same id again: -EEXIST, and the first row is untouched. */
    ah_run_rec_t dup = make_run("run_1", "other", AH_RUN_RUNNING, 2000);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &dup), -EEXIST);
    get_arg_t again = {.id = "run_1"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &again), 0);
    assert_string_equal(again.out.agent, "support");
    ah_run_rec_free(&again.out);
}

static void test_insert_rejects_bad_records(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_x", "a", "bogus", 1);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &r), -EINVAL);
    r = make_run("", "a", AH_RUN_QUEUED, 1);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &r), -EINVAL);
    r = make_run("run_x", "", AH_RUN_QUEUED, 1);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &r), -EINVAL);
    r = make_run("run_x", "a", AH_RUN_QUEUED, 1);
    r.input = NULL;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &r), -EINVAL);
    r = make_run("run_x", "a", AH_RUN_QUEUED, 1);
    memset(r.agent, 'x', sizeof(r.agent)); /* not terminated */
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &r), -EINVAL);
    /* Nothing was written. */
    get_arg_t g = {.id = "run_x"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), -ENOENT);
    /* Empty tenant becomes the default one. */
    r = make_run("run_x", "a", AH_RUN_QUEUED, 1);
    insert_ok(f, &r);
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), 0);
    assert_string_equal(g.out.tenant, "default");
    ah_run_rec_free(&g.out);
}

static void test_update(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_u", "support", AH_RUN_QUEUED, 1000);
    r.metadata = (char *)"{\"m\":1}";
    insert_ok(f, &r);

    snprintf(r.status, sizeof(r.status), "%s", AH_RUN_COMPLETED);
    r.output = (char *)"the answer";
    r.error = NULL;
    r.state = (char *)"{\"messages\":[1,2]}";
    r.turns = 3;
    r.prompt_tokens = 120;
    r.completion_tokens = 30;
    r.cost_usd = 0.00125;
    r.started_at = 1100;
    r.finished_at = 1500;
    r.updated_at = 1500;
    r.last_event_seq = 9;
    /* Columns update does not own stay as inserted. */
    snprintf(r.agent, sizeof(r.agent), "changed");
    r.metadata = (char *)"{\"m\":2}";
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, update_work, &r), 0);

    get_arg_t g = {.id = "run_u"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), 0);
    assert_string_equal(g.out.status, "completed");
    assert_string_equal(g.out.output, "the answer");
    assert_null(g.out.error);
    assert_string_equal(g.out.state, "{\"messages\":[1,2]}");
    assert_int_equal(g.out.turns, 3);
    assert_int_equal(g.out.prompt_tokens, 120);
    assert_int_equal(g.out.completion_tokens, 30);
    assert_true(g.out.cost_usd > 0.00124 && g.out.cost_usd < 0.00126);
    assert_int_equal(g.out.started_at, 1100);
    assert_int_equal(g.out.finished_at, 1500);
    assert_int_equal(g.out.updated_at, 1500);
    assert_int_equal(g.out.last_event_seq, 9);
    assert_string_equal(g.out.agent, "support");
    assert_string_equal(g.out.metadata, "{\"m\":1}");
    ah_run_rec_free(&g.out);

    /* A failure with a code. */
    snprintf(r.status, sizeof(r.status), "%s", AH_RUN_FAILED);
    r.output = NULL;
    r.error = (char *)"the agent used all 3 turns";
    r.error_code = (char *)"max_turns_exceeded";
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, update_work, &r), 0);
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), 0);
    assert_null(g.out.output);
    assert_string_equal(g.out.error, "the agent used all 3 turns");
    assert_string_equal(g.out.error_code, "max_turns_exceeded");
    ah_run_rec_free(&g.out);

    ah_run_rec_t ghost = make_run("run_ghost", "support", AH_RUN_RUNNING, 1);
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, update_work, &ghost), -ENOENT);
    snprintf(r.status, sizeof(r.status), "nope");
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, update_work, &r), -EINVAL);
}

static void test_list_filters(void **state)
{
    fixture_t *f = *state;
    /* run_0 .. run_9: created 100 .. 1000; agents alternate; three statuses;
     * runs 0-4 in session s1; runs 7-9 belong to key_b. */
    static const char *const statuses[] = {AH_RUN_QUEUED, AH_RUN_RUNNING, AH_RUN_COMPLETED};
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof(id), "run_%d", i);
        ah_run_rec_t r = make_run(id, i % 2 ? "beta" : "alpha", statuses[i % 3], 100 * (i + 1));
        r.session_id = i < 5 ? (char *)"s1" : NULL;
        r.state = (char *)"{\"big\":true}";
        if (i >= 7)
            snprintf(r.key_id, sizeof(r.key_id), "key_b");
        insert_ok(f, &r);
    }

    ah_run_filter_t flt = {0};
    list_arg_t *l = list(f, &flt, false);
    assert_int_equal(l->n, 10);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof(id), "run_%d", 9 - i); /* newest first */
        assert_string_equal(l->ids[i], id);
        assert_true(l->had_state[i]);
    }
    free(l);

    /* The summary listing skips state. */
    l = list(f, &flt, true);
    assert_int_equal(l->n, 10);
    assert_false(l->had_state[0]);
    free(l);

    flt = (ah_run_filter_t){.agent = "alpha"};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 5);
    assert_string_equal(l->ids[0], "run_8");
    assert_string_equal(l->ids[4], "run_0");
    free(l);

    flt = (ah_run_filter_t){.status = AH_RUN_COMPLETED};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 3); /* 2, 5, 8 */
    assert_string_equal(l->ids[0], "run_8");
    assert_string_equal(l->ids[2], "run_2");
    free(l);

    flt = (ah_run_filter_t){.session_id = "s1", .agent = "beta"};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 2); /* 1, 3 */
    assert_string_equal(l->ids[0], "run_3");
    assert_string_equal(l->ids[1], "run_1");
    free(l);

    flt = (ah_run_filter_t){.key_id = "key_b"};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 3);
    assert_string_equal(l->ids[0], "run_9");
    free(l);

    flt = (ah_run_filter_t){
        .key_id = "key_b", .status = AH_RUN_QUEUED, .agent = "beta", .session_id = "s1"};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 0);
    free(l);

    /* A callback stopping early: its value is returned. */
    l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->stop_after = 2;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, list_work, l), 7);
    assert_int_equal(l->n, 2);
    free(l);
}

static void test_list_pagination(void **state)
{
    fixture_t *f = *state;
    /* 25 runs, created 10, 20, ... 250; run_p12 and run_p13 share a millisecond. */
    for (int i = 0; i < 25; i++) {
        char id[16];
        snprintf(id, sizeof(id), "run_p%02d", i);
        ah_run_rec_t r = make_run(id, "agent", AH_RUN_QUEUED, i == 13 ? 130 : 10 * (i + 1));
        insert_ok(f, &r);
    }
    ah_run_filter_t flt = {.limit = 10};
    list_arg_t *l = list(f, &flt, true);
    assert_int_equal(l->n, 10);
    assert_string_equal(l->ids[0], "run_p24");
    assert_string_equal(l->ids[9], "run_p15");
    int64_t before = l->created[9];
    free(l);

    flt.before = before;
    l = list(f, &flt, true);
    assert_int_equal(l->n, 10);
    assert_string_equal(l->ids[0], "run_p14");
    /* Same created_at: the larger id first (stable order). */
    assert_string_equal(l->ids[1], "run_p13");
    assert_string_equal(l->ids[2], "run_p12");
    assert_int_equal(l->created[1], l->created[2]);
    before = l->created[9];
    free(l);

    flt.before = before;
    l = list(f, &flt, true);
    assert_int_equal(l->n, 5);
    assert_string_equal(l->ids[4], "run_p00");
    free(l);

    /* Defaults and bounds: 0 = 50, above 1000 = 1000 (all 25 here). */
    flt = (ah_run_filter_t){.limit = 0};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 25);
    free(l);
    flt = (ah_run_filter_t){.limit = 5000};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 25);
    free(l);
    flt = (ah_run_filter_t){.limit = 1};
    l = list(f, &flt, true);
    assert_int_equal(l->n, 1);
    free(l);
}

static void test_events(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_e", "agent", AH_RUN_RUNNING, 1);
    insert_ok(f, &r);
    ah_run_rec_t r2 = make_run("run_e2", "agent", AH_RUN_RUNNING, 2);
    insert_ok(f, &r2);

    ah_run_event_t ev[5];
    static const char *const types[] = {"run.created", "run.started", "message.delta",
                                        "message.delta", "run.completed"};
    memset(ev, 0, sizeof(ev));
    for (int i = 0; i < 5; i++) {
        snprintf(ev[i].run_id, sizeof(ev[i].run_id), "run_e");
        ev[i].seq = i + 1;
        snprintf(ev[i].type, sizeof(ev[i].type), "%s", types[i]);
        ev[i].data = i == 2 ? (char *)"{\"delta\":\"He\"}" : NULL;
        ev[i].ts = 1000 + i;
    }
    events_arg_t *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->ev = ev;
    a->nev = 3;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), 0);
    a->ev = ev + 3;
    a->nev = 2;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), 0);

    /* Another run's log is separate. */
    ah_run_event_t other = {.seq = 1, .ts = 5};
    snprintf(other.run_id, sizeof(other.run_id), "run_e2");
    snprintf(other.type, sizeof(other.type), "run.created");
    a->ev = &other;
    a->nev = 1;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), 0);

    a->run_id = "run_e";
    a->after = 0;
    a->limit = 0;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(a->seqs[i], i + 1);
        assert_string_equal(a->types[i], types[i]);
        assert_int_equal(a->ts[i], 1000 + i);
    }
    assert_string_equal(a->data[2], "{\"delta\":\"He\"}");
    assert_string_equal(a->data[0], "{}"); /* NULL data is stored as an empty object */

    a->after = 3;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->seqs[0], 4);
    assert_string_equal(a->types[1], "run.completed");

    a->after = 1;
    a->limit = 2;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->seqs[0], 2);
    assert_int_equal(a->seqs[1], 3);

    a->after = 5;
    a->limit = 0;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 0);

    a->run_id = "run_e2";
    a->after = 0;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 1);

    /* A seq already used: -EEXIST, and the whole job is rolled back (seq 6 too). */
    ah_run_event_t dup[2];
    memset(dup, 0, sizeof(dup));
    for (int i = 0; i < 2; i++) {
        snprintf(dup[i].run_id, sizeof(dup[i].run_id), "run_e");
        snprintf(dup[i].type, sizeof(dup[i].type), "message.delta");
    }
    dup[0].seq = 6;
    dup[1].seq = 5;
    a->ev = dup;
    a->nev = 2;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), -EEXIST);
    a->run_id = "run_e";
    a->after = 5;
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, events_list_work, a), 0);
    assert_int_equal(a->n, 0);

    /* Bad events are refused before anything is written. */
    dup[0].seq = 0;
    a->nev = 1;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), -EINVAL);
    dup[0].seq = 6;
    dup[0].type[0] = '\0';
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, append_work, a), -EINVAL);
    free(a);
}

static void test_idempotency(void **state)
{
    fixture_t *f = *state;
    ah_run_rec_t r = make_run("run_i1", "agent", AH_RUN_QUEUED, 1);
    r.idempotency_key = (char *)"order-42";
    insert_ok(f, &r);

    get_arg_t g = {.key_id = "key_a", .idem = "order-42"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &g), 0);
    assert_string_equal(g.out.id, "run_i1");
    assert_string_equal(g.out.idempotency_key, "order-42");
    ah_run_rec_free(&g.out);

    get_arg_t other_key = {.key_id = "key_b", .idem = "order-42"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &other_key), -ENOENT);
    get_arg_t other_idem = {.key_id = "key_a", .idem = "order-43"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &other_idem), -ENOENT);

    /* Same key and idempotency key, new run id: -EEXIST. */
    ah_run_rec_t again = make_run("run_i2", "agent", AH_RUN_QUEUED, 2);
    again.idempotency_key = (char *)"order-42";
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &again), -EEXIST);

    /* Another key may use the same idempotency key. */
    snprintf(again.key_id, sizeof(again.key_id), "key_b");
    insert_ok(f, &again);

    /* No idempotency key (NULL or ""): never a conflict. */
    ah_run_rec_t n1 = make_run("run_n1", "agent", AH_RUN_QUEUED, 3);
    ah_run_rec_t n2 = make_run("run_n2", "agent", AH_RUN_QUEUED, 4);
    ah_run_rec_t n3 = make_run("run_n3", "agent", AH_RUN_QUEUED, 5);
    ah_run_rec_t n4 = make_run("run_n4", "agent", AH_RUN_QUEUED, 6);
    n3.idempotency_key = (char *)"";
    n4.idempotency_key = (char *)"";
    insert_ok(f, &n1);
    insert_ok(f, &n2);
    insert_ok(f, &n3);
    insert_ok(f, &n4);

    get_arg_t empty = {.key_id = "key_a", .idem = ""};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, get_work, &empty), -EINVAL);
}

static void test_rec_copy(void **state)
{
    (void)state;
    ah_run_rec_t src = make_run("run_c", "agent", AH_RUN_RUNNING, 9);
    src.output = (char *)"out";
    src.state = (char *)"{}";
    src.webhook_url = (char *)"https://x";
    ah_run_rec_t dst;
    assert_int_equal(ah_run_rec_copy(&dst, &src), 0);
    assert_string_equal(dst.id, "run_c");
    assert_string_equal(dst.input, src.input);
    assert_ptr_not_equal(dst.input, src.input);
    assert_string_equal(dst.output, "out");
    assert_string_equal(dst.state, "{}");
    assert_string_equal(dst.webhook_url, "https://x");
    assert_null(dst.error);
    assert_int_equal(dst.created_at, 9);
    ah_run_rec_free(&dst);
    assert_null(dst.output);
    ah_run_rec_free(&dst); /* twice is harmless */
    ah_run_rec_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_helpers),
        cmocka_unit_test_setup_teardown(test_insert_get_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insert_rejects_bad_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test(test_rec_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
