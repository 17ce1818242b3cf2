//! The catalogue of outbox events: what clickward tells the outside world
//! about changes others may act on (docs/events.md). Each event is written
//! in the same store transaction as the change it reports, so an event
//! exists exactly when its change does.
//!
//! An event has an id (`evt_` + ULID, stable across redeliveries), a type
//! below, a UTC timestamp (µs) and a JSON payload `{"v": 1, …}` whose
//! version changes only when a field changes meaning or goes away (new
//! fields may appear within a version). Payloads never hold IP addresses.

use crate::conversion::ConversionStatus;

/// Version of every payload shape below.
pub const PAYLOAD_VERSION: u32 = 1;

/// `conversion.created`: a conversion was recorded (pending or approved);
/// payload `{"v":1,"conversion":{…}}` as `GET /api/v1/conversions/{id}`.
pub const CONVERSION_CREATED: &str = "conversion.created";
/// `conversion.refunded`: part of a conversion's payment was refunded and
/// its amount and commission cut in proportion (a whole refund is
/// `conversion.reversed`); payload `{"v":1,"conversion":{…},"refund":
/// {"key","refunded","total"}}` (minor units of the payment's currency).
pub const CONVERSION_REFUNDED: &str = "conversion.refunded";
/// `payout.created`: a payout batch was created; payload
/// `{"v":1,"payout":{…}}` as `POST /api/v1/payouts` answers it.
pub const PAYOUT_CREATED: &str = "payout.created";

/// The event type of a conversion moving to `to` (`conversion.approved`,
/// `.rejected`, `.reversed`, `.paid`); `None` for `pending`, which a
/// conversion never moves to.
pub fn conversion_status_event(to: ConversionStatus) -> Option<&'static str> {
    match to {
        ConversionStatus::Pending => None,
        ConversionStatus::Approved => Some("conversion.approved"),
        ConversionStatus::Rejected => Some("conversion.rejected"),
        ConversionStatus::Reversed => Some("conversion.reversed"),
        ConversionStatus::Paid => Some("conversion.paid"),
    }
}

/// Every event type written today, for the documentation and filters.
/// Programs, affiliates and links are told as `<kind>.created`,
/// `.updated`, `.disabled` and `.enabled`, with `{"v":1,"<kind>":{…}}`
/// (a program's settings never: they hold postback credentials).
pub const TYPES: &[&str] = &[
    CONVERSION_CREATED,
    "conversion.approved",
    "conversion.rejected",
    "conversion.reversed",
    "conversion.paid",
    CONVERSION_REFUNDED,
    PAYOUT_CREATED,
    "program.created",
    "program.updated",
    "program.disabled",
    "program.enabled",
    "affiliate.created",
    "affiliate.updated",
    "affiliate.disabled",
    "affiliate.enabled",
    "link.created",
    "link.updated",
    "link.disabled",
    "link.enabled",
    WEBHOOK_DISABLED,
    CAP_REACHED,
    PRIVACY_ERASURE,
];

/// `privacy.erasure`: a visitor's or order's data was erased (docs/privacy.md),
/// so receivers can erase what they hold too; payload `{"v":1,"erasure":
/// {"id","subject","click_ids","conversion_ids"}}` (the ids, never the
/// subject's value). Webhooks only.
pub const PRIVACY_ERASURE: &str = "privacy.erasure";

/// `cap.reached`: a cap was filled by the conversion that reached its limit
/// (hard caps then reject, soft ones flag); payload `{"v":1,"rule","cap",
/// "period","limit","used","hard","words"}`.
pub const CAP_REACHED: &str = "cap.reached";

/// `webhook.disabled`: an endpoint (webhook or affiliate postback) was
/// disabled: by its receiver answering 410, by failing for 24 h without a
/// success, or by an admin; payload `{"v":1,"webhook":{"id","kind","url",
/// "affiliate","reason"}}` (never its secret).
pub const WEBHOOK_DISABLED: &str = "webhook.disabled";

/// `webhook.test`: sent by `clickward webhook test` (and the dashboard's
/// "Send test") to one endpoint only; never in the outbox.
pub const WEBHOOK_TEST: &str = "webhook.test";

/// The public id of outbox event `ulid`: `evt_` + its ULID.
pub fn event_id_text(ulid: ulid::Ulid) -> String {
    format!("evt_{ulid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_a_conversion_moves_to_has_its_listed_type() {
        for s in [
            ConversionStatus::Approved,
            ConversionStatus::Rejected,
            ConversionStatus::Reversed,
            ConversionStatus::Paid,
        ] {
            let t = conversion_status_event(s).unwrap();
            assert!(TYPES.contains(&t), "{t}");
            assert_eq!(t, format!("conversion.{}", s.as_str()));
        }
        assert_eq!(conversion_status_event(ConversionStatus::Pending), None);
    }
}
