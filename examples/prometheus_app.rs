//! Serves an existing application with timing metrics, from two worker
//! processes, and one Prometheus endpoint for both, with the whole server
//! (`turnstile::main`: its flags, its settings, its signals).
//!
//! The application names its routes (`/books/{id}`), so the metrics group
//! `/books/1` and `/books/2` together, and counts something of its own
//! (`books_sold_total`) with the `metrics` crate. The arbiter sums both
//! workers' metrics on `http://127.0.0.1:9100/metrics`.
//!
//! Run with: `cargo run --example prometheus_app -- --workers 2 --metrics-bind 127.0.0.1:9100 --middleware metrics`,
//! then, in another shell:
//!
//! ```text
//! curl -s http://127.0.0.1:8000/books/1 http://127.0.0.1:8000/books/2/buy
//! curl -s http://127.0.0.1:9100/metrics
//! prometheus --config.file=examples/prometheus.yml   # scrapes it every 5 s
//! ```
//!
//! Every other setting of `turnstile --help` works too (`--bind`, `-c FILE`).

use std::process::ExitCode;

use turnstile::http::StatusCode;
use turnstile::{Request, Response, Route};

// ANCHOR: bookshop
/// The existing application: it knows its routes, and nothing of Prometheus.
fn bookshop(request: Request) -> Response {
    let segments: Vec<&str> = request.uri().path().split('/').skip(1).collect();
    let (route, response) = match segments.as_slice() {
        ["books"] => ("/books", Response::new("Dune\nEmma\n".into())),
        ["books", id] => ("/books/{id}", Response::new(format!("book {id}\n").into())),
        ["books", id, "buy"] => {
            metrics::counter!("books_sold_total").increment(1);
            (
                "/books/{id}/buy",
                Response::new(format!("sold {id}\n").into()),
            )
        }
        _ => {
            let mut response = Response::new("Not Found\n".into());
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
    };
    let mut response = response;
    response.extensions_mut().insert(Route::new(route));
    response
}
// ANCHOR_END: bookshop

// ANCHOR: serve
fn main() -> ExitCode {
    // Each worker builds the application after the fork, and describes its
    // counter to its own recorder; `--middleware metrics` puts the metrics
    // layer around it.
    turnstile::main(|_settings| {
        metrics::describe_counter!("books_sold_total", "Books sold.");
        bookshop
    })
}
// ANCHOR_END: serve
