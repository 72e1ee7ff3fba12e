// ANCHOR: all
//! Error capture: an application's errors and panics become a short 500,
//! and each is reported to Sentry with its request, scrubbed of secrets.
//!
//! [`ErrorCapture`] calls the application through the failure boundary
//! ([`respond`]): whatever the application does, it gets a response, and
//! a failure is the generic 500 carrying a [`Failure`]. When the
//! application fails, by returning an error or by panicking, the layer:
//!
//! - answers `500 Internal Server Error` with a generic body, the same for
//!   every failure: no message, stack or secret reaches the client (unless
//!   [`debug`](ErrorCapture::debug) is on);
//! - logs one `error` event (target [`TARGET`]) with the request's method,
//!   path and id;
//! - reports one Sentry event: the exception (for a panic, with the stack
//!   where it panicked), the request with its secrets scrubbed
//!   ([`scrub`]), and the tags `request_id`, `trace_id`, `worker_id` and
//!   `worker_pid`.
//!
//! A response the application returns itself with a status in the capture
//! list (500 to 599 unless [configured](ErrorCapture::capture_statuses)) is
//! reported too, as a message.
//!
//! Each request runs with a Sentry hub of its own, bound to its thread for
//! the call: what the application reports itself (`sentry::capture_message`)
//! carries the request, and what it adds to its scope ends with the request.
//!
//! Sentry's client (and its transport thread) belongs to one process: the
//! layer builds it in each process that serves, as a Turnstile worker boots
//! (or on first use under another server), never in the arbiter, and
//! closes it, sending what is queued, as the process exits
//! ([`PerProcess`]); under another server, call
//! [`per_process::teardown`](turnstile_core::per_process::teardown) on the
//! way out for that. It is also bound to the process's main hub, so code
//! outside requests can report, and [`report_stuck_request`] can name the
//! request a worker was stuck on when the arbiter aborts it.
//!
//! A request body the client broke (too large, cut short, malformed, too
//! slow) is its fault, not the application's: it is answered with its 4xx
//! and reported nowhere, even when the application turned the read error
//! into an error of its own. A streamed body is pulled, chunk by chunk,
//! with the request's hub bound again, so what it reports carries the
//! request too.
//!
//! Not reported: a panic in a streamed body (after the layer returned; the
//! connection is cut), and anything under `panic = "abort"`, where no
//! panic is caught.
//!
//! # Example
//!
//! ```
//! use turnstile_core::{Request, Response, Stack, test};
//! use turnstile_middleware::error_capture::{ErrorCapture, sentry};
//!
//! // Events are sent to a test transport here; a real DSN sends them to Sentry.
//! let transport = sentry::test::TestTransport::new();
//! let options = sentry::ClientOptions::new()
//!     .dsn("https://public@sentry.invalid/1")
//!     .transport(transport.clone());
//!
//! let app = Stack::new()
//!     .layer(ErrorCapture::new().sentry(options))
//!     .app(|_request: Request| -> Result<Response, std::io::Error> {
//!         Err(std::io::Error::other("the orders table is locked"))
//!     });
//!
//! let request = test::TestRequest::get("/orders?page=2&token=s3cret")
//!     .header("host", "shop.example")
//!     .header("authorization", "Bearer s3cret")
//!     .build();
//! let response = test::serve(&app, request);
//! assert_eq!(response.status, 500);
//! assert_eq!(response.text(), "Internal Server Error\n");
//!
//! let events = transport.fetch_and_clear_events();
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].exception[0].value.as_deref(), Some("the orders table is locked"));
//! let reported = events[0].request.as_ref().unwrap();
//! assert_eq!(reported.method.as_deref(), Some("GET"));
//! assert_eq!(reported.url.as_ref().unwrap().as_str(), "http://shop.example/orders?page=2&token=[redacted]");
//! assert_eq!(reported.headers["authorization"], "[redacted]");
//! ```

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::sync::Arc;

use sentry::protocol::{Event, Exception, Level, Mechanism};
use sentry::{Client, ClientOptions, Hub};
use turnstile_core::http::{HeaderValue, StatusCode, header};
use turnstile_core::{
    AppResult, Application, ChunkStream, ClientFault, Failure, Layer, PerProcess, Request,
    Response, Route, capturing_stacks, respond,
};

use crate::redact::Redactor;

mod panics;
mod report;
pub mod scrub;

pub use report::{StuckRequest, report_stuck_request};
/// The `sentry` crate the layer reports with, for its `ClientOptions`.
pub use sentry;

use report::{Facts, Reporter};

/// The `tracing` target of the layer's log events.
pub const TARGET: &str = "turnstile::errors";

/// The statuses captured unless configured otherwise: every 5xx.
pub const DEFAULT_CAPTURE_STATUSES: RangeInclusive<u16> = 500..=599;

/// The error-capture layer. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ErrorCapture {
    settings: Arc<Settings>,
    reporter: Option<PerProcess<Reporter>>,
}

/// What decides how failures are answered and reported.
#[derive(Clone, Debug)]
struct Settings {
    debug: bool,
    capture_statuses: Vec<RangeInclusive<u16>>,
    redactor: Redactor,
    send_default_pii: bool,
}

impl Default for ErrorCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorCapture {
    /// A layer that answers failures with a 500 and logs them, and reports
    /// nothing until given Sentry's options.
    pub fn new() -> Self {
        Self {
            settings: Arc::new(Settings {
                debug: false,
                capture_statuses: vec![DEFAULT_CAPTURE_STATUSES],
                redactor: Redactor::default(),
                send_default_pii: false,
            }),
            reporter: None,
        }
    }

    /// Reports to Sentry with a client built from `options` in each
    /// process that serves: as a Turnstile worker boots, else on first use.
    /// Its `send_default_pii` decides whether the client's address and
    /// forwarding headers are sent; its `sample_rate` which events are.
    /// Without a DSN in the options or in `SENTRY_DSN`, nothing is reported.
    pub fn sentry(mut self, options: ClientOptions) -> Self {
        self.settings_mut().send_default_pii = options.send_default_pii;
        self.reporter = Some(PerProcess::eager(move || Reporter::start(&options)));
        self
    }

    /// Whether a 500 shows the error, or the panic's message and place, to
    /// the client. For development only: an error's text may hold a secret.
    pub fn debug(mut self, debug: bool) -> Self {
        self.settings_mut().debug = debug;
        self
    }

    /// The statuses which, returned by the application itself, are
    /// reported: 500 to 599 unless set. Empty reports none.
    pub fn capture_statuses(
        mut self,
        statuses: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> Self {
        self.settings_mut().capture_statuses = statuses.into_iter().collect();
        self
    }

    /// Hides the values of query keys this redactor finds secret, and
    /// request headers with such names (the request-logging layer's
    /// [`Redactor`], so both hide the same).
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.settings_mut().redactor = redactor;
        self
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// This process's client, when it reports.
    fn client(&self) -> Option<Arc<Client>> {
        let reporter = self.reporter.as_ref()?.get();
        reporter.client().cloned()
    }
}

/// Parses a list of statuses and ranges, `500-599,404`.
///
/// ```
/// use turnstile_middleware::error_capture::parse_statuses;
///
/// assert_eq!(parse_statuses("500-599, 404"), Ok(vec![500..=599, 404..=404]));
/// assert!(parse_statuses("600-500").is_err());
/// ```
///
/// # Errors
///
/// An item that is not a status (100 to 999) or a rising range of them.
pub fn parse_statuses(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    let status = |item: &str| {
        item.trim()
            .parse::<u16>()
            .ok()
            .filter(|code| (100..=999).contains(code))
            .ok_or_else(|| format!("`{}` is not an HTTP status", item.trim()))
    };
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let range = match item.split_once('-') {
                Some((low, high)) => status(low)?..=status(high)?,
                None => status(item)?..=status(item)?,
            };
            if range.is_empty() {
                return Err(format!("`{item}` is an empty range"));
            }
            Ok(range)
        })
        .collect()
}

impl<A: Application> Layer<A> for ErrorCapture {
    type Application = Captured<A>;

    fn layer(&self, inner: A) -> Captured<A> {
        Captured {
            inner,
            capture: self.clone(),
        }
    }
}

/// An application whose failures [`ErrorCapture`] answers and reports.
#[derive(Debug)]
pub struct Captured<A> {
    inner: A,
    capture: ErrorCapture,
}

// ANCHOR: handle
impl<A: Application> Application for Captured<A> {
    fn handle(&self, request: Request) -> AppResult {
        let settings = &self.capture.settings;
        let client = self.capture.client();
        let facts = Arc::new(Facts::of(&request, settings, client.is_some()));
        let hub = client.map(|client| facts.hub(client));
        let mut response = match &hub {
            // Bound for the call: what the application reports itself goes
            // through this request's hub. A panic's stack is taken only
            // when it will be sent.
            Some(hub) => Hub::run(hub.clone(), || {
                capturing_stacks(panics::take, || respond(&self.inner, request))
            }),
            None => respond(&self.inner, request),
        };
        if let Some(failure) = Failure::of(&response).cloned() {
            // Once, however many of these layers are stacked: the first
            // with a client sends it, the first at all logs it.
            let event_id = hub
                .as_ref()
                .filter(|_| failure.report_once())
                .map(|hub| hub.capture_event(failure_event(&failure)))
                .filter(|id| !id.is_nil());
            if failure.log_once() {
                facts.log_failure(&failure, event_id);
            }
            if settings.debug {
                response = debug_response(&failure, response);
            }
        } else if let Some(hub) = &hub {
            // The access log already has the status: only Sentry hears.
            // A client's broken body is never the application's failure.
            if settings.captures(response.status()) && ClientFault::of(&response).is_none() {
                hub.capture_event(status_event(&facts, &response));
            }
            let hub = hub.clone();
            response
                .body_mut()
                .map_stream(|chunks| Box::new(InHub { chunks, hub }));
        }
        Ok(response)
    }
}
// ANCHOR_END: handle

/// A streamed body pulled with its request's hub bound, as the application
/// ran.
struct InHub {
    chunks: ChunkStream,
    hub: Arc<Hub>,
}

impl Iterator for InHub {
    type Item = std::io::Result<turnstile_core::Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        Hub::run(self.hub.clone(), || self.chunks.next())
    }
}

impl Settings {
    fn captures(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.capture_statuses
            .iter()
            .any(|range| range.contains(&code))
    }
}

/// The 500 in debug mode: what failed, for the developer; the failure
/// still travels with it, for the layers outside.
fn debug_response(failure: &Failure, generic: Response) -> Response {
    let mut text = String::from("Internal Server Error\n\n");
    match failure.panicked() {
        Some(panicked) => {
            let place = panicked.location().unwrap_or("an unknown place");
            let _ = writeln!(text, "panicked at {place}: {}", panicked.message());
        }
        None => {
            let error = failure.error();
            let _ = writeln!(text, "{error}");
            let mut source = error.source();
            while let Some(cause) = source {
                let _ = writeln!(text, "caused by: {cause}");
                source = cause.source();
            }
        }
    }
    let (parts, _) = generic.into_parts();
    let mut response = Response::from_parts(parts, text.into());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ANCHOR: failure_event
/// The event for an error or a panic: the exception, marked unhandled.
fn failure_event(failure: &Failure) -> Event<'static> {
    let panicked = failure.panicked();
    let mut event = match panicked {
        Some(panicked) => Event {
            exception: vec![Exception {
                ty: "panic".into(),
                value: Some(panicked.message().to_owned()),
                stacktrace: panicked.stack().and_then(panics::stacktrace),
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        },
        // Rust errors carry no stack: the chain of causes is what there is.
        None => {
            let mut event = sentry::event_from_error(failure.error());
            for exception in event.exception.iter_mut() {
                // A string made into an error (`Err("…".into())`) has no
                // type of its own: sentry reads a quote as its name.
                if exception.ty.starts_with('"') {
                    exception.ty = "Error".into();
                }
            }
            event
        }
    };
    event.level = Level::Error;
    if let Some(outermost) = event.exception.last_mut() {
        outermost.mechanism = Some(Mechanism {
            ty: if panicked.is_some() {
                "panic"
            } else {
                "turnstile"
            }
            .into(),
            handled: Some(false),
            ..Default::default()
        });
    }
    event
}
// ANCHOR_END: failure_event

/// The event for a captured status the application answered with.
fn status_event(facts: &Facts, response: &Response) -> Event<'static> {
    let status = response.status();
    let route = Route::of_response(response)
        .or(facts.route())
        .map(|route| route.as_str().to_owned());
    let transaction = facts.transaction(route.as_deref());
    // One issue per status and route, not one per message; without a route,
    // one per status and method, since a path could be anything.
    let grouped_by = match &route {
        Some(_) => transaction.clone(),
        None => facts.method().to_string(),
    };
    Event {
        message: Some(format!("{transaction} answered {status}")),
        level: Level::Error,
        fingerprint: vec![
            "turnstile.status".into(),
            status.as_str().to_owned().into(),
            grouped_by.into(),
        ]
        .into(),
        transaction: Some(transaction),
        ..Default::default()
    }
}
// ANCHOR_END: all

#[cfg(test)]
mod tests;
