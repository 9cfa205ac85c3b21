-- The tail's horizon counts only transactions that can write events.
--
-- Until now a reader saw an event only when every older transaction with an id had ended
-- (`pg_snapshot_xmin`), including the projections' own transactions, which write read-model rows
-- and never events. A projection applying a burst in one transaction therefore held back every
-- other reader — the alert decider, the notifications projection behind it, the feed — for as
-- long as it ran.
--
-- Projections now write through their own connections, which announce themselves with the
-- application name `cronbox-read-models` (store/src/db.rs) and may not insert events (the guard
-- below). A running transaction of such a connection cannot add a row to the log, so the horizon
-- is the oldest *other* running transaction, or the snapshot's xmax when there is none.
--
-- Why this is still exact: the reader decides with the same snapshot it reads rows with.
-- `pg_stat_get_activity` is read after that snapshot was taken, so a transaction listed in it as
-- a read-model one with a given xid really is one; one that ended in between is no longer
-- listed and simply counts (a lower horizon is only later, never wrong). The reader's own
-- transaction is not in its snapshot's list, so its id is added back: a transaction that wrote
-- events must not see its own uncommitted rows in the tail.
CREATE FUNCTION cronbox_event_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT least(
        coalesce(
            (SELECT min(x)
               FROM pg_snapshot_xip(pg_current_snapshot()) AS x
              -- Evaluated only when some transaction is running (an empty list needs no lookup).
              WHERE x::xid NOT IN (SELECT a.backend_xid
                                     FROM pg_stat_get_activity(NULL) AS a
                                    WHERE a.application_name = 'cronbox-read-models'
                                      AND a.backend_xid IS NOT NULL)),
            pg_snapshot_xmax(pg_current_snapshot())),
        pg_current_xact_id_if_assigned())
$$;

-- The promise the horizon relies on, kept by the database: a read-model connection that tried to
-- append an event would make the log's order unsafe, so it fails instead.
CREATE OR REPLACE FUNCTION cronbox_event_workspace() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('application_name') = 'cronbox-read-models' THEN
        RAISE EXCEPTION 'a read-model connection (application_name cronbox-read-models) may not write events'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
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
