//! Serves an application of one's own with the whole `turnstile` server:
//! its settings, its layers, its workers and its signals.
//!
//! The application here answers every request with a greeting naming this
//! program, so that the tests can tell it from the `turnstile` binary when
//! `USR2` upgrades one to the other.
//!
//! Run with: `cargo run --example own_app -- --workers 2 --bind 127.0.0.1:8000`

use std::process::ExitCode;

use turnstile::{Request, Response};

fn greet(_request: Request) -> Response {
    Response::new("Hello from own_app\n".into())
}

fn main() -> ExitCode {
    turnstile::main(|_settings| greet)
}
