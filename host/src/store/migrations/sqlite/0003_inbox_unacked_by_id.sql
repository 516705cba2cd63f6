-- The app's pull and acknowledgement without a connection filter walk unacknowledged events in id
-- order; without this index they walked every event ever stored.
CREATE INDEX inbox_unacked_by_id ON inbox (id) WHERE acked_at IS NULL;
