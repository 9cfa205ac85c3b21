-- Workspace signing secrets (Standard Webhooks), sealed with the operator's master key
-- (store/src/signing.rs): nonce ‖ XChaCha20-Poly1305 ciphertext. One current secret per
-- workspace; rotated ones keep signing until expires_at.
CREATE TABLE signing_secrets
(
    id           uuid PRIMARY KEY,
    workspace_id uuid        NOT NULL,
    ciphertext   bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz
);

CREATE UNIQUE INDEX signing_secrets_current ON signing_secrets (workspace_id) WHERE expires_at IS NULL;
CREATE INDEX signing_secrets_by_workspace ON signing_secrets (workspace_id, created_at DESC);
