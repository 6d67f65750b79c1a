/* log.c - JSON line logger; see log.h. */
#include "core/log.h"

#include "core/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = AH_LOG_INFO;
static _Atomic int g_fd = 2;

static _Thread_local char t_request_id[65];
static _Thread_local char t_run_id[65];
static _Thread_local char t_trace_id[65];

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void ah_log_set_level(ah_log_level_t level)
{
    atomic_store(&g_level, (int)level);
}

ah_log_level_t ah_log_get_level(void)
{
    return (ah_log_level_t)atomic_load(&g_level);
}

bool ah_log_enabled(ah_log_level_t level)
{
    return (int)level >= atomic_load(&g_level);
}

int ah_log_level_parse(const char *s, ah_log_level_t *out)
{
    for (int i = 0; i <= AH_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (ah_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = AH_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

void ah_log_set_fd(int fd)
{
    atomic_store(&g_fd, fd);
}

static void ctx_copy(char *dst, const char *src)
{
    if (!src) {
        dst[0] = '\0';
        return;
    }
    size_t n = strnlen(src, 64);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void ah_log_ctx_set_request(const char *request_id)
{
    ctx_copy(t_request_id, request_id);
}

void ah_log_ctx_set_run(const char *run_id)
{
    ctx_copy(t_run_id, run_id);
}

void ah_log_ctx_set_trace(const char *trace_id)
{
    ctx_copy(t_trace_id, trace_id);
}

void ah_log_ctx_clear(void)
{
    t_request_id[0] = t_run_id[0] = t_trace_id[0] = '\0';
}

bool ah_log_key_is_secret(const char *key)
{
    static const char *const words[] = {"authorization", "api_key", "apikey", "password",
                                        "secret",        "token",   "cookie", "x-api-key"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasestr(key, words[i]))
            return true;
    return false;
}

/* A value that looks like a credential: our keys (ahk_), provider keys (sk-, sk-ant-),
 * or a bearer header value. */
static bool value_is_secret(const char *v)
{
    return strncmp(v, "ahk_", 4) == 0 || strncmp(v, "sk-", 3) == 0 ||
           strncasecmp(v, "bearer ", 7) == 0;
}

static void put_str_field(ah_buf_t *b, const char *key, const char *val)
{
    ah_buf_puts(b, ",\"");
    ah_buf_json_escape(b, key, strlen(key));
    ah_buf_puts(b, "\":\"");
    if (!val)
        val = "";
    if (ah_log_key_is_secret(key) || value_is_secret(val))
        ah_buf_puts(b, "[redacted]");
    else
        ah_buf_json_escape(b, val, strlen(val));
    ah_buf_putc(b, '"');
}

int ah_log_vformat(ah_buf_t *line, ah_log_level_t level, const char *component, const char *msg,
                   va_list ap)
{
    if (level >= AH_LOG_OFF)
        level = AH_LOG_ERROR;
    size_t start = line->len;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[40];
    size_t tl = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tl, sizeof(tbuf) - tl, ".%03ldZ", ts.tv_nsec / 1000000);

    ah_buf_printf(line, "{\"ts\":\"%s\",\"level\":\"%s\"", tbuf, level_names[level]);
    put_str_field(line, "msg", msg);
    if (component)
        put_str_field(line, "component", component);
    if (t_request_id[0])
        put_str_field(line, "request_id", t_request_id);
    if (t_trace_id[0])
        put_str_field(line, "trace_id", t_trace_id);
    if (t_run_id[0])
        put_str_field(line, "run_id", t_run_id);

    for (;;) {
        int type = va_arg(ap, int);
        if (type == AH_LOGF_END)
            break;
        const char *key = va_arg(ap, const char *);
        switch (type) {
        case AH_LOGF_STR:
            put_str_field(line, key, va_arg(ap, const char *));
            break;
        case AH_LOGF_INT:
            ah_buf_printf(line, ",\"%s\":%lld", key, va_arg(ap, long long));
            break;
        case AH_LOGF_DBL:
            ah_buf_printf(line, ",\"%s\":%.6g", key, va_arg(ap, double));
            break;
        case AH_LOGF_BOOL:
            ah_buf_printf(line, ",\"%s\":%s", key, va_arg(ap, int) ? "true" : "false");
            break;
        case AH_LOGF_RAW: {
            const char *raw = va_arg(ap, const char *);
            ah_buf_printf(line, ",\"%s\":%s", key, raw && *raw ? raw : "null");
            break;
        }
        default:
            goto out; /* a malformed call: stop reading varargs */
        }
    }
out:
    if (ah_buf_puts(line, "}\n") != 0) {
        /* Past the buffer's limit: write a marker line rather than a cut JSON object. */
        line->len = start;
        if (ah_buf_printf(line,
                          "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"log line too long\"}\n",
                          tbuf) != 0)
            return -E2BIG;
    }
    return 0;
}

int ah_log_format(ah_buf_t *line, ah_log_level_t level, const char *component, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    int rc = ah_log_vformat(line, level, component, msg, ap);
    va_end(ap);
    return rc;
}

void ah_log_write(const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(atomic_load(&g_fd), p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void ah_log(ah_log_level_t level, const char *component, const char *msg, ...)
{
    if (!ah_log_enabled(level) || level >= AH_LOG_OFF)
        return;
    ah_buf_t line;
    ah_buf_init(&line, 64 * 1024);
    va_list ap;
    va_start(ap, msg);
    int rc = ah_log_vformat(&line, level, component, msg, ap);
    va_end(ap);
    if (rc == 0)
        ah_log_write(line.data, line.len);
    ah_buf_free(&line);
}
