/*
 * testutil.h - helpers shared by the unit tests: a real SQLite store with
 * migrations applied in a fresh temporary directory, removed afterwards, and
 * a sleep for polling loops, and a run record to store.
 *
 * Header-only (static inline): every tests/unit/test_*.c is its own
 * executable linked against ahcore only, so there is no test library to put
 * these in. Include it after <cmocka.h>.
 */
#ifndef AH_TESTUTIL_H
#define AH_TESTUTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "store/runs.h"
#include "store/store.h"

/*
 * A temporary store. cfg holds only the storage section (url points into
 * this struct, so do not copy it while the store is open).
 */
typedef struct ah_test_store {
    char dir[64];  /* /tmp/ah_<name>_XXXXXX */
    char url[128]; /* sqlite://<dir>/db */
    ah_config_t cfg;
    ah_store_t *store;
} ah_test_store_t;

/**
 * A run record with what every test run shares (agent "support", version 1,
 * mode async, input "hello"): id, status, key_id ("" for none) and created_at
 * = updated_at = at. Callers set what their test is about on the copy.
 */
static inline ah_run_rec_t ah_test_run(const char *id, const char *status, const char *key_id,
                                       int64_t at)
{
    ah_run_rec_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.agent, sizeof(r.agent), "support");
    snprintf(r.status, sizeof(r.status), "%s", status);
    snprintf(r.mode, sizeof(r.mode), "async");
    snprintf(r.key_id, sizeof(r.key_id), "%s", key_id);
    r.agent_version = 1;
    r.input = (char *)"\"hello\"";
    r.created_at = r.updated_at = at;
    return r;
}

/** Sleeps ms milliseconds (for polling loops; never as the thing a test waits for). */
static inline void ah_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/** Deletes the files in dir, then dir (the store makes no subdirectories). */
static inline void ah_test_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) < (int)sizeof(p))
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/**
 * Fills *ts (zeroed first) and opens a SQLite store with migrations applied
 * in a new directory /tmp/ah_<name>_XXXXXX; max_batch is the store's group
 * commit size (storage.max_batch). 0, or -1 after printing why to stderr
 * (nothing is left behind). Undo with ah_test_store_close.
 */
static inline int ah_test_store_open(ah_test_store_t *ts, const char *name, int max_batch)
{
    memset(ts, 0, sizeof(*ts));
    int n = snprintf(ts->dir, sizeof(ts->dir), "/tmp/ah_%s_XXXXXX", name);
    if (n < 0 || n >= (int)sizeof(ts->dir) || !mkdtemp(ts->dir)) {
        fprintf(stderr, "test store: cannot create a temporary directory for %s\n", name);
        return -1;
    }
    snprintf(ts->url, sizeof(ts->url), "sqlite://%s/db", ts->dir); /* fits: dir is < 64 */
    ts->cfg.storage.url = ts->url;
    ts->cfg.storage.busy_timeout_ms = 5000;
    ts->cfg.storage.max_batch = max_batch;
    ah_buf_t err = AH_BUF_INIT;
    if (ah_store_open(&ts->cfg, AH_STORE_MIGRATE, &ts->store, &err) < 0) {
        fprintf(stderr, "store open: %s\n", err.data ? err.data : "?");
        ah_buf_free(&err);
        ah_test_rmdir(ts->dir);
        ts->store = NULL;
        return -1;
    }
    ah_buf_free(&err);
    return 0;
}

/** Closes the store of ah_test_store_open and deletes its directory. */
static inline void ah_test_store_close(ah_test_store_t *ts)
{
    ah_store_close(ts->store);
    ts->store = NULL;
    ah_test_rmdir(ts->dir);
}

/**
 * cmocka setup for tests whose fixture is an ah_test_store_t: allocates one,
 * opens it (see ah_test_store_open) and sets *state. 0 or -1.
 */
static inline int ah_test_store_setup(void **state, const char *name, int max_batch)
{
    ah_test_store_t *ts = malloc(sizeof(*ts));
    if (!ts || ah_test_store_open(ts, name, max_batch) != 0) {
        free(ts);
        return -1;
    }
    *state = ts;
    return 0;
}

/** cmocka teardown matching ah_test_store_setup. Always 0. */
static inline int ah_test_store_teardown(void **state)
{
    ah_test_store_t *ts = *state;
    ah_test_store_close(ts);
    free(ts);
    return 0;
}

#endif
