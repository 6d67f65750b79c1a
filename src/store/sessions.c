/*
 * sessions.c - conversation memory across runs; see sessions.h. Portable SQL
 * only.
 *
 * Concurrency: the writer connection runs jobs one at a time, but with
 * PostgreSQL several replicas write at once, so every change of who holds a
 * session is a compare-and-set on active_run_id (the UPDATE names the holder
 * it saw, and 0 rows changed means someone else got there first), and the
 * INSERT of a new session runs in its own savepoint (a unique violation
 * would otherwise abort the whole batch's transaction on PostgreSQL).
 */
#include "store/sessions.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/runs.h"

#define PURGE_LIMIT_MAX 10000

/*
 * -EBUSY means "a run holds the session" in this module's results, so a
 * database that was busy (locked) is reported as -EAGAIN instead.
 */
static int db_rc(int rc)
{
    return rc == -EBUSY ? -EAGAIN : rc;
}

static int query(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, ah_db_row_fn cb,
                 void *ud)
{
    return db_rc(ah_db_query(db, sql, args, nargs, cb, ud));
}

static int query_int(ah_db_t *db, const char *sql, const ah_db_val_t *args, int nargs, int64_t *out)
{
    return db_rc(ah_db_query_int(db, sql, args, nargs, out));
}

/* ---- message rules (pure) ---- */

static const char *role_of(json_t *m)
{
    const char *r = json_string_value(json_object_get(m, "role"));
    return r ? r : "";
}

static bool is_system(json_t *m)
{
    const char *r = role_of(m);
    return strcmp(r, "system") == 0 || strcmp(r, "developer") == 0;
}

static size_t leading_system(json_t *msgs)
{
    size_t n = 0;
    while (n < json_array_size(msgs) && is_system(json_array_get(msgs, n)))
        n++;
    return n;
}

static json_t *tool_calls_of(json_t *m)
{
    json_t *tc = json_object_get(m, "tool_calls");
    if (strcmp(role_of(m), "assistant") != 0 || !json_is_array(tc) || json_array_size(tc) == 0)
        return NULL;
    return tc;
}

/* True when some call of tc has the id of tool message t. */
static bool answers(json_t *tc, json_t *t)
{
    const char *id = json_string_value(json_object_get(t, "tool_call_id"));
    if (!id)
        return false;
    size_t i;
    json_t *c;
    json_array_foreach(tc, i, c)
    {
        const char *cid = json_string_value(json_object_get(c, "id"));
        if (cid && strcmp(cid, id) == 0)
            return true;
    }
    return false;
}

/* True when every call of tc is answered by one of msgs[from..to). */
static bool complete(json_t *tc, json_t *msgs, size_t from, size_t to)
{
    size_t i;
    json_t *c;
    json_array_foreach(tc, i, c)
    {
        const char *cid = json_string_value(json_object_get(c, "id"));
        if (!cid)
            return false;
        bool found = false;
        for (size_t k = from; k < to && !found; k++) {
            const char *id =
                json_string_value(json_object_get(json_array_get(msgs, k), "tool_call_id"));
            found = id && strcmp(id, cid) == 0;
        }
        if (!found)
            return false;
    }
    return true;
}

/*
 * Appends to out the messages of in[from..) that form whole units: a tool
 * exchange only when complete, a tool message only inside its exchange.
 * 0 or -ENOMEM.
 */
static int append_units(json_t *out, json_t *in, size_t from)
{
    size_t n = json_array_size(in);
    size_t i = from;
    while (i < n) {
        json_t *m = json_array_get(in, i);
        json_t *tc = tool_calls_of(m);
        if (!tc) {
            /* A tool message outside an exchange answers nothing: dropped. */
            if (strcmp(role_of(m), "tool") != 0 && json_array_append(out, m) != 0)
                return -ENOMEM;
            i++;
            continue;
        }
        size_t end = i + 1;
        while (end < n && strcmp(role_of(json_array_get(in, end)), "tool") == 0)
            end++;
        if (complete(tc, in, i + 1, end)) {
            if (json_array_append(out, m) != 0)
                return -ENOMEM;
            for (size_t k = i + 1; k < end; k++) {
                json_t *t = json_array_get(in, k);
                if (answers(tc, t) && json_array_append(out, t) != 0)
                    return -ENOMEM;
            }
        }
        i = end;
    }
    return 0;
}

/* Every element is an object with a string role. */
static bool messages_ok(json_t *msgs)
{
    if (!json_is_array(msgs))
        return false;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
            return false;
    }
    return true;
}

json_t *ah_session_merge(json_t *history, json_t *input)
{
    if (!json_is_array(history) || !json_is_array(input))
        return NULL;
    json_t *out = json_array();
    if (!out)
        return NULL;
    size_t hs = leading_system(history), is = leading_system(input);
    /* The system prompt: the input's when it brings one, else the session's. */
    json_t *sys = is ? input : history;
    size_t ns = is ? is : hs;
    int rc = 0;
    for (size_t i = 0; i < ns && rc == 0; i++)
        rc = json_array_append(out, json_array_get(sys, i)) ? -ENOMEM : 0;
    /* History and input as one sequence, so an exchange may span both. */
    json_t *rest = json_array();
    if (!rest)
        rc = -ENOMEM;
    for (size_t i = hs; i < json_array_size(history) && rc == 0; i++)
        rc = json_array_append(rest, json_array_get(history, i)) ? -ENOMEM : 0;
    for (size_t i = is; i < json_array_size(input) && rc == 0; i++)
        rc = json_array_append(rest, json_array_get(input, i)) ? -ENOMEM : 0;
    if (rc == 0)
        rc = append_units(out, rest, 0);
    json_decref(rest);
    if (rc) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Bytes of m as compact JSON. */
static size_t json_size(json_t *m)
{
    return json_dumpb(m, NULL, 0, JSON_COMPACT);
}

int ah_session_trim(json_t *messages, int max_messages, size_t max_bytes)
{
    if (!json_is_array(messages))
        return -EINVAL;
    if (max_messages <= 0)
        max_messages = AH_SESSION_MAX_MESSAGES_DEFAULT;
    if (max_bytes == 0)
        max_bytes = AH_SESSION_MAX_BYTES;
    size_t before = json_array_size(messages);
    size_t ns = leading_system(messages);
    json_t *units = json_array(); /* the normalised rest */
    if (!units || append_units(units, messages, ns) != 0) {
        json_decref(units);
        return -ENOMEM;
    }
    size_t n = json_array_size(units);
    /* Count and bytes of everything kept if we cut before unit start `cut`. */
    size_t total = ns + n;
    size_t bytes = 2; /* [] */
    for (size_t i = 0; i < ns; i++)
        bytes += json_size(json_array_get(messages, i)) + 1;
    for (size_t i = 0; i < n; i++)
        bytes += json_size(json_array_get(units, i)) + 1;
    size_t cut = 0;
    while (cut < n && (total > (size_t)max_messages || bytes > max_bytes)) {
        /* Drop one unit: the message, plus its tool results for an exchange. */
        size_t end = cut + 1;
        if (tool_calls_of(json_array_get(units, cut)))
            while (end < n && strcmp(role_of(json_array_get(units, end)), "tool") == 0)
                end++;
        for (size_t k = cut; k < end; k++)
            bytes -= json_size(json_array_get(units, k)) + 1;
        total -= end - cut;
        cut = end;
    }
    /* Providers want the history to open with a user message: drop up to the next one. */
    if (cut > 0 && cut < n && strcmp(role_of(json_array_get(units, cut)), "user") != 0) {
        size_t u = cut;
        while (u < n && strcmp(role_of(json_array_get(units, u)), "user") != 0)
            u++;
        if (u < n)
            cut = u;
    }
    json_t *kept = json_array();
    int rc = kept ? 0 : -ENOMEM;
    for (size_t i = 0; i < ns && rc == 0; i++)
        rc = json_array_append(kept, json_array_get(messages, i)) ? -ENOMEM : 0;
    for (size_t i = cut; i < n && rc == 0; i++)
        rc = json_array_append(kept, json_array_get(units, i)) ? -ENOMEM : 0;
    if (rc == 0 && (json_array_clear(messages) != 0 || json_array_extend(messages, kept) != 0))
        rc = -ENOMEM;
    json_decref(kept);
    json_decref(units);
    if (rc)
        return rc;
    return (int)(before - json_array_size(messages));
}

/* ---- validation ---- */

bool ah_session_id_valid(const char *id)
{
    if (!id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= AH_SESSION_ID_MAX)
            return false;
    }
    return n > 0;
}

static bool run_id_ok(const char *id)
{
    return id && *id && strlen(id) < 48;
}

static int64_t ttl_ms(double ttl_s)
{
    if (!(ttl_s > 0))
        ttl_s = AH_SESSION_TTL_DEFAULT_S;
    return (int64_t)(ttl_s * 1000.0);
}

/* ---- rows ---- */

#define SESSION_COLS                                                                               \
    "id, key_id, tenant, agent, messages, n_messages, active_run_id, created_at, updated_at, "     \
    "expires_at"
#define SESSION_NCOLS 10

typedef struct {
    ah_session_rec_t *out;
    bool want_messages;
    bool found;
    int rc;
} row_ctx_t;

static int session_row(void *ud, const ah_db_val_t *c, int ncols)
{
    row_ctx_t *x = ud;
    ah_session_rec_t *r = x->out;
    x->found = true;
    if (ncols != SESSION_NCOLS) {
        x->rc = -EIO;
        return 1;
    }
    int big = 0;
    big |= ah_db_val_copy(&c[0], r->id, sizeof(r->id));
    big |= ah_db_val_copy(&c[1], r->key_id, sizeof(r->key_id));
    big |= ah_db_val_copy(&c[2], r->tenant, sizeof(r->tenant));
    big |= ah_db_val_copy(&c[3], r->agent, sizeof(r->agent));
    big |= ah_db_val_copy(&c[6], r->active_run_id, sizeof(r->active_run_id));
    r->n_messages = (int)ah_db_val_int(&c[5]);
    r->created_at = ah_db_val_int(&c[7]);
    r->updated_at = ah_db_val_int(&c[8]);
    r->expires_at = ah_db_val_int(&c[9]);
    if (big) {
        x->rc = -E2BIG;
        return 1;
    }
    if (x->want_messages) {
        const char *s = c[4].type == AH_DB_TEXT || c[4].type == AH_DB_BLOB ? c[4].s : NULL;
        size_t n = s ? c[4].n : 2;
        r->messages = malloc(n + 1);
        if (!r->messages) {
            x->rc = -ENOMEM;
            return 1;
        }
        memcpy(r->messages, s ? s : "[]", n);
        r->messages[n] = '\0';
    }
    return 1;
}

/* Reads the row of id (messages only when asked). 0, -ENOENT, -errno. */
static int read_session(ah_db_t *db, const char *id, bool want_messages, ah_session_rec_t *out)
{
    memset(out, 0, sizeof(*out));
    row_ctx_t x = {out, want_messages, false, 0};
    ah_db_val_t arg = ah_db_text(id);
    int rc = query(db,
                   want_messages ? "SELECT " SESSION_COLS " FROM sessions WHERE id = ?"
                                 : "SELECT id, key_id, tenant, agent, NULL, n_messages, "
                                   "active_run_id, created_at, updated_at, expires_at "
                                   "FROM sessions WHERE id = ?",
                   &arg, 1, session_row, &x);
    if (rc < 0 || x.rc < 0) {
        ah_session_rec_free(out);
        return rc < 0 ? rc : x.rc;
    }
    return x.found ? 0 : -ENOENT;
}

void ah_session_rec_free(ah_session_rec_t *r)
{
    if (!r)
        return;
    free(r->messages);
    r->messages = NULL;
}

typedef struct {
    char status[24];
    int64_t created_at;
    bool found;
} run_status_t;

static int status_row(void *ud, const ah_db_val_t *c, int ncols)
{
    run_status_t *s = ud;
    if (ncols != 2 || ah_db_val_copy(&c[0], s->status, sizeof(s->status)) != 0)
        return -EIO;
    s->created_at = ah_db_val_int(&c[1]);
    s->found = true;
    return 1;
}

static int run_status(ah_db_t *db, const char *run_id, run_status_t *out)
{
    memset(out, 0, sizeof(*out));
    ah_db_val_t arg = ah_db_text(run_id);
    int rc =
        query(db, "SELECT status, created_at FROM runs WHERE id = ?", &arg, 1, status_row, out);
    return rc < 0 ? rc : 0;
}

/*
 * Whether the session's active run still holds it: it is stored and not
 * final, or it is not stored yet but was given the session only just now
 * (its row may commit right after: AH_SESSION_ACQUIRE_GRACE_MS). 1, 0, -errno.
 */
static int holder_live(ah_db_t *db, const ah_session_rec_t *s, int64_t now)
{
    if (!s->active_run_id[0])
        return 0;
    run_status_t st;
    int rc = run_status(db, s->active_run_id, &st);
    if (rc < 0)
        return rc;
    if (st.found)
        return !ah_run_status_final(st.status);
    return s->updated_at > now - AH_SESSION_ACQUIRE_GRACE_MS;
}

/* key_id as stored: NULL is "" (runs without an API key). */
static const char *owner(const char *key_id)
{
    return key_id ? key_id : "";
}

/* 1 when queued runs of the session older than run_id wait for it, 0, -errno. */
static int older_waiting(ah_db_t *db, const char *id, const char *key_id, const char *run_id,
                         int64_t now)
{
    run_status_t me;
    int rc = run_status(db, run_id, &me);
    if (rc < 0)
        return rc;
    int64_t t = me.found ? me.created_at : now;
    ah_db_val_t a[6] = {ah_db_text(id), ah_db_text(owner(key_id)), ah_db_text(run_id), ah_db_int(t),
                        ah_db_int(t),   ah_db_text(run_id)};
    int64_t n = 0;
    rc = query_int(db,
                   "SELECT COUNT(*) FROM runs WHERE session_id = ? AND key_id = ? AND "
                   "status = 'queued' AND id <> ? AND (created_at < ? OR "
                   "(created_at = ? AND id < ?))",
                   a, 6, &n);
    if (rc < 0)
        return rc;
    return n > 0;
}

/* ---- acquire / release ---- */

static char *dup_cstr(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/* Inserts a new session held by run_id. 0, -EBUSY (created meanwhile elsewhere), -errno. */
static int insert_session(ah_db_t *db, const char *id, const char *key_id, const char *tenant,
                          const char *agent, const char *run_id, int64_t now, int64_t expires)
{
    ah_db_val_t a[8] = {
        ah_db_text(id),
        ah_db_text(owner(key_id)),
        ah_db_text(tenant && *tenant ? tenant : "default"),
        ah_db_text(agent),
        ah_db_text(run_id),
        ah_db_int(now),
        ah_db_int(now),
        ah_db_int(expires),
    };
    int rc = db_rc(ah_db_savepoint(db, "ah_session_ins"));
    if (rc < 0)
        return rc;
    rc = query(db,
               "INSERT INTO sessions (id, key_id, tenant, agent, messages, n_messages, "
               "active_run_id, created_at, updated_at, expires_at) "
               "VALUES (?, ?, ?, ?, '[]', 0, ?, ?, ?, ?)",
               a, 8, NULL, NULL);
    if (rc == -EEXIST) {
        /* Another replica created it between our read and this insert: it holds it. */
        int rb = db_rc(ah_db_rollback_to(db, "ah_session_ins"));
        int rl = db_rc(ah_db_release(db, "ah_session_ins"));
        return rb < 0 ? rb : rl < 0 ? rl : -EBUSY;
    }
    if (rc < 0) {
        (void)ah_db_rollback_to(db, "ah_session_ins");
        (void)ah_db_release(db, "ah_session_ins");
        return rc; /* the job fails: its own savepoint undoes the rest */
    }
    return db_rc(ah_db_release(db, "ah_session_ins"));
}

/* The compare-and-set part of an UPDATE: the holder we saw. */
#define CAS_FREE " WHERE id = ? AND active_run_id IS NULL"
#define CAS_HELD " WHERE id = ? AND active_run_id = ?"

int ah_store_session_acquire(ah_db_t *db, const char *id, const char *key_id, const char *tenant,
                             const char *agent, const char *run_id, double ttl_s, int64_t now,
                             char **out_messages_json)
{
    if (out_messages_json)
        *out_messages_json = NULL;
    if (!ah_session_id_valid(id) || !run_id_ok(run_id) || !out_messages_json)
        return -EINVAL;
    if (!agent)
        agent = "";
    int64_t expires = now + ttl_ms(ttl_s);
    ah_session_rec_t s;
    int rc = read_session(db, id, true, &s);
    if (rc == -ENOENT) {
        rc = older_waiting(db, id, key_id, run_id, now);
        if (rc != 0)
            return rc > 0 ? -EBUSY : rc;
        rc = insert_session(db, id, key_id, tenant, agent, run_id, now, expires);
        if (rc < 0)
            return rc;
        *out_messages_json = dup_cstr("[]");
        return *out_messages_json ? 0 : -ENOMEM;
    }
    if (rc < 0)
        return rc;

    bool mine = strcmp(s.active_run_id, run_id) == 0;
    int live = mine ? 0 : holder_live(db, &s, now);
    if (live < 0) {
        rc = live;
        goto out;
    }
    bool expired = !mine && !live && s.expires_at <= now;
    /* Someone else's session, unless it is forgotten: then anyone may start it anew. */
    if (!expired && strcmp(s.key_id, owner(key_id)) != 0) {
        rc = -EACCES;
        goto out;
    }
    if (live) {
        rc = -EBUSY;
        goto out;
    }
    if (!mine) {
        rc = older_waiting(db, id, key_id, run_id, now);
        if (rc != 0) {
            rc = rc > 0 ? -EBUSY : rc;
            goto out;
        }
    }
    bool held = s.active_run_id[0] != '\0';
    ah_db_val_t a[10];
    int n = 0;
    const char *sql;
    if (expired) {
        a[n++] = ah_db_text(owner(key_id));
        a[n++] = ah_db_text(tenant && *tenant ? tenant : "default");
        a[n++] = ah_db_text(agent);
        a[n++] = ah_db_text(run_id);
        a[n++] = ah_db_int(now);
        a[n++] = ah_db_int(now);
        a[n++] = ah_db_int(expires);
        sql = held ? "UPDATE sessions SET key_id = ?, tenant = ?, agent = ?, messages = '[]', "
                     "n_messages = 0, active_run_id = ?, created_at = ?, updated_at = ?, "
                     "expires_at = ?" CAS_HELD
                   : "UPDATE sessions SET key_id = ?, tenant = ?, agent = ?, messages = '[]', "
                     "n_messages = 0, active_run_id = ?, created_at = ?, updated_at = ?, "
                     "expires_at = ?" CAS_FREE;
    } else {
        a[n++] = ah_db_text(agent);
        a[n++] = ah_db_text(run_id);
        a[n++] = ah_db_int(now);
        a[n++] = ah_db_int(expires);
        sql = held ? "UPDATE sessions SET agent = ?, active_run_id = ?, updated_at = ?, "
                     "expires_at = ?" CAS_HELD
                   : "UPDATE sessions SET agent = ?, active_run_id = ?, updated_at = ?, "
                     "expires_at = ?" CAS_FREE;
    }
    a[n++] = ah_db_text(id);
    if (held)
        a[n++] = ah_db_text(s.active_run_id);
    rc = query(db, sql, a, n, NULL, NULL);
    if (rc < 0)
        goto out;
    if (ah_db_changes(db) != 1) {
        rc = -EBUSY; /* taken meanwhile by another replica */
        goto out;
    }
    if (expired) {
        *out_messages_json = dup_cstr("[]");
    } else {
        *out_messages_json = s.messages;
        s.messages = NULL;
    }
    rc = *out_messages_json ? 0 : -ENOMEM;
out:
    ah_session_rec_free(&s);
    return rc;
}

/* Merges new_json into stored_json and trims; *out is the JSON text to store. */
static int merge_trimmed(const char *stored_json, const char *new_json, int max_messages,
                         char **out, int *n_out)
{
    json_t *add = json_loads(new_json, 0, NULL);
    if (!messages_ok(add)) {
        json_decref(add);
        return -EINVAL;
    }
    json_t *hist = json_loads(stored_json ? stored_json : "[]", 0, NULL);
    if (!messages_ok(hist)) {
        /* A stored text we cannot read is lost memory, not a reason to fail every run. */
        json_decref(hist);
        hist = json_array();
    }
    json_t *all = hist ? ah_session_merge(hist, add) : NULL;
    json_decref(hist);
    json_decref(add);
    int rc = all ? ah_session_trim(all, max_messages, 0) : -ENOMEM;
    if (rc >= 0) {
        *n_out = (int)json_array_size(all);
        *out = json_dumps(all, JSON_COMPACT);
        rc = *out ? 0 : -ENOMEM;
    }
    json_decref(all);
    return rc;
}

int ah_store_session_release(ah_db_t *db, const char *id, const char *run_id,
                             const char *new_messages_json, int max_messages, double ttl_s,
                             int64_t now)
{
    if (!ah_session_id_valid(id) || !run_id_ok(run_id))
        return -EINVAL;
    bool add = new_messages_json && *new_messages_json;
    ah_session_rec_t s;
    int rc = read_session(db, id, add, &s);
    if (rc < 0)
        return rc;
    if (strcmp(s.active_run_id, run_id) != 0) {
        ah_session_rec_free(&s);
        return -ESTALE;
    }
    char *text = NULL;
    int n_messages = s.n_messages;
    if (add) {
        rc = merge_trimmed(s.messages, new_messages_json, max_messages, &text, &n_messages);
        if (rc < 0) {
            ah_session_rec_free(&s);
            return rc;
        }
    }
    int64_t held_ttl = s.expires_at - s.updated_at; /* set together by acquire */
    ah_session_rec_free(&s);
    int64_t expires =
        now + (ttl_s == AH_SESSION_TTL_KEEP && held_ttl > 0 ? held_ttl : ttl_ms(ttl_s));
    if (text) {
        ah_db_val_t a[6] = {ah_db_text(text),   ah_db_int(n_messages), ah_db_int(now),
                            ah_db_int(expires), ah_db_text(id),        ah_db_text(run_id)};
        rc = query(db,
                   "UPDATE sessions SET messages = ?, n_messages = ?, active_run_id = NULL, "
                   "updated_at = ?, expires_at = ?" CAS_HELD,
                   a, 6, NULL, NULL);
        free(text);
    } else {
        ah_db_val_t a[4] = {ah_db_int(now), ah_db_int(expires), ah_db_text(id), ah_db_text(run_id)};
        rc = query(db,
                   "UPDATE sessions SET active_run_id = NULL, updated_at = ?, "
                   "expires_at = ?" CAS_HELD,
                   a, 4, NULL, NULL);
    }
    if (rc < 0)
        return rc;
    return ah_db_changes(db) == 1 ? 0 : -ESTALE;
}

/* ---- read, delete, purge ---- */

/* Reads a session the caller may see: -ENOENT when gone or someone else's. *live: held now. */
static int visible_session(ah_db_t *db, const char *id, const char *owner_key_id, int64_t now,
                           bool want_messages, ah_session_rec_t *out, bool *live)
{
    if (!ah_session_id_valid(id))
        return -ENOENT;
    int rc = read_session(db, id, want_messages, out);
    if (rc < 0)
        return rc;
    if (owner_key_id && strcmp(out->key_id, owner_key_id) != 0) {
        ah_session_rec_free(out);
        return -ENOENT;
    }
    rc = holder_live(db, out, now);
    if (rc < 0) {
        ah_session_rec_free(out);
        return rc;
    }
    *live = rc > 0;
    if (!*live && out->expires_at <= now) {
        ah_session_rec_free(out);
        return -ENOENT;
    }
    return 0;
}

int ah_store_session_get(ah_db_t *db, const char *id, const char *owner_key_id, int64_t now,
                         ah_session_rec_t *out)
{
    bool live = false;
    int rc = visible_session(db, id, owner_key_id, now, true, out, &live);
    if (rc < 0)
        return rc;
    if (!live)
        out->active_run_id[0] = '\0';
    return 0;
}

int ah_store_session_delete(ah_db_t *db, const char *id, const char *owner_key_id, int64_t now,
                            char busy_run_id[48])
{
    if (busy_run_id)
        busy_run_id[0] = '\0';
    ah_session_rec_t s;
    bool live = false;
    int rc = visible_session(db, id, owner_key_id, now, false, &s, &live);
    if (rc < 0)
        return rc;
    if (live) {
        if (busy_run_id)
            memcpy(busy_run_id, s.active_run_id, sizeof(s.active_run_id));
        ah_session_rec_free(&s);
        return -EBUSY;
    }
    if (s.active_run_id[0]) {
        ah_db_val_t a[2] = {ah_db_text(id), ah_db_text(s.active_run_id)};
        rc = query(db, "DELETE FROM sessions" CAS_HELD, a, 2, NULL, NULL);
    } else {
        ah_db_val_t a = ah_db_text(id);
        rc = query(db, "DELETE FROM sessions" CAS_FREE, &a, 1, NULL, NULL);
    }
    ah_session_rec_free(&s);
    if (rc < 0)
        return rc;
    return ah_db_changes(db) == 1 ? 0 : -EBUSY; /* acquired meanwhile */
}

int ah_store_sessions_purge_expired(ah_db_t *db, int64_t now, int limit)
{
    if (limit < 1 || limit > PURGE_LIMIT_MAX)
        return -EINVAL;
    /* Held by a live run = the run is stored and not final, or not stored yet but only just
     * acquired (holder_live): those stay. */
    ah_db_val_t a[3] = {ah_db_int(now), ah_db_int(now - AH_SESSION_ACQUIRE_GRACE_MS),
                        ah_db_int(limit)};
    int rc = query(db,
                   "DELETE FROM sessions WHERE id IN (SELECT s.id FROM sessions s "
                   "LEFT JOIN runs r ON r.id = s.active_run_id WHERE s.expires_at <= ? AND "
                   "(s.active_run_id IS NULL OR r.status IN ('completed', 'failed', "
                   "'cancelled', 'expired') OR (r.id IS NULL AND s.updated_at <= ?)) "
                   "ORDER BY s.expires_at LIMIT ?)",
                   a, 3, NULL, NULL);
    if (rc < 0)
        return rc;
    int64_t n = ah_db_changes(db);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

typedef struct {
    char *out;
    bool found;
} next_ctx_t;

static int next_row(void *ud, const ah_db_val_t *c, int ncols)
{
    next_ctx_t *x = ud;
    if (ncols != 1 || ah_db_val_copy(&c[0], x->out, 48) != 0)
        return -EIO;
    x->found = true;
    return 1;
}

int ah_store_session_next_queued(ah_db_t *db, const char *id, char run_id[48])
{
    run_id[0] = '\0';
    if (!ah_session_id_valid(id))
        return -EINVAL;
    next_ctx_t x = {run_id, false};
    ah_db_val_t a = ah_db_text(id);
    int rc = query(db,
                   "SELECT id FROM runs WHERE session_id = ? AND status = 'queued' "
                   "ORDER BY created_at, id LIMIT 1",
                   &a, 1, next_row, &x);
    if (rc < 0)
        return rc;
    return x.found ? 0 : -ENOENT;
}
