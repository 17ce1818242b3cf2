//! Catalogue writes from the admin API, the dashboard's forms and the CLI:
//! programs, affiliates and links saved through one path that keeps the
//! link cache (whose entries depend on their owners' status) and programs'
//! postback tokens right.

use std::sync::Arc;

use clickward_core::id::Slug;
use clickward_core::link::{Affiliate, Owner, Program, Status};
use clickward_store::{
    AffiliateInput, LinkInput, LinkRecord, ProgramInput, SaveMode, Store, StoreError, StoreFuture,
};
use serde::{Deserialize, Serialize};

use crate::services::links::LinkCache;
use crate::services::programs::{
    self, CommissionSpec, ProgramSpec, ProgramView, SpecError, display_name,
};

/// Catalogue writes with what they use. Cheap to clone.
#[derive(Clone)]
pub struct CatalogService {
    store: Arc<dyn Store>,
    links: Arc<LinkCache>,
}

impl CatalogService {
    /// Writes to `store`, then refreshes `links`.
    pub fn new(store: Arc<dyn Store>, links: Arc<LinkCache>) -> Self {
        Self { store, links }
    }

    /// Saves a program or an affiliate and refreshes the link cache (whether a
    /// link redirects depends on its owners' status). The API and the
    /// dashboard's forms both write through here.
    ///
    /// # Errors
    /// The store's: `Conflict` on create of an existing slug, `NotFound` on
    /// update of a missing one.
    pub async fn save_named<R: NamedResource>(
        &self,
        b: NamedBody,
        mode: SaveMode,
    ) -> Result<R, clickward_store::StoreError> {
        let saved = R::save(self.store.as_ref(), b, mode).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(saved)
    }

    /// Creates a program from everything a spec says (see
    /// [`programs::create`]); refreshes the link cache.
    ///
    /// # Errors
    /// As [`programs::create`].
    pub async fn create_program(&self, spec: &ProgramSpec) -> Result<ProgramView, SpecError> {
        let v = programs::create(self.store.as_ref(), spec).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(v)
    }

    /// Changes a program by a spec (see [`programs::update`]); refreshes
    /// the link cache (its status decides whether its links redirect).
    ///
    /// # Errors
    /// As [`programs::update`].
    pub async fn update_program(
        &self,
        slug: Slug,
        spec: &ProgramSpec,
    ) -> Result<ProgramView, SpecError> {
        let v = programs::update(self.store.as_ref(), slug, spec).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(v)
    }

    /// Sets or removes an affiliate's commission override (see
    /// [`programs::set_override`]).
    ///
    /// # Errors
    /// As [`programs::set_override`].
    pub async fn set_override(
        &self,
        program: Slug,
        affiliate: Slug,
        plan: Option<&CommissionSpec>,
    ) -> Result<(), SpecError> {
        programs::set_override(self.store.as_ref(), program, affiliate, plan).await
    }

    /// Saves a link and refreshes the link cache (the API and the dashboard's
    /// forms both write links through here).
    ///
    /// # Errors
    /// The store's: `Conflict` on create of an existing code, `NotFound` for an
    /// unknown program, affiliate or (on update) link.
    pub async fn save_link(
        &self,
        input: LinkInput,
        mode: SaveMode,
    ) -> Result<LinkRecord, clickward_store::StoreError> {
        let rec = self.store.save_link(input, mode).await?;
        self.links.refresh(self.store.as_ref()).await?;
        Ok(rec)
    }
}

/// The body of a program or an affiliate.
#[derive(utoipa::ToSchema, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedBody {
    /// Slug.
    pub slug: Slug,
    /// Display name (default: the slug).
    pub name: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Status,
}

/// A resource served by the `*_named` handlers.
pub trait NamedResource: Serialize + Send + Sized + 'static {
    /// What to call it in errors.
    const KIND: &'static str;
    /// All, by slug.
    fn list(s: &dyn Store) -> StoreFuture<'_, Vec<Self>>;
    /// One.
    fn get(s: &dyn Store, slug: Slug) -> StoreFuture<'_, Self>;
    /// Create or update (a new program gets its postback token).
    fn save(s: &dyn Store, b: NamedBody, mode: SaveMode) -> StoreFuture<'_, Self>;
    /// The body that would recreate it.
    fn body(&self) -> NamedBody;
    /// Who owns its settings.
    fn owner(&self) -> Owner;
}

/// How pages say who owns an item.
pub fn owner_text(o: Owner) -> &'static str {
    match o {
        Owner::Catalog => "the catalogue file",
        Owner::Admin => "admins (API, CLI, dashboard); the catalogue file leaves it alone",
    }
}

impl NamedResource for Program {
    const KIND: &'static str = "program";
    fn list(s: &dyn Store) -> StoreFuture<'_, Vec<Self>> {
        s.list_programs()
    }
    fn get(s: &dyn Store, slug: Slug) -> StoreFuture<'_, Self> {
        s.get_program(slug)
    }
    fn save(s: &dyn Store, b: NamedBody, mode: SaveMode) -> StoreFuture<'_, Self> {
        let input = ProgramInput {
            name: display_name(b.name.as_deref(), &b.slug),
            slug: b.slug,
            status: b.status,
            settings: None,
        };
        Box::pin(async move {
            let p = s.save_program(input, mode).await?;
            // A new program can take postbacks at once, as one from the
            // catalogue can.
            ensure_postback_token(s, &p).await?;
            Ok(p)
        })
    }
    fn body(&self) -> NamedBody {
        NamedBody {
            slug: self.slug.clone(),
            name: Some(self.name.clone()),
            status: self.status,
        }
    }
    fn owner(&self) -> Owner {
        self.owner
    }
}

impl NamedResource for Affiliate {
    const KIND: &'static str = "affiliate";
    fn list(s: &dyn Store) -> StoreFuture<'_, Vec<Self>> {
        s.list_affiliates()
    }
    fn get(s: &dyn Store, slug: Slug) -> StoreFuture<'_, Self> {
        s.get_affiliate(slug)
    }
    fn save(s: &dyn Store, b: NamedBody, mode: SaveMode) -> StoreFuture<'_, Self> {
        let input = AffiliateInput {
            name: display_name(b.name.as_deref(), &b.slug),
            slug: b.slug,
            status: b.status,
        };
        s.save_affiliate(input, mode)
    }
    fn body(&self) -> NamedBody {
        NamedBody {
            slug: self.slug.clone(),
            name: Some(self.name.clone()),
            status: self.status,
        }
    }
    fn owner(&self) -> Owner {
        self.owner
    }
}

/// Gives every program without a postback token a random one, so postbacks
/// can be authenticated from the start (`clickward program list` shows it).
///
/// # Errors
/// Store errors.
pub async fn ensure_postback_tokens(store: &dyn Store) -> Result<(), StoreError> {
    for p in store.list_programs().await? {
        ensure_postback_token(store, &p).await?;
    }
    Ok(())
}

/// [`ensure_postback_tokens`] for one program (one saved through the API or
/// the dashboard).
///
/// # Errors
/// Store errors.
pub async fn ensure_postback_token(store: &dyn Store, p: &Program) -> Result<(), StoreError> {
    let mut settings = store.program_settings(p.id).await?;
    if settings.postback_token.is_none() {
        settings.postback_token = Some(crate::services::keys::new_token());
        store
            .save_program_settings(p.slug.clone(), settings)
            .await?;
    }
    Ok(())
}
