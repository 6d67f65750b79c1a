/*
 * spec.h - the agent spec (DESIGN.md section 5): parsing and validating an
 * agent document into an immutable, refcounted ah_agent_spec_t.
 *
 * One document format for the API, the CLI and agents_dir:
 *
 *   apiVersion: agenthub/v1
 *   kind: Agent
 *   metadata: { name: support, labels: { team: cx } }
 *   spec: { model: fast, instructions: "...", tools: [...], handoffs: [...],
 *           approval: { tools: [...] }, limits: {...}, session: {...},
 *           canary: { version: 3, weight: 10 } }
 *
 * written as YAML (one or more documents separated by ---) or JSON (an object,
 * or an array of objects). docs/agents.md is the field reference.
 *
 * Validation never stops at the first problem: every error is collected with
 * the field path ("spec.tools[1].type"), the line in the source (YAML only;
 * JSON has no positions) and a message that says how to fix it, with a
 * "did you mean" for misspelt fields and values. Checks that need the world
 * outside the document (is the model configured? does the handoff agent
 * exist? does the canary version exist?) are a separate step,
 * ah_agent_spec_check_context, so callers choose where the truth comes from
 * (config + store in the API, config + store + the batch in the CLI).
 *
 * A parsed spec also carries its canonical JSON: every field with its
 * default filled in, keys sorted, compact. Two documents that mean the same
 * agent have the same canonical JSON and the same SHA-256 (spec->hash), which
 * is how the registry tells "unchanged" from "new version". Parsing the
 * canonical JSON gives the same canonical JSON again.
 *
 * Memory: a spec owns everything it points to (one arena) and is freed when
 * its last reference is dropped (ah_agent_spec_unref). It is never modified
 * after ah_agent_spec_parse returns (except version, set once by the registry
 * before it shares the spec), so any number of threads may read it.
 * No function here does I/O except ah_agent_spec_load_file.
 */
#ifndef AH_AGENTS_SPEC_H
#define AH_AGENTS_SPEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"

#define AH_AGENT_API_VERSION      "agenthub/v1"
#define AH_AGENT_KIND             "Agent"
#define AH_AGENT_NAME_MAX         64            /* [a-z0-9][a-z0-9_-]{0,63} */
#define AH_AGENT_DOC_MAX_BYTES    (1024 * 1024) /* one source (file or request body) */
#define AH_AGENT_MAX_DOCS         256           /* agents in one source */
#define AH_AGENT_MAX_TOOLS        128
#define AH_AGENT_INSTRUCTIONS_MAX (256 * 1024)
#define AH_AGENT_MAX_HANDOFFS     32
#define AH_AGENT_MAX_LABELS       64
#define AH_AGENT_MAX_ERRORS       100 /* kept per parse; the rest are counted */
#define AH_AGENT_TOOL_NAME_MAX    64  /* OpenAI function names: [A-Za-z0-9_-]{1,64} */

typedef enum { AH_AGENT_FMT_AUTO = 0, AH_AGENT_FMT_YAML, AH_AGENT_FMT_JSON } ah_agent_format_t;

typedef enum { AH_TOOL_HTTP = 1, AH_TOOL_MCP, AH_TOOL_EXEC } ah_tool_type_t;

/** A string pair (labels, headers, env). */
typedef struct ah_agent_kv {
    const char *key;
    const char *value;
} ah_agent_kv_t;

/** Limits of an exec tool's process (docs/agents.md, "exec"). */
typedef struct ah_agent_sandbox {
    bool none;               /* `sandbox: none`: run without a sandbox (explicit opt-out) */
    bool network;            /* default false */
    int memory_mb;           /* default 256 */
    double cpu_s;            /* CPU seconds; default 10 */
    double timeout_s;        /* wall clock; default 30 */
    size_t max_output_bytes; /* stdout + stderr kept; default 1 MiB */
} ah_agent_sandbox_t;

typedef struct ah_agent_tool {
    ah_tool_type_t type;
    int line; /* line of the tool entry in its source; 0 when unknown */
    /* http, exec (NULL for mcp: an MCP server names its own tools) */
    const char *name;
    const char *description; /* "" when not given */
    const char *parameters;  /* JSON schema of the arguments, compact JSON text */
    double timeout_s;        /* http, mcp; default 30 */
    struct {
        const char *url;    /* may hold {param} placeholders */
        const char *method; /* GET (default), POST, PUT, PATCH, DELETE */
        const ah_agent_kv_t *headers;
        size_t n_headers;          /* values kept as written: ${ENV} is expanded at call time */
        size_t max_response_bytes; /* default 1 MiB */
    } http;
    struct {
        const char *url; /* Streamable HTTP server, or NULL when command is set */
        const char *const *command;
        size_t n_command; /* stdio server: argv */
        const ah_agent_kv_t *env;
        size_t n_env;
        const char *const *allow; /* tools offered to the model; none = all */
        size_t n_allow;
        const char *prefix; /* "" or prepended to every tool name of the server */
    } mcp;
    struct {
        const char *const *command;
        size_t n_command;
        ah_agent_sandbox_t sandbox;
    } exec;
} ah_agent_tool_t;

typedef struct ah_agent_limits {
    int max_turns;               /* model calls per run; default 10 */
    int64_t max_tokens;          /* 0 = no limit */
    double max_cost_usd;         /* 0 = no limit */
    double timeout_s;            /* whole run; default 300 */
    int max_tool_calls_per_turn; /* default 32 */
    int loop_detect;             /* same tool + arguments this many times fails the run; 0 = off;
                                    default 3 */
    int concurrency;             /* concurrent runs of this agent; 0 = no limit (default) */
} ah_agent_limits_t;

typedef struct ah_agent_spec {
    atomic_int refs;
    ah_arena_t arena; /* owns every pointer below */

    const char *name;
    const ah_agent_kv_t *labels; /* sorted by key */
    size_t n_labels;
    const char *model;
    const char *instructions; /* "" when not given */
    const ah_agent_tool_t *tools;
    size_t n_tools;
    const char *const *handoffs;
    size_t n_handoffs;
    const char *const *approval_tools;
    size_t n_approval_tools;
    double approval_timeout_s; /* a pending approval expires after this; 0 = the run's timeout_s */
    const char *webhook_url;   /* runs without their own webhook_url report here; NULL = none */
    ah_agent_limits_t limits;
    struct {
        double ttl_s;     /* default 86400 */
        int max_messages; /* default 200 */
    } session;
    struct {
        int64_t version; /* 0 = no canary */
        int weight;      /* 0..100: percent of runs given to that version */
    } canary;

    const char *json; /* canonical JSON of the whole document */
    size_t json_len;
    char hash[65]; /* SHA-256 hex of json */

    /* Where it came from, for messages. */
    const char *source; /* file name, "<request>" ... */
    int line;           /* first line of the document; 0 when unknown */
    int model_line, canary_line;
    const int *handoff_lines;

    int64_t version; /* stored version; 0 until the registry sets it */
} ah_agent_spec_t;

/** Parsed documents, in source order. Owns one reference to each spec. */
typedef struct ah_agent_spec_list {
    ah_agent_spec_t **v;
    size_t n;
} ah_agent_spec_list_t;

/** One problem: where (source, line, path) and what. */
typedef struct ah_agent_error {
    char *source;  /* file name, "<request>" ... */
    int line;      /* 1-based line in the source; 0 when unknown (JSON) */
    int doc;       /* 0-based document index when the source holds several, else -1 */
    char *path;    /* "spec.tools[1].type"; "" for the document or the source as a whole */
    char *message; /* what is wrong and how to fix it */
} ah_agent_error_t;

/**
 * Collected problems, from one source or several (the CLI applies many
 * files). Zero-initialise (AH_AGENT_ERRORS_INIT); free with ah_agent_errors_free.
 */
typedef struct ah_agent_errors {
    ah_agent_error_t *v; /* the first AH_AGENT_MAX_ERRORS problems; each parse's in source order */
    size_t n, cap;
    size_t more; /* problems past the cap, not kept */
} ah_agent_errors_t;

#define AH_AGENT_ERRORS_INIT                                                                       \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/**
 * Parses len bytes of text (need not be NUL-terminated) holding one or more
 * agent documents. source names the text in messages ("agents/support.yaml",
 * "<request>"). fmt AUTO treats text starting with '{' or '[' as JSON
 * (YAML flow style needs fmt YAML), anything else as YAML.
 *
 * Returns 0 and fills out (empty documents are skipped; out->n may be 0 for
 * a source holding only comments), or, with out empty and every problem
 * appended to errs:
 *   -EBADMSG  the text is not YAML/JSON (a syntax error: HTTP 400);
 *   -E2BIG    more than AH_AGENT_DOC_MAX_BYTES, or more than AH_AGENT_MAX_DOCS
 *             documents, or nested too deep (HTTP 413 / 400);
 *   -EINVAL   it parses but breaks the spec (HTTP 422);
 *   -ENOMEM.
 * All documents are valid or none is returned. out must be empty on entry;
 * free it with ah_agent_spec_list_free. errs is appended to (may be NULL).
 */
int ah_agent_spec_parse(const char *source, const char *text, size_t len, ah_agent_format_t fmt,
                        ah_agent_spec_list_t *out, ah_agent_errors_t *errs);

/**
 * Reads the file at path (at most AH_AGENT_DOC_MAX_BYTES) and parses it like
 * ah_agent_spec_parse, messages naming path. .json files are JSON, .yaml and
 * .yml YAML, others sniffed. Besides the errors above, -errno from open/read
 * with "PATH: cannot read: reason" in errs.
 */
int ah_agent_spec_load_file(const char *path, ah_agent_spec_list_t *out, ah_agent_errors_t *errs);

/** Where the world outside a document comes from; any member may be NULL (not checked). */
typedef struct ah_agent_context {
    const ah_config_t *cfg; /* spec.model must be a model or alias configured here */
    /* True when agent name exists and is not archived (for spec.handoffs). */
    bool (*agent_exists)(void *ud, const char *name);
    /* True when agent name has a stored version `version` (for spec.canary.version). */
    bool (*version_exists)(void *ud, const char *name, int64_t version);
    void *ud;
} ah_agent_context_t;

/**
 * Checks what the document alone cannot: the model is configured, every
 * handoff names an existing agent, the canary version exists. Appends one
 * error per problem to errs (paths spec.model, spec.handoffs[i],
 * spec.canary.version). Returns 0 or -EINVAL. Thread-safe if the callbacks are.
 */
int ah_agent_spec_check_context(const ah_agent_spec_t *spec, const ah_agent_context_t *ctx,
                                ah_agent_errors_t *errs);

/** Takes a reference; returns spec. */
ah_agent_spec_t *ah_agent_spec_ref(ah_agent_spec_t *spec);

/** Drops a reference; the last one frees the spec. NULL is a no-op. Thread-safe. */
void ah_agent_spec_unref(ah_agent_spec_t *spec);

/** Drops the list's references and empties it. */
void ah_agent_spec_list_free(ah_agent_spec_list_t *list);

/** The tool whose model-facing name is name (http/exec only), or NULL. */
const ah_agent_tool_t *ah_agent_spec_tool(const ah_agent_spec_t *spec, const char *name);

/** "http", "mcp", "exec". */
const char *ah_agent_tool_type_name(ah_tool_type_t t);

/** True when name is a valid agent name: [a-z0-9][a-z0-9_-]{0,63}. */
bool ah_agent_name_ok(const char *name);

/**
 * Appends every error as one line: "SOURCE:LINE: PATH: MESSAGE" (or
 * "SOURCE: document N: PATH: MESSAGE" when there is no line and the source
 * holds several documents), plus "N more problems not shown" when some were
 * dropped. 0 or -ENOMEM.
 */
int ah_agent_errors_format(const ah_agent_errors_t *errs, ah_buf_t *out);

/**
 * Appends one error (for callers with problems of their own, e.g. the same
 * agent in two files). doc is -1 when not meaningful. Never fails: past the
 * cap or out of memory the error is only counted in errs->more.
 */
void ah_agent_errors_add(ah_agent_errors_t *errs, const char *source, int line, int doc,
                         const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/** Frees every error; errs is empty and reusable afterwards. */
void ah_agent_errors_free(ah_agent_errors_t *errs);

/**
 * Appends the JSON text json[0..len) as block-style YAML (keys in the JSON's
 * order; strings quoted when YAML would read them as something else). For
 * `agenthub agents get --yaml` and `Accept: application/yaml`.
 * 0, -EINVAL (not JSON), -ENOMEM.
 */
int ah_agent_json_to_yaml(const char *json, size_t len, ah_buf_t *out);

#endif
