//! The in-memory link cache the redirect path reads.
//!
//! The whole map is replaced on change (API write, SIGHUP, or a catalogue
//! version bump seen by the poller when another process such as the CLI
//! changed the database), so a lookup is one read lock and one hash probe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use clickward_core::link::{Destination, RedirectStatus};
use clickward_core::program::AttributionModel;

/// Prefix of the per-program attribution cookie names.
pub const ATTRIBUTION_COOKIE_PREFIX: &str = "cw_at_";
use clickward_core::fraud::ClickRules;
use clickward_store::{LinkRecord, Store, StoreError};

use crate::services::fraud::RuleBook;

/// What the cache keeps of a program while it builds: its attribution
/// cookie, click id parameter and fallback destination.
type ProgramCached = (
    Arc<AttributionCookie>,
    Option<String>,
    Option<Arc<str>>,
    clickward_core::program::ConsentMode,
);

/// A link ready to redirect.
#[derive(Debug)]
pub struct CachedLink {
    /// The stored link.
    pub record: LinkRecord,
    /// Its compiled destination.
    pub destination: Destination,
    /// The status to answer with (the link's own or the server default).
    pub redirect: RedirectStatus,
    /// Attribution cookie settings of the link's program.
    pub attribution: Arc<AttributionCookie>,
    /// Code, program slug and affiliate slug, shared with every live event
    /// of the link (a reference count instead of three copies per click).
    pub names: LinkNames,
    /// The fraud rules that judge its clicks (empty: none are evaluated).
    pub click_rules: Arc<ClickRules>,
    /// Where blocked clicks go: the program's fallback destination.
    pub fallback: Option<Arc<str>>,
    /// The click caps of its program and affiliate (empty: none).
    pub click_caps: Arc<Vec<(Arc<str>, clickward_core::fraud::Cap)>>,
    /// What its program's visitors who ask not to be tracked get.
    pub consent: clickward_core::program::ConsentMode,
}

/// A link's names as live events carry them.
#[derive(Debug, Clone)]
pub struct LinkNames {
    /// Link code.
    pub code: Arc<str>,
    /// Program slug.
    pub program: Arc<str>,
    /// Affiliate slug, when the link has one.
    pub affiliate: Option<Arc<str>>,
}

/// What the redirect needs to set a program's attribution cookie.
#[derive(Debug)]
pub struct AttributionCookie {
    /// Cookie name: `cw_at_` + program slug.
    pub name: String,
    /// Max-Age, seconds.
    pub max_age_s: i64,
    /// First click keeps an existing valid cookie; last click replaces it.
    pub model: AttributionModel,
}

/// Code → link, for links whose link, program and affiliate are all active.
pub struct LinkCache {
    map: RwLock<Arc<HashMap<String, Arc<CachedLink>>>>,
    book: RwLock<Arc<RuleBook>>,
    version: AtomicI64,
    default_redirect: RedirectStatus,
}

impl LinkCache {
    /// An empty cache.
    pub fn new(default_redirect: RedirectStatus) -> Self {
        Self {
            map: RwLock::new(Arc::new(HashMap::new())),
            book: RwLock::new(Arc::new(RuleBook::default())),
            version: AtomicI64::new(-1),
            default_redirect,
        }
    }

    /// The active link with this code.
    pub fn get(&self, code: &str) -> Option<Arc<CachedLink>> {
        let map = self.map.read().ok()?.clone();
        map.get(code).cloned()
    }

    /// The rule book loaded with the links.
    pub fn rules(&self) -> Arc<RuleBook> {
        self.book
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|_| Arc::new(RuleBook::default()))
    }

    /// How many active links are cached.
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// `true` when no link is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads every link from the store.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let version = store.catalog_version().await?;
        let records = store.list_links().await?;
        let book = RuleBook::load(store).await?;
        type LinkRules = (
            Arc<ClickRules>,
            Arc<Vec<(Arc<str>, clickward_core::fraud::Cap)>>,
        );
        let mut rules: HashMap<(i64, Option<i64>), LinkRules> = HashMap::new();
        let mut programs: HashMap<i64, ProgramCached> = HashMap::new();
        let mut map = HashMap::with_capacity(records.len());
        for record in records.into_iter().filter(|r| r.redirects) {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                programs.entry(record.program_id)
            {
                let s = store.program_settings(record.program_id).await?;
                let cookie = Arc::new(AttributionCookie {
                    name: format!("{ATTRIBUTION_COOKIE_PREFIX}{}", record.link.program),
                    max_age_s: s.cookie_window_s,
                    model: s.attribution,
                });
                slot.insert((
                    cookie,
                    s.click_id_param,
                    s.fallback_url.map(Arc::from),
                    s.consent,
                ));
            }
            let Some((attribution, click_id_param, fallback, consent)) =
                programs.get(&record.program_id).cloned()
            else {
                continue;
            };
            let (click_rules, click_caps) = rules
                .entry((record.program_id, record.affiliate_id))
                .or_insert_with(|| {
                    (
                        Arc::new(book.click_rules(record.program_id, record.affiliate_id)),
                        Arc::new(book.click_caps(record.program_id, record.affiliate_id)),
                    )
                })
                .clone();
            match Destination::compile(&record.link.destination, &record.link.utm) {
                Ok(destination) => {
                    let destination = match &click_id_param {
                        Some(key) => destination.with_click_id_param(key),
                        None => destination,
                    };
                    let redirect = record.link.redirect.unwrap_or(self.default_redirect);
                    let names = LinkNames {
                        code: record.link.code.as_str().into(),
                        program: record.link.program.as_str().into(),
                        affiliate: record.link.affiliate.as_ref().map(|a| a.as_str().into()),
                    };
                    map.insert(
                        record.link.code.to_string(),
                        Arc::new(CachedLink {
                            record,
                            destination,
                            redirect,
                            attribution,
                            names,
                            click_rules,
                            click_caps,
                            fallback,
                            consent,
                        }),
                    );
                }
                Err(e) => tracing::warn!(code = %record.link.code, "link skipped: {e}"),
            }
        }
        if let Ok(mut b) = self.book.write() {
            *b = Arc::new(book);
        }
        if let Ok(mut m) = self.map.write() {
            *m = Arc::new(map);
        }
        self.version.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// Reloads when the store's catalogue version differs from the cached one.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn refresh_if_changed(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let v = store.catalog_version().await?;
        if v == self.version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.refresh(store).await?;
        Ok(true)
    }
}
