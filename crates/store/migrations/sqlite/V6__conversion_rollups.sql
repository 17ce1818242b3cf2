-- Conversion rollups (issue 4). Unlike click rollups they need no
-- watermark: they change in the same transaction as the conversion they
-- count (recorded, or leaving the counted statuses by a rejection or a
-- reversal), so they are always exact. Counted statuses are pending,
-- approved and paid, as in reports.
--
-- `basis` 0 buckets a conversion by when it occurred, 1 by when its click
-- happened (occurred_at - ctit_us; unattributed conversions: occurred_at),
-- for `time_basis=click`. Buckets are 15-minute UTC instants as for clicks;
-- text dimensions store '' and ids 0 for "no value".

-- The click's classification is copied onto the conversion when it is
-- recorded, so conversion reports never read the large clicks table and
-- still answer after retention purged the click.
ALTER TABLE conversions ADD COLUMN country TEXT;
ALTER TABLE conversions ADD COLUMN device TEXT;
ALTER TABLE conversions ADD COLUMN browser TEXT;
ALTER TABLE conversions ADD COLUMN os TEXT;
ALTER TABLE conversions ADD COLUMN referrer_host TEXT;
UPDATE conversions SET (country, device, browser, os, referrer_host) =
    (SELECT c.country, c.device, c.browser, c.os, c.referrer_host FROM clicks c
     WHERE c.click_id = conversions.click_id)
WHERE click_id IS NOT NULL;

CREATE INDEX conversions_occurred ON conversions (occurred_at);
CREATE INDEX conversions_click_time ON conversions ((occurred_at - IFNULL(ctit_us, 0)));

CREATE TABLE rollup_conv_link (
    basis         INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    link_key      INTEGER NOT NULL,
    program_id    INTEGER NOT NULL,
    affiliate_key INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    conversions   INTEGER NOT NULL,
    revenue       INTEGER NOT NULL,
    payout        INTEGER NOT NULL,
    PRIMARY KEY (basis, bucket, link_key, program_id, affiliate_key, currency)
) WITHOUT ROWID;

CREATE TABLE rollup_conv_src (
    basis       INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    src         TEXT NOT NULL,
    currency    TEXT NOT NULL,
    conversions INTEGER NOT NULL,
    revenue     INTEGER NOT NULL,
    payout      INTEGER NOT NULL,
    PRIMARY KEY (basis, bucket, src, currency)
) WITHOUT ROWID;

CREATE TABLE rollup_conv_geo (
    basis       INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    country     TEXT NOT NULL,
    device      TEXT NOT NULL,
    currency    TEXT NOT NULL,
    conversions INTEGER NOT NULL,
    revenue     INTEGER NOT NULL,
    payout      INTEGER NOT NULL,
    PRIMARY KEY (basis, bucket, country, device, currency)
) WITHOUT ROWID;

-- Existing conversions; the same statements `clickward rollup` runs.
INSERT INTO rollup_conv_link
SELECT basis, bucket, link_key, program_id, affiliate_key, currency, COUNT(*), SUM(IFNULL(amount, 0)), SUM(commission)
FROM (SELECT 0 AS basis, (occurred_at / 900000000) * 900000000 AS bucket, IFNULL(link_id, 0) AS link_key,
             program_id, IFNULL(affiliate_id, 0) AS affiliate_key, currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid')
      UNION ALL
      SELECT 1, ((occurred_at - IFNULL(ctit_us, 0)) / 900000000) * 900000000, IFNULL(link_id, 0),
             program_id, IFNULL(affiliate_id, 0), currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid'))
GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO rollup_conv_src
SELECT basis, bucket, src, currency, COUNT(*), SUM(IFNULL(amount, 0)), SUM(commission)
FROM (SELECT 0 AS basis, (occurred_at / 900000000) * 900000000 AS bucket, IFNULL(src, '') AS src,
             currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid')
      UNION ALL
      SELECT 1, ((occurred_at - IFNULL(ctit_us, 0)) / 900000000) * 900000000, IFNULL(src, ''),
             currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid'))
GROUP BY 1, 2, 3, 4;

INSERT INTO rollup_conv_geo
SELECT basis, bucket, country, device, currency, COUNT(*), SUM(IFNULL(amount, 0)), SUM(commission)
FROM (SELECT 0 AS basis, (occurred_at / 900000000) * 900000000 AS bucket, IFNULL(country, '') AS country,
             IFNULL(device, '') AS device, currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid')
      UNION ALL
      SELECT 1, ((occurred_at - IFNULL(ctit_us, 0)) / 900000000) * 900000000, IFNULL(country, ''),
             IFNULL(device, ''), currency, amount, commission
      FROM conversions WHERE status IN ('pending', 'approved', 'paid'))
GROUP BY 1, 2, 3, 4, 5;
