//! The `clickward-lambda` binary under the Lambda runtime API, as Cargo
//! Lambda emulates it (`cargo lambda watch --only-lambda-apis`), invoked with
//! `cargo lambda invoke` and API Gateway v2 events: what API Gateway would
//! get back (status, `cookies`), a postback replayed, and the init time the
//! binary reports. cargo-lambda comes from PyPI (.ci/run installs it);
//! outside CI a missing one skips this test, loudly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_lambda() -> bool {
    let found = Command::new("cargo")
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-lambda is missing in CI: .ci/run installs it"
        );
        eprintln!(
            "\n!!! SKIPPED: cargo-lambda is not installed (pip install cargo-lambda); this test runs in CI !!!\n"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn v2_event(method: &str, path: &str, query: &str, ua: &str) -> String {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": ua,
            "cloudfront-viewer-address": "198.51.100.7:40000"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "130.176.0.10", "userAgent": ua},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "06/Dec/2026:22:00:00 +0000",
            "timeEpoch": 1_796_594_400_000_i64
        },
        "isBase64Encoded": false
    })
    .to_string()
}

fn invoke(port: u16, event: &str) -> Value {
    let out = Command::new("cargo")
        .args(["lambda", "invoke", "_", "--invoke-address", "127.0.0.1"])
        .args(["--invoke-port", &port.to_string(), "--data-ascii", event])
        .current_dir(repo())
        .output()
        .expect("cargo lambda invoke runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_binary_answers_api_gateway_events_through_the_runtime_api() {
    if !cargo_lambda() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("links.toml");
    std::fs::write(
        &catalog,
        r#"
[[programs]]
slug = "shop"
postback_token = "tok-shop"
commission = { default = { type = "share", bps = 1000 } }
[[affiliates]]
slug = "blog"
[[links]]
code = "summer"
program = "shop"
affiliate = "blog"
destination = "https://shop.example/sale?cid={click_id}"
"#,
    )
    .unwrap();
    let port = free_port();
    let _emulator = Killed(
        Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis"])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo lambda watch starts"),
    );
    wait_for_port(port, "the runtime API emulator");
    let log = dir.path().join("function.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let _function = Killed(
        Command::new(env!("CARGO_BIN_EXE_clickward-lambda"))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("CLICKWARD_DATA_DIR", dir.path().join("data"))
            .env("CLICKWARD_CATALOG", &catalog)
            .env("CLICKWARD_VIEWER_HEADER", "cloudfront-viewer-address")
            .env("RUST_LOG", "info")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the function starts"),
    );
    let ua = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Mobile Safari/537.36";

    // The emulator holds the invocation until the function asks for it.
    let r = invoke(port, &v2_event("GET", "/r/summer", "src=video", ua));
    assert_eq!(r["statusCode"], 302, "{r}");
    let location = r["headers"]["location"].as_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://shop.example/sale?cid="),
        "{r}"
    );
    assert_eq!(r["headers"]["cache-control"], "no-store");
    // API Gateway v2 takes cookies as their own list.
    let cookies = r["cookies"].as_array().expect("cookies");
    assert!(
        cookies
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.starts_with("cw_vid="))),
        "{r}"
    );

    let click = location.rsplit('=').next().unwrap();
    let query = format!("click_id={click}&order_id=RT-1&amount=12.00&token=tok-shop");
    let first = invoke(port, &v2_event("GET", "/postback", &query, "shop/1.0"));
    assert_eq!(first["statusCode"], 201, "{first}");
    for _ in 0..3 {
        let again = invoke(port, &v2_event("GET", "/postback", &query, "shop/1.0"));
        assert_eq!(again["statusCode"], 200, "{again}");
        assert!(
            again["body"].as_str().unwrap().contains("duplicate"),
            "{again}"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let init = text
        .lines()
        .find(|l| l.contains("clickward is ready"))
        .unwrap_or_else(|| panic!("no ready line in\n{text}"));
    assert!(init.contains("init_ms="), "{init}");
    eprintln!("{init}");
}
