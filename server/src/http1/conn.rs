//! One connection: read a request, call the application, write the response,
//! and again while the connection stays open and its next request is here.
//!
//! The request body is handed to the application as a reader that pulls from
//! this connection's buffer and socket, through the decoder its framing
//! calls for. After the response, whatever the application left unread is
//! drained (up to a bound) so the next request starts at its first byte.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use nix::sys::socket::{MsgFlags, recv};
use turnstile_core::{
    Application, BodyRead, Completion, Content, Environ, Outcome, Received, Request, RequestBody,
    call_catching_panics, internal_server_error,
};

use super::chunked::ChunkedDecoder;
use super::head::{Framing, Limits, Parsed, RequestHead, parse_head};
use super::write::{
    BodyFraming, CHUNK_END, DateCache, LAST_CHUNK, body_framing, chunk_start, write_head,
};
use crate::forwarded::TrustedProxies;
use crate::in_flight::{InFlight, ThreadRecord};
use crate::listen::Stream;

/// Settings for each connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Limits on the request head.
    pub limits: Limits,
    /// The largest request body accepted (`--limit-request-body`); larger
    /// ones get 413. `None` for no limit.
    pub max_body: Option<u64>,
    /// How long a head may take to arrive, from its first byte (or from
    /// the accept, for a connection's first request).
    pub head_timeout: Duration,
    /// How long an idle keep-alive connection is kept (`--keepalive`);
    /// zero closes every connection after one response, as Gunicorn does.
    pub keepalive: Duration,
    /// How long one read of a request body, or one write of a response,
    /// may wait for the client.
    pub io_timeout: Duration,
    /// How much unread request body is drained after a response before the
    /// connection is closed instead.
    pub drain_limit: u64,
    /// The peers whose proxy headers set the client address and scheme
    /// (`--forwarded-allow-ips`).
    pub trusted_proxies: TrustedProxies,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_body: None,
            head_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
            drain_limit: 64 * 1024,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// The bytes read from a connection and the state of the current body.
struct Input {
    stream: Arc<Stream>,
    /// Always initialised; `buf[start..end]` holds the bytes not yet used.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    body: BodyState,
    /// An interim `100 Continue` owed before the body is read.
    continue_pending: bool,
    /// Body bytes read so far, for the body limit.
    body_read: u64,
    max_body: Option<u64>,
    /// Set when the body was broken: the connection cannot be reused.
    broken: bool,
}

enum BodyState {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

impl Input {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from the socket, waiting for them (up to the I/O
    /// timeout); `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        self.make_room();
        let n = (&*self.stream).read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Reads the bytes that have arrived without waiting for more:
    /// `WouldBlock` when there are none, `Ok(0)` at end of stream. Also says
    /// whether the read filled the buffer, so more may be waiting.
    fn fill_now(&mut self) -> io::Result<(usize, bool)> {
        self.make_room();
        let space = self.buf.len() - self.end;
        let n = recv(
            self.stream.as_raw_fd(),
            &mut self.buf[self.end..],
            MsgFlags::MSG_DONTWAIT,
        )?;
        self.end += n;
        Ok((n, n == space))
    }

    fn make_room(&mut self) {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Only a head larger than the buffer gets here, and
                // `parse_head`'s limits bound how large that can be.
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
    }

    fn read_body(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || matches!(self.body, BodyState::Done) {
            return Ok(0);
        }
        if self.continue_pending {
            self.continue_pending = false;
            (&*self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let result = self.read_body_inner(out);
        match &result {
            Ok(n) => {
                self.body_read += *n as u64;
                if self.max_body.is_some_and(|max| self.body_read > max) {
                    self.fail();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request body larger than the limit",
                    ));
                }
            }
            Err(_) => self.fail(),
        }
        result
    }

    fn read_body_inner(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            // A finished body must not read on into the next request.
            match &self.body {
                BodyState::Done => return Ok(0),
                BodyState::Chunked(decoder) if decoder.is_done() => return Ok(0),
                _ => {}
            }
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside the request body",
                ));
            }
            match &mut self.body {
                BodyState::Done => return Ok(0),
                BodyState::Length(remaining) => {
                    let available = &self.buf[self.start..self.end];
                    let n = available
                        .len()
                        .min(out.len())
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    out[..n].copy_from_slice(&available[..n]);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.body = BodyState::Done;
                    }
                    self.consume(n);
                    return Ok(n);
                }
                BodyState::Chunked(decoder) => {
                    let step = decoder
                        .decode(&self.buf[self.start..self.end], out)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let done = decoder.is_done();
                    self.consume(step.consumed);
                    if step.produced > 0 || done {
                        return Ok(step.produced);
                    }
                }
            }
        }
    }

    fn fail(&mut self) {
        self.broken = true;
        self.body = BodyState::Done;
    }
}

fn lock(input: &Mutex<Input>) -> MutexGuard<'_, Input> {
    input
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The application's view of the request body: a reader over the
/// connection's input.
struct BodyReader {
    input: Arc<Mutex<Input>>,
    trailers: Option<HeaderMap>,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut input = lock(&self.input);
        let n = input.read_body(out)?;
        if let (0, None, BodyState::Chunked(decoder)) = (n, &self.trailers, &mut input.body) {
            self.trailers = Some(decoder.take_trailers());
        }
        Ok(n)
    }
}

impl BodyRead for BodyReader {
    fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }
}

/// One client connection between requests: its socket, the bytes read but
/// not yet used, and the facts every request on it shares.
///
/// A request thread takes it when the poller says it is readable, calls
/// [`Connection::serve_ready`], and parks it again or drops it as that says.
pub(crate) struct Connection {
    stream: Arc<Stream>,
    input: Arc<Mutex<Input>>,
    environ: Environ,
    /// When the head being waited for started: the accept for the first
    /// one, its first byte for later ones; `None` between requests.
    head_started: Option<Instant>,
}

/// What a connection waits for after [`Connection::serve_ready`].
#[derive(Debug)]
pub(crate) enum Next {
    /// More input, until `deadline`; then it is closed.
    Read { deadline: Instant },
    /// Nothing: it is finished and can be dropped.
    Close,
}

/// A request thread's own state, reused for every connection it serves:
/// buffers, and the record of what it is serving.
#[derive(Debug)]
pub(crate) struct Scratch {
    dates: DateCache,
    out: Vec<u8>,
    record: Arc<ThreadRecord>,
}

impl Scratch {
    pub(crate) fn new(record: Arc<ThreadRecord>) -> Self {
        Self {
            dates: DateCache::default(),
            out: Vec::new(),
            record,
        }
    }
}

impl Connection {
    /// Sets up a freshly accepted connection. `environ` carries the facts
    /// shared by every request on it (addresses, worker).
    pub(crate) fn new(stream: Stream, environ: Environ, config: &ConnConfig) -> io::Result<Self> {
        // Body reads and response writes block the request thread, so both
        // are bounded: a client that stops reading or sending is dropped.
        stream.set_timeouts(config.io_timeout)?;
        let stream = Arc::new(stream);
        let input = Arc::new(Mutex::new(Input {
            stream: stream.clone(),
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            body: BodyState::Done,
            continue_pending: false,
            body_read: 0,
            max_body: config.max_body,
            broken: false,
        }));
        Ok(Self {
            stream,
            input,
            environ,
            // The first head is timed from the accept.
            head_started: Some(Instant::now()),
        })
    }

    /// The socket, for registering with the poller.
    pub(crate) fn socket(&self) -> &Stream {
        &self.stream
    }

    /// Whether a request head is expected: the connection's first, or one
    /// whose first bytes have arrived.
    pub(crate) fn awaiting_head(&self) -> bool {
        self.head_started.is_some()
    }

    /// Whether it is between requests with input waiting on the socket:
    /// a request that arrived just as its keep-alive time ran out, which the
    /// poller is about to hand to a thread.
    pub(crate) fn next_request_arrived(&self) -> bool {
        self.head_started.is_none() && self.input_waiting()
    }

    /// Whether a stopping server may close it: nothing of a request has
    /// arrived, and it is between requests or has been silent since its
    /// accept for `grace`.
    pub(crate) fn idle_while_stopping(&self, grace: Duration) -> bool {
        let silent = lock(&self.input).buffered().is_empty() && !self.input_waiting();
        silent
            && self
                .head_started
                .is_none_or(|since| since.elapsed() >= grace)
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

    /// How long it may wait for input: until the head timeout once a head
    /// has started, else for the keep-alive time.
    pub(crate) fn deadline(&self, config: &ConnConfig) -> Instant {
        match self.head_started {
            Some(started) => started + config.head_timeout,
            None => Instant::now() + config.keepalive,
        }
    }

    /// Serves every request whose bytes have arrived, reading the socket
    /// without waiting, so it never holds the thread for a client that sends
    /// slowly. Returns [`Next::Read`] once every byte that had arrived is
    /// read: the poller then wakes it for the next ones. When `closing` is
    /// set the response in progress says `Connection: close` and the
    /// connection ends. `peer_closed` says the poller saw the client shut
    /// its side.
    pub(crate) fn serve_ready<A: Application + ?Sized>(
        &mut self,
        app: &A,
        config: &ConnConfig,
        scratch: &mut Scratch,
        closing: &AtomicBool,
        peer_closed: bool,
    ) -> Next {
        // A read shorter than the space offered emptied the socket; what
        // arrives after it wakes the poller again. Not so for the end of
        // the stream: when the peer has closed, read until it shows.
        let mut drained = false;
        loop {
            let mut input = lock(&self.input);
            match parse_head(input.buffered(), &config.limits) {
                Ok(Parsed::Complete { head, len }) => {
                    input.consume(len);
                    drop(input);
                    self.head_started = None;
                    let keep_alive = serve_request(
                        app,
                        *head,
                        &self.input,
                        &self.stream,
                        &self.environ,
                        config,
                        scratch,
                        closing,
                    );
                    if !matches!(keep_alive, Ok(true)) {
                        return Next::Close;
                    }
                }
                Ok(Parsed::Partial) => {
                    if !input.buffered().is_empty() && self.head_started.is_none() {
                        self.head_started = Some(Instant::now());
                    }
                    if drained {
                        return Next::Read {
                            deadline: self.deadline(config),
                        };
                    }
                    match input.fill_now() {
                        Ok((0, _)) => return Next::Close,
                        Ok((_, filled)) => drained = !filled && !peer_closed,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Next::Read {
                                deadline: self.deadline(config),
                            };
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Next::Close,
                    }
                }
                Err(error) => {
                    drop(input);
                    let reason = error.to_string();
                    let _ = refuse(&self.stream, error.status(), &reason, &mut scratch.dates);
                    return Next::Close;
                }
            }
        }
    }
}

/// Writes a short plain-text refusal and marks the connection for closing.
fn refuse(
    mut stream: &Stream,
    status: StatusCode,
    reason: &str,
    dates: &mut DateCache,
) -> io::Result<()> {
    crate::metrics::refused(status);
    let body = format!(
        "{} {}: {reason}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut out = Vec::with_capacity(256);
    write_head(
        &mut out,
        status,
        &headers,
        BodyFraming::Length(body.len() as u64),
        false,
        dates.now(),
    );
    out.extend_from_slice(body.as_bytes());
    stream.write_all(&out)
}

/// Serves one request whose head has been read. Returns whether the
/// connection can carry another.
#[allow(clippy::too_many_arguments)]
fn serve_request<A: Application + ?Sized>(
    app: &A,
    head: RequestHead,
    input: &Arc<Mutex<Input>>,
    stream: &Stream,
    environ: &Environ,
    config: &ConnConfig,
    scratch: &mut Scratch,
    closing: &AtomicBool,
) -> io::Result<bool> {
    let Scratch { dates, out, record } = scratch;
    if let (Framing::Length(len), Some(max)) = (head.framing, config.max_body)
        && len > max
    {
        let reason = "request body larger than the limit";
        refuse(stream, StatusCode::PAYLOAD_TOO_LARGE, reason, dates)?;
        return Ok(false);
    }
    let RequestHead {
        raw,
        method,
        target,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    // ANCHOR: build_request
    let body = {
        let mut state = lock(input);
        state.body_read = 0;
        state.broken = false;
        state.continue_pending = expect_continue && framing != Framing::Empty;
        state.body = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(len) => BodyState::Length(len),
            Framing::Chunked => BodyState::Chunked(Box::default()),
        };
        match framing {
            Framing::Empty => RequestBody::empty(),
            _ => RequestBody::new(BodyReader {
                input: Arc::clone(input),
                trailers: None,
            }),
        }
    };
    let mut environ = environ.clone();
    let request_id = crate::ids::next_request_id();
    environ.request_id = request_id.into();
    // The one reading of the clocks every layer measures from.
    let received = Received::now();
    environ.received = Some(received);
    // Finished when dropped, even by a panic in a streamed body.
    let _serving = record.start(InFlight {
        method: method.clone(),
        target: target.clone(),
        host: headers.get(http::header::HOST).cloned(),
        request_id,
        started: received.instant,
    });
    environ.raw_target = target;
    environ.raw_head = raw;
    if let Err(error) = config.trusted_proxies.apply(&headers, &mut environ) {
        refuse(stream, StatusCode::BAD_REQUEST, &error.to_string(), dates)?;
        return Ok(false);
    }
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(environ);
    // ANCHOR_END: build_request

    // ANCHOR: call_and_write
    let response = call_catching_panics(app, request).unwrap_or_else(|error| {
        // The last resort when no error layer is present; the layer logs
        // and reports with the request's context.
        crate::log::warning(format_args!("the application failed: {error}"));
        internal_server_error()
    });

    let (parts, body) = response.into_parts();
    let (announced, sent) = body_framing(parts.status, &method, version, body.len());
    let (content, hooks) = body.into_parts();
    let mut keep_alive = keep_alive
        && !config.keepalive.is_zero()
        && !closing.load(Ordering::Acquire)
        && announced != BodyFraming::UntilClose
        && reusable(&lock(input), config.drain_limit);
    out.clear();
    write_head(
        out,
        parts.status,
        &parts.headers,
        announced,
        keep_alive,
        dates.now(),
    );
    let (body_bytes, written) = write_body(stream, out, content, sent);
    hooks.complete(&Completion {
        status: parts.status,
        body_bytes,
        outcome: if written.is_ok() {
            Outcome::Written
        } else {
            Outcome::Aborted
        },
        finished: Instant::now(),
    });
    if written.is_err() {
        return Ok(false);
    }
    if keep_alive {
        keep_alive = lock(input).drain(config.drain_limit);
    }
    Ok(keep_alive)
    // ANCHOR_END: call_and_write
}

/// Whether the connection can be reused once the response is sent: the body
/// was not broken, no `100 Continue` is still owed (the client may be
/// holding its body back), and what is left of it is small enough to drain.
fn reusable(input: &Input, drain_limit: u64) -> bool {
    let continue_owed = input.continue_pending && !matches!(input.body, BodyState::Done);
    let too_much_left = matches!(input.body, BodyState::Length(left) if left > drain_limit);
    !input.broken && !continue_owed && !too_much_left
}

impl Input {
    /// Reads and discards the rest of the request body, up to `limit`
    /// bytes. Returns whether the next request can be read.
    fn drain(&mut self, limit: u64) -> bool {
        let mut scratch = [0u8; 8192];
        let mut drained = 0u64;
        while !matches!(self.body, BodyState::Done) {
            if drained > limit {
                return false;
            }
            match self.read_body_inner(&mut scratch) {
                Ok(n) => drained += n as u64,
                Err(_) => return false,
            }
            if let BodyState::Chunked(decoder) = &self.body
                && decoder.is_done()
            {
                self.body = BodyState::Done;
            }
        }
        !self.broken
    }
}

/// Bodies up to this size are copied behind the head so the response goes
/// out in one write.
const COALESCE: usize = 16 * 1024;

/// Writes the head in `out` and the body as `framing` says. Returns the body
/// bytes written and whether the whole response went out.
fn write_body(
    mut stream: &Stream,
    out: &mut Vec<u8>,
    content: Content,
    framing: BodyFraming,
) -> (u64, io::Result<()>) {
    if !framing.sends_body() {
        return (0, stream.write_all(out));
    }
    match content {
        Content::Empty => (0, stream.write_all(out)),
        Content::Bytes(bytes) if bytes.len() <= COALESCE => {
            out.extend_from_slice(&bytes);
            (bytes.len() as u64, stream.write_all(out))
        }
        Content::Bytes(bytes) => {
            let result = write_all_vectored(stream, &mut [IoSlice::new(out), IoSlice::new(&bytes)]);
            (bytes.len() as u64, result)
        }
        Content::File { file, len } => {
            if let Err(e) = stream.write_all(out) {
                return (0, Err(e));
            }
            match stream.copy_from(&mut file.take(len)) {
                Ok(n) if n == len => (n, Ok(())),
                Ok(n) => (
                    n,
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its length",
                    )),
                ),
                Err(e) => (0, Err(e)),
            }
        }
        Content::Stream(chunks) => {
            let chunked = framing == BodyFraming::Chunked;
            let mut sent = 0u64;
            for chunk in chunks {
                let chunk = match chunk {
                    Ok(chunk) if chunk.is_empty() => continue,
                    Ok(chunk) => chunk,
                    // Close without the last chunk: the client sees the
                    // body is incomplete.
                    Err(e) => return (sent, Err(e)),
                };
                if chunked {
                    chunk_start(out, chunk.len());
                }
                let result = if chunked {
                    write_all_vectored(
                        stream,
                        &mut [
                            IoSlice::new(out),
                            IoSlice::new(&chunk),
                            IoSlice::new(CHUNK_END),
                        ],
                    )
                } else {
                    write_all_vectored(stream, &mut [IoSlice::new(out), IoSlice::new(&chunk)])
                };
                out.clear();
                if let Err(e) = result {
                    return (sent, Err(e));
                }
                sent += chunk.len() as u64;
            }
            if chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
            (sent, stream.write_all(out))
        }
    }
}

fn write_all_vectored(mut stream: &Stream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
