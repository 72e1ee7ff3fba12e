//! Requests over real loopback sockets, served by a real [`Server`].

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use turnstile_core::{Bytes, Completion, Request, Response, ResponseBody, on_complete};
use turnstile_server::http1::conn::ConnConfig;

use crate::support::{
    connect, echo, hello, read_response, read_to_close, spawn_server, spawn_server_with_threads,
};

#[test]
fn serves_a_request_with_date_server_and_length() {
    let server = spawn_server(hello, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_close(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\r\ndate: "), "{response}");
    assert!(response.contains("\r\nserver: turnstile\r\n"), "{response}");
    assert!(
        response.contains("\r\ncontent-length: 14\r\nconnection: close\r\n\r\nHello, world!\n"),
        "{response}"
    );
}

#[test]
fn keeps_the_connection_alive_and_answers_pipelined_requests_in_order() {
    let app = |request: Request| {
        Response::new(format!("you asked for {}\n", request.uri().path()).into())
    };
    let server = spawn_server(app, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream.write_all(b"GET /one HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).ends_with("you asked for /one\n"));
    stream
        .write_all(b"GET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut stream).ends_with("you asked for /two\n"));
    assert!(read_response(&mut stream).ends_with("you asked for /three\n"));
}

#[test]
fn decodes_chunked_request_bodies_with_trailers() {
    let server = spawn_server(echo, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nChecksum: 42\r\n\r\n")
        .unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.contains("x-trailer-checksum: 42\r\n"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\nhello world"), "{response}");
    // The connection is still usable afterwards.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert!(read_response(&mut stream).ends_with("\r\n\r\nok"));
}

#[test]
fn streams_chunked_responses_and_counts_them_to_the_last_byte() {
    let completions: Arc<Mutex<Vec<Completion>>> = Arc::default();
    let record = completions.clone();
    let app = move |_request: Request| {
        let chunks = ["one ", "two ", "three"]
            .into_iter()
            .map(|s| Ok(Bytes::from(s)));
        let mut response = Response::new(ResponseBody::stream(chunks));
        let record = record.clone();
        on_complete(&mut response, move |done| {
            record.lock().unwrap().push(*done)
        });
        response
    };
    let server = spawn_server(app, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_close(&mut stream);
    assert!(
        response.contains("transfer-encoding: chunked\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\n4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"),
        "{response}"
    );
    let completions = completions.lock().unwrap();
    assert_eq!(completions.len(), 1);
    assert_eq!(
        (completions[0].body_bytes, completions[0].is_written()),
        (13, true)
    );
}

#[test]
fn head_gets_the_length_but_no_body() {
    let server = spawn_server(hello, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_close(&mut stream);
    assert!(
        response.ends_with("content-length: 14\r\nconnection: close\r\n\r\n"),
        "{response}"
    );
}

#[test]
fn sends_100_continue_as_it_starts_receiving_and_not_when_the_body_came_anyway() {
    let server = spawn_server(echo, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"data").unwrap();
    assert!(read_response(&mut stream).ends_with("\r\n\r\ndata"));
    // A client that did not wait has no use for one: the answer comes first.
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nmore")
        .unwrap();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    // A body over the limit is refused before the client sends it.
    let small = ConnConfig {
        max_body: Some(3),
        ..ConnConfig::default()
    };
    let server = spawn_server(echo, small);
    let mut stream = connect(server.addr());
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let answer = crate::support::read_to_close(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
}

#[test]
fn refuses_bad_requests_and_closes() {
    let server = spawn_server(hello, ConnConfig::default());
    let addr = server.addr();
    let cases: &[(&[u8], &str)] = &[
        (
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "HTTP/1.1 400 Bad Request\r\n",
        ),
        (
            b"GET / HTTP/3.0\r\n\r\n",
            "HTTP/1.1 505 HTTP Version Not Supported\r\n",
        ),
        (
            b"GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n",
            "HTTP/1.1 417 Expectation Failed\r\n",
        ),
    ];
    for (request, status_line) in cases {
        let mut stream = connect(addr);
        stream.write_all(request).unwrap();
        let response = read_to_close(&mut stream);
        assert!(response.starts_with(status_line), "{response}");
        assert!(response.contains("connection: close\r\n"), "{response}");
    }
}

#[test]
fn a_body_over_the_limit_gets_413() {
    let config = ConnConfig {
        max_body: Some(4),
        ..ConnConfig::default()
    };
    let server = spawn_server(echo, config);
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    assert!(read_to_close(&mut stream).starts_with("HTTP/1.1 413 Payload Too Large\r\n"));
}

#[test]
fn a_panic_answers_500_and_the_connection_goes_on() {
    let app = |request: Request| -> Response {
        if request.uri().path() == "/panic" {
            panic!("secret detail");
        }
        Response::new("fine\n".into())
    };
    let server = spawn_server(app, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream.write_all(b"GET /panic HTTP/1.1\r\n\r\n").unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{response}"
    );
    assert!(!response.contains("secret"), "{response}");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).ends_with("fine\n"));
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = spawn_server(hello, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(read_to_close(&mut stream).contains("connection: close\r\n"));
    let mut stream = connect(addr);
    stream
        .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert!(!read_response(&mut stream).contains("connection: close"));
}

#[test]
fn trailers_survive_reads_past_the_end_of_the_body() {
    let app = |request: Request| -> std::io::Result<Response> {
        let mut body = request.into_body();
        std::io::copy(&mut body, &mut std::io::sink())?;
        // A second read at the end must not lose what the first one found.
        assert_eq!(body.read(&mut [0; 8])?, 0);
        let count = body.trailers().map_or(0, http::HeaderMap::len);
        Ok(Response::new(format!("{count} trailer(s)").into()))
    };
    let server = spawn_server(app, ConnConfig::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    stream
        .write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nChecksum: 42\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut stream).ends_with("\r\n\r\n1 trailer(s)"));
}

#[test]
fn input_arriving_while_a_request_is_served_is_not_lost() {
    let app = |request: Request| -> Response {
        if request.uri().path() == "/slow" {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Response::new(request.uri().path().to_owned().into())
    };
    // One thread: the event waits for it. Two: the other thread is woken
    // while the connection is busy, and must leave it to the first.
    for threads in [1, 2] {
        let server = spawn_server_with_threads(app, ConnConfig::default(), threads);
        let mut stream = connect(server.addr());
        stream.write_all(b"GET /slow HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        stream.write_all(b"GET /next HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_response(&mut stream).ends_with("\r\n\r\n/slow"));
        assert!(read_response(&mut stream).ends_with("\r\n\r\n/next"));
        server.shutdown();
    }
}

#[test]
fn a_pipelined_burst_larger_than_the_buffer_is_answered_in_full() {
    let server = spawn_server(hello, ConnConfig::default());
    let mut stream = connect(server.addr());
    let burst = "GET / HTTP/1.1\r\nHost: pipelined.test\r\n\r\n".repeat(1000);
    assert!(burst.len() > 16 * 1024);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(burst.as_bytes()).unwrap())
    };
    for _ in 0..1000 {
        assert!(read_response(&mut stream).ends_with("Hello, world!\n"));
    }
    writer.join().unwrap();
}

#[test]
fn a_body_past_the_in_memory_size_is_spooled_and_one_past_the_spool_is_refused() {
    let config = ConnConfig {
        body_buffer_size: 1024,
        spool_max_size: 64 * 1024,
        ..ConnConfig::default()
    };
    let server = spawn_server(echo, config);
    let mut stream = connect(server.addr());
    let body: Vec<u8> = (0..40_000).map(|n| b'a' + (n % 26) as u8).collect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.ends_with(std::str::from_utf8(&body).unwrap()),
        "read back whole from the spool"
    );
    assert_eq!(server.held(), (0, 0), "the spool file went with the body");
    // Two of them would not fit together; one larger than the spool never does.
    let mut stream = connect(server.addr());
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    let _ = stream.write_all(&[b'x'; 100_000]);
    let answer = crate::support::read_to_close(&mut stream);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
}
