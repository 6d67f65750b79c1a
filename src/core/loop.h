/*
 * loop.h - an event loop (libevent event_base) with a cross-thread mailbox.
 *
 * Threads share work by message, not by lock (CONVENTIONS.md): any thread may
 * ah_loop_post() a function to a loop and it runs on that loop's thread, in
 * post order. This is how store results, key-cache updates and shutdown reach
 * the HTTP workers. Lifetime: new -> run (on its thread) -> stop -> free.
 */
#ifndef AH_LOOP_H
#define AH_LOOP_H

#include <event2/event.h>

typedef struct ah_loop ah_loop_t;
typedef void (*ah_loop_fn)(void *arg);

/** Creates a loop and its event_base. NULL on failure. Owned by the caller. */
ah_loop_t *ah_loop_new(void);

/** The libevent base, for registering events on this loop's thread. */
struct event_base *ah_loop_base(ah_loop_t *l);

/**
 * Queues fn(arg) to run on the loop's thread. Thread-safe, never blocks on the
 * loop. Returns 0, or -ENOMEM (fn will not run). Functions posted after
 * ah_loop_free started are never run.
 */
int ah_loop_post(ah_loop_t *l, ah_loop_fn fn, void *arg);

/** Runs the loop on the calling thread until ah_loop_stop. 0 or -EIO. */
int ah_loop_run(ah_loop_t *l);

/** Asks the loop to return from ah_loop_run after its current callbacks. Thread-safe. */
void ah_loop_stop(ah_loop_t *l);

/** Frees the loop; queued functions that never ran are dropped. Not while running. */
void ah_loop_free(ah_loop_t *l);

#endif
