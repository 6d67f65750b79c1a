/*
 * store.c - store threads, job queues and group commit (store.h).
 *
 * Two workers, each = one thread + one connection + one FIFO job queue.
 * The writer drains up to max_batch plain write jobs at a time and runs them
 * in one transaction, one savepoint per job; "solo" jobs (reads that landed on
 * the writer because the database is private to one connection, and NOTXN
 * writes) run alone, outside any transaction, in queue order. Done callbacks
 * are delivered only after the batch's COMMIT returned.
 *
 * Locking: each worker's mutex guards only its queue (head, tail, depth,
 * stopping); it is never held while a job runs or a callback is delivered.
 * Counters are relaxed atomics. The connection is touched only by its thread
 * (and by ah_store_open before the thread starts / ah_store_close after join).
 */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"

#define MAX_BATCH_DEFAULT 256
#define MAX_BATCH_LIMIT   10000
#define JOB_SAVEPOINT     "ah_job"
#define GROUP_SAVEPOINT   "ah_group"

typedef struct job {
    struct job *next;
    ah_store_work_fn work;
    ah_store_done_fn done;
    ah_loop_t *loop;
    void *arg;
    unsigned flags;
    int rc;
    bool skip; /* failed in a pipelined group: not run again */
} job_t;

typedef struct worker {
    ah_store_t *s;
    const char *name; /* thread name */
    ah_db_t *db;
    pthread_t th;
    bool started;
    pthread_mutex_t mu; /* guards head, tail, depth, stopping */
    pthread_cond_t cv;  /* signalled when a job is queued or stopping is set */
    job_t *head, *tail;
    size_t depth;
    bool stopping;
    job_t **batch; /* the writer: the jobs of the batch being run, by index (max_batch) */
} worker_t;

struct ah_store {
    worker_t writer;
    worker_t reader;
    worker_t *read_worker; /* &reader, or &writer when the database is private to one connection */
    size_t queue_max;
    int max_batch;
    /*
     * Completion of ah_store_call. Store-lifetime rather than per call: the
     * waiter's stack frame may be gone as soon as it sees `finished`, so the
     * store thread must not be inside a mutex that lives in that frame.
     */
    pthread_mutex_t call_mu; /* guards every call_t's finished and rc */
    pthread_cond_t call_cv;  /* broadcast when any call finishes */
    atomic_uint_least64_t writes, batches, reads, errors, rejected, max_batch_len;
};

/* The worker whose thread this is (NULL elsewhere): catches ah_store_call deadlocks. */
static _Thread_local worker_t *tl_worker;
/* When this store thread last woke up or yielded (ah_mono_ns). */
static _Thread_local uint64_t tl_slice_start;

void ah_store_yield_point(void)
{
    if (!tl_worker)
        return;
    uint64_t now = ah_mono_ns();
    if (now - tl_slice_start < AH_STORE_SLICE_US * 1000u)
        return;
    sched_yield(); /* returns at once when nothing else wants this core */
    tl_slice_start = ah_mono_ns();
}

/* A job's work, then a chance for a woken thread to take the core. */
static int run_work(ah_db_t *db, job_t *j)
{
    int rc = j->work(db, j->arg);
    ah_store_yield_point();
    return rc;
}

static void count(atomic_uint_least64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static bool is_solo(const job_t *j)
{
    return (j->flags & AH_STORE_READ) || (j->flags & AH_STORE_NOTXN);
}

/* ---- delivery ---------------------------------------------------------- */

static void deliver_on_loop(void *p)
{
    job_t *j = p;
    ah_loop_t *loop = j->loop;
    j->done(j->rc, j->arg);
    free(j);
    ah_loop_release(loop); /* taken by submit: the loop may now settle (ah_loop_settle) */
}

static void deliver(ah_store_t *s, job_t *j)
{
    count((j->flags & AH_STORE_READ) ? &s->reads : &s->writes, 1);
    if (j->rc < 0)
        count(&s->errors, 1);
    if (!j->done) {
        free(j);
        return;
    }
    if (!j->loop) {
        j->done(j->rc, j->arg);
        free(j);
        return;
    }
    /* ah_loop_post fails only on ENOMEM: give the allocator a moment, then give up loudly. */
    for (int attempt = 0; attempt < 1000; attempt++) {
        if (ah_loop_post(j->loop, deliver_on_loop, j) == 0)
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    ah_log(AH_LOG_ERROR, "store", "out of memory: job completion dropped", AH_LF_INT("rc", j->rc),
           AH_LF_END);
    ah_loop_release(j->loop);
    free(j);
}

static void deliver_all(ah_store_t *s, job_t *jobs)
{
    while (jobs) {
        job_t *next = jobs->next;
        deliver(s, jobs);
        jobs = next;
    }
}

/* ---- running jobs ------------------------------------------------------ */

static void run_solo(worker_t *w, job_t *j)
{
    j->rc = run_work(w->db, j);
    ah_db_defer_writes(w->db, false);
    int f = ah_db_flush_deferred(w->db);
    if (j->rc >= 0 && f < 0)
        j->rc = f;
    if (ah_db_in_txn(w->db)) {
        /* A job left a transaction open: it would swallow every later job's writes. */
        ah_log(AH_LOG_ERROR, "store", "store job left a transaction open; rolled back",
               AH_LF_STR("thread", w->name), AH_LF_END);
        ah_db_rollback(w->db);
        if (j->rc >= 0)
            j->rc = -EINVAL;
    }
}

static void fail_batch(job_t *jobs, int rc)
{
    for (job_t *j = jobs; j; j = j->next)
        j->rc = rc;
}

/* Rolls back to and releases savepoint name: 0 or the error that breaks the batch. */
static int undo_to(ah_db_t *db, const char *name)
{
    int sp = ah_db_rollback_to(db, name);
    return sp == 0 ? ah_db_release(db, name) : sp;
}

typedef struct batch {
    ah_db_t *db;
    job_t **v; /* the jobs, by index */
    int n;
    int group;     /* first job of the open pipelined group; -1: none open */
    bool pipeline; /* groups allowed: until the batch's first failure in one */
    int broken;    /* the error that fails every job of the batch; 0 */
} batch_t;

/*
 * Job k of the open group failed with rc, in its work or in a held-back
 * statement the server ran later: the group is rolled back to its savepoint,
 * k fails, and the rest of the batch runs one job at a time, starting again
 * at the group's first job (k excepted). Returns that index.
 */
static int group_failed(batch_t *b, int k, int rc)
{
    int first = b->group;
    b->group = -1;
    b->pipeline = false;
    ah_db_job_tag(b->db, -1);
    if (first < 0 || k < first || k >= b->n) { /* a statement outside any job */
        b->broken = rc < 0 ? rc : -EIO;
        return b->n;
    }
    b->v[k]->rc = rc < 0 ? rc : -EIO;
    b->v[k]->skip = true;
    int sp = undo_to(b->db, GROUP_SAVEPOINT);
    if (sp < 0)
        b->broken = sp;
    return first;
}

/*
 * Before a job that runs alone, and at the end: sends what the open group
 * holds back and releases its savepoint. Returns -1, or the index to go on
 * from when a job of the group failed (group_failed).
 */
static int group_close(batch_t *b)
{
    if (b->group < 0)
        return -1;
    (void)ah_db_flush_deferred(b->db);
    int k, rc;
    if (ah_db_batch_failed(b->db, &k, &rc))
        return group_failed(b, k, rc);
    ah_db_job_tag(b->db, -1);
    int sp = ah_db_release(b->db, GROUP_SAVEPOINT);
    if (sp < 0)
        b->broken = sp;
    b->group = -1;
    return -1;
}

/*
 * A job of a pipelined group: no savepoint of its own, its held-back
 * statements left for later. Returns the index to go on from.
 */
static int run_grouped(batch_t *b, int i)
{
    job_t *j = b->v[i];
    if (b->group < 0) {
        ah_db_job_tag(b->db, -1);
        int sp = ah_db_savepoint(b->db, GROUP_SAVEPOINT);
        if (sp < 0) {
            b->broken = sp;
            return b->n;
        }
        b->group = i;
    }
    ah_db_job_tag(b->db, i);
    j->rc = run_work(b->db, j);
    ah_db_defer_writes(b->db, false);
    int k = i, rc = j->rc, lk, lrc;
    if (j->rc < 0)
        (void)ah_db_flush_deferred(b->db); /* an earlier job's failure there comes first */
    if (ah_db_batch_failed(b->db, &lk, &lrc)) {
        if (lk != i || j->rc >= 0) {
            k = lk;
            rc = lrc;
        }
    } else if (j->rc >= 0) {
        if (!ah_db_in_txn(b->db))
            b->broken = -EIO; /* the job committed/rolled back itself */
        return i + 1;
    }
    return group_failed(b, k, rc);
}

/* A job in its own savepoint, its statements sent before the next job: it runs once. */
static void run_alone(batch_t *b, int i)
{
    job_t *j = b->v[i];
    ah_db_t *db = b->db;
    ah_db_job_tag(db, i);
    int sp = ah_db_savepoint(db, JOB_SAVEPOINT);
    if (sp < 0) {
        b->broken = sp;
        return;
    }
    j->rc = run_work(db, j);
    ah_db_defer_writes(db, false);
    int f = ah_db_flush_deferred(db); /* a deferred write fails its own job */
    if (j->rc >= 0 && f < 0)
        j->rc = f;
    int k, rc;
    if (ah_db_batch_failed(db, &k, &rc) && j->rc >= 0)
        j->rc = k == i ? rc : -EIO;
    ah_db_job_tag(db, -1);
    sp = j->rc < 0 ? undo_to(db, JOB_SAVEPOINT) : ah_db_release(db, JOB_SAVEPOINT);
    if (sp < 0)
        b->broken = sp;
    else if (!ah_db_in_txn(db))
        b->broken = -EIO; /* the job committed/rolled back itself, or the backend aborted */
}

/*
 * One group-commit transaction. A job that fails (rc < 0) is rolled back
 * alone. If the transaction itself breaks (savepoint error, or the backend
 * aborted it), or BEGIN/COMMIT fails, no job took effect and every job gets
 * that error.
 *
 * Jobs run alone by default: each in its own savepoint (SAVEPOINT ah_job ...
 * RELEASE or ROLLBACK TO), its held-back statements sent as it returns.
 *
 * Pipelined groups (PostgreSQL: ah_db_can_pipeline; consecutive jobs
 * submitted with AH_STORE_PIPELINE): one savepoint for the group, none per
 * job, and a job's held-back statements are not sent when it returns; they
 * go out with a later statement (one that needs its answer, or the end of
 * the group), so a group costs a few round trips and two savepoint commands
 * in all. A failure, in a job's work or in a statement the server ran later
 * (ah_db_batch_failed tells whose), rolls the group back to its savepoint:
 * that job fails, and the group's other jobs run again, now alone, as does
 * the rest of the batch. So a job runs at most twice, and one without the
 * flag exactly once (the open group is settled before it starts).
 */
static void run_batch(worker_t *w, job_t *jobs, int n)
{
    ah_store_t *s = w->s;
    batch_t b = {.db = w->db, .v = w->batch, .n = n, .group = -1};
    ah_db_t *db = w->db;
    int nv = 0;
    for (job_t *j = jobs; j; j = j->next)
        b.v[nv++] = j;
    count(&s->batches, 1);
    ah_db_job_tag(db, -1);
    int rc = ah_db_begin(db, true);
    if (rc < 0) {
        ah_log(AH_LOG_ERROR, "store", "cannot begin write transaction", AH_LF_INT("rc", rc),
               AH_LF_STR("error", ah_db_errmsg(db)), AH_LF_INT("jobs", n), AH_LF_END);
        fail_batch(jobs, rc);
        return;
    }
    b.pipeline = ah_db_can_pipeline(db);
    for (int i = 0; !b.broken;) {
        bool grouped = i < n && b.pipeline && (b.v[i]->flags & AH_STORE_PIPELINE);
        if (!grouped) {
            int back = group_close(&b);
            if (back >= 0) {
                i = back;
                continue;
            }
            if (i == n || b.broken)
                break;
        }
        if (b.v[i]->skip)
            i++;
        else if (grouped)
            i = run_grouped(&b, i);
        else
            run_alone(&b, i++);
    }
    ah_db_job_tag(db, -1);
    int broken = b.broken;
    if (!broken) {
        rc = ah_db_commit(db);
        if (rc == 0) {
            uint64_t prev = atomic_load_explicit(&s->max_batch_len, memory_order_relaxed);
            if ((uint64_t)n > prev)
                atomic_store_explicit(&s->max_batch_len, (uint64_t)n, memory_order_relaxed);
            return;
        }
        broken = rc;
    }
    ah_log(AH_LOG_ERROR, "store", "write batch rolled back", AH_LF_INT("rc", broken),
           AH_LF_STR("error", ah_db_errmsg(db)), AH_LF_INT("jobs", n), AH_LF_END);
    ah_db_rollback(db);
    fail_batch(jobs, broken);
}

/*
 * Takes the next unit of work off the queue (caller holds w->mu): one solo
 * job, or up to max a run of consecutive batchable writes. Returns the count.
 */
static int take(worker_t *w, int max, job_t **out)
{
    job_t *first = w->head, *last = first;
    int n = 1;
    if (!is_solo(first)) {
        while (n < max && last->next && !is_solo(last->next)) {
            last = last->next;
            n++;
        }
    }
    w->head = last->next;
    if (!w->head)
        w->tail = NULL;
    last->next = NULL;
    w->depth -= (size_t)n;
    *out = first;
    return n;
}

static void *worker_main(void *p)
{
    worker_t *w = p;
    tl_worker = w;
    int max = w == &w->s->writer ? w->s->max_batch : 1;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->head) { /* stopping, and everything queued has run */
            pthread_mutex_unlock(&w->mu);
            break;
        }
        job_t *jobs;
        int n = take(w, max, &jobs);
        pthread_mutex_unlock(&w->mu);
        tl_slice_start = ah_mono_ns();

        if (is_solo(jobs))
            run_solo(w, jobs);
        else
            run_batch(w, jobs, n);
        deliver_all(w->s, jobs);
        if (w == &w->s->writer) {
            /* Nothing waiting: the backend's housekeeping costs no job any latency now. */
            pthread_mutex_lock(&w->mu);
            bool idle = !w->head;
            pthread_mutex_unlock(&w->mu);
            if (idle)
                ah_db_idle(w->db);
        }
    }
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

static void worker_init(worker_t *w, ah_store_t *s, const char *name)
{
    w->s = s;
    w->name = name;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static int worker_start(worker_t *w)
{
    /* Store threads take no signals: the main thread and the loops handle them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->th, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    pthread_setname_np(w->th, w->name);
    w->started = true;
    return 0;
}

static void worker_stop(worker_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void worker_join(worker_t *w)
{
    if (w->started)
        pthread_join(w->th, NULL);
    w->started = false;
}

void ah_store_close(ah_store_t *s)
{
    if (!s)
        return;
    /* Stop both first: a reader job may still submit a write while the reader drains. */
    worker_stop(&s->reader);
    worker_stop(&s->writer);
    worker_join(&s->reader);
    worker_join(&s->writer);
    /*
     * Nothing can be left queued: a worker exits only when its queue is empty
     * with stopping set, and submit refuses jobs once stopping is set (both
     * under the worker's mutex).
     */
    ah_db_close(s->reader.db);
    ah_db_close(s->writer.db);
    pthread_mutex_destroy(&s->reader.mu);
    pthread_cond_destroy(&s->reader.cv);
    pthread_mutex_destroy(&s->writer.mu);
    pthread_cond_destroy(&s->writer.cv);
    pthread_cond_destroy(&s->call_cv);
    pthread_mutex_destroy(&s->call_mu);
    free(s->writer.batch);
    free(s);
}

int ah_store_open(const ah_config_t *cfg, unsigned flags, ah_store_t **out, ah_buf_t *err)
{
    ah_store_opts_t opts = {.flags = flags};
    return ah_store_open_ex(cfg, &opts, out, err);
}

int ah_store_open_ex(const ah_config_t *cfg, const ah_store_opts_t *opts, ah_store_t **out,
                     ah_buf_t *err)
{
    *out = NULL;
    ah_store_opts_t defaults = {0};
    if (!opts)
        opts = &defaults;
    ah_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    worker_init(&s->writer, s, "ah-store-write");
    worker_init(&s->reader, s, "ah-store-read");
    pthread_mutex_init(&s->call_mu, NULL);
    pthread_cond_init(&s->call_cv, NULL);
    s->queue_max = opts->queue_max              ? opts->queue_max
                   : cfg->storage.queue_max > 0 ? (size_t)cfg->storage.queue_max
                                                : AH_STORE_QUEUE_MAX_DEFAULT;
    s->max_batch = cfg->storage.max_batch > 0 ? cfg->storage.max_batch : MAX_BATCH_DEFAULT;
    if (s->max_batch > MAX_BATCH_LIMIT)
        s->max_batch = MAX_BATCH_LIMIT;
    s->writer.batch = calloc((size_t)s->max_batch, sizeof(*s->writer.batch));
    if (!s->writer.batch) {
        ah_store_close(s);
        return -ENOMEM;
    }

    ah_db_opts_t dbo = {.busy_timeout_ms = cfg->storage.busy_timeout_ms, .bg_checkpoint = true};
    int rc = ah_db_open(cfg->storage.url, &dbo, &s->writer.db, err);
    if (rc < 0)
        goto fail;
    if (opts->flags & AH_STORE_MIGRATE) {
        rc = ah_migrate_apply(s->writer.db, NULL, NULL, err);
    } else {
        int current, latest;
        rc = ah_migrate_status(s->writer.db, &current, &latest);
        if (rc < 0) {
            if (err)
                ah_buf_printf(err, "cannot read the schema version: %s",
                              ah_db_errmsg(s->writer.db));
        } else {
            rc = ah_migrate_check_newer(current, latest, err);
        }
    }
    if (rc < 0)
        goto fail;

    if (s->writer.db->caps & AH_DB_CAP_PRIVATE) {
        s->read_worker = &s->writer;
    } else {
        dbo.readonly = true;
        dbo.bg_checkpoint = false;
        rc = ah_db_open(cfg->storage.url, &dbo, &s->reader.db, err);
        if (rc < 0)
            goto fail;
        s->read_worker = &s->reader;
    }

    rc = worker_start(&s->writer);
    if (rc == 0 && s->read_worker == &s->reader)
        rc = worker_start(&s->reader);
    if (rc < 0) {
        if (err)
            ah_buf_printf(err, "cannot start store threads: %s", strerror(-rc));
        goto fail;
    }
    *out = s;
    return 0;
fail:
    ah_store_close(s);
    return rc;
}

/* ---- jobs -------------------------------------------------------------- */

int ah_store_submit(ah_store_t *s, unsigned flags, ah_store_work_fn work, ah_store_done_fn done,
                    ah_loop_t *loop, void *arg)
{
    unsigned kind = flags & (AH_STORE_READ | AH_STORE_WRITE);
    if (!s || !work || (kind != AH_STORE_READ && kind != AH_STORE_WRITE) ||
        (flags & ~(AH_STORE_READ | AH_STORE_WRITE | AH_STORE_NOTXN | AH_STORE_PIPELINE)) ||
        ((flags & (AH_STORE_NOTXN | AH_STORE_PIPELINE)) && kind != AH_STORE_WRITE))
        return -EINVAL;
    worker_t *w = kind == AH_STORE_READ ? s->read_worker : &s->writer;
    job_t *j = malloc(sizeof(*j));
    if (!j)
        return -ENOMEM;
    *j = (job_t){NULL, work, done, done ? loop : NULL, arg, flags, 0, false};
    if (j->loop)
        ah_loop_hold(j->loop); /* before the worker can see the job: it releases after done */

    pthread_mutex_lock(&w->mu);
    int rc = 0;
    if (w->stopping)
        rc = -ESHUTDOWN;
    else if (w->depth >= s->queue_max)
        rc = -EBUSY;
    if (rc == 0) {
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        w->depth++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (rc < 0) {
        if (rc == -EBUSY)
            count(&s->rejected, 1);
        if (j->loop)
            ah_loop_release(j->loop);
        free(j);
    }
    return rc;
}

typedef struct call {
    ah_store_t *s;
    ah_store_work_fn work;
    void *arg;
    bool finished; /* guarded by s->call_mu */
    int rc;
} call_t;

static int call_work(ah_db_t *db, void *arg)
{
    call_t *c = arg;
    return c->work(db, c->arg);
}

static void call_done(int rc, void *arg)
{
    call_t *c = arg;
    ah_store_t *s = c->s;
    pthread_mutex_lock(&s->call_mu);
    c->rc = rc;
    c->finished = true;
    pthread_cond_broadcast(&s->call_cv);
    pthread_mutex_unlock(&s->call_mu); /* c may be gone from here on */
}

int ah_store_call(ah_store_t *s, unsigned flags, ah_store_work_fn work, void *arg)
{
    if (s && tl_worker && tl_worker->s == s)
        return -EDEADLK;
    if (!work)
        return -EINVAL;
    if (!s)
        return -EINVAL;
    call_t c = {.s = s, .work = work, .arg = arg};
    int rc = ah_store_submit(s, flags, call_work, call_done, NULL, &c);
    if (rc == 0) {
        pthread_mutex_lock(&s->call_mu);
        while (!c.finished)
            pthread_cond_wait(&s->call_cv, &s->call_mu);
        rc = c.rc;
        pthread_mutex_unlock(&s->call_mu);
    }
    return rc;
}

static int ping_work(ah_db_t *db, void *arg)
{
    int64_t one = 0;
    int rc = ah_db_query_int(db, "SELECT 1", NULL, 0, &one);
    return rc < 0 ? rc : one == 1 ? 0 : -EIO;
}

int ah_store_ping(ah_store_t *s)
{
    return ah_store_call(s, AH_STORE_READ, ping_work, NULL);
}

typedef struct {
    int current, latest;
} status_t;

static int status_work(ah_db_t *db, void *arg)
{
    status_t *st = arg;
    return ah_migrate_status(db, &st->current, &st->latest);
}

int ah_store_schema_status(ah_store_t *s, int *current, int *latest)
{
    status_t st = {0, 0};
    int rc = ah_store_call(s, AH_STORE_READ, status_work, &st);
    if (rc < 0)
        return rc;
    *current = st.current;
    *latest = st.latest;
    return 0;
}

typedef struct {
    ah_migrate_applied_fn on_applied;
    void *ud;
    ah_buf_t *err;
} migrate_job_t;

static int migrate_work(ah_db_t *db, void *arg)
{
    migrate_job_t *m = arg;
    return ah_migrate_apply(db, m->on_applied, m->ud, m->err);
}

int ah_store_migrate(ah_store_t *s, ah_migrate_applied_fn on_applied, void *ud, ah_buf_t *err)
{
    migrate_job_t m = {on_applied, ud, err};
    int rc = ah_store_call(s, AH_STORE_WRITE | AH_STORE_NOTXN, migrate_work, &m);
    if (rc < 0 && err && err->len == 0)
        ah_buf_printf(err, "migrations: %s", strerror(-rc));
    return rc;
}

void ah_store_stats(ah_store_t *s, ah_store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->writes = atomic_load_explicit(&s->writes, memory_order_relaxed);
    out->batches = atomic_load_explicit(&s->batches, memory_order_relaxed);
    out->reads = atomic_load_explicit(&s->reads, memory_order_relaxed);
    out->errors = atomic_load_explicit(&s->errors, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&s->rejected, memory_order_relaxed);
    out->max_batch_len = atomic_load_explicit(&s->max_batch_len, memory_order_relaxed);
    pthread_mutex_lock(&s->writer.mu);
    out->write_queue = s->writer.depth;
    pthread_mutex_unlock(&s->writer.mu);
    if (s->read_worker == &s->reader) {
        pthread_mutex_lock(&s->reader.mu);
        out->read_queue = s->reader.depth;
        pthread_mutex_unlock(&s->reader.mu);
    }
}

const char *ah_store_backend(const ah_store_t *s)
{
    return ah_db_backend_name(s->writer.db);
}
