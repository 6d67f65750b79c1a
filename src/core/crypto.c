/* crypto.c - hashing helpers over OpenSSL 3; see crypto.h. */
#include "core/crypto.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

void ah_sha256(const void *p, size_t n, unsigned char out[AH_SHA256_LEN])
{
    SHA256(p, n, out);
}

void ah_hex(const unsigned char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void ah_sha256_hex(const void *p, size_t n, char out[2 * AH_SHA256_LEN + 1])
{
    unsigned char d[AH_SHA256_LEN];
    ah_sha256(p, n, d);
    ah_hex(d, sizeof(d), out);
}

int ah_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                   unsigned char out[AH_SHA256_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, n, out, &len) || len != AH_SHA256_LEN)
        return -EIO;
    return 0;
}

bool ah_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
