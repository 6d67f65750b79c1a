/*
 * buf.h - growable, length-carrying byte buffer with an optional size limit.
 *
 * The buffer owns its heap memory (freed by ah_buf_free). data is always
 * NUL-terminated after a successful append so it can be used as a C string,
 * but may also hold binary bytes: len is the truth. A buffer with max > 0
 * refuses to grow past max bytes (-E2BIG) rather than truncating silently.
 */
#ifndef AH_BUF_H
#define AH_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct ah_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* 0 = unlimited */
} ah_buf_t;

#define AH_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/** Initialises an empty buffer limited to max bytes of content (0 = none). */
void ah_buf_init(ah_buf_t *b, size_t max);

/** Ensures room for n more bytes. 0, -ENOMEM, or -E2BIG when past max. */
int ah_buf_reserve(ah_buf_t *b, size_t n);

/** Appends n bytes. 0, -ENOMEM or -E2BIG (buffer unchanged on error). */
int ah_buf_append(ah_buf_t *b, const void *p, size_t n);

/** Appends a NUL-terminated string. Same results as ah_buf_append. */
int ah_buf_puts(ah_buf_t *b, const char *s);

/** Appends one byte. */
int ah_buf_putc(ah_buf_t *b, char c);

/** Appends printf-formatted text. 0, -ENOMEM, -E2BIG or -EINVAL (bad format). */
int ah_buf_printf(ah_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** va_list form of ah_buf_printf. */
int ah_buf_vprintf(ah_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/** Appends s as the body of a JSON string (escaped, without quotes). */
int ah_buf_json_escape(ah_buf_t *b, const char *s, size_t n);

/** Appends a decimal unsigned integer (faster than printf on hot paths). */
int ah_buf_put_u64(ah_buf_t *b, unsigned long long v);

/** Removes the first n bytes (n >= len empties the buffer). */
void ah_buf_consume(ah_buf_t *b, size_t n);

/** Empties the buffer, keeping its memory. */
void ah_buf_reset(ah_buf_t *b);

/** Frees the memory; the buffer is empty and reusable afterwards. */
void ah_buf_free(ah_buf_t *b);

/**
 * Hands the memory to the caller (who must free() it) and empties the buffer.
 * Returns "" allocated on the heap when the buffer was empty; NULL on ENOMEM.
 */
char *ah_buf_steal(ah_buf_t *b);

#endif
