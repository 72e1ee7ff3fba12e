use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use turnstile::middleware::error_capture::sentry::protocol::Context;

use crate::support::{
    OtlpReceiver, SentryReceiver, TempPath, Turnstile, command, example, get_with, wait_until,
};

/// `kind` of a SERVER span in OTLP.
const SERVER: u64 = 2;
/// `status.code` of an ERROR span in OTLP.
const ERROR: u64 = 2;

fn start_exporting(receiver: &OtlpReceiver, args: &[&str]) -> Turnstile {
    let mut command = command(env!("CARGO_BIN_EXE_turnstile").as_ref());
    command
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        // Nothing is sent before the workers stop, unless they flush then.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000");
    Turnstile::start_command(command)
}

fn text<'a>(span: &'a Value, key: &str) -> &'a str {
    span[key].as_str().unwrap_or_default()
}

// ANCHOR: acceptance
#[test]
fn one_server_span_per_request_continued_exported_by_each_worker_and_logged() {
    let receiver = OtlpReceiver::start();
    let log = TempPath::new("traces-access.log");
    let mut server = start_exporting(
        &receiver,
        &[
            "--workers",
            "2",
            "--access-log",
            log.as_str(),
            "--access-log-format",
            "json",
        ],
    );
    server.wait_for_workers(2);

    // New traces from 4 clients at once, in rounds until both workers
    // have served (they share one listening socket).
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut pids = HashSet::new();
    for round in 0..20 {
        let replies: Vec<_> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..4)
                .map(|client| {
                    let addr = server.addr().to_owned();
                    scope.spawn(move || {
                        (0..10)
                            .map(|n| {
                                let target =
                                    format!("/per-process?round={round}&client={client}&n={n}");
                                get_with(&addr, &target, &[])
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect()
        });
        for reply in replies {
            assert_eq!(reply.status, 200);
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            pids.insert(body["pid"].as_u64().unwrap());
            answers.push((
                reply.header("x-request-id").unwrap().to_owned(),
                reply.header("traceresponse").unwrap().to_owned(),
            ));
        }
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers served");
    let roots_sent = answers.len();
    // 10 requests that continue a caller's trace.
    let mut continued = HashMap::new();
    for n in 0..10u32 {
        let trace_id = format!("{:032x}", 0x4bf9_2f35_0000_0000_u128 + u128::from(n));
        let parent = format!("{:016x}", 0x00f0_67aa_0000_0000_u64 + u64::from(n));
        let traceparent = format!("00-{trace_id}-{parent}-01");
        let reply = get_with(server.addr(), "/healthz", &[("traceparent", &traceparent)]);
        assert!(
            reply
                .header("traceresponse")
                .unwrap()
                .starts_with(&format!("00-{trace_id}-"))
        );
        continued.insert(trace_id, parent);
    }
    assert_eq!(get_with(server.addr(), "/error", &[]).status, 500);

    // Spans still batched are sent as the workers stop.
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).unwrap().success());
    let total = roots_sent + 11;
    let spans = receiver.wait_for_spans(total, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let spans = if receiver.spans().len() > spans.len() {
        receiver.spans()
    } else {
        spans
    };
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == SERVER).collect();
    assert_eq!(servers.len(), total, "one SERVER span per request");

    // Continued traces keep the caller's trace id, with its span as parent.
    for (trace_id, parent) in &continued {
        let span = servers
            .iter()
            .find(|span| text(span, "trace_id") == trace_id)
            .unwrap_or_else(|| panic!("no span continues {trace_id}"));
        assert_eq!(text(span, "parent_span_id"), parent);
        assert_eq!(text(span, "name"), "GET /healthz");
    }
    // New traces: 40 distinct ids, told to the client in traceresponse.
    let roots: HashSet<&str> = servers
        .iter()
        .filter(|span| text(span, "parent_span_id").is_empty())
        .map(|span| text(span, "trace_id"))
        .collect();
    assert_eq!(
        roots.len(),
        roots_sent + 1,
        "no duplicate trace ids across the workers"
    );
    for (_, traceresponse) in &answers {
        assert!(roots.contains(&traceresponse[3..35]), "{traceresponse}");
    }
    let root = servers
        .iter()
        .find(|span| text(span, "name") == "GET /per-process")
        .unwrap();
    let attributes = &root["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["url.path"], "/per-process");
    assert!(
        attributes["url.query"]
            .as_str()
            .unwrap()
            .starts_with("round=")
    );
    assert_eq!(attributes["url.scheme"], "http");
    assert_eq!(attributes["http.route"], "/per-process");
    assert_eq!(attributes["server.port"], 80);
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["client.address"], "127.0.0.1");
    assert_eq!(attributes["network.protocol.version"], "1.1");
    assert_eq!(attributes["server.address"], "test");
    // A 500 is an error.
    let failed = servers
        .iter()
        .find(|span| span["attributes"]["http.response.status_code"] == 500)
        .unwrap();
    assert_eq!(failed["status"], ERROR);
    assert_eq!(failed["attributes"]["error.type"], "500");

    // Each worker is its own service instance.
    let lines: Vec<Value> = log
        .read()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), total);
    let instances: HashSet<&str> = servers
        .iter()
        .map(|span| span["resource"]["service.instance.id"].as_str().unwrap())
        .collect();
    assert_eq!(instances.len(), 2);
    assert!(
        servers
            .iter()
            .all(|span| span["resource"]["service.name"] == "turnstile")
    );
    // The access log carries each request's trace id.
    let by_trace: HashSet<&str> = servers.iter().map(|span| text(span, "trace_id")).collect();
    for line in &lines {
        let trace_id = line["trace_id"].as_str().expect("a trace id in every line");
        assert!(by_trace.contains(trace_id), "{line}");
    }
    for (id, traceresponse) in &answers {
        let line = lines
            .iter()
            .find(|line| line["request_id"] == id.as_str())
            .unwrap();
        assert_eq!(line["trace_id"], traceresponse[3..35]);
    }
}
// ANCHOR_END: acceptance

#[test]
fn with_the_sdk_disabled_nothing_is_exported_and_the_callers_trace_is_still_logged() {
    let receiver = OtlpReceiver::start();
    let log = TempPath::new("traces-disabled.log");
    let mut command = command(env!("CARGO_BIN_EXE_turnstile").as_ref());
    command
        .args(["--bind", "127.0.0.1:0", "--access-log", log.as_str()])
        .args(["--access-log-format", "json"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_SDK_DISABLED", "true");
    let mut server = Turnstile::start_command(command);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get_with(server.addr(), "/", &[("traceparent", traceparent)]);
    assert_eq!(reply.status, 200);
    assert!(reply.header("traceresponse").is_none());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(receiver.spans().is_empty());
    let line: Value = serde_json::from_str(log.read().lines().next().unwrap()).unwrap();
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn the_example_exports_the_applications_spans_as_children() {
    let receiver = OtlpReceiver::start();
    let mut command = command(&example("tracing_app"));
    command
        .arg("127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_SERVICE_NAME", "shop");
    let server = Turnstile::start_command(command);
    server.wait_for_workers(2);
    let reply = get_with(server.addr(), "/checkout", &[]);
    assert_eq!(reply.body, "charged 42\n");
    let trace_id = reply.header("traceresponse").unwrap()[3..35].to_owned();
    // The batch is sent within the processor's delay (200 ms here).
    let spans = wait_until(Duration::from_secs(15), || {
        let spans: Vec<Value> = receiver
            .spans()
            .into_iter()
            .filter(|span| text(span, "trace_id") == trace_id)
            .collect();
        (spans.len() >= 3).then_some(spans)
    })
    .expect("the request's span and its two children");
    let request = spans.iter().find(|span| span["kind"] == SERVER).unwrap();
    assert_eq!(text(request, "name"), "GET /checkout");
    assert_eq!(request["resource"]["service.name"], "shop");
    for child in ["price basket", "charge card"] {
        let span = spans
            .iter()
            .find(|span| text(span, "name") == child)
            .unwrap();
        assert_eq!(
            text(span, "parent_span_id"),
            text(request, "span_id"),
            "{child}"
        );
    }
}

#[test]
fn a_sentry_event_names_the_trace_of_the_request_that_failed() {
    let spans = OtlpReceiver::start();
    let sentry = SentryReceiver::start();
    let mut command = command(env!("CARGO_BIN_EXE_turnstile").as_ref());
    command
        .args(["--bind", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", spans.endpoint())
        .env("SENTRY_DSN", sentry.dsn());
    let mut server = Turnstile::start_command(command);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get_with(server.addr(), "/error", &[("traceparent", traceparent)]);
    assert_eq!(reply.status, 500);
    let events = sentry.wait_for_events(1, Duration::from_secs(10));
    let event = &events[0];
    assert_eq!(event.tags["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    match &event.contexts["trace"] {
        Context::Trace(trace) => {
            assert_eq!(
                trace.trace_id.to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        }
        other => panic!("no trace context: {other:?}"),
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).unwrap().success());
    let exported = spans.wait_for_spans(1, Duration::from_secs(10));
    assert_eq!(
        text(&exported[0], "trace_id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(exported[0]["status"], ERROR);
}

#[test]
fn spans_batched_by_a_recycled_worker_are_sent_and_bad_settings_exit_2() {
    let receiver = OtlpReceiver::start();
    let server = start_exporting(&receiver, &["--workers", "2", "--max-requests", "5"]);
    server.wait_for_workers(2);
    // 22 requests: the two workers alive at the end hold at most 4 each,
    // so at least three workers retired with their 5.
    for n in 0..22 {
        assert_eq!(
            get_with(server.addr(), &format!("/?n={n}"), &[]).status,
            200
        );
    }
    // The batch delay is ten minutes: what arrives was flushed as the
    // workers that served it retired.
    let spans = receiver.wait_for_spans(15, Duration::from_secs(15));
    assert!(spans.iter().all(|span| span["kind"] == SERVER));
    let instances: HashSet<&str> = spans
        .iter()
        .map(|span| span["resource"]["service.instance.id"].as_str().unwrap())
        .collect();
    assert!(instances.len() >= 3, "{instances:?}");
    drop(server);

    for (name, value, named) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "only http/protobuf"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "only otlp"),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "soon",
            "expected milliseconds",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", "only none"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key", "is not a header"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "collector:4318",
            "is not a URL",
        ),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "positive whole number"),
    ] {
        let output = command(env!("CARGO_BIN_EXE_turnstile").as_ref())
            .args(["--bind", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing started");
    }
}

/// The load benchmark counts delivered spans with the quiet stand-in,
/// which decodes only the resource and each span's framing: it must count
/// exactly what was sent, by service.
#[test]
fn the_benchmarks_quiet_collector_counts_every_span_by_service() {
    let receiver = OtlpReceiver::start_counting();
    let mut server = start_exporting(&receiver, &["--workers", "2"]);
    server.wait_for_workers(2);
    for n in 0..9 {
        assert_eq!(
            get_with(server.addr(), &format!("/?n={n}"), &[]).status,
            200
        );
    }
    // The batch delay is ten minutes: the spans come as the workers stop.
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());
    let counted = wait_until(Duration::from_secs(10), || {
        (receiver.spans_counted("turnstile") >= 9).then_some(())
    });
    assert!(counted.is_some(), "{}", receiver.spans_counted("turnstile"));
    assert_eq!(receiver.spans_counted("turnstile"), 9);
    assert_eq!(receiver.spans_counted("another service"), 0);
}
