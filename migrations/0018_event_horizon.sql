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
-- below). Once such a transaction has its id, the process records the id in
-- `read_model_xids` (store/src/horizon.rs, on another connection, committed at once). A
-- running transaction listed there cannot add a row to the log, so the horizon is the oldest
-- running transaction *not* listed, or the snapshot's xmax when there is none.
--
-- Why this is still exact: only ids of read-model connections are ever listed, so a listed
-- transaction really writes no events. One not listed yet (its id was just assigned) simply
-- counts, which only delays a read. The reader's own transaction is not in its snapshot's
-- list of running ones, so its id is added back: a transaction that wrote events must not see
-- its own uncommitted rows in the tail. (Looking the connections up in `pg_stat_get_activity`
-- instead would need no table, but costs ~0.2 ms per read with 70 backends: every tail read
-- would pay it, while the table costs one small insert per projection step.)
CREATE UNLOGGED TABLE read_model_xids
(
    xid         xid8 PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- PL/pgSQL, not SQL: a SQL function that cannot be inlined is planned again on every call
-- (+0.08 ms per tail read, measured with pgbench), a PL/pgSQL one keeps its plans (+0.02 ms).
-- STABLE, so every statement in it sees the calling query's snapshot: the list of running
-- transactions and the table are read as of the same instant as the events.
CREATE FUNCTION cronbox_event_horizon() RETURNS xid8 LANGUAGE plpgsql STABLE AS $$
DECLARE
    snap    pg_snapshot := pg_current_snapshot();
    oldest  xid8;
BEGIN
    SELECT min(x) INTO oldest
      FROM pg_snapshot_xip(snap) AS x
     WHERE NOT EXISTS (SELECT 1 FROM read_model_xids AS r WHERE r.xid = x);
    RETURN least(coalesce(oldest, pg_snapshot_xmax(snap)), pg_current_xact_id_if_assigned());
END $$;

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
