//! No raw IP reaches the disk.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::*;

const TEST_IPS: [&str; 3] = ["203.0.113.77", "198.51.100.23", "2001:db8:ab::42"];

fn needles(ip: &str) -> Vec<Vec<u8>> {
    let parsed: std::net::IpAddr = ip.parse().unwrap();
    let mut out = vec![ip.as_bytes().to_vec()];
    match parsed {
        std::net::IpAddr::V4(v4) => {
            out.push(v4.octets().to_vec());
            out.push(v4.to_ipv6_mapped().octets().to_vec());
        }
        std::net::IpAddr::V6(v6) => out.push(v6.octets().to_vec()),
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn the_data_directory_holds_no_test_ip_in_any_form() {
    let mut app = TestApp::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    for ip in TEST_IPS {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static(IPHONE));
        h.insert("x-forwarded-for", HeaderValue::from_str(ip).unwrap());
        h.insert(
            "referer",
            HeaderValue::from_str(&format!("https://blog.example/?ip={ip}")).unwrap(),
        );
        assert_eq!(
            app.get_with("/ref/solare?src=test", h)
                .await
                .status()
                .as_u16(),
            302
        );
    }
    // The same for history brought in through the importer.
    let csv = app.data_dir().join("history.csv");
    let mut text = String::from("timestamp,code,src,user_agent,ip,referrer\n");
    for ip in TEST_IPS {
        text.push_str(&format!(
            "2026-11-19T10:00:00Z,solare,old,\"{IPHONE}\",{ip},https://x.example/\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let summary = clickward::cli::import::import_csv(
        &app.store,
        &clickward_enrich::ua::UaParser::new(100).unwrap(),
        None,
        &csv,
        86_400_000_000,
        &clickward::process::secrets::import_key(&app.data_dir().join("data/secrets")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(summary.imported, 3);
    std::fs::remove_file(&csv).unwrap();
    app.stop().await;

    let mut all = Vec::new();
    files(&app.data_dir().join("data"), &mut all);
    assert!(all.iter().any(|p| p.ends_with("clickward.db")));
    for path in all {
        let bytes = std::fs::read(&path).unwrap();
        for ip in TEST_IPS {
            for needle in needles(ip) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} holds test IP {ip}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn secrets_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::start().await;
    app.get_ua("/r/solare", CHROME).await;
    let secrets = app.data_dir().join("data/secrets");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.data_dir().join("data")), 0o700);
    assert_eq!(mode(&secrets.join("cookie.key")), 0o600);
    assert_eq!(mode(&secrets.join("visitor-salts.json")), 0o600);
    assert_eq!(std::fs::read(secrets.join("cookie.key")).unwrap().len(), 64);
}
