//! Response heads and body framing on the way out.
//!
//! The server owns framing: it decides from the body's shape, the status,
//! the request method and version how the body is delimited, and writes the
//! `Content-Length`, `Transfer-Encoding` and `Connection` fields itself. Any
//! the application set are dropped, with the other hop-by-hop fields, so a
//! response can never describe its body one way and send it another.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{DATE, SERVER};
use http::{HeaderMap, Method, StatusCode, Version};
use turnstile_core::is_connection_header;

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
/// use turnstile_server::http1::write::{write_head, BodyFraming};
/// use turnstile_server::http1::write::DateCache;
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

    #[test]
    fn dates_are_imf_fixdate() {
        let mut cache = DateCache::default();
        let date = String::from_utf8(cache.now().to_vec()).unwrap();
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
        assert!(date.ends_with(" GMT"));
    }
}
