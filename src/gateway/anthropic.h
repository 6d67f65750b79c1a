/*
 * anthropic.h - translation between OpenAI Chat Completions and the Anthropic
 * Messages API (POST /v1/messages, anthropic-version 2023-06-01).
 *
 * Pure functions, no I/O: the provider glue (anthropic_provider.c) builds
 * the HTTP request and feeds the answer through these. Four parts:
 *   - request:  OpenAI request JSON  -> Anthropic request JSON
 *   - response: Anthropic message    -> OpenAI chat.completion (+ usage)
 *   - errors:   Anthropic error body -> OpenAI error JSON + status to answer
 *   - stream:   Anthropic SSE events -> OpenAI chat.completion.chunk frames
 * The field-by-field mapping, and what is refused or ignored and why, is in
 * docs/internals/anthropic.md.
 */
#ifndef AH_GW_ANTHROPIC_H
#define AH_GW_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/usage_types.h"

/** max_tokens sent when the client gave neither max_tokens nor max_completion_tokens. */
#define AH_ANTHROPIC_DEFAULT_MAX_TOKENS 4096

/**
 * Translates an OpenAI chat completions request (a JSON object, not
 * modified) into an Anthropic Messages request for upstream_model. On
 * success *out is a new object owned by the caller (json_decref). Returns 0;
 * -EINVAL when the request is invalid or asks for something Anthropic
 * cannot honour (answer 400): err holds a message naming the field, and
 * *err_param (if err_param is not NULL) the field's path, e.g.
 * "messages[3].tool_calls[0].function.arguments" - it points into err's
 * memory and is valid until err is changed or freed (NULL when unknown);
 * -ENOMEM.
 */
int ah_anthropic_request(const json_t *openai_req, const char *upstream_model, json_t **out,
                         ah_buf_t *err, const char **err_param);

/**
 * Translates a 2xx Anthropic Messages answer (body, len bytes) into an
 * OpenAI chat.completion object appended to out, with model set to
 * public_model and created to the current time. usage (if not NULL) is
 * filled from the answer's usage (present false when it has none).
 * Returns 0; -EINVAL when the body is not an Anthropic message (err says
 * why; the gateway answers 502); -ENOMEM. out is unchanged on error.
 */
int ah_anthropic_response(const char *body, size_t len, const char *public_model, ah_buf_t *out,
                          ah_llm_usage_t *usage, ah_buf_t *err);

/**
 * Translates an Anthropic error answer (HTTP status, body of any content,
 * possibly not JSON) into an OpenAI error object
 * {"error":{"message","type","param","code"}} appended to openai_error_json,
 * and returns the HTTP status to answer the client with. Errors caused by
 * the client's request keep their status (400, 413, 429); errors of the
 * gateway's own upstream setup (401, 403, 404, 402 billing) and upstream
 * failures become 502, overloaded (529) 503, timeout 504. Returns -ENOMEM
 * if the JSON cannot be written.
 */
int ah_anthropic_error(int http_status, const char *body, size_t len, ah_buf_t *openai_error_json);

/* Per Anthropic content block index: what it became in the OpenAI stream. */
typedef struct ah_anthropic_block {
    int tool_index; /* OpenAI tool_calls index, -1 for a non-tool block */
    bool args_sent; /* some argument bytes were sent for this tool call */
} ah_anthropic_block_t;

/**
 * Stream translation state for one upstream stream. Fields are read-only
 * for callers; usage is current after every event (input side from
 * message_start, output side from message_delta) and is what accounting
 * should use, even for a stream that broke.
 */
typedef struct ah_anthropic_stream {
    ah_buf_t id_prefix;  /* prepended to message.id to form the chunk id */
    ah_buf_t model_json; /* public model, JSON-escaped */
    ah_buf_t head;       /* "{"id":..,"object":..,"created":..,"model":.." of every chunk */
    int64_t created;
    bool include_usage;
    bool started;     /* message_start seen */
    bool finish_sent; /* a chunk with finish_reason was written */
    bool done;        /* message_stop seen */
    int n_tools;      /* tool_use blocks seen so far (next OpenAI tool index) */
    ah_anthropic_block_t *blocks;
    size_t n_blocks;
    int64_t input_tokens, cache_read_tokens, cache_creation_tokens, output_tokens;
    ah_llm_usage_t usage;
} ah_anthropic_stream_t;

/** Most content blocks one message may have in a stream (a bound on state). */
#define AH_ANTHROPIC_MAX_BLOCKS 4096

/**
 * Initialises st. Chunk ids are id_prefix (NULL or "" for none) followed by
 * the upstream message.id (so with no prefix they equal the non-stream id);
 * model is public_model; created the chunks' timestamp (seconds);
 * include_usage adds "usage":null to every chunk and a final usage chunk,
 * as OpenAI does for stream_options.include_usage. 0 or -ENOMEM.
 */
int ah_anthropic_stream_init(ah_anthropic_stream_t *st, const char *id_prefix,
                             const char *public_model, int64_t created, bool include_usage);

/**
 * Translates one upstream SSE event (event name, data JSON of n bytes) and
 * appends zero or more complete OpenAI frames "data: {chunk}\n\n" to out
 * (never "data: [DONE]": the caller writes it after message_stop). Returns
 * 0; -EREMOTEIO for an upstream "error" event and -EINVAL for a malformed
 * event (in both cases an OpenAI error JSON object, without SSE framing, is
 * appended to out and the stream should end); -ENOMEM (out unchanged).
 * ping, unknown events and events after message_stop are ignored.
 */
int ah_anthropic_stream_event(ah_anthropic_stream_t *st, const char *event, const char *data,
                              size_t n, ah_buf_t *out);

/** True once message_stop was seen; a stream that ends before is truncated. */
bool ah_anthropic_stream_done(const ah_anthropic_stream_t *st);

/** Frees st's memory. */
void ah_anthropic_stream_free(ah_anthropic_stream_t *st);

#endif
