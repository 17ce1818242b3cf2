-- Outbound delivery (docs/events.md): endpoints (merchant webhooks and
-- affiliate postbacks), one delivery per (endpoint, event), its attempts,
-- and the dispatch cursor over the outbox.
CREATE TABLE endpoints (
    id              BLOB PRIMARY KEY,
    kind            TEXT NOT NULL,
    url             TEXT NOT NULL,
    method          TEXT NOT NULL,
    events          TEXT NOT NULL,
    program_id      INTEGER REFERENCES programs(id),
    affiliate_id    INTEGER REFERENCES affiliates(id),
    description     TEXT NOT NULL,
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER,
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT,
    failing_since   INTEGER,
    created_at      INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id BLOB NOT NULL REFERENCES endpoints(id),
    event_id    BLOB NOT NULL,
    type        TEXT NOT NULL,
    event_ts    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    last_status INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    done_at     INTEGER,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);

CREATE TABLE delivery_attempts (
    delivery_id INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    url         TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    latency_us  INTEGER NOT NULL,
    response    TEXT NOT NULL,
    PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID;

-- Where dispatch has read the outbox to (one row, name 'outbox').
CREATE TABLE delivery_cursors (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
INSERT INTO delivery_cursors (name, seq) SELECT 'outbox', COALESCE(MAX(seq), 0) FROM outbox;
