-- The dispatcher's reconciler looks for runs still in flight (dispatched or running) long after
-- their dispatch; a partial index keeps that cheap however long the execution log grows.
CREATE INDEX runs_in_flight ON runs (dispatched_at) WHERE status IN ('dispatched', 'running');
