/*
 * runs_json.h - the JSON shapes of runs and run events in the HTTP API
 * (GET /v1/runs..., and the runtime's sync-mode answers), so every place
 * that shows a run shows the same object.
 *
 * Pure functions: no loop, no store; safe on any thread (the read handlers
 * render on the store's reader thread).
 */
#ifndef AH_API_RUNS_JSON_H
#define AH_API_RUNS_JSON_H

#include "core/buf.h"
#include "store/runs.h"

/**
 * Appends the run object to out:
 * {"id","object":"run","agent","agent_version","status","mode","input","output",
 *  "error":{"code","message"}|null,"session_id","metadata",
 *  "usage":{"prompt_tokens","completion_tokens","total_tokens","cost_usd"},
 *  "turns","created_at","started_at","finished_at"}.
 * input and metadata are embedded as JSON (a stored text that is not valid
 * JSON is shown as a JSON string instead, so the answer always parses);
 * metadata NULL is {}; times are ms since the epoch, null when 0. Returns 0,
 * or -ENOMEM / -E2BIG (out's limit) with out partly written.
 */
int ah_api_run_json(const ah_run_rec_t *r, ah_buf_t *out);

/**
 * Appends one event as {"id":SEQ,"type":...,"data":{...},"created_at":MS}
 * (data embedded as JSON, same fallback as above). 0, -ENOMEM or -E2BIG.
 */
int ah_api_run_event_json(const ah_run_event_t *e, ah_buf_t *out);

#endif
