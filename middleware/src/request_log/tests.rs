use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use turnstile_core::test::{MockApp, TestRequest, serve};
use turnstile_core::{Bytes, Response, ResponseBody, Stack, Uuid};

use super::*;

/// A subscriber layer that keeps every request record and the names of the
/// event's fields.
#[derive(Clone, Default)]
struct Collect {
    records: Arc<Mutex<Vec<AccessRecord>>>,
    fields: Arc<Mutex<BTreeSet<String>>>,
}

struct FieldNames<'a>(&'a mut BTreeSet<String>);

impl Visit for FieldNames<'_> {
    fn record_debug(&mut self, field: &Field, _value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        event.record(&mut FieldNames(&mut self.fields.lock().unwrap()));
        with_current_record(|record| self.records.lock().unwrap().push(record.clone()));
    }
}

impl Collect {
    fn records(&self) -> Vec<AccessRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Runs `f` with this layer as the thread's subscriber.
    fn watch<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber =
            tracing_subscriber::registry().with(self.clone().with_filter(RequestLog::events()));
        tracing::subscriber::with_default(subscriber, f)
    }
}

#[test]
fn one_event_per_request_with_the_documented_fields() {
    let collect = Collect::default();
    let app = RequestLog::new().layer(MockApp::ok("Hello!\n"));
    let request = TestRequest::get("/hello?name=world")
        .header("user-agent", "curl/8.5")
        .remote_addr("203.0.113.7:5000".parse().unwrap())
        .environ(|environ| environ.request_id = Uuid::from_u128(9).into())
        .build();
    collect.watch(|| serve(&app, request));

    let records = collect.records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.method, "GET");
    assert_eq!(record.path, "/hello");
    assert_eq!(record.query.as_deref(), Some("name=world"));
    assert_eq!(record.status, 200);
    assert_eq!(record.bytes, 7);
    assert_eq!(record.outcome, Outcome::Written);
    assert_eq!(record.request_id, RequestId::from(Uuid::from_u128(9)));
    assert_eq!(record.client, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(record.user_agent.as_ref().unwrap(), "curl/8.5");
    assert_eq!(record.pid, std::process::id());
    let fields: Vec<String> = collect.fields.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        fields,
        [
            "bytes",
            "client",
            "duration_s",
            "message",
            "method",
            "path",
            "pid",
            "query",
            "request_id",
            "status",
            "user_agent"
        ]
    );
}

// ANCHOR: streamed_test
#[test]
fn the_event_waits_for_the_last_byte_of_a_streamed_body() {
    let collect = Collect::default();
    let app = RequestLog::new().layer(|_request: Request| {
        let chunks = (0..3).map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            Ok(Bytes::from_static(b"chunk"))
        });
        Response::new(ResponseBody::stream(chunks))
    });
    collect.watch(|| {
        let response = app.handle(TestRequest::get("/stream").build()).unwrap();
        assert!(
            collect.records().is_empty(),
            "logged before the body was sent"
        );
        let (content, hooks) = response.into_body().into_parts();
        drop(content);
        hooks.complete(&Completion {
            status: StatusCode::OK,
            body_bytes: 15,
            outcome: Outcome::Written,
            finished: std::time::Instant::now(),
        });
    });
    assert_eq!(collect.records()[0].bytes, 15);

    let collect = Collect::default();
    collect.watch(|| serve(&app, TestRequest::get("/stream").build()));
    let record = &collect.records()[0];
    assert!(record.duration >= Duration::from_millis(60), "{record:?}");
}
// ANCHOR_END: streamed_test

#[test]
fn secrets_in_the_query_and_referer_are_redacted() {
    let collect = Collect::default();
    let app = RequestLog::new()
        .redactor(Redactor::default().and(["email"]))
        .layer(MockApp::ok("ok"));
    let request = TestRequest::get("/reset?token=s3cret&email=a%40b.c&page=2")
        .header("referer", "https://example.com/login?password=hunter2")
        .build();
    collect.watch(|| serve(&app, request));
    let record = &collect.records()[0];
    assert_eq!(
        record.query.as_deref(),
        Some("token=[redacted]&email=[redacted]&page=2")
    );
    assert_eq!(
        record.referer.as_deref(),
        Some("https://example.com/login?password=[redacted]")
    );
}

#[test]
fn path_parameters_never_reach_a_line_in_any_format() {
    let collect = Collect::default();
    let app = RequestLog::new().layer(MockApp::ok("ok"));
    let request = TestRequest::get("/cart;jsessionid=s3cret/items;v=2?page=2")
        .header("referer", "https://shop.example/list;jsessionid=s3cret")
        .build();
    collect.watch(|| serve(&app, request));
    let record = &collect.records()[0];
    assert_eq!(
        record.path,
        "/cart;jsessionid=[redacted]/items;v=[redacted]"
    );
    assert_eq!(
        record.referer.as_deref(),
        Some("https://shop.example/list;jsessionid=[redacted]")
    );
    for format in ["json", "combined", "%(r)s %(U)s %(f)s"] {
        let mut line = Vec::new();
        format
            .parse::<AccessFormat>()
            .unwrap()
            .write(record, &mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(!line.contains("s3cret"), "{format}: {line}");
        assert!(line.contains("/items") && line.contains("page=2"), "{line}");
    }
}

#[test]
fn credential_headers_are_recorded_redacted_unless_shown() {
    let format: AccessFormat = [
        "%({authorization}i)s %({proxy-authorization}i)s %({cookie}i)s %({x-api-key}i)s",
        "%({x-auth-token}i)s %({x-request-id}i)s %({x-original-url}i)s",
        "%({set-cookie}o)s %({content-type}o)s",
    ]
    .join(" ")
    .parse()
    .unwrap();
    let app = |shown: &[&'static str]| {
        RequestLog::new()
            .for_format(&format)
            .show_headers(shown.iter().copied().map(HeaderName::from_static))
            .layer(MockApp::new(|_| {
                let mut response = Response::new("ok".into());
                let headers = response.headers_mut();
                headers.insert("set-cookie", HeaderValue::from_static("sid=s3cret-set"));
                headers.insert("content-type", HeaderValue::from_static("text/plain"));
                Ok(response)
            }))
    };
    let request = || {
        TestRequest::get("/")
            .header("authorization", "Bearer s3cret-auth")
            .header("proxy-authorization", "Basic s3cret-proxy")
            .header("cookie", "sessionid=s3cret-cookie")
            .header("x-api-key", "s3cret-key")
            .header("x-auth-token", "s3cret-token")
            .header("x-request-id", "r-1")
            .header("x-original-url", "/reset?token=s3cret-url&page=2")
            .build()
    };
    let collect = Collect::default();
    collect.watch(|| serve(&app(&[]), request()));
    let record = &collect.records()[0];
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
    ] {
        assert_eq!(record.request_headers[name], REDACTED, "{name}");
    }
    assert_eq!(record.response_headers["set-cookie"], REDACTED);
    assert_eq!(record.request_headers["x-request-id"], "r-1");
    assert_eq!(
        record.request_headers["x-original-url"],
        "/reset?token=[redacted]&page=2"
    );
    assert_eq!(record.response_headers["content-type"], "text/plain");
    let mut line = Vec::new();
    format.write(record, &mut line);
    let line = String::from_utf8(line).unwrap();
    assert!(!line.contains("s3cret"), "{line}");

    // Named by a setting, a credential header is printed as it came.
    let collect = Collect::default();
    collect.watch(|| serve(&app(&["x-api-key", "set-cookie"]), request()));
    let record = &collect.records()[0];
    assert_eq!(record.request_headers["x-api-key"], "s3cret-key");
    assert_eq!(record.response_headers["set-cookie"], "sid=s3cret-set");
    assert_eq!(record.request_headers["authorization"], REDACTED);
}

// ANCHOR: skip_test
#[test]
fn skipped_paths_are_logged_only_when_they_fail() {
    let collect = Collect::default();
    let healthy = RequestLog::new().skip("/healthz").layer(MockApp::ok("ok"));
    let failing = RequestLog::new()
        .skip("/healthz")
        .layer(MockApp::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "down",
        ));
    collect.watch(|| {
        serve(&healthy, TestRequest::get("/healthz").build());
        serve(&healthy, TestRequest::get("/healthz/deep").build());
        serve(&failing, TestRequest::get("/healthz").build());
    });
    let logged: Vec<(String, u16)> = collect
        .records()
        .iter()
        .map(|r| (r.path.clone(), r.status.as_u16()))
        .collect();
    assert_eq!(
        logged,
        [("/healthz/deep".into(), 200), ("/healthz".into(), 503)]
    );
}
// ANCHOR_END: skip_test

#[test]
fn errors_and_panics_are_logged_as_500() {
    let collect = Collect::default();
    collect.watch(|| {
        for mock in [MockApp::failing("boom"), MockApp::panicking("boom")] {
            let app = Stack::new().layer(RequestLog::new()).app(mock);
            let response = serve(&app, TestRequest::get("/fails").build());
            assert_eq!(response.status, 500);
        }
    });
    let records = collect.records();
    assert_eq!(records.len(), 2);
    // The boundary's 500 is a response like any other: logged as sent.
    assert!(
        records
            .iter()
            .all(|r| r.status == 500 && r.outcome == Outcome::Written && r.bytes == 22)
    );
}

#[test]
fn nothing_is_recorded_when_no_subscriber_listens() {
    let mock = MockApp::ok("ok");
    let response = serve(
        &RequestLog::new().layer(mock.clone()),
        TestRequest::get("/").build(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(mock.calls(), 1);
}

#[test]
fn the_access_log_writes_lines_and_reopens_its_file_when_asked() {
    let dir = std::env::temp_dir().join(format!("turnstile-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let format: AccessFormat = "%(m)s %(U)s %(s)s %({x-request-id}o)s".parse().unwrap();
    let access_log = AccessLog::new(format.clone(), Output::File(path.clone()));
    let subscriber =
        tracing_subscriber::registry().with(access_log.clone().with_filter(RequestLog::events()));
    let app = RequestLog::new()
        .for_format(&format)
        .layer(MockApp::new(|_| {
            let mut response = Response::new("ok".into());
            response
                .headers_mut()
                .insert("x-request-id", HeaderValue::from_static("r-1"));
            Ok(response)
        }));
    tracing::subscriber::with_default(subscriber, || {
        serve(&app, TestRequest::get("/before").build());
        access_log.flush();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        turnstile_core::reopen::request();
        serve(&app, TestRequest::get("/after").build());
        access_log.flush();
    });
    let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert_eq!(old, "GET /before 200 r-1\n");
    assert_eq!(new, "GET /after 200 r-1\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_log_and_the_span_measure_from_when_the_server_read_the_head() {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    let spans = InMemorySpanExporter::default();
    let exported = spans.clone();
    let tracing = crate::traces::TraceRequests::with_provider(move || {
        SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build()
    });
    let app = Stack::new()
        .layer(tracing)
        .layer(RequestLog::new())
        .app(MockApp::ok("hi"));
    // Read by the server 50 ms before the layers see it.
    let received = turnstile_core::Received {
        instant: std::time::Instant::now() - Duration::from_millis(50),
        wall: std::time::SystemTime::now() - Duration::from_millis(50),
    };
    let request = TestRequest::get("/")
        .environ(|environ| environ.received = Some(received))
        .build();
    let collect = Collect::default();
    collect.watch(|| serve(&app, request));

    let record = &collect.records()[0];
    assert_eq!(record.started, received.wall);
    assert!(record.duration >= Duration::from_millis(50), "{record:?}");
    let span = &spans.get_finished_spans().unwrap()[0];
    assert_eq!(span.start_time, received.wall);
    // One reading of the clock at the end, for both.
    assert_eq!(
        span.end_time.duration_since(span.start_time).unwrap(),
        record.duration
    );
}
