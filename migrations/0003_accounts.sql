-- Accounts: write-side helpers next to the User and Session aggregates. None of these is a read
-- model (nothing here is rebuilt from the log); each guards something an aggregate cannot see.

-- One account per e-mail address: reserved before UserRegistered is appended.
CREATE TABLE user_emails
(
    email      text PRIMARY KEY,
    user_id    uuid        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Single-use, expiring tokens mailed to users (only their SHA-256 is kept).
CREATE TABLE auth_tokens
(
    token_hash text PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('verify_email', 'reset_password')),
    user_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Mail waiting for a sending channel (notifications come later; tests read it here).
CREATE TABLE mail_outbox
(
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    to_email   text        NOT NULL,
    kind       text        NOT NULL,
    subject    text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);

-- Failed-login counters per account and per client address, shared by every API process.
CREATE TABLE auth_throttle
(
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    failures     integer     NOT NULL
);

-- Secrets the processes of one installation must share (the JWT signing key unless configured).
CREATE TABLE server_secrets
(
    name       text PRIMARY KEY,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
