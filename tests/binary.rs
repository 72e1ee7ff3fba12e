//! The `turnstile` binary, run as a user runs it.

use std::process::{Command, Stdio};

use crate::support::Turnstile;

#[test]
fn serves_the_demo_application() {
    let server = Turnstile::start(&[]);
    let hello = server.get("/");
    assert!(hello.starts_with("HTTP/1.1 200 OK\r\n"), "{hello}");
    assert!(hello.ends_with("\r\n\r\nHello, world!\n"), "{hello}");
    assert!(
        server
            .get("/missing")
            .starts_with("HTTP/1.1 404 Not Found\r\n")
    );
    let stream = server.get("/stream?chunks=2");
    assert!(
        stream.ends_with("8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"),
        "{stream}"
    );
}

#[test]
fn failures_answer_500_and_leak_nothing() {
    let server = Turnstile::start(&["--threads", "1"]);
    for target in ["/error", "/panic"] {
        let response = server.get(target);
        assert!(
            response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{response}"
        );
        assert!(
            !response.contains("demo application"),
            "details leaked: {response}"
        );
    }
    // The one request thread survived the panic.
    assert!(server.get("/").starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_bad_flag_exits_with_code_2() {
    let status = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--threads", "0"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn bad_middleware_lists_exit_with_code_2_and_say_why() {
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--middleware", "no-such-layer"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown layer `no-such-layer`"), "{stderr}");
}

/// The JSON body of a response.
fn json_body(response: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn the_environ_app_shows_what_the_application_saw() {
    let server = Turnstile::start(&["--app", "environ", "--middleware", "none"]);
    let mut request = b"POST /p%20q?x=1&x=2 HTTP/1.1\r\nHost: test\r\nX-A: 1\r\nConnection: close\r\nx-a:  2 \r\nX-Latin: caf\xe9\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(b"2\r\nhi\r\n0\r\nChecksum: 42\r\n\r\n");
    let json = json_body(&server.send(&request));
    assert_eq!(json["method"], "POST");
    assert_eq!(json["target"], "/p%20q?x=1&x=2");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(
        json["headers"],
        serde_json::json!([
            ["Host", "test"],
            ["X-A", "1"],
            ["Connection", "close"],
            ["x-a", "2"],
            ["X-Latin", "caf\u{e9}"],
            ["Transfer-Encoding", "chunked"]
        ])
    );
    assert_eq!(json["body_base64"], "aGk=");
    assert_eq!(json["trailers"], serde_json::json!([["checksum", "42"]]));
    assert!(
        json["remote_addr"]
            .as_str()
            .is_some_and(|addr| addr.starts_with("127.0.0.1:")),
        "{json}"
    );
    assert_eq!(json["scheme"], "http");
    // A worker, forked by the arbiter, served it.
    let pid = json["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, server.child.id());
    assert_eq!(crate::support::parent_of(pid), Some(server.child.id()));
    assert_eq!(json["worker"], 1);
    assert_eq!(json["request_id"].as_str().map(str::len), Some(36));
}

#[test]
fn the_demo_app_shows_the_environ_too() {
    let server = Turnstile::start(&[]);
    let json = json_body(&server.send(b"GET /environ HTTP/1.0\r\n\r\n"));
    assert_eq!(json["version"], "HTTP/1.0");
    assert_eq!(json["headers"], serde_json::json!([]));
}

#[test]
fn proxy_headers_count_only_from_trusted_proxies() {
    let request = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n";
    // The default trusts loopback, where the test connects from.
    let server = Turnstile::start(&["--app", "environ"]);
    let json = json_body(&server.send(request));
    assert_eq!(json["client_addr"], "203.0.113.7:0");
    assert_eq!(json["scheme"], "https");
    assert!(
        json["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    let server = Turnstile::start(&["--app", "environ", "--forwarded-allow-ips", "10.0.0.0/8"]);
    let json = json_body(&server.send(request));
    assert_eq!(json["client_addr"], json["remote_addr"]);
    assert_eq!(json["scheme"], "http");

    // Gunicorn's invalid/019: a trusted proxy contradicting itself.
    let server = Turnstile::start(&["--app", "environ", "--forwarded-allow-ips", "*"]);
    let response = server.send(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
    );
    assert!(response.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
}
