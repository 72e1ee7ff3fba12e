use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use turnstile::middleware::error_capture::sentry::protocol::Event;

use crate::support::{SentryReceiver, TempPath, Turnstile, example, fetch, get_with, wait_until};

/// The secrets a browser's request carries, each with a value to look for.
const SECRET_HEADERS: [(&str, &str); 4] = [
    ("Authorization", "Bearer auth-s3cret"),
    ("Cookie", "sessionid=cookie-s3cret"),
    ("X-Api-Key", "key-s3cret"),
    ("Referer", "http://test/reset?token=ref-s3cret"),
];
const SECRET_VALUES: [&str; 6] = [
    "ref-s3cret",
    "auth-s3cret",
    "cookie-s3cret",
    "key-s3cret",
    "pw-s3cret",
    "tok-s3cret",
];

fn start_reporting(receiver: &SentryReceiver, args: &[&str]) -> Turnstile {
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    command
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("SENTRY_DSN", receiver.dsn());
    Turnstile::start_command(command)
}

fn exception_type<'a>(event: &'a Event<'static>) -> Option<&'a str> {
    event
        .exception
        .last()
        .map(|exception| exception.ty.as_str())
}

/// The URL of the request an event carries.
fn url<'a>(event: &'a Event<'static>) -> &'a str {
    let request = event.request.as_ref().expect("the request is attached");
    request.url.as_ref().expect("a URL").as_str()
}

fn of_type<'a>(events: &'a [Event<'static>], ty: &str) -> Vec<&'a Event<'static>> {
    events
        .iter()
        .filter(|event| exception_type(event) == Some(ty))
        .collect()
}

// ANCHOR: acceptance
#[test]
fn failures_answer_500_and_are_reported_once_scrubbed_and_none_is_lost_at_term() {
    let receiver = SentryReceiver::start();
    let log = TempPath::new("errors.log");
    let mut server = start_reporting(
        &receiver,
        &[
            "--workers",
            "2",
            "--timeout",
            "3",
            "--error-log",
            log.as_str(),
        ],
    );
    let workers = server.wait_for_workers(2);

    let mut ids = Vec::new();
    for path in [
        "/panic?user=ann&password=pw-s3cret",
        "/error?password=pw-s3cret",
    ] {
        let reply = get_with(server.addr(), path, &SECRET_HEADERS);
        assert_eq!(reply.status, 500, "{path}");
        assert_eq!(reply.body, "Internal Server Error\n", "{path}");
        ids.push(reply.header("x-request-id").unwrap().to_owned());
    }
    assert_eq!(get_with(server.addr(), "/", &SECRET_HEADERS).status, 200);

    let events = receiver.wait_for_events(2, Duration::from_secs(10));
    let panics = of_type(&events, "panic");
    assert_eq!(panics.len(), 1, "{events:?}");
    let panic = panics[0];
    assert_eq!(
        panic.request.as_ref().unwrap().method.as_deref(),
        Some("GET")
    );
    assert_eq!(url(panic), "http://test/panic?user=ann&password=[redacted]");
    assert_eq!(panic.tags["request_id"], ids[0]);
    let pid: u32 = panic.tags["worker_pid"].parse().unwrap();
    assert!(workers.contains(&pid), "{pid} is not a worker: {workers:?}");
    assert!(panic.release.is_some() && panic.environment.is_some());
    assert!(panic.server_name.is_some());
    let stack = panic.exception[0].stacktrace.as_ref().expect("a stack");
    assert!(
        stack.frames.iter().any(|frame| {
            frame
                .function
                .as_deref()
                .is_some_and(|function| function.contains("apps::demo"))
        }),
        "the panic's stack names the demo application"
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|event| exception_type(event) != Some("panic"))
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(errors[0].tags["request_id"], ids[1]);
    assert!(url(errors[0]).starts_with("http://test/error?"));

    // A request past --timeout: the arbiter aborts its worker, which
    // reports it before dying.
    let stuck = std::thread::spawn({
        let addr = server.addr().to_owned();
        move || fetch(&addr, "/slow?ms=30000&token=tok-s3cret")
    });
    let events = wait_until(Duration::from_secs(20), || {
        let events = receiver.events();
        (!of_type(&events, "WorkerTimeout").is_empty()).then_some(events)
    })
    .expect("the stuck request is reported");
    let timeout = of_type(&events, "WorkerTimeout")[0];
    let value = timeout.exception[0].value.as_deref().unwrap();
    assert!(
        value.starts_with("GET /slow was still running after "),
        "{value}"
    );
    assert_eq!(url(timeout), "http://test/slow");
    assert_eq!(timeout.tags["request_id"].len(), 36);
    assert!(
        stuck.join().unwrap().is_err(),
        "the stuck request got no answer"
    );
    server.wait_for_workers(2);

    // Failures just before TERM: every event is sent as the workers stop.
    for n in 0..20 {
        assert_eq!(
            fetch(server.addr(), &format!("/error?n={n}")).unwrap().0,
            500
        );
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).unwrap().success());
    let events = receiver.wait_for_events(23, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let events = if receiver.events().len() == events.len() {
        events
    } else {
        receiver.events()
    };
    assert_eq!(
        events.len(),
        23,
        "exactly one event per failure: {events:?}"
    );
    let errors: HashSet<&str> = events
        .iter()
        .filter_map(|event| event.request.as_ref()?.query_string.as_deref())
        .filter(|query| query.starts_with("n="))
        .collect();
    assert_eq!(errors.len(), 20);

    // Nothing secret anywhere in what was sent.
    for envelope in receiver.envelopes() {
        for secret in SECRET_VALUES {
            assert!(!envelope.contains(secret), "{secret} was sent: {envelope}");
        }
    }
    let log = log.read();
    let panic_line = log
        .lines()
        .find(|line| line.contains("GET /panic panicked at"))
        .unwrap_or_else(|| panic!("no panic line in {log}"));
    assert!(
        panic_line.contains(&format!("request_id={}", ids[0])),
        "{panic_line}"
    );
    assert!(panic_line.contains("sentry_event_id="), "{panic_line}");
    assert!(
        log.contains("the stuck request was reported to Sentry"),
        "{log}"
    );
    for secret in SECRET_VALUES {
        assert!(!log.contains(secret), "{secret} was logged: {log}");
    }
}
// ANCHOR_END: acceptance

#[test]
fn a_worker_serves_on_after_100_panics() {
    let receiver = SentryReceiver::start();
    let server = start_reporting(&receiver, &["--workers", "2", "--threads", "4"]);
    let workers = server.wait_for_workers(2);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..25)
                        .map(|_| fetch(server.addr(), "/panic").unwrap().0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect()
    });
    assert_eq!(statuses, [500; 100]);
    assert_eq!(fetch(server.addr(), "/").unwrap().0, 200);
    assert_eq!(server.workers(), workers, "no worker died or was replaced");
    let events = receiver.wait_for_events(100, Duration::from_secs(30));
    assert_eq!(of_type(&events, "panic").len(), 100);
}

#[test]
fn without_a_dsn_a_failure_is_logged_with_its_request_id() {
    let log = TempPath::new("errors-no-dsn.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    command
        .args(["--bind", "127.0.0.1:0", "--error-log", log.as_str()])
        .env_remove("SENTRY_DSN");
    let server = Turnstile::start_command(command);
    let reply = get_with(server.addr(), "/error?token=tok-s3cret", &SECRET_HEADERS);
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, "Internal Server Error\n");
    let id = reply.header("x-request-id").unwrap();
    let line = wait_until(Duration::from_secs(5), || {
        log.read()
            .lines()
            .find(|line| line.contains("GET /error failed"))
            .map(str::to_owned)
    })
    .expect("the failure is logged");
    assert!(line.contains("[ERROR] turnstile::errors: "), "{line}");
    assert!(line.contains(&format!("request_id={id}")), "{line}");
    assert!(!line.contains("sentry_event_id"), "{line}");
    assert!(!line.contains("tok-s3cret"), "{line}");
}

#[test]
fn bad_sentry_settings_exit_2_before_anything_starts() {
    for (args, env, named) in [
        (&["--sentry-dsn", "not a dsn"][..], None, "sentry_dsn"),
        (&[][..], Some("sentry.invalid/1"), "sentry_dsn"),
        (
            &["--sentry-sample-rate", "2"][..],
            None,
            "sentry_sample_rate",
        ),
        (
            &["--sentry-capture-statuses", "5xx"][..],
            None,
            "sentry_capture_statuses",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
        command
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env_remove("SENTRY_DSN");
        if let Some(dsn) = env {
            command.env("SENTRY_DSN", dsn);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("invalid {named}")), "{stderr}");
        assert!(
            output.stdout.is_empty(),
            "nothing started: {:?}",
            output.stdout
        );
    }
}

#[test]
fn the_example_reports_an_error_a_panic_and_a_stuck_request() {
    let receiver = SentryReceiver::start();
    let mut command = Command::new(example("error_capture_app"));
    command.arg("127.0.0.1:0").env("SENTRY_DSN", receiver.dsn());
    let server = Turnstile::start_command(command);
    server.wait_for_workers(2);
    assert_eq!(fetch(server.addr(), "/orders/12").unwrap().1, "order 12\n");
    for path in ["/orders/twelve", "/checkout"] {
        let (status, body) = fetch(server.addr(), path).unwrap();
        assert_eq!(
            (status, body.as_str()),
            (500, "Internal Server Error\n"),
            "{path}"
        );
    }
    assert!(fetch(server.addr(), "/report").is_err());
    let events = receiver.wait_for_events(3, Duration::from_secs(20));
    let types: HashSet<_> = events.iter().filter_map(exception_type).collect();
    assert_eq!(
        types,
        HashSet::from(["ParseIntError", "panic", "WorkerTimeout"]),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|event| event.environment.as_deref() == Some("example"))
    );
}

#[test]
fn events_queued_by_a_recycled_worker_are_sent_and_the_arbiter_never_reports() {
    let receiver = SentryReceiver::start();
    // Preloaded: the layer is built in the arbiter, its client only in the
    // workers.
    let server = start_reporting(
        &receiver,
        &["--workers", "2", "--max-requests", "5", "--preload"],
    );
    server.wait_for_workers(2);
    for n in 0..24 {
        assert_eq!(
            fetch(server.addr(), &format!("/error?n={n}")).unwrap().0,
            500
        );
    }
    let events = receiver.wait_for_events(24, Duration::from_secs(20));
    assert_eq!(
        events.len(),
        24,
        "one event per failure, none lost to recycling"
    );
    let pids: HashSet<&str> = events
        .iter()
        .map(|event| event.tags["worker_pid"].as_str())
        .collect();
    assert!(pids.len() >= 4, "the workers were recycled: {pids:?}");
    assert_eq!(
        threads(server.pid()),
        ["turnstile"],
        "the arbiter runs one thread, and no Sentry transport"
    );
    // A worker that has reported runs Sentry's transport thread. The one
    // that served the next failure may retire at once (its fifth request),
    // so a few are tried.
    let transport = wait_until(Duration::from_secs(10), || {
        fetch(server.addr(), "/error").ok()?;
        server
            .workers()
            .into_iter()
            .flat_map(threads)
            .find(|name| name.starts_with("sentry-trans"))
    });
    assert!(transport.is_some(), "no worker runs Sentry's transport");
}

/// The names of a process's threads, from `/proc` (at most 15 bytes each).
fn threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_sentry_that_never_answers_does_not_hold_up_the_exit() {
    // Accepts connections and reads nothing: a Sentry that hangs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dsn = format!("http://public@{}/1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(16).flatten().collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    command
        .args(["--bind", "127.0.0.1:0", "--workers", "2"])
        .env("SENTRY_DSN", &dsn);
    let mut server = Turnstile::start_command(command);
    server.wait_for_workers(2);
    for _ in 0..10 {
        assert_eq!(fetch(server.addr(), "/error").unwrap().0, 500);
    }
    let stopping = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert!(status.success());
    // The client's 2 s shutdown_timeout, and a little; the graceful
    // timeout (30 s) is nowhere near.
    assert!(
        stopping.elapsed() < Duration::from_secs(6),
        "stopping took {:?}",
        stopping.elapsed()
    );
}
