/*
 * sandbox.h - run a command for an exec tool, contained, without blocking the loop.
 *
 * A sandboxed run is bubblewrap (bwrap) with new user, pid, ipc, uts and
 * cgroup namespaces (and a new network namespace holding only a loopback
 * unless the tool allows the network), /usr and a few /etc files bound
 * read-only, fresh size-capped tmpfs mounts on /workspace (the cwd and HOME)
 * and /tmp, a seccomp filter that fails namespace, mount, ptrace, bpf, keyring,
 * module and similar syscalls with EPERM, rlimits (address space, CPU, file
 * size, open files, and processes counted inside the sandbox), a wall timeout
 * that kills the whole sandbox, capped stdout/stderr and an environment of
 * PATH, HOME, LANG plus what the tool allows. docs/internals/sandbox.md has
 * the why of each choice.
 *
 * Everything runs on the caller's ah_loop_t: stdin is written and
 * stdout/stderr read through non-blocking pipes, the exit is seen through a
 * pidfd, the timeout is a libevent timer. No SIGCHLD handler is used, but the
 * process must not ignore SIGCHLD (exit statuses would be lost), no code in it
 * may wait for arbitrary children (waitpid(-1)), and it must ignore SIGPIPE
 * (as `agenthub serve` does) because a child that stops reading its stdin
 * makes the next write fail with EPIPE.
 *
 * Lifecycle: ah_sandbox_probe() once at startup (blocking, a few ms), then
 * ah_sandbox_run() on a loop thread -> done callback exactly once on that
 * thread, or ah_sandbox_cancel() -> no callback. The module-wide state is
 * written only by the probe and read-only afterwards, so runs on any number
 * of loops need no lock.
 */
#ifndef AH_SANDBOX_H
#define AH_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/loop.h"

/* Defaults taken by zero fields of ah_sandbox_opts_t. */
#define AH_SANDBOX_DEFAULT_MEMORY_MB    256
#define AH_SANDBOX_DEFAULT_CPU_S        10
#define AH_SANDBOX_DEFAULT_NPROC        64
#define AH_SANDBOX_DEFAULT_FSIZE_MB     64
#define AH_SANDBOX_DEFAULT_NOFILE       256
#define AH_SANDBOX_DEFAULT_TIMEOUT_S    30
#define AH_SANDBOX_DEFAULT_MAX_OUTPUT   (1024 * 1024)
#define AH_SANDBOX_DEFAULT_WORKSPACE_MB 64

/* Bounds on what a caller may ask for; past them ah_sandbox_run returns -E2BIG. */
#define AH_SANDBOX_MAX_ARGS      1024         /* argv entries */
#define AH_SANDBOX_MAX_ARGV_SIZE (256 * 1024) /* bytes of argv + env strings */
#define AH_SANDBOX_MAX_ENV       64           /* opts.env entries */
#define AH_SANDBOX_MAX_BINDS     32           /* opts.ro_binds entries */
#define AH_SANDBOX_MAX_STDIN     (64 * 1024 * 1024)
#define AH_SANDBOX_MAX_OUTPUT    (256 * 1024 * 1024)

/**
 * Host uid/gid the sandbox runs as when agenthub runs as root: the kernel
 * never applies RLIMIT_NPROC to the host's root user (even from inside a user
 * namespace), so a root-owned sandbox could fork without bound.
 */
#define AH_SANDBOX_ROOT_DROP_ID 65534

typedef struct ah_sandbox ah_sandbox_t;

/** What one run may do. Zero fields take the AH_SANDBOX_DEFAULT_* values. */
typedef struct ah_sandbox_opts {
    /*
     * `sandbox: none`: run the command directly, as the server's user, with
     * the rlimits, timeout, output caps, scrubbed environment and process-group
     * kill, but no namespaces, no seccomp and the host's whole filesystem.
     */
    bool none;
    bool network;            /* keep the host network; default: a private loopback only */
    unsigned memory_mb;      /* RLIMIT_AS of each process, MiB */
    double cpu_s;            /* RLIMIT_CPU of each process (rounded up; SIGXCPU, then SIGKILL
                                one second later) */
    unsigned nproc;          /* processes + threads inside the sandbox, bwrap's init included;
                                in none mode RLIMIT_NPROC of the server's uid (root: no effect) */
    unsigned fsize_mb;       /* RLIMIT_FSIZE: largest file a process may write */
    unsigned nofile;         /* RLIMIT_NOFILE */
    double timeout_s;        /* wall clock from spawn; then the whole sandbox is killed */
    size_t max_output_bytes; /* stdout + stderr kept, in arrival order; the rest is read and
                                dropped */
    unsigned workspace_mb;   /* size of each tmpfs: /workspace, /tmp, /dev/shm */
    /* NULL-terminated absolute host paths bound read-only at the same path; NULL = none. */
    const char *const *ro_binds;
    /* NULL-terminated: "NAME=value" sets NAME, "NAME" copies the server's NAME if set. */
    const char *const *env;
    /* none mode: working directory (and HOME); NULL = a fresh private directory under /tmp,
       removed after the run. Ignored when sandboxed (always /workspace). */
    const char *cwd;
} ah_sandbox_opts_t;

/** Which rlimit ended the run, when it can be told (best effort). */
typedef enum {
    AH_SANDBOX_LIMIT_NONE = 0,
    AH_SANDBOX_LIMIT_CPU,   /* SIGXCPU: cpu_s used */
    AH_SANDBOX_LIMIT_FSIZE, /* SIGXFSZ: a file grew past fsize_mb */
} ah_sandbox_limit_t;

/** The outcome of a run, handed to the done callback. */
typedef struct ah_sandbox_result {
    /*
     * Exit status 0..255, or -1 when term_signal is set. Sandboxed, a command
     * killed by signal N shows as 128 + N (bwrap reports it so, as a shell
     * does); term_signal is set only when the process we waited for (bwrap,
     * or the command itself in none mode) was killed, e.g. by the timeout.
     */
    int exit_code;
    int term_signal;
    bool timed_out;           /* the wall timeout fired and killed the run */
    ah_sandbox_limit_t limit; /* rlimit that ended it, if known */
    ah_buf_t out;             /* stdout kept (binary-safe; len is the truth) */
    ah_buf_t err;             /* stderr kept */
    bool out_truncated;       /* stdout bytes were dropped past max_output_bytes */
    bool err_truncated;
    uint64_t duration_ns;   /* spawn to the end of the run */
    uint64_t first_byte_ns; /* spawn to the first output byte or the exit, whichever came first */
    pid_t pid;              /* host pid of the process started (bwrap in sandbox mode) */
} ah_sandbox_result_t;

/**
 * Called once on the loop's thread when the run ended. res and its buffers are
 * owned by the module and freed when the callback returns, except what the
 * callback takes with ah_buf_steal(&res->out) / (&res->err). The handle is
 * already invalid here: do not cancel it. Starting new runs is fine.
 */
typedef void (*ah_sandbox_done_fn)(void *ud, ah_sandbox_result_t *res);

/** What ah_sandbox_probe found. */
typedef struct ah_sandbox_info {
    bool ok;             /* sandboxed runs work here */
    char reason[512];    /* when !ok: what is wrong and how to fix it; "" when ok */
    char bwrap[256];     /* bwrap used ("" when not found) */
    char version[32];    /* bwrap's version ("0.8.0") */
    bool tmpfs_size;     /* this bwrap caps tmpfs sizes (--size) */
    bool disable_userns; /* this bwrap also forbids nested user namespaces (--disable-userns) */
    bool nproc_inside;   /* RLIMIT_NPROC is applied inside the sandbox (util-linux prlimit) */
    bool drop_root;      /* running as root: sandboxes run as uid/gid AH_SANDBOX_ROOT_DROP_ID */
    double probe_ms;     /* how long the probe run took */
} ah_sandbox_info_t;

/**
 * Checks that sandboxed runs work here: finds bwrap, compiles the seccomp
 * filter, reads bwrap's features and runs one real sandboxed command, checking
 * that the filter and no_new_privs are in force. Blocking (a private loop, a
 * few ms); call once at startup before any run, from one thread. After a
 * success later calls return the same answer at once; after a failure they
 * probe again. Registers the module's metrics.
 * Returns 0 when sandboxed runs work, -ENOTSUP when they do not (info->reason
 * says why), -ENOMEM. info may be NULL.
 */
int ah_sandbox_probe(ah_sandbox_info_t *info);

/** True once a probe succeeded. Thread-safe. */
bool ah_sandbox_available(void);

/**
 * Starts argv (argv[0] is looked up in PATH=/usr/bin:/bin, inside the sandbox
 * when sandboxed) with stdin_data[0..stdin_len) as its stdin (copied; then
 * EOF). Must be called on loop's thread. On success *handle (may be NULL) is
 * valid until done is called or ah_sandbox_cancel returns; done is never
 * called from inside this function.
 *
 * Returns 0, -EINVAL (empty argv, bad env name, relative bind, NaN limits),
 * -E2BIG (past an AH_SANDBOX_MAX_* bound), -ENOTSUP (!opts->none and no probe
 * succeeded: the exec tool must refuse), -ENOENT (none mode: command not
 * found), -ENOMEM, or the -errno of the spawn. A sandboxed command that does
 * not exist inside the sandbox is not an error here: it exits non-zero (127)
 * with the reason on stderr. opts may be NULL (all defaults, sandboxed).
 */
int ah_sandbox_run(ah_loop_t *loop, const ah_sandbox_opts_t *opts, const char *const *argv,
                   const char *stdin_data, size_t stdin_len, ah_sandbox_done_fn done, void *ud,
                   ah_sandbox_t **handle);

/**
 * Kills the run (the whole sandbox, or the command's process group in none
 * mode) and guarantees done will not be called. On the loop's thread only.
 * The process is reaped and the handle's memory released a moment later on
 * the loop (see ah_sandbox_live), without blocking.
 */
void ah_sandbox_cancel(ah_sandbox_t *h);

/**
 * Runs not yet released in this process: started and not finished, plus
 * cancelled ones not yet reaped. A loop with live runs must keep running until
 * this drops to 0 before it is freed (graceful shutdown, tests).
 */
size_t ah_sandbox_live(void);

/** The runs_total label of a result: "ok" (exit 0), "error", "timeout" or "killed". */
const char *ah_sandbox_outcome(const ah_sandbox_result_t *res);

/**
 * Compiles the seccomp filter given to bwrap (seccomp.c) and appends the BPF
 * program (struct sock_filter[]) to out. 0, -ENOMEM, or the -errno of libseccomp.
 */
int ah_sandbox_seccomp_export(ah_buf_t *out);

/** Frees the probe's state and forgets the metric handles; call before ah_metrics_shutdown. */
void ah_sandbox_shutdown(void);

#endif
