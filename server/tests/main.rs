//! Integration tests of turnstile-server. One binary, one module per area.

/// A real server on a loopback port, and helpers to talk to it.
mod support;

/// Gunicorn's request corpus, run through the HTTP/1 parser and decoders.
mod conformance;

/// Requests and responses over real loopback sockets.
mod connection;

/// Idle and slow clients: the poller, the timeouts, and the threads they
/// must not hold.
mod slow_clients;

/// Starting and stopping a server in-process.
mod lifecycle;
