//! The in-process server API: spawn on port 0, serve, shut down.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use turnstile_core::{Request, Response};
use turnstile_server::http1::conn::ConnConfig;

use crate::support::{connect, read_response, read_to_close, spawn_server_with_threads};

#[test]
fn shutdown_finishes_the_request_in_flight_then_stops_accepting() {
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let app = move |_request: Request| -> Response {
        let _ = started_tx.try_send(());
        thread::sleep(Duration::from_millis(300));
        Response::new("finished\n".into())
    };
    let server = spawn_server_with_threads(app, ConnConfig::default(), 2);
    let addr = server.addr();
    let mut stream = connect(addr);
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let stopper = thread::spawn(move || server.shutdown());
    let response = read_to_close(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
    assert!(response.ends_with("finished\n"), "{response}");
    stopper.join().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is still open"
    );
}

#[test]
fn shutdown_closes_idle_connections() {
    let app = |_request: Request| Response::new("hi\n".into());
    let server = spawn_server_with_threads(app, ConnConfig::default(), 2);
    let mut idle = connect(server.addr());
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut idle).ends_with("hi\n"));
    server.shutdown();
    assert_eq!(read_to_close(&mut idle), "");
}

#[test]
fn a_panic_on_the_only_thread_answers_500_and_the_server_goes_on() {
    let app = |request: Request| -> Response {
        if request.uri().path() == "/panic" {
            panic!("secret detail");
        }
        Response::new("fine\n".into())
    };
    let server = spawn_server_with_threads(app, ConnConfig::default(), 1);
    let mut first = connect(server.addr());
    first
        .write_all(b"GET /panic HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_close(&mut first);
    assert!(
        response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{response}"
    );
    assert!(!response.contains("secret"), "{response}");
    let mut second = connect(server.addr());
    second.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut second).ends_with("fine\n"));
    server.shutdown();
}

#[test]
fn a_panic_while_streaming_the_body_closes_that_connection_only() {
    let app = |request: Request| -> Response {
        if request.uri().path() == "/broken-stream" {
            let chunks = (0..3).map(|n| {
                assert!(n < 1, "the body's iterator panicked");
                Ok(turnstile_core::Bytes::from_static(b"chunk\n"))
            });
            return Response::new(turnstile_core::ResponseBody::stream(chunks));
        }
        Response::new("fine\n".into())
    };
    let server = spawn_server_with_threads(app, ConnConfig::default(), 1);
    for _ in 0..3 {
        let mut broken = connect(server.addr());
        broken
            .write_all(b"GET /broken-stream HTTP/1.1\r\n\r\n")
            .unwrap();
        let response = read_to_close(&mut broken);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            !response.ends_with("0\r\n\r\n"),
            "a cut body must not look complete: {response}"
        );
    }
    // The only thread survived every panic.
    let mut next = connect(server.addr());
    next.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut next).ends_with("fine\n"));
    server.shutdown();
}
