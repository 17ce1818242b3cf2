//! Rules, scopes, sentences and cap claims.
use super::*;

fn spec(id: &str, check: &str, action: &str) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        check: check.into(),
        action: action.into(),
        ..RuleSpec::default()
    }
}

fn no_money(_: &str) -> Result<i64, String> {
    Err("no currency".into())
}

fn compile(s: &RuleSpec) -> Result<Rule, RuleError> {
    Rule::compile(s, &no_money)
}

#[test]
fn mistakes_name_the_rule_and_the_field() {
    let mut s = spec("flood", "visitor_velocity", "reject");
    s.limit = Some(Limit::Count(5));
    s.window = Some("soon".into());
    let e = compile(&s).unwrap_err();
    assert_eq!((e.rule.as_str(), e.field), ("flood", "window"));
    s.window = Some("60s".into());
    s.limit = Some(Limit::Count(-1));
    assert_eq!(compile(&s).unwrap_err().field, "limit");
    s.limit = Some(Limit::Count(5));
    assert!(compile(&s).is_ok());
    s.action = "hold".into();
    let e = compile(&s).unwrap_err();
    assert_eq!(e.field, "action");
    assert!(e.message.contains("hold is for conversion"), "{e}");
    s.action = "reject".into();
    s.min = Some("5s".into());
    assert!(
        compile(&s)
            .unwrap_err()
            .to_string()
            .contains("does not take min")
    );

    let mut c = spec("geo", "countries", "reject");
    c.allow = Some(vec!["DE".into(), "Germany".into()]);
    let e = compile(&c).unwrap_err();
    assert_eq!(e.field, "allow");
    assert!(e.message.contains("GERMANY"), "{e}");
    let mut cap = spec("daily", "cap", "reject");
    cap.metric = Some("conversions".into());
    cap.limit = Some(Limit::Count(0));
    assert_eq!(compile(&cap).unwrap_err().field, "limit");
    assert_eq!(
        compile(&spec("x", "vibes", "flag")).unwrap_err().field,
        "check"
    );
    assert_eq!(
        compile(&spec("a b", "excluded", "flag")).unwrap_err().field,
        "id"
    );
    assert_eq!(
        compile(&spec("ok", "excluded", "maybe")).unwrap_err().field,
        "action"
    );
    assert_eq!(
        compile(&spec("c", "ctit", "block")).unwrap_err().field,
        "action"
    );
}

#[test]
fn the_most_specific_rule_of_a_family_wins() {
    let mut g = spec("global", "visitor_velocity", "reject");
    g.limit = Some(Limit::Count(5));
    g.window = Some("60s".into());
    let mut p = g.clone();
    p.id = "solare".into();
    p.program = Some("solare".into());
    p.limit = Some(Limit::Count(10));
    let mut a = spec("mia-ok", "visitor_velocity", "allow");
    a.affiliate = Some("mia".into());
    let rules: Vec<Rule> = [g, p, a].iter().map(|s| compile(s).unwrap()).collect();
    let ids = |prog, aff| -> Vec<String> {
        effective(&rules, prog, aff)
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    };
    assert_eq!(ids("other", None), ["global"]);
    assert_eq!(ids("solare", Some("leo")), ["solare"]);
    // Affiliate beats program; allow turns the family off.
    assert!(ids("solare", Some("mia")).is_empty());
}

#[test]
fn velocity_trips_above_the_limit_with_a_sentence() {
    let mut s = spec("flood", "visitor_velocity", "reject");
    s.limit = Some(Limit::Count(5));
    s.window = Some("60s".into());
    let r = compile(&s).unwrap();
    let rules = ClickRules::new(&[&r]);
    let mut sig = ClickSignals {
        visitor_clicks: 5,
        ..ClickSignals::default()
    };
    assert_eq!(rules.evaluate(&sig), None);
    sig.visitor_clicks = 7;
    let v = rules.evaluate(&sig).unwrap();
    assert_eq!(
        v.reason,
        "7 clicks from this visitor on this link in 1 min; limit 5"
    );
    assert_eq!(v.action, Action::Reject);
}

#[test]
fn the_strongest_action_decides() {
    let mut c = spec("geo", "countries", "flag");
    c.block = Some(vec!["ru".into()]);
    let mut r = spec("spam", "referrers", "block");
    r.block = Some(vec!["spam.example".into()]);
    let rules: Vec<Rule> = [c, r].iter().map(|s| compile(s).unwrap()).collect();
    let eff = effective(&rules, "p", None);
    let cr = ClickRules::new(&eff);
    let v = cr
        .evaluate(&ClickSignals {
            country: Some("RU"),
            referrer_host: Some("www.spam.example"),
            ..ClickSignals::default()
        })
        .unwrap();
    assert_eq!((v.rule.as_str(), v.action), ("spam", Action::Block));
    let v = cr
        .evaluate(&ClickSignals {
            country: Some("RU"),
            referrer_host: Some("notspam.example"),
            ..ClickSignals::default()
        })
        .unwrap();
    assert_eq!(v.reason, "country RU is blocked for this program");
}

#[test]
fn paid_search_only_on_affiliate_links() {
    let r = compile(&spec("ppc", "paid_search", "reject")).unwrap();
    let cr = ClickRules::new(&[&r]);
    let keys = ["utm_source", "gclid"];
    let mut s = ClickSignals {
        query_keys: &keys,
        ..ClickSignals::default()
    };
    assert_eq!(cr.evaluate(&s), None);
    s.affiliate_link = true;
    assert!(cr.evaluate(&s).unwrap().reason.contains("gclid"));
}

#[test]
fn ctit_defaults_and_sentences() {
    let r = compile(&spec("fast", "ctit", "reject")).unwrap();
    let rules = ConversionRules::new(&[&r]);
    let at = |s: i64| ConversionSignals {
        ctit: Some(s * 1_000_000),
        ..ConversionSignals::default()
    };
    assert_eq!(
        rules.evaluate(&at(3)).unwrap().reason,
        "converted 3 s after the click; minimum 10 s"
    );
    assert_eq!(rules.evaluate(&at(10)), None);
}

#[test]
fn conversion_rate_waits_for_enough_clicks() {
    let r = compile(&spec("cr", "conversion_rate", "hold")).unwrap();
    let rules = ConversionRules::new(&[&r]);
    let s = |c, v| ConversionSignals {
        clicks_and_conversions: Some((c, v)),
        ..ConversionSignals::default()
    };
    assert_eq!(rules.evaluate(&s(9, 9)), None);
    assert_eq!(rules.evaluate(&s(10, 2)), None);
    let v = rules.evaluate(&s(10, 3)).unwrap();
    assert_eq!(v.action, Action::Hold);
    assert_eq!(
        v.reason,
        "conversion rate 30.00% (3 of 10 clicks in 30 d); maximum 20.00%"
    );
}

#[test]
fn caps_claim_per_scope_and_local_period() {
    let mut s = spec("daily", "cap", "reject");
    s.metric = Some("conversions".into());
    s.limit = Some(Limit::Count(10));
    s.program = Some("solare".into());
    let r = compile(&s).unwrap();
    let rules = ConversionRules::new(&[&r]);
    let tokyo = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
    // 2026-12-01T16:00:00Z is already 2026-12-02 in Tokyo.
    let ts = 1_796_140_800_000_000;
    let claims = cap_claims(
        rules.caps(),
        CapMetric::Conversions,
        &CapSubject {
            program_id: 3,
            affiliate_id: Some(7),
            ts,
            tz: &tokyo,
            commission: 150,
            currency: crate::money::Currency::parse("JPY").unwrap(),
        },
    );
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].key, "conversions:program=3");
    assert_eq!(claims[0].period, "2026-12-02");
    assert_eq!(claims[0].words, "10 conversions a day for this program");
}

#[test]
fn percentages_parse_to_basis_points() {
    assert_eq!(percent_bp("20%"), Ok(2000));
    assert_eq!(percent_bp("2.5%"), Ok(250));
    assert_eq!(percent_bp("0.01"), Ok(1));
    assert!(percent_bp("101%").is_err());
    assert!(percent_bp("-1%").is_err());
    assert!(percent_bp("1.234%").is_err());
}
