-- 0005_sessions: conversation memory across runs (src/store/sessions.c) and
-- the request hash behind Idempotency-Key (src/store/runs_idem.c).
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- One row per session. The id is chosen by the client (session_id of a run)
-- and owned by the API key that first used it; messages is the whole
-- conversation as one JSON array, rewritten when a run releases the session.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL DEFAULT '',     -- owner; '' when not started with an API key
    tenant TEXT NOT NULL DEFAULT 'default',
    agent TEXT NOT NULL,                 -- agent of the last run that used it
    messages TEXT NOT NULL,              -- JSON array of chat messages
    n_messages INTEGER NOT NULL DEFAULT 0,
    active_run_id TEXT,                  -- the run holding the session, NULL when none
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,          -- last acquire or release
    expires_at BIGINT NOT NULL           -- memory is forgotten after this (ms)
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- SHA-256 of the canonical request that created a run (ah_run_request_hash):
-- a repeat with the same Idempotency-Key must carry the same request.
ALTER TABLE runs ADD COLUMN request_hash TEXT;
