//! clickward-store: the only place SQL lives.
//!
//! [`Store`] is what the server needs from a database: the sum of one trait
//! per concern ([`CatalogStore`], [`ClickStore`], [`ReportStore`],
//! [`ConversionStore`], [`AccountStore`], [`ClusterStore`], [`OutboxStore`],
//! [`DeliveryStore`], [`FraudStore`]). Both backends
//! lay their code out the same way, one file per concern under `sqlite/` and
//! `postgres/` (`catalog`, `clicks`, `rollups`, `conversions`, `accounts`,
//! `cluster`, `outbox`, `delivery`, `fraud`), with SQL text and row mapping they share in `common`.
//! [`SqliteStore`] is the embedded default (one writer connection for
//! batched, group-committed writes, plus a small pool of readers);
//! [`PgStore`] is the shared store of several nodes. Every method is async
//! and object-safe (boxed futures), and takes and returns plain core types.
//!
//! # Errors
//! Every method returns [`StoreError`]: `NotFound` and `Conflict` are the
//! caller's to turn into 404 / 409; the rest are server errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use clickward_core::Micros;
use clickward_core::click::NewClick;
use clickward_core::commission::CommissionPlan;
use clickward_core::conversion::{ConversionStatus, LedgerBucket};
use clickward_core::delivery::EndpointKind;
use clickward_core::fraud::{CapClaim, Verdict};
use clickward_core::id::{ClickId, ConversionId, LinkCode, Slug};
use clickward_core::link::{Affiliate, Link, Program, RedirectStatus, Status, UtmDefaults};
use clickward_core::money::Currency;
use clickward_core::program::ProgramSettings;
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use serde::Serialize;

mod common;
mod fraud;
mod integration;
mod page;
mod plan;
mod postgres;
mod privacy;
mod spool;
mod sqlite;

pub use fraud::{
    Exclusion, ExclusionKind, FraudStore, JudgeSink, JudgeableClick, JudgeableConversion,
    NewExclusion, RuleOwner, StoredRule, VerdictCount, VerdictRow,
};
pub use integration::{Customer, EventKey, IntegrationStore};
pub use page::ClickQuery;
pub use postgres::{CATALOG_CHANNEL, EVENTS_CHANNEL, PRIVACY_CHANNEL, PgOptions, PgStore};
pub use privacy::Pace;
pub use privacy::{
    Erased, ErasureCounts, PrivacyStore, Receipt, RequestStatus, Subject, SubjectData,
};
pub use spool::{HeldErasure, Spool, SpoolStats};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// A notification from another node (PostgreSQL NOTIFY): a catalogue change
/// or live events. See [`ClusterStore::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// [`CATALOG_CHANNEL`] or [`EVENTS_CHANNEL`].
    pub channel: String,
    /// What the sender put in it (the catalogue version, or event JSON).
    pub payload: String,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A named thing does not exist (e.g. `program "x"`).
    #[error("{0} not found")]
    NotFound(String),
    /// A create collided with an existing thing (e.g. `link "x"`).
    #[error("{0} already exists")]
    Conflict(String),
    /// The change is not allowed in the current state: a conversion's
    /// lifecycle forbids it, or a payout has nothing eligible to pay. The
    /// text is a whole sentence for people.
    #[error("{0}")]
    Refused(String),
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The database cannot be reached (no connection from the pool, or the
    /// connection closed): nothing was done; the same request may succeed
    /// later.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The database refused the data itself (PostgreSQL SQLSTATE class 22,
    /// such as a NUL byte in text): the same data will be refused again.
    #[error("the database cannot store this data: {0}")]
    Rejected(String),
    /// Migrations failed, or the database is newer than this binary.
    #[error("database schema: {0}")]
    Migration(String),
    /// A stored value could not be read back (a defect or a hand-edited row).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The blocking task running the query died.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Receives exported clicks one by one (see [`ClickStore::export_clicks`]).
pub type ClickSink = Box<dyn FnMut(&ClickRow) -> std::io::Result<()> + Send>;

/// A boxed future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How a save treats an existing row with the same slug or code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// Fail with [`StoreError::Conflict`] if it exists.
    Create,
    /// Fail with [`StoreError::NotFound`] if it does not exist.
    Update,
    /// Create or overwrite.
    Upsert,
}

/// A program as given by the catalogue, the CLI or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInput {
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Conversion settings to store with it; `None` keeps what is stored.
    /// A `None` postback token or secret inside keeps the stored one.
    pub settings: Option<ProgramSettings>,
}

/// An affiliate as given by the catalogue, the CLI or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffiliateInput {
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: Status,
}

/// A link as given by the catalogue, the CLI or the API. The destination must
/// already have been checked with `clickward_core::link::Destination::compile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInput {
    /// Code.
    pub code: LinkCode,
    /// Program slug (must exist).
    pub program: Slug,
    /// Affiliate slug (must exist when given).
    pub affiliate: Option<Slug>,
    /// Destination template.
    pub destination: String,
    /// Per-link redirect status; `None` uses the server default.
    pub redirect: Option<RedirectStatus>,
    /// UTM defaults.
    pub utm: UtmDefaults,
    /// Status.
    pub status: Status,
}

/// A whole catalogue, applied in one transaction (all or nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogInput {
    /// Programs, upserted first.
    pub programs: Vec<ProgramInput>,
    /// Affiliates, upserted second.
    pub affiliates: Vec<AffiliateInput>,
    /// Links, upserted third.
    pub links: Vec<LinkInput>,
    /// Per-affiliate commission plans `(program, affiliate, plan)`, last.
    pub commissions: Vec<(Slug, Slug, CommissionPlan)>,
}

/// What applying a catalogue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogApplied {
    /// Entries applied (new items, or file-owned items whose entry changed).
    pub applied: usize,
    /// Entries applied before as they are now: nothing to do.
    pub unchanged: usize,
    /// Items the file declares that were made or changed through the API,
    /// CLI or dashboard, left as they are: `program "x"`, `link "y"`.
    pub drifted: Vec<String>,
}

/// A link with what the redirect path needs to know about its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// The link.
    pub link: Link,
    /// Its program's id.
    pub program_id: i64,
    /// Its affiliate's id.
    pub affiliate_id: Option<i64>,
    /// `true` when the link, its program and its affiliate are all active.
    pub redirects: bool,
}

/// What happened to one click of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickWritten {
    /// `false` when a click with the same id was already stored (a replayed
    /// import); nothing was changed then.
    pub inserted: bool,
    /// The unique flag stored with it.
    pub unique: bool,
}

/// One stored click, as the API shows it. Has no IP: none is stored.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClickRow {
    /// ULID.
    pub click_id: ClickId,
    /// UTC µs.
    pub ts: Micros,
    /// Link code.
    pub link: String,
    /// Program slug.
    pub program: String,
    /// Affiliate slug.
    pub affiliate: Option<String>,
    /// Placement.
    pub src: Option<String>,
    /// sub1..sub5.
    pub subs: [Option<String>; 5],
    /// Normalized referrer.
    pub referrer: Option<String>,
    /// Device class.
    pub device: String,
    /// OS family.
    pub os: Option<String>,
    /// Browser family.
    pub browser: Option<String>,
    /// Bot reason; `None` for a human click.
    pub bot_reason: Option<String>,
    /// The id of the fraud rule that made it invalid; `None` unless rejected
    /// or blocked.
    pub invalid_reason: Option<String>,
    /// The fraud verdict (flag, reject, block) with its rule and sentence.
    pub verdict: Option<Verdict>,
    /// `cookie`, or `cookieless` when the visitor asked not to be tracked
    /// (Global Privacy Control) and the program is cookieless.
    pub consent: String,
    /// Country code.
    pub country: Option<String>,
    /// Region name.
    pub region: Option<String>,
    /// City name.
    pub city: Option<String>,
    /// Visitor key, hex.
    pub visitor_key: String,
    /// Unique flag.
    pub unique: bool,
}

/// A click report request: a UTC range, optional time buckets, dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Inclusive start, UTC µs (a multiple of 1000).
    pub start: Micros,
    /// Exclusive end, UTC µs (a multiple of 1000).
    pub end: Micros,
    /// Time buckets covering `[start, end)` when a time dimension is asked
    /// for; `None` otherwise.
    pub buckets: Option<Vec<Bucket>>,
    /// Group-by dimensions in output order (at most one time dimension).
    pub dims: Vec<Dimension>,
    /// Equality filters: only clicks (and conversions) whose dimension has
    /// this value. Time dimensions are not filters (use the range).
    pub filters: Vec<(Dimension, String)>,
    /// Read raw clicks only, ignoring rollups (for checks; same numbers).
    pub raw_only: bool,
    /// Put conversions (and their money) in the time bucket of their click
    /// instead of the time they occurred.
    pub by_click_time: bool,
}

/// One report row: the value of each dimension (in query order) and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// Dimension values; `None` where the click had no value.
    pub keys: Vec<Option<String>>,
    /// Click counts.
    pub counts: ClickCounts,
    /// Conversions by the time they occurred (rejected and reversed ones
    /// left out), with money per currency.
    pub money: ConversionTotals,
}

/// Conversion totals of a report row. Money stays per currency: sums across
/// currencies would mean nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConversionTotals {
    /// Conversions (pending, approved, paid).
    pub conversions: i64,
    /// Sale amounts by currency, minor units.
    pub revenue: std::collections::BTreeMap<String, i64>,
    /// Commissions by currency, minor units.
    pub payout: std::collections::BTreeMap<String, i64>,
}

impl ConversionTotals {
    /// Adds another row's totals.
    pub fn add(&mut self, o: &ConversionTotals) {
        self.conversions += o.conversions;
        for (c, v) in &o.revenue {
            *self.revenue.entry(c.clone()).or_default() += v;
        }
        for (c, v) in &o.payout {
            *self.payout.entry(c.clone()).or_default() += v;
        }
    }
}

/// Scope of an API key.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Everything.
    Admin,
    /// Reads only.
    Read,
}

impl KeyScope {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Admin => "admin",
            KeyScope::Read => "read",
        }
    }
}

/// A stored API key (only its hash is stored).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Id.
    pub id: i64,
    /// First characters of the key, for people to recognise it.
    pub prefix: String,
    /// Scope.
    pub scope: KeyScope,
    /// Label.
    pub label: Option<String>,
}

/// The click a conversion is attributed to, as the store hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickFacts {
    /// Click id.
    pub click_id: ClickId,
    /// UTC µs.
    pub ts: Micros,
    /// Link.
    pub link_id: i64,
    /// Program.
    pub program_id: i64,
    /// Affiliate.
    pub affiliate_id: Option<i64>,
    /// `false` when the affiliate is disabled (its conversions are refused).
    pub affiliate_active: bool,
    /// Placement.
    pub src: Option<String>,
    /// sub1..sub5.
    pub subs: [Option<String>; 5],
    /// Country of the click.
    pub country: Option<String>,
    /// The click's fraud verdict.
    pub verdict: Option<Verdict>,
}

/// A conversion ready to store (validated, attributed, commission computed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConversion {
    /// New id.
    pub conversion_id: ConversionId,
    /// Program.
    pub program_id: i64,
    /// Event name.
    pub event: String,
    /// Order id (unique per program and event).
    pub order_id: String,
    /// The attributed click, with CTIT (µs) and how it was found
    /// (`click_id` or `cookie`).
    pub click: Option<(ClickFacts, Micros, &'static str)>,
    /// Sale amount, minor units.
    pub amount: Option<i64>,
    /// Currency.
    pub currency: Currency,
    /// Commission, minor units.
    pub commission: i64,
    /// `pending` or `approved`.
    pub status: ConversionStatus,
    /// When it happened, UTC µs.
    pub occurred_at: Micros,
    /// When it was received, UTC µs.
    pub received_at: Micros,
    /// Advertiser subs.
    pub adv_subs: [Option<String>; 5],
    /// Hash of what makes two reports "the same" (replay vs conflict).
    pub fingerprint: [u8; 32],
    /// Who reported it (`postback`, `api:<key prefix>`, `pixel`).
    pub actor: String,
    /// Held for review: the hold period never approves it (an admin does).
    pub held: bool,
    /// What the conversion rules decided at intake (`reject` stores the
    /// conversion rejected, `hold` holds it, `flag` marks it).
    pub verdict: Option<Verdict>,
    /// Keyed hash of the buyer's address, when the report carried one.
    pub ip_hash: Option<[u8; 16]>,
    /// The buyer's country, from the buyer's address.
    pub buyer_country: Option<String>,
    /// The caps it takes from, in the same transaction: a hard cap already
    /// full stores it rejected (`cap_reached`), a soft one flags it.
    pub caps: Vec<CapClaim>,
}

/// One stored conversion, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversionRow {
    /// Id.
    pub conversion_id: ConversionId,
    /// Program slug.
    pub program: String,
    /// Event.
    pub event: String,
    /// Order id.
    pub order_id: String,
    /// Attributed click.
    pub click_id: Option<ClickId>,
    /// Link code.
    pub link: Option<String>,
    /// Affiliate slug.
    pub affiliate: Option<String>,
    /// Placement.
    pub src: Option<String>,
    /// sub1..sub5.
    pub subs: [Option<String>; 5],
    /// Sale amount, minor units.
    pub amount_minor: Option<i64>,
    /// Commission, minor units.
    pub commission_minor: i64,
    /// Currency.
    pub currency: String,
    /// Status.
    pub status: ConversionStatus,
    /// UTC µs.
    pub occurred_at: Micros,
    /// UTC µs.
    pub received_at: Micros,
    /// Click to conversion, µs.
    pub ctit_us: Option<Micros>,
    /// `click_id` or `cookie`.
    pub attributed_by: Option<String>,
    /// Advertiser subs.
    pub adv_subs: [Option<String>; 5],
    #[serde(skip)]
    /// Replay fingerprint.
    pub fingerprint: Vec<u8>,
    /// Held for review: the hold period never approves it (an admin does).
    pub held: bool,
    /// The fraud verdict (flag, hold, reject) with its rule and sentence.
    pub verdict: Option<Verdict>,
    /// Before the first partial refund: the amount, minor units (then
    /// `amount_minor` is what is left). `None`: never partly refunded.
    pub gross_amount_minor: Option<i64>,
    /// Before the first partial refund: the commission, minor units.
    pub gross_commission_minor: Option<i64>,
}

/// A refund of (part of) a conversion's payment, as a platform reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundInput {
    /// The conversion refunded.
    pub conversion_id: ConversionId,
    /// What identifies this refund (a Stripe charge id, whose refunded
    /// total only grows; a Shopify refund id). The same key again with a
    /// refunded total not above the stored one changes nothing.
    pub key: String,
    /// Refunded so far under `key`, minor units of the payment's currency.
    pub refunded: i64,
    /// What the buyer paid, same units (the share refunded is
    /// `refunded / total`).
    pub total: i64,
    /// Who, for the ledger (`stripe`, `shopify`, `api:<key prefix>`).
    pub actor: String,
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refund {
    /// The amount and commission were cut (ledger entries `refund`), or the
    /// whole was refunded and the conversion reversed (rejected while
    /// pending).
    Changed(ConversionRow),
    /// Nothing changed: the same refund again, or a conversion already
    /// rejected or reversed.
    Unchanged(ConversionRow),
}

/// What recording a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new conversion (201).
    Created(ConversionRow),
    /// The same report again: nothing changed (200 with the original).
    Replay(ConversionRow),
    /// Same (program, event, order id), different data: nothing changed (409).
    Conflict(ConversionRow),
}

/// A ledger balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Affiliate slug (`None`: unattributed conversions).
    pub affiliate: Option<String>,
    /// Currency.
    pub currency: String,
    /// Bucket.
    pub bucket: LedgerBucket,
    /// Sum of entries, minor units.
    pub minor: i64,
}

/// One program's part of an affiliate's payable balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutLine {
    /// Program slug.
    pub program: String,
    /// Currency.
    pub currency: String,
    /// Payable balance, minor units (approved, unpaid, net of clawbacks).
    pub payable_minor: i64,
    /// The program's minimum payout, minor units.
    pub min_payout_minor: i64,
    /// `true` when the balance is positive and reaches the minimum.
    pub eligible: bool,
}

/// A payout batch.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payout {
    /// Batch id (ULID).
    pub batch_id: String,
    /// The idempotency key it was created with.
    pub key: String,
    /// Affiliate slug.
    pub affiliate: String,
    /// Currency.
    pub currency: String,
    /// Amount paid, minor units.
    pub amount_minor: i64,
    /// Conversions marked paid.
    pub conversions: i64,
    /// UTC µs.
    pub created_at: Micros,
    /// `false` when the key already had a batch (nothing changed).
    pub created: bool,
}

/// What a dashboard user may see: everything, or one affiliate's own data.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// The merchant or network: the whole dashboard.
    Admin,
    /// One affiliate: the portal, their own links and numbers only.
    Affiliate,
}

impl UserRole {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Affiliate => "affiliate",
        }
    }
}

/// A dashboard or portal user (`clickward user add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Sign-in name (unique).
    pub username: String,
    /// Role.
    pub role: UserRole,
    /// The affiliate's slug, for [`UserRole::Affiliate`].
    pub affiliate: Option<String>,
    /// Password hash (PHC string, argon2id); `None`: magic links only.
    pub password_hash: Option<String>,
    /// When the password (or role) last changed, UTC µs: sessions signed in
    /// before it are no longer valid.
    pub credentials_changed_at: Micros,
    /// Where mail for this user goes (`None`: no mail).
    pub email: Option<String>,
    /// An affiliate's user asked for a mail per new conversion.
    pub notify_conversions: bool,
}

/// A user to create or overwrite (by username).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInput {
    /// Sign-in name.
    pub username: String,
    /// Role.
    pub role: UserRole,
    /// Affiliate slug (must exist); required for [`UserRole::Affiliate`].
    pub affiliate: Option<Slug>,
    /// PHC password hash; `None` keeps no password (magic links only).
    pub password_hash: Option<String>,
    /// Now, UTC µs: stored as the user's credentials time.
    pub changed_at: Micros,
}

/// Filters of [`ConversionStore::list_conversions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionFilter {
    /// Only this status.
    pub status: Option<ConversionStatus>,
    /// Only conversions attributed to this affiliate.
    pub affiliate: Option<Slug>,
    /// The keyset: only conversions stored before this one (older ones).
    pub before: Option<ConversionId>,
    /// At most this many, newest first (in the order they were stored).
    pub limit: u32,
}

/// Programs, affiliates and links, with programs' conversion settings and
/// per-affiliate commission overrides.
pub trait CatalogStore: Send + Sync + 'static {
    /// Creates, updates or upserts a program.
    fn save_program(&self, p: ProgramInput, mode: SaveMode) -> StoreFuture<'_, Program>;

    /// All programs, by slug.
    fn list_programs(&self) -> StoreFuture<'_, Vec<Program>>;

    /// One program.
    fn get_program(&self, slug: Slug) -> StoreFuture<'_, Program>;

    /// Creates, updates or upserts an affiliate.
    fn save_affiliate(&self, a: AffiliateInput, mode: SaveMode) -> StoreFuture<'_, Affiliate>;

    /// All affiliates, by slug.
    fn list_affiliates(&self) -> StoreFuture<'_, Vec<Affiliate>>;

    /// One affiliate.
    fn get_affiliate(&self, slug: Slug) -> StoreFuture<'_, Affiliate>;

    /// Creates, updates or upserts a link.
    fn save_link(&self, l: LinkInput, mode: SaveMode) -> StoreFuture<'_, LinkRecord>;

    /// All links with their owners' state, by code.
    fn list_links(&self) -> StoreFuture<'_, Vec<LinkRecord>>;

    /// One link.
    fn get_link(&self, code: LinkCode) -> StoreFuture<'_, LinkRecord>;

    /// Applies a catalogue in one transaction (all or nothing; nothing is
    /// deleted) under the ownership rule of [`clickward_core::link::Owner`]:
    /// an entry is applied when its item is new or owned by the file and the
    /// entry changed since it was last applied; an item made or changed
    /// through the API, CLI or dashboard is left alone and reported in
    /// [`CatalogApplied::drifted`]. Per-affiliate commissions are applied
    /// every time to programs the file owns, never to admin-owned ones.
    fn apply_catalog(&self, c: CatalogInput) -> StoreFuture<'_, CatalogApplied>;

    /// A number that changes whenever the catalogue changes (any process).
    fn catalog_version(&self) -> StoreFuture<'_, i64>;

    /// A program's conversion settings.
    fn program_settings(&self, program_id: i64) -> StoreFuture<'_, ProgramSettings>;

    /// Replaces a program's conversion settings.
    fn save_program_settings(&self, slug: Slug, s: ProgramSettings) -> StoreFuture<'_, ()>;

    /// The affiliate's commission override in a program, if any.
    fn affiliate_commission(
        &self,
        program_id: i64,
        affiliate_id: i64,
    ) -> StoreFuture<'_, Option<CommissionPlan>>;

    /// Sets (or with `None` removes) an affiliate's commission override, as
    /// an admin: the program is admin-owned afterwards (its overrides belong
    /// to whoever owns the program, and the catalogue leaves them alone).
    ///
    /// # Errors
    /// `NotFound` for an unknown program or affiliate.
    fn save_affiliate_commission(
        &self,
        program: Slug,
        affiliate: Slug,
        plan: Option<CommissionPlan>,
    ) -> StoreFuture<'_, ()>;

    /// A program's per-affiliate commission overrides, by affiliate slug.
    ///
    /// # Errors
    /// `NotFound` for an unknown program.
    fn affiliate_commissions(&self, program: Slug) -> StoreFuture<'_, Vec<(Slug, CommissionPlan)>>;
}

/// Raw clicks: the batched writer (which decides unique flags), reading
/// back, export and retention.
pub trait ClickStore: Send + Sync + 'static {
    /// Writes a batch of clicks in one transaction, deciding each human
    /// click's unique flag with `dedup_window` (µs). Returns one outcome per
    /// click, in order. Committed when this returns `Ok`.
    fn write_clicks(
        &self,
        clicks: Arc<Vec<NewClick>>,
        dedup_window: Micros,
    ) -> StoreFuture<'_, Vec<ClickWritten>>;

    /// Newest clicks first, optionally of one link.
    fn list_clicks(&self, link: Option<LinkCode>, limit: u32) -> StoreFuture<'_, Vec<ClickRow>>;

    /// One page of clicks (`GET /api/v1/clicks`): see [`ClickQuery`].
    fn page_clicks(&self, q: ClickQuery) -> StoreFuture<'_, Vec<ClickRow>>;

    /// One click.
    fn get_click(&self, id: ClickId) -> StoreFuture<'_, ClickRow>;

    /// Clicks written after position `after` of insertion order, in that
    /// order, at most `limit`, as `(seq, click)`. Insertion order, not click
    /// time: a click shipped late from a node's spool comes after those
    /// written before it, so a reader following `seq` never skips one.
    /// Clicks written before this order existed (schema V15/V10) have none.
    fn clicks_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, ClickRow)>>;

    /// The highest click `seq` written (0: none).
    fn click_seq_head(&self) -> StoreFuture<'_, i64>;

    /// Whether `seq` order (of clicks and of the outbox) is commit order.
    /// `true` on SQLite (one writer). `false` on PostgreSQL: a lower `seq`
    /// can commit just after a higher one was read, so a reader stops at a
    /// fresh gap and passes it only when it has stayed open a while (a
    /// rolled-back or refused insert's number).
    fn seq_is_commit_order(&self) -> bool;

    /// Streams the raw clicks of `[start, end)` (UTC µs) oldest first into
    /// `sink`, on a reader (ingest goes on); stops at the sink's first error.
    /// Returns how many rows were passed.
    fn export_clicks(&self, start: Micros, end: Micros, sink: ClickSink) -> StoreFuture<'_, u64>;

    /// Deletes up to `limit` raw clicks older than `before` (UTC µs), never
    /// past the rollup watermark (so reports over the period still answer
    /// from rollups); returns how many. Callers loop until it returns 0.
    fn purge_clicks(&self, before: Micros, limit: u32) -> StoreFuture<'_, u64>;

    /// Deletes dedup state older than `before` (UTC µs); returns rows removed.
    fn purge_dedup(&self, before: Micros) -> StoreFuture<'_, u64>;

    /// The facts of a click that attribution needs.
    fn click_facts(&self, id: ClickId) -> StoreFuture<'_, Option<ClickFacts>>;
}

/// Reports and the rollups they read.
pub trait ReportStore: Send + Sync + 'static {
    /// Grouped click counts.
    fn click_report(&self, q: ReportQuery) -> StoreFuture<'_, Vec<ReportRow>>;

    /// Recomputes the rollups of `[start, end)` (UTC µs, widened to whole
    /// 15-minute buckets) from raw clicks and conversions. Idempotent:
    /// running it twice, or again after a crash in the middle, gives the
    /// same rows. (Conversion rollups are also kept exact as conversions are
    /// recorded and change status; this repairs a hand-edited database.)
    fn rollup(&self, start: Micros, end: Micros) -> StoreFuture<'_, ()>;

    /// Rolls up settled buckets after the watermark (at most one chunk per
    /// call) and moves the watermark; returns it.
    fn advance_rollups(&self, now: Micros) -> StoreFuture<'_, Micros>;
}

/// Who holds an Idempotency-Key (see
/// [`ConversionStore::claim_idempotency_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The caller holds it: do the work, then save the answer (or release
    /// the claim on a server error).
    Claimed,
    /// Another request holds it and is still working; its fingerprint.
    Working(Vec<u8>),
    /// Answered: `(fingerprint, HTTP status, JSON body)`.
    Done(Vec<u8>, u16, String),
}

/// Conversions, the ledger, payouts and API idempotency keys.
pub trait ConversionStore: Send + Sync + 'static {
    /// Records a conversion and its first ledger entry in one transaction;
    /// uniqueness of (program, event, order id) is the database's.
    fn record_conversion(&self, c: NewConversion) -> StoreFuture<'_, Recorded>;

    /// One conversion.
    fn get_conversion(&self, id: ConversionId) -> StoreFuture<'_, ConversionRow>;

    /// Newest first, filtered.
    fn list_conversions(&self, f: ConversionFilter) -> StoreFuture<'_, Vec<ConversionRow>>;

    /// Moves a conversion to `to`, appending its ledger entries with who and
    /// why. Errors with `Refused` when the lifecycle forbids the change.
    fn set_conversion_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> StoreFuture<'_, ConversionRow>;

    /// Applies a refund of part or all of a conversion's payment: the
    /// amount and commission are cut by the share refunded (all refunds of
    /// the conversion together, see `clickward_core::conversion::after_refunds`),
    /// the ledger gets a `refund` entry in the bucket the commission is in
    /// (pending, else payable: a clawback once paid), the rollups follow,
    /// and a `conversion.refunded` event is written; a whole refund reverses
    /// it (rejects it while pending) instead. Idempotent per `key`.
    ///
    /// # Errors
    /// `NotFound`; `Refused` for a total ≤ 0 or a negative refund.
    fn refund_conversion(&self, r: RefundInput) -> StoreFuture<'_, Refund>;

    /// Approves pending conversions whose program hold period has passed at
    /// `now` (UTC µs); returns how many.
    fn approve_due(&self, now: Micros) -> StoreFuture<'_, u64>;

    /// Sums of the ledger by affiliate, currency and bucket; of one
    /// affiliate only when given.
    fn balances(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Balance>>;

    /// An affiliate's payable balances by program and currency.
    fn payout_preview(&self, affiliate: Slug) -> StoreFuture<'_, Vec<PayoutLine>>;

    /// Pays the affiliate's eligible payable balance in `currency`: marks
    /// approved conversions paid and nets clawbacks, in one transaction.
    /// The same `key` returns the same batch and changes nothing; with nothing
    /// eligible (no balance, a negative one, or one below the minimum) it is
    /// `Refused` with the reason, and no batch is made.
    fn create_payout(
        &self,
        affiliate: Slug,
        currency: Currency,
        key: String,
        batch_id: ulid::Ulid,
        actor: String,
    ) -> StoreFuture<'_, Payout>;

    /// Payout batches, newest first, optionally of one affiliate.
    fn list_payouts(&self, affiliate: Option<Slug>, limit: u32) -> StoreFuture<'_, Vec<Payout>>;

    /// Claims an Idempotency-Key for a request with `fingerprint`, atomically:
    /// of any number of concurrent requests with one key, exactly one gets
    /// [`IdempotencyClaim::Claimed`] and does the work; the others see it
    /// working or done. A claim working for longer than `stale_after` µs
    /// (by the store's clock; its process died mid-work) is taken over.
    fn claim_idempotency_key(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        stale_after: Micros,
    ) -> StoreFuture<'_, IdempotencyClaim>;

    /// Gives up a claim without an answer (the work failed on our side, so a
    /// retry may succeed). A finished key is left as it is.
    fn release_idempotency_key(&self, key: String) -> StoreFuture<'_, ()>;

    /// Stores the answer of the request that claimed an Idempotency-Key
    /// (the first answer wins; a key claimed with another fingerprint is
    /// left alone).
    fn save_idempotent_response(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        status: u16,
        body: String,
    ) -> StoreFuture<'_, ()>;
}

/// API keys and dashboard users.
pub trait AccountStore: Send + Sync + 'static {
    /// Stores a new API key by its hash.
    fn create_api_key(
        &self,
        hash: [u8; 32],
        prefix: String,
        scope: KeyScope,
        label: Option<String>,
    ) -> StoreFuture<'_, ApiKey>;

    /// Finds an unrevoked key by its hash.
    fn find_api_key(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>>;

    /// Unrevoked keys, oldest first.
    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>>;

    /// Revokes a key; `NotFound` when no unrevoked key has this id.
    fn revoke_api_key(&self, id: i64) -> StoreFuture<'_, ()>;

    /// Creates a user or overwrites the one with the same username (a new
    /// password ends that user's existing sessions). `NotFound` for an
    /// unknown affiliate.
    fn save_user(&self, u: UserInput) -> StoreFuture<'_, User>;

    /// A user by sign-in name.
    fn find_user(&self, username: String) -> StoreFuture<'_, Option<User>>;

    /// A user by id.
    fn get_user(&self, id: i64) -> StoreFuture<'_, Option<User>>;

    /// All users, by username.
    fn list_users(&self) -> StoreFuture<'_, Vec<User>>;

    /// Sets where a user's mail goes and whether it wants a mail per new
    /// conversion; `false` when there is no such user.
    fn set_user_email(
        &self,
        username: String,
        email: Option<String>,
        notify_conversions: bool,
    ) -> StoreFuture<'_, bool>;
}

/// One event of the transactional outbox (see `clickward_core::event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEvent {
    /// Position in the outbox, in the order events were written.
    pub seq: i64,
    /// `evt_` + ULID; stable, so a receiver can drop a redelivery.
    pub id: String,
    /// The event type (`conversion.created`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened, UTC µs.
    pub ts: Micros,
    /// `{"v": 1, …}`, without IP addresses.
    pub payload: serde_json::Value,
}

/// The transactional outbox: events are written by the other concerns in
/// the transaction of the change they report; this reads them back.
pub trait OutboxStore: Send + Sync + 'static {
    /// Events with a `seq` above `after`, in `seq` order, at most `limit`.
    /// On SQLite `seq` order is commit order. On PostgreSQL several nodes
    /// write at once, so an event with a lower `seq` may commit after a
    /// higher one was read: a reader that must see every event reads again
    /// a little behind its cursor (event ids are stable for deduplication).
    fn outbox_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<OutboxEvent>>;

    /// The highest `seq` written (0: none).
    fn outbox_head(&self) -> StoreFuture<'_, i64>;
}

/// An endpoint to add: a merchant's webhook or an affiliate's postback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    /// Webhook or postback.
    pub kind: EndpointKind,
    /// A webhook's URL, or a postback's URL template (checked by
    /// `clickward_core::delivery::UrlTemplate`).
    pub url: String,
    /// `POST` (webhooks always) or `GET`.
    pub method: HttpMethod,
    /// Event filter (`*`, `conversion.*`, `payout.created`, …).
    pub events: Vec<String>,
    /// Only events about this program.
    pub program: Option<Slug>,
    /// Only events about this affiliate (a postback's owner).
    pub affiliate: Option<Slug>,
    /// Free text for people.
    pub description: String,
    /// The signing secret (`whsec_` + base64 of 24 random bytes).
    pub secret: String,
}

/// `GET` or `POST`.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// A postback with the values in its URL.
    Get,
    /// A webhook, or a postback that wants a POST.
    Post,
}

impl HttpMethod {
    /// `GET` or `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }

    /// The inverse of [`HttpMethod::as_str`] (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Some(HttpMethod::Get),
            "POST" => Some(HttpMethod::Post),
            _ => None,
        }
    }
}

/// A stored endpoint. Its secrets are never serialized.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `ep_` + ULID.
    pub id: String,
    /// Webhook or postback.
    #[serde(serialize_with = "kind_text")]
    #[schema(value_type = String, pattern = "^(webhook|postback)$")]
    pub kind: EndpointKind,
    /// URL or template.
    pub url: String,
    /// `GET` or `POST`.
    pub method: HttpMethod,
    /// Event filter.
    pub events: Vec<String>,
    /// Program filter (slug).
    pub program: Option<String>,
    /// Affiliate filter (slug); a postback's owner.
    pub affiliate: Option<String>,
    /// Free text.
    pub description: String,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone from the receiver`, `failing since …`,
    /// `disabled by an admin`).
    pub disabled_reason: Option<String>,
    /// First failure since the last success, UTC µs.
    pub failing_since: Option<Micros>,
    /// UTC µs.
    pub created_at: Micros,
    /// Current signing secret.
    #[serde(skip)]
    pub secret: String,
    /// The secret before the last rotation and until when (UTC µs) it still
    /// signs beside the new one.
    #[serde(skip)]
    pub previous_secret: Option<(String, Micros)>,
}

fn kind_text<S: serde::Serializer>(k: &EndpointKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

/// A change to an endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointChange {
    /// New URL or template (checked by the caller).
    pub url: Option<String>,
    /// New method.
    pub method: Option<HttpMethod>,
    /// New event filter (checked by the caller).
    pub events: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// Enable (clears the failure record) or disable with a reason.
    pub enabled: Option<(bool, String)>,
    /// A new secret; the old one keeps signing until the given UTC µs.
    pub rotate: Option<(String, Micros)>,
}

/// A delivery a node has leased to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    /// Delivery id.
    pub id: i64,
    /// Where it goes, with its secrets.
    pub endpoint: Endpoint,
    /// `evt_` + ULID (the Standard Webhooks `webhook-id`).
    pub event_id: String,
    /// Event type.
    pub kind: String,
    /// When the event happened, UTC µs.
    pub event_ts: Micros,
    /// The event payload.
    pub payload: serde_json::Value,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// 2xx: done.
    Delivered,
    /// Try again at this UTC µs.
    RetryAt(Micros),
    /// The schedule is used up: a dead letter (replayable).
    Dead,
    /// 410: the endpoint is disabled at once; the delivery is dead.
    Gone,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: i64,
    /// The node that leased it (an attempt of a lease that expired and was
    /// taken over is still recorded, but does not move the delivery).
    pub owner: String,
    /// When it was sent, UTC µs.
    pub at: Micros,
    /// The URL it went to (a postback's expanded template).
    pub url: String,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Why there was no usable answer (timeout, refused, redirect, …).
    pub error: Option<String>,
    /// Time to the answer's head, µs.
    pub latency_us: i64,
    /// The first 1 KiB of the answer, as text (lossy UTF-8).
    pub response: String,
    /// What happens next.
    pub next: AttemptNext,
    /// Disable the endpoint when it has been failing this long (µs).
    pub disable_after_us: i64,
}

/// A delivery as the log shows it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRow {
    /// Id.
    pub id: i64,
    /// `ep_` + ULID.
    pub endpoint: String,
    /// `evt_` + ULID.
    pub event_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Next attempt, UTC µs, while pending.
    pub next_attempt_at: Option<Micros>,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// UTC µs.
    pub created_at: Micros,
    /// When it was delivered or died, UTC µs.
    pub done_at: Option<Micros>,
}

/// One attempt as the log shows it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// 1, 2, …
    pub n: u32,
    /// UTC µs.
    pub at: Micros,
    /// The URL it went to.
    pub url: String,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Why there was no usable answer.
    pub error: Option<String>,
    /// Time to the answer's head, µs.
    pub latency_us: i64,
    /// The first 1 KiB of the answer.
    pub response: String,
}

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// One endpoint (`ep_…`).
    pub endpoint: Option<String>,
    /// Only this affiliate's postbacks (the portal's view; never a
    /// merchant's webhook, even one filtered on the affiliate).
    pub affiliate: Option<Slug>,
    /// `pending`, `delivered` or `dead`.
    pub status: Option<String>,
    /// Ids below this (paging).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Outbound delivery: endpoints, the deliveries the outbox fans out to
/// them, their leases, attempts and replays.
pub trait DeliveryStore: Send + Sync + 'static {
    /// Adds an endpoint. `NotFound` for an unknown program or affiliate.
    fn create_endpoint(&self, e: NewEndpoint) -> StoreFuture<'_, Endpoint>;

    /// Endpoints, newest first; with `affiliate`, only those filtered on it.
    fn endpoints(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Endpoint>>;

    /// One endpoint by `ep_` id.
    fn endpoint(&self, id: String) -> StoreFuture<'_, Option<Endpoint>>;

    /// Changes an endpoint; disabling tells `webhook.disabled` in the same
    /// transaction. `None` when there is no such endpoint.
    fn update_endpoint(
        &self,
        id: String,
        change: EndpointChange,
    ) -> StoreFuture<'_, Option<Endpoint>>;

    /// Fans out outbox events past the dispatch cursor into one delivery
    /// per enabled endpoint that wants each (at most `limit` events), and
    /// moves the cursor in the same transaction. Returns how many events
    /// were read (0: nothing new). `now` is the first attempt's time.
    fn dispatch(&self, now: Micros, limit: u32) -> StoreFuture<'_, u32>;

    /// Leases up to `limit` due deliveries of enabled endpoints (pending,
    /// `next_at <= now`, no live lease) to `owner` until `until`; on
    /// PostgreSQL with `FOR UPDATE SKIP LOCKED`, so two nodes never lease
    /// the same delivery.
    fn lease(
        &self,
        owner: String,
        now: Micros,
        until: Micros,
        limit: u32,
    ) -> StoreFuture<'_, Vec<LeasedDelivery>>;

    /// Records an attempt and moves its delivery on (when `owner` still
    /// holds its lease), keeps the endpoint's failure record, and disables
    /// the endpoint on 410 or after `disable_after_us` of failures (telling
    /// `webhook.disabled`). Returns the endpoint when this disabled it.
    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<'_, Option<Endpoint>>;

    /// Releases every lease (SQLite at start: one process delivers, so a
    /// lease left by the last run is dead). PostgreSQL leases expire instead.
    fn release_leases(&self) -> StoreFuture<'_, u64>;

    /// Deliveries, newest first.
    fn deliveries(&self, q: DeliveryQuery) -> StoreFuture<'_, Vec<DeliveryRow>>;

    /// One delivery with its attempts.
    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<(DeliveryRow, Vec<AttemptRow>)>>;

    /// Sends a delivery again (delivered or dead: pending now, its attempts
    /// kept). `false` when there is no such delivery.
    fn replay_delivery(&self, id: i64, now: Micros) -> StoreFuture<'_, bool>;

    /// Sends every outbox event whose type passes `patterns`, from `from`
    /// to `to` (UTC µs, half-open), to endpoint `id` again; returns how
    /// many deliveries were made pending.
    fn replay_events(
        &self,
        id: String,
        patterns: Vec<String>,
        from: Micros,
        to: Micros,
        now: Micros,
    ) -> StoreFuture<'_, u64>;

    /// A reader's position (`stream.clicks`, `stream.outbox`), or `None`
    /// before its first [`DeliveryStore::set_cursor`].
    fn cursor(&self, name: &'static str) -> StoreFuture<'_, Option<i64>>;

    /// Stores a reader's position.
    fn set_cursor(&self, name: &'static str, seq: i64) -> StoreFuture<'_, ()>;

    /// Queues one delivery of an event that is not in the outbox (the
    /// `webhook.test` event) to endpoint `id`; returns its delivery id.
    fn enqueue(
        &self,
        id: String,
        event_id: String,
        kind: String,
        payload: serde_json::Value,
        now: Micros,
    ) -> StoreFuture<'_, i64>;
}

/// What several nodes sharing one store exchange. Every method has a
/// single-node default, so a store without other nodes implements none.
pub trait ClusterStore: Send + Sync + 'static {
    /// The visitor-key salt all nodes use for UTC day `day` (days since the
    /// epoch): the stored one, or `candidate` if none is stored yet (first
    /// offer wins). Deletes salts of days before `keep_from`. `None` where
    /// the node's own salt file is the only truth (SQLite).
    fn shared_salt(
        &self,
        day: i64,
        candidate: [u8; 32],
        keep_from: i64,
    ) -> StoreFuture<'_, Option<[u8; 32]>> {
        let _ = (day, candidate, keep_from);
        Box::pin(async { Ok(None) })
    }

    /// Notices from other nodes sharing this store (catalogue changes, live
    /// events), starting now; `None` when no other node can share it
    /// (SQLite: other processes are seen through [`CatalogStore::catalog_version`]).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }

    /// Sends `payload` (at most 7,999 bytes, PostgreSQL's NOTIFY limit) on
    /// `channel` to every node's [`ClusterStore::subscribe`], the sender's included.
    /// A no-op where there are no other nodes.
    fn publish(&self, channel: &'static str, payload: String) -> StoreFuture<'_, ()> {
        let _ = (channel, payload);
        Box::pin(async { Ok(()) })
    }

    /// One request of `client` (a keyed hash of its address, 16 bytes)
    /// against the shared limit of endpoint class `class`, by GCRA on the
    /// store's clock: one request costs `interval_us` (the period divided
    /// by the rate), and a client may run up to `tolerance_us` ahead (the
    /// burst times the interval). `Ok(None)` when allowed, `Ok(Some(wait))`
    /// with the µs until the next request would be. `None` in the outer
    /// option where nodes share no limiter (SQLite: one node).
    fn take_shared_rate(
        &self,
        class: &'static str,
        client: [u8; 16],
        interval_us: i64,
        tolerance_us: i64,
    ) -> StoreFuture<'_, Option<Option<Micros>>> {
        let _ = (class, client, interval_us, tolerance_us);
        Box::pin(async { Ok(None) })
    }

    /// Forgets shared limiter state that has fully recovered; returns how
    /// many clients were forgotten.
    fn sweep_shared_rates(&self) -> StoreFuture<'_, u64> {
        Box::pin(async { Ok(0) })
    }
}

/// Everything the server needs from a database: the sum of the concern
/// traits, implemented for any type that implements them all. A service that
/// needs only one concern takes that trait (e.g. `Arc<dyn ClickStore>`), so a
/// backend that serves part of the contract can say so in types.
pub trait Store:
    CatalogStore
    + ClickStore
    + ReportStore
    + ConversionStore
    + AccountStore
    + ClusterStore
    + OutboxStore
    + DeliveryStore
    + FraudStore
    + PrivacyStore
    + IntegrationStore
{
}

impl<T> Store for T where
    T: CatalogStore
        + ClickStore
        + ReportStore
        + ConversionStore
        + AccountStore
        + ClusterStore
        + OutboxStore
        + DeliveryStore
        + FraudStore
        + PrivacyStore
        + IntegrationStore
{
}

/// The store traits, for callers that hold a concrete store (`SqliteStore`,
/// `PgStore`) rather than `dyn Store`: `use clickward_store::prelude::*;`
/// brings every method into scope.
pub mod prelude {
    pub use crate::{
        AccountStore, CatalogStore, ClickStore, ClusterStore, ConversionStore, DeliveryStore,
        FraudStore, IntegrationStore, OutboxStore, PrivacyStore, ReportStore, Store,
    };
}
