//! The `turnstile` binary as a test drives it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The binary, started on a free port; killed when dropped.
pub(crate) struct Turnstile {
    pub(crate) child: Child,
    addr: String,
}

impl Turnstile {
    /// Starts it on a free loopback port, with `args` besides.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_exactly(&[&["--bind", "127.0.0.1:0"], args].concat())
    }

    /// Starts it with exactly these arguments, which must make it listen on
    /// a free loopback port.
    pub(crate) fn start_exactly(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(args)
            .env_remove("PORT")
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

    /// Sends `request` as is and reads until the server closes.
    pub(crate) fn send(&self, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        response
    }

    pub(crate) fn get(&self, target: &str) -> String {
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

/// The parent of process `pid`, from `/proc`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: skip past it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}
