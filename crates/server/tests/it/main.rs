//! Integration tests over real HTTP: the server runs in-process on port 0
//! (or as the real binary where signals matter) and is driven with reqwest.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod helpers;

mod api;
mod browser;
mod classify;
mod cli;
mod conversions;
mod dashboard;
mod dedup;
mod deploy;
mod events;
mod fraud;
mod fuzz;
mod geo;
mod integrations;
mod mail;
mod multinode;
mod openapi;
mod privacy;
mod redirect;
mod shutdown;
mod stream;
mod trust;
mod webhooks;
