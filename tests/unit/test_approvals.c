/*
 * test_approvals.c - what a replica that does not execute a run may write for
 * it, on a real SQLite store: an event after the run's last one
 * (ah_store_run_event_add), a decision on a run parked for an approval
 * (ah_approval_decide: pending, unknown and repeated calls, expiry, runs that
 * are not parked) and the end of a run nobody executes (ah_queue_end_run:
 * expiry and cancel with their event, webhook delivery and guard), a
 * cancel that meets the owner parking the run, in both orders, and a cancel
 * request for a run another replica executes (ah_cancel_store).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agents/approvals.h"
#include "agents/cancels.h"
#include "agents/queue.h"
#include "store/runs.h"
#include "store/sessions.h"
#include "store/store.h"
#include "testutil.h"

#define NOW 1800000000000LL

typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "approvals", 64);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

/* ---- fixtures ---- */

typedef struct insert_arg {
    ah_run_rec_t r;
    double session_ttl_s; /* r.session_id set: the run holds that session, acquired with it */
} insert_arg_t;

static int insert_work(ah_db_t *db, void *arg)
{
    insert_arg_t *a = arg;
    if (a->r.session_id) {
        char *history = NULL;
        int rc = ah_store_session_acquire(db, a->r.session_id, a->r.key_id, "", a->r.agent, a->r.id,
                                          a->session_ttl_s, NOW - 1000, &history);
        free(history);
        if (rc)
            return rc;
    }
    return ah_store_run_insert(db, &a->r);
}

/* A run row: status, lease owner (NULL = none), lease expiry, webhook and the session it
 * holds (NULL: none; else acquired with session_ttl_s). */
static void add_run_in(fixture_t *f, const char *id, const char *status, const char *owner,
                       int64_t lease_until, const char *webhook, const char *session,
                       double session_ttl_s)
{
    insert_arg_t a = {.session_ttl_s = session_ttl_s};
    ah_run_rec_t r = ah_test_run(id, status, "key_a", NOW - 1000);
    r.lease_owner = (char *)owner;
    r.lease_expires_at = lease_until;
    r.webhook_url = (char *)webhook;
    r.session_id = (char *)session;
    a.r = r;
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, insert_work, &a), 0);
}

static void add_run(fixture_t *f, const char *id, const char *status, const char *owner,
                    int64_t lease_until, const char *webhook)
{
    add_run_in(f, id, status, owner, lease_until, webhook, NULL, 0);
}

typedef struct event_arg {
    const char *run_id, *type, *data;
} event_arg_t;

static int event_work(ah_db_t *db, void *arg)
{
    event_arg_t *e = arg;
    return ah_store_run_event_add(db, e->run_id, e->type, e->data, NOW);
}

static void add_event(fixture_t *f, const char *run_id, const char *type, const char *data)
{
    event_arg_t e = {run_id, type, data};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, event_work, &e), 0);
}

/* The two calls of a turn wait for a decision. */
static void park(fixture_t *f, const char *id, int64_t until)
{
    add_run(f, id, AH_RUN_REQUIRES_ACTION, NULL, until, NULL);
    add_event(f, id, "run.started", "{}");
    add_event(f, id, "run.requires_action",
              "{\"tool_calls\":[{\"tool_call_id\":\"call_1\",\"name\":\"refund\"},"
              "{\"tool_call_id\":\"call_2\",\"name\":\"refund\"}],\"expires_at\":1}");
}

typedef struct int_arg {
    const char *sql, *id;
    int64_t out;
} int_arg_t;

static int int_work(ah_db_t *db, void *arg)
{
    int_arg_t *a = arg;
    ah_db_val_t v = ah_db_text(a->id);
    return ah_db_query_int(db, a->sql, &v, 1, &a->out);
}

static int64_t query_int(fixture_t *f, const char *sql, const char *id)
{
    int_arg_t a = {sql, id, -1};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, int_work, &a), 0);
    return a.out;
}

typedef struct decide_arg {
    ah_approval_t a;
    int64_t now;
    bool resumable;
    char msg[200];
    int rc;
} decide_arg_t;

static int decide_work(ah_db_t *db, void *arg)
{
    decide_arg_t *d = arg;
    d->rc = ah_approval_decide(db, &d->a, d->now, &d->resumable, d->msg, sizeof(d->msg));
    return d->rc < 0 && d->rc != -ENOENT && d->rc != -ESRCH && d->rc != -ENXIO && d->rc != -EALREADY
               ? d->rc
               : 0;
}

static int decide(fixture_t *f, const char *run, const char *call, bool approve, int64_t now,
                  bool *resumable, char *msg)
{
    decide_arg_t d = {.a = {.run_id = run,
                            .tool_call_id = call,
                            .approve = approve,
                            .reason = approve ? NULL : "too much",
                            .by = "key_reviewer"},
                      .now = now};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, decide_work, &d), 0);
    if (resumable)
        *resumable = d.resumable;
    if (msg)
        snprintf(msg, 200, "%s", d.msg);
    return d.rc;
}

/* ---- tests ---- */

static void test_event_add_follows_the_log(void **state)
{
    fixture_t *f = *state;
    add_run(f, "run_e", AH_RUN_QUEUED, NULL, 0, NULL);
    add_event(f, "run_e", "run.created", "{}");
    add_event(f, "run_e", "run.expired", NULL);
    assert_int_equal(query_int(f, "SELECT MAX(seq) FROM run_events WHERE run_id = ?", "run_e"), 2);
    assert_int_equal(query_int(f, "SELECT last_event_seq FROM runs WHERE id = ?", "run_e"), 2);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND seq = 2 AND "
                               "type = 'run.expired' AND data = '{}'",
                               "run_e"),
                     1);
}

static void test_decisions_on_a_parked_run(void **state)
{
    fixture_t *f = *state;
    park(f, "run_p", NOW + 60000);
    bool resumable = true;
    char msg[200];

    assert_int_equal(decide(f, "run_p", "call_9", true, NOW, NULL, msg), -ENXIO);
    assert_non_null(strstr(msg, "no pending tool call"));
    assert_int_equal(decide(f, "run_nope", "call_1", true, NOW, NULL, NULL), -ENOENT);

    /* One of two: stored, the run stays parked. */
    assert_int_equal(decide(f, "run_p", "call_1", true, NOW, &resumable, NULL), 0);
    assert_false(resumable);
    assert_int_equal(query_int(f, "SELECT lease_expires_at FROM runs WHERE id = ?", "run_p"),
                     NOW + 60000);
    assert_int_equal(decide(f, "run_p", "call_1", false, NOW, NULL, msg), -EALREADY);

    /* The last one: the run is claimable at once. */
    assert_int_equal(decide(f, "run_p", "call_2", false, NOW, &resumable, NULL), 0);
    assert_true(resumable);
    assert_int_equal(query_int(f, "SELECT lease_expires_at FROM runs WHERE id = ?", "run_p"), 0);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'approval' AND seq IN (3, 4)",
                               "run_p"),
                     2);
    assert_int_equal(
        query_int(f,
                  "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                  "'approval' AND data LIKE '%\"approved\":false%' AND data LIKE "
                  "'%\"reason\":\"too much\"%' AND data LIKE '%\"by\":\"key_reviewer\"%'",
                  "run_p"),
        1);
    /* Who decided is in the audit log, with the decision. */
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM audit_log WHERE target = ? AND action = "
                               "'run.approval' AND actor = 'key_reviewer'",
                               "run_p"),
                     2);
    /* Claimable means nobody takes a decision any more. */
    assert_int_equal(decide(f, "run_p", "call_2", true, NOW, NULL, NULL), -ESRCH);
}

static void test_no_decision_past_expiry_or_on_an_owned_run(void **state)
{
    fixture_t *f = *state;
    char msg[200];
    park(f, "run_x", NOW - 1);
    assert_int_equal(decide(f, "run_x", "call_1", true, NOW, NULL, msg), -ESRCH);
    assert_non_null(strstr(msg, "expired"));
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'approval'",
                               "run_x"),
                     0);

    /* Executing somewhere (an owner holds its lease): not waiting. */
    add_run(f, "run_o", AH_RUN_RUNNING, "node_a", NOW + 60000, NULL);
    assert_int_equal(decide(f, "run_o", "call_1", true, NOW, NULL, msg), -ESRCH);
    assert_non_null(strstr(msg, "status running"));
}

typedef struct end_arg {
    const char *id, *status;
    char agent[80];
    int rc;
} end_arg_t;

static int end_work(ah_db_t *db, void *arg)
{
    end_arg_t *e = arg;
    e->rc = ah_queue_end_run(db, e->id, e->status, e->status, "why", NOW, e->agent);
    return e->rc == -ESRCH ? 0 : e->rc;
}

static int end_run(fixture_t *f, const char *id, const char *status)
{
    end_arg_t e = {.id = id, .status = status};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, end_work, &e), 0);
    if (e.rc == 0)
        assert_string_equal(e.agent, "support");
    return e.rc;
}

static void test_end_runs_nobody_executes(void **state)
{
    fixture_t *f = *state;
    add_run(f, "run_q", AH_RUN_QUEUED, NULL, 0, "https://hooks.example.com/x");
    assert_int_equal(end_run(f, "run_q", AH_RUN_EXPIRED), 0);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'expired' AND "
                               "error_code = 'expired' AND finished_at IS NOT NULL",
                               "run_q"),
                     1);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'run.expired' AND seq = 1",
                               "run_q"),
                     1);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM webhooks_outbox WHERE run_id = ? AND event = "
                               "'run.failed' AND status = 'pending'",
                               "run_q"),
                     1);
    assert_int_equal(end_run(f, "run_q", AH_RUN_CANCELLED), -ESRCH); /* final already */

    park(f, "run_w", NOW + 60000);
    assert_int_equal(end_run(f, "run_w", AH_RUN_CANCELLED), 0);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'run.cancelled' AND seq = 3",
                               "run_w"),
                     1);

    /* A run some replica executes is its owner's to end. */
    add_run(f, "run_r", AH_RUN_RUNNING, "node_a", NOW + 60000, NULL);
    assert_int_equal(end_run(f, "run_r", AH_RUN_CANCELLED), -ESRCH);
    add_run(f, "run_a", AH_RUN_REQUIRES_ACTION, "node_a", NOW + 60000, NULL);
    assert_int_equal(end_run(f, "run_a", AH_RUN_CANCELLED), -ESRCH);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM run_events WHERE run_id = ?", "run_r"), 0);
}

/* The owner's write as runtime.c persist_work makes it: its events, then the row while the
 * run is its own (after_park: or still parked); park gives up the lease. All or nothing. */
typedef struct owner_write {
    const char *id, *status, *event;
    bool after_park, park;
} owner_write_t;

static int owner_write_work(ah_db_t *db, void *arg)
{
    owner_write_t *w = arg;
    int rc = ah_store_run_event_add(db, w->id, w->event, "{}", NOW);
    ah_run_rec_t r;
    if (rc == 0)
        rc = ah_store_run_get(db, w->id, &r);
    if (rc)
        return rc;
    snprintf(r.status, sizeof(r.status), "%s", w->status);
    r.updated_at = NOW;
    rc = ah_store_run_update_owned(db, &r, "node_a", w->after_park);
    ah_run_rec_free(&r);
    if (rc == 0 && w->park) {
        ah_db_val_t v[2] = {ah_db_int(NOW + 60000), ah_db_text(w->id)};
        rc =
            ah_db_query(db, "UPDATE runs SET lease_owner = NULL, lease_expires_at = ? WHERE id = ?",
                        v, 2, NULL, NULL);
    }
    return rc;
}

static int owner_write(fixture_t *f, const char *id, const char *status, const char *event,
                       bool after_park)
{
    owner_write_t w = {id, status, event, after_park, strcmp(status, AH_RUN_REQUIRES_ACTION) == 0};
    return ah_store_call(f->store, AH_STORE_WRITE, owner_write_work, &w);
}

typedef struct session_arg {
    const char *id;
    ah_session_rec_t s;
} session_arg_t;

static int session_work(ah_db_t *db, void *arg)
{
    session_arg_t *a = arg;
    return ah_store_session_get(db, a->id, NULL, NOW, &a->s);
}

/*
 * A cancel that meets a run being parked: node_a owns run_c and parks it (requires_action,
 * no owner) while a cancel arrives. Whichever lands first, the run ends cancelled once:
 * the store cancel (another replica, or node_a after the run left its memory) waits for the
 * park; a cancel or timeout node_a ends the run with after the park (unowned_ok) no longer
 * matches once the store ended it. The session keeps the agent's TTL (600 s), not a day.
 */
static void test_cancel_meets_the_park(void **state)
{
    fixture_t *f = *state;
    add_run_in(f, "run_c", AH_RUN_RUNNING, "node_a", NOW + 60000, NULL, "sess_c", 600);
    assert_int_equal(end_run(f, "run_c", AH_RUN_CANCELLED), -ESRCH); /* node_a's to end */
    assert_int_equal(owner_write(f, "run_c", AH_RUN_REQUIRES_ACTION, "run.requires_action", false),
                     0);
    assert_int_equal(end_run(f, "run_c", AH_RUN_CANCELLED), 0);
    /* node_a's own end of the parked run (a timeout that raced with the park) comes late. */
    assert_int_equal(owner_write(f, "run_c", AH_RUN_FAILED, "run.failed", true), -ESTALE);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'cancelled' "
                               "AND lease_owner IS NULL",
                               "run_c"),
                     1);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type IN "
                               "('run.cancelled', 'run.failed')",
                               "run_c"),
                     1);
    session_arg_t sa = {.id = "sess_c"};
    assert_int_equal(ah_store_call(f->store, AH_STORE_READ, session_work, &sa), 0);
    assert_string_equal(sa.s.active_run_id, "");
    assert_int_equal(sa.s.expires_at, NOW + 600 * 1000);
    ah_session_rec_free(&sa.s);

    /* The other order: node_a's cancel ends the parked run; a store cancel then finds it ended. */
    add_run(f, "run_d", AH_RUN_RUNNING, "node_a", NOW + 60000, NULL);
    assert_int_equal(owner_write(f, "run_d", AH_RUN_REQUIRES_ACTION, "run.requires_action", false),
                     0);
    assert_int_equal(owner_write(f, "run_d", AH_RUN_CANCELLED, "run.cancelled", true), 0);
    assert_int_equal(end_run(f, "run_d", AH_RUN_CANCELLED), -ESRCH);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'run.cancelled'",
                               "run_d"),
                     1);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'cancelled'", "run_d"),
        1);
}

typedef struct cancel_arg {
    const char *id, *key_id;
    int64_t now;
    ah_cancel_outcome_t out;
} cancel_arg_t;

static int cancel_work(ah_db_t *db, void *arg)
{
    cancel_arg_t *c = arg;
    char agent[80];
    return ah_cancel_store(db, c->id, c->key_id, c->now, agent, &c->out);
}

static ah_cancel_outcome_t cancel(fixture_t *f, const char *id, const char *key_id, int64_t now)
{
    cancel_arg_t c = {id, key_id, now, (ah_cancel_outcome_t)-1};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, cancel_work, &c), 0);
    return c.out;
}

/* The owner's park write (runtime.c persist_work): no owner, then a pending cancel ends it. */
static int park_work(ah_db_t *db, void *arg)
{
    cancel_arg_t *c = arg;
    ah_db_val_t v = ah_db_text(c->id);
    int rc = ah_db_query(db, "UPDATE runs SET lease_owner = NULL WHERE id = ?", &v, 1, NULL, NULL);
    char agent[80];
    bool ended = false;
    if (rc == 0)
        rc = ah_cancel_parked_if_requested(db, c->id, c->now, agent, &ended);
    c->out = ended ? AH_CANCEL_ENDED : AH_CANCEL_UNKNOWN;
    return rc;
}

static bool park_write(fixture_t *f, const char *id)
{
    cancel_arg_t c = {id, NULL, NOW, AH_CANCEL_UNKNOWN};
    assert_int_equal(ah_store_call(f->store, AH_STORE_WRITE, park_work, &c), 0);
    return c.out == AH_CANCEL_ENDED;
}

static void test_cancel_from_any_replica(void **state)
{
    fixture_t *f = *state;
    const char *requested_at = "SELECT COALESCE(cancel_requested_at, 0) FROM runs WHERE id = ?";
    /* Nobody executes it: it ends here. */
    add_run(f, "run_q", AH_RUN_QUEUED, NULL, 0, NULL);
    assert_int_equal(cancel(f, "run_q", "key_a", NOW), AH_CANCEL_ENDED);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'cancelled'", "run_q"),
        1);
    park(f, "run_w", NOW + 60000);
    assert_int_equal(cancel(f, "run_w", NULL, NOW), AH_CANCEL_ENDED);

    /* Another replica executes it: the request is stored for its owner, the run is untouched;
     * asking again keeps the first request's time. */
    add_run(f, "run_r", AH_RUN_RUNNING, "node_b", NOW + 30000, NULL);
    assert_int_equal(cancel(f, "run_r", "key_a", NOW), AH_CANCEL_REQUESTED);
    assert_int_equal(cancel(f, "run_r", NULL, NOW + 5), AH_CANCEL_REQUESTED);
    assert_int_equal(query_int(f, requested_at, "run_r"), NOW);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'running' "
                               "AND lease_owner = 'node_b'",
                               "run_r"),
                     1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM run_events WHERE run_id = ?", "run_r"), 0);
    /* Being parked by its owner (requires_action, still owned): requested too, and the
     * owner's park write then ends it rather than leave it waiting for a decision. */
    add_run(f, "run_p", AH_RUN_REQUIRES_ACTION, "node_b", NOW + 30000, NULL);
    assert_int_equal(cancel(f, "run_p", NULL, NOW), AH_CANCEL_REQUESTED);
    assert_true(park_write(f, "run_p"));
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM runs WHERE id = ? AND status = 'cancelled' "
                               "AND lease_owner IS NULL",
                               "run_p"),
                     1);
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND type = "
                               "'run.cancelled'",
                               "run_p"),
                     1);
    add_run(f, "run_p2", AH_RUN_REQUIRES_ACTION, "node_b", NOW + 30000, NULL);
    assert_false(park_write(f, "run_p2")); /* nobody asked: it waits for its decision */
    assert_int_equal(query_int(f,
                               "SELECT COUNT(*) FROM runs WHERE id = ? AND status = "
                               "'requires_action'",
                               "run_p2"),
                     1);

    /* Over, not visible, or unknown: nothing is written. */
    add_run(f, "run_c", AH_RUN_COMPLETED, NULL, 0, NULL);
    assert_int_equal(cancel(f, "run_c", NULL, NOW), AH_CANCEL_TOO_LATE);
    assert_int_equal(query_int(f, requested_at, "run_c"), 0);
    add_run(f, "run_o", AH_RUN_RUNNING, "node_b", NOW + 30000, NULL);
    assert_int_equal(cancel(f, "run_o", "key_other", NOW), AH_CANCEL_UNKNOWN);
    assert_int_equal(query_int(f, requested_at, "run_o"), 0);
    assert_int_equal(cancel(f, "run_none", NULL, NOW), AH_CANCEL_UNKNOWN);

    /* The owners' poll reads exactly the requests still to act on (its index's predicate). */
    assert_int_equal(
        query_int(f,
                  "SELECT COUNT(*) FROM runs WHERE lease_owner = ? AND "
                  "cancel_requested_at IS NOT NULL AND status IN ('queued', 'running')",
                  "node_b"),
        1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_add_follows_the_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decisions_on_a_parked_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_decision_past_expiry_or_on_an_owned_run, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_end_runs_nobody_executes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_meets_the_park, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_any_replica, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
