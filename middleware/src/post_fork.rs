//! Post-fork reinitialisation as a layer: the application gets a resource
//! that belongs to the process serving the request, whichever that is.
//!
//! A connection, a client with a background thread or a random number
//! generator built before `fork()` is shared (or broken) in every child.
//! [`PostFork`] holds the resource as a [`PerProcess`] value: on each
//! request it hands the application this process's value, building it
//! first if this process has none, so the application is right even under
//! a server that forks without telling it. Under Turnstile's arbiter the
//! values are also rebuilt as each worker starts (before its request
//! threads) and torn down as it exits.
//!
//! The resource reaches the application as an `Arc<T>` in the request's
//! extensions.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use turnstile_core::{Request, Response, Stack, test};
//! use turnstile_middleware::post_fork::PostFork;
//!
//! /// Stands for a database connection.
//! struct Connection {
//!     opened_by: u32,
//! }
//!
//! let app = Stack::new()
//!     .layer(PostFork::new(|| Connection { opened_by: std::process::id() }))
//!     .app(|request: Request| {
//!         let connection = request.extensions().get::<Arc<Connection>>().unwrap();
//!         Response::new(format!("opened by {}", connection.opened_by).into())
//!     });
//!
//! let response = test::serve(&app, test::TestRequest::get("/").build());
//! assert_eq!(response.text(), format!("opened by {}", std::process::id()));
//! ```

use std::sync::Arc;

use turnstile_core::{AppResult, Application, Layer, PerProcess, Request};

/// The layer: gives each request this process's `T`.
#[derive(Debug)]
pub struct PostFork<T> {
    resource: PerProcess<T>,
}

impl<T: Send + Sync + 'static> PostFork<T> {
    /// A layer whose resource `build` makes, once in each process.
    pub fn new(build: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::from_resource(PerProcess::new(build))
    }

    /// A layer handing out a resource declared elsewhere (and perhaps used
    /// outside requests too).
    pub fn from_resource(resource: PerProcess<T>) -> Self {
        Self { resource }
    }
}

impl<A: Application, T: Send + Sync + 'static> Layer<A> for PostFork<T> {
    type Application = Provided<A, T>;

    fn layer(&self, inner: A) -> Self::Application {
        Provided {
            inner,
            resource: self.resource.clone(),
        }
    }
}

/// An application whose requests carry this process's `Arc<T>`.
#[derive(Debug)]
pub struct Provided<A, T> {
    inner: A,
    resource: PerProcess<T>,
}

// ANCHOR: handle
impl<A: Application, T: Send + Sync + 'static> Application for Provided<A, T> {
    fn handle(&self, mut request: Request) -> AppResult {
        let resource: Arc<T> = self.resource.get();
        request.extensions_mut().insert(resource);
        self.inner.handle(request)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use turnstile_core::{Response, Stack, test};

    use super::*;

    #[test]
    fn the_resource_is_built_once_per_process_and_shared_by_requests() {
        static BUILDS: AtomicU32 = AtomicU32::new(0);
        let app = Stack::new()
            .layer(PostFork::new(|| BUILDS.fetch_add(1, Ordering::SeqCst)))
            .app(|request: Request| {
                let n = request.extensions().get::<Arc<u32>>().unwrap();
                Response::new(format!("build {n}").into())
            });
        for _ in 0..3 {
            let response = test::serve(&app, test::TestRequest::get("/").build());
            assert_eq!(response.text(), "build 0");
        }
        assert_eq!(BUILDS.load(Ordering::SeqCst), 1);
    }
}
