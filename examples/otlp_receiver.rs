//! A stand-in for an OpenTelemetry collector on loopback: it accepts OTLP
//! over HTTP/protobuf (`POST /v1/traces`), decodes each request with the
//! official protobuf types (`opentelemetry-proto`), and shows every span.
//! It is what `examples/tracing_app.rs` and the end-to-end tests export to
//! when no collector is at hand.
//!
//! Run with: `cargo run --example otlp_receiver`, which prints the endpoint
//! to use, then in another shell:
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example tracing_app
//! ```
//!
//! Standard output gets one JSON line per span, for programs; standard
//! error a summary of each, for people. Another address:
//! `cargo run --example otlp_receiver -- 127.0.0.1:0`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Map, Value, json};

/// The largest request accepted; collectors default to a few MiB.
const MAX_BODY: usize = 16 * 1024 * 1024;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".into());
    let listener = TcpListener::bind(&addr).expect("the receiver's address is free");
    let addr = listener.local_addr().unwrap();
    assert!(
        addr.ip().is_loopback(),
        "the receiver listens on loopback only"
    );
    println!("otlp receiver: OTEL_EXPORTER_OTLP_ENDPOINT=http://{addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(error) = serve(stream) {
                eprintln!("otlp receiver: {error}");
            }
        });
    }
}

// ANCHOR: serve
/// Answers one client's export requests until it hangs up.
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
        let export = ExportTraceServiceRequest::decode(body.as_slice())
            .map_err(|e| format!("not an OTLP trace export: {e}"))?;
        for resource_spans in &export.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|resource| attributes(&resource.attributes))
                .unwrap_or_default();
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let line = json!({
                        "trace_id": hex(&span.trace_id),
                        "span_id": hex(&span.span_id),
                        "parent_span_id": hex(&span.parent_span_id),
                        "name": span.name,
                        "kind": span.kind,
                        "status": span.status.as_ref().map_or(0, |status| status.code),
                        "attributes": attributes(&span.attributes),
                        "resource": resource,
                    });
                    println!("{line}");
                    eprintln!(
                        "otlp receiver: {} {} (trace {}, parent {})",
                        span.name,
                        line["attributes"]
                            .get("http.response.status_code")
                            .unwrap_or(&Value::Null),
                        hex(&span.trace_id),
                        hex(&span.parent_span_id)
                    );
                }
            }
        }
        // An empty ExportTraceServiceResponse: everything was accepted.
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
            .map_err(|e| e.to_string())?;
    }
}
// ANCHOR_END: serve

/// Reads a request head: the body's length, or `None` at the end of the
/// connection. Only `POST /v1/traces` with a `Content-Length` is taken.
fn read_head(reader: &mut impl BufRead) -> Result<Option<usize>, String> {
    let mut request_line = String::new();
    if reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Ok(None);
    }
    if !request_line.starts_with("POST /v1/traces ") {
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
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("content-encoding") {
                return Err(format!(
                    "a compressed body ({}) is not read here",
                    value.trim()
                ));
            }
        }
    }
    match length {
        Some(length) if length <= MAX_BODY => Ok(Some(length)),
        Some(length) => Err(format!("an export of {length} bytes is too large")),
        None => Err("an export without Content-Length".into()),
    }
}

fn attributes(list: &[KeyValue]) -> Value {
    let map: Map<String, Value> = list
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, value)))
        .collect();
    Value::Object(map)
}

fn value(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => json!(text),
        Some(any_value::Value::IntValue(n)) => json!(n),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(x)) => json!(x),
        other => json!(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
