-- The NATS event export's own memory of each workspace's plan, as of the export's checkpoint
-- (see nats/src/export.rs): whether a workspace's events go out is decided from the log, in
-- order, not from another projection that may be ahead or behind.
CREATE TABLE event_export_workspaces
(
    workspace_id uuid PRIMARY KEY,
    plan         text NOT NULL
);
