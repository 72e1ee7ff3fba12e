//! Idle and slow clients against a server with few threads: none of them
//! may hold a thread the next client needs, and each is closed when its
//! timeout runs out.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use turnstile_core::{Bytes, Request, Response, ResponseBody};
use turnstile_server::http1::conn::ConnConfig;

use crate::support::{
    connect, echo, hello, read_response, read_to_close, spawn_server_with_threads,
};

fn patient() -> ConnConfig {
    ConnConfig {
        keepalive: Duration::from_secs(60),
        head_timeout: Duration::from_secs(60),
        ..ConnConfig::default()
    }
}

#[test]
fn a_thousand_idle_and_slow_connections_hold_no_thread() {
    let server = spawn_server_with_threads(hello, patient(), 2);
    let addr = server.addr();
    let mut held = Vec::new();
    for n in 0..1000 {
        let mut stream = connect(addr);
        match n % 4 {
            // Connected, never a byte.
            0 | 1 => {}
            // Served once, now idle on keep-alive.
            2 => {
                stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                assert!(read_response(&mut stream).ends_with("Hello, world!\n"));
            }
            // Half a head, the rest never sent.
            _ => stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(),
        }
        held.push(stream);
    }
    let mut fresh = connect(addr);
    fresh.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut fresh).ends_with("Hello, world!\n"));
    // The parked ones are still good: the idle keep-alive ones serve again,
    // the half-sent heads complete.
    for stream in held.iter_mut().skip(2).step_by(4).take(10) {
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_response(stream).ends_with("Hello, world!\n"));
    }
    for stream in held.iter_mut().skip(3).step_by(4).take(10) {
        stream.write_all(b"\r\n").unwrap();
        assert!(read_response(stream).ends_with("Hello, world!\n"));
    }
    drop(held);
    server.shutdown();
}

#[test]
fn a_head_that_never_completes_is_closed_at_the_head_timeout() {
    let config = ConnConfig {
        head_timeout: Duration::from_millis(300),
        ..patient()
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert_eq!(read_to_close(&mut stream), "");
}

#[test]
fn a_client_trickling_its_head_is_closed_at_the_head_timeout() {
    let config = ConnConfig {
        head_timeout: Duration::from_millis(400),
        ..patient()
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    let head = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(200));
    // Each byte keeps the connection busy, but the head as a whole is late.
    let mut sent = 0;
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        thread::sleep(Duration::from_millis(20));
    }
    assert!(sent < head.len(), "the server waited for the whole head");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_keepalive() {
    let config = ConnConfig {
        keepalive: Duration::from_millis(300),
        ..patient()
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let response = read_response(&mut stream);
    assert!(!response.contains("connection: close"), "{response}");
    assert_eq!(read_to_close(&mut stream), "");
}

#[test]
fn keepalive_zero_closes_after_each_response() {
    let config = ConnConfig {
        keepalive: Duration::ZERO,
        ..patient()
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let response = read_to_close(&mut stream);
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
}

#[test]
fn a_stalled_body_frees_the_only_thread_after_the_io_timeout() {
    let config = ConnConfig {
        io_timeout: Duration::from_millis(300),
        ..patient()
    };
    let server = spawn_server_with_threads(echo, config, 1);
    let mut stalled = connect(server.addr());
    stalled
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let answer = read_to_close(&mut stalled);
    assert!(
        answer.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{answer}"
    );
    let mut next = connect(server.addr());
    next.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert!(read_response(&mut next).ends_with("\r\n\r\nok"));
}

#[test]
fn a_client_that_stops_reading_frees_the_only_thread_after_the_io_timeout() {
    static MEBIBYTE: [u8; 1 << 20] = [b'x'; 1 << 20];
    let app = |request: Request| -> Response {
        if request.uri().path() == "/huge" {
            // Far more than the socket buffers hold.
            let chunks = (0..256).map(|_| Ok(Bytes::from_static(&MEBIBYTE)));
            return Response::new(ResponseBody::stream(chunks));
        }
        Response::new("small\n".into())
    };
    let config = ConnConfig {
        io_timeout: Duration::from_millis(300),
        ..patient()
    };
    let server = spawn_server_with_threads(app, config, 1);
    let mut reader = TcpStream::connect(server.addr()).unwrap();
    reader.write_all(b"GET /huge HTTP/1.1\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut next = connect(server.addr());
    next.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut next).ends_with("small\n"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(reader);
}

#[test]
fn a_client_that_sends_its_request_and_shuts_its_side_is_closed_at_once() {
    // The request and the FIN arrive together: after the response the
    // connection must see the end of the stream, not wait for keep-alive.
    let server = spawn_server_with_threads(hello, patient(), 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let response = read_to_close(&mut stream);
    assert!(response.ends_with("Hello, world!\n"), "{response}");
}
