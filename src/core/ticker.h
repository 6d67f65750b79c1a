/*
 * ticker.h - a background thread that runs one function every interval, can
 * be kicked to run it at once, and is stopped (joined) before its owner goes.
 *
 * The caches that mirror the store (key cache, agent registry, key limits)
 * and serve's store health check all need the same loop: wait for the
 * interval or a kick, run the tick outside any lock, repeat until told to
 * stop. This is that loop, written once.
 *
 * Timing: the wait uses a CLOCK_MONOTONIC condvar deadline, so wall-clock
 * steps (NTP, an operator's `date`) neither stall nor rush it. The next
 * deadline is taken when a tick returns, so a slow tick delays the next one
 * instead of queueing ticks back to back.
 *
 * Kicks coalesce: any number of kicks before the thread next looks count as
 * one. A kick that arrives while a tick runs makes the next tick start as
 * soon as this one returns (the tick may have read its source before the
 * change that caused the kick). A kick before ah_ticker_start is kept and
 * runs the first tick at once.
 *
 * Threads: the tick runs only on the ticker's own thread, never two at a
 * time, and never after ah_ticker_stop returns. The thread is named `name`
 * (first 15 bytes; see ps -L, top -H, gdb) and inherits the signal mask of
 * the thread that calls ah_ticker_start.
 *
 * Lifetime: new -> [kick] -> start -> kick ... -> stop -> free (free stops
 * too). ah_ticker_kick and ah_ticker_stop are thread-safe; a mutex inside
 * the ticker guards its state and is never held while the tick runs.
 * docs/internals/auth.md, registry.md and limits.md describe the users.
 */
#ifndef AH_TICKER_H
#define AH_TICKER_H

#define AH_TICKER_MIN_S 0.001 /* intervals are clamped to [MIN, MAX] */
#define AH_TICKER_MAX_S 86400.0

typedef struct ah_ticker ah_ticker_t;

/** What a ticker runs; ud is the pointer given to ah_ticker_new. */
typedef void (*ah_ticker_fn)(void *ud);

/**
 * Creates a stopped ticker that will call tick(ud) every interval_s seconds
 * (clamped to [AH_TICKER_MIN_S, AH_TICKER_MAX_S]) once started. name (copied;
 * NULL = "ah-ticker") names the thread. ud is not owned and must outlive the
 * ticker's thread (until ah_ticker_stop or ah_ticker_free returns). Returns
 * NULL with errno EINVAL (tick NULL, interval_s not > 0) or ENOMEM/EAGAIN.
 * Owned by the caller (ah_ticker_free).
 */
ah_ticker_t *ah_ticker_new(const char *name, double interval_s, ah_ticker_fn tick, void *ud);

/**
 * Starts the thread; the first tick runs one interval later (at once if a kick
 * came first). 0; -EALREADY if it was started or stopped before; -errno from
 * pthread_create (the ticker stays unstarted; calling again may succeed).
 */
int ah_ticker_start(ah_ticker_t *t);

/**
 * Asks for a tick as soon as possible; coalesces with other kicks. Never
 * waits for a tick (it only takes the ticker's mutex, which no tick holds).
 * Any thread, including an event loop and the tick itself. After stop it
 * does nothing.
 */
void ah_ticker_kick(ah_ticker_t *t);

/**
 * Stops the thread and joins it: a tick that is running is waited for, and no
 * tick starts after this returns. Idempotent; several threads may call it at
 * once (all return after the join). On a ticker never started it only keeps
 * it from starting. Blocks for as long as the current tick takes, so never
 * call it from the tick itself (that would wait for itself forever).
 */
void ah_ticker_stop(ah_ticker_t *t);

/**
 * Stops the ticker (as ah_ticker_stop) and frees it. No other thread may use
 * t once this is called. NULL is a no-op.
 */
void ah_ticker_free(ah_ticker_t *t);

#endif
