//! What a request is to the worker, once a connection has received it
//! whole: its id, its client and scheme (from the proxies it trusts), the
//! thread's record while the application works on it, and the metrics and
//! log lines of what the server refused. The connection (`http1`) knows
//! none of this; it hands each request to a [`Serve`].

use std::time::Instant;

use http::StatusCode;
use http::header::HOST;
use turnstile_core::{Application, ClientFault, Environ, Failure, Request, Response, respond};

use crate::forwarded::TrustedProxies;
use crate::http1::RequestHead;
use crate::http1::dispatch::{Incoming, Refusal, Service, Slow};
use crate::in_flight::{InFlight, ThreadRecord};

/// The application, and what the worker adds to each of its requests.
#[derive(Debug)]
pub(crate) struct Serve<A> {
    pub(crate) app: A,
    /// `--forwarded-allow-ips`.
    pub(crate) trusted_proxies: TrustedProxies,
}

impl<A: Application> Service for Serve<A> {
    // ANCHOR: call
    fn call(
        &self,
        incoming: Incoming,
        connection: &Environ,
        thread: &ThreadRecord,
    ) -> Result<(Response, InFlight), Refusal> {
        let Incoming {
            head,
            body,
            received,
        } = incoming;
        let RequestHead {
            raw,
            method,
            target,
            uri,
            version,
            headers,
            ..
        } = head;
        let mut environ = connection.clone();
        let request_id = crate::request_ids::next_request_id();
        environ.request_id = request_id.into();
        environ.received = Some(received);
        if let Err(error) = self.trusted_proxies.apply(&headers, &mut environ) {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: error.to_string(),
            });
        }
        let mut record = Some(InFlight {
            method: method.clone(),
            target: target.clone(),
            host: headers.get(HOST).cloned(),
            request_id,
            started: received.instant,
        });
        environ.raw_target = target;
        environ.raw_head = raw;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        request.extensions_mut().insert(environ);

        // The call begins as the request is whole: for a body that came
        // with its head, the head's reading of the clock will do.
        let response = thread.run(&mut record, received.instant, || {
            respond(&self.app, request)
        });
        // The last resort when no error-capture layer logged it, with the
        // request's context, already.
        if let Some(failure) = Failure::of(&response)
            && failure.log_once()
        {
            crate::error_log::warning(format_args!("the application failed: {}", failure.error()));
        }
        // A body the client broke, found by the boundary rather than here.
        if ClientFault::of(&response).is_some() {
            crate::prometheus::refused(response.status());
        }
        Ok((response, record.expect("the record comes back")))
    }
    // ANCHOR_END: call

    fn run<R>(
        &self,
        request: &mut Option<InFlight>,
        thread: &ThreadRecord,
        work: impl FnOnce() -> R,
    ) -> R {
        thread.run(request, Instant::now(), work)
    }

    fn finished(&self, thread: &ThreadRecord) {
        thread.finished();
    }

    fn refused(&self, status: StatusCode) {
        crate::prometheus::refused(status);
    }

    fn too_slow(&self, what: Slow, connection: &Environ) {
        crate::prometheus::too_slow(what);
        let doing = match what {
            Slow::Head => "sending its request head",
            Slow::Body => "sending its request body",
            Slow::Response => "reading its response",
        };
        let client = connection.remote_addr.map_or_else(
            || "a Unix-socket client".to_owned(),
            |addr| addr.to_string(),
        );
        crate::error_log::info(format_args!(
            "closed {client}: slower than the minimum rate {doing}"
        ));
    }
}
