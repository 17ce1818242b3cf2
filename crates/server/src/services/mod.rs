//! Domain services that handlers call. Each receives the parts it uses
//! (store, clock, event hub, link cache, metrics), never the whole
//! `AppState`, and none imports a handler or start-up module.
//!
//! - [`ingest`]: the click pipeline (bounded queue → batched writer);
//! - [`catalog`]: catalogue writes (programs, affiliates, links) that keep
//!   the link cache and postback tokens right;
//! - [`programs`]: everything a program can be told (the catalogue file,
//!   the API, the CLI and the dashboard say it the same way);
//! - [`conversions`]: conversion intake (postback, API, pixel) and status
//!   changes;
//! - [`events`]: the live event hub (SSE);
//! - [`integrations`]: Stripe's and Shopify's webhooks as conversions,
//!   renewals and refunds;
//! - [`delivery`]: webhooks and affiliate postbacks sent from the outbox
//!   (endpoints, dispatch, leases, signed requests, retries, replays);
//! - [`cluster`]: shipping a node's spool and exchanging notices with other
//!   nodes;
//! - [`links`]: the link cache the redirect reads;
//! - [`keys`]: API keys and tokens (made, hashed);
//! - [`fraud`]: the rule book, velocity counters, excluded traffic, rule
//!   and exclusion changes;
//! - [`limits`]: per-client rate limits of the public endpoints;
//! - [`privacy`]: erasure and access requests, their receipts;
//! - [`mail`]: e-mail through an SMTP relay (conversions, payouts,
//!   disabled endpoints, magic links);
//! - [`stream`]: clicks and outbox events to NATS JetStream;
//! - [`rescore`]: stored clicks and conversions judged again under today's
//!   rules (`clickward fraud rescore`);
//! - [`reports`]: report arguments, planning and output (CLI, API,
//!   dashboard).

pub mod catalog;
pub mod cluster;
pub mod conversions;
pub mod delivery;
pub mod events;
pub mod fraud;
pub mod ingest;
pub mod integrations;
pub mod keys;
pub mod limits;
pub mod links;
pub mod mail;
pub mod privacy;
pub mod programs;
pub mod qr;
pub mod reports;
pub mod rescore;
pub mod stream;
