/*
 * seccomp.c - the seccomp filter bwrap loads before it execs a sandboxed
 * command (sandbox.h, docs/internals/sandbox.md "seccomp").
 *
 * Default allow, and EPERM (not kill: programs that probe a feature must fail
 * cleanly and go on) for what a tool never needs and what widens the kernel
 * attack surface or escapes the namespaces: new namespaces, mounts, tracing
 * other processes, bpf, keyrings, kernel modules, kexec, reboot, swap, clock
 * changes, perf, userfaultfd, io_uring, file handles, ...
 * Syscalls are named as strings and resolved by libseccomp at run time, so a
 * name this libseccomp or architecture does not know is skipped instead of
 * failing the build. Syscalls of another ABI (i386 via int 0x80) hit
 * libseccomp's bad-arch action, which kills the process.
 */
#include "agents/sandbox.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <unistd.h>

static const char *const denied[] = {
    /* namespaces: no nested sandboxes or user namespaces (clone flags below) */
    "unshare", "setns",
    /* filesystem views */
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    /* other processes' memory */
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    /* kernel attack surface */
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "fanotify_init", "open_by_handle_at",
    "name_to_handle_at", "lookup_dcookie", "uselib",
    /* whole-machine state */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "nfsservctl", "sethostname",
    "setdomainname"};

/* clone(2) flags that create namespaces; clone's flags are argument 0 on x86_64 and arm64. */
static const uint64_t clone_ns_flags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,   CLONE_NEWNET,
                                          CLONE_NEWUTS,  CLONE_NEWIPC, CLONE_NEWCGROUP};

static int add_rules(scmp_filter_ctx ctx)
{
    int rc;
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* unknown here: nothing to deny */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(clone_ns_flags) / sizeof(clone_ns_flags[0]); i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]));
        if (rc < 0)
            return rc;
    }
    /*
     * clone3 passes its flags in a struct the filter cannot read. ENOSYS makes
     * glibc (and other runtimes) fall back to clone, whose flags are checked.
     */
    int nr = seccomp_syscall_resolve_name("clone3");
    if (nr != __NR_SCMP_ERROR) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
        if (rc < 0)
            return rc;
    }
    /*
     * personality: only PER_LINUX. The other values turn off ASLR
     * (ADDR_NO_RANDOMIZE) or make data executable (READ_IMPLIES_EXEC), which
     * helps exploits; this also refuses the 0xffffffff query, as flatpak does.
     */
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                          SCMP_A0(SCMP_CMP_NE, PER_LINUX, 0));
    if (rc < 0)
        return rc;
    /* Pushing bytes into a terminal's input queue (bwrap's --new-session also guards this). */
    static const unsigned long tty_inject[] = {TIOCSTI, TIOCLINUX};
    for (size_t i = 0; i < 2; i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, tty_inject[i]));
        if (rc < 0)
            return rc;
    }
    return 0;
}

int ah_sandbox_seccomp_export(ah_buf_t *out)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return -ENOMEM;
    int fd = -1;
    int rc = add_rules(ctx);
    if (rc < 0)
        goto done;
    /* libseccomp 2.5 exports only to a file descriptor: go through a memfd. */
    fd = memfd_create("ah-seccomp-export", MFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto done;
    }
    rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0)
        goto done;
    off_t size = lseek(fd, 0, SEEK_CUR);
    if (size <= 0 || size > 1024 * 1024 || lseek(fd, 0, SEEK_SET) != 0) {
        rc = size < 0 ? -errno : -EIO;
        goto done;
    }
    rc = ah_buf_reserve(out, (size_t)size);
    if (rc < 0)
        goto done;
    size_t got = 0;
    while (got < (size_t)size) {
        ssize_t n = read(fd, out->data + out->len + got, (size_t)size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto done;
        }
        got += (size_t)n;
    }
    out->len += got;
    out->data[out->len] = '\0';
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    return rc;
}
