//! E-mail through a real SMTP relay (aiosmtpd from PyPI,
//! tests/receiver/smtp_sink.py): a conversion mail to the affiliate who
//! asked for it, held while the relay is down, and a magic link sent by
//! the CLI.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clickward_store::prelude::*;

use crate::helpers::*;

struct Relay {
    child: Child,
    dir: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(port: u16, dir: &Path) -> Relay {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receiver/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "{line}");
        Relay {
            child,
            dir: dir.to_owned(),
        }
    }

    /// The messages received: (recipients, raw message).
    fn mails(&self) -> Vec<(Vec<String>, String)> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let meta: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(p.with_extension("json")).unwrap(),
                )
                .unwrap();
                let to = meta["to"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect();
                (to, std::fs::read_to_string(p).unwrap())
            })
            .collect()
    }
}

const CATALOG: &str = r#"
[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "tok-shop"

[[affiliates]]
slug = "solare"

[[links]]
code = "s1"
program = "shop"
affiliate = "solare"
destination = "https://shop.example/?cid={click_id}"
"#;

#[tokio::test]
async fn a_conversion_mail_waits_for_a_relay_that_is_down_and_a_magic_link_is_mailed() {
    if !available(
        python_has("aiosmtpd"),
        "Python's aiosmtpd (pip install aiosmtpd)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("links.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let port = free_port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let app = TestApp::start_with(|c| {
        c.catalog = Some(catalog.clone());
        c.mail.smtp = Some(smtp.clone());
        c.mail.from = "clickward <noreply@shop.example>".into();
        c.mail.admin = vec!["ops@shop.example".into()];
        c.dashboard.public_url = Some("https://t.shop.example".into());
    })
    .await;
    crate::dashboard::add_user(&app, "sol", Some("solare"), None).await;
    crate::dashboard::add_user(&app, "sol2", Some("solare"), None).await;
    app.store
        .set_user_email("sol".into(), Some("sol@aff.example".into()), true)
        .await
        .unwrap();
    // Has an address, but did not ask for conversion mails.
    app.store
        .set_user_email("sol2".into(), Some("sol2@aff.example".into()), false)
        .await
        .unwrap();

    let r = app.get_ua("/r/s1?sub1=secret-sub", IPHONE).await;
    let cid = location(&r).rsplit("cid=").next().unwrap().to_owned();
    let r = app
        .client
        .get(app.url(&format!(
            "/postback?click_id={cid}&order_id=M-1&amount=80.00&token=tok-shop"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // The relay is down: the mail is tried, fails, and waits.
    let failed = eventually(Duration::from_secs(20), "a failed mail attempt", || async {
        let (_, v) = app.api_get("/api/v1/deliveries").await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["type"] == "conversion.created" && d["attempts"] == 1)
            .cloned()
    })
    .await;
    assert_eq!(failed["status"], "pending");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("relay refused"),
        "{failed}"
    );
    // It comes up; the retry (5 s on the test's clock) sends the mail.
    let inbox = tempfile::tempdir().unwrap();
    let relay = Relay::start(port, inbox.path());
    app.clock.set(NOON + 10_000_000);
    let mails = eventually(Duration::from_secs(20), "the conversion mail", || async {
        let m = relay.mails();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(mails.len(), 1, "to sol only (sol2 did not ask)");
    let (to, raw) = &mails[0];
    assert_eq!(to, &["sol@aff.example"]);
    assert!(
        raw.contains("Subject: New conversion on shop: 8.00 USD"),
        "{raw}"
    );
    assert!(
        raw.contains("text/plain") && raw.contains("text/html"),
        "plain text and HTML: {raw}"
    );
    assert!(raw.contains("M-1") && raw.contains("https://t.shop.example/portal"));
    for visitor in ["127.0.0.1", "iPhone", "secret-sub"] {
        assert!(
            !raw.contains(visitor),
            "no visitor data ({visitor}) in {raw}"
        );
    }
    let (_, d) = app
        .api_get(&format!("/api/v1/deliveries/{}", failed["id"]))
        .await;
    assert_eq!(d["status"], "delivered");
    assert!(
        d["attempts_log"][1]["response"]
            .as_str()
            .unwrap()
            .contains("queued"),
        "{d}"
    );

    // The CLI mails a sign-in link through the same relay.
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!("[mail]\nsmtp = \"{smtp}\"\nfrom = \"noreply@shop.example\"\n[dashboard]\npublic_url = \"https://t.shop.example\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(app.data_dir().join("data"))
        .args(["user", "magic-link", "sol", "--send"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails = eventually(Duration::from_secs(20), "the sign-in mail", || async {
        let m = relay.mails();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(mails[1].0, ["sol@aff.example"]);
    assert!(
        mails[1].1.contains("https://t.shop.example/login/magic?t="),
        "{}",
        mails[1].1
    );
    // A user without an address is refused by name.
    let out = Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(app.data_dir().join("data"))
        .args(["user", "magic-link", "nobody-here", "--send"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
