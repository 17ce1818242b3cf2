-- Payout batches (issue 3). A batch pays an affiliate's payable balance in
-- one currency; its ledger entries carry its id. `key` makes creating a
-- batch idempotent: the same key returns the same batch.
CREATE TABLE payouts (
    id           INTEGER PRIMARY KEY,
    batch_id     BLOB NOT NULL UNIQUE,
    key          TEXT NOT NULL UNIQUE,
    affiliate_id INTEGER NOT NULL REFERENCES affiliates (id),
    currency     TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    conversions  INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX conversions_time ON conversions (occurred_at);
