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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use turnstile::middleware::error_capture::sentry::protocol::{Envelope, EnvelopeItem, Event};

/// The largest envelope accepted; Sentry's own limit for an event is 1 MiB.
const MAX_BODY: usize = 20 * 1024 * 1024;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9300".into());
    let listener = TcpListener::bind(&addr).expect("the receiver's address is free");
    let addr = listener.local_addr().unwrap();
    assert!(
        addr.ip().is_loopback(),
        "the receiver listens on loopback only"
    );
    println!("sentry receiver: SENTRY_DSN=http://public@{addr}/1");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(error) = serve(stream) {
                eprintln!("sentry receiver: {error}");
            }
        });
    }
}

// ANCHOR: serve
/// Answers one client's requests, one envelope each, until it hangs up.
fn serve(stream: TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(length) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        let envelope = Envelope::from_slice(&body).map_err(|e| format!("not an envelope: {e}"))?;
        // One line per envelope, whole: a reader of standard output sees
        // exactly what the client sent.
        let raw = String::from_utf8_lossy(&body);
        println!("{}", serde_json::Value::String(raw.into_owned()));
        for item in envelope.items() {
            if let EnvelopeItem::Event(event) = item {
                eprintln!("sentry receiver: {}", summary(event));
            }
        }
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            )
            .map_err(|e| e.to_string())?;
    }
}
// ANCHOR_END: serve

/// Reads a request head: the body's length, or `None` at the end of the
/// connection. Only `POST …/envelope/` with a `Content-Length` is taken,
/// which is how Sentry's clients send.
fn read_head(reader: &mut impl BufRead) -> Result<Option<usize>, String> {
    let mut request_line = String::new();
    if reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Ok(None);
    }
    if !request_line.starts_with("POST /api/") || !request_line.contains("/envelope/") {
        return Err(format!("unexpected request {:?}", request_line.trim()));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    match length {
        Some(length) if length <= MAX_BODY => Ok(Some(length)),
        Some(length) => Err(format!("an envelope of {length} bytes is too large")),
        None => Err("an envelope without Content-Length".into()),
    }
}

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
