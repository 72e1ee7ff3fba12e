//! The HTTP side of the stand-in examples (`sentry_receiver`,
//! `otlp_receiver`): a loopback server that takes `POST`s with a
//! `Content-Length`, hands each body to the stand-in, and answers 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Whether to decode without showing (`STAND_IN_QUIET=1`): under load,
/// printing every span would cost more than serving it.
pub(crate) fn quiet() -> bool {
    static QUIET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *QUIET.get_or_init(|| std::env::var("STAND_IN_QUIET").is_ok_and(|v| v == "1"))
}

/// The largest body accepted.
const MAX_BODY: usize = 20 * 1024 * 1024;

/// What the stand-in is, and what it does with each body.
pub(crate) struct StandIn {
    /// Its name in messages (`sentry receiver`).
    pub(crate) name: &'static str,
    /// Whether a request line (`POST /v1/traces HTTP/1.1`) is one it takes.
    pub(crate) accepts: fn(&str) -> bool,
    /// The answer's content type and body.
    pub(crate) answer: (&'static str, &'static [u8]),
    /// Decodes and shows one body.
    pub(crate) receive: fn(&[u8]) -> Result<(), String>,
}

/// Listens on the address given as the program's first argument (else
/// `default_addr`), loopback only, says where with `announce`, and serves
/// until killed, a thread per connection.
pub(crate) fn run(stand_in: &'static StandIn, default_addr: &str, announce: impl Fn(SocketAddr)) {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_addr.to_owned());
    let listener = TcpListener::bind(&addr).expect("the stand-in's address is free");
    let addr = listener.local_addr().unwrap();
    assert!(
        addr.ip().is_loopback(),
        "a stand-in listens on loopback only"
    );
    announce(addr);
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(error) = serve(stand_in, stream) {
                eprintln!("{}: {error}", stand_in.name);
            }
        });
    }
}

/// Answers one client's requests until it hangs up.
fn serve(stand_in: &StandIn, stream: TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    while let Some(length) = read_head(stand_in, &mut reader)? {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        (stand_in.receive)(&body)?;
        let (content_type, answer) = stand_in.answer;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        writer
            .write_all(&[head.as_bytes(), answer].concat())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads a request head: the body's length, or `None` at the end of the
/// connection.
fn read_head(stand_in: &StandIn, reader: &mut impl BufRead) -> Result<Option<usize>, String> {
    let mut request_line = String::new();
    if reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Ok(None);
    }
    if !(stand_in.accepts)(&request_line) {
        return Err(format!("unexpected request {:?}", request_line.trim()));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("content-encoding") {
                return Err(format!(
                    "a compressed body ({}) is not read here",
                    value.trim()
                ));
            }
        }
    }
    match length {
        Some(length) if length <= MAX_BODY => Ok(Some(length)),
        Some(length) => Err(format!("a body of {length} bytes is too large")),
        None => Err("a body without Content-Length".into()),
    }
}
