//! "Header injection", a wrong turn: a layer that adds security headers
//! with `HeaderMap::insert`, and so replaces the values the application
//! chose for itself (see the test).

use turnstile::http::HeaderValue;
use turnstile::{AppResult, Application, Layer, Request};

// ANCHOR: layer
/// The headers the layer adds to every response, and their values.
const SECURITY_HEADERS: [(&str, &str); 2] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
];

/// Configuration: none yet, the headers are fixed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecurityHeadersLayer;

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct SecurityHeaders<A> {
    inner: A,
}

impl<A: Application> Layer<A> for SecurityHeadersLayer {
    type Application = SecurityHeaders<A>;

    fn layer(&self, inner: A) -> SecurityHeaders<A> {
        SecurityHeaders { inner }
    }
}

impl<A: Application> Application for SecurityHeaders<A> {
    fn handle(&self, request: Request) -> AppResult {
        let mut response = self.inner.handle(request)?;
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            // `insert` replaces whatever the application set.
            headers.insert(name, HeaderValue::from_static(value));
        }
        Ok(response)
    }
}
// ANCHOR_END: layer

#[cfg(test)]
mod tests {
    use super::*;
    use turnstile::test::{TestRequest, serve};
    use turnstile::{Response, Stack};

    // ANCHOR: clobbers
    /// An application whose pages frame each other, so it allows framing by
    /// its own site, on purpose.
    fn framed_by_its_own_site(_request: Request) -> Response {
        let mut response = Response::new("framed\n".into());
        response
            .headers_mut()
            .insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        response
    }

    #[test]
    fn replaces_the_applications_own_choice() {
        let app = Stack::new()
            .layer(SecurityHeadersLayer)
            .app(framed_by_its_own_site);

        let response = serve(&app, TestRequest::get("/").build());

        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        // This passes, and that is the bug: the application said SAMEORIGIN
        // and the layer silently made it DENY, so the application's own
        // pages can no longer frame it. A default must not override a
        // choice the application made.
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
    }
    // ANCHOR_END: clobbers
}
