//! Criterion: what judging one human click costs with every click rule on
//! (issue 15 target: at most 1 µs): the two velocity counters, the keyed
//! address hash against the exclusion list, the network lookup in the ASN
//! and anonymous-IP test files, and the rules' evaluation. A clean click
//! (nothing trips, the common case) and one that trips three rules.
//!
//!   cargo bench -p clickward --bench fraud

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use clickward::services::fraud::{Velocity, address_hash, link_key, visitor_key};
use clickward_core::fraud::{ClickRules, ClickSignals, Limit, Rule, RuleSpec, effective};
use clickward_enrich::network::NetworkDb;
use criterion::{Criterion, criterion_group, criterion_main};

fn rules() -> Vec<Rule> {
    let spec = |id: &str, check: &str, action: &str| RuleSpec {
        id: id.into(),
        check: check.into(),
        action: action.into(),
        ..RuleSpec::default()
    };
    let mut v = spec("visitor", "visitor_velocity", "reject");
    v.limit = Some(Limit::Count(5));
    v.window = Some("60s".into());
    let mut l = spec("link", "link_velocity", "flag");
    l.limit = Some(Limit::Count(1_000_000));
    l.window = Some("60s".into());
    let mut c = spec("geo", "countries", "reject");
    c.block = Some(vec!["KP".into(), "CN".into(), "RU".into()]);
    let mut r = spec("spam", "referrers", "flag");
    r.block = Some(vec!["spam.example".into(), "clickfarm.example".into()]);
    [
        v,
        l,
        spec("dc", "hosting", "reject"),
        spec("vpn", "anonymous", "reject"),
        c,
        r,
        spec("ppc", "paid_search", "reject"),
        spec("excluded", "excluded", "reject"),
    ]
    .iter()
    .map(|s| Rule::compile(s, &|_| Err("no money".into())).expect("rule"))
    .collect()
}

fn geoip(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/data/geoip"))
        .chain(manifest.ancestors().map(|a| a.join("../shared/data/geoip")))
        .find(|p| p.is_dir())
        .expect("../shared/data/geoip")
        .join(name)
}

fn judge(c: &mut Criterion) {
    let all = rules();
    let click_rules = ClickRules::new(&effective(&all, "vendors", Some("gg")));
    let net = NetworkDb::open(&[
        geoip("GeoLite2-ASN-Test.mmdb"),
        geoip("GeoIP2-Anonymous-IP-Test.mmdb"),
    ])
    .expect("network files");
    let velocity = Velocity::default();
    let key = [7u8; 32];
    let excluded: std::collections::HashMap<[u8; 16], &str> =
        [(address_hash(&key, IpAddr::from([203, 0, 113, 7])), "office")].into();
    let query = ["src", "sub1"];
    let mut now = 1_795_176_000_000_000i64;
    let mut n = 0u8;
    let mut once = |ip: IpAddr, referrer: Option<&str>, query: &[&str]| {
        now += 1000;
        n = n.wrapping_add(1);
        let (vw, vl) = click_rules.visitor_window().expect("visitor rule");
        let (lw, ll) = click_rules.link_window().expect("link rule");
        let visitor_clicks = velocity.hit(visitor_key(42, &[n; 16]), now, vw, vl);
        let link_clicks = velocity.hit(link_key(42), now, lw, ll);
        let network = net.lookup(ip).ok();
        let hash = address_hash(&key, ip);
        click_rules.evaluate(&ClickSignals {
            country: Some("GB"),
            referrer_host: referrer,
            query_keys: query,
            network: network.as_ref(),
            excluded: excluded.get(&hash).copied(),
            own_affiliate: false,
            visitor_clicks,
            link_clicks,
            affiliate_link: true,
        })
    };
    c.bench_function("judge a clean click, every click rule on", |b| {
        b.iter(|| {
            black_box(once(
                IpAddr::from([1, 128, 0, 1]),
                Some("qiita.com"),
                &query,
            ))
        })
    });
    let paid = ["src", "gclid"];
    c.bench_function("judge a click that trips three rules", |b| {
        b.iter(|| {
            black_box(once(
                IpAddr::from([1, 2, 0, 1]),
                Some("www.spam.example"),
                &paid,
            ))
        })
    });
}

criterion_group!(benches, judge);
criterion_main!(benches);
