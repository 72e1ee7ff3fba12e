//! The arbiter and its workers as real processes, driven by real signals.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{TempPath, Turnstile, example, fetch, load, signal_process, wait_until};

/// The `pid` of each JSON answer.
fn pids(answers: &[String]) -> HashSet<u64> {
    answers
        .iter()
        .map(|body| {
            let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
            json["pid"].as_u64().unwrap()
        })
        .collect()
}

/// Requests `target` in rounds of 16 concurrent clients until answers
/// came from `count` different workers (at most 20 rounds).
fn answers_from_workers(server: &Turnstile, target: &str, count: usize) -> Vec<String> {
    let stop = AtomicBool::new(false);
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (round, failures) = load(server.addr(), target, 16, 4, &stop);
        assert!(failures.is_empty(), "{failures:?}");
        answers.extend(round);
        if pids(&answers).len() >= count {
            break;
        }
    }
    answers
}

#[test]
fn two_workers_serve_under_one_arbiter_with_distinct_request_ids() {
    let server = Turnstile::start(&["--workers", "2", "--app", "environ", "--threads", "2"]);
    let workers = server.wait_for_workers(2);
    let answers = answers_from_workers(&server, "/", 2);
    let served_by = pids(&answers);
    assert_eq!(
        served_by,
        workers.iter().map(|pid| u64::from(*pid)).collect(),
        "both workers serve, and only they do"
    );
    let ids: Vec<String> = answers
        .iter()
        .map(|body| {
            let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
            json["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a request id was repeated");
    // Each worker reseeded its ids after the fork: the prefixes differ.
    let prefixes: HashSet<&str> = ids.iter().map(|id| &id[..18]).collect();
    assert_eq!(prefixes.len(), 2, "{prefixes:?}");
}

#[test]
fn a_killed_worker_is_replaced() {
    let server = Turnstile::start(&["--workers", "2", "--threads", "2"]);
    let before = server.wait_for_workers(2);
    let victim = *before.iter().next().unwrap();
    signal_process(victim, "KILL");
    let after = wait_until(Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    })
    .expect("the killed worker was replaced");
    assert_eq!(before.intersection(&after).count(), 1);
    assert_eq!(fetch(server.addr(), "/healthz").unwrap().0, 200);
}

#[test]
fn ttin_and_ttou_add_and_remove_workers_but_never_the_last() {
    let server = Turnstile::start(&["--workers", "1", "--threads", "1"]);
    server.wait_for_workers(1);
    server.signal("TTIN");
    server.wait_for_workers(2);
    server.signal("TTIN");
    server.wait_for_workers(3);
    for _ in 0..3 {
        server.signal("TTOU");
        std::thread::sleep(Duration::from_millis(300));
    }
    server.wait_for_workers(1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.workers().len(), 1, "TTOU went below one worker");
    assert_eq!(fetch(server.addr(), "/healthz").unwrap().0, 200);
}

#[test]
fn hup_replaces_every_worker_under_load_without_a_failed_request() {
    let server = Turnstile::start(&["--workers", "2", "--threads", "4", "--app", "environ"]);
    let old = server.wait_for_workers(2);
    let stop = AtomicBool::new(false);
    let (answers, failures, new) = std::thread::scope(|scope| {
        let load = scope.spawn(|| load(server.addr(), "/", 4, 5_000, &stop));
        std::thread::sleep(Duration::from_millis(500));
        server.signal("HUP");
        let new = wait_until(Duration::from_secs(15), || {
            let now = server.workers();
            (now.len() == 2 && now.is_disjoint(&old)).then_some(now)
        });
        // Keep the load on the new workers for a moment.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let (answers, failures) = load.join().unwrap();
        (answers, failures, new)
    });
    let new = new.expect("every worker was replaced");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let served_by = pids(&answers);
    assert!(
        old.iter().any(|pid| served_by.contains(&u64::from(*pid)))
            && new.iter().any(|pid| served_by.contains(&u64::from(*pid))),
        "the load reached the old and the new workers"
    );
}

#[test]
fn term_lets_a_slow_request_finish_and_exits_0() {
    let mut server = Turnstile::start(&["--workers", "2", "--threads", "2"]);
    server.wait_for_workers(2);
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| fetch(server.addr(), "/slow?ms=1500"));
        std::thread::sleep(Duration::from_millis(400));
        server.signal("TERM");
        assert_eq!(slow.join().unwrap(), Ok((200, "slept\n".to_owned())));
    });
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the arbiter exited");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_stuck_worker_is_aborted_and_replaced_and_its_request_named() {
    let log = TempPath::new("timeout.log");
    let server = Turnstile::start(&[
        "--workers",
        "1",
        "--threads",
        "2",
        "--timeout",
        "2",
        "--error-logfile",
        log.as_str(),
    ]);
    let stuck_worker = *server.wait_for_workers(1).iter().next().unwrap();
    let started = Instant::now();
    let answer = fetch(server.addr(), "/slow?ms=60000&token=secret");
    let waited = started.elapsed();
    assert!(
        answer.is_err(),
        "the stuck request was answered: {answer:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
        "aborted after {waited:?}, with a 2 s timeout"
    );
    let replacement = wait_until(Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 1 && !now.contains(&stuck_worker)).then_some(now)
    });
    assert!(replacement.is_some(), "the stuck worker was not replaced");
    let text = wait_until(Duration::from_secs(5), || {
        let text = log.read();
        text.contains("aborted by the arbiter's timeout")
            .then_some(text)
    })
    .unwrap_or_else(|| log.read());
    assert!(text.contains("WORKER TIMEOUT"), "{text}");
    assert!(text.contains("GET /slow (request "), "{text}");
    assert!(
        text.contains(&format!("worker 1 (pid {stuck_worker}) aborted")),
        "{text}"
    );
    assert!(!text.contains("secret"), "the query string reached the log");
    assert_eq!(fetch(server.addr(), "/healthz").unwrap().0, 200);
}

#[test]
fn max_requests_recycles_workers_without_a_failed_request() {
    let server = Turnstile::start(&[
        "--workers",
        "2",
        "--threads",
        "2",
        "--app",
        "environ",
        "--max-requests",
        "20",
        "--max-requests-jitter",
        "5",
    ]);
    let first = server.wait_for_workers(2);
    let stop = AtomicBool::new(false);
    let (answers, failures) = load(server.addr(), "/", 4, 60, &stop);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(answers.len(), 240);
    let served_by = pids(&answers);
    // 240 requests at most 25 per worker: at least ten workers served.
    assert!(served_by.len() >= 10, "{} workers served", served_by.len());
    assert!(server.workers().is_disjoint(&first));
}

#[test]
fn preload_gives_each_worker_its_own_per_process_resource() {
    let server = Turnstile::start(&["--workers", "2", "--threads", "2", "--preload"]);
    server.wait_for_workers(2);
    let answers = answers_from_workers(&server, "/per-process", 2);
    let mut workers = HashSet::new();
    for body in &answers {
        let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(
            json["built_by"], json["pid"],
            "a resource crossed the fork: {json}"
        );
        assert_ne!(json["built_by"], server.pid());
        workers.insert(json["pid"].as_u64().unwrap());
    }
    assert_eq!(workers.len(), 2);
}

#[test]
fn a_broken_application_stops_the_arbiter_instead_of_fork_looping() {
    let log = TempPath::new("broken.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--bind", "127.0.0.1:0", "--workers", "2", "--app", "broken"])
        .args(["--error-logfile", log.as_str()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_until(Duration::from_secs(20), || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the arbiter kept running: {}", log.read());
    };
    assert_eq!(status.code(), Some(4), "{}", log.read());
    let text = log.read();
    assert!(text.contains("the application failed to load"), "{text}");
    assert!(text.matches("booting worker").count() <= 2, "{text}");

    // Preloaded, it fails in the arbiter, before anything listens.
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--bind", "127.0.0.1:0", "--app", "broken", "--preload"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert!(output.stdout.is_empty(), "it listened");
}

#[test]
fn usr1_reopens_the_log_file_in_the_arbiter_and_the_workers() {
    let log = TempPath::new("usr1.log");
    let moved = TempPath::new("usr1.log.1");
    let server = Turnstile::start(&[
        "--workers",
        "2",
        "--threads",
        "1",
        "--error-logfile",
        log.as_str(),
    ]);
    server.wait_for_workers(2);
    std::fs::rename(&log.0, &moved.0).unwrap();
    server.signal("USR1");
    let text = wait_until(Duration::from_secs(5), || {
        let text = log.read();
        (text.matches("log files reopened").count() == 3).then_some(text)
    })
    .unwrap_or_else(|| panic!("reopened log: {:?}", log.read()));
    assert!(text.contains("USR1"), "{text}");
    assert!(moved.read().contains("booting worker"));
}

#[test]
fn several_binds_and_a_unix_socket_all_serve() {
    let socket = TempPath::new("bind.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--bind",
            &format!("unix:{}", socket.as_str()),
        ])
        .args(["--workers", "1", "--threads", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let tcp = lines.next().unwrap().unwrap();
    let unix = lines.next().unwrap().unwrap();
    assert_eq!(
        unix,
        format!("turnstile: listening on unix:{}", socket.as_str())
    );
    let addr = tcp.strip_prefix("turnstile: listening on http://").unwrap();
    let answer = wait_until(Duration::from_secs(10), || fetch(addr, "/healthz").ok());
    assert_eq!(answer, Some((200, "ok\n".to_owned())));

    let mut stream = std::os::unix::net::UnixStream::connect(&socket.0).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");

    signal_process(child.id(), "TERM");
    let status = wait_until(Duration::from_secs(10), || child.try_wait().unwrap()).unwrap();
    assert!(status.success());
    assert!(!socket.0.exists(), "the socket file was left behind");
}

#[test]
fn systemd_socket_activation_serves_on_the_passed_socket() {
    let Some(activate) = crate::support::tool("systemd-socket-activate") else {
        return;
    };
    // Find a free port, then let systemd-socket-activate bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(activate)
        .args(["--listen", &addr, env!("CARGO_BIN_EXE_turnstile")])
        .args(["--bind", "127.0.0.1:1", "--workers", "1", "--threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // It starts Turnstile on the first connection, with the socket as fd 3.
    let answer = wait_until(Duration::from_secs(10), || fetch(&addr, "/healthz").ok());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    signal_process(child.id(), "TERM");
    let status = wait_until(Duration::from_secs(10), || child.try_wait().unwrap());
    assert_eq!(answer, Some((200, "ok\n".to_owned())));
    // The passed socket replaced the configured bind.
    assert_eq!(
        line.trim(),
        format!("turnstile: listening on http://{addr}")
    );
    assert!(status.is_some_and(|status| status.success()));
}

#[test]
fn the_post_fork_example_goes_wrong_shared_and_right_per_process() {
    let example = example("post_fork");
    let output = Command::new(&example)
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("a connection per process (post_fork): 0 of 400 answers were wrong"),
        "{text}"
    );
    let shared = text
        .lines()
        .find_map(|line| line.strip_prefix("one connection shared across the fork: "))
        .and_then(|rest| rest.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(shared > 0, "sharing the connection went unnoticed: {text}");
}

#[test]
fn every_hook_runs_in_its_process_and_resources_are_torn_down_where_built() {
    let example = example("hooks");
    let mut child = Command::new(&example)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let arbiter = child.id();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("the example printed its address")
            .unwrap();
        if let Some(addr) = line.strip_prefix("turnstile: listening on http://") {
            break addr.to_owned();
        }
        seen.push(line);
    };
    let answer = wait_until(Duration::from_secs(10), || fetch(&addr, "/hello").ok());
    assert!(answer.is_some_and(|(status, _)| status == 200));
    std::thread::sleep(Duration::from_millis(200));
    signal_process(arbiter, "TERM");
    seen.extend(lines.map_while(Result::ok));
    let status = wait_until(Duration::from_secs(10), || child.try_wait().unwrap()).unwrap();
    assert!(status.success());

    let text = seen.join("\n");
    let pid_of = |prefix: &str| -> Vec<u32> {
        seen.iter()
            .filter(|line| line.starts_with(prefix))
            .map(|line| line.rsplit("pid=").next().unwrap().parse().unwrap())
            .collect()
    };
    let position = |needle: &str| {
        seen.iter()
            .position(|line| line.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    for in_arbiter in [
        "on_starting",
        "when_ready",
        "pre_fork",
        "child_exit",
        "on_exit",
    ] {
        let pids = pid_of(in_arbiter);
        assert!(
            !pids.is_empty() && pids.iter().all(|pid| *pid == arbiter),
            "{in_arbiter}:\n{text}"
        );
    }
    assert_eq!(pid_of("pre_fork").len(), 2);
    assert_eq!(pid_of("child_exit").len(), 2);
    for in_worker in [
        "post_fork",
        "post_worker_init",
        "worker_exit",
        "pre_request",
        "post_request",
    ] {
        let pids = pid_of(in_worker);
        assert!(
            !pids.is_empty() && !pids.contains(&arbiter),
            "{in_worker}:\n{text}"
        );
    }
    for worker in 1..=2 {
        let order = [
            format!("pre_fork worker={worker}"),
            format!("post_fork worker={worker}"),
            format!("post_worker_init worker={worker}"),
            format!("worker_exit worker={worker}"),
            format!("child_exit worker={worker}"),
        ];
        let positions: Vec<usize> = order.iter().map(|needle| position(needle)).collect();
        assert!(
            positions.is_sorted(),
            "worker {worker}'s hooks out of order:\n{text}"
        );
    }
    assert!(text.contains("pre_request /hello"), "{text}");
    assert!(text.contains("post_request /hello status=200"), "{text}");
    // The worker that served the request built its session, and dropped it
    // itself as it exited.
    let server = pid_of("post_request")[0];
    assert!(
        text.contains(&format!("teardown session opened_by={server} pid={server}")),
        "{text}"
    );
    assert!(position("teardown session") > position("post_request"));
    assert!(position("on_exit") == seen.len() - 1, "{text}");
}

#[test]
fn quit_stops_at_once_without_waiting_for_requests() {
    let mut server = Turnstile::start(&["--workers", "1", "--threads", "2"]);
    server.wait_for_workers(1);
    let addr = server.addr().to_owned();
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| fetch(&addr, "/slow?ms=20000"));
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        server.signal("QUIT");
        let status = server
            .wait_exit(Duration::from_secs(5))
            .expect("the arbiter exited");
        assert_eq!(status.code(), Some(0));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            slow.join().unwrap().is_err(),
            "the slow request was not cut short"
        );
    });
}
