// ANCHOR: all
//! OTLP over HTTP/protobuf, encoded straight from the SDK's span data.
//!
//! `opentelemetry-otlp`'s exporter first converts every span into the
//! generated protobuf structs, a new `String` for each attribute's key and
//! value, and then encodes those. Under `bench/stack.sh` that conversion
//! cost its thread about 2 µs a span, more than the worker's core could
//! give it beside eight busy request threads, and three spans in four
//! were dropped from the full queue. [`OtlpExporter`] writes the same
//! `ExportTraceServiceRequest` bytes (the official messages decode them to
//! what the official conversion builds; a test checks it) without
//! building anything in between, and sends them with [`UreqClient`].
//!
//! It is configured as OpenTelemetry's HTTP exporters are, by
//! [`OtlpSettings::from_env`].

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_http::{HttpClient, Request};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use turnstile_core::http::{HeaderName, HeaderValue, Uri, header};

use super::export::UreqClient;

/// Where spans go and what each request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The traces endpoint, `/v1/traces` included.
    pub endpoint: Uri,
    /// Headers for every export, such as a collector's API key.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How long one export may take.
    pub timeout: Duration,
}

impl OtlpSettings {
    /// From the environment, as OpenTelemetry's HTTP exporters read it:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended;
    /// `OTEL_EXPORTER_OTLP_HEADERS` and then
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`key=value,…`, values
    /// percent-decoded), the second winning for a key both name.
    ///
    /// # Errors
    ///
    /// No endpoint, or one that is not a URL; a header that is not one.
    pub fn from_env(timeout: Duration) -> Result<Self, String> {
        Self::from_variables(|name| std::env::var(name).ok(), timeout)
    }

    fn from_variables(
        lookup: impl Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let set = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let (name, endpoint) = if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let url = format!("{}/v1/traces", base.trim_end_matches('/'));
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        } else {
            return Err("no OTLP endpoint is set".to_owned());
        };
        let endpoint = endpoint
            .parse::<Uri>()
            .ok()
            .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
            .ok_or_else(|| format!("{name}: `{endpoint}` is not a URL"))?;
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            let Some(list) = set(name) else { continue };
            for pair in list
                .split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
            {
                // The message names the key alone: the value is usually an
                // API key, and the message is printed as the binary starts.
                let without_equals =
                    || format!("{name}: an item without `=` is not a header (key=value)");
                let (key, value) = pair.split_once('=').ok_or_else(without_equals)?;
                let bad = || format!("{name}: `{}=…` is not a header (key=value)", key.trim());
                let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
                let key = HeaderName::try_from(key.trim()).map_err(|_| bad())?;
                let value = HeaderValue::try_from(value.as_ref()).map_err(|_| bad())?;
                headers.retain(|(known, _)| *known != key);
                headers.push((key, value));
            }
        }
        Ok(Self {
            endpoint,
            headers,
            timeout,
        })
    }
}

// ANCHOR: exporter
/// The span exporter. See the [module docs](self).
#[derive(Debug)]
pub struct OtlpExporter {
    settings: OtlpSettings,
    client: UreqClient,
    /// The resource's `Resource` message and schema, encoded once.
    resource: Vec<u8>,
    resource_schema: String,
}

impl OtlpExporter {
    /// An exporter sending as `settings` say.
    pub fn new(settings: OtlpSettings) -> Self {
        let client = UreqClient::with_timeout(settings.timeout);
        let mut exporter = Self {
            settings,
            client,
            resource: Vec::new(),
            resource_schema: String::new(),
        };
        exporter.set_resource(&Resource::builder_empty().build());
        exporter
    }

    /// The body of one export: an `ExportTraceServiceRequest` holding one
    /// `ResourceSpans`, with a `ScopeSpans` per instrumentation scope, in
    /// the order the scopes first appear.
    pub fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
        for span in spans {
            match scopes
                .iter_mut()
                .find(|(scope, _)| **scope == span.instrumentation_scope)
            {
                Some((_, members)) => members.push(span),
                None => scopes.push((&span.instrumentation_scope, vec![span])),
            }
        }
        // Spans are a few hundred bytes each: a guess at each level's length
        // that is usually right, so its body is seldom moved.
        const SPAN: usize = 400;
        let mut out = Vec::with_capacity(256 + spans.len() * 512);
        let room = varint_length(spans.len() * SPAN);
        message_with_room(&mut out, 1, room, |out| {
            bytes_field(out, 1, &self.resource);
            for (scope, members) in &scopes {
                message_with_room(out, 2, varint_length(members.len() * SPAN), |out| {
                    message(out, 1, |out| put_scope(out, scope));
                    for (n, span) in members.iter().enumerate() {
                        message_with_room(out, 2, varint_length(SPAN), |out| put_span(out, span));
                        give_way(n);
                    }
                    string(out, 3, scope.schema_url().unwrap_or_default());
                });
            }
            string(out, 3, &self.resource_schema);
        });
        out
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        let body = self.encode(&batch);
        // Freeing a batch's strings takes as long as encoding them: in
        // pieces, giving way between them too.
        while !batch.is_empty() {
            batch.truncate(batch.len().saturating_sub(YIELD_EVERY));
            give_way(0);
        }
        let mut request = Request::post(self.settings.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(body.into())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        for (name, value) in &self.settings.headers {
            request.headers_mut().append(name, value.clone());
        }
        // The client says why once a minute; the SDK's logging is off.
        let response = self
            .client
            .send_bytes(request)
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "the collector answered {}",
                response.status()
            )))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        for (key, value) in resource.iter() {
            message(&mut self.resource, 1, |out| {
                string(out, 1, key.as_str());
                message(out, 2, |out| put_value(out, value));
            });
        }
        self.resource_schema = resource.schema_url().unwrap_or_default().to_owned();
    }
}
// ANCHOR_END: exporter

// ANCHOR: span
/// A `Span` message's fields (opentelemetry/proto/trace/v1/trace.proto).
/// Spans encoded (or freed) between two chances for the request threads to
/// run: about a tenth of a millisecond.
const YIELD_EVERY: usize = 256;

/// Lets a runnable request thread have the core, every [`YIELD_EVERY`]
/// spans. The exporting thread shares its core with them; encoding a batch
/// of thousands of spans in one go held the requests that arrived
/// meanwhile for milliseconds, the whole stack's p99 under load.
fn give_way(spans: usize) {
    if spans.is_multiple_of(YIELD_EVERY) {
        std::thread::yield_now();
    }
}

fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    put_ids(out, &span.span_context);
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes_field(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    varint_field(out, 6, kind(&span.span_kind));
    fixed64_field(out, 7, nanos(span.start_time));
    fixed64_field(out, 8, nanos(span.end_time));
    put_attributes(out, 9, &span.attributes);
    varint_field(out, 10, u64::from(span.dropped_attributes_count));
    for event in &span.events.events {
        message(out, 11, |out| {
            fixed64_field(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            put_attributes(out, 3, &event.attributes);
            varint_field(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint_field(out, 12, u64::from(span.events.dropped_count));
    for link in &span.links.links {
        message(out, 13, |out| {
            put_ids(out, &link.span_context);
            put_attributes(out, 4, &link.attributes);
            varint_field(out, 5, u64::from(link.dropped_attributes_count));
            fixed32_field(
                out,
                6,
                flags(&link.span_context, link.span_context.is_remote()),
            );
        });
    }
    varint_field(out, 14, u64::from(span.links.dropped_count));
    // Always present, as the official conversion writes it.
    message(out, 15, |out| {
        let (code, description) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        string(out, 2, description);
        varint_field(out, 3, code);
    });
    fixed32_field(
        out,
        16,
        flags(&span.span_context, span.parent_span_is_remote),
    );
}
// ANCHOR_END: span

/// Trace id, span id and trace state: the first three fields of both a
/// span and a link.
fn put_ids(out: &mut Vec<u8>, context: &SpanContext) {
    bytes_field(out, 1, &context.trace_id().to_bytes());
    bytes_field(out, 2, &context.span_id().to_bytes());
    let state = context.trace_state().header();
    string(out, 3, &state);
}

/// The W3C flags, and that whether the parent (or the link) is remote is
/// known, and whether it is (`SPAN_FLAGS_CONTEXT_*_MASK`).
fn flags(context: &SpanContext, remote: bool) -> u32 {
    let known = 0x100;
    let is_remote = if remote { 0x200 } else { 0 };
    u32::from(context.trace_flags().to_u8()) | known | is_remote
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn put_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        put_attribute(out, 3, attribute);
    }
}

fn put_attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        put_attribute(out, field, attribute);
    }
}

/// A `KeyValue`: the key, and the value as an `AnyValue`.
fn put_attribute(out: &mut Vec<u8>, field: u32, attribute: &KeyValue) {
    message(out, field, |out| {
        string(out, 1, attribute.key.as_str());
        message(out, 2, |out| put_value(out, &attribute.value));
    });
}

// ANCHOR: value
/// An `AnyValue`'s one field, written even when it holds the default, as
/// a field of a `oneof` is.
fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => string_always(out, 1, text.as_str()),
        Value::Bool(flag) => {
            key(out, 2, VARINT);
            varint(out, u64::from(*flag));
        }
        Value::I64(n) => {
            key(out, 3, VARINT);
            varint(out, *n as u64);
        }
        Value::F64(x) => {
            key(out, 4, FIXED64);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::Array(array) => message(out, 5, |out| match array {
            Array::Bool(items) => items
                .iter()
                .for_each(|item| array_item(out, Value::Bool(*item))),
            Array::I64(items) => items
                .iter()
                .for_each(|item| array_item(out, Value::I64(*item))),
            Array::F64(items) => items
                .iter()
                .for_each(|item| array_item(out, Value::F64(*item))),
            Array::String(items) => items
                .iter()
                .for_each(|item| message(out, 1, |out| string_always(out, 1, item.as_str()))),
            // A kind of array newer than this code: its text.
            other => array_item(out, Value::String(StringValue::from(other.to_string()))),
        }),
        // A kind of value newer than this code: its text.
        other => string_always(out, 1, &other.as_str()),
    }
}
// ANCHOR_END: value

fn array_item(out: &mut Vec<u8>, value: Value) {
    message(out, 1, |out| put_value(out, &value));
}

// The protobuf wire format, as much of it as OTLP's traces use.

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A scalar field; left out when it holds the default, as proto3 does.
fn varint_field(out: &mut Vec<u8>, field: u32, n: u64) {
    if n != 0 {
        key(out, field, VARINT);
        varint(out, n);
    }
}

fn fixed64_field(out: &mut Vec<u8>, field: u32, n: u64) {
    if n != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn fixed32_field(out: &mut Vec<u8>, field: u32, n: u32) {
    if n != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        key(out, field, LENGTH_DELIMITED);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes_field(out, field, text.as_bytes());
}

fn string_always(out: &mut Vec<u8>, field: u32, text: &str) {
    key(out, field, LENGTH_DELIMITED);
    varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

// ANCHOR: message
/// A nested message, written in place: one byte is kept for its length,
/// enough for the small messages that are most of them (attributes,
/// values), and the body is moved only when its length needs more.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    message_with_room(out, field, 1, body);
}

/// A nested message whose length is expected to take `room` bytes (a
/// span's two, a batch's three or four): the body is moved only when the
/// guess was wrong.
fn message_with_room(out: &mut Vec<u8>, field: u32, room: usize, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LENGTH_DELIMITED);
    let start = out.len();
    out.resize(start + room, 0);
    body(out);
    let length = out.len() - start - room;
    let mut prefix = [0; 10];
    let mut used = 0;
    let mut n = length as u64;
    while n >= 0x80 {
        prefix[used] = (n as u8) | 0x80;
        n >>= 7;
        used += 1;
    }
    prefix[used] = n as u8;
    let used = used + 1;
    if used == room {
        out[start..start + room].copy_from_slice(&prefix[..used]);
    } else {
        out.splice(start..start + room, prefix[..used].iter().copied());
    }
}

/// How many bytes a varint takes.
fn varint_length(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}
// ANCHOR_END: message
// ANCHOR_END: all

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use opentelemetry::trace::{
        Link, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
        TracerProvider as _,
    };
    use opentelemetry::{Context, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use prost::Message as _;

    use super::*;

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "shop"),
                    KeyValue::new("service.instance.id", "7"),
                    KeyValue::new("host.cpus", 2),
                ],
                "https://opentelemetry.io/schemas/1.26.0",
            )
            .build()
    }

    /// Spans with every kind of value, events, links, parents local and
    /// remote, trace state, each status, and two instrumentation scopes.
    fn spans() -> Vec<SpanData> {
        let exported = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .with_resource(resource())
            .build();
        let tracer = provider.tracer("turnstile");
        let remote_parent = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
        );
        let caller = Context::new().with_remote_span_context(remote_parent.clone());
        let mut server = tracer
            .span_builder("GET /users/{id}")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.path", "/users/7"),
                KeyValue::new("empty", ""),
                KeyValue::new("http.response.status_code", 500_i64),
                KeyValue::new("negative", -3_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("zero", 0.0),
                KeyValue::new("yes", true),
                KeyValue::new("no", false),
                KeyValue::new("flags", Value::Array(vec![true, false].into())),
                KeyValue::new("counts", Value::Array(vec![1_i64, -2, 0].into())),
                KeyValue::new("weights", Value::Array(vec![0.5, 2.0].into())),
                KeyValue::new(
                    "names",
                    Value::Array(vec![StringValue::from("a"), StringValue::from("")].into()),
                ),
                KeyValue::new("long", "x".repeat(300)),
            ])
            .with_links(vec![Link::new(
                remote_parent.clone(),
                vec![KeyValue::new("link.reason", "retry")],
                0,
            )])
            .start_with_context(&tracer, &caller);
        opentelemetry::trace::Span::add_event(
            &mut server,
            "exception",
            vec![KeyValue::new("exception.message", "boom")],
        );
        opentelemetry::trace::Span::set_status(
            &mut server,
            Status::Error {
                description: Cow::Borrowed("it failed"),
            },
        );
        let server_cx = caller.with_span(server);
        tracer.in_span_with_context("db", &server_cx, |cx| {
            cx.span().set_status(Status::Ok);
        });
        drop(server_cx);
        let other = provider.tracer_with_scope(
            InstrumentationScope::builder("app")
                .with_version("1.2.3")
                .with_schema_url("https://opentelemetry.io/schemas/1.21.0")
                .with_attributes([KeyValue::new("scope.kind", "library")])
                .build(),
        );
        other.in_span("plain", |_| {});
        tracer.in_span("unset", |_| {});
        provider.force_flush().unwrap();
        exported.get_finished_spans().unwrap()
    }

    // ANCHOR: same_as_official
    #[test]
    fn encodes_what_the_official_conversion_builds() {
        let spans = spans();
        assert_eq!(spans.len(), 4);
        let resource = resource();
        let mut exporter = OtlpExporter::new(
            OtlpSettings::from_variables(
                |name| {
                    (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:4318".into())
                },
                Duration::from_secs(1),
            )
            .unwrap(),
        );
        exporter.set_resource(&resource);
        let ours = ExportTraceServiceRequest::decode(exporter.encode(&spans).as_slice()).unwrap();
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ours, official);
        assert_eq!(ours.resource_spans[0].scope_spans.len(), 2);
    }
    // ANCHOR_END: same_as_official

    #[test]
    fn varint_lengths_are_counted_as_written() {
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            usize::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, n as u64);
            assert_eq!(varint_length(n), out.len(), "{n}");
        }
    }

    #[test]
    fn messages_of_every_length_round_trip() {
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, any_value};
        for length in [0, 1, 125, 126, 127, 128, 16_383, 16_384, 2_097_152] {
            let text = "y".repeat(length);
            for room in 1..=4 {
                let mut out = Vec::new();
                message_with_room(&mut out, 1, room, |out| string_always(out, 1, &text));
                let array = ArrayValue::decode(out.as_slice()).unwrap();
                assert_eq!(array.values.len(), 1);
                assert_eq!(
                    array.values[0].value,
                    Some(any_value::Value::StringValue(text.clone()))
                );
            }
        }
    }

    #[test]
    fn settings_are_read_as_opentelemetrys_http_exporters_read_them() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            OtlpSettings::from_variables(
                move |name| {
                    pairs
                        .iter()
                        .find(|(key, _)| *key == name)
                        .map(|(_, value)| (*value).to_owned())
                },
                Duration::from_secs(2),
            )
        };
        let generic = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
        assert_eq!(generic.endpoint, "http://collector:4318/v1/traces");
        assert!(generic.headers.is_empty());
        let specific = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://traces.example/ingest",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, team=shop"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "team=checkout"),
        ])
        .unwrap();
        assert_eq!(specific.endpoint, "https://traces.example/ingest");
        assert_eq!(
            specific.headers,
            [
                (
                    HeaderName::from_static("api-key"),
                    HeaderValue::from_static("a b")
                ),
                (
                    HeaderName::from_static("team"),
                    HeaderValue::from_static("checkout")
                ),
            ]
        );
        for (pairs, complaint) in [
            (&[][..], "no OTLP endpoint"),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")][..],
                "is not a URL",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
                ][..],
                "is not a header",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret%0A"),
                ][..],
                "`api-key=…` is not a header",
            ),
        ] {
            let error = from(pairs).unwrap_err();
            assert!(error.contains(complaint), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
