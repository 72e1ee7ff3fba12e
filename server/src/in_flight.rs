//! What each request thread is doing: the request whose application code
//! it runs (the call, a later pull of its streamed body, its completion
//! hooks), since when, and how many requests have been served. The worker
//! reads it to count requests for `--max-requests` and to name the request
//! a stuck worker was serving. A request waiting for its client (its body
//! to arrive, its response to be read) is on no thread's record: a slow
//! client is not a stuck worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method};
#[cfg(test)]
use nix::sys::eventfd::EfdFlags;
use nix::sys::eventfd::EventFd;
use turnstile_core::Uuid;

/// A request being served.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Its method.
    pub method: Method,
    /// Its request-target as received; only the path is shown by
    /// [`InFlight::describe`], since a query string may carry a secret.
    pub target: Bytes,
    /// Its `Host` field, if it had one.
    pub host: Option<HeaderValue>,
    /// The id the server gave it ([`turnstile_core::Environ::request_id`]
    /// starts as this one; a layer may adopt the client's instead).
    pub request_id: Uuid,
    /// When the application's work on it that is running now began: the
    /// call, or a later pull of its body or its completion hooks.
    pub started: Instant,
}

impl InFlight {
    /// How long the application's work on it has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// `GET /path (request 0f3c…)`: the path alone, since the query, or an
    /// absolute-form target's user and password, may be secret.
    pub fn describe(&self) -> String {
        let target = String::from_utf8_lossy(&self.target);
        let uri = target.parse::<http::Uri>().ok();
        let path = uri.as_ref().map_or("/", http::Uri::path);
        // The query is left out, and path parameters' values (session
        // ids) hidden: this names the request in the error log.
        let path = turnstile_core::redact::path_parameters(path);
        format!("{} {path} (request {})", self.method, self.request_id)
    }
}

/// A limit on the requests a worker serves (`--max-requests`), and how the
/// request threads tell the worker it was reached.
#[derive(Debug)]
pub(crate) struct RequestLimit {
    max: u64,
    reached: Arc<EventFd>,
    total: AtomicU64,
    /// The server's stopping flag, set as the limit is reached: the next
    /// response on every connection says `close`, before the worker's main
    /// thread has even woken.
    pub(crate) stopping: Arc<AtomicBool>,
}

impl RequestLimit {
    pub(crate) fn new(max: u64, reached: Arc<EventFd>) -> Self {
        Self {
            max,
            reached,
            total: AtomicU64::new(0),
            stopping: Arc::default(),
        }
    }

    /// Whether `max` requests have been served.
    pub(crate) fn is_reached(&self) -> bool {
        self.total.load(Ordering::Relaxed) >= self.max
    }
}

/// One request thread's record.
#[derive(Debug, Default)]
pub(crate) struct ThreadRecord {
    current: Mutex<Option<InFlight>>,
    served: AtomicU64,
    /// Shared by the threads; only counted when there is a limit.
    limit: Option<Arc<RequestLimit>>,
}

impl ThreadRecord {
    /// Runs `work`, the application's work on `request` begun at
    /// `started`, with the request on this thread's record meanwhile: moved
    /// there and back, not copied. `None` runs it on no record.
    pub(crate) fn run<R>(
        &self,
        request: &mut Option<InFlight>,
        started: Instant,
        work: impl FnOnce() -> R,
    ) -> R {
        let Some(mut record) = request.take() else {
            return work();
        };
        record.started = started;
        *self.slot() = Some(record);
        // Cleared even if `work` unwinds.
        let computing = Computing(self);
        let result = work();
        std::mem::forget(computing);
        *request = self.slot().take();
        result
    }

    fn slot(&self) -> MutexGuard<'_, Option<InFlight>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's response has been written or given up: one more served,
    /// and the worker told once the limit is reached.
    pub(crate) fn finished(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Some(limit) = &self.limit
            && limit.total.fetch_add(1, Ordering::Relaxed) + 1 == limit.max
        {
            limit.stopping.store(true, Ordering::SeqCst);
            let _ = limit.reached.write(1);
        }
    }
}

/// Application code running for a request, should it unwind: the
/// record is cleared.
struct Computing<'a>(&'a ThreadRecord);

impl Drop for Computing<'_> {
    fn drop(&mut self) {
        *self.0.slot() = None;
    }
}

/// Every request thread's record, for the worker to read.
#[derive(Debug, Default)]
pub(crate) struct Records(Vec<Arc<ThreadRecord>>);

impl Records {
    pub(crate) fn add(&mut self, limit: Option<Arc<RequestLimit>>) -> Arc<ThreadRecord> {
        let record = Arc::new(ThreadRecord {
            limit,
            ..ThreadRecord::default()
        });
        self.0.push(record.clone());
        record
    }

    /// Requests served to the end so far.
    pub(crate) fn served(&self) -> u64 {
        self.0
            .iter()
            .map(|record| record.served.load(Ordering::Relaxed))
            .sum()
    }

    /// The request whose application code has been running longest, if
    /// any is.
    pub(crate) fn oldest(&self) -> Option<InFlight> {
        self.0
            .iter()
            .filter_map(|record| {
                record
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .min_by_key(|request| request.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_request_is_named_without_its_query() {
        let mut records = Records::default();
        let reached = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        let limit = Some(Arc::new(RequestLimit::new(2, reached.clone())));
        let (a, b) = (records.add(limit.clone()), records.add(limit));
        let started = Instant::now();
        let request = |method, target| InFlight {
            method,
            target: Bytes::from_static(target),
            host: None,
            request_id: Uuid::nil(),
            started: Instant::now(),
        };
        let mut first = Some(request(Method::GET, b"/slow;jsessionid=A1F3?token=secret"));
        let mut second = Some(request(Method::POST, b"/later"));
        a.run(&mut first, started, || {
            b.run(&mut second, started + Duration::from_millis(5), || {
                let oldest = records.oldest().unwrap();
                assert_eq!(
                    oldest.describe(),
                    "GET /slow;jsessionid=[redacted] (request 00000000-0000-0000-0000-000000000000)"
                );
            });
            assert_eq!(records.oldest().unwrap().method, Method::GET);
        });
        assert!(first.is_some() && second.is_some(), "each record came back");
        a.finished();
        assert_eq!(reached.read().ok(), None, "one request is not the limit");
        assert!(
            records.oldest().is_none(),
            "a request waiting for its client is on no record"
        );
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.run(&mut second, started, || panic!("in a pull"))
        }));
        assert!(unwound.is_err());
        assert!(records.oldest().is_none(), "cleared as it unwound");
        // Its response is written on another thread.
        a.finished();
        assert_eq!(records.served(), 2);
        assert_eq!(reached.read().ok(), Some(1), "the limit was reached");
    }

    #[test]
    fn an_absolute_target_is_named_by_its_path_alone() {
        let request = InFlight {
            method: Method::GET,
            target: Bytes::from_static(b"http://ann:s3cret@shop.example/slow?token=s3cret"),
            host: None,
            request_id: Uuid::nil(),
            started: Instant::now(),
        };
        assert_eq!(
            request.describe(),
            "GET /slow (request 00000000-0000-0000-0000-000000000000)"
        );
    }
}
