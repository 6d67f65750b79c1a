/*
 * mock.h - the deterministic mock model (DESIGN.md section 8), shared by the
 * gateway's in-process `type: mock` provider and `agenthub mock-llm`.
 *
 * Everything here is a pure function over jansson values except the
 * process-wide per-model counters at the end (fail_times, /mock/stats). No
 * I/O, no clock: callers pass `created`. The rules, for both dialects:
 *
 *   1. the conversation ends with tool results -> "tool said: <result>"
 *      (several trailing results are joined by " | ");
 *   2. else the last user message contains `call_tool NAME {json args}` and
 *      the request offers tool NAME -> that tool call (several phrases ->
 *      parallel calls; ids "call_<n>" / "toolu_<n>", n counting every tool
 *      call already in the conversation, so ids stay unique across turns);
 *   3. else "echo: <last user text>" (text parts joined by "\n").
 *
 * Tokens are ceil(characters / 4), characters being UTF-8 code points.
 * Prompt tokens count every message's text (incl. tool call names and
 * arguments, tool results, the Anthropic system prompt) plus the compact JSON
 * of the tool definitions; completion tokens count the answer text, or each
 * call's name + arguments. A text answer longer than max_tokens (or
 * max_completion_tokens) is cut to max_tokens * 4 characters with finish
 * reason "length" / stop_reason "max_tokens".
 *
 * Faults and latency are chosen by options in the model name
 * ("gpt-test?status=429&retry_after=1&fail_times=2"); the gateway and mock-llm
 * apply them, this module only parses them (docs/mock-llm.md lists them).
 */
#ifndef AH_GATEWAY_MOCK_H
#define AH_GATEWAY_MOCK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define AH_MOCK_MODEL_MAX     256    /* longest model string accepted, options included */
#define AH_MOCK_DELAY_MAX_MS  600000 /* cap on every *_ms option (10 minutes) */
#define AH_MOCK_EMBED_DIMS    16     /* default embedding dimensions */
#define AH_MOCK_EMBED_MAX_DIM 4096   /* largest "dimensions" accepted */
#define AH_MOCK_MAX_COUNTERS  4096   /* distinct model strings tracked by the counters */

/* ---- options in the model name ---- */

typedef struct ah_mock_opts {
    char model[AH_MOCK_MODEL_MAX]; /* the base name before '?' ("" for "?status=500") */
    int status;                    /* HTTP status to fail with, 400..599; 0 = no fault */
    int retry_after_s;             /* Retry-After seconds on the fault; -1 = none */
    int retry_after_ms;            /* retry-after-ms header on the fault; -1 = none */
    int fail_times;                /* only the first K requests fail; 0 = all of them */
    int ttft_ms;                   /* streaming: delay before the first chunk */
    int token_ms;                  /* streaming: delay between token chunks */
    int latency_ms;                /* delay before the response head (both modes) */
    int drop_after;                /* streaming: chunks sent before the connection is cut; -1 */
    bool malformed;                /* send invalid JSON (a chunk mid-stream, or the body) */
} ah_mock_opts_t;

/**
 * Parses a model string "base?k=v&k=v" into *out (always fully initialised:
 * no options -> no fault, no delay). fail_times without status implies
 * status=500. Returns 0, or -EINVAL with a message in err (if not NULL)
 * naming the bad option or value and the known options.
 */
int ah_mock_opts_parse(const char *model, ah_mock_opts_t *out, ah_buf_t *err);

/* ---- the model's answer ---- */

typedef enum {
    AH_MOCK_FINISH_STOP = 0,
    AH_MOCK_FINISH_TOOL_CALLS,
    AH_MOCK_FINISH_LENGTH
} ah_mock_finish_t;

typedef struct ah_mock_call {
    char *id;        /* "call_1" (OpenAI) or "toolu_1" (Anthropic) */
    char *name;      /* the tool's name */
    char *arguments; /* compact JSON object text, "{}" when the phrase had none */
} ah_mock_call_t;

typedef struct ah_mock_reply {
    char *text; /* the answer text (NUL-terminated, text_len bytes); NULL when calls are made */
    size_t text_len;
    ah_mock_call_t *calls;
    size_t n_calls;
    ah_mock_finish_t finish;
    long prompt_tokens;
    long completion_tokens;
    char digest[17]; /* 16 hex chars derived from the request: the response id suffix */
} ah_mock_reply_t;

/**
 * Answers an OpenAI chat request (messages, tools, tool_choice, max_tokens /
 * max_completion_tokens). Fills *out, which the caller frees with
 * ah_mock_reply_free. Returns 0, -EINVAL for a request that breaks the API
 * shape (err says which field), or -ENOMEM. On error *out is empty.
 */
int ah_mock_chat(const json_t *req, ah_mock_reply_t *out, ah_buf_t *err);

/**
 * Answers an Anthropic Messages request (system, messages with content
 * blocks text / tool_use / tool_result, tools with input_schema,
 * tool_choice, max_tokens). Same results as ah_mock_chat.
 */
int ah_mock_messages(const json_t *req, ah_mock_reply_t *out, ah_buf_t *err);

/** Frees what a reply owns; the reply is empty afterwards. NULL is fine. */
void ah_mock_reply_free(ah_mock_reply_t *r);

/** ceil(UTF-8 characters of s[0..n) / 4). */
long ah_mock_tokens(const char *s, size_t n);

/* ---- OpenAI output ---- */

/**
 * The chat.completion object for reply (id "chatcmpl-mock-<digest>",
 * system_fingerprint "fp_mock", usage with prompt_tokens_details). model is
 * echoed as given. New reference, or NULL on ENOMEM.
 */
json_t *ah_mock_chat_completion(const ah_mock_reply_t *r, const char *model, long long created);

/** One event of a stream: the data of an SSE event and, for Anthropic, its name. */
typedef struct ah_mock_event {
    const char *name; /* SSE "event:" (static string) or NULL (OpenAI) */
    char *data;       /* compact JSON text, NUL-terminated, len bytes (owned by the stream) */
    size_t len;
    bool token; /* carries a completion token: pacing (token_ms) applies before it */
} ah_mock_event_t;

typedef struct ah_mock_stream {
    ah_mock_event_t *ev;
    size_t n;
} ah_mock_stream_t;

/**
 * The chat.completion.chunk events for reply, in order: a role chunk, content
 * chunks of 4 characters (one token each) or tool call chunks (name, then
 * arguments 4 characters at a time), a chunk with finish_reason, and - when
 * include_usage - a usage chunk with choices [] (earlier chunks then carry
 * "usage": null, as OpenAI's do). The "[DONE]" sentinel is not included: the
 * transport sends it. Fills *out (free with ah_mock_stream_free). 0 or -ENOMEM.
 */
int ah_mock_chat_chunks(const ah_mock_reply_t *r, const char *model, long long created,
                        bool include_usage, ah_mock_stream_t *out);

/**
 * An OpenAI embeddings answer for req ("input": a string, an array of strings,
 * an array of token ids or an array of such arrays; "dimensions" 1..4096,
 * default 16; "encoding_format" "float" or "base64"). Vectors are unit length
 * and depend only on the input and dimensions. Returns a new reference, or
 * NULL with err filled (bad input) or empty (ENOMEM).
 */
json_t *ah_mock_embeddings(const json_t *req, const char *model, ah_buf_t *err);

/* ---- Anthropic output ---- */

/**
 * The Anthropic message object for reply (id "msg_mock_<digest>", content
 * blocks text / tool_use, stop_reason end_turn / tool_use / max_tokens, usage
 * input_tokens / output_tokens). New reference, or NULL on ENOMEM.
 */
json_t *ah_mock_message(const ah_mock_reply_t *r, const char *model);

/**
 * The Anthropic streaming events for reply: message_start, ping, for each
 * block content_block_start, content_block_delta (text_delta of 4 characters,
 * or input_json_delta), content_block_stop, then message_delta (stop_reason,
 * usage.output_tokens) and message_stop. Each event has its name. 0 or -ENOMEM.
 */
int ah_mock_message_events(const ah_mock_reply_t *r, const char *model, ah_mock_stream_t *out);

/** The Anthropic error "type" for an HTTP status (rate_limit_error, overloaded_error, ...). */
const char *ah_mock_anthropic_error_type(int status);

/**
 * An Anthropic error body {"type":"error","error":{"type":...,"message":...}}
 * for status. New reference, or NULL on ENOMEM.
 */
json_t *ah_mock_anthropic_error(int status, const char *message);

/** Frees the events; the stream is empty afterwards. */
void ah_mock_stream_free(ah_mock_stream_t *s);

/* ---- process-wide counters (thread-safe; one mutex guards the table) ---- */

/**
 * Counts one request for the exact model string and decides its fault: true
 * when it must fail with opts->status (opts->status set, and fail_times is 0
 * or this is one of the first fail_times requests for that string). Model
 * strings past AH_MOCK_MAX_COUNTERS distinct ones are counted in the totals
 * only (a fail_times fault then always fails).
 */
bool ah_mock_count_request(const char *model, const ah_mock_opts_t *opts);

/** Counts a request whose client went away before the answer ended. */
void ah_mock_count_abort(const char *model);

/**
 * The counters as {"requests":N,"aborted":M,"failed":F,"by_model":{"<model>":
 * {"requests":n,"aborted":m,"failed":f}}}. New reference, or NULL on ENOMEM.
 */
json_t *ah_mock_stats(void);

/** Forgets every counter (tests, shutdown: frees the table). */
void ah_mock_stats_reset(void);

#endif
