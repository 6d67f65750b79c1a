/* tools.c - tool catalogues and executors for runs; see tools.h. */
#include "agents/tools.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents/sandbox.h"
#include "agents/schema.h"
#include "core/log.h"

/* ---- per-worker state: MCP connections ---- */

typedef struct mcp_waiter {
    struct mcp_waiter *next;
    void (*cb)(void *ud, int rc, const char *err);
    void *ud;
} mcp_waiter_t;

typedef struct mcp_conn {
    struct mcp_conn *next;
    char *key; /* url, or the command joined with NUL-safe separators */
    ah_mcp_client_t *client;
    enum { MC_IDLE, MC_CONNECTING, MC_READY } state;
    mcp_waiter_t *waiters;
    ah_tools_worker_t *tw;
} mcp_conn_t;

struct ah_tools_worker {
    ah_loop_t *loop;
    ah_http_client_t *http;
    mcp_conn_t *mcps;
};

ah_tools_worker_t *ah_tools_worker_new(ah_loop_t *loop)
{
    ah_tools_worker_t *tw = calloc(1, sizeof(*tw));
    if (!tw)
        return NULL;
    tw->loop = loop;
    ah_http_client_opts_t o = {.max_connections = 256};
    tw->http = ah_http_client_new(loop, &o);
    if (!tw->http) {
        free(tw);
        return NULL;
    }
    return tw;
}

void ah_tools_worker_free(ah_tools_worker_t *tw)
{
    if (!tw)
        return;
    mcp_conn_t *m = tw->mcps;
    while (m) {
        mcp_conn_t *next = m->next;
        ah_mcp_client_free(m->client);
        mcp_waiter_t *w = m->waiters;
        while (w) {
            mcp_waiter_t *wn = w->next;
            free(w);
            w = wn;
        }
        free(m->key);
        free(m);
        m = next;
    }
    ah_http_client_free(tw->http);
    free(tw);
}

static char *mcp_key(const ah_agent_tool_t *t)
{
    ah_buf_t b;
    ah_buf_init(&b, 0);
    /* One connection per server and call timeout (the client's timeout is per connection). */
    ah_buf_printf(&b, "t=%g;", t->timeout_s);
    if (t->mcp.url) {
        ah_buf_printf(&b, "url:%s", t->mcp.url);
    } else {
        ah_buf_puts(&b, "cmd:");
        for (size_t i = 0; i < t->mcp.n_command; i++)
            ah_buf_printf(&b, "%s\x1f", t->mcp.command[i]);
        for (size_t i = 0; i < t->mcp.n_env; i++)
            ah_buf_printf(&b, "%s=%s\x1e", t->mcp.env[i].key, t->mcp.env[i].value);
    }
    return ah_buf_steal(&b);
}

static mcp_conn_t *mcp_get(ah_tools_worker_t *tw, const ah_agent_tool_t *t)
{
    char *key = mcp_key(t);
    if (!key)
        return NULL;
    for (mcp_conn_t *m = tw->mcps; m; m = m->next) {
        if (strcmp(m->key, key) == 0) {
            free(key);
            return m;
        }
    }
    mcp_conn_t *m = calloc(1, sizeof(*m));
    if (!m) {
        free(key);
        return NULL;
    }
    const char *argv[65];
    size_t na = t->mcp.n_command < 64 ? t->mcp.n_command : 64;
    for (size_t i = 0; i < na; i++)
        argv[i] = t->mcp.command[i];
    argv[na] = NULL;
    char *envs[65];
    size_t ne = t->mcp.n_env < 64 ? t->mcp.n_env : 64;
    for (size_t i = 0; i < ne; i++) {
        ah_buf_t e;
        ah_buf_init(&e, 0);
        ah_buf_printf(&e, "%s=%s", t->mcp.env[i].key, t->mcp.env[i].value);
        envs[i] = ah_buf_steal(&e);
    }
    envs[ne] = NULL;
    ah_mcp_server_opts_t o = {
        .url = t->mcp.url,
        .command = t->mcp.url ? NULL : argv,
        .env = (const char *const *)envs,
        .timeout_s = t->timeout_s,
    };
    int rc = ah_mcp_client_new(tw->loop, tw->http, &o, &m->client);
    for (size_t i = 0; i < ne; i++)
        free(envs[i]);
    if (rc) {
        free(key);
        free(m);
        return NULL;
    }
    m->key = key;
    m->tw = tw;
    m->next = tw->mcps;
    tw->mcps = m;
    return m;
}

static void mcp_connected(void *ud, int rc, const char *err)
{
    mcp_conn_t *m = ud;
    m->state = rc == 0 ? MC_READY : MC_IDLE;
    mcp_waiter_t *w = m->waiters;
    m->waiters = NULL;
    while (w) {
        mcp_waiter_t *next = w->next;
        w->cb(w->ud, rc, err);
        free(w);
        w = next;
    }
}

static bool mcp_ready(mcp_conn_t *m)
{
    if (m->state != MC_READY)
        return false;
    ah_mcp_client_stats_t st;
    ah_mcp_client_stats(m->client, &st);
    return st.ready && !st.tools_stale;
}

/* ---- catalogue ---- */

typedef struct prep {
    ah_tools_worker_t *tw;
    const ah_agent_spec_t *spec;
    ah_tool_catalog_t *cat;
    void (*cb)(void *ud, int rc, const char *err);
    void *ud;
    int waiting;
    int rc;
    char err[512];
} prep_t;

static int add_entry(ah_tool_catalog_t *cat, ah_tool_kind_t kind, const char *name,
                     const char *description, const char *params_json, ah_buf_t *err)
{
    for (size_t i = 0; i < cat->n; i++) {
        if (strcmp(cat->v[i].name, name) == 0) {
            ah_buf_printf(err, "two tools are named \"%s\" (use an mcp prefix: to rename)", name);
            return -EEXIST;
        }
    }
    ah_tool_entry_t *nv = realloc(cat->v, (cat->n + 1) * sizeof(*nv));
    if (!nv)
        return -ENOMEM;
    cat->v = nv;
    ah_tool_entry_t *e = &cat->v[cat->n];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->name = strdup(name);
    json_t *params = params_json ? json_loads(params_json, 0, NULL) : NULL;
    if (!params)
        params = json_pack("{s:s, s:{}}", "type", "object", "properties");
    e->schema = json_incref(params);
    e->def = json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function", "function", "name", name,
                       "description", description ? description : "", "parameters", params);
    cat->n++;
    return e->name && e->def ? 0 : -ENOMEM;
}

static void prep_finish(prep_t *p)
{
    const ah_agent_spec_t *spec = p->spec;
    ah_buf_t err;
    ah_buf_init(&err, 0);
    int rc = p->rc;
    for (size_t i = 0; rc == 0 && i < spec->n_tools; i++) {
        const ah_agent_tool_t *t = &spec->tools[i];
        if (t->type == AH_TOOL_HTTP || t->type == AH_TOOL_EXEC) {
            rc = add_entry(p->cat, t->type == AH_TOOL_HTTP ? AH_TK_HTTP : AH_TK_EXEC, t->name,
                           t->description, t->parameters, &err);
            if (rc == 0)
                p->cat->v[p->cat->n - 1].spec = t;
            continue;
        }
        mcp_conn_t *m = mcp_get(p->tw, t);
        size_t n = 0;
        const ah_mcp_tool_t *mt = m ? ah_mcp_tools(m->client, &n) : NULL;
        for (size_t k = 0; rc == 0 && k < n; k++) {
            if (t->mcp.n_allow && !ah_mcp_tool_allowed(t->mcp.allow, t->mcp.n_allow, mt[k].name))
                continue;
            char name[256];
            snprintf(name, sizeof(name), "%s%s", t->mcp.prefix ? t->mcp.prefix : "", mt[k].name);
            rc = add_entry(p->cat, AH_TK_MCP, name, mt[k].description, mt[k].input_schema_json,
                           &err);
            if (rc == 0) {
                ah_tool_entry_t *e = &p->cat->v[p->cat->n - 1];
                e->spec = t;
                e->mcp = m->client;
                e->remote_name = strdup(mt[k].name);
            }
        }
    }
    for (size_t i = 0; rc == 0 && i < spec->n_handoffs; i++) {
        char name[160], desc[256];
        snprintf(name, sizeof(name), "transfer_to_%s", spec->handoffs[i]);
        snprintf(desc, sizeof(desc),
                 "Hand the conversation over to the agent \"%s\" when it is better suited.",
                 spec->handoffs[i]);
        rc = add_entry(p->cat, AH_TK_HANDOFF, name, desc, NULL, &err);
        if (rc == 0)
            p->cat->v[p->cat->n - 1].handoff = strdup(spec->handoffs[i]);
    }
    if (rc && !err.len)
        ah_buf_puts(&err, p->err[0] ? p->err : "cannot build the tool list");
    p->cb(p->ud, rc, rc ? err.data : NULL);
    ah_buf_free(&err);
    free(p);
}

static void prep_connected(void *ud, int rc, const char *err)
{
    prep_t *p = ud;
    if (rc && p->rc == 0) {
        p->rc = rc;
        snprintf(p->err, sizeof(p->err), "an MCP server could not be reached: %s",
                 err ? err : "connect failed");
    }
    if (--p->waiting == 0)
        prep_finish(p);
}

int ah_tools_prepare(ah_tools_worker_t *tw, const ah_agent_spec_t *spec, ah_tool_catalog_t *cat,
                     void (*cb)(void *ud, int rc, const char *err), void *ud)
{
    prep_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->tw = tw;
    p->spec = spec;
    p->cat = cat;
    p->cb = cb;
    p->ud = ud;
    p->waiting = 1; /* this function's own hold */
    for (size_t i = 0; i < spec->n_tools; i++) {
        const ah_agent_tool_t *t = &spec->tools[i];
        if (t->type != AH_TOOL_MCP)
            continue;
        mcp_conn_t *m = mcp_get(tw, t);
        if (!m) {
            p->rc = -ENOMEM;
            snprintf(p->err, sizeof(p->err), "cannot create an MCP client");
            continue;
        }
        if (mcp_ready(m))
            continue;
        mcp_waiter_t *w = calloc(1, sizeof(*w));
        if (!w) {
            p->rc = -ENOMEM;
            continue;
        }
        w->cb = prep_connected;
        w->ud = p;
        w->next = m->waiters;
        m->waiters = w;
        p->waiting++;
        if (m->state != MC_CONNECTING) {
            m->state = MC_CONNECTING;
            int rc = ah_mcp_connect(m->client, mcp_connected, m);
            if (rc) {
                char e[96];
                snprintf(e, sizeof(e), "cannot connect: %s", strerror(-rc));
                mcp_connected(m, rc, e);
            }
        }
    }
    prep_connected(p, 0, NULL);
    return 0;
}

void ah_tool_catalog_free(ah_tool_catalog_t *cat)
{
    for (size_t i = 0; i < cat->n; i++) {
        ah_tool_entry_t *e = &cat->v[i];
        free(e->name);
        free(e->remote_name);
        free(e->handoff);
        json_decref(e->def);
        json_decref(e->schema);
    }
    free(cat->v);
    cat->v = NULL;
    cat->n = 0;
}

json_t *ah_tool_catalog_defs(const ah_tool_catalog_t *cat)
{
    if (!cat->n)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < cat->n; i++)
        json_array_append(a, cat->v[i].def);
    return a;
}

const ah_tool_entry_t *ah_tool_catalog_find(const ah_tool_catalog_t *cat, const char *name)
{
    for (size_t i = 0; i < cat->n; i++)
        if (strcmp(cat->v[i].name, name) == 0)
            return &cat->v[i];
    return NULL;
}

/* ---- executors ----
 * ah_tool_run answers synchronously (done before it returns, *out NULL) for
 * invalid arguments and tools that cannot start; the caller must be ready. */

struct ah_tool_exec {
    ah_tool_kind_t kind;
    ah_tool_done_fn done;
    void *ud;
    ah_http_call_t *http;
    ah_sandbox_t *sb;
    ah_mcp_call_t *mcall;
    size_t max_bytes;
    ah_buf_t stdin_data;
    char *argv_store[66];
};

static void exec_free(ah_tool_exec_t *x)
{
    ah_buf_free(&x->stdin_data);
    free(x);
}

/* Tool output goes into JSON (events, the conversation): invalid UTF-8 becomes U+FFFD. */
static void utf8_clean(const char *s, size_t n, ah_buf_t *out)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && len == 2 && c < 0xc2)
            ok = false; /* overlong */
        if (ok) {
            ah_buf_append(out, s + i, len);
            i += len;
        } else {
            ah_buf_puts(out, "\xef\xbf\xbd");
            i++;
        }
    }
}

static void finish(ah_tool_exec_t *x, bool is_error, const char *text, size_t n)
{
    ah_tool_done_fn done = x->done;
    void *ud = x->ud;
    exec_free(x);
    ah_buf_t clean;
    ah_buf_init(&clean, 0);
    utf8_clean(text ? text : "", n, &clean);
    done(ud, is_error, clean.data ? clean.data : "", clean.len);
    ah_buf_free(&clean);
}

/* ${NAME} in header values comes from the server's environment (secrets stay out of specs). */
static void expand_env(const char *in, ah_buf_t *out)
{
    const char *p = in;
    while (*p) {
        const char *d = strstr(p, "${");
        const char *e = d ? strchr(d + 2, '}') : NULL;
        if (!d || !e) {
            ah_buf_puts(out, p);
            return;
        }
        ah_buf_append(out, p, (size_t)(d - p));
        char name[128];
        size_t nl = (size_t)(e - d - 2) < sizeof(name) - 1 ? (size_t)(e - d - 2) : sizeof(name) - 1;
        memcpy(name, d + 2, nl);
        name[nl] = '\0';
        const char *v = getenv(name);
        ah_buf_puts(out, v ? v : "");
        p = e + 1;
    }
}

static void url_encode(ah_buf_t *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            ah_buf_putc(out, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            ah_buf_append(out, e, 3);
        }
    }
}

static void value_text(const json_t *v, ah_buf_t *out)
{
    if (json_is_string(v)) {
        ah_buf_puts(out, json_string_value(v));
        return;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s)
        ah_buf_puts(out, s);
    free(s);
}

static void http_done(ah_http_call_t *h, int rc, void *ud)
{
    ah_tool_exec_t *x = ud;
    x->http = NULL;
    char msg[256];
    if (rc) {
        snprintf(msg, sizeof(msg), "the tool's HTTP request failed: %s",
                 rc == -ETIMEDOUT      ? "timed out"
                 : rc == -E2BIG        ? "the response is larger than the tool's max_response_bytes"
                 : rc == -ECONNREFUSED ? "connection refused"
                 : ah_http_call_error(h) ? ah_http_call_error(h)
                                         : "error");
        finish(x, true, msg, strlen(msg));
        return;
    }
    int status = ah_http_call_status(h);
    size_t n = 0;
    const char *body = ah_http_call_body(h, &n);
    if (status >= 400) {
        ah_buf_t b;
        ah_buf_init(&b, 0);
        ah_buf_printf(&b, "HTTP %d: ", status);
        ah_buf_append(&b, body ? body : "", n);
        finish(x, true, b.data, b.len);
        ah_buf_free(&b);
        return;
    }
    finish(x, false, body ? body : "", n);
}

static int run_http(ah_tools_worker_t *tw, ah_tool_exec_t *x, const ah_agent_tool_t *t,
                    json_t *args, const char *idem, const char *request_id)
{
    /* URL template: {name} takes the argument (URL-encoded); the rest go to the query (GET,
     * DELETE) or the JSON body. */
    ah_buf_t url, hb;
    ah_buf_init(&url, 0);
    ah_buf_init(&hb, 0);
    json_t *rest = json_deep_copy(args);
    const char *p = t->http.url;
    while (*p) {
        const char *o = strchr(p, '{');
        const char *c = o ? strchr(o, '}') : NULL;
        if (!o || !c) {
            ah_buf_puts(&url, p);
            break;
        }
        ah_buf_append(&url, p, (size_t)(o - p));
        char name[128];
        size_t nl = (size_t)(c - o - 1) < sizeof(name) - 1 ? (size_t)(c - o - 1) : sizeof(name) - 1;
        memcpy(name, o + 1, nl);
        name[nl] = '\0';
        json_t *v = json_object_get(args, name);
        if (v) {
            ah_buf_t val;
            ah_buf_init(&val, 0);
            value_text(v, &val);
            url_encode(&url, val.data ? val.data : "");
            ah_buf_free(&val);
            json_object_del(rest, name);
        }
        p = c + 1;
    }
    const char *method = t->http.method ? t->http.method : "GET";
    bool body_method = strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0;
    char *body = NULL;
    if (body_method) {
        body = json_dumps(rest, JSON_COMPACT);
    } else if (json_object_size(rest)) {
        ah_buf_putc(&url, strchr(url.data ? url.data : "", '?') ? '&' : '?');
        const char *k;
        json_t *v;
        bool first = true;
        json_object_foreach(rest, k, v)
        {
            if (!first)
                ah_buf_putc(&url, '&');
            first = false;
            url_encode(&url, k);
            ah_buf_putc(&url, '=');
            ah_buf_t val;
            ah_buf_init(&val, 0);
            value_text(v, &val);
            url_encode(&url, val.data ? val.data : "");
            ah_buf_free(&val);
        }
    }
    json_decref(rest);
    /* Headers: the spec's (with ${ENV}), then ours. */
    const char *hdrs[24];
    size_t offs[24];
    size_t nh = 0;
    for (size_t i = 0; i < t->http.n_headers && nh < 16; i++) {
        offs[nh++] = hb.len;
        ah_buf_printf(&hb, "%s: ", t->http.headers[i].key);
        expand_env(t->http.headers[i].value, &hb);
        ah_buf_putc(&hb, '\0');
    }
    offs[nh++] = hb.len;
    ah_buf_printf(&hb, "Idempotency-Key: %s", idem ? idem : "");
    ah_buf_putc(&hb, '\0');
    if (request_id) {
        offs[nh++] = hb.len;
        ah_buf_printf(&hb, "x-request-id: %s", request_id);
        ah_buf_putc(&hb, '\0');
    }
    if (body_method) {
        offs[nh++] = hb.len;
        ah_buf_puts(&hb, "Content-Type: application/json");
        ah_buf_putc(&hb, '\0');
    }
    for (size_t i = 0; i < nh; i++)
        hdrs[i] = hb.data + offs[i];
    hdrs[nh] = NULL;
    ah_http_call_opts_t o = {
        .method = method,
        .url = url.data ? url.data : "",
        .headers = hdrs,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .connect_timeout_s = t->timeout_s,
        .total_timeout_s = t->timeout_s,
        .max_response_bytes = t->http.max_response_bytes ? t->http.max_response_bytes : (1u << 20),
        .on_done = http_done,
        .ud = x,
    };
    int rc = ah_http_call_start(tw->http, &o, &x->http);
    free(body);
    ah_buf_free(&url);
    ah_buf_free(&hb);
    return rc;
}

static void sandbox_done(void *ud, ah_sandbox_result_t *res)
{
    ah_tool_exec_t *x = ud;
    x->sb = NULL;
    ah_buf_t b;
    ah_buf_init(&b, 0);
    bool is_error = res->timed_out || res->exit_code != 0 || res->term_signal;
    ah_buf_append(&b, res->out.data ? res->out.data : "", res->out.len);
    if (res->out_truncated)
        ah_buf_puts(&b, "\n[output truncated]");
    if (is_error && res->err.len) {
        ah_buf_puts(&b, b.len ? "\n[stderr]\n" : "[stderr]\n");
        ah_buf_append(&b, res->err.data, res->err.len);
    }
    if (res->timed_out)
        ah_buf_puts(&b, "\n[the command timed out and was killed]");
    else if (res->limit == AH_SANDBOX_LIMIT_CPU)
        ah_buf_puts(&b, "\n[killed: the CPU time limit (sandbox cpu_s) was reached]");
    else if (res->limit == AH_SANDBOX_LIMIT_FSIZE)
        ah_buf_puts(&b, "\n[killed: a file grew past the sandbox's file size limit]");
    else if (res->term_signal)
        ah_buf_printf(&b, "\n[killed by signal %d]", res->term_signal);
    else if (res->exit_code)
        ah_buf_printf(&b, "\n[exit status %d]", res->exit_code);
    finish(x, is_error, b.data ? b.data : "", b.len);
    ah_buf_free(&b);
}

static int run_exec(ah_tools_worker_t *tw, ah_tool_exec_t *x, const ah_agent_tool_t *t,
                    json_t *args, const char *args_json)
{
    const ah_agent_sandbox_t *s = &t->exec.sandbox;
    if (!s->none && !ah_sandbox_available()) {
        const char *m = "this tool runs in a sandbox, and the sandbox does not work on this "
                        "server (see the startup warning); it refuses to run unsandboxed unless "
                        "the agent says `sandbox: none`";
        finish(x, true, m, strlen(m));
        return 1; /* answered already */
    }
    /* stdin: a single string argument (code, input...) as it is, else the JSON arguments. */
    const char *key;
    json_t *v;
    const char *single = NULL;
    json_object_foreach(args, key, v)
    {
        single = json_object_size(args) == 1 && json_is_string(v) ? json_string_value(v) : NULL;
    }
    ah_buf_puts(&x->stdin_data, single ? single : args_json);
    const char *argv[65];
    size_t na = t->exec.n_command < 64 ? t->exec.n_command : 64;
    for (size_t i = 0; i < na; i++)
        argv[i] = t->exec.command[i];
    argv[na] = NULL;
    ah_sandbox_opts_t o = {
        .none = s->none,
        .network = s->network,
        .memory_mb = s->memory_mb > 0 ? (unsigned)s->memory_mb : 256,
        .cpu_s = s->cpu_s > 0 ? s->cpu_s : 10,
        .nproc = 64,
        .fsize_mb = 64,
        .nofile = 256,
        .timeout_s = s->timeout_s > 0 ? s->timeout_s : 30,
        .max_output_bytes = s->max_output_bytes ? s->max_output_bytes : (1u << 20),
        .workspace_mb = 64,
    };
    return ah_sandbox_run(tw->loop, &o, argv, x->stdin_data.data, x->stdin_data.len, sandbox_done,
                          x, &x->sb);
}

static void mcp_done(void *ud, int rc, bool is_error, const char *text, size_t n)
{
    ah_tool_exec_t *x = ud;
    x->mcall = NULL;
    if (rc) {
        char m[200];
        snprintf(m, sizeof(m), "the MCP tool call failed: %s%s",
                 rc == -ETIMEDOUT ? "timed out"
                 : rc == -EPIPE   ? "the MCP server exited"
                                  : "error",
                 text && n ? "" : "");
        ah_buf_t b;
        ah_buf_init(&b, 0);
        ah_buf_puts(&b, m);
        if (text && n) {
            ah_buf_puts(&b, ": ");
            ah_buf_append(&b, text, n);
        }
        finish(x, true, b.data, b.len);
        ah_buf_free(&b);
        return;
    }
    finish(x, is_error, text ? text : "", n);
}

int ah_tool_run(ah_tools_worker_t *tw, const ah_tool_entry_t *entry, const char *args_json,
                const char *idem, const char *request_id, ah_tool_done_fn done, void *ud,
                ah_tool_exec_t **out)
{
    ah_tool_exec_t *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->kind = entry->kind;
    x->done = done;
    x->ud = ud;
    ah_buf_init(&x->stdin_data, 0);
    *out = x;
    json_error_t jerr;
    json_t *args = json_loads(args_json && *args_json ? args_json : "{}", 0, &jerr);
    ah_buf_t err;
    ah_buf_init(&err, 0);
    if (!args || !json_is_object(args)) {
        ah_buf_printf(&err, "invalid arguments: %s",
                      args ? "the arguments must be a JSON object" : jerr.text);
    } else if (entry->schema && ah_schema_validate(entry->schema, args, &err) != 0) {
        ah_buf_t m;
        ah_buf_init(&m, 0);
        ah_buf_printf(&m, "invalid arguments (fix them and call again): %s", err.data);
        ah_buf_free(&err);
        err = m;
    }
    if (err.len) {
        *out = NULL;
        json_decref(args);
        finish(x, true, err.data, err.len);
        ah_buf_free(&err);
        return 0;
    }
    int rc = 0;
    switch (entry->kind) {
    case AH_TK_HTTP:
        rc = run_http(tw, x, entry->spec, args, idem, request_id);
        break;
    case AH_TK_EXEC:
        rc = run_exec(tw, x, entry->spec, args, args_json);
        break;
    case AH_TK_MCP:
        rc = ah_mcp_call(entry->mcp, entry->remote_name, args_json, mcp_done, x, &x->mcall);
        break;
    default:
        rc = -EINVAL;
    }
    json_decref(args);
    if (rc == 1) {
        *out = NULL;
        return 0;
    }
    if (rc) {
        *out = NULL;
        char m[128];
        snprintf(m, sizeof(m), "the tool could not be started: %s", strerror(-rc));
        finish(x, true, m, strlen(m));
    }
    return 0;
}

void ah_tool_cancel(ah_tool_exec_t *x)
{
    if (!x)
        return;
    if (x->http)
        ah_http_call_cancel(x->http);
    if (x->sb)
        ah_sandbox_cancel(x->sb);
    if (x->mcall)
        ah_mcp_call_cancel(x->mcall);
    exec_free(x);
}
