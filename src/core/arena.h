/*
 * arena.h - capped bump allocator for request-scoped memory.
 *
 * A request (or any short-lived unit of work) allocates from its arena and
 * frees everything at once with ah_arena_reset() or ah_arena_free(). The arena
 * has a hard cap: an allocation that would exceed it fails (returns NULL)
 * instead of growing without bound, so a hostile request cannot take the
 * process's memory. Not thread-safe: one arena belongs to one thread at a time.
 */
#ifndef AH_ARENA_H
#define AH_ARENA_H

#include <stddef.h>

typedef struct ah_arena_block ah_arena_block_t;

typedef struct ah_arena {
    ah_arena_block_t *head; /* current block; older blocks chained behind */
    size_t block_size;      /* size of a normal block */
    size_t cap;             /* max bytes the arena may hold in all blocks */
    size_t used;            /* bytes held in blocks now (capacity, not payload) */
} ah_arena_t;

/**
 * Initialises an arena whose blocks are block_size bytes and whose total is
 * capped at cap bytes (0 = no cap). Allocates nothing until first use.
 */
void ah_arena_init(ah_arena_t *a, size_t block_size, size_t cap);

/**
 * Returns n bytes aligned for any type, or NULL when the cap would be exceeded
 * or malloc fails. The memory lives until ah_arena_reset/ah_arena_free.
 */
void *ah_arena_alloc(ah_arena_t *a, size_t n);

/** Like ah_arena_alloc but zero-filled. */
void *ah_arena_calloc(ah_arena_t *a, size_t n);

/** Copies n bytes of s and NUL-terminates; NULL on cap/malloc failure. */
char *ah_arena_strndup(ah_arena_t *a, const char *s, size_t n);

/** Releases everything but the first block, which is kept for reuse. */
void ah_arena_reset(ah_arena_t *a);

/** Releases every block. The arena may be reused after ah_arena_init. */
void ah_arena_free(ah_arena_t *a);

#endif
