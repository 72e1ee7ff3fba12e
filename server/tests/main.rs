//! Integration tests of turnstile-server. One binary, one module per area.

/// Gunicorn's request corpus, run through the HTTP/1 parser and decoders.
mod conformance;

/// The connection loop over real loopback sockets.
mod connection;
