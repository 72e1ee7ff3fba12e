// ANCHOR: all
//! Timing metrics: OpenTelemetry's HTTP server metrics, recorded through the
//! [`metrics`] facade with Prometheus names, and a page that serves them.
//!
//! [`HttpMetrics`] records, for every request:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram, to the last byte | method, status, route, scheme |
//! | `http_server_request_body_size_bytes` | histogram (`Content-Length`; chunked bodies are not counted) | method, status, route, scheme |
//! | `http_server_response_body_size_bytes` | histogram, the bytes written | method, status, route, scheme |
//! | `http_server_active_requests` | gauge | method, scheme |
//!
//! The labels are `http_request_method` (`_OTHER` for methods outside
//! HTTP's registry, so a client cannot invent series),
//! `http_response_status_code` (500 for an error or a panic),
//! `http_route` (the application's [`Route`], else [`UNMATCHED_ROUTE`]:
//! never the raw path) and `url_scheme`.
//!
//! Values go to whatever recorder the process installed: Turnstile's workers
//! install a Prometheus recorder after the fork, and the arbiter merges them
//! (`--metrics-bind`). [`ServeMetrics`] answers one path on the main port
//! with a render function's text, for a single process.
//!
//! # Example
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use turnstile_core::{Request, Response, Route, Stack, test};
//! use turnstile_middleware::metrics::HttpMetrics;
//!
//! let app = Stack::new().layer(HttpMetrics::new()).app(|request: Request| {
//!     let mut response = Response::new("user\n".into());
//!     if request.uri().path().starts_with("/users/") {
//!         response.extensions_mut().insert(Route::new("/users/{id}"));
//!     }
//!     response
//! });
//!
//! let recorder = PrometheusBuilder::new().set_buckets(&[0.1, 1.0]).unwrap().build_recorder();
//! let prometheus = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     for path in ["/users/1", "/users/2", "/nope"] {
//!         test::serve(&app, test::TestRequest::get(path).build());
//!     }
//! });
//!
//! let text = prometheus.render();
//! assert!(text.contains(
//!     r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/users/{id}",url_scheme="http"} 2"#
//! ));
//! // The unknown path is grouped under one placeholder, not its own series.
//! assert!(text.contains(r#"http_route="(unmatched)""#));
//! assert!(!text.contains("/nope"));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use metrics::{Gauge, SharedString, Unit};

use crate::semconv::{method_label, scheme_label};
use turnstile_core::http::{HeaderValue, Method, StatusCode, header};
use turnstile_core::{
    AppResult, Application, Environ, Layer, Request, Response, Route, on_complete, per_process,
    respond,
};

/// Request durations, in seconds, to the last byte of the response.
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Requests being served.
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// Request body sizes, in bytes.
pub const REQUEST_BODY_SIZE: &str = "http_server_request_body_size_bytes";
/// Response body sizes, in bytes.
pub const RESPONSE_BODY_SIZE: &str = "http_server_response_body_size_bytes";
/// The `http_route` of a request whose application named no route.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// The metrics layer. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    _private: (),
}

impl HttpMetrics {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the current recorder the metrics' descriptions (their
    /// `# HELP` lines). The layer does it once per process on its first
    /// request; call this for a recorder installed after that.
    pub fn describe() {
        metrics::describe_histogram!(
            REQUEST_DURATION,
            Unit::Seconds,
            "Duration of HTTP server requests, to the last byte of the response."
        );
        metrics::describe_gauge!(
            ACTIVE_REQUESTS,
            "Number of HTTP server requests being served."
        );
        metrics::describe_histogram!(
            REQUEST_BODY_SIZE,
            Unit::Bytes,
            "Size of HTTP server request bodies, from Content-Length."
        );
        metrics::describe_histogram!(
            RESPONSE_BODY_SIZE,
            Unit::Bytes,
            "Size of HTTP server response bodies, as written."
        );
    }
}

impl<A: Application> Layer<A> for HttpMetrics {
    type Application = Measured<A>;

    fn layer(&self, inner: A) -> Measured<A> {
        Measured { inner }
    }
}

/// An application whose requests [`HttpMetrics`] measures.
#[derive(Debug)]
pub struct Measured<A> {
    inner: A,
}

// ANCHOR: handle
impl<A: Application> Application for Measured<A> {
    fn handle(&self, request: Request) -> AppResult {
        describe_in_this_process();
        let mut measurement = Measurement::start(&request);
        // A failure is a response too: the generic 500 the boundary made.
        let mut response = respond(&self.inner, request);
        if let Some(route) = Route::of_response(&response) {
            measurement.route = Some(route.clone());
        }
        on_complete(&mut response, move |done| {
            measurement.finish(done.status, done.body_bytes, done.finished);
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

/// What is known of a request from its arrival until its last byte.
struct Measurement {
    started: Instant,
    method: &'static str,
    scheme: &'static str,
    route: Option<Route>,
    request_body: Option<u64>,
    active: Gauge,
}

impl Measurement {
    fn start(request: &Request) -> Self {
        let method = method_label(request.method());
        let scheme = scheme_label(request);
        let active = keys::active(method, scheme);
        active.increment(1.0);
        Self {
            // From when the server read the head, as the access log and
            // the span measure.
            started: Environ::of(request).received_or_now().instant,
            method,
            scheme,
            route: Route::of_request(request).cloned(),
            request_body: request_body_size(request),
            active,
        }
    }

    // ANCHOR: finish
    fn finish(self, status: StatusCode, response_body: u64, finished: Instant) {
        self.active.decrement(1.0);
        let route = self.route.as_ref().map_or(UNMATCHED_ROUTE, Route::as_str);
        keys::with_histograms(
            self.method,
            status,
            route,
            self.scheme,
            self.request_body.is_some(),
            |series| {
                series
                    .duration
                    .record(finished.saturating_duration_since(self.started));
                // The global recorder's may hold a request-body histogram
                // that this request, of no known size, does not add to.
                if let (Some(histogram), Some(size)) = (&series.request_body, self.request_body) {
                    histogram.record(size as f64);
                }
                series.response_body.record(response_body as f64);
            },
        );
    }
    // ANCHOR_END: finish
}

/// The metrics' keys and handles, kept per thread: building a key (its
/// label list and hash) on every request costs more than recording the
/// value, and registering it with the recorder is a lookup in the
/// recorder's registry.
///
/// Keys belong to no recorder, so they stay right whichever recorder is
/// current (another process's, a test's). Handles belong to the recorder
/// that made them, so they are kept only for the process's global
/// recorder (or, before one is installed, the no-op one): neither is ever
/// replaced or freed, so its address names it for the life of the
/// process. A recorder that merely had the same address as an earlier one,
/// such as a test's, would otherwise be given the first one's handles.
mod keys {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use metrics::{Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};
    use turnstile_core::http::StatusCode;

    use super::{
        ACTIVE_REQUESTS, REQUEST_BODY_SIZE, REQUEST_DURATION, RESPONSE_BODY_SIZE, status_label,
    };

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// The address of the process's global recorder, or 0.
    static GLOBAL_RECORDER: AtomicUsize = AtomicUsize::new(0);

    fn address(recorder: &dyn Recorder) -> usize {
        std::ptr::from_ref(recorder).cast::<()>() as usize
    }

    /// Finds the global recorder, as it is now. A new thread has no local
    /// recorder, so the recorder it is given is the global one.
    pub(super) fn find_global_recorder() {
        let global = std::thread::scope(|scope| {
            scope
                .spawn(|| metrics::with_recorder(address))
                .join()
                .unwrap_or(0)
        });
        GLOBAL_RECORDER.store(global, Ordering::Relaxed);
    }

    fn is_global(recorder: &dyn Recorder) -> bool {
        let global = GLOBAL_RECORDER.load(Ordering::Relaxed);
        global != 0 && global == address(recorder)
    }

    /// One series' keys, and its handles from the global recorder.
    struct Series {
        duration: Key,
        request_body: Key,
        response_body: Key,
        global: Option<Histograms>,
    }

    /// One series' histograms, from one recorder.
    pub(super) struct Histograms {
        pub(super) duration: Histogram,
        /// Only for a request whose body size is known, so that no empty
        /// series is registered for the others.
        pub(super) request_body: Option<Histogram>,
        pub(super) response_body: Histogram,
    }

    /// Past this many series a thread starts again: labels are bounded by
    /// design, so only a misbehaving application gets here.
    const MOST: usize = 10_000;

    /// foldhash, not the standard SipHash: the keys are the layer's own
    /// labels, and three of them are hashed on every request.
    type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

    #[derive(Default)]
    struct Cache {
        active: Map<(&'static str, &'static str), (Key, Option<Gauge>)>,
        series: Map<(&'static str, u16, &'static str), Map<Box<str>, Series>>,
        count: usize,
    }

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    }

    pub(super) fn active(method: &'static str, scheme: &'static str) -> Gauge {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let (key, global) = cache.active.entry((method, scheme)).or_insert_with(|| {
                let key = Key::from_parts(
                    ACTIVE_REQUESTS,
                    vec![
                        Label::from_static_parts("http_request_method", method),
                        Label::from_static_parts("url_scheme", scheme),
                    ],
                );
                (key, None)
            });
            metrics::with_recorder(|recorder| {
                if !is_global(recorder) {
                    return recorder.register_gauge(key, &METADATA);
                }
                global
                    .get_or_insert_with(|| recorder.register_gauge(key, &METADATA))
                    .clone()
            })
        })
    }

    // ANCHOR: key_cache
    /// Calls `record` with the series' histograms, from the current
    /// recorder: the global one's as this thread keeps them, any other's
    /// registered now.
    pub(super) fn with_histograms<R>(
        method: &'static str,
        status: StatusCode,
        route: &str,
        scheme: &'static str,
        with_request_body: bool,
        record: impl FnOnce(&Histograms) -> R,
    ) -> R {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.count > MOST {
                *cache = Cache::default();
            }
            let cache = &mut *cache;
            let routes = cache
                .series
                .entry((method, status.as_u16(), scheme))
                .or_default();
            let register =
                |recorder: &dyn Recorder, series: &Series, with_request_body: bool| Histograms {
                    duration: recorder.register_histogram(&series.duration, &METADATA),
                    request_body: with_request_body
                        .then(|| recorder.register_histogram(&series.request_body, &METADATA)),
                    response_body: recorder.register_histogram(&series.response_body, &METADATA),
                };
            let series = match routes.get_mut(route) {
                // The common case: one lookup.
                Some(series) => series,
                None => {
                    let labels = vec![
                        Label::from_static_parts("http_request_method", method),
                        Label::new("http_response_status_code", status_label(status)),
                        Label::new("http_route", SharedString::from(route.to_owned())),
                        Label::from_static_parts("url_scheme", scheme),
                    ];
                    cache.count += 1;
                    routes.entry(route.into()).or_insert(Series {
                        duration: Key::from_parts(REQUEST_DURATION, labels.clone()),
                        request_body: Key::from_parts(REQUEST_BODY_SIZE, labels.clone()),
                        response_body: Key::from_parts(RESPONSE_BODY_SIZE, labels),
                        global: None,
                    })
                }
            };
            metrics::with_recorder(|recorder| {
                if !is_global(recorder) {
                    return record(&register(recorder, series, with_request_body));
                }
                // The global recorder's handles, the request body's
                // registered once a request has one.
                if series.global.is_none() {
                    series.global = Some(register(recorder, series, false));
                }
                if with_request_body
                    && series
                        .global
                        .as_ref()
                        .is_some_and(|known| known.request_body.is_none())
                {
                    let request_body = recorder.register_histogram(&series.request_body, &METADATA);
                    if let Some(known) = series.global.as_mut() {
                        known.request_body = Some(request_body);
                    }
                }
                // Used where they are kept, not cloned out for each request.
                record(series.global.as_ref().expect("registered above"))
            })
        })
    }
    // ANCHOR_END: key_cache
}

/// The body's declared size: `Content-Length`, or none at all. A chunked
/// body's size is known only once read, so it is not recorded.
fn request_body_size(request: &Request) -> Option<u64> {
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.to_str().ok()?.parse().ok(),
        None => Some(0),
    }
}

/// The status as a label value, without allocating for the common ones.
fn status_label(status: StatusCode) -> SharedString {
    let common = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => return SharedString::from(status.as_str().to_owned()),
    };
    SharedString::const_str(common)
}

/// The per-process generation in which this process's recorder last got
/// the metrics' descriptions (their `# HELP` lines), plus one.
static DESCRIBED: AtomicU64 = AtomicU64::new(0);

/// Describes the metrics to this process's recorder, and finds which
/// recorder is the process's global one, once. A worker installs its
/// recorder after the fork, so descriptions made by the parent (under
/// `preload`) never reached it.
fn describe_in_this_process() {
    let generation = per_process::generation() + 1;
    // A load, not a swap: request threads only read the shared line.
    if DESCRIBED.load(Ordering::Relaxed) != generation {
        DESCRIBED.store(generation, Ordering::Relaxed);
        HttpMetrics::describe();
        keys::find_global_recorder();
    }
}

/// The content type of Prometheus's text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers `GET` and `HEAD` on one path with a render function's text (a
/// Prometheus exposition); every other request goes to the application.
///
/// For a single process: with several workers, each would answer with its
/// own metrics, so Turnstile's arbiter serves the merged page instead
/// (`--metrics-bind`).
#[derive(Clone)]
pub struct ServeMetrics {
    path: Arc<str>,
    render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for ServeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeMetrics")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ServeMetrics {
    /// Serves `render()` on `path`.
    pub fn new(path: &str, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            path: path.into(),
            render: Arc::new(render),
        }
    }
}

impl<A: Application> Layer<A> for ServeMetrics {
    type Application = Served<A>;

    fn layer(&self, inner: A) -> Served<A> {
        Served {
            inner,
            page: self.clone(),
        }
    }
}

/// An application with a metrics page in front of it; see [`ServeMetrics`].
#[derive(Debug)]
pub struct Served<A> {
    inner: A,
    page: ServeMetrics,
}

impl<A: Application> Application for Served<A> {
    fn handle(&self, request: Request) -> AppResult {
        if request.uri().path() != &*self.page.path {
            return self.inner.handle(request);
        }
        let (status, body) = match *request.method() {
            Method::GET | Method::HEAD => (StatusCode::OK, (self.page.render)()),
            _ => (StatusCode::METHOD_NOT_ALLOWED, String::new()),
        };
        let mut response = Response::new(body.into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        Ok(response)
    }
}
// ANCHOR_END: all

#[cfg(test)]
mod tests;
