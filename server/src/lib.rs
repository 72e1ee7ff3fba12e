//! Turnstile's server side: the HTTP/1.1 engine, the request threads of a
//! worker, and the arbiter that forks and supervises workers.
//!
//! This is the only crate that reads and writes sockets, spawns threads,
//! forks or handles signals, and the only one allowed `unsafe` (in its
//! fork and signal module, each use documented).
//!
//! Built so far: [`http1`], the request-head parser and body framing, which
//! do no I/O. The connection loop, threads and arbiter come next; until then
//! applications run in-process through [`turnstile_core::test::serve`].

pub mod http1;
