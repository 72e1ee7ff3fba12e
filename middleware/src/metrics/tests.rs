use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use turnstile_core::http::StatusCode;
use turnstile_core::test::{MockApp, TestRequest, serve};
use turnstile_core::{Bytes, Response, ResponseBody, Route, Stack};

use super::*;

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(&[0.005, 0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder()
}

/// The value of the one sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "one line starting with {prefix} in\n{text}");
    lines[0].rsplit_once(' ').unwrap().1.parse().unwrap()
}

const GET_200: &str = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200","#;

#[test]
fn counts_each_request_once_by_route() {
    let app = Stack::new()
        .layer(HttpMetrics::new())
        .app(|request: Request| {
            let mut response = Response::new("ok".into());
            if request.uri().path().starts_with("/users/") {
                response.extensions_mut().insert(Route::new("/users/{id}"));
            }
            response
        });
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        HttpMetrics::describe();
        for id in 0..5 {
            serve(&app, TestRequest::get(&format!("/users/{id}")).build());
        }
    });
    let text = recorder.handle().render();
    let users = format!(r#"{GET_200}http_route="/users/{{id}}",url_scheme="http"}}"#);
    assert_eq!(sample(&text, &users), 5.0);
    assert!(text.contains("# HELP http_server_request_duration_seconds "));
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
}

// ANCHOR: unmatched_test
#[test]
fn unknown_paths_share_one_series() {
    let app = Stack::new()
        .layer(HttpMetrics::new())
        .app(MockApp::with_status(StatusCode::NOT_FOUND, "no"));
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        for n in 0..100 {
            serve(&app, TestRequest::get(&format!("/probe-{n}?x={n}")).build());
        }
    });
    let text = recorder.handle().render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .collect();
    assert_eq!(
        series,
        [
            r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",http_route="(unmatched)",url_scheme="http"} 100"#
        ]
    );
    assert!(!text.contains("probe"));
}
// ANCHOR_END: unmatched_test

#[test]
fn errors_and_panics_are_500s_counted_once() {
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        let failing = Stack::new()
            .layer(HttpMetrics::new())
            .app(MockApp::failing("db down"));
        let panicking = Stack::new()
            .layer(HttpMetrics::new())
            .app(MockApp::panicking("bug"));
        assert_eq!(serve(&failing, TestRequest::get("/a").build()).status, 500);
        assert_eq!(
            serve(&panicking, TestRequest::get("/b").build()).status,
            500
        );
    });
    let text = recorder.handle().render();
    let errors = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="500",http_route="(unmatched)",url_scheme="http"}"#;
    assert_eq!(sample(&text, errors), 2.0);
    let active = r#"http_server_active_requests{http_request_method="GET",url_scheme="http"}"#;
    assert_eq!(sample(&text, active), 0.0);
}

#[test]
fn invented_methods_are_other() {
    let app = Stack::new()
        .layer(HttpMetrics::new())
        .app(MockApp::ok("ok"));
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        for method in ["BREW", "PROPFIND", "QUERY"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            serve(&app, TestRequest::new(method, "/").build());
        }
    });
    let text = recorder.handle().render();
    assert!(!text.contains("BREW") && !text.contains("PROPFIND"));
    assert!(text.contains(r#"http_request_method="_OTHER""#));
    assert!(text.contains(r#"http_request_method="QUERY""#));
}

#[test]
fn a_streamed_body_is_timed_and_sized_to_its_last_byte() {
    let app = Stack::new()
        .layer(HttpMetrics::new())
        .app(|_request: Request| {
            let chunks = (0..3).map(|n| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(Bytes::from(format!("chunk {n}\n")))
            });
            Response::new(ResponseBody::stream(chunks))
        });
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        serve(
            &app,
            TestRequest::post("/upload").body("x".repeat(300)).build(),
        );
    });
    let text = recorder.handle().render();
    let labels = r#"{http_request_method="POST",http_response_status_code="200",http_route="(unmatched)",url_scheme="http"}"#;
    // Not one of the three chunks was ready in 10 ms.
    let fast = r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_response_status_code="200",http_route="(unmatched)",url_scheme="http",le="0.01"}"#;
    assert_eq!(sample(&text, fast), 0.0);
    assert_eq!(
        sample(
            &text,
            &format!("http_server_response_body_size_bytes_sum{labels}")
        ),
        24.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("http_server_request_body_size_bytes_sum{labels}")
        ),
        300.0
    );
}

#[test]
fn the_page_answers_its_path_only() {
    let app = Stack::new()
        .layer(ServeMetrics::new("/metrics", || "# a page\n".to_owned()))
        .app(MockApp::ok("app"));
    let page = serve(&app, TestRequest::get("/metrics").build());
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), "# a page\n");
    assert_eq!(page.header("content-type"), Some(TEXT_FORMAT));
    assert_eq!(
        serve(&app, TestRequest::get("/metrics/x").build()).text(),
        "app"
    );
    let post = serve(&app, TestRequest::post("/metrics").build());
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
