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
//! The other layers arrive one issue at a time; the book's chapter list
//! shows the plan.

#![forbid(unsafe_code)]

pub mod error_capture;
pub mod headers;
pub mod metrics;
pub mod post_fork;
pub mod request_log;
pub mod traces;
