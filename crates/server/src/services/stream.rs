//! The stream to NATS JetStream (`[stream] nats = "nats://…"`): every click
//! as `click.recorded` on `clickward.click.<program>` and every outbox event
//! on `clickward.<event type>`, each with `Nats-Msg-Id` = its id (`clk_` +
//! the click's ULID, or the event's `evt_` id), so JetStream drops a message
//! it already has when one is published again.
//!
//! Clicks are read from the clicks table by insertion order (`seq`), never
//! written twice on the redirect path; events from the outbox. Each reader's
//! cursor moves only after JetStream acknowledged everything up to it, so a
//! NATS server that is down at start or goes away for a while loses
//! nothing: the publisher retries with backoff, and what it publishes again
//! carries the same ids. Memory is bounded by one batch per reader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use clickward_store::{ClickRow, OutboxEvent, Store};
use tokio::sync::watch;

use crate::telemetry;

/// `[stream]` settings, checked.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The NATS server URL.
    pub url: String,
    /// The JetStream stream to publish into (created when absent, with
    /// subjects `clickward.>`).
    pub stream: String,
    /// Messages per batch (one batch in flight per reader).
    pub batch: u32,
    /// How long JetStream remembers a `Nats-Msg-Id` (the stream's
    /// duplicate window, set when clickward creates it).
    pub duplicate_window: Duration,
}

/// The subject of a click of `program`: `clickward.click.<program>` (a `.`
/// in a slug becomes `_`: it separates subject tokens).
pub fn click_subject(program: &str) -> String {
    format!(
        "clickward.click.{}",
        program.replace(['.', '*', '>', ' '], "_")
    )
}

/// The message of a click: `{"id","type":"click.recorded","ts","data":{"v":1,
/// "click":{…}}}`, the click as the API shows it without its visitor key.
pub fn click_message(c: &ClickRow) -> (String, Vec<u8>) {
    let id = format!("clk_{}", c.click_id);
    let body = ClickMessage {
        id: &id,
        kind: "click.recorded",
        ts: c.ts,
        data: ClickData {
            v: clickward_core::event::PAYLOAD_VERSION,
            click: ClickOut {
                click_id: &c.click_id,
                ts: c.ts,
                link: &c.link,
                program: &c.program,
                affiliate: c.affiliate.as_deref(),
                src: c.src.as_deref(),
                subs: &c.subs,
                referrer: c.referrer.as_deref(),
                device: &c.device,
                os: c.os.as_deref(),
                browser: c.browser.as_deref(),
                bot_reason: c.bot_reason.as_deref(),
                invalid_reason: c.invalid_reason.as_deref(),
                country: c.country.as_deref(),
                region: c.region.as_deref(),
                city: c.city.as_deref(),
                unique: c.unique,
            },
        },
    };
    (id.clone(), serde_json::to_vec(&body).unwrap_or_default())
}

/// A click as the stream carries it: the API's fields without the visitor key.
#[derive(serde::Serialize)]
struct ClickOut<'a> {
    click_id: &'a clickward_core::id::ClickId,
    ts: i64,
    link: &'a str,
    program: &'a str,
    affiliate: Option<&'a str>,
    src: Option<&'a str>,
    subs: &'a [Option<String>; 5],
    referrer: Option<&'a str>,
    device: &'a str,
    os: Option<&'a str>,
    browser: Option<&'a str>,
    bot_reason: Option<&'a str>,
    invalid_reason: Option<&'a str>,
    country: Option<&'a str>,
    region: Option<&'a str>,
    city: Option<&'a str>,
    unique: bool,
}

#[derive(serde::Serialize)]
struct ClickData<'a> {
    v: u32,
    click: ClickOut<'a>,
}

#[derive(serde::Serialize)]
struct ClickMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    ts: i64,
    data: ClickData<'a>,
}

/// The message of an outbox event: the webhook body (`{"id","type",
/// "timestamp","data"}`).
pub fn event_message(e: &OutboxEvent) -> Vec<u8> {
    super::delivery::sink::webhook_body(&e.id, &e.kind, e.ts, &e.payload)
}

/// How long a gap in `seq` may be a write still committing (PostgreSQL).
const GAP_WAIT: Duration = Duration::from_secs(10);

/// Remembers since when the reader has seen the first gap after its
/// cursor, to pass it only once it has stayed open [`GAP_WAIT`].
#[derive(Debug, Default)]
struct GapWatch {
    open: Option<(i64, Instant)>,
}

impl GapWatch {
    /// How many of `seqs` (ascending, after `cursor`) may be taken now.
    fn settled(&mut self, cursor: i64, seqs: &[i64], now: Instant) -> usize {
        let mut expect = cursor + 1;
        for (i, &s) in seqs.iter().enumerate() {
            if s != expect {
                match self.open {
                    Some((at, since)) if at == expect && now.duration_since(since) >= GAP_WAIT => {}
                    Some((at, _)) if at == expect => return i,
                    _ => {
                        self.open = Some((expect, now));
                        return i;
                    }
                }
            }
            expect = s + 1;
        }
        self.open = None;
        seqs.len()
    }
}

/// Makes the readers' cursors where they do not exist yet, at the heads of
/// the clicks and the outbox: a stream configured now starts with what is
/// written from now on (history is not replayed). Called before the server
/// accepts its first request, so no click falls between the head and the
/// publisher's first read.
///
/// # Errors
/// The store's.
pub async fn init_cursors(store: &dyn Store) -> anyhow::Result<()> {
    start_at(store, "stream.clicks", async {
        Ok(store.click_seq_head().await?)
    })
    .await?;
    start_at(store, "stream.outbox", async {
        Ok(store.outbox_head().await?)
    })
    .await?;
    Ok(())
}

/// Starts the publisher on a thread and runtime of its own (reading,
/// encoding and publishing every click is steady work that must not queue
/// behind, or in front of, redirects on the server's workers); it runs
/// until `stopped`.
///
/// # Errors
/// When the thread or its runtime cannot be made.
pub fn spawn(
    store: Arc<dyn Store>,
    settings: StreamSettings,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(std::thread::Builder::new()
        .name("clickward-stream".to_owned())
        .spawn(move || {
            rt.block_on(async move {
                let run = run(store, settings);
                tokio::select! {
                    _ = async { let _ = stopped.wait_for(|s| *s).await; } => {}
                    () = run => {}
                }
            });
        })?)
}

async fn run(store: Arc<dyn Store>, s: StreamSettings) {
    let mut backoff = Duration::from_millis(200);
    let js = loop {
        match connect(&s).await {
            Ok(js) => break js,
            Err(e) => {
                metrics::counter!(telemetry::STREAM_ERRORS_TOTAL).increment(1);
                tracing::warn!(
                    "stream: NATS at {} is not ready ({e}); retrying in {backoff:?}",
                    s.url
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    tracing::info!(
        "stream: publishing clicks and events to JetStream stream {} at {}",
        s.stream,
        s.url
    );
    let commit_order = store.seq_is_commit_order();
    let (mut clicks_gap, mut events_gap) = (GapWatch::default(), GapWatch::default());
    let mut backoff = Duration::from_millis(200);
    loop {
        let round = async {
            let c = clicks_round(store.as_ref(), &js, &s, commit_order, &mut clicks_gap).await?;
            let e = events_round(store.as_ref(), &js, &s, commit_order, &mut events_gap).await?;
            anyhow::Ok(c + e)
        }
        .await;
        match round {
            Ok(n) => {
                backoff = Duration::from_millis(200);
                if n < s.batch as usize {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) => {
                metrics::counter!(telemetry::STREAM_ERRORS_TOTAL).increment(1);
                tracing::warn!(
                    "stream: publishing failed ({e:#}); retrying in {backoff:?} from the last acknowledged position"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn connect(s: &StreamSettings) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(s.url.as_str())
        .await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: s.stream.clone(),
        subjects: vec!["clickward.>".to_owned()],
        duplicate_window: s.duplicate_window,
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// Where a reader starts the first time: at the head, so configuring a
/// stream does not replay history (replay it with the export instead).
async fn start_at(
    store: &dyn Store,
    name: &'static str,
    head: impl std::future::Future<Output = anyhow::Result<i64>>,
) -> anyhow::Result<i64> {
    Ok(match store.cursor(name).await? {
        Some(c) => c,
        None => {
            let head = head.await?;
            store.set_cursor(name, head).await?;
            head
        }
    })
}

/// Publishes `msgs` and waits for every acknowledgement (10 s at most).
async fn publish_all(
    js: &jetstream::Context,
    msgs: Vec<(String, String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(msgs.len());
    for (subject, id, body) in msgs {
        let ack = js
            .send_publish(
                subject,
                PublishMessage::build().payload(body.into()).message_id(id),
            )
            .await?;
        acks.push(ack);
    }
    let all =
        futures::future::try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future));
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .map_err(|_| anyhow::anyhow!("no acknowledgement from JetStream within 10 s"))??;
    Ok(())
}

async fn clicks_round(
    store: &dyn Store,
    js: &jetstream::Context,
    s: &StreamSettings,
    commit_order: bool,
    gap: &mut GapWatch,
) -> anyhow::Result<usize> {
    let head = async { Ok(store.click_seq_head().await?) };
    let cursor = start_at(store, "stream.clicks", head).await?;
    let mut rows = store.clicks_after(cursor, s.batch).await?;
    if !commit_order {
        let seqs: Vec<i64> = rows.iter().map(|(q, _)| *q).collect();
        rows.truncate(gap.settled(cursor, &seqs, Instant::now()));
    }
    let Some(last) = rows.last().map(|(q, _)| *q) else {
        return Ok(0);
    };
    let n = rows.len();
    let msgs = rows
        .iter()
        .map(|(_, c)| {
            let (id, body) = click_message(c);
            (click_subject(&c.program), id, body)
        })
        .collect();
    publish_all(js, msgs).await?;
    store.set_cursor("stream.clicks", last).await?;
    metrics::counter!(telemetry::STREAM_PUBLISHED_TOTAL, "kind" => "click").increment(n as u64);
    Ok(n)
}

async fn events_round(
    store: &dyn Store,
    js: &jetstream::Context,
    s: &StreamSettings,
    commit_order: bool,
    gap: &mut GapWatch,
) -> anyhow::Result<usize> {
    let cursor = start_at(store, "stream.outbox", async {
        Ok(store.outbox_head().await?)
    })
    .await?;
    let mut events = store.outbox_after(cursor, s.batch).await?;
    if !commit_order {
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        events.truncate(gap.settled(cursor, &seqs, Instant::now()));
    }
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let n = events.len();
    let msgs = events
        .iter()
        .map(|e| {
            (
                format!("clickward.{}", e.kind),
                e.id.clone(),
                event_message(e),
            )
        })
        .collect();
    publish_all(js, msgs).await?;
    store.set_cursor("stream.outbox", last).await?;
    metrics::counter!(telemetry::STREAM_PUBLISHED_TOTAL, "kind" => "event").increment(n as u64);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_holds_the_reader_until_it_has_stayed_open_a_while() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        assert_eq!(g.settled(0, &[1, 2, 3], t0), 3);
        // 5 is missing: stop before 6, and keep stopping while it is fresh.
        assert_eq!(g.settled(3, &[4, 6, 7], t0), 1);
        assert_eq!(g.settled(4, &[6, 7], t0 + Duration::from_secs(5)), 0);
        // 5 committed meanwhile: all taken, the gap forgotten.
        assert_eq!(g.settled(4, &[5, 6, 7], t0 + Duration::from_secs(6)), 3);
        // A gap that never fills is passed after GAP_WAIT.
        assert_eq!(g.settled(7, &[9], t0 + Duration::from_secs(7)), 0);
        assert_eq!(g.settled(7, &[9], t0 + Duration::from_secs(18)), 1);
    }

    #[test]
    fn subjects_keep_one_token_per_program() {
        assert_eq!(click_subject("shop"), "clickward.click.shop");
        assert_eq!(click_subject("shop.eu"), "clickward.click.shop_eu");
    }
}
