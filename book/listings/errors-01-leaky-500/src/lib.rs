//! "Error capture", a wrong turn: a layer that catches every failure, as it
//! should, but answers it with the error's own text, so whatever the error
//! says reaches the client (see the test).

use turnstile::http::{HeaderValue, StatusCode, header};
use turnstile::{AppResult, Application, Layer, Request, Response, call_catching_panics};

/// Configuration: none.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExplainFailuresLayer;

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct ExplainFailures<A> {
    inner: A,
}

impl<A: Application> Layer<A> for ExplainFailuresLayer {
    type Application = ExplainFailures<A>;

    fn layer(&self, inner: A) -> ExplainFailures<A> {
        ExplainFailures { inner }
    }
}

// ANCHOR: handle
impl<A: Application> Application for ExplainFailures<A> {
    fn handle(&self, request: Request) -> AppResult {
        let error = match call_catching_panics(&self.inner, request) {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        // Helpful, it seems: the client is told what went wrong.
        let body = format!("Internal Server Error: {error}\n");
        let mut response = Response::new(body.into());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(response)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use std::fmt;

    use turnstile::Stack;
    use turnstile::test::{TestRequest, serve};

    use super::*;

    /// A database driver's error, which names what it could not reach.
    #[derive(Debug)]
    struct ConnectError {
        url: String,
    }

    impl fmt::Display for ConnectError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "could not connect to {}", self.url)
        }
    }

    impl std::error::Error for ConnectError {}

    // ANCHOR: leak
    #[test]
    fn the_client_reads_what_the_error_says() {
        // The URL came from the settings, password and all.
        let orders = |_request: Request| -> Result<Response, ConnectError> {
            Err(ConnectError {
                url: "postgres://shop:hunter2@db/shop".to_owned(),
            })
        };
        let app = Stack::new().layer(ExplainFailuresLayer).app(orders);

        let response = serve(&app, TestRequest::get("/orders").build());

        // This passes, and that is the bug: the 500 is right, and its body
        // hands the database's address and password to whoever asked.
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.text(),
            "Internal Server Error: could not connect to postgres://shop:hunter2@db/shop\n"
        );
        assert!(response.text().contains("hunter2"));
    }
    // ANCHOR_END: leak
}
