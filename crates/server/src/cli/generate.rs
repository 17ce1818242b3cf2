//! `clickward gen`: realistic synthetic history written straight into the
//! store, for tests and benchmarks.
//!
//! N clicks spread over the last D days across L links and A affiliates of
//! one program (`gen`), with src and sub1 values, countries, real user agents
//! (classified by the same parser as live traffic), a share of bots, double
//! taps two seconds apart, a visitor pool so that dedup finds repeat
//! visitors, and conversions for a share of human clicks. Deterministic for a
//! given seed. Clicks go through the store's normal batched write, so unique
//! flags are decided exactly as for live clicks.

use std::sync::Arc;

use crate::process::config::Validated;
use anyhow::Context;
use clap::Args;
use clickward_core::click::{NewClick, TrackingParams, VisitorKey};
use clickward_core::commission::{CommissionPlan, Rate};
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::{ClickId, ConversionId, LinkCode, Slug};
use clickward_core::link::{Status, UtmDefaults};
use clickward_core::money::{BasisPoints, Currency};
use clickward_core::program::ProgramSettings;
use clickward_core::{MICROS_PER_DAY, MICROS_PER_SEC, Micros};
use clickward_enrich::bot::{self, RequestShape};
use clickward_enrich::ua::UaParser;
use clickward_store::{
    AffiliateInput, CatalogInput, ClickFacts, LinkInput, NewConversion, ProgramInput, Store,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// Clicks to write (double taps included).
    pub clicks: u64,
    /// Days of history, ending at `end`.
    pub days: u32,
    /// Links (`gen-l0`…).
    pub links: u32,
    /// Affiliates (`gen-a0`…).
    pub affiliates: u32,
    /// Share of bot clicks, percent.
    pub bot_pct: u32,
    /// Share of human clicks followed by a double tap, percent.
    pub double_tap_pct: u32,
    /// Conversions per 10 000 human clicks.
    pub conversion_per_10k: u32,
    /// Distinct visitors.
    pub visitors: u64,
    /// Seed.
    pub seed: u64,
    /// Last instant of the history, UTC µs.
    pub end: Micros,
    /// User agents to draw from (browsers); bots use a built-in list.
    pub user_agents: Vec<String>,
    /// Dedup window, µs.
    pub dedup_window: Micros,
}

/// What was generated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenSummary {
    /// Clicks written.
    pub clicks: u64,
    /// Conversions written.
    pub conversions: u64,
}

const SRCS: [&str; 8] = [
    "qiita_article",
    "zenn_review",
    "newsletter",
    "x_post",
    "footer",
    "sidebar",
    "top_banner",
    "youtube",
];
const COUNTRIES: [&str; 10] = ["JP", "US", "GB", "DE", "FR", "IN", "NP", "BR", "CA", "AU"];
const DEFAULT_UAS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Safari/605.1.15",
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
];
const BOT_UAS: [&str; 4] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "curl/8.5.0",
];

/// Generates the history described by `spec` into `store`.
///
/// # Errors
/// Store errors.
pub async fn generate(
    store: &dyn Store,
    ua: &UaParser,
    spec: &GenSpec,
) -> anyhow::Result<GenSummary> {
    let usd = Currency::parse("USD")?;
    let program = Slug::parse("gen")?;
    let mut settings = ProgramSettings::new(usd);
    settings.attribution_window_s = i64::from(spec.days.max(1)) * 86_400 + 86_400;
    settings.commission = CommissionPlan {
        default: Some(Rate::Share {
            bps: BasisPoints::new(1000)?,
        }),
        events: Default::default(),
    };
    let affiliates: Vec<Slug> = (0..spec.affiliates.max(1))
        .map(|i| Slug::parse(&format!("gen-a{i}")))
        .collect::<Result<_, _>>()?;
    let links: Vec<LinkInput> = (0..spec.links.max(1))
        .map(|i| {
            Ok(LinkInput {
                code: LinkCode::parse(&format!("gen-l{i}"))?,
                program: program.clone(),
                affiliate: Some(affiliates[i as usize % affiliates.len()].clone()),
                destination: format!("https://shop.example/p{i}?cid={{click_id}}"),
                redirect: None,
                utm: UtmDefaults::new(),
                status: Status::Active,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    store
        .apply_catalog(CatalogInput {
            programs: vec![ProgramInput {
                slug: program.clone(),
                name: "Generated".into(),
                status: Status::Active,
                settings: Some(settings),
            }],
            affiliates: affiliates
                .iter()
                .map(|a| AffiliateInput {
                    slug: a.clone(),
                    name: a.to_string(),
                    status: Status::Active,
                })
                .collect(),
            links,
            commissions: vec![],
        })
        .await?;
    let records = store.list_links().await?;
    let gen_links: Vec<_> = records
        .into_iter()
        .filter(|r| r.link.program == program)
        .collect();
    anyhow::ensure!(!gen_links.is_empty(), "no generated links");
    let program_id = gen_links[0].program_id;

    let uas: Vec<String> = if spec.user_agents.is_empty() {
        DEFAULT_UAS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        spec.user_agents.clone()
    };
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let span = i64::from(spec.days.max(1)) * MICROS_PER_DAY;
    let start = spec.end - span;
    // Timestamps in order, as live traffic arrives: sorted random offsets,
    // drawn per batch so memory stays bounded.
    let mut summary = GenSummary::default();
    let batch_size = 20_000u64;
    let batches = spec.clicks.div_ceil(batch_size);
    let mut order_no = 0u64;
    for b in 0..batches {
        let n = batch_size.min(spec.clicks - b * batch_size);
        let lo = start + span * i64::try_from(b).unwrap_or(0) / i64::try_from(batches).unwrap_or(1);
        let hi =
            start + span * i64::try_from(b + 1).unwrap_or(1) / i64::try_from(batches).unwrap_or(1);
        let mut times: Vec<Micros> = (0..n)
            .map(|_| rng.random_range(lo..hi.max(lo + 1)))
            .collect();
        times.sort_unstable();
        let mut clicks: Vec<NewClick> = Vec::with_capacity(usize::try_from(n).unwrap_or(0) + 64);
        let mut made = 0u64;
        let mut i = 0usize;
        while made < n && i < times.len() {
            let ts = times[i];
            i += 1;
            let link = &gen_links[rng.random_range(0..gen_links.len())];
            let is_bot = rng.random_range(0..100) < spec.bot_pct;
            let ua_text = if is_bot {
                BOT_UAS[rng.random_range(0..BOT_UAS.len())]
            } else {
                uas[rng.random_range(0..uas.len())].as_str()
            };
            let info = ua.parse(ua_text.as_bytes());
            let visitor = rng.random_range(0..spec.visitors.max(1));
            let mut vk = [0u8; 16];
            vk[..8].copy_from_slice(&visitor.to_be_bytes());
            vk[8..].copy_from_slice(&spec.seed.to_be_bytes());
            let src = SRCS[rng.random_range(0..SRCS.len())];
            let sub1 = format!("p{}", rng.random_range(0..20));
            let click = NewClick {
                click_id: ClickId::from_parts(
                    u64::try_from(ts / 1000).unwrap_or(0),
                    rng.random::<u128>(),
                ),
                ts,
                link_id: link.link.id,
                program_id: link.program_id,
                affiliate_id: link.affiliate_id,
                params: TrackingParams {
                    src: Some(src.to_owned()),
                    subs: [Some(sub1), None, None, None, None],
                },
                referrer: Some(format!("https://{src}.example/post")),
                device: info.device,
                os: info.os.as_deref().map(str::to_owned),
                browser: info.browser.as_deref().map(str::to_owned),
                bot: bot::classify(RequestShape::default(), info.bot),
                country: Some(COUNTRIES[rng.random_range(0..COUNTRIES.len())].to_owned()),
                region: None,
                city: None,
                visitor_key: VisitorKey(vk),
                previous_keys: vec![],
                verdict: None,
                consent: Default::default(),
            };
            let tap = !is_bot && rng.random_range(0..100) < spec.double_tap_pct && made + 1 < n;
            if tap {
                let mut again = click.clone();
                again.ts = ts + 2 * MICROS_PER_SEC;
                again.click_id = ClickId::from_parts(
                    u64::try_from(again.ts / 1000).unwrap_or(0),
                    rng.random::<u128>(),
                );
                clicks.push(click);
                clicks.push(again);
                made += 2;
            } else {
                clicks.push(click);
                made += 1;
            }
        }
        clicks.sort_by_key(|c| c.ts);
        let batch = Arc::new(clicks);
        let written = store.write_clicks(batch.clone(), spec.dedup_window).await?;
        summary.clicks += written.iter().filter(|w| w.inserted).count() as u64;
        // Conversions for a share of the unique human clicks.
        for (c, w) in batch.iter().zip(&written) {
            if !w.unique || rng.random_range(0..10_000) >= spec.conversion_per_10k {
                continue;
            }
            order_no += 1;
            let amount = rng.random_range(500..20_000i64);
            let occurred = (c.ts + rng.random_range(60..86_400) * MICROS_PER_SEC).min(spec.end);
            let mut fp = [0u8; 32];
            fp[..8].copy_from_slice(&order_no.to_be_bytes());
            store
                .record_conversion(NewConversion {
                    conversion_id: ConversionId(ulid::Ulid::from_parts(
                        u64::try_from(occurred / 1000).unwrap_or(0),
                        rng.random::<u128>(),
                    )),
                    program_id,
                    event: "sale".into(),
                    order_id: format!("gen-{}-{order_no}", spec.seed),
                    click: Some((
                        ClickFacts {
                            click_id: c.click_id,
                            ts: c.ts,
                            link_id: c.link_id,
                            program_id: c.program_id,
                            affiliate_id: c.affiliate_id,
                            affiliate_active: true,
                            src: c.params.src.clone(),
                            subs: c.params.subs.clone(),
                            country: c.country.clone(),
                            verdict: None,
                        },
                        occurred - c.ts,
                        "click_id",
                    )),
                    amount: Some(amount),
                    currency: usd,
                    commission: BasisPoints::new(1000)?.apply(amount),
                    status: ConversionStatus::Pending,
                    occurred_at: occurred,
                    received_at: occurred,
                    adv_subs: Default::default(),
                    fingerprint: fp,
                    actor: "gen".into(),
                    held: false,
                    verdict: None,
                    ip_hash: None,
                    buyer_country: None,
                    caps: Vec::new(),
                })
                .await
                .context("writing a generated conversion")?;
            summary.conversions += 1;
        }
    }
    store.rollup(start, spec.end + 1).await?;
    Ok(summary)
}

/// `clickward gen` arguments.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Clicks to write.
    #[arg(long, default_value_t = 100_000)]
    pub clicks: u64,
    /// Days of history ending now.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Links.
    #[arg(long, default_value_t = 20)]
    pub links: u32,
    /// Affiliates.
    #[arg(long, default_value_t = 5)]
    pub affiliates: u32,
    /// Percent of clicks from bots.
    #[arg(long, default_value_t = 10)]
    pub bot_pct: u32,
    /// Percent of human clicks followed by a double tap.
    #[arg(long, default_value_t = 5)]
    pub double_tap_pct: u32,
    /// Conversions per 10 000 human unique clicks.
    #[arg(long, default_value_t = 200)]
    pub conversions_per_10k: u32,
    /// Distinct visitors.
    #[arg(long, default_value_t = 50_000)]
    pub visitors: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A JSON list of browser user agents (e.g. ../shared/data/user-agents/top-desktop.json).
    #[arg(long)]
    pub user_agents: Option<PathBuf>,
    /// Write into a data directory that holds real clicks (clicks on links
    /// `gen` did not make) anyway, mixing synthetic history into them.
    #[arg(long)]
    pub force: bool,
}

/// The first link `gen` did not make that has clicks, if any: synthetic
/// clicks must not be mixed into a real history by accident.
async fn real_clicks_on(store: &dyn Store) -> anyhow::Result<Option<String>> {
    for l in store.list_links().await? {
        let code = l.link.code.as_str();
        if !code.starts_with("gen-")
            && !store
                .list_clicks(Some(l.link.code.clone()), 1)
                .await?
                .is_empty()
        {
            return Ok(Some(code.to_owned()));
        }
    }
    Ok(None)
}

/// Runs `clickward gen`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(v: &Validated, store: &dyn Store, args: GenArgs) -> anyhow::Result<()> {
    if !args.force
        && let Some(code) = real_clicks_on(store).await?
    {
        anyhow::bail!(
            "{} holds real clicks (link {code:?}); gen writes synthetic history, so give it a data directory of its own (`clickward --data-dir ./gen-data gen …`), or add --force to mix them",
            v.config.data_dir.display()
        );
    }
    let ua = UaParser::new(20_000)?;
    let user_agents: Vec<String> = match &args.user_agents {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a JSON list of strings", p.display()))?,
        None => Vec::new(),
    };
    let spec = crate::cli::generate::GenSpec {
        clicks: args.clicks,
        days: args.days,
        links: args.links,
        affiliates: args.affiliates,
        bot_pct: args.bot_pct.min(100),
        double_tap_pct: args.double_tap_pct.min(100),
        conversion_per_10k: args.conversions_per_10k.min(10_000),
        visitors: args.visitors,
        seed: args.seed,
        end: jiff::Timestamp::now().as_microsecond(),
        user_agents,
        dedup_window: v.dedup_window,
    };
    let started = std::time::Instant::now();
    let s = crate::cli::generate::generate(store, &ua, &spec).await?;
    outln!(
        "generated {} clicks and {} conversions in {:.1} s",
        s.clicks,
        s.conversions,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
