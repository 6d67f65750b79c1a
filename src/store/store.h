/*
 * store.h - the open store: database connections owned by store threads,
 * and a job API that keeps every database call off the event loops.
 *
 * An ah_store_t owns a WRITER thread with the writer connection and a READER
 * thread with a read-only connection (WAL lets reads run during writes; for
 * sqlite://:memory: both kinds of job run on the writer, which owns the only
 * connection). Callers submit jobs: `work` runs on a store thread with that
 * thread's connection; `done` is then posted to the caller's loop.
 *
 * Writes are group-committed: the writer takes up to storage.max_batch queued
 * write jobs, opens one transaction, runs each job inside its own savepoint
 * (a job returning < 0 is rolled back alone), commits once, and only then
 * calls the done callbacks, so `done` with rc >= 0 means durable.
 *
 * Never call ah_store_call (or anything else that blocks) on an event-loop
 * thread: use ah_store_submit with a done callback. docs/internals/store.md.
 */
#ifndef AH_STORE_H
#define AH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/loop.h"
#include "store/db.h"
#include "store/migrate.h"

typedef struct ah_store ah_store_t;

/* ah_store_open flags */
#define AH_STORE_MIGRATE 0x1u /* apply missing migrations before returning */

/* ah_store_submit / ah_store_call flags: exactly one of READ or WRITE, plus options */
#define AH_STORE_READ  0x1u /* reader connection; no transaction around the job */
#define AH_STORE_WRITE 0x2u /* writer connection, inside a group-commit transaction + savepoint */
#define AH_STORE_NOTXN 0x4u /* with WRITE: run alone, outside any transaction (migrations) */
/*
 * With WRITE: consecutive such jobs run as one group on PostgreSQL (one
 * savepoint, held-back statements not sent as each job returns), so a batch
 * of them costs a few round trips instead of one per job. The price: when a
 * job of the group fails (in its work, or a held-back statement later), the
 * group is rolled back and its other jobs run again. So work must touch
 * nothing but the database and its arg, and give the same result when run
 * again from the start (reset what it fills in). docs/internals/store.md.
 */
#define AH_STORE_PIPELINE 0x8u

#define AH_STORE_QUEUE_MAX_DEFAULT 10000

/**
 * Inside a job that runs long (many rows): lets a thread that woke up on this
 * core run now, if this store thread has run AH_STORE_SLICE_US or more since
 * it last did. The store also calls it between jobs. A store thread is a
 * batch worker sharing cores with the event loops and the processes they talk
 * to: a 1 ms usage batch would otherwise hold up a request's wake-up for its
 * whole length (the gateway's c=1 p99). No-op off store threads.
 */
void ah_store_yield_point(void);

#define AH_STORE_SLICE_US 100

/**
 * Runs on a store thread with that thread's connection. Returns >= 0 on
 * success (passed to done as rc) or -errno; a WRITE job returning < 0 has its
 * changes rolled back. A WRITE job must not begin/commit/rollback itself (its
 * savepoint is managed for it) unless submitted with AH_STORE_NOTXN. It must
 * not block on anything but the database, and must not call ah_store_call.
 */
typedef int (*ah_store_work_fn)(ah_db_t *db, void *arg);

/**
 * Called exactly once per accepted job with work's rc, or with the error of
 * its batch's transaction (BEGIN or COMMIT failed: then no job of the batch
 * took effect). Runs on the job's loop (via ah_loop_post), or on the store
 * thread when loop is NULL (then it must be quick and must not block).
 */
typedef void (*ah_store_done_fn)(int rc, void *arg);

typedef struct ah_store_opts {
    unsigned flags;   /* AH_STORE_MIGRATE */
    size_t queue_max; /* jobs waiting per thread before submit returns -EBUSY; 0 = 10000 */
} ah_store_opts_t;

typedef struct ah_store_stats {
    uint64_t writes;        /* write jobs finished (committed or failed) */
    uint64_t batches;       /* writer transactions committed or attempted */
    uint64_t reads;         /* read jobs finished */
    uint64_t errors;        /* jobs finished with rc < 0 */
    uint64_t rejected;      /* submits refused because a queue was full */
    uint64_t write_queue;   /* write jobs waiting now */
    uint64_t read_queue;    /* read jobs waiting now */
    uint64_t max_batch_len; /* largest batch committed so far */
} ah_store_stats_t;

/**
 * Opens the store named by cfg->storage.url (busy_timeout_ms and max_batch
 * too; cfg is not kept). With AH_STORE_MIGRATE applies missing migrations
 * first. Always refuses a database whose schema is newer than this binary.
 * On success *out is owned by the caller (ah_store_close). On failure returns
 * -errno (see ah_db_open, ah_migrate_apply) and appends a user-facing line to
 * err (may be NULL).
 */
int ah_store_open(const ah_config_t *cfg, unsigned flags, ah_store_t **out, ah_buf_t *err);

/** ah_store_open with every option. opts may be NULL (defaults). */
int ah_store_open_ex(const ah_config_t *cfg, const ah_store_opts_t *opts, ah_store_t **out,
                     ah_buf_t *err);

/**
 * Stops accepting jobs, finishes every job already queued (their done
 * callbacks are called or posted as usual; their loops must still exist),
 * joins the threads, closes the connections and frees s. NULL is a no-op.
 * Not from a store thread or a done callback running on one.
 */
void ah_store_close(ah_store_t *s);

/**
 * Queues a job. work runs on the store thread chosen by flags; then done
 * (may be NULL) gets its rc, on loop (ah_loop_post) or, when loop is NULL, on
 * the store thread. arg belongs to the caller and must live until done runs.
 * Thread-safe; never blocks. Returns 0 (done will be called exactly once),
 * -EBUSY when that thread's queue is full (retry later or fail the request
 * with 503), -ESHUTDOWN after close started, -EINVAL for bad flags or a
 * NULL work, -ENOMEM. A work function may submit (not call) further jobs.
 */
int ah_store_submit(ah_store_t *s, unsigned flags, ah_store_work_fn work, ah_store_done_fn done,
                    ah_loop_t *loop, void *arg);

/**
 * Submits a job and waits for it: returns work's rc (or the commit error), or
 * a submit error as ah_store_submit. For threads that may block (CLI,
 * startup, timer threads). NEVER call it on an event-loop thread. Returns
 * -EDEADLK when called from one of this store's threads (a work function or a
 * done callback running there).
 */
int ah_store_call(ah_store_t *s, unsigned flags, ah_store_work_fn work, void *arg);

/** Runs SELECT 1 on the reader and waits; 0 when the database answers. Blocking. */
int ah_store_ping(ah_store_t *s);

/** Schema versions (migrate.h), read through the reader. Blocking. 0 or -errno. */
int ah_store_schema_status(ah_store_t *s, int *current, int *latest);

/**
 * Applies missing migrations on the writer thread (outside group commit) and
 * waits. on_applied runs on the writer thread. Returns the number applied or
 * -errno with a line appended to err. Blocking.
 */
int ah_store_migrate(ah_store_t *s, ah_migrate_applied_fn on_applied, void *ud, ah_buf_t *err);

/** Snapshot of the counters. Thread-safe. */
void ah_store_stats(ah_store_t *s, ah_store_stats_t *out);

/** The backend's name ("sqlite"). */
const char *ah_store_backend(const ah_store_t *s);

#endif
