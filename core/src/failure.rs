//! One path for failure: wherever an application fails, by returning an
//! error or by panicking, [`respond`] turns it into the one generic 500,
//! once, carrying what failed as a [`Failure`] in the response's
//! extensions. The layers outside see only responses: the metrics and the
//! access log count a 500, the tracing layer marks its span, and error
//! capture reports the [`Failure`] it finds, with the panic's place and
//! stack. Every layer of Turnstile's calls what it wraps through
//! [`respond`], and so does the server, so the innermost of them is the
//! boundary: a layer of the application's own inside them may still pass an
//! error on with `?`, and it is answered one step further out.
//!
//! A request body that fails because of its client ([`BodyError`]: too
//! large, cut short, malformed, too slow) is the client's fault, not the
//! application's, even when the application turned the read error into an
//! error of its own: [`respond`] answers the status it names (400, 408,
//! 413) instead, marked with a [`ClientFault`] so the server closes the
//! connection, and nothing is reported.
//!
//! ```
//! use turnstile_core::{Failure, Request, Response, respond, test::TestRequest};
//!
//! let app = |_: Request| -> Result<Response, std::io::Error> {
//!     Err(std::io::Error::other("the orders table is locked"))
//! };
//! let response = respond(&app, TestRequest::get("/orders").build());
//! assert_eq!(response.status(), 500);
//! let failure = Failure::of(&response).expect("the failure travels with the 500");
//! assert_eq!(failure.error().to_string(), "the orders table is locked");
//! assert!(failure.panicked().is_none());
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use http::{HeaderValue, header};

use crate::error::{Panicked, internal_server_error};
use crate::{AppResult, Application, BodyError, BoxError, Request, Response};

/// What failed, in the extensions of the 500 that answered it.
#[derive(Clone)]
pub struct Failure(Arc<Inner>);

struct Inner {
    error: BoxError,
    logged: AtomicBool,
    reported: AtomicBool,
}

impl Failure {
    fn new(error: BoxError) -> Self {
        Self(Arc::new(Inner {
            error,
            logged: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        }))
    }

    /// The failure a response answers, if it answers one.
    pub fn of(response: &Response) -> Option<&Failure> {
        response.extensions().get::<Failure>()
    }

    /// The error the application returned, or a [`Panicked`] for a panic.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.error.as_ref()
    }

    /// The panic, when it was one: its message, place and stack.
    pub fn panicked(&self) -> Option<&Panicked> {
        self.0.error.downcast_ref::<Panicked>()
    }

    /// Marks it logged; true the first time, so it is logged once however
    /// many layers see it.
    pub fn log_once(&self) -> bool {
        !self.0.logged.swap(true, Ordering::AcqRel)
    }

    /// Marks it reported (to Sentry, say); true the first time.
    pub fn report_once(&self) -> bool {
        !self.0.reported.swap(true, Ordering::AcqRel)
    }

    /// Whether it has been logged.
    pub fn is_logged(&self) -> bool {
        self.0.logged.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("error", &self.0.error)
            .finish_non_exhaustive()
    }
}

/// The client's fault a response answers: its request body failed. A
/// server closes the connection after it, since the body's framing can no
/// longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFault(pub BodyError);

impl ClientFault {
    /// The client fault a response answers, if it answers one.
    pub fn of(response: &Response) -> Option<&BodyError> {
        response
            .extensions()
            .get::<ClientFault>()
            .map(|fault| &fault.0)
    }
}

// ANCHOR: respond
/// Calls `app` as the innermost boundary does: an error or a panic becomes
/// the generic 500 carrying a [`Failure`], a client's body fault the 4xx it
/// names carrying a [`ClientFault`]; see the [module docs](self).
pub fn respond<A: Application + ?Sized>(app: &A, request: Request) -> Response {
    install_hook();
    let fault = request.body().fault_watch();
    let result = catching(|| app.handle(request));
    let client_fault = fault
        .and_then(|slot| slot.get().cloned())
        .or_else(|| match &result {
            Err(error) => BodyError::in_chain(error.as_ref()).cloned(),
            Ok(_) => None,
        });
    match (result, client_fault) {
        (Ok(response), None) => response,
        // The application answered the fault itself: its answer stands,
        // but the connection cannot carry another request.
        (Ok(mut response), Some(fault)) if !response.status().is_server_error() => {
            response.extensions_mut().insert(ClientFault(fault));
            response
        }
        (_, Some(fault)) => client_fault_response(fault),
        (Err(error), None) => {
            let mut response = internal_server_error();
            response.extensions_mut().insert(Failure::new(error));
            response
        }
    }
}
// ANCHOR_END: respond

/// The answer to a client's body fault: its status and what it was.
pub fn client_fault_response(fault: BodyError) -> Response {
    let status = fault.status();
    let text = format!(
        "{} {}: {fault}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(ClientFault(fault));
    response
}

/// An application behind the boundary: it always answers, its failures as
/// [`respond`] does. For a layer that calls its inner application with
/// `?` and should never see an error.
#[derive(Clone, Debug)]
pub struct Boundary<A>(pub A);

impl<A: Application> Application for Boundary<A> {
    fn handle(&self, request: Request) -> AppResult {
        Ok(respond(&self.0, request))
    }
}

/// What takes the stack where a panic happened, on the panicking thread;
/// [`Panicked::stack`] hands back what it made.
pub type TakeStack = fn() -> Box<dyn Any + Send + Sync>;

/// Runs `call` with the stack of a panic inside it taken by `take`: for a
/// layer that will report it, and knows the stack type its reports want
/// (error capture takes `backtrace::Backtrace::new_unresolved`). Taking a
/// stack costs microseconds; naming its frames, left to the report,
/// milliseconds.
pub fn capturing_stacks<R>(take: TakeStack, call: impl FnOnce() -> R) -> R {
    let outer = TAKE_STACK.with(|wants| wants.replace(Some(take)));
    let result = call();
    TAKE_STACK.with(|wants| wants.set(outer));
    result
}

/// Where a panic happened, `file:line:column`, and the stack taken there.
type Site = (String, Option<Box<dyn Any + Send + Sync>>);

thread_local! {
    static TAKE_STACK: Cell<Option<TakeStack>> = const { Cell::new(None) };
    /// Where the last panic on this thread happened, and its stack.
    static SITE: RefCell<Option<Site>> = const { RefCell::new(None) };
}

/// Calls `call` catching a panic, as a [`Panicked`] with the place (and,
/// when asked for, the stack) the hook saw. The success path touches no
/// thread-local: the hook records every panic, and a site is read only
/// after a panic was caught, by when the hook has written that panic's
/// over any earlier one (one the application caught itself, say).
fn catching(call: impl FnOnce() -> AppResult) -> AppResult {
    let result = panic::catch_unwind(AssertUnwindSafe(call));
    match result {
        Ok(result) => result,
        Err(payload) => {
            let mut panicked = Panicked::from_payload(payload.as_ref());
            if let Some((location, stack)) = SITE.with(|site| site.borrow_mut().take()) {
                panicked = panicked.at(location, stack);
            }
            Err(Box::new(panicked))
        }
    }
}

// ANCHOR: hook
/// Installs the hook, once per process. `catch_unwind` hands back only the
/// payload, by which time the stack that panicked is gone; the hook runs
/// before the unwinding, so it records the place (and the stack, when
/// asked) on the panicking thread, for a boundary there to take, then
/// hands over to the hook that was there before (by default, the message
/// on standard error). Recording every panic costs a panic, never a
/// request.
fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let next = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
            let stack = TAKE_STACK.with(Cell::get).map(|take| take());
            // A panic inside the hook's own recording (an allocation
            // failing, say) must still reach the next hook.
            let _ = SITE.try_with(|site| {
                if let Ok(mut site) = site.try_borrow_mut() {
                    *site = Some((location, stack));
                }
            });
            next(info);
        }));
    });
}
// ANCHOR_END: hook

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::test::{FailingReader, TestRequest};
    use crate::{RequestBody, Stack};
    use http::StatusCode;

    #[test]
    fn a_panic_is_a_500_with_its_message_place_and_stack_when_asked() {
        let app = |_: Request| -> Response { panic!("divide by zero") };
        let response = respond(&app, TestRequest::get("/").build());
        assert_eq!(response.status(), 500);
        let panicked = Failure::of(&response).unwrap().panicked().unwrap();
        assert_eq!(panicked.message(), "divide by zero");
        assert!(panicked.location().unwrap().contains("failure.rs"));
        assert!(panicked.stack().is_none(), "nobody asked for it");
        let take: TakeStack = || Box::new(std::backtrace::Backtrace::force_capture());
        let response = capturing_stacks(take, || respond(&app, TestRequest::get("/").build()));
        let panicked = Failure::of(&response).unwrap().panicked().unwrap();
        let stack = panicked
            .stack()
            .unwrap()
            .downcast_ref::<std::backtrace::Backtrace>();
        assert!(format!("{:#}", stack.unwrap()).contains("a_panic_is_a_500"));
    }

    #[test]
    fn a_panic_the_application_caught_is_not_its_error() {
        let app = |_: Request| -> Result<Response, BoxError> {
            let _ = panic::catch_unwind(|| panic!("handled inside"));
            Err("the real failure".into())
        };
        let response = respond(&app, TestRequest::get("/").build());
        let failure = Failure::of(&response).unwrap();
        assert!(failure.panicked().is_none());
        assert_eq!(failure.error().to_string(), "the real failure");
    }

    fn reading_a_broken_body(wrap: bool) -> impl Fn(Request) -> Result<Response, BoxError> {
        move |request: Request| {
            let mut body = request.into_body();
            match body.read_to_end(&mut Vec::new()) {
                Ok(_) => Ok(Response::new("read\n".into())),
                // An application that hides the cause in an error of its own.
                Err(_) if wrap => Err("could not parse the upload".into()),
                Err(error) => Err(error.into()),
            }
        }
    }

    #[test]
    fn a_client_fault_is_answered_with_its_status_however_the_application_passed_it_on() {
        for wrap in [false, true] {
            let body = RequestBody::from_reader(FailingReader(BodyError::timed_out("too slow")));
            let request = TestRequest::post("/upload").build().map(|_| body);
            let response = respond(&reading_a_broken_body(wrap), request);
            assert_eq!(response.status(), 408, "wrapped: {wrap}");
            assert!(
                Failure::of(&response).is_none(),
                "not the application's failure"
            );
            assert!(ClientFault::of(&response).unwrap().is_timed_out());
        }
    }

    #[test]
    fn behind_a_boundary_a_layer_sees_only_responses() {
        fn panics(_: Request) -> Response {
            panic!("inside")
        }
        let outer_saw = Arc::new(std::sync::Mutex::new(None));
        let seen = outer_saw.clone();
        let layer = crate::layer_fn(move |inner: Boundary<fn(Request) -> Response>| {
            let seen = seen.clone();
            move |request: Request| -> AppResult {
                let response = inner.handle(request)?;
                *seen.lock().unwrap() = Some(response.status());
                Ok(response)
            }
        });
        let app = Stack::new()
            .layer(layer)
            .app(Boundary(panics as fn(Request) -> Response));
        let response = respond(&app, TestRequest::get("/").build());
        assert_eq!(response.status(), 500);
        assert_eq!(
            *outer_saw.lock().unwrap(),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert!(Failure::of(&response).unwrap().panicked().is_some());
    }

    #[test]
    fn a_failure_is_logged_and_reported_once() {
        let response = respond(
            &|_: Request| -> Result<Response, BoxError> { Err("x".into()) },
            TestRequest::get("/").build(),
        );
        let failure = Failure::of(&response).unwrap();
        assert!(failure.log_once());
        assert!(!failure.log_once());
        assert!(failure.report_once());
        assert!(!failure.clone().report_once(), "clones share the marks");
        assert!(failure.is_logged());
    }
}
