//! The tracking routes: resolve the code, classify the request, hand the
//! click to the ingest pipeline, answer with a temporary redirect.
//!
//! Never a 301/308 (browsers cache them and the next click never reaches us),
//! always `Cache-Control: no-store`. The raw IP is used here, in memory, for
//! GeoIP and the visitor key, and goes no further.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clickward_core::Micros;
use clickward_core::click::{BotReason, NewClick, TrackingParams, VisitorKey, normalize_referrer};
use clickward_core::fraud::{Action, ClickSignals, Verdict};
use clickward_core::id::ClickId;
use clickward_core::link::MacroValues;
use clickward_core::program::{AttributionModel, ConsentMode};
use clickward_enrich::bot::{self, RequestShape};
use clickward_enrich::ip::client_ip;
use ipnet::IpNet;
use percent_encoding::percent_decode_str;

use super::cookies::{self, Found};
use crate::process::app::{AppState, Inner};
use crate::services::events::LiveEvent;
use crate::services::links::CachedLink;
use crate::services::{fraud, limits};

/// Name of the first-party visitor cookie (encrypted and signed).
pub const VISITOR_COOKIE: &str = "cw_vid";

/// The content of an attribution cookie (sealed, see `super::cookies`):
/// `click_id|affiliate|program|click time (Unix s)`.
pub struct AttributionValue<'a> {
    /// Click id.
    pub click_id: ClickId,
    /// Affiliate slug ("" when none).
    pub affiliate: &'a str,
    /// Program slug.
    pub program: &'a str,
    /// Click time, Unix seconds.
    pub ts_s: i64,
}

impl<'a> AttributionValue<'a> {
    /// The cookie value (before encryption).
    pub fn encode(&self) -> String {
        let mut id = [0u8; ulid::ULID_LEN];
        let mut ts = itoa::Buffer::new();
        [
            self.click_id.0.array_to_str(&mut id),
            "|",
            self.affiliate,
            "|",
            self.program,
            "|",
            ts.format(self.ts_s),
        ]
        .concat()
    }

    /// Parses a decrypted value; `None` when it is not ours.
    pub fn decode(v: &'a str) -> Option<Self> {
        let mut it = v.split('|');
        let click_id = it.next()?.parse().ok()?;
        let affiliate = it.next()?;
        let program = it.next()?;
        let ts_s = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Self {
            click_id,
            affiliate,
            program,
            ts_s,
        })
    }
}

type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn parse_query(q: Option<&str>) -> Pairs<'_> {
    // Invalid percent-encoding and invalid UTF-8 are decoded lossily (U+FFFD):
    // a malformed sub-id must not cost the click.
    q.map(|q| url::form_urlencoded::parse(q.as_bytes()).collect())
        .unwrap_or_default()
}

/// `GET|HEAD /r/{code}` and `/ref/{code}`.
///
/// Takes the request whole: the `HeaderMap` extractor would clone every
/// header on the hottest path we have.
pub async fn track_path(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let (parts, _) = req.into_parts();
    let path = parts.uri.path();
    let raw = path
        .strip_prefix("/r/")
        .or_else(|| path.strip_prefix("/ref/"))
        .unwrap_or_default();
    // A code that is not valid UTF-8 after decoding cannot name a link.
    let Ok(code) = percent_decode_str(raw).decode_utf8() else {
        return not_found(&app);
    };
    let pairs = parse_query(parts.uri.query());
    track(&app, started, &code, &pairs, &parts, peer).await
}

/// `GET|HEAD /go?id={code}&src=…`.
pub async fn track_go(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let (parts, _) = req.into_parts();
    let pairs = parse_query(parts.uri.query());
    let Some(code) = pairs
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
    else {
        return not_found(&app);
    };
    track(&app, started, &code, &pairs, &parts, peer).await
}

/// The click path, as its steps: facts from the request, bot verdict,
/// visitor identity, fraud verdict, the click id and Location, cookies,
/// hand-off to the pipeline, and the answer. Each step is a function of what it is given.
async fn track(
    app: &AppState,
    started: Instant,
    code: &str,
    pairs: &Pairs<'_>,
    parts: &Parts,
    peer: SocketAddr,
) -> Response {
    let s = &app.0;
    let Some(link) = s.links.get(code) else {
        return not_found(app);
    };
    let now = s.clock.now_micros();
    let headers = &parts.headers;
    let facts = request_facts(s, parts, pairs, peer);
    // Cookies are for browsers: fetchers and prefetches get none (they would
    // not keep them, and a prefetch must not claim attribution before the
    // real click).
    let human = facts.bot_reason.is_none();
    let consent = consent_mode(s, headers, link.consent);
    let cookies = consent == ConsentMode::Cookie;
    let visitor = visitor_identity(s, headers, now, &facts, human && cookies, cookies);

    let mut verdict = if human {
        let limited = s
            .limits
            .check(limits::Class::Tracking, facts.ip, || {
                s.salts.limiter_key(now, facts.ip)
            })
            .await
            .err()
            .map(|(_, rate)| rate);
        fraud_verdict(s, &link, pairs, headers, &facts, visitor.key, now, limited)
    } else {
        None
    };
    // Click caps count valid human clicks only.
    if human
        && !link.click_caps.is_empty()
        && !verdict.as_ref().is_some_and(|v| v.action.invalidates())
    {
        match fraud::take_click_caps(
            s.store.as_ref(),
            &s.links.rules(),
            &s.fraud.click_caps,
            &link.click_caps,
            link.record.program_id,
            link.record.affiliate_id,
            now,
        )
        .await
        {
            Ok(Some(v)) if verdict.as_ref().is_none_or(|old| v.action > old.action) => {
                s.metrics.verdicts[if v.action == Action::Block { 2 } else { 0 }].increment(1);
                verdict = Some(v);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("click cap not checked (the click passes): {e}"),
        }
    }
    let blocked = verdict.as_ref().is_some_and(|v| v.action == Action::Block);

    let ts_ms = u64::try_from(now.div_euclid(1000)).unwrap_or(0);
    let click_id = ClickId::from_parts(ts_ms, rand::random::<u128>());
    let location = location(&link, click_id, &facts.params);
    // A blocked visitor claims no attribution: the click is invalid.
    let attribution = if human && cookies && !blocked {
        attribution_cookie(s, headers, &link, click_id, now, facts.secure)
    } else {
        None
    };

    let (click, event) = click_of(
        &link,
        click_id,
        now,
        facts,
        (visitor.key, visitor.previous),
        verdict,
        consent,
    );
    hand_off(s, click, event, started).await;
    if blocked {
        return blocked_answer(s, &link, started);
    }
    redirect(s, &link, location, [visitor.cookie, attribution], started)
}

/// The verdict of a human click: its rules' ([`judge`]), or the tracking
/// rate limit's (`limited`: the rate it went beyond) when stronger; counted
/// by action.
#[allow(clippy::too_many_arguments)]
fn fraud_verdict(
    s: &Inner,
    link: &CachedLink,
    pairs: &Pairs<'_>,
    headers: &HeaderMap,
    facts: &RequestFacts<'_>,
    visitor: VisitorKey,
    now: Micros,
    limited: Option<limits::Rate>,
) -> Option<Verdict> {
    let v = judge(s, link, pairs, headers, facts, visitor, now);
    let limited = limited.map(|rate| {
        s.metrics.tracking_limited.increment(1);
        Verdict {
            rule: limits::RATE_LIMITED.to_owned(),
            action: Action::Reject,
            reason: format!(
                "more clicks from this client than the limit of {}",
                rate.text()
            ),
        }
    });
    let v = match (v, limited) {
        (Some(v), Some(l)) if l.action > v.action => Some(l),
        (v, l) => v.or(l),
    };
    if let Some(v) = &v {
        let i = match v.action {
            Action::Reject => 1,
            Action::Block => 2,
            _ => 0,
        };
        s.metrics.verdicts[i].increment(1);
    }
    v
}

/// The fraud verdict of a human click: the link's click rules given what
/// the request says, the node's velocity counters, the address's network
/// and whether it is excluded traffic. Nothing is measured that no rule of
/// this link reads.
fn judge(
    s: &Inner,
    link: &CachedLink,
    pairs: &Pairs<'_>,
    headers: &HeaderMap,
    facts: &RequestFacts<'_>,
    visitor: VisitorKey,
    now: Micros,
) -> Option<Verdict> {
    let rules = &link.click_rules;
    if rules.is_empty() {
        return None;
    }
    let link_id = link.record.link.id;
    let visitor_clicks = rules.visitor_window().map_or(0, |(w, limit)| {
        s.fraud
            .velocity
            .hit(fraud::visitor_key(link_id, &visitor.0), now, w, limit)
    });
    let link_clicks = rules.link_window().map_or(0, |(w, limit)| {
        s.fraud
            .velocity
            .hit(fraud::link_key(link_id), now, w, limit)
    });
    let network = match (&s.fraud.network, rules.wants_network()) {
        (Some(db), true) => db.lookup(facts.ip).ok(),
        _ => None,
    };
    let book = s.links.rules();
    let mut excluded = None;
    let mut own_affiliate = false;
    if book.has_exclusions() {
        let by_address = fraud::address_hash(&s.fraud.exclusion_key, facts.ip);
        let by_browser = match cookies::find(&s.cookie_sealer, headers, fraud::EXCLUDE_COOKIE) {
            Found::Valid(token) => Some(fraud::token_hash(&s.fraud.exclusion_key, &token)),
            _ => None,
        };
        for entry in std::iter::once(by_address)
            .chain(by_browser)
            .filter_map(|h| book.excluded(&h))
        {
            match entry.affiliate_id {
                None => excluded = Some(entry.label.clone()),
                Some(a) if Some(a) == link.record.affiliate_id => own_affiliate = true,
                Some(_) => {}
            }
        }
    }
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
    let referrer_host = facts
        .referrer
        .as_deref()
        .and_then(clickward_core::click::referrer_host);
    let verdict = rules.evaluate(&ClickSignals {
        country: facts.geo.country.as_deref(),
        referrer_host: referrer_host.as_deref(),
        query_keys: &keys,
        network: network.as_ref(),
        excluded: excluded.as_deref(),
        own_affiliate,
        visitor_clicks,
        link_clicks,
        affiliate_link: link.record.affiliate_id.is_some(),
    });
    match verdict {
        None if own_affiliate => Some(Verdict {
            rule: clickward_core::fraud::SELF_REFERRAL.to_owned(),
            action: Action::Flag,
            reason: "from an address or browser of the link's own affiliate (self-referral)"
                .to_owned(),
        }),
        v => v,
    }
}

/// A blocked click's answer: the program's fallback destination, else the
/// server's, else a plain 403 page. Never cached.
fn blocked_answer(s: &Inner, link: &CachedLink, started: Instant) -> Response {
    s.metrics
        .redirect_seconds
        .record(started.elapsed().as_secs_f64());
    let target = link
        .fallback
        .as_deref()
        .or(s.cfg.config.fallback_url.as_deref())
        .and_then(|u| HeaderValue::try_from(u).ok());
    match target {
        Some(v) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        None => (
            StatusCode::FORBIDDEN,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            BLOCKED_PAGE,
        )
            .into_response(),
    }
}

const BLOCKED_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
<title>Link not available</title></head><body style=\"font-family:system-ui,sans-serif;margin:3em auto;max-width:32em\">\
<h1>Link not available</h1><p>This offer is not available for this visit.</p></body></html>\n";

/// What the request says, read once: placement and sub-ids, user agent
/// facts, the bot verdict, the client IP's location, the referrer, and
/// whether cookies must be `Secure`. The IP itself goes no further than
/// this step and [`visitor_identity`].
struct RequestFacts<'r> {
    params: TrackingParams,
    ua: &'r [u8],
    info: std::sync::Arc<clickward_enrich::ua::UaInfo>,
    bot_reason: Option<BotReason>,
    ip: IpAddr,
    geo: clickward_enrich::geo::Geo,
    referrer: Option<String>,
    secure: bool,
}

fn request_facts<'r>(
    s: &Inner,
    parts: &'r Parts,
    pairs: &Pairs<'_>,
    peer: SocketAddr,
) -> RequestFacts<'r> {
    let headers = &parts.headers;
    let params = TrackingParams::from_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    let ua = headers
        .get(header::USER_AGENT)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let info = s.ua.parse(ua);
    let bot_reason = verdict(parts.method == Method::HEAD, headers, info.bot);
    let ip = client_ip(
        peer.ip(),
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(HeaderValue::as_bytes),
        &s.cfg.trusted,
    );
    let geo = match &s.geo {
        Some(db) => db.lookup(ip).unwrap_or_else(|e| {
            s.metrics.geoip_errors.increment(1);
            if !s.geo_error_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "{e}; such clicks are recorded without location (first occurrence; all are counted in clickward_geoip_errors_total)"
                );
            }
            None
        }),
        None => None,
    };
    let referrer = headers
        .get(header::REFERER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .and_then(|r| normalize_referrer(&r));
    let secure = cookie_secure(s.cfg.config.cookie_secure, &s.cfg.trusted, peer, headers);
    RequestFacts {
        params,
        ua,
        info,
        bot_reason,
        ip,
        geo: geo.unwrap_or_default(),
        referrer,
        secure,
    }
}

/// The bot verdict: request shape first (a HEAD or a prefetch from a real
/// browser is still not a click), then the user agent's own verdict.
fn verdict(head: bool, headers: &HeaderMap, ua_reason: Option<BotReason>) -> Option<BotReason> {
    let prefetch = ["sec-purpose", "purpose", "x-moz"]
        .iter()
        .filter_map(|h| headers.get(*h))
        .any(|v| bot::is_prefetch_header(v.as_bytes()));
    bot::classify(RequestShape { head, prefetch }, ua_reason)
}

/// `Secure` cookies when configured, or when a trusted proxy says the
/// visitor came over https (`X-Forwarded-Proto`).
fn cookie_secure(
    configured: bool,
    trusted: &[IpNet],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> bool {
    configured
        || (trusted
            .iter()
            .any(|n| n.contains(&clickward_enrich::ip::canonical(peer.ip())))
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// Who clicked: the key in our visitor cookie when it opens, else a key of
/// (IP, user agent) under today's salt, with the keys of earlier salts the
/// dedup window reaches; and the visitor cookie to set for a new human.
struct Visitor {
    key: VisitorKey,
    previous: Vec<VisitorKey>,
    cookie: Option<HeaderValue>,
}

fn visitor_identity(
    s: &Inner,
    headers: &HeaderMap,
    now: Micros,
    facts: &RequestFacts<'_>,
    set_cookie: bool,
    read_cookie: bool,
) -> Visitor {
    let found = if read_cookie {
        cookies::find(&s.cookie_sealer, headers, VISITOR_COOKIE)
    } else {
        Found::Absent
    };
    let from_cookie = match &found {
        Found::Valid(v) => VisitorKey::from_hex(v),
        Found::Absent | Found::Rejected => None,
    };
    if from_cookie.is_none() && !matches!(found, Found::Absent) {
        s.metrics.cookie_rejected.increment(1);
    }
    if let Some(key) = from_cookie {
        return Visitor {
            key,
            previous: Vec::new(),
            cookie: None,
        };
    }
    match s
        .salts
        .keys_for(now, s.cfg.dedup_window, facts.ip, facts.ua)
    {
        Ok((key, previous)) => {
            let cookie = if set_cookie {
                let sealed = s.cookie_sealer.seal(VISITOR_COOKIE, &key.to_hex());
                cookies::set_cookie(
                    VISITOR_COOKIE,
                    &sealed,
                    cookie_max_age_s(s.cfg.dedup_window),
                    facts.secure,
                )
            } else {
                None
            };
            Visitor {
                key,
                previous,
                cookie,
            }
        }
        Err(e) => {
            // Cannot persist today's salt: still redirect, still record,
            // under a key that only dedups within this request.
            tracing::error!("visitor salt unavailable: {e}");
            let mut k = [0u8; 16];
            rand::fill(&mut k[..]);
            Visitor {
                key: VisitorKey(k),
                previous: Vec::new(),
                cookie: None,
            }
        }
    }
}

/// The consent mode of a click (docs/privacy.md, "Consent"): the merchant's
/// consent-banner cookie decides when it says yes or no; else a visitor
/// who sends `Sec-GPC: 1` (or `DNT: 1` with `honor_dnt`) gets the global
/// `consent_mode` or the program's; everyone else gets cookies.
fn consent_mode(s: &Inner, headers: &HeaderMap, program: ConsentMode) -> ConsentMode {
    let p = &s.cfg.config.privacy;
    if let Some(name) = &p.consent_cookie
        && let Some(said) = cookies::plain(headers, name)
            .as_deref()
            .and_then(consent_said)
    {
        return said;
    }
    let is_one = |name: &str| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
    };
    if is_one("sec-gpc") || (p.honor_dnt && is_one("dnt")) {
        s.cfg.consent_override.unwrap_or(program)
    } else {
        ConsentMode::Cookie
    }
}

/// What a consent-banner cookie's value says; `None`: nothing we know.
fn consent_said(v: &str) -> Option<ConsentMode> {
    match v.trim().to_ascii_lowercase().as_str() {
        "granted" | "true" | "1" | "yes" | "allow" | "accept" => Some(ConsentMode::Cookie),
        "denied" | "false" | "0" | "no" | "deny" | "reject" => Some(ConsentMode::Cookieless),
        _ => None,
    }
}

/// The Location: the link's destination with its macros expanded.
fn location(link: &CachedLink, click_id: ClickId, params: &TrackingParams) -> String {
    let mut id_buf = [0u8; ulid::ULID_LEN];
    let record = &link.record;
    link.destination.expand(&MacroValues {
        click_id: click_id.0.array_to_str(&mut id_buf),
        code: record.link.code.as_str(),
        affiliate: record
            .link
            .affiliate
            .as_ref()
            .map(|a| a.as_str())
            .unwrap_or(""),
        program: record.link.program.as_str(),
        src: params.src.as_deref().unwrap_or(""),
        subs: std::array::from_fn(|i| params.subs[i].as_deref().unwrap_or("")),
    })
}

/// The program's attribution cookie: last click replaces it, first click
/// keeps a valid one. It carries click id, affiliate, program, click time.
fn attribution_cookie(
    s: &Inner,
    headers: &HeaderMap,
    link: &CachedLink,
    click_id: ClickId,
    now: Micros,
    secure: bool,
) -> Option<HeaderValue> {
    let at = &link.attribution;
    let existing = cookies::find(&s.cookie_sealer, headers, &at.name);
    if matches!(existing, Found::Rejected) {
        s.metrics.cookie_rejected.increment(1);
    }
    if matches!(existing, Found::Valid(_)) && at.model != AttributionModel::LastClick {
        return None;
    }
    let record = &link.record;
    let value = AttributionValue {
        click_id,
        affiliate: record
            .link
            .affiliate
            .as_ref()
            .map(|a| a.as_str())
            .unwrap_or(""),
        program: record.link.program.as_str(),
        ts_s: now / 1_000_000,
    }
    .encode();
    let sealed = s.cookie_sealer.seal(&at.name, &value);
    cookies::set_cookie(&at.name, &sealed, at.max_age_s.max(1), secure)
}

/// The click to record and its live event. The event carries what was
/// recorded (never the IP); it is made before the click moves into the
/// ingest queue, and gets the outcome and the redirect time in [`hand_off`].
fn click_of(
    link: &CachedLink,
    click_id: ClickId,
    now: Micros,
    facts: RequestFacts<'_>,
    (visitor_key, previous_keys): (VisitorKey, Vec<VisitorKey>),
    verdict: Option<Verdict>,
    consent: ConsentMode,
) -> (NewClick, LiveEvent) {
    let record = &link.record;
    let RequestFacts {
        params,
        info,
        bot_reason,
        geo,
        referrer,
        ..
    } = facts;
    let click = NewClick {
        click_id,
        ts: now,
        link_id: record.link.id,
        program_id: record.program_id,
        affiliate_id: record.affiliate_id,
        params,
        referrer,
        device: info.device,
        os: info.os.as_deref().map(str::to_owned),
        browser: info.browser.as_deref().map(str::to_owned),
        bot: bot_reason,
        country: geo.country,
        region: geo.region,
        city: geo.city,
        visitor_key,
        previous_keys,
        verdict,
        consent,
    };
    let event = LiveEvent::Click {
        click_id,
        ts: now,
        link: link.names.code.clone(),
        program: link.names.program.clone(),
        affiliate: link.names.affiliate.clone(),
        src: click.params.src.clone(),
        subs: click.params.subs.clone(),
        device: click.device.as_str(),
        os: click.os.clone(),
        browser: click.browser.clone(),
        country: click.country.clone(),
        referrer: click.referrer.clone(),
        bot_reason: bot_reason.map(|b| b.as_str()),
        verdict: click.verdict.clone(),
        outcome: "",
        redirect_us: 0,
    };
    (click, event)
}

/// Hands the click to the ingest pipeline (with `durability = "sync"` this
/// waits for its commit), counts it, and publishes its live event.
async fn hand_off(s: &Inner, click: NewClick, mut event: LiveEvent, started: Instant) {
    let bot_reason = click.bot;
    let submitted = s.ingest.submit(click).await;
    submitted.counter(&s.metrics).increment(1);
    if let LiveEvent::Click {
        outcome,
        redirect_us,
        ..
    } = &mut event
    {
        *outcome = submitted.label();
        *redirect_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    }
    s.events.publish(event);
    if let Some(reason) = bot_reason {
        s.metrics.bot_clicks(reason).increment(1);
    }
}

/// The answer: the link's temporary redirect, never cached, with the
/// cookies to set.
fn redirect(
    s: &Inner,
    link: &CachedLink,
    location: String,
    set_cookies: [Option<HeaderValue>; 2],
    started: Instant,
) -> Response {
    let status = StatusCode::from_u16(link.redirect.code()).unwrap_or(StatusCode::FOUND);
    let Ok(location) = HeaderValue::try_from(location) else {
        // Destinations are checked when saved and macro values are encoded,
        // so this cannot happen; answer plainly if it ever does.
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad destination\n").into_response();
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in set_cookies.into_iter().flatten() {
        h.append(header::SET_COOKIE, c);
    }
    s.metrics
        .redirect_seconds
        .record(started.elapsed().as_secs_f64());
    resp
}

fn cookie_max_age_s(window_us: i64) -> i64 {
    // The cookie only serves dedup, so it lives exactly as long as the window.
    (window_us / 1_000_000).max(60)
}

const NOT_FOUND_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
<title>Link not found</title></head><body style=\"font-family:system-ui,sans-serif;margin:3em auto;max-width:32em\">\
<h1>Link not found</h1><p>This tracking link does not exist or is no longer active.</p></body></html>\n";

fn not_found(app: &AppState) -> Response {
    app.0.metrics.not_found.increment(1);
    if let Some(v) = app
        .0
        .cfg
        .config
        .fallback_url
        .as_deref()
        .and_then(|u| HeaderValue::try_from(u).ok())
    {
        return (
            StatusCode::FOUND,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response();
    }
    not_found_html()
}

fn not_found_html() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        NOT_FOUND_PAGE,
    )
        .into_response()
}

/// `GET /exclude?t={token}`: marks this browser as excluded traffic (the
/// merchant's or publisher's own, or an affiliate's): sets the sealed
/// `cw_ex` cookie for 400 days, when the token's hash is in the exclusion
/// list (`clickward exclude add --browser` prints the URL). HEAD sets
/// nothing.
pub async fn exclude_browser(
    State(app): State<AppState>,
    method: Method,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let s = &app.0;
    let token = q.get("t").map(String::as_str).unwrap_or_default();
    let known = !token.is_empty()
        && s.links
            .rules()
            .excluded(&fraud::token_hash(&s.fraud.exclusion_key, token))
            .is_some();
    if !known {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "This exclusion link is unknown or was removed; make a new one with `clickward exclude add --browser`.\n",
        )
            .into_response();
    }
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "This browser's clicks are now excluded from the counts (they are still redirected).\n",
    )
        .into_response();
    if method != Method::HEAD {
        let sealed = s.cookie_sealer.seal(fraud::EXCLUDE_COOKIE, token);
        if let Some(c) = super::exclusion_cookie(&app, &sealed) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

/// Any path no route knows.
pub async fn not_found_page() -> Response {
    not_found_html()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_value_round_trips() {
        let click_id = ClickId::from_parts(1_700_000_000_000, 42);
        for affiliate in ["", "mia"] {
            let encoded = AttributionValue {
                click_id,
                affiliate,
                program: "solare",
                ts_s: 1_700_000_000,
            }
            .encode();
            assert_eq!(encoded, format!("{click_id}|{affiliate}|solare|1700000000"));
            let back = AttributionValue::decode(&encoded).expect("decodes");
            assert_eq!(
                (back.click_id, back.affiliate, back.program, back.ts_s),
                (click_id, affiliate, "solare", 1_700_000_000)
            );
        }
        assert!(AttributionValue::decode("x|a|b|1").is_none());
        assert!(AttributionValue::decode(&format!("{click_id}|a|b|1|extra")).is_none());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn verdict_puts_request_shape_before_the_user_agent() {
        let none = headers(&[]);
        assert_eq!(verdict(false, &none, None), None);
        assert_eq!(
            verdict(false, &none, Some(BotReason::UaPattern)),
            Some(BotReason::UaPattern)
        );
        // A real browser's HEAD or prefetch is still not a click.
        assert_eq!(verdict(true, &none, None), Some(BotReason::Head));
        for h in [
            headers(&[("sec-purpose", "prefetch;prerender")]),
            headers(&[("purpose", "prefetch")]),
            headers(&[("x-moz", "prefetch")]),
        ] {
            assert_eq!(verdict(false, &h, None), Some(BotReason::Prefetch));
            assert_eq!(
                verdict(false, &h, Some(BotReason::UaPattern)),
                Some(BotReason::Prefetch)
            );
        }
        assert_eq!(
            verdict(false, &headers(&[("sec-purpose", "nothing")]), None),
            None
        );
    }

    #[test]
    fn cookies_are_secure_when_configured_or_a_trusted_proxy_says_https() {
        let proxy: SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let stranger: SocketAddr = "203.0.113.9:4000".parse().expect("addr");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let https = headers(&[("x-forwarded-proto", "HTTPS")]);
        let http = headers(&[("x-forwarded-proto", "http")]);
        assert!(cookie_secure(true, &[], stranger, &headers(&[])));
        assert!(cookie_secure(false, &trusted, proxy, &https));
        assert!(!cookie_secure(false, &trusted, proxy, &http));
        // Anyone can send the header: only a trusted proxy is believed.
        assert!(!cookie_secure(false, &trusted, stranger, &https));
    }
}
