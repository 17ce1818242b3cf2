//! clickward: the server and CLI.
//!
//! # Layout
//! The folders say the role; `docs/architecture.md` is the map.
//! - [`http`]: request handling (tracking redirects, admin API, conversion
//!   intake, live events, ops) and [`dashboard`]: the dashboard and portal
//!   pages. Handlers are thin: they extract, call a service, answer.
//! - [`services`]: domain services handlers call (click pipeline,
//!   conversion intake, live events, cluster shipping, link cache,
//!   reports). They receive the parts they use, never the whole state.
//! - [`process`]: the running process (state, start-up, configuration,
//!   secrets, catalogue file).
//! - [`cli`]: the `clickward` command line, one file per command group,
//!   with import, export and synthetic data beside it.
//! - [`clock`], [`telemetry`]: leaves every layer may use (the time source,
//!   every metric name declared once).

pub mod cli;
pub mod clock;
pub mod dashboard;
pub mod http;
pub mod process;
pub mod services;
pub mod telemetry;

pub use process::app::{AppState, Server};
