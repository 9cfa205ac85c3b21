-- Public status badges (`/badge/{token}.svg`): a job is found by its badge token. Partial, so
-- jobs without a badge add nothing; on `definition`, which runs never update, so the runs'
-- updates of the jobs row stay HOT.
CREATE INDEX jobs_status_badge ON jobs ((definition ->> 'status_badge')) WHERE definition ? 'status_badge';
