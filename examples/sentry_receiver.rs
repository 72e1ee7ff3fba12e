//! A stand-in for Sentry on loopback: it accepts the envelopes Sentry's
//! clients send, decodes them with the `sentry` crate's own parser, and
//! shows each event. It is what `examples/error_capture_app.rs` and the
//! end-to-end tests report to when no real Sentry is at hand.
//!
//! Run with: `cargo run --example sentry_receiver`, which prints the DSN to
//! use, then in another shell:
//!
//! ```text
//! SENTRY_DSN=http://public@127.0.0.1:9300/1 cargo run --example error_capture_app
//! ```
//!
//! Standard output gets one line per envelope, the envelope itself as a
//! JSON string, for programs; standard error a summary of each event, for
//! people. Another address: `cargo run --example sentry_receiver -- 127.0.0.1:0`.

#[path = "support/loopback.rs"]
mod loopback;

use turnstile::middleware::error_capture::sentry::protocol::{Envelope, EnvelopeItem, Event};

static SENTRY: loopback::StandIn = loopback::StandIn {
    name: "sentry receiver",
    accepts: |line| line.starts_with("POST /api/") && line.contains("/envelope/"),
    answer: ("application/json", b"{}"),
    receive,
};

fn main() {
    loopback::run(&SENTRY, "127.0.0.1:9300", |addr| {
        println!("sentry receiver: SENTRY_DSN=http://public@{addr}/1");
    });
}

// ANCHOR: serve
/// Decodes one envelope with the `sentry` crate's parser and shows it.
fn receive(body: &[u8]) -> Result<(), String> {
    let envelope = Envelope::from_slice(body).map_err(|e| format!("not an envelope: {e}"))?;
    if loopback::quiet() {
        return Ok(());
    }
    // One line per envelope, whole: a reader of standard output sees
    // exactly what the client sent.
    let raw = String::from_utf8_lossy(body);
    println!("{}", serde_json::Value::String(raw.into_owned()));
    for item in envelope.items() {
        if let EnvelopeItem::Event(event) = item {
            eprintln!("sentry receiver: {}", summary(event));
        }
    }
    Ok(())
}
// ANCHOR_END: serve

/// `panic: the basket is empty (GET http://…/checkout, request 0f3c…)`.
fn summary(event: &Event<'static>) -> String {
    let what = match event.exception.last() {
        Some(exception) => format!(
            "{}: {}",
            exception.ty,
            exception.value.as_deref().unwrap_or_default()
        ),
        None => event.message.clone().unwrap_or_default(),
    };
    let request = event
        .request
        .as_ref()
        .map(|request| {
            format!(
                "{} {}",
                request.method.as_deref().unwrap_or("?"),
                request.url.as_ref().map_or("?", |url| url.as_str())
            )
        })
        .unwrap_or_default();
    let id = event.tags.get("request_id").map_or("-", String::as_str);
    format!("{what} ({request}, request {id})")
}
