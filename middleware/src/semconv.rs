//! Shared by the layers: OpenTelemetry's HTTP semantic conventions as the
//! metrics and the spans both label requests, so that the two agree.
//!
//! ```text
//! GET, POST, … QUERY  ->  itself        a method outside HTTP's registry  ->  _OTHER
//! a request the server (or a trusted proxy) says is https  ->  https, else http
//! ```

use turnstile_core::http::Method;
use turnstile_core::http::uri::Scheme;
use turnstile_core::{Environ, Request};

/// OpenTelemetry's `http.request.method`: the methods of HTTP's registry,
/// and `_OTHER` for the rest. The tracing layer names spans by it too.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ if method.as_str() == "QUERY" => "QUERY",
        _ => "_OTHER",
    }
}

/// `url.scheme`: the request's as the server resolved it (behind a trusted
/// proxy, the proxy's), else its target's.
pub(crate) fn scheme_label(request: &Request) -> &'static str {
    let https = match request.extensions().get::<Environ>() {
        Some(environ) => environ.scheme == Scheme::HTTPS,
        None => request.uri().scheme() == Some(&Scheme::HTTPS),
    };
    if https { "https" } else { "http" }
}
