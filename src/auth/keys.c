/* keys.c - API key format, hashing, roles and the key store jobs; see keys.h. */
#include "auth/keys.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "store/audit.h"

_Static_assert(sizeof(((ah_key_rec_t *)0)->hash) == 65, "hash is 64 hex chars + NUL");
_Static_assert(sizeof(((ah_key_rec_t *)0)->prefix) > AH_KEY_SHOW_LEN, "prefix fits");
_Static_assert(sizeof(((ah_key_rec_t *)0)->created_by) > AH_KEYS_ACTOR_MAX, "actor fits");

static const char *const role_names[] = {"none", "viewer", "user", "developer", "admin"};

int ah_role_parse(const char *s, ah_role_t *out)
{
    if (!s)
        return -EINVAL;
    for (int r = AH_ROLE_VIEWER; r <= AH_ROLE_ADMIN; r++) {
        if (strcmp(s, role_names[r]) == 0) {
            *out = (ah_role_t)r;
            return 0;
        }
    }
    return -EINVAL;
}

const char *ah_role_name(ah_role_t r)
{
    if ((int)r < AH_ROLE_VIEWER || (int)r > AH_ROLE_ADMIN)
        return role_names[0];
    return role_names[r];
}

bool ah_role_allows(ah_role_t have, ah_role_t need)
{
    /* An out-of-range value (corrupt record, uninitialised principal) allows nothing. */
    if ((int)have < AH_ROLE_VIEWER || (int)have > AH_ROLE_ADMIN)
        return false;
    if ((int)need < AH_ROLE_VIEWER || (int)need > AH_ROLE_ADMIN)
        return false;
    return have >= need;
}

int ah_key_name_check(const char *name)
{
    if (!name)
        return -EINVAL;
    size_t n = strnlen(name, AH_KEY_NAME_MAX + 1);
    if (n == 0 || n > AH_KEY_NAME_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c > 0x7e)
            return -EINVAL;
    }
    return 0;
}

int ah_key_tenant_check(const char *tenant)
{
    if (!tenant)
        return -EINVAL;
    size_t n = strnlen(tenant, AH_KEY_TENANT_MAX + 1);
    if (n == 0 || n > AH_KEY_TENANT_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = tenant[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return -EINVAL;
    }
    return 0;
}

static bool is_base62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool ah_key_format_ok(const char *tok, size_t len)
{
    if (!tok || len != AH_KEY_LEN || memcmp(tok, AH_KEY_PREFIX, AH_KEY_PREFIX_LEN) != 0)
        return false;
    for (size_t i = AH_KEY_PREFIX_LEN; i < len; i++) {
        if (!is_base62(tok[i]))
            return false;
    }
    return true;
}

void ah_key_hash_hex(const char *tok, size_t len, char out[65])
{
    ah_sha256_hex(tok, len, out);
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

int ah_key_hash_from_hex(const char *hex, unsigned char out[32])
{
    if (!hex || strnlen(hex, 65) != 64)
        return -EINVAL;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static const char *or_default(const char *s, const char *dflt)
{
    return s && *s ? s : dflt;
}

const char *ah_key_params_error(const char *name, const char *role, const char *tenant,
                                int64_t expires_at, int64_t now_ms)
{
    ah_role_t r;
    if (ah_key_name_check(name) != 0)
        return "name: must be 1-127 printable ASCII characters";
    if (ah_role_parse(or_default(role, AH_KEY_DEFAULT_ROLE), &r) != 0)
        return "role: unknown role (known: admin, developer, user, viewer)";
    if (ah_key_tenant_check(or_default(tenant, AH_KEY_DEFAULT_TENANT)) != 0)
        return "tenant: must be 1-63 characters of A-Z a-z 0-9 . _ -";
    if (expires_at < 0 || (expires_at != 0 && expires_at <= now_ms))
        return "expires_at: must be 0 (never) or a time in the future (ms since the epoch)";
    return NULL;
}

int ah_key_generate(char *key_out, size_t n, ah_key_rec_t *rec_out, const char *name,
                    const char *role, const char *tenant, int64_t expires_at)
{
    ah_role_t r;
    role = or_default(role, AH_KEY_DEFAULT_ROLE);
    tenant = or_default(tenant, AH_KEY_DEFAULT_TENANT);
    if (ah_key_name_check(name) != 0 || ah_role_parse(role, &r) != 0 ||
        ah_key_tenant_check(tenant) != 0 || expires_at < 0)
        return -EINVAL;
    if (!key_out || n < AH_KEY_BUFSZ)
        return -ENOSPC;

    ah_key_rec_t rec;
    memset(&rec, 0, sizeof(rec));
    int rc = ah_id_new(rec.id, sizeof(rec.id), "key", AH_KEY_ID_RANDOM_BYTES);
    if (rc)
        return rc;

    unsigned char raw[AH_KEY_RANDOM_BYTES];
    char key[AH_KEY_BUFSZ];
    rc = ah_random_bytes(raw, sizeof(raw));
    if (rc)
        return rc;
    memcpy(key, AH_KEY_PREFIX, AH_KEY_PREFIX_LEN);
    rc = ah_base62_encode(raw, sizeof(raw), key + AH_KEY_PREFIX_LEN,
                          sizeof(key) - AH_KEY_PREFIX_LEN);
    explicit_bzero(raw, sizeof(raw));
    if (rc != AH_KEY_B62_LEN) {
        explicit_bzero(key, sizeof(key));
        return rc < 0 ? rc : -EIO;
    }

    ah_key_hash_hex(key, AH_KEY_LEN, rec.hash);
    memcpy(rec.prefix, key, AH_KEY_SHOW_LEN);
    rec.prefix[AH_KEY_SHOW_LEN] = '\0';
    /* Lengths were checked above, so these copies cannot truncate. */
    memcpy(rec.name, name, strlen(name) + 1);
    memcpy(rec.role, ah_role_name(r), strlen(ah_role_name(r)) + 1);
    memcpy(rec.tenant, tenant, strlen(tenant) + 1);
    rec.created_at = rec.updated_at = ah_wall_ms();
    rec.expires_at = expires_at;

    memcpy(key_out, key, AH_KEY_BUFSZ);
    explicit_bzero(key, sizeof(key));
    *rec_out = rec;
    return 0;
}

/* Copies s (NULL = "") into out of size outsz; -EINVAL when it does not fit. */
static int copy_in(char *out, size_t outsz, const char *s)
{
    s = s ? s : "";
    size_t n = strnlen(s, outsz);
    if (n >= outsz)
        return -EINVAL;
    memcpy(out, s, n + 1);
    return 0;
}

int ah_keys_create_prepare(ah_keys_create_arg_t *a, const char *name, const char *role,
                           const char *tenant, int64_t expires_at, const char *actor,
                           const char *request_id)
{
    memset(a, 0, sizeof(*a));
    a->error = ah_key_params_error(name, role, tenant, expires_at, ah_wall_ms());
    if (a->error)
        return -EINVAL;
    if (copy_in(a->actor, sizeof(a->actor), actor) != 0) {
        a->error = "actor: too long";
        return -EINVAL;
    }
    if (copy_in(a->request_id, sizeof(a->request_id), request_id) != 0) {
        a->error = "request id: too long";
        return -EINVAL;
    }
    int rc = ah_key_generate(a->key, sizeof(a->key), &a->rec, name, role, tenant, expires_at);
    if (rc) {
        a->error = "could not generate a key";
        return rc;
    }
    memcpy(a->rec.created_by, a->actor, strlen(a->actor) + 1);
    return 0;
}

/* {"name":...,"role":...,"tenant":...,"prefix":...,"expires_at":N} for the audit row. */
static int audit_detail(ah_buf_t *b, const ah_key_rec_t *k)
{
    int rc = ah_buf_puts(b, "{\"name\":\"");
    rc = rc ? rc : ah_buf_json_escape(b, k->name, strlen(k->name));
    rc = rc ? rc : ah_buf_puts(b, "\",\"role\":\"");
    rc = rc ? rc : ah_buf_json_escape(b, k->role, strlen(k->role));
    rc = rc ? rc : ah_buf_puts(b, "\",\"tenant\":\"");
    rc = rc ? rc : ah_buf_json_escape(b, k->tenant, strlen(k->tenant));
    rc = rc ? rc : ah_buf_puts(b, "\",\"prefix\":\"");
    rc = rc ? rc : ah_buf_json_escape(b, k->prefix, strlen(k->prefix));
    rc = rc ? rc : ah_buf_printf(b, "\",\"expires_at\":%lld}", (long long)k->expires_at);
    return rc;
}

int ah_keys_create_work(ah_db_t *db, void *arg)
{
    ah_keys_create_arg_t *a = arg;
    int rc = ah_store_key_insert(db, &a->rec);
    if (rc)
        return rc;
    ah_buf_t detail = AH_BUF_INIT;
    rc = audit_detail(&detail, &a->rec);
    if (rc == 0)
        rc = ah_store_audit_insert(db, a->actor, "key.create", a->rec.id, detail.data,
                                   a->request_id);
    ah_buf_free(&detail);
    return rc;
}

int ah_keys_create(ah_store_t *s, const char *name, const char *role, const char *tenant,
                   int64_t expires_at, const char *actor, const char *request_id, char *key_out,
                   size_t key_out_n, ah_key_rec_t *rec_out)
{
    if (!key_out || key_out_n < AH_KEY_BUFSZ)
        return -ENOSPC;
    ah_keys_create_arg_t *a = malloc(sizeof(*a));
    if (!a)
        return -ENOMEM;
    int rc = ah_keys_create_prepare(a, name, role, tenant, expires_at, actor, request_id);
    if (rc == 0)
        rc = ah_store_call(s, AH_STORE_WRITE, ah_keys_create_work, a);
    if (rc == 0) {
        memcpy(key_out, a->key, AH_KEY_BUFSZ);
        if (rec_out)
            *rec_out = a->rec;
    }
    explicit_bzero(a, sizeof(*a));
    free(a);
    return rc;
}

int ah_keys_revoke_prepare(ah_keys_revoke_arg_t *a, const char *id, const char *actor,
                           const char *request_id)
{
    memset(a, 0, sizeof(*a));
    if (!id || !*id || copy_in(a->id, sizeof(a->id), id) != 0)
        return -EINVAL;
    if (copy_in(a->actor, sizeof(a->actor), actor) != 0 ||
        copy_in(a->request_id, sizeof(a->request_id), request_id) != 0)
        return -EINVAL;
    a->now_ms = ah_wall_ms();
    return 0;
}

int ah_keys_revoke_work(ah_db_t *db, void *arg)
{
    ah_keys_revoke_arg_t *a = arg;
    int rc = ah_store_key_get(db, a->id, &a->rec);
    if (rc)
        return rc;
    if (a->rec.revoked_at != 0)
        return -EALREADY;
    rc = ah_store_key_revoke(db, a->id, a->now_ms);
    if (rc)
        return rc;
    rc = ah_store_key_get(db, a->id, &a->rec);
    if (rc)
        return rc;
    ah_buf_t detail = AH_BUF_INIT;
    rc = audit_detail(&detail, &a->rec);
    if (rc == 0)
        rc = ah_store_audit_insert(db, a->actor, "key.revoke", a->id, detail.data, a->request_id);
    ah_buf_free(&detail);
    return rc;
}

int ah_keys_revoke(ah_store_t *s, const char *id, const char *actor, const char *request_id,
                   ah_key_rec_t *rec_out)
{
    ah_keys_revoke_arg_t a;
    int rc = ah_keys_revoke_prepare(&a, id, actor, request_id);
    if (rc)
        return rc;
    rc = ah_store_call(s, AH_STORE_WRITE, ah_keys_revoke_work, &a);
    if ((rc == 0 || rc == -EALREADY) && rec_out)
        *rec_out = a.rec;
    return rc;
}

static int list_cb(void *ud, const ah_key_rec_t *k)
{
    ah_keys_list_arg_t *a = ud;
    if (k->revoked_at != 0 && !a->include_revoked)
        return 0;
    if (a->n == a->cap) {
        if (a->cap >= AH_KEYS_LIST_MAX)
            return -E2BIG;
        size_t cap = a->cap ? a->cap * 2 : 16;
        if (cap > AH_KEYS_LIST_MAX)
            cap = AH_KEYS_LIST_MAX;
        ah_key_rec_t *p = realloc(a->recs, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        a->recs = p;
        a->cap = cap;
    }
    a->recs[a->n++] = *k;
    return 0;
}

static int by_created(const void *x, const void *y)
{
    const ah_key_rec_t *a = x, *b = y;
    if (a->created_at != b->created_at)
        return a->created_at < b->created_at ? -1 : 1;
    return strcmp(a->id, b->id);
}

int ah_keys_list_work(ah_db_t *db, void *arg)
{
    ah_keys_list_arg_t *a = arg;
    a->recs = NULL;
    a->n = a->cap = 0;
    /* updated_at is always > 0, so -1 reads every key. */
    int rc = ah_store_key_list(db, -1, list_cb, a);
    if (rc) {
        ah_keys_list_free(a);
        return rc;
    }
    if (a->n > 1)
        qsort(a->recs, a->n, sizeof(*a->recs), by_created);
    return 0;
}

void ah_keys_list_free(ah_keys_list_arg_t *a)
{
    free(a->recs);
    a->recs = NULL;
    a->n = a->cap = 0;
}

int ah_keys_list(ah_store_t *s, bool include_revoked, ah_key_rec_t **out, size_t *n)
{
    ah_keys_list_arg_t a = {.include_revoked = include_revoked};
    int rc = ah_store_call(s, AH_STORE_READ, ah_keys_list_work, &a);
    if (rc) {
        ah_keys_list_free(&a);
        return rc;
    }
    *out = a.recs;
    *n = a.n;
    return 0;
}
