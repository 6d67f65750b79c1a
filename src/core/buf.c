/* buf.c - growable byte buffer; see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ah_buf_init(ah_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int ah_buf_reserve(ah_buf_t *b, size_t n)
{
    if (n > ((size_t)-1) / 2 - b->len)
        return -E2BIG;
    size_t need = b->len + n + 1; /* room for the NUL */
    if (b->max && b->len + n > b->max)
        return -E2BIG;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (b->max && cap > b->max + 1)
        cap = b->max + 1 > need ? b->max + 1 : need;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ah_buf_append(ah_buf_t *b, const void *p, size_t n)
{
    int rc = ah_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int ah_buf_puts(ah_buf_t *b, const char *s)
{
    return ah_buf_append(b, s, strlen(s));
}

int ah_buf_putc(ah_buf_t *b, char c)
{
    return ah_buf_append(b, &c, 1);
}

int ah_buf_vprintf(ah_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return ah_buf_append(b, small, (size_t)n);
    int rc = ah_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    int m = vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    if (m != n)
        return -EINVAL;
    b->len += (size_t)n;
    return 0;
}

int ah_buf_printf(ah_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ah_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int ah_buf_json_escape(ah_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        int rc = ah_buf_append(b, s + start, i - start);
        if (rc)
            return rc;
        char esc[7] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if ((rc = ah_buf_append(b, esc, elen)))
            return rc;
        start = i + 1;
    }
    return ah_buf_append(b, s + start, n - start);
}

int ah_buf_put_u64(ah_buf_t *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return ah_buf_append(b, tmp + i, sizeof(tmp) - i);
}

void ah_buf_consume(ah_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void ah_buf_reset(ah_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void ah_buf_free(ah_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

char *ah_buf_steal(ah_buf_t *b)
{
    char *p = b->data;
    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
