/* loop.c - libevent loop with an eventfd mailbox; see loop.h. */
#include "core/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

typedef struct msg {
    struct msg *next;
    ah_loop_fn fn;
    void *arg;
} msg_t;

struct ah_loop {
    struct event_base *base;
    struct event *wake_ev;
    int efd;
    pthread_mutex_t mu; /* guards head/tail */
    msg_t *head, *tail;
    atomic_int holds; /* answers other threads still owe this loop */
};

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    ah_loop_t *l = arg;
    uint64_t n;
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    /* Take the whole queue at once so the lock is held for a pointer swap only. */
    pthread_mutex_lock(&l->mu);
    msg_t *m = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (m) {
        msg_t *next = m->next;
        m->fn(m->arg);
        free(m);
        m = next;
    }
}

ah_loop_t *ah_loop_new(void)
{
    ah_loop_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    struct event_config *cfg = event_config_new();
    if (cfg) {
        /* Workers are single-threaded: skip libevent's internal locking. */
        event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
        l->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
    }
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&l->mu, NULL);
    if (!l->base || l->efd < 0)
        goto fail;
    l->wake_ev = event_new(l->base, l->efd, EV_READ | EV_PERSIST, on_wake, l);
    if (!l->wake_ev || event_add(l->wake_ev, NULL) != 0)
        goto fail;
    return l;
fail:
    ah_loop_free(l);
    return NULL;
}

struct event_base *ah_loop_base(ah_loop_t *l)
{
    return l->base;
}

int ah_loop_post(ah_loop_t *l, ah_loop_fn fn, void *arg)
{
    msg_t *m = malloc(sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->next = NULL;
    m->fn = fn;
    m->arg = arg;
    pthread_mutex_lock(&l->mu);
    int was_empty = l->head == NULL;
    if (l->tail)
        l->tail->next = m;
    else
        l->head = m;
    l->tail = m;
    pthread_mutex_unlock(&l->mu);
    if (was_empty) {
        uint64_t one = 1;
        while (write(l->efd, &one, sizeof(one)) < 0 && errno == EINTR) {
        }
    }
    return 0;
}

static void stop_cb(void *arg)
{
    event_base_loopbreak(((ah_loop_t *)arg)->base);
}

int ah_loop_run(ah_loop_t *l)
{
    return event_base_dispatch(l->base) < 0 ? -EIO : 0;
}

void ah_loop_stop(ah_loop_t *l)
{
    if (ah_loop_post(l, stop_cb, l) != 0)
        event_base_loopbreak(l->base); /* out of memory: best effort */
}

void ah_loop_hold(ah_loop_t *l)
{
    atomic_fetch_add_explicit(&l->holds, 1, memory_order_relaxed);
}

void ah_loop_release(ah_loop_t *l)
{
    atomic_fetch_sub_explicit(&l->holds, 1, memory_order_release);
}

static void settle_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

int ah_loop_settle(ah_loop_t *l, double timeout_s)
{
    bool late = false;
    struct event *t = evtimer_new(l->base, settle_deadline, &late);
    if (t) {
        struct timeval tv = {(time_t)timeout_s,
                             (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
        evtimer_add(t, &tv);
    }
    /* Each answer arrives as a post, which wakes the loop; the timer ends the wait. */
    while (t && !late && atomic_load_explicit(&l->holds, memory_order_acquire) > 0)
        event_base_loop(l->base, EVLOOP_ONCE);
    if (t)
        event_free(t);
    return atomic_load_explicit(&l->holds, memory_order_acquire);
}

void ah_loop_free(ah_loop_t *l)
{
    if (!l)
        return;
    int holds = atomic_load(&l->holds);
    if (holds > 0)
        ah_log(AH_LOG_WARN, "loop", "freeing a loop that is still owed answers",
               AH_LF_INT("holds", holds), AH_LF_END);
    msg_t *m = l->head;
    while (m) {
        msg_t *next = m->next;
        free(m);
        m = next;
    }
    if (l->wake_ev)
        event_free(l->wake_ev);
    if (l->efd >= 0)
        close(l->efd);
    if (l->base)
        event_base_free(l->base);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
