//! Bot classification over real HTTP with the real user-agent corpora.

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

use crate::helpers::*;

#[derive(Deserialize)]
struct Crawler {
    #[serde(default)]
    instances: Vec<String>,
}

async fn bot_share(app: &TestApp, code: &str) -> (i64, i64) {
    let rows = app.clicks(code).await;
    let bots = rows.iter().filter(|c| !c["bot_reason"].is_null()).count();
    (
        i64::try_from(rows.len()).unwrap(),
        i64::try_from(bots).unwrap(),
    )
}

#[tokio::test]
async fn every_corpus_agent_is_classified_over_http() {
    let app = TestApp::start().await;
    let data = shared_data().join("user-agents");
    let crawlers: Vec<Crawler> =
        serde_json::from_slice(&std::fs::read(data.join("crawler-user-agents.json")).unwrap())
            .unwrap();
    let bots: Vec<String> = crawlers.into_iter().flat_map(|c| c.instances).collect();
    let mut browsers: Vec<String> = Vec::new();
    for f in ["top-desktop.json", "top-mobile.json"] {
        let list: Vec<String> =
            serde_json::from_slice(&std::fs::read(data.join(f)).unwrap()).unwrap();
        browsers.extend(list);
    }
    // Ten requests in flight at a time: each waits for its group commit.
    for chunk in bots.chunks(10) {
        let futs = chunk.iter().map(|ua| app.get_ua("/ref/puesto", ua));
        for r in futures::future::join_all(futs).await {
            assert_eq!(r.status().as_u16(), 302);
        }
    }
    for ua in &browsers {
        assert_eq!(
            app.get_ua("/ref/totalwine", ua).await.status().as_u16(),
            302
        );
    }
    // The API lists at most 1000 per call; count through the report instead.
    let report = report_counts(&app, "puesto").await;
    let (gross, bot) = report;
    assert_eq!(gross, i64::try_from(bots.len()).unwrap());
    assert!(
        bot * 1000 >= gross * 995,
        "only {bot} of {gross} crawler agents flagged"
    );
    let (gross, bot) = bot_share(&app, "totalwine").await;
    assert_eq!(gross, i64::try_from(browsers.len()).unwrap());
    assert_eq!(bot, 0, "a top browser agent was flagged");
}

async fn report_counts(app: &TestApp, code: &str) -> (i64, i64) {
    use clickward_core::report::Dimension;
    use clickward_store::ReportQuery;
    use clickward_store::prelude::*;
    let rows = app
        .store
        .click_report(ReportQuery {
            start: NOON - 86_400_000_000,
            end: NOON + 86_400_000_000,
            buckets: None,
            dims: vec![Dimension::Link],
            filters: vec![],
            raw_only: false,
            by_click_time: false,
        })
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.keys[0].as_deref() == Some(code))
        .expect("row for link");
    (row.counts.gross_clicks, row.counts.bot_clicks)
}

#[tokio::test]
async fn head_prefetch_and_preview_fetchers_are_bots_with_reasons() {
    let app = TestApp::start().await;
    let mut t = NOON;
    let mut tick = || {
        t += 1_000_000;
        app.clock.set(t);
    };
    tick();
    let r = app
        .client
        .head(app.url("/r/smallgoods"))
        .header("user-agent", IPHONE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert!(location(&r).starts_with("https://smallgoods.example/"));
    for (header, value) in [
        ("sec-purpose", "prefetch;prerender"),
        ("purpose", "prefetch"),
    ] {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static(IPHONE));
        h.insert(header, HeaderValue::from_static(value));
        tick();
        assert_eq!(
            app.get_with("/r/smallgoods", h).await.status().as_u16(),
            302
        );
    }
    for ua in [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Twitterbot/1.0",
        "WhatsApp/2.23.20.0 A",
        "TelegramBot (like TwitterBot)",
    ] {
        tick();
        app.get_ua("/r/smallgoods", ua).await;
    }
    tick();
    app.get_ua("/r/smallgoods", IPHONE).await;
    let clicks = app.clicks("smallgoods").await;
    let reasons: Vec<Option<&str>> = clicks
        .iter()
        .rev()
        .map(|c| c["bot_reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        vec![
            Some("head"),
            Some("prefetch"),
            Some("prefetch"),
            Some("preview_fetcher"),
            Some("preview_fetcher"),
            Some("preview_fetcher"),
            Some("preview_fetcher"),
            Some("preview_fetcher"),
            Some("preview_fetcher"),
            None,
        ]
    );
    let human = &clicks[0];
    assert_eq!(human["device"], "mobile");
    assert_eq!(human["os"], "iOS");
    assert_eq!(human["unique"], true);
    // Bots never count as unique, and never consume the visitor's unique.
    assert!(clicks[1..].iter().all(|c| c["unique"] == false));
}

/// The false positives of isbot alone (in-app browsers, a device model with
/// a bot-like word, a TV naming CE-HTML) are human clicks over HTTP, with a
/// browser family and a unique; an agent naming no browser at all is a bot
/// with its own reason.
#[tokio::test]
async fn in_app_and_regional_browsers_are_humans_and_bare_scripts_bots() {
    let app = TestApp::start().await;
    let humans = [
        "Mozilla/5.0 (Linux; Android 8.1; COR-AL10 Build/HUAWEICOR-AL10; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/57.0.2987.132 MQQBrowser/6.2 TBS/044408 Mobile Safari/537.36 MMWEBID/347 MicroMessenger/7.0.1380(0x2700003A) Process/tools NetType/WIFI Language/zh_CN",
        "[FBAN/FB4A;FBAV/80.0.0.21.65;FBBV/31390006;FBDM/{density=1.5,width=480,height=786};FBLC/pt_BR;FBCR/VIVO;FBMF/LGE;FBBD/lge;FBPN/com.facebook.katana;FBDV/LG-H342;FBSV/5.0.1;FBOP/19;FBCA/armeabi-v7a:armeabi;]",
        "Mozilla/5.0 (Linux; Android 7.0; M bot 54) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/78.0.3904.96 Mobile Safari/537.36",
        "Opera/9.80 (Linux mips; U; NETRANGEMMH; Sharp; HbbTV/1.1.1; CE-HTML/1.0; LE542E; FT; LC:deu; CC:che;; en) Presto/2.9.167 Version/11.50",
    ];
    let mut t = NOON;
    for ua in humans {
        t += 1_000_000;
        app.clock.set(t);
        let r = app.get_ua("/r/smallgoods", ua).await;
        assert_eq!(r.status().as_u16(), 302, "{ua}");
        assert!(
            r.headers().get("set-cookie").is_some(),
            "a human click gets its attribution cookie: {ua}"
        );
    }
    t += 1_000_000;
    app.clock.set(t);
    app.get_ua("/r/smallgoods", "amazon-kendra-customer-id-<AccountID>")
        .await;
    let clicks = app.clicks("smallgoods").await;
    assert_eq!(clicks.len(), humans.len() + 1);
    assert_eq!(clicks[0]["bot_reason"], "no_browser");
    for c in &clicks[1..] {
        assert!(c["bot_reason"].is_null(), "{c}");
        assert!(!c["browser"].is_null(), "{c}");
        assert_eq!(c["unique"], true, "{c}");
    }
}
