//! The `turnstile` binary: serves a built-in application over HTTP/1.1.
//!
//! `cargo run --release` serves the demo application on 127.0.0.1:8000.
//! Flags follow Gunicorn's names; `turnstile --help` lists them.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use turnstile::server::Server;
use turnstile::server::http1::Limits;
use turnstile::server::http1::conn::ConnConfig;
use turnstile::{Application, apps};

/// A pre-forking HTTP/1.1 server for Rust applications.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The address to listen on.
    #[arg(short, long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Request threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// The built-in application to serve.
    #[arg(long, value_enum, default_value_t = App::Demo)]
    app: App,
    /// The layers to wrap the application in: `all`, `none` (the bare
    /// engine), or a comma-separated list of layer names.
    #[arg(long, default_value = "all", value_parser = parse_middleware)]
    middleware: Middleware,
    /// Longest request line, in bytes.
    #[arg(long, default_value_t = 4094)]
    limit_request_line: usize,
    /// Most header fields in a request.
    #[arg(long, default_value_t = 100)]
    limit_request_fields: usize,
    /// Longest header field line, in bytes, counting its CRLF.
    #[arg(long, default_value_t = 8190)]
    limit_request_field_size: usize,
    /// Largest request body, in bytes (0: no limit).
    #[arg(long, default_value_t = 0)]
    limit_request_body: u64,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, default_value_t = 2)]
    keepalive: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum App {
    /// A few routes that exercise the server (see `turnstile::apps::demo`).
    Demo,
    /// `Hello, world!` for every request, for benchmarks.
    Hello,
    /// What the application saw, as JSON (see `turnstile::apps::environ`).
    Environ,
}

/// The layers the binary knows, outermost first. Each layer's issue adds
/// its name here and its construction in `wrap`.
const LAYERS: &[&str] = &[];

/// The layers chosen with `--middleware`, outermost first.
#[derive(Clone, Debug)]
struct Middleware(Vec<&'static str>);

fn parse_middleware(list: &str) -> Result<Middleware, String> {
    match list.trim() {
        "all" => return Ok(Middleware(LAYERS.to_vec())),
        "none" | "" => return Ok(Middleware(Vec::new())),
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
    // Whatever order they are listed in, layers stack in their one order.
    chosen.sort_by_key(|name| LAYERS.iter().position(|known| known == name));
    Ok(Middleware(chosen))
}

/// Serves `app` wrapped in the chosen layers.
fn wrap_and_run(server: Server, app: impl Application, middleware: &Middleware) {
    // No layer has landed yet: every choice is the bare application.
    debug_assert!(middleware.0.is_empty());
    server.run(app);
}

fn main() -> ExitCode {
    let args = Args::parse();
    let conn = ConnConfig {
        limits: Limits {
            request_line: args.limit_request_line,
            header_fields: args.limit_request_fields,
            header_field_size: args.limit_request_field_size,
        },
        max_body: (args.limit_request_body > 0).then_some(args.limit_request_body),
        keepalive: Duration::from_secs(args.keepalive),
        ..ConnConfig::default()
    };
    let server = match Server::bind(&args.bind) {
        Ok(server) => server.threads(args.threads.into()).connection_config(conn),
        Err(error) => {
            eprintln!("turnstile: cannot listen on {}: {error}", args.bind);
            return ExitCode::from(2);
        }
    };
    match server.local_addr() {
        Ok(addr) => println!("turnstile: listening on http://{addr}"),
        Err(error) => {
            eprintln!("turnstile: {error}");
            return ExitCode::from(2);
        }
    }
    match args.app {
        App::Demo => wrap_and_run(server, apps::demo, &args.middleware),
        App::Hello => wrap_and_run(server, apps::hello, &args.middleware),
        App::Environ => wrap_and_run(server, apps::environ, &args.middleware),
    }
    ExitCode::SUCCESS
}
