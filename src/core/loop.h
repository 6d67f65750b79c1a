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

/*
 * Holds: work another thread does for this loop and will answer by posting to
 * it (a store job with a done callback on this loop). ah_loop_hold when the
 * work is handed over, ah_loop_release (any thread) once its answer ran or
 * will never come. A worker settles its loop before freeing what the answers
 * use, so no answer is posted to a freed loop or dropped with its memory.
 */
void ah_loop_hold(ah_loop_t *l);
void ah_loop_release(ah_loop_t *l);

/**
 * On the loop's thread, with the loop not running: runs it until no hold is
 * left or timeout_s passed. Returns the holds left (0: settled).
 */
int ah_loop_settle(ah_loop_t *l, double timeout_s);

/**
 * Frees the loop; queued functions that never ran are dropped (holds still
 * owed are logged: settle first). Not while running.
 */
void ah_loop_free(ah_loop_t *l);

#endif
