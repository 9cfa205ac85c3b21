-- How many runs of one workspace may be in flight at once (dispatched, not yet finished): the
-- dispatcher holds the others in its timers until one finishes, so one tenant's backlog of slow
-- targets never fills the executors or the shared consumer's pending window. NULL: the
-- installation's CRONBOX_MAX_RUNS_IN_FLIGHT.
ALTER TABLE plans ADD COLUMN max_runs_in_flight integer;
UPDATE plans SET max_runs_in_flight = CASE code
    WHEN 'free' THEN 10 WHEN 'starter' THEN 25 WHEN 'pro' THEN 100 WHEN 'business' THEN 1000 END
 WHERE code IN ('free', 'starter', 'pro', 'business');
