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
//! error a summary of each, for people; `STAND_IN_QUIET=1` decodes only
//! the resource and the spans' framing, and says only how many spans each
//! service has sent so far (the load benchmark). Another address:
//! `cargo run --example otlp_receiver -- 127.0.0.1:0`.

#[path = "support/loopback.rs"]
mod loopback;

use std::collections::BTreeMap;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value, json};

static COLLECTOR: loopback::StandIn = loopback::StandIn {
    name: "otlp receiver",
    accepts: |line| line.starts_with("POST /v1/traces "),
    // An empty ExportTraceServiceResponse: everything was accepted.
    answer: ("application/x-protobuf", b""),
    receive,
};

/// Spans received so far, by `service.name`; quiet, the receiver says only
/// this, so that a benchmark can tell how many of its requests' spans
/// arrived.
static SPANS_RECEIVED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn main() {
    loopback::run(&COLLECTOR, "127.0.0.1:4318", |addr| {
        println!("otlp receiver: OTEL_EXPORTER_OTLP_ENDPOINT=http://{addr}");
    });
}

// ANCHOR: serve
/// Decodes one export with the official protobuf types and shows its spans.
fn receive(body: &[u8]) -> Result<(), String> {
    if loopback::quiet() {
        return count(body);
    }
    let export = ExportTraceServiceRequest::decode(body)
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
    Ok(())
}
// ANCHOR_END: serve

/// Counts the spans of one export by service, decoding only what that
/// needs: a benchmark's collector shares the load generator's core, and
/// decoding every attribute of every span (about a microsecond each) took
/// enough of it to slow the load.
fn count(body: &[u8]) -> Result<(), String> {
    let export = SpanCounts::decode(body).map_err(|e| format!("not an OTLP trace export: {e}"))?;
    let mut received = SPANS_RECEIVED.lock().unwrap_or_else(|e| e.into_inner());
    for resource_spans in &export.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
            })
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| match &value.value {
                Some(any_value::Value::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let spans: usize = resource_spans
            .scope_spans
            .iter()
            .map(|scope_spans| scope_spans.spans.len())
            .sum();
        let total = received.entry(service.clone()).or_default();
        *total += spans;
        eprintln!("otlp receiver: {total} spans received from {service}");
    }
    Ok(())
}

/// `ExportTraceServiceRequest` with only the fields counting reads (the
/// official numbers; prost skips the others): each span stays undecoded
/// bytes, which the wire format allows for any embedded message.
#[derive(Clone, PartialEq, prost::Message)]
struct SpanCounts {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpanCounts>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpanCounts {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpanCounts>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpanCounts {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<prost::bytes::Bytes>,
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
