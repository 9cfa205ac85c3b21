-- Read models. Every row carries workspace_id and every API query filters on it.

CREATE TABLE jobs
(
    id                   uuid PRIMARY KEY,
    workspace_id         uuid        NOT NULL,
    kind                 text        NOT NULL, -- cron | delayed
    name                 text        NOT NULL,
    description          text        NOT NULL,
    tags                 text[]      NOT NULL,
    -- cron: active | paused | deleted; delayed: pending | running | succeeded | failed | cancelled
    status               text        NOT NULL,
    definition           jsonb       NOT NULL,
    schedule             text,
    timezone             text,
    execute_at           timestamptz,
    -- cron fires at or before this instant are behind us (see schedule_jobs.anchor_at)
    anchor_at            timestamptz,
    next_run_at          timestamptz,
    last_run_at          timestamptz,
    last_run_id          uuid,
    last_status          text,
    consecutive_failures int         NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX jobs_list ON jobs (workspace_id, kind, created_at DESC, id DESC);

CREATE TABLE runs
(
    id             uuid PRIMARY KEY,
    workspace_id   uuid        NOT NULL,
    job_id         uuid        NOT NULL,
    trigger        text        NOT NULL,
    status         text        NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    attempts       int         NOT NULL DEFAULT 0,
    request        jsonb,
    dispatched_at  timestamptz,
    started_at     timestamptz,
    finished_at    timestamptz,
    retry_at       timestamptz,
    status_code    int,
    duration_ms    bigint,
    error_type     text,
    error_message  text,
    response       jsonb,
    skipped_count  bigint,
    created_at     timestamptz NOT NULL
);
CREATE INDEX runs_by_workspace ON runs (workspace_id, scheduled_for DESC, id DESC);
CREATE INDEX runs_by_job ON runs (workspace_id, job_id, scheduled_for DESC, id DESC);

CREATE TABLE run_attempts
(
    run_id       uuid        NOT NULL,
    attempt      int         NOT NULL,
    workspace_id uuid        NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    outcome      jsonb,
    PRIMARY KEY (run_id, attempt)
);

-- The due-schedule index the dispatcher loads at start-up (then it follows the event log).
-- One row per job that may still fire.
CREATE TABLE schedule_jobs
(
    job_id       uuid PRIMARY KEY,
    workspace_id uuid        NOT NULL,
    active       boolean     NOT NULL,
    definition   jsonb       NOT NULL,
    -- cron: fires at or before this instant are done (fired, skipped, or before the job existed
    -- or was resumed); the next fire is the first occurrence strictly after it.
    anchor_at    timestamptz NOT NULL
);
-- Runs waiting to be (re-)dispatched: manual runs and retries.
CREATE TABLE schedule_runs
(
    run_id       uuid        NOT NULL,
    attempt      int         NOT NULL,
    workspace_id uuid        NOT NULL,
    job_id       uuid        NOT NULL,
    due_at       timestamptz NOT NULL,
    PRIMARY KEY (run_id)
);
