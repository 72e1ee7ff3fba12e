//! "Writing a layer", step 2: the `Layer` trait, a configuration type and a
//! wrapper type. Still measuring at the wrong moment (see the test).

use std::time::Instant;

use listing_layer_01_function::Timings;
use turnstile::{AppResult, Application, Layer, Request};

// ANCHOR: layer
/// Configuration: where the measurements go.
#[derive(Clone, Debug)]
pub struct ResponseTimeLayer {
    timings: Timings,
}

impl ResponseTimeLayer {
    /// Measures into `timings`.
    pub fn new(timings: Timings) -> Self {
        Self { timings }
    }
}

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct ResponseTime<A> {
    inner: A,
    timings: Timings,
}

impl<A: Application> Layer<A> for ResponseTimeLayer {
    type Application = ResponseTime<A>;

    fn layer(&self, inner: A) -> ResponseTime<A> {
        ResponseTime {
            inner,
            timings: self.timings.clone(),
        }
    }
}

impl<A: Application> Application for ResponseTime<A> {
    fn handle(&self, request: Request) -> AppResult {
        let started = Instant::now();
        let result = self.inner.handle(request);
        self.timings.record(started.elapsed());
        result
    }
}
// ANCHOR_END: layer

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use turnstile::test::{TestRequest, serve};
    use turnstile::{Bytes, Response, ResponseBody, Stack};

    // ANCHOR: streaming
    /// Three chunks, 30 ms apart: the client waits 90 ms for the whole body.
    fn slow_stream(_request: Request) -> Response {
        let chunks = (0..3).map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            Ok(Bytes::from_static(b"tick\n"))
        });
        Response::new(ResponseBody::stream(chunks))
    }

    #[test]
    fn misses_the_time_spent_streaming() {
        let timings = Timings::default();
        let app = Stack::new()
            .layer(ResponseTimeLayer::new(timings.clone()))
            .app(slow_stream);

        let response = serve(&app, TestRequest::get("/").build());

        assert_eq!(response.text(), "tick\ntick\ntick\n");
        // Wrong: the body had not been produced yet when `handle` returned.
        assert!(timings.all()[0] < Duration::from_millis(90));
    }
    // ANCHOR_END: streaming
}
