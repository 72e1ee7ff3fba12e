//! The route a request matched: the template (`/users/{id}`), never the
//! path (`/users/42`).
//!
//! Layers that group requests (metrics labels, span names) need a name that
//! takes few values; the raw path takes as many as clients care to send.
//! Only the application knows its routes, so it says which one matched by
//! putting a [`Route`] in the response's extensions (or a router further
//! out puts it in the request's, before the layers see it):
//!
//! ```
//! use turnstile_core::{Request, Response, Route};
//!
//! fn app(request: Request) -> Response {
//!     let mut response = Response::new("user\n".into());
//!     if request.uri().path().starts_with("/users/") {
//!         response.extensions_mut().insert(Route::new("/users/{id}"));
//!     }
//!     response
//! }
//!
//! let request = turnstile_core::test::TestRequest::get("/users/42").build();
//! let response = app(request);
//! assert_eq!(Route::of_response(&response).unwrap().as_str(), "/users/{id}");
//! ```
//!
//! A handler cannot change the request the layers outside it already hold,
//! which is why the application answers with its route rather than writing
//! it into the request.

use std::borrow::Cow;
use std::fmt;

use crate::{Request, Response};

/// A route template, as OpenTelemetry's `http.route`: low cardinality,
/// with the application's placeholders for the variable parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route(Cow<'static, str>);

impl Route {
    /// A route known when the program is written; costs no allocation.
    pub const fn new(template: &'static str) -> Self {
        Self(Cow::Borrowed(template))
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The route a router put in the request, if any.
    pub fn of_request(request: &Request) -> Option<&Self> {
        request.extensions().get()
    }

    /// The route the application put in its response, if any.
    pub fn of_response(response: &Response) -> Option<&Self> {
        response.extensions().get()
    }

    /// The template as a `Cow`, borrowed when it was a `&'static str`.
    pub fn into_inner(self) -> Cow<'static, str> {
        self.0
    }
}

impl From<String> for Route {
    fn from(template: String) -> Self {
        Self(Cow::Owned(template))
    }
}

impl From<&'static str> for Route {
    fn from(template: &'static str) -> Self {
        Self::new(template)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
