//! The `turnstile` binary.
//!
//! Until the HTTP/1.1 engine lands it cannot listen on a socket, so it shows
//! the demo application answering a few requests in-process, through the
//! same code path (panic catching, body collection, completion hooks) the
//! server will use.

use turnstile::test::{TestRequest, serve};
use turnstile::{apps, http::Method};

fn main() {
    println!(
        "turnstile {}: the demo application, called in-process",
        env!("CARGO_PKG_VERSION")
    );
    println!("(serving over HTTP arrives with the HTTP/1.1 engine)\n");
    let requests = [
        (Method::GET, "/", ""),
        (Method::GET, "/healthz", ""),
        (Method::POST, "/echo", "ping"),
        (Method::GET, "/stream?chunks=2", ""),
        (Method::GET, "/error", ""),
        (Method::GET, "/missing", ""),
    ];
    for (method, target, body) in requests {
        let request = TestRequest::new(method.clone(), target).body(body).build();
        let response = serve(&apps::demo, request);
        println!(
            "{method} {target} -> {} {:?}",
            response.status,
            response.text()
        );
    }
}
