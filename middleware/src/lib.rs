//! Turnstile's layers: each module is one [`Layer`](turnstile_core::Layer)
//! with its configuration type and the application it wraps around yours.
//!
//! Layers never touch sockets, threads or processes: they see a
//! [`Request`](turnstile_core::Request) going in and a
//! [`Response`](turnstile_core::Response) coming out, plus the completion
//! hook that tells them when the last byte left the server. That is what lets
//! each one be unit-tested with [`turnstile_core::test`] and used under any
//! server.
//!
//! - [`error_capture`]: errors and panics answered with a generic 500, and
//!   reported to Sentry with the request, scrubbed; a per-process client.
//! - [`headers`]: static and security headers, the request id (adopted
//!   or generated, echoed), `Server-Timing`.
//! - [`metrics`]: OpenTelemetry's HTTP server metrics (duration to the last
//!   byte, active requests, body sizes), labelled by route, never by path;
//!   and a page that serves a Prometheus exposition.
//! - [`post_fork`]: a per-process resource (connection, client) handed to
//!   each request, rebuilt in every process that serves.
//! - [`traces`]: one OpenTelemetry SERVER span per request, continued from
//!   `traceparent`, exported over OTLP by each worker.
//! - [`request_log`]: one `tracing` event per request at its last byte,
//!   and the access log (JSON, combined, Gunicorn atoms) written from them.
//!
//! Each layer is a Cargo feature of its name (`error-capture`, `headers`,
//! `metrics`, `post-fork`, `request-log`, `traces`), all on by default, so
//! a program that wants one layer compiles only what that layer needs.
//! [`redact`] is what they share: one rule for secrets in every output.

#![forbid(unsafe_code)]

#[cfg(feature = "error-capture")]
pub mod error_capture;
#[cfg(feature = "headers")]
pub mod headers;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "post-fork")]
pub mod post_fork;
#[cfg(feature = "request-log")]
pub mod request_log;
#[cfg(feature = "traces")]
pub mod traces;

// Shared by the layers, whichever are built (so parts go unused when only
// some are).
pub mod redact;
#[cfg_attr(not(all(feature = "metrics", feature = "traces")), allow(dead_code))]
mod semconv;
#[cfg_attr(
    not(all(feature = "request-log", feature = "traces")),
    allow(dead_code)
)]
mod text;
