/*
 * pgtest.h - a throwaway PostgreSQL server for unit tests: initdb into a new
 * temporary directory, pg_ctl start on a free 127.0.0.1 port (fsync off,
 * trust auth, C collation like SQLite's), a fresh schema per test, and
 * stop + delete at the end.
 *
 * PostgreSQL refuses to run as root: under root the server and its tools run
 * as an unprivileged user (AH_TEST_PG_USER, else "postgres" from the Debian
 * package, else "agenthub-test", else "nobody"), switched to in a forked child
 * before exec. Binaries come from AH_TEST_PG_BIN, else the newest
 * /usr/lib/postgresql/N/bin, else PATH. When there is no initdb,
 * ah_pgtest_start prints "SKIP: PostgreSQL 15 not installed (apt-get install
 * postgresql)" and returns AH_PGTEST_SKIP. Tests get a fresh schema each
 * (ah_pgtest_new_db) in one database, "agenthub".
 *
 * A watcher process holds the other end of a pipe: when the test process
 * exits, however it exits (assertion, crash, kill -9), the pipe closes and
 * the watcher stops the server (pg_ctl stop -m immediate, only this data
 * directory) and deletes the directory. Start the server before any thread:
 * the watcher is forked then.
 *
 * Header-only (static inline), like testutil.h; uses libpq (linked through
 * ahcore). Include it after <cmocka.h> or on its own.
 */
#ifndef AH_PGTEST_H
#define AH_PGTEST_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define AH_PGTEST_SKIP 77 /* ah_pgtest_start: PostgreSQL is not installed */

typedef struct ah_pgtest {
    char dir[64];  /* /tmp/ah_pg_XXXXXX: data/, the socket, server.log */
    char bin[256]; /* directory of initdb and pg_ctl */
    char data[96]; /* dir/data */
    int port;
    bool drop; /* run the server's tools as uid/gid (we are root) */
    uid_t uid;
    gid_t gid;
    pid_t watcher;
    int watch_fd; /* write end of the watcher's pipe; closing it stops the server */
    int ndb;
} ah_pgtest_t;

/* ---- processes --------------------------------------------------------- */

/*
 * Runs argv[0] (a full path) with argv, as the unprivileged user when
 * pg->drop, in pg->dir, with a minimal environment; output is appended to
 * pg->dir/tools.log. Returns the exit status, or -1.
 */
static inline int ah_pgtest_run(const ah_pgtest_t *pg, char *const argv[])
{
    char logpath[128];
    snprintf(logpath, sizeof(logpath), "%s/tools.log", pg->dir);
    static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", NULL};
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Only async-signal-safe calls: the parent may have threads. */
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        close_range(3, ~0u, 0); /* the server must not inherit the test's files */
        if (pg->drop && (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0))
            _exit(126);
        if (chdir(pg->dir) != 0)
            _exit(126);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int ah_pgtest_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    remove(path);
    return 0;
}

/* Deletes dir and everything under it (the server's files included). */
static inline void ah_pgtest_rmtree(const char *dir)
{
    nftw(dir, ah_pgtest_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- finding PostgreSQL ------------------------------------------------ */

static inline bool ah_pgtest_is_exec(const char *dir, const char *name)
{
    char p[320];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, X_OK) == 0;
}

/* Fills pg->bin. false when no initdb + pg_ctl were found. */
static inline bool ah_pgtest_find_bin(ah_pgtest_t *pg)
{
    const char *env = getenv("AH_TEST_PG_BIN");
    if (env && *env) {
        snprintf(pg->bin, sizeof(pg->bin), "%s", env);
        return ah_pgtest_is_exec(pg->bin, "initdb") && ah_pgtest_is_exec(pg->bin, "pg_ctl");
    }
    int best = -1;
    DIR *d = opendir("/usr/lib/postgresql");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            char *end = NULL;
            long v = strtol(e->d_name, &end, 10);
            char dir[sizeof(pg->bin)];
            if (snprintf(dir, sizeof(dir), "/usr/lib/postgresql/%.200s/bin", e->d_name) < 0)
                continue;
            if (end != e->d_name && *end == '\0' && v > best && ah_pgtest_is_exec(dir, "initdb") &&
                ah_pgtest_is_exec(dir, "pg_ctl")) {
                best = (int)v;
                snprintf(pg->bin, sizeof(pg->bin), "%s", dir);
            }
        }
        closedir(d);
    }
    if (best >= 0)
        return true;
    const char *path = getenv("PATH");
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *p = strtok_r(buf, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
        if (ah_pgtest_is_exec(p, "initdb") && ah_pgtest_is_exec(p, "pg_ctl")) {
            snprintf(pg->bin, sizeof(pg->bin), "%s", p);
            return true;
        }
    }
    return false;
}

/* Under root, picks the unprivileged user the server runs as. */
static inline int ah_pgtest_pick_user(ah_pgtest_t *pg)
{
    if (geteuid() != 0)
        return 0;
    const char *env = getenv("AH_TEST_PG_USER");
    const char *names[4] = {env && *env ? env : "postgres", "postgres", "agenthub-test", "nobody"};
    for (int i = 0; i < 4; i++) {
        struct passwd pw, *found = NULL;
        char sbuf[1024];
        if (getpwnam_r(names[i], &pw, sbuf, sizeof(sbuf), &found) == 0 && found &&
            found->pw_uid != 0) {
            pg->drop = true;
            pg->uid = found->pw_uid;
            pg->gid = found->pw_gid;
            return 0;
        }
    }
    fprintf(stderr, "pgtest: running as root and no unprivileged user to run PostgreSQL as "
                    "(create one: useradd --system agenthub-test)\n");
    return -1;
}

/* A port nobody listens on right now (the server may still lose a race for it: retried). */
static inline int ah_pgtest_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- server control ---------------------------------------------------- */

/* pg_ctl start on pg->port; waits until it accepts connections. 0 or -1. */
static inline int ah_pgtest_server_start(const ah_pgtest_t *pg)
{
    char pg_ctl[300], log[128], opts[512];
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bin);
    snprintf(log, sizeof(log), "%s/server.log", pg->dir);
    snprintf(opts, sizeof(opts),
             "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
             "-c full_page_writes=off -c max_connections=200",
             pg->port, pg->dir);
    char *const argv[] = {pg_ctl,           "start", "-w", "-t", "60", "-D",
                          (char *)pg->data, "-l",    log,  "-o", opts, NULL};
    return ah_pgtest_run(pg, argv) == 0 ? 0 : -1;
}

/* pg_ctl stop (mode "fast" or "immediate"); waits until it is down. 0 or -1. */
static inline int ah_pgtest_server_stop(const ah_pgtest_t *pg, const char *mode)
{
    char pg_ctl[300];
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bin);
    char *const argv[] = {pg_ctl, "stop",           "-w", "-t", "60", "-m", (char *)mode,
                          "-D",   (char *)pg->data, NULL};
    return ah_pgtest_run(pg, argv) == 0 ? 0 : -1;
}

/* pg_ctl restart -m fast (same options). 0 or -1. */
static inline int ah_pgtest_restart(const ah_pgtest_t *pg)
{
    char pg_ctl[300], log[128];
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bin);
    snprintf(log, sizeof(log), "%s/server.log", pg->dir);
    char *const argv[] = {pg_ctl, "restart",        "-w", "-t", "60", "-m", "fast",
                          "-D",   (char *)pg->data, "-l", log,  NULL};
    return ah_pgtest_run(pg, argv) == 0 ? 0 : -1;
}

/* The watcher: waits for EOF on fd (the test process is gone), then cleans up. */
static inline void ah_pgtest_watch(const ah_pgtest_t *pg, int fd)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    char c;
    while (read(fd, &c, 1) != 0) {
        if (errno != EINTR)
            break;
    }
    struct stat sb;
    char pid_file[128];
    snprintf(pid_file, sizeof(pid_file), "%s/postmaster.pid", pg->data);
    if (stat(pid_file, &sb) == 0)
        ah_pgtest_server_stop(pg, "immediate");
    ah_pgtest_rmtree(pg->dir);
    _exit(0);
}

/* ---- public ------------------------------------------------------------ */

static inline void ah_pgtest_stop(ah_pgtest_t *pg);
static inline int ah_pgtest_sql(const ah_pgtest_t *pg, const char *db, const char *sql);

/**
 * Creates, starts and watches a server (see the file comment). 0,
 * AH_PGTEST_SKIP (not installed: a SKIP line was printed), or -1 (printed why;
 * nothing is left behind).
 */
static inline int ah_pgtest_start(ah_pgtest_t *pg)
{
    memset(pg, 0, sizeof(*pg));
    pg->watch_fd = -1;
    if (!ah_pgtest_find_bin(pg)) {
        printf("SKIP: PostgreSQL 15 not installed (apt-get install postgresql)\n");
        fflush(stdout);
        return AH_PGTEST_SKIP;
    }
    if (ah_pgtest_pick_user(pg) < 0)
        return -1;
    snprintf(pg->dir, sizeof(pg->dir), "/tmp/ah_pg_XXXXXX");
    if (!mkdtemp(pg->dir)) {
        fprintf(stderr, "pgtest: cannot create a temporary directory: %s\n", strerror(errno));
        return -1;
    }
    snprintf(pg->data, sizeof(pg->data), "%s/data", pg->dir);
    if (pg->drop && chown(pg->dir, pg->uid, pg->gid) != 0) {
        fprintf(stderr, "pgtest: chown %s: %s\n", pg->dir, strerror(errno));
        ah_pgtest_rmtree(pg->dir);
        return -1;
    }
    char initdb[300];
    snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bin);
    char *const argv[] = {initdb,      "-D",          pg->data, "-U",   "agenthub", "--auth=trust",
                          "--no-sync", "--no-locale", "-E",     "UTF8", NULL};
    if (ah_pgtest_run(pg, argv) != 0) {
        fprintf(stderr, "pgtest: initdb failed (see %s/tools.log):\n", pg->dir);
        char cmd[160];
        snprintf(cmd, sizeof(cmd), "tail -n 20 '%s/tools.log' >&2", pg->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        ah_pgtest_rmtree(pg->dir);
        return -1;
    }
    int started = -1;
    for (int attempt = 0; attempt < 5 && started != 0; attempt++) {
        pg->port = ah_pgtest_free_port();
        if (pg->port > 0)
            started = ah_pgtest_server_start(pg);
    }
    if (started != 0) {
        fprintf(stderr, "pgtest: the server did not start; its log:\n");
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "tail -n 30 '%s/server.log' '%s/tools.log' >&2", pg->dir,
                 pg->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        ah_pgtest_server_stop(pg, "immediate");
        ah_pgtest_rmtree(pg->dir);
        return -1;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        ah_pgtest_server_stop(pg, "immediate");
        ah_pgtest_rmtree(pg->dir);
        return -1;
    }
    fflush(NULL);
    pg->watcher = fork();
    if (pg->watcher == 0) {
        close(fds[1]);
        ah_pgtest_watch(pg, fds[0]);
    }
    close(fds[0]);
    if (pg->watcher < 0) {
        close(fds[1]);
        ah_pgtest_server_stop(pg, "immediate");
        ah_pgtest_rmtree(pg->dir);
        return -1;
    }
    pg->watch_fd = fds[1];
    if (ah_pgtest_sql(pg, "postgres", "CREATE DATABASE agenthub") != 0) {
        ah_pgtest_stop(pg);
        return -1;
    }
    return 0;
}

/** Runs one statement on database db as the superuser. 0 or -1 (printed why). */
static inline int ah_pgtest_sql(const ah_pgtest_t *pg, const char *db, const char *sql)
{
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=agenthub dbname=%s connect_timeout=10", pg->port, db);
    PGconn *c = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(r);
        rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
        if (rc)
            fprintf(stderr, "pgtest: %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    } else {
        fprintf(stderr, "pgtest: connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

/**
 * Makes a new, empty namespace for one test and writes its URL to url: schema
 * tN of database "agenthub", selected by the URL
 * (postgres://agenthub@127.0.0.1:PORT/agenthub?options=-csearch_path%3DtN),
 * much faster than a database per test. 0 or -1.
 */
static inline int ah_pgtest_new_db(ah_pgtest_t *pg, char *url, size_t n)
{
    char sql[64];
    int id = ++pg->ndb;
    snprintf(sql, sizeof(sql), "CREATE SCHEMA t%d", id);
    if (ah_pgtest_sql(pg, "agenthub", sql) != 0)
        return -1;
    int w =
        snprintf(url, n, "postgres://agenthub@127.0.0.1:%d/agenthub?options=-csearch_path%%3Dt%d",
                 pg->port, id);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

/** Stops the server and deletes its directory (through the watcher). */
static inline void ah_pgtest_stop(ah_pgtest_t *pg)
{
    if (pg->watch_fd < 0)
        return;
    close(pg->watch_fd);
    pg->watch_fd = -1;
    while (waitpid(pg->watcher, NULL, 0) < 0 && errno == EINTR)
        ;
}

#endif
