//! "Request logging", a wrong turn: a layer that writes its log line when
//! `handle` returns, before the server has written a streamed body (see the
//! tests).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnstile::{AppResult, Application, Layer, Request};

/// One access-log line, kept as a value so a test can read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The request path.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Body bytes, when the layer could tell.
    pub bytes: Option<u64>,
    /// How long the request took, as far as the layer could tell.
    pub duration: Duration,
}

/// The lines logged so far; clones share them.
#[derive(Clone, Debug, Default)]
pub struct AccessLog(Arc<Mutex<Vec<Line>>>);

impl AccessLog {
    /// Every line, oldest first.
    pub fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }
}

/// Configuration: where the lines go.
#[derive(Clone, Debug, Default)]
pub struct LogLayer {
    log: AccessLog,
}

impl LogLayer {
    /// Logs into `log`.
    pub fn new(log: AccessLog) -> Self {
        Self { log }
    }
}

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct Logged<A> {
    inner: A,
    log: AccessLog,
}

impl<A: Application> Layer<A> for LogLayer {
    type Application = Logged<A>;

    fn layer(&self, inner: A) -> Logged<A> {
        Logged {
            inner,
            log: self.log.clone(),
        }
    }
}

// ANCHOR: handle
impl<A: Application> Application for Logged<A> {
    fn handle(&self, request: Request) -> AppResult {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let response = self.inner.handle(request)?;
        // The response is built, but the server has not written it yet.
        let line = Line {
            path,
            status: response.status().as_u16(),
            bytes: response.body().len(),
            duration: started.elapsed(),
        };
        self.log.0.lock().unwrap().push(line);
        Ok(response)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use super::*;
    use turnstile::test::{MockApp, TestRequest, serve};
    use turnstile::{Bytes, Response, ResponseBody, Stack};

    #[test]
    fn is_right_for_a_body_in_memory() {
        let log = AccessLog::default();
        let app = Stack::new()
            .layer(LogLayer::new(log.clone()))
            .app(MockApp::ok("Hello, world!\n"));
        serve(&app, TestRequest::get("/").build());
        assert_eq!(log.lines()[0].bytes, Some(14));
    }

    // ANCHOR: streamed
    /// An export: three chunks of six bytes, 30 ms apart.
    fn export(_request: Request) -> Response {
        let chunks = (0..3).map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            Ok(Bytes::from_static(b"chunk\n"))
        });
        Response::new(ResponseBody::stream(chunks))
    }

    #[test]
    fn logs_a_streamed_response_before_it_is_sent() {
        let log = AccessLog::default();
        let app = Stack::new().layer(LogLayer::new(log.clone())).app(export);

        let started = Instant::now();
        let response = serve(&app, TestRequest::get("/export").build());
        let waited = started.elapsed();

        assert_eq!(response.body.len(), 18);
        assert!(waited >= Duration::from_millis(90));
        let line = &log.lines()[0];
        assert_eq!((line.path.as_str(), line.status), ("/export", 200));
        // Both pass, and both are wrong: the client waited at least 90 ms
        // for 18 bytes, but the line says the request took next to no time
        // and does not know how much it sent.
        assert!(line.duration < Duration::from_millis(90));
        assert_eq!(line.bytes, None);
    }
    // ANCHOR_END: streamed
}
