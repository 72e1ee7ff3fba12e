//! "Writing a layer", step 1: a function that wraps a function.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnstile::{AppResult, Application, Request};

// ANCHOR: timings
/// The durations a timing layer measured, shared with whoever reads them.
#[derive(Clone, Debug, Default)]
pub struct Timings(Arc<Mutex<Vec<Duration>>>);

impl Timings {
    /// Adds one measurement.
    pub fn record(&self, duration: Duration) {
        self.0.lock().unwrap().push(duration);
    }

    /// Every measurement so far.
    pub fn all(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}
// ANCHOR_END: timings

// ANCHOR: timed
/// Wraps `app` in an application that records how long each call took.
pub fn timed(app: impl Application, timings: Timings) -> impl Application {
    move |request: Request| -> AppResult {
        let started = Instant::now();
        let result = app.handle(request);
        timings.record(started.elapsed());
        result
    }
}
// ANCHOR_END: timed

#[cfg(test)]
mod tests {
    use super::*;
    use turnstile::Response;
    use turnstile::test::{TestRequest, serve};

    // ANCHOR: test
    #[test]
    fn records_one_timing_per_request() {
        let timings = Timings::default();
        let slow = |_request: Request| {
            std::thread::sleep(Duration::from_millis(20));
            Response::new("done".into())
        };
        let app = timed(slow, timings.clone());

        serve(&app, TestRequest::get("/").build());
        serve(&app, TestRequest::get("/").build());

        let all = timings.all();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|d| *d >= Duration::from_millis(20)));
    }
    // ANCHOR_END: test

    fn hello(_request: Request) -> Response {
        Response::new("Hello, world!\n".into())
    }

    #[test]
    fn wrappers_nest_inside_out() {
        // ANCHOR: nesting
        let outer = Timings::default();
        let inner = Timings::default();
        let app = timed(timed(hello, inner.clone()), outer.clone());
        // ANCHOR_END: nesting
        serve(&app, TestRequest::get("/").build());
        assert_eq!((outer.all().len(), inner.all().len()), (1, 1));
        assert!(outer.all()[0] >= inner.all()[0]);
    }
}
