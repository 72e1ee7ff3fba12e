//! A connection opened before the fork is shared by every worker, and goes
//! wrong; the same connection declared per process is right.
//!
//! The example starts an echo service on a loopback port (it stands for a
//! database), then twice runs a pre-forking server of two workers, preloaded,
//! whose application sends each request's number to the service and answers
//! with the number that comes back. First the connection is opened while
//! the application loads, in the arbiter, so both workers inherit the same
//! socket: their messages interleave on it and a worker reads replies meant
//! for the other. Then the connection is wrapped in the `post_fork` layer,
//! so each worker opens its own. It fires 400 requests at each server and
//! counts the answers that belonged to another request.
//!
//! Run with: `cargo run --example post_fork`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turnstile::middleware::post_fork::PostFork;
use turnstile::server::{Arbiter, ArbiterConfig};
use turnstile::{Request, Response, SharedApp, Stack};

/// Each message is a request number, fixed width.
const MESSAGE: usize = 8;
const REQUESTS: usize = 400;
const CLIENTS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["service"] => echo_service(),
        ["serve", how, service] => std::process::exit(serve(how, service)),
        _ => demonstrate(),
    }
}

/// The stand-in for a database: echoes every message on every connection.
fn echo_service() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut message = [0u8; MESSAGE];
            while stream.read_exact(&mut message).is_ok() {
                // A database takes a moment to answer.
                std::thread::sleep(Duration::from_micros(200));
                if stream.write_all(&message).is_err() {
                    break;
                }
            }
        });
    }
}

/// Asks the service to echo `n` over `connection`.
fn ask(connection: &Mutex<TcpStream>, n: u64) -> std::io::Result<u64> {
    let mut stream = connection.lock().unwrap_or_else(|e| e.into_inner());
    stream.write_all(format!("{n:0MESSAGE$}").as_bytes())?;
    let mut reply = [0u8; MESSAGE];
    stream.read_exact(&mut reply)?;
    Ok(std::str::from_utf8(&reply)
        .unwrap_or("")
        .parse()
        .unwrap_or(u64::MAX))
}

fn number(request: &Request) -> u64 {
    request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn answer(reply: std::io::Result<u64>) -> Response {
    Response::new(match reply {
        Ok(n) => format!("{n}").into(),
        Err(error) => format!("error: {error}").into(),
    })
}

/// Runs the server; `how` is `shared` or `rebuilt`.
fn serve(how: &str, service: &str) -> i32 {
    let service = service.to_owned();
    let config = ArbiterConfig {
        binds: vec!["127.0.0.1:0".into()],
        workers: 2,
        threads: 4,
        ..ArbiterConfig::default()
    };
    let shared = how == "shared";
    let app = move || -> SharedApp {
        let connect = {
            let service = service.clone();
            move || Mutex::new(TcpStream::connect(&service).expect("the service is up"))
        };
        if shared {
            // ANCHOR: shared
            // Opened while the application loads: under --preload, in the
            // arbiter, and inherited by every worker.
            let connection = Arc::new(connect());
            SharedApp::new(move |request: Request| answer(ask(&connection, number(&request))))
            // ANCHOR_END: shared
        } else {
            // ANCHOR: rebuilt
            // Declared once; each process that serves opens its own.
            let app = Stack::new()
                .layer(PostFork::new(connect))
                .app(|request: Request| {
                    let connection = request.extensions().get::<Arc<Mutex<TcpStream>>>();
                    answer(ask(
                        connection.expect("the layer adds it"),
                        number(&request),
                    ))
                });
            SharedApp::new(app)
            // ANCHOR_END: rebuilt
        }
    };
    Arbiter::new(config).preload(true).run(app)
}

/// Starts the service and both servers, and counts wrong answers.
fn demonstrate() {
    let me = std::env::current_exe().unwrap();
    let (mut service, service_addr) = start(Command::new(&me).arg("service"));
    for how in ["shared", "rebuilt"] {
        let (mut server, line) = start(Command::new(&me).args(["serve", how, &service_addr]));
        let addr = line
            .trim_start_matches("turnstile: listening on http://")
            .to_owned();
        std::thread::sleep(Duration::from_millis(500));
        let wrong = fire(&addr);
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
        let what = match how {
            "shared" => "one connection shared across the fork",
            _ => "a connection per process (post_fork)",
        };
        println!("{what}: {wrong} of {REQUESTS} answers were wrong");
    }
    let _ = service.kill();
}

/// Spawns `command` and reads the first line it prints.
fn start(command: &mut Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

/// Sends the requests from several clients; counts the answers that were
/// not the request's own number.
fn fire(addr: &str) -> usize {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    (0..REQUESTS / CLIENTS)
                        .filter(|i| {
                            let n = (client * REQUESTS + i) as u64;
                            get(addr, &format!("/?n={n}")).trim() != n.to_string()
                        })
                        .count()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    })
}

fn get(addr: &str, target: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
