//! The `turnstile` binary as a test drives it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use turnstile::middleware::error_capture::sentry::protocol::{Envelope, EnvelopeItem, Event};

/// The binary, started on a free port; killed when dropped.
pub(crate) struct Turnstile {
    pub(crate) child: Child,
    addr: String,
    metrics_addr: Option<String>,
}

impl Turnstile {
    /// Starts it on a free loopback port, with `args` besides.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_exactly(&[&["--bind", "127.0.0.1:0"], args].concat())
    }

    /// Starts it with exactly these arguments, which must make it listen on
    /// a free loopback port.
    pub(crate) fn start_exactly(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
        command.args(args);
        Self::start_command(command)
    }

    /// Starts `command`, which must run the binary listening on a free
    /// loopback port first.
    pub(crate) fn start_command(mut command: Command) -> Self {
        let mut child = command
            .env_remove("PORT")
            .env_remove("WEB_CONCURRENCY")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the turnstile binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut metrics_addr = None;
        // The metrics endpoint, when there is one, is announced first.
        let addr = loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("turnstile: metrics on http://") {
                metrics_addr = Some(addr.trim_end_matches("/metrics").to_owned());
                continue;
            }
            break line
                .strip_prefix("turnstile: listening on http://")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_owned();
        };
        Self {
            child,
            addr,
            metrics_addr,
        }
    }

    /// Where the arbiter serves the metrics (`--metrics-bind`).
    pub(crate) fn metrics_addr(&self) -> &str {
        self.metrics_addr
            .as_deref()
            .expect("started with --metrics-bind")
    }

    /// The arbiter's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The worker processes: the arbiter's children.
    pub(crate) fn workers(&self) -> HashSet<u32> {
        children_of(self.pid())
    }

    /// Waits until `count` workers have started and answer requests.
    pub(crate) fn wait_for_workers(&self, count: usize) -> HashSet<u32> {
        let workers = wait_until(Duration::from_secs(10), || {
            let workers = self.workers();
            (workers.len() == count).then_some(workers)
        })
        .unwrap_or_else(|| panic!("{count} workers did not start: {:?}", self.workers()));
        // Give the newest a moment to start their request threads.
        std::thread::sleep(Duration::from_millis(300));
        workers
    }

    /// Sends `signal` (`TERM`, `HUP`, …) to the arbiter.
    pub(crate) fn signal(&self, signal: &str) {
        signal_process(self.pid(), signal);
    }

    /// Waits up to `limit` for the arbiter to exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_until(limit, || self.child.try_wait().unwrap())
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
        exchange(&self.addr, target).unwrap()
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

/// Sends `signal` (`TERM`, `KILL`, …) to process `pid`.
pub(crate) fn signal_process(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The living children of process `pid`.
pub(crate) fn children_of(pid: u32) -> HashSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| parent_of(*child) == Some(pid) && !is_zombie(*child))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat[stat.rfind(')')? + 2..].to_owned();
            Some(after_name.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Polls `check` every 20 ms until it gives a value or `limit` passes.
pub(crate) fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file under the temp folder for one test, removed on drop.
pub(crate) struct TempPath(pub(crate) PathBuf);

impl TempPath {
    pub(crate) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("turnstile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub(crate) fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One GET on a fresh connection: the status and the body, or why it failed.
pub(crate) fn fetch(addr: &str, target: &str) -> Result<(u16, String), String> {
    let response = exchange(addr, target)?;
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// One GET on a fresh connection: the whole response, or why it failed.
fn exchange(addr: &str, target: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    Ok(response)
}

/// Requests `target` from `clients` threads on fresh connections until
/// `stop` is set (or `limit` requests each): the answers, and the failures.
pub(crate) fn load(
    addr: &str,
    target: &str,
    clients: usize,
    limit: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> (Vec<String>, Vec<String>) {
    use std::sync::atomic::Ordering;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let (mut answers, mut failures) = (Vec::new(), Vec::new());
                    for _ in 0..limit {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match fetch(addr, target) {
                            Ok((200, body)) => answers.push(body),
                            Ok((status, body)) => failures.push(format!("{status}: {body}")),
                            Err(error) => failures.push(error),
                        }
                    }
                    (answers, failures)
                })
            })
            .collect();
        let mut all = (Vec::new(), Vec::new());
        for handle in handles {
            let (answers, failures) = handle.join().unwrap();
            all.0.extend(answers);
            all.1.extend(failures);
        }
        all
    })
}

/// The path of `program` on `PATH`. When it is missing the test is skipped
/// with a note, unless `TURNSTILE_REQUIRE_TOOLS=1` (as in CI) makes that a
/// failure.
pub(crate) fn tool(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("TURNSTILE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{program} is not on PATH, and TURNSTILE_REQUIRE_TOOLS=1"
        );
        eprintln!("skipped: {program} is not on PATH");
    }
    found
}

/// A response, split up.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One GET with `headers` on a fresh connection.
pub(crate) fn get_with(addr: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.get(9..12))
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A command for `binary` with none of the caller's OpenTelemetry or
/// proxy settings: only what the test sets.
pub(crate) fn command(binary: &std::path::Path) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(name);
        }
    }
    command.env("NO_PROXY", "127.0.0.1");
    command
}

/// The example program `name`, which `cargo test` builds next to the test
/// binaries.
pub(crate) fn example(name: &str) -> std::path::PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let target = test_binary.parent().and_then(|deps| deps.parent()).unwrap();
    target.join("examples").join(name)
}

/// An example program that stands in for a service (Sentry, a collector)
/// on a free loopback port, announces the address to use on its first
/// line, then prints one line for each thing it receives (quiet, as the
/// load benchmark runs it, a running count on standard error instead).
struct StandIn {
    child: Child,
    address: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandIn {
    fn start(name: &str, announcement: &str, quiet: bool) -> Self {
        let mut command = Command::new(example(name));
        command
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(if quiet { Stdio::piped() } else { Stdio::null() });
        if quiet {
            command.env("STAND_IN_QUIET", "1");
        }
        let mut child = command.spawn().expect("the stand-in starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let address = first
            .trim()
            .strip_prefix(announcement)
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let collected = std::sync::Arc::clone(&lines);
        let output: Box<dyn BufRead + Send> = match child.stderr.take() {
            Some(stderr) => {
                // Read on, so that a line the quiet stand-in writes there
                // never finds the pipe closed.
                std::thread::spawn(move || stdout.lines().for_each(drop));
                Box::new(BufReader::new(stderr))
            }
            None => Box::new(stdout),
        };
        std::thread::spawn(move || {
            for line in output.lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            address,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stand-in for Sentry (`examples/sentry_receiver.rs`): every envelope
/// the clients sent, as received.
pub(crate) struct SentryReceiver(StandIn);

impl SentryReceiver {
    pub(crate) fn start() -> Self {
        Self(StandIn::start(
            "sentry_receiver",
            "sentry receiver: SENTRY_DSN=",
            false,
        ))
    }

    /// The DSN that reports here.
    pub(crate) fn dsn(&self) -> &str {
        &self.0.address
    }

    /// Every envelope so far, as the client sent it.
    pub(crate) fn envelopes(&self) -> Vec<String> {
        self.0
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON string per envelope"))
            .collect()
    }

    /// Every event so far, decoded with the `sentry` crate's parser.
    pub(crate) fn events(&self) -> Vec<Event<'static>> {
        self.envelopes()
            .iter()
            .flat_map(|raw| {
                let envelope = Envelope::from_slice(raw.as_bytes()).expect("an envelope");
                envelope
                    .items()
                    .filter_map(|item| match item {
                        EnvelopeItem::Event(event) => Some((**event).clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits up to `limit` for at least `count` events.
    pub(crate) fn wait_for_events(&self, count: usize, limit: Duration) -> Vec<Event<'static>> {
        wait_until(limit, || {
            let events = self.events();
            (events.len() >= count).then_some(events)
        })
        .unwrap_or_else(|| {
            panic!(
                "{count} events did not arrive within {limit:?}; got {:?}",
                self.events()
            )
        })
    }
}

/// The stand-in for an OpenTelemetry collector
/// (`examples/otlp_receiver.rs`): every span received, decoded from OTLP's
/// protobuf, as JSON.
pub(crate) struct OtlpReceiver(StandIn);

impl OtlpReceiver {
    pub(crate) fn start() -> Self {
        Self(StandIn::start(
            "otlp_receiver",
            "otlp receiver: OTEL_EXPORTER_OTLP_ENDPOINT=",
            false,
        ))
    }

    /// Quiet, as `bench/stack.sh` runs it: it only counts.
    pub(crate) fn start_counting() -> Self {
        Self(StandIn::start(
            "otlp_receiver",
            "otlp receiver: OTEL_EXPORTER_OTLP_ENDPOINT=",
            true,
        ))
    }

    /// Quiet: how many spans `service` has sent so far, as its last line
    /// about that service says.
    pub(crate) fn spans_counted(&self, service: &str) -> usize {
        let suffix = format!(" spans received from {service}");
        self.0
            .lines()
            .iter()
            .rev()
            .find_map(|line| {
                line.strip_prefix("otlp receiver: ")?
                    .strip_suffix(suffix.as_str())?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub(crate) fn endpoint(&self) -> &str {
        &self.0.address
    }

    /// Every span so far.
    pub(crate) fn spans(&self) -> Vec<serde_json::Value> {
        self.0
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON line per span"))
            .collect()
    }

    /// Waits up to `limit` for at least `count` spans.
    pub(crate) fn wait_for_spans(&self, count: usize, limit: Duration) -> Vec<serde_json::Value> {
        wait_until(limit, || {
            let spans = self.spans();
            (spans.len() >= count).then_some(spans)
        })
        .unwrap_or_else(|| {
            panic!(
                "{count} spans did not arrive within {limit:?}; got {}",
                self.spans().len()
            )
        })
    }
}

/// What a keep-alive load saw: answers by body, connections the server
/// closed after saying so, connects refused once it was stopping, and
/// requests that failed (which a client that does not retry would lose).
#[derive(Debug, Default)]
pub(crate) struct KeepAliveTally {
    pub(crate) answers: Vec<String>,
    pub(crate) closed_by_server: usize,
    pub(crate) refused: usize,
    pub(crate) failures: Vec<String>,
}

/// `clients` connections, each kept alive and sending `GET target` one
/// request after another, never retrying: a request that gets no whole
/// response is a failure; a response saying `Connection: close` makes the
/// client connect again for the next. Runs until `stop` is set (or `limit`
/// requests each); once `stopping` is set, a refused connect ends that
/// client, as the server's port closing should.
pub(crate) fn keep_alive_load(
    addr: &str,
    target: &str,
    clients: usize,
    limit: usize,
    stop: &std::sync::atomic::AtomicBool,
    stopping: &std::sync::atomic::AtomicBool,
) -> KeepAliveTally {
    use std::sync::atomic::Ordering;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut tally = KeepAliveTally::default();
                    let mut connection: Option<BufReader<TcpStream>> = None;
                    for n in 0..limit {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let reader = match &mut connection {
                            Some(reader) => reader,
                            None => match TcpStream::connect(addr) {
                                Ok(stream) => {
                                    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                                    connection.insert(BufReader::new(stream))
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                                        && stopping.load(Ordering::SeqCst) =>
                                {
                                    tally.refused += 1;
                                    break;
                                }
                                Err(e) => {
                                    tally.failures.push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        let request = format!("GET {target}?n={n} HTTP/1.1\r\nHost: test\r\n\r\n");
                        let answer = reader
                            .get_mut()
                            .write_all(request.as_bytes())
                            .map_err(|e| format!("send: {e}"))
                            .and_then(|()| read_response(reader));
                        match answer {
                            Ok((200, close, body)) => {
                                tally.answers.push(body);
                                if close {
                                    tally.closed_by_server += 1;
                                    connection = None;
                                }
                            }
                            Ok((status, _, body)) => {
                                tally.failures.push(format!("{status}: {body}"));
                                connection = None;
                            }
                            Err(error) => {
                                tally.failures.push(format!("request {n}: {error}"));
                                connection = None;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut all = KeepAliveTally::default();
        for handle in handles {
            let tally = handle.join().unwrap();
            all.answers.extend(tally.answers);
            all.closed_by_server += tally.closed_by_server;
            all.refused += tally.refused;
            all.failures.extend(tally.failures);
        }
        all
    })
}

/// Reads one response with a `Content-Length` body: its status, whether
/// it says `Connection: close`, and its body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool, String), String> {
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => return Err("the connection closed before a response".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let status = status_line
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {status_line:?}"))?;
    let (mut length, mut close) = (0, false);
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| format!("bad length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read the body: {e}"))?;
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}
