/* usage_types.h - token usage of one LLM call, shared by the gateway's modules. */
#ifndef AH_GW_USAGE_TYPES_H
#define AH_GW_USAGE_TYPES_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ah_llm_usage {
    int64_t prompt_tokens; /* including cached tokens */
    int64_t completion_tokens;
    int64_t cached_tokens; /* prompt tokens served from the provider's cache */
    bool present;          /* the provider reported usage */
} ah_llm_usage_t;

#endif
