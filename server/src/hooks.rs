//! Server hooks, Gunicorn's `on_starting` … `on_exit`, as Rust closures on
//! the [`Arbiter`](crate::Arbiter) builder.
//!
//! Each runs in one process, at one point of its life:
//!
//! | hook | process | called |
//! |---|---|---|
//! | `on_starting` | arbiter | before the listeners are bound |
//! | `when_ready` | arbiter | once listening, before the first fork |
//! | `pre_fork` | arbiter | just before a worker is forked |
//! | `post_fork` | worker | first thing after the fork |
//! | `post_worker_init` | worker | once the application is built, before the request threads start |
//! | `pre_request` | worker | before each request reaches the application |
//! | `post_request` | worker | after each response is written (or abandoned) |
//! | `worker_abort` | worker | when the arbiter aborts it for `--timeout`, with the stuck request |
//! | `worker_exit` | worker | as it exits, after its requests have drained |
//! | `child_exit` | arbiter | after a worker has exited and been reaped |
//! | `on_exit` | arbiter | just before the arbiter exits |
//!
//! A hook that panics in the arbiter stops the server; in a worker before
//! it is ready, the worker fails to boot; in a request hook, the request
//! gets a 500 like any application panic.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Uri};
use turnstile_core::{
    AppResult, Application, Completion, Environ, Request, Worker, on_complete, respond,
};

use crate::InFlight;

type Hook<T> = Option<Box<dyn Fn(T) + Send + Sync>>;
type PlainHook = Option<Box<dyn Fn() + Send + Sync>>;
type RequestHook = Option<Box<dyn Fn(&Request) + Send + Sync>>;
type PostRequestHook = Option<Box<dyn Fn(&RequestInfo, &Completion) + Send + Sync>>;
type AbortHook = Option<Box<dyn Fn(Worker, Option<&InFlight>) + Send + Sync>>;
type ReadyHook = Option<Box<dyn Fn(&[String]) + Send + Sync>>;

/// How a worker ended, as `child_exit` is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it (its number).
    Signal(i32),
}

/// The request a `post_request` hook is told about.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// Its method.
    pub method: Method,
    /// Its target.
    pub uri: Uri,
    /// Its connection facts, request id and worker.
    pub environ: Environ,
    /// When the application was called.
    pub started: Instant,
}

/// The hooks set on an arbiter.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_starting: PlainHook,
    pub(crate) when_ready: ReadyHook,
    pub(crate) pre_fork: Hook<Worker>,
    pub(crate) post_fork: Hook<Worker>,
    pub(crate) post_worker_init: Hook<Worker>,
    pub(crate) pre_request: RequestHook,
    pub(crate) post_request: PostRequestHook,
    pub(crate) worker_abort: AbortHook,
    pub(crate) worker_exit: Hook<Worker>,
    pub(crate) child_exit: Option<Box<dyn Fn(Worker, WorkerExit) + Send + Sync>>,
    pub(crate) on_exit: PlainHook,
}

impl Hooks {
    pub(crate) fn run<T>(hook: &Hook<T>, arg: T) {
        if let Some(hook) = hook {
            hook(arg);
        }
    }

    fn has_request_hooks(&self) -> bool {
        self.pre_request.is_some() || self.post_request.is_some()
    }
}

/// An application with the `pre_request` and `post_request` hooks around
/// it; the application itself when neither is set.
pub(crate) enum WithRequestHooks<A> {
    Bare(A),
    Hooked(A, Arc<Hooks>),
}

impl<A: Application> WithRequestHooks<A> {
    pub(crate) fn new(app: A, hooks: &Arc<Hooks>) -> Self {
        if hooks.has_request_hooks() {
            Self::Hooked(app, hooks.clone())
        } else {
            Self::Bare(app)
        }
    }
}

impl<A: Application> Application for WithRequestHooks<A> {
    fn handle(&self, request: Request) -> AppResult {
        let (app, hooks) = match self {
            Self::Bare(app) => return app.handle(request),
            Self::Hooked(app, hooks) => (app, hooks),
        };
        if let Some(pre_request) = &hooks.pre_request {
            pre_request(&request);
        }
        let info = hooks.post_request.as_ref().map(|_| RequestInfo {
            method: request.method().clone(),
            uri: request.uri().clone(),
            environ: Environ::of(&request).clone(),
            started: Instant::now(),
        });
        // Through the boundary, so that `post_request` hears about the
        // 500 a failure becomes too.
        let mut response = respond(app, request);
        if let Some(info) = info {
            let hooks = hooks.clone();
            on_complete(&mut response, move |completion| {
                if let Some(post_request) = &hooks.post_request {
                    post_request(&info, completion);
                }
            });
        }
        Ok(response)
    }
}
