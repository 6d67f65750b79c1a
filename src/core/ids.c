/* ids.c - random ids and base62; see ids.h. */
#include "core/ids.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int ah_random_bytes(void *p, size_t n)
{
    unsigned char *q = p;
    while (n) {
        ssize_t r = getrandom(q, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        q += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Output width for n bytes: chars needed so that 62^w >= 256^n (log(256)/log(62) = 1.3436). */
static size_t b62_width(size_t n)
{
    return (n * 13436 + 9999) / 10000;
}

int ah_base62_encode(const unsigned char *p, size_t n, char *out, size_t outsz)
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t w = b62_width(n);
    if (n > 64 || outsz < w + 1)
        return -ENOSPC;
    unsigned char num[64];
    memcpy(num, p, n);
    /* Repeated division of the big-endian number by 62, least significant digit first. */
    for (size_t i = w; i-- > 0;) {
        unsigned rem = 0;
        for (size_t j = 0; j < n; j++) {
            unsigned cur = (rem << 8) | num[j];
            num[j] = (unsigned char)(cur / 62);
            rem = cur % 62;
        }
        out[i] = alphabet[rem];
    }
    out[w] = '\0';
    return (int)w;
}

int ah_id_new(char *out, size_t outsz, const char *prefix, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof(raw))
        return -EINVAL;
    size_t pl = strlen(prefix);
    if (outsz < pl + 2)
        return -ENOSPC;
    int rc = ah_random_bytes(raw, nbytes);
    if (rc)
        return rc;
    memcpy(out, prefix, pl);
    out[pl] = '_';
    rc = ah_base62_encode(raw, nbytes, out + pl + 1, outsz - pl - 1);
    return rc < 0 ? rc : 0;
}
