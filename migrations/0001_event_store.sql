-- The event log: the source of truth. Same shape as postgres-es expects (it names its INSERT
-- columns, so the extra columns below take their defaults on its path too).
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- Global order. global_seq alone is NOT safe to tail: identity values are handed out at
    -- insert time, so a transaction that inserts seq 10 can commit after one that inserted 11, and
    -- a reader that already passed 11 would skip 10 for ever. Readers therefore only read rows
    -- whose transaction id is below the oldest still-running transaction (every such transaction
    -- has finished), ordered by (xid, global_seq). See store/src/tail.rs.
    global_seq     bigint GENERATED ALWAYS AS IDENTITY,
    xid            xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX events_global_order ON events (xid, global_seq);

-- postgres-es wants this table to exist even though CronBox uses plain event-store mode
-- (its snapshot mode double-applies events in 0.5.0).
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Wake tails at commit time instead of polling. NOTIFY is delivered on commit only, and one per
-- statement is plenty: the payload carries nothing, readers re-read from their cursor.
CREATE FUNCTION cronbox_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cronbox_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION cronbox_notify_events();

-- Per-projection checkpoint, written in the same transaction as the read-model rows it covers.
CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    last_xid   bigint      NOT NULL DEFAULT 0,
    last_seq   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Fires recorded by the dispatcher but not yet acknowledged by JetStream. Written in the same
-- transaction as the run's RunDispatched event and deleted after the publish ack, so a crash in
-- between is repaired by re-publishing what is left here (JetStream's Nats-Msg-Id dedup and the
-- run's own event history absorb the repeat).
CREATE TABLE dispatch_outbox
(
    run_id       uuid        NOT NULL,
    attempt      int         NOT NULL,
    workspace_id uuid        NOT NULL,
    job_id       uuid        NOT NULL,
    due_at       timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt)
);

-- Idempotency keys of delayed calls: reserved before the create command runs, so two concurrent
-- creates with one key agree on a single job id.
CREATE TABLE delayed_idempotency
(
    workspace_id    uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    job_id          uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, idempotency_key)
);
