//! Access-log line formats: JSON, Apache's combined format, and Gunicorn's
//! `access_log_format` atoms.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;
use std::time::SystemTime;

use time::OffsetDateTime;
use turnstile_core::http::HeaderName;
use turnstile_core::http::header::HeaderMap;

use super::AccessRecord;

/// Apache's combined format, which is also Gunicorn's default.
pub const COMBINED: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// How an access-log line is written.
///
/// Parsed from `json`, `combined` or a Gunicorn format string:
///
/// ```
/// use turnstile_middleware::request_log::AccessFormat;
///
/// assert!("json".parse::<AccessFormat>().is_ok());
/// let format: AccessFormat = r#"%(h)s "%(r)s" %(s)s %(D)s %({x-request-id}i)s"#.parse().unwrap();
/// assert_eq!(format.request_headers(), ["x-request-id"]);
/// let error = "%(h)s %(z)s".parse::<AccessFormat>().unwrap_err();
/// assert!(error.to_string().contains("unknown atom `%(z)s`"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessFormat {
    /// One JSON object per line, the event's fields at top level plus
    /// `timestamp`.
    Json,
    /// Literal text and atoms, as Gunicorn's `access_log_format`.
    Pattern(Vec<Piece>),
}

/// A part of a [`AccessFormat::Pattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text printed as it is.
    Literal(String),
    /// One of Gunicorn's one-letter atoms, such as `h` or `D`.
    Atom(char),
    /// `%({name}i)s`: a request header.
    RequestHeader(HeaderName),
    /// `%({name}o)s`: a response header.
    ResponseHeader(HeaderName),
}

/// The one-letter atoms, as Gunicorn documents them.
const ATOMS: &str = "hlutrsmUqHBbfaTMDLp";

/// A format string that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidFormat(String);

impl fmt::Display for InvalidFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidFormat {}

impl FromStr for AccessFormat {
    type Err = InvalidFormat;

    fn from_str(text: &str) -> Result<Self, InvalidFormat> {
        match text.trim() {
            "json" => Ok(Self::Json),
            "combined" | "gunicorn" => parse_pattern(COMBINED),
            pattern => parse_pattern(pattern),
        }
    }
}

fn parse_pattern(pattern: &str) -> Result<AccessFormat, InvalidFormat> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("%%") {
            literal.push('%');
            rest = after;
            continue;
        }
        let Some(open) = rest.strip_prefix("%(") else {
            return Err(InvalidFormat(format!(
                "a lone `%` in the access-log format {pattern:?}: write atoms as `%(h)s`, a percent sign as `%%`"
            )));
        };
        let close = open.find(")s").or_else(|| open.find(")d")).ok_or_else(|| {
            InvalidFormat(format!(
                "an unclosed atom in the access-log format {pattern:?}: expected `%(name)s`"
            ))
        })?;
        let name = &open[..close];
        let piece = atom(name).ok_or_else(|| {
            InvalidFormat(format!(
                "unknown atom `%({name})s` in the access-log format \
                 (known: {}, and {{header}}i, {{header}}o)",
                ATOMS
                    .chars()
                    .map(|c| format!("%({c})s"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
        rest = &open[close + 2..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(AccessFormat::Pattern(pieces))
}

fn atom(name: &str) -> Option<Piece> {
    let mut chars = name.chars();
    if let (Some(letter), None) = (chars.next(), chars.next()) {
        return ATOMS.contains(letter).then_some(Piece::Atom(letter));
    }
    let header = |inner: &str| HeaderName::from_bytes(inner.as_bytes()).ok();
    let inner = name.strip_prefix('{')?;
    if let Some(inner) = inner.strip_suffix("}i") {
        return header(inner).map(Piece::RequestHeader);
    }
    if let Some(inner) = inner.strip_suffix("}o") {
        return header(inner).map(Piece::ResponseHeader);
    }
    None
}

impl AccessFormat {
    /// The request headers the format prints.
    pub fn request_headers(&self) -> Vec<HeaderName> {
        self.headers(|piece| match piece {
            Piece::RequestHeader(name) => Some(name),
            _ => None,
        })
    }

    /// The response headers the format prints.
    pub fn response_headers(&self) -> Vec<HeaderName> {
        self.headers(|piece| match piece {
            Piece::ResponseHeader(name) => Some(name),
            _ => None,
        })
    }

    fn headers(&self, pick: impl Fn(&Piece) -> Option<&HeaderName>) -> Vec<HeaderName> {
        match self {
            Self::Json => Vec::new(),
            Self::Pattern(pieces) => pieces.iter().filter_map(pick).cloned().collect(),
        }
    }

    /// Appends `record`'s line, with its newline, to `out`.
    pub fn write(&self, record: &AccessRecord, out: &mut Vec<u8>) {
        match self {
            Self::Json => write_json(record, out),
            Self::Pattern(pieces) => {
                for piece in pieces {
                    write_piece(piece, record, out);
                }
            }
        }
        out.push(b'\n');
    }
}

// ANCHOR: json
fn write_json(r: &AccessRecord, out: &mut Vec<u8>) {
    let string = |out: &mut Vec<u8>, value: Option<&str>| {
        // Writing JSON to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &value);
    };
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_rfc3339(r.started, out);
    out.extend_from_slice(b"\",\"method\":");
    string(out, Some(r.method.as_str()));
    out.extend_from_slice(b",\"path\":");
    string(out, Some(&r.path));
    out.extend_from_slice(b",\"query\":");
    string(out, r.query.as_deref());
    out.extend_from_slice(b",\"status\":");
    push_number(out, u64::from(r.status.as_u16()));
    out.extend_from_slice(b",\"bytes\":");
    push_number(out, r.bytes);
    out.extend_from_slice(b",\"duration_s\":");
    push_seconds(out, r.duration);
    // Ids and addresses hold no character JSON escapes (`RequestId` admits
    // no quote, backslash or control character), so they are written as
    // they print.
    out.extend_from_slice(b",\"request_id\":\"");
    match r.request_id.as_uuid() {
        Some(uuid) => out.extend_from_slice(
            uuid.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        ),
        None => {
            let _ = write!(out, "{}", r.request_id);
        }
    }
    match &r.trace_id {
        Some(id) => {
            out.extend_from_slice(b"\",\"trace_id\":\"");
            out.extend_from_slice(&id.hex());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"\",\"trace_id\":null"),
    }
    match r.client {
        Some(ip) => {
            out.extend_from_slice(b",\"client\":\"");
            push_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"client\":null"),
    }
    out.extend_from_slice(b",\"user_agent\":");
    let agent = r
        .user_agent
        .as_ref()
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    string(out, agent.as_deref());
    out.extend_from_slice(b",\"pid\":");
    push_number(out, u64::from(r.pid));
    out.push(b'}');
}
// ANCHOR_END: json

/// A whole number, in decimal.
fn push_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration in seconds with six decimals, rounded to the microsecond,
/// as `{:.6}` would print it, without floating point.
use crate::text::{push_ip, push_micros};

fn push_seconds(out: &mut Vec<u8>, duration: std::time::Duration) {
    push_micros(out, duration, 6);
}

fn write_piece(piece: &Piece, r: &AccessRecord, out: &mut Vec<u8>) {
    match piece {
        Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
        Piece::RequestHeader(name) => escaped(out, header(&r.request_headers, name)),
        Piece::ResponseHeader(name) => escaped(out, header(&r.response_headers, name)),
        Piece::Atom(letter) => write_atom(*letter, r, out),
    }
}

fn write_atom(letter: char, r: &AccessRecord, out: &mut Vec<u8>) {
    let micros = r.duration.as_micros();
    let _ = match letter {
        'h' => match r.client {
            Some(ip) => write!(out, "{ip}"),
            None => write!(out, "-"),
        },
        // Ident and Basic-auth user: never known here, and the second
        // would come from a secret header.
        'l' | 'u' => write!(out, "-"),
        't' => {
            write_clf_time(r.started, out);
            Ok(())
        }
        'r' => {
            let _ = write!(out, "{} ", r.method);
            escaped(out, Some(r.path.as_bytes()));
            if let Some(query) = &r.query {
                out.push(b'?');
                escaped(out, Some(query.as_bytes()));
            }
            write!(out, " {:?}", r.version)
        }
        's' => write!(out, "{}", r.status.as_u16()),
        'm' => write!(out, "{}", r.method),
        'U' => {
            escaped(out, Some(r.path.as_bytes()));
            Ok(())
        }
        'q' => {
            escaped(out, r.query.as_deref().map(str::as_bytes));
            Ok(())
        }
        'H' => write!(out, "{:?}", r.version),
        'B' => write!(out, "{}", r.bytes),
        'b' if r.bytes == 0 => write!(out, "-"),
        'b' => write!(out, "{}", r.bytes),
        'f' => {
            escaped(out, r.referer.as_deref().map(str::as_bytes));
            Ok(())
        }
        'a' => {
            escaped(out, r.user_agent.as_ref().map(|v| v.as_bytes()));
            Ok(())
        }
        'T' => write!(out, "{}", r.duration.as_secs()),
        'M' => write!(out, "{}", r.duration.as_millis()),
        'D' => write!(out, "{micros}"),
        'L' => write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000),
        'p' => write!(out, "<{}>", r.pid),
        _ => unreachable!("atoms are checked when the format is parsed"),
    };
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    headers.get(name).map(|value| value.as_bytes())
}

/// Writes `value`, or `-` when there is none, with `"`, `\` and every byte
/// that is not printable ASCII escaped, so no value can end a quoted field
/// or start a forged line.
fn escaped(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.push(b'-');
        return;
    };
    for &byte in value {
        match byte {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', byte]),
            0x20..=0x7e => out.push(byte),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
}

/// `2026-11-21T09:30:00.123Z`.
fn write_rfc3339(at: SystemTime, out: &mut Vec<u8>) {
    // Lines come thousands to the second: each thread formats the date and
    // time once a second and then only the milliseconds.
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (second, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    let (cached, mut text) = SECOND.get();
    if cached != second {
        let t = OffsetDateTime::from(at);
        let mut formatted = Vec::with_capacity(19);
        let _ = write!(
            formatted,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
        );
        match <[u8; 19]>::try_from(formatted.as_slice()) {
            Ok(fixed) => {
                text = fixed;
                SECOND.set((second, text));
            }
            // A year outside 0..=9999 does not fit the cache.
            Err(_) => {
                out.extend_from_slice(&formatted);
                let _ = write!(out, ".{millis:03}Z");
                return;
            }
        }
    }
    out.extend_from_slice(&text);
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `[21/Nov/2026:09:30:00 +0000]`, Apache's `%t`, in UTC.
fn write_clf_time(at: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = OffsetDateTime::from(at);
    let _ = write!(
        out,
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000]",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use turnstile_core::http::{HeaderValue, Method, StatusCode, Version};
    use turnstile_core::{Outcome, RequestId, TraceId, Uuid};

    use super::*;

    fn record() -> AccessRecord {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("x-forwarded-host", HeaderValue::from_static("example.com"));
        let mut response_headers = HeaderMap::new();
        response_headers.insert("content-type", HeaderValue::from_static("text/plain"));
        AccessRecord {
            // 2026-11-21 09:30:00.250 UTC
            started: UNIX_EPOCH + Duration::from_millis(1_795_253_400_250),
            method: Method::GET,
            path: "/search".to_owned(),
            query: Some("q=a%20b&token=[redacted]".to_owned()),
            version: Version::HTTP_11,
            status: StatusCode::OK,
            bytes: 1234,
            duration: Duration::from_micros(1_500_042),
            outcome: Outcome::Written,
            request_id: RequestId::from(Uuid::from_u128(1)),
            trace_id: Some(TraceId([0xab; 16])),
            client: Some("203.0.113.9".parse().unwrap()),
            user_agent: Some(HeaderValue::from_static("curl/8.5 \"quoted\"")),
            referer: Some("https://example.com/?token=[redacted]".to_owned()),
            pid: 4242,
            request_headers,
            response_headers,
        }
    }

    fn line(format: &str, record: &AccessRecord) -> String {
        let mut out = Vec::new();
        format
            .parse::<AccessFormat>()
            .unwrap()
            .write(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_is_apaches_and_gunicorns_default() {
        assert_eq!(
            line("combined", &record()),
            "203.0.113.9 - - [21/Nov/2026:09:30:00 +0000] \"GET /search?q=a%20b&token=[redacted] HTTP/1.1\" \
             200 1234 \"https://example.com/?token=[redacted]\" \"curl/8.5 \\\"quoted\\\"\"\n"
        );
    }

    #[test]
    fn every_atom_prints() {
        let mut empty = record();
        empty.bytes = 0;
        empty.client = None;
        empty.query = None;
        assert_eq!(
            line(
                "%(m)s %(U)s %(q)s %(H)s %(B)s %(b)s %(T)s %(M)s %(D)s %(L)s %(p)s %(h)s 100%%",
                &empty
            ),
            "GET /search - HTTP/1.1 0 - 1 1500 1500042 1.500042 <4242> - 100%\n"
        );
        assert_eq!(
            line(
                "%({X-Forwarded-Host}i)s %({content-type}o)s %({missing}i)s",
                &record()
            ),
            "example.com text/plain -\n"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let text = line("json", &record());
        assert!(text.ends_with("}\n") && text.lines().count() == 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["timestamp"], "2026-11-21T09:30:00.250Z");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["path"], "/search");
        assert_eq!(json["query"], "q=a%20b&token=[redacted]");
        assert_eq!(json["status"], 200);
        assert_eq!(json["bytes"], 1234);
        assert_eq!(json["duration_s"], 1.500042);
        assert_eq!(json["request_id"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(json["trace_id"], "ab".repeat(16));
        assert_eq!(json["client"], "203.0.113.9");
        assert_eq!(json["user_agent"], "curl/8.5 \"quoted\"");
        assert_eq!(json["pid"], 4242);
        let mut bare = record();
        bare.query = None;
        bare.trace_id = None;
        let json: serde_json::Value = serde_json::from_str(&line("json", &bare)).unwrap();
        assert!(json["query"].is_null() && json["trace_id"].is_null());
    }

    #[test]
    fn the_fast_writers_print_what_the_formatting_machinery_prints() {
        for micros in [
            0,
            1,
            999,
            1_000,
            999_999,
            1_000_000,
            1_500_042,
            86_400_000_001,
        ] {
            let duration = Duration::from_micros(micros);
            let mut out = Vec::new();
            push_seconds(&mut out, duration);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{:.6}", duration.as_secs_f64())
            );
        }
        // Rounded to the microsecond, as {:.6} rounds.
        let mut out = Vec::new();
        push_seconds(&mut out, Duration::from_nanos(1_234_567_890));
        assert_eq!(out, b"1.234568");
        for ip in [
            "0.0.0.0",
            "10.20.30.40",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
        // The same second twice (the thread's cached date), then the next.
        for (millis, expected) in [
            (1_795_253_400_250, "2026-11-21T09:30:00.250Z"),
            (1_795_253_400_999, "2026-11-21T09:30:00.999Z"),
            (1_795_253_401_007, "2026-11-21T09:30:01.007Z"),
            (0, "1970-01-01T00:00:00.000Z"),
        ] {
            let mut out = Vec::new();
            write_rfc3339(UNIX_EPOCH + Duration::from_millis(millis), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let mut forged = record();
        forged.user_agent = Some(HeaderValue::from_bytes(b"caf\xc3\xa9 \"x\"").unwrap());
        forged.path = "/a\nb".to_owned();
        let text = line("%(U)s %(a)s", &forged);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text, "/a\\x0ab caf\\xc3\\xa9 \\\"x\\\"\n");
    }

    #[test]
    fn bad_formats_are_refused_with_a_reason() {
        for (format, reason) in [
            ("%(z)s", "unknown atom `%(z)s`"),
            ("%(h", "unclosed atom"),
            ("100% sure", "lone `%`"),
            ("%({a b}i)s", "unknown atom"),
            ("%({PATH}e)s", "unknown atom"),
        ] {
            let error = format.parse::<AccessFormat>().unwrap_err().to_string();
            assert!(error.contains(reason), "{format}: {error}");
        }
    }
}
