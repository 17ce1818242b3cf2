//! The running process: what is read from disk at start (configuration,
//! secrets, the catalogue file) and the state that composes the services
//! for the handlers ([`app::AppState`], [`app::Server::start`]).

pub mod app;
pub mod catalog;
pub mod config;
pub mod listen;
pub mod secrets;
