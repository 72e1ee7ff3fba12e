// ANCHOR: all
//! Tracing: one OpenTelemetry SERVER span per request, continued from the
//! caller's `traceparent`, exported over OTLP by each worker.
//!
//! [`TraceRequests`] starts a span as the request enters and ends it at the
//! response's last byte. The span:
//!
//! - is named `{method} {route}` when the application names its
//!   [`Route`], else `{method}` (`HTTP` for a method outside HTTP's
//!   registry): never the raw path, which would make every URL a name;
//! - carries the stable HTTP semantic conventions: `http.request.method`
//!   (and `http.request.method_original`), `url.path` (every path
//!   parameter's value redacted), `url.query` (secret values redacted),
//!   `url.scheme`, `http.route`,
//!   `http.response.status_code`, `server.address`, `server.port`,
//!   `client.address` (the proxy-resolved client, `--forwarded-allow-ips`),
//!   `user_agent.original`, `network.protocol.version`, and `error.type`
//!   with status ERROR for a 5xx or an error;
//! - continues the trace of an incoming W3C `traceparent` (with its
//!   `tracestate` and `baggage`), and tells the client its ids in a
//!   `traceresponse` header (W3C Trace Context level 2);
//! - is the current OpenTelemetry context while the application runs, so
//!   spans it makes (with `tracing`, through `tracing-opentelemetry`, or
//!   with the OpenTelemetry API) are children of the request's span.
//!
//! The request's [`TraceId`] goes into its extensions, so the layers
//! inside (the access log, error capture) write it next to the request id.
//!
//! Spans go to this process's tracer provider, built with
//! [`Pipeline`]: each worker builds its own after the fork, and
//! shuts it down, sending what is batched, as it exits. Without one the
//! layer only reads an incoming `traceparent`, for the logs.
//!
//! # Example
//!
//! ```
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use turnstile_core::{Request, Response, Route, Stack, test};
//! use turnstile_middleware::traces::TraceRequests;
//!
//! let spans = InMemorySpanExporter::default();
//! let exported = spans.clone();
//! let layer = TraceRequests::with_provider(move || {
//!     SdkTracerProvider::builder().with_simple_exporter(exported.clone()).build()
//! });
//! let app = Stack::new().layer(layer).app(|_request: Request| {
//!     let mut response = Response::new("user 7\n".into());
//!     response.extensions_mut().insert(Route::new("/users/{id}"));
//!     response
//! });
//!
//! let request = test::TestRequest::get("/users/7?token=s3cret")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .build();
//! let response = test::serve(&app, request);
//! assert!(response.header("traceresponse").unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//!
//! let span = &spans.get_finished_spans().unwrap()[0];
//! assert_eq!(span.name, "GET /users/{id}");
//! assert_eq!(span.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
//! ```

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use turnstile_core::http::{
    HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header,
};
use turnstile_core::{
    AppResult, Application, ChunkStream, Environ, Layer, Outcome, PerProcess, Request, Route,
    TraceId, on_complete, respond,
};

use crate::redact::Redactor;
use crate::semconv::{method_label, scheme_label};

pub mod export;
pub mod otlp;
pub mod queue;
#[cfg(test)]
mod tests;

pub use {opentelemetry, opentelemetry_sdk, tracing_opentelemetry};

/// The response header that tells the client the request's trace
/// (`00-{trace id}-{span id}-{flags}`).
pub const TRACE_RESPONSE: &str = "traceresponse";

/// The instrumentation scope the spans are reported under.
pub const SCOPE: &str = "turnstile";

// ANCHOR: process_tracer
/// The tracer for `tracing-opentelemetry`'s layer in a subscriber built
/// before the fork: each span goes to the provider of the process that
/// makes it (the global one, which [`Pipeline::new`] sets in each worker),
/// not the one, if any, of the process that built the subscriber.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessTracer;

impl Tracer for ProcessTracer {
    type Span = opentelemetry::global::BoxedSpan;

    fn build_with_context(
        &self,
        builder: opentelemetry::trace::SpanBuilder,
        parent_cx: &Context,
    ) -> Self::Span {
        opentelemetry::global::tracer(SCOPE).build_with_context(builder, parent_cx)
    }
}
// ANCHOR_END: process_tracer

/// The tracing layer. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceRequests {
    redactor: Redactor,
    pipeline: Option<PerProcess<Option<Pipeline>>>,
}

// ANCHOR: pipeline
/// One process's tracer provider and the tracer the layer uses.
pub struct Pipeline {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Makes `provider` this process's: the global one too, so the
    /// OpenTelemetry API and `tracing-opentelemetry` find it.
    pub fn new(provider: SdkTracerProvider) -> Self {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let tracer = provider.tracer(SCOPE);
        Self { provider, tracer }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Sends what the batch holds; bounded, since the process is leaving.
        let _ = self
            .provider
            .shutdown_with_timeout(export::SHUTDOWN_TIMEOUT);
    }
}
// ANCHOR_END: pipeline

impl Default for TraceRequests {
    fn default() -> Self {
        Self::new()
    }
}

// ANCHOR: constructors
impl TraceRequests {
    /// A layer that exports nothing: it continues an incoming
    /// `traceparent`'s trace id for the logs, and costs next to nothing.
    pub fn new() -> Self {
        Self {
            redactor: Redactor::default(),
            pipeline: None,
        }
    }

    /// A layer whose spans go to the provider `build` makes, once in each
    /// process that serves, as a Turnstile worker boots (never in the
    /// arbiter). `None` turns export off in that process.
    pub fn with_pipeline(
        build: impl Fn() -> Option<SdkTracerProvider> + Send + Sync + 'static,
    ) -> Self {
        Self {
            redactor: Redactor::default(),
            pipeline: Some(PerProcess::eager(move || build().map(Pipeline::new))),
        }
    }

    /// As [`with_pipeline`](Self::with_pipeline), for a provider every
    /// process builds.
    pub fn with_provider(build: impl Fn() -> SdkTracerProvider + Send + Sync + 'static) -> Self {
        Self::with_pipeline(move || Some(build()))
    }

    /// Hides the values of query keys this redactor finds secret in
    /// `url.query`, and path parameters in `url.path` (the
    /// request-logging layer's, so both hide the same).
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}
// ANCHOR_END: constructors

impl<A: Application> Layer<A> for TraceRequests {
    type Application = Traced<A>;

    fn layer(&self, inner: A) -> Traced<A> {
        Traced {
            inner,
            layer: self.clone(),
        }
    }
}

/// An application whose requests [`TraceRequests`] traces.
#[derive(Debug)]
pub struct Traced<A> {
    inner: A,
    layer: TraceRequests,
}

// ANCHOR: propagator
/// W3C trace context and baggage, in and out.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});
// ANCHOR_END: propagator

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
const TRACE_RESPONSE_NAME: HeaderName = HeaderName::from_static(TRACE_RESPONSE);

/// The caller's context from the request's headers; most requests carry
/// none, and then the propagators, which would find nothing, are skipped.
fn caller_context(headers: &HeaderMap) -> Context {
    if headers.contains_key(&TRACEPARENT) || headers.contains_key(&BAGGAGE) {
        PROPAGATOR.extract(&HeaderExtractor(headers))
    } else {
        Context::current()
    }
}

// ANCHOR: handle
impl<A: Application> Application for Traced<A> {
    fn handle(&self, mut request: Request) -> AppResult {
        // The tracer only: the pipeline itself stays with the process, so
        // that its teardown can shut it down while requests are in flight.
        let tracer = match self.layer.pipeline.as_ref().map(PerProcess::get) {
            Some(pipeline) => pipeline.as_ref().as_ref().map(|p| p.tracer.clone()),
            None => None,
        };
        let Some(tracer) = tracer else {
            // Not exporting: the caller's trace id still reaches the logs.
            if let Some(trace_id) = incoming_trace_id(request.headers()) {
                request.extensions_mut().insert(trace_id);
            }
            return self.inner.handle(request);
        };
        let parent = caller_context(request.headers());
        let method = MethodName::of(request.method());
        let routed_at_start = Route::of_request(&request).is_some();
        // From when the server read the head, to the completion's reading
        // of the clock: the access log and the metrics measure the same.
        let received = Environ::of(&request).received_or_now();
        let span = tracer
            .span_builder(span_name(&method, Route::of_request(&request)))
            .with_kind(SpanKind::Server)
            .with_start_time(received.wall)
            .with_attributes(request_attributes(&request, &method, &self.layer.redactor))
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let ids = cx.span().span_context().clone();
        // Invalid once the provider is shut down: no id beats a zero id.
        if ids.is_valid() {
            request
                .extensions_mut()
                .insert(TraceId(ids.trace_id().to_bytes()));
        }
        // Current while the application runs: its spans are children. A
        // failure is a response too: the generic 500 the boundary made.
        let mut response = {
            let _current = cx.clone().attach();
            respond(&self.inner, request)
        };

        if ids.is_valid() {
            response
                .headers_mut()
                .insert(TRACE_RESPONSE_NAME, trace_response(&ids));
        }
        let named = Route::of_response(&response)
            .filter(|_| !routed_at_start)
            .map(|route| (span_name(&method, Some(route)), route.clone()));
        // A streamed body's chunks are pulled with the span current again,
        // so what the application does meanwhile joins the request's trace.
        let current = cx.clone();
        response.body_mut().map_stream(|chunks| {
            Box::new(InSpan {
                chunks,
                cx: current,
            })
        });
        on_complete(&mut response, move |done| {
            // A response cut short failed, whatever its status said.
            let error = (done.outcome == Outcome::Aborted).then(|| "aborted".into());
            finish(
                &cx,
                named,
                done.status,
                error,
                Some(received.wall_at(done.finished)),
            );
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

// ANCHOR: trace_response
/// `00-{trace id}-{span id}-{flags}`, written on the stack without
/// formatting machinery, then copied once into the header's bytes.
fn trace_response(ids: &opentelemetry::trace::SpanContext) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let put = |digits: &mut [u8], bytes: &[u8]| {
        for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
    };
    put(&mut value[3..35], &ids.trace_id().to_bytes());
    put(&mut value[36..52], &ids.span_id().to_bytes());
    put(&mut value[53..55], &[ids.trace_flags().to_u8()]);
    HeaderValue::from_bytes(&value).expect("hex digits and dashes")
}
// ANCHOR_END: trace_response

/// A streamed body pulled with its request's span current, as the
/// application ran.
struct InSpan {
    chunks: ChunkStream,
    cx: Context,
}

impl Iterator for InSpan {
    type Item = std::io::Result<turnstile_core::Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        let _current = self.cx.clone().attach();
        self.chunks.next()
    }
}

// ANCHOR: finish
/// Ends the span with what the response told: its route (the better
/// name), its status, and whether it failed; at `ended`, or now.
fn finish(
    cx: &Context,
    named: Option<(Cow<'static, str>, Route)>,
    status: StatusCode,
    error: Option<Cow<'static, str>>,
    ended: Option<std::time::SystemTime>,
) {
    let span = cx.span();
    if let Some((name, route)) = named {
        span.update_name(name);
        span.set_attribute(KeyValue::new("http.route", route.into_inner().into_owned()));
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    // A 4xx is the client's mistake, not the server's: only 5xx and errors
    // mark a SERVER span as failed, and the status code explains a 5xx, so
    // only other failures get a description.
    match (error, status.is_server_error()) {
        (Some(error), _) => {
            span.set_attribute(KeyValue::new("error.type", error.clone()));
            span.set_status(Status::error(error));
        }
        (None, true) => {
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
            span.set_status(Status::error(""));
        }
        (None, false) => {}
    }
    match ended {
        Some(at) => span.end_with_timestamp(at),
        None => span.end(),
    }
}
// ANCHOR_END: finish

/// `http.request.method`: a method of HTTP's registry, or `_OTHER` with
/// the method as sent.
enum MethodName {
    Known(&'static str),
    Other(String),
}

impl MethodName {
    fn of(method: &Method) -> Self {
        match method_label(method) {
            "_OTHER" => Self::Other(method.as_str().to_owned()),
            known => Self::Known(known),
        }
    }
}

// ANCHOR: span_name
/// `GET /users/{id}`, `GET`, or `HTTP` for an unknown method.
fn span_name(method: &MethodName, route: Option<&Route>) -> Cow<'static, str> {
    let method = match method {
        MethodName::Known(name) => name,
        MethodName::Other(_) => "HTTP",
    };
    match route {
        Some(route) => Cow::Owned(format!("{method} {}", route.as_str())),
        None => Cow::Borrowed(method),
    }
}
// ANCHOR_END: span_name

fn request_attributes(
    request: &Request,
    method: &MethodName,
    redactor: &Redactor,
) -> Vec<KeyValue> {
    let environ = Environ::of(request);
    let uri = request.uri();
    // Room for what the end adds (status, error type) too.
    let mut attributes = Vec::with_capacity(14);
    match method {
        MethodName::Known(name) => {
            attributes.push(KeyValue::new("http.request.method", *name));
        }
        MethodName::Other(original) => {
            attributes.push(KeyValue::new("http.request.method", "_OTHER"));
            attributes.push(KeyValue::new(
                "http.request.method_original",
                original.clone(),
            ));
        }
    }
    attributes.push(KeyValue::new(
        "url.path",
        recent::path(&redactor.path(uri.path())),
    ));
    if let Some(query) = uri.query() {
        attributes.push(KeyValue::new(
            "url.query",
            redactor.query(query).into_owned(),
        ));
    }
    attributes.push(KeyValue::new("url.scheme", scheme_label(request)));
    if let Some(route) = Route::of_request(request) {
        attributes.push(KeyValue::new("http.route", route.clone().into_inner()));
    }
    if let Some((host, port)) = server_address(request, environ) {
        attributes.push(KeyValue::new("server.address", host));
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some(client) = environ.client_addr.or(environ.remote_addr) {
        attributes.push(KeyValue::new("client.address", recent::client(client.ip())));
    }
    if let Some(agent) = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(
            "user_agent.original",
            recent::user_agent(agent),
        ));
    }
    let version = match request.version() {
        Version::HTTP_10 => "1.0",
        Version::HTTP_09 => "0.9",
        _ => "1.1",
    };
    attributes.push(KeyValue::new("network.protocol.version", version));
    attributes
}

/// An address as text.
fn ip_text(ip: std::net::IpAddr) -> String {
    let mut text = Vec::with_capacity(15);
    crate::text::push_ip(&mut text, ip);
    String::from_utf8(text).expect("an address is ASCII")
}

/// `server.address` and `server.port`: from the target's authority or
/// `Host`, as the client addressed the server, else the socket's address.
fn server_address(request: &Request, environ: &Environ) -> Option<(Arc<str>, u16)> {
    let authority = match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok()),
    };
    let default_port = if scheme_label(request) == "https" {
        443
    } else {
        80
    };
    authority
        .and_then(|text| recent::server(text, default_port))
        .or_else(|| {
            environ
                .server_addr
                .map(|addr| (recent::server_ip(addr.ip()), addr.port()))
        })
}

// ANCHOR: recent
/// The strings a span's attributes repeat from request to request: the
/// server's name, the client's address and user agent (the same for every
/// request of a connection), often the path. Each thread keeps the last of
/// each, shared, so a repeat costs a reference count instead of an
/// allocation here and a free on the span queue's thread.
mod recent {
    use std::cell::RefCell;
    use std::net::IpAddr;
    use std::sync::Arc;

    #[derive(Default)]
    struct Last {
        path: Option<Arc<str>>,
        user_agent: Option<Arc<str>>,
        client: Option<(IpAddr, Arc<str>)>,
        server: Option<Server>,
        server_ip: Option<(IpAddr, Arc<str>)>,
    }

    /// An authority as sent and the default port, and the host and port
    /// they give.
    struct Server {
        authority: Box<str>,
        default_port: u16,
        parsed: Option<(Arc<str>, u16)>,
    }

    thread_local! {
        static LAST: RefCell<Last> = RefCell::default();
    }

    fn reuse(last: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
        match last {
            Some(known) if **known == *text => known.clone(),
            _ => last.insert(Arc::from(text)).clone(),
        }
    }

    pub(super) fn path(text: &str) -> Arc<str> {
        LAST.with(|last| reuse(&mut last.borrow_mut().path, text))
    }

    pub(super) fn user_agent(text: &str) -> Arc<str> {
        LAST.with(|last| reuse(&mut last.borrow_mut().user_agent, text))
    }

    fn address(last: &mut Option<(IpAddr, Arc<str>)>, ip: IpAddr) -> Arc<str> {
        match last {
            Some((known, text)) if *known == ip => text.clone(),
            _ => last.insert((ip, Arc::from(super::ip_text(ip)))).1.clone(),
        }
    }

    pub(super) fn client(ip: IpAddr) -> Arc<str> {
        LAST.with(|last| address(&mut last.borrow_mut().client, ip))
    }

    /// The address a request without a `Host` arrived on.
    pub(super) fn server_ip(ip: IpAddr) -> Arc<str> {
        LAST.with(|last| address(&mut last.borrow_mut().server_ip, ip))
    }

    /// The host and port of an authority (`example.com:8080`), or `None`
    /// when it is not one.
    pub(super) fn server(authority: &str, default_port: u16) -> Option<(Arc<str>, u16)> {
        LAST.with(|last| {
            let last = &mut last.borrow_mut().server;
            if let Some(known) = last.as_ref()
                && *known.authority == *authority
                && known.default_port == default_port
            {
                return known.parsed.clone();
            }
            let parsed = authority
                .parse::<turnstile_core::http::uri::Authority>()
                .ok()
                .map(|parsed| {
                    (
                        Arc::from(parsed.host()),
                        parsed.port_u16().unwrap_or(default_port),
                    )
                });
            *last = Some(Server {
                authority: authority.into(),
                default_port,
                parsed: parsed.clone(),
            });
            parsed
        })
    }
}
// ANCHOR_END: recent

// ANCHOR: incoming
/// The trace id of a valid incoming `traceparent`, without the SDK.
fn incoming_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let value = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |text: &str| text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || !lower_hex(version)
        || !lower_hex(trace)
        || !lower_hex(span)
    {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(trace.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (bytes != [0; 16]).then_some(TraceId(bytes))
}
// ANCHOR_END: incoming
// ANCHOR_END: all
