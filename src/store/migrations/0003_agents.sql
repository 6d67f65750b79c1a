-- 0003_agents: the agent registry (src/store/agents.c, docs/internals/registry.md).
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- One row per agent name. Versions are never deleted or changed: a change of
-- spec is a new agent_versions row; rollback only moves current_version back
-- to an older row; archive only sets archived_at (runs and history stay).
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,     -- the version runs use
    latest_version BIGINT NOT NULL,      -- highest version written; the next one is latest + 1
    revision BIGINT NOT NULL,            -- +1 on every change: caches keep the highest they saw
    archived_at BIGINT,                  -- NULL = active
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL           -- bumped on every change: drives the registry refresh
);
CREATE INDEX agents_updated_at ON agents (updated_at);

CREATE TABLE agent_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,             -- 1, 2, 3 ... per name
    spec_json TEXT NOT NULL,             -- canonical JSON of the document (agents/spec.h)
    spec_hash TEXT NOT NULL,             -- SHA-256 hex of spec_json: "unchanged" detection
    created_at BIGINT NOT NULL,
    created_by TEXT,                     -- key id, "cli", "agents_dir"
    PRIMARY KEY (name, version)
);
