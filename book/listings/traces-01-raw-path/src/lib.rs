//! "Tracing with OpenTelemetry", a wrong turn: a layer that makes one SERVER
//! span per request, ended at the last byte as it should be, but does what
//! opentelemetry-instrumentation-wsgi does by default. It names the span
//! after the raw path (`GET /users/7`), so every path a client sends becomes
//! a span name of its own, and it records the query as it came
//! (`url.query` = `token=s3cret`), so every secret in a query goes to the
//! collector (see the test).
//!
//! It continues no caller's trace either; that is not the point here.

use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use turnstile::{AppResult, Application, Layer, Request, on_complete};

/// Configuration: the tracer the spans are made with.
#[derive(Clone, Debug)]
pub struct PathSpansLayer {
    tracer: SdkTracer,
}

impl PathSpansLayer {
    /// A layer whose spans go to `provider`.
    pub fn new(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: provider.tracer("listing-traces-01-raw-path"),
        }
    }
}

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct PathSpans<A> {
    inner: A,
    tracer: SdkTracer,
}

impl<A: Application> Layer<A> for PathSpansLayer {
    type Application = PathSpans<A>;

    fn layer(&self, inner: A) -> PathSpans<A> {
        PathSpans {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

// ANCHOR: handle
impl<A: Application> Application for PathSpans<A> {
    fn handle(&self, request: Request) -> AppResult {
        // The WSGI instrumentation's default: `{method} {PATH_INFO}`, and
        // the query string as it came.
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", path.clone()),
        ];
        if let Some(query) = request.uri().query() {
            attributes.push(KeyValue::new("url.query", query.to_owned()));
        }
        let mut span = self
            .tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::current());
        let mut response = self.inner.handle(request)?;
        on_complete(&mut response, move |done| {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(done.status.as_u16()),
            ));
            span.end();
        });
        Ok(response)
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use turnstile::Stack;
    use turnstile::http::StatusCode;
    use turnstile::test::{MockApp, TestRequest, serve};

    use super::*;

    // ANCHOR: names
    #[test]
    fn every_path_is_a_span_name_and_every_query_is_kept() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let app = Stack::new()
            .layer(PathSpansLayer::new(&provider))
            .app(MockApp::with_status(StatusCode::NOT_FOUND, "Not Found\n"));

        // A scanner, one guess per request; then a link with a token.
        for n in 0..100 {
            serve(&app, TestRequest::get(&format!("/wp-admin/{n}")).build());
        }
        serve(&app, TestRequest::get("/reset?token=s3cret").build());

        let spans = exporter.get_finished_spans().unwrap();
        let names: HashSet<&str> = spans.iter().map(|span| &*span.name).collect();
        // This passes, and that is the bug: 101 requests that all got the
        // same 404 made 101 span names, and the client chose every one.
        assert_eq!(names.len(), 101);
        assert!(names.contains("GET /wp-admin/42"));
        // And the token went to the collector, as it was sent.
        let query = spans
            .iter()
            .flat_map(|span| &span.attributes)
            .find(|kv| kv.key.as_str() == "url.query")
            .map(|kv| kv.value.as_str().into_owned());
        assert_eq!(query.as_deref(), Some("token=s3cret"));
    }
    // ANCHOR_END: names
}
