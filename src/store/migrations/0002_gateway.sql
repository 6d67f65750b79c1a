-- 0002_gateway: LLM gateway usage rows and per-key limits.
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- One row per gateway request, written in batches by the usage recorder
-- (src/gateway/usage.c). Budgets sum cost_usd per key over a period; /v1/usage
-- groups by key, model and day.
CREATE TABLE usage (
    ts BIGINT NOT NULL,                  -- ms since the epoch, when the request finished
    request_id TEXT,
    key_id TEXT NOT NULL,                -- '' when the call had no API key (internal)
    tenant TEXT NOT NULL DEFAULT 'default',
    model TEXT NOT NULL,                 -- public model name as configured
    provider TEXT,
    upstream_model TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,   -- including cached_tokens
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_ms BIGINT,
    ttft_ms BIGINT,                      -- NULL when unknown
    status INTEGER NOT NULL,             -- HTTP status given to the client
    stream INTEGER NOT NULL DEFAULT 0,   -- 0/1
    attempts INTEGER NOT NULL DEFAULT 1,
    agent TEXT,                          -- NULL outside agent runs
    run_id TEXT,
    node TEXT NOT NULL DEFAULT ''        -- the process that wrote the row (budget reconcile)
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_key_ts ON usage (key_id, ts);

-- Per-key overrides of the limits.* defaults. No row, or NULL in a column,
-- means the configured default; budget_usd NULL means no budget.
CREATE TABLE key_limits (
    key_id TEXT PRIMARY KEY,
    rpm BIGINT,
    tpm BIGINT,
    concurrency BIGINT,
    budget_usd DOUBLE PRECISION,
    budget_period TEXT,                  -- daily, weekly, monthly, total (calendar UTC)
    updated_at BIGINT NOT NULL           -- drives the policy-cache refresh
);
CREATE INDEX key_limits_updated_at ON key_limits (updated_at);
