-- The transactional outbox (docs/events.md): one row per event, written in
-- the same transaction as the change it reports. seq is the order of
-- allocation; with several writers a lower seq can commit after a higher
-- one, which readers of the outbox must allow for (see OutboxStore).
CREATE TABLE outbox (
    seq       BIGSERIAL PRIMARY KEY,
    event_id  BYTEA NOT NULL UNIQUE,
    type      TEXT NOT NULL,
    ts        BIGINT NOT NULL,
    payload   TEXT NOT NULL
);
