//! The application side: anything that turns a [`Request`] into a [`Response`].

use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use crate::{Request, Response, ResponseBody};

/// Any error an application returns. Layers may downcast it; the server only
/// logs it and answers 500.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Response fields that describe the connection or the framing of the body
/// (RFC 9110 §7.6.1), which belong to the server: it writes its own and
/// drops an application's, and a layer may not inject them.
const CONNECTION_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is a field the server owns and an application may not set
/// on a response: `Connection`, `Content-Length`, `Transfer-Encoding` and
/// the other connection and framing fields.
///
/// ```
/// use turnstile_core::{http::header, is_connection_header};
///
/// assert!(is_connection_header(&header::TRANSFER_ENCODING));
/// assert!(!is_connection_header(&header::CACHE_CONTROL));
/// ```
pub fn is_connection_header(name: &HeaderName) -> bool {
    CONNECTION_HEADERS.contains(&name.as_str())
}

/// What an application returns for one request.
pub type AppResult = Result<Response, BoxError>;

/// An application: called once per request, from many threads at once.
///
/// Every `Fn(Request) -> R` closure is one, where `R` is a [`Response`], a
/// `Result<Response, E>` with `E` convertible to [`BoxError`], or, for
/// one-line answers, a [`StatusCode`](http::StatusCode), a string, or a
/// status and a string (as `text/plain`):
///
/// ```
/// use turnstile_core::{Application, Request, Response, test::TestRequest};
///
/// fn hello(_request: Request) -> Response {
///     Response::new("Hello, world!\n".into())
/// }
///
/// fn parse_id(request: Request) -> Result<Response, std::num::ParseIntError> {
///     let id: u64 = request.uri().path().trim_start_matches('/').parse()?;
///     Ok(Response::new(format!("item {id}\n").into()))
/// }
///
/// assert!(hello.handle(TestRequest::get("/").build()).is_ok());
/// assert!(parse_id.handle(TestRequest::get("/12").build()).is_ok());
/// assert!(parse_id.handle(TestRequest::get("/twelve").build()).is_err());
///
/// let teapot = |_request: Request| (http::StatusCode::IM_A_TEAPOT, "short and stout\n");
/// assert_eq!(teapot.handle(TestRequest::get("/").build()).unwrap().status(), 418);
/// let gone = |_request: Request| http::StatusCode::GONE;
/// assert_eq!(gone.handle(TestRequest::get("/").build()).unwrap().status(), 410);
/// ```
///
/// The bounds are WSGI's `wsgi.multithread` and `wsgi.multiprocess` made
/// types: `Sync` because request threads share one application, `'static`
/// because it lives as long as the worker process.
pub trait Application: Send + Sync + 'static {
    /// Handles one request.
    ///
    /// Returning an error and panicking are both allowed outcomes: the error
    /// layer (or, without it, the server) answers 500 and reports them.
    fn handle(&self, request: Request) -> AppResult;
}

/// What an application closure may return.
pub trait IntoAppResult {
    /// Converts to the result the server expects.
    fn into_app_result(self) -> AppResult;
}

impl IntoAppResult for Response {
    fn into_app_result(self) -> AppResult {
        Ok(self)
    }
}

impl<E: Into<BoxError>> IntoAppResult for Result<Response, E> {
    fn into_app_result(self) -> AppResult {
        self.map_err(Into::into)
    }
}

/// A status alone: an empty body.
impl IntoAppResult for http::StatusCode {
    fn into_app_result(self) -> AppResult {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = self;
        Ok(response)
    }
}

/// Text: `200`, `text/plain; charset=utf-8`.
impl IntoAppResult for &'static str {
    fn into_app_result(self) -> AppResult {
        (http::StatusCode::OK, self).into_app_result()
    }
}

/// Text: `200`, `text/plain; charset=utf-8`.
impl IntoAppResult for String {
    fn into_app_result(self) -> AppResult {
        (http::StatusCode::OK, self).into_app_result()
    }
}

/// A status and text, `text/plain; charset=utf-8`.
impl IntoAppResult for (http::StatusCode, &'static str) {
    fn into_app_result(self) -> AppResult {
        Ok(text(self.0, bytes::Bytes::from_static(self.1.as_bytes())))
    }
}

/// A status and text, `text/plain; charset=utf-8`.
impl IntoAppResult for (http::StatusCode, String) {
    fn into_app_result(self) -> AppResult {
        Ok(text(self.0, bytes::Bytes::from(self.1)))
    }
}

fn text(status: http::StatusCode, body: bytes::Bytes) -> Response {
    let mut response = Response::new(ResponseBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<F, R> Application for F
where
    F: Fn(Request) -> R + Send + Sync + 'static,
    R: IntoAppResult,
{
    fn handle(&self, request: Request) -> AppResult {
        self(request).into_app_result()
    }
}

/// An application behind a shared pointer, for when its type must be erased
/// (choosing layers at run time) or it must be shared between servers.
#[derive(Clone)]
pub struct SharedApp(Arc<dyn Application>);

impl SharedApp {
    /// Erases the type of `app`.
    pub fn new(app: impl Application) -> Self {
        Self(Arc::new(app))
    }
}

impl Application for SharedApp {
    fn handle(&self, request: Request) -> AppResult {
        self.0.handle(request)
    }
}

impl fmt::Debug for SharedApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedApp(..)")
    }
}

/// One of two applications; what an optional layer produces.
#[derive(Clone, Debug)]
pub enum Either<L, R> {
    /// The first kind (for `Option<Layer>`: the layer was present).
    Left(L),
    /// The second kind (for `Option<Layer>`: the bare inner application).
    Right(R),
}

impl<L: Application, R: Application> Application for Either<L, R> {
    fn handle(&self, request: Request) -> AppResult {
        match self {
            Either::Left(app) => app.handle(request),
            Either::Right(app) => app.handle(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::TestRequest;

    #[test]
    fn closures_returning_results_keep_their_errors() {
        let app = |_req: Request| -> Result<Response, std::io::Error> {
            Err(std::io::Error::other("database is down"))
        };
        let err = app.handle(TestRequest::get("/").build()).unwrap_err();
        assert_eq!(err.to_string(), "database is down");
        assert!(err.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn shared_app_forwards_calls() {
        let app = SharedApp::new(|_req: Request| Response::new("shared".into()));
        let clone = app.clone();
        assert!(clone.handle(TestRequest::get("/").build()).is_ok());
    }
}
