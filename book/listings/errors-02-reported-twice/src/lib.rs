//! "Error capture", a wrong turn: the obvious Sentry set-up, a client with
//! Sentry's panic integration plus a layer that reports every failure it
//! catches, reports each panic twice (see the test).

use turnstile::{
    AppResult, Application, Layer, Request, call_catching_panics, internal_server_error,
};

/// Configuration: none; events go to the client of the current Sentry hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportFailuresLayer;

/// The application that wraps `A`.
#[derive(Clone, Debug)]
pub struct ReportFailures<A> {
    inner: A,
}

impl<A: Application> Layer<A> for ReportFailuresLayer {
    type Application = ReportFailures<A>;

    fn layer(&self, inner: A) -> ReportFailures<A> {
        ReportFailures { inner }
    }
}

// ANCHOR: handle
impl<A: Application> Application for ReportFailures<A> {
    fn handle(&self, request: Request) -> AppResult {
        match call_catching_panics(&self.inner, request) {
            Ok(response) => Ok(response),
            Err(error) => {
                // Every failure goes to Sentry, panics included.
                sentry::capture_error(&*error);
                Ok(internal_server_error())
            }
        }
    }
}
// ANCHOR_END: handle

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sentry::integrations::panic::PanicIntegration;
    use sentry::test::TestTransport;
    use sentry::{Client, ClientOptions, Hub};
    use turnstile::Stack;
    use turnstile::http::StatusCode;
    use turnstile::test::{MockApp, TestRequest, serve};

    use super::*;

    // ANCHOR: twice
    #[test]
    fn one_panic_is_reported_twice() {
        // Sentry's set-up, as its default features have it: the panic
        // integration installs a panic hook that reports on the active hub.
        let transport = TestTransport::new();
        let options = ClientOptions::new()
            .dsn("https://public@sentry.invalid/1")
            .transport(transport.clone())
            .add_integration(PanicIntegration::new());
        let client = Arc::new(Client::with_options(options));
        let hub = Arc::new(Hub::new(Some(client), Default::default()));
        let app = Stack::new()
            .layer(ReportFailuresLayer)
            .app(MockApp::panicking("the basket is empty"));

        let response = Hub::run(hub, || serve(&app, TestRequest::get("/checkout").build()));
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);

        // This passes, and that is the bug: one panic, two events. The hook
        // reported it as it happened, and the layer again once it was caught.
        let events = transport.fetch_and_clear_events();
        let reported: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|event| {
                let exception = &event.exception[0];
                (exception.ty.as_str(), exception.value.as_deref())
            })
            .collect();
        assert_eq!(
            reported,
            [
                ("panic", Some("the basket is empty")),
                (
                    "Panicked",
                    Some("the application panicked: the basket is empty")
                ),
            ]
        );
    }
    // ANCHOR_END: twice
}
