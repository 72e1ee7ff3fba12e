//! Responses on the way out: their heads, their body framing, and
//! [`Outgoing`], what is left of one to write.
//!
//! The server owns framing: it decides from the body's shape, the status,
//! the request method and version how the body is delimited, and writes the
//! `Content-Length`, `Transfer-Encoding` and `Connection` fields itself. Any
//! the application set are dropped, with the other hop-by-hop fields, so a
//! response can never describe its body one way and send it another.
//!
//! None of this does I/O: the connection asks an [`Outgoing`] what to write
//! next, writes what the socket takes, and tells it how much went.

use std::fs::File;
use std::io::{self, IoSlice, Seek};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{DATE, SERVER};
use http::{HeaderMap, Method, StatusCode, Version};
use turnstile_core::{ChunkStream, Content, is_connection_header};

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body may follow (1xx, 204, 304, or a response to HEAD).
    None,
    /// `Content-Length` bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 with a stream).
    UntilClose,
}

impl BodyFraming {
    /// Whether any body bytes are sent.
    pub fn sends_body(self) -> bool {
        !matches!(self, BodyFraming::None | BodyFraming::Length(0))
    }
}

/// Chooses the framing for a response with `status` whose body length is
/// `body_len` (`None` for a stream), answering `method` over `version`.
/// For HEAD the head says what GET would have sent, but no body follows.
pub fn body_framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    body_len: Option<u64>,
) -> (BodyFraming, BodyFraming) {
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let announced = match body_len {
        _ if no_body => BodyFraming::None,
        Some(len) => BodyFraming::Length(len),
        None if version == Version::HTTP_11 => BodyFraming::Chunked,
        None => BodyFraming::UntilClose,
    };
    let sent = if method == Method::HEAD {
        BodyFraming::None
    } else {
        announced
    };
    (announced, sent)
}

/// Writes a response head to `out`: status line, the application's fields
/// (hop-by-hop ones dropped), then `Date`, `Server`, framing and
/// `Connection` as needed.
///
/// ```
/// use turnstile_server::http1::encode::{write_head, BodyFraming};
/// use turnstile_server::http1::encode::DateCache;
///
/// let mut out = Vec::new();
/// let mut headers = http::HeaderMap::new();
/// headers.insert("content-type", "text/plain".parse().unwrap());
/// headers.insert("connection", "upgrade".parse().unwrap()); // dropped
/// let mut dates = DateCache::default();
/// write_head(&mut out, http::StatusCode::OK, &headers, BodyFraming::Length(5), false, dates.now());
/// let head = String::from_utf8(out).unwrap();
/// assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: "));
/// assert!(head.ends_with("server: turnstile\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"));
/// ```
pub fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Noted on the way rather than looked up: a lookup hashes the name.
    let (mut has_date, mut has_server) = (false, false);
    for (name, value) in headers {
        if is_connection_header(name) {
            continue;
        }
        has_date |= name == DATE;
        has_server |= name == SERVER;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_date {
        field(out, b"date", date);
    }
    if !has_server {
        field(out, b"server", b"turnstile");
    }
    match framing {
        BodyFraming::Length(len) => {
            let mut digits = itoa::Buffer::new();
            field(out, b"content-length", digits.format(len).as_bytes());
        }
        BodyFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the line that starts a chunk of `len` bytes.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// The CRLF that ends each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and the end of an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The `Date` field value, formatted once per second rather than per
/// response.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    value: String,
}

impl DateCache {
    /// The current date in IMF-fixdate form (RFC 9110 §5.6.7).
    pub fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.value.is_empty() {
            self.second = second;
            self.value = httpdate::fmt_http_date(now);
        }
        self.value.as_bytes()
    }
}

/// What is left of a response to write, in order: the head and framing
/// bytes, then the body bytes in hand, then what follows them (the rest of
/// a file, or further chunks of a stream). It holds at most one chunk of a
/// stream: the next is pulled only when this one is written.
///
/// ```
/// use turnstile_core::Content;
/// use turnstile_server::http1::encode::{BodyFraming, Outgoing, Want};
///
/// let chunks = ["ab", "c"].into_iter().map(|c| Ok(c.into()));
/// let mut out = Outgoing::new(b"HEAD\r\n".to_vec(), Content::Stream(Box::new(chunks)), BodyFraming::Chunked);
/// let mut wire = Vec::new();
/// loop {
///     match out.want() {
///         Want::Write(slices) => {
///             let n: usize = slices.iter().map(|s| s.len()).sum();
///             slices.iter().for_each(|s| wire.extend_from_slice(s));
///             out.advance(n);
///         }
///         Want::Pull(stream) => {
///             let chunk = stream.next();
///             out.pulled(chunk).unwrap();
///         }
///         Want::SendFile { .. } => unreachable!(),
///         Want::Done => break,
///     }
/// }
/// assert_eq!(wire, b"HEAD\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
/// assert_eq!(out.body_bytes(), 3);
/// ```
#[derive(Debug)]
pub struct Outgoing {
    /// Head and framing; `front[written..]` is still to go.
    front: Vec<u8>,
    written: usize,
    /// Body bytes in hand: a body in memory, or the chunk being written.
    bytes: Bytes,
    /// What ends `bytes`: the CRLF after a chunk's data.
    tail: &'static [u8],
    rest: Rest,
    chunked: bool,
    body_bytes: u64,
}

#[derive(Debug)]
enum Rest {
    Done,
    File { file: File, offset: u64, left: u64 },
    Stream(StreamDebug),
}

/// A stream, which has no `Debug` of its own.
struct StreamDebug(ChunkStream);

impl std::fmt::Debug for StreamDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkStream")
    }
}

/// What an [`Outgoing`] wants done next.
pub enum Want<'a> {
    /// Write these, then say how many bytes went with
    /// [`advance`](Outgoing::advance).
    Write([IoSlice<'a>; 3]),
    /// Send `len` bytes of `file` from `offset`, then say how many went with
    /// [`advance_file`](Outgoing::advance_file).
    SendFile {
        /// The open file.
        file: &'a File,
        /// Where to read from.
        offset: u64,
        /// Bytes left to send.
        len: u64,
    },
    /// Pull the stream's next chunk and hand it to
    /// [`pulled`](Outgoing::pulled).
    Pull(&'a mut ChunkStream),
    /// Everything is written.
    Done,
}

impl Outgoing {
    /// A response whose head (and any framing before the body) is `front`,
    /// with `content` sent as `framing` says: nothing for a response that
    /// has no body, or for HEAD.
    pub fn new(front: Vec<u8>, content: Content, framing: BodyFraming) -> Self {
        let mut out = Self {
            front,
            written: 0,
            bytes: Bytes::new(),
            tail: b"",
            rest: Rest::Done,
            chunked: framing == BodyFraming::Chunked,
            body_bytes: 0,
        };
        if !framing.sends_body() {
            return out;
        }
        match content {
            Content::Empty => {}
            Content::Bytes(bytes) => out.bytes = bytes,
            Content::File { file, len } => {
                // From the file's position, as a reader would; a file that
                // cannot say its position is read from its start.
                let offset = (&file).stream_position().unwrap_or(0);
                out.rest = Rest::File {
                    file,
                    offset,
                    left: len,
                };
            }
            Content::Stream(stream) => out.rest = Rest::Stream(StreamDebug(stream)),
        }
        out
    }

    /// What to do next.
    pub fn want(&mut self) -> Want<'_> {
        if self.written < self.front.len() || !self.bytes.is_empty() || !self.tail.is_empty() {
            return Want::Write([
                IoSlice::new(&self.front[self.written..]),
                IoSlice::new(&self.bytes),
                IoSlice::new(self.tail),
            ]);
        }
        match &mut self.rest {
            Rest::Done => Want::Done,
            Rest::File { file, offset, left } => Want::SendFile {
                file,
                offset: *offset,
                len: *left,
            },
            Rest::Stream(stream) => Want::Pull(&mut stream.0),
        }
    }

    /// `n` bytes of what [`Want::Write`] offered were written.
    pub fn advance(&mut self, mut n: usize) {
        let front = (self.front.len() - self.written).min(n);
        self.written += front;
        n -= front;
        if self.written == self.front.len() {
            self.front.clear();
            self.written = 0;
        }
        let body = self.bytes.len().min(n);
        let _ = self.bytes.split_to(body);
        self.body_bytes += body as u64;
        n -= body;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }

    /// `n` bytes of the file were sent.
    pub fn advance_file(&mut self, n: u64) {
        if let Rest::File { offset, left, .. } = &mut self.rest {
            *offset += n;
            *left -= n.min(*left);
            self.body_bytes += n;
            if *left == 0 {
                self.rest = Rest::Done;
            }
        }
    }

    /// What the stream gave when pulled: a chunk (framed, when chunked),
    /// its end (the last chunk), or an error, which ends the response
    /// unfinished.
    ///
    /// # Errors
    ///
    /// The stream's error, passed on.
    pub fn pulled(&mut self, chunk: Option<io::Result<Bytes>>) -> io::Result<()> {
        match chunk {
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(Ok(chunk)) => {
                if self.chunked {
                    chunk_start(&mut self.front, chunk.len());
                    self.tail = CHUNK_END;
                }
                self.bytes = chunk;
            }
            None => {
                if self.chunked {
                    self.front.extend_from_slice(LAST_CHUNK);
                }
                self.rest = Rest::Done;
            }
            Some(Err(error)) => {
                self.rest = Rest::Done;
                return Err(error);
            }
        }
        Ok(())
    }

    /// Body bytes written so far, not counting framing.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Bytes known to be left: what is in hand and the rest of a file (a
    /// stream's later chunks are not known yet).
    pub fn left(&self) -> u64 {
        let in_hand = self.front.len() - self.written + self.bytes.len() + self.tail.len();
        let file = match &self.rest {
            Rest::File { left, .. } => *left,
            Rest::Done | Rest::Stream(_) => 0,
        };
        in_hand as u64 + file
    }

    /// Whether bytes of what is in hand are still to be written: the head
    /// and framing, a body in memory, the chunk pulled last, or the rest of
    /// a file.
    pub fn has_in_hand(&self) -> bool {
        self.written < self.front.len()
            || !self.bytes.is_empty()
            || !self.tail.is_empty()
            || matches!(self.rest, Rest::File { .. })
    }

    /// Takes the head buffer back once the response is written, so the
    /// thread reuses its allocation for the next one.
    pub fn into_buffer(self) -> Vec<u8> {
        let mut front = self.front;
        front.clear();
        front
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        framing: BodyFraming,
        keep_alive: bool,
    ) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        write_head(
            &mut out,
            status,
            &map,
            framing,
            keep_alive,
            b"Sat, 21 Nov 2026 07:00:00 GMT",
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn framing_follows_status_method_and_version() {
        let ok = StatusCode::OK;
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        use BodyFraming as F;
        assert_eq!(
            body_framing(ok, &get, v11, Some(5)),
            (F::Length(5), F::Length(5))
        );
        assert_eq!(body_framing(ok, &get, v11, None), (F::Chunked, F::Chunked));
        let http10 = body_framing(ok, &get, Version::HTTP_10, None);
        assert_eq!(http10, (F::UntilClose, F::UntilClose));
        assert_eq!(
            body_framing(ok, &Method::HEAD, v11, Some(5)),
            (F::Length(5), F::None)
        );
        let no_content = body_framing(StatusCode::NO_CONTENT, &get, v11, Some(5));
        assert_eq!(no_content, (F::None, F::None));
        let not_modified = body_framing(StatusCode::NOT_MODIFIED, &get, v11, None);
        assert_eq!(not_modified, (F::None, F::None));
        assert!(!F::Length(0).sends_body());
    }

    #[test]
    fn server_owns_framing_and_connection_fields() {
        let text = head(
            200,
            &[
                ("Transfer-Encoding", "gzip"),
                ("Content-Length", "999"),
                ("Connection", "keep-alive"),
                ("X-Id", "7"),
            ],
            BodyFraming::Chunked,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-id: 7\r\ndate: Sat, 21 Nov 2026 07:00:00 GMT\r\nserver: turnstile\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn application_may_set_server_and_date() {
        let text = head(
            404,
            &[("Server", "catalogue"), ("Date", "yesterday")],
            BodyFraming::Length(0),
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nserver: catalogue\r\ndate: yesterday\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn unknown_status_codes_get_a_reason() {
        assert!(head(599, &[], BodyFraming::None, true).starts_with("HTTP/1.1 599 Unknown\r\n"));
    }

    #[test]
    fn chunks_are_framed_in_hex() {
        let mut out = Vec::new();
        chunk_start(&mut out, 255);
        out.extend_from_slice(CHUNK_END);
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"ff\r\n\r\n0\r\n\r\n");
    }

    fn written(mut out: Outgoing, max_write: usize) -> (Vec<u8>, u64) {
        let mut wire = Vec::new();
        loop {
            match out.want() {
                Want::Write(slices) => {
                    // As a socket that takes a few bytes at a time.
                    let mut taken = 0;
                    for slice in &slices {
                        let n = slice.len().min(max_write - taken);
                        wire.extend_from_slice(&slice[..n]);
                        taken += n;
                    }
                    out.advance(taken);
                }
                Want::SendFile { file, offset, len } => {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0; (len as usize).min(max_write)];
                    let n = file.read_at(&mut buf, offset).unwrap();
                    wire.extend_from_slice(&buf[..n]);
                    out.advance_file(n as u64);
                }
                Want::Pull(stream) => {
                    let chunk = stream.next();
                    out.pulled(chunk).unwrap();
                }
                Want::Done => return (wire, out.body_bytes()),
            }
        }
    }

    #[test]
    fn every_body_shape_is_written_whole_whatever_the_socket_takes() {
        for max_write in [1, 3, 1000] {
            let bytes = Outgoing::new(
                b"H\r\n".to_vec(),
                Content::Bytes("hello".into()),
                BodyFraming::Length(5),
            );
            assert_eq!(written(bytes, max_write), (b"H\r\nhello".to_vec(), 5));
            let chunks = ["ab", "", "cde"].into_iter().map(|c| Ok(Bytes::from(c)));
            let stream = Outgoing::new(
                b"H\r\n".to_vec(),
                Content::Stream(Box::new(chunks)),
                BodyFraming::Chunked,
            );
            assert_eq!(
                written(stream, max_write),
                (b"H\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n".to_vec(), 5)
            );
            let chunks = ["ab", "c"].into_iter().map(|c| Ok(Bytes::from(c)));
            let until_close = Outgoing::new(
                Vec::new(),
                Content::Stream(Box::new(chunks)),
                BodyFraming::UntilClose,
            );
            assert_eq!(written(until_close, max_write), (b"abc".to_vec(), 3));
        }
    }

    #[test]
    fn a_file_is_sent_from_its_position() {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = tempfile();
        file.write_all(b"0123456789").unwrap();
        file.seek(SeekFrom::Start(2)).unwrap();
        let out = Outgoing::new(
            b"H\r\n".to_vec(),
            Content::File { file, len: 5 },
            BodyFraming::Length(5),
        );
        assert_eq!(out.left(), 8);
        assert_eq!(written(out, 2), (b"H\r\n23456".to_vec(), 5));
    }

    #[test]
    fn head_and_bodiless_statuses_send_no_body() {
        let out = Outgoing::new(
            b"H\r\n".to_vec(),
            Content::Bytes("hello".into()),
            BodyFraming::None,
        );
        assert_eq!(written(out, 100), (b"H\r\n".to_vec(), 0));
    }

    #[test]
    fn a_failing_stream_ends_the_response() {
        let chunks = vec![Ok(Bytes::from("ab")), Err(io::Error::other("gone"))].into_iter();
        let mut out = Outgoing::new(
            Vec::new(),
            Content::Stream(Box::new(chunks)),
            BodyFraming::Chunked,
        );
        let Want::Pull(stream) = out.want() else {
            panic!("a pull first")
        };
        let chunk = stream.next();
        out.pulled(chunk).unwrap();
        let Want::Write(_) = out.want() else {
            panic!("then the chunk")
        };
        out.advance(3 + 2 + 2);
        let Want::Pull(stream) = out.want() else {
            panic!("then a pull")
        };
        let chunk = stream.next();
        assert!(out.pulled(chunk).is_err());
        assert!(matches!(out.want(), Want::Done));
        assert_eq!(out.body_bytes(), 2);
    }

    fn tempfile() -> File {
        let path =
            std::env::temp_dir().join(format!("turnstile-encode-{}", getrandom::u64().unwrap()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let mut cache = DateCache::default();
        let date = String::from_utf8(cache.now().to_vec()).unwrap();
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
        assert!(date.ends_with(" GMT"));
    }
}
