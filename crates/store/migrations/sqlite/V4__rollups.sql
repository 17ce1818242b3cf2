-- Click rollups (issue 4): counts per 15-minute UTC bucket (every IANA time
-- zone's hour and day boundaries fall on 15-minute UTC instants, so local
-- hours, days, weeks and months are exact sums of buckets) and per dimension
-- set. One narrow table per dimension set keeps each report's scan small.
-- Text dimensions store '' for "no value" ('' never occurs in clicks, where
-- empty values are absent). Recomputed, never incremented: rolling a range
-- twice gives the same rows.

CREATE TABLE rollup_link (
    link_id       INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    program_id    INTEGER NOT NULL,
    affiliate_key INTEGER NOT NULL,
    gross         INTEGER NOT NULL,
    bot           INTEGER NOT NULL,
    invalid       INTEGER NOT NULL,
    uniq          INTEGER NOT NULL,
    PRIMARY KEY (link_id, bucket, program_id, affiliate_key)
) WITHOUT ROWID;
CREATE INDEX rollup_link_bucket ON rollup_link (bucket);

CREATE TABLE rollup_src (
    bucket  INTEGER NOT NULL,
    src     TEXT NOT NULL,
    gross   INTEGER NOT NULL,
    bot     INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    uniq    INTEGER NOT NULL,
    PRIMARY KEY (bucket, src)
) WITHOUT ROWID;

CREATE TABLE rollup_geo (
    bucket  INTEGER NOT NULL,
    country TEXT NOT NULL,
    device  TEXT NOT NULL,
    gross   INTEGER NOT NULL,
    bot     INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    uniq    INTEGER NOT NULL,
    PRIMARY KEY (bucket, country, device)
) WITHOUT ROWID;

-- Everything before this UTC instant (µs) is rolled up; reports read raw
-- clicks after it.
INSERT INTO meta (key, value) VALUES ('rollup_watermark', 0);
