/* resp.c - HTTP/1.1 response head and body framing; see resp.h. */
#include "http/resp.h"

#include <string.h>
#include <strings.h>

/* "HTTP/1.x SSS[ reason]" (RFC 9112 4). */
static int parse_status_line(const char *p, size_t n, ah_http_resp_t *r)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return AH_HTTP_PARSE_BAD;
    int status = 0;
    for (size_t i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return AH_HTTP_PARSE_BAD;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100 || (n > 12 && p[12] != ' '))
        return AH_HTTP_PARSE_BAD;
    r->minor = p[7] - '0';
    r->status = status;
    return 0;
}

/* Is the last coding of a Transfer-Encoding list "chunked"? (RFC 9112 6.3, point 4) */
static bool last_coding_chunked(const char *v, size_t n)
{
    const char *comma = NULL;
    for (size_t i = 0; i < n; i++)
        if (v[i] == ',')
            comma = v + i;
    const char *s = comma ? comma + 1 : v;
    while (s < v + n && (*s == ' ' || *s == '\t'))
        s++;
    return (size_t)(v + n - s) == 7 && strncasecmp(s, "chunked", 7) == 0;
}

typedef struct head_flags {
    bool te, chunked, conn_close, conn_keep;
} head_flags_t;

static int apply_header(ah_http_resp_t *r, const ah_http_header_t *hd, head_flags_t *f)
{
    if (hd->name_len == 14 && strncasecmp(hd->name, "content-length", 14) == 0) {
        int64_t cl;
        if (ah_http_parse_content_length(hd->value, hd->value_len, &cl))
            return AH_HTTP_PARSE_BAD;
        if (r->content_length >= 0 && r->content_length != cl)
            return AH_HTTP_PARSE_BAD; /* which one frames the body? refuse (RFC 9112 6.3) */
        r->content_length = cl;
    } else if (hd->name_len == 17 && strncasecmp(hd->name, "transfer-encoding", 17) == 0) {
        f->te = true;
        f->chunked = last_coding_chunked(hd->value, hd->value_len);
    } else if (hd->name_len == 10 && strncasecmp(hd->name, "connection", 10) == 0) {
        if (ah_http_token_list_has(hd->value, hd->value_len, "close"))
            f->conn_close = true;
        if (ah_http_token_list_has(hd->value, hd->value_len, "keep-alive"))
            f->conn_keep = true;
    }
    return 0;
}

/* Body framing of a final response (RFC 9112 6.3). */
static void set_framing(ah_http_resp_t *r, const head_flags_t *f, bool head_request)
{
    r->keep_alive = r->minor == 1 ? !f->conn_close : (f->conn_keep && !f->conn_close);
    r->done = false;
    if (head_request || r->status == 204 || r->status == 304) {
        r->mode = AH_HTTP_BODY_NONE;
    } else if (f->te) {
        /* Transfer-Encoding overrides Content-Length; one not ending in chunked runs to close. */
        r->content_length = -1;
        if (f->chunked) {
            r->mode = AH_HTTP_BODY_CHUNKED;
            ah_http_chunked_init(&r->ch);
        } else {
            r->mode = AH_HTTP_BODY_CLOSE;
        }
        if (r->minor == 0 || !f->chunked)
            r->keep_alive = false;
    } else if (r->content_length >= 0) {
        r->mode = r->content_length ? AH_HTTP_BODY_LENGTH : AH_HTTP_BODY_NONE;
        r->remaining = (uint64_t)r->content_length;
    } else {
        r->mode = AH_HTTP_BODY_CLOSE;
        r->keep_alive = false;
    }
    if (r->mode == AH_HTTP_BODY_NONE)
        r->done = true;
}

long ah_http_resp_head(ah_http_resp_t *r, const char *buf, size_t len, size_t max,
                       bool head_request, ah_http_resp_header_fn fn, void *ud)
{
    long hlen = ah_http_head_end(buf, len, max);
    if (hlen <= 0)
        return hlen;
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    const char *end = buf + hlen;
    const char *p = buf;
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    const char *next;
    size_t n = ah_http_line(p, end, &next);
    int rc = parse_status_line(p, n, r);
    if (rc)
        return rc;
    if (r->status == 101)
        return AH_HTTP_PARSE_BAD; /* a protocol switch nobody asked for */
    bool interim = r->status < 200;
    head_flags_t f = {0};
    for (p = next; p < end; p = next) {
        n = ah_http_line(p, end, &next);
        if (n == 0)
            break;
        ah_http_header_t hd;
        if ((rc = ah_http_parse_header_line(p, n, &hd)))
            return rc;
        if (interim)
            continue;
        if ((rc = apply_header(r, &hd, &f)))
            return rc;
        if (fn && (rc = fn(ud, hd.name, hd.name_len, hd.value, hd.value_len)))
            return rc;
    }
    if (interim) {
        r->mode = AH_HTTP_BODY_NONE;
        r->done = true;
        return hlen;
    }
    set_framing(r, &f, head_request);
    return hlen;
}

int ah_http_resp_body(ah_http_resp_t *r, char *buf, size_t len, size_t *consumed, size_t *out_len)
{
    *consumed = *out_len = 0;
    if (r->done)
        return 1;
    switch (r->mode) {
    case AH_HTTP_BODY_LENGTH: {
        size_t take = len < r->remaining ? len : (size_t)r->remaining;
        r->remaining -= take;
        *consumed = *out_len = take;
        r->done = r->remaining == 0;
        return r->done;
    }
    case AH_HTTP_BODY_CHUNKED: {
        /* The decoder writes payload at or before where it reads: in place is safe. */
        int rc = ah_http_chunked_decode(&r->ch, buf, len, consumed, buf, out_len);
        if (rc == 1)
            r->done = true;
        return rc;
    }
    case AH_HTTP_BODY_CLOSE:
        *consumed = *out_len = len;
        return 0;
    default:
        r->done = true;
        return 1;
    }
}

bool ah_http_resp_eof(ah_http_resp_t *r)
{
    if (r->mode == AH_HTTP_BODY_CLOSE)
        r->done = true;
    return r->done;
}
