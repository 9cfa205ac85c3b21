-- Notifications: alert channels, alerts, their deliveries, and account mail that is sent.

-- Account mail (verification, password reset, invitations, channel confirmations) is rendered
-- when it is queued, in the language of the request that asked for it (`body` is the plain
-- text, `html` the HTML part), and sent with retries and backoff.
ALTER TABLE mail_outbox
    ADD COLUMN html            text,
    ADD COLUMN lang            text        NOT NULL DEFAULT 'ru',
    ADD COLUMN params          jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error      text,
    ADD COLUMN failed_at       timestamptz;
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;

-- Single-use tokens of channels, stored hashed: e-mail confirmations and Telegram link codes.
CREATE TABLE channel_tokens
(
    token_hash   text PRIMARY KEY,
    kind         text        NOT NULL,
    workspace_id uuid        NOT NULL,
    channel_id   uuid,
    language     text        NOT NULL DEFAULT 'ru',
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The alert decider's own state, advanced in the transactions that move its checkpoint.
CREATE TABLE alert_streaks
(
    job_id       uuid PRIMARY KEY,
    workspace_id uuid        NOT NULL,
    failures     integer     NOT NULL,
    since        timestamptz NOT NULL,
    first_run    uuid        NOT NULL,
    open_alert   uuid
);
CREATE TABLE alert_channel_index
(
    channel_id   uuid PRIMARY KEY,
    workspace_id uuid    NOT NULL,
    verified     boolean NOT NULL,
    disabled     boolean NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX alert_channel_index_ws ON alert_channel_index (workspace_id);

-- Read models of the `notifications` projection.
CREATE TABLE notification_channels
(
    id              uuid PRIMARY KEY,
    workspace_id    uuid        NOT NULL,
    kind            text        NOT NULL,
    name            text        NOT NULL,
    language        text        NOT NULL,
    display         text        NOT NULL,
    sealed          text        NOT NULL,
    verified        boolean     NOT NULL,
    disabled_reason text,
    disabled_detail text,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX notification_channels_ws ON notification_channels (workspace_id, created_at);

CREATE TABLE alerts
(
    id                    uuid PRIMARY KEY,
    workspace_id          uuid        NOT NULL,
    job_id                uuid,
    run_id                uuid,
    kind                  text        NOT NULL,
    state                 text        NOT NULL,
    details               jsonb       NOT NULL,
    channels              uuid[]      NOT NULL,
    realert_every_seconds integer,
    reminders             integer     NOT NULL DEFAULT 0,
    next_reminder_at      timestamptz,
    raised_at             timestamptz NOT NULL,
    last_told_at          timestamptz NOT NULL,
    resolved_at           timestamptz,
    resolve_reason        text,
    resolved_by_run       uuid,
    failed_runs           integer
);
CREATE INDEX alerts_ws ON alerts (workspace_id, state, raised_at DESC);
CREATE INDEX alerts_reminders ON alerts (next_reminder_at) WHERE next_reminder_at IS NOT NULL;

CREATE TABLE notifications
(
    id              uuid PRIMARY KEY,
    workspace_id    uuid        NOT NULL,
    channel_id      uuid        NOT NULL,
    alert_id        uuid,
    run_id          uuid,
    kind            text        NOT NULL,
    content         jsonb       NOT NULL,
    status          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    throttled       integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    digest          integer,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX notifications_channel ON notifications (channel_id, created_at DESC);
CREATE INDEX notifications_run ON notifications (run_id) WHERE run_id IS NOT NULL;

-- Which Telegram chats are linked to which channels, by a keyed hash of the chat id (the id
-- itself is sealed in the channel): the bot looks chats up here for /status and /unlink.
-- Written by the link, unlink and migration use cases beside their events.
CREATE TABLE telegram_chats
(
    chat_hash    text NOT NULL,
    channel_id   uuid NOT NULL PRIMARY KEY,
    workspace_id uuid NOT NULL
);
CREATE INDEX telegram_chats_hash ON telegram_chats (chat_hash);

-- The long-polling bot's place in Telegram's update queue.
CREATE TABLE telegram_offsets
(
    bot         text PRIMARY KEY,
    next_offset bigint NOT NULL
);
