//! Sentry's side: the client each process builds, the per-request hub that
//! attaches the request to every event, and the stuck-request report.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use sentry::integrations::backtrace::ProcessStacktraceIntegration;
use sentry::integrations::contexts::ContextIntegration;
use sentry::protocol::{
    Context, Event, Exception, IpAddress, Level, Map, Mechanism, TraceContext, User, Value,
};
use sentry::transports::UreqHttpTransportOptions;
use sentry::types::Scheme;
use sentry::types::Uuid;
use sentry::{Client, ClientOptions, Hub, Transport, TransportFactory, TransportOptions};
use turnstile_core::http::{HeaderMap, HeaderValue, Method, Uri, header};
use turnstile_core::{Environ, Failure, Request, RequestId, Route, TraceId, Worker};

use super::{Settings, TARGET, scrub};
use crate::redact::Redactor;
use crate::semconv::scheme_label;

/// Events waiting for the transport thread before new ones are dropped
/// (Sentry's default is 30); a burst of failures should not lose reports.
const QUEUE: usize = 100;

/// The crates whose frames Sentry shows as the server's, not the
/// application's.
const NOT_IN_APP: [&str; 3] = [
    "turnstile_core::",
    "turnstile_middleware::",
    "turnstile_server::",
];

// ANCHOR: reporter
/// One process's Sentry client. Built in the process that reports, closed
/// as it exits: dropping it sends what is queued, within the options'
/// `shutdown_timeout` (2 s unless set), however Sentry is doing.
pub(crate) struct Reporter {
    client: Option<Arc<Client>>,
}

impl Reporter {
    pub(super) fn start(options: &ClientOptions) -> Self {
        // The panic integration is left out: the layer reports the panics
        // it catches, and that integration would report them again, and
        // block the request's thread on a flush after each one.
        let mut options = options
            .clone()
            .default_integrations(false)
            .add_integration(ContextIntegration::new())
            .add_integration(ProcessStacktraceIntegration);
        options.in_app_exclude.extend_from_slice(&NOT_IN_APP);
        if options.transport_channel_capacity.is_none() {
            options = options.transport_channel_capacity(QUEUE);
        }
        if options.transport.is_none() {
            options = options.transport(TimedTransport);
        }
        let client = Arc::new(Client::with_options(sentry::apply_defaults(options)));
        if !client.is_enabled() {
            return Self { client: None };
        }
        // For code outside requests, and the stuck-request report.
        Hub::main().bind_client(Some(client.clone()));
        Self {
            client: Some(client),
        }
    }

    pub(super) fn client(&self) -> Option<&Arc<Client>> {
        self.client.as_ref()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let within = client.options().shutdown_timeout;
            close_within(client, within);
        }
    }
}

/// Closes `client`, sending what it has queued, and waits at most
/// `within` (and a little): the transport's own flush can block on a full
/// queue, and a process on its way out must not wait on Sentry.
fn close_within(client: Arc<Client>, within: Duration) -> bool {
    let (closed, done) = mpsc::channel();
    let closing = std::thread::Builder::new()
        .name("sentry-close".into())
        .spawn(move || {
            let _ = closed.send(client.close(Some(within)));
        });
    closing.is_ok() && done.recv_timeout(within + CLOSE_SLACK).unwrap_or(false)
}
// ANCHOR_END: reporter

/// How long past its deadline a close may take before the process gives up
/// on it.
const CLOSE_SLACK: Duration = Duration::from_millis(200);

/// Sentry's ureq transport, with timeouts: by default ureq waits for ever,
/// and a Sentry that accepts connections but never answers would hold the
/// transport thread, and so every flush and close, for good.
struct TimedTransport;

/// The longest an envelope may take to send, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl TransportFactory for TimedTransport {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        // As sentry builds its agent, plus the timeouts.
        let proxy = match options.dsn.scheme() {
            Scheme::Https => options.https_proxy.as_ref().or(options.http_proxy.as_ref()),
            Scheme::Http => options.http_proxy.as_ref(),
        }
        .and_then(|proxy| ureq::Proxy::new(proxy).ok());
        let agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .disable_verification(options.accept_invalid_certs)
                    .build(),
            )
            .proxy(proxy)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(SEND_TIMEOUT))
            .build()
            .new_agent();
        Arc::new(
            UreqHttpTransportOptions::from(options)
                .with_agent(agent)
                .build(),
        )
    }
}

// ANCHOR_END: reporter

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("enabled", &self.client.is_some())
            .finish()
    }
}

/// What the layer keeps of a request, for its log line and its events.
pub(super) struct Facts {
    method: Method,
    uri: Uri,
    /// Only when reporting: copying them is the layer's main cost.
    headers: Option<HeaderMap>,
    scheme: &'static str,
    client_addr: Option<SocketAddr>,
    request_id: RequestId,
    trace_id: Option<TraceId>,
    worker: Worker,
    route: Option<Route>,
    settings: Arc<Settings>,
}

impl Facts {
    pub(super) fn of(request: &Request, settings: &Arc<Settings>, reporting: bool) -> Self {
        let environ = Environ::of(request);
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: reporting.then(|| request.headers().clone()),
            scheme: scheme_label(request),
            client_addr: environ.client_addr.or(environ.remote_addr),
            request_id: environ.request_id.clone(),
            trace_id: request.extensions().get::<TraceId>().copied(),
            worker: environ.worker,
            route: Route::of_request(request).cloned(),
            settings: settings.clone(),
        }
    }

    // ANCHOR: hub
    /// A hub for this request alone: the main hub's scope, this process's
    /// client, and a processor that attaches the request to every event.
    pub(super) fn hub(self: &Arc<Self>, client: Arc<Client>) -> Arc<Hub> {
        let hub = Arc::new(Hub::new_from_top(Hub::main()));
        hub.bind_client(Some(client));
        let facts = self.clone();
        hub.configure_scope(|scope| {
            scope.add_event_processor(move |event| Some(facts.fill(event)));
        });
        hub
    }
    // ANCHOR_END: hub

    /// Adds what is known of the request to an event; what the event has
    /// already is kept.
    fn fill(&self, mut event: Event<'static>) -> Event<'static> {
        if event.request.is_none() {
            event.request = Some(self.sentry_request());
        }
        let tags = &mut event.tags;
        tags.entry("request_id".into())
            .or_insert_with(|| self.request_id.to_string());
        if let Some(trace_id) = self.trace_id {
            tags.entry("trace_id".into())
                .or_insert_with(|| trace_id.to_string());
            // Sentry links an event to a trace by its trace context, which
            // the scope filled with a trace of Sentry's own.
            match event.contexts.get_mut("trace") {
                Some(Context::Trace(trace)) => trace.trace_id = trace_id.0.into(),
                _ => {
                    event.contexts.insert(
                        "trace".into(),
                        Context::Trace(Box::new(TraceContext {
                            trace_id: trace_id.0.into(),
                            ..Default::default()
                        })),
                    );
                }
            }
        }
        tags.entry("worker_id".into())
            .or_insert_with(|| self.worker.id.to_string());
        tags.entry("worker_pid".into()).or_insert_with(|| {
            match self.worker.pid {
                0 => std::process::id(),
                pid => pid,
            }
            .to_string()
        });
        if event.transaction.is_none() {
            event.transaction = Some(self.transaction(None));
        }
        if self.settings.send_default_pii
            && event.user.is_none()
            && let Some(addr) = self.client_addr
        {
            event.user = Some(User {
                ip_address: Some(IpAddress::Exact(addr.ip())),
                ..Default::default()
            });
        }
        event
    }

    fn sentry_request(&self) -> sentry::protocol::Request {
        let settings = &self.settings;
        let empty = HeaderMap::new();
        let headers = self.headers.as_ref().unwrap_or(&empty);
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        let mut env = Map::new();
        if settings.send_default_pii
            && let Some(addr) = self.client_addr
        {
            env.insert("REMOTE_ADDR".into(), addr.ip().to_string());
        }
        sentry::protocol::Request {
            url: scrub::url(self.scheme, host, &self.uri, &settings.redactor),
            method: Some(self.method.to_string()),
            query_string: self
                .uri
                .query()
                .map(|query| settings.redactor.query(query).into_owned()),
            headers: scrub::headers(headers, settings.send_default_pii, &settings.redactor),
            env,
            ..Default::default()
        }
    }

    /// The request's method.
    pub(super) fn method(&self) -> &Method {
        &self.method
    }

    /// The route a router outside the layer set on the request, if any.
    pub(super) fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }

    /// `GET /users/{id}` with a route, else `GET /users/7` (its path
    /// parameters redacted): Sentry's transaction.
    pub(super) fn transaction(&self, route: Option<&str>) -> String {
        match route.or(self.route.as_ref().map(Route::as_str)) {
            Some(route) => format!("{} {route}", self.method),
            None => self.request_line(),
        }
    }

    /// `GET /users/7`, its path parameters redacted: the request in log
    /// lines.
    fn request_line(&self) -> String {
        let path = self.settings.redactor.path(self.uri.path());
        format!("{} {path}", self.method)
    }

    /// The log line of a failure; it names the Sentry event, if one was sent.
    pub(super) fn log_failure(&self, failure: &Failure, event_id: Option<Uuid>) {
        let event_id = event_id.map(|id| tracing::field::display(id.simple()));
        let trace_id = self.trace_id.map(tracing::field::display);
        let request = self.request_line();
        match failure.panicked() {
            Some(panicked) => tracing::error!(
                target: TARGET,
                request_id = %self.request_id,
                trace_id,
                sentry_event_id = event_id,
                "{request} panicked at {}: {}",
                panicked.location().unwrap_or("an unknown place"),
                panicked.message()
            ),
            None => tracing::error!(
                target: TARGET,
                request_id = %self.request_id,
                trace_id,
                sentry_event_id = event_id,
                "{request} failed: {}",
                failure.error()
            ),
        }
    }
}

/// The request a worker was serving when the arbiter aborted it for its
/// timeout, as the server's `worker_abort` hook is told.
#[derive(Clone, Debug)]
pub struct StuckRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its request-target as received; only the path is reported, its
    /// parameters redacted, since the query and they may hold a secret.
    pub target: &'a [u8],
    /// Its `Host`, for the URL.
    pub host: Option<&'a HeaderValue>,
    /// Its id, as the server logged it.
    pub request_id: String,
    /// How long it had been served.
    pub ran_for: Duration,
    /// The worker that served it.
    pub worker: Worker,
}

// ANCHOR: stuck
/// Reports a request that outlived the worker's timeout, through this
/// process's client (the one an [`ErrorCapture`](super::ErrorCapture)
/// layer built), then closes that client, sending the report, within
/// `within`: the worker is about to die. Returns the event's id, or
/// `None` when nothing reports in this process or the event was dropped
/// (sampled out, or not sent in time).
pub fn report_stuck_request(stuck: &StuckRequest<'_>, within: Duration) -> Option<Uuid> {
    let hub = Hub::main();
    let client = hub.client().filter(|client| client.is_enabled())?;
    let event_id = hub.capture_event(stuck_event(stuck));
    let sent = close_within(client, within);
    (sent && !event_id.is_nil()).then_some(event_id)
}
// ANCHOR_END: stuck

fn stuck_event(stuck: &StuckRequest<'_>) -> Event<'static> {
    // Only the path, its parameters redacted: an absolute-form target may
    // carry a user and password, any target a query, and a path parameter
    // a session id.
    let target = String::from_utf8_lossy(stuck.target);
    let uri = target.parse::<Uri>().ok();
    let path = uri.as_ref().map_or("/", Uri::path);
    let name = format!("{} {}", stuck.method, Redactor::default().path(path));
    let seconds = stuck.ran_for.as_secs_f64();
    let host = stuck.host.and_then(|host| host.to_str().ok());
    let url = path
        .parse::<Uri>()
        .ok()
        .and_then(|path| scrub::url("http", host, &path, &Default::default()));
    let tags = [
        ("request_id", stuck.request_id.clone()),
        ("worker_id", stuck.worker.id.to_string()),
        ("worker_pid", stuck.worker.pid.to_string()),
    ];
    Event {
        exception: vec![Exception {
            ty: "WorkerTimeout".into(),
            value: Some(format!(
                "{name} was still running after {seconds:.1} s; the worker was aborted"
            )),
            mechanism: Some(Mechanism {
                ty: "turnstile.timeout".into(),
                handled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }]
        .into(),
        level: Level::Fatal,
        // One issue per request kind, whatever the seconds in the message.
        fingerprint: vec!["turnstile.timeout".into(), name.clone().into()].into(),
        request: Some(sentry::protocol::Request {
            url,
            method: Some(stuck.method.to_string()),
            ..Default::default()
        }),
        transaction: Some(name),
        tags: tags
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
        extra: [("ran_for_seconds".to_owned(), Value::from(seconds))]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_request_is_named_by_its_path_and_time() {
        let method = Method::POST;
        let host = HeaderValue::from_static("shop.example");
        let event = stuck_event(&StuckRequest {
            method: &method,
            target: b"/reports/annual?token=s3cret",
            host: Some(&host),
            request_id: "0f3c".into(),
            ran_for: Duration::from_millis(31_250),
            worker: Worker { id: 2, pid: 4242 },
        });
        let exception = &event.exception[0];
        assert_eq!(exception.ty, "WorkerTimeout");
        assert_eq!(
            exception.value.as_deref(),
            Some("POST /reports/annual was still running after 31.2 s; the worker was aborted")
        );
        let request = event.request.as_ref().unwrap();
        assert_eq!(
            request.url.as_ref().unwrap().as_str(),
            "http://shop.example/reports/annual"
        );
        assert_eq!(event.tags["request_id"], "0f3c");
        assert_eq!(event.tags["worker_pid"], "4242");
        assert!(!format!("{event:?}").contains("s3cret"));
        assert_eq!(event.fingerprint[1], "POST /reports/annual");

        let absolute = stuck_event(&StuckRequest {
            method: &method,
            target: b"http://ann:pw-s3cret@shop.example/x?token=s3cret",
            host: None,
            request_id: "0f3c".into(),
            ran_for: Duration::from_secs(3),
            worker: Worker::default(),
        });
        let text = format!("{absolute:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(absolute.transaction.as_deref(), Some("POST /x"));

        let with_parameters = stuck_event(&StuckRequest {
            method: &method,
            target: b"/cart;jsessionid=s3cret/items",
            host: Some(&host),
            request_id: "0f3c".into(),
            ran_for: Duration::from_secs(3),
            worker: Worker::default(),
        });
        let text = format!("{with_parameters:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(
            with_parameters.transaction.as_deref(),
            Some("POST /cart;jsessionid=[redacted]/items")
        );
        assert_eq!(
            with_parameters.request.unwrap().url.unwrap().as_str(),
            "http://shop.example/cart;jsessionid=[redacted]/items"
        );
    }
}
