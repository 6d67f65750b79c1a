/*
 * test_sandbox.c - exec tool processes (agents/sandbox.h), run for real: bwrap
 * sandboxes and direct (`sandbox: none`) runs driven by an ah_loop_t on the
 * test thread. Besides I/O, exit codes, caps, timeouts and cancel, these tests
 * try to escape and assert that it fails: the network (a listener of our own
 * must see no connection), /etc/shadow, a data directory of ours, a fork bomb,
 * namespaces and mounts (seccomp), memory, the environment, outliving the
 * timeout (no process of the run may be left in /proc).
 *
 * When the probe says sandboxes cannot work on this machine (no bwrap, no
 * user namespaces) the sandboxed tests are skipped with the probe's reason,
 * unless AH_TEST_REQUIRE_SANDBOX=1 makes that a failure.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agents/sandbox.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/loop.h"
#include "obs/metrics.h"

static ah_loop_t *g_loop;
static struct event *g_tick; /* wakes the loop so waits can check their deadline */
static ah_sandbox_info_t g_info;

typedef struct run {
    bool done;
    int calls;
    int exit_code, term_signal;
    bool timed_out;
    ah_sandbox_limit_t limit;
    ah_buf_t out, err;
    bool out_truncated, err_truncated;
    uint64_t duration_ns, first_byte_ns;
} run_t;

static void on_done(void *ud, ah_sandbox_result_t *res)
{
    run_t *r = ud;
    r->calls++;
    r->done = true;
    r->exit_code = res->exit_code;
    r->term_signal = res->term_signal;
    r->timed_out = res->timed_out;
    r->limit = res->limit;
    r->out_truncated = res->out_truncated;
    r->err_truncated = res->err_truncated;
    r->duration_ns = res->duration_ns;
    r->first_byte_ns = res->first_byte_ns;
    r->out = res->out; /* take the buffers */
    r->err = res->err;
    ah_buf_init(&res->out, 0);
    ah_buf_init(&res->err, 0);
}

static void run_free(run_t *r)
{
    ah_buf_free(&r->out);
    ah_buf_free(&r->err);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until *flag or max_s passed; true when *flag. */
static bool loop_until(const bool *flag, double max_s)
{
    uint64_t deadline = ah_mono_ns() + (uint64_t)(max_s * 1e9);
    while (!*flag && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    return *flag;
}

static void loop_for(double s)
{
    bool never = false;
    loop_until(&never, s);
}

/* Runs argv to completion (or fails the test after max_s). */
static void run_sync(const ah_sandbox_opts_t *o, const char *const *argv, const char *in,
                     size_t in_len, run_t *r, double max_s)
{
    memset(r, 0, sizeof(*r));
    ah_sandbox_t *h = NULL;
    assert_int_equal(ah_sandbox_run(g_loop, o, argv, in, in_len, on_done, r, &h), 0);
    assert_non_null(h);
    assert_true(loop_until(&r->done, max_s));
    assert_int_equal(r->calls, 1);
}

static bool sandbox_ok(void)
{
    if (g_info.ok)
        return true;
    const char *req = getenv("AH_TEST_REQUIRE_SANDBOX");
    if (req && strcmp(req, "1") == 0)
        fail_msg("sandbox unavailable: %s", g_info.reason);
    fprintf(stderr, "[  SKIP    ] sandbox unavailable here: %s\n", g_info.reason);
    return false;
}

#define NEED_SANDBOX()                                                                             \
    do {                                                                                           \
        if (!sandbox_ok()) {                                                                       \
            skip();                                                                                \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static bool buf_has(const ah_buf_t *b, const char *s)
{
    return b->len && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* Processes whose command line contains marker (zombies have none). */
static int count_procs(const char *marker)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/proc/%.32s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        char cmd[4096];
        ssize_t len = read(fd, cmd, sizeof(cmd) - 1);
        close(fd);
        if (len <= 0)
            continue;
        for (ssize_t i = 0; i < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        cmd[len] = '\0';
        if (strstr(cmd, marker))
            n++;
    }
    closedir(d);
    return n;
}

/* Polls until no process carries marker; true when none is left within max_s. */
static bool procs_gone(const char *marker, double max_s)
{
    uint64_t deadline = ah_mono_ns() + (uint64_t)(max_s * 1e9);
    while (count_procs(marker) > 0) {
        if (ah_mono_ns() > deadline)
            return false;
        usleep(10000);
    }
    return true;
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* as `agenthub serve` does; see sandbox.h */
    g_loop = ah_loop_new();
    if (!g_loop)
        return -1;
    g_tick = event_new(ah_loop_base(g_loop), -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 20000};
    if (!g_tick || event_add(g_tick, &tv) != 0)
        return -1;
    int rc = ah_sandbox_probe(&g_info);
    if (rc != 0 && rc != -ENOTSUP) {
        fprintf(stderr, "probe: %s (%s)\n", strerror(-rc), g_info.reason);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    /* cancelled runs are reaped asynchronously: let the loop finish them */
    uint64_t deadline = ah_mono_ns() + 5000000000ull;
    while (ah_sandbox_live() > 0 && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    int live = (int)ah_sandbox_live();
    event_free(g_tick);
    ah_loop_free(g_loop);
    ah_sandbox_shutdown();
    ah_metrics_shutdown();
    return live == 0 ? 0 : -1;
}

/* ---- tests -------------------------------------------------------------- */

static void test_probe(void **state)
{
    (void)state;
    NEED_SANDBOX();
    assert_true(ah_sandbox_available());
    assert_string_equal(g_info.reason, "");
    assert_true(g_info.bwrap[0] == '/');
    assert_true(g_info.version[0] != '\0');
    /* a second probe answers from the first */
    ah_sandbox_info_t again;
    assert_int_equal(ah_sandbox_probe(&again), 0);
    assert_string_equal(again.bwrap, g_info.bwrap);
    fprintf(stderr,
            "# bwrap %s (%s): size=%d disable_userns=%d nproc_inside=%d drop_root=%d "
            "probe %.1f ms\n",
            g_info.version, g_info.bwrap, g_info.tmpfs_size, g_info.disable_userns,
            g_info.nproc_inside, g_info.drop_root, g_info.probe_ms);
}

static void test_seccomp_export(void **state)
{
    (void)state;
    ah_buf_t bpf = AH_BUF_INIT;
    assert_int_equal(ah_sandbox_seccomp_export(&bpf), 0);
    /* struct sock_filter is 8 bytes; the program is a few dozen instructions */
    assert_int_equal(bpf.len % 8, 0);
    assert_true(bpf.len >= 8 * 20);
    ah_buf_free(&bpf);
}

static void test_stdin_to_stdout(void **state)
{
    (void)state;
    NEED_SANDBOX();
    /* binary, and larger than a pipe's buffer so that stdin is written in several wakeups */
    size_t n = 300 * 1024;
    char *in = malloc(n);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)(i * 7 + (i >> 9));
    const char *argv[] = {"cat", NULL};
    run_t r;
    run_sync(NULL, argv, in, n, &r, 10);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.term_signal, 0);
    assert_false(r.timed_out);
    assert_int_equal(r.out.len, n);
    assert_memory_equal(r.out.data, in, n);
    assert_false(r.out_truncated);
    assert_true(r.first_byte_ns > 0 && r.first_byte_ns <= r.duration_ns);
    run_free(&r);
    free(in);
}

static void test_exit_code_and_stderr(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *argv[] = {"sh", "-c", "echo to-out; echo to-err >&2; exit 7", NULL};
    run_t r;
    run_sync(NULL, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 7);
    assert_int_equal(r.term_signal, 0);
    assert_string_equal(r.out.data, "to-out\n");
    assert_string_equal(r.err.data, "to-err\n");
    run_free(&r);

    /* a command that does not exist inside the sandbox: exit 127 with the reason */
    const char *missing[] = {"no-such-command-4711", NULL};
    run_sync(NULL, missing, NULL, 0, &r, 10);
    assert_true(r.exit_code != 0);
    assert_true(buf_has(&r.err, "no-such-command-4711"));
    run_free(&r);
}

static void test_output_cap(void **state)
{
    (void)state;
    NEED_SANDBOX();
    /* 8 MB on stdout, a line on stderr: keep 64 KiB in total, drain the rest, exit 0 */
    const char *argv[] = {"sh", "-c", "head -c 8000000 /dev/zero; echo done >&2", NULL};
    ah_sandbox_opts_t o = {.max_output_bytes = 65536};
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 20);
    assert_int_equal(r.exit_code, 0);
    assert_true(r.out_truncated);
    assert_true(r.out.len + r.err.len <= 65536);
    assert_true(r.out.len >= 65536 - 5);
    run_free(&r);
}

static void test_timeout_kills_everything(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *marker = "100.4711";
    const char *argv[] = {"sh", "-c", "sleep 100.4711 & sleep 100.4711", NULL};
    ah_sandbox_opts_t o = {.timeout_s = 0.5};
    uint64_t t0 = ah_mono_ns();
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 10);
    double took = (double)(ah_mono_ns() - t0) / 1e9;
    assert_true(r.timed_out);
    assert_int_equal(r.term_signal, SIGKILL);
    assert_true(took >= 0.45 && took < 3.0);
    assert_string_equal(ah_sandbox_outcome(&(ah_sandbox_result_t){.timed_out = true}), "timeout");
    /* both sleeps, the background one included, are gone */
    assert_true(procs_gone(marker, 3.0));
    run_free(&r);
}

static void test_background_child_dies_with_command(void **state)
{
    (void)state;
    NEED_SANDBOX();
    /* the command exits at once, leaving a daemon behind: the run ends, the daemon dies */
    const char *argv[] = {"sh", "-c", "setsid sleep 100.4714 > /dev/null 2>&1 & echo started",
                          NULL};
    run_t r;
    run_sync(NULL, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    assert_false(r.timed_out);
    assert_string_equal(r.out.data, "started\n");
    assert_true(procs_gone("100.4714", 3.0));
    run_free(&r);
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_no_network(void **state)
{
    (void)state;
    NEED_SANDBOX();
    int port;
    int lfd = listen_loopback(&port);
    char code[512];
    snprintf(code, sizeof(code),
             "import socket, sys\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
             "    print('connected')\n"
             "except OSError as e:\n"
             "    print('failed', e.errno)\n"
             "    sys.exit(3)\n",
             port);
    const char *argv[] = {"python3", "-c", code, NULL};
    run_t r;
    run_sync(NULL, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 3);
    assert_true(buf_has(&r.out, "failed"));
    assert_int_equal(accept(lfd, NULL, NULL), -1); /* our listener saw nothing */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    run_free(&r);

    /* the control: with network allowed the same program reaches the listener */
    ah_sandbox_opts_t o = {.network = true};
    run_sync(&o, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    assert_true(buf_has(&r.out, "connected"));
    int c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    close(c);
    run_free(&r);
    close(lfd);
}

static void test_host_files_invisible(void **state)
{
    (void)state;
    NEED_SANDBOX();
    /* a data directory of ours, with a secret, outside the binds */
    char dir[] = "/tmp/ahsbx-data.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[64];
    snprintf(file, sizeof(file), "%s/secret.db", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("TOPSECRET-4711\n", f);
    fclose(f);
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));

    char script[1024];
    snprintf(script, sizeof(script),
             "cat /etc/shadow; cat %s; ls %s; ls '%s'; ls /root; ls /home; ls /etc;"
             "echo root > /should-fail; echo ok > /workspace/w && cat /workspace/w",
             file, dir, cwd);
    const char *argv[] = {"sh", "-c", script, NULL};
    run_t r;
    run_sync(NULL, argv, NULL, 0, &r, 10);
    assert_false(buf_has(&r.out, "TOPSECRET"));
    assert_false(buf_has(&r.out, "root:")); /* no shadow line */
    assert_false(buf_has(&r.out, "shadow"));
    assert_true(buf_has(&r.err, "/etc/shadow: No such file"));
    assert_true(buf_has(&r.err, "secret.db: No such file"));
    assert_true(buf_has(&r.err, "Read-only file system"));
    assert_true(buf_has(&r.out, "ok\n")); /* the workspace is writable */
    assert_true(buf_has(&r.out, "passwd"));
    run_free(&r);

    /* each run gets a fresh workspace */
    const char *ls[] = {"sh", "-c", "ls -A /workspace /tmp | wc -w", NULL};
    run_sync(NULL, ls, NULL, 0, &r, 10);
    assert_string_equal(r.out.data, "2\n"); /* the two headers "/tmp:" "/workspace:" */
    run_free(&r);

    unlink(file);
    rmdir(dir);
}

static void test_fork_bomb_contained(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *code = "import os\nwhile True:\n    os.fork()\n";
    const char *argv[] = {"python3", "-c", code, "forkbomb-4711", NULL};
    ah_sandbox_opts_t o = {.nproc = 32, .timeout_s = 10};
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 20);
    /* it ended by itself, well before its timeout: fork failed */
    assert_false(r.timed_out);
    assert_true(r.exit_code != 0);
    if (g_info.nproc_inside)
        assert_true(buf_has(&r.err, "BlockingIOError") ||
                    buf_has(&r.err, "Resource temporarily unavailable"));
    assert_true(procs_gone("forkbomb-4711", 5.0));
    run_free(&r);

    /* and the host is fine: a direct run still starts */
    const char *t[] = {"true", NULL};
    ah_sandbox_opts_t none = {.none = true};
    run_sync(&none, t, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    run_free(&r);
}

static void test_seccomp_denies(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *code = "import ctypes, os\n"
                       "libc = ctypes.CDLL(None, use_errno=True)\n"
                       "r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n"
                       "print('mount', r, ctypes.get_errno())\n"
                       "r = libc.unshare(0x10000000)\n" /* CLONE_NEWUSER */
                       "print('unshare', r, ctypes.get_errno())\n"
                       "r = libc.ptrace(0, 0, None, None)\n" /* PTRACE_TRACEME */
                       "print('ptrace', r, ctypes.get_errno())\n"
                       "print(open('/proc/self/status').read())\n";
    const char *argv[] = {"python3", "-c", code, NULL};
    run_t r;
    run_sync(NULL, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    assert_true(buf_has(&r.out, "mount -1 1\n")); /* EPERM */
    assert_true(buf_has(&r.out, "unshare -1 1\n"));
    assert_true(buf_has(&r.out, "ptrace -1 1\n"));
    assert_true(buf_has(&r.out, "Seccomp:\t2"));
    assert_true(buf_has(&r.out, "NoNewPrivs:\t1"));
    assert_true(buf_has(&r.out, "CapEff:\t0000000000000000"));
    run_free(&r);

    /* the unshare(1) tool fails cleanly too */
    const char *un[] = {"unshare", "-r", "true", NULL};
    run_sync(NULL, un, NULL, 0, &r, 10);
    assert_true(r.exit_code != 0);
    assert_true(buf_has(&r.err, "Operation not permitted"));
    run_free(&r);
}

static void test_memory_limit(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *argv[] = {"python3", "-c", "b = bytearray(1 << 30)\nprint('allocated')", NULL};
    ah_sandbox_opts_t o = {.memory_mb = 128};
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 10);
    assert_true(r.exit_code != 0);
    assert_false(buf_has(&r.out, "allocated"));
    assert_true(buf_has(&r.err, "MemoryError"));
    run_free(&r);
}

static void test_cpu_and_file_limits(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *spin[] = {"sh", "-c", "while :; do :; done", NULL};
    ah_sandbox_opts_t o = {.cpu_s = 0.5, .timeout_s = 10};
    run_t r;
    run_sync(&o, spin, NULL, 0, &r, 15);
    assert_false(r.timed_out);
    assert_int_equal(r.limit, AH_SANDBOX_LIMIT_CPU);
    run_free(&r);

    const char *big[] = {"sh", "-c", "head -c 3000000 /dev/zero > /workspace/f", NULL};
    ah_sandbox_opts_t f = {.fsize_mb = 1};
    run_sync(&f, big, NULL, 0, &r, 10);
    assert_true(r.exit_code != 0);
    assert_int_equal(r.limit, AH_SANDBOX_LIMIT_FSIZE);
    run_free(&r);
}

static void test_env_scrubbed(void **state)
{
    (void)state;
    NEED_SANDBOX();
    setenv("SECRET_X", "hunter2", 1);
    setenv("PASSED_Y", "from-server", 1);
    const char *env[] = {"SET_Z=given", "PASSED_Y", "UNSET_W", "LANG=C", NULL};
    ah_sandbox_opts_t o = {.env = env};
    const char *argv[] = {"env", NULL};
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    assert_false(buf_has(&r.out, "SECRET_X"));
    assert_false(buf_has(&r.out, "hunter2"));
    assert_false(buf_has(&r.out, "UNSET_W"));
    assert_true(buf_has(&r.out, "PATH=/usr/bin:/bin\n"));
    assert_true(buf_has(&r.out, "HOME=/workspace\n"));
    assert_true(buf_has(&r.out, "LANG=C\n")); /* the tool's value replaced the default */
    assert_true(buf_has(&r.out, "SET_Z=given\n"));
    assert_true(buf_has(&r.out, "PASSED_Y=from-server\n"));
    int lines = 0;
    for (size_t i = 0; i < r.out.len; i++)
        lines += r.out.data[i] == '\n';
    assert_true(buf_has(&r.out, "PWD=/workspace\n")); /* set by bwrap's --chdir */
    assert_int_equal(lines, 6);
    run_free(&r);

    const char *bad_env[] = {"BAD-NAME=1", NULL};
    ah_sandbox_opts_t b = {.env = bad_env};
    assert_int_equal(ah_sandbox_run(g_loop, &b, argv, NULL, 0, on_done, &r, NULL), -EINVAL);
    unsetenv("SECRET_X");
    unsetenv("PASSED_Y");
}

static void test_none_mode(void **state)
{
    (void)state;
    setenv("SECRET_X", "hunter2", 1);
    ah_sandbox_opts_t o = {.none = true};
    const char *argv[] = {"sh", "-c", "echo \"$HOME\"; pwd; env | grep -c SECRET_X; ls -d /proc/1",
                          NULL};
    run_t r;
    run_sync(&o, argv, NULL, 0, &r, 10);
    assert_int_equal(r.exit_code, 0);
    char home[256], pwd[256];
    assert_int_equal(sscanf(r.out.data, "%255s %255s", home, pwd), 2);
    assert_string_equal(home, pwd);
    assert_true(strncmp(home, "/tmp/agenthub-exec.", 19) == 0);
    assert_true(buf_has(&r.out, "\n0\n/proc/1\n")); /* no SECRET_X; the host's /proc */
    struct stat st;
    assert_int_equal(stat(home, &st), -1); /* the private directory is gone */
    run_free(&r);
    unsetenv("SECRET_X");

    /* the timeout still kills the whole process group */
    const char *bg[] = {"sh", "-c", "sleep 100.4712 & sleep 100.4712", NULL};
    ah_sandbox_opts_t t = {.none = true, .timeout_s = 0.3};
    run_sync(&t, bg, NULL, 0, &r, 10);
    assert_true(r.timed_out);
    assert_true(procs_gone("100.4712", 3.0));
    run_free(&r);

    const char *missing[] = {"no-such-command-4711", NULL};
    assert_int_equal(ah_sandbox_run(g_loop, &o, missing, NULL, 0, on_done, &r, NULL), -ENOENT);
    assert_int_equal(ah_sandbox_live(), 0);
}

static void test_cancel(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *argv[] = {"sh", "-c", "echo up; sleep 100.4713", NULL};
    run_t r;
    memset(&r, 0, sizeof(r));
    ah_sandbox_t *h = NULL;
    assert_int_equal(ah_sandbox_run(g_loop, NULL, argv, NULL, 0, on_done, &r, &h), 0);
    uint64_t deadline = ah_mono_ns() + 5000000000ull;
    while (count_procs("100.4713") == 0 && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    assert_true(count_procs("100.4713") >= 1);
    ah_sandbox_cancel(h);
    loop_for(0.2);
    assert_int_equal(r.calls, 0);
    deadline = ah_mono_ns() + 5000000000ull;
    while (ah_sandbox_live() > 0 && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    assert_int_equal(ah_sandbox_live(), 0);
    assert_true(procs_gone("100.4713", 3.0));
    assert_int_equal(r.calls, 0);

    /* cancel at once, before the loop ran at all */
    assert_int_equal(ah_sandbox_run(g_loop, NULL, argv, NULL, 0, on_done, &r, &h), 0);
    ah_sandbox_cancel(h);
    deadline = ah_mono_ns() + 5000000000ull;
    while (ah_sandbox_live() > 0 && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    assert_int_equal(ah_sandbox_live(), 0);
    assert_int_equal(r.calls, 0);
    assert_true(procs_gone("100.4713", 3.0));

    /* cancels landing at every stage of bwrap's setup leave nothing behind */
    for (int i = 0; i < 24; i++) {
        assert_int_equal(ah_sandbox_run(g_loop, NULL, argv, NULL, 0, on_done, &r, &h), 0);
        usleep((useconds_t)(i * 400)); /* 0 .. 9.2 ms: spawn to past the command's start */
        ah_sandbox_cancel(h);
    }
    deadline = ah_mono_ns() + 5000000000ull;
    while (ah_sandbox_live() > 0 && ah_mono_ns() < deadline)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    assert_int_equal(ah_sandbox_live(), 0);
    assert_int_equal(r.calls, 0);
    assert_true(procs_gone("100.4713", 3.0));
}

#define N_CONCURRENT 50

static void test_concurrent_runs(void **state)
{
    (void)state;
    NEED_SANDBOX();
    static run_t runs[N_CONCURRENT];
    char nums[N_CONCURRENT][16];
    for (int i = 0; i < N_CONCURRENT; i++) {
        memset(&runs[i], 0, sizeof(runs[i]));
        snprintf(nums[i], sizeof(nums[i]), "%d", i);
        const char *argv[] = {"sh", "-c", "echo run-$1", "sh", nums[i], NULL};
        assert_int_equal(ah_sandbox_run(g_loop, NULL, argv, NULL, 0, on_done, &runs[i], NULL), 0);
    }
    assert_int_equal(ah_sandbox_live(), N_CONCURRENT);
    uint64_t deadline = ah_mono_ns() + 60000000000ull;
    for (int i = 0; i < N_CONCURRENT; i++)
        while (!runs[i].done && ah_mono_ns() < deadline)
            event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    for (int i = 0; i < N_CONCURRENT; i++) {
        char want[32];
        snprintf(want, sizeof(want), "run-%d\n", i);
        assert_true(runs[i].done);
        assert_int_equal(runs[i].exit_code, 0);
        assert_string_equal(runs[i].out.data, want);
        run_free(&runs[i]);
    }
    assert_int_equal(ah_sandbox_live(), 0);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    run_t r;
    const char *empty[] = {NULL};
    const char *ok[] = {"true", NULL};
    assert_int_equal(ah_sandbox_run(g_loop, NULL, empty, NULL, 0, on_done, &r, NULL), -EINVAL);
    assert_int_equal(ah_sandbox_run(g_loop, NULL, ok, NULL, 0, NULL, &r, NULL), -EINVAL);
    assert_int_equal(ah_sandbox_run(g_loop, NULL, ok, NULL, 5, on_done, &r, NULL), -EINVAL);
    const char *rel[] = {"relative/path", NULL};
    ah_sandbox_opts_t o = {.ro_binds = rel};
    assert_int_equal(ah_sandbox_run(g_loop, &o, ok, NULL, 0, on_done, &r, NULL), -EINVAL);
    ah_sandbox_opts_t big = {.max_output_bytes = (size_t)AH_SANDBOX_MAX_OUTPUT + 1};
    assert_int_equal(ah_sandbox_run(g_loop, &big, ok, NULL, 0, on_done, &r, NULL), -E2BIG);
    ah_sandbox_opts_t nan = {.timeout_s = 0.0 / 0.0};
    assert_int_equal(ah_sandbox_run(g_loop, &nan, ok, NULL, 0, on_done, &r, NULL), -EINVAL);
    assert_int_equal(ah_sandbox_live(), 0);
}

static void test_metrics(void **state)
{
    (void)state;
    NEED_SANDBOX();
    ah_buf_t m = AH_BUF_INIT;
    assert_int_equal(ah_metrics_render(&m), 0);
    assert_true(buf_has(&m, "agenthub_sandbox_runs_total{result=\"ok\"}"));
    assert_true(buf_has(&m, "agenthub_sandbox_runs_total{result=\"timeout\"}"));
    assert_true(buf_has(&m, "agenthub_sandbox_start_seconds_count"));
    assert_false(buf_has(&m, "agenthub_sandbox_runs_total{result=\"timeout\"} 0\n"));
    ah_buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_seccomp_export),
        cmocka_unit_test(test_stdin_to_stdout),
        cmocka_unit_test(test_exit_code_and_stderr),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_timeout_kills_everything),
        cmocka_unit_test(test_background_child_dies_with_command),
        cmocka_unit_test(test_no_network),
        cmocka_unit_test(test_host_files_invisible),
        cmocka_unit_test(test_fork_bomb_contained),
        cmocka_unit_test(test_seccomp_denies),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_cpu_and_file_limits),
        cmocka_unit_test(test_env_scrubbed),
        cmocka_unit_test(test_none_mode),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
