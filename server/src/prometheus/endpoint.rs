//! The arbiter's metrics endpoint (`--metrics-bind`): a small HTTP/1.1
//! server inside the arbiter's loop, with no thread of its own.
//!
//! Its sockets are non-blocking and waited on with the arbiter's signals and
//! pipes. A scrape goes through three states: its request is read; it waits
//! while the workers are asked for their pages (at most [`COLLECT_WAIT`],
//! after which a worker's previous page stands in); its answer is written.
//! A client that is slow at either end only holds its own socket, for at
//! most [`SCRAPE_DEADLINE`].

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use nix::poll::{PollFd, PollFlags};

use crate::http1::encode::{BodyFraming, DateCache, write_head};
use crate::http1::{Limits, Parsed, parse_head};
use crate::prometheus::exposition::Exposition;

/// How long a scrape waits for the workers' pages.
pub(crate) const COLLECT_WAIT: Duration = Duration::from_secs(1);
/// How long a scrape's connection may last, from accept to the last byte.
pub(crate) const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait in the listen backlog.
const MAX_SCRAPES: usize = 16;
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// The path served.
pub(crate) const PATH: &str = "/metrics";

/// The listener and the scrapes in progress.
pub(crate) struct Endpoint {
    listener: TcpListener,
    scrapes: Vec<Scrape>,
    /// Since when the workers have been asked for their pages, and the
    /// number the question carried.
    pub(crate) collecting: Option<(Instant, u64)>,
    next_question: u64,
    /// What the workers that exited counted, summed.
    pub(crate) retired: Exposition,
    dates: DateCache,
}

struct Scrape {
    stream: TcpStream,
    state: State,
    deadline: Instant,
}

enum State {
    Reading(Vec<u8>),
    /// Waiting for the page; `head_only` for a `HEAD` request.
    Waiting {
        head_only: bool,
    },
    Writing {
        out: Vec<u8>,
        written: usize,
    },
}

impl Endpoint {
    /// Listens on `addr` (`HOST:PORT`).
    pub(crate) fn bind(addr: &str) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr)?)
    }

    /// Serves on a listener bound elsewhere (by the arbiter before an
    /// upgrade).
    pub(crate) fn from_listener(listener: TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            scrapes: Vec::new(),
            collecting: None,
            next_question: 1,
            retired: Exposition::default(),
            dates: DateCache::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Its listening socket, to hand to an upgraded arbiter.
    pub(crate) fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// The sockets to wait on, and for what.
    pub(crate) fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        for scrape in &self.scrapes {
            let flags = match scrape.state {
                State::Reading(_) => PollFlags::POLLIN,
                State::Writing { .. } => PollFlags::POLLOUT,
                State::Waiting { .. } => continue,
            };
            fds.push(PollFd::new(scrape.stream.as_fd(), flags));
        }
        fds
    }

    /// When the loop must next look, whatever arrives.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let collecting = self.collecting.map(|(since, _)| since + COLLECT_WAIT);
        self.scrapes
            .iter()
            .map(|scrape| scrape.deadline)
            .chain(collecting)
            .min()
    }

    /// Accepts, reads and writes what can be without waiting. Returns the
    /// number of a new question for the workers when a scrape now waits
    /// for their pages and none is being asked.
    pub(crate) fn progress(&mut self) -> Option<u64> {
        self.accept();
        let now = Instant::now();
        let dates = &mut self.dates;
        self.scrapes
            .retain_mut(|scrape| scrape.progress(now, dates));
        let waiting = self
            .scrapes
            .iter()
            .any(|scrape| matches!(scrape.state, State::Waiting { .. }));
        if waiting && self.collecting.is_none() {
            let question = self.next_question;
            self.next_question += 1;
            self.collecting = Some((now, question));
            return Some(question);
        }
        None
    }

    /// Whether the collection has waited long enough.
    pub(crate) fn collection_overdue(&self) -> bool {
        self.collecting
            .is_some_and(|(since, _)| since.elapsed() >= COLLECT_WAIT)
    }

    /// Answers every waiting scrape with `page`, and ends the collection.
    pub(crate) fn answer(&mut self, page: &str) {
        self.collecting = None;
        let dates = &mut self.dates;
        for scrape in &mut self.scrapes {
            if let State::Waiting { head_only } = scrape.state {
                scrape.respond(StatusCode::OK, page, head_only, dates);
            }
        }
        let now = Instant::now();
        self.scrapes
            .retain_mut(|scrape| scrape.progress(now, dates));
    }

    fn accept(&mut self) {
        while self.scrapes.len() < MAX_SCRAPES {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.scrapes.push(Scrape {
                        stream,
                        state: State::Reading(Vec::new()),
                        deadline: Instant::now() + SCRAPE_DEADLINE,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of descriptors: try at the next round.
                Err(_) => break,
            }
        }
    }
}

impl Scrape {
    /// Moves the scrape on; false once it is finished or failed.
    fn progress(&mut self, now: Instant, dates: &mut DateCache) -> bool {
        if now >= self.deadline {
            return false;
        }
        match &mut self.state {
            State::Reading(head) => {
                let mut buf = [0u8; 2048];
                loop {
                    match self.stream.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return false,
                    }
                    if head.len() > MAX_HEAD {
                        break;
                    }
                }
                match route(head) {
                    Route::Incomplete => true,
                    Route::Page { head_only } => {
                        self.state = State::Waiting { head_only };
                        true
                    }
                    Route::Refuse(status) => {
                        let body = format!("{} {}\n", status.as_str(), reason(status));
                        self.respond(status, &body, false, dates);
                        self.progress(now, dates)
                    }
                }
            }
            State::Waiting { .. } => true,
            State::Writing { out, written } => {
                while *written < out.len() {
                    match self.stream.write(&out[*written..]) {
                        Ok(0) => return false,
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(_) => return false,
                    }
                }
                false
            }
        }
    }

    fn respond(&mut self, status: StatusCode, body: &str, head_only: bool, dates: &mut DateCache) {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if status == StatusCode::OK {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            }),
        );
        let mut out = Vec::with_capacity(256 + body.len());
        let framing = BodyFraming::Length(body.len() as u64);
        write_head(&mut out, status, &headers, framing, false, dates.now());
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        self.state = State::Writing { out, written: 0 };
    }
}

enum Route {
    Incomplete,
    Page { head_only: bool },
    Refuse(StatusCode),
}

/// What a request head asks for, read by the engine's own parser, so the
/// endpoint refuses what the main port refuses.
fn route(head: &[u8]) -> Route {
    let parsed = match parse_head(head, &Limits::default()) {
        Ok(Parsed::Partial) if head.len() <= MAX_HEAD => return Route::Incomplete,
        Ok(Parsed::Partial) => return Route::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Ok(Parsed::Complete { head, .. }) => head,
        Err(error) => return Route::Refuse(error.status()),
    };
    if parsed.uri.path() != PATH {
        return Route::Refuse(StatusCode::NOT_FOUND);
    }
    match parsed.method {
        Method::GET => Route::Page { head_only: false },
        Method::HEAD => Route::Page { head_only: true },
        _ => Route::Refuse(StatusCode::METHOD_NOT_ALLOWED),
    }
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_the_path_wait_for_the_page() {
        let cases: [(&[u8], &str); 7] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "page"),
            (b"GET /metrics?name[]=up HTTP/1.1\r\n\r\n", "page"),
            (b"HEAD /metrics HTTP/1.0\r\n\r\n", "head"),
            (b"GET /metrics HTTP/1.1\r\nHost:", "incomplete"),
            (b"GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (b"\x00\x01 nonsense\r\n\r\n", "400 Bad Request"),
        ];
        for (head, expected) in cases {
            let got = match route(head) {
                Route::Incomplete => "incomplete",
                Route::Page { head_only: false } => "page",
                Route::Page { head_only: true } => "head",
                Route::Refuse(status) => &format!("{} {}", status.as_str(), reason(status)),
            };
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(head));
        }
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(
            route(long.as_bytes()),
            Route::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
    }
}
