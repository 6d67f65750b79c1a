/* arena.c - capped bump allocator; see arena.h. */
#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ah_arena_block {
    ah_arena_block_t *next;
    size_t size; /* usable bytes in data[] */
    size_t off;  /* first free byte */
    alignas(max_align_t) unsigned char data[];
};

#define ALIGN_UP(n) (((n) + (alignof(max_align_t) - 1)) & ~(alignof(max_align_t) - 1))

void ah_arena_init(ah_arena_t *a, size_t block_size, size_t cap)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 4096;
    a->cap = cap;
    a->used = 0;
}

static ah_arena_block_t *block_new(ah_arena_t *a, size_t need)
{
    size_t size = need > a->block_size ? need : a->block_size;
    if (a->cap && (size > a->cap || a->used > a->cap - size))
        return NULL;
    ah_arena_block_t *b = malloc(sizeof(*b) + size);
    if (!b)
        return NULL;
    b->size = size;
    b->off = 0;
    a->used += size;
    return b;
}

void *ah_arena_alloc(ah_arena_t *a, size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / 2)
        return NULL;
    size_t need = ALIGN_UP(n);
    ah_arena_block_t *b = a->head;
    if (!b || b->size - b->off < need) {
        ah_arena_block_t *nb = block_new(a, need);
        if (!nb)
            return NULL;
        if (b && need > a->block_size) {
            /* An oversized block goes behind the current one so the current
             * block's free space stays usable for small allocations. */
            nb->next = b->next;
            b->next = nb;
            nb->off = need;
            return nb->data;
        }
        nb->next = b;
        a->head = b = nb;
    }
    void *p = b->data + b->off;
    b->off += need;
    return p;
}

void *ah_arena_calloc(ah_arena_t *a, size_t n)
{
    void *p = ah_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *ah_arena_strndup(ah_arena_t *a, const char *s, size_t n)
{
    char *p = ah_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ah_arena_reset(ah_arena_t *a)
{
    ah_arena_block_t *b = a->head;
    if (!b)
        return;
    /* Keep the last (oldest) block: it is normally the standard size. */
    while (b->next) {
        ah_arena_block_t *next = b->next;
        a->used -= b->size;
        free(b);
        b = next;
    }
    b->off = 0;
    a->head = b;
    if (b->size != a->block_size) {
        a->used -= b->size;
        free(b);
        a->head = NULL;
    }
}

void ah_arena_free(ah_arena_t *a)
{
    ah_arena_block_t *b = a->head;
    while (b) {
        ah_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}
