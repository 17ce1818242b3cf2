//! `clickward webhook`: webhook and affiliate postback endpoints, the
//! delivery log and replays. The running server sends what these queue.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use clickward_core::delivery::EndpointKind;
use clickward_store::{DeliveryQuery, Endpoint, Store};

use crate::clock::SystemClock;
use crate::process::config::Validated;
use crate::services::delivery::http::Outbound;
use crate::services::delivery::{DeliveryService, EndpointSpec};

/// `clickward webhook …`
#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Add a webhook endpoint (or, with --postback, an affiliate's postback);
    /// prints its id and signing secret.
    Add {
        /// The URL (a postback's may hold macros: {click_id} {amount} …).
        #[arg(long)]
        url: String,
        /// Event filter, comma-separated: "*", "conversion.*", "payout.created" …
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Only events about this program.
        #[arg(long)]
        program: Option<String>,
        /// Only events about this affiliate (a postback's owner).
        #[arg(long)]
        affiliate: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// An affiliate postback (URL template, conversion events only).
        #[arg(long)]
        postback: bool,
        /// GET or POST (postbacks; default GET).
        #[arg(long)]
        method: Option<String>,
    },
    /// List endpoints.
    List,
    /// Stop sending to an endpoint (its deliveries wait).
    Disable {
        /// `ep_…`
        id: String,
    },
    /// Send to an endpoint again (clears its failure record).
    Enable {
        /// `ep_…`
        id: String,
    },
    /// Make a new signing secret; the old one signs beside it for 24 h.
    RotateSecret {
        /// `ep_…`
        id: String,
    },
    /// Queue a `webhook.test` event to one endpoint.
    Test {
        /// `ep_…`
        id: String,
    },
    /// Send one delivery again (`replay 42`), or every event of a type and
    /// time range to an endpoint (`replay --endpoint ep_… --from … --to …`).
    Replay {
        /// A delivery id.
        delivery: Option<i64>,
        /// The endpoint to replay a range to.
        #[arg(long)]
        endpoint: Option<String>,
        /// Event filter for a range (default "*").
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Range start: RFC 3339 or Unix seconds.
        #[arg(long)]
        from: Option<String>,
        /// Range end (exclusive).
        #[arg(long)]
        to: Option<String>,
    },
    /// The delivery log, newest first.
    Deliveries {
        /// One endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// pending, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One delivery with its attempts.
    Delivery {
        /// A delivery id.
        id: i64,
    },
}

fn print_endpoint(e: &Endpoint) -> anyhow::Result<()> {
    outln!(
        "{}  {:<8} {:<8} {:<5} {:<24} {}{}",
        e.id,
        e.kind.as_str(),
        if e.enabled { "enabled" } else { "disabled" },
        e.method.as_str(),
        e.events.join(","),
        e.url,
        e.disabled_reason
            .as_deref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Runs `clickward webhook …`.
///
/// # Errors
/// Bad arguments, refused settings and store errors, with context.
pub(super) async fn run(
    v: &Validated,
    store: Arc<dyn Store>,
    cmd: WebhookCmd,
) -> anyhow::Result<()> {
    let outbound = Outbound::new(v.config.outbound.allow_private, v.config.outbound.timeout)?;
    let service = DeliveryService::new(store, Arc::new(SystemClock), outbound);
    match cmd {
        WebhookCmd::Add {
            url,
            events,
            program,
            affiliate,
            description,
            postback,
            method,
        } => {
            let kind = if postback {
                EndpointKind::Postback
            } else {
                EndpointKind::Webhook
            };
            let spec = EndpointSpec {
                url: Some(url),
                method,
                events: (!events.is_empty()).then_some(events),
                program,
                affiliate,
                description,
            };
            let (e, secret) = service.add(kind, spec).await?;
            outln!("created {} {}", e.kind.as_str(), e.id);
            outln!("secret {secret}");
            outln!("(the secret is shown once; receivers verify webhook-signature with it)");
        }
        WebhookCmd::List => {
            for e in service.list(None).await? {
                print_endpoint(&e)?;
            }
        }
        WebhookCmd::Disable { id } => {
            print_endpoint(&service.set_enabled(&id, false, "the CLI").await?)?
        }
        WebhookCmd::Enable { id } => {
            print_endpoint(&service.set_enabled(&id, true, "the CLI").await?)?
        }
        WebhookCmd::RotateSecret { id } => {
            let (e, secret) = service.rotate_secret(&id).await?;
            outln!("rotated {}", e.id);
            outln!("secret {secret}");
            outln!("(the old secret signs beside it for 24 h)");
        }
        WebhookCmd::Test { id } => {
            let d = service.test(&id).await?;
            outln!("queued delivery {d} (webhook.test); the running server sends it");
        }
        WebhookCmd::Replay {
            delivery,
            endpoint,
            events,
            from,
            to,
        } => match (delivery, endpoint) {
            (Some(d), None) => {
                service.replay(d).await?;
                outln!("delivery {d} queued again");
            }
            (None, Some(ep)) => {
                let parse = |t: Option<String>, what: &str| {
                    let t = t.with_context(|| format!("--{what} is needed with --endpoint"))?;
                    clickward_core::parse_timestamp(&t)
                        .map_err(|e| anyhow::anyhow!("--{what}: {e}"))
                };
                let (from, to) = (parse(from, "from")?, parse(to, "to")?);
                let events = if events.is_empty() {
                    vec!["*".to_owned()]
                } else {
                    events
                };
                let n = service.replay_range(&ep, events, from, to).await?;
                outln!("{n} deliveries queued to {ep}");
            }
            _ => anyhow::bail!("give a delivery id, or --endpoint with --from and --to"),
        },
        WebhookCmd::Deliveries {
            endpoint,
            status,
            limit,
        } => {
            let rows = service
                .deliveries(DeliveryQuery {
                    endpoint,
                    affiliate: None,
                    status,
                    before: None,
                    limit: limit.clamp(1, 1000),
                })
                .await?;
            for d in rows {
                outln!(
                    "{:>8}  {}  {:<20} {:<9} attempts {:<2} last {} {}",
                    d.id,
                    d.endpoint,
                    d.kind,
                    d.status,
                    d.attempts,
                    d.last_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    d.last_error.unwrap_or_default()
                );
            }
        }
        WebhookCmd::Delivery { id } => {
            let (d, attempts) = service.delivery(id).await?;
            outln!(
                "delivery {} to {}: {} {} ({}), {} attempts",
                d.id,
                d.endpoint,
                d.kind,
                d.event_id,
                d.status,
                d.attempts
            );
            for a in attempts {
                outln!(
                    "  #{} {} {:.1} ms {} {}",
                    a.n,
                    a.url,
                    a.latency_us as f64 / 1000.0,
                    a.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    a.error.unwrap_or(a.response)
                );
            }
        }
    }
    Ok(())
}
