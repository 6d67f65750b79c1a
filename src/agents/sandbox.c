/*
 * sandbox.c - exec tool processes: bwrap sandbox (or none), spawned with a
 * vfork-style clone, driven by pipes, a pidfd and a timer on an ah_loop_t.
 * See sandbox.h for the contract and docs/internals/sandbox.md for the design.
 */
#include "agents/sandbox.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/arena.h"
#include "core/clock.h"
#include "obs/metrics.h"

/* waitid(2) id type for a pidfd (Linux 5.4); spelled out for older headers. */
#define AH_P_PIDFD 3

/* Without pidfds (Linux < 5.3, or valgrind, which does not know pidfd_open)
 * the exit is polled with waitid(WNOHANG) at this interval. */
#define EXIT_POLL_MS 10

/* After the process exited, how long pipes held open by escaped grandchildren
 * (none mode: a command that setsid()s a daemon) may delay the result. */
#define EXIT_DRAIN_GRACE_MS 200

#define CHILD_STACK_SIZE (64 * 1024)
#define READ_CHUNK       65536
#define SANDBOX_UID_STR  "65534"
#define PROBE_TIMEOUT_S  10

static const char *const default_path = "/usr/bin:/bin";

/* Host directories that merged-/usr systems make symlinks into /usr. */
#define N_TOP 6
static const char *const top_paths[N_TOP] = {"/bin",   "/sbin",  "/lib",
                                             "/lib64", "/lib32", "/libx32"};

/*
 * /etc files programs need to start (the dynamic loader's cache, user and
 * group names for the sandbox uid, host name resolution of localhost) and,
 * with the network, to reach it (DNS, CA certificates). Not /etc/shadow, not
 * the rest of /etc. passwd and group are world-readable and hold no secrets.
 */
#define N_ETC 12
static const char *const etc_paths[N_ETC] = {
    "/etc/ld.so.cache",   "/etc/alternatives",    "/etc/passwd",    "/etc/group",
    "/etc/nsswitch.conf", "/etc/hosts",           "/etc/localtime", "/etc/resolv.conf",
    "/etc/ssl",           "/etc/ca-certificates", "/etc/gai.conf",  "/etc/services"};
/* etc_paths[i] for i >= ETC_NETWORK_FROM only when the tool has the network. */
#define ETC_NETWORK_FROM 7

/* ---- module state ------------------------------------------------------- */

static struct {
    pthread_mutex_t mu; /* serialises probes; the fields below change only under it */
    atomic_bool ready;  /* stored (release) once the fields below are final */
    ah_sandbox_info_t info;
    ah_buf_t bpf;     /* compiled seccomp program */
    char prlimit[32]; /* "/usr/bin/prlimit" or "" */
    struct {
        bool is_link, is_dir;
        char target[64];
    } top[N_TOP];
    bool etc_exists[N_ETC];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_size_t g_live;

static pthread_mutex_t m_mu = PTHREAD_MUTEX_INITIALIZER; /* guards registration */
static _Atomic(ah_metric_series_t *) m_start, m_ok, m_error, m_timeout, m_killed;

static void metrics_init(void)
{
    if (atomic_load_explicit(&m_start, memory_order_acquire))
        return;
    pthread_mutex_lock(&m_mu);
    if (!atomic_load_explicit(&m_start, memory_order_relaxed)) {
        ah_metric_family_t *runs = ah_metrics_counter(
            "agenthub_sandbox_runs_total", "Exec tool runs by result (ok, error, timeout, killed).",
            1, (const char *[]){"result"});
        atomic_store(&m_ok, ah_metrics_series(runs, "ok"));
        atomic_store(&m_error, ah_metrics_series(runs, "error"));
        atomic_store(&m_timeout, ah_metrics_series(runs, "timeout"));
        atomic_store(&m_killed, ah_metrics_series(runs, "killed"));
        ah_metric_family_t *start = ah_metrics_histogram(
            "agenthub_sandbox_start_seconds",
            "Exec tool runs: spawn to the first output byte or the exit, seconds.", 0, NULL,
            ah_metrics_latency_buckets, AH_METRICS_LATENCY_NBUCKETS);
        atomic_store_explicit(&m_start, ah_metrics_series0(start), memory_order_release);
    }
    pthread_mutex_unlock(&m_mu);
}

/* ---- small helpers ------------------------------------------------------ */

/* The child's descriptors: 0..2 stdio, 3 the seccomp program, 4 bwrap's --info-fd. */
#define CHILD_FIRST_FREE_FD 5

/* Moves fd to a number >= CHILD_FIRST_FREE_FD so that dup2() onto the fixed
 * numbers in the child never overwrites another of our descriptors. Keeps O_CLOEXEC. */
static int fd_high(int fd)
{
    if (fd >= CHILD_FIRST_FREE_FD)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, CHILD_FIRST_FREE_FD);
    int err = errno;
    close(fd);
    errno = err;
    return nfd;
}

static int pipe_high(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return -errno;
    p[0] = fd_high(p[0]);
    p[1] = fd_high(p[1]);
    if (p[0] < 0 || p[1] < 0) {
        int err = errno;
        if (p[0] >= 0)
            close(p[0]);
        if (p[1] >= 0)
            close(p[1]);
        return -err;
    }
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static char *arena_fmt(ah_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *arena_fmt(ah_arena_t *a, const char *fmt, ...)
{
    char tmp[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return NULL;
    return ah_arena_strndup(a, tmp, (size_t)n);
}

static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 128 ||
        !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static size_t count_list(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* ---- spawning ----------------------------------------------------------- */

/*
 * Why clone(CLONE_VM | CLONE_VFORK) and not fork or posix_spawn: fork copies
 * the page tables of a large multithreaded server (milliseconds, and more
 * with every GiB of RSS), while a vfork-style child shares the parent's
 * memory and costs the same whatever the server's size; posix_spawn is built
 * the same way but cannot set rlimits or drop root before the exec. The child
 * runs on its own small stack, calls only async-signal-safe functions, sets
 * its ids with raw syscalls (glibc's setuid wrappers would signal every
 * thread of the parent, whose memory the child shares) and reports a failure
 * to exec through a close-on-exec pipe.
 */
typedef struct spawn_req {
    const char *path;
    char *const *argv;
    char *const *envp;
    int in_fd, out_fd, err_fd; /* child ends, >= CHILD_FIRST_FREE_FD */
    int seccomp_fd;            /* -1, or >= CHILD_FIRST_FREE_FD: becomes fd 3 */
    int info_fd;               /* -1, or >= CHILD_FIRST_FREE_FD: becomes fd 4 */
    int report_fd;             /* write end of the exec-error pipe, >= CHILD_FIRST_FREE_FD */
    const char *cwd;           /* NULL = inherit */
    int nlim;
    int lim_res[8];
    struct rlimit lim[8];
    bool drop_root;
} spawn_req_t;

static void close_from(int lowest, int keep)
{
    /* close_range (5.9) in two spans around keep; a loop on older kernels. */
    bool ok = true;
    if (keep > lowest)
        ok = syscall(SYS_close_range, (unsigned)lowest, (unsigned)keep - 1, 0u) == 0;
    if (ok)
        ok = syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0;
    if (ok)
        return;
    struct rlimit rl;
    int max = 4096;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536)
        max = (int)rl.rlim_cur;
    for (int fd = lowest; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize_address))
#endif
static int
spawn_child(void *arg)
{
    const spawn_req_t *r = arg;
    /*
     * Until execve this child shares the server's memory: a server signal
     * handler running here would corrupt it. Every signal is blocked (the
     * parent blocked them before clone); reset every disposition to the
     * default (that also undoes ignored signals such as SIGPIPE, which
     * would otherwise stay ignored across exec), then unblock.
     */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
            continue;
        if (sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO))
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(sig, &sa, NULL);
    }
    if (setpgid(0, 0) != 0)
        goto fail;
    if (dup2(r->in_fd, 0) < 0 || dup2(r->out_fd, 1) < 0 || dup2(r->err_fd, 2) < 0)
        goto fail;
    int lowest = 3;
    if (r->seccomp_fd >= 0) {
        if (dup2(r->seccomp_fd, 3) < 0 || dup2(r->info_fd, 4) < 0)
            goto fail;
        lowest = 5;
    }
    /* Nothing of the server (sockets, the database, keys) may leak into the command. */
    close_from(lowest, r->report_fd);
    for (int i = 0; i < r->nlim; i++) {
        if (setrlimit(r->lim_res[i], &r->lim[i]) == 0)
            continue;
        /*
         * Lowering a hard limit fails only where something refuses it:
         * valgrind (any change to RLIMIT_NOFILE's hard limit), an SELinux
         * policy without process:setrlimit. For RLIMIT_NOFILE the soft limit
         * then has to do (the command could raise it back); the others fail.
         */
        struct rlimit soft_only;
        if (errno != EPERM || r->lim_res[i] != RLIMIT_NOFILE ||
            getrlimit(RLIMIT_NOFILE, &soft_only) != 0)
            goto fail;
        soft_only.rlim_cur = r->lim[i].rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &soft_only) != 0)
            goto fail;
    }
    if (r->drop_root) {
        if (syscall(SYS_setgroups, 0, NULL) != 0 ||
            syscall(SYS_setresgid, AH_SANDBOX_ROOT_DROP_ID, AH_SANDBOX_ROOT_DROP_ID,
                    AH_SANDBOX_ROOT_DROP_ID) != 0 ||
            syscall(SYS_setresuid, AH_SANDBOX_ROOT_DROP_ID, AH_SANDBOX_ROOT_DROP_ID,
                    AH_SANDBOX_ROOT_DROP_ID) != 0)
            goto fail;
    }
    /* Dies with the loop thread that started it (after the id change, which clears it). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        goto fail;
    if (r->cwd && chdir(r->cwd) != 0)
        goto fail;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(r->path, r->argv, r->envp);
fail:;
    int err = errno;
    while (write(r->report_fd, &err, sizeof(err)) < 0 && errno == EINTR) {
    }
    _exit(127);
}

static int spawn(spawn_req_t *r, pid_t *pid_out, int *pidfd_out)
{
    int rp[2];
    int rc = pipe_high(rp);
    if (rc)
        return rc;
    r->report_fd = rp[1];
    char *stack = malloc(CHILD_STACK_SIZE);
    if (!stack) {
        close(rp[0]);
        close(rp[1]);
        return -ENOMEM;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Returns once the child called execve or _exit: the parent thread waits, as with vfork. */
    pid_t pid = clone(spawn_child, stack + CHILD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, r);
    int clone_err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(stack);
    close(rp[1]);
    if (pid < 0) {
        close(rp[0]);
        return -clone_err;
    }
    int child_err = 0;
    ssize_t n;
    do {
        n = read(rp[0], &child_err, sizeof(child_err));
    } while (n < 0 && errno == EINTR);
    close(rp[0]);
    if (n == (ssize_t)sizeof(child_err)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return child_err > 0 ? -child_err : -EIO;
    }
    /* Our unreaped child: its pid cannot be reused before we wait for it. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0 && errno != ENOSYS) {
        int err = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return -err;
    }
    *pid_out = pid;
    *pidfd_out = pidfd;
    return 0;
}

/* ---- argv and environment ----------------------------------------------- */

static const char *env_value(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

/*
 * PATH, HOME, LANG, then opts->env in order (a later NAME replaces an
 * earlier one). *bytes grows by the size of every string.
 */
static int build_env(ah_arena_t *a, const ah_sandbox_opts_t *o, const char *home, size_t *bytes,
                     char ***out)
{
    size_t n_env = count_list(o->env);
    char **env = ah_arena_alloc(a, (4 + n_env) * sizeof(char *));
    char *home_kv = arena_fmt(a, "HOME=%s", home);
    if (!env || !home_kv)
        return -ENOMEM;
    size_t n = 0;
    env[n++] = (char *)"PATH=/usr/bin:/bin";
    env[n++] = home_kv;
    env[n++] = (char *)"LANG=C.UTF-8";
    for (size_t i = 0; i < n_env; i++) {
        const char *e = o->env[i];
        const char *eq = strchr(e, '=');
        size_t name_len = eq ? (size_t)(eq - e) : strlen(e);
        if (!env_name_ok(e, name_len))
            return -EINVAL;
        char *entry;
        if (eq) {
            entry = (char *)e;
        } else {
            const char *v = getenv(e);
            if (!v)
                continue;
            size_t vl = strlen(v);
            entry = ah_arena_alloc(a, name_len + vl + 2);
            if (!entry)
                return -ENOMEM;
            memcpy(entry, e, name_len);
            entry[name_len] = '=';
            memcpy(entry + name_len + 1, v, vl + 1);
        }
        *bytes += strlen(entry) + 1;
        size_t j = 0;
        while (j < n && !(strncmp(env[j], entry, name_len) == 0 && env[j][name_len] == '='))
            j++;
        env[j] = entry;
        if (j == n)
            n++;
    }
    env[n] = NULL;
    *out = env;
    return 0;
}

/* Looks cmd up in the PATH of envp, as execvp would (none mode). */
static int resolve_command(ah_arena_t *a, const char *cmd, char *const *envp, const char **path)
{
    if (strchr(cmd, '/')) {
        *path = cmd;
        return 0;
    }
    const char *p = env_value(envp, "PATH");
    if (!p)
        p = default_path;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t dl = end ? (size_t)(end - p) : strlen(p);
        if (dl > 0) {
            char *full = arena_fmt(a, "%.*s/%s", (int)dl, p, cmd);
            if (!full)
                return -ENAMETOOLONG;
            if (access(full, X_OK) == 0) {
                *path = full;
                return 0;
            }
        }
        p += dl;
        if (*p == ':')
            p++;
    }
    return -ENOENT;
}

/* The bwrap command line of a sandboxed run; see docs/internals/sandbox.md. */
static int build_bwrap_argv(ah_arena_t *a, const ah_sandbox_opts_t *o, const char *const *argv,
                            size_t argc, char ***out)
{
    size_t nb = count_list(o->ro_binds);
    size_t cap = 64 + 3 * N_TOP + 3 * N_ETC + 3 * nb + 3 + argc + 1;
    char **v = ah_arena_alloc(a, cap * sizeof(char *));
    if (!v)
        return -ENOMEM;
    size_t n = 0;
#define PUSH(s) (v[n++] = (char *)(s))
    PUSH(g.info.bwrap);
    PUSH("--unshare-user");
    PUSH("--unshare-pid");
    PUSH("--unshare-ipc");
    PUSH("--unshare-uts");
    PUSH("--unshare-cgroup-try");
    if (!o->network)
        PUSH("--unshare-net");
    if (g.info.disable_userns)
        PUSH("--disable-userns");
    PUSH("--uid");
    PUSH(SANDBOX_UID_STR);
    PUSH("--gid");
    PUSH(SANDBOX_UID_STR);
    PUSH("--hostname");
    PUSH("sandbox");
    PUSH("--ro-bind");
    PUSH("/usr");
    PUSH("/usr");
    for (int i = 0; i < N_TOP; i++) {
        if (g.top[i].is_link) {
            PUSH("--symlink");
            PUSH(g.top[i].target);
            PUSH(top_paths[i]);
        } else if (g.top[i].is_dir) {
            PUSH("--ro-bind");
            PUSH(top_paths[i]);
            PUSH(top_paths[i]);
        }
    }
    for (int i = 0; i < N_ETC; i++) {
        if ((i < ETC_NETWORK_FROM || o->network) && g.etc_exists[i]) {
            PUSH("--ro-bind");
            PUSH(etc_paths[i]);
            PUSH(etc_paths[i]);
        }
    }
    for (size_t i = 0; i < nb; i++) {
        PUSH("--ro-bind");
        PUSH(o->ro_binds[i]);
        PUSH(o->ro_binds[i]);
    }
    PUSH("--proc");
    PUSH("/proc");
    PUSH("--dev");
    PUSH("/dev");
    char *size = NULL;
    if (g.info.tmpfs_size) {
        size = arena_fmt(a, "%llu", (unsigned long long)o->workspace_mb << 20);
        if (!size)
            return -ENOMEM;
    }
    static const char *const tmpfs[] = {"/dev/shm", "/tmp", "/workspace"};
    for (int i = 0; i < 3; i++) {
        if (size) {
            PUSH("--size");
            PUSH(size);
        }
        PUSH("--tmpfs");
        PUSH(tmpfs[i]);
    }
    /* The root and /dev are tmpfs mounts without a size: read-only, or they could fill RAM. */
    PUSH("--remount-ro");
    PUSH("/dev");
    PUSH("--remount-ro");
    PUSH("/");
    PUSH("--chdir");
    PUSH("/workspace");
    PUSH("--die-with-parent");
    PUSH("--new-session");
    PUSH("--cap-drop");
    PUSH("ALL");
    PUSH("--seccomp");
    PUSH("3");
    PUSH("--info-fd");
    PUSH("4");
    PUSH("--");
    if (g.prlimit[0]) {
        /* RLIMIT_NPROC set inside the new user namespace counts this sandbox only. */
        char *np = arena_fmt(a, "--nproc=%u:%u", o->nproc, o->nproc);
        if (!np)
            return -ENOMEM;
        PUSH(g.prlimit);
        PUSH(np);
        PUSH("--");
    }
    for (size_t i = 0; i < argc; i++)
        PUSH(argv[i]);
#undef PUSH
    assert(n < cap);
    v[n] = NULL;
    *out = v;
    return 0;
}

/* ---- a run -------------------------------------------------------------- */

struct ah_sandbox {
    struct event_base *base;
    ah_sandbox_done_fn done; /* NULL once cancelled */
    void *ud;
    pid_t pid;
    int pidfd;      /* -1 once reaped, or when pidfds are missing (then the exit is polled) */
    bool reaped;    /* after it, pid and its group id may be anyone's: never signal them */
    int info_fd;    /* sandboxed: read end of bwrap's --info-fd, until read */
    int init_pidfd; /* sandboxed: bwrap's init (pid 1 inside), once known; else -1 */
    int in_fd, out_fd, err_fd;
    struct event *in_ev, *out_ev, *err_ev, *exit_ev, *timer_ev;
    char *in_data;
    size_t in_len, in_off;
    size_t max_output, kept;
    uint64_t start_ns;
    bool first_seen, output_seen, exited, timed_out, cancelled;
    ah_sandbox_result_t res;
    char *workdir; /* none mode: private cwd removed at the end */
};

static void free_event(struct event **ev)
{
    if (*ev) {
        event_free(*ev);
        *ev = NULL;
    }
}

static void close_stdin(ah_sandbox_t *h)
{
    free_event(&h->in_ev);
    close_fd(&h->in_fd);
    free(h->in_data);
    h->in_data = NULL;
}

static void close_streams(ah_sandbox_t *h)
{
    close_stdin(h);
    free_event(&h->out_ev);
    free_event(&h->err_ev);
    close_fd(&h->out_fd);
    close_fd(&h->err_fd);
}

static void free_handle(ah_sandbox_t *h)
{
    close_streams(h);
    free_event(&h->exit_ev);
    free_event(&h->timer_ev);
    close_fd(&h->pidfd);
    close_fd(&h->info_fd);
    close_fd(&h->init_pidfd);
    if (h->workdir) {
        nftw(h->workdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(h->workdir);
    }
    ah_buf_free(&h->res.out);
    ah_buf_free(&h->res.err);
    free(h);
    atomic_fetch_sub(&g_live, 1);
}

/* The parent pid of pid, from /proc; -1 when it cannot be read. */
static pid_t parent_of(pid_t pid)
{
    char path[48], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nPPid:");
    return p ? (pid_t)strtol(p + 6, NULL, 10) : -1;
}

/*
 * Learns bwrap's init from its --info-fd ({"child-pid": N, ...}, written
 * right after the clone). bwrap arms PDEATHSIG in its init only after that
 * init left our process group (--new-session); a bwrap killed in between
 * would leave the init running. Killing the init directly closes that
 * window. The pidfd is kept only if the process is still bwrap's child, so
 * it cannot be a stranger that reused a freed pid.
 */
static void find_init(ah_sandbox_t *h)
{
    if (h->info_fd < 0 || h->reaped)
        return;
    char buf[512];
    ssize_t n = read(h->info_fd, buf, sizeof(buf) - 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return; /* not written yet: the init is still in our process group */
    close_fd(&h->info_fd);
    if (n <= 0)
        return;
    buf[n] = '\0'; /* the first write holds child-pid whole (pipe writes < PIPE_BUF are atomic) */
    const char *p = strstr(buf, "\"child-pid\":");
    long pid = p ? strtol(p + 12, NULL, 10) : 0;
    if (pid <= 1 || pid > INT_MAX)
        return;
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0)
        return;
    if (parent_of((pid_t)pid) != h->pid) {
        close(fd);
        return;
    }
    h->init_pidfd = fd;
}

/*
 * SIGKILL to bwrap's init (a pid namespace whose init dies is emptied by the
 * kernel), to our process group (bwrap, its init until that calls setsid; in
 * none mode the command and its children) and to bwrap (whose death fires the
 * init's PDEATHSIG once armed). Never after the reap: the pid and group id
 * could then belong to someone else. docs/internals/sandbox.md, "Killing".
 */
static void kill_all(ah_sandbox_t *h)
{
    if (h->reaped)
        return;
    find_init(h);
    if (h->init_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, h->init_pidfd, SIGKILL, NULL, 0u);
    kill(-h->pid, SIGKILL);
    if (h->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, h->pidfd, SIGKILL, NULL, 0u);
    else
        kill(h->pid, SIGKILL);
}

static void note_first_byte(ah_sandbox_t *h)
{
    if (!h->first_seen) {
        h->first_seen = true;
        h->res.first_byte_ns = ah_mono_ns() - h->start_ns;
    }
}

const char *ah_sandbox_outcome(const ah_sandbox_result_t *res)
{
    if (res->timed_out)
        return "timeout";
    if (res->term_signal)
        return "killed";
    return res->exit_code == 0 ? "ok" : "error";
}

static void finish(ah_sandbox_t *h)
{
    close_streams(h);
    free_event(&h->timer_ev);
    ah_sandbox_result_t *r = &h->res;
    r->duration_ns = ah_mono_ns() - h->start_ns;
    r->timed_out = h->timed_out;
    if (!h->timed_out) {
        int sig = r->term_signal ? r->term_signal : r->exit_code > 128 ? r->exit_code - 128 : 0;
        if (sig == SIGXCPU)
            r->limit = AH_SANDBOX_LIMIT_CPU;
        else if (sig == SIGXFSZ)
            r->limit = AH_SANDBOX_LIMIT_FSIZE;
    }
    /* A run killed by its timeout before any output says nothing about start latency. */
    if (!h->timed_out || h->output_seen)
        ah_hist_observe(atomic_load(&m_start), (double)r->first_byte_ns / 1e9);
    const char *outcome = ah_sandbox_outcome(r);
    ah_counter_inc(atomic_load(outcome[0] == 'o'   ? &m_ok
                               : outcome[0] == 'e' ? &m_error
                               : outcome[0] == 't' ? &m_timeout
                                                   : &m_killed));
    h->done(h->ud, r);
    free_handle(h);
}

static bool streams_closed(const ah_sandbox_t *h)
{
    return h->out_fd < 0 && h->err_fd < 0;
}

static void read_stream(ah_sandbox_t *h, bool is_err)
{
    int *fd = is_err ? &h->err_fd : &h->out_fd;
    ah_buf_t *b = is_err ? &h->res.err : &h->res.out;
    bool *truncated = is_err ? &h->res.err_truncated : &h->res.out_truncated;
    char chunk[READ_CHUNK];
    /* A few reads per wakeup: fast producers must not starve the loop's other work. */
    for (int i = 0; i < 4; i++) {
        ssize_t n = read(*fd, chunk, sizeof(chunk));
        if (n > 0) {
            note_first_byte(h);
            h->output_seen = true;
            size_t room = h->max_output - h->kept;
            size_t keep = (size_t)n < room ? (size_t)n : room;
            if (keep && ah_buf_append(b, chunk, keep) != 0)
                keep = 0; /* out of memory: drop, and say so */
            h->kept += keep;
            if (keep < (size_t)n)
                *truncated = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        /* EOF (or a read error, treated the same: nothing more will come) */
        free_event(is_err ? &h->err_ev : &h->out_ev);
        close_fd(fd);
        if (h->exited && streams_closed(h))
            finish(h);
        return;
    }
}

static void on_stdout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    read_stream(arg, false);
}

static void on_stderr(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    read_stream(arg, true);
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_sandbox_t *h = arg;
    while (h->in_off < h->in_len) {
        ssize_t n = write(h->in_fd, h->in_data + h->in_off, h->in_len - h->in_off);
        if (n > 0) {
            h->in_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        break; /* EPIPE: the command does not read its stdin; not an error */
    }
    close_stdin(h);
}

static void arm_timer(ah_sandbox_t *h, double seconds)
{
    struct timeval tv;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    evtimer_add(h->timer_ev, &tv);
}

static void on_exit_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_sandbox_t *h = arg;
    /*
     * The run ends with its first process. What it left behind dies now,
     * before the reap (after it the group id could be reused): in none mode
     * its process group, sandboxed bwrap's init if it still lives (its death
     * empties the pid namespace).
     */
    idtype_t type = h->pidfd >= 0 ? (idtype_t)AH_P_PIDFD : P_PID;
    id_t id = h->pidfd >= 0 ? (id_t)h->pidfd : (id_t)h->pid;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    /* Look (WNOWAIT) before the kill and the reap: a poll tick may find it still running. */
    if (waitid(type, id, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
        if (errno == EINTR)
            return;
        /* ECHILD: reaped behind our back (SIGCHLD ignored, or a waitpid(-1)); status lost */
        si.si_code = CLD_KILLED;
        si.si_status = 0;
        h->reaped = true;
    } else if (si.si_pid == 0) {
        return; /* not exited yet */
    } else {
        kill(-h->pid, SIGKILL);
        siginfo_t reap;
        while (waitid(type, id, &reap, WEXITED | WNOHANG) != 0 && errno == EINTR) {
        }
        h->reaped = true;
    }
    free_event(&h->exit_ev);
    close_fd(&h->pidfd);
    h->exited = true;
    if (h->cancelled) {
        free_handle(h);
        return;
    }
    if (si.si_code == CLD_EXITED) {
        h->res.exit_code = si.si_status;
    } else {
        h->res.exit_code = -1;
        h->res.term_signal = si.si_status;
    }
    note_first_byte(h);
    close_stdin(h);
    if (streams_closed(h)) {
        finish(h);
        return;
    }
    /* Normally EOF follows at once; bound the wait for pipes an escapee holds open. */
    evtimer_del(h->timer_ev);
    arm_timer(h, EXIT_DRAIN_GRACE_MS / 1000.0);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ah_sandbox_t *h = arg;
    if (h->exited) {
        finish(h); /* drain grace over */
        return;
    }
    h->timed_out = true;
    kill_all(h);
}

void ah_sandbox_cancel(ah_sandbox_t *h)
{
    if (!h)
        return;
    h->cancelled = true;
    h->done = NULL;
    ah_counter_inc(atomic_load(&m_killed));
    close_streams(h);
    free_event(&h->timer_ev);
    if (h->reaped) {
        free_handle(h); /* only the drain grace was pending */
        return;
    }
    kill_all(h);
    /* exit_ev stays: on_exit_ev reaps and frees, without blocking this thread. */
}

size_t ah_sandbox_live(void)
{
    return atomic_load(&g_live);
}

bool ah_sandbox_available(void)
{
    return atomic_load_explicit(&g.ready, memory_order_acquire);
}

/* Zero fields -> defaults; checks what would make no sense. */
static int normalise(ah_sandbox_opts_t *o)
{
    if (isnan(o->cpu_s) || isnan(o->timeout_s) || o->cpu_s < 0 || o->timeout_s < 0 ||
        o->cpu_s > 1e6 || o->timeout_s > 1e7)
        return -EINVAL;
    if (!o->memory_mb)
        o->memory_mb = AH_SANDBOX_DEFAULT_MEMORY_MB;
    if (o->cpu_s == 0)
        o->cpu_s = AH_SANDBOX_DEFAULT_CPU_S;
    if (!o->nproc)
        o->nproc = AH_SANDBOX_DEFAULT_NPROC;
    if (!o->fsize_mb)
        o->fsize_mb = AH_SANDBOX_DEFAULT_FSIZE_MB;
    if (!o->nofile)
        o->nofile = AH_SANDBOX_DEFAULT_NOFILE;
    if (o->timeout_s == 0)
        o->timeout_s = AH_SANDBOX_DEFAULT_TIMEOUT_S;
    if (!o->max_output_bytes)
        o->max_output_bytes = AH_SANDBOX_DEFAULT_MAX_OUTPUT;
    if (!o->workspace_mb)
        o->workspace_mb = AH_SANDBOX_DEFAULT_WORKSPACE_MB;
    if (o->max_output_bytes > AH_SANDBOX_MAX_OUTPUT || o->memory_mb > (1u << 24) ||
        o->fsize_mb > (1u << 24) || o->workspace_mb > (1u << 24) || o->nofile > (1u << 20))
        return -E2BIG;
    size_t nb = count_list(o->ro_binds);
    if (nb > AH_SANDBOX_MAX_BINDS || count_list(o->env) > AH_SANDBOX_MAX_ENV)
        return -E2BIG;
    for (size_t i = 0; i < nb; i++) {
        size_t l = strlen(o->ro_binds[i]);
        if (o->ro_binds[i][0] != '/' || l >= PATH_MAX)
            return -EINVAL;
    }
    return 0;
}

static void set_limits(spawn_req_t *r, const ah_sandbox_opts_t *o)
{
    int n = 0;
#define LIM(res, soft, hard)                                                                       \
    do {                                                                                           \
        r->lim_res[n] = (res);                                                                     \
        r->lim[n].rlim_cur = (rlim_t)(soft);                                                       \
        r->lim[n].rlim_max = (rlim_t)(hard);                                                       \
        n++;                                                                                       \
    } while (0)
    rlim_t cpu = (rlim_t)ceil(o->cpu_s);
    LIM(RLIMIT_AS, (rlim_t)o->memory_mb << 20, (rlim_t)o->memory_mb << 20);
    LIM(RLIMIT_CPU, cpu, cpu + 1); /* SIGXCPU first, SIGKILL a second later */
    LIM(RLIMIT_FSIZE, (rlim_t)o->fsize_mb << 20, (rlim_t)o->fsize_mb << 20);
    LIM(RLIMIT_NOFILE, o->nofile, o->nofile);
    LIM(RLIMIT_CORE, 0, 0);
    /*
     * Sandboxed, RLIMIT_NPROC is set inside by prlimit instead: set here, on
     * bwrap, it would also cap the host-wide process count of the uid that all
     * sandboxes share (the kernel checks every user namespace level).
     */
    if (o->none)
        LIM(RLIMIT_NPROC, o->nproc, o->nproc);
#undef LIM
    r->nlim = n;
}

static int start_run(ah_loop_t *loop, const ah_sandbox_opts_t *opts, const char *const *argv,
                     const char *stdin_data, size_t stdin_len, ah_sandbox_done_fn done, void *ud,
                     ah_sandbox_t **handle, bool probing)
{
    if (handle)
        *handle = NULL;
    if (!loop || !argv || !argv[0] || !argv[0][0] || !done || (stdin_len && !stdin_data))
        return -EINVAL;
    ah_sandbox_opts_t o = opts ? *opts : (ah_sandbox_opts_t){0};
    int rc = normalise(&o);
    if (rc)
        return rc;
    size_t argc = count_list(argv);
    size_t bytes = 0;
    for (size_t i = 0; i < argc; i++)
        bytes += strlen(argv[i]) + 1;
    if (argc > AH_SANDBOX_MAX_ARGS || bytes > AH_SANDBOX_MAX_ARGV_SIZE ||
        stdin_len > AH_SANDBOX_MAX_STDIN)
        return -E2BIG;
    if (!o.none && !probing && !ah_sandbox_available())
        return -ENOTSUP;
    metrics_init();

    ah_sandbox_t *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    atomic_fetch_add(&g_live, 1);
    h->base = ah_loop_base(loop);
    h->done = done;
    h->ud = ud;
    h->pidfd = h->in_fd = h->out_fd = h->err_fd = h->info_fd = h->init_pidfd = -1;
    h->max_output = o.max_output_bytes;
    h->res.exit_code = -1;
    ah_buf_init(&h->res.out, 0);
    ah_buf_init(&h->res.err, 0);

    ah_arena_t a;
    ah_arena_init(&a, 8192, 0);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, info[2] = {-1, -1}, sec = -1;
    spawn_req_t req;
    memset(&req, 0, sizeof(req));

    const char *home = "/workspace";
    if (o.none) {
        if (o.cwd) {
            home = o.cwd;
        } else {
            h->workdir = strdup("/tmp/agenthub-exec.XXXXXX");
            if (!h->workdir) {
                rc = -ENOMEM;
                goto fail;
            }
            if (!mkdtemp(h->workdir)) {
                rc = -errno;
                free(h->workdir);
                h->workdir = NULL;
                goto fail;
            }
            home = h->workdir;
        }
        req.cwd = home;
    }
    char **envp;
    rc = build_env(&a, &o, home, &bytes, &envp);
    if (rc)
        goto fail;
    if (bytes > AH_SANDBOX_MAX_ARGV_SIZE) {
        rc = -E2BIG;
        goto fail;
    }
    if (o.none) {
        rc = resolve_command(&a, argv[0], envp, &req.path);
        req.argv = (char *const *)argv;
    } else {
        char **bargv = NULL;
        rc = build_bwrap_argv(&a, &o, argv, argc, &bargv);
        req.path = g.info.bwrap;
        req.argv = bargv;
    }
    if (rc)
        goto fail;
    req.envp = envp;

    if (stdin_len) {
        h->in_data = malloc(stdin_len);
        if (!h->in_data) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(h->in_data, stdin_data, stdin_len);
        h->in_len = stdin_len;
    }
    if ((rc = pipe_high(in)) || (rc = pipe_high(out)) || (rc = pipe_high(err)))
        goto fail;
    req.seccomp_fd = req.info_fd = -1;
    if (!o.none) {
        /* bwrap reads the program from fd 3 to EOF; one memfd per run (a shared one
           would share its file offset between concurrent runs). */
        sec = memfd_create("ah-seccomp", MFD_CLOEXEC);
        if (sec >= 0)
            sec = fd_high(sec);
        if (sec < 0) {
            rc = -errno;
            goto fail;
        }
        if (write(sec, g.bpf.data, g.bpf.len) != (ssize_t)g.bpf.len ||
            lseek(sec, 0, SEEK_SET) != 0) {
            rc = -EIO;
            goto fail;
        }
        req.seccomp_fd = sec;
        if ((rc = pipe_high(info)))
            goto fail;
        req.info_fd = info[1];
        req.drop_root = g.info.drop_root;
    }
    req.in_fd = in[0];
    req.out_fd = out[1];
    req.err_fd = err[1];
    set_limits(&req, &o);

    h->start_ns = ah_mono_ns();
    rc = spawn(&req, &h->pid, &h->pidfd);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&sec);
    close_fd(&info[1]);
    ah_arena_free(&a);
    if (rc)
        goto fail_fds;
    h->res.pid = h->pid;
    h->in_fd = in[1];
    h->out_fd = out[0];
    h->err_fd = err[0];
    h->info_fd = info[0];
    in[1] = out[0] = err[0] = info[0] = -1;
    if (fcntl(h->in_fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(h->out_fd, F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(h->err_fd, F_SETFL, O_NONBLOCK) != 0 ||
        (h->info_fd >= 0 && fcntl(h->info_fd, F_SETFL, O_NONBLOCK) != 0)) {
        rc = -errno;
        goto fail_spawned;
    }
    h->out_ev = event_new(h->base, h->out_fd, EV_READ | EV_PERSIST, on_stdout, h);
    h->err_ev = event_new(h->base, h->err_fd, EV_READ | EV_PERSIST, on_stderr, h);
    if (h->pidfd >= 0)
        h->exit_ev = event_new(h->base, h->pidfd, EV_READ | EV_PERSIST, on_exit_ev, h);
    else
        h->exit_ev = event_new(h->base, -1, EV_PERSIST, on_exit_ev, h);
    h->timer_ev = evtimer_new(h->base, on_timer, h);
    if (h->in_len)
        h->in_ev = event_new(h->base, h->in_fd, EV_WRITE | EV_PERSIST, on_stdin, h);
    struct timeval poll_tv = {0, EXIT_POLL_MS * 1000};
    if (!h->out_ev || !h->err_ev || !h->exit_ev || !h->timer_ev || (h->in_len && !h->in_ev) ||
        event_add(h->out_ev, NULL) || event_add(h->err_ev, NULL) ||
        event_add(h->exit_ev, h->pidfd >= 0 ? NULL : &poll_tv) ||
        (h->in_ev && event_add(h->in_ev, NULL))) {
        rc = -ENOMEM;
        goto fail_spawned;
    }
    if (!h->in_len)
        close_fd(&h->in_fd); /* EOF at once */
    arm_timer(h, o.timeout_s);
    if (handle)
        *handle = h;
    return 0;

fail_spawned:
    /* Just spawned and SIGKILLed: the reap is immediate. Error path only. */
    kill_all(h);
    while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    h->reaped = true;
    free_handle(h);
    return rc;
fail:
    ah_arena_free(&a);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&sec);
    close_fd(&info[1]);
fail_fds:
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&err[0]);
    close_fd(&info[0]);
    free_handle(h);
    return rc;
}

int ah_sandbox_run(ah_loop_t *loop, const ah_sandbox_opts_t *opts, const char *const *argv,
                   const char *stdin_data, size_t stdin_len, ah_sandbox_done_fn done, void *ud,
                   ah_sandbox_t **handle)
{
    return start_run(loop, opts, argv, stdin_data, stdin_len, done, ud, handle, false);
}

/* ---- probe -------------------------------------------------------------- */

typedef struct probe_run {
    bool done;
    int exit_code;
    bool timed_out;
    uint64_t duration_ns;
    ah_buf_t out, err;
} probe_run_t;

static void probe_done(void *ud, ah_sandbox_result_t *res)
{
    probe_run_t *p = ud;
    p->done = true;
    p->exit_code = res->exit_code;
    p->timed_out = res->timed_out;
    p->duration_ns = res->duration_ns;
    p->out = res->out; /* taken over; the module frees the emptied buffers */
    p->err = res->err;
    ah_buf_init(&res->out, 0);
    ah_buf_init(&res->err, 0);
}

static void probe_run_free(probe_run_t *p)
{
    ah_buf_free(&p->out);
    ah_buf_free(&p->err);
}

/* Runs argv to completion on a private loop (blocking: startup only). */
static int probe_exec(ah_loop_t *loop, bool none, const char *const *argv, probe_run_t *p)
{
    memset(p, 0, sizeof(*p));
    /* cwd "/": the probe must not depend on a writable /tmp */
    ah_sandbox_opts_t o = {
        .none = none, .timeout_s = PROBE_TIMEOUT_S, .max_output_bytes = 65536, .cwd = "/"};
    int rc = start_run(loop, &o, argv, NULL, 0, probe_done, p, NULL, true);
    if (rc)
        return rc;
    while (!p->done)
        event_base_loop(ah_loop_base(loop), EVLOOP_ONCE);
    return 0;
}

static bool buf_has(const ah_buf_t *b, const char *s)
{
    return b->len && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* The first line of b, without the newline, into dst. */
static void first_line(const ah_buf_t *b, char *dst, size_t n)
{
    size_t l = 0;
    while (l < b->len && b->data[l] != '\n' && l + 1 < n)
        l++;
    if (l)
        memcpy(dst, b->data, l);
    dst[l] = '\0';
}

static bool find_bwrap(char *dst, size_t n)
{
    const char *path = getenv("PATH");
    const char *lists[] = {path ? path : "", "/usr/bin:/bin:/usr/local/bin"};
    for (int k = 0; k < 2; k++) {
        const char *p = lists[k];
        while (*p) {
            const char *end = strchr(p, ':');
            size_t dl = end ? (size_t)(end - p) : strlen(p);
            if (dl > 0 && p[0] == '/') {
                int w = snprintf(dst, n, "%.*s/bwrap", (int)dl, p);
                if (w > 0 && (size_t)w < n && access(dst, X_OK) == 0)
                    return true;
            }
            p += dl;
            if (*p == ':')
                p++;
        }
    }
    dst[0] = '\0';
    return false;
}

static void read_layout(void)
{
    for (int i = 0; i < N_TOP; i++) {
        struct stat st;
        g.top[i].is_link = g.top[i].is_dir = false;
        if (lstat(top_paths[i], &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t l = readlink(top_paths[i], g.top[i].target, sizeof(g.top[i].target) - 1);
            if (l > 0) {
                g.top[i].target[l] = '\0';
                g.top[i].is_link = true;
            }
        } else if (S_ISDIR(st.st_mode)) {
            g.top[i].is_dir = true;
        }
    }
    for (int i = 0; i < N_ETC; i++)
        g.etc_exists[i] = access(etc_paths[i], F_OK) == 0;
    if (access("/usr/bin/prlimit", X_OK) == 0)
        snprintf(g.prlimit, sizeof(g.prlimit), "%s", "/usr/bin/prlimit");
    else
        g.prlimit[0] = '\0';
}

#define FIX_HINT "; fix that, or set `sandbox: none` on the exec tools that may run unsandboxed"

static int probe_locked(ah_sandbox_info_t *in)
{
    if (!find_bwrap(in->bwrap, sizeof(in->bwrap))) {
        snprintf(in->reason, sizeof(in->reason),
                 "bubblewrap (bwrap) not found in PATH or /usr/bin: install the bubblewrap "
                 "package" FIX_HINT);
        return -ENOTSUP;
    }
    ah_buf_free(&g.bpf);
    int rc = ah_sandbox_seccomp_export(&g.bpf);
    if (rc) {
        snprintf(in->reason, sizeof(in->reason), "libseccomp could not build the filter: %s",
                 strerror(-rc));
        return rc == -ENOMEM ? rc : -ENOTSUP;
    }
    read_layout();
    in->nproc_inside = g.prlimit[0] != '\0';
    in->drop_root = geteuid() == 0;

    ah_loop_t *loop = ah_loop_new();
    if (!loop)
        return -ENOMEM;
    probe_run_t p;
    const char *help[] = {in->bwrap, "--help", NULL};
    rc = probe_exec(loop, true, help, &p);
    if (rc) {
        snprintf(in->reason, sizeof(in->reason), "cannot run %s: %s" FIX_HINT, in->bwrap,
                 strerror(-rc));
        goto out;
    }
    in->tmpfs_size = buf_has(&p.out, "--size");
    in->disable_userns = buf_has(&p.out, "--disable-userns");
    probe_run_free(&p);
    const char *ver[] = {in->bwrap, "--version", NULL};
    if (probe_exec(loop, true, ver, &p) == 0) {
        char line[64];
        first_line(&p.out, line, sizeof(line));
        const char *v = strrchr(line, ' ');
        snprintf(in->version, sizeof(in->version), "%.31s", v ? v + 1 : line);
        probe_run_free(&p);
    }

    /* The real thing: a sandboxed command that reports its own seccomp and no_new_privs. */
    const char *status[] = {"cat", "/proc/self/status", NULL};
    for (;;) {
        g.info = *in; /* build_bwrap_argv reads the features from g.info */
        rc = probe_exec(loop, false, status, &p);
        if (rc) {
            snprintf(in->reason, sizeof(in->reason), "cannot start %s: %s" FIX_HINT, in->bwrap,
                     strerror(-rc));
            goto out;
        }
        in->probe_ms = (double)p.duration_ns / 1e6;
        if (p.exit_code == 0 && buf_has(&p.out, "\nSeccomp:\t2") &&
            buf_has(&p.out, "\nNoNewPrivs:\t1"))
            break;
        if (in->disable_userns) {
            in->disable_userns = false; /* an older kernel may refuse it; the filter still
                                           denies new namespaces */
            probe_run_free(&p);
            continue;
        }
        char line[128];
        first_line(&p.err, line, sizeof(line));
        bool ns = strstr(line, "namespace") != NULL;
        snprintf(in->reason, sizeof(in->reason), "sandbox test run failed (%s %d)%s%s%s" FIX_HINT,
                 p.timed_out ? "timed out," : "exit", p.exit_code, line[0] ? ": " : "", line,
                 ns ? " (allow unprivileged user namespaces: sysctl user.max_user_namespaces)"
                    : "");
        probe_run_free(&p);
        rc = -ENOTSUP;
        goto out;
    }
    probe_run_free(&p);
    in->ok = true;
    rc = 0;
out:
    ah_loop_free(loop);
    return rc;
}

int ah_sandbox_probe(ah_sandbox_info_t *info)
{
    metrics_init();
    pthread_mutex_lock(&g.mu);
    int rc = 0;
    if (!ah_sandbox_available()) {
        ah_sandbox_info_t in;
        memset(&in, 0, sizeof(in));
        rc = probe_locked(&in);
        in.ok = rc == 0;
        g.info = in;
        if (rc == 0)
            atomic_store_explicit(&g.ready, true, memory_order_release);
    }
    if (info)
        *info = g.info;
    pthread_mutex_unlock(&g.mu);
    return rc;
}

void ah_sandbox_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    atomic_store(&g.ready, false);
    ah_buf_free(&g.bpf);
    memset(&g.info, 0, sizeof(g.info));
    pthread_mutex_unlock(&g.mu);
    pthread_mutex_lock(&m_mu);
    atomic_store(&m_start, NULL);
    atomic_store(&m_ok, NULL);
    atomic_store(&m_error, NULL);
    atomic_store(&m_timeout, NULL);
    atomic_store(&m_killed, NULL);
    pthread_mutex_unlock(&m_mu);
}
