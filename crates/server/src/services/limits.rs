//! Rate limits of the public endpoints (`[limits]`), one per endpoint
//! class, keyed by client address. Per node by default: `governor`'s keyed
//! GCRA limiters keyed by a hash of the address under a random per-process
//! key (the address is never kept), so several nodes behind a balancer each
//! allow the configured rate. With `[limits] shared = true` (PostgreSQL),
//! every node takes from one GCRA per client in the database, keyed by a
//! hash under the day's shared visitor salt; when the database cannot be
//! reached the node falls back to its own limiter (docs/fraud.md).
//!
//! Tracking links never refuse a human: a click beyond the limit is
//! recorded invalid (rule `rate_limited`) and still redirected. `/postback`,
//! `/pixel.gif`, `/login` and `/api/v1/*` answer 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clickward_store::ClusterStore;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The id of the built-in rule of clicks beyond the tracking limit.
pub const RATE_LIMITED: &str = "rate_limited";

/// The endpoint classes that have a limit of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `/r`, `/ref`, `/go`.
    Tracking,
    /// `/postback`.
    Postback,
    /// `/pixel.gif`.
    Pixel,
    /// The dashboard's and portal's sign-in.
    Login,
    /// `/api/v1/*`.
    Api,
}

impl Class {
    /// The `endpoint` label of `clickward_rate_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            Class::Tracking => "tracking",
            Class::Postback => "postback",
            Class::Pixel => "pixel",
            Class::Login => "login",
            Class::Api => "api",
        }
    }
}

/// A rate as written: `"600/min"`, `"20/s"`, `"1000/h"`, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (also the burst).
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses a rate; `Ok(None)` for `off`.
    ///
    /// # Errors
    /// A message naming the text.
    pub fn parse(text: &str) -> Result<Option<Rate>, String> {
        let t = text.trim();
        if t == "off" {
            return Ok(None);
        }
        let bad =
            || format!("{text:?} is not a rate like \"600/min\", \"20/s\", \"1000/h\" or \"off\"");
        let (n, unit) = t.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" | "sec" => Duration::from_secs(1),
            "min" | "m" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Some(Rate { count, per }))
    }

    /// The rate as written.
    pub fn text(self) -> String {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        format!("{}/{unit}", self.count)
    }

    fn quota(self) -> Option<Quota> {
        Quota::with_period(self.per / self.count.get()).map(|q| q.allow_burst(self.count))
    }
}

struct Limiter {
    rate: Rate,
    keyed: DefaultKeyedRateLimiter<u64>,
    /// Requests refused (or clicks marked) since start, on this node.
    refused: AtomicU64,
}

/// The limits of one node.
pub struct Limits {
    classes: [Option<Limiter>; 5],
    key: [u8; 32],
    shared: Option<Arc<dyn ClusterStore>>,
    /// Set while the shared limiter cannot be reached (logged once).
    degraded: AtomicBool,
    /// While the shared limiter is away it is asked again only after this
    /// (ms since `started`): requests are not each held up by a dead
    /// connection attempt.
    retry_shared_at: AtomicU64,
    started: std::time::Instant,
}

/// How long a node uses its own limiter after the shared one failed.
const SHARED_BACKOFF: Duration = Duration::from_secs(5);

/// What the Live page shows of one class.
pub struct ClassState {
    /// The class.
    pub class: Class,
    /// Its configured rate; `None`: off.
    pub rate: Option<Rate>,
    /// Requests refused (tracking: clicks marked `rate_limited`) since this
    /// node started.
    pub refused: u64,
}

/// Every class, in the order of `[limits]`.
pub const CLASSES: [Class; 5] = [
    Class::Tracking,
    Class::Postback,
    Class::Pixel,
    Class::Login,
    Class::Api,
];

fn index(c: Class) -> usize {
    match c {
        Class::Tracking => 0,
        Class::Postback => 1,
        Class::Pixel => 2,
        Class::Login => 3,
        Class::Api => 4,
    }
}

impl Limits {
    /// Limiters for the configured rates (`None`: off), in the order
    /// tracking, postback, pixel, login, api; `shared`: the store every
    /// node takes from (`[limits] shared`), else per node.
    pub fn new(rates: [Option<Rate>; 5], shared: Option<Arc<dyn ClusterStore>>) -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        Self {
            classes: rates.map(|r| {
                r.and_then(|rate| {
                    rate.quota().map(|q| Limiter {
                        rate,
                        keyed: RateLimiter::keyed(q),
                        refused: AtomicU64::new(0),
                    })
                })
            }),
            key,
            shared,
            degraded: AtomicBool::new(false),
            retry_shared_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// Counts a request of `class` from `ip`: `Ok` within the limit, else
    /// how long until the next one is allowed, and the rate. `client_key`
    /// gives the shared limiter's key of `ip` (called only when shared).
    pub async fn check(
        &self,
        class: Class,
        ip: IpAddr,
        client_key: impl FnOnce() -> anyhow::Result<[u8; 16]>,
    ) -> Result<(), (Duration, Rate)> {
        let Some(l) = &self.classes[index(class)] else {
            return Ok(());
        };
        let answer = match self.check_shared(l, class, client_key).await {
            Some(a) => a,
            None => self.check_local(l, ip),
        };
        if answer.is_err() {
            l.refused.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The shared limiter's answer; `None` when there is none or it cannot
    /// be reached (the node's own limiter answers then).
    async fn check_shared(
        &self,
        l: &Limiter,
        class: Class,
        client_key: impl FnOnce() -> anyhow::Result<[u8; 16]>,
    ) -> Option<Result<(), (Duration, Rate)>> {
        let store = self.shared.as_ref()?;
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now_ms < self.retry_shared_at.load(Ordering::Relaxed) {
            return None;
        }
        let interval = i64::try_from((l.rate.per / l.rate.count.get()).as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let tolerance = interval.saturating_mul(i64::from(l.rate.count.get()));
        let taken = match client_key() {
            Ok(key) => store
                .take_shared_rate(class.label(), key, interval, tolerance)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match taken {
            Ok(Some(wait)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("the shared rate limiter answers again");
                }
                Some(match wait {
                    None => Ok(()),
                    Some(us) => Err((
                        Duration::from_micros(u64::try_from(us).unwrap_or(1)),
                        l.rate,
                    )),
                })
            }
            Ok(None) => None,
            Err(e) => {
                let backoff = u64::try_from(SHARED_BACKOFF.as_millis()).unwrap_or(u64::MAX);
                self.retry_shared_at
                    .store(now_ms.saturating_add(backoff), Ordering::Relaxed);
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the shared rate limiter cannot be reached; limits are per node until it can (asked again every 5 s): {e}"
                    );
                }
                None
            }
        }
    }

    fn check_local(&self, l: &Limiter, ip: IpAddr) -> Result<(), (Duration, Rate)> {
        let hash = super::fraud::address_hash(&self.key, ip);
        let mut k = [0u8; 8];
        k.copy_from_slice(&hash[..8]);
        l.keyed
            .check_key(&u64::from_le_bytes(k))
            .map_err(|not_until| {
                (
                    not_until.wait_time_from(DefaultClock::default().now()),
                    l.rate,
                )
            })
    }

    /// Forgets clients whose limits have fully recovered (run every minute),
    /// here and in the shared limiter.
    pub async fn sweep(&self) {
        for l in self.classes.iter().flatten() {
            l.keyed.retain_recent();
            l.keyed.shrink_to_fit();
        }
        if let Some(store) = &self.shared
            && let Err(e) = store.sweep_shared_rates().await
        {
            tracing::debug!("shared rate limits not swept: {e}");
        }
    }

    /// The configured rate of `class`.
    pub fn rate(&self, class: Class) -> Option<Rate> {
        self.classes[index(class)].as_ref().map(|l| l.rate)
    }

    /// Whether every node takes from one shared limiter.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Each class's rate and refusals since start, for the Live page.
    pub fn state(&self) -> Vec<ClassState> {
        CLASSES
            .iter()
            .map(|&class| {
                let l = self.classes[index(class)].as_ref();
                ClassState {
                    class,
                    rate: l.map(|l| l.rate),
                    refused: l.map_or(0, |l| l.refused.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }
}

/// `Retry-After` seconds for a wait (at least 1).
pub fn retry_after_s(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse_by_name() {
        assert_eq!(Rate::parse("off"), Ok(None));
        let r = Rate::parse("600/min").unwrap();
        assert_eq!(r.map(|r| (r.count.get(), r.per.as_secs())), Some((600, 60)));
        assert_eq!(r.map(Rate::text).as_deref(), Some("600/min"));
        for bad in ["600", "0/s", "ten/min", "5/day", "-1/s"] {
            assert!(Rate::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    /// A shared store that cannot be reached, counting how often it is asked.
    struct Away(AtomicU64);

    impl ClusterStore for Away {
        fn take_shared_rate(
            &self,
            _: &'static str,
            _: [u8; 16],
            _: i64,
            _: i64,
        ) -> clickward_store::StoreFuture<'_, Option<Option<clickward_core::Micros>>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {
                Err(clickward_store::StoreError::Unavailable(
                    "connection refused".into(),
                ))
            })
        }
    }

    #[tokio::test]
    async fn without_the_shared_store_the_node_limits_alone_and_asks_again_later() {
        let away = Arc::new(Away(AtomicU64::new(0)));
        let l = Limits::new(
            [None, Rate::parse("2/min").unwrap(), None, None, None],
            Some(away.clone()),
        );
        let a: IpAddr = [203, 0, 113, 1].into();
        let answers: Vec<bool> =
            futures::future::join_all((0..3).map(|_| l.check(Class::Postback, a, || Ok([1; 16]))))
                .await
                .iter()
                .map(Result::is_ok)
                .collect();
        assert_eq!(answers, [true, true, false], "the node's own limit holds");
        assert_eq!(
            away.0.load(Ordering::Relaxed),
            1,
            "asked once, then left alone for the backoff"
        );
    }

    #[tokio::test]
    async fn a_client_beyond_its_burst_waits_and_others_do_not() {
        let rate = Rate::parse("3/min").unwrap();
        let l = Limits::new([None, rate, None, None, None], None);
        let a: IpAddr = [203, 0, 113, 1].into();
        let b: IpAddr = [203, 0, 113, 2].into();
        let unshared = || -> anyhow::Result<[u8; 16]> { unreachable!("per node") };
        for _ in 0..3 {
            assert!(l.check(Class::Postback, a, unshared).await.is_ok());
        }
        let (wait, _) = l.check(Class::Postback, a, unshared).await.err().unwrap();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.check(Class::Postback, b, unshared).await.is_ok());
        assert!(
            l.check(Class::Tracking, a, unshared).await.is_ok(),
            "tracking is off"
        );
        let refused: Vec<u64> = l.state().iter().map(|c| c.refused).collect();
        assert_eq!(refused, [0, 1, 0, 0, 0]);
    }
}
