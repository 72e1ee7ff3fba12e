//! Idle, slow and non-reading clients against a server with few threads:
//! none of them may hold a thread the next client needs, and each is
//! answered or closed by the minimum rates, not by a thread's timeout.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use turnstile_core::{Bytes, Request, Response, ResponseBody};
use turnstile_server::http1::conn::ConnConfig;

use crate::support::{
    connect, echo, hello, read_response, read_to_close, spawn_server_with_threads,
};

/// Long timeouts and no minimum rates: only what a test sets applies.
fn patient() -> ConnConfig {
    ConnConfig {
        keepalive: Duration::from_secs(60),
        first_request_timeout: Duration::from_secs(60),
        min_request_rate: 0,
        min_response_rate: 0,
        ..ConnConfig::default()
    }
}

/// A minimum rate of 240 bytes a second after `grace`.
fn strict(grace: Duration) -> ConnConfig {
    ConnConfig {
        min_request_rate: 240,
        min_response_rate: 240,
        min_rate_grace: grace,
        ..patient()
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
fn a_new_connection_that_stays_silent_is_closed_without_an_answer() {
    let config = ConnConfig {
        first_request_timeout: Duration::from_millis(300),
        ..strict(Duration::from_millis(100))
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    let started = Instant::now();
    assert_eq!(
        read_to_close(&mut stream),
        "",
        "no 408 for a request never begun"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_head_that_stops_arriving_gets_408() {
    let server = spawn_server_with_threads(hello, strict(Duration::from_millis(300)), 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let answer = read_to_close(&mut stream);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
}

#[test]
fn a_head_trickling_below_the_rate_gets_408_and_one_above_it_is_served() {
    let server = spawn_server_with_threads(hello, strict(Duration::from_millis(300)), 1);
    let addr = server.addr();
    let head = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(2000));
    // Below: 50 bytes a second.
    let slow = thread::spawn({
        let head = head.clone();
        move || {
            let mut stream = connect(addr);
            for byte in head.as_bytes() {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            read_to_close(&mut stream)
        }
    });
    // Above: 500 bytes every half second, 1,000 a second.
    let mut fast = connect(addr);
    for piece in head.as_bytes().chunks(500) {
        fast.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(500));
    }
    assert!(read_response(&mut fast).ends_with("Hello, world!\n"));
    let answer = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
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

/// Echoes the body, counting the calls.
fn counting_echo(
    calls: &Arc<AtomicUsize>,
) -> impl Fn(Request) -> std::io::Result<Response> + Send + Sync + 'static {
    let calls = calls.clone();
    move |request| {
        calls.fetch_add(1, Ordering::SeqCst);
        echo(request)
    }
}

#[test]
fn a_body_that_stops_arriving_gets_408_and_never_reaches_the_application() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server =
        spawn_server_with_threads(counting_echo(&calls), strict(Duration::from_millis(300)), 1);
    let mut stalled = connect(server.addr());
    stalled
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    // Meanwhile the only thread serves others at once.
    let mut next = connect(server.addr());
    next.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert!(read_response(&mut next).ends_with("\r\n\r\nok"));
    let answer = read_to_close(&mut stalled);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the whole request was served"
    );
}

#[test]
fn a_body_sent_slowly_but_above_the_rate_holds_no_thread_and_arrives_whole() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server =
        spawn_server_with_threads(counting_echo(&calls), strict(Duration::from_millis(200)), 1);
    let addr = server.addr();
    let uploader = thread::spawn(move || {
        let mut stream = connect(addr);
        stream
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 1200\r\n\r\n")
            .unwrap();
        // 300 bytes every quarter second: 1,200 a second, for a second.
        for _ in 0..4 {
            stream.write_all(&[b'u'; 300]).unwrap();
            thread::sleep(Duration::from_millis(250));
        }
        read_response(&mut stream)
    });
    // While it uploads, the only thread serves a stream of other requests.
    thread::sleep(Duration::from_millis(100));
    let mut other = connect(addr);
    for _ in 0..20 {
        other
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap();
        assert!(read_response(&mut other).ends_with("\r\n\r\nhi"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        20,
        "the upload has not reached the application yet"
    );
    let answer = uploader.join().unwrap();
    assert!(answer.ends_with(&"u".repeat(1200)), "{answer}");
}

static MEBIBYTE: [u8; 1 << 20] = [b'x'; 1 << 20];

/// `/huge` streams far more than the socket buffers hold; the rest is small.
fn huge(request: Request) -> Response {
    if request.uri().path() == "/huge" {
        let chunks = (0..256).map(|_| Ok(Bytes::from_static(&MEBIBYTE)));
        return Response::new(ResponseBody::stream(chunks));
    }
    Response::new("small\n".into())
}

#[test]
fn a_client_that_stops_reading_holds_no_thread() {
    let server = spawn_server_with_threads(huge, patient(), 1);
    let mut readers: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut reader = TcpStream::connect(server.addr()).unwrap();
            reader.write_all(b"GET /huge HTTP/1.1\r\n\r\n").unwrap();
            reader
        })
        .collect();
    // Each got its head and a chunk or so, then stopped reading.
    let mut head = [0u8; 64];
    for reader in &mut readers {
        reader.read_exact(&mut head).unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    let mut next = connect(server.addr());
    for _ in 0..10 {
        next.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_response(&mut next).ends_with("small\n"));
    }
    let (open, _) = server.connections();
    assert_eq!(open, 21, "the readers are still served, in the poller");
}

/// Reads `/huge` at about `rate` bytes a second, for `seconds` at most;
/// says how much it read and whether the server closed the connection.
fn read_huge_at(addr: std::net::SocketAddr, rate: usize, seconds: u64) -> (usize, bool) {
    let mut reader = TcpStream::connect(addr).unwrap();
    reader.write_all(b"GET /huge HTTP/1.1\r\n\r\n").unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut read = 0;
    let mut buf = vec![0; rate / 10];
    while started.elapsed() < Duration::from_secs(seconds) {
        // A tenth of the rate every tenth of a second.
        let mut got = 0;
        while got < buf.len() {
            match reader.read(&mut buf[got..]) {
                Ok(0) | Err(_) => return (read + got, true),
                Ok(n) => got += n,
            }
        }
        read += got;
        thread::sleep(Duration::from_millis(100));
    }
    (read, false)
}

#[test]
fn a_client_reading_below_the_minimum_rate_is_closed_and_one_above_it_is_not() {
    let config = ConnConfig {
        min_response_rate: 4 << 20,
        ..strict(Duration::from_millis(300))
    };
    let server = spawn_server_with_threads(huge, config, 1);
    let addr = server.addr();
    let fast = thread::spawn(move || read_huge_at(addr, 16 << 20, 4));
    let slow = thread::spawn(move || read_huge_at(addr, 256 << 10, 4));
    let open = |wanted: usize| {
        let deadline = Instant::now() + Duration::from_millis(3500);
        while server.connections().0 != wanted && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        server.connections().0
    };
    assert_eq!(open(2), 2, "both readers connected");
    // A closed reader goes on reading what its socket's buffers already
    // hold, so the server's count tells first.
    assert_eq!(open(1), 1, "the slow reader was closed");
    let (fast_read, fast_closed) = fast.join().unwrap();
    assert!(
        !fast_closed,
        "a reader at 16 MiB/s closed after {fast_read} bytes"
    );
    let (slow_read, _) = slow.join().unwrap();
    assert!(
        slow_read < 2 << 20,
        "the slow reader read {slow_read} bytes"
    );
}

#[test]
fn a_client_that_sends_its_request_and_shuts_its_side_is_closed_at_once() {
    // The request and the FIN arrive together: after the response the
    // connection must see the end of the stream, not wait for keep-alive.
    let server = spawn_server_with_threads(hello, patient(), 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let response = read_to_close(&mut stream);
    assert!(response.ends_with("Hello, world!\n"), "{response}");
}

/// Waits until `count` callers are inside at once; false if they never are
/// within ten seconds.
struct Meeting {
    inside: Mutex<usize>,
    all_in: Condvar,
    count: usize,
}

impl Meeting {
    fn attend(&self) -> bool {
        let mut inside = self.inside.lock().unwrap();
        *inside += 1;
        self.all_in.notify_all();
        let (inside, timeout) = self
            .all_in
            .wait_timeout_while(inside, Duration::from_secs(10), |inside| {
                *inside < self.count
            })
            .unwrap();
        drop(inside);
        !timeout.timed_out()
    }
}

#[test]
fn an_application_that_blocks_gets_every_thread() {
    let meeting = Arc::new(Meeting {
        inside: Mutex::new(0),
        all_in: Condvar::new(),
        count: 8,
    });
    let app = {
        let meeting = meeting.clone();
        move |_request: Request| -> Response {
            // Blocks until all eight are in the application at once.
            if meeting.attend() {
                Response::new("met\n".into())
            } else {
                Response::new("alone\n".into())
            }
        }
    };
    let server = spawn_server_with_threads(app, patient(), 8);
    let addr = server.addr();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = connect(addr);
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                read_response(&mut stream)
            })
        })
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert!(response.ends_with("met\n"), "{response}");
    }
}

#[test]
fn a_pull_is_on_its_requests_record_and_a_client_that_stops_reading_is_not() {
    let app = |request: Request| -> Response {
        if request.uri().path() == "/slow-chunk" {
            // The second chunk takes the application a while to make.
            let chunks = (0..2).map(|n| {
                if n == 1 {
                    thread::sleep(Duration::from_millis(600));
                }
                Ok(Bytes::from_static(b"chunk\n"))
            });
            return Response::new(ResponseBody::stream(chunks));
        }
        huge(request)
    };
    let server = spawn_server_with_threads(app, patient(), 2);
    // A request waiting for its client to read is on no record: the
    // arbiter's --timeout is for stuck applications, not slow clients.
    let mut reader = TcpStream::connect(server.addr()).unwrap();
    reader.write_all(b"GET /huge HTTP/1.1\r\n\r\n").unwrap();
    let mut head = [0u8; 64];
    reader.read_exact(&mut head).unwrap();
    thread::sleep(Duration::from_millis(200));
    assert!(server.oldest_in_flight().is_none(), "the reader's request");
    // A pull the application is slow in is on the request's record.
    let mut stream = connect(server.addr());
    stream
        .write_all(b"GET /slow-chunk HTTP/1.1\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let pulling = server.oldest_in_flight().expect("the pull is on a record");
    assert!(
        pulling.describe().starts_with("GET /slow-chunk "),
        "{}",
        pulling.describe()
    );
    let served = server.requests_served();
    let mut body = Vec::new();
    let mut buf = [0u8; 256];
    while !body.ends_with(b"0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        body.extend_from_slice(&buf[..n]);
    }
    thread::sleep(Duration::from_millis(50));
    assert!(server.oldest_in_flight().is_none());
    assert_eq!(server.requests_served(), served + 1, "counted once written");
}

#[test]
fn a_request_behind_tcps_urgent_mark_is_still_served() {
    // A read stops short at the urgent mark, which the connection takes
    // for an empty socket: the sweep must find the request behind it.
    let config = ConnConfig {
        keepalive: Duration::from_millis(300),
        ..patient()
    };
    let server = spawn_server_with_threads(hello, config, 1);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    socket2::SockRef::from(&stream)
        .send_out_of_band(b"!")
        .unwrap();
    stream.write_all(b"GET /second HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).ends_with("Hello, world!\n"));
    assert!(
        read_response(&mut stream).ends_with("Hello, world!\n"),
        "the request behind the mark"
    );
}

#[test]
fn a_refused_client_that_goes_on_sending_is_closed_when_its_lingering_ends() {
    let config = ConnConfig {
        max_body: Some(1024),
        ..patient()
    };
    let server = spawn_server_with_threads(echo, config, 1);
    let mut stream = connect(server.addr());
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 100000000000\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let piece = vec![b'x'; 64 * 1024];
    let closed = loop {
        if stream.write_all(&piece).is_err() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(closed, "still reading its upload after 20 s");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "lingered for its answer"
    );
}
