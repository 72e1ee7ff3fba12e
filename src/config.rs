//! The `turnstile` binary's settings, gathered from four places with one
//! precedence: command-line flags, then environment variables, then a TOML
//! file, then the defaults.
//!
//! Every setting has a Gunicorn-style name (`limit_request_line`), a flag
//! (`--limit-request-line`), an environment variable
//! (`TURNSTILE_LIMIT_REQUEST_LINE`) and a key in the file. The file is
//! named by `-c/--config PATH` or `TURNSTILE_CONFIG`. `PORT`, as set by
//! platforms such as Heroku, makes the default bind `0.0.0.0:$PORT`.
//!
//! Every value is checked the same way wherever it came from, and an error
//! names its source: a bad value or an unknown key stops the binary with
//! exit code 2 before anything starts.
//!
//! ```
//! use std::collections::HashMap;
//! use turnstile::config::{Config, Origin};
//!
//! let env = HashMap::from([("TURNSTILE_THREADS".to_owned(), "4".to_owned())]);
//! let file = "threads = 2\nkeepalive = 5\n";
//! let flags = [("bind", "127.0.0.1:9000")];
//! let config = Config::resolve(&flags, |name| env.get(name).cloned(), Some(("turnstile.toml", file))).unwrap();
//! assert_eq!(config.threads, 4); // the environment beats the file
//! assert_eq!(config.keepalive.as_secs(), 5);
//! assert_eq!(config.bind, ["127.0.0.1:9000"]);
//! assert_eq!(config.origin("threads"), Some(&Origin::Env("TURNSTILE_THREADS".into())));
//! ```

use std::fmt;
use std::net::ToSocketAddrs as _;
use std::ops::RangeInclusive;
use std::time::Duration;

use http::HeaderName;

use crate::middleware::error_capture::sentry::ClientOptions;
use crate::middleware::error_capture::sentry::types::Dsn;
use crate::middleware::error_capture::{ErrorCapture, parse_statuses};
use crate::middleware::headers::{HeaderRule, InjectHeaders, Mode};
use crate::middleware::request_log::{AccessFormat, REDACTED, Redactor, RequestLog};
use crate::server::error_log::Level;
use crate::server::forwarded::TrustedProxies;
use crate::server::http1::Limits;
use crate::server::http1::conn::ConnConfig;
use crate::server::{ArbiterConfig, DEFAULT_THREADS};

/// One setting: its names in each source, its meaning and its default.
#[derive(Debug)]
pub struct Setting {
    /// The key in the file; upper-cased after `TURNSTILE_`, the variable in
    /// the environment.
    pub name: &'static str,
    /// The long flag, without its dashes.
    pub flag: &'static str,
    /// The short flag, for the few that have one.
    pub short: Option<char>,
    /// Other long flags: Gunicorn's spellings where ours differ.
    pub aliases: &'static [&'static str],
    /// What it means, for `--help` and `--print-config`.
    pub help: &'static str,
    /// Whether it takes a value, is a switch, or may be repeated.
    pub kind: Kind,
    /// Taken from the library's own defaults, so the two cannot drift.
    default: fn() -> String,
}

/// How a setting is written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--name VALUE`.
    Value,
    /// `--name VALUE`, repeatable; a comma-separated list in the
    /// environment, an array in the file.
    List,
    /// `--name` alone turns it on; `true` or `false` elsewhere.
    Switch,
    /// `--name VALUE`, repeatable, for values that may hold commas (header
    /// lines); one per line in the environment, an array in the file.
    Lines,
}

impl Kind {
    /// What joins a list's items in one value.
    pub fn separator(self) -> char {
        match self {
            Self::Lines => '\n',
            _ => ',',
        }
    }
}

impl Setting {
    /// The value when no source sets it.
    pub fn default_value(&self) -> String {
        (self.default)()
    }
}

/// Every setting, in the order `--help` and `--print-config` show them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "bind",
        flag: "bind",
        short: Some('b'),
        aliases: &[],
        help: "where to listen: HOST:PORT, unix:PATH or fd://FD; repeat for several \
               (0.0.0.0:$PORT when PORT is set)",
        kind: Kind::List,
        default: || "127.0.0.1:8000".to_owned(),
    },
    Setting {
        name: "workers",
        flag: "workers",
        short: Some('w'),
        aliases: &[],
        help: "worker processes (WEB_CONCURRENCY when it is set)",
        kind: Kind::Value,
        default: || ArbiterConfig::default().workers.to_string(),
    },
    Setting {
        name: "threads",
        flag: "threads",
        short: None,
        aliases: &[],
        help: "request threads",
        kind: Kind::Value,
        default: || DEFAULT_THREADS.to_string(),
    },
    Setting {
        name: "app",
        flag: "app",
        short: None,
        aliases: &[],
        help: "the turnstile binary's built-in application: demo, hello, environ or broken \
               (fails to load); a binary of one's own ignores it",
        kind: Kind::Value,
        default: || "demo".to_owned(),
    },
    Setting {
        name: "middleware",
        flag: "middleware",
        short: None,
        aliases: &[],
        help: "the layers: all, none (the bare engine), or a comma-separated list",
        kind: Kind::Value,
        default: || "all".to_owned(),
    },
    Setting {
        name: "keepalive",
        flag: "keepalive",
        short: None,
        aliases: &["keep-alive"],
        help: "seconds an idle keep-alive connection is kept (0: close after each response)",
        kind: Kind::Value,
        default: || ConnConfig::default().keepalive.as_secs().to_string(),
    },
    Setting {
        name: "limit_request_line",
        flag: "limit-request-line",
        short: None,
        aliases: &[],
        help: "longest request line, in bytes",
        kind: Kind::Value,
        default: || Limits::default().request_line.to_string(),
    },
    Setting {
        name: "limit_request_fields",
        flag: "limit-request-fields",
        short: None,
        aliases: &[],
        help: "most header fields in a request",
        kind: Kind::Value,
        default: || Limits::default().header_fields.to_string(),
    },
    Setting {
        name: "limit_request_field_size",
        flag: "limit-request-field-size",
        short: None,
        aliases: &["limit-request-field_size"],
        help: "longest header field line, in bytes, counting its CRLF",
        kind: Kind::Value,
        default: || Limits::default().header_field_size.to_string(),
    },
    Setting {
        name: "limit_request_body",
        flag: "limit-request-body",
        short: None,
        aliases: &[],
        help: "largest request body, in bytes (K, M, G: KiB, MiB, GiB); larger gets 413 \
               (0: no limit)",
        kind: Kind::Value,
        default: || ConnConfig::default().max_body.unwrap_or(0).to_string(),
    },
    Setting {
        name: "body_buffer_size",
        flag: "body-buffer-size",
        short: None,
        aliases: &[],
        help: "most of a request body kept in memory, in bytes (K, M, G: KiB, MiB, GiB); \
               the rest is spooled to a file in spool_dir (nginx's client_body_buffer_size)",
        kind: Kind::Value,
        default: || ConnConfig::default().body_buffer_size.to_string(),
    },
    Setting {
        name: "spool_dir",
        flag: "spool-dir",
        short: None,
        aliases: &[],
        help: "directory where request bodies larger than body_buffer_size are spooled, \
               as files no other process can open",
        kind: Kind::Value,
        default: || ConnConfig::default().spool_dir.display().to_string(),
    },
    Setting {
        name: "spool_max_size",
        flag: "spool-max-size",
        short: None,
        aliases: &[],
        help: "most bytes of spooled request bodies a worker holds at once; a body that \
               would pass it gets 503 (0: no limit)",
        kind: Kind::Value,
        default: || ConnConfig::default().spool_max_size.to_string(),
    },
    Setting {
        name: "client_memory",
        flag: "client-memory",
        short: None,
        aliases: &[],
        help: "most memory a worker holds for its clients (input buffers, partial heads, \
               bodies in memory), in bytes; a request that would pass it gets 503 (0: no limit)",
        kind: Kind::Value,
        default: || ConnConfig::default().client_memory.to_string(),
    },
    Setting {
        name: "min_request_rate",
        flag: "min-request-rate",
        short: None,
        aliases: &[],
        help: "slowest a request head or body may arrive, in bytes a second on average, \
               once min_rate_grace has passed; slower gets 408 (0: no minimum)",
        kind: Kind::Value,
        default: || ConnConfig::default().min_request_rate.to_string(),
    },
    Setting {
        name: "min_response_rate",
        flag: "min-response-rate",
        short: None,
        aliases: &[],
        help: "slowest a client may read a response, in bytes a second, while the server \
               waits to write to it; slower is closed (0: no minimum)",
        kind: Kind::Value,
        default: || ConnConfig::default().min_response_rate.to_string(),
    },
    Setting {
        name: "min_rate_grace",
        flag: "min-rate-grace",
        short: None,
        aliases: &[],
        help: "seconds a client has before the minimum rates apply",
        kind: Kind::Value,
        default: || ConnConfig::default().min_rate_grace.as_secs().to_string(),
    },
    Setting {
        name: "timeout",
        flag: "timeout",
        short: Some('t'),
        aliases: &[],
        help: "seconds a request may run (or a worker stay silent) before the worker is \
               aborted and replaced (0: never)",
        kind: Kind::Value,
        default: || ArbiterConfig::default().timeout.as_secs().to_string(),
    },
    Setting {
        name: "graceful_timeout",
        flag: "graceful-timeout",
        short: None,
        aliases: &[],
        help: "seconds a stopping worker gets to finish its requests before it is killed",
        kind: Kind::Value,
        default: || {
            ArbiterConfig::default()
                .graceful_timeout
                .as_secs()
                .to_string()
        },
    },
    Setting {
        name: "max_requests",
        flag: "max-requests",
        short: None,
        aliases: &[],
        help: "requests a worker serves before it is replaced (0: no limit)",
        kind: Kind::Value,
        default: || ArbiterConfig::default().max_requests.to_string(),
    },
    Setting {
        name: "max_requests_jitter",
        flag: "max-requests-jitter",
        short: None,
        aliases: &[],
        help: "up to this many more requests, drawn per worker, so workers do not all \
               retire at once",
        kind: Kind::Value,
        default: || ArbiterConfig::default().max_requests_jitter.to_string(),
    },
    Setting {
        name: "preload",
        flag: "preload",
        short: None,
        aliases: &[],
        help: "build the application in the arbiter, before forking the workers",
        kind: Kind::Switch,
        default: || "false".to_owned(),
    },
    Setting {
        name: "backlog",
        flag: "backlog",
        short: None,
        aliases: &[],
        help: "connections the kernel queues before they are accepted",
        kind: Kind::Value,
        default: || ArbiterConfig::default().backlog.to_string(),
    },
    Setting {
        name: "forwarded_allow_ips",
        flag: "forwarded-allow-ips",
        short: None,
        aliases: &[],
        help: "peers (addresses, networks such as 10.0.0.0/8, or *) whose X-Forwarded-For, \
               X-Forwarded-Proto and Forwarded headers set the client address and scheme; \
               FORWARDED_ALLOW_IPS when it is set",
        kind: Kind::Value,
        default: || TrustedProxies::default().to_string(),
    },
    Setting {
        name: "error_log",
        flag: "error-log",
        short: None,
        aliases: &["error-logfile", "log-file"],
        help: "where the server and the application log: a file, or - for standard error; \
               SIGUSR1 reopens it",
        kind: Kind::Value,
        default: || "-".to_owned(),
    },
    Setting {
        name: "log_level",
        flag: "log-level",
        short: None,
        aliases: &[],
        help: "the least serious messages logged: debug, info, warning, error or critical \
               (RUST_LOG, when set, chooses the application's events instead)",
        kind: Kind::Value,
        default: || "info".to_owned(),
    },
    Setting {
        name: "access_log",
        flag: "access-log",
        short: None,
        aliases: &["access-logfile"],
        help: "where the request_log layer writes one line per request: a file, or - for \
               standard output; SIGUSR1 reopens it",
        kind: Kind::Value,
        default: || "-".to_owned(),
    },
    Setting {
        name: "access_log_format",
        flag: "access-log-format",
        short: None,
        aliases: &["access-logformat"],
        help: "json, combined (Gunicorn's default), or a format of Gunicorn atoms such as \
               '%(h)s \"%(r)s\" %(s)s %(D)s %({x-request-id}i)s'",
        kind: Kind::Value,
        default: || "combined".to_owned(),
    },
    Setting {
        name: "access_log_skip",
        flag: "access-log-skip",
        short: None,
        aliases: &[],
        help: "a path whose successful requests are not logged (health checks); repeat for several",
        kind: Kind::List,
        default: String::new,
    },
    Setting {
        name: "access_log_redact",
        flag: "access-log-redact",
        short: None,
        aliases: &[],
        help: "a word that makes a query key or a header name secret, besides pass (password, \
               passwd, passphrase), pwd, secret, token, jwt, code, key, sig, auth, credential, \
               session, sid, csrf, xsrf, cookie, symfony and forwarded_for; repeat for several",
        kind: Kind::List,
        default: String::new,
    },
    Setting {
        name: "access_log_show_headers",
        flag: "access-log-show-header",
        short: None,
        aliases: &[],
        help: "a header holding credentials (Authorization, Proxy-Authorization, Cookie, \
               Set-Cookie, X-Api-Key, any name with a secret word) that %({name}i)s and \
               %({name}o)s print as it is, not as [redacted]; repeat for several",
        kind: Kind::List,
        default: String::new,
    },
    Setting {
        name: "header",
        flag: "header",
        short: None,
        aliases: &[],
        help: "a response header, 'Name: value', replacing the application's; repeat for several",
        kind: Kind::Lines,
        default: String::new,
    },
    Setting {
        name: "header_if_absent",
        flag: "header-if-absent",
        short: None,
        aliases: &[],
        help: "a response header, 'Name: value', added where the application set none",
        kind: Kind::Lines,
        default: String::new,
    },
    Setting {
        name: "header_append",
        flag: "header-append",
        short: None,
        aliases: &[],
        help: "a response header, 'Name: value', added after the application's",
        kind: Kind::Lines,
        default: String::new,
    },
    Setting {
        name: "security_headers",
        flag: "security-headers",
        short: None,
        aliases: &[],
        help: "Django's security headers where the application set none: nosniff, \
               Referrer-Policy and Cross-Origin-Opener-Policy same-origin, X-Frame-Options DENY",
        kind: Kind::Value,
        default: || "true".to_owned(),
    },
    Setting {
        name: "hsts",
        flag: "hsts",
        short: None,
        aliases: &[],
        help: "the Strict-Transport-Security value sent on HTTPS requests, such as \
               'max-age=31536000; includeSubDomains' (empty: none)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "request_id_header",
        flag: "request-id-header",
        short: None,
        aliases: &[],
        help: "the header a request id is taken from (when valid) and echoed on (none: no ids)",
        kind: Kind::Value,
        default: || "X-Request-Id".to_owned(),
    },
    Setting {
        name: "server_timing",
        flag: "server-timing",
        short: None,
        aliases: &[],
        help: "add Server-Timing: app;dur=<ms> to responses",
        kind: Kind::Value,
        default: || "true".to_owned(),
    },
    Setting {
        name: "chdir",
        flag: "chdir",
        short: None,
        aliases: &[],
        help: "a directory to change to before the application is built (empty: stay)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "env",
        flag: "env",
        short: Some('e'),
        aliases: &[],
        help: "NAME=VALUE, set in the server's environment before the application is built; \
               repeat for several",
        kind: Kind::List,
        default: String::new,
    },
    Setting {
        name: "name",
        flag: "name",
        short: Some('n'),
        aliases: &[],
        help: "a name for the processes' titles in ps: turnstile: arbiter [NAME], \
               turnstile: worker [NAME] (empty: titles unchanged)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "user",
        flag: "user",
        short: Some('u'),
        aliases: &[],
        help: "the user (name or id) the workers run as; the arbiter keeps its own, \
               so it can bind privileged ports (empty: the arbiter's)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "group",
        flag: "group",
        short: Some('g'),
        aliases: &[],
        help: "the group (name or id) the workers run as (empty: the arbiter's)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "reuse_port",
        flag: "reuse-port",
        short: None,
        aliases: &[],
        help: "set SO_REUSEPORT on TCP listeners, so several servers can share a port",
        kind: Kind::Switch,
        default: || "false".to_owned(),
    },
    Setting {
        name: "capture_output",
        flag: "capture-output",
        short: None,
        aliases: &[],
        help: "send standard output and error (the application's prints) to the error log file",
        kind: Kind::Switch,
        default: || "false".to_owned(),
    },
    Setting {
        name: "pid",
        flag: "pid",
        short: Some('p'),
        aliases: &[],
        help: "a file the arbiter writes its pid to, removed as it exits; an arbiter started \
               by USR2 writes FILE.2 until the one before it is gone (empty: none)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "metrics_bind",
        flag: "metrics-bind",
        short: None,
        aliases: &[],
        help: "HOST:PORT where the arbiter serves every worker's metrics, summed, at /metrics \
               (empty: none)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "metrics_path",
        flag: "metrics-path",
        short: None,
        aliases: &[],
        help: "a path on the main port that serves the metrics of the worker that answers: \
               for a single worker (empty: none)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "sentry_dsn",
        flag: "sentry-dsn",
        short: None,
        aliases: &[],
        help: "where the error_capture layer reports errors, panics and stuck requests \
               (SENTRY_DSN when it is set; empty: report nothing, only log)",
        kind: Kind::Value,
        default: String::new,
    },
    Setting {
        name: "sentry_environment",
        flag: "sentry-environment",
        short: None,
        aliases: &[],
        help: "the environment Sentry files the events under (SENTRY_ENVIRONMENT when it is set)",
        kind: Kind::Value,
        default: || "production".to_owned(),
    },
    Setting {
        name: "sentry_release",
        flag: "sentry-release",
        short: None,
        aliases: &[],
        help: "the release Sentry files the events under (SENTRY_RELEASE when it is set)",
        kind: Kind::Value,
        default: || concat!("turnstile@", env!("CARGO_PKG_VERSION")).to_owned(),
    },
    Setting {
        name: "sentry_sample_rate",
        flag: "sentry-sample-rate",
        short: None,
        aliases: &[],
        help: "the share of error events sent to Sentry, from 0 to 1",
        kind: Kind::Value,
        default: || "1.0".to_owned(),
    },
    Setting {
        name: "sentry_capture_statuses",
        flag: "sentry-capture-statuses",
        short: None,
        aliases: &[],
        help: "the statuses which, answered by the application itself, are reported: \
               statuses and ranges (empty: none)",
        kind: Kind::Value,
        default: || "500-599".to_owned(),
    },
    Setting {
        name: "sentry_send_default_pii",
        flag: "sentry-send-default-pii",
        short: None,
        aliases: &[],
        help: "send the client's address and forwarding headers to Sentry \
               (credentials and secret query values never are)",
        kind: Kind::Switch,
        default: || "false".to_owned(),
    },
    Setting {
        name: "debug",
        flag: "debug",
        short: None,
        aliases: &[],
        help: "answer an error or a panic with its text instead of a generic 500: \
               for development only",
        kind: Kind::Switch,
        default: || "false".to_owned(),
    },
];

/// The layers the binary knows, outermost first. Header injection sits
/// outside the others, so that the logs and error reports carry the request
/// id the client sent; tracing sits outside request logging, so that the
/// log line carries the trace id; metrics sit inside them, so they time the
/// application; error capture is innermost, so the 500 it makes of a
/// failure is what the others see.
pub const LAYERS: &[&str] = &[
    "headers",
    "tracing",
    "request_log",
    "metrics",
    "error_capture",
];

/// The error-capture layer's settings: `sentry_*` and `debug`.
#[derive(Clone, Debug)]
pub struct ErrorSettings {
    /// `sentry_dsn`, checked; `None` reports nothing.
    pub dsn: Option<String>,
    /// `sentry_environment`.
    pub environment: String,
    /// `sentry_release`.
    pub release: String,
    /// `sentry_sample_rate`, from 0 to 1.
    pub sample_rate: f32,
    /// `sentry_capture_statuses`.
    pub capture_statuses: Vec<RangeInclusive<u16>>,
    /// `sentry_send_default_pii`.
    pub send_default_pii: bool,
    /// `debug`.
    pub debug: bool,
    /// The request-logging layer's redactor, so both hide the same.
    pub redactor: Redactor,
}

impl ErrorSettings {
    /// The layer these settings describe. Its Sentry client is built in
    /// each worker that serves, never here.
    pub fn layer(&self) -> ErrorCapture {
        let layer = ErrorCapture::new()
            .debug(self.debug)
            .capture_statuses(self.capture_statuses.clone())
            .redactor(self.redactor.clone());
        match &self.dsn {
            Some(dsn) => layer.sentry(
                ClientOptions::new()
                    .dsn(dsn)
                    .environment(self.environment.clone())
                    .release(self.release.clone())
                    .sample_rate(self.sample_rate)
                    .send_default_pii(self.send_default_pii),
            ),
            None => layer,
        }
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The TOML file at this path.
    File(String),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {path}"),
            Self::Env(name) => write!(f, "environment {name}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Whether `spec` can be bound: `unix:PATH`, `fd://N`, or `HOST[:PORT]`
/// with a port of at most 65535 and a host that resolves.
fn check_bind(spec: &str) -> Result<(), String> {
    if let Some(path) = spec.strip_prefix("unix:") {
        return if path.is_empty() {
            Err("a unix: bind needs a path".into())
        } else {
            Ok(())
        };
    }
    if let Some(fd) = spec.strip_prefix("fd://") {
        return fd
            .parse::<u16>()
            .map(drop)
            .map_err(|_| "fd:// needs a descriptor number".into());
    }
    let (host, port) = match spec.rsplit_once(':') {
        // `[::1]` ends in `]`, not in a port.
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("port {port} is past 65535"))?;
            (host, port)
        }
        _ => (spec, 8000),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("no host (0.0.0.0 listens on every address)".into());
    }
    let resolves = (host, port)
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.next().is_some());
    if resolves {
        Ok(())
    } else {
        Err(format!("the host {host:?} does not resolve"))
    }
}

/// The `turnstile` binary's built-in applications (`app`; a binary of
/// one's own serves its own and ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppName {
    /// The demo: every path the book's chapters use.
    Demo,
    /// `Hello, world!`
    Hello,
    /// The request's environ, as JSON.
    Environ,
    /// An application that fails to load.
    Broken,
}

/// A setting that could not be used, and where it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The effective settings.
#[derive(Debug)]
pub struct Config {
    /// `bind`: one address or more.
    pub bind: Vec<String>,
    /// `workers`, at least 1.
    pub workers: usize,
    /// `threads`, at least 1.
    pub threads: usize,
    /// `app`.
    pub app: AppName,
    /// `middleware`: the chosen layers, outermost first.
    pub middleware: Vec<&'static str>,
    /// `keepalive`.
    pub keepalive: Duration,
    /// The request limits.
    pub limits: Limits,
    /// `limit_request_body`, `None` for no limit.
    pub max_body: Option<u64>,
    /// `body_buffer_size`.
    pub body_buffer_size: u64,
    /// `spool_dir`, checked at start.
    pub spool_dir: std::path::PathBuf,
    /// `spool_max_size`; zero for no limit.
    pub spool_max_size: u64,
    /// `client_memory`; zero for no limit.
    pub client_memory: u64,
    /// `min_request_rate`, bytes a second; zero for none.
    pub min_request_rate: u64,
    /// `min_response_rate`, bytes a second; zero for none.
    pub min_response_rate: u64,
    /// `min_rate_grace`.
    pub min_rate_grace: Duration,
    /// `timeout`; zero turns it off.
    pub timeout: Duration,
    /// `graceful_timeout`.
    pub graceful_timeout: Duration,
    /// `max_requests`; zero for no limit.
    pub max_requests: u64,
    /// `max_requests_jitter`.
    pub max_requests_jitter: u64,
    /// `preload`.
    pub preload: bool,
    /// `backlog`.
    pub backlog: u32,
    /// `error_log`: a path, or `-` for standard error.
    pub error_log: String,
    /// `log_level`.
    pub log_level: Level,
    /// `access_log`: a path, or `-` for standard output.
    pub access_log: String,
    /// `access_log_format`.
    pub access_log_format: AccessFormat,
    /// The request-logging layer, from `access_log_skip`,
    /// `access_log_redact`, `access_log_show_headers` and the headers the
    /// format prints.
    pub request_log: RequestLog,
    /// The header-injection layer, from `header*`, `security_headers`,
    /// `hsts`, `request_id_header` and `server_timing`.
    pub inject_headers: InjectHeaders,
    /// `forwarded_allow_ips`.
    pub forwarded_allow_ips: TrustedProxies,
    /// `pid`: the arbiter's pid file.
    pub pidfile: Option<std::path::PathBuf>,
    /// `chdir`: where to work from, if not here.
    pub chdir: Option<std::path::PathBuf>,
    /// `env`: variables to set.
    pub env: Vec<(String, String)>,
    /// `name`: for the processes' titles.
    pub name: Option<String>,
    /// `user`, resolved to an id.
    pub user: Option<u32>,
    /// `group`, resolved to an id.
    pub group: Option<u32>,
    /// `reuse_port`.
    pub reuse_port: bool,
    /// `capture_output`.
    pub capture_output: bool,
    /// `metrics_bind`: where the arbiter serves the summed metrics.
    pub metrics_bind: Option<String>,
    /// `metrics_path`: where a worker serves its own on the main port.
    pub metrics_path: Option<String>,
    /// The error-capture layer's settings.
    pub errors: ErrorSettings,
    /// Each setting's value as text, and its origin, in `SETTINGS` order.
    sources: Vec<(&'static str, String, Origin)>,
    /// The application's own settings: the file's `[app]` table, with
    /// `TURNSTILE_APP__KEY` variables and `--app-setting KEY=VALUE` flags
    /// over it ([`with_app_settings`](Self::with_app_settings)).
    app_settings: toml::Table,
    /// Where each of the application's settings came from, by key.
    app_origins: Vec<(String, Origin)>,
}

impl Config {
    /// Resolves the settings from the `flags` given (setting name and
    /// value; names not in [`SETTINGS`] are ignored), the environment (`env` looks a variable up), and the
    /// optional file (its path and contents).
    ///
    /// # Errors
    ///
    /// An unknown key in the file, a file that is not TOML, or a value
    /// that does not fit its setting, named with its origin.
    pub fn resolve(
        flags: &[(&str, &str)],
        env: impl Fn(&str) -> Option<String>,
        file: Option<(&str, &str)>,
    ) -> Result<Self, ConfigError> {
        let mut values: Vec<(&'static str, String, Origin)> = SETTINGS
            .iter()
            .map(|setting| (setting.name, setting.default_value(), Origin::Default))
            .collect();
        let mut set = |name: &str, value: String, origin: Origin| {
            if let Some(slot) = values.iter_mut().find(|(known, ..)| *known == name) {
                slot.1 = value;
                slot.2 = origin;
            }
        };

        let mut app_settings = toml::Table::new();
        let mut app_origins = Vec::new();
        if let Some((path, text)) = file {
            let table: toml::Table = text
                .parse()
                .map_err(|e| ConfigError(format!("{path} is not valid TOML: {e}")))?;
            for (key, value) in table {
                // `[app]` is the application's own; `app = "demo"` the
                // built-in application's name.
                if let ("app", toml::Value::Table(table)) = (key.as_str(), &value) {
                    for key in table.keys() {
                        app_origins.push((key.clone(), Origin::File(path.to_owned())));
                    }
                    app_settings = table.clone();
                    continue;
                }
                let Some(setting) = SETTINGS.iter().find(|setting| setting.name == key) else {
                    return Err(ConfigError(format!(
                        "{path}: unknown setting `{key}` (known: {})",
                        setting_names()
                    )));
                };
                let separator = setting.kind.separator().to_string();
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(n) => n.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            ConfigError(format!("{path}: `{key}` must be a list of strings"))
                        })?
                        .join(&separator),
                    // `[header]` with `"Cache-Control" = "no-store"` lines.
                    toml::Value::Table(headers) if setting.kind == Kind::Lines => headers
                        .iter()
                        .map(|(name, value)| value.as_str().map(|value| format!("{name}: {value}")))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            ConfigError(format!("{path}: the values in [{key}] must be strings"))
                        })?
                        .join(&separator),
                    other => {
                        return Err(ConfigError(format!(
                            "{path}: `{key}` cannot be {}",
                            other.type_str()
                        )));
                    }
                };
                set(&key, text, Origin::File(path.to_owned()));
            }
        }

        // The platform conventions (Heroku's and others'), below Turnstile's
        // own variables.
        if let Some(port) = env("PORT") {
            set(
                "bind",
                format!("0.0.0.0:{port}"),
                Origin::Env("PORT".into()),
            );
        }
        if let Some(workers) = env("WEB_CONCURRENCY") {
            set("workers", workers, Origin::Env("WEB_CONCURRENCY".into()));
        }
        if let Some(proxies) = env("FORWARDED_ALLOW_IPS") {
            set(
                "forwarded_allow_ips",
                proxies,
                Origin::Env("FORWARDED_ALLOW_IPS".into()),
            );
        }
        // Sentry's own variables, as its SDKs read them.
        for variable in ["SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE"] {
            if let Some(value) = env(variable) {
                set(
                    &variable.to_lowercase(),
                    value,
                    Origin::Env(variable.into()),
                );
            }
        }
        for setting in SETTINGS {
            let variable = format!("TURNSTILE_{}", setting.name.to_uppercase());
            if let Some(value) = env(&variable) {
                set(setting.name, value, Origin::Env(variable));
            }
        }

        for (name, value) in flags {
            if let Some(setting) = SETTINGS.iter().find(|setting| setting.name == *name) {
                let flag = format!("--{}", setting.flag);
                set(name, (*value).to_owned(), Origin::Flag(flag));
            }
        }

        let mut config = Self::from_values(values)?;
        config.app_settings = app_settings;
        config.app_origins = app_origins;
        Ok(config)
    }

    fn from_values(sources: Vec<(&'static str, String, Origin)>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            sources
                .iter()
                .find(|(known, ..)| *known == name)
                .map(|(_, value, origin)| (value.trim(), origin))
                .expect("every setting has a value")
        };
        let bad = |name: &str, expected: &str| {
            let (value, origin) = get(name);
            ConfigError(format!(
                "invalid {name} {value:?} (from {origin}): expected {expected}"
            ))
        };
        let number = |name: &str| -> Result<u64, ConfigError> {
            get(name).0.parse().map_err(|_| bad(name, "a whole number"))
        };
        let size = |name: &str| -> Result<usize, ConfigError> {
            usize::try_from(number(name)?).map_err(|_| bad(name, "a smaller number"))
        };
        let bytes = |name: &str| -> Result<u64, ConfigError> {
            parse_bytes(get(name).0)
                .ok_or_else(|| bad(name, "a size in bytes, such as 65536 or 64K"))
        };

        let seconds = |name: &str| number(name).map(Duration::from_secs);
        let switch = |name: &str| match get(name).0 {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad(name, "true or false")),
        };

        let bind: Vec<String> = get("bind")
            .0
            .split(',')
            .map(str::trim)
            .filter(|spec| !spec.is_empty())
            .map(str::to_owned)
            .collect();
        if bind.is_empty() {
            return Err(bad("bind", "an address such as 127.0.0.1:8000"));
        }
        for spec in &bind {
            check_bind(spec).map_err(|why| {
                let origin = get("bind").1;
                ConfigError(format!("invalid bind {spec:?} (from {origin}): {why}"))
            })?;
        }
        let workers = size("workers")?;
        if workers == 0 {
            return Err(bad("workers", "at least 1"));
        }
        let threads = size("threads")?;
        if threads == 0 {
            return Err(bad("threads", "at least 1"));
        }
        let backlog = u32::try_from(number("backlog")?)
            .ok()
            .filter(|backlog| *backlog > 0)
            .ok_or_else(|| bad("backlog", "a number from 1 to 4294967295"))?;
        let (proxies, proxies_origin) = get("forwarded_allow_ips");
        let forwarded_allow_ips = proxies.parse().map_err(|e| {
            ConfigError(format!(
                "invalid forwarded_allow_ips (from {proxies_origin}): {e}"
            ))
        })?;
        let error_log = get("error_log").0.to_owned();
        if error_log.is_empty() {
            return Err(bad("error_log", "a file path, or - for standard error"));
        }
        let log_level = get("log_level")
            .0
            .parse()
            .map_err(|_| bad("log_level", "debug, info, warning, error or critical"))?;
        let access_log = get("access_log").0.to_owned();
        if access_log.is_empty() {
            return Err(bad("access_log", "a file path, or - for standard output"));
        }
        let invalid = |name: &str, error: &dyn fmt::Display| {
            ConfigError(format!("invalid {name} (from {}): {error}", get(name).1))
        };
        let access_log_format: AccessFormat = get("access_log_format")
            .0
            .parse()
            .map_err(|e| invalid("access_log_format", &e))?;
        let items = |name: &str| -> Vec<&str> {
            let kind = SETTINGS
                .iter()
                .find(|s| s.name == name)
                .map_or(Kind::List, |s| s.kind);
            get(name)
                .0
                .split(kind.separator())
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .collect()
        };
        let redactor = Redactor::default().and(items("access_log_redact"));
        let show_headers = items("access_log_show_headers")
            .into_iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| invalid("access_log_show_headers", &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request_log = items("access_log_skip")
            .into_iter()
            .fold(RequestLog::new(), RequestLog::skip)
            .redactor(redactor.clone())
            .show_headers(show_headers)
            .for_format(&access_log_format);
        let mut inject_headers = InjectHeaders::new();
        for (name, mode) in [
            ("header", Mode::Set),
            ("header_if_absent", Mode::IfAbsent),
            ("header_append", Mode::Append),
        ] {
            for line in items(name) {
                let rule = HeaderRule::parse(mode, line).map_err(|e| invalid(name, &e))?;
                inject_headers = inject_headers.rule(rule);
            }
        }
        if switch("security_headers")? {
            inject_headers = inject_headers.security_preset();
        }
        if !get("hsts").0.is_empty() {
            inject_headers = inject_headers
                .hsts(get("hsts").0)
                .map_err(|e| invalid("hsts", &e))?;
        }
        let request_id_header = match get("request_id_header").0 {
            "" | "none" => None,
            name => Some(name),
        };
        let inject_headers = inject_headers
            .request_id_header(request_id_header)
            .map_err(|e| invalid("request_id_header", &e))?
            .server_timing(switch("server_timing")?);
        let app = match get("app").0 {
            "demo" => AppName::Demo,
            "hello" => AppName::Hello,
            "environ" => AppName::Environ,
            "broken" => AppName::Broken,
            _ => return Err(bad("app", "demo, hello, environ or broken")),
        };
        let (middleware_list, middleware_origin) = get("middleware");
        let middleware = parse_middleware(middleware_list).map_err(|e| {
            ConfigError(format!(
                "invalid middleware (from {middleware_origin}): {e}"
            ))
        })?;
        let max_body = bytes("limit_request_body")?;
        let spool_dir = std::path::PathBuf::from(get("spool_dir").0);
        crate::server::check_spool_dir(&spool_dir).map_err(|error| {
            let (value, origin) = get("spool_dir");
            ConfigError(format!(
                "invalid spool_dir {value:?} (from {origin}): cannot make a file there: {error}"
            ))
        })?;
        let pidfile = match get("pid").0 {
            "" => None,
            path => Some(std::path::PathBuf::from(path)),
        };
        let chdir = match get("chdir").0 {
            "" => None,
            path if std::path::Path::new(path).is_dir() => Some(std::path::PathBuf::from(path)),
            _ => return Err(bad("chdir", "an existing directory")),
        };
        let env = items("env")
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((name, value))
                    if !name.is_empty() && !name.contains('\0') && !value.contains('\0') =>
                {
                    Ok((name.to_owned(), value.to_owned()))
                }
                _ => Err(bad("env", "NAME=VALUE items")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = Some(get("name").0.to_owned()).filter(|name| !name.is_empty());
        let account = |setting: &str, resolve: fn(&str) -> Result<u32, String>| match get(setting).0
        {
            "" => Ok(None),
            name => resolve(name).map(Some).map_err(|e| invalid(setting, &e)),
        };
        let user = account("user", crate::server::process_setup::user_id)?;
        let group = account("group", crate::server::process_setup::group_id)?;
        let metrics_bind = match get("metrics_bind").0 {
            "" | "none" => None,
            addr => {
                addr.to_socket_addrs()
                    .ok()
                    .filter(|addrs| addrs.len() > 0)
                    .ok_or_else(|| bad("metrics_bind", "HOST:PORT"))?;
                Some(addr.to_owned())
            }
        };
        let metrics_path = match get("metrics_path").0 {
            "" | "none" => None,
            path if path.starts_with('/') && !path.contains(['?', '#', ' ']) => {
                Some(path.to_owned())
            }
            _ => return Err(bad("metrics_path", "a path such as /metrics")),
        };
        let sentry_dsn = match get("sentry_dsn").0 {
            "" | "none" => None,
            dsn => {
                dsn.parse::<Dsn>().map_err(|e| invalid("sentry_dsn", &e))?;
                Some(dsn.to_owned())
            }
        };
        let sample_rate = get("sentry_sample_rate")
            .0
            .parse::<f32>()
            .ok()
            .filter(|rate| (0.0..=1.0).contains(rate))
            .ok_or_else(|| bad("sentry_sample_rate", "a number from 0 to 1"))?;
        let errors = ErrorSettings {
            dsn: sentry_dsn,
            environment: get("sentry_environment").0.to_owned(),
            release: get("sentry_release").0.to_owned(),
            sample_rate,
            capture_statuses: parse_statuses(get("sentry_capture_statuses").0)
                .map_err(|e| invalid("sentry_capture_statuses", &e))?,
            send_default_pii: switch("sentry_send_default_pii")?,
            debug: switch("debug")?,
            redactor,
        };
        Ok(Self {
            bind,
            workers,
            threads,
            app,
            middleware,
            keepalive: Duration::from_secs(number("keepalive")?),
            limits: Limits {
                request_line: size("limit_request_line")?,
                header_fields: size("limit_request_fields")?,
                header_field_size: size("limit_request_field_size")?,
            },
            max_body: (max_body > 0).then_some(max_body),
            body_buffer_size: bytes("body_buffer_size")?,
            spool_dir,
            spool_max_size: bytes("spool_max_size")?,
            client_memory: bytes("client_memory")?,
            min_request_rate: number("min_request_rate")?,
            min_response_rate: number("min_response_rate")?,
            min_rate_grace: seconds("min_rate_grace")?,
            timeout: seconds("timeout")?,
            graceful_timeout: seconds("graceful_timeout")?,
            max_requests: number("max_requests")?,
            max_requests_jitter: number("max_requests_jitter")?,
            preload: switch("preload")?,
            backlog,
            error_log,
            log_level,
            access_log,
            access_log_format,
            request_log,
            inject_headers,
            forwarded_allow_ips,
            pidfile,
            chdir,
            env,
            name,
            user,
            group,
            reuse_port: switch("reuse_port")?,
            capture_output: switch("capture_output")?,
            metrics_bind,
            metrics_path,
            errors,
            sources,
            app_settings: toml::Table::new(),
            app_origins: Vec::new(),
        })
    }

    /// The same settings with the application's own settings from the
    /// environment and the command line over the file's: each `(key,
    /// value)` sets `key` (dotted for a nested table: `db.url`) to `value`,
    /// read as a TOML value (`8`, `true`, `[1, 2]`) or else as a string.
    pub fn with_app_settings(
        mut self,
        overrides: impl IntoIterator<Item = (String, String, Origin)>,
    ) -> Result<Self, ConfigError> {
        for (key, text, origin) in overrides {
            let path: Vec<&str> = key.split('.').collect();
            if path.iter().any(|part| part.is_empty()) {
                return Err(ConfigError(format!(
                    "invalid application setting `{key}` (from {origin}): empty key"
                )));
            }
            let value = format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut table| table.remove("v"))
                .unwrap_or_else(|| toml::Value::String(text.clone()));
            let (last, parents) = path.split_last().expect("a key has a part");
            let mut table = &mut self.app_settings;
            for part in parents {
                let entry = table
                    .entry((*part).to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = match entry {
                    toml::Value::Table(inner) => inner,
                    _ => {
                        return Err(ConfigError(format!(
                            "invalid application setting `{key}` (from {origin}): `{part}` is not a table"
                        )));
                    }
                };
            }
            table.insert((*last).to_owned(), value);
            let top = path[0].to_owned();
            self.app_origins.retain(|(known, _)| *known != top);
            self.app_origins.push((top, origin));
        }
        Ok(self)
    }

    /// The application's own settings, deserialised into its type; an
    /// error names the setting and where it came from.
    pub fn app_settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.app_settings
            .clone()
            .try_into()
            .map_err(|error: toml::de::Error| {
                let origins: Vec<String> = self
                    .app_origins
                    .iter()
                    .map(|(key, origin)| format!("{key} from {origin}"))
                    .collect();
                let from = if origins.is_empty() {
                    String::from("none given")
                } else {
                    origins.join(", ")
                };
                ConfigError(format!(
                    "invalid application settings ([app]; {from}): {}",
                    error.message()
                ))
            })
    }

    /// Where the value of the setting `name` came from.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.sources
            .iter()
            .find(|(known, ..)| *known == name)
            .map(|(.., origin)| origin)
    }

    /// The per-connection settings for the server.
    pub fn connection_config(&self) -> ConnConfig {
        ConnConfig {
            limits: self.limits,
            max_body: self.max_body,
            body_buffer_size: self.body_buffer_size,
            spool_dir: self.spool_dir.clone(),
            spool_max_size: self.spool_max_size,
            client_memory: self.client_memory,
            keepalive: self.keepalive,
            min_request_rate: self.min_request_rate,
            min_response_rate: self.min_response_rate,
            min_rate_grace: self.min_rate_grace,
            ..ConnConfig::default()
        }
    }

    /// The arbiter's settings.
    pub fn arbiter_config(&self) -> ArbiterConfig {
        ArbiterConfig {
            binds: self.bind.clone(),
            backlog: self.backlog,
            workers: self.workers,
            threads: self.threads,
            timeout: self.timeout,
            graceful_timeout: self.graceful_timeout,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            connection: self.connection_config(),
            trusted_proxies: self.forwarded_allow_ips.clone(),
            metrics_bind: self.metrics_bind.clone(),
            metrics: self.metrics_path.is_some(),
            pidfile: self.pidfile.clone(),
            reuse_port: self.reuse_port,
            name: self.name.clone(),
            user: self.user,
            group: self.group,
            env: self.env.clone(),
            capture_output: self.capture_output,
        }
    }

    /// Every effective value as TOML, each with its origin and meaning as
    /// a comment, credentials masked (the Sentry DSN's key, the values of
    /// credential headers), so that it can be shown to others.
    pub fn to_toml(&self) -> String {
        self.toml(false)
    }

    /// As [`to_toml`](Self::to_toml), credentials and all: a config file
    /// that resolves to these very values (`--print-config --show-secrets`).
    pub fn to_toml_with_secrets(&self) -> String {
        self.toml(true)
    }

    fn toml(&self, show_secrets: bool) -> String {
        let mut out = String::new();
        for ((name, value, origin), setting) in self.sources.iter().zip(SETTINGS) {
            let value = value.trim();
            let masked = if show_secrets {
                None
            } else {
                mask(name, value, &self.errors.redactor)
            };
            let note = match masked {
                Some(_) => ", masked (--show-secrets shows it)",
                None => "",
            };
            let value = masked.as_deref().unwrap_or(value);
            let literal = match setting.kind {
                Kind::List | Kind::Lines => toml::Value::Array(
                    value
                        .split(setting.kind.separator())
                        .filter(|item| !item.trim().is_empty())
                        .map(|item| toml::Value::String(item.trim().to_owned()))
                        .collect(),
                )
                .to_string(),
                Kind::Switch => value.to_owned(),
                Kind::Value
                    if value.parse::<u64>().is_ok()
                        || is_decimal(value)
                        || value == "true"
                        || value == "false" =>
                {
                    value.to_owned()
                }
                Kind::Value => toml::Value::String(value.to_owned()).to_string(),
            };
            // `app` is the built-in application's name, or the table of an
            // application's own settings: the file holds one or the other.
            let comment = if *name == "app" && !self.app_settings.is_empty() {
                "# "
            } else {
                ""
            };
            out.push_str(&format!(
                "{comment}{name} = {literal}  # {origin}{note}: {}\n",
                setting.help
            ));
        }
        if !self.app_settings.is_empty() {
            out.push_str("\n[app]  # the application's own settings\n");
            for (key, value) in &self.app_settings {
                let origin = self
                    .app_origins
                    .iter()
                    .find(|(known, _)| known == key)
                    .map_or_else(|| "default".to_owned(), |(_, origin)| origin.to_string());
                let secret = !show_secrets && self.errors.redactor.is_secret(key);
                let literal = if secret {
                    toml::Value::String(REDACTED.to_owned())
                } else {
                    value.clone()
                };
                let note = if secret {
                    ", masked (--show-secrets shows it)"
                } else {
                    ""
                };
                let key = toml::Value::String(key.clone()).to_string();
                let key = if key
                    .trim_matches('"')
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    key.trim_matches('"').to_owned()
                } else {
                    key
                };
                out.push_str(&format!("{key} = {literal}  # {origin}{note}\n"));
            }
        }
        out
    }
}

/// `value`, the text of the setting `name`, with its credentials masked:
/// the Sentry DSN's key, and the values of credential headers in the
/// header settings, by the rule the access log and Sentry hide headers
/// with. `None` when it holds none.
fn mask(name: &str, value: &str, redactor: &Redactor) -> Option<String> {
    let masked = match name {
        "sentry_dsn" => mask_dsn(value),
        "header" | "header_if_absent" | "header_append" => value
            .split(Kind::Lines.separator())
            .map(|line| mask_header_line(line, redactor))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    (masked != value).then_some(masked)
}

/// `Name: value` with the value masked when the header holds credentials.
fn mask_header_line(line: &str, redactor: &Redactor) -> String {
    let Some((header, _)) = line.split_once(':') else {
        return line.to_owned();
    };
    let header = header.trim();
    if redactor.is_secret_header(&header.to_ascii_lowercase()) {
        format!("{header}: {REDACTED}")
    } else {
        line.to_owned()
    }
}

/// A DSN with its key, and its secret in the old `KEY:SECRET@` form,
/// masked: `https://[redacted]@o1.ingest.sentry.io/2`.
fn mask_dsn(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return dsn.to_owned();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return dsn.to_owned();
    };
    let user = if authority[..at].contains(':') {
        format!("{REDACTED}:{REDACTED}")
    } else {
        REDACTED.to_owned()
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// `0.25`: digits around one point, written bare as a TOML float.
fn is_decimal(value: &str) -> bool {
    value.split_once('.').is_some_and(|(whole, part)| {
        !whole.is_empty()
            && !part.is_empty()
            && whole
                .bytes()
                .chain(part.bytes())
                .all(|b| b.is_ascii_digit())
    })
}

fn setting_names() -> String {
    SETTINGS
        .iter()
        .map(|setting| setting.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `all`, `none` or a comma-separated list of known layers into the
/// chosen layers, outermost first whatever order they were listed in.
fn parse_middleware(list: &str) -> Result<Vec<&'static str>, String> {
    match list.trim() {
        "all" => return Ok(LAYERS.to_vec()),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(known) = LAYERS.iter().find(|known| **known == name) else {
            let known = if LAYERS.is_empty() {
                "none yet".to_owned()
            } else {
                LAYERS.join(", ")
            };
            return Err(format!(
                "unknown layer `{name}` (known layers: {known}; or `all`, `none`)"
            ));
        };
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    chosen.sort_by_key(|name| LAYERS.iter().position(|known| known == name));
    Ok(chosen)
}

/// A size in bytes: digits, then optionally `K`, `M` or `G` (or `KiB`,
/// `MiB`, `GiB`), each 1024 times the one before.
fn parse_bytes(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        flags: &[(&str, &str)],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::resolve(
            flags,
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            file.map(|text| ("turnstile.toml", text)),
        )
    }

    #[test]
    fn defaults_are_gunicorns() {
        let config = resolve(&[], &[], None).unwrap();
        assert_eq!(config.bind, ["127.0.0.1:8000"]);
        assert_eq!(config.workers, 1);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.graceful_timeout, Duration::from_secs(30));
        assert_eq!(config.backlog, 2048);
        assert!(!config.preload);
        assert_eq!(config.keepalive, Duration::from_secs(2));
        assert_eq!(config.limits.request_line, 4094);
        assert_eq!(config.limits.header_fields, 100);
        assert_eq!(config.limits.header_field_size, 8190);
        // Gunicorn has no body limit; a server that buffers bodies needs one.
        assert_eq!(config.max_body, Some(100 << 20));
        assert_eq!(config.origin("bind"), Some(&Origin::Default));
    }

    #[test]
    fn sizes_take_binary_units_and_a_bad_spool_dir_is_refused() {
        let flags = [
            ("body_buffer_size", "16K"),
            ("client_memory", "32MiB"),
            ("spool_max_size", "2G"),
            ("limit_request_body", "0"),
        ];
        let config = resolve(&flags, &[], None).unwrap();
        assert_eq!(config.body_buffer_size, 16 << 10);
        assert_eq!(config.client_memory, 32 << 20);
        assert_eq!(config.spool_max_size, 2 << 30);
        assert_eq!(config.max_body, None, "0 is no limit");
        let error = resolve(&[("client_memory", "lots")], &[], None).unwrap_err();
        assert!(error.to_string().contains("client_memory"), "{error}");
        let error = resolve(&[("spool_dir", "/nonexistent/spool")], &[], None).unwrap_err();
        assert!(
            error.to_string().contains("cannot make a file there"),
            "{error}"
        );
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let file = "threads = 2\nkeepalive = 3\nlimit_request_line = 1000\n";
        let env = [("TURNSTILE_THREADS", "4"), ("TURNSTILE_KEEPALIVE", "5")];
        let config = resolve(&[("keepalive", "7")], &env, Some(file)).unwrap();
        assert_eq!(config.threads, 4);
        assert_eq!(config.keepalive, Duration::from_secs(7));
        assert_eq!(config.limits.request_line, 1000);
        assert_eq!(
            config.origin("limit_request_line"),
            Some(&Origin::File("turnstile.toml".into()))
        );
        assert_eq!(
            config.origin("keepalive"),
            Some(&Origin::Flag("--keepalive".into()))
        );
    }

    #[test]
    fn port_sets_the_default_bind_but_not_an_explicit_one() {
        let config = resolve(&[], &[("PORT", "5000")], None).unwrap();
        assert_eq!(config.bind, ["0.0.0.0:5000"]);
        let env = [("PORT", "5000"), ("TURNSTILE_BIND", "127.0.0.1:6000")];
        assert_eq!(resolve(&[], &env, None).unwrap().bind, ["127.0.0.1:6000"]);
    }

    #[test]
    fn web_concurrency_sets_the_workers_below_turnstiles_own_variable() {
        let config = resolve(&[], &[("WEB_CONCURRENCY", "3")], None).unwrap();
        assert_eq!(config.workers, 3);
        assert_eq!(
            config.origin("workers"),
            Some(&Origin::Env("WEB_CONCURRENCY".into()))
        );
        let env = [("WEB_CONCURRENCY", "3"), ("TURNSTILE_WORKERS", "5")];
        assert_eq!(resolve(&[], &env, None).unwrap().workers, 5);
        let flags = [("workers", "2")];
        assert_eq!(resolve(&flags, &env, None).unwrap().workers, 2);
    }

    #[test]
    fn lists_and_switches_come_from_every_source() {
        let file = "bind = [\"127.0.0.1:7000\", \"unix:/tmp/t.sock\"]\npreload = true\n";
        let config = resolve(&[], &[], Some(file)).unwrap();
        assert_eq!(config.bind, ["127.0.0.1:7000", "unix:/tmp/t.sock"]);
        assert!(config.preload);
        let env = [
            ("TURNSTILE_BIND", "127.0.0.1:1,127.0.0.1:2"),
            ("TURNSTILE_PRELOAD", "no"),
        ];
        let config = resolve(&[], &env, Some(file)).unwrap();
        assert_eq!(config.bind, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(!config.preload);
        let error = resolve(&[], &[("TURNSTILE_PRELOAD", "maybe")], None).unwrap_err();
        assert!(
            error.to_string().contains("expected true or false"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_and_keys_name_their_source() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Pairs<'_>, Pairs<'_>, Option<&str>, &str); 6] = [
            (
                &[("threads", "0")],
                &[],
                None,
                "invalid threads \"0\" (from flag --threads)",
            ),
            (
                &[],
                &[("TURNSTILE_KEEPALIVE", "soon")],
                None,
                "from environment TURNSTILE_KEEPALIVE",
            ),
            (&[], &[], Some("workerz = 3\n"), "unknown setting `workerz`"),
            (&[], &[], Some("threads = \n"), "is not valid TOML"),
            (
                &[],
                &[],
                Some("threads = 2.5\n"),
                "invalid threads \"2.5\" (from file turnstile.toml): expected a whole number",
            ),
            (
                &[("app", "django")],
                &[],
                None,
                "expected demo, hello, environ or broken",
            ),
        ];
        for (flags, env, file, needle) in cases {
            let error = resolve(flags, env, file).unwrap_err().to_string();
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sentry_settings_come_from_sentrys_own_variables_below_turnstiles() {
        let env = [
            ("SENTRY_DSN", "https://public@o1.ingest.sentry.io/2"),
            ("SENTRY_ENVIRONMENT", "staging"),
            ("TURNSTILE_SENTRY_ENVIRONMENT", "canary"),
        ];
        let config = resolve(&[], &env, None).unwrap();
        let errors = &config.errors;
        assert_eq!(
            errors.dsn.as_deref(),
            Some("https://public@o1.ingest.sentry.io/2")
        );
        assert_eq!(errors.environment, "canary");
        assert_eq!(
            errors.release,
            concat!("turnstile@", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(errors.capture_statuses, [500..=599]);
        assert!(!errors.send_default_pii && !errors.debug);
        assert_eq!(
            config.origin("sentry_dsn"),
            Some(&Origin::Env("SENTRY_DSN".into()))
        );

        let flags = [
            ("sentry_capture_statuses", "500-599,429"),
            ("sentry_sample_rate", "0.25"),
        ];
        let config = resolve(&flags, &[], None).unwrap();
        assert!(config.errors.dsn.is_none());
        assert_eq!(config.errors.capture_statuses, [500..=599, 429..=429]);
        assert_eq!(config.errors.sample_rate, 0.25);
        let config = resolve(&[], &[], Some("sentry_sample_rate = 0.5\n")).unwrap();
        assert_eq!(config.errors.sample_rate, 0.5);
        assert!(config.to_toml().contains("sentry_sample_rate = 0.5  #"));

        for (name, value) in [
            ("sentry_dsn", "sentry.example/1"),
            ("sentry_sample_rate", "1.5"),
            ("sentry_capture_statuses", "5xx"),
            ("debug", "maybe"),
        ] {
            let error = resolve(&[(name, value)], &[], None)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(&format!("invalid {name}")), "{error}");
        }
    }

    #[test]
    fn middleware_lists_accept_known_layers_only() {
        assert_eq!(parse_middleware("none"), Ok(Vec::new()));
        assert_eq!(parse_middleware("all"), Ok(LAYERS.to_vec()));
        let error = parse_middleware("logging").unwrap_err();
        assert!(error.contains("unknown layer `logging`"), "{error}");
    }

    #[test]
    fn header_lines_keep_their_commas_from_every_source() {
        use crate::Layer;
        use crate::test::{MockApp, TestRequest, serve};

        let headers = |config: Config| {
            let app = config.inject_headers.layer(MockApp::ok("hi"));
            serve(&app, TestRequest::get("/").build()).headers
        };
        let file = "[header]\n\"Cache-Control\" = \"no-cache, no-store\"\n";
        let config = resolve(&[], &[], Some(file)).unwrap();
        assert_eq!(headers(config)["cache-control"], "no-cache, no-store");

        let env = [("TURNSTILE_HEADER_APPEND", "Vary: A, B\nX-Two: 2")];
        let config = resolve(&[], &env, None).unwrap();
        let printed = config.to_toml();
        let sent = headers(config);
        assert_eq!(sent["vary"], "A, B");
        assert_eq!(sent["x-two"], "2");
        assert!(
            printed.contains(r#"header_append = ["Vary: A, B", "X-Two: 2"]"#),
            "{printed}"
        );
        let error = resolve(&[("header", "Connection: close")], &[], None).unwrap_err();
        assert!(error.to_string().contains("from flag --header"), "{error}");
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Shop {
        name: String,
        #[serde(default)]
        open: bool,
        db: Db,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Db {
        url: String,
        pool: u32,
    }

    #[test]
    fn an_applications_settings_come_from_the_file_then_the_environment_then_flags() {
        let file = "workers = 2\n[app]\nname = \"corner\"\ndb = { url = \"postgres://db/shop\", pool = 4 }\n";
        let config = resolve(&[], &[], Some(file)).unwrap();
        assert_eq!(config.workers, 2);
        let shop: Shop = config.app_settings().unwrap();
        assert_eq!(shop.db.pool, 4);
        assert!(!shop.open);
        let config = config
            .with_app_settings([
                (
                    "db.pool".into(),
                    "8".into(),
                    Origin::Env("TURNSTILE_APP__DB__POOL".into()),
                ),
                (
                    "open".into(),
                    "true".into(),
                    Origin::Flag("--app-setting".into()),
                ),
                (
                    "name".into(),
                    "the corner shop".into(),
                    Origin::Flag("--app-setting".into()),
                ),
            ])
            .unwrap();
        let shop: Shop = config.app_settings().unwrap();
        assert_eq!(
            shop,
            Shop {
                name: "the corner shop".into(),
                open: true,
                db: Db {
                    url: "postgres://db/shop".into(),
                    pool: 8
                }
            }
        );
        // A value of the wrong type names where the settings came from.
        let wrong = config
            .with_app_settings([(
                "db.pool".into(),
                "many".into(),
                Origin::Flag("--app-setting".into()),
            )])
            .unwrap()
            .app_settings::<Shop>()
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("invalid application settings"), "{wrong}");
        assert!(wrong.contains("db from flag --app-setting"), "{wrong}");
    }

    #[test]
    fn an_applications_settings_are_printed_as_an_app_table_with_secrets_masked() {
        let file = "[app]\ngreeting = \"hi\"\napi_token = \"t0k3n\"\nlimit = 3\n";
        let config = resolve(&[], &[], Some(file)).unwrap();
        let printed = config.to_toml();
        assert!(printed.contains("[app]"), "{printed}");
        assert!(printed.contains("greeting = \"hi\""), "{printed}");
        assert!(!printed.contains("t0k3n"), "{printed}");
        // Unmasked, it is a file that gives the same settings again.
        let again = resolve(&[], &[], Some(&config.to_toml_with_secrets())).unwrap();
        assert_eq!(again.app_settings, config.app_settings);
        // The built-in application's name is the file's `app` otherwise.
        assert!(printed.contains("# app = \"demo\""), "{printed}");
    }

    #[test]
    fn printed_config_is_toml_that_resolves_to_the_same_values() {
        let flags = [
            ("threads", "3"),
            ("app", "hello"),
            ("sentry_dsn", "https://k3y@o1.ingest.sentry.io/2"),
        ];
        let config = resolve(&flags, &[], None).unwrap();
        let printed = config.to_toml_with_secrets();
        assert!(
            printed.contains("threads = 3  # flag --threads"),
            "{printed}"
        );
        let again = resolve(&[], &[], Some(&printed)).unwrap();
        assert_eq!(again.threads, 3);
        assert_eq!(again.preload, config.preload);
        assert_eq!(again.app, AppName::Hello);
        assert_eq!(again.bind, config.bind);
        assert_eq!(again.errors.dsn, config.errors.dsn);
    }

    #[test]
    fn printed_config_masks_credentials_unless_asked() {
        let flags = [
            ("sentry_dsn", "https://k3y@o1.ingest.sentry.io/2"),
            ("header", "X-Api-Key: h3ader\nCache-Control: no-store"),
            ("header_append", "Set-Cookie: c00kie=1"),
        ];
        let config = resolve(&flags, &[], None).unwrap();
        let printed = config.to_toml();
        assert!(
            printed.contains(
                "sentry_dsn = \"https://[redacted]@o1.ingest.sentry.io/2\"  \
                 # flag --sentry-dsn, masked (--show-secrets shows it):"
            ),
            "{printed}"
        );
        assert!(
            printed.contains(r#"header = ["X-Api-Key: [redacted]", "Cache-Control: no-store"]"#),
            "{printed}"
        );
        assert!(
            printed.contains(r#"header_append = ["Set-Cookie: [redacted]"]"#),
            "{printed}"
        );
        for secret in ["k3y", "h3ader", "c00kie"] {
            assert!(!printed.contains(secret), "{secret}: {printed}");
        }
        let shown = config.to_toml_with_secrets();
        for secret in ["k3y", "h3ader", "c00kie"] {
            assert!(shown.contains(secret), "{secret}: {shown}");
        }
        assert!(!shown.contains("masked"), "{shown}");
    }

    #[test]
    fn a_dsn_loses_its_key_and_secret_and_keeps_its_host_and_project() {
        assert_eq!(
            mask_dsn("https://KEY@o1.ingest.sentry.io/1"),
            "https://[redacted]@o1.ingest.sentry.io/1"
        );
        assert_eq!(
            mask_dsn("http://KEY:SECRET@127.0.0.1:9000/42"),
            "http://[redacted]:[redacted]@127.0.0.1:9000/42"
        );
        assert_eq!(mask_dsn("https://host/1"), "https://host/1");
        assert_eq!(mask("sentry_dsn", "", &Redactor::default()), None);
        assert_eq!(mask("threads", "3", &Redactor::default()), None);
    }

    #[test]
    fn the_redact_help_names_every_default_word() {
        let help = SETTINGS
            .iter()
            .find(|setting| setting.name == "access_log_redact")
            .unwrap()
            .help;
        for word in crate::middleware::request_log::DEFAULT_SECRET_WORDS {
            assert!(help.contains(word), "{word} is not in {help:?}");
        }
    }

    #[test]
    fn named_credential_headers_are_printed_and_the_others_redacted() {
        use crate::Layer;
        use crate::middleware::request_log::tracing_subscriber::layer::SubscriberExt as _;
        use crate::middleware::request_log::tracing_subscriber::{Layer as _, Registry};
        use crate::middleware::request_log::{AccessLog, Output};
        use crate::test::{MockApp, TestRequest, serve};

        let flags = [
            ("access_log_format", "%({x-api-key}i)s %({authorization}i)s"),
            ("access_log_show_headers", "X-Api-Key"),
        ];
        let config = resolve(&flags, &[], None).unwrap();
        let path = std::env::temp_dir().join(format!("turnstile-shown-{}.log", std::process::id()));
        let access_log =
            AccessLog::new(config.access_log_format.clone(), Output::File(path.clone()));
        let subscriber =
            Registry::default().with(access_log.clone().with_filter(RequestLog::events()));
        let app = config.request_log.layer(MockApp::ok("ok"));
        let request = TestRequest::get("/")
            .header("x-api-key", "k-1")
            .header("authorization", "Bearer t-1")
            .build();
        tracing::subscriber::with_default(subscriber, || serve(&app, request));
        access_log.flush();
        let line = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(line, "k-1 [redacted]\n");

        let error = resolve(&[("access_log_show_headers", "a b")], &[], None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid access_log_show_headers"),
            "{error}"
        );
    }
}
