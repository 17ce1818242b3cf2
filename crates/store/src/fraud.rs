//! The fraud concern's types and trait: rules as written, exclusion entries,
//! cap counters, and the counts the conversion rules compare.
//! Backends: `sqlite/fraud.rs`, `postgres/fraud.rs`.

use clickward_core::Micros;
use clickward_core::fraud::{RuleSpec, Verdict};
use serde::Serialize;

use crate::StoreFuture;

/// Who owns a rule: the catalogue file (re-applied on every reload) or an
/// admin (API, CLI, dashboard; the file leaves it alone).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOwner {
    /// The catalogue's `[[rules]]`.
    File,
    /// The API, the CLI or the dashboard.
    Admin,
}

impl RuleOwner {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOwner::File => "file",
            RuleOwner::Admin => "admin",
        }
    }
}

/// A stored rule.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct StoredRule {
    /// The rule as written.
    pub spec: RuleSpec,
    /// Who owns it.
    pub owner: RuleOwner,
    /// Last change, UTC µs.
    pub updated_at: Micros,
}

/// What an exclusion entry matches.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionKind {
    /// A client address (its keyed hash).
    Ip,
    /// A browser holding the exclusion cookie (the hash of its token).
    Browser,
}

impl ExclusionKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionKind::Ip => "ip",
            ExclusionKind::Browser => "browser",
        }
    }
}

/// An exclusion entry: traffic of the merchant, the publisher, or one
/// affiliate (self-referral), known only by a keyed hash.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    /// Id.
    pub id: i64,
    /// Keyed hash of the address or the browser token, 16 bytes.
    #[serde(skip)]
    pub hash: [u8; 16],
    /// What it matches.
    pub kind: ExclusionKind,
    /// What the admin called it ("office", "my phone").
    pub label: String,
    /// The affiliate whose own traffic this is; `None`: the merchant's or
    /// publisher's (excluded from counts).
    pub affiliate: Option<String>,
    /// When it was added, UTC µs.
    pub created_at: Micros,
}

/// A new exclusion entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExclusion {
    /// Keyed hash, 16 bytes.
    pub hash: [u8; 16],
    /// What it matches.
    pub kind: ExclusionKind,
    /// Label.
    pub label: String,
    /// Affiliate slug, for an affiliate's own traffic.
    pub affiliate: Option<clickward_core::id::Slug>,
    /// UTC µs.
    pub created_at: Micros,
}

/// Judged clicks or conversions of one UTC day, rule, action and affiliate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictCount {
    /// `click` or `conversion`.
    pub what: &'static str,
    /// UTC day number (days since 1970-01-01).
    pub day: i64,
    /// Rule id.
    pub rule: String,
    /// `flag`, `hold`, `reject` or `block`.
    pub action: String,
    /// Affiliate slug.
    pub affiliate: Option<String>,
    /// How many.
    pub count: i64,
}

/// One judged click or conversion, with its sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictRow {
    /// `click` or `conversion`.
    pub what: &'static str,
    /// Click id or conversion id.
    pub id: String,
    /// When, UTC µs (the click's time, or the conversion's receipt).
    pub ts: Micros,
    /// Program slug.
    pub program: String,
    /// Affiliate slug.
    pub affiliate: Option<String>,
    /// Rule id.
    pub rule: String,
    /// Action.
    pub action: String,
    /// The sentence.
    pub reason: String,
}

/// What re-scoring reads of a stored click: what the rules that can judge
/// it again look at (no address and no query string are stored, so the
/// network, exclusion and paid-search checks cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeableClick {
    /// Click id.
    pub click_id: clickward_core::id::ClickId,
    /// UTC µs.
    pub ts: Micros,
    /// Link.
    pub link_id: i64,
    /// Program.
    pub program_id: i64,
    /// Affiliate.
    pub affiliate_id: Option<i64>,
    /// Visitor key.
    pub visitor_key: [u8; 16],
    /// Country.
    pub country: Option<String>,
    /// Referrer host.
    pub referrer_host: Option<String>,
    /// A bot (never judged).
    pub bot: bool,
    /// The stored verdict.
    pub verdict: Option<Verdict>,
}

/// What re-scoring reads of a stored conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeableConversion {
    /// Id.
    pub conversion_id: clickward_core::id::ConversionId,
    /// Program.
    pub program_id: i64,
    /// Affiliate.
    pub affiliate_id: Option<i64>,
    /// Received, UTC µs.
    pub received_at: Micros,
    /// Click to conversion, µs.
    pub ctit_us: Option<Micros>,
    /// Status.
    pub status: clickward_core::conversion::ConversionStatus,
    /// Held.
    pub held: bool,
    /// Buyer address hash.
    pub ip_hash: Option<[u8; 16]>,
    /// Buyer country.
    pub buyer_country: Option<String>,
    /// The click's country.
    pub click_country: Option<String>,
    /// The click's verdict.
    pub click_verdict: Option<Verdict>,
    /// The stored verdict.
    pub verdict: Option<Verdict>,
}

/// A visitor of [`FraudStore::scan_clicks`]: `false` stops the scan.
pub type JudgeSink = Box<dyn FnMut(&JudgeableClick) -> bool + Send>;

/// Fraud rules, exclusions and the counts conversion rules compare. Every
/// change of rules or exclusions bumps the catalogue version, so the link
/// cache (which carries each link's rules) reloads on every node.
pub trait FraudStore: Send + Sync + 'static {
    /// Every stored rule, by id.
    fn rules(&self) -> StoreFuture<'_, Vec<StoredRule>>;

    /// Creates or replaces a rule as `owner` (an admin's save takes a
    /// file-owned rule from the file).
    fn save_rule(&self, spec: RuleSpec, owner: RuleOwner, now: Micros) -> StoreFuture<'_, ()>;

    /// Deletes a rule; `false` when there was none.
    fn delete_rule(&self, id: String) -> StoreFuture<'_, bool>;

    /// The catalogue's `[[rules]]`, in one transaction: file-owned rules not
    /// in `specs` are deleted, the others created or replaced; an
    /// admin-owned rule with the same id is left as it is. Returns the ids
    /// left alone.
    fn apply_file_rules(&self, specs: Vec<RuleSpec>, now: Micros) -> StoreFuture<'_, Vec<String>>;

    /// Adds an entry; [`crate::StoreError::Conflict`] when its hash is there.
    fn add_exclusion(&self, e: NewExclusion) -> StoreFuture<'_, Exclusion>;

    /// Every entry.
    fn exclusions(&self) -> StoreFuture<'_, Vec<Exclusion>>;

    /// Removes an entry; `false` when there was none.
    fn remove_exclusion(&self, id: i64) -> StoreFuture<'_, bool>;

    /// Conversions of `affiliate_id` received since `since` (UTC µs) whose
    /// buyer address had this keyed hash (any program).
    fn same_ip_conversions(
        &self,
        affiliate_id: i64,
        ip_hash: [u8; 16],
        since: Micros,
    ) -> StoreFuture<'_, u64>;

    /// Judged clicks and conversions since `since` (UTC µs), by UTC day,
    /// rule, action and affiliate.
    fn verdict_counts(&self, since: Micros) -> StoreFuture<'_, Vec<VerdictCount>>;

    /// The newest judged clicks and conversions (each kind up to `limit`),
    /// newest first.
    fn recent_verdicts(&self, since: Micros, limit: u32) -> StoreFuture<'_, Vec<VerdictRow>>;

    /// Every click with `start <= ts < end` (of `program_id`, when given),
    /// in time order, to `sink`; returns how many were read.
    fn scan_clicks(
        &self,
        start: Micros,
        end: Micros,
        program_id: Option<i64>,
        sink: JudgeSink,
    ) -> StoreFuture<'_, u64>;

    /// Sets the verdicts of clicks (and `invalid_reason` with them), in one
    /// transaction; returns how many changed. The caller recomputes the
    /// rollups of their range.
    fn set_click_verdicts(
        &self,
        changes: Vec<(clickward_core::id::ClickId, Option<Verdict>)>,
    ) -> StoreFuture<'_, u64>;

    /// Conversions received in `[start, end)` (of `program_id`, when
    /// given), oldest first.
    fn scan_conversions(
        &self,
        start: Micros,
        end: Micros,
        program_id: Option<i64>,
    ) -> StoreFuture<'_, Vec<JudgeableConversion>>;

    /// Sets a conversion's verdict and held flag (a status change goes
    /// through `ConversionStore::set_conversion_status`).
    fn set_conversion_verdict(
        &self,
        id: clickward_core::id::ConversionId,
        verdict: Option<Verdict>,
        held: bool,
    ) -> StoreFuture<'_, ()>;

    /// How much of each cap counter is used: `(key, period, used)`, for the
    /// given periods.
    fn cap_usage(&self, periods: Vec<String>) -> StoreFuture<'_, Vec<(String, String, i64)>>;
}
