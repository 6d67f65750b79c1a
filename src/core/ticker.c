/*
 * ticker.c - the periodic background thread described in ticker.h: a
 * CLOCK_MONOTONIC condvar wait for the deadline, a kick or a stop, and the
 * tick run with no lock held.
 */
#include "core/ticker.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum {
    T_NEW,      /* no thread yet */
    T_RUNNING,  /* the thread runs */
    T_STOPPING, /* one stopper is joining the thread */
    T_STOPPED,  /* no thread, and none will be started */
} ticker_state_t;

struct ah_ticker {
    ah_ticker_fn tick;
    void *ud;
    uint64_t interval_ns;
    char name[16]; /* the kernel keeps 15 bytes of a thread name */

    pthread_mutex_t mu;     /* guards state, kicked */
    pthread_cond_t wake_cv; /* CLOCK_MONOTONIC; the thread waits on it: kick, stop */
    pthread_cond_t done_cv; /* stoppers that did not join wait on it for T_STOPPED */
    ticker_state_t state;
    bool kicked;      /* a tick is wanted now; cleared as the tick starts */
    pthread_t thread; /* valid from T_RUNNING */
};

/* The CLOCK_MONOTONIC time ns from now; ns <= AH_TICKER_MAX_S * 1e9, so no overflow. */
static struct timespec mono_after(uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t total = (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec += (time_t)(total / 1000000000u);
    ts.tv_nsec = (long)(total % 1000000000u);
    return ts;
}

static void *ticker_main(void *arg)
{
    ah_ticker_t *t = arg;
    /* Only for ps/top/gdb: a thread without its name works the same. */
    (void)pthread_setname_np(pthread_self(), t->name);
    pthread_mutex_lock(&t->mu);
    while (t->state == T_RUNNING) {
        /* Taken after the previous tick returned: a slow tick delays, never stacks. */
        struct timespec deadline = mono_after(t->interval_ns);
        while (t->state == T_RUNNING && !t->kicked) {
            if (pthread_cond_timedwait(&t->wake_cv, &t->mu, &deadline) == ETIMEDOUT)
                break;
        }
        if (t->state != T_RUNNING)
            break;
        /* Cleared before the tick, so a kick during it asks for one more. */
        t->kicked = false;
        pthread_mutex_unlock(&t->mu);
        t->tick(t->ud);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

ah_ticker_t *ah_ticker_new(const char *name, double interval_s, ah_ticker_fn tick, void *ud)
{
    if (!tick || !(interval_s > 0)) { /* the negation also refuses NaN */
        errno = EINVAL;
        return NULL;
    }
    if (interval_s < AH_TICKER_MIN_S)
        interval_s = AH_TICKER_MIN_S;
    if (interval_s > AH_TICKER_MAX_S)
        interval_s = AH_TICKER_MAX_S;
    ah_ticker_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->tick = tick;
    t->ud = ud;
    t->interval_ns = (uint64_t)(interval_s * 1e9);
    if (!name)
        name = "ah-ticker";
    memcpy(t->name, name, strnlen(name, sizeof(t->name) - 1)); /* calloc: NUL-terminated */

    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&t->wake_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc != 0) {
        free(t);
        errno = rc;
        return NULL;
    }
    if ((rc = pthread_cond_init(&t->done_cv, NULL)) != 0) {
        pthread_cond_destroy(&t->wake_cv);
        free(t);
        errno = rc;
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

int ah_ticker_start(ah_ticker_t *t)
{
    pthread_mutex_lock(&t->mu);
    if (t->state != T_NEW) {
        pthread_mutex_unlock(&t->mu);
        return -EALREADY;
    }
    /* Created under mu: the thread's first lock waits until state says T_RUNNING. */
    int rc = pthread_create(&t->thread, NULL, ticker_main, t);
    if (rc == 0)
        t->state = T_RUNNING;
    pthread_mutex_unlock(&t->mu);
    return -rc;
}

void ah_ticker_kick(ah_ticker_t *t)
{
    pthread_mutex_lock(&t->mu);
    t->kicked = true;
    pthread_cond_signal(&t->wake_cv);
    pthread_mutex_unlock(&t->mu);
}

void ah_ticker_stop(ah_ticker_t *t)
{
    pthread_mutex_lock(&t->mu);
    switch (t->state) {
    case T_NEW:
        t->state = T_STOPPED;
        break;
    case T_RUNNING:
        /* From the tick, the join below would wait for itself. */
        assert(!pthread_equal(pthread_self(), t->thread));
        t->state = T_STOPPING;
        pthread_cond_signal(&t->wake_cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
        pthread_mutex_lock(&t->mu);
        t->state = T_STOPPED;
        pthread_cond_broadcast(&t->done_cv);
        break;
    case T_STOPPING:
        assert(!pthread_equal(pthread_self(), t->thread));
        while (t->state != T_STOPPED)
            pthread_cond_wait(&t->done_cv, &t->mu);
        break;
    case T_STOPPED:
        break;
    }
    pthread_mutex_unlock(&t->mu);
}

void ah_ticker_free(ah_ticker_t *t)
{
    if (!t)
        return;
    ah_ticker_stop(t);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->wake_cv);
    pthread_cond_destroy(&t->done_cv);
    free(t);
}
