//! The request head: request line, header fields, and how the body is framed.
//!
//! [`parse_head`] takes the bytes read so far and either finds a complete
//! head, asks for more ([`Parsed::Partial`]), or refuses the request with a
//! [`HeadError`] that names the status to answer. It enforces the limits as
//! the bytes arrive, so a client cannot make the server buffer more than
//! [`Limits::max_head_len`].

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};

/// Size limits on a request head, with Gunicorn's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, without its CRLF (`--limit-request-line`).
    pub request_line: usize,
    /// Most header fields (`--limit-request-fields`).
    pub header_fields: usize,
    /// Longest header field line, counting its CRLF, as Gunicorn counts
    /// (`--limit-request-field-size`).
    pub header_field_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_line: 4094,
            header_fields: 100,
            header_field_size: 8190,
        }
    }
}

impl Limits {
    /// The most bytes a head within these limits can take, CRLFs included:
    /// the most a connection ever buffers before it has a head.
    pub fn max_head_len(&self) -> usize {
        self.request_line + 2 + self.header_fields * self.header_field_size + 2
    }
}

/// How the request body is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: neither Content-Length nor Transfer-Encoding, or a length of 0.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The head exactly as received, from the request line to the empty
    /// line that ends it; `target` and the field values are views of it.
    pub raw: Bytes,
    /// The method.
    pub method: Method,
    /// The request-target exactly as it was sent.
    pub target: Bytes,
    /// The request-target as a URI (fragment dropped, non-ASCII bytes
    /// percent-encoded).
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, values trimmed of surrounding whitespace.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue` and waits for it.
    pub expect_continue: bool,
}

/// The outcome of [`parse_head`] on the bytes received so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head, taking the first `len` bytes of the input.
    Complete {
        /// The head.
        head: Box<RequestHead>,
        /// How many input bytes it took, leading empty lines included.
        len: usize,
    },
    /// The head is not complete yet, and within the limits so far.
    Partial,
}

/// Why a request head was refused. Each answers with one status, and the
/// connection closes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The request line is longer than [`Limits::request_line`]: 414.
    RequestLineTooLong,
    /// More than [`Limits::header_fields`] fields: 431.
    TooManyFields,
    /// A field line longer than [`Limits::header_field_size`]: 431.
    FieldTooLarge,
    /// The head breaks HTTP/1.1's syntax or framing rules: 400.
    Malformed(&'static str),
    /// A well-formed version of a major other than 1 (`HTTP/2.0`): 505. A
    /// later HTTP/1 minor version is served as HTTP/1.1.
    UnsupportedVersion,
    /// A transfer coding this server does not know: 501.
    UnsupportedTransferCoding,
    /// An `Expect` other than `100-continue`: 417.
    ExpectationFailed,
}

impl HeadError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            HeadError::TooManyFields | HeadError::FieldTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            HeadError::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::RequestLineTooLong => f.write_str("request line too long"),
            HeadError::TooManyFields => f.write_str("too many header fields"),
            HeadError::FieldTooLarge => f.write_str("header field too large"),
            HeadError::Malformed(why) => f.write_str(why),
            HeadError::UnsupportedVersion => f.write_str("HTTP version not supported"),
            HeadError::UnsupportedTransferCoding => f.write_str("unsupported transfer coding"),
            HeadError::ExpectationFailed => f.write_str("unsupported expectation"),
        }
    }
}

impl std::error::Error for HeadError {}

type Result<T> = std::result::Result<T, HeadError>;

/// How far a head that is still arriving has been checked: the lines
/// already complete are not walked again when more bytes come, so a client
/// trickling a long head costs the server each byte once, not once per
/// arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadScan {
    /// Where the lines walked so far end, after any leading empty lines.
    checked: usize,
    /// The empty lines before the request line, in bytes.
    start: usize,
    /// Header fields among the lines walked.
    fields: usize,
}

/// Parses a request head from the start of `input`.
pub fn parse_head(input: &[u8], limits: &Limits) -> Result<Parsed> {
    parse_head_resuming(input, limits, &mut HeadScan::default())
}

/// As [`parse_head`], resuming where `scan` says the last call on the
/// same head (with fewer bytes) left off, and noting how far this one got.
///
/// ```
/// use turnstile_server::http1::{HeadScan, Limits, Parsed, parse_head_resuming};
///
/// let wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: abc\r\n\r\n";
/// let mut scan = HeadScan::default();
/// for end in 1..wire.len() {
///     let parsed = parse_head_resuming(&wire[..end], &Limits::default(), &mut scan).unwrap();
///     assert!(matches!(parsed, Parsed::Partial));
/// }
/// let parsed = parse_head_resuming(wire, &Limits::default(), &mut scan).unwrap();
/// assert!(matches!(parsed, Parsed::Complete { len: 40, .. }));
/// ```
pub fn parse_head_resuming(input: &[u8], limits: &Limits, scan: &mut HeadScan) -> Result<Parsed> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut start = 0;
    while input[start..].starts_with(b"\r\n") {
        start += 2;
        if start > limits.request_line {
            return Err(HeadError::Malformed(
                "too many empty lines before the request",
            ));
        }
    }
    if start != scan.start {
        *scan = HeadScan {
            start,
            ..HeadScan::default()
        };
    }
    let Some(end) = find_head_end(&input[start..], limits, scan)? else {
        return Ok(Parsed::Partial);
    };
    let head = parse_complete_head(&input[start..start + end.len], end.fields)?;
    Ok(Parsed::Complete {
        head: Box::new(head),
        len: start + end.len,
    })
}

struct HeadEnd {
    len: usize,
    fields: usize,
}

// ANCHOR: head_end
/// Walks the lines of the head, refusing bare CR or LF, obs-fold and
/// oversized lines before `httparse` sees them; the lines `scan` says were
/// walked already are skipped, and `scan` notes the ones walked now.
fn find_head_end(input: &[u8], limits: &Limits, scan: &mut HeadScan) -> Result<Option<HeadEnd>> {
    if scan.checked == 0 {
        let Some(line_end) = memchr(b'\n', input) else {
            if input.len() > limits.request_line + 1 {
                return Err(HeadError::RequestLineTooLong);
            }
            return Ok(None);
        };
        let line = strip_cr(&input[..line_end], "bare LF in the request line")?;
        if line.len() > limits.request_line {
            return Err(HeadError::RequestLineTooLong);
        }
        if line.contains(&b'\r') {
            return Err(HeadError::Malformed("bare CR in the request line"));
        }
        scan.checked = line_end + 1;
    }
    let mut cursor = scan.checked;
    let mut fields = scan.fields;
    loop {
        let rest = &input[cursor..];
        let Some(line_end) = memchr(b'\n', rest) else {
            // Even if this is the whole line, its CRLF is still to come.
            if rest.len() >= limits.header_field_size {
                return Err(HeadError::FieldTooLarge);
            }
            return Ok(None);
        };
        let line = strip_cr(&rest[..line_end], "bare LF in a header field")?;
        cursor += line_end + 1;
        if line.is_empty() {
            return Ok(Some(HeadEnd {
                len: cursor,
                fields,
            }));
        }
        if line.contains(&b'\r') {
            return Err(HeadError::Malformed("bare CR in a header field"));
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(HeadError::Malformed("obsolete line folding"));
        }
        if line.len() + 2 > limits.header_field_size {
            return Err(HeadError::FieldTooLarge);
        }
        fields += 1;
        if fields > limits.header_fields {
            return Err(HeadError::TooManyFields);
        }
        scan.checked = cursor;
        scan.fields = fields;
    }
}

// ANCHOR_END: head_end

fn strip_cr<'a>(line: &'a [u8], bare_lf: &'static str) -> Result<&'a [u8]> {
    line.strip_suffix(b"\r")
        .ok_or(HeadError::Malformed(bare_lf))
}

fn parse_complete_head(head: &[u8], fields: usize) -> Result<RequestHead> {
    // One copy of the head; the target and every field value are views of it.
    let raw = match later_minor_version(head) {
        // RFC 9110 §2.5: a later HTTP/1 minor version is answered as the
        // highest this server speaks; httparse knows only 1.0 and 1.1.
        Some(digit) => {
            let mut copy = head.to_vec();
            copy[digit] = b'1';
            Bytes::from(copy)
        }
        None => Bytes::copy_from_slice(head),
    };
    let head = &raw[..];
    // Most heads have a few fields: their slots live on the stack.
    let mut few = [httparse::EMPTY_HEADER; 16];
    let mut many = Vec::new();
    let slots = if fields <= few.len() {
        &mut few[..fields]
    } else {
        many.resize(fields, httparse::EMPTY_HEADER);
        &mut many[..]
    };
    let mut request = httparse::Request::new(slots);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::Version) => return Err(version_error(head)),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid header field name"));
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HeadError::Malformed("invalid header field value"));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(_) => return Err(HeadError::Malformed("invalid request line")),
    }

    let method = parse_method(request.method.unwrap_or_default())?;
    let raw_target = request.path.unwrap_or_default().as_bytes();
    let uri = parse_target(&method, raw_target)?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };

    // Room for what the layers add to a request, such as its request id,
    // so the map does not grow, and copy itself, on the way in.
    let mut headers = HeaderMap::with_capacity(request.headers.len() + 2);
    // Noted on the way, since comparing a name is cheaper than looking it
    // up: fields that must be single, and those the connection reads.
    let (mut hosts, mut content_types, mut connection_fields) = (0, 0, false);
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header field name"))?;
        let value = raw.slice_ref(checked_field_value(field.value)?);
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| HeadError::Malformed("invalid header field value"))?;
        hosts += usize::from(name == HOST);
        content_types += usize::from(name == CONTENT_TYPE);
        connection_fields |=
            [TRANSFER_ENCODING, CONTENT_LENGTH, CONNECTION, EXPECT].contains(&name);
        headers.append(name, value);
    }
    if hosts > 1 || content_types > 1 {
        return Err(HeadError::Malformed(
            "a field that must be single is repeated",
        ));
    }
    // Framing, keep-alive and Expect read only those fields: without any,
    // they decide from an empty map, where a lookup hashes nothing.
    let no_fields = HeaderMap::new();
    let read = if connection_fields {
        &headers
    } else {
        &no_fields
    };
    let (framing, compressed) = framing(version, read)?;
    let keep_alive = !compressed && keep_alive(version, read);
    let expect_continue = expect_continue(version, read)?;
    let target = raw.slice_ref(raw_target);
    Ok(RequestHead {
        raw,
        method,
        target,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// The request line: the head up to its first CR.
fn request_line(head: &[u8]) -> &[u8] {
    head.split(|&b| b == b'\r').next().unwrap_or_default()
}

/// Where the minor digit of an `HTTP/1.2` to `HTTP/1.9` request line is.
fn later_minor_version(head: &[u8]) -> Option<usize> {
    let line = request_line(head);
    match line {
        [
            ..,
            b' ',
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'1',
            b'.',
            b'2'..=b'9',
        ] => Some(line.len() - 1),
        _ => None,
    }
}

/// Tells a well-formed but unsupported version (505) from garbage (400):
/// a request line is three parts with one space between each, so a space
/// inside the method or the target (`GE T /`, `/a b`) is malformed, not a
/// version httparse could not read.
fn version_error(head: &[u8]) -> HeadError {
    let line = request_line(head);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return HeadError::Malformed("invalid request line");
    };
    if method.is_empty() || target.is_empty() {
        return HeadError::Malformed("invalid request line");
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HeadError::UnsupportedVersion
        }
        _ => HeadError::Malformed("invalid HTTP version"),
    }
}

/// Gunicorn's method rule: a token of 3 to 20 characters with no lower-case
/// letter and no `#`, which refuses mangled and lower-cased request lines.
fn parse_method(method: &str) -> Result<Method> {
    let conventional = (3..=20).contains(&method.len())
        && !method.bytes().any(|b| b.is_ascii_lowercase() || b == b'#');
    if !conventional {
        return Err(HeadError::Malformed("invalid method"));
    }
    Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed("invalid method"))
}

/// RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT only)
/// or asterisk-form (OPTIONS only).
fn parse_target(method: &Method, raw: &[u8]) -> Result<Uri> {
    let invalid = HeadError::Malformed("invalid request-target");
    if raw.is_empty() {
        return Err(invalid);
    }
    if raw == b"*" {
        return if method == Method::OPTIONS {
            Ok(Uri::from_static("*"))
        } else {
            Err(HeadError::Malformed("asterisk-form is only for OPTIONS"))
        };
    }
    if method == Method::CONNECT {
        let uri = Uri::try_from(raw).map_err(|_| invalid.clone())?;
        return match (uri.scheme(), uri.authority(), uri.path()) {
            (None, Some(_), "" | "/") => Ok(uri),
            _ => Err(HeadError::Malformed(
                "CONNECT needs an authority-form target",
            )),
        };
    }
    let is_absolute = memmem(raw, b"://").is_some();
    if raw[0] != b'/' && !is_absolute {
        return Err(HeadError::Malformed(
            "request-target must start with / or be an absolute URI",
        ));
    }
    let without_fragment = raw.split(|&b| b == b'#').next().unwrap_or_default();
    let uri = match Uri::try_from(without_fragment) {
        Ok(uri) => uri,
        // `http::Uri` wants ASCII; the raw target keeps the original bytes.
        Err(_) => {
            let encoded: String = percent_encode(without_fragment, URI_UNSAFE).collect();
            Uri::try_from(encoded).map_err(|_| invalid.clone())?
        }
    };
    if is_absolute && raw[0] != b'/' && uri.scheme().is_none() {
        return Err(invalid);
    }
    Ok(uri)
}

/// Bytes `http::Uri` refuses but clients send in request-targets (RFC 3986's
/// "unwise" characters); they are percent-encoded for the `Uri` only.
const URI_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A field value with surrounding SP/HTAB trimmed; CTLs other than HTAB
/// (NUL, DEL, a CR or LF that slipped through) are refused.
pub(crate) fn field_value(value: &[u8]) -> Result<HeaderValue> {
    HeaderValue::from_bytes(checked_field_value(value)?)
        .map_err(|_| HeadError::Malformed("invalid header field value"))
}

/// A field value trimmed of surrounding whitespace, refused if it holds a
/// control character.
fn checked_field_value(value: &[u8]) -> Result<&[u8]> {
    let value = trim_ows(value);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeadError::Malformed(
            "control character in a header field value",
        ));
    }
    Ok(value)
}

/// The header field lines of a head that [`parse_head`] accepted, in wire
/// order, names as sent and values trimmed, repeated fields not merged: what
/// an application needs when the order or case matters (a `HeaderMap`
/// groups fields by name and lower-cases them).
///
/// ```
/// use turnstile_server::http1::head::{Limits, Parsed, field_lines, parse_head};
///
/// let wire = b"GET / HTTP/1.1\r\nX-A: 1\r\nHost: h\r\nx-a:  2 \r\n\r\n";
/// let Ok(Parsed::Complete { head, .. }) = parse_head(wire, &Limits::default()) else {
///     panic!("a valid head");
/// };
/// let lines: Vec<_> = field_lines(&head.raw).collect();
/// assert_eq!(lines, [(&b"X-A"[..], &b"1"[..]), (b"Host", b"h"), (b"x-a", b"2")]);
/// ```
pub fn field_lines(raw_head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw_head
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], trim_ows(&line[colon + 1..])))
        })
}

// ANCHOR: framing
/// RFC 9112 §6.1–6.3 with Gunicorn's smuggling defences. Returns the framing
/// and whether a compression coding was named (the body is then passed on
/// still compressed, and the connection closes after the request).
fn framing(version: Version, headers: &HeaderMap) -> Result<(Framing, bool)> {
    let codings = headers.get_all(TRANSFER_ENCODING);
    if codings.iter().next().is_some() {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let mut chunked = false;
        let mut compressed = false;
        for value in codings {
            for coding in value.as_bytes().split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if chunked {
                    return Err(HeadError::Malformed(
                        "chunked is not the final transfer coding",
                    ));
                }
                if coding.is_empty() {
                    return Err(HeadError::Malformed("empty transfer coding"));
                }
                let is = |name: &str| coding.eq_ignore_ascii_case(name.as_bytes());
                if is("chunked") {
                    chunked = true;
                } else if is("gzip") || is("deflate") || is("compress") {
                    compressed = true;
                } else if !is("identity") {
                    return Err(HeadError::UnsupportedTransferCoding);
                }
            }
        }
        if !chunked {
            return Err(HeadError::Malformed(
                "chunked is not the final transfer coding",
            ));
        }
        return Ok((Framing::Chunked, compressed));
    }

    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let Some(length) = lengths.next() else {
        return Ok((Framing::Empty, false));
    };
    if lengths.next().is_some() {
        return Err(HeadError::Malformed("more than one Content-Length"));
    }
    let digits = length.as_bytes();
    // At most 19 digits, so the value always fits in a u64.
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    let length = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let framing = if length == 0 {
        Framing::Empty
    } else {
        Framing::Length(length)
    };
    Ok((framing, false))
}
// ANCHOR_END: framing

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes
/// unless told `keep-alive`.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut keep = version == Version::HTTP_11;
    for value in headers.get_all(CONNECTION) {
        for option in value.as_bytes().split(|&b| b == b',').map(trim_ows) {
            if option.eq_ignore_ascii_case(b"close") {
                return false;
            }
            if option.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            }
        }
    }
    keep
}

/// `Expect: 100-continue` on HTTP/1.1 asks for an interim response; any
/// other expectation is refused (RFC 9110 §10.1.1). HTTP/1.0 has none.
fn expect_continue(version: Version, headers: &HeaderMap) -> Result<bool> {
    let Some(expect) = headers.get(EXPECT) else {
        return Ok(false);
    };
    if version == Version::HTTP_10 {
        return Ok(false);
    }
    if trim_ows(expect.as_bytes()).eq_ignore_ascii_case(b"100-continue") {
        Ok(true)
    } else {
        Err(HeadError::ExpectationFailed)
    }
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn memmem(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<RequestHead> {
        match parse_head(input, &Limits::default())? {
            Parsed::Complete { head, len } => {
                assert_eq!(len, input.len(), "the whole input is one head");
                Ok(*head)
            }
            Parsed::Partial => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn status(input: &[u8]) -> u16 {
        parse(input).unwrap_err().status().as_u16()
    }

    #[test]
    fn a_simple_get() {
        let head = parse(b"GET /books?page=2 HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/books");
        assert_eq!(head.uri.query(), Some("page=2"));
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn heads_with_few_fields_and_many_keep_every_field() {
        for count in [0, 1, 16, 17, 60] {
            let mut input = b"GET / HTTP/1.1\r\n".to_vec();
            for n in 0..count {
                input.extend_from_slice(format!("X-Field-{n}: value {n}\r\n").as_bytes());
            }
            input.extend_from_slice(b"\r\n");
            let head = parse(&input).unwrap();
            assert_eq!(head.headers.len(), count, "{count} fields");
            for n in 0..count {
                assert_eq!(head.headers[format!("x-field-{n}")], format!("value {n}"));
            }
        }
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let limits = Limits::default();
        for input in [
            &b""[..],
            b"GET / HT",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\n\r",
        ] {
            assert!(
                matches!(parse_head(input, &limits), Ok(Parsed::Partial)),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_later_http_1_minor_version_is_served_as_1_1() {
        for version in ["1.2", "1.9"] {
            let input = format!("GET /x HTTP/{version}\r\nHost: a\r\n\r\n");
            let head = parse(input.as_bytes()).unwrap();
            assert_eq!(head.version, Version::HTTP_11, "HTTP/{version}");
            assert!(head.keep_alive, "HTTP/{version} keeps the connection");
            assert_eq!(head.uri.path(), "/x");
            assert!(head.raw.starts_with(b"GET /x HTTP/1.1\r\n"));
        }
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let Parsed::Complete { head, len } = parse_head(input, &Limits::default()).unwrap() else {
            panic!("complete head expected");
        };
        assert_eq!((head.method, len), (Method::GET, input.len()));
    }

    #[test]
    fn smuggling_defences() {
        let cases: &[(&[u8], u16)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", 400),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/3.1\r\n\r\n", 505),
            (b"GE T / HTTP/1.1\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.10\r\n\r\n", 400),
            (b"GET / HTTP/1.1x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
            (b"get / HTTP/1.1\r\n\r\n", 400),
            (b"GET foo HTTP/1.1\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\n\r\n", 400),
        ];
        for (input, expected) in cases {
            assert_eq!(
                status(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn framing_decisions() {
        let length = parse(b"POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n").unwrap();
        assert_eq!(length.framing, Framing::Length(42));
        let chunked =
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: identity, Chunked\r\n\r\n").unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
        let gzip = parse(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(gzip.framing, Framing::Chunked);
        assert!(
            !gzip.keep_alive,
            "a compressed body closes the connection after"
        );
    }

    #[test]
    fn connection_and_expect() {
        assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let expect =
            parse(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(expect.expect_continue);
        assert!(
            !parse(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn limits_are_enforced_before_the_head_is_complete() {
        let limits = Limits {
            request_line: 20,
            header_fields: 1,
            header_field_size: 8,
        };
        assert_eq!(
            parse_head(b"GET /0123456789ABCDEFGHIJ", &limits).unwrap_err(),
            HeadError::RequestLineTooLong
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nX: 12345678", &limits).unwrap_err(),
            HeadError::FieldTooLarge
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n", &limits).unwrap_err(),
            HeadError::TooManyFields
        );
        assert!(limits.max_head_len() >= b"GET / HTTP/1.1\r\nA: 1\r\n\r\n".len());
    }

    #[test]
    fn targets() {
        let absolute = parse(b"GET http://example.com/a?b=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(absolute.uri.host(), Some("example.com"));
        let connect = parse(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(connect.uri.port_u16(), Some(443));
        let options = parse(b"OPTIONS * HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(options.target, "*");
        let quoted = parse(b"GET /with_\"quotes\"?q=\"x\" HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(quoted.uri.path(), "/with_%22quotes%22");
        assert_eq!(&quoted.target[..], &b"/with_\"quotes\"?q=\"x\""[..]);
        let fragment = parse(b"GET /a#frag HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            (fragment.uri.path(), &fragment.target[..]),
            ("/a", &b"/a#frag"[..])
        );
        let utf8 = parse("GET /caf\u{e9} HTTP/1.1\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(utf8.uri.path(), "/caf\u{e9}");
    }
}
