//! GeoIP through trusted proxies, and broken databases.

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::*;

fn xff(ip: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static(CHROME));
    h.insert("x-forwarded-for", HeaderValue::from_str(ip).unwrap());
    h
}

#[tokio::test]
async fn location_comes_from_the_client_behind_a_trusted_proxy() {
    let db = shared_data().join("geoip/GeoIP2-City-Test.mmdb");
    let app = TestApp::start_with(|c| {
        c.geoip = vec![db];
        c.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
    })
    .await;
    app.get_with("/r/puesto", xff("6.6.6.6, 81.2.69.142, 10.1.1.1"))
        .await;
    let c = &app.clicks("puesto").await[0];
    assert_eq!(c["country"], "GB");
    assert_eq!(c["region"], "England");
    assert_eq!(c["city"], "London");
    // Garbage in the header is never the client: no location, still a click.
    app.clock.set(NOON + 1_000_000);
    let r = app.get_with("/r/puesto", xff("<script>, not-an-ip")).await;
    assert_eq!(r.status().as_u16(), 302);
    let c = &app.clicks("puesto").await[0];
    assert!(c["country"].is_null());
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_location() {
    let db = shared_data().join("geoip/GeoIP2-City-Test.mmdb");
    let app = TestApp::start_with(|c| c.geoip = vec![db]).await;
    app.get_with("/r/puesto", xff("81.2.69.142")).await;
    assert!(app.clicks("puesto").await[0]["country"].is_null());
}

#[tokio::test]
async fn broken_or_missing_databases_stop_the_start_with_the_file_named() {
    for name in [
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "missing.mmdb",
        "GeoLite2-ASN-Test.mmdb",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = clickward::process::config::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        cfg.geoip = vec![shared_data().join("geoip").join(name)];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = clickward::Server::start(
            cfg.validate().unwrap(),
            listener,
            std::sync::Arc::new(clickward::clock::SystemClock),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(format!("{err:#}").contains(name), "{err:#}");
    }
}

#[tokio::test]
async fn a_database_with_broken_records_costs_the_location_not_the_click() {
    let path = shared_data().join("geoip/GeoIP2-City-Test-Broken-Double-Format.mmdb");
    let app = TestApp::start_with(|c| {
        c.geoip = vec![path];
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    for (i, ip) in ["81.2.69.142", "2001:218::1", "89.160.20.112"]
        .iter()
        .enumerate()
    {
        app.clock.set(NOON + i64::try_from(i).unwrap() * 1_000_000);
        assert_eq!(
            app.get_with("/r/puesto", xff(ip)).await.status().as_u16(),
            302
        );
    }
    let clicks = app.clicks("puesto").await;
    let countries: Vec<Option<&str>> = clicks.iter().rev().map(|c| c["country"].as_str()).collect();
    assert_eq!(countries, vec![Some("GB"), None, None]);
    assert_eq!(app.metric("clickward_geoip_errors_total").await, 2);
}
