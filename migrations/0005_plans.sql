-- Plans are data: limits and prices live here, and code only ever compares against a row.
-- A limit of NULL means "no limit". Prices are in kopecks (RUB / 100).
CREATE TABLE plans
(
    code                      text PRIMARY KEY,
    name                      text    NOT NULL,
    position                  integer NOT NULL,
    price_kopecks             bigint  NOT NULL,
    max_active_cron_jobs      integer,
    max_delayed_per_month     integer,
    min_cron_interval_seconds integer NOT NULL,
    max_timeout_seconds       integer NOT NULL,
    max_retries               integer NOT NULL,
    log_retention_days        integer NOT NULL,
    max_members               integer,
    max_api_keys              integer,
    requests_per_minute       integer NOT NULL
);

INSERT INTO plans VALUES
    ('free',     'Free',     1,      0,    5,    1000, 300,  30,  3,   7,   2,   2,   60),
    ('starter',  'Starter',  2,  49000,   50,   20000,  60,  60,  5,  30,   5,  10,  300),
    ('pro',      'Pro',      3, 149000,  500,  200000,  10, 120, 10,  90,  20,  50, 1200),
    ('business', 'Business', 4, 499000, 5000, 2000000,   1, 300, 10, 365, 100, 200, 6000);

-- The workspaces read model shows each workspace's plan.
ALTER TABLE workspaces ADD COLUMN plan text NOT NULL DEFAULT 'free';

-- Plan-limit counters, written in the same transaction as the job events that move them (an
-- inline projection: see store/src/usage.rs). `period` is '' for counters that never reset and
-- 'YYYY-MM' in the workspace's timezone for monthly ones.
CREATE TABLE usage_counters
(
    workspace_id uuid   NOT NULL,
    counter      text   NOT NULL,
    period       text   NOT NULL,
    used         bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (workspace_id, counter, period)
);

-- A database that already has jobs starts from its read models; `cronbox projections rebuild
-- usage_counters` recomputes the counters exactly from the log.
INSERT INTO usage_counters (workspace_id, counter, period, used)
SELECT workspace_id, 'active_cron_jobs', '', count(*)
  FROM jobs WHERE kind = 'cron' AND status = 'active'
 GROUP BY workspace_id;

INSERT INTO usage_counters (workspace_id, counter, period, used)
SELECT j.workspace_id, 'delayed_calls', to_char(j.created_at AT TIME ZONE coalesce(w.timezone, 'Europe/Moscow'), 'YYYY-MM'), count(*)
  FROM jobs j LEFT JOIN workspaces w ON w.id = j.workspace_id
 WHERE j.kind = 'delayed'
 GROUP BY 1, 3;

-- Runs per workspace and month (the asynchronous `usage` projection). It keeps each workspace's
-- timezone itself, so a month boundary never depends on another projection's progress.
CREATE TABLE usage_timezones
(
    workspace_id uuid PRIMARY KEY,
    timezone     text NOT NULL
);

CREATE TABLE usage_runs
(
    workspace_id uuid   NOT NULL,
    period       text   NOT NULL,
    runs         bigint NOT NULL,
    PRIMARY KEY (workspace_id, period)
);
