//! Runs every case of Gunicorn's request corpus (`fixtures/gunicorn-requests`,
//! see its README) through the head parser and the body decoders, fed whole,
//! one byte at a time, and in seeded random splits. Valid cases must parse to
//! the expected requests; invalid cases must be refused.
//!
//! Where Turnstile deliberately answers differently from Gunicorn, the case
//! is listed in `DIFFERENCES` with the reason; the book's HTTP chapter
//! explains each. The list is checked both ways: a listed case that starts
//! behaving like Gunicorn fails the test, so the list cannot go stale.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use turnstile_server::http1::{
    ChunkError, ChunkedDecoder, Framing, HeadError, HeadScan, Limits, Parsed, parse_head_resuming,
};

/// Cases where Turnstile differs from Gunicorn on purpose, and why.
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "valid/009",
        "`Transfer-Encoding: identity` with Content-Length is refused (400): any Transfer-Encoding beside Content-Length is ambiguous framing",
    ),
    (
        "valid/040",
        "header names with `_` are kept: a HeaderMap keeps `Transfer_Encoding` apart from `Transfer-Encoding`, so WSGI's name mangling hazard does not arise",
    ),
    (
        "valid/099",
        "a body shorter than its Content-Length at end of input is the client's fault, answered 400 before the application runs, not a silently short body",
    ),
    (
        "invalid/006",
        "an over-long request line answers 414 URI Too Long, not 400",
    ),
    (
        "invalid/version_02",
        "a well-formed but unsupported version (HTTP/2.0) answers 505, not 400",
    ),
];

/// Gunicorn settings the corpus uses that Turnstile does not have.
const UNSUPPORTED_SETTINGS: &[(&str, &str)] = &[
    ("proxy_protocol", "the PROXY protocol is not supported"),
    (
        "permit_obsolete_folding",
        "obs-fold is always refused (RFC 9112 §5.2 allows that)",
    ),
    (
        "strip_header_spaces",
        "whitespace before a colon is always refused (RFC 9112 §5.1)",
    ),
    (
        "permit_unconventional_http_method",
        "methods follow one rule, Gunicorn's default",
    ),
    ("casefold_http_method", "methods are never case-folded"),
    (
        "header_map",
        "names with `_` are always kept; there is no WSGI environ to confuse them in",
    ),
    (
        "forwarded_allow_ips",
        "proxy headers are the server's concern, not the parser's: see forwarded.rs and \
         the binary's proxy test",
    ),
];

#[derive(Debug, PartialEq)]
struct Request {
    method: String,
    target: String,
    version: (u64, u64),
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    trailers: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, PartialEq)]
enum Failure {
    /// The head was refused with this status.
    Head(u16),
    /// The connection ended inside a head.
    IncompleteHead,
    /// The body was broken or cut short: the connection closes.
    Body(String),
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gunicorn-requests")
}

/// ISO-8859-1: one character per byte, as Gunicorn's strings are.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn fields(map: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in map {
        fields
            .entry(name.as_str().to_ascii_uppercase())
            .or_default()
            .push(latin1(value.as_bytes()));
    }
    fields
}

fn expected_fields(list: &Value) -> BTreeMap<String, Vec<String>> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in list.as_array().unwrap() {
        let name = pair[0].as_str().unwrap().to_owned();
        fields
            .entry(name)
            .or_default()
            .push(pair[1].as_str().unwrap().to_owned());
    }
    fields
}

fn expected_request(json: &Value) -> Request {
    let body = json["body"].as_str().unwrap();
    assert_eq!(
        json["body_encoding"], "utf-8",
        "base64 bodies are not in this revision"
    );
    Request {
        method: json["method"].as_str().unwrap().to_owned(),
        target: json["uri"].as_str().unwrap().to_owned(),
        version: (
            json["version"][0].as_u64().unwrap(),
            json["version"][1].as_u64().unwrap(),
        ),
        headers: expected_fields(&json["headers"]),
        body: body.as_bytes().to_vec(),
        trailers: expected_fields(&json["trailers"]),
    }
}

/// Reads requests from `wire` delivered in `pieces`, the way a connection
/// would: parse a head, read its body, and go on while the connection stays
/// open. Stops at the first failure.
fn read_connection(pieces: &[&[u8]], limits: &Limits) -> (Vec<Request>, Option<Failure>) {
    let mut pieces = pieces.iter();
    let mut buffer: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    let mut more = |buffer: &mut Vec<u8>| match pieces.next() {
        Some(piece) => {
            buffer.extend_from_slice(piece);
            true
        }
        None => false,
    };
    loop {
        // As the connection does: each piece resumes the scan of the head.
        let mut scan = HeadScan::default();
        let head = loop {
            match parse_head_resuming(&buffer, limits, &mut scan) {
                Ok(Parsed::Partial) if more(&mut buffer) => {}
                parsed => break parsed,
            }
        };
        let head = match head {
            Err(error) => return (requests, Some(Failure::Head(status(&error)))),
            Ok(Parsed::Partial) => {
                let failure = (!buffer.iter().all(|&b| b == b'\r' || b == b'\n'))
                    .then_some(Failure::IncompleteHead);
                return (requests, failure);
            }
            Ok(Parsed::Complete { head, len }) => {
                buffer.drain(..len);
                head
            }
        };
        let mut body = Vec::new();
        let mut trailers = http::HeaderMap::new();
        match head.framing {
            Framing::Empty => {}
            Framing::Length(length) => {
                let length = usize::try_from(length).unwrap();
                while buffer.len() < length && more(&mut buffer) {}
                if buffer.len() < length {
                    return (requests, Some(Failure::Body("body cut short".into())));
                }
                body.extend(buffer.drain(..length));
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                let mut out = [0u8; 7];
                while !decoder.is_done() {
                    match decoder.decode(&buffer, &mut out) {
                        Err(error) => return (requests, Some(chunk_failure(&error))),
                        Ok(step) => {
                            buffer.drain(..step.consumed);
                            body.extend_from_slice(&out[..step.produced]);
                            if step.consumed == 0 && step.produced == 0 && !more(&mut buffer) {
                                let error = ChunkError::MissingTerminator;
                                return (requests, Some(chunk_failure(&error)));
                            }
                        }
                    }
                }
                trailers = decoder.take_trailers();
            }
        }
        let version = if head.version == http::Version::HTTP_10 {
            (1, 0)
        } else {
            (1, 1)
        };
        requests.push(Request {
            method: head.method.as_str().to_owned(),
            target: latin1(&head.target),
            version,
            headers: fields(&head.headers),
            body,
            trailers: fields(&trailers),
        });
        if !head.keep_alive {
            return (requests, None);
        }
    }
}

fn status(error: &HeadError) -> u16 {
    error.status().as_u16()
}

fn chunk_failure(error: &ChunkError) -> Failure {
    Failure::Body(error.to_string())
}

/// Splits `wire` whole, byte by byte, and at seeded random points.
fn splits(wire: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![wire], wire.chunks(1).collect()];
    for seed in 1..=8u64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut pieces = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = 1 + (state % 17) as usize;
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            pieces.push(piece);
            rest = tail;
        }
        all.push(pieces);
    }
    all
}

/// The limits a case's config asks for, or why the case cannot run.
fn limits_for(config: &Value) -> Result<Limits, &'static str> {
    let mut limits = Limits::default();
    let defaults = Limits::default();
    for (setting, value) in config.as_object().unwrap() {
        let number = || usize::try_from(value.as_u64().unwrap()).unwrap();
        match setting.as_str() {
            "limit_request_line" => limits.request_line = number(),
            "limit_request_fields" => limits.header_fields = number(),
            // As in Gunicorn, 0 means the default.
            "limit_request_field_size" if number() == 0 => {
                limits.header_field_size = defaults.header_field_size;
            }
            "limit_request_field_size" => limits.header_field_size = number(),
            other => {
                return Err(UNSUPPORTED_SETTINGS
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map(|(_, why)| *why)
                    .unwrap_or_else(|| panic!("unknown Gunicorn setting {other}")));
            }
        }
    }
    Ok(limits)
}

struct Outcome {
    case: String,
    problem: Option<String>,
}

fn run_case(kind: &str, name: &str) -> Result<Outcome, &'static str> {
    let dir = fixtures().join(kind);
    let wire = fs::read(dir.join(format!("{name}.http"))).unwrap();
    let json: Value =
        serde_json::from_str(&fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let limits = limits_for(&json["config"])?;
    let case = format!("{kind}/{name}");
    let mut problem = None;
    for pieces in splits(&wire) {
        let (requests, failure) = read_connection(&pieces, &limits);
        let found = if kind == "valid" {
            let expected: Vec<Request> = json["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(expected_request)
                .collect();
            (failure.is_some() || requests != expected)
                .then(|| format!("expected {expected:#?}\ngot {requests:#?}, {failure:?}"))
        } else {
            check_invalid(&json, failure)
        };
        if let Some(found) = found {
            problem = Some(format!("split into {} pieces: {found}", pieces.len()));
            break;
        }
    }
    Ok(Outcome { case, problem })
}

/// An invalid case must fail the way Gunicorn's does: a refused head with
/// the same status, or a broken body (Gunicorn closes without answering).
fn check_invalid(json: &Value, failure: Option<Failure>) -> Option<String> {
    let expected_status = json["expected_status"].as_u64();
    let ok = match (&failure, expected_status, json["phase"].as_str().unwrap()) {
        (Some(Failure::Head(status)), Some(expected), "head") => u64::from(*status) == expected,
        (Some(Failure::IncompleteHead), None, "head") => true,
        // A trailer Gunicorn refuses with 400 arrives while the application
        // reads the body: too late for a status, so the connection closes.
        (Some(Failure::Body(_)), _, "body" | "body-trailers") => true,
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "expected {} ({:?}, {}), got {failure:?}",
            json["error"], expected_status, json["phase"]
        )
    })
}

#[test]
fn gunicorn_request_corpus() {
    let index: Value =
        serde_json::from_str(&fs::read_to_string(fixtures().join("index.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut differing = Vec::new();
    let mut skipped = Vec::new();
    let mut ran = 0;
    for kind in ["valid", "invalid"] {
        for entry in index[kind].as_array().unwrap() {
            let name = entry["case"].as_str().unwrap();
            match run_case(kind, name) {
                Err(why) => skipped.push(format!("{kind}/{name}: {why}")),
                Ok(outcome) => {
                    ran += 1;
                    let listed = DIFFERENCES.iter().any(|(case, _)| *case == outcome.case);
                    match (outcome.problem, listed) {
                        (None, false) => {}
                        (Some(_), true) => differing.push(outcome.case),
                        (None, true) => failures.push(format!(
                            "{} is listed as a difference but now behaves like Gunicorn",
                            outcome.case
                        )),
                        (Some(problem), false) => {
                            failures.push(format!("{}: {problem}", outcome.case))
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{ran} cases run, {} differ on purpose, {} skipped:\n  {}",
        differing.len(),
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(differing.len(), DIFFERENCES.len());
    assert_eq!(ran + skipped.len(), 137, "the corpus has 137 cases");
}
