//! Between a connection and whatever serves its requests.
//!
//! A connection knows HTTP/1.1: it reads heads and bodies, writes
//! responses, and decides keep-alive. What a request means to the worker
//! (its id, the proxies trusted to name its client, its record while the
//! application works on it, the metrics of what was refused) is the
//! [`Service`]'s business, implemented outside this module by the worker's
//! request threads.

use http::StatusCode;
use turnstile_core::{Environ, Received, RequestBody, Response};

use super::head::RequestHead;
use crate::in_flight::{InFlight, ThreadRecord};

/// A request whose head and body have both arrived.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Its head.
    pub(crate) head: RequestHead,
    /// Its whole body, in memory or spooled.
    pub(crate) body: RequestBody,
    /// When its head had been read: the one reading of the clocks every
    /// layer measures the request from.
    pub(crate) received: Received,
}

/// A request the server answers itself, and why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

/// What a client was too slow at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slow {
    /// Sending a request head.
    Head,
    /// Sending a request body.
    Body,
    /// Reading a response.
    Response,
}

impl Slow {
    /// The label of the metric that counts it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Slow::Head => "request_head",
            Slow::Body => "request_body",
            Slow::Response => "response",
        }
    }
}

/// What serves a connection's requests. Its methods run on request
/// threads, `thread` being the record of the one running it.
pub(crate) trait Service {
    /// Calls the application with a complete request. Returns its response
    /// and the record of the request, which the connection keeps until the
    /// response is complete; or a refusal.
    fn call(
        &self,
        incoming: Incoming,
        connection: &Environ,
        thread: &ThreadRecord,
    ) -> Result<(Response, InFlight), Refusal>;

    /// Runs application code for a request after its call returned (a
    /// stream's next chunk, the completion hooks), as the call ran.
    fn run<R>(
        &self,
        request: &mut Option<InFlight>,
        thread: &ThreadRecord,
        work: impl FnOnce() -> R,
    ) -> R;

    /// A request's response has been written, or given up.
    fn finished(&self, thread: &ThreadRecord);

    /// The server answered a request itself with `status`.
    fn refused(&self, status: StatusCode);

    /// A client was closed for being slower than the minimum rate.
    fn too_slow(&self, what: Slow, connection: &Environ);
}
