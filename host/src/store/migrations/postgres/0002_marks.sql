-- Per-connection durable marks: the reconciliation sweep's high-water mark and other small
-- counters that must survive a restart (a sweep without its mark would re-list a whole day).
CREATE TABLE connection_marks (
    connection_id TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, name)
);
