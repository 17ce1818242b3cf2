-- Conversion sources that are platforms (Stripe, Shopify): see
-- crates/server/src/services/integrations and docs/integrations.md.

-- A program's integration settings (JSON: {"stripe": …, "shopify": …});
-- their secrets are the program's, like postback_secret.
ALTER TABLE programs ADD COLUMN integrations TEXT;

-- Each platform event handled, with the answer it got: a replay of the
-- same event id gets the same answer and changes nothing. Only answers
-- that say the event was handled (2xx) are kept; a failed one is retried.
CREATE TABLE integration_events (
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (program_id, source, event_id)
);
CREATE INDEX integration_events_received ON integration_events (received_at);

-- The platform's ids that name a conversion (a Stripe invoice, payment
-- intent, charge or checkout session; a Shopify order): how a refund finds
-- what it refunds, and what the buyer paid (minor units of the payment's
-- currency, when the platform's refunds do not say it).
CREATE TABLE integration_refs (
    program_id    INTEGER NOT NULL REFERENCES programs (id),
    source        TEXT NOT NULL,
    ref           TEXT NOT NULL,
    conversion_id BLOB NOT NULL,
    total         INTEGER,
    PRIMARY KEY (program_id, source, ref)
);

-- A platform's customer and the click that brought them: renewals that
-- carry no click id are attributed to it (first click kept).
CREATE TABLE integration_customers (
    program_id    INTEGER NOT NULL REFERENCES programs (id),
    source        TEXT NOT NULL,
    customer      TEXT NOT NULL,
    click_id      BLOB,
    first_paid_at INTEGER,
    ended_at      INTEGER,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (program_id, source, customer)
);
CREATE INDEX integration_customers_click ON integration_customers (click_id) WHERE click_id IS NOT NULL;

-- Refunds, one row per refund key (a Stripe charge, whose refunded total
-- only grows; a Shopify refund id): `refunded` of `total`, minor units
-- of the payment's currency.
CREATE TABLE conversion_refunds (
    conversion INTEGER NOT NULL REFERENCES conversions (id),
    refund_key TEXT NOT NULL,
    refunded   INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (conversion, refund_key)
);

-- A partly refunded conversion's amount and commission are what is left;
-- these keep what they were before the first refund (NULL: never refunded).
ALTER TABLE conversions ADD COLUMN gross_amount INTEGER;
ALTER TABLE conversions ADD COLUMN gross_commission INTEGER;
