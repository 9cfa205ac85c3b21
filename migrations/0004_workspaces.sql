-- Workspaces as something users own and share.

-- Read models (projection "workspaces"): the caller's workspace list and member lists.
CREATE TABLE workspaces
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    slug       text,
    timezone   text        NOT NULL,
    deleted    boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE workspace_members
(
    workspace_id uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    role         text        NOT NULL,
    joined_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_by_user ON workspace_members (user_id, workspace_id);

-- Write side: slugs are unique across workspaces (reserved before the command), and API-key use
-- is recorded at most once a minute per key (a write per request would be a hot spot).
CREATE TABLE workspace_slugs
(
    slug         text PRIMARY KEY,
    workspace_id uuid NOT NULL
);

CREATE TABLE api_key_usage
(
    key_id       uuid PRIMARY KEY,
    workspace_id uuid        NOT NULL,
    last_used_at timestamptz NOT NULL
);
