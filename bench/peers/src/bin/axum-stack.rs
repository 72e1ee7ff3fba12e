//! The full-stack peer in `bench/stack.sh`: axum on a single-threaded tokio
//! runtime with the tower-http layers a team would put in front of it,
//! comparable to `turnstile --middleware all`:
//!
//! - `TraceLayer`, logging one line per request to a file through
//!   `tracing-appender`'s non-blocking writer (the access log);
//! - `SetRequestIdLayer` (a UUID per request) and
//!   `PropagateRequestIdLayer` (`x-request-id` on the response);
//! - `SetResponseHeaderLayer` for the security headers Turnstile's preset
//!   adds;
//! - `CatchPanicLayer` (the 500 for a panic);
//! - a `metrics-exporter-prometheus` histogram of request durations, by
//!   method, status and route.
//!
//! Run: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin axum-stack -- 127.0.0.1:8082 /tmp/axum-access.log`

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

async fn hello() -> ([(HeaderName, &'static str); 1], &'static str) {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Hello, world!\n",
    )
}

/// The request-duration histogram, labelled as Turnstile's.
async fn record_duration(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "http_request_method" => method,
        "http_response_status_code" => response.status().as_u16().to_string(),
        "http_route" => route,
    )
    .record(started.elapsed());
    response
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8082".into())
        .parse()
        .expect("an address such as 127.0.0.1:8082");
    let log = args.next().unwrap_or_else(|| "axum-access.log".into());
    let (writer, _guard) = tracing_appender::non_blocking(
        std::fs::File::create(&log).expect("the access log can be created"),
    );
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(Level::INFO)
        .init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ])
        .expect("buckets")
        .install_recorder()
        .expect("the only recorder");

    let x_request_id = HeaderName::from_static("x-request-id");
    let security = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ];
    let app = Router::new()
        .route("/", get(hello))
        .route(
            "/metrics",
            get(move || {
                let page = prometheus.render();
                async move { page }
            }),
        )
        .layer(middleware::from_fn(record_duration))
        .layer(CatchPanicLayer::new())
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    x_request_id.clone(),
                    MakeRequestUuid,
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static(security[0].0),
                    HeaderValue::from_static(security[0].1),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static(security[1].0),
                    HeaderValue::from_static(security[1].1),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static(security[2].0),
                    HeaderValue::from_static(security[2].1),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static(security[3].0),
                    HeaderValue::from_static(security[3].1),
                )),
        );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("a bound address");
        println!("axum-stack: listening on http://{addr}");
        axum::serve(listener, app).await.expect("serve");
    });
}
