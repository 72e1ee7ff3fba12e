//! Panics as errors, and the one answer every failure gets.
//!
//! An application may fail by returning an error or by panicking. Both reach
//! the client as the same short 500 ([`internal_server_error`]): the details
//! belong in logs and error reports, never in the response.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};

use crate::{AppResult, Application, Request, Response};

/// A panic caught while calling an application, turned into an error:
/// its message and, when the boundary that caught it saw it happen
/// ([`respond`](crate::respond)), the place and the stack where it
/// panicked.
#[derive(Clone, Debug)]
pub struct Panicked {
    message: String,
    location: Option<String>,
    stack: Option<Arc<dyn Any + Send + Sync>>,
}

impl Panicked {
    /// Wraps a panic payload, keeping its message when it has one.
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(text) = payload.downcast_ref::<&'static str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            String::from("Box<dyn Any>")
        };
        Self {
            message,
            location: None,
            stack: None,
        }
    }

    /// With where it panicked (`file:line:column`) and, if it was taken,
    /// the stack there.
    pub(crate) fn at(
        mut self,
        location: String,
        stack: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        self.location = Some(location);
        self.stack = stack.map(Arc::from);
        self
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it panicked, `file:line:column`, when the boundary saw it.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The stack where it panicked, as the capture asked for by
    /// [`capturing_stacks`](crate::capturing_stacks) took it.
    pub fn stack(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.stack.as_deref()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the application panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

// ANCHOR: catch
/// Calls `app`, turning a panic into a [`Panicked`] error.
///
/// Unwind safety is asserted rather than required: the request is consumed
/// by the call, and state the application shares between requests lives
/// behind `Sync` types (a `Mutex` poisons itself), so a panic cannot leave
/// anything half-changed that the next request would see unprotected.
///
/// ```
/// use turnstile_core::{call_catching_panics, Panicked, Request, Response, test::TestRequest};
///
/// let app = |_req: Request| -> Response { panic!("divide by zero") };
/// let err = call_catching_panics(&app, TestRequest::get("/").build()).unwrap_err();
/// assert_eq!(err.downcast_ref::<Panicked>().unwrap().message(), "divide by zero");
/// ```
pub fn call_catching_panics<A: Application + ?Sized>(app: &A, request: Request) -> AppResult {
    match panic::catch_unwind(AssertUnwindSafe(|| app.handle(request))) {
        Ok(result) => result,
        Err(payload) => Err(Box::new(Panicked::from_payload(payload.as_ref()))),
    }
}
// ANCHOR_END: catch

/// The generic 500 response: no message, no backtrace, nothing to leak.
pub fn internal_server_error() -> Response {
    let mut response = Response::new("Internal Server Error\n".into());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::TestRequest;

    #[test]
    fn string_and_str_payloads_keep_messages() {
        let formatted = |_req: Request| -> Response { panic!("user {} not found", 7) };
        let err = call_catching_panics(&formatted, TestRequest::get("/").build()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the application panicked: user 7 not found"
        );

        let odd = |_req: Request| -> Response { std::panic::panic_any(42_u8) };
        let err = call_catching_panics(&odd, TestRequest::get("/").build()).unwrap_err();
        assert_eq!(
            err.downcast_ref::<Panicked>().unwrap().message(),
            "Box<dyn Any>"
        );
    }

    #[test]
    fn ordinary_errors_pass_through() {
        let failing = |_req: Request| -> Result<Response, std::io::Error> {
            Err(std::io::Error::other("no"))
        };
        let err = call_catching_panics(&failing, TestRequest::get("/").build()).unwrap_err();
        assert!(err.downcast_ref::<Panicked>().is_none());
    }

    #[test]
    fn internal_server_error_is_generic() {
        let response = internal_server_error();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.body().len(), Some(22));
    }
}
