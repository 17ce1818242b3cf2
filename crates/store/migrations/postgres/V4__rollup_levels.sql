-- Hourly (_h) and daily (_d) copies of the 15-minute click rollups, UTC,
-- same columns, each row the sum of the finer rows under it (as SQLite's
-- V7). A report tiles each of its buckets with the coarsest rows that fit
-- (clickward_store::plan::tile). Filled here from the 15-minute rows.

CREATE TABLE rollup_link_h (
    link_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    program_id BIGINT NOT NULL,
    affiliate_key BIGINT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (link_id, bucket, program_id, affiliate_key)
);
CREATE INDEX rollup_link_h_bucket ON rollup_link_h (bucket);
INSERT INTO rollup_link_h (link_id, bucket, program_id, affiliate_key, gross, bot, invalid, uniq)
    SELECT link_id, bucket - bucket % 3600000000, program_id, affiliate_key, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_link GROUP BY 1, 2, 3, 4;

CREATE TABLE rollup_link_d (
    link_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    program_id BIGINT NOT NULL,
    affiliate_key BIGINT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (link_id, bucket, program_id, affiliate_key)
);
CREATE INDEX rollup_link_d_bucket ON rollup_link_d (bucket);
INSERT INTO rollup_link_d (link_id, bucket, program_id, affiliate_key, gross, bot, invalid, uniq)
    SELECT link_id, bucket - bucket % 86400000000, program_id, affiliate_key, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_link_h GROUP BY 1, 2, 3, 4;

CREATE TABLE rollup_src_h (
    bucket BIGINT NOT NULL,
    src TEXT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (bucket, src)
);
INSERT INTO rollup_src_h (bucket, src, gross, bot, invalid, uniq)
    SELECT bucket - bucket % 3600000000, src, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_src GROUP BY 1, 2;

CREATE TABLE rollup_src_d (
    bucket BIGINT NOT NULL,
    src TEXT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (bucket, src)
);
INSERT INTO rollup_src_d (bucket, src, gross, bot, invalid, uniq)
    SELECT bucket - bucket % 86400000000, src, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_src_h GROUP BY 1, 2;

CREATE TABLE rollup_geo_h (
    bucket BIGINT NOT NULL,
    country TEXT NOT NULL,
    device TEXT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (bucket, country, device)
);
INSERT INTO rollup_geo_h (bucket, country, device, gross, bot, invalid, uniq)
    SELECT bucket - bucket % 3600000000, country, device, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_geo GROUP BY 1, 2, 3;

CREATE TABLE rollup_geo_d (
    bucket BIGINT NOT NULL,
    country TEXT NOT NULL,
    device TEXT NOT NULL,
    gross BIGINT NOT NULL,
    bot BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    uniq BIGINT NOT NULL,
    PRIMARY KEY (bucket, country, device)
);
INSERT INTO rollup_geo_d (bucket, country, device, gross, bot, invalid, uniq)
    SELECT bucket - bucket % 86400000000, country, device, SUM(gross), SUM(bot), SUM(invalid), SUM(uniq)
    FROM rollup_geo_h GROUP BY 1, 2, 3;

-- An affiliate's reports (the portal) over zones whose days are not UTC
-- days read hourly rows: by affiliate, not all links' rows. Balances sum the
-- ledger by affiliate, currency and bucket: index-only with the amount.
CREATE INDEX rollup_link_h_affiliate ON rollup_link_h (affiliate_key, bucket);
CREATE INDEX ledger_sums ON ledger (affiliate_id, currency, bucket, amount);
DROP INDEX ledger_affiliate;
