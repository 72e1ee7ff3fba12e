//! Middleware: a [`Layer`] wraps an application in another application.
//!
//! A layer "plays both sides" (PEP 3333): to the server it is an
//! application, to the application it wraps it is the server. A [`Stack`]
//! composes layers in one fixed, documented order: **the first layer added is
//! the outermost**. It sees the request first and the response last.
//!
//! ```text
//!   Stack::new().layer(A).layer(B).layer(C).app(app)
//!
//!           request                                   response
//!              │                                         ▲
//!   ┌──────────┼────────────── A ────────────────────────┼──────────┐
//!   │ ┌────────┼────────────── B ──────────────────────┐ │          │
//!   │ │ ┌──────┼────────────── C ────────────────────┐ │ │          │
//!   │ │ │      ▼                                     │ │ │          │
//!   │ │ │            app: Fn(Request) -> Response ───┼─┼─┘          │
//!   │ │ └────────────────────────────────────────────┘ │            │
//!   │ └────────────────────────────────────────────────┘            │
//!   └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! So a layer that must see the final status (request logging, metrics)
//! goes *outside* a layer that can change it (error capture turning a panic
//! into a 500).
//!
//! ```
//! use turnstile_core::{layer_fn, Application, BoxError, Request, Response, SharedApp, Stack, test};
//!
//! // A layer that appends its name to a response header, to show the order.
//! fn tag(name: &'static str) -> impl Fn(SharedApp) -> SharedApp {
//!     move |inner| {
//!         SharedApp::new(move |request: Request| -> Result<Response, BoxError> {
//!             let mut response = inner.handle(request)?;
//!             response.headers_mut().append("x-layers", name.parse()?);
//!             Ok(response)
//!         })
//!     }
//! }
//!
//! let app = SharedApp::new(|_request: Request| Response::new("ok".into()));
//! let stack = Stack::new()
//!     .layer(layer_fn(tag("outer")))
//!     .layer(layer_fn(tag("inner")))
//!     .app(app);
//! let response = test::serve(&stack, test::TestRequest::get("/").build());
//! let order: Vec<_> = response.headers.get_all("x-layers").iter().collect();
//! // The inner layer touched the response first, on its way out.
//! assert_eq!(order, ["inner", "outer"]);
//! ```

use crate::Application;
use crate::app::Either;

// ANCHOR: trait
/// Wraps an application `A` in another application.
///
/// Implement it on a small configuration type named for the layer's job
/// (`RequestLog`, `InjectHeaders`), whose [`layer`](Layer::layer) builds
/// the wrapping application, named for what it did to the one inside
/// (`Logged<A>`, `Injected<A>`): every layer in `turnstile-middleware`
/// follows that convention. A layer is used by reference, so one can wrap
/// several applications.
pub trait Layer<A> {
    /// The application that results from wrapping `A`.
    type Application: Application;

    /// Wraps `inner`.
    fn layer(&self, inner: A) -> Self::Application;
}
// ANCHOR_END: trait

/// The layer that does nothing: `Stack::new()` starts from it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl<A: Application> Layer<A> for Identity {
    type Application = A;

    fn layer(&self, inner: A) -> A {
        inner
    }
}

/// An optional layer: `None` leaves the application as it is.
impl<A: Application, L: Layer<A>> Layer<A> for Option<L> {
    type Application = Either<L::Application, A>;

    fn layer(&self, inner: A) -> Self::Application {
        match self {
            Some(layer) => Either::Left(layer.layer(inner)),
            None => Either::Right(inner),
        }
    }
}

/// Two layers, `inner` applied first and `outer` around it.
#[derive(Clone, Debug)]
pub struct Stacked<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<A, Inner, Outer> Layer<A> for Stacked<Inner, Outer>
where
    Inner: Layer<A>,
    Outer: Layer<Inner::Application>,
{
    type Application = Outer::Application;

    fn layer(&self, app: A) -> Self::Application {
        self.outer.layer(self.inner.layer(app))
    }
}

/// Builds an onion of layers, outermost first. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Stack<L = Identity> {
    layers: L,
}

impl Stack<Identity> {
    /// An empty stack.
    pub fn new() -> Self {
        Self { layers: Identity }
    }
}

impl<L> Stack<L> {
    /// Adds `layer` inside every layer added so far.
    pub fn layer<T>(self, layer: T) -> Stack<Stacked<T, L>> {
        Stack {
            layers: Stacked {
                inner: layer,
                outer: self.layers,
            },
        }
    }

    /// Adds `layer` when it is `Some`, as the binary does for layers chosen
    /// on the command line.
    pub fn option_layer<T>(self, layer: Option<T>) -> Stack<Stacked<Option<T>, L>> {
        self.layer(layer)
    }

    /// Wraps `app` in every layer of the stack.
    pub fn app<A>(self, app: A) -> L::Application
    where
        L: Layer<A>,
    {
        self.layers.layer(app)
    }
}

/// A whole stack is a layer too, so stacks nest.
impl<A, L: Layer<A>> Layer<A> for Stack<L> {
    type Application = L::Application;

    fn layer(&self, inner: A) -> Self::Application {
        self.layers.layer(inner)
    }
}

/// A layer made from a function that wraps an application.
#[derive(Clone, Copy, Debug)]
pub struct LayerFn<F>(F);

/// Makes a layer from a closure `Fn(A) -> B`, for one-off middleware.
pub fn layer_fn<F>(wrap: F) -> LayerFn<F> {
    LayerFn(wrap)
}

impl<A, B, F> Layer<A> for LayerFn<F>
where
    F: Fn(A) -> B,
    B: Application,
{
    type Application = B;

    fn layer(&self, inner: A) -> B {
        (self.0)(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::{MockApp, TestRequest, serve};
    use crate::{AppResult, Request};

    /// Adds `x-seen-by: NAME` to the request and the response.
    #[derive(Clone)]
    struct Tag(&'static str);

    struct Tagged<A> {
        inner: A,
        name: &'static str,
    }

    impl<A: Application> Layer<A> for Tag {
        type Application = Tagged<A>;
        fn layer(&self, inner: A) -> Tagged<A> {
            Tagged {
                inner,
                name: self.0,
            }
        }
    }

    impl<A: Application> Application for Tagged<A> {
        fn handle(&self, mut request: Request) -> AppResult {
            request
                .headers_mut()
                .append("x-seen-by", self.name.parse().unwrap());
            let mut response = self.inner.handle(request)?;
            response
                .headers_mut()
                .append("x-seen-by", self.name.parse().unwrap());
            Ok(response)
        }
    }

    fn values(headers: &http::HeaderMap) -> Vec<&str> {
        headers
            .get_all("x-seen-by")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn first_layer_added_is_outermost() {
        let mock = MockApp::ok("fine");
        let app = Stack::new()
            .layer(Tag("a"))
            .layer(Tag("b"))
            .layer(Tag("c"))
            .app(mock.clone());
        let response = serve(&app, TestRequest::get("/").build());
        assert_eq!(values(&mock.last_request().parts.headers), ["a", "b", "c"]);
        assert_eq!(values(&response.headers), ["c", "b", "a"]);
    }

    #[test]
    fn optional_layers_and_nested_stacks() {
        let mock = MockApp::ok("fine");
        let inner_stack = Stack::new().layer(Tag("x")).option_layer(None::<Tag>);
        let app = Stack::new()
            .option_layer(Some(Tag("a")))
            .layer(inner_stack)
            .app(mock.clone());
        serve(&app, TestRequest::get("/").build());
        assert_eq!(values(&mock.last_request().parts.headers), ["a", "x"]);
    }

    #[test]
    fn layer_fn_wraps_with_a_closure() {
        let mock = MockApp::ok("fine");
        let shout = layer_fn(|inner: MockApp| {
            move |request: Request| -> AppResult {
                let mut response = inner.handle(request)?;
                response
                    .headers_mut()
                    .insert("x-shout", "yes".parse().unwrap());
                Ok(response)
            }
        });
        let app = Stack::new().layer(shout).app(mock);
        let response = serve(&app, TestRequest::get("/").build());
        assert_eq!(response.header("x-shout"), Some("yes"));
    }
}
