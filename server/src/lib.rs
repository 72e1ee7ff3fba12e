//! Turnstile's server side: the HTTP/1.1 engine, the request threads of a
//! worker, and the arbiter that forks and supervises workers.
//!
//! This is the only crate that reads and writes sockets, spawns threads,
//! forks or handles signals, and the only one allowed `unsafe` (in its
//! fork and signal module, each use documented).
//!
//! Built so far: [`http1`] (parsing and framing, which do no I/O, and the
//! connection loop), the poller where connections wait between requests,
//! and [`Server`], a pool of request threads in one process.
//! The pre-fork arbiter comes next.

pub mod http1;
mod poller;
mod threads;

pub use threads::{DEFAULT_THREADS, Server, ServerHandle};
