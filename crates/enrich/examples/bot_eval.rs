//! Measures bot classification over labelled user-agent files.
//!
//! `cargo run --release -p clickward-enrich --example bot_eval -- bot=FILE human=FILE …`
//!
//! Each FILE is JSON: a list of user-agent strings, a list of objects with a
//! `ua` (or `user_agent`) field, or the crawler-user-agents shape
//! (`instances`). `bot=` files count recall (share flagged), `human=` files
//! count false positives (share flagged). Prints one row per file, with the
//! share the isbot list alone flags beside it and the cost of a first
//! (uncached) parse; `SHOW=N` adds the first N wrong answers of each file
//! with the pattern that matched, `DIFF=1` every agent whose answer differs
//! from isbot's, `FAMILIES=1` the uap-core browser families met.

use std::process::ExitCode;

use clickward_enrich::ua::UaParser;
use serde_json::Value;

fn agents(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| agents(i, out)),
        Value::Object(o) => {
            for key in ["ua", "user_agent"] {
                if let Some(Value::String(s)) = o.get(key) {
                    out.push(s.clone());
                }
            }
            if let Some(i) = o.get("instances") {
                agents(i, out);
            }
        }
        _ => {}
    }
}

fn main() -> ExitCode {
    let show: usize = std::env::var("SHOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let parser = match UaParser::new(100_000) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:<6} {:>7} {:>8} {:>8} {:>8} {:>7}  file",
        "label", "agents", "flagged", "share", "isbot", "µs/ua"
    );
    for arg in std::env::args().skip(1) {
        let Some((label, path)) = arg.split_once('=') else {
            eprintln!("argument {arg:?} is not label=FILE");
            return ExitCode::FAILURE;
        };
        let bot = match label {
            "bot" => true,
            "human" => false,
            _ => {
                eprintln!("label {label:?} is neither bot nor human");
                return ExitCode::FAILURE;
            }
        };
        let value: Value = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut list = Vec::new();
        agents(&value, &mut list);
        let mut flagged = 0usize;
        let mut isbot_flagged = 0usize;
        let mut wrong = Vec::new();
        let mut families = std::collections::BTreeMap::<String, (usize, usize)>::new();
        let started = std::time::Instant::now();
        for ua in &list {
            let info = parser.parse(ua.as_bytes());
            let f = families
                .entry(info.browser.as_deref().unwrap_or("-").to_owned())
                .or_default();
            f.0 += 1;
            f.1 += usize::from(info.bot.is_some());
            let is_bot = info.bot.is_some();
            flagged += usize::from(is_bot);
            let by_isbot = parser.bots().classify_ua(ua.as_bytes()).is_some();
            isbot_flagged += usize::from(by_isbot);
            if std::env::var_os("DIFF").is_some() && is_bot != by_isbot {
                println!(
                    "    {} {:?}: {ua}",
                    if is_bot { "now flagged" } else { "now cleared" },
                    info.bot
                );
            }
            if is_bot != bot && wrong.len() < show {
                let why = parser.bots().matched_pattern(ua.as_bytes());
                wrong.push(format!(
                    "[{} | {:?} | {}] {ua}",
                    info.browser.as_deref().unwrap_or("-"),
                    info.device,
                    why.as_deref().unwrap_or("-")
                ));
            }
        }
        let share = if list.is_empty() {
            0.0
        } else {
            flagged as f64 * 100.0 / list.len() as f64
        };
        let per_agent_us = started.elapsed().as_secs_f64() * 1e6 / list.len().max(1) as f64;
        let isbot_share = isbot_flagged as f64 * 100.0 / list.len().max(1) as f64;
        println!(
            "{label:<6} {:>7} {flagged:>8} {share:>7.2}% {isbot_share:>7.2}% {per_agent_us:>7.1}  {path}",
            list.len()
        );
        for w in wrong {
            println!("    wrong: {w}");
        }
        if std::env::var_os("FAMILIES").is_some() {
            let mut rows: Vec<_> = families.into_iter().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
            for (family, (n, bots)) in rows {
                println!("    family {n:>6} {bots:>6}  {family}");
            }
        }
    }
    ExitCode::SUCCESS
}
