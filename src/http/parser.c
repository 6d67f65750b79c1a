/* parser.c - HTTP/1.1 request head and chunked body parsing; see parser.h. */
#include "http/parser.h"

#include <string.h>
#include <strings.h>

static const char *const method_names[AH_HTTP_METHOD_COUNT] = {"GET",    "HEAD",  "POST",   "PUT",
                                                               "DELETE", "PATCH", "OPTIONS"};

const char *ah_http_method_name(ah_http_method_t m)
{
    return (unsigned)m < AH_HTTP_METHOD_COUNT ? method_names[m] : "?";
}

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr(extra, c) != NULL;
}

long ah_http_head_end(const char *buf, size_t len, size_t max)
{
    size_t lim = len < max ? len : max;
    const char *p = buf;
    const char *end = buf + lim;
    /* Skip leading empty lines (RFC 9112 2.2): they belong to the head. */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    /* The head ends at the first empty line: "\n\n" or "\n\r\n". */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        if (nl + 1 < end && nl[1] == '\n')
            return (long)(nl + 2 - buf);
        if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n')
            return (long)(nl + 3 - buf);
        p = nl + 1;
    }
    return len >= max ? AH_HTTP_PARSE_HEADERS_BIG : 0;
}

size_t ah_http_line(const char *p, const char *end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) {
        *next = end;
        return (size_t)(end - p);
    }
    *next = nl + 1;
    size_t n = (size_t)(nl - p);
    if (n && p[n - 1] == '\r')
        n--;
    return n;
}

static int parse_method(const char *p, size_t n, ah_http_method_t *m)
{
    for (int i = 0; i < AH_HTTP_METHOD_COUNT; i++) {
        if (strlen(method_names[i]) == n && memcmp(p, method_names[i], n) == 0) {
            *m = (ah_http_method_t)i;
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)p[i]))
            return AH_HTTP_PARSE_BAD;
    return AH_HTTP_PARSE_NOT_IMPL;
}

static int parse_request_line(const char *p, size_t n, ah_http_head_t *h)
{
    const char *sp1 = memchr(p, ' ', n);
    if (!sp1 || sp1 == p)
        return AH_HTTP_PARSE_BAD;
    const char *rest = sp1 + 1;
    size_t rn = n - (size_t)(rest - p);
    const char *sp2 = memchr(rest, ' ', rn);
    if (!sp2 || sp2 == rest)
        return AH_HTTP_PARSE_BAD;
    const char *ver = sp2 + 1;
    size_t vn = n - (size_t)(ver - p);
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3); anything else is a bad line. */
    if (vn != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[5] < '0' || ver[5] > '9' || ver[6] != '.' ||
        ver[7] < '0' || ver[7] > '9')
        return AH_HTTP_PARSE_BAD;
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return AH_HTTP_PARSE_VERSION;
    h->minor = ver[7] - '0';

    const char *target = rest;
    size_t tn = (size_t)(sp2 - rest);
    for (size_t i = 0; i < tn; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c >= 0x7f)
            return AH_HTTP_PARSE_BAD;
    }
    int rc = parse_method(p, (size_t)(sp1 - p), &h->method);
    if (rc)
        return rc;
    if (target[0] != '/') {
        if (h->method == AH_HTTP_OPTIONS && tn == 1 && target[0] == '*') {
            h->path = target;
            h->path_len = 1;
            return 0;
        }
        return AH_HTTP_PARSE_BAD; /* absolute-form and authority-form are not served */
    }
    const char *q = memchr(target, '?', tn);
    h->path = target;
    h->path_len = q ? (size_t)(q - target) : tn;
    if (q) {
        h->query = q + 1;
        h->query_len = tn - h->path_len - 1;
    }
    return 0;
}

bool ah_http_token_list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

int ah_http_parse_content_length(const char *v, size_t n, int64_t *out)
{
    if (n == 0 || n > 18)
        return AH_HTTP_PARSE_BAD;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return AH_HTTP_PARSE_BAD;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

static int apply_header(ah_http_head_t *h, const ah_http_header_t *hd, bool *connection_close,
                        bool *connection_keep)
{
    const char *n = hd->name;
    size_t nl = hd->name_len;
    if (nl == 14 && strncasecmp(n, "content-length", 14) == 0) {
        int64_t cl;
        if (ah_http_parse_content_length(hd->value, hd->value_len, &cl))
            return AH_HTTP_PARSE_BAD;
        if (h->content_length >= 0 && h->content_length != cl)
            return AH_HTTP_PARSE_BAD;
        h->content_length = cl;
    } else if (nl == 17 && strncasecmp(n, "transfer-encoding", 17) == 0) {
        if (h->chunked)
            return AH_HTTP_PARSE_BAD;
        if (hd->value_len != 7 || strncasecmp(hd->value, "chunked", 7) != 0)
            return AH_HTTP_PARSE_NOT_IMPL;
        h->chunked = true;
    } else if (nl == 10 && strncasecmp(n, "connection", 10) == 0) {
        if (ah_http_token_list_has(hd->value, hd->value_len, "close"))
            *connection_close = true;
        if (ah_http_token_list_has(hd->value, hd->value_len, "keep-alive"))
            *connection_keep = true;
    } else if (nl == 6 && strncasecmp(n, "expect", 6) == 0) {
        if (hd->value_len == 12 && strncasecmp(hd->value, "100-continue", 12) == 0)
            h->expect_continue = true;
    }
    return 0;
}

int ah_http_parse_header_line(const char *p, size_t n, ah_http_header_t *hd)
{
    if (n == 0 || p[0] == ' ' || p[0] == '\t')
        return AH_HTTP_PARSE_BAD; /* obs-fold (RFC 9112 5.2) */
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return AH_HTTP_PARSE_BAD;
    for (const char *c = p; c < colon; c++)
        if (!is_tchar((unsigned char)*c))
            return AH_HTTP_PARSE_BAD; /* also refuses whitespace before the colon */
    const char *v = colon + 1;
    const char *ve = p + n;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    for (const char *c = v; c < ve; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return AH_HTTP_PARSE_BAD;
    }
    hd->name = p;
    hd->name_len = (size_t)(colon - p);
    hd->value = v;
    hd->value_len = (size_t)(ve - v);
    return 0;
}

int ah_http_parse_head(const char *buf, size_t len, ah_http_head_t *h, size_t max_headers)
{
    ah_http_header_t *hdrs = h->headers;
    memset(h, 0, sizeof(*h));
    h->headers = hdrs;
    h->content_length = -1;

    const char *p = buf;
    const char *end = buf + len;
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    const char *next;
    size_t n = ah_http_line(p, end, &next);
    int rc = parse_request_line(p, n, h);
    if (rc)
        return rc;
    bool conn_close = false, conn_keep = false;
    for (p = next; p < end; p = next) {
        n = ah_http_line(p, end, &next);
        if (n == 0)
            break; /* the empty line */
        if (h->n_headers >= max_headers)
            return AH_HTTP_PARSE_HEADERS_BIG;
        ah_http_header_t *hd = &h->headers[h->n_headers];
        if ((rc = ah_http_parse_header_line(p, n, hd)))
            return rc;
        h->n_headers++;
        if ((rc = apply_header(h, hd, &conn_close, &conn_keep)))
            return rc;
    }
    if (h->chunked && h->content_length >= 0)
        return AH_HTTP_PARSE_BAD; /* RFC 9112 6.1: a smuggling vector, refuse it */
    if (h->chunked && h->minor == 0)
        return AH_HTTP_PARSE_BAD;
    h->keep_alive = h->minor == 1 ? !conn_close : (conn_keep && !conn_close);
    return 0;
}

const char *ah_http_head_get(const ah_http_head_t *h, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->n_headers; i++) {
        const ah_http_header_t *hd = &h->headers[i];
        if (hd->name_len == nl && strncasecmp(hd->name, name, nl) == 0) {
            if (vlen)
                *vlen = hd->value_len;
            return hd->value;
        }
    }
    return NULL;
}

/* Chunked decoder states. */
enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LINE,
    CH_DONE
};

void ah_http_chunked_init(ah_http_chunked_t *d)
{
    d->state = CH_SIZE;
    d->remaining = 0;
    d->digits = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int ah_http_chunked_decode(ah_http_chunked_t *d, const char *in, size_t len, size_t *consumed,
                           char *out, size_t *out_len)
{
    size_t i = 0, o = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        char c = in[i];
        switch (d->state) {
        case CH_SIZE: {
            int v = hexval(c);
            if (v >= 0) {
                if (++d->digits > 15)
                    return AH_HTTP_PARSE_BAD;
                d->remaining = d->remaining * 16 + (uint64_t)v;
                i++;
            } else if (d->digits == 0) {
                return AH_HTTP_PARSE_BAD;
            } else if (c == ';' || c == ' ' || c == '\t') {
                d->state = CH_EXT;
                i++;
            } else if (c == '\r') {
                d->state = CH_SIZE_LF;
                i++;
            } else if (c == '\n') {
                i++;
                d->state = d->remaining ? CH_DATA : CH_TRAILER;
            } else {
                return AH_HTTP_PARSE_BAD;
            }
            break;
        }
        case CH_EXT: /* chunk extensions are ignored */
            if (c == '\n')
                d->state = d->remaining ? CH_DATA : CH_TRAILER;
            else if (c != '\r' && (unsigned char)c < 0x20 && c != '\t')
                return AH_HTTP_PARSE_BAD;
            i++;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return AH_HTTP_PARSE_BAD;
            i++;
            d->state = d->remaining ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t take = len - i;
            if (take > d->remaining)
                take = (size_t)d->remaining;
            memmove(out + o, in + i, take);
            o += take;
            i += take;
            d->remaining -= take;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (c == '\r') {
                d->state = CH_DATA_LF;
                i++;
                break;
            }
            /* A bare LF after the data is accepted too. */
            __attribute__((fallthrough));
        case CH_DATA_LF:
            if (c != '\n')
                return AH_HTTP_PARSE_BAD;
            i++;
            d->state = CH_SIZE;
            d->digits = 0;
            d->remaining = 0;
            break;
        case CH_TRAILER: /* start of a trailer line, or the final empty line */
            if (c == '\r') {
                i++;
            } else if (c == '\n') {
                i++;
                d->state = CH_DONE;
                rc = 1;
            } else {
                d->state = CH_TRAILER_LINE;
            }
            break;
        case CH_TRAILER_LINE:
            if (c == '\n')
                d->state = CH_TRAILER;
            i++;
            break;
        default:
            rc = 1;
            break;
        }
    }
    if (d->state == CH_DONE)
        rc = 1;
    *consumed = i;
    *out_len = o;
    return rc;
}
