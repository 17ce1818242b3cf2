-- The shared rate limiter ([limits] shared = true): one GCRA "theoretical
-- arrival time" (UTC µs, the database's clock) per endpoint class and
-- client. The client is a keyed hash of its address under the day's shared
-- visitor salt, so the key changes every UTC day and the address is never
-- stored. Rows are deleted once they have fully recovered (every minute).
-- UNLOGGED: a crash forgets the counters, which only gives every client a
-- fresh burst; it is not worth a WAL write per request.
CREATE UNLOGGED TABLE rate_limits (
    class  TEXT   NOT NULL,
    client BYTEA  NOT NULL,
    tat    BIGINT NOT NULL,
    PRIMARY KEY (class, client)
);
