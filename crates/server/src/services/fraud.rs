//! Fraud rules at work: the rule book the link cache carries (rules compiled
//! per program, exclusion entries), the velocity counters of the redirect
//! path, the keyed hash of excluded traffic, and the conversion signals
//! intake measures. The rules themselves are `clickward_core::fraud`.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use clickward_core::Micros;
use clickward_core::fraud::{self, Action, Check, ClickRules, ConversionRules, Rule, RuleSpec};
use clickward_core::money::Currency;
use clickward_store::{Store, StoreError};

/// Why a rule cannot be saved: the rule and field, or a program it names
/// does not exist.
#[derive(Debug, thiserror::Error)]
pub enum RuleSaveError {
    /// It does not compile (for one of the programs it covers).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Name of the cookie that marks a browser as excluded traffic (its token's
/// hash is in the exclusion list; see `clickward exclude add --browser`).
pub const EXCLUDE_COOKIE: &str = "cw_ex";

/// The built-in rule that rejects excluded traffic when no rule of check
/// `excluded` is configured (the exclusion list is the configuration).
pub const BUILTIN_EXCLUDED: &str = "excluded";

/// What the rule book knows of one program.
#[derive(Debug, Clone)]
struct ProgramFacts {
    slug: String,
    tz: jiff::tz::TimeZone,
    currency: Currency,
    /// Its rules, compiled in its currency (payout caps), scoped or global.
    rules: Vec<Rule>,
}

/// An exclusion entry as the redirect and intake look it up.
#[derive(Debug, Clone)]
pub struct Excluded {
    /// What the admin called it.
    pub label: String,
    /// `Some`: this affiliate's own traffic (self-referral).
    pub affiliate_id: Option<i64>,
}

/// Rules compiled per program, and the exclusion entries by hash. Replaced
/// whole when the catalogue version changes (with the link cache).
#[derive(Debug, Default)]
pub struct RuleBook {
    programs: HashMap<i64, ProgramFacts>,
    affiliates: HashMap<i64, String>,
    exclusions: HashMap<[u8; 16], Excluded>,
}

/// Compiles `spec` in `currency` (payout caps need it).
pub fn compile_in(spec: &RuleSpec, currency: Currency) -> Result<Rule, fraud::RuleError> {
    Rule::compile(spec, &|text| {
        currency
            .parse_amount(text)
            .map_err(|e| format!("{e} (payout caps are in the program's currency, {currency})"))
    })
}

impl RuleBook {
    /// Loads every rule, program and exclusion entry. A stored rule that no
    /// longer compiles for a program (saved by an older binary) is logged
    /// and skipped there; the others still apply.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let specs: Vec<RuleSpec> = store.rules().await?.into_iter().map(|r| r.spec).collect();
        let has_excluded_rule = specs.iter().any(|s| s.check.trim() == "excluded");
        let mut programs = HashMap::new();
        for p in store.list_programs().await? {
            let settings = store.program_settings(p.id).await?;
            let tz = jiff::tz::TimeZone::get(&settings.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
            let mut rules = Vec::new();
            for spec in &specs {
                if spec
                    .program
                    .as_deref()
                    .is_some_and(|s| s != p.slug.as_str())
                {
                    continue;
                }
                match compile_in(spec, settings.currency) {
                    Ok(r) => rules.push(r),
                    Err(e) => tracing::warn!(program = %p.slug, "rule skipped: {e}"),
                }
            }
            if !has_excluded_rule {
                rules.push(Rule {
                    id: BUILTIN_EXCLUDED.into(),
                    program: None,
                    affiliate: None,
                    action: Action::Reject,
                    check: Check::Excluded,
                });
            }
            programs.insert(
                p.id,
                ProgramFacts {
                    slug: p.slug.as_str().to_owned(),
                    tz,
                    currency: settings.currency,
                    rules,
                },
            );
        }
        let affiliates = store
            .list_affiliates()
            .await?
            .into_iter()
            .map(|a| (a.id, a.slug.as_str().to_owned()))
            .collect::<HashMap<_, _>>();
        let by_slug: HashMap<&str, i64> =
            affiliates.iter().map(|(id, s)| (s.as_str(), *id)).collect();
        let exclusions = store
            .exclusions()
            .await?
            .into_iter()
            .map(|e| {
                let affiliate_id = e.affiliate.as_deref().and_then(|s| by_slug.get(s).copied());
                (
                    e.hash,
                    Excluded {
                        label: e.label,
                        affiliate_id,
                    },
                )
            })
            .collect();
        Ok(Self {
            programs,
            affiliates,
            exclusions,
        })
    }

    /// The click rules of a link of `program_id` (and `affiliate_id`).
    pub fn click_rules(&self, program_id: i64, affiliate_id: Option<i64>) -> ClickRules {
        match self.programs.get(&program_id) {
            Some(p) => {
                let aff = affiliate_id.and_then(|a| self.affiliates.get(&a));
                let mut eff = fraud::effective(&p.rules, &p.slug, aff.map(String::as_str));
                // Excluded traffic can only be judged when there is some.
                if self.exclusions.is_empty() {
                    eff.retain(|r| !matches!(r.check, Check::Excluded));
                }
                ClickRules::new(&eff)
            }
            None => ClickRules::default(),
        }
    }

    /// The click caps of a link of `program_id` (and `affiliate_id`), with
    /// their rule ids.
    pub fn click_caps(
        &self,
        program_id: i64,
        affiliate_id: Option<i64>,
    ) -> Vec<(Arc<str>, fraud::Cap)> {
        let Some(p) = self.programs.get(&program_id) else {
            return Vec::new();
        };
        let aff = affiliate_id.and_then(|a| self.affiliates.get(&a));
        fraud::effective(&p.rules, &p.slug, aff.map(String::as_str))
            .into_iter()
            .filter_map(|r| match &r.check {
                Check::Cap(c) if c.metric == fraud::CapMetric::Clicks => {
                    Some((r.id.clone(), c.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// A program's slug, time zone and currency.
    pub fn program_zone(&self, program_id: i64) -> Option<(&str, &jiff::tz::TimeZone, Currency)> {
        self.programs
            .get(&program_id)
            .map(|p| (p.slug.as_str(), &p.tz, p.currency))
    }

    /// The conversion rules and caps of `program_id` × `affiliate_id`, with
    /// the program's time zone and currency.
    pub fn conversion_rules(
        &self,
        program_id: i64,
        affiliate_id: Option<i64>,
    ) -> Option<(ConversionRules, &jiff::tz::TimeZone, Currency)> {
        let p = self.programs.get(&program_id)?;
        let aff = affiliate_id.and_then(|a| self.affiliates.get(&a));
        let eff = fraud::effective(&p.rules, &p.slug, aff.map(String::as_str));
        Some((ConversionRules::new(&eff), &p.tz, p.currency))
    }

    /// The click rules of a link that re-scoring can judge from stored
    /// clicks (see `services::rescore`).
    pub fn rescorable_click_rules(&self, program_id: i64, affiliate_id: Option<i64>) -> ClickRules {
        match self.programs.get(&program_id) {
            Some(p) => {
                let aff = affiliate_id.and_then(|a| self.affiliates.get(&a));
                let mut eff = fraud::effective(&p.rules, &p.slug, aff.map(String::as_str));
                eff.retain(|r| crate::services::rescore::rescorable_click_check(&r.check));
                ClickRules::new(&eff)
            }
            None => ClickRules::default(),
        }
    }

    /// The check of rule `id` as compiled for `program_id`.
    pub fn check_of(&self, program_id: i64, id: &str) -> Option<&Check> {
        self.programs
            .get(&program_id)?
            .rules
            .iter()
            .find(|r| &*r.id == id)
            .map(|r| &r.check)
    }

    /// The longest velocity window of any rule (µs; 0 without one).
    pub fn longest_velocity_window(&self) -> Micros {
        self.programs
            .values()
            .flat_map(|p| &p.rules)
            .filter_map(|r| match r.check {
                Check::VisitorVelocity { window, .. } | Check::LinkVelocity { window, .. } => {
                    Some(window)
                }
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// An affiliate's slug by id.
    pub fn affiliate_slug(&self, id: Option<i64>) -> Option<String> {
        id.and_then(|a| self.affiliates.get(&a)).cloned()
    }

    /// `true` when there are exclusion entries (the redirect then hashes
    /// the address).
    pub fn has_exclusions(&self) -> bool {
        !self.exclusions.is_empty()
    }

    /// The entry with this hash.
    pub fn excluded(&self, hash: &[u8; 16]) -> Option<&Excluded> {
        self.exclusions.get(hash)
    }
}

/// Checks a rule against every program it covers, as the store would
/// compile it for each (a payout cap in each program's currency).
///
/// # Errors
/// [`RuleSaveError::Invalid`] naming the rule and the field, or a program or
/// affiliate that does not exist.
pub async fn check_rule(store: &dyn Store, spec: &RuleSpec) -> Result<Rule, RuleSaveError> {
    let invalid = |e: fraud::RuleError| RuleSaveError::Invalid(e.to_string());
    let programs = store.list_programs().await?;
    let mut currencies = Vec::new();
    match spec.program.as_deref().map(str::trim) {
        Some(slug) => {
            let Some(p) = programs.iter().find(|p| p.slug.as_str() == slug) else {
                return Err(RuleSaveError::Invalid(format!(
                    "rule {:?}: program: no program {slug:?}",
                    spec.id
                )));
            };
            currencies.push(store.program_settings(p.id).await?.currency);
        }
        None => {
            for p in &programs {
                currencies.push(store.program_settings(p.id).await?.currency);
            }
        }
    }
    let mut compiled = Rule::compile(spec, &|_| {
        Err("a payout cap needs a program (its currency): give program".to_owned())
    });
    for c in currencies {
        compiled = compile_in(spec, c);
        if compiled.is_err() {
            break;
        }
    }
    let compiled = compiled.map_err(invalid)?;
    if let Some(slug) = spec.affiliate.as_deref()
        && !store
            .list_affiliates()
            .await?
            .iter()
            .any(|a| a.slug.as_str() == slug.trim())
    {
        return Err(RuleSaveError::Invalid(format!(
            "rule {:?}: affiliate: no affiliate {slug:?}",
            spec.id
        )));
    }
    Ok(compiled)
}

/// The keyed hash that names an address in the exclusion list and in a
/// conversion's `ip_hash`: BLAKE3 keyed with a key derived from the cookie
/// key (shared by every node), over the canonical address. Stable across
/// days (unlike visitor keys); whoever holds the secrets and the database
/// could test a guessed address against it, as with the import key.
pub fn address_hash(key: &[u8; 32], ip: IpAddr) -> [u8; 16] {
    let ip = clickward_enrich::ip::canonical(ip);
    let mut h = blake3::Hasher::new_keyed(key);
    match ip {
        IpAddr::V4(v4) => h.update(&v4.octets()),
        IpAddr::V6(v6) => h.update(&v6.octets()),
    };
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The hash of a browser's exclusion token (the `cw_ex` cookie).
pub fn token_hash(key: &[u8; 32], token: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"browser:");
    h.update(token.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The exclusion key from the cookie key's master bytes.
pub fn exclusion_key(master: &[u8]) -> [u8; 32] {
    blake3::derive_key("clickward 2026 exclusion list v1", master)
}

/// What the redirect path and intake use of the fraud machinery.
pub struct FraudParts {
    /// This node's velocity counters.
    pub velocity: Velocity,
    /// This node's click-cap counters.
    pub click_caps: ClickCapCounters,
    /// ASN and anonymous-IP files (`network` in the configuration).
    pub network: Option<clickward_enrich::network::NetworkDb>,
    /// Key of [`address_hash`] and [`token_hash`].
    pub exclusion_key: [u8; 32],
}

/// What intake knows of the buyer of a conversion: the keyed hash of their
/// address and its country (never the address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buyer {
    /// [`address_hash`] of the buyer's address.
    pub ip_hash: Option<[u8; 16]>,
    /// Its country, from GeoIP.
    pub country: Option<String>,
}

/// Click-cap counters of one node: human clicks of each cap key in its
/// current period, seeded from the store the first time a key-period is
/// seen, then counted here. Several nodes count apart (docs/fraud.md): a
/// cap over N nodes may let through up to N − 1 clicks per node beyond it.
#[derive(Default)]
pub struct ClickCapCounters {
    used: Mutex<HashMap<String, (String, i64)>>,
}

impl ClickCapCounters {
    /// The count of `key` in `period`, when known here.
    pub fn known(&self, key: &str, period: &str) -> Option<i64> {
        let m = self.used.lock().ok()?;
        m.get(key).filter(|(p, _)| p == period).map(|(_, n)| *n)
    }

    /// Starts `key` in `period` at `n` (a newer period replaces the old),
    /// unless another click seeded it first.
    pub fn seed(&self, key: &str, period: &str, n: i64) {
        if let Ok(mut m) = self.used.lock() {
            match m.get(key) {
                Some((p, _)) if p == period => {}
                _ => {
                    m.insert(key.to_owned(), (period.to_owned(), n));
                }
            }
        }
    }

    /// Takes one click from `key` in `period`: the count after it, or
    /// `None` (nothing taken) when `hard` and the cap `limit` is full.
    pub fn take(&self, key: &str, period: &str, limit: i64, hard: bool) -> Option<i64> {
        let mut m = self.used.lock().ok()?;
        let slot = m
            .entry(key.to_owned())
            .or_insert_with(|| (period.to_owned(), 0));
        if slot.0 != period {
            *slot = (period.to_owned(), 0);
        }
        if hard && slot.1 + 1 > limit {
            return None;
        }
        slot.1 += 1;
        Some(slot.1)
    }
}

const SHARDS: usize = 16;
/// Sweep a shard of expired windows every this many hits on it.
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
struct Shard {
    windows: HashMap<u64, (Micros, VecDeque<Micros>)>,
    hits: u32,
}

/// Sliding-window click counters of one node, in memory (several nodes
/// count apart; documented in docs/fraud.md). Each key keeps the times of
/// its clicks inside its window, at most `4 × limit + 4` of them, so memory
/// is bounded by the keys active within their windows.
pub struct Velocity {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Velocity {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

/// The counter key of a visitor on a link.
pub fn visitor_key(link_id: i64, visitor: &[u8; 16]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (0u8, link_id, visitor).hash(&mut h);
    h.finish()
}

/// The counter key of a link.
pub fn link_key(link_id: i64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (1u8, link_id).hash(&mut h);
    h.finish()
}

impl Velocity {
    /// Counts a click at `now` under `key`, and returns how many the window
    /// `[now - window, now]` holds, this one included (at most the kept
    /// `cap`).
    pub fn hit(&self, key: u64, now: Micros, window: Micros, limit: u32) -> u32 {
        let cap = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            .saturating_add(4);
        let shard = &self.shards[usize::try_from(key % SHARDS as u64).unwrap_or(0)];
        let Ok(mut s) = shard.lock() else {
            return 1;
        };
        s.hits = s.hits.wrapping_add(1);
        if s.hits % SWEEP_EVERY == 0 {
            s.windows
                .retain(|_, (w, times)| times.back().is_some_and(|t| *t > now - *w));
        }
        let (w, times) = s
            .windows
            .entry(key)
            .or_insert_with(|| (window, VecDeque::new()));
        *w = window;
        while times.front().is_some_and(|t| *t <= now - window) {
            times.pop_front();
        }
        times.push_back(now);
        while times.len() > cap {
            times.pop_front();
        }
        u32::try_from(times.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_counts_inside_the_window_only() {
        let v = Velocity::default();
        let k = visitor_key(1, &[7; 16]);
        let s = 1_000_000;
        for i in 0..5 {
            assert_eq!(
                v.hit(k, i * s, 60 * s, 5),
                u32::try_from(i + 1).unwrap_or(0)
            );
        }
        // 60 s after the first click, it has left the window.
        assert_eq!(v.hit(k, 60 * s, 60 * s, 5), 5);
        assert_eq!(v.hit(link_key(1), 0, 60 * s, 5), 1);
    }

    #[test]
    fn address_hashes_are_stable_and_keyed() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let ip: IpAddr = "203.0.113.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mapped: IpAddr = "::ffff:203.0.113.7"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(address_hash(&k1, ip), address_hash(&k1, mapped));
        assert_ne!(address_hash(&k1, ip), address_hash(&k2, ip));
    }
}

/// Rules and exclusion entries as the API, the CLI and the dashboard change
/// them; every change reloads the link cache (other nodes follow the
/// catalogue version). Cheap to clone.
#[derive(Clone)]
pub struct FraudService {
    store: std::sync::Arc<dyn Store>,
    links: std::sync::Arc<crate::services::links::LinkCache>,
    key: [u8; 32],
}

/// An exclusion to add: an address, or a new browser token.
pub enum ExcludeWhat {
    /// A client address (as typed, or the requester's own).
    Ip(IpAddr),
    /// A browser: a new random token, whose cookie `cw_ex` the browser gets
    /// at `/exclude?t=…`.
    Browser,
}

impl FraudService {
    /// A service over `store` that refreshes `links`, hashing with `key`
    /// ([`exclusion_key`]).
    pub fn new(
        store: std::sync::Arc<dyn Store>,
        links: std::sync::Arc<crate::services::links::LinkCache>,
        key: [u8; 32],
    ) -> Self {
        Self { store, links, key }
    }

    /// Every rule, by id.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn rules(&self) -> Result<Vec<clickward_store::StoredRule>, StoreError> {
        self.store.rules().await
    }

    /// Creates or replaces a rule (admin-owned from then on).
    ///
    /// # Errors
    /// [`RuleSaveError::Invalid`] naming the rule and the field; nothing is
    /// written then.
    pub async fn save_rule(&self, spec: RuleSpec, now: Micros) -> Result<(), RuleSaveError> {
        check_rule(self.store.as_ref(), &spec).await?;
        let mut spec = spec;
        spec.id = spec.id.trim().to_owned();
        self.store
            .save_rule(spec, clickward_store::RuleOwner::Admin, now)
            .await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(())
    }

    /// Deletes a rule; `false` when there was none.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn delete_rule(&self, id: &str) -> Result<bool, StoreError> {
        let gone = self.store.delete_rule(id.to_owned()).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(gone)
    }

    /// Every exclusion entry (never an address: none is stored).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn exclusions(&self) -> Result<Vec<clickward_store::Exclusion>, StoreError> {
        self.store.exclusions().await
    }

    /// Adds an entry labelled `label` (the affiliate's own traffic when
    /// `affiliate` is given); for a browser, also the token its cookie holds.
    ///
    /// # Errors
    /// `Conflict` when the address is already listed, `NotFound` for an
    /// unknown affiliate.
    pub async fn exclude(
        &self,
        what: ExcludeWhat,
        label: String,
        affiliate: Option<clickward_core::id::Slug>,
        now: Micros,
    ) -> Result<(clickward_store::Exclusion, Option<String>), StoreError> {
        let (hash, kind, token) = match what {
            ExcludeWhat::Ip(ip) => (
                address_hash(&self.key, ip),
                clickward_store::ExclusionKind::Ip,
                None,
            ),
            ExcludeWhat::Browser => {
                let token = crate::services::keys::new_token();
                (
                    token_hash(&self.key, &token),
                    clickward_store::ExclusionKind::Browser,
                    Some(token),
                )
            }
        };
        let label = clickward_core::clean_text(label.trim(), 100);
        let e = self
            .store
            .add_exclusion(clickward_store::NewExclusion {
                hash,
                kind,
                label: if label.is_empty() {
                    "excluded".to_owned()
                } else {
                    label
                },
                affiliate,
                created_at: now,
            })
            .await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok((e, token))
    }

    /// Removes an entry; `false` when there was none.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn remove_exclusion(&self, id: i64) -> Result<bool, StoreError> {
        let gone = self.store.remove_exclusion(id).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(gone)
    }
}

/// Takes one human click from each click cap of a link of `program_id` ×
/// `affiliate_id` at `now`: `None` while within every cap; a full hard cap
/// gives a `block` verdict (the program's fallback) and takes nothing; a
/// soft cap past its limit a `flag`. A key-period seen for the first time
/// on this node is seeded with the human clicks the store holds for it.
///
/// # Errors
/// When the store cannot be read for a seed (the caller lets the click
/// through: a cap never refuses a click on a store error).
pub async fn take_click_caps(
    store: &dyn Store,
    book: &RuleBook,
    counters: &ClickCapCounters,
    caps: &[(Arc<str>, fraud::Cap)],
    program_id: i64,
    affiliate_id: Option<i64>,
    now: Micros,
) -> Result<Option<fraud::Verdict>, StoreError> {
    let Some((program, tz, currency)) = book.program_zone(program_id) else {
        return Ok(None);
    };
    let claims = fraud::cap_claims(
        caps.iter().map(|(id, c)| (&**id, c)),
        fraud::CapMetric::Clicks,
        &fraud::CapSubject {
            program_id,
            affiliate_id,
            ts: now,
            tz,
            commission: 0,
            currency,
        },
    );
    let mut out = None;
    for claim in &claims {
        if counters.known(&claim.key, &claim.period).is_none() {
            let n = clicks_in_period(store, book, claim, program, affiliate_id, tz, now).await?;
            counters.seed(&claim.key, &claim.period, n);
        }
        match counters.take(&claim.key, &claim.period, claim.limit, claim.hard) {
            None => {
                return Ok(Some(claim.refused(Action::Block)));
            }
            Some(after) if !claim.hard && after > claim.limit && out.is_none() => {
                out = Some(claim.over_soft(after));
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Human clicks the store holds for a cap claim's key in its period, up to
/// `now` (the report: rollups where settled, raw rows after).
async fn clicks_in_period(
    store: &dyn Store,
    book: &RuleBook,
    claim: &fraud::CapClaim,
    program: &str,
    affiliate_id: Option<i64>,
    tz: &jiff::tz::TimeZone,
    now: Micros,
) -> Result<i64, StoreError> {
    use clickward_core::report::Dimension;
    let first: jiff::civil::Date = match claim.period.len() {
        7 => format!("{}-01", claim.period).parse(),
        _ => claim.period.parse(),
    }
    .map_err(|e| StoreError::Task(format!("cap period {:?}: {e}", claim.period)))?;
    let (start, _) = clickward_core::report::date_range(first, first, tz)
        .map_err(|e| StoreError::Task(e.to_string()))?;
    let mut filters = Vec::new();
    if claim.key.contains("program=") {
        filters.push((Dimension::Program, program.to_owned()));
    }
    if claim.key.contains("affiliate=") {
        match book.affiliate_slug(affiliate_id) {
            Some(a) => filters.push((Dimension::Affiliate, a)),
            None => return Ok(0),
        }
    }
    let rows = store
        .click_report(clickward_store::ReportQuery {
            start,
            end: now - now.rem_euclid(1000) + 1000,
            buckets: None,
            dims: Vec::new(),
            filters,
            raw_only: false,
            by_click_time: false,
        })
        .await?;
    Ok(rows.iter().map(|r| r.counts.clicks()).sum())
}
