use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The binary, started on a free port; killed when dropped.
struct Turnstile {
    child: Child,
    addr: String,
}

impl Turnstile {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the turnstile binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("turnstile: listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    fn get(&self, target: &str) -> String {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Turnstile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
