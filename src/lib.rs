//! Turnstile: a small, synchronous, pre-forking HTTP/1.1 server for Rust
//! applications, with the observability a production service needs built in
//! as layers.
//!
//! This crate gathers the three parts under one name:
//!
//! * the gateway interface ([`turnstile_core`], re-exported at the root):
//!   [`Request`], [`Response`], [`Application`], [`Layer`], [`Stack`];
//! * [`middleware`]: the layers;
//! * [`server`]: the HTTP/1.1 engine, worker threads and the arbiter.
//!
//! It also holds the `turnstile` command line ([`cli`]), the applications it
//! serves ([`apps`]), its settings ([`config`]), its `tracing` subscriber ([`logging`]) and the
//! server hooks that reach the layers ([`hooks`]).

#![forbid(unsafe_code)]

pub mod apps;
pub mod cli;
pub mod config;
pub mod hooks;
pub mod logging;

pub use turnstile_core::*;
pub use turnstile_middleware as middleware;
pub use turnstile_server as server;
