/*
 * breaker.h - a circuit breaker per routing target (provider + upstream model).
 *
 * closed -> open after `failures` consecutive failures, or when the error
 * rate over the last `window` outcomes reaches `error_rate` (with at least
 * `min_requests` outcomes); open -> half-open after `open_s`; half-open lets
 * one probe through: its success closes the breaker, its failure opens it
 * again. Thread-safe: the state is a few atomics and a mutex taken only when
 * an outcome is recorded, never to ask whether a request may pass.
 */
#ifndef AH_BREAKER_H
#define AH_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    AH_BREAKER_CLOSED = 0,
    AH_BREAKER_HALF_OPEN = 1,
    AH_BREAKER_OPEN = 2
} ah_breaker_state_t;

#define AH_BREAKER_WINDOW_MAX 64

typedef struct ah_breaker_opts {
    int failures;      /* consecutive failures that open it; default 5 */
    double error_rate; /* 0..1; default 0.5 */
    int window;        /* outcomes considered for the rate (<= 64); default 20 */
    int min_requests;  /* outcomes needed before the rate counts; default 10 */
    double open_s;     /* time open before a probe; default 30 */
} ah_breaker_opts_t;

typedef struct ah_breaker {
    ah_breaker_opts_t o;
    _Atomic int state;
    _Atomic uint64_t open_until_ns; /* monotonic */
    atomic_bool probe_out;          /* half-open: a probe is in flight */
    pthread_mutex_t mu;             /* guards the fields below */
    int consecutive;
    uint64_t outcomes; /* bit i = failure of the i-th most recent outcome */
    int n_outcomes;
    _Atomic uint64_t opened_total;
} ah_breaker_t;

/** Initialises b with o (NULL = defaults; zero fields take defaults). */
void ah_breaker_init(ah_breaker_t *b, const ah_breaker_opts_t *o);

/** Frees what init allocated (the mutex). */
void ah_breaker_destroy(ah_breaker_t *b);

/**
 * May a request go to this target now? Open: no (until open_s passed, then
 * exactly one caller gets true as the half-open probe). now_ns is monotonic.
 */
bool ah_breaker_allow(ah_breaker_t *b, uint64_t now_ns);

/** Records the outcome of a request that ah_breaker_allow let through. */
void ah_breaker_record(ah_breaker_t *b, bool success, uint64_t now_ns);

/** Current state (for metrics and the x-agenthub headers). */
ah_breaker_state_t ah_breaker_state(const ah_breaker_t *b);

#endif
