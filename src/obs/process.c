/* process.c - process metrics computed at scrape from /proc/self; see process.h. */
#include "obs/process.h"

#include "core/log.h"
#include "obs/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef AH_VERSION
#define AH_VERSION "unknown"
#endif

#if defined(__clang__)
#define AH_COMPILER __VERSION__ /* "Debian Clang 14.0.6" */
#elif defined(__GNUC__)
#define AH_COMPILER "gcc " __VERSION__
#else
#define AH_COMPILER "unknown"
#endif

/* Set by ah_process_metrics_register before the callbacks are registered (and
 * so before any scrape can call them: registration and render share a mutex). */
static double g_start_boot_s; /* process start, seconds since boot */
static double g_start_time_s; /* process start, seconds since the epoch */

typedef struct {
    unsigned long long utime, stime; /* clock ticks */
    unsigned long long starttime;    /* clock ticks since boot */
    unsigned long long vsize;        /* bytes */
    unsigned long long rss;          /* pages */
} proc_stat_t;

/* Reads /proc/self/stat (proc(5)). 0 or -errno / -EIO. */
static int read_stat(proc_stat_t *ps)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? -err : -EIO;
    buf[n] = '\0';
    /* comm (field 2) may hold spaces and ')': fields resume after the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return -EIO;
    p++;
    memset(ps, 0, sizeof *ps);
    for (int field = 3; field <= 24; field++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -EIO;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        switch (field) {
        case 14:
            ps->utime = v;
            break;
        case 15:
            ps->stime = v;
            break;
        case 22:
            ps->starttime = v;
            break;
        case 23:
            ps->vsize = v;
            break;
        case 24:
            ps->rss = v;
            break;
        default:
            break;
        }
        p += strcspn(p, " ");
    }
    return 0;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ticks_per_s(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)hz : 100.0;
}

static double rss_bytes(void *ud)
{
    proc_stat_t ps;
    long page = sysconf(_SC_PAGESIZE);
    return read_stat(&ps) || page <= 0 ? NAN : (double)ps.rss * (double)page;
}

static double vsize_bytes(void *ud)
{
    proc_stat_t ps;
    return read_stat(&ps) ? NAN : (double)ps.vsize;
}

static double cpu_seconds(void *ud)
{
    proc_stat_t ps;
    return read_stat(&ps) ? NAN : (double)(ps.utime + ps.stime) / ticks_per_s();
}

static double open_fds(void *ud)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    int self = dirfd(d);
    double n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end == '\0' && fd != self) /* not the fd this listing holds */
            n++;
    }
    closedir(d);
    return n;
}

static double max_fds(void *ud)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

static double start_time(void *ud)
{
    return g_start_time_s;
}

static double uptime(void *ud)
{
    /* CLOCK_BOOTTIME is the clock /proc starttime counts in; it does not jump. */
    return clock_s(CLOCK_BOOTTIME) - g_start_boot_s;
}

int ah_process_metrics_register(void)
{
    proc_stat_t ps;
    if (read_stat(&ps) == 0) {
        g_start_boot_s = (double)ps.starttime / ticks_per_s();
    } else {
        g_start_boot_s = clock_s(CLOCK_BOOTTIME); /* no /proc: count from now */
    }
    g_start_time_s = clock_s(CLOCK_REALTIME) - (clock_s(CLOCK_BOOTTIME) - g_start_boot_s);

    static const struct {
        bool counter;
        const char *name, *help;
        double (*fn)(void *);
    } fns[] = {
        {false, "process_resident_memory_bytes", "Resident memory size in bytes.", rss_bytes},
        {false, "process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize_bytes},
        {true, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
         cpu_seconds},
        {false, "process_open_fds", "Number of open file descriptors.", open_fds},
        {false, "process_max_fds", "Maximum number of open file descriptors.", max_fds},
        {false, "process_start_time_seconds",
         "Start time of the process since unix epoch in seconds.", start_time},
        {false, "agenthub_uptime_seconds", "Seconds since the agenthub process started.", uptime},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        int rc = fns[i].counter ? ah_metrics_counter_fn(fns[i].name, fns[i].help, fns[i].fn, NULL)
                                : ah_metrics_gauge_fn(fns[i].name, fns[i].help, fns[i].fn, NULL);
        if (rc)
            return rc;
    }
    ah_metric_family_t *f =
        ah_metrics_gauge("agenthub_build_info",
                         "Build information; the value is always 1, the labels carry the data.", 2,
                         (const char *[]){"version", "compiler"});
    ah_metric_series_t *s = ah_metrics_series(f, AH_VERSION, AH_COMPILER);
    if (!s)
        return -ENOMEM;
    ah_gauge_set(s, 1);
    return 0;
}

long ah_process_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    rlim_t want = rl.rlim_max;
    if (want == RLIM_INFINITY || want > (rlim_t)1 << 20)
        want = (rlim_t)1 << 20; /* Linux caps it at fs.nr_open (1M by default) anyway */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            ah_log(AH_LOG_INFO, "process", "open-files limit raised to the hard limit",
                   AH_LF_INT("from", (long long)was), AH_LF_INT("to", (long long)want), AH_LF_END);
        } else {
            ah_log(AH_LOG_WARN, "process", "cannot raise the open-files limit",
                   AH_LF_INT("soft", (long long)was), AH_LF_INT("hard", (long long)want),
                   AH_LF_STR("error", strerror(errno)), AH_LF_END);
            rl.rlim_cur = was;
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? (long)want : (long)rl.rlim_cur;
}
