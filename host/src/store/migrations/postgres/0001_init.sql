-- deskgate store schema v1 (PostgreSQL). Times are BIGINT milliseconds since the Unix epoch,
-- given by the caller (never now()). JSON columns are JSONB.

CREATE TABLE deskgate_meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE connections (
    id                TEXT PRIMARY KEY,
    platform          TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    plan              TEXT,
    settings          JSONB NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending_probe', 'live', 'suspended', 'deleted')),
    suspend_reason    TEXT,
    suspend_kind      TEXT,
    admin_contact_url TEXT,
    probe_report      JSONB,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE credentials (
    connection_id      TEXT PRIMARY KEY REFERENCES connections (id),
    scheme             TEXT NOT NULL,
    sealed             BYTEA NOT NULL,
    expires_at         BIGINT,
    version            BIGINT NOT NULL,
    refresh_owner      TEXT,
    refresh_started_at BIGINT,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   TEXT NOT NULL REFERENCES connections (id),
    ticket_id       TEXT NOT NULL,
    action          JSONB NOT NULL,
    idempotency_key TEXT NOT NULL,
    app_key         TEXT,
    state           TEXT NOT NULL
        CHECK (state IN ('pending', 'sent', 'confirmed', 'failed', 'ambiguous', 'diverged')),
    state_detail    TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_sent_at    BIGINT,
    result          JSONB,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- The app's Idempotency-Key names one entry per connection, forever.
CREATE UNIQUE INDEX outbox_app_key ON outbox (connection_id, app_key) WHERE app_key IS NOT NULL;
-- At most one entry per content key is in flight: two replicas enqueueing at once get one entry.
CREATE UNIQUE INDEX outbox_in_flight ON outbox (connection_id, idempotency_key)
    WHERE state IN ('pending', 'sent', 'ambiguous');
CREATE INDEX outbox_by_key ON outbox (connection_id, idempotency_key, updated_at);
CREATE INDEX outbox_due ON outbox (not_before, id) WHERE state IN ('pending', 'sent', 'ambiguous');
CREATE INDEX outbox_by_ticket ON outbox (connection_id, ticket_id);

CREATE TABLE write_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id      BIGINT NOT NULL REFERENCES outbox (id),
    connection_id TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    sent_at       BIGINT,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL
);
CREATE INDEX write_log_by_entry ON write_log (entry_id, id);
-- Audit records are append-only.
CREATE FUNCTION deskgate_write_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'write_log is append-only';
END;
$$;
CREATE TRIGGER write_log_append_only BEFORE UPDATE OR DELETE ON write_log
    FOR EACH ROW EXECUTE FUNCTION deskgate_write_log_append_only();

CREATE TABLE inbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES connections (id),
    platform      TEXT NOT NULL,
    ticket_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    ticket        JSONB NOT NULL,
    dedupe_key    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT,
    acked_at      BIGINT,
    UNIQUE (connection_id, dedupe_key)
);
CREATE INDEX inbox_unacked ON inbox (connection_id, id) WHERE acked_at IS NULL;

CREATE TABLE alerts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   TEXT REFERENCES connections (id),
    kind            TEXT NOT NULL,
    text            TEXT NOT NULL,
    detail          JSONB NOT NULL,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    acked_at        BIGINT
);
CREATE INDEX alerts_due ON alerts (next_attempt_at, id) WHERE delivered_at IS NULL AND acked_at IS NULL;

CREATE TABLE timer_leases (
    connection_id TEXT NOT NULL,
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    held_until    BIGINT NOT NULL,
    generation    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, name)
);
