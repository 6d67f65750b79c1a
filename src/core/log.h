/*
 * log.h - structured JSON logging, one object per line on stderr.
 *
 * Every line has ts, level, msg and component, the calling thread's context
 * (request_id, run_id, trace_id when set) and typed fields:
 *
 *   ah_log(AH_LOG_INFO, "http", "listening",
 *          AH_LF_STR("addr", addr), AH_LF_INT("workers", n), AH_LF_END);
 *
 * Field values whose key names a secret (authorization, api_key, password,
 * secret, token, cookie) are written as "[redacted]", and any value that looks
 * like an agenthub or provider key is masked, so a careless call site cannot
 * leak a credential. Each line is written with one write(2); thread-safe.
 */
#ifndef AH_LOG_H
#define AH_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef enum {
    AH_LOG_DEBUG = 0,
    AH_LOG_INFO,
    AH_LOG_WARN,
    AH_LOG_ERROR,
    AH_LOG_OFF
} ah_log_level_t;

enum { AH_LOGF_END = 0, AH_LOGF_STR, AH_LOGF_INT, AH_LOGF_DBL, AH_LOGF_BOOL, AH_LOGF_RAW };

#define AH_LF_STR(k, v)  AH_LOGF_STR, (const char *)(k), (const char *)(v)
#define AH_LF_INT(k, v)  AH_LOGF_INT, (const char *)(k), (long long)(v)
#define AH_LF_DBL(k, v)  AH_LOGF_DBL, (const char *)(k), (double)(v)
#define AH_LF_BOOL(k, v) AH_LOGF_BOOL, (const char *)(k), (int)(v)
/* v must already be valid JSON (an object, array or number). */
#define AH_LF_RAW(k, v) AH_LOGF_RAW, (const char *)(k), (const char *)(v)
#define AH_LF_END       AH_LOGF_END

/** Sets the minimum level written (default info). Thread-safe. */
void ah_log_set_level(ah_log_level_t level);

/** Current minimum level. */
ah_log_level_t ah_log_get_level(void);

/** Parses "debug|info|warn|error|off"; 0 or -EINVAL. */
int ah_log_level_parse(const char *s, ah_log_level_t *out);

/** True when a line at this level would be written (cheap; check before costly fields). */
bool ah_log_enabled(ah_log_level_t level);

/** Redirects output to fd (default 2). For tests. */
void ah_log_set_fd(int fd);

/**
 * Sets the calling thread's context fields, copied into every line it logs.
 * NULL clears a field. Strings are copied (truncated to 64 bytes).
 */
void ah_log_ctx_set_request(const char *request_id);
void ah_log_ctx_set_run(const char *run_id);
void ah_log_ctx_set_trace(const char *trace_id);
void ah_log_ctx_clear(void);

/** Writes one line. The variadic part is AH_LF_* pairs ended by AH_LF_END. */
void ah_log(ah_log_level_t level, const char *component, const char *msg, ...);

/**
 * Formats one line (as ah_log would write it, with the trailing newline) and
 * appends it to line, for callers that batch lines (the HTTP access log).
 * Does not check the level. 0, or -E2BIG/-ENOMEM.
 */
int ah_log_format(ah_buf_t *line, ah_log_level_t level, const char *component, const char *msg,
                  ...);

/** va_list form of ah_log_format. */
int ah_log_vformat(ah_buf_t *line, ah_log_level_t level, const char *component, const char *msg,
                   va_list ap);

/** Writes n bytes of already formatted lines to the log fd (retrying short writes). */
void ah_log_write(const char *p, size_t n);

/** True when a field key names a secret and its value must be redacted. */
bool ah_log_key_is_secret(const char *key);

#endif
