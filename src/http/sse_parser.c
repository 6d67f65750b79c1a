/*
 * sse_parser.c - incremental Server-Sent Events parser; see sse_parser.h.
 *
 * Lines are found with memchr (vectorised in libc) instead of a per-byte
 * state machine. A complete line is interpreted straight from the caller's
 * buffer; only the unfinished tail of a feed is copied (into p->line), so
 * in the usual case (whole events per read) no byte is copied twice except
 * data values, which are gathered into the reused data buffer.
 */
#include "http/sse_parser.h"

#include <errno.h>
#include <string.h>

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

void ah_sse_parser_init(ah_sse_parser_t *p, size_t max_event_bytes)
{
    if (max_event_bytes == 0)
        max_event_bytes = AH_SSE_DEFAULT_MAX_EVENT_BYTES;
    p->max_event_bytes = max_event_bytes;
    ah_buf_init(&p->line, max_event_bytes + AH_SSE_LINE_SLACK);
    /* +1: every data value is stored with its LF; the last LF is dropped at dispatch. */
    ah_buf_init(&p->data, max_event_bytes + 1);
    ah_buf_init(&p->event, max_event_bytes);
    ah_buf_init(&p->id, max_event_bytes);
    p->retry_ms = -1;
    p->err = 0;
    p->bom_seen = 0;
    p->started = false;
    p->skip_lf = false;
}

void ah_sse_parser_free(ah_sse_parser_t *p)
{
    ah_buf_free(&p->line);
    ah_buf_free(&p->data);
    ah_buf_free(&p->event);
    ah_buf_free(&p->id);
}

const char *ah_sse_parser_last_id(const ah_sse_parser_t *p)
{
    return p->id.len ? p->id.data : "";
}

bool ah_sse_parser_pending(const ah_sse_parser_t *p)
{
    return p->line.len || p->data.len || p->event.len || (!p->started && p->bom_seen);
}

/* HTML 9.2.6 "dispatch the event". */
static int dispatch(ah_sse_parser_t *p, ah_sse_event_cb on_event, void *ud)
{
    /* Step 1 (last event ID string := buffer) is implicit: the callback reads p->id. */
    if (p->data.len == 0) {
        ah_buf_reset(&p->event);
        return 0;
    }
    /* Every value was stored followed by LF, so the last byte is always the LF to drop. */
    p->data.len--;
    p->data.data[p->data.len] = '\0';
    const char *type = p->event.len ? p->event.data : "message";
    int rc = on_event(ud, type, p->data.data, p->data.len, ah_sse_parser_last_id(p));
    ah_buf_reset(&p->data);
    ah_buf_reset(&p->event);
    return rc;
}

static void set_retry(ah_sse_parser_t *p, const char *v, size_t n)
{
    if (n == 0)
        return;
    int64_t ms = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return; /* "only ASCII digits", else the field is ignored */
        if (ms < INT64_MAX / 10 - 9)
            ms = ms * 10 + (v[i] - '0');
    }
    p->retry_ms = ms;
}

/* Interprets one line (without its end-of-line), HTML 9.2.6. */
static int process_line(ah_sse_parser_t *p, const char *s, size_t len, ah_sse_event_cb on_event,
                        void *ud)
{
    if (len == 0)
        return dispatch(p, on_event, ud);
    if (s[0] == ':')
        return 0; /* comment */
    const char *colon = memchr(s, ':', len);
    size_t name_len = len;
    const char *val = "";
    size_t val_len = 0;
    if (colon) {
        name_len = (size_t)(colon - s);
        val = colon + 1;
        val_len = len - name_len - 1;
        if (val_len && val[0] == ' ') { /* only one space is stripped */
            val++;
            val_len--;
        }
    }
    int rc = 0;
    switch (name_len) {
    case 4:
        if (memcmp(s, "data", 4) == 0) {
            ah_buf_t *d = &p->data;
            if ((rc = ah_buf_reserve(d, val_len + 1)))
                return rc;
            memcpy(d->data + d->len, val, val_len);
            d->len += val_len;
            d->data[d->len++] = '\n';
            d->data[d->len] = '\0';
        }
        break;
    case 5:
        if (memcmp(s, "event", 5) == 0) {
            ah_buf_reset(&p->event);
            rc = ah_buf_append(&p->event, val, val_len);
        } else if (memcmp(s, "retry", 5) == 0) {
            set_retry(p, val, val_len);
        }
        break;
    case 2:
        /* An id containing NUL is ignored (it could not round-trip as a header). */
        if (memcmp(s, "id", 2) == 0 && !memchr(val, '\0', val_len)) {
            ah_buf_reset(&p->id);
            rc = ah_buf_append(&p->id, val, val_len);
        }
        break;
    default:
        break; /* unknown fields are ignored */
    }
    return rc;
}

/* Splits buf into lines (CRLF, LF or CR) and interprets them. */
static int feed_lines(ah_sse_parser_t *p, const char *buf, size_t n, ah_sse_event_cb on_event,
                      void *ud)
{
    size_t i = 0;
    if (n == 0)
        return 0;
    if (p->skip_lf) {
        /* The previous feed ended with CR; an LF now is the second half of that CRLF. */
        p->skip_lf = false;
        if (buf[0] == '\n')
            i = 1;
    }
    const size_t line_max = p->max_event_bytes + AH_SSE_LINE_SLACK;
    /* Position of the next LF at or after i (n when none). Cached so that a
     * stream using bare CR does not rescan the rest of the buffer per line. */
    size_t lf = 0;
    bool lf_known = false;
    while (i < n) {
        if (!lf_known || lf < i) {
            const char *q = memchr(buf + i, '\n', n - i);
            lf = q ? (size_t)(q - buf) : n;
            lf_known = true;
        }
        const char *cr = memchr(buf + i, '\r', lf - i);
        size_t end = cr ? (size_t)(cr - buf) : lf;
        if (end == n) /* unfinished line: keep it for the next feed */
            return ah_buf_append(&p->line, buf + i, n - i);
        const char *s = buf + i;
        size_t len = end - i;
        int rc;
        if (p->line.len) {
            if ((rc = ah_buf_append(&p->line, s, len)))
                return rc;
            s = p->line.data;
            len = p->line.len;
        } else if (len > line_max) {
            return -E2BIG; /* same bound as the buffered path, so splits do not matter */
        }
        rc = process_line(p, s, len, on_event, ud);
        ah_buf_reset(&p->line);
        if (rc)
            return rc;
        i = end + 1;
        if (buf[end] == '\r') {
            if (i < n) {
                if (buf[i] == '\n')
                    i++;
            } else {
                p->skip_lf = true;
            }
        }
    }
    return 0;
}

int ah_sse_parser_feed(ah_sse_parser_t *p, const char *buf, size_t n, ah_sse_event_cb on_event,
                       void *ud)
{
    if (p->err)
        return p->err;
    int rc = 0;
    if (!p->started) {
        /* The UTF-8 decode step drops one leading BOM; it may arrive split across feeds. */
        size_t k = 0;
        while (k < n && p->bom_seen < 3 && (unsigned char)buf[k] == utf8_bom[p->bom_seen]) {
            p->bom_seen++;
            k++;
        }
        if (p->bom_seen == 3) {
            p->started = true;
        } else if (k == n) {
            return 0; /* still a possible BOM prefix: wait for more bytes */
        } else {
            /* Not a BOM after all: the bytes matched so far are ordinary stream bytes. */
            p->started = true;
            rc = feed_lines(p, (const char *)utf8_bom, p->bom_seen, on_event, ud);
        }
        buf += k;
        n -= k;
    }
    if (!rc)
        rc = feed_lines(p, buf, n, on_event, ud);
    p->err = rc;
    return rc;
}
