/*
 * tools.h - the tools a run offers the model, and their executors.
 *
 * A run's catalogue is built from its agent spec: http and exec tools as
 * declared, every tool of each MCP server (filtered by allow, renamed by
 * prefix), and one transfer_to_<agent> tool per handoff. Executors run on
 * the run's loop and answer through a callback with the text the model sees
 * as the tool result. Arguments are validated against the tool's JSON Schema
 * first: invalid arguments come back as an error result (the run goes on and
 * the model can correct itself).
 */
#ifndef AH_AGENTS_TOOLS_H
#define AH_AGENTS_TOOLS_H

#include <jansson.h>
#include <stdbool.h>

#include "agents/mcp.h"
#include "agents/spec.h"
#include "core/buf.h"
#include "core/loop.h"
#include "http/client.h"

/* Most bytes of one tool result put into the conversation (the rest is cut, with a note). */
#define AH_TOOL_RESULT_MAX (64u * 1024)

typedef enum { AH_TK_HTTP, AH_TK_EXEC, AH_TK_MCP, AH_TK_HANDOFF } ah_tool_kind_t;

typedef struct ah_tool_entry {
    ah_tool_kind_t kind;
    char *name;                  /* as the model sees it */
    const ah_agent_tool_t *spec; /* http, exec, mcp (the server entry) */
    ah_mcp_client_t *mcp;        /* mcp */
    char *remote_name;           /* mcp: the server's own tool name */
    char *handoff;               /* handoff: target agent */
    json_t *def;    /* {"type":"function","function":{name, description, parameters}} */
    json_t *schema; /* parameters, for validation (may be NULL) */
} ah_tool_entry_t;

typedef struct ah_tool_catalog {
    ah_tool_entry_t *v;
    size_t n;
} ah_tool_catalog_t;

/* Per worker: the HTTP client for http tools and the MCP connections (reused across runs). */
typedef struct ah_tools_worker ah_tools_worker_t;

ah_tools_worker_t *ah_tools_worker_new(ah_loop_t *loop);
void ah_tools_worker_free(ah_tools_worker_t *tw);

/**
 * Builds the catalogue of spec, connecting the MCP servers it needs first
 * (asynchronously). cb(ud, rc, err) runs on the loop: rc 0 with *cat filled,
 * or < 0 with a message (an MCP server that cannot start; duplicate names).
 * May call cb before returning when nothing needs connecting.
 */
int ah_tools_prepare(ah_tools_worker_t *tw, const ah_agent_spec_t *spec, ah_tool_catalog_t *cat,
                     void (*cb)(void *ud, int rc, const char *err), void *ud);

void ah_tool_catalog_free(ah_tool_catalog_t *cat);

/** The "tools" array for a model request (new reference; NULL when the catalogue is empty). */
json_t *ah_tool_catalog_defs(const ah_tool_catalog_t *cat);

/** Finds an entry by the name the model used. */
const ah_tool_entry_t *ah_tool_catalog_find(const ah_tool_catalog_t *cat, const char *name);

typedef struct ah_tool_exec ah_tool_exec_t;

/* The result of one tool call: text for the model, and whether it is an error. */
typedef void (*ah_tool_done_fn)(void *ud, bool is_error, const char *text, size_t n);

/**
 * Runs one call of entry with args_json on the worker's loop; done is called
 * exactly once unless cancelled (possibly before this returns, e.g. invalid
 * arguments). idem is the Idempotency-Key for http tools ("<run>:<call>").
 */
int ah_tool_run(ah_tools_worker_t *tw, const ah_tool_entry_t *entry, const char *args_json,
                const char *idem, const char *request_id, ah_tool_done_fn done, void *ud,
                ah_tool_exec_t **out);

/** Cancels a running call: no callback after this. */
void ah_tool_cancel(ah_tool_exec_t *x);

#endif
