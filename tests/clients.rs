//! Broken, slow and greedy clients against the binary with every layer on:
//! each framing fault is answered by the server itself with a 4xx, and
//! nothing reaches Sentry or the error log; a refused upload still reads
//! its answer; what the clients hold stays under the memory ceiling, and a
//! burst of connections gives its memory back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use crate::support::{SentryReceiver, TempPath, Turnstile, fetch, wait_until};

/// A fault a client can make, and the status the server must answer.
struct Fault {
    what: &'static str,
    send: &'static [u8],
    /// Shut the client's side once sent: the body is cut short.
    then_shut: bool,
    status: u16,
}

const FAULTS: &[Fault] = &[
    Fault {
        what: "a chunk size that is not hex",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "a bare LF after a chunk size",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "a chunk extension with a bare CR",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;a\rb\r\nab\r\n0\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "chunk data without its CRLF",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "a forbidden trailer",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nContent-Length: 5\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "a body cut short by the client closing",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
        then_shut: true,
        status: 400,
    },
    Fault {
        what: "a chunked body cut short by the client closing",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        then_shut: true,
        status: 400,
    },
    Fault {
        what: "a length over the limit",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
        then_shut: false,
        status: 413,
    },
    Fault {
        what: "chunks over the limit",
        send: b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n400\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n0\r\n\r\n",
        then_shut: false,
        status: 413,
    },
    Fault {
        what: "a request line with a space in the method",
        send: b"GE T / HTTP/1.1\r\nHost: t\r\n\r\n",
        then_shut: false,
        status: 400,
    },
    Fault {
        what: "a request line with a space in the target",
        send: b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
        then_shut: false,
        status: 400,
    },
];

/// Sends `bytes`, shutting the client's side if asked, and reads the
/// answer's status.
fn status_of(addr: &str, bytes: &[u8], then_shut: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    if then_shut {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The sum of a counter's series for one status on a metrics page.
fn refused(page: &str, status: u16) -> u64 {
    let label = format!("http_response_status_code=\"{status}\"");
    page.lines()
        .filter(|line| {
            line.starts_with("turnstile_refused_requests_total{") && line.contains(&label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ANCHOR: faults
#[test]
fn every_framing_fault_is_a_4xx_of_the_servers_and_reaches_neither_sentry_nor_the_error_log() {
    let receiver = SentryReceiver::start();
    let log = TempPath::new("client-faults.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"));
    command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .args(["--limit-request-body", "1000", "--min-rate-grace", "1"])
        .args(["--error-log", log.as_str()])
        .env("SENTRY_DSN", receiver.dsn());
    let server = Turnstile::start_command(command);
    let addr = server.addr().to_owned();
    for fault in FAULTS {
        let (status, answer) = status_of(&addr, fault.send, fault.then_shut);
        assert_eq!(status, fault.status, "{}: {answer}", fault.what);
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{}: {answer}",
            fault.what
        );
    }
    // Too slow: a head, and a body, that stop arriving.
    let (status, _) = status_of(
        &addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
        false,
    );
    assert_eq!(status, 408, "a body that stops arriving");
    let (status, _) = status_of(&addr, b"GET / HTTP/1.1\r\nHost: t\r\n", false);
    assert_eq!(status, 408, "a head that stops arriving");

    // The reporting path is live: a real failure arrives, and is the only
    // event.
    assert_eq!(fetch(&addr, "/error").unwrap().0, 500);
    let events = receiver.wait_for_events(1, Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    let events_now = receiver.events();
    assert_eq!(events_now.len(), 1, "only /error was reported: {events:?}");
    let errors: Vec<String> = log
        .read()
        .lines()
        .filter(|line| line.contains("turnstile::errors"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "only /error was logged as a failure: {errors:?}"
    );
    assert!(errors[0].contains("GET /error failed"), "{errors:?}");
    assert!(
        log.read().contains("slower than the minimum rate"),
        "logged at info"
    );
    // Each is counted as refused.
    let page = fetch(server.metrics_addr(), "/metrics").unwrap().1;
    let bad = FAULTS.iter().filter(|fault| fault.status == 400).count() as u64;
    assert_eq!(refused(&page, 400), bad, "{page}");
    assert_eq!(refused(&page, 413), 2, "{page}");
    assert_eq!(refused(&page, 408), 2, "{page}");
    assert!(
        page.contains("turnstile_slow_clients_total{while=\"request_body\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("turnstile_slow_clients_total{while=\"request_head\"} 1"),
        "{page}"
    );
}
// ANCHOR_END: faults

#[test]
fn a_client_in_the_middle_of_an_upload_reads_its_refusal() {
    let server = Turnstile::start(&["--workers", "1", "--limit-request-body", "1M"]);
    for head in [
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n"[..],
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(head).unwrap();
        // Goes on uploading, 8 MiB in all, whatever the server said.
        let mut writer = stream.try_clone().unwrap();
        let chunked = head.ends_with(b"chunked\r\n\r\n");
        let uploader = thread::spawn(move || {
            let piece = vec![b'u'; 64 * 1024];
            for _ in 0..128 {
                let sent = if chunked {
                    writer
                        .write_all(b"10000\r\n")
                        .and_then(|()| writer.write_all(&piece))
                        .and_then(|()| writer.write_all(b"\r\n"))
                } else {
                    writer.write_all(&piece)
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        let mut answer = [0u8; 64];
        let n = stream.read(&mut answer).expect("the answer, not a reset");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        uploader.join().unwrap();
    }
}

/// A process's resident memory, in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn only_worker(server: &Turnstile) -> u32 {
    *server.wait_for_workers(1).iter().next().unwrap()
}

#[test]
fn clients_holding_partial_heads_stay_under_the_memory_ceiling_and_others_are_served() {
    let server = Turnstile::start(&["--workers", "1", "--client-memory", "16M"]);
    let worker = only_worker(&server);
    let before = rss_kib(worker);
    // Each sends 98 fields of 8 KiB, within the limits, and never the line
    // that ends the head: about 800 KiB each, 240 MiB for all of them.
    let field = format!("X-Filler: {}\r\n", "f".repeat(8000));
    let head = format!("GET / HTTP/1.1\r\nHost: t\r\n{}", field.repeat(98));
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The server reads it all: into memory, or, past the ceiling,
        // into the bin after its 503.
        stream.write_all(head.as_bytes()).unwrap();
        held.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let during = rss_kib(worker);
    assert!(
        during < before + 3 * 16 * 1024,
        "the worker grew from {before} KiB to {during} KiB"
    );
    // Past the ceiling, heads were refused.
    let mut refused = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut answer = [0u8; 12];
        if stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert!(refused > 200, "{refused} of 300 were refused");
    // A request that arrives whole needs none of the ceiling.
    assert_eq!(fetch(server.addr(), "/").unwrap().0, 200);
}

#[test]
fn a_burst_of_ten_thousand_connections_gives_its_memory_back() {
    // Ten thousand sockets here, and as many in the worker, which inherits
    // the limit: the soft limit goes up to the hard one.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let server = Turnstile::start(&["--workers", "1", "--keepalive", "60"]);
    let worker = only_worker(&server);
    assert_eq!(fetch(server.addr(), "/").unwrap().0, 200);
    let before = rss_kib(worker);
    // Each holds 4 KiB of a head it has not finished, in a buffer of its
    // own: about 40 MiB in all, under the ceiling's 64.
    let partial = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Filler: {}",
        "f".repeat(4000)
    );
    let mut held = Vec::with_capacity(10_000);
    for n in 0..10_000 {
        let mut stream = TcpStream::connect(server.addr()).unwrap_or_else(|error| {
            panic!("connection {n}: {error} (the open-file limit is too low?)")
        });
        stream.write_all(partial.as_bytes()).unwrap();
        held.push(stream);
    }
    let grown = wait_until(Duration::from_secs(10), || {
        let now = rss_kib(worker);
        (now > 2 * before).then_some(now)
    });
    let Some(during) = grown else {
        panic!("the burst did not grow the worker past twice its {before} KiB");
    };
    drop(held);
    // Once the connections are gone, the worker gives the memory back.
    let after = wait_until(Duration::from_secs(5), || {
        let now = rss_kib(worker);
        (now <= 2 * before).then_some(now)
    });
    assert!(
        after.is_some(),
        "before {before} KiB, with 10,000 open {during} KiB, after {} KiB",
        rss_kib(worker)
    );
}
