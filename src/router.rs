//! A router that names its routes: each request goes to the handler of the
//! route template its path matches (matched by `matchit`, the matcher axum
//! uses), and the template becomes the request's [`Route`], so that the
//! metrics and the spans group by route with no code in the handlers,
//! failures included.
//!
//! ```
//! use turnstile::http::{self, StatusCode};
//! use turnstile::router::{PathParams, Router, get};
//! use turnstile::test::{TestRequest, serve};
//! use turnstile::{Request, Route};
//!
//! fn book(request: Request) -> String {
//!     let id = PathParams::of(&request).and_then(|p| p.get("id")).unwrap_or("?");
//!     format!("book {id}\n")
//! }
//!
//! let app = Router::new()
//!     .route("/books", get(|_: Request| "every book\n").post(|_: Request| StatusCode::CREATED))
//!     .route("/books/{id}", get(book));
//!
//! let response = serve(&app, TestRequest::get("/books/42").build());
//! assert_eq!(response.text(), "book 42\n");
//! assert_eq!(response.route(), Some("/books/{id}"));
//! assert_eq!(serve(&app, TestRequest::post("/books").build()).status, 201);
//! // No route: 404; a route without the method: 405, saying which it has.
//! assert_eq!(serve(&app, TestRequest::get("/authors").build()).status, 404);
//! let refused = serve(&app, TestRequest::new(http::Method::DELETE, "/books").build());
//! assert_eq!(refused.status, 405);
//! assert_eq!(refused.header("allow"), Some("GET, HEAD, POST"));
//! ```
//!
//! A `GET` route answers `HEAD` too (the server sends no body for it). A
//! handler is any [`Application`]: a function of a [`Request`] returning a
//! `Response`, a `Result`, a status, a string or a status and a string.

use http::{HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;

use crate::{AppResult, Application, Request, Route, SharedApp, respond};

/// Routes, each a template (`/books/{id}`, `/static/{*path}`) and the
/// handlers of its methods.
pub struct Router {
    matcher: matchit::Router<usize>,
    endpoints: Vec<(Route, Methods)>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.endpoints
                    .iter()
                    .map(|(route, methods)| (route.as_str(), methods.allow())),
            )
            .finish()
    }
}

impl Router {
    /// A router with no routes: every request gets 404.
    pub fn new() -> Self {
        Self {
            matcher: matchit::Router::new(),
            endpoints: Vec::new(),
        }
    }

    /// Adds `template` (`{name}` for one segment, `{*name}` for the rest
    /// of the path) with the handlers in `methods`.
    ///
    /// # Panics
    ///
    /// If `template` is not a valid template or conflicts with one added
    /// before: a mistake in the program, found as it starts.
    pub fn route(mut self, template: &'static str, methods: Methods) -> Self {
        if let Err(error) = self.matcher.insert(template, self.endpoints.len()) {
            panic!("the route {template:?} cannot be added: {error}");
        }
        self.endpoints.push((Route::new(template), methods));
        self
    }
}

impl Application for Router {
    fn handle(&self, mut request: Request) -> AppResult {
        let Ok(matched) = self.matcher.at(request.uri().path()) else {
            return (StatusCode::NOT_FOUND, "Not Found\n").into_app();
        };
        let (route, methods) = &self.endpoints[*matched.value];
        let params = PathParams(
            matched
                .params
                .iter()
                .map(|(name, value)| {
                    let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
                    (name.to_owned(), value)
                })
                .collect(),
        );
        let Some(handler) = methods.find(request.method()) else {
            let mut response =
                (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_app()?;
            if let Ok(allow) = HeaderValue::from_str(&methods.allow()) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response.extensions_mut().insert(route.clone());
            return Ok(response);
        };
        request.extensions_mut().insert(params);
        request.extensions_mut().insert(route.clone());
        // Through the failure boundary, so that an error or a panic is the
        // 500 it would be anyway, and carries the route like any answer.
        let mut response = respond(handler, request);
        response.extensions_mut().insert(route.clone());
        Ok(response)
    }
}

/// A route's handlers, by method.
#[derive(Clone, Default)]
pub struct Methods {
    by_method: Vec<(Method, SharedApp)>,
    any: Option<SharedApp>,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.allow())
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        pub fn $name(handler: impl Application) -> Methods {
            Methods::default().on(Method::$method, handler)
        }

        impl Methods {
            $(#[$doc])*
            pub fn $name(self, handler: impl Application) -> Self {
                self.on(Method::$method, handler)
            }
        }
    };
}

method!(
    /// `GET` (and `HEAD`) requests go to `handler`.
    get, GET
);
method!(
    /// `POST` requests go to `handler`.
    post, POST
);
method!(
    /// `PUT` requests go to `handler`.
    put, PUT
);
method!(
    /// `PATCH` requests go to `handler`.
    patch, PATCH
);
method!(
    /// `DELETE` requests go to `handler`.
    delete, DELETE
);

/// Requests of every method go to `handler`.
pub fn any(handler: impl Application) -> Methods {
    Methods {
        by_method: Vec::new(),
        any: Some(SharedApp::new(handler)),
    }
}

impl Methods {
    /// Requests of `method` go to `handler`.
    pub fn on(mut self, method: Method, handler: impl Application) -> Self {
        self.by_method.retain(|(known, _)| *known != method);
        self.by_method.push((method, SharedApp::new(handler)));
        self
    }

    fn find(&self, method: &Method) -> Option<&SharedApp> {
        let find = |wanted: &Method| {
            self.by_method
                .iter()
                .find(|(known, _)| known == wanted)
                .map(|(_, handler)| handler)
        };
        find(method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| find(&Method::GET))
                    .flatten()
            })
            .or(self.any.as_ref())
    }

    /// The `Allow` header's value: the methods, `HEAD` with `GET`, sorted.
    fn allow(&self) -> String {
        let mut names: Vec<&str> = self.by_method.iter().map(|(m, _)| m.as_str()).collect();
        if names.contains(&"GET") && !names.contains(&"HEAD") {
            names.push("HEAD");
        }
        names.sort_unstable();
        names.join(", ")
    }
}

/// The path parameters of the route a request matched (`id` in
/// `/books/{id}`), percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// The parameters the router put in `request`, if it went through one.
    pub fn of(request: &Request) -> Option<&Self> {
        request.extensions().get()
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every parameter, in the template's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// The value of path parameter `name` in `request`: a shorthand for
/// [`PathParams::of`] and [`PathParams::get`].
pub fn param<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    PathParams::of(request)?.get(name)
}

/// A one-line answer as the router's own.
trait IntoApp {
    fn into_app(self) -> AppResult;
}

impl IntoApp for (StatusCode, &'static str) {
    fn into_app(self) -> AppResult {
        crate::IntoAppResult::into_app_result(self)
    }
}

/// What became of the response, for tests: its route.
#[cfg(test)]
fn route_of(response: &crate::Response) -> Option<&str> {
    Route::of_response(response).map(Route::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;
    use crate::test::{TestRequest, serve};

    fn failing(_request: Request) -> Result<Response, std::io::Error> {
        Err(std::io::Error::other("the database is away"))
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/books/{id}",
                get(|_: Request| "a book\n").delete(|_: Request| StatusCode::NO_CONTENT),
            )
            .route(
                "/files/{*path}",
                get(|request: Request| {
                    let params = PathParams::of(&request).cloned().unwrap_or_default();
                    format!("{}\n", params.get("path").unwrap_or_default())
                }),
            )
            .route("/fails", get(failing))
            .route(
                "/panics",
                any(|_: Request| -> Response { panic!("in a handler") }),
            )
    }

    #[test]
    fn a_handler_sees_its_decoded_parameters_and_its_route() {
        let app = Router::new().route(
            "/users/{name}/posts/{id}",
            get(|request: Request| {
                let params = PathParams::of(&request).unwrap();
                let route = Route::of_request(&request).unwrap();
                format!(
                    "{} {} {}\n",
                    params.get("name").unwrap(),
                    params.get("id").unwrap(),
                    route
                )
            }),
        );
        let response = serve(&app, TestRequest::get("/users/J%C3%BCrgen/posts/7").build());
        assert_eq!(response.text(), "Jürgen 7 /users/{name}/posts/{id}\n");
        assert_eq!(
            serve(&app, TestRequest::get("/files/a/b.txt").build()).status,
            404
        );
        assert_eq!(
            serve(&self::app(), TestRequest::get("/files/a/b.txt").build()).text(),
            "a/b.txt\n"
        );
    }

    #[test]
    fn head_is_served_by_get_and_other_methods_get_405_with_allow() {
        let app = app();
        let head = serve(&app, TestRequest::new(Method::HEAD, "/books/1").build());
        assert_eq!(head.status, 200);
        assert_eq!(head.route(), Some("/books/{id}"));
        let refused = serve(&app, TestRequest::new(Method::PUT, "/books/1").build());
        assert_eq!(refused.status, 405);
        assert_eq!(refused.header("allow"), Some("DELETE, GET, HEAD"));
        assert_eq!(refused.route(), Some("/books/{id}"));
        assert_eq!(
            serve(&app, TestRequest::new(Method::DELETE, "/books/1").build()).status,
            204
        );
    }

    #[test]
    fn unmatched_paths_get_404_with_no_route() {
        let response = app().handle(TestRequest::get("/nothing").build()).unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(route_of(&response), None);
    }

    #[test]
    fn failures_are_500s_that_carry_their_route() {
        let app = app();
        for path in ["/fails", "/panics"] {
            let response = app.handle(TestRequest::get(path).build()).unwrap();
            assert_eq!(response.status(), 500, "{path}");
            assert_eq!(route_of(&response), Some(path), "{path}");
            assert!(crate::Failure::of(&response).is_some(), "{path}");
        }
    }

    #[test]
    #[should_panic(expected = "cannot be added")]
    fn a_conflicting_route_is_refused_at_start() {
        let _ = Router::new()
            .route("/books/{id}", get(|_: Request| "a\n"))
            .route("/books/{name}", get(|_: Request| "b\n"));
    }
}
