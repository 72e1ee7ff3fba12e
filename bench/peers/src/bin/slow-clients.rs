//! Slow clients beside a load benchmark (bench/slow.sh): opens HEADS
//! connections that send a request head, BODIES that send a request body,
//! and READERS that read a large response, each at RATE bytes a second,
//! for SECONDS; then the heads and bodies finish their requests and read
//! the answer. Prints a line once every client is connected, and at the end
//! what became of each kind: completed (answered 200 at the end), refused
//! (answered early, with the status), closed (the server closed or reset
//! the connection), or still open (a reader that read all it was given).
//!
//! Run: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin slow-clients -- \
//!       127.0.0.1:8000 2000 1000 1000 300 60 '/stream?chunks=200&size=65536'`

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, interval, sleep, timeout};

/// How often each client sends or reads its share, at least: a slow
/// client costs its machine a write (or a read) a second, whatever its rate.
const TICK: Duration = Duration::from_secs(1);

/// How often a client at `rate` bytes a second sends or reads: every
/// [`TICK`], or every byte's time when that is longer.
fn tick(rate: usize) -> Duration {
    TICK.max(Duration::from_secs(1) / rate as u32)
}

#[derive(Clone, Copy)]
enum Kind {
    Head,
    Body,
    Reader,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Head => "heads",
            Kind::Body => "bodies",
            Kind::Reader => "readers",
        }
    }
}

type Tally = Rc<RefCell<BTreeMap<(&'static str, String), usize>>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "ADDR HEADS BODIES READERS RATE SECONDS READER_PATH";
    let [addr, heads, bodies, readers, rate, seconds, path] = args.as_slice() else {
        panic!("usage: slow-clients {usage}");
    };
    let count = |text: &String| -> usize { text.parse().expect(usage) };
    let (heads, bodies, readers) = (count(heads), count(bodies), count(readers));
    let rate = count(rate).max(1);
    let seconds = count(seconds) as u64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let tally: Tally = Rc::default();
    runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                let kinds = std::iter::repeat_n(Kind::Head, heads)
                    .chain(std::iter::repeat_n(Kind::Body, bodies))
                    .chain(std::iter::repeat_n(Kind::Reader, readers));
                let mut connected = 0;
                for (n, kind) in kinds.enumerate() {
                    // Spread over a second or so, so the backlog keeps up.
                    if n % 200 == 199 {
                        sleep(Duration::from_millis(50)).await;
                    }
                    let stream = match TcpStream::connect(addr).await {
                        Ok(stream) => stream,
                        Err(_) => {
                            *tally
                                .borrow_mut()
                                .entry((kind.name(), "not connected".into()))
                                .or_default() += 1;
                            continue;
                        }
                    };
                    connected += 1;
                    let tally = tally.clone();
                    let path = path.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        let outcome = match kind {
                            Kind::Head => head(stream, rate, seconds).await,
                            Kind::Body => body(stream, rate, seconds).await,
                            Kind::Reader => reader(stream, &path, rate, seconds).await,
                        };
                        *tally
                            .borrow_mut()
                            .entry((kind.name(), outcome))
                            .or_default() += 1;
                    }));
                }
                println!("slow-clients: {connected} connected");
                for task in tasks {
                    let _ = task.await;
                }
            })
            .await;
    });
    for ((kind, outcome), count) in tally.borrow().iter() {
        println!("slow-clients: {kind}: {count} {outcome}");
    }
}

/// Sends a head at `rate` for `seconds`, in header fields of about 1,000
/// bytes, then ends it and reads the answer.
async fn head(stream: TcpStream, rate: usize, seconds: u64) -> String {
    let (read, mut write) = stream.into_split();
    if write
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .await
        .is_err()
    {
        return "closed".into();
    }
    let trickle = async move {
        let mut ticks = interval(tick(rate));
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut in_field = 0;
        while Instant::now() < end {
            ticks.tick().await;
            let mut piece = vec![b'a'; share(rate)];
            in_field += piece.len();
            if in_field > 1000 {
                piece.extend_from_slice(b"\r\nX-Slow: ");
                in_field = 0;
            }
            write.write_all(&piece).await.ok()?;
        }
        Some(write)
    };
    race(read, trickle, b"\r\n\r\n").await
}

/// Sends a body of `rate × seconds` bytes at `rate`, then reads the answer.
async fn body(stream: TcpStream, rate: usize, seconds: u64) -> String {
    let (read, mut write) = stream.into_split();
    let len = rate as u64 * seconds;
    let head = format!("POST /echo HTTP/1.1\r\nHost: slow\r\nContent-Length: {len}\r\n\r\n");
    if write.write_all(head.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let trickle = async move {
        let mut ticks = interval(tick(rate));
        let mut sent = 0;
        while sent < len {
            ticks.tick().await;
            let piece = vec![b'b'; (share(rate) as u64).min(len - sent) as usize];
            sent += piece.len() as u64;
            write.write_all(&piece).await.ok()?;
        }
        Some(write)
    };
    race(read, trickle, b"").await
}

/// Runs `trickle` while watching for an early answer; then sends `end`
/// and reads the answer.
async fn race(
    mut read: OwnedReadHalf,
    trickle: impl std::future::Future<Output = Option<OwnedWriteHalf>>,
    end: &[u8],
) -> String {
    let mut early = [0u8; 12];
    let write = tokio::select! {
        write = trickle => write,
        got = read.read_exact(&mut early) => {
            return match got {
                Ok(_) => format!("refused {}", String::from_utf8_lossy(&early[9..12])),
                Err(_) => "closed".into(),
            };
        }
    };
    let Some(mut write) = write else {
        return answer_or_closed(&mut read).await;
    };
    if write.write_all(end).await.is_err() {
        return "closed".into();
    }
    answer_or_closed(&mut read).await
}

async fn answer_or_closed(read: &mut OwnedReadHalf) -> String {
    let mut status = [0u8; 12];
    match timeout(Duration::from_secs(30), read.read_exact(&mut status)).await {
        Ok(Ok(_)) if &status[9..12] == b"200" => "completed".into(),
        Ok(Ok(_)) => format!("refused {}", String::from_utf8_lossy(&status[9..12])),
        _ => "closed".into(),
    }
}

/// Asks for `path` and reads its response at `rate` for `seconds`.
async fn reader(mut stream: TcpStream, path: &str, rate: usize, seconds: u64) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: slow\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let mut ticks = interval(tick(rate));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; share(rate)];
    while Instant::now() < end {
        ticks.tick().await;
        match stream.read(&mut buf).await {
            Ok(0) => return "read to the end".into(),
            Ok(_) => {}
            Err(_) => return "closed".into(),
        }
    }
    "still open".into()
}

/// What one tick sends or reads of `rate` bytes a second.
fn share(rate: usize) -> usize {
    (rate * tick(rate).as_millis() as usize / 1000).max(1)
}
