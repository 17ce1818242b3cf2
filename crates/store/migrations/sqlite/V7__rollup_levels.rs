//! Rollup levels (issue 4): each 15-minute rollup table gets an hourly
//! (`_h`) and a daily (`_d`) copy, UTC, same columns, each row the sum of the
//! finer rows under it. A report reads the coarsest level that tiles each of
//! its time buckets exactly (a 90-day report by UTC day reads 90 rows per
//! group instead of 8,640), and 15-minute rows only where a zone's offset
//! needs them (+05:30, +05:45). Generated here because the twelve tables
//! differ only in name and key columns.

/// `(table, key column definitions, primary key, metric columns)` of the
/// 15-minute tables of V4 and V6.
const TABLES: [(&str, &str, &str, &str); 6] = [
    (
        "rollup_link",
        "link_id INTEGER NOT NULL, program_id INTEGER NOT NULL, affiliate_key INTEGER NOT NULL",
        "link_id, bucket, program_id, affiliate_key",
        "gross, bot, invalid, uniq",
    ),
    (
        "rollup_src",
        "src TEXT NOT NULL",
        "bucket, src",
        "gross, bot, invalid, uniq",
    ),
    (
        "rollup_geo",
        "country TEXT NOT NULL, device TEXT NOT NULL",
        "bucket, country, device",
        "gross, bot, invalid, uniq",
    ),
    (
        "rollup_conv_link",
        "basis INTEGER NOT NULL, link_key INTEGER NOT NULL, program_id INTEGER NOT NULL, \
         affiliate_key INTEGER NOT NULL, currency TEXT NOT NULL",
        "basis, bucket, link_key, program_id, affiliate_key, currency",
        "conversions, revenue, payout",
    ),
    (
        "rollup_conv_src",
        "basis INTEGER NOT NULL, src TEXT NOT NULL, currency TEXT NOT NULL",
        "basis, bucket, src, currency",
        "conversions, revenue, payout",
    ),
    (
        "rollup_conv_geo",
        "basis INTEGER NOT NULL, country TEXT NOT NULL, device TEXT NOT NULL, currency TEXT NOT NULL",
        "basis, bucket, country, device, currency",
        "conversions, revenue, payout",
    ),
];

pub fn migration() -> String {
    let mut sql = String::new();
    for (table, keys, pk, metrics) in TABLES {
        let metric_defs: Vec<String> = metrics
            .split(", ")
            .map(|m| format!("{m} INTEGER NOT NULL"))
            .collect();
        let sums: Vec<String> = metrics.split(", ").map(|m| format!("SUM({m})")).collect();
        let key_names: Vec<&str> = keys
            .split(", ")
            .filter_map(|d| d.split_whitespace().next())
            .collect();
        let key_names = key_names.join(", ");
        let mut from = table.to_owned();
        for (suffix, width) in [("_h", 3_600_000_000i64), ("_d", 86_400_000_000)] {
            sql.push_str(&format!(
                "CREATE TABLE {table}{suffix} (bucket INTEGER NOT NULL, {keys}, {}, \
                 PRIMARY KEY ({pk})) WITHOUT ROWID;\n",
                metric_defs.join(", ")
            ));
            if table == "rollup_link" {
                sql.push_str(&format!(
                    "CREATE INDEX {table}{suffix}_bucket ON {table}{suffix} (bucket);\n"
                ));
            }
            sql.push_str(&format!(
                "INSERT INTO {table}{suffix} (bucket, {key_names}, {metrics}) \
                 SELECT (bucket / {width}) * {width}, {key_names}, {} FROM {from} \
                 GROUP BY 1, {key_names};\n",
                sums.join(", ")
            ));
            from = format!("{table}{suffix}");
        }
    }
    sql
}
