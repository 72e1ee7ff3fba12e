// ANCHOR: all
//! Request logging: one `tracing` event per request, emitted once the last
//! byte of the response is written, and an access log made from those
//! events.
//!
//! The layer ([`RequestLog`]) watches each request go through and, from
//! the completion hook, emits one `INFO` event with target
//! [`TARGET`] (`turnstile::access`) and these fields: `method`, `path`
//! (every path parameter's value redacted), `query` (secret values
//! redacted), `status`, `bytes`, `duration_s`
//! (to the last byte), `request_id`, `trace_id` (when tracing is on),
//! `client` (as far as trusted proxies say), `user_agent` and `pid`. Any
//! `tracing` subscriber can take them; [`AccessLog`] is the one that writes
//! them as JSON lines, Apache's combined format or a Gunicorn
//! `access_log_format`.
//!
//! Writing does not make request threads wait for each other: each thread
//! appends to one of several buffers, written out when full and every
//! second. A process's buffers are its own (built after the fork) and are
//! written out when it stops; `SIGUSR1` reopens the file.
//!
//! The headers a format prints (`%({name}i)s`, `%({name}o)s`) are
//! recorded as [`REDACTED`] when they hold credentials (`Authorization`,
//! `Cookie`, `Set-Cookie`, API keys: [`Redactor::is_secret_header`]),
//! unless [`RequestLog::show_headers`] names them.
//!
//! Health checks can be left out with [`RequestLog::skip`]; a skipped path
//! is still logged when it fails (status 500 or more, or a response cut
//! short), which is when it matters.
//!
//! # Example
//!
//! ```
//! use turnstile_core::{Request, Response, Stack, test};
//! use turnstile_middleware::request_log::{AccessFormat, AccessLog, Output, RequestLog};
//! use turnstile_middleware::request_log::tracing_subscriber::{Layer as _, Registry, layer::SubscriberExt as _};
//!
//! let path = std::env::temp_dir().join(format!("access-{}.log", std::process::id()));
//! let access_log = AccessLog::new("json".parse::<AccessFormat>().unwrap(), Output::File(path.clone()));
//! let subscriber = Registry::default().with(access_log.clone().with_filter(RequestLog::events()));
//!
//! let app = Stack::new()
//!     .layer(RequestLog::new().skip("/healthz"))
//!     .app(|_request: Request| Response::new("Hello!\n".into()));
//! tracing::subscriber::with_default(subscriber, || {
//!     test::serve(&app, test::TestRequest::get("/hello?token=s3cret&page=2").build());
//!     test::serve(&app, test::TestRequest::get("/healthz").build());
//! });
//! access_log.flush();
//!
//! let log = std::fs::read_to_string(&path).unwrap();
//! assert_eq!(log.lines().count(), 1); // the health check was skipped
//! let line: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
//! assert_eq!(line["path"], "/hello");
//! assert_eq!(line["query"], "token=[redacted]&page=2");
//! assert_eq!(line["status"], 200);
//! assert_eq!(line["bytes"], 7);
//! # std::fs::remove_file(&path).unwrap();
//! ```

pub(crate) mod format;
mod output;

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use turnstile_core::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use turnstile_core::http::{Method, StatusCode, Version};
use turnstile_core::{
    AppResult, Application, Completion, Environ, Layer, Outcome, Request, RequestId, TraceId,
    on_complete, respond,
};

pub use crate::redact::{
    ALWAYS_SECRET, DEFAULT_SECRET_WORDS, REDACTED, Redactor, SECRET_HEADER_WORDS,
};
pub use format::{AccessFormat, COMBINED, InvalidFormat};
pub use output::{AccessLog, FLUSH_INTERVAL, Output};
pub use tracing_subscriber;

/// The target of the per-request events.
pub const TARGET: &str = "turnstile::access";

/// Everything the log knows about one finished request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AccessRecord {
    /// When the request reached the layer.
    pub started: SystemTime,
    /// The request method.
    pub method: Method,
    /// The path, percent-encoded as it was sent, the value of every path
    /// parameter (`;jsessionid=…`) redacted.
    pub path: String,
    /// The query string, secret values redacted; `None` when there was none.
    pub query: Option<String>,
    /// The protocol version.
    pub version: Version,
    /// The status sent.
    pub status: StatusCode,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the request reaching the layer to the last byte written.
    pub duration: Duration,
    /// Whether the whole response was written.
    pub outcome: Outcome,
    /// The request's id.
    pub request_id: RequestId,
    /// The trace the request belongs to, when the tracing layer is on.
    pub trace_id: Option<TraceId>,
    /// The client, as far as trusted proxies say.
    pub client: Option<IpAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<HeaderValue>,
    /// The `Referer` header, its query redacted.
    pub referer: Option<String>,
    /// The process that served the request.
    pub pid: u32,
    /// The request headers the log format asked for: credentials redacted
    /// unless [shown](RequestLog::show_headers), and a URL's secrets
    /// redacted as the `Referer`'s are.
    pub request_headers: HeaderMap,
    /// The response headers the log format asked for, redacted as the
    /// request's are.
    pub response_headers: HeaderMap,
}

/// The layer. By default it skips nothing, redacts
/// [`DEFAULT_SECRET_WORDS`] and shows no credential header.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    skip: Vec<String>,
    redactor: Redactor,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    show_headers: Vec<HeaderName>,
    /// The printed headers recorded as [`REDACTED`], decided as the layer
    /// is built rather than for every request.
    hidden: Vec<HeaderName>,
}

impl RequestLog {
    /// Logs every request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves out successful requests for `path` (health checks, metrics
    /// scrapes).
    pub fn skip(mut self, path: impl Into<String>) -> Self {
        self.skip.push(path.into());
        self
    }

    /// Decides which query values and headers are hidden.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Lets the format print these headers as they are, though they hold
    /// credentials; any other credential header
    /// ([`Redactor::is_secret_header`]) is recorded as [`REDACTED`].
    pub fn show_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.show_headers.extend(names);
        self
    }

    /// Records the headers `format` prints, in
    /// [`AccessRecord::request_headers`] and
    /// [`AccessRecord::response_headers`].
    pub fn for_format(mut self, format: &AccessFormat) -> Self {
        self.request_headers.extend(format.request_headers());
        self.response_headers.extend(format.response_headers());
        self
    }

    /// The filter that passes this layer's events (and nothing else) to a
    /// `tracing-subscriber` layer such as [`AccessLog`].
    pub fn events() -> AccessEvents {
        AccessEvents
    }
}

/// [`RequestLog::events`]: this layer's events and nothing else.
///
/// It decides by one comparison of the target. Beside another layer's
/// filter it is asked about every request's event again (a callsite that
/// some layers want and others do not is decided per event), where a
/// [`Targets`](tracing_subscriber::filter::Targets) filter would walk its
/// directives.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessEvents;

impl AccessEvents {
    /// Whether `metadata` is one of this layer's events.
    pub fn matches(metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == TARGET && *metadata.level() <= tracing::Level::INFO
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for AccessEvents {
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        Self::matches(metadata)
    }

    fn callsite_enabled(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::matches(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::INFO)
    }
}

impl<A: Application> Layer<A> for RequestLog {
    type Application = Logged<A>;

    fn layer(&self, inner: A) -> Logged<A> {
        let mut config = self.clone();
        config.hidden = self
            .request_headers
            .iter()
            .chain(&self.response_headers)
            .filter(|name| {
                !self.show_headers.contains(name) && self.redactor.is_secret_header(name.as_str())
            })
            .cloned()
            .collect();
        Logged {
            inner,
            config: Arc::new(config),
        }
    }
}

impl RequestLog {
    /// What the record keeps of a header the format prints: [`REDACTED`]
    /// for a credential not shown, else the value with any URL's secrets
    /// redacted, as the `Referer`'s are for `%(f)s`.
    fn recorded(&self, name: &HeaderName, value: &HeaderValue) -> HeaderValue {
        if self.hidden.contains(name) {
            return HeaderValue::from_static(REDACTED);
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        match self.redactor.url(&text) {
            Cow::Borrowed(_) => value.clone(),
            Cow::Owned(redacted) => HeaderValue::from_bytes(redacted.as_bytes())
                .unwrap_or_else(|_| HeaderValue::from_static(REDACTED)),
        }
    }
}

/// An application whose requests are logged.
#[derive(Debug)]
pub struct Logged<A> {
    inner: A,
    config: Arc<RequestLog>,
}

// ANCHOR: handle
impl<A: Application> Application for Logged<A> {
    fn handle(&self, request: Request) -> AppResult {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            warn_if_no_subscriber();
            return Ok(respond(&self.inner, request));
        }
        let (mut record, clock) = start(&self.config, &request);
        // A failure is a response too: the generic 500 the boundary made.
        let mut response = respond(&self.inner, request);
        for name in &self.config.response_headers {
            if let Some(value) = response.headers().get(name) {
                record
                    .response_headers
                    .insert(name, self.config.recorded(name, value));
            }
        }
        let config = self.config.clone();
        // After the last byte, whenever that is: a streamed body is timed
        // and counted whole.
        on_complete(&mut response, move |done| {
            finish(&config, record, clock, done);
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

/// What is known of a request when it arrives (boxed: the record moves
/// through the completion hook to the event, and a pointer moves cheaper
/// than the record), and the clock reading it is timed from.
fn start(config: &RequestLog, request: &Request) -> (Box<AccessRecord>, Instant) {
    let environ = Environ::of(request);
    let headers = request.headers();
    let mut request_headers = HeaderMap::new();
    for name in &config.request_headers {
        if let Some(value) = headers.get(name) {
            request_headers.insert(name, config.recorded(name, value));
        }
    }
    let text = |name: HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let received = environ.received_or_now();
    let record = Box::new(AccessRecord {
        started: received.wall,
        method: request.method().clone(),
        path: config.redactor.path(request.uri().path()).into_owned(),
        query: request
            .uri()
            .query()
            .map(|query| config.redactor.query(query).into_owned()),
        version: request.version(),
        status: StatusCode::INTERNAL_SERVER_ERROR,
        bytes: 0,
        duration: Duration::ZERO,
        outcome: Outcome::NotSent,
        request_id: environ.request_id.clone(),
        trace_id: request.extensions().get::<TraceId>().copied(),
        client: environ.client_addr.map(|addr| addr.ip()),
        user_agent: headers.get(header::USER_AGENT).cloned(),
        referer: text(header::REFERER).map(|url| config.redactor.url(url).into_owned()),
        pid: match environ.worker.pid {
            0 => std::process::id(),
            pid => pid,
        },
        request_headers,
        response_headers: HeaderMap::new(),
    });
    (record, received.instant)
}

// ANCHOR: finish
fn finish(config: &RequestLog, mut record: Box<AccessRecord>, clock: Instant, done: &Completion) {
    record.status = done.status;
    record.bytes = done.body_bytes;
    record.outcome = done.outcome;
    record.duration = done.finished.saturating_duration_since(clock);
    let failed = done.status.is_server_error() || done.outcome == Outcome::Aborted;
    if !failed && config.skip.contains(&record.path) {
        return;
    }
    emit(record);
}
// ANCHOR_END: finish

thread_local! {
    /// The record whose event is being dispatched on this thread, so that
    /// [`AccessLog`] can print fields an event cannot carry (headers).
    static EMITTING: RefCell<Option<Box<AccessRecord>>> = const { RefCell::new(None) };
}

// ANCHOR: emit
/// Emits the request's event; subscribers see the record through
/// [`with_current_record`] while it is dispatched.
fn emit(record: Box<AccessRecord>) {
    EMITTING.with(|slot| {
        slot.replace(Some(record));
        if let Some(r) = slot.borrow().as_ref() {
            tracing::info!(
                target: TARGET,
                method = %r.method,
                path = %r.path,
                query = r.query.as_deref(),
                status = r.status.as_u16(),
                bytes = r.bytes,
                duration_s = r.duration.as_secs_f64(),
                request_id = %r.request_id,
                trace_id = r.trace_id.map(tracing::field::display),
                client = r.client.map(tracing::field::display),
                user_agent = r.user_agent.as_ref().and_then(|agent| agent.to_str().ok()),
                pid = r.pid,
                "{} {} {}",
                r.method,
                r.path,
                r.status.as_u16()
            );
        }
        slot.take();
    });
}
// ANCHOR_END: emit

/// Calls `f` with the record of the request event being dispatched on this
/// thread, if there is one. For subscriber layers that print more than the
/// event's fields, as [`AccessLog`] does.
pub fn with_current_record<R>(f: impl FnOnce(&AccessRecord) -> R) -> Option<R> {
    EMITTING.with(|slot| slot.try_borrow().ok()?.as_deref().map(f))
}
// ANCHOR_END: all

#[cfg(test)]
mod tests;

/// A program that wraps its application in the layer but installs no
/// `tracing` subscriber logs nothing: it is told so, once per process,
/// rather than left to wonder where its access log went.
fn warn_if_no_subscriber() {
    static TOLD: std::sync::Once = std::sync::Once::new();
    if !tracing::dispatcher::has_been_set() {
        TOLD.call_once(|| {
            eprintln!(
                "turnstile: the request log has no tracing subscriber to write to, so no access \
                 line is written: install one (RequestLog::events() with tracing-subscriber, or \
                 serve with turnstile::main, which installs it)"
            );
        });
    }
}
