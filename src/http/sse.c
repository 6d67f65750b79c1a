/* sse.c - Server-Sent Events formatting; see sse.h. */
#include "http/sse.h"

#include <errno.h>
#include <string.h>

int ah_sse_start(ah_http_req_t *r)
{
    ah_http_req_add_header(r, "Cache-Control", "no-cache");
    ah_http_req_add_header(r, "X-Accel-Buffering", "no");
    return ah_http_stream_start(r, 200, "text/event-stream");
}

int ah_sse_format(ah_buf_t *out, const char *event, const char *id, const char *data, size_t n)
{
    int rc = 0;
    if (event) {
        rc |= ah_buf_puts(out, "event: ");
        rc |= ah_buf_puts(out, event);
        rc |= ah_buf_putc(out, '\n');
    }
    if (id) {
        rc |= ah_buf_puts(out, "id: ");
        rc |= ah_buf_puts(out, id);
        rc |= ah_buf_putc(out, '\n');
    }
    /* Each line of data gets its own "data:" field; CR, LF and CRLF all end a line. */
    size_t i = 0;
    do {
        size_t s = i;
        while (i < n && data[i] != '\n' && data[i] != '\r')
            i++;
        rc |= ah_buf_puts(out, "data: ");
        rc |= ah_buf_append(out, data + s, i - s);
        rc |= ah_buf_putc(out, '\n');
        if (i < n && data[i] == '\r' && i + 1 < n && data[i + 1] == '\n')
            i++;
        if (i < n)
            i++;
        else
            break;
    } while (1);
    rc |= ah_buf_putc(out, '\n');
    return rc ? -ENOMEM : 0;
}

int ah_sse_send(ah_http_req_t *r, const char *event, const char *id, const char *data, size_t n)
{
    ah_buf_t b;
    ah_buf_init(&b, 0);
    int rc = ah_sse_format(&b, event, id, data, n);
    if (rc == 0)
        rc = ah_http_stream_write(r, b.data, b.len);
    ah_buf_free(&b);
    return rc;
}

int ah_sse_comment(ah_http_req_t *r, const char *text)
{
    ah_buf_t b;
    ah_buf_init(&b, 0);
    int rc = ah_buf_printf(&b, ": %s\n\n", text);
    if (rc == 0)
        rc = ah_http_stream_write(r, b.data, b.len);
    ah_buf_free(&b);
    return rc;
}
