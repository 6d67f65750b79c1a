-- 0007_cancel_requests: a cancel that reaches any replica (src/agents/cancels.c).
-- Portable SQL (SQLite 3.40 and PostgreSQL 15), same rules as 0001.

-- When POST /v1/runs/{id}/cancel asked to stop a run that executes somewhere
-- (NULL = never asked). The owner of the lease polls for these and ends the
-- run; a replica that takes a run over after a crash does the same, so an
-- accepted cancel is never lost.
ALTER TABLE runs ADD COLUMN cancel_requested_at BIGINT;
-- Only runs that are asked to stop and still executing are in it: the owners' poll reads a few rows.
CREATE INDEX runs_cancel_requested ON runs (lease_owner)
    WHERE cancel_requested_at IS NOT NULL AND status IN ('queued', 'running');
