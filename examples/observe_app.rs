//! Wraps an existing application in the header-injection and
//! request-logging layers and serves it on a real socket.
//!
//! The application is a plain function that knows nothing of ids, headers
//! or logs. The example sends it three requests over loopback (one with its
//! own `X-Request-Id`, one with a token in the query, one to a health check
//! that is not logged), prints what each response carries, then stops the
//! server and prints the access log, one JSON line per request.
//!
//! Run with: `cargo run --example observe_app`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use turnstile::http::StatusCode;
use turnstile::middleware::headers::InjectHeaders;
use turnstile::middleware::request_log::{AccessLog, Output, RequestLog};
use turnstile::server::Server;
use turnstile::{Request, Response, Stack};

/// The existing application.
fn catalogue(request: Request) -> Response {
    match request.uri().path() {
        "/books" => Response::new("Dune\nEmma\nUlysses\n".into()),
        "/healthz" => Response::new("ok\n".into()),
        _ => {
            let mut response = Response::new("Not Found\n".into());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

// ANCHOR: wrap
fn main() {
    // Where request events go: JSON lines on standard output.
    let access_log = AccessLog::new("json".parse().unwrap(), Output::Stdout);
    let subscriber =
        tracing_subscriber::registry().with(access_log.clone().with_filter(RequestLog::events()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // Outermost first: the log line carries the id the client sent.
    let app = Stack::new()
        .layer(InjectHeaders::new().security_preset())
        .layer(RequestLog::new().skip("/healthz"))
        .app(catalogue);
    let server = Server::bind("127.0.0.1:0").unwrap().threads(2).spawn(app);
    // ANCHOR_END: wrap

    let addr = server.addr();
    for (target, request_id) in [
        ("/books", Some("example-1")),
        ("/books?token=s3cret&page=2", None),
        ("/healthz", None),
    ] {
        let head = get(addr, target, request_id);
        println!("GET {target}");
        for line in head.lines().skip(1) {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if ["x-request-id", "x-frame-options", "server-timing"].contains(&name.as_str()) {
                println!("  {line}");
            }
        }
    }
    server.shutdown();
    println!("access log:");
    // This process is not a Turnstile worker, which would write its
    // buffered lines as it exits: write them now.
    access_log.flush();
}

/// One GET on a fresh connection; the response head.
fn get(addr: SocketAddr, target: &str, request_id: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    let id_line = request_id.map_or(String::new(), |id| format!("X-Request-Id: {id}\r\n"));
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: example\r\n{id_line}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").next().unwrap_or("").to_owned()
}
