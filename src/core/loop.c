/* loop.c - libevent loop with an eventfd mailbox; see loop.h. */
#include "core/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

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

void ah_loop_free(ah_loop_t *l)
{
    if (!l)
        return;
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
