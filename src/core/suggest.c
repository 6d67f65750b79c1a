/*
 * suggest.c - "did you mean" hints (see suggest.h): an edit distance and the
 * pick of the closest candidate, shared by the config and agent spec checks.
 */
#include "core/suggest.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

/* Longest string compared; the table below is sized for it. */
#define MAX_WORD 64

size_t ah_suggest_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAX_WORD || lb > MAX_WORD)
        return SIZE_MAX;
    size_t d[MAX_WORD + 1][MAX_WORD + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t cost = ca != cb;
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

const char *ah_suggest(const char *word, const char *const *cands, size_t n)
{
    size_t len = word ? strlen(word) : 0;
    if (len == 0 || n > AH_SUGGEST_MAX_CAND)
        return NULL;
    /* Short words get a tight bound, or every 3-letter name "matches". */
    size_t limit = len <= 3 ? 1 : (len <= 8 ? 2 : 3);
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t d = ah_suggest_distance(word, cands[i]);
        if (d <= limit && d < best_d) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}
