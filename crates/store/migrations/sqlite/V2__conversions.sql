-- Conversions, commissions and the ledger (issue 3). Money is INTEGER minor
-- units with a currency code; no REAL columns anywhere.

-- Program settings. Windows in seconds; commission is a JSON plan
-- (clickward_core::commission::CommissionPlan); hold_s NULL = approve by hand.
ALTER TABLE programs ADD COLUMN currency TEXT NOT NULL DEFAULT 'USD';
ALTER TABLE programs ADD COLUMN cookie_window_s INTEGER NOT NULL DEFAULT 2592000;
ALTER TABLE programs ADD COLUMN attribution_window_s INTEGER NOT NULL DEFAULT 2592000;
ALTER TABLE programs ADD COLUMN attribution TEXT NOT NULL DEFAULT 'last_click'
    CHECK (attribution IN ('last_click', 'first_click'));
ALTER TABLE programs ADD COLUMN commission TEXT NOT NULL DEFAULT '{}';
ALTER TABLE programs ADD COLUMN hold_s INTEGER;
ALTER TABLE programs ADD COLUMN postback_token TEXT;
ALTER TABLE programs ADD COLUMN postback_secret TEXT;
ALTER TABLE programs ADD COLUMN postback_ips TEXT NOT NULL DEFAULT '[]';
ALTER TABLE programs ADD COLUMN click_id_param TEXT;
ALTER TABLE programs ADD COLUMN min_payout INTEGER NOT NULL DEFAULT 0;

-- Per-affiliate commission overrides (same JSON shape as the program plan).
CREATE TABLE affiliate_commissions (
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    affiliate_id INTEGER NOT NULL REFERENCES affiliates (id),
    commission   TEXT NOT NULL,
    PRIMARY KEY (program_id, affiliate_id)
) WITHOUT ROWID;

-- One row per accepted conversion. (program, event, order_id) is unique: a
-- retried postback can never make a second conversion, whatever the timing.
CREATE TABLE conversions (
    id            INTEGER PRIMARY KEY,
    conversion_id BLOB NOT NULL UNIQUE,
    program_id    INTEGER NOT NULL REFERENCES programs (id),
    event         TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    click_id      BLOB,
    link_id       INTEGER,
    affiliate_id  INTEGER,
    src           TEXT,
    sub1          TEXT,
    sub2          TEXT,
    sub3          TEXT,
    sub4          TEXT,
    sub5          TEXT,
    amount        INTEGER,
    currency      TEXT NOT NULL,
    commission    INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'paid', 'reversed')),
    occurred_at   INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    ctit_us       INTEGER,
    attributed_by TEXT,
    adv_sub1      TEXT,
    adv_sub2      TEXT,
    adv_sub3      TEXT,
    adv_sub4      TEXT,
    adv_sub5      TEXT,
    fingerprint   BLOB NOT NULL,
    UNIQUE (program_id, event, order_id)
);
CREATE INDEX conversions_status ON conversions (status, received_at);

-- Append-only: every change of a conversion's money is a row here.
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY,
    conversion_id INTEGER REFERENCES conversions (id),
    payout_id     INTEGER,
    affiliate_id  INTEGER,
    currency      TEXT NOT NULL,
    bucket        TEXT NOT NULL CHECK (bucket IN ('pending', 'payable', 'paid')),
    amount        INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX ledger_affiliate ON ledger (affiliate_id, currency, bucket);
CREATE INDEX ledger_conversion ON ledger (conversion_id);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;

-- Responses to API requests by Idempotency-Key, so a retried request gets
-- the first answer.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    fingerprint  BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
