-- The transactional outbox (docs/events.md): one row per event, written in
-- the same transaction as the change it reports. seq is the order of
-- writing (SQLite has one writer, so it is also the order of commit).
CREATE TABLE outbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  BLOB NOT NULL UNIQUE,
    type      TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    payload   TEXT NOT NULL
);
