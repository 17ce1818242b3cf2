//! What ships in deploy/: the Grafana dashboard and the alert rules read
//! only metrics a live server serves from its first scrape; promtool
//! accepts the rules; systemd-analyze accepts the hardened unit. The tools
//! are installed by .ci/run; outside CI a missing one skips its test, loudly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::process::Command;

use crate::helpers::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A metric's family name: a histogram's series share theirs.
fn family(name: &str) -> String {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
        .to_owned()
}

/// Every `clickward_…` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("clickward_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(family(&tail[..end]));
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_read_is_served_from_the_start() {
    let app = TestApp::start().await;
    // One redirect, so that the latency histogram has its buckets.
    assert_eq!(app.get_ua("/r/solare", CHROME).await.status().as_u16(), 302);
    let text = app.metrics_text().await;
    let served: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(family)
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/clickward.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("a target has an expr").to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    for (file, wanted) in [
        ("deploy/grafana/clickward.json", names(&exprs)),
        (
            "deploy/prometheus/alerts.yml",
            names(&read("deploy/prometheus/alerts.yml")),
        ),
    ] {
        assert!(wanted.len() >= 8, "{file}: {wanted:?}");
        let missing: Vec<&String> = wanted.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{file} reads {missing:?}, which a fresh server's /metrics does not serve"
        );
    }
    // The alert on 5xx answers has its series before any error.
    assert!(
        text.contains("clickward_http_responses_total{class=\"5xx\"} 0"),
        "{text}"
    );
    // And the API's answers are counted in it.
    let (s, _) = app.api_get("/api/v1/links").await;
    assert_eq!(s, 200);
    let text = app.metrics_text().await;
    let ok: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("clickward_http_responses_total{class=\"2xx\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(ok >= 1.0, "{text}");
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo("deploy/prometheus/alerts.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn systemd_accepts_the_unit_and_rates_it_hardened() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // The unit as installed: the binary where ExecStart says.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("clickward.service");
    let text = read("deploy/systemd/clickward.service")
        .replace("/usr/local/bin/clickward", env!("CARGO_BIN_EXE_clickward"));
    std::fs::write(&unit, text).unwrap();
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !said.contains("clickward.service"),
        "{said}"
    );
    // Exposure 0 (locked down) to 10 (none): at most 2.0 ("OK").
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cfn_lint_accepts_the_aws_template() {
    let Some(lint) = tool("cfn-lint") else {
        return;
    };
    let out = Command::new(lint)
        .arg(repo("deploy/aws/template.yaml"))
        .output()
        .expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs deploy/aws/check.py on `template`: its exit status and output.
fn aws_check(template: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.yaml");
    std::fs::write(&path, template).unwrap();
    let out = Command::new("python3")
        .arg(repo("deploy/aws/check.py"))
        .arg(&path)
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_aws_template_check_passes_ours_and_catches_each_mistake() {
    // PyYAML comes with cfn-lint (.ci/run); without either this skips.
    if tool("cfn-lint").is_none() {
        return;
    }
    let ours = read("deploy/aws/template.yaml");
    let (ok, said) = aws_check(&ours);
    assert!(ok && said.trim() == "ok", "{said}");

    // (what the mistake is, the edit, what the check must say)
    let once = |from: &str, to: &str| {
        assert!(ours.contains(from), "the template no longer has {from:?}");
        ours.replacen(from, to, 1)
    };
    let mistakes = [
        (
            "a wildcard action",
            once(
                "dynamodb:GetItem, dynamodb:Query, dynamodb:PutItem",
                "dynamodb:*",
            ),
            "wildcard IAM action 'dynamodb:*'",
        ),
        (
            "a SAM policy template",
            once(
                "      Policies:\n        - Statement:",
                "      Policies:\n        - DynamoDBCrudPolicy: { TableName: !Ref ClicksTable }\n        - Statement:",
            ),
            "managed or SAM template policy",
        ),
        (
            "a cached tracking path",
            once("        DefaultTTL: 0", "        DefaultTTL: 300"),
            "/r/*: cache policy NoCache has DefaultTTL 300",
        ),
        (
            "POST on a tracking path",
            once(
                "          - PathPattern: /go\n            TargetOriginId: api\n            ViewerProtocolPolicy: redirect-to-https\n            AllowedMethods: [GET, HEAD]",
                "          - PathPattern: /go\n            TargetOriginId: api\n            ViewerProtocolPolicy: redirect-to-https\n            AllowedMethods: [GET, HEAD, POST]",
            ),
            "/go: methods",
        ),
        (
            "no /ref/* behaviour",
            once(
                "          - PathPattern: /ref/*",
                "          - PathPattern: /ref-old/*",
            ),
            "no cache behaviour for /ref/*",
        ),
        (
            "a prefetch hint not forwarded",
            once("            - Sec-Purpose\n", ""),
            "headers not forwarded: sec-purpose",
        ),
        (
            "query strings not forwarded",
            once(
                "QueryStringsConfig: { QueryStringBehavior: all }",
                "QueryStringsConfig: { QueryStringBehavior: none }",
            ),
            "not every query string is forwarded",
        ),
        (
            "no stream on clicks",
            once(
                "      StreamSpecification: { StreamViewType: NEW_IMAGE }\n",
                "",
            ),
            "ClicksTable has no stream",
        ),
        (
            "no TTL on clicks",
            once(
                "      TimeToLiveSpecification: { AttributeName: expires_at, Enabled: true }\n      StreamSpecification",
                "      StreamSpecification",
            ),
            "ClicksTable has no TTL",
        ),
        (
            "a missing table",
            once("  LedgerTable:\n", "  Ledger2Table:\n"),
            "missing resource LedgerTable",
        ),
        (
            "whole-batch retries",
            once(
                "            FunctionResponseTypes: [ReportBatchItemFailures]\n",
                "",
            ),
            "no ReportBatchItemFailures",
        ),
        (
            "x86 functions",
            once("    Architectures: [arm64]", "    Architectures: [x86_64]"),
            "is not built for arm64",
        ),
        (
            "a key in the template",
            once(
                "        CLICKWARD_RETENTION_DAYS: !Ref RetentionDays",
                "        CLICKWARD_RETENTION_DAYS: !Ref RetentionDays\n        CLICKWARD_ADMIN_KEY: cwk_n6pTLVAR5cSj8613jfZHUnnkOQ4xDFkc391_0RyU6_Q",
            ),
            "holds a clickward API key",
        ),
        ("not YAML", "Resources: [\n".to_owned(), "not YAML"),
    ];
    for (what, template, says) in mistakes {
        let (ok, said) = aws_check(&template);
        assert!(!ok, "{what}: the check passed it");
        assert!(said.contains(says), "{what}: expected {says:?} in\n{said}");
    }
}
