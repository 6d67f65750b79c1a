-- 0001_init: API keys and the audit log.
-- Portable SQL (SQLite 3.40 and PostgreSQL 15): TEXT ids made by the app,
-- BIGINT milliseconds since the Unix epoch for every timestamp.

CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,          -- SHA-256 hex of the secret; the secret is never stored
    prefix TEXT NOT NULL,               -- first characters of the key, for display
    role TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,         -- bumped on every change: drives the key-cache refresh
    revoked_at BIGINT,                  -- NULL = active
    expires_at BIGINT,                  -- NULL = never
    created_by TEXT
);
CREATE INDEX keys_updated_at ON keys (updated_at);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    ts BIGINT NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,                        -- JSON object
    request_id TEXT
);
CREATE INDEX audit_log_ts ON audit_log (ts);
