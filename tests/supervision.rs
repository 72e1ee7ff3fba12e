//! Supervision that drops no request: keep-alive clients that never retry,
//! through `--max-requests` recycling, `HUP`, `TTIN`/`TTOU`, `USR2` and
//! `TERM`; a reload that cannot boot; the pid file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{
    KeepAliveTally, TempPath, Turnstile, example, fetch, keep_alive_load, parent_of,
    signal_process, wait_until,
};

/// A copy of the binary in a directory of its own, as a deploy leaves it,
/// with its pid file and error log beside it: what `USR2` starts again.
struct Deployed {
    dir: TempPath,
    binary: std::path::PathBuf,
    pidfile: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Deployed {
    fn new(name: &str) -> Self {
        let dir = TempPath::new(name);
        std::fs::create_dir_all(&dir.0).unwrap();
        let binary = dir.0.join("turnstile");
        std::fs::copy(env!("CARGO_BIN_EXE_turnstile"), &binary).unwrap();
        Self {
            pidfile: dir.0.join("turnstile.pid"),
            log: dir.0.join("error.log"),
            binary,
            dir,
        }
    }

    /// The copy, serving `hello` with two workers on a free port, and
    /// `extra` besides.
    fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(["--bind", "127.0.0.1:0", "--workers", "2", "--app", "hello"]);
        command.args(extra);
        command.arg("--pid").arg(&self.pidfile);
        command.arg("--error-logfile").arg(&self.log);
        command
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir.0);
    }
}

fn assert_none_failed(tally: &KeepAliveTally) {
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        tally.failures.len(),
        tally.failures.len() + tally.answers.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
}

#[test]
fn keep_alive_clients_lose_no_request_through_recycling_reloads_ttin_ttou_and_term() {
    let log = TempPath::new("no-drop.log");
    let mut server = Turnstile::start(&[
        "--workers",
        "2",
        "--threads",
        "4",
        "--max-requests",
        "400",
        "--max-requests-jitter",
        "100",
        "--app",
        "hello",
        "--error-logfile",
        log.as_str(),
    ]);
    server.wait_for_workers(2);
    let (stop, stopping) = (AtomicBool::new(false), AtomicBool::new(false));
    let tally = std::thread::scope(|scope| {
        let load =
            scope.spawn(|| keep_alive_load(server.addr(), "/", 32, 200_000, &stop, &stopping));
        let pause = || std::thread::sleep(Duration::from_millis(800));
        pause();
        for signal in ["HUP", "HUP", "TTIN", "TTOU"] {
            server.signal(signal);
            pause();
        }
        stopping.store(true, Ordering::SeqCst);
        server.signal("TERM");
        // Every client ends once the port refuses it; this only bounds the
        // test should one not.
        let limit = std::time::Instant::now() + Duration::from_secs(30);
        while !load.is_finished() && std::time::Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the arbiter exited");
    let text = log.read();
    let recycled = text.matches("requests; retiring").count();
    eprintln!(
        "keep-alive load: {} answered, {} closed by the server with Connection: close, \
         {} refused after TERM, {} failed; {recycled} workers recycled by --max-requests",
        tally.answers.len(),
        tally.closed_by_server,
        tally.refused,
        tally.failures.len()
    );
    assert_none_failed(&tally);
    assert_eq!(status.code(), Some(0));
    assert!(tally.answers.iter().all(|body| body == "Hello, world!\n"));
    assert!(
        recycled >= 2,
        "too little recycling to mean anything: {recycled}\n{text}"
    );
    assert_eq!(
        text.matches("HUP: starting 2 new worker(s)").count(),
        2,
        "{text}"
    );
    assert!(text.contains("TTIN: now 3 worker(s)") && text.contains("TTOU: now 2 worker(s)"));
    // Each client saw the port close: refused, never accepted and reset.
    assert_eq!(tally.refused, 32, "{tally:?}");
}

#[test]
fn max_requests_closes_each_keep_alive_connection_with_its_next_response() {
    let server = Turnstile::start(&["--workers", "1", "--max-requests", "5", "--app", "hello"]);
    server.wait_for_workers(1);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut heads = Vec::new();
    for _ in 0..6 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut buf = [0; 1024];
        let n = stream.read(&mut buf).unwrap();
        heads.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    for head in &heads[..5] {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    // The limit was reached with the fifth: the sixth is served, and says
    // the connection ends, which it then does.
    assert!(heads[5].starts_with("HTTP/1.1 200"), "{}", heads[5]);
    assert!(
        heads[5].to_ascii_lowercase().contains("connection: close"),
        "{}",
        heads[5]
    );
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn term_right_after_start_answers_the_queued_connections_and_refuses_later_ones() {
    let mut server = Turnstile::start(&["--workers", "2", "--app", "hello"]);
    // Queued before the workers are ready, most likely: they are forked as
    // the port opens.
    let mut queued: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    for stream in &mut queued {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    server.signal("TERM");
    for stream in &mut queued {
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("an answer, not a reset");
        // Answered (with `close` if it was read after the stop), then
        // closed: at the latest when its keep-alive time ended.
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the arbiter exited");
    assert_eq!(status.code(), Some(0));
    let refused = TcpStream::connect(server.addr()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_reload_whose_three_new_workers_cannot_load_keeps_the_old_ones_and_a_later_one_succeeds() {
    let config = TempPath::new("reload.toml");
    let log = TempPath::new("reload.log");
    std::fs::write(&config.0, "app = \"hello\"\n").unwrap();
    let mut server = Turnstile::start(&[
        "--workers",
        "3",
        "--config",
        config.as_str(),
        "--error-logfile",
        log.as_str(),
    ]);
    let old = server.wait_for_workers(3);
    std::fs::write(&config.0, "app = \"broken\"\n").unwrap();
    server.signal("HUP");
    wait_until(Duration::from_secs(15), || {
        log.read().contains("the reload failed").then_some(())
    })
    .unwrap_or_else(|| panic!("no failed reload logged:\n{}", log.read()));
    // The new ones are gone, the old ones serve on, the arbiter with them.
    let settled = wait_until(Duration::from_secs(10), || {
        (server.workers() == old).then_some(())
    });
    assert!(
        settled.is_some(),
        "{:?} != {old:?}\n{}",
        server.workers(),
        log.read()
    );
    for _ in 0..10 {
        assert_eq!(
            fetch(server.addr(), "/"),
            Ok((200, "Hello, world!\n".into()))
        );
    }
    assert!(server.child.try_wait().unwrap().is_none(), "{}", log.read());
    // A good reload after it replaces them.
    std::fs::write(&config.0, "app = \"hello\"\n").unwrap();
    server.signal("HUP");
    let new = wait_until(Duration::from_secs(15), || {
        let now = server.workers();
        (now.len() == 3 && now.is_disjoint(&old)).then_some(now)
    });
    assert!(new.is_some(), "{}", log.read());
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Hello, world!\n".into()))
    );
}

#[test]
fn usr2_upgrades_to_a_new_build_under_load_without_a_failed_request() {
    let deployed = Deployed::new("upgrade");
    let (binary, pidfile) = (deployed.binary.clone(), deployed.pidfile.clone());
    let dir = &deployed.dir;
    let provisional = dir.0.join("turnstile.pid.2");
    let command = deployed.command(&["--threads", "4"]);
    let mut server = Turnstile::start_command(command);
    let old = server.pid();
    server.wait_for_workers(2);
    let read_pid = |path: &std::path::Path| -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    assert_eq!(read_pid(&pidfile), Some(old));
    let (stop, never) = (AtomicBool::new(false), AtomicBool::new(false));
    let addr = server.addr().to_owned();
    let (tally, new) = std::thread::scope(|scope| {
        let load = scope.spawn(|| keep_alive_load(&addr, "/", 16, 200_000, &stop, &never));
        std::thread::sleep(Duration::from_millis(300));
        // A different build takes the file's place, as a deploy does; the
        // running arbiter keeps the old one open.
        let staged = dir.0.join("turnstile.new");
        std::fs::copy(example("own_app"), &staged).unwrap();
        std::fs::rename(&staged, &binary).unwrap();
        server.signal("USR2");
        let new = wait_until(Duration::from_secs(15), || read_pid(&provisional))
            .expect("the upgraded arbiter wrote its pid file");
        assert_eq!(parent_of(new), Some(old));
        wait_until(Duration::from_secs(15), || {
            fetch(&addr, "/")
                .is_ok_and(|(_, body)| body == "Hello from own_app\n")
                .then_some(())
        })
        .expect("the new build serves");
        // The old arbiter is told to go; its workers finish.
        server.signal("TERM");
        let status = server
            .wait_exit(Duration::from_secs(30))
            .expect("the old arbiter exited");
        assert_eq!(status.code(), Some(0));
        wait_until(Duration::from_secs(10), || {
            (read_pid(&pidfile) == Some(new)).then_some(())
        })
        .expect("the new arbiter took the pid file's name");
        assert!(!provisional.exists());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (load.join().unwrap(), new)
    });
    let old_build = tally
        .answers
        .iter()
        .filter(|b| *b == "Hello, world!\n")
        .count();
    let new_build = tally
        .answers
        .iter()
        .filter(|b| *b == "Hello from own_app\n")
        .count();
    eprintln!(
        "USR2 under load: {old_build} answered by the old build, {new_build} by the new, {} failed",
        tally.failures.len()
    );
    assert_none_failed(&tally);
    assert!(old_build > 0 && new_build > 0);
    assert_eq!(old_build + new_build, tally.answers.len());
    signal_process(new, "TERM");
    // It removes its pid file as it exits.
    let gone = wait_until(Duration::from_secs(30), || {
        (!pidfile.exists()).then_some(())
    });
    assert!(gone.is_some(), "the upgraded arbiter did not stop");
}

#[test]
fn signals_the_arbiter_does_not_use_are_logged_and_ignored() {
    let log = TempPath::new("ignored-signals.log");
    let mut server = Turnstile::start(&[
        "--workers",
        "1",
        "--app",
        "hello",
        "--error-logfile",
        log.as_str(),
    ]);
    let workers = server.wait_for_workers(1);
    // Each of these would end a process by its default action.
    let ignored = [
        "ALRM", "VTALRM", "PROF", "IO", "PWR", "XCPU", "XFSZ", "STKFLT",
    ];
    for signal in ignored {
        server.signal(signal);
    }
    let logged = wait_until(Duration::from_secs(10), || {
        let text = log.read();
        ignored
            .iter()
            .all(|signal| text.contains(&format!("SIG{signal} ignored")))
            .then_some(())
    });
    assert!(logged.is_some(), "{}", log.read());
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the arbiter ended"
    );
    assert_eq!(server.workers(), workers, "a worker was replaced");
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Hello, world!\n".into()))
    );
}

#[test]
fn an_upgrade_that_cannot_boot_leaves_the_old_arbiter_serving_with_its_pid_file() {
    let deployed = Deployed::new("failed-upgrade");
    let (binary, pidfile, log) = (
        deployed.binary.clone(),
        deployed.pidfile.clone(),
        deployed.log.clone(),
    );
    let dir = &deployed.dir;
    let command = deployed.command(&[]);
    let server = Turnstile::start_command(command);
    let old = server.pid();
    let workers = server.wait_for_workers(2);
    // A build that exits at once, as one whose settings are now invalid does.
    let staged = dir.0.join("turnstile.new");
    std::fs::write(&staged, "#!/bin/sh\nexit 2\n").unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &binary).unwrap();
    server.signal("USR2");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let failed = wait_until(Duration::from_secs(15), || {
        read_log()
            .contains("exited with code 2; this one keeps serving")
            .then_some(())
    });
    assert!(failed.is_some(), "{}", read_log());
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        old.to_string()
    );
    assert_eq!(server.workers(), workers);
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Hello, world!\n".into()))
    );
    drop(server);
}

#[test]
fn a_worker_killed_outright_loses_at_most_the_requests_it_was_serving() {
    let server = Turnstile::start(&["--workers", "2", "--threads", "4", "--app", "hello"]);
    let workers = server.wait_for_workers(2);
    let victim = *workers.iter().next().unwrap();
    let (stop, never) = (AtomicBool::new(false), AtomicBool::new(false));
    const CLIENTS: usize = 16;
    let tally = std::thread::scope(|scope| {
        let load =
            scope.spawn(|| keep_alive_load(server.addr(), "/", CLIENTS, 200_000, &stop, &never));
        std::thread::sleep(Duration::from_millis(500));
        signal_process(victim, "KILL");
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!(
        "kill -9 under load: {} answered, {} failed",
        tally.answers.len(),
        tally.failures.len()
    );
    // A connection has at most one request in flight, and only the
    // victim's connections were cut.
    assert!(
        tally.failures.len() <= CLIENTS,
        "{} failed: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(!server.workers().contains(&victim));
}
