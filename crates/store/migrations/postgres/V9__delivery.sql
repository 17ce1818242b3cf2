-- Outbound delivery (docs/events.md): endpoints (merchant webhooks and
-- affiliate postbacks), one delivery per (endpoint, event), its attempts,
-- and the dispatch cursor over the outbox.
CREATE TABLE endpoints (
    id              BYTEA PRIMARY KEY,
    kind            TEXT NOT NULL,
    url             TEXT NOT NULL,
    method          TEXT NOT NULL,
    events          TEXT NOT NULL,
    program_id      BIGINT REFERENCES programs(id),
    affiliate_id    BIGINT REFERENCES affiliates(id),
    description     TEXT NOT NULL,
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  BIGINT,
    enabled         BOOLEAN NOT NULL,
    disabled_reason TEXT,
    failing_since   BIGINT,
    created_at      BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,
    endpoint_id BYTEA NOT NULL REFERENCES endpoints(id),
    event_id    BYTEA NOT NULL,
    type        TEXT NOT NULL,
    event_ts    BIGINT NOT NULL,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    last_status INTEGER,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    done_at     BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);

CREATE TABLE delivery_attempts (
    delivery_id BIGINT NOT NULL,
    n           INTEGER NOT NULL,
    at          BIGINT NOT NULL,
    url         TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    latency_us  BIGINT NOT NULL,
    response    TEXT NOT NULL,
    PRIMARY KEY (delivery_id, n)
);

-- Where dispatch has read the outbox to (one row, name 'outbox').
CREATE TABLE delivery_cursors (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
INSERT INTO delivery_cursors (name, seq) SELECT 'outbox', COALESCE(MAX(seq), 0) FROM outbox;
