/* breaker.c - circuit breaker; see breaker.h. */
#include "gateway/breaker.h"

#include <string.h>

void ah_breaker_init(ah_breaker_t *b, const ah_breaker_opts_t *o)
{
    memset(b, 0, sizeof(*b));
    ah_breaker_opts_t d = {5, 0.5, 20, 10, 30.0};
    if (o) {
        if (o->failures > 0)
            d.failures = o->failures;
        if (o->error_rate > 0 && o->error_rate <= 1)
            d.error_rate = o->error_rate;
        if (o->window > 0)
            d.window = o->window > AH_BREAKER_WINDOW_MAX ? AH_BREAKER_WINDOW_MAX : o->window;
        if (o->min_requests > 0)
            d.min_requests = o->min_requests;
        if (o->open_s > 0)
            d.open_s = o->open_s;
    }
    if (d.min_requests > d.window)
        d.min_requests = d.window;
    b->o = d;
    pthread_mutex_init(&b->mu, NULL);
}

void ah_breaker_destroy(ah_breaker_t *b)
{
    pthread_mutex_destroy(&b->mu);
}

bool ah_breaker_allow(ah_breaker_t *b, uint64_t now_ns)
{
    int st = atomic_load_explicit(&b->state, memory_order_acquire);
    if (st == AH_BREAKER_CLOSED)
        return true;
    if (st == AH_BREAKER_OPEN) {
        if (now_ns < atomic_load(&b->open_until_ns))
            return false;
        int expect = AH_BREAKER_OPEN;
        atomic_compare_exchange_strong(&b->state, &expect, AH_BREAKER_HALF_OPEN);
    }
    /* Half-open: exactly one probe at a time. */
    bool no = false;
    return atomic_compare_exchange_strong(&b->probe_out, &no, true);
}

static void open_locked(ah_breaker_t *b, uint64_t now_ns)
{
    atomic_store(&b->open_until_ns, now_ns + (uint64_t)(b->o.open_s * 1e9));
    atomic_store_explicit(&b->state, AH_BREAKER_OPEN, memory_order_release);
    atomic_store(&b->probe_out, false);
    atomic_fetch_add(&b->opened_total, 1);
    b->consecutive = 0;
    b->outcomes = 0;
    b->n_outcomes = 0;
}

void ah_breaker_record(ah_breaker_t *b, bool success, uint64_t now_ns)
{
    pthread_mutex_lock(&b->mu);
    int st = atomic_load(&b->state);
    if (st == AH_BREAKER_HALF_OPEN) {
        if (success) {
            atomic_store_explicit(&b->state, AH_BREAKER_CLOSED, memory_order_release);
            b->consecutive = 0;
            b->outcomes = 0;
            b->n_outcomes = 0;
            atomic_store(&b->probe_out, false);
        } else {
            open_locked(b, now_ns);
        }
        pthread_mutex_unlock(&b->mu);
        return;
    }
    if (st == AH_BREAKER_OPEN) { /* a request admitted before it opened */
        pthread_mutex_unlock(&b->mu);
        return;
    }
    uint64_t mask = b->o.window >= 64 ? ~0ull : ((1ull << b->o.window) - 1);
    b->outcomes = ((b->outcomes << 1) | (success ? 0 : 1)) & mask;
    if (b->n_outcomes < b->o.window)
        b->n_outcomes++;
    b->consecutive = success ? 0 : b->consecutive + 1;
    int fails = __builtin_popcountll(b->outcomes);
    bool rate_trip = b->n_outcomes >= b->o.min_requests &&
                     (double)fails >= b->o.error_rate * (double)b->n_outcomes;
    if (!success && (b->consecutive >= b->o.failures || rate_trip))
        open_locked(b, now_ns);
    pthread_mutex_unlock(&b->mu);
}

ah_breaker_state_t ah_breaker_state(const ah_breaker_t *b)
{
    return (ah_breaker_state_t)atomic_load(&((ah_breaker_t *)b)->state);
}
