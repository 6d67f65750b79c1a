-- 0004_runs: agent runs and their event log (src/store/runs.c, store/runs.h).
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- One row per run. The mutable columns are rewritten at every step boundary
-- (DESIGN.md section 6), so a replica can resume a run from its last step.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    agent_version BIGINT NOT NULL,
    status TEXT NOT NULL,                -- queued, running, requires_action, completed, failed, cancelled, expired
    mode TEXT NOT NULL,                  -- sync, stream, async
    input TEXT NOT NULL,                 -- JSON: a string or an array of messages
    output TEXT,                         -- final answer text
    error TEXT,                          -- user-facing failure reason
    error_code TEXT,
    session_id TEXT,
    key_id TEXT NOT NULL DEFAULT '',     -- '' when the run was not started with an API key
    tenant TEXT NOT NULL DEFAULT 'default',
    metadata TEXT,                       -- JSON object
    limits TEXT,                         -- JSON object of per-request limit overrides
    state TEXT,                          -- JSON: the conversation so far
    turns INTEGER NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_owner TEXT,                    -- the replica running it, NULL when none
    lease_expires_at BIGINT,
    attempt INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,                -- the client's Idempotency-Key, unique per key_id
    webhook_url TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,                   -- NULL = not yet
    finished_at BIGINT,                  -- NULL = not yet
    updated_at BIGINT NOT NULL,
    last_event_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_agent_created ON runs (agent, created_at);
CREATE INDEX runs_session ON runs (session_id);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_key_created ON runs (key_id, created_at);
-- NULLs are distinct in a UNIQUE index on both backends: runs without a key are not constrained.
CREATE UNIQUE INDEX runs_idempotency ON runs (key_id, idempotency_key);

-- The event log of a run, replayed by GET /v1/runs/{id}/events (SSE ids are seq).
CREATE TABLE run_events (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,                 -- 1, 2, 3 ... within the run
    type TEXT NOT NULL,                  -- run.created, message.delta, ...
    data TEXT NOT NULL,                  -- JSON object
    ts BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
