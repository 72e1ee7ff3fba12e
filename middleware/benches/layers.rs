//! What each layer costs per request, in process: the same request served
//! by a bare application and by the application wrapped in one layer. The
//! difference between the two is the layer's overhead.
//!
//! Run: `cargo bench -p turnstile-middleware --bench layers`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use turnstile_core::test::{TestRequest, serve};
use turnstile_core::{Application, Layer, Request, Response, Uuid};
use turnstile_middleware::error_capture::{ErrorCapture, sentry};
use turnstile_middleware::headers::InjectHeaders;
use turnstile_middleware::metrics::HttpMetrics;
use turnstile_middleware::request_log::{AccessFormat, AccessLog, Output, RequestLog};
use turnstile_middleware::traces::TraceRequests;
use turnstile_middleware::traces::opentelemetry_sdk::error::OTelSdkResult;
use turnstile_middleware::traces::opentelemetry_sdk::trace::{
    SdkTracerProvider, SpanData, SpanExporter,
};
use turnstile_middleware::traces::queue::{QueueSettings, SpanQueue};

fn hello(_request: Request) -> Response {
    Response::new("Hello, world!\n".into())
}

/// A request as the server hands it over: a browser's headers, a client
/// address and the server's request id.
fn request() -> Request {
    TestRequest::get("/articles/2026?page=2&token=abc")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Firefox/133.0",
        )
        .header("referer", "https://www.example.com/articles/")
        .header("accept", "text/html")
        .remote_addr("127.0.0.1:40000".parse().unwrap())
        .environ(|environ| {
            // What the server sets: the request id, the worker, and its
            // reading of the clocks as it had read the head.
            environ.request_id = Uuid::from_u128(0x1234_5678).into();
            environ.worker.pid = std::process::id();
            environ.received = Some(turnstile_core::Received::now());
        })
        .build()
}

fn bench(c: &mut Criterion, name: &str, app: &impl Application) {
    bench_with(c, name, app, || {});
}

/// As [`bench`], running `between` (untimed) before each request.
fn bench_with(c: &mut Criterion, name: &str, app: &impl Application, between: impl Fn()) {
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                between();
                request()
            },
            |req| black_box(serve(app, req)),
            BatchSize::SmallInput,
        )
    });
}

/// The recorder a worker installs: every histogram with buckets.
fn prometheus_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ])
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_bytes".into()),
                &[64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0],
            )
        })
        .unwrap()
        .build_recorder()
}

fn layers(c: &mut Criterion) {
    // As in a worker after the fork: per-process values are then known by
    // their generation, without a getpid per request.
    turnstile_core::per_process::after_fork();
    bench(c, "bare application", &hello);
    bench(
        c,
        "header injection (preset, request id, Server-Timing)",
        &InjectHeaders::new().security_preset().layer(hello),
    );
    bench(
        c,
        "request logging, nobody listening",
        &RequestLog::new().layer(hello),
    );
    for label in ["json", "combined"] {
        let format: AccessFormat = label.parse().unwrap();
        let access_log = AccessLog::new(format.clone(), Output::File("/dev/null".into()));
        let subscriber = tracing_subscriber::registry()
            .with(access_log.clone().with_filter(RequestLog::events()));
        let app = RequestLog::new().for_format(&format).layer(hello);
        tracing::subscriber::with_default(subscriber, || {
            bench(c, &format!("request logging, {} access log", label), &app);
        });
        access_log.flush();
    }
    bench(
        c,
        "timing metrics, no recorder",
        &HttpMetrics::new().layer(hello),
    );
    let recorder = prometheus_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        // Upkeep outside the timing, as the worker does it between rounds.
        bench_with(
            c,
            "timing metrics, Prometheus recorder",
            &HttpMetrics::new().layer(hello),
            || handle.run_upkeep(),
        );
    });
    bench(
        c,
        "error capture, no DSN",
        &ErrorCapture::new().layer(hello),
    );
    // A client as a worker builds it; the success path sends nothing, so
    // the test transport stands in for the network without changing the cost.
    let options = sentry::ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .transport(sentry::test::TestTransport::new());
    bench(
        c,
        "error capture, reporting to Sentry (success path)",
        &ErrorCapture::new().sentry(options).layer(hello),
    );
}

/// An exporter that drops what it is given: the span queue's thread does
/// the sending, so the request pays for the span and the queue only.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn tracing_layer(c: &mut Criterion) {
    bench(
        c,
        "tracing, no exporter",
        &TraceRequests::new().layer(hello),
    );
    let exporting = TraceRequests::with_provider(|| {
        SdkTracerProvider::builder()
            .with_span_processor(SpanQueue::new(Discard, QueueSettings::default()))
            .build()
    });
    bench(
        c,
        "tracing, batch exporter (success path)",
        &exporting.layer(hello),
    );
}

// ANCHOR: full_stack
/// Every layer, as `--middleware all` stacks them, each doing its work:
/// the JSON access log written, metrics recorded, Sentry and OpenTelemetry
/// clients built (the success path sends nothing to the first; the second
/// gets every span). Last, since it installs the global recorder for good.
fn full_stack(c: &mut Criterion) {
    let access_log = AccessLog::new(
        "json".parse::<AccessFormat>().unwrap(),
        Output::File("/dev/null".into()),
    );
    let subscriber =
        tracing_subscriber::registry().with(access_log.clone().with_filter(RequestLog::events()));
    let options = sentry::ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .transport(sentry::test::TestTransport::new());
    let app = turnstile_core::Stack::new()
        .layer(InjectHeaders::new().security_preset())
        .layer(TraceRequests::with_provider(|| {
            SdkTracerProvider::builder()
                .with_span_processor(SpanQueue::new(Discard, QueueSettings::default()))
                .build()
        }))
        .layer(RequestLog::new().for_format(&"json".parse().unwrap()))
        .layer(HttpMetrics::new())
        .layer(ErrorCapture::new().sentry(options))
        .app(hello);
    // The process's global recorder, as a worker installs it, and a new
    // generation, as the worker's boot makes, so the metrics layer finds it.
    let recorder = prometheus_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the first global recorder");
    turnstile_core::per_process::after_fork();
    tracing::subscriber::with_default(subscriber, || {
        bench_with(c, "full stack (every layer on)", &app, || {
            handle.run_upkeep()
        });
    });
    access_log.flush();
}
// ANCHOR_END: full_stack

criterion_group!(benches, layers, tracing_layer, full_stack);
criterion_main!(benches);
