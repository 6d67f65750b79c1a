/* jscan.c - validating JSON scanner; see jscan.h. Grammar: RFC 8259 section 2-7. */
#include "core/jscan.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

typedef struct scanner {
    const char *s;
    size_t n, i;
    int depth;
} scanner_t;

static void skip_ws(scanner_t *sc)
{
    while (sc->i < sc->n) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
            return;
        sc->i++;
    }
}

/*
 * Non-zero when one of the 8 bytes in x is a control character, '"', '\\' or
 * >= 0x80 (SWAR: "x - 1 per byte" sets a byte's top bit when it was 0, and a
 * borrow into the next byte only happens from a byte that is itself special).
 */
static inline uint64_t swar_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, top = 0x8080808080808080ull;
    uint64_t quote = x ^ (ones * '"'), bslash = x ^ (ones * '\\');
    return ((x - ones * 0x20) | (quote - ones) | (bslash - ones) | x) & top;
}

static int hexd(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Validates a UTF-8 sequence starting at s[i] (a byte >= 0x80). Returns its length or 0. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t min;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int scan_string(scanner_t *sc)
{
    /* sc->s[sc->i] == '"' */
    sc->i++;
    while (sc->i < sc->n) {
        /* Fast path: plain ASCII run, 8 bytes per step while no byte needs a look. */
        const unsigned char *p = (const unsigned char *)sc->s + sc->i;
        size_t left = sc->n - sc->i, k = 0;
        while (k + 8 <= left) {
            uint64_t x;
            memcpy(&x, p + k, 8);
            if (swar_special(x))
                break;
            k += 8;
        }
        while (k < left && p[k] >= 0x20 && p[k] != '"' && p[k] != '\\' && p[k] < 0x80)
            k++;
        sc->i += k;
        if (sc->i >= sc->n)
            return -EINVAL;
        unsigned char c = (unsigned char)sc->s[sc->i];
        if (c == '"') {
            sc->i++;
            return 0;
        }
        if (c < 0x20)
            return -EINVAL;
        if (c == '\\') {
            if (sc->i + 1 >= sc->n)
                return -EINVAL;
            char e = sc->s[sc->i + 1];
            if (e == 'u') {
                if (sc->i + 6 > sc->n)
                    return -EINVAL;
                for (int h = 2; h < 6; h++)
                    if (hexd(sc->s[sc->i + (size_t)h]) < 0)
                        return -EINVAL;
                sc->i += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                sc->i += 2;
            } else {
                return -EINVAL;
            }
            continue;
        }
        size_t ul = utf8_len((const unsigned char *)sc->s + sc->i, sc->n - sc->i);
        if (!ul)
            return -EINVAL;
        sc->i += ul;
    }
    return -EINVAL;
}

static int scan_number(scanner_t *sc)
{
    size_t i = sc->i;
    const char *s = sc->s;
    size_t n = sc->n;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return -EINVAL;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return -EINVAL;
    }
    if (i < n && s[i] == '.') {
        i++;
        size_t st = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == st)
            return -EINVAL;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t st = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == st)
            return -EINVAL;
    }
    sc->i = i;
    return 0;
}

static int scan_lit(scanner_t *sc, const char *lit)
{
    size_t l = strlen(lit);
    if (sc->n - sc->i < l || memcmp(sc->s + sc->i, lit, l) != 0)
        return -EINVAL;
    sc->i += l;
    return 0;
}

static int scan_value(scanner_t *sc, ah_json_type_t *type);

static int scan_object(scanner_t *sc)
{
    sc->i++; /* '{' */
    skip_ws(sc);
    if (sc->i < sc->n && sc->s[sc->i] == '}') {
        sc->i++;
        return 0;
    }
    for (;;) {
        skip_ws(sc);
        if (sc->i >= sc->n || sc->s[sc->i] != '"' || scan_string(sc))
            return -EINVAL;
        skip_ws(sc);
        if (sc->i >= sc->n || sc->s[sc->i] != ':')
            return -EINVAL;
        sc->i++;
        ah_json_type_t t;
        if (scan_value(sc, &t))
            return -EINVAL;
        skip_ws(sc);
        if (sc->i >= sc->n)
            return -EINVAL;
        if (sc->s[sc->i] == ',') {
            sc->i++;
            continue;
        }
        if (sc->s[sc->i] == '}') {
            sc->i++;
            return 0;
        }
        return -EINVAL;
    }
}

static int scan_array(scanner_t *sc)
{
    sc->i++; /* '[' */
    skip_ws(sc);
    if (sc->i < sc->n && sc->s[sc->i] == ']') {
        sc->i++;
        return 0;
    }
    for (;;) {
        ah_json_type_t t;
        if (scan_value(sc, &t))
            return -EINVAL;
        skip_ws(sc);
        if (sc->i >= sc->n)
            return -EINVAL;
        if (sc->s[sc->i] == ',') {
            sc->i++;
            continue;
        }
        if (sc->s[sc->i] == ']') {
            sc->i++;
            return 0;
        }
        return -EINVAL;
    }
}

static int scan_value(scanner_t *sc, ah_json_type_t *type)
{
    skip_ws(sc);
    if (sc->i >= sc->n)
        return -EINVAL;
    int rc;
    switch (sc->s[sc->i]) {
    case '{':
        if (++sc->depth > AH_JSON_MAX_DEPTH)
            return -EINVAL;
        *type = AH_JSON_OBJECT;
        rc = scan_object(sc);
        sc->depth--;
        return rc;
    case '[':
        if (++sc->depth > AH_JSON_MAX_DEPTH)
            return -EINVAL;
        *type = AH_JSON_ARRAY;
        rc = scan_array(sc);
        sc->depth--;
        return rc;
    case '"':
        *type = AH_JSON_STRING;
        return scan_string(sc);
    case 't':
        *type = AH_JSON_TRUE;
        return scan_lit(sc, "true");
    case 'f':
        *type = AH_JSON_FALSE;
        return scan_lit(sc, "false");
    case 'n':
        *type = AH_JSON_NULL;
        return scan_lit(sc, "null");
    default:
        *type = AH_JSON_NUMBER;
        return scan_number(sc);
    }
}

long ah_json_value(const char *s, size_t n, ah_jspan_t *out)
{
    scanner_t sc = {s, n, 0, 0};
    skip_ws(&sc);
    size_t start = sc.i;
    ah_json_type_t t = AH_JSON_NONE;
    if (scan_value(&sc, &t))
        return -EINVAL;
    if (out) {
        out->p = s + start;
        out->n = sc.i - start;
        out->type = t;
    }
    return (long)sc.i;
}

int ah_json_validate(const char *s, size_t n, size_t *err_off)
{
    scanner_t sc = {s, n, 0, 0};
    ah_json_type_t t;
    int rc = scan_value(&sc, &t);
    if (rc == 0) {
        skip_ws(&sc);
        if (sc.i != n)
            rc = -EINVAL;
    }
    if (rc && err_off)
        *err_off = sc.i;
    return rc;
}

/* The character a one-letter escape (\n, \t, ...) stands for; any other
 * letter stands for itself (\", \\, \/). \u is handled by the callers. */
static char unescape_simple(char e)
{
    switch (e) {
    case 'n':
        return '\n';
    case 't':
        return '\t';
    case 'r':
        return '\r';
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    default:
        return e;
    }
}

/* Compares the raw key span (between quotes) with key, resolving simple escapes. */
static bool key_equals(const char *p, size_t n, const char *key)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++, k++) {
        char c = p[i];
        if (c == '\\') {
            if (i + 1 >= n)
                return false;
            char e = p[++i];
            if (e == 'u') {
                if (i + 4 >= n)
                    return false;
                int v = 0;
                for (int h = 1; h <= 4; h++)
                    v = v * 16 + hexd(p[i + (size_t)h]);
                if (v >= 0x80)
                    return false; /* keys we look up are ASCII */
                c = (char)v;
                i += 4;
            } else {
                c = unescape_simple(e);
            }
        }
        if (key[k] != c)
            return false;
    }
    return key[k] == '\0';
}

int ah_json_member(const ah_jspan_t *obj, const char *key, ah_jspan_t *out)
{
    if (obj->type != AH_JSON_OBJECT)
        return -EINVAL;
    scanner_t sc = {obj->p, obj->n, 1, 1};
    skip_ws(&sc);
    if (sc.i < sc.n && sc.s[sc.i] == '}')
        return -ENOENT;
    for (;;) {
        skip_ws(&sc);
        if (sc.i >= sc.n || sc.s[sc.i] != '"')
            return -EINVAL;
        size_t ks = sc.i + 1;
        if (scan_string(&sc))
            return -EINVAL;
        size_t ke = sc.i - 1;
        skip_ws(&sc);
        if (sc.i >= sc.n || sc.s[sc.i] != ':')
            return -EINVAL;
        sc.i++;
        skip_ws(&sc);
        size_t vs = sc.i;
        ah_json_type_t t;
        if (scan_value(&sc, &t))
            return -EINVAL;
        if (key_equals(sc.s + ks, ke - ks, key)) {
            out->p = sc.s + vs;
            out->n = sc.i - vs;
            out->type = t;
            return 0;
        }
        skip_ws(&sc);
        if (sc.i >= sc.n)
            return -EINVAL;
        if (sc.s[sc.i] == ',') {
            sc.i++;
            continue;
        }
        return sc.s[sc.i] == '}' ? -ENOENT : -EINVAL;
    }
}

int ah_json_path(const ah_jspan_t *obj, const char *path, ah_jspan_t *out)
{
    ah_jspan_t cur = *obj;
    char key[128];
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t kl = dot ? (size_t)(dot - p) : strlen(p);
        if (kl >= sizeof(key))
            return -EINVAL;
        memcpy(key, p, kl);
        key[kl] = '\0';
        ah_jspan_t next;
        int rc = ah_json_member(&cur, key, &next);
        if (rc)
            return rc;
        cur = next;
        p += kl + (dot ? 1 : 0);
    }
    *out = cur;
    return 0;
}

int ah_json_int(const ah_jspan_t *v, int64_t *out)
{
    if (v->type != AH_JSON_NUMBER || v->n == 0 || v->n > 20)
        return -EINVAL;
    size_t i = 0;
    bool neg = v->p[0] == '-';
    if (neg)
        i++;
    if (i >= v->n)
        return -EINVAL;
    /* Accumulate unsigned so 19-digit values past INT64_MAX are refused, not overflowed. */
    const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t x = 0;
    for (; i < v->n; i++) {
        char c = v->p[i];
        if (c < '0' || c > '9')
            return -EINVAL; /* fraction or exponent */
        uint64_t d = (uint64_t)(c - '0');
        if (x > (lim - d) / 10)
            return -EINVAL;
        x = x * 10 + d;
    }
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 0;
}

static int put_utf8(ah_buf_t *out, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return ah_buf_append(out, b, n);
}

int ah_json_str(const ah_jspan_t *v, ah_buf_t *out)
{
    if (v->type != AH_JSON_STRING || v->n < 2)
        return -EINVAL;
    const char *p = v->p + 1;
    size_t n = v->n - 2;
    int rc = ah_buf_reserve(out, n);
    if (rc)
        return rc;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\')
            continue;
        if ((rc = ah_buf_append(out, p + start, i - start)))
            return rc;
        if (i + 1 >= n)
            return -EINVAL;
        char e = p[++i];
        if (e == 'u') {
            if (i + 4 >= n)
                return -EINVAL;
            uint32_t cp = 0;
            for (int h = 1; h <= 4; h++)
                cp = cp * 16 + (uint32_t)hexd(p[i + (size_t)h]);
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && i + 6 < n && p[i + 1] == '\\' && p[i + 2] == 'u') {
                uint32_t lo = 0;
                for (int h = 3; h <= 6; h++)
                    lo = lo * 16 + (uint32_t)hexd(p[i + (size_t)h]);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                cp = 0xfffd; /* a lone surrogate */
            if ((rc = put_utf8(out, cp)))
                return rc;
            start = i + 1;
            continue;
        }
        if ((rc = ah_buf_putc(out, unescape_simple(e))))
            return rc;
        start = i + 1;
    }
    return ah_buf_append(out, p + start, n - start);
}

bool ah_json_str_eq(const ah_jspan_t *v, const char *s)
{
    size_t l = strlen(s);
    return v->type == AH_JSON_STRING && v->n == l + 2 && memcmp(v->p + 1, s, l) == 0;
}

int ah_json_array_each(const ah_jspan_t *v, int (*cb)(void *ud, const ah_jspan_t *elem), void *ud)
{
    if (v->type != AH_JSON_ARRAY)
        return -EINVAL;
    scanner_t sc = {v->p, v->n, 1, 1};
    skip_ws(&sc);
    if (sc.i < sc.n && sc.s[sc.i] == ']')
        return 0;
    for (;;) {
        skip_ws(&sc);
        size_t vs = sc.i;
        ah_jspan_t e;
        if (scan_value(&sc, &e.type))
            return -EINVAL;
        e.p = sc.s + vs;
        e.n = sc.i - vs;
        if (cb) {
            int rc = cb(ud, &e);
            if (rc)
                return rc;
        }
        skip_ws(&sc);
        if (sc.i >= sc.n)
            return -EINVAL;
        if (sc.s[sc.i] == ',') {
            sc.i++;
            continue;
        }
        return sc.s[sc.i] == ']' ? 0 : -EINVAL;
    }
}

static int count_cb(void *ud, const ah_jspan_t *e)
{
    (void)e;
    (*(long *)ud)++;
    return 0;
}

long ah_json_array_len(const ah_jspan_t *v)
{
    long n = 0;
    int rc = ah_json_array_each(v, count_cb, &n);
    return rc ? rc : n;
}

int ah_json_object_scan(const char *s, size_t n, const char *const *keys, size_t nkeys,
                        ah_jspan_t *out, ah_jspan_t *root, size_t *err_off)
{
    for (size_t k = 0; k < nkeys; k++) {
        out[k].p = NULL;
        out[k].n = 0;
        out[k].type = AH_JSON_NONE;
    }
    scanner_t sc = {s, n, 0, 0};
    skip_ws(&sc);
    size_t start = sc.i;
    if (sc.i >= sc.n || sc.s[sc.i] != '{') {
        /* Not an object: still tell invalid JSON from valid non-objects. */
        int rc = ah_json_validate(s, n, err_off);
        return rc ? rc : -EPROTO;
    }
    sc.i++;
    sc.depth = 1;
    skip_ws(&sc);
    if (sc.i < sc.n && sc.s[sc.i] == '}') {
        sc.i++;
        goto done;
    }
    for (;;) {
        skip_ws(&sc);
        if (sc.i >= sc.n || sc.s[sc.i] != '"')
            goto bad;
        size_t ks = sc.i + 1;
        if (scan_string(&sc))
            goto bad;
        size_t ke = sc.i - 1;
        skip_ws(&sc);
        if (sc.i >= sc.n || sc.s[sc.i] != ':')
            goto bad;
        sc.i++;
        skip_ws(&sc);
        size_t vs = sc.i;
        ah_json_type_t t;
        if (scan_value(&sc, &t))
            goto bad;
        for (size_t k = 0; k < nkeys; k++) {
            if (key_equals(sc.s + ks, ke - ks, keys[k])) {
                out[k].p = sc.s + vs;
                out[k].n = sc.i - vs;
                out[k].type = t;
            }
        }
        skip_ws(&sc);
        if (sc.i >= sc.n)
            goto bad;
        if (sc.s[sc.i] == ',') {
            sc.i++;
            continue;
        }
        if (sc.s[sc.i] == '}') {
            sc.i++;
            break;
        }
        goto bad;
    }
done:
    if (root) {
        root->p = s + start;
        root->n = sc.i - start;
        root->type = AH_JSON_OBJECT;
    }
    skip_ws(&sc);
    if (sc.i == n)
        return 0;
bad:
    if (err_off)
        *err_off = sc.i;
    return -EINVAL;
}

bool ah_json_array_empty(const ah_jspan_t *v)
{
    size_t i = 1;
    while (i < v->n && strchr(" \t\r\n", v->p[i]))
        i++;
    return v->type == AH_JSON_ARRAY && i < v->n && v->p[i] == ']';
}
