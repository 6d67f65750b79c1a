/*
 * test_mcp.c - the MCP client (agents/mcp.h) against real MCP servers:
 *
 *   - @modelcontextprotocol/server-everything (npm, tests/integration/node_modules)
 *     over stdio (spawned by the client) and over Streamable HTTP (spawned by
 *     the test on a free loopback port);
 *   - tests/integration/mcp_fixture_server.mjs (built with @modelcontextprotocol/sdk)
 *     over stdio and over HTTP, in SSE and JSON response modes.
 *
 * Covered: handshake and tool listing, calls and result flattening, isError,
 * JSON-RPC errors, timeouts (with notifications/cancelled seen by the server),
 * cancellation, a child killed or crashing mid-call and the respawn after it,
 * bad commands, init timeouts, the restart limit, oversized messages, the
 * scrubbed environment, ping from the server, list_changed, HTTP sessions
 * (id sent back, 404/400 after a server restart -> re-initialise), a server
 * down, freeing a client from its own callback, and no child process left
 * behind. node is found through PATH; without node or the npm packages the
 * server tests are skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agents/mcp.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/client.h"

extern char **environ;

static ah_loop_t *g_loop;
static ah_http_client_t *g_http;
static struct event *g_tick;
static char g_everything[1024]; /* .../server-everything/dist/index.js */
static char g_fixture[1024];    /* .../mcp_fixture_server.mjs */
static char g_node_dir[800];    /* tests/integration: cwd for the node servers */
static bool g_have_node;

/* ---- loop helpers ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until *flag or the deadline; returns *flag. */
static bool run_until(const bool *flag, double max_s)
{
    uint64_t end = ah_mono_ns() + (uint64_t)(max_s * 1e9);
    while (!*flag && ah_mono_ns() < end)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    return *flag;
}

static void run_for(double s)
{
    bool never = false;
    run_until(&never, s);
}

typedef struct res {
    bool done;
    int rc;
    bool is_error;
    char text[65536];
    size_t n;
    int calls;
    ah_mcp_client_t *free_me; /* freed from inside the callback when set */
} res_t;

static void on_call(void *ud, int rc, bool is_error, const char *text, size_t n)
{
    res_t *r = ud;
    r->calls++;
    r->done = true;
    r->rc = rc;
    r->is_error = is_error;
    r->n = n;
    size_t k = n < sizeof(r->text) - 1 ? n : sizeof(r->text) - 1;
    memcpy(r->text, text, k);
    r->text[k] = '\0';
    assert_int_equal(text[n], '\0');
    if (r->free_me)
        ah_mcp_client_free(r->free_me);
}

static void on_connect(void *ud, int rc, const char *err)
{
    res_t *r = ud;
    r->calls++;
    r->done = true;
    r->rc = rc;
    snprintf(r->text, sizeof(r->text), "%s", err);
    if (r->free_me)
        ah_mcp_client_free(r->free_me);
}

static int connect_wait(ah_mcp_client_t *c, res_t *r, double max_s)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(ah_mcp_connect(c, on_connect, r), 0);
    assert_true(run_until(&r->done, max_s));
    if (r->rc && getenv("AH_TEST_VERBOSE"))
        fprintf(stderr, "connect: %d %s\n", r->rc, r->text);
    return r->rc;
}

static void call_wait(ah_mcp_client_t *c, const char *tool, const char *args, res_t *r,
                      double max_s)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(ah_mcp_call(c, tool, args, on_call, r, NULL), 0);
    assert_true(run_until(&r->done, max_s));
}

static bool has_tool(ah_mcp_client_t *c, const char *name)
{
    size_t n;
    const ah_mcp_tool_t *t = ah_mcp_tools(c, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return true;
    return false;
}

static const ah_mcp_tool_t *find_tool(ah_mcp_client_t *c, const char *name)
{
    size_t n;
    const ah_mcp_tool_t *t = ah_mcp_tools(c, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

static ah_mcp_client_t *stdio_client(const char *const *cmd, double timeout_s,
                                     const char *const *env)
{
    ah_mcp_server_opts_t o = {
        .name = "test",
        .command = cmd,
        .env = env,
        .timeout_s = timeout_s,
        .init_timeout_s = 20,
        .kill_grace_s = 1,
    };
    ah_mcp_client_t *c = NULL;
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), 0);
    return c;
}

static ah_mcp_client_t *http_client(const char *url, double timeout_s)
{
    ah_mcp_server_opts_t o = {
        .name = "http", .url = url, .timeout_s = timeout_s, .init_timeout_s = 20};
    ah_mcp_client_t *c = NULL;
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), 0);
    return c;
}

/* The server's counters (fixture "stats" tool), e.g. "cancelled". */
static long fixture_stat(ah_mcp_client_t *c, const char *key)
{
    res_t r;
    call_wait(c, "stats", NULL, &r, 10);
    assert_int_equal(r.rc, 0);
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(r.text, pat);
    assert_non_null(p);
    return strtol(p + strlen(pat), NULL, 10);
}

/* ---- servers started by the test (HTTP) ---- */

typedef struct server {
    pid_t pid;
    int port;
    char url[128];
} server_t;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts node with argv in its own process group, output to /dev/null, and waits for the port. */
static void server_start(server_t *s, const char *const *argv, int port)
{
    s->port = port;
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d/mcp", port);
    char penv[32];
    snprintf(penv, sizeof(penv), "PORT=%d", port);
    char *envp[256];
    size_t k = 0;
    for (char **e = environ; *e && k < 250; e++)
        if (strncmp(*e, "PORT=", 5) != 0)
            envp[k++] = *e;
    envp[k++] = penv;
    envp[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    const char *elog = getenv("AH_TEST_MCP_SERVER_LOG");
    posix_spawn_file_actions_addopen(&fa, 2, elog ? elog : "/dev/null",
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    assert_int_equal(posix_spawnp(&s->pid, argv[0], &fa, &at, (char *const *)argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    uint64_t end = ah_mono_ns() + 15000000000ull;
    while (!port_open(port)) {
        assert_true(ah_mono_ns() < end);
        usleep(20000);
    }
}

static void server_stop(server_t *s)
{
    if (s->pid <= 0)
        return;
    kill(-s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while (port_open(s->port) && ah_mono_ns() < end)
        usleep(10000);
}

static void everything_http_start(server_t *s, int port)
{
    const char *argv[] = {"node", g_everything, "streamableHttp", NULL};
    server_start(s, argv, port);
}

static void fixture_http_start(server_t *s, int port, bool json)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {"node", g_fixture, "--port", p, json ? "--json" : NULL, NULL};
    server_start(s, argv, port);
}

/* Processes whose parent is us (zombies included). */
static int count_children(void)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[k] = '\0';
        const char *rp = strrchr(buf, ')'); /* comm may contain spaces */
        char state;
        long ppid;
        if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)getpid()) {
            fprintf(stderr, "child left: pid %ld state %c\n", pid, state);
            n++;
        }
    }
    closedir(d);
    return n;
}

static bool wait_no_children(double max_s)
{
    uint64_t end = ah_mono_ns() + (uint64_t)(max_s * 1e9);
    while (ah_mono_ns() < end) {
        run_for(0.02);
        DIR *d = opendir("/proc");
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            char path[300], buf[512];
            snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            size_t k = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[k] = '\0';
            const char *rp = strrchr(buf, ')');
            char state;
            long ppid;
            if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)getpid())
                n++;
        }
        closedir(d);
        if (n == 0)
            return true;
    }
    return false;
}

#define NEED_NODE()                                                                                \
    do {                                                                                           \
        if (!g_have_node) {                                                                        \
            fprintf(stderr, "skipped: node or tests/integration/node_modules missing\n");          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- tests without servers ---- */

static void test_tool_allowed(void **st)
{
    (void)st;
    const char *allow[] = {"search_docs", "get_*", "x?"};
    assert_true(ah_mcp_tool_allowed(NULL, 0, "anything"));
    assert_true(ah_mcp_tool_allowed(allow, 0, "anything"));
    assert_true(ah_mcp_tool_allowed(allow, 3, "search_docs"));
    assert_false(ah_mcp_tool_allowed(allow, 3, "search_docs2"));
    assert_false(ah_mcp_tool_allowed(allow, 1, "get_order"));
    assert_true(ah_mcp_tool_allowed(allow, 3, "get_order"));
    assert_true(ah_mcp_tool_allowed(allow, 3, "xy"));
    assert_false(ah_mcp_tool_allowed(allow, 3, "xyz"));
    assert_false(ah_mcp_tool_allowed(allow, 3, "echo"));
    assert_false(ah_mcp_tool_allowed(allow, 3, NULL));
}

static void test_new_invalid(void **st)
{
    (void)st;
    ah_mcp_client_t *c = (ah_mcp_client_t *)1;
    const char *cmd[] = {"node", NULL};
    const char *empty[] = {NULL};
    const char *bad_env[] = {"NOEQUALS", NULL};
    const char *bad_hdr[] = {"X-A: b\r\nX-C: d", NULL};
    ah_mcp_server_opts_t o = {0};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);
    assert_null(c);
    o = (ah_mcp_server_opts_t){.url = "http://x/mcp", .command = cmd};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);
    o = (ah_mcp_server_opts_t){.url = "ftp://x/mcp"};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);
    o = (ah_mcp_server_opts_t){.url = "http://x/mcp"};
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), -EINVAL);
    o = (ah_mcp_server_opts_t){.command = empty};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);
    o = (ah_mcp_server_opts_t){.command = cmd, .env = bad_env};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);
    o = (ah_mcp_server_opts_t){.url = "http://x/mcp", .headers = bad_hdr};
    assert_int_equal(ah_mcp_client_new(g_loop, g_http, &o, &c), -EINVAL);

    /* argument checks of a call, before anything is started */
    o = (ah_mcp_server_opts_t){.command = cmd, .max_pending = 1};
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), 0);
    res_t r = {0};
    assert_int_equal(ah_mcp_call(c, "", NULL, on_call, &r, NULL), -EINVAL);
    assert_int_equal(ah_mcp_call(c, "t", "[1,2]", on_call, &r, NULL), -EINVAL);
    assert_int_equal(ah_mcp_call(c, "t", "{bad", on_call, &r, NULL), -EINVAL);
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.connects, 0);
    assert_int_equal(s.pending, 0);
    ah_mcp_client_free(c);
    ah_mcp_client_free(NULL);

    /* max_pending: calls waiting for a server that never answers count */
    const char *mute[] = {"sh", "-c", "exec sleep 30", NULL};
    o = (ah_mcp_server_opts_t){.command = mute, .max_pending = 2};
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), 0);
    assert_int_equal(ah_mcp_call(c, "t", NULL, on_call, &r, NULL), 0);
    assert_int_equal(ah_mcp_call(c, "t", "{}", on_call, &r, NULL), 0);
    assert_int_equal(ah_mcp_call(c, "t", "{}", on_call, &r, NULL), -EBUSY);
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.pending, 2);
    assert_int_equal(s.connects, 1);
    assert_true(s.pid > 0);
    run_for(0.05);
    ah_mcp_client_free(c); /* pending calls: no callback */
    run_for(0.05);
    assert_int_equal(r.calls, 0);
}

/* ---- stdio ---- */

static void test_stdio_bad_command(void **st)
{
    (void)st;
    res_t r;
    const char *missing[] = {"agenthub-no-such-command-xyz", NULL};
    ah_mcp_client_t *c = stdio_client(missing, 5, NULL);
    assert_int_equal(connect_wait(c, &r, 5), -ENOENT);
    assert_non_null(strstr(r.text, "not found in PATH"));
    assert_non_null(strstr(r.text, "agenthub-no-such-command-xyz"));
    /* a call while in backoff waits, then fails the same way */
    call_wait(c, "echo", NULL, &r, 5);
    assert_int_equal(r.rc, -ENOENT);
    ah_mcp_client_free(c);

    /* a server that exits at once: its status and its last stderr line */
    const char *quits[] = {"sh", "-c", "echo 'fatal: no config' >&2; exit 7", NULL};
    c = stdio_client(quits, 5, NULL);
    assert_int_equal(connect_wait(c, &r, 5), -EPIPE);
    assert_non_null(strstr(r.text, "exited with status 7"));
    assert_non_null(strstr(r.text, "fatal: no config"));
    ah_mcp_client_free(c);

    /* a program that is no MCP server: cat echoes our initialize back */
    const char *cat[] = {"cat", NULL};
    c = stdio_client(cat, 5, NULL);
    assert_int_equal(connect_wait(c, &r, 5), -EPROTO);
    assert_non_null(strstr(r.text, "initialize"));
    ah_mcp_client_free(c);
}

static void test_stdio_init_timeout_and_restart_limit(void **st)
{
    (void)st;
    res_t r;
    const char *silent[] = {"sh", "-c", "echo not json; exec sleep 30", NULL};
    ah_mcp_server_opts_t o = {.command = silent, .init_timeout_s = 0.3, .max_restarts = 2};
    ah_mcp_client_t *c = NULL;
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), 0);
    uint64_t t0 = ah_mono_ns();
    assert_int_equal(connect_wait(c, &r, 5), -ETIMEDOUT);
    assert_true(ah_mono_ns() - t0 < 3000000000ull);
    assert_non_null(strstr(r.text, "did not finish initialize"));
    /* second attempt after the backoff, then the restart limit */
    assert_int_equal(connect_wait(c, &r, 5), -ETIMEDOUT);
    assert_int_equal(connect_wait(c, &r, 5), -EAGAIN);
    assert_non_null(strstr(r.text, "started 2 times"));
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.connects, 2);
    ah_mcp_client_free(c);
}

static void test_stdio_everything(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    setenv("AH_MCP_TEST_SECRET", "must-not-leak", 1);
    const char *cmd[] = {"node", g_everything, "stdio", NULL};
    const char *env[] = {"AH_MCP_EXTRA=configured-value", NULL};
    ah_mcp_client_t *c = stdio_client(cmd, 20, env);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    assert_string_equal(ah_mcp_protocol_version(c), AH_MCP_PROTOCOL_VERSION);
    assert_true(has_tool(c, "echo"));
    assert_true(has_tool(c, "get-sum"));
    assert_true(has_tool(c, "trigger-long-running-operation"));
    const ah_mcp_tool_t *echo = find_tool(c, "echo");
    assert_non_null(strstr(echo->description, "Echo"));
    assert_non_null(strstr(echo->input_schema_json, "\"message\""));
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_true(s.ready);
    assert_true(s.pid > 0);
    int pid1 = s.pid;

    call_wait(c, "echo", "{\"message\":\"hello \\u00e9\\n\"}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_false(r.is_error);
    assert_string_equal(r.text, "Echo: hello \xc3\xa9\n");

    call_wait(c, "get-sum", "{\"a\":2,\"b\":3}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.text, "is 5"));

    /* tool errors: unknown tool and invalid arguments come back as isError results */
    call_wait(c, "no-such-tool", "{}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_true(r.is_error);
    assert_non_null(strstr(r.text, "no-such-tool"));
    call_wait(c, "get-sum", "{\"a\":\"x\"}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_true(r.is_error);

    /* non-text content becomes a one-line JSON description */
    call_wait(c, "get-tiny-image", NULL, &r, 10);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.text, "{\"type\":\"image\",\"mimeType\":\"image/png\",\"bytes\":"));

    /* the environment is scrubbed, configured entries are added */
    call_wait(c, "get-env", NULL, &r, 10);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.text, "configured-value"));
    assert_null(strstr(r.text, "must-not-leak"));
    assert_non_null(strstr(r.text, "\"PATH\""));

    /* the server dies mid-call: the call fails clearly, the next call respawns it */
    res_t slow = {0};
    assert_int_equal(ah_mcp_call(c, "trigger-long-running-operation",
                                 "{\"duration\":10,\"steps\":10}", on_call, &slow, NULL),
                     0);
    run_for(0.3);
    assert_false(slow.done);
    assert_int_equal(kill(pid1, SIGKILL), 0);
    assert_true(run_until(&slow.done, 5));
    assert_int_equal(slow.rc, -EPIPE);
    assert_non_null(strstr(slow.text, "killed by signal 9"));
    ah_mcp_client_stats(c, &s);
    assert_false(s.ready);
    assert_int_equal(s.pid, 0);
    assert_int_equal(s.exits, 1);

    call_wait(c, "echo", "{\"message\":\"again\"}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "Echo: again");
    ah_mcp_client_stats(c, &s);
    assert_true(s.pid > 0 && s.pid != pid1);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.calls_failed, 1);
    ah_mcp_client_free(c);
    unsetenv("AH_MCP_TEST_SECRET");
}

static void test_stdio_timeout(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    const char *cmd[] = {"node", g_everything, "stdio", NULL};
    ah_mcp_client_t *c = stdio_client(cmd, 0.5, NULL);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    uint64_t t0 = ah_mono_ns();
    call_wait(c, "trigger-long-running-operation", "{\"duration\":5,\"steps\":5}", &r, 5);
    uint64_t took = ah_mono_ns() - t0;
    assert_int_equal(r.rc, -ETIMEDOUT);
    assert_non_null(strstr(r.text, "no answer within 0.5 s"));
    assert_true(took >= 400000000ull && took < 3000000000ull);
    /* the server is still fine */
    call_wait(c, "echo", "{\"message\":\"ok\"}", &r, 5);
    assert_int_equal(r.rc, 0);
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.connects, 1);
    ah_mcp_client_free(c);
}

static void test_stdio_fixture(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    const char *cmd[] = {"node", g_fixture, "--stdio", NULL};
    ah_mcp_server_opts_t o = {.name = "fixture",
                              .command = cmd,
                              .timeout_s = 10,
                              .init_timeout_s = 20,
                              .max_message_bytes = 65536};
    ah_mcp_client_t *c = NULL;
    assert_int_equal(ah_mcp_client_new(g_loop, NULL, &o, &c), 0);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    size_t n;
    ah_mcp_tools(c, &n);
    assert_int_equal(n, 9);

    call_wait(c, "add", "{\"a\":2,\"b\":3}", &r, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "5");

    call_wait(c, "rpc_error", NULL, &r, 5);
    assert_int_equal(r.rc, -EREMOTEIO);
    assert_string_equal(r.text, "MCP error -32042: fixture wants a JSON-RPC error");

    call_wait(c, "mixed", NULL, &r, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text,
                        "first\n{\"type\":\"image\",\"mimeType\":\"image/png\",\"bytes\":12}"
                        "\nresource text");

    call_wait(c, "fail", "{\"message\":\"boom\"}", &r, 5);
    assert_int_equal(r.rc, 0);
    assert_true(r.is_error);
    assert_string_equal(r.text, "boom");

    /* the server pings us in the middle of a call and says its tool list changed */
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_false(s.tools_stale);
    call_wait(c, "ping_client", NULL, &r, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "client answered ping");
    ah_mcp_client_stats(c, &s);
    assert_true(s.tools_stale);
    assert_int_equal(connect_wait(c, &r, 5), 0); /* refresh */
    ah_mcp_client_stats(c, &s);
    assert_false(s.tools_stale);

    /* a timeout sends notifications/cancelled: the server's handler is aborted */
    ah_mcp_client_t *ct = stdio_client(cmd, 1.0, NULL);
    assert_int_equal(connect_wait(ct, &r, 20), 0);
    call_wait(ct, "slow", "{\"ms\":5000}", &r, 5);
    assert_int_equal(r.rc, -ETIMEDOUT);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    long cancelled;
    while ((cancelled = fixture_stat(ct, "cancelled")) < 1 && ah_mono_ns() < end)
        run_for(0.05);
    assert_int_equal(cancelled, 1);
    ah_mcp_client_free(ct);

    /* cancel: no callback, the server hears about it */
    res_t cr = {0};
    ah_mcp_call_t *call = NULL;
    assert_int_equal(ah_mcp_call(c, "slow", "{\"ms\":5000}", on_call, &cr, &call), 0);
    run_for(0.1);
    ah_mcp_call_cancel(call);
    end = ah_mono_ns() + 5000000000ull;
    while ((cancelled = fixture_stat(c, "cancelled")) < 1 && ah_mono_ns() < end)
        run_for(0.05);
    assert_int_equal(cancelled, 1);
    assert_false(cr.done);

    /* an answer over max_message_bytes: the call fails, the server is replaced */
    ah_mcp_client_stats(c, &s);
    int pid1 = s.pid;
    call_wait(c, "big", "{\"bytes\":100000}", &r, 5);
    assert_int_equal(r.rc, -E2BIG);
    assert_non_null(strstr(r.text, "over 65536 bytes"));
    call_wait(c, "big", "{\"bytes\":1000}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 1000);
    ah_mcp_client_stats(c, &s);
    assert_true(s.pid != pid1);

    /*
     * A crash mid-call, with other calls in flight: all fail with the exit
     * status; another client of the same server program is not affected.
     */
    const char *cmd2[] = {"node", g_fixture, "--stdio", NULL};
    ah_mcp_client_t *c2 = stdio_client(cmd2, 10, NULL);
    assert_int_equal(connect_wait(c2, &r, 20), 0);
    res_t other = {0}, bystander = {0};
    assert_int_equal(ah_mcp_call(c, "slow", "{\"ms\":400}", on_call, &other, NULL), 0);
    assert_int_equal(ah_mcp_call(c2, "slow", "{\"ms\":300}", on_call, &bystander, NULL), 0);
    call_wait(c, "crash", "{\"code\":3}", &r, 5);
    assert_int_equal(r.rc, -EPIPE);
    assert_non_null(strstr(r.text, "exited with status 3"));
    assert_non_null(strstr(r.text, "crashing with code 3"));
    assert_true(run_until(&other.done, 5));
    assert_int_equal(other.rc, -EPIPE);
    assert_true(run_until(&bystander.done, 5));
    assert_int_equal(bystander.rc, 0);
    assert_non_null(strstr(bystander.text, "slept"));
    ah_mcp_client_free(c2);
    call_wait(c, "add", "{\"a\":1,\"b\":1}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "2");
    ah_mcp_client_free(c);
}

/* Freeing the client from inside its own callbacks, with more calls pending. */
static void test_free_from_callback(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    const char *cmd[] = {"node", g_fixture, "--stdio", NULL};
    ah_mcp_client_t *c = stdio_client(cmd, 10, NULL);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    res_t a = {0}, b = {0};
    a.free_me = c;
    assert_int_equal(ah_mcp_call(c, "add", "{\"a\":1,\"b\":2}", on_call, &a, NULL), 0);
    assert_int_equal(ah_mcp_call(c, "slow", "{\"ms\":2000}", on_call, &b, NULL), 0);
    assert_true(run_until(&a.done, 5));
    assert_string_equal(a.text, "3");
    run_for(0.2);
    assert_false(b.done); /* freed: no callback */

    /* and from a connect callback */
    c = stdio_client(cmd, 10, NULL);
    memset(&r, 0, sizeof(r));
    r.free_me = c;
    assert_int_equal(ah_mcp_connect(c, on_connect, &r), 0);
    memset(&b, 0, sizeof(b));
    assert_int_equal(ah_mcp_call(c, "add", "{\"a\":1,\"b\":2}", on_call, &b, NULL), 0);
    assert_true(run_until(&r.done, 20));
    assert_int_equal(r.rc, 0);
    run_for(0.2);
    assert_int_equal(r.calls, 1);
    assert_false(b.done);
}

/* ---- Streamable HTTP ---- */

static void test_http_everything(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    server_t srv = {0};
    int port = free_port();
    everything_http_start(&srv, port);
    ah_mcp_client_t *c = http_client(srv.url, 20);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    assert_string_equal(ah_mcp_protocol_version(c), AH_MCP_PROTOCOL_VERSION);
    assert_non_null(ah_mcp_session_id(c));
    char sid1[128];
    snprintf(sid1, sizeof(sid1), "%s", ah_mcp_session_id(c));
    assert_true(has_tool(c, "echo"));
    assert_true(has_tool(c, "get-sum"));

    /* answers come as SSE streams; the session id goes back with each call */
    call_wait(c, "echo", "{\"message\":\"over http\"}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "Echo: over http");
    call_wait(c, "get-sum", "{\"a\":20,\"b\":22}", &r, 10);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.text, "is 42"));
    call_wait(c, "no-such-tool", NULL, &r, 10);
    assert_int_equal(r.rc, 0);
    assert_true(r.is_error);

    /* concurrent calls on one session */
    res_t many[8];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 8; i++) {
        char args[64];
        snprintf(args, sizeof(args), "{\"message\":\"m%d\"}", i);
        assert_int_equal(ah_mcp_call(c, "echo", args, on_call, &many[i], NULL), 0);
    }
    for (int i = 0; i < 8; i++) {
        assert_true(run_until(&many[i].done, 10));
        char want[32];
        snprintf(want, sizeof(want), "Echo: m%d", i);
        assert_string_equal(many[i].text, want);
    }

    /* the server restarts: the old session is unknown (400 here), we re-initialise once */
    server_stop(&srv);
    call_wait(c, "echo", "{\"message\":\"down\"}", &r, 10);
    assert_int_equal(r.rc, -ECONNREFUSED);
    everything_http_start(&srv, port);
    call_wait(c, "echo", "{\"message\":\"after restart\"}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "Echo: after restart");
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.session_reinits, 1);
    assert_non_null(ah_mcp_session_id(c));
    assert_string_not_equal(ah_mcp_session_id(c), sid1);
    ah_mcp_client_free(c);
    run_for(0.2); /* the DELETE */
    server_stop(&srv);
}

static void test_http_fixture_sse(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    server_t srv = {0};
    int port = free_port();
    fixture_http_start(&srv, port, false);
    ah_mcp_client_t *c = http_client(srv.url, 10);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    assert_non_null(ah_mcp_session_id(c));
    size_t n;
    ah_mcp_tools(c, &n);
    assert_int_equal(n, 9);

    call_wait(c, "add", "{\"a\":2,\"b\":3}", &r, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "5");
    call_wait(c, "mixed", NULL, &r, 5);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.text, "\"bytes\":12}\nresource text"));

    /* a ping from the server on the call's SSE stream is answered by a POST */
    call_wait(c, "ping_client", NULL, &r, 10);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "client answered ping");
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_true(s.tools_stale);

    /* timeout -> notifications/cancelled reaches the server */
    ah_mcp_client_t *ct = http_client(srv.url, 1.0);
    call_wait(ct, "slow", "{\"ms\":5000}", &r, 25);
    assert_int_equal(r.rc, -ETIMEDOUT);
    uint64_t end = ah_mono_ns() + 5000000000ull;
    while (fixture_stat(c, "cancelled") < 1 && ah_mono_ns() < end)
        run_for(0.05);
    assert_int_equal(fixture_stat(c, "cancelled"), 1);
    ah_mcp_client_free(ct);

    /* the server dies mid-call: a clear error; after it comes back: 404 -> re-initialise */
    res_t mid = {0};
    assert_int_equal(ah_mcp_call(c, "slow", "{\"ms\":800}", on_call, &mid, NULL), 0);
    run_for(0.2);
    server_stop(&srv);
    assert_true(run_until(&mid.done, 5));
    if (getenv("AH_TEST_VERBOSE"))
        fprintf(stderr, "mid-call death over HTTP: %d %s\n", mid.rc, mid.text);
    assert_true(mid.rc == -ECONNRESET || mid.rc == -EPROTO);
    assert_non_null(strstr(mid.text, "MCP server \"http\""));
    fixture_http_start(&srv, port, false);
    call_wait(c, "add", "{\"a\":40,\"b\":2}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "42");
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.session_reinits, 1);
    assert_int_equal(fixture_stat(c, "sessions"), 1); /* a new server process */

    /* free ends the session with DELETE */
    ah_mcp_client_t *probe = http_client(srv.url, 5);
    assert_int_equal(connect_wait(probe, &r, 20), 0);
    assert_int_equal(fixture_stat(probe, "deleted"), 0);
    ah_mcp_client_free(c);
    end = ah_mono_ns() + 5000000000ull;
    while (fixture_stat(probe, "deleted") < 1 && ah_mono_ns() < end)
        run_for(0.05);
    assert_int_equal(fixture_stat(probe, "deleted"), 1);
    ah_mcp_client_free(probe);
    run_for(0.1);
    server_stop(&srv);
}

static void test_http_fixture_json(void **st)
{
    (void)st;
    NEED_NODE();
    res_t r;
    server_t srv = {0};
    int port = free_port();
    fixture_http_start(&srv, port, true);
    ah_mcp_client_t *c = http_client(srv.url, 5);
    assert_int_equal(connect_wait(c, &r, 20), 0);
    assert_non_null(ah_mcp_session_id(c));
    call_wait(c, "add", "{\"a\":-1,\"b\":0.5}", &r, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "-0.5");
    call_wait(c, "fail", NULL, &r, 5);
    assert_int_equal(r.rc, 0);
    assert_true(r.is_error);
    assert_string_equal(r.text, "fail tool failed");
    /* restart: a spec-compliant 404 */
    server_stop(&srv);
    fixture_http_start(&srv, port, true);
    call_wait(c, "add", "{\"a\":1,\"b\":2}", &r, 20);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.text, "3");
    ah_mcp_client_stats_t s;
    ah_mcp_client_stats(c, &s);
    assert_int_equal(s.session_reinits, 1);
    ah_mcp_client_free(c);
    run_for(0.1);
    server_stop(&srv);

    /* nobody listening: connect fails with a clear error */
    c = http_client(srv.url, 5);
    assert_int_equal(connect_wait(c, &r, 10), -ECONNREFUSED);
    assert_non_null(strstr(r.text, srv.url));
    ah_mcp_client_free(c);
}

/* Last: every child (MCP servers and test servers) is gone after the global cleanup. */
static void test_no_children_left(void **st)
{
    (void)st;
    ah_mcp_global_cleanup();
    if (!wait_no_children(5))
        count_children();
    assert_int_equal(count_children(), 0);
}

/* ---- setup ---- */

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static bool node_in_path(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char *dup = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof(p), "%s/node", d);
        found = access(p, X_OK) == 0;
    }
    free(dup);
    return found;
}

static int group_setup(void **st)
{
    (void)st;
    signal(SIGPIPE, SIG_IGN);
    const char *lvl = getenv("AH_TEST_LOG_LEVEL");
    ah_log_level_t level = AH_LOG_ERROR;
    if (lvl)
        ah_log_level_parse(lvl, &level);
    ah_log_set_level(level);
    assert_int_equal(ah_http_client_global_init(), 0);
    g_loop = ah_loop_new();
    assert_non_null(g_loop);
    g_http = ah_http_client_new(g_loop, NULL);
    assert_non_null(g_http);
    g_tick = event_new(ah_loop_base(g_loop), -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = {0, 10000};
    event_add(g_tick, &tv);

    const char *src = getenv("AH_TEST_SRCDIR");
    char cwd[600];
    if (!src)
        src = getcwd(cwd, sizeof(cwd)) ? cwd : ".";
    snprintf(g_node_dir, sizeof(g_node_dir), "%s/tests/integration", src);
    snprintf(g_everything, sizeof(g_everything),
             "%s/node_modules/@modelcontextprotocol/server-everything/dist/index.js", g_node_dir);
    snprintf(g_fixture, sizeof(g_fixture), "%s/mcp_fixture_server.mjs", g_node_dir);
    g_have_node = node_in_path() && file_exists(g_everything) && file_exists(g_fixture);
    /* node resolves the fixture's imports from its own directory */
    if (g_have_node && chdir(g_node_dir) != 0)
        g_have_node = false;
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    event_free(g_tick);
    ah_http_client_free(g_http);
    ah_loop_free(g_loop);
    ah_http_client_global_cleanup();
    ah_mcp_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tool_allowed),
        cmocka_unit_test(test_new_invalid),
        cmocka_unit_test(test_stdio_bad_command),
        cmocka_unit_test(test_stdio_init_timeout_and_restart_limit),
        cmocka_unit_test(test_stdio_everything),
        cmocka_unit_test(test_stdio_timeout),
        cmocka_unit_test(test_stdio_fixture),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_http_everything),
        cmocka_unit_test(test_http_fixture_sse),
        cmocka_unit_test(test_http_fixture_json),
        cmocka_unit_test(test_no_children_left),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
