//! One connection, as a state machine that never waits for its client.
//!
//! A request thread drives it when the poller says its socket is ready
//! ([`Connection::on_ready`]): it reads what has arrived, without waiting,
//! parses the head, receives the body into memory or the spool, and only
//! once the whole request is here calls the [`Service`]; then it writes the
//! response as far as the socket takes it. Whatever is left to write (the
//! rest of a body, a file, further chunks of a stream) waits with the
//! connection in the poller, and the next thread woken for it goes on, so a
//! client that reads slowly holds a buffer, not a thread. The poller's
//! sweep asks each waiting connection whether it is [`due`](Connection::due):
//! idle past its keep-alive, or receiving or reading slower than the
//! minimum rates, and then [`on_tick`](Connection::on_tick) answers it.
//!
//! ```text
//!   Idle ──► Head ──► Body ──► (Service::call) ──► Writing ──► Idle
//!     │        │        │                             │          (keep-alive)
//!     │        └────────┴──► refusal (4xx, 503) ──────┤
//!     └─► closed                                      └──► Lingering ──► closed
//! ```
//!
//! A connection's next request is not read before its response is written,
//! so pipelined responses leave in order.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode, Version, header};
use nix::sys::socket::{MsgFlags, recv};
use turnstile_core::{
    BodyError, ClientFault, Completion, CompletionHooks, Environ, Outcome, Received, RequestBody,
    Response,
};

use super::decode::BodyDecoder;
use super::dispatch::{Incoming, Refusal, Service, Slow};
use super::encode::{BodyFraming, DateCache, Outgoing, Want, body_framing, write_head};
use super::head::{Framing, HeadScan, Limits, Parsed, RequestHead, parse_head_resuming};
use super::io::{Fill, Input, THREAD_BUFFER};
use crate::budget::Budget;
use crate::in_flight::{InFlight, ThreadRecord};
use crate::listen::Stream;
use crate::spool::{BodyStore, Spool, StoreError};

/// Settings for every connection of a worker.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Limits on the request head.
    pub limits: Limits,
    /// The largest request body accepted (`--limit-request-body`); larger
    /// ones get 413, as soon as the head or the chunks say so. `None` for
    /// no limit.
    pub max_body: Option<u64>,
    /// The most of one body kept in memory (`--body-buffer-size`, nginx's
    /// `client_body_buffer_size`); the rest is spooled to a file.
    pub body_buffer_size: u64,
    /// Where bodies are spooled (`--spool-dir`): unlinked files, which no
    /// other process can open.
    pub spool_dir: PathBuf,
    /// The most bytes a worker's spooled bodies take together
    /// (`--spool-max-size`); a body that would pass it gets 503.
    pub spool_max_size: u64,
    /// The most memory a worker holds for its clients (`--client-memory`):
    /// input buffers, partial heads and bodies kept in memory. A request
    /// that would pass it gets 503 (a body goes to the spool first).
    pub client_memory: u64,
    /// How long a new connection may wait for its first request to begin.
    pub first_request_timeout: Duration,
    /// How long an idle keep-alive connection is kept (`--keepalive`);
    /// zero closes every connection after one response, as Gunicorn does.
    pub keepalive: Duration,
    /// The slowest a head or a body may arrive, in bytes a second, on
    /// average since it began, once `min_rate_grace` has passed
    /// (`--min-request-rate`): slower gets 408. Zero turns it off.
    pub min_request_rate: u64,
    /// The slowest a client may read a response, in bytes a second, while
    /// the server waits to write (`--min-response-rate`): slower is closed.
    /// Zero turns it off.
    pub min_response_rate: u64,
    /// How long a client has before the minimum rates apply
    /// (`--min-rate-grace`).
    pub min_rate_grace: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_body: Some(100 * 1024 * 1024),
            body_buffer_size: 64 * 1024,
            spool_dir: std::env::temp_dir(),
            spool_max_size: 1024 * 1024 * 1024,
            client_memory: 64 * 1024 * 1024,
            first_request_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(2),
            // Kestrel's MinRequestBodyDataRate and MinResponseDataRate.
            min_request_rate: 240,
            min_response_rate: 240,
            min_rate_grace: Duration::from_secs(5),
        }
    }
}

/// How long a stopping server waits, at least, for the first request of
/// a connection it has accepted (one its listener had queued, say).
pub const STOPPING_FIRST_REQUEST: Duration = Duration::from_secs(1);

/// How long a refused client is read from after its answer, so it reads
/// the answer rather than a reset, before the connection is closed.
const LINGER: Duration = Duration::from_secs(5);

/// Bytes a job reads or writes for one connection before it lets the next
/// connection have the thread: a fast client streaming a large body is not
/// waited for, but it must not keep others waiting either.
const JOB_QUOTA: usize = 1 << 20;

/// A connection's average rate since `since`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    since: Instant,
    bytes: u64,
}

impl Rate {
    fn new(since: Instant) -> Self {
        Self { since, bytes: 0 }
    }

    fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Whether, past the grace period, fewer bytes have come than the
    /// minimum rate asks for the time taken (Kestrel's rule).
    fn too_slow(&self, now: Instant, min: u64, grace: Duration) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        min > 0 && elapsed > grace && (self.bytes as f64) < min as f64 * elapsed.as_secs_f64()
    }
}

/// What the connection is doing.
enum State {
    /// Between requests: nothing of the next one has arrived.
    Idle,
    /// A head has begun to arrive.
    Head { rate: Rate, scan: HeadScan },
    /// The head is here; the body is arriving.
    Body(Box<Receiving>),
    /// A response is being written.
    Writing(Box<Responding>),
    /// Answered and shut for writing; reading (and dropping) what the
    /// client still sends, so it reads the answer, until it closes or
    /// `until`.
    Lingering { until: Instant },
}

struct Receiving {
    head: RequestHead,
    decoder: BodyDecoder,
    store: BodyStore,
    received: Received,
    rate: Rate,
    /// What is left to write of a `100 Continue` the client waits for.
    interim: &'static [u8],
}

struct Responding {
    out: Outgoing,
    status: StatusCode,
    /// The application's request, for the thread's record while its body
    /// is pulled and its hooks run; `None` for an answer the server made
    /// itself.
    request: Option<InFlight>,
    hooks: CompletionHooks,
    then: Then,
    /// When what is in hand must have been written, set as the socket
    /// first stopped taking it.
    deadline: Option<Instant>,
}

/// What follows a response: the connection's one keep-alive decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    KeepAlive,
    Close,
    /// Shut for writing, then read until the client closes: it may still
    /// be sending a body the server did not read.
    Linger,
}

/// What the thread does with a connection after a job.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Give it back to the poller to wait for its socket.
    Wait,
    /// Give it back and queue it again: it had more to do than one job's
    /// share.
    Again,
    /// Close it.
    Close,
}

/// A request thread's own state, reused for every connection it serves.
#[derive(Debug)]
pub(crate) struct Scratch {
    read: Vec<u8>,
    out: Vec<u8>,
    decoded: Vec<u8>,
    dates: DateCache,
    pub(crate) record: Arc<ThreadRecord>,
}

impl Scratch {
    pub(crate) fn new(record: Arc<ThreadRecord>) -> Self {
        Self {
            read: vec![0; THREAD_BUFFER],
            out: Vec::new(),
            decoded: vec![0; 16 * 1024],
            dates: DateCache::default(),
            record,
        }
    }
}

/// Everything a job needs besides the connection.
pub(crate) struct Cx<'a, S> {
    pub(crate) service: &'a S,
    pub(crate) config: &'a ConnConfig,
    pub(crate) spool: &'a Spool,
    pub(crate) scratch: &'a mut Scratch,
    /// The server is stopping: responses close their connections. Read as
    /// each response starts, since the application may have run long.
    pub(crate) stopping: &'a AtomicBool,
}

/// One client connection. See the [module docs](self).
pub(crate) struct Connection {
    stream: Stream,
    /// The facts every request on it shares (addresses, worker).
    environ: Environ,
    input: Input,
    state: State,
    /// When it began to wait for its next request: its accept, or the end
    /// of its last response.
    idle_since: Instant,
    /// No request has come on it yet.
    fresh: bool,
}

// Returned once per request and moved straight on: boxing the request
// would cost an allocation each time for nothing.
#[allow(clippy::large_enum_variant)]
enum Advance {
    /// A whole request is here.
    Respond(Incoming),
    /// The server answers it itself.
    Refuse(StatusCode, String, Then),
    /// More input is needed.
    More,
}

impl Connection {
    /// Sets up a freshly accepted connection, whose buffers count against
    /// `memory`. `environ` carries the facts shared by every request on it.
    pub(crate) fn new(
        stream: Stream,
        environ: Environ,
        memory: &Arc<Budget>,
        limits: &Limits,
    ) -> io::Result<Self> {
        stream.set_nonblocking()?;
        Ok(Self {
            stream,
            environ,
            input: Input::new(memory, limits.max_head_len() + 4096),
            state: State::Idle,
            idle_since: Instant::now(),
            fresh: true,
        })
    }

    /// The socket, for registering with the poller.
    pub(crate) fn socket(&self) -> &Stream {
        &self.stream
    }

    /// Does what its socket's readiness allows: reads, serves, writes.
    /// `peer_closed` says the poller saw the client shut its side.
    pub(crate) fn on_ready<S: Service>(&mut self, cx: &mut Cx<'_, S>, peer_closed: bool) -> After {
        self.input.lend(&mut cx.scratch.read);
        let mut after = self.drive(cx, peer_closed);
        if !self.input.settle(&mut cx.scratch.read) {
            // What is left over does not fit under the ceiling, and is
            // dropped. Midway through a response, that is the next
            // pipelined request: the connection ends after this response.
            // Otherwise it is a head: refused.
            match &mut self.state {
                State::Writing(responding) => responding.then = Then::Close,
                _ => {
                    let full = StatusCode::SERVICE_UNAVAILABLE;
                    self.refuse(cx, full, FULL.into(), Then::Linger);
                    after = self.on_ready(cx, false);
                }
            }
        }
        after
    }

    /// Answers a connection the sweep found [`due`](Self::due): closes an
    /// idle one, answers a slow request with 408, closes a slow reader.
    pub(crate) fn on_tick<S: Service>(&mut self, cx: &mut Cx<'_, S>) -> After {
        match &self.state {
            State::Idle if self.input_waiting() => return self.on_ready(cx, false),
            State::Idle | State::Lingering { .. } => return After::Close,
            State::Head { rate, .. } => {
                cx.service.too_slow(Slow::Head, &self.environ);
                if rate.bytes == 0 {
                    return After::Close;
                }
                let why = "the request head arrived too slowly".into();
                self.refuse(cx, StatusCode::REQUEST_TIMEOUT, why, Then::Close);
            }
            State::Body(_) => {
                cx.service.too_slow(Slow::Body, &self.environ);
                let why = BodyError::timed_out("the request body arrived too slowly");
                self.refuse(cx, why.status(), why.to_string(), Then::Linger);
            }
            State::Writing(_) => {
                // The socket may have room the kernel has not told of yet:
                // it wakes a writer only once half its buffer is free.
                let after = self.on_ready(cx, false);
                let now = Instant::now();
                if !matches!(&self.state, State::Writing(responding) if responding.overdue(now)) {
                    return after;
                }
                cx.service.too_slow(Slow::Response, &self.environ);
                self.finish(cx, Outcome::Aborted);
                return After::Close;
            }
        }
        self.on_ready(cx, false)
    }

    /// Whether the sweep must act on it now: idle past its time, slower
    /// than a minimum rate, or done lingering. A stopping server gives a
    /// new connection that has sent nothing less time.
    pub(crate) fn due(&self, now: Instant, config: &ConnConfig, stopping: bool) -> bool {
        match &self.state {
            State::Idle => {
                let wait = match (self.fresh, stopping) {
                    (false, _) => config.keepalive,
                    (true, false) => config.first_request_timeout,
                    (true, true) => config
                        .first_request_timeout
                        .min(config.keepalive.max(STOPPING_FIRST_REQUEST)),
                };
                // Due whether or not input is waiting: a request that
                // arrived just as its time ran out is served by `on_tick`,
                // and so is one whose edge was missed (a read stops short
                // at TCP's urgent mark, which the `drained` shortcut takes
                // for an empty socket).
                now >= self.idle_since + wait
            }
            State::Head { rate, .. } => {
                rate.too_slow(now, config.min_request_rate, config.min_rate_grace)
            }
            State::Body(receiving) => {
                receiving
                    .rate
                    .too_slow(now, config.min_request_rate, config.min_rate_grace)
            }
            State::Writing(responding) => responding.overdue(now),
            State::Lingering { until } => now >= *until,
        }
    }

    /// Whether it waits for input between requests (not for its first).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && !self.fresh
    }

    fn input_waiting(&self) -> bool {
        let mut byte = [0u8; 1];
        recv(
            self.stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )
        .is_ok_and(|n| n > 0)
    }

    // ANCHOR: drive
    fn drive<S: Service>(&mut self, cx: &mut Cx<'_, S>, peer_closed: bool) -> After {
        let mut quota = JOB_QUOTA;
        // A read shorter than the room offered emptied the socket: what
        // arrives after it wakes the poller again. Not so for the end of
        // the stream: when the peer has closed, read until it shows.
        let mut drained = false;
        loop {
            match &self.state {
                State::Writing(_) => match self.write(cx, &mut quota) {
                    Wrote::Blocked => return After::Wait,
                    Wrote::Quota => return After::Again,
                    Wrote::Failed => {
                        self.finish(cx, Outcome::Aborted);
                        return After::Close;
                    }
                    Wrote::Done => match self.finish(cx, Outcome::Written) {
                        Then::KeepAlive => self.state = State::Idle,
                        Then::Close if self.input.is_empty() && !self.input_waiting() => {
                            return After::Close;
                        }
                        Then::Close | Then::Linger => self.linger(),
                    },
                },
                State::Lingering { until } => {
                    // A client that keeps sending is never swept: the limit
                    // is kept here too.
                    if Instant::now() >= *until {
                        return After::Close;
                    }
                    return self.discard(&mut quota);
                }
                State::Idle | State::Head { .. } | State::Body(_) => {
                    match self.advance(cx) {
                        Advance::Respond(incoming) => {
                            self.respond(cx, incoming);
                            continue;
                        }
                        Advance::Refuse(status, why, then) => {
                            self.refuse(cx, status, why, then);
                            continue;
                        }
                        Advance::More => {}
                    }
                    if drained {
                        return After::Wait;
                    }
                    if quota == 0 {
                        return After::Again;
                    }
                    match self.input.fill(&self.stream) {
                        Fill::Read { n, filled } => {
                            quota = quota.saturating_sub(n);
                            // A head that arrives whole is parsed in this job:
                            // only one still arriving is timed (`advance`).
                            if let State::Head { rate, .. } = &mut self.state {
                                rate.add(n);
                            }
                            drained = !filled && !peer_closed;
                        }
                        Fill::WouldBlock => return After::Wait,
                        Fill::Eof => match self.state {
                            State::Body(_) => {
                                let why = BodyError::incomplete(
                                    "the connection closed inside the request body",
                                );
                                self.refuse(cx, why.status(), why.to_string(), Then::Close);
                            }
                            _ => return After::Close,
                        },
                        Fill::Full => self.refuse(
                            cx,
                            StatusCode::SERVICE_UNAVAILABLE,
                            FULL.into(),
                            Then::Linger,
                        ),
                        Fill::Failed => return After::Close,
                    }
                }
            }
        }
    }

    // ANCHOR_END: drive

    /// Uses what has arrived: a head, then its body.
    fn advance<S: Service>(&mut self, cx: &mut Cx<'_, S>) -> Advance {
        loop {
            match &mut self.state {
                State::Idle | State::Head { .. } => {
                    if self.input.is_empty() {
                        return Advance::More;
                    }
                    let mut fresh = HeadScan::default();
                    let scan = match &mut self.state {
                        State::Head { scan, .. } => scan,
                        _ => &mut fresh,
                    };
                    let parsed =
                        parse_head_resuming(self.input.buffered(), &cx.config.limits, scan);
                    let parsed = match parsed {
                        Ok(parsed) => parsed,
                        Err(error) => {
                            return Advance::Refuse(error.status(), error.to_string(), Then::Close);
                        }
                    };
                    let Parsed::Complete { head, len } = parsed else {
                        if let State::Idle = self.state {
                            let mut rate = Rate::new(Instant::now());
                            rate.add(self.input.buffered().len());
                            self.state = State::Head { rate, scan: fresh };
                        }
                        return Advance::More;
                    };
                    self.input.consume(len);
                    // The one reading of the clocks every layer measures from.
                    let received = Received::now();
                    if head.framing == Framing::Empty {
                        self.state = State::Idle;
                        return Advance::Respond(Incoming {
                            head: *head,
                            body: RequestBody::empty(),
                            received,
                        });
                    }
                    let decoder = match BodyDecoder::new(head.framing, cx.config.max_body) {
                        Ok(decoder) => decoder,
                        // The client may be sending the body already.
                        Err(error) => {
                            return Advance::Refuse(
                                error.status(),
                                error.to_string(),
                                Then::Linger,
                            );
                        }
                    };
                    let expected = match head.framing {
                        Framing::Length(len) => Some(len),
                        Framing::Empty | Framing::Chunked => None,
                    };
                    // A client that sent its body without waiting has no
                    // use for a `100 Continue`.
                    let interim: &'static [u8] = if head.expect_continue && self.input.is_empty() {
                        b"HTTP/1.1 100 Continue\r\n\r\n"
                    } else {
                        b""
                    };
                    self.state = State::Body(Box::new(Receiving {
                        head: *head,
                        decoder,
                        store: BodyStore::new(cx.spool, expected),
                        received,
                        rate: Rate::new(received.instant),
                        interim,
                    }));
                }
                State::Body(receiving) => {
                    while !receiving.interim.is_empty() {
                        match (&self.stream).write(receiving.interim) {
                            Ok(n) => receiving.interim = &receiving.interim[n..],
                            // Retried the next time the socket is ready.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                let why = "the client went away".to_owned();
                                return Advance::Refuse(StatusCode::BAD_REQUEST, why, Then::Close);
                            }
                        }
                    }
                    loop {
                        let step = receiving
                            .decoder
                            .decode(self.input.buffered(), &mut cx.scratch.decoded);
                        let step = match step {
                            Ok(step) => step,
                            Err(error) => {
                                return Advance::Refuse(
                                    error.status(),
                                    error.to_string(),
                                    Then::Linger,
                                );
                            }
                        };
                        let (consumed, done) = (step.consumed, step.done);
                        if let Err(error) = receiving.store.push(cx.spool, step.body) {
                            return store_refusal(error);
                        }
                        receiving.rate.add(consumed);
                        self.input.consume(consumed);
                        if done {
                            break;
                        }
                        if self.input.is_empty() {
                            return Advance::More;
                        }
                    }
                    let State::Body(receiving) = std::mem::replace(&mut self.state, State::Idle)
                    else {
                        unreachable!("receiving a body");
                    };
                    let Receiving {
                        head,
                        mut decoder,
                        store,
                        received,
                        ..
                    } = *receiving;
                    return match store.into_body(decoder.take_trailers()) {
                        Ok(body) => Advance::Respond(Incoming {
                            head,
                            body,
                            received,
                        }),
                        Err(error) => store_refusal(StoreError::Io(error)),
                    };
                }
                State::Writing(_) | State::Lingering { .. } => return Advance::More,
            }
        }
    }

    /// Calls the service with a whole request and starts its response.
    fn respond<S: Service>(&mut self, cx: &mut Cx<'_, S>, incoming: Incoming) {
        let method = incoming.head.method.clone();
        let version = incoming.head.version;
        let wants_keep_alive = incoming.head.keep_alive;
        self.fresh = false;
        match cx.service.call(incoming, &self.environ, &cx.scratch.record) {
            Ok((response, request)) => {
                let then = if ClientFault::of(&response).is_some() {
                    // Its body's framing broke: nothing after it can be
                    // trusted, and it may still be sending.
                    Then::Linger
                } else if wants_keep_alive {
                    Then::KeepAlive
                } else {
                    Then::Close
                };
                self.start(cx, response, &method, version, then, Some(request));
            }
            Err(Refusal { status, reason }) => self.refuse(cx, status, reason, Then::Close),
        }
    }

    /// Starts writing `response`; `then` is what the request asked to
    /// follow, or what a refusal must.
    fn start<S>(
        &mut self,
        cx: &mut Cx<'_, S>,
        response: Response,
        method: &Method,
        version: Version,
        then: Then,
        request: Option<InFlight>,
    ) {
        let (parts, body) = response.into_parts();
        let (announced, sent) = body_framing(parts.status, method, version, body.len());
        let then = keep_alive(cx, then, announced);
        let (content, hooks) = body.into_parts();
        let mut front = std::mem::take(&mut cx.scratch.out);
        front.clear();
        write_head(
            &mut front,
            parts.status,
            &parts.headers,
            announced,
            then == Then::KeepAlive,
            cx.scratch.dates.now(),
        );
        self.state = State::Writing(Box::new(Responding {
            out: Outgoing::new(front, content, sent),
            status: parts.status,
            request,
            hooks,
            then,
            deadline: None,
        }));
    }

    /// Answers with a short plain-text refusal of the server's own.
    fn refuse<S: Service>(
        &mut self,
        cx: &mut Cx<'_, S>,
        status: StatusCode,
        why: String,
        then: Then,
    ) {
        cx.service.refused(status);
        let body = format!(
            "{} {}: {why}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(body.into());
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Whatever it was doing, the connection now only answers.
        if let State::Writing(_) = self.state {
            self.finish(cx, Outcome::Aborted);
        }
        self.start(cx, response, &Method::GET, Version::HTTP_11, then, None);
    }

    /// Writes what the socket takes.
    fn write<S: Service>(&mut self, cx: &mut Cx<'_, S>, quota: &mut usize) -> Wrote {
        let State::Writing(responding) = &mut self.state else {
            return Wrote::Done;
        };
        loop {
            let pulled = match responding.out.want() {
                Want::Write(slices) => match (&self.stream).write_vectored(&slices) {
                    Ok(0) => return Wrote::Failed,
                    Ok(n) => {
                        responding.out.advance(n);
                        responding.wrote();
                        *quota = quota.saturating_sub(n);
                        if *quota == 0 {
                            return Wrote::Quota;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        responding.blocked(cx.config, &self.stream);
                        return Wrote::Blocked;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Wrote::Failed,
                },
                Want::SendFile { file, offset, len } => {
                    let count = usize::try_from(len).unwrap_or(usize::MAX).min(*quota);
                    let mut at = i64::try_from(offset).unwrap_or(i64::MAX);
                    match nix::sys::sendfile::sendfile(&self.stream, file, Some(&mut at), count) {
                        // The file is shorter than the length announced.
                        Ok(0) => return Wrote::Failed,
                        Ok(n) => {
                            responding.out.advance_file(n as u64);
                            responding.wrote();
                            *quota = quota.saturating_sub(n);
                            if *quota == 0 {
                                return Wrote::Quota;
                            }
                            continue;
                        }
                        Err(nix::errno::Errno::EAGAIN) => {
                            responding.blocked(cx.config, &self.stream);
                            return Wrote::Blocked;
                        }
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return Wrote::Failed,
                    }
                }
                Want::Pull(stream) => {
                    let record = &cx.scratch.record;
                    let pull = AssertUnwindSafe(|| stream.next());
                    let chunk = cx.service.run(&mut responding.request, record, || {
                        panic::catch_unwind(pull)
                    });
                    // A panicking stream ends its response unfinished.
                    chunk.unwrap_or_else(|_| Some(Err(io::Error::other("the stream panicked"))))
                }
                Want::Done => return Wrote::Done,
            };
            if responding.out.pulled(pulled).is_err() {
                return Wrote::Failed;
            }
        }
    }

    /// Ends the response being written: completes its hooks and its
    /// record, and says what follows.
    fn finish<S: Service>(&mut self, cx: &mut Cx<'_, S>, outcome: Outcome) -> Then {
        let State::Writing(responding) = std::mem::replace(&mut self.state, State::Idle) else {
            return Then::Close;
        };
        let Responding {
            out,
            status,
            mut request,
            hooks,
            then,
            ..
        } = *responding;
        let completion = Completion {
            status,
            body_bytes: out.body_bytes(),
            outcome,
            finished: Instant::now(),
        };
        if cx.scratch.out.capacity() == 0 && outcome == Outcome::Written {
            cx.scratch.out = out.into_buffer();
        }
        // Ends with the response, whenever the client let it.
        self.idle_since = completion.finished;
        if request.is_some() {
            let record = &cx.scratch.record;
            if !hooks.is_empty() {
                let complete = AssertUnwindSafe(|| hooks.complete(&completion));
                let _ = cx
                    .service
                    .run(&mut request, record, || panic::catch_unwind(complete));
            }
            cx.service.finished(record);
        }
        if outcome == Outcome::Written {
            then
        } else {
            Then::Close
        }
    }

    /// Shuts the connection for writing and reads until the client closes.
    fn linger(&mut self) {
        let _ = self.stream.shutdown_write();
        self.input.clear();
        self.state = State::Lingering {
            until: Instant::now() + LINGER,
        };
    }

    /// Reads and drops what a lingering client sends.
    fn discard(&mut self, quota: &mut usize) -> After {
        loop {
            self.input.clear();
            match self.input.fill(&self.stream) {
                Fill::Read { n, .. } => {
                    *quota = quota.saturating_sub(n);
                    if *quota == 0 {
                        self.input.clear();
                        return After::Again;
                    }
                }
                Fill::WouldBlock => {
                    self.input.clear();
                    return After::Wait;
                }
                Fill::Eof | Fill::Full | Fill::Failed => return After::Close,
            }
        }
    }
}

// ANCHOR: keep_alive
/// The connection's one keep-alive decision, as a response starts: kept
/// when the request asked for it, the server keeps connections, it is not
/// stopping, and the body's end does not depend on closing.
fn keep_alive<S>(cx: &Cx<'_, S>, asked: Then, announced: BodyFraming) -> Then {
    let keeps = !cx.config.keepalive.is_zero()
        && !cx.stopping.load(Ordering::Acquire)
        && announced != BodyFraming::UntilClose;
    match asked {
        Then::KeepAlive if !keeps => Then::Close,
        asked => asked,
    }
}
// ANCHOR_END: keep_alive

const FULL: &str = "the server holds too much for its clients; try again";

fn store_refusal(error: StoreError) -> Advance {
    let why = match error {
        StoreError::Full => FULL.to_owned(),
        StoreError::Io(error) => {
            crate::error_log::warning(format_args!("cannot spool a request body: {error}"));
            "the request body cannot be kept".to_owned()
        }
    };
    Advance::Refuse(StatusCode::SERVICE_UNAVAILABLE, why, Then::Linger)
}

enum Wrote {
    Done,
    Blocked,
    Quota,
    Failed,
}

impl Responding {
    /// The socket took no more. Kestrel's rule: what is in hand (one chunk,
    /// a body, the rest of a file) must be written within the time the
    /// minimum rate allows for it, the grace period at least, however the
    /// client reads it in between: partial progress does not renew the
    /// allowance. What the kernel still holds is counted in, since the
    /// client must read that first; so a client reading at the rate always
    /// makes its deadline, however large its socket's buffers have grown.
    fn blocked(&mut self, config: &ConnConfig, stream: &Stream) {
        if config.min_response_rate == 0 || self.deadline.is_some() {
            return;
        }
        let ahead = self.out.left() + stream.unsent();
        let at_rate = Duration::from_secs_f64(ahead as f64 / config.min_response_rate as f64);
        self.deadline = Some(Instant::now() + at_rate.max(config.min_rate_grace));
    }

    /// Bytes went: once all that was in hand is written, the next piece
    /// gets an allowance of its own when it blocks.
    fn wrote(&mut self) {
        if !self.out.has_in_hand() {
            self.deadline = None;
        }
    }

    fn overdue(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|at| now >= at)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Idle => "idle",
            State::Head { .. } => "head",
            State::Body(_) => "body",
            State::Writing(_) => "writing",
            State::Lingering { .. } => "lingering",
        };
        f.debug_struct("Connection")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_judged_on_its_average_after_the_grace_period() {
        let start = Instant::now();
        let grace = Duration::from_secs(5);
        let mut rate = Rate::new(start);
        let at = |secs| start + Duration::from_secs(secs);
        assert!(!rate.too_slow(at(4), 240, grace), "within the grace period");
        assert!(rate.too_slow(at(6), 240, grace), "nothing after it");
        rate.add(6 * 240);
        assert!(!rate.too_slow(at(6), 240, grace), "just at the rate");
        assert!(rate.too_slow(at(7), 240, grace), "falling behind");
        assert!(!rate.too_slow(at(100), 0, grace), "zero turns it off");
    }
}
