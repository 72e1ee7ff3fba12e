//! Wraps an application that fails, in the three ways applications do, in
//! the error-capture layer, served by two worker processes:
//!
//! - `/orders/{id}` returns an error when the id is not a number;
//! - `/checkout` panics (an `unwrap` on an empty basket);
//! - `/report` takes 5 s, past the 2 s `--timeout`: the arbiter aborts its
//!   worker, which reports the stuck request before it dies.
//!
//! Each client gets a bare `500 Internal Server Error`. Sentry gets the
//! error with its request, scrubbed: send `Authorization` or `?token=` and
//! look for them in the events.
//!
//! Run with a local stand-in for Sentry (or set `SENTRY_DSN` to a real one):
//!
//! ```text
//! cargo run --example sentry_receiver        # in one shell
//! SENTRY_DSN=http://public@127.0.0.1:9300/1 cargo run --example error_capture_app
//! curl -s -H 'Authorization: Bearer s3cret' 'http://127.0.0.1:8000/orders/x?token=s3cret'
//! curl -s http://127.0.0.1:8000/checkout
//! curl -s http://127.0.0.1:8000/report
//! ```
//!
//! Another address: `cargo run --example error_capture_app -- 127.0.0.1:0`.

use std::time::Duration;

use turnstile::http::StatusCode;
use turnstile::middleware::error_capture::{ErrorCapture, sentry};
use turnstile::server::{Arbiter, ArbiterConfig};
use turnstile::{Request, Response, Route, Stack};

// ANCHOR: shop
/// The existing application. It knows nothing of Sentry.
fn shop(request: Request) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (route, body) = match segments.as_slice() {
        ["orders", id] => {
            let id: u64 = id.parse()?;
            ("/orders/{id}", format!("order {id}\n"))
        }
        ["checkout"] => {
            let basket: Vec<&str> = Vec::new();
            let first = basket.first().unwrap();
            ("/checkout", format!("bought {first}\n"))
        }
        ["report"] => {
            std::thread::sleep(Duration::from_secs(5));
            ("/report", "the annual report\n".to_owned())
        }
        _ => {
            let mut response = Response::new("Not Found\n".into());
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
    };
    let mut response = Response::new(body.into());
    response.extensions_mut().insert(Route::new(route));
    Ok(response)
}
// ANCHOR_END: shop

// ANCHOR: serve
fn main() {
    let config = ArbiterConfig {
        binds: vec![
            std::env::args()
                .nth(1)
                .unwrap_or_else(|| "127.0.0.1:8000".into()),
        ],
        workers: 2,
        timeout: Duration::from_secs(2),
        ..ArbiterConfig::default()
    };
    // Options only: each worker builds its own client after the fork. With
    // no DSN given here, Sentry's SENTRY_DSN variable is read.
    let options = sentry::ClientOptions::new().environment("example");
    let code = Arbiter::new(config)
        // The stuck request, reported before the worker dies.
        .worker_abort(turnstile::layer_hooks::report_stuck)
        .run(move || {
            Stack::new()
                .layer(ErrorCapture::new().sentry(options.clone()))
                .app(shop)
        });
    std::process::exit(code);
}
// ANCHOR_END: serve
