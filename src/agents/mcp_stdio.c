/*
 * mcp_stdio.c - the MCP stdio transport: the server is a child process,
 * newline-delimited JSON-RPC on its stdin/stdout, its stderr is logged.
 *
 * The child is spawned with posix_spawnp (vfork-fast, no fork of a big
 * multi-threaded process) in its own process group, with an empty signal
 * mask, default signal dispositions, fds 0-2 on our pipes and every other fd
 * closed, and a scrubbed environment (see mcp.h). Our pipe ends are
 * non-blocking and watched by the client's loop, and so is a pidfd of the
 * child: its death is seen even when a grandchild keeps stdout open. When it
 * exits, its stdout is drained first (the last answer may be there), the rest
 * of its process group is SIGKILLed while the leader is still a zombie (so
 * the group id cannot have been reused), and then it is reaped.
 *
 * A child we stop (client freed, protocol violation, init timeout) is handed
 * to the reaper: one process-wide thread that waits on the pidfds of such
 * children, sends SIGTERM / SIGKILL to their groups on schedule and reaps
 * them. It exists so that ah_mcp_client_free never waits and a child is
 * still killed and reaped when the client's loop is already gone.
 */
#include "agents/mcp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"

#define READS_PER_WAKEUP 16   /* bounded work per loop wakeup, then let others run */
#define STDERR_LINE_MAX  4096 /* longer stderr lines are logged in pieces */
#define ERR_TAIL_MAX     240  /* last stderr line kept for error messages */
#define GONE_POLL_S      0.05 /* exit polling after EOF when there is no pidfd */
#define MIN_OUTBUF       (1u << 20)

extern char **environ;

struct mcp_stdio {
    ah_mcp_client_t *c;
    pid_t pid;
    int pidfd; /* -1 when the kernel has no pidfd_open */
    int fd_in, fd_out, fd_err;
    struct event *ev_in, *ev_out, *ev_err, *ev_pid, *tm_gone;
    ah_buf_t out;     /* bytes queued for the child's stdin */
    ah_buf_t line;    /* stdout bytes of a line not ended yet */
    ah_buf_t errline; /* stderr bytes of a line not ended yet */
    char err_tail[ERR_TAIL_MAX + 1];
    uint64_t gone_since_ns; /* stdout EOF or stdin EPIPE seen: the child should be exiting */
    bool killed_after_gone;
    int busy;  /* our event callbacks on the stack */
    bool dead; /* stopped; freed when busy drops to 0 */
};

/* ---- the reaper ---- */

typedef struct reap_ent {
    pid_t pid;
    int pidfd;
    uint64_t term_at, kill_at;
    int stage; /* 0: waiting for a voluntary exit, 1: SIGTERM sent, 2: SIGKILL sent */
} reap_ent_t;

static struct {
    pthread_mutex_t mu;
    pthread_t th;
    bool running, stop;
    int wake_fd;
    reap_ent_t *v;
    size_t n, cap;
} g_reaper = {PTHREAD_MUTEX_INITIALIZER, 0, false, false, -1, NULL, 0, 0};

/* Signals the child's whole group, and the child itself in case it left the group. */
static void kill_group(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(-pid, sig);
    kill(pid, sig);
}

/* True when pid has exited; then the group is SIGKILLed and the child reaped (status in *st). */
static bool try_reap(pid_t pid, int *st)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno == ECHILD) { /* reaped elsewhere (should not happen) */
            if (st)
                *st = 0;
            return true;
        }
        return false;
    }
    if (si.si_pid != pid)
        return false;
    /* The leader is a zombie: its pid, and so the group id, cannot be reused yet. */
    kill(-pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (st)
        *st = status;
    return true;
}

static void *reaper_main(void *arg)
{
    (void)arg;
    struct pollfd *pf = NULL;
    size_t pfcap = 0;
    pthread_mutex_lock(&g_reaper.mu);
    for (;;) {
        if (g_reaper.stop)
            for (size_t i = 0; i < g_reaper.n; i++)
                if (g_reaper.v[i].stage < 2) {
                    kill_group(g_reaper.v[i].pid, SIGKILL);
                    g_reaper.v[i].stage = 2;
                }
        uint64_t now = ah_mono_ns();
        for (size_t i = 0; i < g_reaper.n;) {
            reap_ent_t *e = &g_reaper.v[i];
            if (try_reap(e->pid, NULL)) {
                if (e->pidfd >= 0)
                    close(e->pidfd);
                g_reaper.v[i] = g_reaper.v[--g_reaper.n];
                continue;
            }
            if (e->stage == 0 && now >= e->term_at) {
                kill_group(e->pid, SIGTERM);
                e->stage = 1;
            }
            if (e->stage == 1 && now >= e->kill_at) {
                kill_group(e->pid, SIGKILL);
                e->stage = 2;
            }
            i++;
        }
        if (g_reaper.stop && g_reaper.n == 0)
            break;
        /* Wait for a pidfd, a new entry (wake_fd) or the next deadline. */
        int timeout_ms = 1000;
        size_t n = 0;
        if (pfcap < g_reaper.n + 1) {
            struct pollfd *np = realloc(pf, (g_reaper.n + 1) * sizeof(*pf));
            if (np) {
                pf = np;
                pfcap = g_reaper.n + 1;
            }
        }
        if (pf) {
            pf[n++] = (struct pollfd){.fd = g_reaper.wake_fd, .events = POLLIN};
            for (size_t i = 0; i < g_reaper.n && n < pfcap; i++) {
                reap_ent_t *e = &g_reaper.v[i];
                if (e->pidfd >= 0)
                    pf[n++] = (struct pollfd){.fd = e->pidfd, .events = POLLIN};
                else
                    timeout_ms = 50; /* no pidfd: poll for the exit */
                uint64_t next = e->stage == 0 ? e->term_at : e->stage == 1 ? e->kill_at : 0;
                if (next) {
                    long ms = next > now ? (long)((next - now) / 1000000) + 1 : 0;
                    if (ms < timeout_ms)
                        timeout_ms = (int)ms;
                }
            }
        } else {
            timeout_ms = 50;
        }
        pthread_mutex_unlock(&g_reaper.mu);
        if (n)
            poll(pf, n, timeout_ms);
        else
            usleep((useconds_t)timeout_ms * 1000);
        uint64_t junk;
        if (read(g_reaper.wake_fd, &junk, sizeof(junk)) < 0) {
            /* nothing to drain (EAGAIN) */
        }
        pthread_mutex_lock(&g_reaper.mu);
    }
    pthread_mutex_unlock(&g_reaper.mu);
    free(pf);
    return NULL;
}

/*
 * Takes over a child we no longer watch (and its pidfd). grace_s > 0: it gets
 * until grace/2 to exit by itself (its stdin is closed), then SIGTERM, then
 * SIGKILL at grace; otherwise SIGKILL now.
 */
static void reaper_adopt(pid_t pid, int pidfd, double grace_s)
{
    if (pid <= 0) { /* kill(-0) would hit our own process group */
        if (pidfd >= 0)
            close(pidfd);
        return;
    }
    uint64_t now = ah_mono_ns();
    reap_ent_t e = {pid, pidfd, now + (uint64_t)(grace_s * 0.5e9), now + (uint64_t)(grace_s * 1e9),
                    0};
    if (grace_s <= 0) {
        kill_group(pid, SIGKILL);
        e.stage = 2;
    }
    pthread_mutex_lock(&g_reaper.mu);
    bool ok = true;
    if (!g_reaper.running) {
        g_reaper.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        g_reaper.stop = false;
        ok = g_reaper.wake_fd >= 0 && pthread_create(&g_reaper.th, NULL, reaper_main, NULL) == 0;
        if (ok) {
            g_reaper.running = true;
        } else if (g_reaper.wake_fd >= 0) {
            close(g_reaper.wake_fd);
            g_reaper.wake_fd = -1;
        }
    }
    if (ok && g_reaper.n == g_reaper.cap) {
        size_t cap = g_reaper.cap ? g_reaper.cap * 2 : 8;
        reap_ent_t *v = realloc(g_reaper.v, cap * sizeof(*v));
        if (v) {
            g_reaper.v = v;
            g_reaper.cap = cap;
        } else {
            ok = false;
        }
    }
    if (ok) {
        g_reaper.v[g_reaper.n++] = e;
        uint64_t one = 1;
        if (write(g_reaper.wake_fd, &one, sizeof(one)) < 0) {
            /* counter saturated: the thread is awake anyway */
        }
    }
    pthread_mutex_unlock(&g_reaper.mu);
    if (!ok) { /* no thread, no memory: kill and reap here; a SIGKILLed child dies at once */
        ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP reaper unavailable; killing the server now",
               AH_LF_INT("pid", pid), AH_LF_END);
        kill_group(pid, SIGKILL);
        while (!try_reap(pid, NULL))
            usleep(1000);
        if (pidfd >= 0)
            close(pidfd);
    }
}

void ah_mcp_global_cleanup(void)
{
    pthread_mutex_lock(&g_reaper.mu);
    if (!g_reaper.running) {
        pthread_mutex_unlock(&g_reaper.mu);
        return;
    }
    g_reaper.stop = true;
    uint64_t one = 1;
    if (write(g_reaper.wake_fd, &one, sizeof(one)) < 0) {
        /* saturated: awake anyway */
    }
    pthread_mutex_unlock(&g_reaper.mu);
    pthread_join(g_reaper.th, NULL);
    pthread_mutex_lock(&g_reaper.mu);
    close(g_reaper.wake_fd);
    g_reaper.wake_fd = -1;
    free(g_reaper.v);
    g_reaper.v = NULL;
    g_reaper.n = g_reaper.cap = 0;
    g_reaper.running = false;
    g_reaper.stop = false;
    pthread_mutex_unlock(&g_reaper.mu);
}

/* ---- the transport ---- */

static void stdio_free(mcp_stdio_t *s)
{
    ah_buf_free(&s->out);
    ah_buf_free(&s->line);
    ah_buf_free(&s->errline);
    free(s);
}

/* Closes fds and events; the child must already be reaped or handed to the reaper. */
static void stdio_teardown(mcp_stdio_t *s)
{
    struct event **evs[] = {&s->ev_in, &s->ev_out, &s->ev_err, &s->ev_pid, &s->tm_gone};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    int *fds[] = {&s->fd_in, &s->fd_out, &s->fd_err};
    for (size_t i = 0; i < 3; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
    ah_buf_reset(&s->out);
    if (s->c->stdio == s)
        s->c->stdio = NULL;
    s->dead = true;
}

/* Logs one stderr line at debug level and keeps it as the tail for error messages. */
static void err_line(mcp_stdio_t *s, const char *p, size_t n, bool cut)
{
    while (n && (p[n - 1] == '\r' || p[n - 1] == ' '))
        n--;
    if (!n)
        return;
    size_t k = n < ERR_TAIL_MAX ? n : ERR_TAIL_MAX;
    memcpy(s->err_tail, p, k);
    s->err_tail[k] = '\0';
    if (ah_log_enabled(AH_LOG_DEBUG)) {
        char *line = strndup(p, n);
        if (line)
            ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP server stderr", AH_LF_STR("server", s->c->name),
                   AH_LF_INT("pid", s->pid), AH_LF_STR("line", line), AH_LF_BOOL("cut", cut),
                   AH_LF_END);
        free(line);
    }
}

static void read_stderr(mcp_stdio_t *s)
{
    char buf[8192];
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t r = read(s->fd_err, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                if (s->errline.len)
                    err_line(s, s->errline.data, s->errline.len, false);
                ah_buf_reset(&s->errline);
                event_del(s->ev_err);
            }
            return;
        }
        const char *p = buf, *end = buf + r;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t seg = (size_t)((nl ? nl : end) - p);
            if (s->errline.len + seg > STDERR_LINE_MAX) { /* log what we have, go on */
                size_t room = STDERR_LINE_MAX - s->errline.len;
                ah_buf_append(&s->errline, p, room);
                err_line(s, s->errline.data, s->errline.len, true);
                ah_buf_reset(&s->errline);
                p += room;
                continue;
            }
            if (!nl) {
                ah_buf_append(&s->errline, p, seg);
                break;
            }
            if (s->errline.len) {
                ah_buf_append(&s->errline, p, seg);
                err_line(s, s->errline.data, s->errline.len, false);
                ah_buf_reset(&s->errline);
            } else {
                err_line(s, p, seg, false);
            }
            p = nl + 1;
        }
    }
}

/* The server broke the stream (oversized message): kill it, report it down. */
static void stdio_fail(mcp_stdio_t *s, int rc, const char *msg)
{
    ah_mcp_client_t *c = s->c;
    if (s->pid > 0) /* 0: already reaped (this can run while draining after the exit) */
        reaper_adopt(s->pid, s->pidfd, 0);
    else if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
    s->pid = 0;
    stdio_teardown(s);
    ah_mcp_core_down(c, rc, msg);
}

/* One stdout line: a JSON-RPC message. */
static void out_line(mcp_stdio_t *s, const char *p, size_t n)
{
    while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    if (n)
        ah_mcp_core_message(s->c, p, n);
}

/* Feeds stdout bytes; false when processing must stop (transport or client gone). */
static bool feed_stdout(mcp_stdio_t *s, const char *p, size_t n)
{
    ah_mcp_client_t *c = s->c;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t seg = (size_t)((nl ? nl : end) - p);
        if (s->line.len + seg > c->max_message_bytes) {
            char m[256];
            snprintf(m, sizeof(m),
                     "MCP server \"%s\" sent a message over %zu bytes (max_message_bytes); it was "
                     "stopped",
                     c->name, c->max_message_bytes);
            stdio_fail(s, -E2BIG, m);
            return false;
        }
        if (!nl) {
            if (ah_buf_append(&s->line, p, seg) < 0) {
                stdio_fail(s, -ENOMEM, "out of memory reading the MCP server's output");
                return false;
            }
            return true;
        }
        if (s->line.len) {
            if (ah_buf_append(&s->line, p, seg) < 0) {
                stdio_fail(s, -ENOMEM, "out of memory reading the MCP server's output");
                return false;
            }
            /* s->line outlives this even if the transport stops meanwhile (busy) */
            out_line(s, s->line.data, s->line.len);
            ah_buf_reset(&s->line);
        } else {
            out_line(s, p, seg);
        }
        if (s->dead || c->doomed)
            return false;
        p = nl + 1;
    }
    return true;
}

static void gone_timer_cb(evutil_socket_t fd, short what, void *arg);
static void child_exited(mcp_stdio_t *s, int status);

/* stdout ended or stdin broke: the child is on its way out; make sure it goes. */
static void note_gone(mcp_stdio_t *s)
{
    if (s->gone_since_ns)
        return;
    s->gone_since_ns = ah_mono_ns();
    struct timeval tv = {0, (suseconds_t)(GONE_POLL_S * 1e6)};
    event_add(s->tm_gone, &tv);
}

/* Reads stdout until EAGAIN (bounded). false when the transport or client went away. */
static bool read_stdout(mcp_stdio_t *s)
{
    char buf[65536];
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t r = read(s->fd_out, buf, sizeof(buf));
        if (r > 0) {
            if (!feed_stdout(s, buf, (size_t)r))
                return false;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        event_del(s->ev_out); /* EOF (or a read error): nothing more will come */
        note_gone(s);
        return true;
    }
    return true;
}

/* Reads an exit status into a sentence. */
static void exit_text(mcp_stdio_t *s, int status, char *m, size_t n)
{
    const char *name = s->c->name;
    int k;
    if (WIFEXITED(status))
        k = snprintf(m, n, "MCP server \"%s\" exited with status %d", name, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        k = snprintf(m, n, "MCP server \"%s\" was killed by signal %d (%s)", name, WTERMSIG(status),
                     sigdescr_np(WTERMSIG(status)) ? sigdescr_np(WTERMSIG(status)) : "?");
    else
        k = snprintf(m, n, "MCP server \"%s\" ended", name);
    if (k > 0 && (size_t)k < n && s->err_tail[0])
        snprintf(m + k, n - (size_t)k, "; its last stderr line: %s", s->err_tail);
}

/* The child is reaped (status): report it, after reading what it wrote last. */
static void child_exited(mcp_stdio_t *s, int status)
{
    ah_mcp_client_t *c = s->c;
    if (s->ev_pid) {
        event_free(s->ev_pid);
        s->ev_pid = NULL;
    }
    if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
    s->pid = 0; /* reaped: nobody may signal or wait for it again */
    /* An answer written just before exiting may still sit in the pipe. */
    if (s->ev_out && !read_stdout(s))
        return;
    if (s->ev_err)
        read_stderr(s);
    if (s->errline.len)
        err_line(s, s->errline.data, s->errline.len, false);
    ah_buf_reset(&s->errline);
    char m[512];
    exit_text(s, status, m, sizeof(m));
    stdio_teardown(s);
    ah_mcp_core_down(c, -EPIPE, m);
}

static void pid_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_stdio_t *s = arg;
    ah_mcp_client_t *c = s->c;
    ah_mcp_enter(c);
    s->busy++;
    int status;
    if (s->dead || s->pid <= 0) {
        /* already reported */
    } else if (try_reap(s->pid, &status)) {
        child_exited(s, status);
    } else {
        event_add(s->ev_pid, NULL); /* spurious: wait again */
    }
    s->busy--;
    bool gone = s->dead && !s->busy;
    ah_mcp_leave(c);
    if (gone)
        stdio_free(s);
}

static void gone_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_stdio_t *s = arg;
    ah_mcp_client_t *c = s->c;
    ah_mcp_enter(c);
    s->busy++;
    int status;
    if (s->dead || s->pid <= 0) {
        /* already reported */
    } else if (try_reap(s->pid, &status)) {
        child_exited(s, status);
    } else {
        double waited = (double)(ah_mono_ns() - s->gone_since_ns) / 1e9;
        if (!s->killed_after_gone && waited >= c->kill_grace_s) {
            /* stdout closed but still running: it cannot serve us any more */
            ah_log(AH_LOG_WARN, AH_MCP_LOG, "MCP server closed its stdout but kept running; killed",
                   AH_LF_STR("server", c->name), AH_LF_INT("pid", s->pid), AH_LF_END);
            kill_group(s->pid, SIGKILL);
            s->killed_after_gone = true;
        }
        struct timeval tv = {0, (suseconds_t)(GONE_POLL_S * 1e6)};
        event_add(s->tm_gone, &tv);
    }
    s->busy--;
    bool gone = s->dead && !s->busy;
    ah_mcp_leave(c);
    if (gone)
        stdio_free(s);
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_stdio_t *s = arg;
    ah_mcp_client_t *c = s->c;
    ah_mcp_enter(c);
    s->busy++;
    read_stdout(s);
    s->busy--;
    bool gone = s->dead && !s->busy;
    ah_mcp_leave(c);
    if (gone)
        stdio_free(s);
}

static void err_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_stdio_t *s = arg;
    read_stderr(s); /* logs only: no core callbacks */
}

/* Writes queued bytes; leaves the write event armed while some remain. */
static void flush_in(mcp_stdio_t *s)
{
    while (s->out.len) {
        ssize_t w = write(s->fd_in, s->out.data, s->out.len);
        if (w > 0) {
            ah_buf_consume(&s->out, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(s->ev_in, NULL);
            return;
        }
        /* EPIPE: the child closed stdin, it is exiting; its exit fails the calls */
        ah_buf_reset(&s->out);
        event_del(s->ev_in);
        close(s->fd_in);
        s->fd_in = -1;
        note_gone(s);
        return;
    }
    event_del(s->ev_in);
}

static void in_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mcp_stdio_t *s = arg;
    flush_in(s); /* no core callbacks */
}

/* The child's environment: a few variables of ours, then the configured ones. */
static char **build_env(const ah_mcp_client_t *c)
{
    static const char *const keep[] = {"PATH",   "HOME",     "USER", "LOGNAME", "SHELL", "LANG",
                                       "LC_ALL", "LC_CTYPE", "TZ",   "TMPDIR",  NULL};
    size_t nkeep = sizeof(keep) / sizeof(keep[0]) - 1, nextra = 0;
    while (c->env && c->env[nextra])
        nextra++;
    char **v = calloc(nkeep + nextra + 1, sizeof(*v));
    if (!v)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; keep[i]; i++) {
        size_t kl = strlen(keep[i]);
        bool overridden = false;
        for (size_t j = 0; j < nextra; j++)
            if (strncmp(c->env[j], keep[i], kl) == 0 && c->env[j][kl] == '=')
                overridden = true;
        const char *val = getenv(keep[i]);
        if (!val && strcmp(keep[i], "PATH") == 0)
            val = "/usr/local/bin:/usr/bin:/bin";
        if (overridden || !val)
            continue;
        size_t len = kl + 1 + strlen(val) + 1;
        v[n] = malloc(len);
        if (!v[n])
            goto fail;
        snprintf(v[n], len, "%s=%s", keep[i], val);
        n++;
    }
    for (size_t j = 0; j < nextra; j++) {
        v[n] = strdup(c->env[j]);
        if (!v[n])
            goto fail;
        n++;
    }
    return v;
fail:
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return NULL;
}

static void env_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

/*
 * 0 when cmd can be executed (as a path, or found in PATH like posix_spawnp
 * does), else -errno. posix_spawnp reports a failed exec too, but not under
 * every runtime (valgrind turns the vfork into a fork and the failure into
 * exit status 127), and this way the message is always the clear one.
 */
static int command_check(const char *cmd)
{
    if (strchr(cmd, '/'))
        return access(cmd, X_OK) == 0 ? 0 : -errno;
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    int rc = -ENOENT;
    for (const char *p = path;; p++) {
        const char *e = strchr(p, ':');
        size_t dl = e ? (size_t)(e - p) : strlen(p);
        char full[4096];
        int k = snprintf(full, sizeof(full), "%.*s%s%s", (int)dl, p, dl ? "/" : "", cmd);
        if (k > 0 && (size_t)k < sizeof(full)) {
            if (access(full, X_OK) == 0)
                return 0;
            if (errno == EACCES)
                rc = -EACCES;
        }
        if (!e)
            break;
        p = e;
    }
    return rc;
}

static int spawn_child(ah_mcp_client_t *c, int pin[2], int pout[2], int perr[2], pid_t *pid,
                       ah_buf_t *err)
{
    int crc = command_check(c->command[0]);
    if (crc < 0) {
        ah_buf_printf(err, "MCP server \"%s\": cannot run \"%s\": %s%s", c->name, c->command[0],
                      strerror(-crc),
                      crc == -ENOENT && !strchr(c->command[0], '/') ? " (not found in PATH)" : "");
        return crc;
    }
    char **envp = build_env(c);
    if (!envp)
        return -ENOMEM;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc) {
        env_free(envp);
        return -rc;
    }
    rc = posix_spawnattr_init(&at);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        env_free(envp);
        return -rc;
    }
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    static const int reset[] = {SIGPIPE, SIGINT,  SIGQUIT, SIGTERM, SIGHUP,
                                SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGTSTP};
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        sigaddset(&dfl, reset[i]);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    if (!rc) /* fds of other modules that lack O_CLOEXEC must not leak into the server */
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!rc)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&at, &dfl);
    if (!rc)
        rc = posix_spawnp(pid, c->command[0], &fa, &at, c->command, envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    env_free(envp);
    if (rc) {
        ah_buf_printf(err, "MCP server \"%s\": cannot run \"%s\": %s%s", c->name, c->command[0],
                      strerror(rc),
                      rc == ENOENT && !strchr(c->command[0], '/') ? " (not found in PATH)" : "");
        return -rc;
    }
    return 0;
}

int ah_mcp_stdio_start(ah_mcp_client_t *c, ah_buf_t *err)
{
    if (c->stdio) /* a dead one not cleaned up yet cannot happen; be safe */
        ah_mcp_stdio_stop(c, false);
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    pid_t pid = 0;
    int rc = 0;
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0)
        rc = -errno;
    if (!rc && ((rc = set_nonblock(pin[1])) < 0 || (rc = set_nonblock(pout[0])) < 0 ||
                (rc = set_nonblock(perr[0])) < 0)) {
        /* rc set */
    }
    if (!rc)
        rc = spawn_child(c, pin, pout, perr, &pid, err);
    /* the child's ends */
    int child_ends[] = {pin[0], pout[1], perr[1]};
    for (size_t i = 0; i < 3; i++)
        if (child_ends[i] >= 0)
            close(child_ends[i]);
    if (rc < 0) {
        int ours[] = {pin[1], pout[0], perr[0]};
        for (size_t i = 0; i < 3; i++)
            if (ours[i] >= 0)
                close(ours[i]);
        if (!err->len)
            ah_buf_printf(err, "MCP server \"%s\": cannot start \"%s\": %s", c->name, c->command[0],
                          strerror(-rc));
        return rc;
    }

    mcp_stdio_t *s = calloc(1, sizeof(*s));
    if (!s) {
        close(pin[1]);
        close(pout[0]);
        close(perr[0]);
        reaper_adopt(pid, -1, 0);
        ah_buf_puts(err, "out of memory");
        return -ENOMEM;
    }
    s->c = c;
    s->pid = pid;
    s->fd_in = pin[1];
    s->fd_out = pout[0];
    s->fd_err = perr[0];
    s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    size_t outmax = c->max_message_bytes * 4;
    ah_buf_init(&s->out, outmax < MIN_OUTBUF ? MIN_OUTBUF : outmax);
    ah_buf_init(&s->line, c->max_message_bytes + 1);
    ah_buf_init(&s->errline, STDERR_LINE_MAX + 1);
    s->ev_in = event_new(c->base, s->fd_in, EV_WRITE | EV_PERSIST, in_cb, s);
    s->ev_out = event_new(c->base, s->fd_out, EV_READ | EV_PERSIST, out_cb, s);
    s->ev_err = event_new(c->base, s->fd_err, EV_READ | EV_PERSIST, err_cb, s);
    s->tm_gone = evtimer_new(c->base, gone_timer_cb, s);
    if (s->pidfd >= 0)
        s->ev_pid = event_new(c->base, s->pidfd, EV_READ, pid_cb, s);
    if (!s->ev_in || !s->ev_out || !s->ev_err || !s->tm_gone || (s->pidfd >= 0 && !s->ev_pid) ||
        event_add(s->ev_out, NULL) < 0 || event_add(s->ev_err, NULL) < 0 ||
        (s->ev_pid && event_add(s->ev_pid, NULL) < 0)) {
        reaper_adopt(pid, s->pidfd, 0);
        s->pidfd = -1;
        c->stdio = s;
        stdio_teardown(s);
        stdio_free(s);
        ah_buf_puts(err, "out of memory");
        return -ENOMEM;
    }
    c->stdio = s;
    ah_log(AH_LOG_INFO, AH_MCP_LOG, "MCP server started", AH_LF_STR("server", c->name),
           AH_LF_STR("command", c->command[0]), AH_LF_INT("pid", pid),
           AH_LF_BOOL("pidfd", s->pidfd >= 0), AH_LF_END);
    return 0;
}

int ah_mcp_stdio_send(ah_mcp_client_t *c, const char *p, size_t n)
{
    mcp_stdio_t *s = c->stdio;
    if (!s || s->dead || s->fd_in < 0)
        return -ENOTCONN;
    if (s->out.len + n + 1 > s->out.max)
        return -ENOBUFS;
    int rc = ah_buf_append(&s->out, p, n);
    if (!rc)
        rc = ah_buf_putc(&s->out, '\n');
    if (rc < 0)
        return rc == -E2BIG ? -ENOBUFS : rc;
    flush_in(s);
    return 0;
}

void ah_mcp_stdio_stop(ah_mcp_client_t *c, bool at_free)
{
    mcp_stdio_t *s = c->stdio;
    if (!s)
        return;
    c->stdio = NULL;
    /* stdin first: closing it is the polite way to ask a stdio server to go (spec: shutdown) */
    if (s->fd_in >= 0) {
        close(s->fd_in);
        s->fd_in = -1;
    }
    if (s->pid > 0) {
        ah_log(AH_LOG_DEBUG, AH_MCP_LOG, "MCP server stopping", AH_LF_STR("server", c->name),
               AH_LF_INT("pid", s->pid), AH_LF_BOOL("graceful", at_free), AH_LF_END);
        reaper_adopt(s->pid, s->pidfd, at_free ? c->kill_grace_s : 0);
        s->pidfd = -1;
        s->pid = 0;
    }
    stdio_teardown(s);
    if (!s->busy)
        stdio_free(s);
}

int ah_mcp_stdio_pid(const ah_mcp_client_t *c)
{
    return c->stdio && !c->stdio->dead ? (int)c->stdio->pid : 0;
}
