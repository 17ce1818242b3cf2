-- For the dashboard (issue 6). Balances sum the ledger by affiliate,
-- currency and bucket: with the amount in the index that is an index-only
-- scan. An affiliate's reports (the portal) over zones whose days are not
-- UTC days read hourly rollup rows: by affiliate, not all links' rows.
CREATE INDEX ledger_sums ON ledger (affiliate_id, currency, bucket, amount);
DROP INDEX ledger_affiliate;
CREATE INDEX rollup_link_h_affiliate ON rollup_link_h (affiliate_key, bucket);
CREATE INDEX rollup_conv_link_h_affiliate ON rollup_conv_link_h (basis, affiliate_key, bucket);
