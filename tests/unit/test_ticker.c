/*
 * test_ticker.c - the periodic background thread (core/ticker.h): ticks at
 * the interval, kicks (before start, coalesced while a tick runs), the
 * thread name, stop while waiting, stop while ticking (waits for the tick),
 * concurrent stops, no tick after stop, argument checks.
 *
 * Tick functions can be held at a gate so the test decides when a tick ends.
 * Every wait is a bounded poll; nothing asserts how long something took.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/ticker.h"
#include "testutil.h"

#define WAIT_MS 5000 /* "eventually": generous, only reached when something is broken */

typedef struct probe {
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* signalled when gate_open changes */
    int started;        /* ticks entered */
    int done;           /* ticks returned */
    bool in_tick;
    bool gated; /* ticks wait for gate_open */
    bool gate_open;
    char name[16]; /* the thread's name, read in the first tick */
} probe_t;

static void probe_init(probe_t *p, bool gated)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->gated = gated;
}

static void probe_destroy(probe_t *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static void probe_tick(void *ud);

/* Initialises *p and returns a ticker (not started) that ticks it. */
static ah_ticker_t *probe_ticker(probe_t *p, bool gated, double interval_s)
{
    probe_init(p, gated);
    ah_ticker_t *t = ah_ticker_new("ah-ticker-test-long-name", interval_s, probe_tick, p);
    assert_non_null(t);
    return t;
}

/* Frees t, then p (whose tick can no longer run). */
static void probe_finish(ah_ticker_t *t, probe_t *p)
{
    ah_ticker_free(t);
    probe_destroy(p);
}

static void probe_tick(void *ud)
{
    probe_t *p = ud;
    pthread_mutex_lock(&p->mu);
    if (p->started == 0)
        pthread_getname_np(pthread_self(), p->name, sizeof(p->name));
    p->started++;
    p->in_tick = true;
    while (p->gated && !p->gate_open)
        pthread_cond_wait(&p->cv, &p->mu);
    p->in_tick = false;
    p->done++;
    pthread_mutex_unlock(&p->mu);
}

static void probe_open_gate(probe_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->gate_open = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static int probe_get(probe_t *p, const int *field)
{
    pthread_mutex_lock(&p->mu);
    int v = *field;
    pthread_mutex_unlock(&p->mu);
    return v;
}

/* Polls until *field >= want or WAIT_MS passes; returns the last value read. */
static int wait_at_least(probe_t *p, const int *field, int want)
{
    uint64_t end = ah_mono_ns() + (uint64_t)WAIT_MS * 1000000ull;
    int v;
    while ((v = probe_get(p, field)) < want && ah_mono_ns() < end)
        ah_test_sleep_ms(1);
    return v;
}

/* ---- tests ---- */

static void test_interval(void **state)
{
    probe_t p;
    ah_ticker_t *t = probe_ticker(&p, false, 0.005);
    assert_int_equal(ah_ticker_start(t), 0);
    assert_true(wait_at_least(&p, &p.done, 3) >= 3);
    probe_finish(t, &p);
}

static void test_kick(void **state)
{
    probe_t p;
    ah_ticker_t *t = probe_ticker(&p, false, 3600);
    /* A kick before start is kept: the first tick does not wait the hour. */
    ah_ticker_kick(t);
    assert_int_equal(ah_ticker_start(t), 0);
    assert_int_equal(wait_at_least(&p, &p.done, 1), 1);
    assert_string_equal(p.name, "ah-ticker-test-"); /* the kernel keeps 15 bytes */
    ah_ticker_kick(t);
    assert_int_equal(wait_at_least(&p, &p.done, 2), 2);
    ah_ticker_stop(t);
    assert_int_equal(probe_get(&p, &p.done), 2);
    probe_finish(t, &p);
}

static void test_kicks_coalesce(void **state)
{
    probe_t p;
    ah_ticker_t *t = probe_ticker(&p, true, 3600);
    assert_int_equal(ah_ticker_start(t), 0);
    ah_ticker_kick(t);
    assert_int_equal(wait_at_least(&p, &p.started, 1), 1);
    /* Kicks during a tick: exactly one more tick, right after this one. */
    for (int i = 0; i < 10; i++)
        ah_ticker_kick(t);
    probe_open_gate(&p);
    assert_int_equal(wait_at_least(&p, &p.done, 2), 2);
    /* The interval is an hour and nobody kicks again: stop finds it waiting. */
    ah_ticker_stop(t);
    assert_int_equal(probe_get(&p, &p.started), 2);
    probe_finish(t, &p);
}

static void test_stop_while_waiting(void **state)
{
    probe_t p;
    ah_ticker_t *t = probe_ticker(&p, false, 3600);
    assert_int_equal(ah_ticker_start(t), 0);
    ah_ticker_stop(t); /* returns without waiting the hour */
    ah_ticker_stop(t); /* idempotent */
    assert_int_equal(probe_get(&p, &p.started), 0);
    probe_finish(t, &p);
}

typedef struct stopper {
    ah_ticker_t *t;
    probe_t *p;
    pthread_t th;
    atomic_bool returned;
    int done_at_return; /* p->done when stop returned */
    bool in_tick_at_return;
} stopper_t;

static void *stopper_main(void *arg)
{
    stopper_t *s = arg;
    ah_ticker_stop(s->t);
    pthread_mutex_lock(&s->p->mu);
    s->done_at_return = s->p->done;
    s->in_tick_at_return = s->p->in_tick;
    pthread_mutex_unlock(&s->p->mu);
    atomic_store(&s->returned, true);
    return NULL;
}

static void test_stop_waits_for_tick(void **state)
{
    probe_t p;
    ah_ticker_t *t = probe_ticker(&p, true, 3600);
    assert_int_equal(ah_ticker_start(t), 0);
    ah_ticker_kick(t);
    assert_int_equal(wait_at_least(&p, &p.started, 1), 1);

    /* Two stoppers at once: both must wait for the tick held at the gate. */
    stopper_t s[2];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < 2; i++) {
        s[i].t = t;
        s[i].p = &p;
        assert_int_equal(pthread_create(&s[i].th, NULL, stopper_main, &s[i]), 0);
    }
    ah_test_sleep_ms(20); /* a wrong stop would return in this time */
    for (int i = 0; i < 2; i++)
        assert_false(atomic_load(&s[i].returned));
    probe_open_gate(&p);
    for (int i = 0; i < 2; i++) {
        pthread_join(s[i].th, NULL);
        assert_int_equal(s[i].done_at_return, 1);
        assert_false(s[i].in_tick_at_return);
    }
    assert_int_equal(probe_get(&p, &p.started), 1);
    probe_finish(t, &p);
}

static void test_no_tick_after_stop(void **state)
{
    probe_t p;
    /* The shortest interval: the thread is ticking or about to when stop comes. */
    ah_ticker_t *t = probe_ticker(&p, false, 1e-9);
    assert_int_equal(ah_ticker_start(t), 0);
    assert_true(wait_at_least(&p, &p.done, 2) >= 2);
    ah_ticker_stop(t);
    pthread_mutex_lock(&p.mu);
    int started = p.started;
    assert_false(p.in_tick);
    assert_int_equal(p.started, p.done);
    pthread_mutex_unlock(&p.mu);
    ah_ticker_kick(t);
    assert_int_equal(ah_ticker_start(t), -EALREADY); /* a stopped ticker stays stopped */
    ah_test_sleep_ms(20);
    assert_int_equal(probe_get(&p, &p.started), started);
    probe_finish(t, &p);
}

static void test_lifecycle_edges(void **state)
{
    probe_t p;
    probe_init(&p, false);

    /* Never started: stop and free only release it. */
    ah_ticker_t *t = ah_ticker_new(NULL, 1, probe_tick, &p);
    assert_non_null(t);
    ah_ticker_kick(t);
    ah_ticker_stop(t);
    assert_int_equal(ah_ticker_start(t), -EALREADY);
    ah_ticker_free(t);
    ah_ticker_free(NULL);

    /* Started twice. */
    t = ah_ticker_new("ah-test", 3600, probe_tick, &p);
    assert_non_null(t);
    assert_int_equal(ah_ticker_start(t), 0);
    assert_int_equal(ah_ticker_start(t), -EALREADY);
    ah_ticker_free(t); /* free stops a running ticker */
    assert_int_equal(probe_get(&p, &p.started), 0);

    /* Bad arguments. */
    errno = 0;
    assert_null(ah_ticker_new("ah-test", 1, NULL, &p));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ah_ticker_new("ah-test", 0, probe_tick, &p));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ah_ticker_new("ah-test", -1, probe_tick, &p));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ah_ticker_new("ah-test", NAN, probe_tick, &p));
    assert_int_equal(errno, EINVAL);
    probe_destroy(&p);
}

int main(void)
{
    /* A ticker that never stops would hang the suite: fail it instead. */
    alarm(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interval),
        cmocka_unit_test(test_kick),
        cmocka_unit_test(test_kicks_coalesce),
        cmocka_unit_test(test_stop_while_waiting),
        cmocka_unit_test(test_stop_waits_for_tick),
        cmocka_unit_test(test_no_tick_after_stop),
        cmocka_unit_test(test_lifecycle_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
