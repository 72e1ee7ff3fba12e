//! Wraps an existing application in a layer and calls it in-process.
//!
//! Shows the two sides of the gateway interface: an application (a plain
//! function from `Request` to `Response`) and a layer that wraps it, built
//! with `Stack` and counted to the last byte with a completion hook. No socket
//! is opened; `turnstile::test::serve` calls the stack the way the server does.
//!
//! Run with: `cargo run --example wrap_app`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use turnstile::http::HeaderValue;
use turnstile::test::{TestRequest, serve};
use turnstile::{AppResult, Application, Layer, Request, Response, Stack, on_complete};

/// The existing application: it knows nothing about layers.
fn catalogue(request: Request) -> Response {
    match request.uri().path() {
        "/books" => Response::new("Dune\nEmma\nUlysses\n".into()),
        _ => {
            let mut response = Response::new("Not Found\n".into());
            *response.status_mut() = turnstile::http::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// A layer that numbers requests and counts the body bytes sent.
#[derive(Clone, Default)]
struct CountingLayer {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes_sent: AtomicU64,
}

struct Counting<A> {
    inner: A,
    counters: Arc<Counters>,
}

impl<A: Application> Layer<A> for CountingLayer {
    type Application = Counting<A>;

    fn layer(&self, inner: A) -> Counting<A> {
        Counting {
            inner,
            counters: self.counters.clone(),
        }
    }
}

impl<A: Application> Application for Counting<A> {
    fn handle(&self, request: Request) -> AppResult {
        let number = self.counters.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let mut response = self.inner.handle(request)?;
        response
            .headers_mut()
            .insert("x-request-number", HeaderValue::from(number));
        let counters = self.counters.clone();
        on_complete(&mut response, move |done| {
            counters
                .bytes_sent
                .fetch_add(done.body_bytes, Ordering::Relaxed);
        });
        Ok(response)
    }
}

fn main() {
    let layer = CountingLayer::default();
    let app = Stack::new().layer(layer.clone()).app(catalogue);

    for path in ["/books", "/films", "/books"] {
        let response = serve(&app, TestRequest::get(path).build());
        println!(
            "GET {path} -> {} (request #{}) {:?}",
            response.status,
            response.header("x-request-number").unwrap_or("?"),
            response.text()
        );
    }
    println!(
        "{} requests, {} body bytes sent",
        layer.counters.requests.load(Ordering::Relaxed),
        layer.counters.bytes_sent.load(Ordering::Relaxed)
    );
}
