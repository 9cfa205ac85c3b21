-- Callback tries are timed by the dispatcher like retries (see docs/architecture.md, "Stopping
-- and cancelling"): a waiting run is either an attempt or a callback try.
ALTER TABLE schedule_runs ADD COLUMN kind text NOT NULL DEFAULT 'attempt';
ALTER TABLE dispatch_outbox ADD COLUMN kind text NOT NULL DEFAULT 'attempt';
ALTER TABLE dispatch_outbox DROP CONSTRAINT dispatch_outbox_pkey, ADD PRIMARY KEY (run_id, kind, attempt);
