//! Stripe and Shopify as conversion sources, over real HTTP: events signed
//! as the platforms sign them (Stripe: `t=…,v1=` HMAC-SHA256 of
//! `"{t}.{body}"`; Shopify: base64 HMAC-SHA256 of the body), with payloads
//! shaped like the platforms' documented examples (stripe.com/docs/api,
//! shopify.dev/docs/api/webhooks).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::*;

const CATALOG: &str = r#"
[[programs]]
slug = "saas"
currency = "USD"
commission = { default = { type = "share", bps = 2000 } }
stripe = { secrets = ["whsec_old", "whsec_test"], recurring = "12 months" }

[[programs]]
slug = "strict"
currency = "USD"
commission = { default = { type = "share", bps = 2000 } }
stripe = { secrets = ["whsec_strict"], unknown_click = "refuse" }

[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
shopify = { secrets = ["shpss_test"] }

[[affiliates]]
slug = "solare"

[[links]]
code = "saas1"
program = "saas"
affiliate = "solare"
destination = "https://saas.example/pricing?cw_click={click_id}"

[[links]]
code = "shop1"
program = "shop"
affiliate = "solare"
destination = "https://shop.example/?cw_click={click_id}"
"#;

async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| c.catalog = Some(path.clone())).await;
    (app, dir)
}

async fn click(app: &TestApp, code: &str) -> String {
    let r = app.get_ua(&format!("/r/{code}"), IPHONE).await;
    assert_eq!(r.status().as_u16(), 302);
    location(&r).rsplit("cw_click=").next().unwrap().to_owned()
}

fn now_s(app: &TestApp) -> i64 {
    use clickward::clock::Clock;
    app.clock.now_micros() / 1_000_000
}

/// A Stripe event as Stripe sends it: `{"id","object":"event","type",
/// "created","data":{"object":…}}`.
fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "type": kind,
        "data": { "object": object },
    }))
    .unwrap()
}

async fn to_stripe(
    app: &TestApp,
    program: &str,
    secret: &str,
    t: i64,
    body: &[u8],
) -> (u16, Value) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let r = app
        .client
        .post(app.url(&format!("/integrations/stripe/{program}")))
        .header("content-type", "application/json")
        .header("stripe-signature", format!("t={t},v1={sig}"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn conversions(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.api_get("/api/v1/conversions?limit=1000").await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().cloned().unwrap()
}

async fn pending_of(app: &TestApp, affiliate: &str) -> i64 {
    let (_, v) = app.api_get("/api/v1/balances").await;
    v.as_array()
        .unwrap()
        .iter()
        .filter(|b| b["affiliate"] == affiliate && b["bucket"] == "pending")
        .map(|b| b["minor"].as_i64().unwrap())
        .sum()
}

fn invoice(id: &str, customer: &str, reason: &str, paid_at: i64, charge: &str) -> Value {
    json!({
        "id": id,
        "object": "invoice",
        "customer": customer,
        "subscription": "sub_1",
        "billing_reason": reason,
        "amount_paid": 5000,
        "currency": "usd",
        "charge": charge,
        "status": "paid",
        "status_transitions": { "paid_at": paid_at },
    })
}

#[tokio::test]
async fn a_stripe_checkout_its_renewals_and_refunds_make_the_right_conversions_and_reversals() {
    let (app, _d) = app().await;
    let click_id = click(&app, "saas1").await;
    let t = now_s(&app);

    // The first invoice before its checkout (Stripe keeps no order): 503,
    // nothing stored; Stripe retries the same event.
    let first = stripe_event(
        "evt_inv1",
        "invoice.paid",
        t,
        invoice("in_1", "cus_A", "subscription_create", t, "ch_1"),
    );
    let (s, v) = to_stripe(&app, "saas", "whsec_test", t, &first).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (503, Some("customer_pending")),
        "{v}"
    );
    assert!(conversions(&app).await.is_empty());

    let checkout = stripe_event(
        "evt_cs1",
        "checkout.session.completed",
        t,
        json!({
            "id": "cs_test_a1",
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": click_id,
            "customer": "cus_A",
            "subscription": "sub_1",
            "payment_status": "paid",
            "amount_total": 5000,
            "currency": "usd",
        }),
    );
    let (s, v) = to_stripe(&app, "saas", "whsec_test", t, &checkout).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("remembered")), "{v}");

    // The retry: the sale, 20% of $50.00, attributed to the click.
    let (s, v) = to_stripe(&app, "saas", "whsec_test", t, &first).await;
    assert_eq!(s, 201, "{v}");
    let sale = &v["conversion"];
    assert_eq!(sale["event"], "sale");
    assert_eq!(sale["amount"], "50.00");
    assert_eq!(sale["commission_minor"], 1000);
    assert_eq!(sale["affiliate"], "solare");
    assert_eq!(sale["click_id"], click_id.as_str());
    // Replayed: the same answer, nothing new (a second secret verifies too).
    let (s2, again) = to_stripe(&app, "saas", "whsec_old", t, &first).await;
    assert_eq!((s2, &again["status"]), (201, &json!("created")));
    assert_eq!(again["conversion"]["conversion_id"], sale["conversion_id"]);
    assert_eq!(conversions(&app).await.len(), 1);

    // A month and a half later (past the 30-day attribution window): the
    // renewal has no click id, and is the customer's first click's.
    let later = t + 45 * 86_400;
    app.clock.set(later * 1_000_000);
    let renewal = stripe_event(
        "evt_inv2",
        "invoice.paid",
        later,
        invoice("in_2", "cus_A", "subscription_cycle", later, "ch_2"),
    );
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &renewal).await;
    assert_eq!(s, 201, "{v}");
    let renewed = v["conversion"].clone();
    assert_eq!(renewed["event"], "renewal");
    assert_eq!(renewed["click_id"], click_id.as_str());
    assert_eq!(renewed["commission_minor"], 1000);
    assert_eq!(pending_of(&app, "solare").await, 2000);

    // A quarter of the renewal refunded: amount and commission cut by a
    // quarter; the same refunded total again changes nothing; then all of it.
    let refund = |id: &str, refunded: i64| {
        stripe_event(
            id,
            "charge.refunded",
            later,
            json!({
                "id": "ch_2",
                "object": "charge",
                "amount": 5000,
                "amount_refunded": refunded,
                "currency": "usd",
                "invoice": "in_2",
                "payment_intent": "pi_2",
                "refunded": refunded == 5000,
            }),
        )
    };
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &refund("evt_r1", 1250)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("refunded")), "{v}");
    assert_eq!(v["conversion"]["amount"], "37.50");
    assert_eq!(v["conversion"]["commission_minor"], 750);
    assert_eq!(v["conversion"]["gross_commission_minor"], 1000);
    assert_eq!(v["conversion"]["gross_amount_minor"], 5000);
    assert_eq!(pending_of(&app, "solare").await, 1750);
    // Reports count what is left: $50.00 + $37.50 of revenue.
    let (s, r) = app
        .api_get("/api/v1/reports?from=2026-11-01&to=2027-02-01&tz=UTC&program=saas")
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["totals"]["conversions"], 2, "{r}");
    assert_eq!(r["totals"]["revenue_minor"]["USD"], 8750, "{r}");
    assert_eq!(r["totals"]["payout_minor"]["USD"], 1750, "{r}");
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &refund("evt_r1b", 1250)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("unchanged")), "{v}");
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &refund("evt_r2", 5000)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("reversed")), "{v}");
    assert_eq!(
        v["conversion"]["status"], "rejected",
        "pending, so rejected"
    );
    assert_eq!(pending_of(&app, "solare").await, 1000);

    // Bad, old and missing signatures: 401, nothing changes.
    let fresh = stripe_event(
        "evt_inv3",
        "invoice.paid",
        later,
        invoice("in_3", "cus_A", "subscription_cycle", later, "ch_3"),
    );
    let (s, _) = to_stripe(&app, "saas", "whsec_wrong", later, &fresh).await;
    assert_eq!(s, 401);
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later - 600, &fresh).await;
    assert_eq!(s, 401);
    assert!(v["reason"].as_str().unwrap().contains("timestamp"), "{v}");
    let r = app
        .client
        .post(app.url("/integrations/stripe/saas"))
        .body(fresh.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _) = to_stripe(&app, "nope", "whsec_test", later, &fresh).await;
    assert_eq!(s, 404);
    assert_eq!(conversions(&app).await.len(), 2);

    // An event type that makes nothing: 2xx ignored, counted.
    let other = stripe_event("evt_x", "customer.created", later, json!({"id": "cus_B"}));
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &other).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    let m = app.metrics_text().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("clickward_integration_events_total{")
                && l.contains("outcome=\"ignored\"")
                && l.contains("source=\"stripe\"")),
        "{m}"
    );

    // Cancelled: a later invoice earns nothing.
    let ended = stripe_event(
        "evt_del",
        "customer.subscription.deleted",
        later,
        json!({"id": "sub_1", "object": "subscription", "customer": "cus_A", "ended_at": later}),
    );
    let (s, v) = to_stripe(&app, "saas", "whsec_test", later, &ended).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ended")), "{v}");
    let after = later + 31 * 86_400;
    app.clock.set(after * 1_000_000);
    let late = stripe_event(
        "evt_inv4",
        "invoice.paid",
        after,
        invoice("in_4", "cus_A", "subscription_cycle", after, "ch_4"),
    );
    let (s, v) = to_stripe(&app, "saas", "whsec_test", after, &late).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    assert_eq!(conversions(&app).await.len(), 2);

    // A one-time payment with no click: stored unattributed (no affiliate,
    // no commission) with the reason; refused where the program says so.
    let one_time = |id: &str| {
        stripe_event(
            id,
            "checkout.session.completed",
            after,
            json!({
                "id": "cs_test_b2",
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "payment_intent": "pi_9",
                "amount_total": 1999,
                "currency": "usd",
                "client_reference_id": null,
                "customer": null,
            }),
        )
    };
    let (s, v) = to_stripe(&app, "saas", "whsec_test", after, &one_time("evt_b2")).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("unattributed")),
        "{v}"
    );
    assert_eq!(v["conversion"]["affiliate"], Value::Null);
    assert_eq!(v["conversion"]["commission_minor"], 0);
    assert_eq!(v["conversion"]["order_id"], "pi_9");
    // A delayed payment method: completed unpaid (ignored), then paid.
    let mut delayed: Value = serde_json::from_slice(&one_time("evt_d1")).unwrap();
    delayed["data"]["object"]["payment_status"] = json!("unpaid");
    delayed["data"]["object"]["payment_intent"] = json!("pi_10");
    let body = serde_json::to_vec(&delayed).unwrap();
    let (s, v) = to_stripe(&app, "saas", "whsec_test", after, &body).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    delayed["id"] = json!("evt_d2");
    delayed["type"] = json!("checkout.session.async_payment_succeeded");
    delayed["data"]["object"]["payment_status"] = json!("paid");
    let body = serde_json::to_vec(&delayed).unwrap();
    let (s, v) = to_stripe(&app, "saas", "whsec_test", after, &body).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("unattributed")),
        "{v}"
    );
    assert_eq!(v["conversion"]["order_id"], "pi_10");
    let (s, v) = to_stripe(&app, "strict", "whsec_strict", after, &one_time("evt_b3")).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (422, Some("unknown_click")),
        "{v}"
    );
    assert_eq!(conversions(&app).await.len(), 4);

    // The click in the subscription's metadata, no checkout seen: the
    // customer is remembered from the first invoice, and "12 months"
    // counts from it.
    let click2 = click(&app, "saas1").await;
    let meta = json!({ "metadata": { "cw_click": click2 } });
    let mut inv = invoice("in_m1", "cus_M", "subscription_create", after, "ch_m1");
    inv["subscription_details"] = meta.clone();
    let body = stripe_event("evt_m1", "invoice.paid", after, inv);
    let (s, v) = to_stripe(&app, "saas", "whsec_test", after, &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["click_id"], click2.as_str());
    let year = after + 400 * 86_400;
    app.clock.set(year * 1_000_000);
    let mut inv = invoice("in_m2", "cus_M", "subscription_cycle", year, "ch_m2");
    inv["subscription_details"] = meta;
    let body = stripe_event("evt_m2", "invoice.paid", year, inv);
    let (s, v) = to_stripe(&app, "saas", "whsec_test", year, &body).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("12 months"), "{v}");
    assert_eq!(conversions(&app).await.len(), 5);
}

async fn to_shopify(
    app: &TestApp,
    topic: &str,
    webhook_id: &str,
    secret: &str,
    body: &Value,
) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&raw);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let r = app
        .client
        .post(app.url("/integrations/shopify/shop"))
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-hmac-sha256", sig)
        .header("x-shopify-webhook-id", webhook_id)
        .header("x-shopify-shop-domain", "example.myshopify.com")
        .body(raw)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_shopify_order_and_its_refunds_make_a_conversion_cut_then_reversed() {
    let (app, _d) = app().await;
    let click_id = click(&app, "shop1").await;
    let order = json!({
        "id": 820_982_911_946_154_508_u64,
        "name": "#9999",
        "created_at": "2026-11-20T07:00:00-05:00",
        "currency": "USD",
        "total_price": "80.00",
        "financial_status": "paid",
        "landing_site": format!("/products/mug?utm_source=blog&cw_click={click_id}"),
        "note_attributes": [],
        "customer": { "id": 115_310_627_314_723_954_u64 },
    });
    let (s, v) = to_shopify(&app, "orders/create", "wh-1", "shpss_test", &order).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["order_id"], "820982911946154508");
    assert_eq!(v["conversion"]["commission_minor"], 800);
    assert_eq!(v["conversion"]["click_id"], click_id.as_str());
    // Shopify retries with the same webhook id: the same answer.
    let (s, again) = to_shopify(&app, "orders/create", "wh-1", "shpss_test", &order).await;
    assert_eq!(
        (s, &again["conversion"]["conversion_id"]),
        (201, &v["conversion"]["conversion_id"])
    );
    // A tampered body or another secret: 401.
    let (s, _) = to_shopify(&app, "orders/create", "wh-2", "other", &order).await;
    assert_eq!(s, 401);

    let refund = |id: u64, amount: &str| {
        json!({
            "id": id,
            "order_id": 820_982_911_946_154_508_u64,
            "created_at": "2026-11-20T08:00:00-05:00",
            "refund_line_items": [],
            "transactions": [
                { "id": 1, "kind": "refund", "status": "success", "amount": amount, "currency": "USD" },
                { "id": 2, "kind": "refund", "status": "failure", "amount": "80.00", "currency": "USD" },
            ],
        })
    };
    let (s, v) = to_shopify(
        &app,
        "refunds/create",
        "wh-3",
        "shpss_test",
        &refund(509_562_969, "20.00"),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("refunded")), "{v}");
    assert_eq!(v["conversion"]["amount"], "60.00");
    assert_eq!(v["conversion"]["commission_minor"], 600);
    // The same refund under another webhook id: idempotent on the refund id.
    let (s, v) = to_shopify(
        &app,
        "refunds/create",
        "wh-4",
        "shpss_test",
        &refund(509_562_969, "20.00"),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("unchanged")), "{v}");
    let (s, v) = to_shopify(
        &app,
        "refunds/create",
        "wh-5",
        "shpss_test",
        &refund(509_562_970, "60.00"),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("reversed")), "{v}");
    let (_, listed) = app.api_get("/api/v1/conversions?limit=10").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["status"], "rejected");

    let (s, v) = to_shopify(
        &app,
        "products/update",
        "wh-6",
        "shpss_test",
        &json!({"id": 1}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")), "{v}");
}
