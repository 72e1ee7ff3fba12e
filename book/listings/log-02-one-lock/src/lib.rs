//! "Request logging", a wrong turn: the line is written at the right moment
//! (from the completion hook), but every request thread writes its line
//! through one lock, one `write` per line.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use turnstile::{AppResult, Application, Layer, Request, on_complete};

/// Configuration: the one writer every request thread shares (a file,
/// standard output, or in tests a `Vec<u8>`).
#[derive(Debug)]
pub struct LogLayer<W> {
    sink: Arc<Mutex<W>>,
}

impl<W> LogLayer<W> {
    /// Logs to `sink`.
    pub fn new(sink: W) -> Self {
        Self {
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    /// The shared writer, to read what was logged.
    pub fn sink(&self) -> Arc<Mutex<W>> {
        self.sink.clone()
    }
}

/// The application that wraps `A`.
#[derive(Debug)]
pub struct Logged<A, W> {
    inner: A,
    sink: Arc<Mutex<W>>,
}

impl<A: Application, W: Write + Send + 'static> Layer<A> for LogLayer<W> {
    type Application = Logged<A, W>;

    fn layer(&self, inner: A) -> Logged<A, W> {
        Logged {
            inner,
            sink: self.sink.clone(),
        }
    }
}

// ANCHOR: handle
impl<A: Application, W: Write + Send + 'static> Application for Logged<A, W> {
    fn handle(&self, request: Request) -> AppResult {
        let started = Instant::now();
        let request_line = format!("{} {}", request.method(), request.uri().path());
        let mut response = self.inner.handle(request)?;
        let sink = self.sink.clone();
        on_complete(&mut response, move |done| {
            let line = format!(
                "{request_line} {} {} {:.6}\n",
                done.status.as_u16(),
                done.body_bytes,
                started.elapsed().as_secs_f64()
            );
            // Every request thread of the process queues here, and whoever
            // holds the lock makes a system call while the others wait.
            let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = sink.write_all(line.as_bytes());
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use super::*;
    use turnstile::Stack;
    use turnstile::test::{MockApp, TestRequest, serve};

    // ANCHOR: threads
    #[test]
    fn eight_threads_write_whole_lines_one_at_a_time() {
        let layer = LogLayer::new(Vec::<u8>::new());
        let sink = layer.sink();
        let app = Stack::new().layer(layer).app(MockApp::ok("Hello!\n"));

        std::thread::scope(|scope| {
            for thread in 0..8 {
                let app = &app;
                scope.spawn(move || {
                    for n in 0..100 {
                        serve(app, TestRequest::get(&format!("/t{thread}/{n}")).build());
                    }
                });
            }
        });

        // Right: 800 whole lines, none torn. But each of them was written
        // while the seven other threads could not write theirs.
        let log = String::from_utf8(std::mem::take(&mut *sink.lock().unwrap())).unwrap();
        assert_eq!(log.lines().count(), 800);
        for line in log.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "{line}");
            assert_eq!((fields[0], fields[2], fields[3]), ("GET", "200", "7"));
        }
    }
    // ANCHOR_END: threads
}
