/*
 * ids.h - random bytes, identifiers and secrets.
 *
 * Everything here draws from getrandom(2) (the kernel CSPRNG), so ids and keys
 * are unguessable. Ids look like "<prefix>_<base62>" (run_3k9..., req_...).
 */
#ifndef AH_IDS_H
#define AH_IDS_H

#include <stddef.h>

/** Fills p with n random bytes. 0 or -errno. */
int ah_random_bytes(void *p, size_t n);

/**
 * Writes prefix + "_" + base62 encoding of nbytes random bytes into out
 * (size outsz, NUL-terminated). Returns 0, -ENOSPC when out is too small, or
 * -errno from getrandom. nbytes at most 64.
 */
int ah_id_new(char *out, size_t outsz, const char *prefix, size_t nbytes);

/**
 * Base62-encodes n bytes (as one big-endian number, fixed width for a given n)
 * into out; returns the length written or -ENOSPC. Width is ceil(n*8/log2 62).
 */
int ah_base62_encode(const unsigned char *p, size_t n, char *out, size_t outsz);

#endif
