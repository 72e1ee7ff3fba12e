//! The `turnstile` binary: serves a built-in application over HTTP/1.1.
//!
//! `cargo run --release` serves the demo application on 127.0.0.1:8000.
//! Settings follow Gunicorn's names and come from flags, `TURNSTILE_*`
//! environment variables and a TOML file (see `turnstile::config`);
//! `turnstile --help` lists them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use turnstile::config::{AppName, Config};
use turnstile::server::Server;
use turnstile::{Application, apps};

/// A pre-forking HTTP/1.1 server for Rust applications.
///
/// Every setting can also be given as TURNSTILE_<NAME> in the environment
/// or as <name> in the TOML file; flags win over the environment, which
/// wins over the file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The address to listen on [default: 127.0.0.1:8000, or 0.0.0.0:$PORT]
    #[arg(short, long)]
    bind: Option<String>,
    /// Request threads [default: 8]
    #[arg(long)]
    threads: Option<String>,
    /// The built-in application: demo, hello or environ [default: demo]
    #[arg(long)]
    app: Option<String>,
    /// The layers: all, none (the bare engine), or a comma-separated list
    /// [default: all]
    #[arg(long)]
    middleware: Option<String>,
    /// Seconds an idle keep-alive connection is kept; 0 closes after each
    /// response [default: 2]
    #[arg(long)]
    keepalive: Option<String>,
    /// Longest request line, in bytes [default: 4094]
    #[arg(long)]
    limit_request_line: Option<String>,
    /// Most header fields in a request [default: 100]
    #[arg(long)]
    limit_request_fields: Option<String>,
    /// Longest header field line, in bytes, counting its CRLF [default: 8190]
    #[arg(long)]
    limit_request_field_size: Option<String>,
    /// Largest request body, in bytes; 0 for no limit [default: 0]
    #[arg(long)]
    limit_request_body: Option<String>,
    /// A TOML file of settings (or TURNSTILE_CONFIG)
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// Check the settings and exit: 0 when they are good, 2 when not
    #[arg(long)]
    check_config: bool,
    /// Print every effective setting, and where it came from, as TOML, and exit
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn flags(&self) -> Vec<(&'static str, &str)> {
        [
            ("bind", &self.bind),
            ("threads", &self.threads),
            ("app", &self.app),
            ("middleware", &self.middleware),
            ("keepalive", &self.keepalive),
            ("limit_request_line", &self.limit_request_line),
            ("limit_request_fields", &self.limit_request_fields),
            ("limit_request_field_size", &self.limit_request_field_size),
            ("limit_request_body", &self.limit_request_body),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
        .collect()
    }
}

fn load(args: &Args) -> Result<Config, String> {
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("TURNSTILE_CONFIG").map(PathBuf::from));
    let file = match &path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let path_text = path.as_ref().map(|path| path.display().to_string());
    let file = path_text.as_deref().zip(file.as_deref());
    Config::resolve(&args.flags(), |name| std::env::var(name).ok(), file).map_err(|e| e.to_string())
}

/// Serves `app` wrapped in the chosen layers.
fn wrap_and_run(server: Server, app: impl Application, config: &Config) {
    // No layer has landed yet: every choice is the bare application.
    debug_assert!(config.middleware.is_empty());
    server.run(app);
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("turnstile: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        println!("turnstile: the configuration is valid");
        return ExitCode::SUCCESS;
    }
    let server = match Server::bind(&config.bind) {
        Ok(server) => server
            .threads(config.threads)
            .connection_config(config.connection_config()),
        Err(error) => {
            eprintln!("turnstile: cannot listen on {}: {error}", config.bind);
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
    match config.app {
        AppName::Demo => wrap_and_run(server, apps::demo, &config),
        AppName::Hello => wrap_and_run(server, apps::hello, &config),
        AppName::Environ => wrap_and_run(server, apps::environ, &config),
    }
    ExitCode::SUCCESS
}
