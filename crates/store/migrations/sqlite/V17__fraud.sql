-- Fraud and abuse rules (issue 15).
--
-- A click's verdict: what a rule did (flag, reject, block), which rule, and
-- the sentence that explains it. `invalid_reason` (since V1) also holds the
-- rule id when the click is invalid (reject, block), so rollups count it.
ALTER TABLE clicks ADD COLUMN verdict TEXT;
ALTER TABLE clicks ADD COLUMN verdict_rule TEXT;
ALTER TABLE clicks ADD COLUMN verdict_reason TEXT;
-- The Fraud page reads judged clicks by time; clean ones are not indexed.
CREATE INDEX clicks_judged ON clicks (click_id) WHERE verdict IS NOT NULL;

-- A conversion's verdict, and what the conversion rules compare: a keyed
-- hash of the buyer's address (never the address) and its country.
ALTER TABLE conversions ADD COLUMN verdict TEXT;
ALTER TABLE conversions ADD COLUMN verdict_rule TEXT;
ALTER TABLE conversions ADD COLUMN verdict_reason TEXT;
ALTER TABLE conversions ADD COLUMN ip_hash BLOB;
ALTER TABLE conversions ADD COLUMN buyer_country TEXT;
CREATE INDEX conversions_judged ON conversions (received_at) WHERE verdict IS NOT NULL;
CREATE INDEX conversions_ip_hash ON conversions (affiliate_id, ip_hash, received_at)
    WHERE ip_hash IS NOT NULL;

-- Days of caps are the program's days.
ALTER TABLE programs ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
-- Where blocked and over-cap clicks go instead of the merchant.
ALTER TABLE programs ADD COLUMN fallback_url TEXT;

-- Rules as written (a RuleSpec as JSON); `owner` as for programs: 'file'
-- (the catalogue's [[rules]]) or 'admin' (API, CLI, dashboard).
CREATE TABLE fraud_rules (
    id         TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    owner      TEXT NOT NULL CHECK (owner IN ('file', 'admin')),
    updated_at INTEGER NOT NULL
);

-- Excluded traffic: keyed hashes of addresses or browser tokens (never the
-- address). `affiliate_id`: the affiliate's own traffic (self-referral),
-- else the merchant's or publisher's (excluded from counts).
CREATE TABLE exclusions (
    id           INTEGER PRIMARY KEY,
    hash         BLOB NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('ip', 'browser')),
    label        TEXT NOT NULL,
    affiliate_id INTEGER,
    created_at   INTEGER NOT NULL
);

-- Cap counters, taken from in the transaction that records what they count.
CREATE TABLE cap_usage (
    cap_key TEXT NOT NULL,
    period  TEXT NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (cap_key, period)
) WITHOUT ROWID;

-- Rules and exclusions are read by the redirect from the link cache: any
-- change bumps catalog_version, as the catalogue's own tables do.
CREATE TRIGGER fraud_rules_ai AFTER INSERT ON fraud_rules BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER fraud_rules_au AFTER UPDATE ON fraud_rules BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER fraud_rules_ad AFTER DELETE ON fraud_rules BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER exclusions_ai AFTER INSERT ON exclusions BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
CREATE TRIGGER exclusions_ad AFTER DELETE ON exclusions BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END;
