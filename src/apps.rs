//! Applications built into the `turnstile` binary, selected with `--app`.
//!
//! * [`demo`]: a few routes that exercise every path through the server.
//! * [`hello`]: one fixed answer, for load benchmarks.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use crate::{Bytes, Request, Response, ResponseBody};

const HELLO: &str = "Hello, world!\n";

/// Every request gets `200 Hello, world!\n` as `text/plain`.
pub fn hello(_request: Request) -> Response {
    text(StatusCode::OK, HELLO)
}

/// The demo application:
///
/// | route | answer |
/// |---|---|
/// | `GET /` | 200 `Hello, world!` |
/// | `/healthz` | 200 `ok` |
/// | `/echo` | 200 with the request body |
/// | `/stream?chunks=N` | a streamed body of N chunks |
/// | `/slow?ms=N` | answers after N milliseconds (at most 60 s) |
/// | `/error` | the application returns an error |
/// | `/panic` | the application panics |
/// | anything else | 404 |
///
/// ```
/// use turnstile::{apps, test};
///
/// let response = test::serve(&apps::demo, test::TestRequest::get("/stream?chunks=3").build());
/// assert_eq!(response.text(), "chunk 1\nchunk 2\nchunk 3\n");
/// ```
pub fn demo(request: Request) -> Result<Response, DemoError> {
    let response = match request.uri().path() {
        "/" => text(StatusCode::OK, HELLO),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/echo" => echo(request)?,
        "/stream" => stream(query_number(&request, "chunks").unwrap_or(3).min(10_000)),
        "/slow" => {
            let ms = query_number(&request, "ms").unwrap_or(100).min(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            text(StatusCode::OK, "slept\n")
        }
        "/error" => return Err(DemoError),
        "/panic" => panic!("the demo application panicked, as /panic asks"),
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    };
    Ok(response)
}

/// The error `/error` returns, to show error handling end to end.
#[derive(Debug)]
pub struct DemoError;

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the demo application failed, as /error asks")
    }
}

impl std::error::Error for DemoError {}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn echo(request: Request) -> Result<Response, DemoError> {
    use std::io::Read;
    let mut body = Vec::new();
    request
        .into_body()
        .read_to_end(&mut body)
        .map_err(|_| DemoError)?;
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

fn stream(chunks: u64) -> Response {
    let body = (1..=chunks).map(|n| Ok(Bytes::from(format!("chunk {n}\n"))));
    let mut response = Response::new(ResponseBody::stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The number in `?key=N`, if present and valid.
fn query_number(request: &Request, key: &str) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::{TestRequest, serve};

    fn get(path: &str) -> crate::test::TestResponse {
        serve(&demo, TestRequest::get(path).build())
    }

    #[test]
    fn demo_routes() {
        assert_eq!(get("/").text(), HELLO);
        assert_eq!(get("/healthz").status, 200);
        assert_eq!(get("/nowhere").status, 404);
        assert_eq!(get("/slow?ms=1").text(), "slept\n");
        assert_eq!(get("/stream?chunks=2").text(), "chunk 1\nchunk 2\n");
    }

    #[test]
    fn demo_failures_answer_a_generic_500() {
        for path in ["/error", "/panic"] {
            let response = get(path);
            assert_eq!(response.status, 500);
            assert!(!response.text().contains("demo"));
        }
    }

    #[test]
    fn echo_returns_the_body() {
        let response = serve(&demo, TestRequest::post("/echo").body("ping").build());
        assert_eq!(response.text(), "ping");
    }

    #[test]
    fn hello_is_plain_text() {
        let response = serve(&hello, TestRequest::get("/anything").build());
        assert_eq!(response.text(), HELLO);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
}
