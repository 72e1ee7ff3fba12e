//! "Timing metrics and Prometheus", a wrong turn: a layer that times each
//! request to its last byte, as it should, but labels the histogram with the
//! raw path, so every path a client sends becomes a series of its own (see
//! the test).

use std::time::Instant;

use turnstile::{AppResult, Application, Layer, Request, on_complete};

/// Configuration: none.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathMetricsLayer;

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct PathMetrics<A> {
    inner: A,
}

impl<A: Application> Layer<A> for PathMetricsLayer {
    type Application = PathMetrics<A>;

    fn layer(&self, inner: A) -> PathMetrics<A> {
        PathMetrics { inner }
    }
}

// ANCHOR: handle
impl<A: Application> Application for PathMetrics<A> {
    fn handle(&self, request: Request) -> AppResult {
        let started = Instant::now();
        // The label a dashboard seems to want: "which page was slow?".
        let path = request.uri().path().to_owned();
        let mut response = self.inner.handle(request)?;
        on_complete(&mut response, move |_done| {
            metrics::histogram!("http_server_request_duration_seconds", "path" => path)
                .record(started.elapsed());
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use turnstile::Stack;
    use turnstile::http::StatusCode;
    use turnstile::test::{MockApp, TestRequest, serve};

    use super::*;

    // ANCHOR: cardinality
    #[test]
    fn every_path_a_client_sends_becomes_a_series() {
        let app = Stack::new()
            .layer(PathMetricsLayer)
            .app(MockApp::with_status(StatusCode::NOT_FOUND, "Not Found\n"));
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.1, 1.0])
            .unwrap()
            .build_recorder();

        // A scanner looking for backups, one guess per request.
        metrics::with_local_recorder(&recorder, || {
            for n in 0..100 {
                let path = format!("/backup-{n}.zip");
                serve(&app, TestRequest::get(&path).build());
            }
        });

        let page = recorder.handle().render();
        let lines = |prefix: &str| page.lines().filter(|l| l.starts_with(prefix)).count();
        // This passes, and that is the bug: 100 requests that all got the
        // same 404 made 100 series, each of 5 lines (two buckets, +Inf, sum
        // and count), and the client chose every one of them.
        assert_eq!(lines("http_server_request_duration_seconds_count"), 100);
        assert_eq!(lines("http_server_request_duration_seconds"), 500);
        assert!(page.contains(r#"{path="/backup-42.zip"}"#));
    }
    // ANCHOR_END: cardinality
}
