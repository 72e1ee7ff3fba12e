//! Integration tests of turnstile-server.
