//! What the platform integrations (Stripe, Shopify: the server's
//! `services::integrations`) keep: the events they handled and the answers
//! given, the platform ids that name a conversion, and each customer's
//! click. Refunds themselves are a conversion change
//! ([`crate::ConversionStore::refund_conversion`]).

use clickward_core::Micros;
use clickward_core::id::{ClickId, ConversionId};

use crate::StoreFuture;

/// A platform's event, as its idempotency key: the program whose endpoint
/// received it, the platform (`"stripe"`, `"shopify"`), and the platform's
/// event id (`evt_…`, `X-Shopify-Webhook-Id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    /// Program id.
    pub program_id: i64,
    /// `"stripe"` or `"shopify"`.
    pub source: &'static str,
    /// The platform's event id (at most 255 bytes, checked by the caller).
    pub event_id: String,
}

/// A platform's customer as remembered: the click that brought them (the
/// first one seen), when they first paid and when their subscription ended
/// (UTC µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Customer {
    /// The click that brought them, when one was known.
    pub click_id: Option<ClickId>,
    /// Their first payment.
    pub first_paid_at: Option<Micros>,
    /// Their subscription was cancelled (renewals after it earn nothing).
    pub ended_at: Option<Micros>,
}

/// The integrations' memory.
pub trait IntegrationStore: Send + Sync + 'static {
    /// The answer (HTTP status, JSON body) given to an event already
    /// handled, if any.
    fn integration_answer(&self, key: EventKey) -> StoreFuture<'_, Option<(u16, String)>>;

    /// Keeps the answer given to a handled event (the first one kept wins).
    fn save_integration_answer(
        &self,
        key: EventKey,
        status: u16,
        body: String,
        at: Micros,
    ) -> StoreFuture<'_, ()>;

    /// Records that the platform's ids `refs` (an invoice, a payment
    /// intent, a charge, an order) name `conversion`, whose buyer paid
    /// `total` (minor units of the payment's currency, when known); ids
    /// already naming a conversion keep it.
    fn name_conversion(
        &self,
        program_id: i64,
        source: &'static str,
        refs: Vec<String>,
        conversion: ConversionId,
        total: Option<i64>,
    ) -> StoreFuture<'_, ()>;

    /// The conversion (and what its buyer paid) the first of `refs` that
    /// names one names.
    fn named_conversion(
        &self,
        program_id: i64,
        source: &'static str,
        refs: Vec<String>,
    ) -> StoreFuture<'_, Option<(ConversionId, Option<i64>)>>;

    /// Remembers a customer, with the click that brought them when known
    /// (a click already remembered is kept: first click), at `at`; returns
    /// them as stored.
    fn remember_customer(
        &self,
        program_id: i64,
        source: &'static str,
        customer: String,
        click: Option<ClickId>,
        at: Micros,
    ) -> StoreFuture<'_, Customer>;

    /// A remembered customer.
    fn customer(
        &self,
        program_id: i64,
        source: &'static str,
        customer: String,
    ) -> StoreFuture<'_, Option<Customer>>;

    /// Marks a customer's first payment at `paid_at` (kept when one is
    /// there: the earliest stays) or the end of their subscription at
    /// `ended_at`; returns them as stored (`None`: not remembered).
    fn mark_customer(
        &self,
        program_id: i64,
        source: &'static str,
        customer: String,
        paid_at: Option<Micros>,
        ended_at: Option<Micros>,
    ) -> StoreFuture<'_, Option<Customer>>;
}
