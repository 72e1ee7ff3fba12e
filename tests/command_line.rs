//! Gunicorn's command line: the flags its users reach for, each checked by
//! what it does, not only that it parses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::{OtlpReceiver, TempPath, Turnstile, fetch, wait_until};

fn raw(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn check_config(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .arg("--check-config")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn gunicorns_spellings_do_what_ours_do() {
    let log = TempPath::new("log-file.log");
    let server = Turnstile::start(&[
        "--app",
        "hello",
        "--keep-alive",
        "0",
        "--limit-request-field_size",
        "64",
        "--log-file",
        log.as_str(),
    ]);
    server.wait_for_workers(1);
    // No keep-alive: the response closes the connection, which then ends.
    let answer = raw(server.addr(), "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let long = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Long: {}\r\n\r\n",
        "a".repeat(100)
    );
    let refused = raw(server.addr(), &long);
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    assert!(
        log.read().contains("arbiter started"),
        "--log-file is the error log"
    );
}

#[test]
fn chdir_and_name_change_the_processes() {
    let dir = TempPath::new("chdir");
    std::fs::create_dir_all(&dir.0).unwrap();
    let dir_arg = dir.as_str().to_owned();
    let server = Turnstile::start(&[
        "--app",
        "hello",
        "--chdir",
        &dir_arg,
        "--pid",
        "turnstile.pid",
        "--name",
        "bookshop",
    ]);
    let workers = server.wait_for_workers(1);
    let worker = *workers.iter().next().unwrap();
    // The relative pid file is in the directory changed to.
    let written = std::fs::read_to_string(dir.0.join("turnstile.pid")).unwrap();
    assert_eq!(written.trim(), server.pid().to_string());
    let cwd = std::fs::read_link(format!("/proc/{worker}/cwd")).unwrap();
    assert_eq!(cwd, std::fs::canonicalize(&dir.0).unwrap());
    // What `ps aux` shows, and what `ps -o comm` shows.
    let cmdline = |pid: u32| {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_owned()
    };
    assert_eq!(cmdline(server.pid()), "turnstile: arbiter [bookshop]");
    assert_eq!(cmdline(worker), "turnstile: worker [bookshop]");
    let comm = std::fs::read_to_string(format!("/proc/{worker}/comm")).unwrap();
    assert_eq!(comm.trim(), "turnstile: work");
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Hello, world!\n".into()))
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn env_sets_what_the_workers_see_as_they_build_the_application() {
    // The exporter is built in each worker from OTEL_* variables: here they
    // come only from -e and --env.
    let receiver = OtlpReceiver::start_counting();
    let endpoint = format!("OTEL_EXPORTER_OTLP_ENDPOINT={}", receiver.endpoint());
    let mut command = crate::support::command(env!("CARGO_BIN_EXE_turnstile").as_ref());
    command
        .args(["--bind", "127.0.0.1:0", "-e", &endpoint])
        .args([
            "--env",
            "OTEL_SERVICE_NAME=bookshop",
            "--env",
            "OTEL_BSP_SCHEDULE_DELAY=600000",
        ]);
    let mut server = Turnstile::start_command(command);
    server.wait_for_workers(1);
    for _ in 0..3 {
        assert_eq!(fetch(server.addr(), "/").map(|(status, _)| status), Ok(200));
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());
    let counted = wait_until(Duration::from_secs(10), || {
        (receiver.spans_counted("bookshop") >= 3).then_some(())
    });
    assert!(
        counted.is_some(),
        "{} spans as bookshop",
        receiver.spans_counted("bookshop")
    );
}

#[test]
fn user_and_group_are_the_workers_and_not_the_arbiters() {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let server = Turnstile::start(&["--app", "hello", "--user", "nobody", "--group", "65534"]);
    let workers = server.wait_for_workers(1);
    let ids = |pid: u32, field: &str| -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with(field))
            .unwrap()
            .to_owned();
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    let worker = *workers.iter().next().unwrap();
    assert_eq!(ids(worker, "Uid:"), "65534");
    assert_eq!(ids(worker, "Gid:"), "65534");
    assert_eq!(ids(server.pid(), "Uid:"), "0");
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Hello, world!\n".into()))
    );
    // An unknown user stops it before anything starts.
    let (code, message) = check_config(&["--user", "no-such-user-here"]);
    assert_eq!(code, Some(2));
    assert!(message.contains("no user named"), "{message}");
}

#[test]
fn reuse_port_lets_two_servers_share_a_port_and_without_it_the_second_fails() {
    let first = Turnstile::start(&["--app", "hello", "--reuse-port"]);
    first.wait_for_workers(1);
    let bind = first.addr().to_owned();
    let second = Turnstile::start_exactly(&["--bind", &bind, "--app", "hello", "--reuse-port"]);
    second.wait_for_workers(1);
    assert_eq!(second.addr(), bind);
    assert_eq!(fetch(&bind, "/"), Ok((200, "Hello, world!\n".into())));
    let refused = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--bind", &bind, "--app", "hello"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot listen on"));
}

#[test]
fn capture_output_sends_what_the_application_prints_to_the_log_file() {
    let log = TempPath::new("capture.log");
    let server = Turnstile::start(&["--capture-output", "--error-logfile", log.as_str()]);
    server.wait_for_workers(1);
    // The demo's /panic panics, and the panic's message is printed on
    // standard error by the default hook.
    assert_eq!(
        fetch(server.addr(), "/panic").map(|(status, _)| status),
        Ok(500)
    );
    let captured = wait_until(Duration::from_secs(10), || {
        log.read()
            .contains("the demo application panicked")
            .then_some(())
    });
    assert!(captured.is_some(), "{}", log.read());
}

#[test]
fn check_config_resolves_binds_checks_ports_and_explains_negative_numbers() {
    for (args, says) in [
        (&["--bind", "nonsense"][..], "does not resolve"),
        (&["--bind", "127.0.0.1:99999"][..], "past 65535"),
        (&["--bind", "unix:"][..], "needs a path"),
        (&["--timeout", "-1"][..], "invalid timeout \"-1\""),
        (&["--workers", "-2"][..], "invalid workers \"-2\""),
        (&["--chdir", "/no/such/dir"][..], "an existing directory"),
        (&["-e", "NOVALUE"][..], "NAME=VALUE"),
    ] {
        let (code, message) = check_config(args);
        assert_eq!(code, Some(2), "{args:?}: {message}");
        assert!(message.contains(says), "{args:?}: {message}");
    }
    assert_eq!(check_config(&["--bind", "localhost:8080"]).0, Some(0));
    assert_eq!(
        check_config(&["--bind", "[::1]:8080", "--bind", "unix:/tmp/x.sock"]).0,
        Some(0)
    );
}

#[test]
fn print_config_writes_every_switch_as_a_boolean() {
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["--print-config", "--preload", "--reuse-port"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("preload = true  # flag --preload"),
        "{printed}"
    );
    assert!(printed.contains("reuse_port = true"), "{printed}");
    assert!(printed.contains("debug = false"), "{printed}");
    assert!(
        !printed.contains("= \"true\"") && !printed.contains("= \"false\""),
        "{printed}"
    );
    // And it is TOML.
    assert!(printed.parse::<toml::Table>().is_ok());
}
