//! Applications built into the `turnstile` binary, selected with `--app`.
//!
//! * [`demo`]: a few routes that exercise every path through the server.
//! * [`hello`]: one fixed answer, for load benchmarks.
//! * [`environ`]: what the application saw, as JSON, for testing what the
//!   server hands over.
//! * [`load_broken`]: fails to load, to show that the arbiter stops rather than
//!   fork workers in a loop.

use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use turnstile::server::http1::head::field_lines;
use turnstile::{Bytes, Environ, PerProcess, Request, Response, ResponseBody, Route};

const HELLO: &str = "Hello, world!\n";

/// Every request gets `200 Hello, world!\n` as `text/plain`.
pub(crate) fn hello(_request: Request) -> Response {
    text(StatusCode::OK, HELLO)
}

/// The demo application:
///
/// | route | answer |
/// |---|---|
/// | `GET /` | 200 `Hello, world!` |
/// | `/healthz` | 200 `ok` |
/// | `/echo` | 200 with the request body |
/// | `/environ` | 200, what [`environ`] answers |
/// | `/stream?chunks=N&size=B` | a streamed body of N chunks, each padded to B bytes when `size` is given |
/// | `/slow?ms=N` | answers after N milliseconds (at most 60 s) |
/// | `/per-process` | which process built this process's [`ProcessStamp`] |
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
pub(crate) fn demo(request: Request) -> Result<Response, DemoError> {
    let path = request.uri().path().to_owned();
    let mut response = match path.as_str() {
        "/" => text(StatusCode::OK, HELLO),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/echo" => echo(request)?,
        "/environ" => environ(request).map_err(|_| DemoError)?,
        "/stream" => stream(
            query_number(&request, "chunks").unwrap_or(3).min(10_000),
            query_number(&request, "size").map(|size| size.min(1 << 20)),
        ),
        "/slow" => {
            let ms = query_number(&request, "ms").unwrap_or(100).min(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            text(StatusCode::OK, "slept\n")
        }
        "/per-process" => {
            let answer = serde_json::json!({
                "pid": Environ::of(&request).worker.pid,
                "built_by": PROCESS_STAMP.get().built_by,
            });
            Response::new(format!("{answer}\n").into())
        }
        "/error" => return Err(DemoError),
        "/panic" => panic!("the demo application panicked, as /panic asks"),
        _ => return Ok(text(StatusCode::NOT_FOUND, "Not Found\n")),
    };
    // Every path above is a route of its own; the metrics and traces group
    // by it (an unknown path gets no route: it could be anything).
    if let Some(route) = ROUTES.iter().find(|route| **route == path) {
        response.extensions_mut().insert(Route::new(route));
    }
    Ok(response)
}

const ROUTES: [&str; 7] = [
    "/",
    "/healthz",
    "/echo",
    "/environ",
    "/stream",
    "/slow",
    "/per-process",
];

/// Stands for a per-process resource (a database connection, a client with
/// a background thread): it remembers the process that built it.
#[derive(Debug)]
pub(crate) struct ProcessStamp {
    /// The process that built it.
    pub built_by: u32,
}

static PROCESS_STAMP: LazyLock<PerProcess<ProcessStamp>> = LazyLock::new(|| {
    PerProcess::new(|| ProcessStamp {
        built_by: std::process::id(),
    })
});

/// Builds the demo's per-process resources, as an application does while
/// it loads: under `--preload` that happens in the arbiter, and each worker
/// must still get its own.
pub(crate) fn load_demo() {
    PROCESS_STAMP.get();
}

/// Loads the application `--app broken` names, which panics while it
/// loads, as one whose database is unreachable at start-up does.
///
/// # Panics
///
/// Always.
pub(crate) fn load_broken() -> ! {
    panic!("the broken application fails to load, as --app broken asks")
}

/// Answers `200 application/json` with what the application saw:
///
/// ```json
/// {"method": "POST", "target": "/p?q", "version": "HTTP/1.1",
///  "headers": [["Host", "h"], ["X-A", "1"], ["x-a", "2"]],
///  "body_base64": "aGk=", "trailers": [["checksum", "42"]],
///  "remote_addr": "127.0.0.1:40000", "client_addr": "127.0.0.1:40000",
///  "scheme": "http", "pid": 4242, "worker": 1,
///  "request_id": "5f0c2a9e-41d3-4b6a-8e1f-0c9d2b7a6e51"}
/// ```
///
/// `target` is the request-target as sent and `headers` every field line in
/// wire order, names as sent, not merged. Strings are made from the bytes
/// as ISO-8859-1, one character per byte, as WSGI does for its `environ`.
///
/// ```
/// use turnstile::{apps, test};
///
/// let request = test::TestRequest::post("/p?q").header("x-a", "1").body("hi").build();
/// let json: serde_json::Value = serde_json::from_str(&test::serve(&apps::environ, request).text()).unwrap();
/// assert_eq!(json["target"], "/p?q");
/// assert_eq!(json["body_base64"], "aGk=");
/// assert_eq!(json["headers"][0], serde_json::json!(["x-a", "1"]));
/// ```
///
/// # Errors
///
/// When the request body cannot be read to its end.
pub(crate) fn environ(request: Request) -> std::io::Result<Response> {
    use base64::Engine;
    use serde_json::{Value, json};
    use std::io::Read;

    let facts = Environ::of(&request).clone();
    let latin1 = |bytes: &[u8]| -> String { bytes.iter().map(|&b| char::from(b)).collect() };
    let pair = |name: &[u8], value: &[u8]| json!([latin1(name), latin1(value)]);
    let headers: Vec<Value> = if facts.raw_head.is_empty() {
        request
            .headers()
            .iter()
            .map(|(name, value)| pair(name.as_ref(), value.as_bytes()))
            .collect()
    } else {
        field_lines(&facts.raw_head)
            .map(|(name, value)| pair(name, value))
            .collect()
    };
    let target = if facts.raw_target.is_empty() {
        request.uri().to_string().into_bytes().into()
    } else {
        facts.raw_target.clone()
    };
    let method = request.method().to_string();
    let version = format!("{:?}", request.version());
    let mut body_reader = request.into_body();
    let mut body = Vec::new();
    body_reader.read_to_end(&mut body)?;
    let trailers: Vec<Value> = body_reader
        .trailers()
        .into_iter()
        .flatten()
        .map(|(name, value)| pair(name.as_ref(), value.as_bytes()))
        .collect();
    let answer = json!({
        "method": method,
        "target": latin1(&target),
        "version": version,
        "headers": headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&body),
        "trailers": trailers,
        "remote_addr": facts.remote_addr.map(|addr| addr.to_string()),
        "client_addr": facts.client_addr.map(|addr| addr.to_string()),
        "scheme": facts.scheme.as_str(),
        "pid": facts.worker.pid,
        "worker": facts.worker.id,
        "request_id": facts.request_id.to_string(),
    });
    let mut response = Response::new(format!("{answer}\n").into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The error `/error` returns, to show error handling end to end.
#[derive(Debug)]
pub(crate) struct DemoError;

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

/// `chunks` chunks, each `chunk N` on a line, padded with dots to `size`
/// bytes when asked (a large body, for clients that read it slowly).
fn stream(chunks: u64, size: Option<u64>) -> Response {
    let body = (1..=chunks).map(move |n| {
        let mut chunk = format!("chunk {n}\n").into_bytes();
        if let Some(size) = size.and_then(|size| usize::try_from(size).ok()) {
            chunk.resize(size.max(chunk.len()), b'.');
        }
        Ok(Bytes::from(chunk))
    });
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
    use turnstile::test::{TestRequest, serve};

    fn get(path: &str) -> turnstile::test::TestResponse {
        serve(&demo, TestRequest::get(path).build())
    }

    #[test]
    fn demo_routes() {
        assert_eq!(get("/").text(), HELLO);
        assert_eq!(get("/healthz").status, 200);
        assert_eq!(get("/nowhere").status, 404);
        assert_eq!(get("/slow?ms=1").text(), "slept\n");
        assert_eq!(get("/stream?chunks=2").text(), "chunk 1\nchunk 2\n");
        assert_eq!(
            get("/stream?chunks=2&size=10").text(),
            "chunk 1\n..chunk 2\n.."
        );
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
