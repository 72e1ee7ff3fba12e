//! Serves an existing application, instrumented with `tracing`, with one
//! OpenTelemetry span per request, from two worker processes that each
//! export over OTLP/HTTP after the fork.
//!
//! The application's own spans (`tracing::info_span!`) become children of
//! the request's span, through `tracing-opentelemetry`; a caller's
//! `traceparent` is continued, and the response says which trace it was
//! in (`traceresponse`).
//!
//! Run with a local stand-in for a collector (or point
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at a real one, such as Jaeger's :4318):
//!
//! ```text
//! cargo run --example otlp_receiver        # in one shell
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=shop cargo run --example tracing_app
//! curl -si http://127.0.0.1:8000/checkout
//! curl -si -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://127.0.0.1:8000/checkout
//! ```
//!
//! Another address: `cargo run --example tracing_app -- 127.0.0.1:0`.

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;
use turnstile::middleware::traces::{ProcessTracer, TraceRequests, export, tracing_opentelemetry};
use turnstile::server::{Arbiter, ArbiterConfig};
use turnstile::{Request, Response, Route, Stack};

// ANCHOR: shop
/// The existing application: it knows `tracing`, and nothing of
/// OpenTelemetry.
fn shop(request: Request) -> Response {
    let mut response = match request.uri().path() {
        "/checkout" => {
            let total = tracing::info_span!("price basket").in_scope(|| 42);
            tracing::info_span!("charge card", amount = total).in_scope(|| {
                std::thread::sleep(Duration::from_millis(5));
            });
            let mut response = Response::new(format!("charged {total}\n").into());
            response.extensions_mut().insert(Route::new("/checkout"));
            response
        }
        _ => Response::new("Not Found\n".into()),
    };
    if request.uri().path() != "/checkout" {
        *response.status_mut() = turnstile::http::StatusCode::NOT_FOUND;
    }
    response
}
// ANCHOR_END: shop

// ANCHOR: serve
fn main() {
    // Before the fork, a subscriber without threads: its OpenTelemetry layer
    // sends each span to the provider of the worker that makes it.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(ProcessTracer));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let config = ArbiterConfig {
        binds: vec![
            std::env::args()
                .nth(1)
                .unwrap_or_else(|| "127.0.0.1:8000".into()),
        ],
        workers: 2,
        ..ArbiterConfig::default()
    };
    let code = Arbiter::new(config).run(|| {
        // Each worker builds its exporter and batch thread as it boots.
        let tracing = TraceRequests::with_pipeline(|| {
            export::from_env("shop", env!("CARGO_PKG_VERSION")).expect("a valid OTLP endpoint")
        });
        Stack::new().layer(tracing).app(shop)
    });
    std::process::exit(code);
}
// ANCHOR_END: serve
