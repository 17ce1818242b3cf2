//! clickward-store: the only place SQL lives.
//!
//! [`Store`] is what the server needs from a database; [`SqliteStore`] is the
//! embedded default (one writer connection for batched, group-committed
//! writes, plus a small pool of readers). A PostgreSQL implementation will sit
//! beside it behind the same trait, so every method is async and
//! object-safe (boxed futures), and takes and returns plain core types.
//!
//! # Errors
//! Every method returns [`StoreError`]: `NotFound` and `Conflict` are the
//! caller's to turn into 404 / 409; the rest are server errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use clickward_core::Micros;
use clickward_core::click::NewClick;
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Affiliate, Link, Program, RedirectStatus, Status, UtmDefaults};
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use serde::Serialize;

mod sqlite;

pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A named thing does not exist (e.g. `program "x"`).
    #[error("{0} not found")]
    NotFound(String),
    /// A create collided with an existing thing (e.g. `link "x"`).
    #[error("{0} already exists")]
    Conflict(String),
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    /// Links, upserted last.
    pub links: Vec<LinkInput>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Fraud-rule reason; `None` unless rejected.
    pub invalid_reason: Option<String>,
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
}

/// One report row: the value of each dimension (in query order) and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// Dimension values; `None` where the click had no value.
    pub keys: Vec<Option<String>>,
    /// Click counts.
    pub counts: ClickCounts,
}

/// Scope of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// What the server needs from a database. See the crate docs.
pub trait Store: Send + Sync + 'static {
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
    /// Applies a catalogue in one transaction (upserts; nothing is deleted).
    fn apply_catalog(&self, c: CatalogInput) -> StoreFuture<'_, ()>;
    /// A number that changes whenever the catalogue changes (any process).
    fn catalog_version(&self) -> StoreFuture<'_, i64>;

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
    /// One click.
    fn get_click(&self, id: ClickId) -> StoreFuture<'_, ClickRow>;
    /// Grouped click counts.
    fn click_report(&self, q: ReportQuery) -> StoreFuture<'_, Vec<ReportRow>>;
    /// Deletes dedup state older than `before` (UTC µs); returns rows removed.
    fn purge_dedup(&self, before: Micros) -> StoreFuture<'_, u64>;

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
}
