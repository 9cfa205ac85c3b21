-- The dispatcher asks whether a cron job's previous run is still going (overlap policies).
CREATE INDEX runs_open_by_job ON runs (job_id) WHERE status IN ('scheduled', 'dispatched', 'running', 'retry_scheduled');
