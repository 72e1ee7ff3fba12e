// ANCHOR: all
//! "Writing a layer", step 3: measure to the last byte with a completion
//! hook. This is the finished layer.

use std::time::Instant;

use listing_layer_01_function::Timings;
use turnstile::{AppResult, Application, Layer, Request, on_complete};

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

// ANCHOR: call
impl<A: Application> Application for ResponseTime<A> {
    fn handle(&self, request: Request) -> AppResult {
        let started = Instant::now();
        let mut response = self.inner.handle(request)?;
        let timings = self.timings.clone();
        on_complete(&mut response, move |_done| {
            timings.record(started.elapsed())
        });
        Ok(response)
    }
}
// ANCHOR_END: call

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use turnstile::test::{MockApp, TestRequest, serve};
    use turnstile::{
        Bytes, Response, ResponseBody, Stack, call_catching_panics, internal_server_error, layer_fn,
    };

    fn slow_stream(_request: Request) -> Response {
        let chunks = (0..3).map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            Ok(Bytes::from_static(b"tick\n"))
        });
        Response::new(ResponseBody::stream(chunks))
    }

    #[test]
    fn counts_the_time_spent_streaming() {
        let timings = Timings::default();
        let app = Stack::new()
            .layer(ResponseTimeLayer::new(timings.clone()))
            .app(slow_stream);
        serve(&app, TestRequest::get("/").build());
        assert!(timings.all()[0] >= Duration::from_millis(90));
    }

    // ANCHOR: mock
    #[test]
    fn passes_requests_and_responses_through_unchanged() {
        let timings = Timings::default();
        let mock = MockApp::ok("from the app");
        let app = Stack::new()
            .layer(ResponseTimeLayer::new(timings.clone()))
            .app(mock.clone());

        let response = serve(&app, TestRequest::get("/books?page=2").build());

        assert_eq!(response.text(), "from the app");
        assert_eq!(mock.last_request().parts.uri, "/books?page=2");
        assert_eq!(timings.all().len(), 1);
    }
    // ANCHOR_END: mock

    // ANCHOR: order
    /// Answers a panic with the generic 500: a stand-in for the
    /// error-capture layer.
    fn catch_panics<A: Application>() -> impl Layer<A> {
        layer_fn(|inner: A| {
            move |request: Request| -> AppResult {
                Ok(call_catching_panics(&inner, request)
                    .unwrap_or_else(|_| internal_server_error()))
            }
        })
    }

    #[test]
    fn inside_the_panic_catcher_a_panic_is_not_timed() {
        let timings = Timings::default();
        let app = Stack::new()
            .layer(catch_panics())
            .layer(ResponseTimeLayer::new(timings.clone()))
            .app(MockApp::panicking("boom"));
        assert_eq!(serve(&app, TestRequest::get("/").build()).status, 500);
        // The panic unwound straight past our layer: no response, no hook.
        assert!(timings.all().is_empty());
    }

    #[test]
    fn outside_the_panic_catcher_a_panic_is_timed() {
        let timings = Timings::default();
        let app = Stack::new()
            .layer(ResponseTimeLayer::new(timings.clone()))
            .layer(catch_panics())
            .app(MockApp::panicking("boom"));
        assert_eq!(serve(&app, TestRequest::get("/").build()).status, 500);
        assert_eq!(timings.all().len(), 1);
    }
    // ANCHOR_END: order
}
// ANCHOR_END: all
