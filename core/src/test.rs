//! Test support: run applications and layers without sockets.
//!
//! * [`TestRequest`] builds a [`Request`] the way the server would, with an
//!   [`Environ`] filled in.
//! * [`MockApp`] is an application that records every request it receives
//!   and answers as scripted, so a layer's test can check both what the layer
//!   passed in and what it did to the answer.
//! * [`serve`] calls an application the way the server does: panics become
//!   the generic 500, the body is collected, and completion hooks run.
//!
//! ```
//! use turnstile_core::test::{serve, MockApp, TestRequest};
//!
//! let app = MockApp::ok("Hello, world!\n");
//! let response = serve(&app, TestRequest::post("/greet").header("x-name", "ada").body("hi").build());
//! assert_eq!(response.status, 200);
//! assert_eq!(response.text(), "Hello, world!\n");
//! let seen = app.last_request();
//! assert_eq!(seen.parts.method, "POST");
//! assert_eq!(seen.header("x-name"), Some("ada"));
//! assert_eq!(seen.body, b"hi");
//! ```

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header, request};

use crate::completion::{Completion, Outcome};
use crate::{AppResult, Application, Content, Environ, Request, RequestBody, Response, Worker};

/// Builds a [`Request`] with its [`Environ`], for tests.
///
/// Invalid input (a malformed URI or header) panics: it is a bug in the test.
#[derive(Debug)]
pub struct TestRequest {
    parts: request::Parts,
    body: Bytes,
    environ: Environ,
}

impl TestRequest {
    /// A request with this method and request-target.
    pub fn new(method: Method, target: &str) -> Self {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = target
            .parse()
            .unwrap_or_else(|e| panic!("invalid request-target {target:?}: {e}"));
        let mut environ = Environ::new();
        environ.remote_addr = Some(SocketAddr::from(([127, 0, 0, 1], 40000)));
        environ.client_addr = environ.remote_addr;
        environ.server_addr = Some(SocketAddr::from(([127, 0, 0, 1], 8000)));
        environ.raw_target = Bytes::copy_from_slice(target.as_bytes());
        environ.worker = Worker {
            id: 0,
            pid: std::process::id(),
        };
        Self {
            parts,
            body: Bytes::new(),
            environ,
        }
    }

    /// A `GET` request.
    pub fn get(target: &str) -> Self {
        Self::new(Method::GET, target)
    }

    /// A `POST` request.
    pub fn post(target: &str) -> Self {
        Self::new(Method::POST, target)
    }

    /// Appends a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("invalid header value {value:?}: {e}"));
        self.parts.headers.append(name, value);
        self
    }

    /// Sets the body (and a matching `Content-Length`).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        self
    }

    /// Sets the HTTP version.
    pub fn version(mut self, version: Version) -> Self {
        self.parts.version = version;
        self
    }

    /// Sets the TCP peer (and the client address, as with no proxy).
    pub fn remote_addr(mut self, addr: SocketAddr) -> Self {
        self.environ.remote_addr = Some(addr);
        self.environ.client_addr = Some(addr);
        self
    }

    /// Changes the environ in place, for facts without their own method.
    pub fn environ(mut self, change: impl FnOnce(&mut Environ)) -> Self {
        change(&mut self.environ);
        self
    }

    /// Adds a typed extension, as a server or an outer layer would.
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.parts.extensions.insert(value);
        self
    }

    /// The finished request.
    pub fn build(mut self) -> Request {
        self.parts.extensions.insert(self.environ);
        Request::from_parts(self.parts, RequestBody::from_bytes(self.body))
    }
}

/// A request as a [`MockApp`] saw it: the head and the whole body.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method, URI, version, headers and extensions.
    pub parts: request::Parts,
    /// The body, read to its end.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name`, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request's [`Environ`].
    pub fn environ(&self) -> &Environ {
        self.parts
            .extensions
            .get::<Environ>()
            .expect("TestRequest always sets an Environ")
    }
}

type Responder = dyn Fn(&Recorded) -> AppResult + Send + Sync;

/// An application that records requests and answers as scripted.
///
/// Clones share one record, so a test keeps a clone and hands the other to
/// the layer under test.
#[derive(Clone)]
pub struct MockApp {
    respond: Arc<Responder>,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl MockApp {
    /// Answers with whatever `respond` returns for the recorded request.
    pub fn new(respond: impl Fn(&Recorded) -> AppResult + Send + Sync + 'static) -> Self {
        Self {
            respond: Arc::new(respond),
            seen: Arc::default(),
        }
    }

    /// Answers `200 OK` with `body` as `text/plain`.
    pub fn ok(body: &'static str) -> Self {
        Self::with_status(StatusCode::OK, body)
    }

    /// Answers `status` with `body` as `text/plain`.
    pub fn with_status(status: StatusCode, body: &'static str) -> Self {
        Self::new(move |_| {
            let mut response = Response::new(body.into());
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(response)
        })
    }

    /// Returns an error with this message.
    pub fn failing(message: &'static str) -> Self {
        Self::new(move |_| Err(message.into()))
    }

    /// Panics with this message.
    pub fn panicking(message: &'static str) -> Self {
        Self::new(move |_| panic!("{message}"))
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests were received.
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The most recent request. Panics if there was none.
    pub fn last_request(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the mock application received no request")
    }
}

impl Application for MockApp {
    fn handle(&self, request: Request) -> AppResult {
        let (parts, mut body) = request.into_parts();
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)?;
        let recorded = Recorded { parts, body: bytes };
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(recorded.clone());
        (self.respond)(&recorded)
    }
}

impl fmt::Debug for MockApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockApp")
            .field("calls", &self.calls())
            .finish()
    }
}

/// A reader that fails with a [`BodyError`](crate::BodyError), as a body
/// does when its client breaks its framing or goes away: for testing how an
/// application and its layers take a client's fault.
#[derive(Clone, Debug)]
pub struct FailingReader(pub crate::BodyError);

impl Read for FailingReader {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Err(self.0.clone().into())
    }
}

/// A response as a client would see it: status, headers, the whole body.
#[derive(Debug)]
pub struct TestResponse {
    /// The status code.
    pub status: StatusCode,
    /// The header fields.
    pub headers: HeaderMap,
    /// The body bytes (possibly cut short, see `outcome`).
    pub body: Vec<u8>,
    /// Whether the whole body was produced: a stream that failed midway gives
    /// [`Outcome::Aborted`].
    pub outcome: Outcome,
    /// The route the application answered with (a router's template).
    pub route: Option<crate::Route>,
}

impl TestResponse {
    /// The first value of header `name`, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The template of the route the application answered with, if any.
    pub fn route(&self) -> Option<&str> {
        self.route.as_ref().map(crate::Route::as_str)
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Calls `app` with `request` the way a server does, without a socket.
///
/// A panic or an error becomes the generic 500 ([`respond`](crate::respond)),
/// a client's body fault its 4xx, the body is read out (a
/// stream chunk by chunk, a file up to its length), and completion hooks run
/// with what was "written".
pub fn serve<A: Application + ?Sized>(app: &A, request: Request) -> TestResponse {
    let response = crate::respond(app, request);
    let route = crate::Route::of_response(&response).cloned();
    let (parts, body) = response.into_parts();
    let (content, hooks) = body.into_parts();
    let (body, outcome) = collect(content);
    hooks.complete(&Completion {
        status: parts.status,
        body_bytes: body.len() as u64,
        outcome,
        finished: std::time::Instant::now(),
    });
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
        outcome,
        route,
    }
}

fn collect(content: Content) -> (Vec<u8>, Outcome) {
    let mut body = Vec::new();
    let outcome = match content {
        Content::Empty => Outcome::Written,
        Content::Bytes(bytes) => {
            body.extend_from_slice(&bytes);
            Outcome::Written
        }
        Content::Stream(chunks) => {
            let mut outcome = Outcome::Written;
            for chunk in chunks {
                match chunk {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(_) => {
                        outcome = Outcome::Aborted;
                        break;
                    }
                }
            }
            outcome
        }
        Content::File { file, len } => match file.take(len).read_to_end(&mut body) {
            Ok(n) if n as u64 == len => Outcome::Written,
            _ => Outcome::Aborted,
        },
    };
    (body, outcome)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::ResponseBody;

    #[test]
    fn serve_turns_panics_and_errors_into_generic_500s() {
        for app in [MockApp::panicking("secret"), MockApp::failing("secret")] {
            let response = serve(&app, TestRequest::get("/").build());
            assert_eq!(response.status, 500);
            assert!(!response.text().contains("secret"));
        }
    }

    #[test]
    fn serve_collects_streams_and_marks_failed_ones_aborted() {
        let app = |_req: Request| {
            let chunks = vec![Ok(Bytes::from("one ")), Err(io::Error::other("boom"))];
            Response::new(ResponseBody::stream(chunks.into_iter()))
        };
        let response = serve(&app, TestRequest::get("/").build());
        assert_eq!(response.text(), "one ");
        assert_eq!(response.outcome, Outcome::Aborted);
    }

    #[test]
    fn test_request_fills_environ_and_content_length() {
        let request = TestRequest::post("/upload?x=1")
            .body("12345")
            .remote_addr("10.1.2.3:999".parse().unwrap())
            .build();
        assert_eq!(request.headers()["content-length"], "5");
        let environ = Environ::of(&request);
        assert_eq!(environ.client_addr, Some("10.1.2.3:999".parse().unwrap()));
        assert_eq!(&environ.raw_target[..], b"/upload?x=1");
        assert_eq!(environ.worker.pid, std::process::id());
    }
}
