//! Completion hooks: code that runs once the response has left the server.
//!
//! A layer that times or counts requests must see the *whole* response,
//! including a streamed body that is produced long after the application
//! returned. WSGI solves this with the body iterable's `close()`, which the
//! server calls however the request ends. Turnstile's equivalent is a hook on
//! the [`ResponseBody`](crate::ResponseBody), registered with [`on_complete`].
//!
//! The server calls every hook exactly once, after the last byte is written
//! (or the write failed), with a [`Completion`] saying what happened. If a
//! response is dropped before any server writes it (an outer layer replaced
//! it, the connection was gone), its hooks still run, with
//! [`Outcome::NotSent`]. Hooks run in the order they were registered, which is
//! innermost layer first: the order the response travelled out.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use turnstile_core::{on_complete, Outcome, Response, test};
//!
//! let seen = Arc::new(Mutex::new(None));
//! let record = seen.clone();
//! let app = move |_req| {
//!     let mut response = Response::new("Hello, world!\n".into());
//!     let record = record.clone();
//!     on_complete(&mut response, move |done| {
//!         *record.lock().unwrap() = Some((done.status.as_u16(), done.body_bytes, done.outcome));
//!     });
//!     response
//! };
//! test::serve(&app, test::TestRequest::get("/").build());
//! assert_eq!(*seen.lock().unwrap(), Some((200, 14, Outcome::Written)));
//! ```

use std::fmt;
use std::time::Instant;

use http::StatusCode;

use crate::Response;

/// What happened to a response, as told to its completion hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The status the server sent (or, for [`Outcome::NotSent`], the status
    /// the response had when the hook was registered).
    pub status: StatusCode,
    /// Body bytes written to the connection, not counting the head or chunk
    /// framing.
    pub body_bytes: u64,
    /// Whether the whole response was written.
    pub outcome: Outcome,
    /// When writing ended (or, for [`Outcome::NotSent`], when the response
    /// was dropped): one reading, shared by every hook.
    pub finished: Instant,
}

impl Completion {
    /// Whether the client received the whole response.
    pub fn is_written(&self) -> bool {
        self.outcome == Outcome::Written
    }
}

/// How writing a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte was handed to the operating system.
    Written,
    /// Writing started but stopped early: the client went away, a write timed
    /// out, or a streamed body returned an error. The connection was closed.
    Aborted,
    /// The response was dropped before a server wrote any of it.
    NotSent,
}

type Hook = Box<dyn FnOnce(&Completion) + Send>;

/// The hooks attached to one response body. Servers take them with
/// [`ResponseBody::into_parts`](crate::ResponseBody::into_parts) and call
/// [`complete`](Self::complete); dropping them runs each hook with
/// [`Outcome::NotSent`].
#[derive(Default)]
pub struct CompletionHooks {
    hooks: Vec<(StatusCode, Hook)>,
}

impl CompletionHooks {
    /// Whether no hook is registered, so the server may skip bookkeeping.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Runs every hook, in registration order, with what happened.
    pub fn complete(mut self, completion: &Completion) {
        for (_, hook) in std::mem::take(&mut self.hooks) {
            hook(completion);
        }
    }

    fn push(&mut self, status: StatusCode, hook: Hook) {
        self.hooks.push((status, hook));
    }
}

impl Drop for CompletionHooks {
    fn drop(&mut self) {
        let hooks = std::mem::take(&mut self.hooks);
        if hooks.is_empty() {
            return;
        }
        let finished = Instant::now();
        for (status, hook) in hooks {
            hook(&Completion {
                status,
                body_bytes: 0,
                outcome: Outcome::NotSent,
                finished,
            });
        }
    }
}

impl fmt::Debug for CompletionHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionHooks")
            .field("len", &self.hooks.len())
            .finish()
    }
}

/// Registers `hook` to run once `response` has been written (or dropped).
///
/// See the [module docs](self) for when hooks run.
pub fn on_complete(response: &mut Response, hook: impl FnOnce(&Completion) + Send + 'static) {
    let status = response.status();
    response.body_mut().hooks_mut().push(status, Box::new(hook));
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::ResponseBody;

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&'static str) -> Hook) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let make = {
            let log = log.clone();
            move |name: &'static str| -> Hook {
                let log = log.clone();
                Box::new(move |done: &Completion| {
                    log.lock().unwrap().push(format!(
                        "{name} {} {:?}",
                        done.status.as_u16(),
                        done.outcome
                    ));
                })
            }
        };
        (log, make)
    }

    #[test]
    fn hooks_run_once_in_registration_order() {
        let (log, hook) = recorder();
        let mut response = Response::new(ResponseBody::from("hi"));
        on_complete(&mut response, hook("inner"));
        on_complete(&mut response, hook("outer"));
        let (_, hooks) = response.into_body().into_parts();
        hooks.complete(&Completion {
            status: StatusCode::OK,
            body_bytes: 2,
            outcome: Outcome::Written,
            finished: Instant::now(),
        });
        assert_eq!(
            *log.lock().unwrap(),
            ["inner 200 Written", "outer 200 Written"]
        );
    }

    #[test]
    fn dropped_response_reports_not_sent_with_registered_status() {
        let (log, hook) = recorder();
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_FOUND;
        on_complete(&mut response, hook("layer"));
        drop(response);
        assert_eq!(*log.lock().unwrap(), ["layer 404 NotSent"]);
    }

    #[test]
    fn replacing_content_keeps_hooks() {
        let (log, hook) = recorder();
        let mut response = Response::new(ResponseBody::from("detail"));
        on_complete(&mut response, hook("inner"));
        response
            .body_mut()
            .replace_content(crate::Content::Bytes("generic".into()));
        drop(response);
        assert_eq!(log.lock().unwrap().len(), 1);
    }
}
