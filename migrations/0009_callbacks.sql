-- Delivery of delayed calls' results to their callback_url, per run: pending (final outcome
-- known, not yet delivered), retrying, delivered or failed (given up).
ALTER TABLE runs
    ADD COLUMN callback_url      text,
    ADD COLUMN callback_status   text,
    ADD COLUMN callback_attempts int NOT NULL DEFAULT 0,
    ADD COLUMN callback_error    text,
    ADD COLUMN callback_next_at  timestamptz;

CREATE INDEX runs_callback_failed ON runs (workspace_id, scheduled_for DESC) WHERE callback_status = 'failed';
-- The reconciler's look for callbacks whose message JetStream lost.
CREATE INDEX runs_callback_pending ON runs (finished_at) WHERE callback_status IN ('pending', 'retrying');
