-- Erasure requests and their receipts (crates/store/src/privacy.rs). The
-- subject (a visitor key, an order id, a sub-id value) is kept only while
-- the request is received; the run that finishes it clears it, so a
-- receipt holds no personal data.
CREATE TABLE privacy_requests (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    selector    TEXT,
    status      TEXT NOT NULL CHECK (status IN ('received', 'done', 'failed')),
    counts      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    actor       TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    done_at     INTEGER
);
CREATE INDEX privacy_requests_pending ON privacy_requests (received_at) WHERE status = 'received';

-- When a row was erased (UTC µs): a second erasure of the same subject
-- changes nothing and says so.
ALTER TABLE clicks ADD COLUMN erased_at INTEGER;
ALTER TABLE conversions ADD COLUMN erased_at INTEGER;

-- Finding a subject's conversions without a scan: a click's, an order's.
-- Clicks get no index on the visitor key: any secondary index on clicks
-- measured 5 µs more per written click (crates/store/examples/write_bench.rs,
-- 2.3 -> 7.6 µs at 256 clicks a batch), a cost on every redirect for the
-- sake of a rare erasure; erasing a visitor scans the clicks table instead
-- (docs/benchmarks.md, "Privacy").
CREATE INDEX conversions_click ON conversions (click_id) WHERE click_id IS NOT NULL;
CREATE INDEX conversions_order ON conversions (order_id);

-- Consent (Global Privacy Control): what a program's visitors who ask not
-- to be tracked get, and which mode each click was taken under (NULL:
-- before this column, when every click was "cookie").
ALTER TABLE programs ADD COLUMN consent TEXT NOT NULL DEFAULT 'cookie';
ALTER TABLE clicks ADD COLUMN consent TEXT;
