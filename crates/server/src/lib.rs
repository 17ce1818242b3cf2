//! clickward: the server and CLI.
//!
//! # Layout
//! - [`app`]: state, start-up, background tasks, graceful shutdown;
//! - [`http`]: routes (tracking redirects, admin API, ops);
//! - [`ingest`]: the click pipeline (bounded queue → batched writer);
//! - [`config`], [`catalog`], [`secrets`]: what is read from disk;
//! - [`cli`]: the `clickward` command line; [`import`]: CSV history import;
//! - [`telemetry`]: every metric name, declared once.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conversions;
pub mod dashboard;
pub mod events;
pub mod export;
pub mod generate;
pub mod http;
pub mod import;
pub mod ingest;
pub mod links;
pub mod report_output;
pub mod secrets;
pub mod telemetry;

pub use app::{AppState, Server};
