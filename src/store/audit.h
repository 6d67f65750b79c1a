/*
 * audit.h - audit-log rows (table audit_log, migration 0001): who did what to
 * which object, when. Written by admin actions (key create/revoke, agent
 * apply...), read by the audit API. Call from store work functions.
 */
#ifndef AH_STORE_AUDIT_H
#define AH_STORE_AUDIT_H

#include <stdint.h>

#include "store/db.h"

#define AH_AUDIT_LIST_MAX 10000 /* most rows one ah_store_audit_list returns */

/* One row. Strings point into the backend's memory, valid during the callback only; NULL = unset.
 */
typedef struct ah_audit_rec {
    const char *id;
    int64_t ts; /* ms since the epoch */
    const char *actor;
    const char *action;
    const char *target;
    const char *detail; /* JSON object text */
    const char *request_id;
} ah_audit_rec_t;

typedef int (*ah_audit_fn)(void *ud, const ah_audit_rec_t *r);

/**
 * Appends a row with a new id ("aud_...") and ts = now. action is required;
 * the rest may be NULL. detail_json is stored as given (the caller makes it
 * valid JSON and keeps secrets out of it). 0, -EINVAL, or -errno.
 */
int ah_store_audit_insert(ah_db_t *db, const char *actor, const char *action, const char *target,
                          const char *detail_json, const char *request_id);

/**
 * Calls cb for up to limit rows (1..AH_AUDIT_LIST_MAX, else -EINVAL) with
 * ts >= since_ms, oldest first (ts, then id). Returns 0, cb's nonzero value
 * when it stopped, or -errno.
 */
int ah_store_audit_list(ah_db_t *db, int64_t since_ms, int limit, ah_audit_fn cb, void *ud);

#endif
