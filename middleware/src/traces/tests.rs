use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use turnstile_core::test::{MockApp, TestRequest, serve};
use turnstile_core::{BoxError, Response};

use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn exporting() -> (TraceRequests, InMemorySpanExporter) {
    let spans = InMemorySpanExporter::default();
    let exported = spans.clone();
    let layer = TraceRequests::with_provider(move || {
        SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build()
    });
    (layer, spans)
}

fn finished(spans: &InMemorySpanExporter) -> Vec<SpanData> {
    spans.get_finished_spans().unwrap()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::new(key.to_owned()))
        .map(|kv| kv.value.clone())
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

fn routed(
    route: &'static str,
    status: StatusCode,
) -> impl Fn(Request) -> Response + Send + Sync + 'static {
    move |_request: Request| {
        let mut response = Response::new("ok\n".into());
        *response.status_mut() = status;
        response.extensions_mut().insert(Route::new(route));
        response
    }
}

// ANCHOR: span_test
#[test]
fn one_server_span_per_request_continues_the_callers_trace() {
    let (layer, spans) = exporting();
    let app = layer.layer(routed("/users/{id}", StatusCode::OK));
    let request = TestRequest::get("/users/7?page=2&token=s3cret")
        .header("host", "shop.example:8443")
        .header("user-agent", "curl/8.0")
        .header("traceparent", PARENT)
        .remote_addr("198.51.100.7:40000".parse().unwrap())
        .build();
    let response = serve(&app, request);
    let spans = finished(&spans);
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(
        span.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(text(span, "http.request.method"), "GET");
    assert_eq!(text(span, "url.path"), "/users/7");
    assert_eq!(text(span, "url.query"), "page=2&token=[redacted]");
    assert_eq!(text(span, "url.scheme"), "http");
    assert_eq!(text(span, "http.route"), "/users/{id}");
    assert_eq!(
        attribute(span, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(text(span, "server.address"), "shop.example");
    assert_eq!(attribute(span, "server.port"), Some(Value::I64(8443)));
    let routes = span
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "http.route")
        .count();
    assert_eq!(routes, 1, "http.route once");
    assert_eq!(text(span, "client.address"), "198.51.100.7");
    assert_eq!(text(span, "user_agent.original"), "curl/8.0");
    assert_eq!(text(span, "network.protocol.version"), "1.1");
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        response.header("traceresponse").unwrap(),
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            span.span_context.span_id()
        )
    );
}
// ANCHOR_END: span_test

#[test]
fn path_parameters_and_secret_query_values_stay_out_of_the_span() {
    let (layer, spans) = exporting();
    let app = layer.layer(MockApp::ok("ok"));
    let request = TestRequest::get("/cart;jsessionid=s3cret/items?page=2&pass=s3cret")
        .header("user-agent", "curl/8.0")
        .build();
    serve(&app, request);
    let span = &finished(&spans)[0];
    assert_eq!(text(span, "url.path"), "/cart;jsessionid=[redacted]/items");
    assert_eq!(text(span, "url.query"), "page=2&pass=[redacted]");
    let everything = format!("{span:?}");
    assert!(!everything.contains("s3cret"), "{everything}");
}

#[test]
fn a_5xx_or_an_error_marks_the_span_failed_and_a_4xx_does_not() {
    let (layer, spans) = exporting();
    serve(
        &layer.layer(routed("/pay", StatusCode::SERVICE_UNAVAILABLE)),
        TestRequest::get("/pay").build(),
    );
    serve(
        &layer.layer(MockApp::with_status(StatusCode::NOT_FOUND, "no")),
        TestRequest::get("/x").build(),
    );
    let failing = layer.layer(MockApp::failing("no database"));
    let answer = serve(&failing, TestRequest::get("/y").build());
    assert_eq!(answer.status, 500, "the boundary answered the error");
    let spans = finished(&spans);
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].status, Status::error(""));
    assert_eq!(text(&spans[0], "error.type"), "503");
    assert_eq!(spans[1].status, Status::Unset);
    assert_eq!(spans[1].name, "GET");
    assert!(attribute(&spans[1], "error.type").is_none());
    assert!(matches!(spans[2].status, Status::Error { .. }));
    // The status was sent, so it is the error's type (HTTP's conventions).
    assert_eq!(text(&spans[2], "error.type"), "500");
    assert_eq!(
        attribute(&spans[2], "http.response.status_code"),
        Some(Value::I64(500))
    );
}

#[test]
fn a_panic_ends_the_span_as_a_failure() {
    let (layer, spans) = exporting();
    let app = layer.layer(MockApp::panicking("boom"));
    assert_eq!(serve(&app, TestRequest::get("/").build()).status, 500);
    let spans = finished(&spans);
    assert_eq!(spans.len(), 1);
    assert!(matches!(spans[0].status, Status::Error { .. }));
    assert_eq!(text(&spans[0], "error.type"), "500");
}

#[test]
fn an_unknown_method_is_other_and_the_span_is_named_http() {
    let (layer, spans) = exporting();
    let request = TestRequest::new(Method::from_bytes(b"PURGE").unwrap(), "/cache").build();
    serve(&layer.layer(MockApp::ok("ok")), request);
    let span = &finished(&spans)[0];
    assert_eq!(span.name, "HTTP");
    assert_eq!(text(span, "http.request.method"), "_OTHER");
    assert_eq!(text(span, "http.request.method_original"), "PURGE");
}

#[test]
fn spans_the_application_makes_are_children_of_the_request() {
    let (layer, spans) = exporting();
    // The application uses `tracing`; the bridge turns its spans into
    // OpenTelemetry spans of the same provider.
    let bridge = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(bridge.tracer("app")));
    let app = layer.layer(|request: Request| -> Result<Response, BoxError> {
        tracing::info_span!("load user").in_scope(|| ());
        let trace_id = request.extensions().get::<TraceId>().copied();
        Ok(Response::new(format!("{}", trace_id.unwrap()).into()))
    });
    let body = tracing::subscriber::with_default(subscriber, || {
        serve(&app, TestRequest::get("/").build()).text()
    });
    let spans = finished(&spans);
    let request = spans
        .iter()
        .find(|span| span.span_kind == SpanKind::Server)
        .unwrap();
    let child = spans
        .iter()
        .find(|span| span.name == "load user")
        .expect("the tracing span");
    assert_eq!(child.parent_span_id, request.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        request.span_context.trace_id()
    );
    // The request's TraceId, as the layers inside see it.
    assert_eq!(body, request.span_context.trace_id().to_string());
}

#[test]
fn a_streamed_body_is_pulled_with_the_requests_span_current() {
    let (layer, spans) = exporting();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = layer.layer(move |_: Request| {
        let record = record.clone();
        // Each chunk notes the span current as it is pulled: after the
        // layer has returned, as the server pulls it, perhaps elsewhere.
        let chunks = (0..2).map(move |_| {
            let current = Context::current().span().span_context().span_id();
            record.lock().unwrap().push(current);
            Ok(turnstile_core::Bytes::from_static(b"chunk\n"))
        });
        Response::new(turnstile_core::ResponseBody::stream(chunks))
    });
    let response = serve(&app, TestRequest::get("/feed").build());
    assert_eq!(response.text(), "chunk\nchunk\n");
    let request = finished(&spans)[0].span_context.span_id();
    assert_eq!(*seen.lock().unwrap(), [request, request]);
    assert_ne!(Context::current().span().span_context().span_id(), request);
}

#[test]
fn without_a_pipeline_an_incoming_trace_id_still_reaches_the_layers_inside() {
    let app = TraceRequests::new().layer(|request: Request| {
        let trace_id = request.extensions().get::<TraceId>().copied();
        Response::new(format!("{trace_id:?}").into())
    });
    let traced = TestRequest::get("/").header("traceparent", PARENT).build();
    assert_eq!(
        serve(&app, traced).text(),
        "Some(TraceId(4bf92f3577b34da6a3ce929d0e0e4736))"
    );
    let response = serve(
        &app,
        TestRequest::get("/")
            .header("traceparent", "00-zz-00-01")
            .build(),
    );
    assert_eq!(response.text(), "None");
    assert!(response.header("traceresponse").is_none());
}

#[test]
fn a_root_request_gets_a_new_trace_each_time() {
    let (layer, spans) = exporting();
    let app = layer.layer(MockApp::ok("ok"));
    for _ in 0..50 {
        serve(&app, TestRequest::get("/").build());
    }
    let ids: std::collections::HashSet<_> = finished(&spans)
        .iter()
        .map(|span| span.span_context.trace_id())
        .collect();
    assert_eq!(ids.len(), 50);
    // The current context is the request's only while the application runs.
    assert!(!Context::current().has_active_span());
}

#[test]
fn a_response_cut_short_is_a_failed_span() {
    use turnstile_core::ResponseBody;
    let (layer, spans) = exporting();
    let app = layer.layer(|_request: Request| {
        let chunks = vec![
            Ok(turnstile_core::Bytes::from_static(b"a")),
            Err(std::io::Error::other("gone")),
        ];
        Response::new(ResponseBody::stream(chunks.into_iter()))
    });
    serve(&app, TestRequest::get("/").build());
    let span = &finished(&spans)[0];
    assert_eq!(
        attribute(span, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(text(span, "error.type"), "aborted");
}

#[test]
fn addresses_are_written_as_std_writes_them() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "198.51.100.7",
        "::1",
        "2001:db8::1",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(ip_text(ip), ip.to_string());
    }
}

#[test]
fn repeated_attribute_strings_are_shared_and_never_stale() {
    let first = recent::path("/users/7");
    assert!(Arc::ptr_eq(&first, &recent::path("/users/7")));
    assert_eq!(&*recent::path("/users/8"), "/users/8");
    assert_eq!(&*recent::path("/users/7"), "/users/7");

    let agent = recent::user_agent("curl/8.5");
    assert!(Arc::ptr_eq(&agent, &recent::user_agent("curl/8.5")));
    assert_eq!(&*recent::user_agent("Mozilla/5.0"), "Mozilla/5.0");

    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    assert!(Arc::ptr_eq(&recent::client(local), &recent::client(local)));
    assert_eq!(&*recent::client(other), "2001:db8::1");
    assert_eq!(&*recent::client(local), "127.0.0.1");

    let (host, port) = recent::server("example.com", 80).unwrap();
    assert_eq!((&*host, port), ("example.com", 80));
    // The same authority over https has another default port.
    assert_eq!(recent::server("example.com", 443).unwrap().1, 443);
    assert_eq!(recent::server("example.com:8080", 443).unwrap().1, 8080);
    assert_eq!(&*recent::server("[::1]:9000", 80).unwrap().0, "[::1]");
    assert_eq!(recent::server("bad host", 80), None);
    assert_eq!(recent::server("bad host", 80), None);
}

#[test]
fn traceresponse_is_written_as_w3c_formats_it() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    for (trace, span, flags) in [
        (
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            0x00f0_67aa_0ba9_02b7,
            1,
        ),
        (1, 0xffff_ffff_ffff_ffff, 0),
        (u128::MAX, 0x0a0b_0c0d_0e0f_1011, 0xff),
    ] {
        let ids = SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::new(flags),
            false,
            TraceState::default(),
        );
        assert_eq!(
            trace_response(&ids),
            format!("00-{trace:032x}-{span:016x}-{flags:02x}")
        );
    }
}
