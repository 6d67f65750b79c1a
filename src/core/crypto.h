/* crypto.h - SHA-256, HMAC-SHA256 and constant-time comparison (OpenSSL). */
#ifndef AH_CRYPTO_H
#define AH_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define AH_SHA256_LEN 32

/** SHA-256 of p[0..n) into out[32]. */
void ah_sha256(const void *p, size_t n, unsigned char out[AH_SHA256_LEN]);

/** SHA-256 as 64 lowercase hex chars + NUL into out[65]. */
void ah_sha256_hex(const void *p, size_t n, char out[2 * AH_SHA256_LEN + 1]);

/** HMAC-SHA256 of msg with key into out[32]. 0 or -EIO. */
int ah_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                   unsigned char out[AH_SHA256_LEN]);

/** Lowercase hex of n bytes into out (2n+1 bytes). */
void ah_hex(const unsigned char *p, size_t n, char *out);

/** Compares n bytes in time independent of where they differ. */
bool ah_ct_equal(const void *a, const void *b, size_t n);

#endif
