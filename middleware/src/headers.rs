// ANCHOR: all
//! Header injection: the headers every response should carry, a request id
//! that follows the request everywhere, and how long the application took.
//!
//! - **Static headers**, each with a [`Mode`]: set (replace), set if absent
//!   (the application's own value wins), or append.
//! - **A security preset**, as Django's `SecurityMiddleware` sets by
//!   default: `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   same-origin`, `Cross-Origin-Opener-Policy: same-origin` and
//!   `X-Frame-Options: DENY`, never overriding the application.
//!   `Strict-Transport-Security` is sent only when configured, and only on
//!   requests that arrived over HTTPS (as a trusted proxy says).
//! - **A request id**: the client's `X-Request-Id` when it is a safe token
//!   of at most 128 bytes, a new UUID otherwise. The application sees it in
//!   the request header and in [`Environ::request_id`]; the layers inside
//!   this one log and report it; the response echoes it.
//! - **`Server-Timing: app;dur=<ms>`**: the time the layers inside and the
//!   application took to return the response.
//!
//! Headers that belong to the connection (`Connection`, `Transfer-Encoding`,
//! `Content-Length`, …) are refused when the layer is built, so a mistake
//! shows at start-up rather than as a broken response.
//!
//! # Example
//!
//! ```
//! use turnstile_core::{Request, Response, Stack, test};
//! use turnstile_middleware::headers::{InjectHeaders, Mode};
//!
//! let layer = InjectHeaders::new()
//!     .security_preset()
//!     .header(Mode::Set, "Cache-Control", "no-store")
//!     .unwrap();
//! let app = Stack::new().layer(layer).app(|_request: Request| {
//!     let mut response = Response::new("framed\n".into());
//!     // The application allows framing by its own site; the preset keeps that.
//!     response.headers_mut().insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
//!     response
//! });
//!
//! let response = test::serve(&app, test::TestRequest::get("/").header("x-request-id", "abc-123").build());
//! assert_eq!(response.header("x-request-id"), Some("abc-123"));
//! assert_eq!(response.header("x-frame-options"), Some("SAMEORIGIN"));
//! assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
//! assert_eq!(response.header("cache-control"), Some("no-store"));
//! assert!(response.header("server-timing").unwrap().starts_with("app;dur="));
//!
//! // A forged id is replaced by a fresh one.
//! let response = test::serve(&app, test::TestRequest::get("/").header("x-request-id", "a b").build());
//! assert_eq!(response.header("x-request-id").unwrap().len(), 36);
//!
//! // Connection headers are the server's business.
//! assert!(InjectHeaders::new().header(Mode::Set, "Connection", "close").is_err());
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use turnstile_core::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use turnstile_core::http::uri::Scheme;
use turnstile_core::{
    AppResult, Application, Environ, Layer, Request, RequestId, Uuid, is_connection_header,
};

/// How a static header meets a value the application already set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Replace whatever the application set.
    Set,
    /// Keep the application's value; add this one only when there is none.
    IfAbsent,
    /// Add this value after the application's.
    Append,
}

/// A header the layer refuses: an invalid name or value, or one that
/// belongs to the connection rather than the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHeader(String);

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidHeader {}

/// Django's `SecurityMiddleware` and `XFrameOptionsMiddleware` defaults.
const SECURITY_PRESET: [(HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
];

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The header a request id comes in and goes out on, unless configured.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One static header and how it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRule {
    name: HeaderName,
    value: HeaderValue,
    mode: Mode,
}

impl HeaderRule {
    /// Checks `name` and `value`.
    ///
    /// # Errors
    ///
    /// An invalid name or value, or a connection header.
    pub fn new(mode: Mode, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        let name = response_header_name(name)?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| {
            InvalidHeader(format!(
                "invalid value for header `{name}`: {value:?} (only visible ASCII, spaces and tabs)"
            ))
        })?;
        Ok(Self { name, value, mode })
    }

    /// Parses a header line, `Name: value`, as given on the command line.
    ///
    /// # Errors
    ///
    /// No colon, or what [`HeaderRule::new`] refuses.
    pub fn parse(mode: Mode, line: &str) -> Result<Self, InvalidHeader> {
        let (name, value) = line.split_once(':').ok_or_else(|| {
            InvalidHeader(format!("{line:?} is not a header: expected `Name: value`"))
        })?;
        Self::new(mode, name, value)
    }

    fn apply(&self, headers: &mut HeaderMap) {
        match self.mode {
            Mode::Set => {
                headers.insert(&self.name, self.value.clone());
            }
            Mode::IfAbsent => {
                headers
                    .entry(&self.name)
                    .or_insert_with(|| self.value.clone());
            }
            Mode::Append => {
                headers.append(&self.name, self.value.clone());
            }
        }
    }
}

fn response_header_name(name: &str) -> Result<HeaderName, InvalidHeader> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| InvalidHeader(format!("invalid header name {:?}", name.trim())))?;
    if is_connection_header(&name) {
        return Err(InvalidHeader(format!(
            "`{name}` describes the connection, which the server manages; it cannot be injected"
        )));
    }
    Ok(name)
}

/// The layer. [`InjectHeaders::new`] starts with the request id on
/// `X-Request-Id` and `Server-Timing` on, and no static headers.
#[derive(Clone, Debug)]
pub struct InjectHeaders {
    rules: Vec<HeaderRule>,
    security_preset: bool,
    hsts: Option<HeaderValue>,
    request_id: Option<HeaderName>,
    server_timing: bool,
}

impl Default for InjectHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectHeaders {
    /// The most headers [`handle`](Injected) adds to one response.
    fn most_added(&self) -> usize {
        self.rules.len()
            + if self.security_preset {
                SECURITY_PRESET.len()
            } else {
                0
            }
            + usize::from(self.hsts.is_some())
            + usize::from(self.server_timing)
            + usize::from(self.request_id.is_some())
    }

    /// Request ids on `X-Request-Id`, `Server-Timing`, nothing else.
    pub fn new() -> Self {
        Self {
            rules: Vec::new(),
            security_preset: false,
            hsts: None,
            request_id: Some(X_REQUEST_ID),
            server_timing: true,
        }
    }

    /// Adds Django's security headers, each only where the application set
    /// none, after the static headers (so those win too).
    pub fn security_preset(mut self) -> Self {
        self.security_preset = true;
        self
    }

    /// Adds a checked static header.
    pub fn rule(mut self, rule: HeaderRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds a static header.
    ///
    /// # Errors
    ///
    /// What [`HeaderRule::new`] refuses.
    pub fn header(self, mode: Mode, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        Ok(self.rule(HeaderRule::new(mode, name, value)?))
    }

    /// Sends `Strict-Transport-Security: <value>` on HTTPS requests, for
    /// example `max-age=31536000; includeSubDomains`.
    ///
    /// # Errors
    ///
    /// A value that is not a valid header or does not start with `max-age=`.
    pub fn hsts(mut self, value: &str) -> Result<Self, InvalidHeader> {
        let value = value.trim();
        let valid = value.starts_with("max-age=")
            && value["max-age=".len()..]
                .split(';')
                .next()
                .is_some_and(|age| age.trim().parse::<u64>().is_ok());
        self.hsts = valid
            .then(|| HeaderValue::from_str(value).ok())
            .flatten()
            .map(Some)
            .ok_or_else(|| {
                InvalidHeader(format!(
                    "invalid Strict-Transport-Security value {value:?}: expected \
                     `max-age=SECONDS`, optionally with `; includeSubDomains; preload`"
                ))
            })?;
        Ok(self)
    }

    /// Takes and echoes the request id on `name` instead of `X-Request-Id`;
    /// `None` turns request ids off.
    ///
    /// # Errors
    ///
    /// An invalid or connection header name.
    pub fn request_id_header(mut self, name: Option<&str>) -> Result<Self, InvalidHeader> {
        self.request_id = name.map(response_header_name).transpose()?;
        Ok(self)
    }

    /// Turns `Server-Timing` on or off.
    pub fn server_timing(mut self, on: bool) -> Self {
        self.server_timing = on;
        self
    }
}

impl<A: Application> Layer<A> for InjectHeaders {
    type Application = Injected<A>;

    fn layer(&self, inner: A) -> Injected<A> {
        Injected {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// An application whose responses get the [`InjectHeaders`] headers.
#[derive(Debug)]
pub struct Injected<A> {
    inner: A,
    config: Arc<InjectHeaders>,
}

// ANCHOR: handle
impl<A: Application> Application for Injected<A> {
    fn handle(&self, mut request: Request) -> AppResult {
        let started = Instant::now();
        let config = &*self.config;
        let request_id = config
            .request_id
            .as_ref()
            .map(|name| (name, adopt_request_id(&mut request, name)));
        let https = Environ::of(&request).scheme == Scheme::HTTPS;

        let mut response = self.inner.handle(request)?;

        let headers = response.headers_mut();
        // Room for everything added here at once: the map would otherwise
        // grow, and copy itself, several times per response.
        headers.reserve(config.most_added());
        for rule in &config.rules {
            rule.apply(headers);
        }
        // One lookup each: an entry, rather than a check and an insert.
        if config.security_preset {
            for (name, value) in SECURITY_PRESET {
                headers
                    .entry(name)
                    .or_insert_with(|| HeaderValue::from_static(value));
            }
        }
        if let Some(hsts) = config.hsts.as_ref().filter(|_| https) {
            headers
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        if config.server_timing {
            headers.append(SERVER_TIMING, app_duration(started));
        }
        // Last, so no static header can contradict the id in the logs.
        if let Some((name, id)) = request_id {
            headers.insert(name, id);
        }
        Ok(response)
    }
}
// ANCHOR_END: handle

// ANCHOR: adopt
/// Settles the request's id: the client's when it is safe, else the one the
/// server generated (or a new one, under a server that gave none). The
/// application and the inner layers see it in the header and the environ.
fn adopt_request_id(request: &mut Request, name: &HeaderName) -> HeaderValue {
    let sent = request.headers().get(name).and_then(RequestId::from_header);
    let environ = request.extensions_mut().get_or_insert_default::<Environ>();
    let id = match sent {
        Some(id) => id,
        None if environ.request_id.is_nil() => RequestId::from(Uuid::new_v4()),
        None => environ.request_id.clone(),
    };
    let value = id.to_header_value();
    environ.request_id = id;
    request.headers_mut().insert(name, value.clone());
    value
}
// ANCHOR_END: adopt

/// `app;dur=<milliseconds since started>`, to the microsecond, written
/// without formatting machinery: every response has one.
fn app_duration(started: Instant) -> HeaderValue {
    app_duration_value(started.elapsed())
}

fn app_duration_value(elapsed: std::time::Duration) -> HeaderValue {
    const PREFIX: &[u8] = b"app;dur=";
    let milliseconds = crate::text::Micros::new(elapsed, 3);
    let milliseconds = milliseconds.as_bytes();
    // Written on the stack, then copied once into the header's own bytes.
    let mut value = [0; 40];
    value[..PREFIX.len()].copy_from_slice(PREFIX);
    value[PREFIX.len()..][..milliseconds.len()].copy_from_slice(milliseconds);
    HeaderValue::from_bytes(&value[..PREFIX.len() + milliseconds.len()])
        .expect("digits are a valid header")
}
// ANCHOR_END: all

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use turnstile_core::http::StatusCode;
    use turnstile_core::test::{MockApp, TestRequest, serve};
    use turnstile_core::{Response, Stack};

    use super::*;

    fn values<'a>(response: &'a turnstile_core::test::TestResponse, name: &str) -> Vec<&'a str> {
        response
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }

    #[test]
    fn modes_set_keep_or_append_to_the_applications_values() {
        let mock = MockApp::new(|_| {
            let mut response = Response::new("hi".into());
            let headers = response.headers_mut();
            for name in ["x-set", "x-if-absent", "x-append"] {
                headers.insert(name, HeaderValue::from_static("app"));
            }
            Ok(response)
        });
        let layer = InjectHeaders::new()
            .header(Mode::Set, "X-Set", "layer")
            .and_then(|l| l.header(Mode::IfAbsent, "X-If-Absent", "layer"))
            .and_then(|l| l.header(Mode::IfAbsent, "X-Missing", "layer"))
            .and_then(|l| l.header(Mode::Append, "X-Append", "layer"))
            .unwrap();
        let response = serve(&layer.layer(mock), TestRequest::get("/").build());
        assert_eq!(values(&response, "x-set"), ["layer"]);
        assert_eq!(values(&response, "x-if-absent"), ["app"]);
        assert_eq!(values(&response, "x-missing"), ["layer"]);
        assert_eq!(values(&response, "x-append"), ["app", "layer"]);
    }

    // ANCHOR: preset_test
    #[test]
    fn the_security_preset_never_overrides_the_application_or_the_rules() {
        let mock = MockApp::new(|_| {
            let mut response = Response::new("hi".into());
            response
                .headers_mut()
                .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
            Ok(response)
        });
        let layer = InjectHeaders::new()
            .security_preset()
            .header(Mode::IfAbsent, "X-Frame-Options", "SAMEORIGIN")
            .unwrap();
        let response = serve(&layer.layer(mock), TestRequest::get("/").build());
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(response.header("x-frame-options"), Some("SAMEORIGIN"));
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            response.header("cross-origin-opener-policy"),
            Some("same-origin")
        );
    }
    // ANCHOR_END: preset_test

    #[test]
    fn hsts_only_over_https() {
        let layer = InjectHeaders::new()
            .hsts("max-age=31536000; includeSubDomains")
            .unwrap();
        let app = layer.layer(MockApp::ok("hi"));
        let plain = serve(&app, TestRequest::get("/").build());
        assert_eq!(plain.header("strict-transport-security"), None);
        let secure = serve(
            &app,
            TestRequest::get("/")
                .environ(|environ| environ.scheme = Scheme::HTTPS)
                .build(),
        );
        assert_eq!(
            secure.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
        for bad in ["31536000", "max-age=soon", "max-age=1;\u{1}preload"] {
            assert!(InjectHeaders::new().hsts(bad).is_err(), "{bad:?}");
        }
    }

    // ANCHOR: adopt_test
    #[test]
    fn a_valid_request_id_is_adopted_everywhere() {
        let mock = MockApp::ok("hi");
        let app = InjectHeaders::new().layer(mock.clone());
        let response = serve(
            &app,
            TestRequest::get("/")
                .header("X-Request-Id", "edge-42")
                .build(),
        );
        assert_eq!(response.header("x-request-id"), Some("edge-42"));
        let seen = mock.last_request();
        assert_eq!(seen.header("x-request-id"), Some("edge-42"));
        assert_eq!(seen.environ().request_id.to_string(), "edge-42");
    }
    // ANCHOR_END: adopt_test

    #[test]
    fn an_invalid_request_id_is_replaced_by_the_servers_or_a_new_one() {
        let mock = MockApp::ok("hi");
        let app = InjectHeaders::new().layer(mock.clone());
        let server_id = RequestId::from(Uuid::from_u128(7));
        let oversized = "a".repeat(RequestId::MAX_LEN + 1);
        let response = serve(
            &app,
            TestRequest::get("/")
                .header("x-request-id", &oversized)
                .environ(|environ| environ.request_id = server_id.clone())
                .build(),
        );
        assert_eq!(
            response.header("x-request-id"),
            Some(server_id.to_string().as_str())
        );
        assert_eq!(
            mock.last_request().header("x-request-id"),
            Some(server_id.to_string().as_str())
        );

        let generated: HashSet<String> = (0..100)
            .map(|_| {
                let response = serve(&app, TestRequest::get("/").build());
                response.header("x-request-id").unwrap().to_owned()
            })
            .collect();
        assert_eq!(generated.len(), 100);
        assert!(generated.iter().all(|id| id.parse::<Uuid>().is_ok()));
    }

    #[test]
    fn the_request_id_header_can_be_renamed_or_turned_off() {
        let app = InjectHeaders::new()
            .request_id_header(Some("X-Correlation-Id"))
            .unwrap()
            .layer(MockApp::ok("hi"));
        let response = serve(
            &app,
            TestRequest::get("/")
                .header("x-correlation-id", "c-1")
                .build(),
        );
        assert_eq!(response.header("x-correlation-id"), Some("c-1"));
        assert_eq!(response.header("x-request-id"), None);

        let app = InjectHeaders::new()
            .request_id_header(None)
            .unwrap()
            .server_timing(false)
            .layer(MockApp::ok("hi"));
        let response = serve(&app, TestRequest::get("/").build());
        assert_eq!(response.header("x-request-id"), None);
        assert_eq!(response.header("server-timing"), None);
    }

    #[test]
    fn server_timing_is_appended_to_the_applications() {
        let mock = MockApp::new(|_| {
            let mut response = Response::new("hi".into());
            response
                .headers_mut()
                .insert("server-timing", HeaderValue::from_static("db;dur=3"));
            Ok(response)
        });
        let response = serve(
            &InjectHeaders::new().layer(mock),
            TestRequest::get("/").build(),
        );
        let timings = values(&response, "server-timing");
        assert_eq!(timings[0], "db;dur=3");
        let millis: f64 = timings[1]
            .strip_prefix("app;dur=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(millis >= 0.0);
    }

    #[test]
    fn a_static_header_cannot_contradict_the_request_id() {
        let app = InjectHeaders::new()
            .header(Mode::Set, "X-Request-Id", "fixed")
            .unwrap()
            .layer(MockApp::ok("hi"));
        let response = serve(
            &app,
            TestRequest::get("/").header("x-request-id", "r-9").build(),
        );
        assert_eq!(values(&response, "x-request-id"), ["r-9"]);
    }

    #[test]
    fn connection_headers_and_bad_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("Connection: close", "describes the connection"),
            ("transfer-encoding: chunked", "describes the connection"),
            ("Content-Length: 5", "describes the connection"),
            ("Bad Name: x", "invalid header name"),
            ("X-Ok: line\nbreak", "invalid value"),
            ("no colon here", "expected `Name: value`"),
        ] {
            let error = HeaderRule::parse(Mode::Set, line).unwrap_err().to_string();
            assert!(error.contains(reason), "{line:?}: {error}");
        }
        assert!(
            InjectHeaders::new()
                .request_id_header(Some("Connection"))
                .is_err()
        );
    }

    #[test]
    fn errors_pass_through_untouched() {
        let app = Stack::new()
            .layer(InjectHeaders::new().security_preset())
            .app(MockApp::failing("boom"));
        let response = serve(&app, TestRequest::get("/").build());
        // The server (or an error layer inside) answers; nothing is added.
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn server_timing_prints_what_the_formatting_machinery_prints() {
        for micros in [0, 7, 999, 1_000, 12_345, 1_000_000, 86_400_000_001] {
            let elapsed = std::time::Duration::from_micros(micros);
            assert_eq!(
                app_duration_value(elapsed),
                format!("app;dur={:.3}", elapsed.as_secs_f64() * 1000.0)
            );
        }
    }
}
