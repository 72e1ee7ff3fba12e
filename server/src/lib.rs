//! Turnstile's server side: the HTTP/1.1 engine, the request threads of a
//! worker, and the arbiter that forks and supervises workers.
//!
//! This is the only crate that reads and writes sockets, spawns threads,
//! forks or handles signals, and the only one allowed `unsafe` (in its
//! fork and signal module, each use documented).
//!
//! The engine lands with the HTTP/1.1 issue; until then applications run
//! in-process through [`turnstile_core::test::serve`].
