/* clock.h - monotonic and wall-clock time helpers. */
#ifndef AH_CLOCK_H
#define AH_CLOCK_H

#include <stdint.h>
#include <time.h>

/** Monotonic nanoseconds (CLOCK_MONOTONIC); for durations only. */
static inline uint64_t ah_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/** Wall-clock milliseconds since the Unix epoch; for timestamps stored or shown. */
static inline int64_t ah_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
