//! Click-batch write throughput of the SQLite store, by batch size.
//!
//! `cargo run --release -p clickward-store --example write_bench`
//!
//! Prints clicks/s and µs per click for group commits of 1, 8, 16, 32, 256
//! clicks (the batch size under sync durability is bounded by the number of
//! redirects waiting, i.e. by client concurrency).

use std::sync::Arc;
use std::time::Instant;

use clickward_core::click::{DeviceType, NewClick, TrackingParams, VisitorKey};
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Status, UtmDefaults};
use clickward_store::{
    CatalogInput, CatalogStore, ClickStore, LinkInput, ProgramInput, SqliteOptions, SqliteStore,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cw-write-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir.join("b.db"), &SqliteOptions::default())?;
    if let Ok(sql) = std::env::var("CW_BENCH_SQL") {
        rusqlite::Connection::open(dir.join("b.db"))?.execute_batch(&sql)?;
    }
    let program = Slug::parse("p")?;
    let mut links = Vec::new();
    for i in 0..10 {
        links.push(LinkInput {
            code: LinkCode::parse(&format!("l{i}"))?,
            program: program.clone(),
            affiliate: None,
            destination: "https://m.example/".into(),
            redirect: None,
            utm: UtmDefaults::new(),
            status: Status::Active,
        });
    }
    store
        .apply_catalog(CatalogInput {
            commissions: vec![],
            programs: vec![ProgramInput {
                slug: program,
                name: "p".into(),
                status: Status::Active,
                settings: None,
            }],
            affiliates: vec![],
            links,
        })
        .await?;
    let mut ts: i64 = 1_795_176_000_000_000;
    let mut n: u128 = 0;
    println!("| batch | clicks/s | µs/click |");
    println!("|---:|---:|---:|");
    for batch in [1usize, 8, 16, 32, 256] {
        let total = 40_000usize;
        let start = Instant::now();
        for _ in 0..total / batch {
            let clicks: Vec<NewClick> = (0..batch)
                .map(|_| {
                    n += 1;
                    ts += 20;
                    let v = u8::try_from(n % 300).unwrap_or(0);
                    NewClick {
                        click_id: ClickId::from_parts(u64::try_from(ts / 1000).unwrap_or(0), n),
                        ts,
                        link_id: i64::try_from(n % 10).unwrap_or(0) + 1,
                        program_id: 1,
                        affiliate_id: None,
                        params: TrackingParams {
                            src: Some("qiita_sim_article".into()),
                            subs: [Some("p17".into()), None, None, None, None],
                        },
                        referrer: None,
                        device: DeviceType::Mobile,
                        os: Some("iOS".into()),
                        browser: Some("Mobile Safari".into()),
                        bot: None,
                        country: None,
                        region: None,
                        city: None,
                        visitor_key: VisitorKey([v; 16]),
                        previous_keys: vec![],
                        verdict: None,
                        consent: Default::default(),
                    }
                })
                .collect();
            store.write_clicks(Arc::new(clicks), 86_400_000_000).await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let done = (total / batch * batch) as f64;
        println!(
            "| {batch} | {:.0} | {:.2} |",
            done / secs,
            secs * 1e6 / done
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
