-- The event log, read per workspace: the live execution feed, the enterprise event stream and
-- its NATS export all ask "this workspace's events after cursor C, in global order".
--
-- Not every event names its workspace (RunDispatched carries only an attempt number), so a
-- trigger derives it once, at insert: the workspace aggregate's own id, the workspace_id inside
-- the event (JobCreated, RunScheduled's plan, RunSkipped, RetryScheduled), or else the value the
-- aggregate's first event got. Users and sessions belong to no workspace (NULL) and are never
-- exported. Rows inserted earlier by the same statement are visible to a BEFORE ROW trigger, so
-- a batch holding an aggregate's first and later events works too.
ALTER TABLE events ADD COLUMN workspace_id uuid;

-- Writers that know the workspace (the dispatcher, the executor, job creates) set the column
-- themselves, and the trigger then costs no JSON parse and no lookup.
CREATE FUNCTION cronbox_event_workspace() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NEW.workspace_id IS NULL THEN
        NEW.workspace_id := CASE
            WHEN NEW.aggregate_type = 'Workspace' THEN NEW.aggregate_id::uuid
            WHEN NEW.aggregate_type IN ('User', 'Session') THEN NULL
            ELSE coalesce(
                (NEW.payload -> NEW.event_type ->> 'workspace_id')::uuid,
                (NEW.payload -> NEW.event_type -> 'plan' ->> 'workspace_id')::uuid,
                (SELECT e.workspace_id FROM events e
                  WHERE e.aggregate_type = NEW.aggregate_type AND e.aggregate_id = NEW.aggregate_id
                    AND e.sequence = 1))
        END;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_workspace BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION cronbox_event_workspace();

-- Existing rows: first the events that name their workspace, then the rest from their
-- aggregate's first event.
UPDATE events SET workspace_id = CASE
        WHEN aggregate_type = 'Workspace' THEN aggregate_id::uuid
        ELSE coalesce((payload -> event_type ->> 'workspace_id')::uuid,
                      (payload -> event_type -> 'plan' ->> 'workspace_id')::uuid)
    END
 WHERE aggregate_type NOT IN ('User', 'Session');
UPDATE events e SET workspace_id = f.workspace_id
  FROM events f
 WHERE e.workspace_id IS NULL AND e.aggregate_type NOT IN ('User', 'Session')
   AND f.aggregate_type = e.aggregate_type AND f.aggregate_id = e.aggregate_id AND f.sequence = 1
   AND f.workspace_id IS NOT NULL;

CREATE INDEX events_by_workspace ON events (workspace_id, xid, global_seq) WHERE workspace_id IS NOT NULL;

-- Which plans may read their own event stream (HTTP and NATS).
ALTER TABLE plans ADD COLUMN event_stream boolean NOT NULL DEFAULT false;
UPDATE plans SET event_stream = true WHERE code = 'business';

-- Re-runs: a new run that repeats a past one points at it.
ALTER TABLE runs ADD COLUMN rerun_of uuid;

-- NATS credentials issued for a workspace's event stream. The user's seed is handed out once and
-- never stored; the public key identifies the credentials, the consumer is theirs to read.
CREATE TABLE event_subscriptions
(
    id            uuid PRIMARY KEY,
    workspace_id  uuid        NOT NULL,
    name          text        NOT NULL,
    consumer      text        NOT NULL,
    user_key      text        NOT NULL,
    types         text[]      NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX event_subscriptions_by_workspace ON event_subscriptions (workspace_id, created_at);
