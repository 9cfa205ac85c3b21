-- Who created each live workspace: the bound on workspaces per user counts these rows (reserved
-- under a per-user lock before the workspace is created, released when it is deleted). A
-- write-side helper table like workspace_slugs, not a read model.
CREATE TABLE workspace_creators
(
    workspace_id uuid PRIMARY KEY,
    user_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_creators_by_user ON workspace_creators (user_id);
