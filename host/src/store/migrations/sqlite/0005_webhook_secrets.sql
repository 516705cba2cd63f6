-- Per-connection webhook signing secrets, sealed at rest like credentials (the same key) but under
-- associated data of their own ("deskgate:webhook-secret:" || connection id), so a sealed blob
-- copied between this table and `credentials`, or between two connections, does not decrypt.
-- `sealed` is NULL for a connection that takes unsigned deliveries only; a row never has neither
-- (no secret and unsigned refused is the absence of a row).
CREATE TABLE webhook_secrets (
    connection_id  TEXT PRIMARY KEY REFERENCES connections (id),
    sealed         BLOB,
    allow_unsigned INTEGER NOT NULL CHECK (allow_unsigned IN (0, 1)),
    updated_at     INTEGER NOT NULL,
    CHECK (sealed IS NOT NULL OR allow_unsigned = 1)
);
