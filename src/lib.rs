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
//! It also holds the whole server for one's own application ([`main`],
//! [`Main`], in [`cli`]), its settings ([`config`]), its `tracing` subscriber ([`subscriber`]) and the
//! server hooks that reach the layers ([`layer_hooks`]).
//!
//! Every layer is a Cargo feature of its name, all on by default, and the
//! command line ([`main`], [`Main`], the settings, the `turnstile` binary)
//! is the `cli` feature, which takes them all: with
//! `default-features = false, features = ["headers"]` a program compiles
//! the server, the router and that one layer.

#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod layer_hooks;
pub mod router;
#[cfg(feature = "cli")]
pub mod subscriber;

#[cfg(feature = "cli")]
pub use cli::{Main, Settings, main};
pub use router::Router;
pub use turnstile_core::*;
pub use turnstile_middleware as middleware;
pub use turnstile_server as server;
