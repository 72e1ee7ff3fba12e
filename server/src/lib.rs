//! Turnstile's server side: the HTTP/1.1 engine, the request threads of a
//! worker, and the arbiter that forks and supervises workers.
//!
//! This is the only crate that reads and writes sockets, spawns threads,
//! forks or handles signals, and the only one allowed `unsafe`: the fork
//! in the arbiter and the adoption of an inherited socket in `listen.rs`,
//! each with its `SAFETY` comment.
//!
//! - [`http1`]: parsing and framing, which do no I/O, and the connection
//!   loop;
//! - the poller, where connections wait between requests, and [`Server`],
//!   a pool of request threads in one process (a worker, or a test);
//! - [`Arbiter`]: binds the [`Listener`]s, forks the workers and supervises
//!   them, with its [`hooks`].

mod arbiter;
mod budget;
pub mod error_log;
pub mod forwarded;
pub mod hooks;
pub mod http1;
mod in_flight;
mod listen;
mod poller;
pub mod process_setup;
pub mod prometheus;
mod protocol;
pub mod request_ids;
mod sched;
mod serve;
mod spool;
mod supervisor;
mod threads;
mod worker;

pub use arbiter::{Arbiter, ArbiterConfig};
pub use in_flight::InFlight;
pub use listen::{DEFAULT_BACKLOG, Listener};
pub use protocol::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
pub use spool::check_spool_dir;
pub use threads::{DEFAULT_THREADS, Server, ServerHandle};
