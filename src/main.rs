//! The `turnstile` binary: serves a built-in application over HTTP/1.1.
//!
//! `cargo run --release` serves the demo application on 127.0.0.1:8000.
//! Flags follow Gunicorn's names; `turnstile --help` lists them.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use turnstile::apps;
use turnstile::server::Server;
use turnstile::server::http1::Limits;
use turnstile::server::http1::conn::ConnConfig;

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
        App::Demo => server.run(apps::demo),
        App::Hello => server.run(apps::hello),
    }
    ExitCode::SUCCESS
}
