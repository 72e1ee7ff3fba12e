//! Turnstile's gateway interface: the contract between a server and an
//! application, in the spirit of Python's WSGI (PEP 3333).
//!
//! The *server side* accepts connections, parses HTTP and calls the
//! application once per request. The *application side* is any
//! [`Application`], which every `Fn(Request) -> Response` closure is.
//! *Middleware* plays both sides: a [`Layer`] takes an application and
//! returns one, so the server cannot tell a bare application from one wrapped
//! in ten layers.
//!
//! ```
//! use turnstile_core::{Request, Response, test};
//!
//! let app = |request: Request| Response::new(format!("You asked for {}\n", request.uri().path()).into());
//! let response = test::serve(&app, test::TestRequest::get("/books").build());
//! assert_eq!(response.text(), "You asked for /books\n");
//! ```
//!
//! # The one design decision
//!
//! The interface is **synchronous and push-style**: the server pushes a
//! request into `handle`, and `handle` returns the response on the same thread.
//! An application is ordinary blocking Rust, with no runtime, no futures and
//! no pinning. Concurrency comes from the server's threads and forked
//! processes, exactly as with Gunicorn's sync and threaded workers. The price
//! is a thread per in-flight request; the server keeps idle connections off
//! its threads so that price is paid only for requests being worked on.
//!
//! Everything else follows the `http` crate's types, so an application that
//! already speaks `http::Request`/`http::Response` needs only a body type
//! change. This crate does no I/O of its own: no sockets, no threads, no
//! files opened.

#![forbid(unsafe_code)]

mod app;
mod body;
pub mod completion;
mod environ;
mod error;
pub mod failure;
mod ids;
mod layer;
pub mod per_process;
pub mod redact;
pub mod reopen;
mod route;
pub mod test;

pub use bytes::{self, Bytes};
pub use http;
pub use uuid::{self, Uuid};

pub use app::{
    AppResult, Application, BoxError, Either, IntoAppResult, SharedApp, is_connection_header,
};
pub use body::{BodyError, BodyRead, ChunkStream, Content, RequestBody, ResponseBody};
pub use completion::{Completion, CompletionHooks, Outcome, on_complete};
pub use environ::{Environ, Received, Worker};
pub use error::{Panicked, call_catching_panics, internal_server_error};
pub use failure::{
    Boundary, ClientFault, Failure, TakeStack, capturing_stacks, client_fault_response, respond,
};
pub use ids::{RequestId, TraceId};
pub use layer::{Identity, Layer, LayerFn, Stack, Stacked, layer_fn};
pub use per_process::PerProcess;
pub use route::Route;

/// A request: the `http` crate's request with a streaming body. Its
/// extensions hold an [`Environ`] with the facts not in the HTTP head.
pub type Request = http::Request<RequestBody>;

/// A response: the `http` crate's response whose body is empty, bytes, a
/// stream of chunks or a file, plus completion hooks.
pub type Response = http::Response<ResponseBody>;
