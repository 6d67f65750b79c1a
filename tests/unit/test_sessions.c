/*
 * test_sessions.c - sessions (store/sessions.h) and Idempotency-Key lookups
 * (store/runs_idem.h): the message rules (system prompt kept, tool exchanges
 * kept whole, history opening with a user message), acquire/release on a
 * real SQLite store through ah_store_call (busy while held, freed by release
 * or by the holder ending, TTL, ownership, FIFO of queued runs), get,
 * delete, purge; the canonical request hash and the idempotent lookup.
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
#include <jansson.h>

#include "store/runs.h"
#include "store/runs_idem.h"
#include "store/sessions.h"
#include "store/store.h"
#include "testutil.h"

typedef ah_test_store_t fixture_t;

static int setup(void **state)
{
    return ah_test_store_setup(state, "sessions", 64);
}

static int teardown(void **state)
{
    return ah_test_store_teardown(state);
}

#define T0   1000000000000LL /* a "now" in ms */
#define HOUR (3600LL * 1000)

/* ---- helpers ---- */

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (!v)
        fail_msg("bad test JSON: %s: %s", e.text, text);
    return v;
}

/* The roles of an array, joined: "system,user,assistant". */
static void roles(json_t *msgs, char *out, size_t n)
{
    out[0] = '\0';
    size_t off = 0, i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *r = json_string_value(json_object_get(m, "role"));
        int w = snprintf(out + off, n - off, "%s%s", i ? "," : "", r ? r : "?");
        assert_true(w > 0 && (size_t)w < n - off);
        off += (size_t)w;
    }
}

static void assert_roles(json_t *msgs, const char *want)
{
    char got[512];
    roles(msgs, got, sizeof(got));
    assert_string_equal(got, want);
}

/* One store operation per job, so each test reads as a list of calls. */
typedef enum {
    OP_ACQUIRE,
    OP_RELEASE,
    OP_GET,
    OP_DELETE,
    OP_PURGE,
    OP_NEXT,
    OP_INSERT_RUN,
    OP_SET_STATUS,
    OP_FIND_IDEM,
    OP_SET_HASH,
    OP_IDEM_EXPIRE,
    OP_STARTABLE,
} op_t;

typedef struct job {
    op_t op;
    const char *id, *key_id, *run_id, *agent, *json, *hash, *status;
    double ttl_s;
    int max_messages, limit;
    int64_t now;
    char *messages;          /* OP_ACQUIRE result */
    ah_session_rec_t sess;   /* OP_GET result */
    char busy[48];           /* OP_DELETE / OP_NEXT result */
    const ah_run_rec_t *run; /* OP_INSERT_RUN */
    ah_run_rec_t found;      /* OP_FIND_IDEM */
    char found_hash[65];
} job_t;

/* Appends each id to a space-separated list (in a char[48]: a few short ids). */
static int startable_row(void *ud, const ah_db_val_t *c, int ncols)
{
    char *list = ud;
    size_t n = strlen(list);
    if (ncols != 1 || c[0].type != AH_DB_TEXT || n + c[0].n + 2 > 48)
        return -E2BIG;
    if (n)
        list[n++] = ' ';
    memcpy(list + n, c[0].s, c[0].n);
    list[n + c[0].n] = '\0';
    return 0;
}

static int job_work(ah_db_t *db, void *arg)
{
    job_t *j = arg;
    switch (j->op) {
    case OP_ACQUIRE:
        return ah_store_session_acquire(db, j->id, j->key_id, "default", j->agent ? j->agent : "a",
                                        j->run_id, j->ttl_s, j->now, &j->messages);
    case OP_RELEASE:
        return ah_store_session_release(db, j->id, j->run_id, j->json, j->max_messages, j->ttl_s,
                                        j->now);
    case OP_GET:
        return ah_store_session_get(db, j->id, j->key_id, j->now, &j->sess);
    case OP_DELETE:
        return ah_store_session_delete(db, j->id, j->key_id, j->now, j->busy);
    case OP_PURGE:
        return ah_store_sessions_purge_expired(db, j->now, j->limit);
    case OP_NEXT:
        return ah_store_session_next_queued(db, j->id, j->busy);
    case OP_INSERT_RUN:
        return ah_store_run_insert(db, j->run);
    case OP_SET_STATUS: {
        ah_db_val_t a[2] = {ah_db_text(j->status), ah_db_text(j->run_id)};
        return ah_db_query(db, "UPDATE runs SET status = ? WHERE id = ?", a, 2, NULL, NULL);
    }
    case OP_FIND_IDEM:
        return ah_store_run_find_idempotent(db, j->key_id, j->hash, j->now, &j->found,
                                            j->found_hash);
    case OP_SET_HASH:
        return ah_store_run_set_request_hash(db, j->run_id, j->hash);
    case OP_IDEM_EXPIRE:
        return ah_store_run_idem_expire(db, j->key_id, j->hash, j->now);
    case OP_STARTABLE:
        j->busy[0] = '\0';
        return ah_db_query(
            db,
            "SELECT id FROM runs WHERE status = 'queued' AND " AH_SESSION_RUN_STARTABLE_SQL
            " ORDER BY created_at, id",
            NULL, 0, startable_row, j->busy);
    }
    return -EINVAL;
}

static int call(fixture_t *f, job_t *j)
{
    unsigned flags =
        j->op == OP_GET || j->op == OP_NEXT || j->op == OP_FIND_IDEM || j->op == OP_STARTABLE
            ? AH_STORE_READ
            : AH_STORE_WRITE;
    return ah_store_call(f->store, flags, job_work, j);
}

/* Acquires session id for run_id as key_id at now; returns rc, *messages (NULL on failure). */
static int acquire(fixture_t *f, const char *id, const char *key_id, const char *run_id,
                   int64_t now, char **messages)
{
    job_t j = {
        .op = OP_ACQUIRE, .id = id, .key_id = key_id, .run_id = run_id, .ttl_s = 3600, .now = now};
    int rc = call(f, &j);
    if (messages)
        *messages = j.messages;
    else
        free(j.messages);
    return rc;
}

static int release(fixture_t *f, const char *id, const char *run_id, const char *msgs, int max,
                   int64_t now)
{
    job_t j = {.op = OP_RELEASE,
               .id = id,
               .run_id = run_id,
               .json = msgs,
               .max_messages = max,
               .ttl_s = 3600,
               .now = now};
    return call(f, &j);
}

static void insert_run(fixture_t *f, const char *id, const char *key_id, const char *session,
                       const char *status, int64_t at, const char *idem)
{
    ah_run_rec_t r = ah_test_run(id, status, key_id, at);
    r.input = (char *)"\"hi\"";
    r.session_id = (char *)session;
    r.idempotency_key = (char *)idem;
    job_t j = {.op = OP_INSERT_RUN, .run = &r};
    assert_int_equal(call(f, &j), 0);
}

static void set_status(fixture_t *f, const char *run_id, const char *status)
{
    job_t j = {.op = OP_SET_STATUS, .run_id = run_id, .status = status};
    assert_int_equal(call(f, &j), 0);
}

static int get(fixture_t *f, const char *id, const char *owner, int64_t now, ah_session_rec_t *out)
{
    job_t j = {.op = OP_GET, .id = id, .key_id = owner, .now = now};
    int rc = call(f, &j);
    *out = j.sess;
    return rc;
}

/* ---- message rules ---- */

static void test_merge_replaces_system_prompt(void **state)
{
    (void)state;
    json_t *hist = J("[{\"role\":\"system\",\"content\":\"old\"},{\"role\":\"user\",\"content\":"
                     "\"u1\"},{\"role\":\"assistant\",\"content\":\"a1\"}]");
    /* No system message in the input: the session's stays. */
    json_t *in = J("[{\"role\":\"user\",\"content\":\"u2\"}]");
    json_t *m = ah_session_merge(hist, in);
    assert_non_null(m);
    assert_roles(m, "system,user,assistant,user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")), "old");
    json_decref(m);
    json_decref(in);

    /* A re-sent system prompt replaces the old one instead of piling up. */
    in = J("[{\"role\":\"system\",\"content\":\"new\"},{\"role\":\"user\",\"content\":\"u2\"}]");
    m = ah_session_merge(hist, in);
    assert_roles(m, "system,user,assistant,user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")), "new");
    json_decref(m);
    json_decref(in);
    /* The arguments are left as they were. */
    assert_int_equal(json_array_size(hist), 3);

    assert_null(ah_session_merge(hist, json_object_get(hist, "x")));
    json_decref(hist);
}

static void test_merge_drops_incomplete_exchanges(void **state)
{
    (void)state;
    json_t *hist = J("[]");
    /* Two calls, one result: the run was cut off between them. */
    json_t *in = J("[{\"role\":\"user\",\"content\":\"u\"},"
                   "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                   "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                   "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\"}}]},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"zz\",\"content\":\"orphan\"}]");
    json_t *m = ah_session_merge(hist, in);
    assert_roles(m, "user");
    json_decref(m);
    json_decref(in);

    /* Complete, in any order of results; a stray tool message is dropped. */
    in = J("[{\"role\":\"tool\",\"tool_call_id\":\"c0\",\"content\":\"stray\"},"
           "{\"role\":\"user\",\"content\":\"u\"},"
           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
           "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
           "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\"}}]},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"r2\"},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
           "{\"role\":\"assistant\",\"content\":\"done\"}]");
    m = ah_session_merge(hist, in);
    assert_roles(m, "user,assistant,tool,tool,assistant");
    json_decref(m);
    json_decref(in);
    json_decref(hist);
}

static void test_trim_keeps_system_and_whole_exchanges(void **state)
{
    (void)state;
    const char *conv =
        "[{\"role\":\"system\",\"content\":\"s\"},"
        "{\"role\":\"user\",\"content\":\"u1\"},"
        "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\"}},{\"id\":\"c2\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"r2\"},"
        "{\"role\":\"assistant\",\"content\":\"a1\"},"
        "{\"role\":\"user\",\"content\":\"u2\"},"
        "{\"role\":\"assistant\",\"content\":\"a2\"}]";

    /* Under the limit: nothing changes. */
    json_t *m = J(conv);
    assert_int_equal(ah_session_trim(m, 8, 0), 0);
    assert_roles(m, "system,user,assistant,tool,tool,assistant,user,assistant");
    json_decref(m);

    /*
     * 7 allowed: u1 goes; the history would then open with the tool
     * exchange, so everything up to the next user message goes too (the
     * exchange as a whole, never a call without its results).
     */
    m = J(conv);
    assert_int_equal(ah_session_trim(m, 7, 0), 5);
    assert_roles(m, "system,user,assistant");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "content")), "u2");
    json_decref(m);

    /* The system prompt is never trimmed, even past the limit. */
    m = J(conv);
    assert_int_equal(ah_session_trim(m, 1, 0), 7);
    assert_roles(m, "system");
    json_decref(m);

    /* The byte cap trims like the count: whole units, oldest first. */
    m = J("[{\"role\":\"user\",\"content\":\"0123456789012345678901234567890123456789\"},"
          "{\"role\":\"assistant\",\"content\":\"x\"},"
          "{\"role\":\"user\",\"content\":\"y\"}]");
    assert_int_equal(ah_session_trim(m, 100, 80), 2);
    assert_roles(m, "user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")), "y");
    json_decref(m);

    /* Defaults: <= 0 is AH_SESSION_MAX_MESSAGES_DEFAULT. */
    m = json_array();
    for (int i = 0; i < AH_SESSION_MAX_MESSAGES_DEFAULT + 10; i++)
        json_array_append_new(
            m, json_pack("{s:s, s:i}", "role", i % 2 ? "assistant" : "user", "content", i));
    assert_int_equal(ah_session_trim(m, 0, 0), 10);
    assert_int_equal(json_array_size(m), AH_SESSION_MAX_MESSAGES_DEFAULT);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")), "user");
    json_decref(m);

    json_t *obj = J("{}");
    assert_int_equal(ah_session_trim(obj, 5, 0), -EINVAL);
    json_decref(obj);
}

static void test_session_id_valid(void **state)
{
    (void)state;
    assert_true(ah_session_id_valid("s1"));
    assert_true(ah_session_id_valid("user:42.chat_7-b"));
    assert_false(ah_session_id_valid(""));
    assert_false(ah_session_id_valid(NULL));
    assert_false(ah_session_id_valid("a b"));
    assert_false(ah_session_id_valid("a/b"));
    char id[AH_SESSION_ID_MAX + 2];
    memset(id, 'x', sizeof(id));
    id[AH_SESSION_ID_MAX] = '\0';
    assert_true(ah_session_id_valid(id));
    id[AH_SESSION_ID_MAX] = 'x';
    id[AH_SESSION_ID_MAX + 1] = '\0';
    assert_false(ah_session_id_valid(id));
}

/* ---- acquire / release ---- */

static void test_acquire_release_roundtrip(void **state)
{
    fixture_t *f = *state;
    char *msgs = NULL;
    /* New session: empty memory, held by run_1. */
    insert_run(f, "run_1", "key_a", "s1", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "s1", "key_a", "run_1", T0, &msgs), 0);
    assert_string_equal(msgs, "[]");
    free(msgs);

    /* Held by a running run: a second run is refused; the holder may acquire again. */
    assert_int_equal(acquire(f, "s1", "key_a", "run_2", T0 + 1, NULL), -EBUSY);
    assert_int_equal(acquire(f, "s1", "key_a", "run_1", T0 + 2, &msgs), 0);
    free(msgs);

    /* Only the holder releases. */
    assert_int_equal(release(f, "s1", "run_2", NULL, 0, T0 + 3), -ESTALE);
    assert_int_equal(release(f, "nope", "run_1", NULL, 0, T0 + 3), -ENOENT);
    assert_int_equal(release(f, "s1", "run_1", "{\"not\":\"an array\"}", 0, T0 + 3), -EINVAL);
    assert_int_equal(release(f, "s1", "run_1",
                             "[{\"role\":\"system\",\"content\":\"be brief\"},"
                             "{\"role\":\"user\",\"content\":\"u1\"},"
                             "{\"role\":\"assistant\",\"content\":\"a1\"}]",
                             0, T0 + 4),
                     0);
    set_status(f, "run_1", AH_RUN_COMPLETED);

    /* Free again: the next run gets the memory. */
    insert_run(f, "run_2", "key_a", "s1", AH_RUN_RUNNING, T0 + 5, NULL);
    assert_int_equal(acquire(f, "s1", "key_a", "run_2", T0 + 5, &msgs), 0);
    json_t *m = J(msgs);
    assert_roles(m, "system,user,assistant");
    json_decref(m);
    free(msgs);
    /* Its release appends, replacing the re-sent system prompt. */
    assert_int_equal(release(f, "s1", "run_2",
                             "[{\"role\":\"system\",\"content\":\"be brief\"},"
                             "{\"role\":\"user\",\"content\":\"u2\"},"
                             "{\"role\":\"assistant\",\"content\":\"a2\"}]",
                             0, T0 + 6),
                     0);
    ah_session_rec_t s;
    assert_int_equal(get(f, "s1", "key_a", T0 + 7, &s), 0);
    m = J(s.messages);
    assert_roles(m, "system,user,assistant,user,assistant");
    json_decref(m);
    assert_int_equal(s.n_messages, 5);
    assert_string_equal(s.active_run_id, "");
    assert_string_equal(s.key_id, "key_a");
    assert_string_equal(s.agent, "a");
    assert_int_equal(s.created_at, T0);
    assert_int_equal(s.updated_at, T0 + 6);
    assert_int_equal(s.expires_at, T0 + 6 + HOUR);
    ah_session_rec_free(&s);
}

static void test_release_trims(void **state)
{
    fixture_t *f = *state;
    insert_run(f, "run_t", "key_a", "st", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "st", "key_a", "run_t", T0, NULL), 0);
    assert_int_equal(
        release(
            f, "st", "run_t",
            "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"u1\"},"
            "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
            "\"function\":{\"name\":\"f\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"},"
            "{\"role\":\"assistant\",\"content\":\"a1\"},"
            "{\"role\":\"user\",\"content\":\"u2\"},{\"role\":\"assistant\",\"content\":\"a2\"}]",
            4, T0 + 1),
        0);
    ah_session_rec_t s;
    assert_int_equal(get(f, "st", NULL, T0 + 2, &s), 0);
    json_t *m = J(s.messages);
    assert_roles(m, "system,user,assistant");
    json_decref(m);
    assert_int_equal(s.n_messages, 3);
    ah_session_rec_free(&s);
}

static void test_holder_ending_frees_session(void **state)
{
    fixture_t *f = *state;
    /* run_1 ends without releasing (a crash): once it is final the session is free. */
    insert_run(f, "run_1", "key_a", "s2", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "s2", "key_a", "run_1", T0, NULL), 0);
    assert_int_equal(acquire(f, "s2", "key_a", "run_2", T0 + 1, NULL), -EBUSY);
    set_status(f, "run_1", AH_RUN_FAILED);
    assert_int_equal(acquire(f, "s2", "key_a", "run_2", T0 + 2, NULL), 0);
    /* The old holder's late release changes nothing. */
    assert_int_equal(
        release(f, "s2", "run_1", "[{\"role\":\"user\",\"content\":\"x\"}]", 0, T0 + 3), -ESTALE);

    /* A holder that is not stored yet is busy for the grace period, then abandoned. */
    assert_int_equal(acquire(f, "s3", "key_a", "run_ghost", T0, NULL), 0);
    assert_int_equal(acquire(f, "s3", "key_a", "run_3", T0 + AH_SESSION_ACQUIRE_GRACE_MS - 1, NULL),
                     -EBUSY);
    assert_int_equal(acquire(f, "s3", "key_a", "run_3", T0 + AH_SESSION_ACQUIRE_GRACE_MS + 1, NULL),
                     0);
}

static void test_ttl_and_ownership(void **state)
{
    fixture_t *f = *state;
    insert_run(f, "run_1", "key_a", "s4", AH_RUN_COMPLETED, T0, NULL);
    assert_int_equal(acquire(f, "s4", "key_a", "run_1", T0, NULL), 0);
    assert_int_equal(release(f, "s4", "run_1", "[{\"role\":\"user\",\"content\":\"u1\"}]", 0, T0),
                     0);

    /* Another key may not use it while it lives... */
    assert_int_equal(acquire(f, "s4", "key_b", "run_b", T0 + 1, NULL), -EACCES);
    ah_session_rec_t s;
    assert_int_equal(get(f, "s4", "key_b", T0 + 1, &s), -ENOENT);
    assert_int_equal(get(f, "s4", NULL, T0 + 1, &s), 0); /* admins see it */
    ah_session_rec_free(&s);

    /* ...an hour after its last use it is forgotten: gone for GET, empty for the next run. */
    assert_int_equal(get(f, "s4", "key_a", T0 + HOUR, &s), -ENOENT);
    char *msgs = NULL;
    assert_int_equal(acquire(f, "s4", "key_b", "run_b", T0 + HOUR + 1, &msgs), 0);
    assert_string_equal(msgs, "[]");
    free(msgs);
    assert_int_equal(get(f, "s4", "key_b", T0 + HOUR + 2, &s), 0);
    assert_string_equal(s.key_id, "key_b");
    assert_string_equal(s.messages, "[]");
    assert_int_equal(s.created_at, T0 + HOUR + 1);
    assert_string_equal(s.active_run_id, "run_b"); /* not stored yet, within the grace */
    ah_session_rec_free(&s);
    assert_int_equal(get(f, "s4", "key_a", T0 + HOUR + 2, &s), -ENOENT);

    /* Bad ids are refused. */
    assert_int_equal(acquire(f, "a b", "key_a", "run_x", T0, NULL), -EINVAL);
    assert_int_equal(acquire(f, "s5", "key_a", "", T0, NULL), -EINVAL);
}

/* A run ended where the agent's spec is not known (cancelled while parked) keeps the
 * session's TTL instead of falling back to the default day. */
static void test_release_keeps_acquired_ttl(void **state)
{
    fixture_t *f = *state;
    insert_run(f, "run_k", "key_a", "s6", AH_RUN_CANCELLED, T0, NULL);
    assert_int_equal(acquire(f, "s6", "key_a", "run_k", T0, NULL), 0); /* ttl 3600 s */
    job_t j = {.op = OP_RELEASE,
               .id = "s6",
               .run_id = "run_k",
               .ttl_s = AH_SESSION_TTL_KEEP,
               .now = T0 + 600000};
    assert_int_equal(call(f, &j), 0);
    ah_session_rec_t s;
    assert_int_equal(get(f, "s6", NULL, T0 + 600001, &s), 0);
    assert_int_equal(s.expires_at, T0 + 600000 + HOUR);
    assert_string_equal(s.active_run_id, "");
    ah_session_rec_free(&s);
    assert_int_equal(get(f, "s6", NULL, T0 + 600000 + HOUR, &s), -ENOENT);
}

static void test_enqueued_runs_keep_order(void **state)
{
    fixture_t *f = *state;
    insert_run(f, "run_1", "key_a", "sq", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "sq", "key_a", "run_1", T0, NULL), 0);
    /* Two runs wait (multitask: enqueue). */
    insert_run(f, "run_2", "key_a", "sq", AH_RUN_QUEUED, T0 + 1, NULL);
    insert_run(f, "run_3", "key_a", "sq", AH_RUN_QUEUED, T0 + 2, NULL);
    job_t n = {.op = OP_NEXT, .id = "sq"};
    assert_int_equal(call(f, &n), 0);
    assert_string_equal(n.busy, "run_2");

    assert_int_equal(release(f, "sq", "run_1", NULL, 0, T0 + 3), 0);
    set_status(f, "run_1", AH_RUN_COMPLETED);
    /* Free, but a newcomer and the second in line must wait for run_2. */
    assert_int_equal(acquire(f, "sq", "key_a", "run_new", T0 + 4, NULL), -EBUSY);
    assert_int_equal(acquire(f, "sq", "key_a", "run_3", T0 + 4, NULL), -EBUSY);
    assert_int_equal(acquire(f, "sq", "key_a", "run_2", T0 + 4, NULL), 0);
    set_status(f, "run_2", AH_RUN_RUNNING);
    assert_int_equal(call(f, &n), 0);
    assert_string_equal(n.busy, "run_3");

    job_t none = {.op = OP_NEXT, .id = "nobody"};
    assert_int_equal(call(f, &none), -ENOENT);

    /*
     * What a claimer may start: run_3 waits (run_2 holds sq), r_n (no session)
     * and r_new (a new session) may go; of two runs queued for a free session
     * only the older.
     */
    insert_run(f, "r_n", "key_a", NULL, AH_RUN_QUEUED, T0 + 5, NULL);
    insert_run(f, "r_new", "key_a", "s_new", AH_RUN_QUEUED, T0 + 6, NULL);
    insert_run(f, "r_f1", "key_a", "s_free", AH_RUN_QUEUED, T0 + 7, NULL);
    insert_run(f, "r_f2", "key_a", "s_free", AH_RUN_QUEUED, T0 + 7, NULL);
    job_t st = {.op = OP_STARTABLE};
    assert_int_equal(call(f, &st), 0);
    assert_string_equal(st.busy, "r_n r_new r_f1");
    /* Once run_2 is final, run_3 is next. */
    set_status(f, "run_2", AH_RUN_COMPLETED);
    assert_int_equal(call(f, &st), 0);
    assert_string_equal(st.busy, "run_3 r_n r_new r_f1");
}

static void test_delete_and_purge(void **state)
{
    fixture_t *f = *state;
    insert_run(f, "run_1", "key_a", "sd", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "sd", "key_a", "run_1", T0, NULL), 0);
    job_t d = {.op = OP_DELETE, .id = "sd", .key_id = "key_a", .now = T0 + 1};
    assert_int_equal(call(f, &d), -EBUSY);
    assert_string_equal(d.busy, "run_1");
    assert_int_equal(release(f, "sd", "run_1", NULL, 0, T0 + 2), 0);
    job_t other = {.op = OP_DELETE, .id = "sd", .key_id = "key_b", .now = T0 + 3};
    assert_int_equal(call(f, &other), -ENOENT);
    assert_int_equal(call(f, &d), 0);
    assert_int_equal(call(f, &d), -ENOENT);

    /* Purge: expired and not held go; live ones and held ones stay. */
    insert_run(f, "run_p", "key_a", "p2", AH_RUN_RUNNING, T0, NULL);
    assert_int_equal(acquire(f, "p1", "key_a", "run_x1", T0, NULL), 0);
    assert_int_equal(release(f, "p1", "run_x1", NULL, 0, T0), 0);      /* expires T0 + 1 h */
    assert_int_equal(acquire(f, "p2", "key_a", "run_p", T0, NULL), 0); /* held by a live run */
    assert_int_equal(acquire(f, "p3", "key_a", "run_x3", T0 + HOUR, NULL), 0);
    assert_int_equal(release(f, "p3", "run_x3", NULL, 0, T0 + HOUR), 0); /* expires T0 + 2 h */
    job_t p = {.op = OP_PURGE, .now = T0 + HOUR + 1, .limit = 100};
    assert_int_equal(call(f, &p), 1);
    assert_int_equal(call(f, &p), 0);
    ah_session_rec_t s;
    assert_int_equal(get(f, "p2", NULL, T0 + HOUR + 1, &s), 0);
    assert_string_equal(s.active_run_id, "run_p");
    ah_session_rec_free(&s);
    /* Once its run is final, an expired session goes too. */
    set_status(f, "run_p", AH_RUN_COMPLETED);
    assert_int_equal(call(f, &p), 1);
    p.limit = 0;
    assert_int_equal(call(f, &p), -EINVAL);
}

/* ---- idempotency ---- */

static void test_request_hash_is_canonical(void **state)
{
    (void)state;
    char h1[65], h2[65], h3[65];
    ah_run_request_hash("support", "[{\"role\":\"user\",\"content\":\"hi\"}]", "sync", "s1",
                        "{\"a\":1,\"b\":{\"x\":1,\"y\":2}}", "{\"max_turns\":3}", NULL, NULL, h1);
    /* Same request, other key order and spacing, defaults spelled out. */
    ah_run_request_hash("support", "[ {\"content\": \"hi\", \"role\": \"user\"} ]", NULL, "s1",
                        "{\"b\":{\"y\":2,\"x\":1}, \"a\":1}", "{ \"max_turns\" : 3 }", NULL,
                        "reject", h2);
    assert_int_equal(strlen(h1), 64);
    assert_string_equal(h1, h2);
    /* Any field that differs gives another hash. */
    ah_run_request_hash("support", "[{\"role\":\"user\",\"content\":\"hi\"}]", "sync", "s1",
                        "{\"a\":1,\"b\":{\"x\":1,\"y\":3}}", "{\"max_turns\":3}", NULL, NULL, h3);
    assert_string_not_equal(h1, h3);
    ah_run_request_hash("support", "[{\"role\":\"user\",\"content\":\"hi\"}]", "async", "s1",
                        "{\"a\":1,\"b\":{\"x\":1,\"y\":2}}", "{\"max_turns\":3}", NULL, NULL, h3);
    assert_string_not_equal(h1, h3);
    ah_run_request_hash("other", "[{\"role\":\"user\",\"content\":\"hi\"}]", "sync", "s1",
                        "{\"a\":1,\"b\":{\"x\":1,\"y\":2}}", "{\"max_turns\":3}", NULL, NULL, h3);
    assert_string_not_equal(h1, h3);
    ah_run_request_hash("support", "[{\"role\":\"user\",\"content\":\"hi\"}]", "sync", "s1",
                        "{\"a\":1,\"b\":{\"x\":1,\"y\":2}}", "{\"max_turns\":3}",
                        "https://h.example/x", NULL, h3);
    assert_string_not_equal(h1, h3);
    /* A string input is not the same request as the same text in an array. */
    ah_run_request_hash("support", "\"hi\"", NULL, NULL, NULL, NULL, NULL, NULL, h1);
    ah_run_request_hash("support", "[\"hi\"]", NULL, NULL, NULL, NULL, NULL, NULL, h2);
    assert_string_not_equal(h1, h2);

    assert_true(ah_run_idem_key_valid("order-42/attempt"));
    assert_false(ah_run_idem_key_valid(""));
    assert_false(ah_run_idem_key_valid("tab\there"));
}

static void test_find_idempotent(void **state)
{
    fixture_t *f = *state;
    char hash[65];
    ah_run_request_hash("support", "\"hi\"", NULL, NULL, NULL, NULL, NULL, NULL, hash);
    insert_run(f, "run_i", "key_a", NULL, AH_RUN_COMPLETED, T0, "idem-1");
    job_t sh = {.op = OP_SET_HASH, .run_id = "run_i", .hash = hash};
    assert_int_equal(call(f, &sh), 0);
    job_t bad = {.op = OP_SET_HASH, .run_id = "run_none", .hash = hash};
    assert_int_equal(call(f, &bad), -ENOENT);
    bad.run_id = "run_i";
    bad.hash = "short";
    assert_int_equal(call(f, &bad), -EINVAL);

    /* Within the window: the run and its hash. */
    job_t j = {.op = OP_FIND_IDEM,
               .key_id = "key_a",
               .hash = "idem-1",
               .now = T0 + HOUR - AH_RUN_IDEM_WINDOW_MS};
    assert_int_equal(call(f, &j), 0);
    assert_string_equal(j.found.id, "run_i");
    assert_string_equal(j.found.status, "completed");
    assert_string_equal(j.found_hash, hash);
    ah_run_rec_free(&j.found);

    /* Another key's Idempotency-Key is not ours; an unknown key finds nothing. */
    job_t o = j;
    o.key_id = "key_b";
    assert_int_equal(call(f, &o), -ENOENT);
    o = j;
    o.hash = "idem-2";
    assert_int_equal(call(f, &o), -ENOENT);

    /* A run stored without a hash: "" (the caller treats it as the same request). */
    insert_run(f, "run_nh", "key_a", NULL, AH_RUN_COMPLETED, T0, "idem-nh");
    o = j;
    o.hash = "idem-nh";
    assert_int_equal(call(f, &o), 0);
    assert_string_equal(o.found_hash, "");
    ah_run_rec_free(&o.found);

    /* After the window: not found, and once expired the key starts a new run. */
    o = j;
    o.now = T0 + 1;
    assert_int_equal(call(f, &o), -ENOENT);
    job_t ex = {.op = OP_IDEM_EXPIRE, .key_id = "key_a", .hash = "idem-1", .now = T0};
    assert_int_equal(call(f, &ex), 0); /* not older than T0 */
    ex.now = T0 + 1;
    assert_int_equal(call(f, &ex), 1);
    insert_run(f, "run_i2", "key_a", NULL, AH_RUN_QUEUED, T0 + AH_RUN_IDEM_WINDOW_MS, "idem-1");
    o = j;
    o.now = T0 + 1;
    assert_int_equal(call(f, &o), 0);
    assert_string_equal(o.found.id, "run_i2");
    assert_string_equal(o.found_hash, "");
    ah_run_rec_free(&o.found);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_merge_replaces_system_prompt),
        cmocka_unit_test(test_merge_drops_incomplete_exchanges),
        cmocka_unit_test(test_trim_keeps_system_and_whole_exchanges),
        cmocka_unit_test(test_session_id_valid),
        cmocka_unit_test(test_request_hash_is_canonical),
    };
    const struct CMUnitTest store[] = {
        cmocka_unit_test_setup_teardown(test_acquire_release_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_trims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_holder_ending_frees_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_and_ownership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_keeps_acquired_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueued_runs_keep_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_idempotent, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("sessions", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("sessions_sqlite", store, NULL, NULL);
    return failed;
}
