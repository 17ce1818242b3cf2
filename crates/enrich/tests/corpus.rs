//! Bot classification over the real user-agent corpora in `../shared/data`,
//! reported per source (each corpus file; for crawler-user-agents also per
//! crawler entry that is missed) next to the isbot list alone.
//!
//! Targets (issue 15): at least 99.5% of the crawler-user-agents instances
//! are bots, none of the top browser agents is flagged, and the combined
//! decision never does worse than isbot alone on either side.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use clickward_enrich::ua::UaParser;
use serde::Deserialize;

fn shared_data() -> PathBuf {
    if let Ok(dir) = std::env::var("CLICKWARD_SHARED_DATA") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/data"))
        .chain(manifest.ancestors().map(|a| a.join("../shared/data")))
        .find(|p| p.join("user-agents").is_dir())
        .expect("../shared/data not found beside the repository (set CLICKWARD_SHARED_DATA)")
}

#[derive(Deserialize)]
struct Crawler {
    pattern: String,
    #[serde(default)]
    instances: Vec<String>,
}

#[test]
fn crawler_corpus_is_recognised_at_least_99_5_percent() {
    let path = shared_data().join("user-agents/crawler-user-agents.json");
    let crawlers: Vec<Crawler> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let parser = UaParser::new(10_000).unwrap();
    let mut total = 0usize;
    let mut missed = Vec::new();
    let mut missed_by_isbot = 0usize;
    for c in &crawlers {
        for ua in &c.instances {
            total += 1;
            if parser.parse(ua.as_bytes()).bot.is_none() {
                missed.push(format!("{} :: {}", c.pattern, ua));
            }
            missed_by_isbot += usize::from(parser.bots().classify_ua(ua.as_bytes()).is_none());
        }
    }
    assert!(total > 2000, "corpus unexpectedly small: {total}");
    let recall = 1.0 - missed.len() as f64 / total as f64;
    let isbot_recall = 1.0 - missed_by_isbot as f64 / total as f64;
    eprintln!(
        "crawler-user-agents: bot recall {:.2}% ({} of {} missed); isbot alone {:.2}% ({} missed)",
        recall * 100.0,
        missed.len(),
        total,
        isbot_recall * 100.0,
        missed_by_isbot
    );
    for m in missed.iter().take(30) {
        eprintln!("missed: {m}");
    }
    assert!(
        recall >= 0.995,
        "bot recall {:.2}% is under 99.5%",
        recall * 100.0
    );
    assert!(
        missed.len() <= missed_by_isbot,
        "the combined decision misses more crawlers than isbot alone"
    );
}

#[test]
fn no_top_browser_agent_is_flagged() {
    let parser = UaParser::new(10_000).unwrap();
    let mut count = 0;
    let mut with_family = 0;
    for file in ["top-desktop.json", "top-mobile.json"] {
        let path = shared_data().join("user-agents").join(file);
        let uas: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut flagged = Vec::new();
        for ua in &uas {
            count += 1;
            let info = parser.parse(ua.as_bytes());
            if info.bot.is_some() {
                flagged.push(ua.clone());
            }
            with_family += usize::from(info.browser.is_some());
        }
        eprintln!(
            "{file}: {} of {} browsers flagged ({:.2}%)",
            flagged.len(),
            uas.len(),
            flagged.len() as f64 * 100.0 / uas.len().max(1) as f64
        );
        assert!(flagged.is_empty(), "browsers flagged as bots: {flagged:#?}");
    }
    assert!(count >= 20, "browser corpus unexpectedly small: {count}");
    // The list holds a few truncated agents ("… AppleWebKit/537.36") that name
    // no browser; nearly all others must.
    assert!(
        with_family * 10 >= count * 9,
        "{with_family} of {count} have a browser family"
    );
}

/// `data/crawler-patterns.json` is the `pattern` of every entry of the
/// corpus's crawler-user-agents file, in order: a refreshed corpus fails
/// here until the vendored list is refreshed with it.
#[test]
fn vendored_crawler_patterns_match_the_corpus() {
    let path = shared_data().join("user-agents/crawler-user-agents.json");
    let crawlers: Vec<Crawler> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let vendored: Vec<String> =
        serde_json::from_str(include_str!("../data/crawler-patterns.json")).unwrap();
    let corpus: Vec<String> = crawlers.into_iter().map(|c| c.pattern).collect();
    assert_eq!(vendored, corpus);
}
