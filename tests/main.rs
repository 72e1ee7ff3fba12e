//! End-to-end tests of the `turnstile` package: real processes, and (with
//! the engine) real sockets. One binary, one module per area.

/// Starting the binary on a free port and talking to it.
mod support;

/// The `turnstile` binary, run as a user runs it.
mod binary;

/// Settings from flags, environment and file.
mod config;

/// Gunicorn's command line: each flag by its effect.
mod command_line;

/// Error capture: 500s, Sentry events, stuck requests.
mod errors;

/// Broken, slow and greedy clients: framing faults, refused uploads, the
/// memory ceiling, a burst of connections.
mod clients;

/// The header-injection and request-logging layers, in the binary.
mod layers;

/// Timing metrics, the arbiter's endpoint, and Prometheus scraping it.
mod metrics;

/// Tracing: OpenTelemetry spans over OTLP, traceparent in and out.
mod traces;

/// Secrets a request carries, kept out of every output.
mod secrets;

/// The arbiter and its workers: signals, supervision, binds.
mod processes;

/// A team's own server, built outside the workspace from the README.
mod own_server;

/// No request dropped across recycling, reloads, upgrades and stops, with
/// keep-alive clients that never retry.
mod supervision;
