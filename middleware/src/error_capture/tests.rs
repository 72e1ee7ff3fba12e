use std::sync::{Arc, Mutex};

use sentry::protocol::Level;
use sentry::test::TestTransport;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt as _;
use turnstile_core::test::{MockApp, TestRequest, serve};
use turnstile_core::{BoxError, Stack, TraceId, Uuid};

use super::*;

fn reporting(capture: ErrorCapture) -> (ErrorCapture, Arc<TestTransport>) {
    let transport = TestTransport::new();
    let options = ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .transport(transport.clone());
    (capture.sentry(options), transport)
}

/// A browser's request, with every kind of secret a request carries.
fn request(path: &str) -> Request {
    TestRequest::get(path)
        .header("host", "shop.example")
        .header("user-agent", "Mozilla/5.0")
        .header("authorization", "Bearer auth-secret")
        .header("cookie", "sessionid=cookie-secret")
        .header("x-api-key", "key-secret")
        .header("x-forwarded-for", "203.0.113.9")
        .remote_addr("198.51.100.7:40000".parse().unwrap())
        .environ(|environ| {
            environ.request_id = Uuid::from_u128(0x1234).into();
            environ.worker.id = 2;
        })
        .build()
}

const SECRETS: [&str; 6] = [
    "auth-secret",
    "cookie-secret",
    "key-secret",
    "hunter2",
    "203.0.113.9",
    "198.51.100.7",
];

fn assert_no_secret(event: &Event<'static>) {
    let text = serde_json::to_string(event).unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn an_error_is_a_generic_500_and_one_event_with_the_scrubbed_request() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let app = capture.layer(MockApp::failing("the password hunter2 was refused"));
    let response = serve(&app, request("/login?user=ann&password=hunter2"));
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.text(), "Internal Server Error\n");

    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let exception = event.exception.last().unwrap();
    assert_eq!(
        exception.value.as_deref(),
        Some("the password hunter2 was refused")
    );
    assert_eq!(exception.mechanism.as_ref().unwrap().handled, Some(false));
    let reported = event.request.as_ref().unwrap();
    assert_eq!(reported.method.as_deref(), Some("GET"));
    assert_eq!(
        reported.url.as_ref().unwrap().as_str(),
        "http://shop.example/login?user=ann&password=[redacted]"
    );
    assert_eq!(
        reported.query_string.as_deref(),
        Some("user=ann&password=[redacted]")
    );
    assert_eq!(reported.headers["user-agent"], "Mozilla/5.0");
    assert_eq!(
        event.tags["request_id"],
        "00000000-0000-0000-0000-000000001234"
    );
    assert_eq!(event.tags["worker_id"], "2");
    assert_eq!(event.transaction.as_deref(), Some("GET /login"));
    assert!(event.user.is_none());
    // The error's own text is the application's business; the rest is clean.
    let mut without_message = event.clone();
    without_message.exception.values.clear();
    assert_no_secret(&without_message);
}

// ANCHOR: panic_test
#[test]
fn a_panic_is_reported_once_with_its_stack_and_the_thread_serves_on() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let app = capture.layer(|request: Request| -> Response {
        if request.uri().path() == "/panic" {
            panic!("the basket is empty");
        }
        Response::new("fine\n".into())
    });
    let response = serve(&app, request("/panic"));
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.text(), "Internal Server Error\n");
    assert_eq!(serve(&app, request("/")).text(), "fine\n");

    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let exception = &events[0].exception[0];
    assert_eq!(exception.ty, "panic");
    assert_eq!(exception.value.as_deref(), Some("the basket is empty"));
    assert_eq!(exception.mechanism.as_ref().unwrap().ty, "panic");
    let frames = &exception.stacktrace.as_ref().expect("a stack").frames;
    // The innermost frame left is this test's closure, where it panicked.
    let innermost = frames.last().and_then(|frame| frame.function.as_deref());
    assert!(
        innermost.is_some_and(|function| function.contains("error_capture::tests")),
        "{innermost:?}"
    );
    assert_no_secret(&events[0]);
}
// ANCHOR_END: panic_test

#[test]
fn statuses_the_application_answers_are_reported_when_listed() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let unavailable = capture.layer(MockApp::with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
    ));
    let missing = capture.layer(MockApp::with_status(StatusCode::NOT_FOUND, "none"));
    assert_eq!(serve(&unavailable, request("/checkout")).text(), "busy");
    serve(&missing, request("/nope"));
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message.as_deref(),
        Some("GET /checkout answered 503 Service Unavailable")
    );
    assert_eq!(
        events[0].request.as_ref().unwrap().method.as_deref(),
        Some("GET")
    );

    let (capture, transport) =
        reporting(ErrorCapture::new().capture_statuses(parse_statuses("404").unwrap()));
    serve(
        &capture.layer(MockApp::with_status(StatusCode::NOT_FOUND, "none")),
        request("/nope"),
    );
    serve(
        &capture.layer(MockApp::with_status(StatusCode::BAD_GATEWAY, "x")),
        request("/x"),
    );
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .message
            .as_deref()
            .unwrap()
            .ends_with("404 Not Found")
    );
}

#[test]
fn success_is_untouched_and_reports_nothing() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let response = serve(&capture.layer(MockApp::ok("hello")), request("/"));
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.text(), "hello");
    assert!(transport.fetch_and_clear_events().is_empty());
}

#[test]
fn what_the_application_reports_carries_the_request_and_ends_with_it() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let app = capture.layer(|request: Request| -> Result<Response, BoxError> {
        if request.uri().path() == "/checkout" {
            sentry::configure_scope(|scope| scope.set_tag("cart", "7"));
            sentry::capture_message("checkout was slow", Level::Warning);
            return Ok(Response::new("done".into()));
        }
        Err("the next request failed".into())
    });
    serve(&app, request("/checkout"));
    serve(&app, request("/other"));
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].message.as_deref(), Some("checkout was slow"));
    assert_eq!(events[0].tags["cart"], "7");
    assert!(events[0].request.is_some());
    assert!(events[0].tags.contains_key("request_id"));
    // The tag the first request set went with its hub.
    assert!(!events[1].tags.contains_key("cart"), "{:?}", events[1].tags);
}

#[test]
fn a_streamed_body_is_pulled_inside_the_requests_hub() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let app = capture.layer(|_: Request| {
        // Pulled after the layer has returned, as the server pulls it.
        let chunks = std::iter::once_with(|| {
            sentry::capture_message("half way through the export", Level::Warning);
            Ok(turnstile_core::Bytes::from_static(b"rows\n"))
        });
        Response::new(turnstile_core::ResponseBody::stream(chunks))
    });
    assert_eq!(serve(&app, request("/export")).text(), "rows\n");
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1);
    let reported = events[0].request.as_ref().expect("the request's hub");
    assert!(reported.url.as_ref().unwrap().as_str().ends_with("/export"));
}

#[test]
fn the_client_address_and_forwarding_headers_need_send_default_pii() {
    let transport = TestTransport::new();
    let options = ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .send_default_pii(true)
        .transport(transport.clone());
    let app = ErrorCapture::new()
        .sentry(options)
        .layer(MockApp::failing("no"));
    serve(&app, request("/"));
    let event = &transport.fetch_and_clear_events()[0];
    let user_ip = event.user.as_ref().unwrap().ip_address.unwrap();
    assert_eq!(user_ip.to_string(), "198.51.100.7");
    let reported = event.request.as_ref().unwrap();
    assert_eq!(reported.headers["x-forwarded-for"], "203.0.113.9");
    assert_eq!(reported.env["REMOTE_ADDR"], "198.51.100.7");
    // Credentials stay hidden whatever the setting.
    assert_eq!(reported.headers["authorization"], REDACTED_VALUE);
}

const REDACTED_VALUE: &str = crate::redact::REDACTED;

#[test]
fn the_trace_id_is_a_tag() {
    let (capture, transport) = reporting(ErrorCapture::new());
    let app = capture.layer(MockApp::failing("no"));
    let request = TestRequest::get("/").extension(TraceId([0xab; 16])).build();
    serve(&app, request);
    let event = &transport.fetch_and_clear_events()[0];
    assert_eq!(event.tags["trace_id"], "ab".repeat(16));
    match &event.contexts["trace"] {
        sentry::protocol::Context::Trace(trace) => {
            assert_eq!(trace.trace_id.to_string(), "ab".repeat(16));
        }
        other => panic!("not a trace context: {other:?}"),
    }
}

#[test]
fn debug_mode_shows_the_error_and_its_causes() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the order could not be saved")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let app = ErrorCapture::new()
        .debug(true)
        .layer(|_: Request| -> Result<Response, Outer> {
            Err(Outer(std::io::Error::other("disk full")))
        });
    let response = serve(&app, request("/"));
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.text(),
        "Internal Server Error\n\nthe order could not be saved\ncaused by: disk full\n"
    );
    let app = ErrorCapture::new()
        .debug(true)
        .layer(MockApp::panicking("boom"));
    let text = serve(&app, request("/")).text();
    assert!(
        text.contains("panicked at") && text.ends_with(": boom\n"),
        "{text}"
    );
}

/// The error log's lines: message and fields.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl Visit for Text {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut text = Text(format!(
            "{} {} ",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut text);
        self.0.lock().unwrap().push(text.0);
    }
}

/// What the error log got while `run` ran.
fn logged_while<R>(run: impl FnOnce() -> R) -> (Vec<String>, R) {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(lines.clone());
    let result = tracing::subscriber::with_default(subscriber, run);
    let lines = lines.0.lock().unwrap().clone();
    (lines, result)
}

#[test]
fn without_sentry_a_failure_is_logged_with_its_request_id() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(lines.clone());
    let app = ErrorCapture::new().layer(MockApp::panicking("out of stock"));
    let failing = ErrorCapture::new().layer(MockApp::failing("no database"));
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(
            serve(&app, request("/buy?token=t")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            serve(&failing, request("/list")).text(),
            "Internal Server Error\n"
        );
    });
    let lines = lines.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("ERROR turnstile::errors "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("GET /buy panicked at "), "{}", lines[0]);
    assert!(lines[0].contains(": out of stock"), "{}", lines[0]);
    assert!(
        lines[0].contains("request_id=00000000-0000-0000-0000-000000001234"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("token"), "{}", lines[0]);
    assert!(
        lines[1].contains("GET /list failed: no database"),
        "{}",
        lines[1]
    );
}

#[test]
fn path_parameters_reach_neither_sentry_nor_the_error_log() {
    let (capture, transport) = reporting(ErrorCapture::new().capture_statuses([404..=404]));
    let failing = capture.clone().layer(MockApp::failing("no"));
    let missing = capture.layer(MockApp::with_status(StatusCode::NOT_FOUND, "none"));
    let mut referred = request("/cart;jsessionid=s3cret-id/items?page=2");
    referred.headers_mut().insert(
        "referer",
        "https://shop.example/list;jsessionid=s3cret-ref?page=1"
            .parse()
            .unwrap(),
    );
    let (logged, _) = logged_while(|| {
        serve(&failing, referred);
        serve(&missing, request("/cart;jsessionid=s3cret-id/items"));
    });
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 2, "{events:?}");
    let reported = events[0].request.as_ref().unwrap();
    assert_eq!(
        reported.url.as_ref().unwrap().as_str(),
        "http://shop.example/cart;jsessionid=[redacted]/items?page=2"
    );
    assert_eq!(
        reported.headers["referer"],
        "https://shop.example/list;jsessionid=[redacted]?page=1"
    );
    assert_eq!(
        events[0].transaction.as_deref(),
        Some("GET /cart;jsessionid=[redacted]/items")
    );
    assert_eq!(
        events[1].message.as_deref(),
        Some("GET /cart;jsessionid=[redacted]/items answered 404 Not Found")
    );
    let text = format!("{events:?} {logged:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        logged
            .iter()
            .any(|line| line.contains("GET /cart;jsessionid=[redacted]/items failed: no")),
        "{logged:?}"
    );
}

#[test]
fn status_lists_parse() {
    assert_eq!(parse_statuses(""), Ok(vec![]));
    assert_eq!(parse_statuses("500-599"), Ok(vec![500..=599]));
    assert!(parse_statuses("5xx").is_err());
    assert!(parse_statuses("99").is_err());
    assert!(parse_statuses("1000").is_err());
}

#[test]
fn a_nested_layer_reports_once() {
    let (outer, transport) = reporting(ErrorCapture::new());
    let app = Stack::new()
        .layer(outer)
        .layer(ErrorCapture::new())
        .app(MockApp::panicking("inner"));
    let response = serve(&app, request("/"));
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The inner layer, without a client, logged it; the outer one found
    // the failure on the 500 and reports the panic itself, once, and no
    // status event besides.
    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].exception[0].ty, "panic");
    assert_eq!(events[0].exception[0].value.as_deref(), Some("inner"));
}

#[test]
fn a_client_fault_is_its_status_and_reported_nowhere_even_through_an_error_of_its_own() {
    use std::io::Read as _;
    use turnstile_core::BodyError;
    use turnstile_core::test::FailingReader;

    let (capture, transport) = reporting(ErrorCapture::new().capture_statuses([400..=599]));
    let app = capture.layer(|request: Request| -> Result<Response, BoxError> {
        let mut body = request.into_body();
        // An application that hides the read error behind one of its own.
        body.read_to_end(&mut Vec::new())
            .map_err(|_| "could not read the upload")?;
        Ok(Response::new("read\n".into()))
    });
    let faulty = turnstile_core::RequestBody::from_reader(FailingReader(BodyError::malformed(
        "invalid chunk size",
    )));
    let request = TestRequest::post("/upload").build().map(|_| faulty);
    let (logged, response) = logged_while(|| serve(&app, request));
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.text().contains("invalid chunk size"));
    assert!(
        transport.fetch_and_clear_events().is_empty(),
        "no Sentry event"
    );
    assert!(logged.is_empty(), "no error line: {logged:?}");
}

#[test]
fn a_string_error_is_typed_error_and_a_clone_configures_alone() {
    let base = ErrorCapture::new();
    let (capture, transport) = reporting(base.clone().debug(false));
    serve(
        &capture.layer(MockApp::failing("plain words")),
        request("/"),
    );
    let event = &transport.fetch_and_clear_events()[0];
    assert_eq!(event.exception[0].ty, "Error");
    assert_eq!(event.exception[0].value.as_deref(), Some("plain words"));
    // The clone's settings did not change the original's.
    let debug = base.clone().debug(true);
    let shown = serve(&debug.layer(MockApp::failing("shown")), request("/")).text();
    let hidden = serve(&base.layer(MockApp::failing("hidden")), request("/")).text();
    assert!(shown.contains("shown"));
    assert_eq!(hidden, "Internal Server Error\n");
}

#[test]
fn a_panic_the_application_caught_is_not_blamed_on_its_error() {
    let app = ErrorCapture::new()
        .debug(true)
        .layer(|_: Request| -> Result<Response, BoxError> {
            let _ = std::panic::catch_unwind(|| panic!("handled inside"));
            Err("the real failure".into())
        });
    let text = serve(&app, request("/")).text();
    assert_eq!(text, "Internal Server Error\n\nthe real failure\n");
}
