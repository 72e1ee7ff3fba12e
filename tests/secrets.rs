//! No credential a request carries reaches any output unless a setting
//! names it: the access log in every format, the error log, the metrics
//! page, Sentry and the spans, each checked beside the plain values that
//! must still be there; and `--print-config` masks the DSN's key.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use turnstile::middleware::error_capture::sentry::protocol::Event;

use crate::support::{OtlpReceiver, SentryReceiver, TempPath, Turnstile, command, get_with};

/// One value per secret, random-looking, so that finding one cannot be a
/// coincidence.
const PASS: &str = "s1-Qm7rT2vX9k";
const TOKEN: &str = "s2-Lp4wZ8nB3c";
const API_KEY: &str = "s3-Hd6yF1sJ5e";
const SESSION_PARAMETER: &str = "s4-Vt9gK3qM7a";
const BEARER: &str = "s5-Rc2xN8pW4u";
const COOKIE: &str = "s6-Jb5mE7hT1z";
const X_API_KEY: &str = "s7-Wf3kA9dL6o";
const PROXY: &str = "s8-Ny1uC4rG8i";
const SECRETS: [&str; 8] = [
    PASS,
    TOKEN,
    API_KEY,
    SESSION_PARAMETER,
    BEARER,
    COOKIE,
    X_API_KEY,
    PROXY,
];

const USER_AGENT: &str = "secrets-test/1.0";

/// The query both requests carry, and what every output must show of it.
fn query() -> String {
    format!("pass={PASS}&token={TOKEN}&api_key={API_KEY}&page=2")
}
const QUERY_SHOWN: &str = "pass=[redacted]&token=[redacted]&api_key=[redacted]&page=2";

/// The path with a session id as a path parameter, and as it must show.
fn path() -> String {
    format!("/echo;jsessionid={SESSION_PARAMETER}/x")
}
const PATH_SHOWN: &str = "/echo;jsessionid=[redacted]/x";

fn headers() -> Vec<(&'static str, String)> {
    vec![
        ("User-Agent", USER_AGENT.to_owned()),
        ("Authorization", format!("Bearer {BEARER}")),
        ("Proxy-Authorization", format!("Basic {PROXY}")),
        ("Cookie", format!("sessionid={COOKIE}")),
        ("X-Api-Key", X_API_KEY.to_owned()),
        (
            "Referer",
            format!("http://test/from;jsessionid={SESSION_PARAMETER}?token={TOKEN}"),
        ),
    ]
}

/// Everything one run of the server wrote.
struct Outputs {
    access_log: String,
    stderr: String,
    metrics: String,
    envelopes: String,
    events: Vec<Event<'static>>,
    spans: Vec<Value>,
}

/// Runs the binary with every layer, the access log in `format`, the
/// error log on standard error, Sentry (reporting 404s too) and OTLP
/// export; sends a request with every secret that the demo answers 404,
/// the same query to `/panic`, and a scrape of the metrics page; then
/// stops it and gathers what each output got.
fn serve_secrets(label: &str, format: &str) -> Outputs {
    let sentry = SentryReceiver::start();
    let otlp = OtlpReceiver::start();
    let access_log = TempPath::new(&format!("secrets-{label}.log"));
    let mut command = command(env!("CARGO_BIN_EXE_turnstile").as_ref());
    command
        .args(["--bind", "127.0.0.1:0", "--access-log", access_log.as_str()])
        .args(["--access-log-format", format, "--metrics-path", "/metrics"])
        .args(["--sentry-capture-statuses", "404,500-599"])
        .env("SENTRY_DSN", sentry.dsn())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
        .stderr(Stdio::piped());
    let mut server = Turnstile::start_command(command);
    let mut stderr = server.child.stderr.take().unwrap();
    let (sender, stderr_text) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = sender.send(text);
    });

    let headers = headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let missing = get_with(server.addr(), &format!("{}?{}", path(), query()), &headers);
    assert_eq!(missing.status, 404, "{label}");
    let panicked = get_with(server.addr(), &format!("/panic?{}", query()), &headers);
    assert_eq!(panicked.status, 500, "{label}");
    let metrics = get_with(server.addr(), "/metrics", &headers);
    assert_eq!(metrics.status, 200, "{label}");
    let events = sentry.wait_for_events(2, Duration::from_secs(10));

    // The spans and the access log's last lines are sent as the workers stop.
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(20)).is_some(),
        "{label}: the server did not stop"
    );
    let spans = otlp.wait_for_spans(2, Duration::from_secs(10));
    let stderr = stderr_text
        .recv_timeout(Duration::from_secs(10))
        .expect("standard error closes as the server exits");
    Outputs {
        access_log: access_log.read(),
        stderr,
        metrics: metrics.body,
        envelopes: sentry.envelopes().join("\n"),
        events,
        spans,
    }
}

/// No secret anywhere, and the plain values beside them still there.
fn assert_every_output_is_clean(label: &str, outputs: &Outputs) {
    let spans = outputs
        .spans
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for (place, text) in [
        ("the access log", &outputs.access_log),
        ("standard error", &outputs.stderr),
        ("the metrics page", &outputs.metrics),
        ("the Sentry envelopes", &outputs.envelopes),
        ("the spans", &spans),
    ] {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{label}: {secret} reached {place}: {text}"
            );
        }
    }

    let log = &outputs.access_log;
    assert_eq!(log.lines().count(), 2, "{label}: {log}");
    for shown in ["page=2", "/echo", "/x", USER_AGENT, "[redacted]"] {
        assert!(log.contains(shown), "{label}: {shown} is not in {log}");
    }
    assert!(
        outputs.stderr.contains("GET /panic panicked at"),
        "{label}: {}",
        outputs.stderr
    );
    assert!(
        outputs
            .metrics
            .contains("http_server_request_duration_seconds"),
        "{label}: {}",
        outputs.metrics
    );

    let missing = outputs
        .events
        .iter()
        .find(|event| event.exception.is_empty())
        .expect("the 404 is reported");
    let request = missing.request.as_ref().expect("with its request");
    assert_eq!(
        request.url.as_ref().unwrap().as_str(),
        format!("http://test{PATH_SHOWN}?{QUERY_SHOWN}"),
        "{label}"
    );
    assert_eq!(request.headers["user-agent"], USER_AGENT, "{label}");
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ] {
        assert_eq!(request.headers[name], "[redacted]", "{label}: {name}");
    }
    assert_eq!(
        request.headers["referer"], "http://test/from;jsessionid=[redacted]?token=[redacted]",
        "{label}"
    );
    let panicked = outputs
        .events
        .iter()
        .find(|event| !event.exception.is_empty())
        .expect("the panic is reported");
    let request = panicked.request.as_ref().expect("with its request");
    assert_eq!(
        request.url.as_ref().unwrap().as_str(),
        format!("http://test/panic?{QUERY_SHOWN}"),
        "{label}"
    );

    let span = outputs
        .spans
        .iter()
        .find(|span| span["attributes"]["url.path"] == PATH_SHOWN)
        .unwrap_or_else(|| panic!("{label}: no span for {PATH_SHOWN}: {spans}"));
    let attributes = &span["attributes"];
    assert_eq!(attributes["url.query"], QUERY_SHOWN, "{label}");
    assert_eq!(attributes["user_agent.original"], USER_AGENT, "{label}");
}

#[test]
fn no_secret_reaches_the_json_access_log_or_any_other_output() {
    let outputs = serve_secrets("json", "json");
    assert_every_output_is_clean("json", &outputs);
    let line: Value = outputs
        .access_log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["status"] == 404)
        .expect("the 404's line");
    assert_eq!(line["path"], PATH_SHOWN);
    assert_eq!(line["query"], QUERY_SHOWN);
    assert_eq!(line["user_agent"], USER_AGENT);
}

#[test]
fn no_secret_reaches_the_combined_access_log_or_any_other_output() {
    let outputs = serve_secrets("combined", "combined");
    assert_every_output_is_clean("combined", &outputs);
    let line = outputs
        .access_log
        .lines()
        .find(|line| line.contains(" 404 "))
        .expect("the 404's line");
    assert!(
        line.contains(&format!("\"GET {PATH_SHOWN}?{QUERY_SHOWN} HTTP/1.1\" 404 ")),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            "\"http://test/from;jsessionid=[redacted]?token=[redacted]\" \"{USER_AGENT}\""
        )),
        "{line}"
    );
}

#[test]
fn no_secret_reaches_a_gunicorn_format_of_credential_headers_or_any_other_output() {
    let format = "%(r)s %({authorization}i)s %({proxy-authorization}i)s %({cookie}i)s \
                  %({x-api-key}i)s %({set-cookie}o)s \"%(a)s\"";
    let outputs = serve_secrets("headers", format);
    assert_every_output_is_clean("headers", &outputs);
    let line = outputs
        .access_log
        .lines()
        .find(|line| line.contains("/echo"))
        .expect("the 404's line");
    // The demo application sets no cookie: `%({set-cookie}o)s` has nothing
    // to print.
    assert_eq!(
        line,
        format!(
            "GET {PATH_SHOWN}?{QUERY_SHOWN} HTTP/1.1 [redacted] [redacted] [redacted] \
             [redacted] - \"{USER_AGENT}\""
        )
    );
}

#[test]
fn print_config_masks_the_dsn_key_unless_asked_to_show_it() {
    const KEY: &str = "s9-Ux8oP2eY5w";
    let dsn = format!("https://{KEY}@o1.ingest.sentry.io/2");
    let print = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(args)
            .env_remove("PORT")
            .env_remove("TURNSTILE_CONFIG")
            .env("SENTRY_DSN", &dsn)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let (code, masked) = print(&["--print-config"]);
    assert_eq!(code, Some(0));
    assert!(!masked.contains(KEY), "{masked}");
    assert!(
        masked.contains("sentry_dsn = \"https://[redacted]@o1.ingest.sentry.io/2\""),
        "{masked}"
    );
    let (code, shown) = print(&["--print-config", "--show-secrets"]);
    assert_eq!(code, Some(0));
    assert!(
        shown.contains(&format!("sentry_dsn = \"{dsn}\"  # environment SENTRY_DSN")),
        "{shown}"
    );
    // Only with --print-config: alone it is a mistake, not a server start.
    let (code, printed) = print(&["--show-secrets"]);
    assert_eq!(code, Some(2));
    assert!(printed.is_empty(), "{printed}");
}
