//! The facts about a request that are not in its HTTP head.
//!
//! WSGI puts these in `environ` next to the headers (`REMOTE_ADDR`,
//! `SERVER_NAME`/`SERVER_PORT`, `wsgi.url_scheme`, `SCRIPT_NAME`, `RAW_URI`).
//! Turnstile's server puts one [`Environ`] in each request's extensions: one
//! value rather than one extension per fact, so a request costs one insert.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use crate::{Request, RequestId};
use bytes::Bytes;
use http::uri::Scheme;

/// When the server had read a request's head, by both clocks. The layers
/// measure from it, and to the [`Completion`](crate::Completion)'s
/// `finished`, so the access log, the metrics and the span agree on how
/// long a request took, and a request reads the clock twice, not once per
/// layer at each end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// For durations.
    pub instant: Instant,
    /// For timestamps.
    pub wall: SystemTime,
}

impl Received {
    /// Now, by both clocks.
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `instant`, a reading of the monotonic clock
    /// taken after this one.
    pub fn wall_at(&self, instant: Instant) -> SystemTime {
        self.wall + instant.saturating_duration_since(self.instant)
    }
}

/// The process and thread that serve a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Worker {
    /// The worker's number, counted from 1 under a pre-forking server; 0 for
    /// a single-process server.
    pub id: u32,
    /// The worker's process id; 0 when no server filled it in.
    pub pid: u32,
}

/// Connection and server facts for one request, set by the server.
///
/// ```
/// use turnstile_core::{Environ, test::TestRequest};
///
/// let request = TestRequest::get("/hello?name=world").build();
/// let environ = Environ::of(&request);
/// assert_eq!(environ.scheme.as_str(), "http");
/// assert_eq!(&environ.raw_target[..], b"/hello?name=world");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Environ {
    /// The peer of the TCP connection (`REMOTE_ADDR`); `None` on a Unix socket.
    pub remote_addr: Option<SocketAddr>,
    /// The client as far as the server trusts proxies to say: the peer, or the
    /// address a trusted proxy forwarded. Use this one for logs.
    pub client_addr: Option<SocketAddr>,
    /// The local address the connection arrived on (`SERVER_NAME`/`SERVER_PORT`).
    pub server_addr: Option<SocketAddr>,
    /// `http`, or `https` when a trusted proxy says so (`wsgi.url_scheme`).
    pub scheme: Scheme,
    /// The path prefix the application is mounted under (`SCRIPT_NAME`), empty
    /// by default.
    pub script_name: String,
    /// The request-target exactly as it was on the request line (`RAW_URI`).
    pub raw_target: Bytes,
    /// The request head exactly as received (request line and header field
    /// lines), for the rare application that needs the fields' wire order
    /// or case; empty when the request did not come over HTTP/1.
    pub raw_head: Bytes,
    /// Which worker serves the request.
    pub worker: Worker,
    /// The request's id: the one the server generated (unique across every
    /// worker of the server), or one a layer adopted from the request; nil
    /// when neither set it.
    pub request_id: RequestId,
    /// When the server had read the request's head; `None` for a request
    /// no server read (one built in a test).
    pub received: Option<Received>,
}

static UNKNOWN: Environ = Environ::new();

impl Environ {
    /// An environ with nothing known: no addresses, `http`, empty target.
    pub const fn new() -> Self {
        Self {
            remote_addr: None,
            client_addr: None,
            server_addr: None,
            scheme: Scheme::HTTP,
            script_name: String::new(),
            raw_target: Bytes::new(),
            raw_head: Bytes::new(),
            worker: Worker { id: 0, pid: 0 },
            request_id: RequestId::nil(),
            received: None,
        }
    }

    /// When the server had read the request's head, or now for a request
    /// no server read.
    pub fn received_or_now(&self) -> Received {
        self.received.unwrap_or_else(Received::now)
    }

    /// The environ of `request`, or an empty one if no server set it (for
    /// example, a request built by hand in a test).
    pub fn of(request: &Request) -> &Environ {
        request.extensions().get::<Environ>().unwrap_or(&UNKNOWN)
    }
}

impl Default for Environ {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestBody;

    #[test]
    fn missing_environ_reads_as_unknown() {
        let request = Request::new(RequestBody::empty());
        let environ = Environ::of(&request);
        assert_eq!(environ.remote_addr, None);
        assert_eq!(environ.worker, Worker::default());
    }

    #[test]
    fn environ_set_by_a_server_is_found() {
        let mut request = Request::new(RequestBody::empty());
        let mut environ = Environ::new();
        environ.remote_addr = Some("127.0.0.1:5000".parse().unwrap());
        request.extensions_mut().insert(environ);
        assert_eq!(
            Environ::of(&request).remote_addr,
            Some("127.0.0.1:5000".parse().unwrap())
        );
    }
}
