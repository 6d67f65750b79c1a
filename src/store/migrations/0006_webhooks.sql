-- 0006_webhooks: the webhook outbox (src/store/webhooks.c, docs/webhooks.md).
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- One row per delivery (a run's final state sent to one URL). The row is
-- written in the same transaction as the run's final state, so a finished
-- run never lacks its delivery. The delivery thread claims due pending rows
-- by moving next_attempt_at past the lease (so one replica sends a row at a
-- time), then marks them delivered, reschedules them with backoff, or
-- dead-letters them after webhooks.max_attempts.
CREATE TABLE webhooks_outbox (
    id TEXT PRIMARY KEY,                 -- whd_...; sent as X-Agenthub-Delivery and in the payload
    run_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,                 -- run.completed, run.failed, run.cancelled
    payload TEXT NOT NULL,               -- the JSON body, signed and sent as is on every attempt
    status TEXT NOT NULL,                -- pending, delivered, dead
    attempts INTEGER NOT NULL DEFAULT 0, -- attempts finished (reset by a retry through the API)
    next_attempt_at BIGINT NOT NULL,     -- ms: due time when pending (a claim pushes it to the lease end)
    last_error TEXT,                     -- why the last attempt failed (NULL after a success)
    last_status INTEGER,                 -- HTTP status of the last attempt, NULL when none came back
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT                  -- NULL until delivered
);
CREATE INDEX webhooks_outbox_due ON webhooks_outbox (status, next_attempt_at);
CREATE INDEX webhooks_outbox_run ON webhooks_outbox (run_id);
CREATE INDEX webhooks_outbox_created ON webhooks_outbox (created_at);
