//! The `turnstile` command line: the whole server (settings, logging,
//! every layer, the arbiter and its signals) around a built-in
//! application, or around one's own.
//!
//! `cargo run --release` serves the demo application on 127.0.0.1:8000.
//! Settings follow Gunicorn's names and come from flags, `TURNSTILE_*`
//! environment variables and a TOML file (see [`crate::config`]);
//! `turnstile --help` lists them.
//!
//! A program of one's own serves its application with all of it:
//!
//! ```no_run
//! use turnstile::{Request, Response, SharedApp};
//!
//! fn main() -> std::process::ExitCode {
//!     turnstile::cli::main_with(|_config| {
//!         SharedApp::new(|_request: Request| Response::new("Hello\n".into()))
//!     })
//! }
//! ```

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use crate::config::{AppName, Config, Kind, SETTINGS};
use crate::middleware::metrics::{HttpMetrics, ServeMetrics};
use crate::middleware::traces::{TraceRequests, export};
use crate::server::{Arbiter, log, metrics};
use crate::{SharedApp, Stack, apps, hooks, logging};
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

/// A pre-forking HTTP/1.1 server for Rust applications.
///
/// Every setting can also be given as TURNSTILE_<NAME> in the environment
/// or as <name> in the TOML file; flags win over the environment, which
/// wins over the file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A TOML file of settings (or TURNSTILE_CONFIG)
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// Check the settings and exit: 0 when they are good, 2 when not
    #[arg(long)]
    check_config: bool,
    /// Print every effective setting and where it came from, as TOML (credentials masked), and exit
    #[arg(long)]
    print_config: bool,
    /// With --print-config: show credentials (the Sentry DSN's key, header values) as they are
    #[arg(long, requires = "print_config")]
    show_secrets: bool,
}

/// The command line: `Args`, and a flag for every setting.
fn command() -> clap::Command {
    SETTINGS.iter().fold(Args::command(), |command, setting| {
        let arg = Arg::new(setting.name).long(setting.flag).help(format!(
            "{} [default: {}]",
            setting.help,
            setting.default_value()
        ));
        let arg = match setting.kind {
            Kind::Value => arg.value_name("VALUE"),
            Kind::List | Kind::Lines => arg.value_name("VALUE").action(ArgAction::Append),
            Kind::Switch => arg.action(ArgAction::SetTrue),
        };
        let arg = match setting.alias {
            Some(alias) => arg.visible_alias(alias),
            None => arg,
        };
        command.arg(match setting.short {
            Some(short) => arg.short(short),
            None => arg,
        })
    })
}

fn load(args: &Args, matches: &ArgMatches) -> Result<Config, String> {
    let values: Vec<(&str, String)> = SETTINGS
        .iter()
        .filter_map(|setting| {
            let value = match setting.kind {
                Kind::Switch => matches.get_flag(setting.name).then(|| "true".to_owned())?,
                kind => matches
                    .get_many::<String>(setting.name)?
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(&kind.separator().to_string()),
            };
            Some((setting.name, value))
        })
        .collect();
    let flags: Vec<(&str, &str)> = values
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("TURNSTILE_CONFIG").map(PathBuf::from));
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
            Some((path.display().to_string(), text))
        }
        None => None,
    };
    let file = file
        .as_ref()
        .map(|(path, text)| (path.as_str(), text.as_str()));
    Config::resolve(&flags, |name| std::env::var(name).ok(), file).map_err(|e| e.to_string())
}

/// The application the settings choose, wrapped in the chosen layers.
fn build_app(config: &Config, app: &dyn Fn(&Config) -> SharedApp) -> SharedApp {
    let chosen = |name: &str| config.middleware.contains(&name);
    let app = app(config);
    // The metrics page is outermost: scrapes are neither logged nor timed.
    let page = config
        .metrics_path
        .as_deref()
        .map(|path| ServeMetrics::new(path, metrics::render_this_process));
    let stack = Stack::new()
        .option_layer(page)
        .option_layer(chosen("headers").then(|| config.inject_headers.clone()))
        .option_layer(chosen("tracing").then(|| tracing_layer(config)))
        .option_layer(chosen("request_log").then(|| config.request_log.clone()))
        .option_layer(chosen("metrics").then(HttpMetrics::new))
        .option_layer(chosen("error_capture").then(|| config.errors.layer()));
    SharedApp::new(stack.app(app))
}

// ANCHOR: tracing_layer
/// The tracing layer: each worker builds its exporter from the
/// environment (`OTEL_EXPORTER_OTLP_ENDPOINT` …) as it boots.
fn tracing_layer(config: &Config) -> TraceRequests {
    // Without an endpoint, only an incoming traceparent is read: no
    // per-process pipeline to look up on every request.
    if !export::is_configured() {
        return TraceRequests::new().redactor(config.errors.redactor.clone());
    }
    TraceRequests::with_pipeline(|| {
        export::from_env("turnstile", env!("CARGO_PKG_VERSION")).unwrap_or_else(|error| {
            log::warning(format_args!("tracing is off in this worker: {error}"));
            None
        })
    })
    .redactor(config.errors.redactor.clone())
}
// ANCHOR_END: tracing_layer

fn bare_app(config: &Config) -> SharedApp {
    match config.app {
        AppName::Demo => {
            apps::load_demo();
            SharedApp::new(apps::demo)
        }
        AppName::Hello => SharedApp::new(apps::hello),
        AppName::Environ => SharedApp::new(apps::environ),
        AppName::Broken => apps::load_broken(),
    }
}

/// The `turnstile` binary: serves the built-in application `--app` names.
pub fn main() -> ExitCode {
    main_with(bare_app)
}

/// The `turnstile` binary, serving the application `app` builds from the
/// settings (in each worker, or once under `--preload`) instead of a
/// built-in one; `--app` is then ignored.
pub fn main_with(app: impl Fn(&Config) -> SharedApp) -> ExitCode {
    let matches = command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match load(&args, &matches) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("turnstile: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        let printed = if args.show_secrets {
            config.to_toml_with_secrets()
        } else {
            config.to_toml()
        };
        print!("{printed}");
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        println!("turnstile: the configuration is valid");
        return ExitCode::SUCCESS;
    }
    if config.middleware.contains(&"tracing")
        && let Err(error) = export::check_env()
    {
        eprintln!("turnstile: {error}");
        return ExitCode::from(2);
    }
    if let Err(error) = log::to_file(Path::new(&config.error_log)) {
        eprintln!(
            "turnstile: cannot open the log file {}: {error}",
            config.error_log
        );
        return ExitCode::from(2);
    }
    if let Err(error) = logging::install(&config, std::env::var("RUST_LOG").ok()) {
        eprintln!("turnstile: {error}");
        return ExitCode::from(2);
    }
    if config.errors.debug {
        log::warning(format_args!(
            "debug is on: a failing request is answered with its error's text, \
             which may hold a secret; never in production"
        ));
    }
    if config.metrics_path.is_some() && config.workers > 1 {
        log::warning(format_args!(
            "metrics_path serves the metrics of whichever worker answers; \
             with {} workers, scrape --metrics-bind instead",
            config.workers
        ));
    }
    let arbiter = Arbiter::new(config.arbiter_config())
        .preload(config.preload)
        .worker_abort(hooks::report_stuck);
    // HUP re-reads the settings; workers forked after it build the
    // application from the new ones (unless it was preloaded).
    let current = Rc::new(RefCell::new(config));
    let arbiter = arbiter.reload_with({
        let current = current.clone();
        move || {
            let config = load(&args, &matches)?;
            let arbiter_config = config.arbiter_config();
            *current.borrow_mut() = config;
            Ok(arbiter_config)
        }
    });
    let code = arbiter.run(|| build_app(&current.borrow(), &app));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
