//! The header-injection and request-logging layers, as the binary runs them.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;

use crate::support::{TempPath, Turnstile, example, get_with, wait_until};

/// Waits for `path` to hold `count` lines (the access log writes its
/// buffers out at least every second).
fn wait_for_lines(path: &TempPath, count: usize) -> Vec<String> {
    wait_until(Duration::from_secs(10), || {
        let lines: Vec<String> = path.read().lines().map(str::to_owned).collect();
        (lines.len() >= count).then_some(lines)
    })
    .unwrap_or_else(|| panic!("fewer than {count} lines in {:?}", path.read()))
}

#[test]
fn every_request_gets_a_distinct_id_security_headers_and_server_timing() {
    let server = Turnstile::start(&["--workers", "2", "--access-log", "/dev/null"]);
    server.wait_for_workers(2);
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let reply = get_with(server.addr(), "/", &[]);
        assert_eq!(reply.status, 200);
        ids.insert(reply.header("x-request-id").unwrap().to_owned());
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
        assert_eq!(
            reply.header("cross-origin-opener-policy"),
            Some("same-origin")
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("strict-transport-security"), None);
        let timing = reply.header("server-timing").unwrap();
        let millis: f64 = timing.strip_prefix("app;dur=").unwrap().parse().unwrap();
        assert!(millis >= 0.0, "{timing}");
    }
    assert_eq!(ids.len(), 200, "request ids repeated");
}

#[test]
fn a_valid_incoming_id_is_echoed_and_logged_and_an_oversized_one_replaced() {
    let log = TempPath::new("request-ids.log");
    let mut server =
        Turnstile::start(&["--access-log", log.as_str(), "--access-log-format", "json"]);
    let valid = get_with(
        server.addr(),
        "/environ",
        &[("X-Request-Id", "edge-7f3a9c")],
    );
    assert_eq!(valid.header("x-request-id"), Some("edge-7f3a9c"));
    // The application sees the adopted id too.
    let environ: serde_json::Value = serde_json::from_str(&valid.body).unwrap();
    assert_eq!(environ["request_id"], "edge-7f3a9c");

    let oversized = "a".repeat(129);
    let replaced = get_with(server.addr(), "/", &[("X-Request-Id", &oversized)]);
    let new_id = replaced.header("x-request-id").unwrap().to_owned();
    assert_eq!(new_id.len(), 36, "{new_id}");

    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let ids: Vec<String> = log
        .read()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|json| json["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["edge-7f3a9c".to_owned(), new_id]);
}

#[test]
fn the_json_access_log_has_one_line_per_request_and_no_secrets() {
    let log = TempPath::new("access.json.log");
    let mut server = Turnstile::start(&[
        "--workers",
        "2",
        "--access-log",
        log.as_str(),
        "--access-log-format",
        "json",
        "--access-log-skip",
        "/healthz",
        // Workers retire every 20 requests: their lines must survive that too.
        "--max-requests",
        "20",
    ]);
    server.wait_for_workers(2);
    let mut sent = Vec::new();
    for i in 0..60 {
        let reply = get_with(
            server.addr(),
            &format!("/?token=supersecret{i}&page={i}"),
            &[("User-Agent", "layers-test/1.0")],
        );
        assert_eq!(reply.status, 200);
        sent.push(reply.header("x-request-id").unwrap().to_owned());
        let health = get_with(server.addr(), "/healthz", &[]);
        assert_eq!(health.status, 200);
    }
    let failed = get_with(server.addr(), "/error", &[]);
    assert_eq!(failed.status, 500);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());

    let text = log.read();
    assert!(!text.contains("supersecret"), "a token reached the log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 61, "{text}");
    let keys: BTreeSet<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "bytes",
        "client",
        "duration_s",
        "method",
        "path",
        "pid",
        "query",
        "request_id",
        "status",
        "timestamp",
        "trace_id",
        "user_agent",
    ];
    assert_eq!(keys, BTreeSet::from(expected));
    // Two workers write their buffers out independently: order by path.
    let (errors, lines): (Vec<_>, Vec<_>) = lines.iter().partition(|line| line["path"] == "/error");
    let mut logged_ids = Vec::new();
    for line in &lines {
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/");
        assert!(
            line["query"]
                .as_str()
                .unwrap()
                .starts_with("token=[redacted]&page="),
            "{line}"
        );
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], 14);
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["user_agent"], "layers-test/1.0");
        assert!(line["duration_s"].as_f64().unwrap() >= 0.0);
        assert!(line["pid"].as_u64().unwrap() > 0);
        logged_ids.push(line["request_id"].as_str().unwrap().to_owned());
    }
    logged_ids.sort();
    sent.sort();
    assert_eq!(logged_ids, sent);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["status"], 500);
}

#[test]
fn the_default_format_is_combined_with_the_query_redacted() {
    let log = TempPath::new("access.combined.log");
    let server = Turnstile::start(&["--access-log", log.as_str()]);
    get_with(
        server.addr(),
        "/?password=hunter2&q=1",
        &[
            ("Referer", "http://test/login?token=abc"),
            ("User-Agent", "ua\"x"),
        ],
    );
    let line = wait_for_lines(&log, 1).remove(0);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with(
            "] \"GET /?password=[redacted]&q=1 HTTP/1.1\" 200 14 \
             \"http://test/login?token=[redacted]\" \"ua\\\"x\""
        ),
        "{line}"
    );
}

// ANCHOR: usr1
#[test]
fn usr1_reopens_the_access_log() {
    let log = TempPath::new("access.usr1.log");
    let moved = TempPath::new("access.usr1.log.1");
    let server = Turnstile::start(&[
        "--workers",
        "2",
        "--access-log",
        log.as_str(),
        "--access-log-format",
        "%(U)s %(s)s",
    ]);
    server.wait_for_workers(2);
    get_with(server.addr(), "/before", &[]);
    wait_for_lines(&log, 1);
    std::fs::rename(&log.0, &moved.0).unwrap();
    server.signal("USR1");
    // Give the workers a moment to take the signal before the next request.
    std::thread::sleep(Duration::from_millis(300));
    get_with(server.addr(), "/after", &[]);
    assert_eq!(wait_for_lines(&log, 1), ["/after 404"]);
    assert_eq!(moved.read(), "/before 404\n");
}
// ANCHOR_END: usr1

// ANCHOR: configured_headers
#[test]
fn configured_headers_apply_in_their_modes_and_hsts_only_over_https() {
    let server = Turnstile::start(&[
        "--header",
        "Cache-Control: no-cache, no-store",
        "--header-if-absent",
        "X-Frame-Options: SAMEORIGIN",
        "--header-append",
        "Vary: Accept-Language",
        "--hsts",
        "max-age=31536000; includeSubDomains",
        "--request-id-header",
        "X-Correlation-Id",
        "--access-log",
        "/dev/null",
    ]);
    let plain = get_with(server.addr(), "/", &[("X-Correlation-Id", "c-1")]);
    assert_eq!(plain.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(plain.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(plain.header("vary"), Some("Accept-Language"));
    assert_eq!(plain.header("x-correlation-id"), Some("c-1"));
    assert_eq!(plain.header("x-request-id"), None);
    assert_eq!(plain.header("strict-transport-security"), None);
    // The proxy on loopback is trusted to say the client used HTTPS.
    let secure = get_with(server.addr(), "/", &[("X-Forwarded-Proto", "https")]);
    assert_eq!(
        secure.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
}
// ANCHOR_END: configured_headers

#[test]
fn bad_layer_settings_stop_the_binary_before_it_listens() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--header", "Connection: close"],
            "describes the connection",
        ),
        (&["--header", "X-Broken"], "expected `Name: value`"),
        (
            &["--access-log-format", "%(h)s %(zz)s"],
            "unknown atom `%(zz)s`",
        ),
        (&["--hsts", "forever"], "invalid Strict-Transport-Security"),
        (
            &["--access-log", "/nonexistent-dir/access.log"],
            "cannot open the access log",
        ),
    ];
    for (args, reason) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} listened");
    }
}

#[test]
fn the_example_tags_and_logs_each_request_of_an_existing_application() {
    let output = Command::new(example("observe_app")).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("  x-request-id: example-1\n"), "{text}");
    assert_eq!(
        text.matches("  x-frame-options: DENY\n").count(),
        3,
        "{text}"
    );
    let access_log = text.split_once("access log:\n").unwrap().1;
    assert!(!access_log.contains("s3cret"), "{access_log}");
    let log: Vec<serde_json::Value> = access_log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The health check was left out.
    assert_eq!(log.len(), 2, "{text}");
    assert_eq!(log[0]["request_id"], "example-1");
    assert_eq!(log[1]["query"], "token=[redacted]&page=2");
}
