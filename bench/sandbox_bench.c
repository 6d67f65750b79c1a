/*
 * sandbox_bench.c - start-to-first-byte of exec tool runs (agents/sandbox.h),
 * sandboxed (bwrap) and direct (`sandbox: none`) side by side in one process,
 * plus a naive fork+execve+waitpid baseline. Built and run by bench/sandbox.sh.
 *
 * For each command the modes are interleaved run by run (sandbox, direct,
 * fork, sandbox, ...) so that machine noise hits them alike. The measured time
 * is the module's own first_byte_ns: from just before the spawn to the first
 * byte of output or the exit, whichever came first (what
 * agenthub_sandbox_start_seconds records). The fork baseline measures
 * fork() to waitpid() of the same program on the calling thread.
 *
 * --ballast-mb N touches N MiB of heap and starts 8 idle threads first, to
 * show that the clone(CLONE_VM|CLONE_VFORK) spawn does not slow down as the
 * server grows while fork() does.
 *
 * Usage: sandbox_bench [--runs N] [--ballast-mb N] [--warmup N]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "agents/sandbox.h"
#include "core/clock.h"
#include "core/loop.h"

extern char **environ;

typedef struct {
    bool done;
    int exit_code;
    uint64_t first_ns;
} one_t;

static ah_loop_t *g_loop;

static void on_done(void *ud, ah_sandbox_result_t *res)
{
    one_t *o = ud;
    o->done = true;
    o->exit_code = res->exit_code;
    o->first_ns = res->first_byte_ns;
}

static int run_once(bool none, const char *const *argv, uint64_t *ns)
{
    one_t o = {0};
    ah_sandbox_opts_t opts = {.none = none, .timeout_s = 30};
    int rc = ah_sandbox_run(g_loop, &opts, argv, NULL, 0, on_done, &o, NULL);
    if (rc)
        return rc;
    while (!o.done)
        event_base_loop(ah_loop_base(g_loop), EVLOOP_ONCE);
    *ns = o.first_ns;
    return o.exit_code == 0 ? 0 : -EIO;
}

static int fork_once(const char *path, const char *const *argv, uint64_t *ns)
{
    uint64_t t0 = ah_mono_ns();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        execve(path, (char *const *)argv, environ);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    *ns = ah_mono_ns() - t0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static void *idle_thread(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

int main(int argc, char **argv)
{
    int runs = 200, warmup = 10;
    long ballast_mb = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--ballast-mb") == 0 && i + 1 < argc)
            ballast_mb = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--runs N] [--warmup N] [--ballast-mb N]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1 || runs > 100000 || warmup < 0 || ballast_mb < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    ah_sandbox_info_t info;
    if (ah_sandbox_probe(&info) != 0) {
        fprintf(stderr, "sandbox unavailable: %s\n", info.reason);
        return 1;
    }
    char *ballast = NULL;
    if (ballast_mb > 0) {
        size_t n = (size_t)ballast_mb << 20;
        ballast = malloc(n);
        if (!ballast)
            return 1;
        memset(ballast, 1, n); /* resident: fork must copy its page tables */
        for (int i = 0; i < 8; i++) {
            pthread_t t;
            pthread_create(&t, NULL, idle_thread, NULL);
            pthread_detach(t);
        }
    }
    g_loop = ah_loop_new();
    if (!g_loop)
        return 1;

    static const char *const cmd_true[] = {"true", NULL};
    static const char *const cmd_py[] = {"python3", "-c", "pass", NULL};
    struct {
        const char *name;
        const char *path;
        const char *const *argv;
    } cmds[] = {{"true", "/usr/bin/true", cmd_true},
                {"python3 -c pass", "/usr/bin/python3", cmd_py}};
    static const char *const modes[] = {"sandbox", "direct", "fork"};

    printf("bwrap %s, %d runs per cell, ballast %ld MiB, nproc_inside=%d\n", info.version, runs,
           ballast_mb, info.nproc_inside);
    printf("%-16s %-8s %8s %8s %8s %8s\n", "command", "mode", "p50_ms", "p90_ms", "p99_ms",
           "mean_ms");
    for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
        uint64_t *v[3];
        for (int m = 0; m < 3; m++) {
            v[m] = calloc((size_t)runs, sizeof(uint64_t));
            if (!v[m])
                return 1;
        }
        for (int i = -warmup; i < runs; i++) {
            for (int m = 0; m < 3; m++) {
                uint64_t ns = 0;
                int rc = m == 2 ? fork_once(cmds[c].path, cmds[c].argv, &ns)
                                : run_once(m == 1, cmds[c].argv, &ns);
                if (rc) {
                    fprintf(stderr, "%s %s: run failed: %s\n", cmds[c].name, modes[m],
                            strerror(-rc));
                    return 1;
                }
                if (i >= 0)
                    v[m][i] = ns;
            }
        }
        double p50[3];
        for (int m = 0; m < 3; m++) {
            qsort(v[m], (size_t)runs, sizeof(uint64_t), cmp_u64);
            double mean = 0;
            for (int i = 0; i < runs; i++)
                mean += (double)v[m][i] / 1e6;
            p50[m] = pct(v[m], runs, 0.5);
            printf("%-16s %-8s %8.2f %8.2f %8.2f %8.2f\n", cmds[c].name, modes[m], p50[m],
                   pct(v[m], runs, 0.9), pct(v[m], runs, 0.99), mean / runs);
            free(v[m]);
        }
        printf("%-16s sandbox overhead at p50: +%.2f ms (x%.2f of direct)\n", cmds[c].name,
               p50[0] - p50[1], p50[1] > 0 ? p50[0] / p50[1] : 0);
    }
    ah_loop_free(g_loop);
    ah_sandbox_shutdown();
    free(ballast);
    return 0;
}
