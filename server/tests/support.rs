//! Helpers shared by the test modules: a real server on a loopback port and
//! a few ways to read its answers, and the small applications most tests serve.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use turnstile_core::{Application, Request, Response};
use turnstile_server::http1::conn::ConnConfig;
use turnstile_server::{Server, ServerHandle};

/// Serves `app` on a loopback port with four request threads, until
/// `shutdown` or the end of the test process.
pub(crate) fn spawn_server(app: impl Application, config: ConnConfig) -> ServerHandle {
    spawn_server_with_threads(app, config, 4)
}

/// As [`spawn_server`], with `threads` request threads.
pub(crate) fn spawn_server_with_threads(
    app: impl Application,
    config: ConnConfig,
    threads: usize,
) -> ServerHandle {
    Server::bind("127.0.0.1:0")
        .unwrap()
        .threads(threads)
        .connection_config(config)
        .spawn(app)
}

pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or resets it, as Linux does
/// when unread input is left behind).
pub(crate) fn read_to_close(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading until close: {e}"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one response whose body is `Content-Length` delimited.
pub(crate) fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed in a head"
        );
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Every request gets `Hello, world!\n`.
pub(crate) fn hello(_request: Request) -> Response {
    Response::new("Hello, world!\n".into())
}

/// The request body back, and each trailer as an `x-trailer-NAME` header.
pub(crate) fn echo(request: Request) -> std::io::Result<Response> {
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes)?;
    let mut response = Response::new(bytes.into());
    if let Some(trailers) = body.trailers() {
        for (name, value) in trailers {
            let name = format!("x-trailer-{name}");
            response.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.clone(),
            );
        }
    }
    Ok(response)
}
