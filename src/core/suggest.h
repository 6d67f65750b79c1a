/*
 * suggest.h - "did you mean" hints: the closest of a list of known names to
 * a word the user typed, for config.yaml and agent spec error messages.
 */
#ifndef AH_CORE_SUGGEST_H
#define AH_CORE_SUGGEST_H

#include <stddef.h>

/* More candidates than this: no suggestion (bounds the cost per error). */
#define AH_SUGGEST_MAX_CAND 1024

/**
 * Optimal-string-alignment distance between a and b (insertions, deletions,
 * substitutions and swaps of adjacent characters), ignoring ASCII case.
 * Returns SIZE_MAX when either string is longer than 64 bytes. Both must be
 * non-NULL.
 */
size_t ah_suggest_distance(const char *a, const char *b);

/**
 * The closest of cands[0..n) to word within a distance scaled to the word's
 * length (1 up to 3 characters, 2 up to 8, else 3); the first one wins a tie.
 * Returns one of cands (not a copy), or NULL when word is NULL or empty, n is
 * over AH_SUGGEST_MAX_CAND, or nothing is close enough.
 */
const char *ah_suggest(const char *word, const char *const *cands, size_t n);

#endif
