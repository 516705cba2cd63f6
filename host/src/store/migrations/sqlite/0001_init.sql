-- deskgate store schema v1 (SQLite). Times are INTEGER milliseconds since the Unix epoch, given
-- by the caller. JSON columns are TEXT. AUTOINCREMENT keeps ids from ever being reused (the
-- inbox id is the app's cursor).

CREATE TABLE deskgate_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE connections (
    id                TEXT PRIMARY KEY,
    platform          TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    plan              TEXT,
    settings          TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending_probe', 'live', 'suspended', 'deleted')),
    suspend_reason    TEXT,
    suspend_kind      TEXT,
    admin_contact_url TEXT,
    probe_report      TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE credentials (
    connection_id      TEXT PRIMARY KEY REFERENCES connections (id),
    scheme             TEXT NOT NULL,
    sealed             BLOB NOT NULL,
    expires_at         INTEGER,
    version            INTEGER NOT NULL,
    refresh_owner      TEXT,
    refresh_started_at INTEGER,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id   TEXT NOT NULL REFERENCES connections (id),
    ticket_id       TEXT NOT NULL,
    action          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    app_key         TEXT,
    state           TEXT NOT NULL
        CHECK (state IN ('pending', 'sent', 'confirmed', 'failed', 'ambiguous', 'diverged')),
    state_detail    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_sent_at    INTEGER,
    result          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
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
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id      INTEGER NOT NULL REFERENCES outbox (id),
    connection_id TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    sent_at       INTEGER,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    recorded_at   INTEGER NOT NULL
);
CREATE INDEX write_log_by_entry ON write_log (entry_id, id);
-- Audit records are append-only.
CREATE TRIGGER write_log_no_update BEFORE UPDATE ON write_log
BEGIN
    SELECT RAISE(ABORT, 'write_log is append-only');
END;
CREATE TRIGGER write_log_no_delete BEFORE DELETE ON write_log
BEGIN
    SELECT RAISE(ABORT, 'write_log is append-only');
END;

CREATE TABLE inbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL REFERENCES connections (id),
    platform      TEXT NOT NULL,
    ticket_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    ticket        TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    acked_at      INTEGER,
    UNIQUE (connection_id, dedupe_key)
);
CREATE INDEX inbox_unacked ON inbox (connection_id, id) WHERE acked_at IS NULL;

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id   TEXT REFERENCES connections (id),
    kind            TEXT NOT NULL,
    text            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    acked_at        INTEGER
);
CREATE INDEX alerts_due ON alerts (next_attempt_at, id) WHERE delivered_at IS NULL AND acked_at IS NULL;

CREATE TABLE timer_leases (
    connection_id TEXT NOT NULL,
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    held_until    INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    PRIMARY KEY (connection_id, name)
);
