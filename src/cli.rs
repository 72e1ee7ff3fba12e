//! The whole server for one's own application: the `turnstile` command
//! line (every setting from flags, `TURNSTILE_*` environment variables and
//! a TOML file, `--print-config`, `--check-config`, `--middleware`,
//! `--preload`), the logging wired up, every layer, the arbiter and its
//! signals, `HUP` rebuilding the application with the new settings.
//!
//! ```no_run
//! use turnstile::{Request, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     turnstile::main(|_settings| |_request: Request| Response::new("Hello\n".into()))
//! }
//! ```
//!
//! An application's own settings come from the same places: the file's
//! `[app]` table, `TURNSTILE_APP__KEY` variables (`__` for each level of a
//! nested key) and `--app-setting KEY=VALUE` flags, in that order of
//! precedence from low to high, deserialised with serde into its type
//! before anything starts (a bad one exits 2):
//!
//! ```no_run
//! use turnstile::{Main, Request, Response, Settings};
//!
//! #[derive(serde::Deserialize)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Main::new(|settings: &Settings<Greeting>| {
//!         let text = settings.app.text.clone();
//!         move |_request: Request| Response::new(text.clone().into())
//!     })
//!     .arbiter(|arbiter| arbiter.post_fork(|worker| eprintln!("worker {} up", worker.id)))
//!     .run()
//! }
//! ```
//!
//! The application is built in each worker as it boots, from the settings
//! read last: after a `HUP`, the new workers build it from the new ones.
//! Under `--preload` it is built once, in the arbiter, before the first
//! fork, and a `HUP` re-reads the server's settings only: the arbiter never
//! runs application code after forking.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::config::{Config, Kind, Origin, SETTINGS};
use crate::middleware::metrics::{HttpMetrics, ServeMetrics};
use crate::middleware::traces::{TraceRequests, export};
use crate::server::{Arbiter, error_log, prometheus};
use crate::{Application, SharedApp, Stack, layer_hooks, subscriber};
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
    /// One of the application's own settings, KEY=VALUE (dotted keys for
    /// nested tables; the VALUE read as TOML, else as a string); repeatable
    #[arg(long = "app-setting", value_name = "KEY=VALUE", action = ArgAction::Append)]
    app_settings: Vec<String>,
}

/// What the application is built from: the server's settings, and its own
/// (the `[app]` table and its overrides; a `toml::Table` when it names no
/// type).
#[derive(Debug)]
pub struct Settings<T = toml::Table> {
    /// The server's settings.
    pub server: Config,
    /// The application's own.
    pub app: T,
}

impl Settings {
    /// The application's setting `key` (from `[app]`, the environment or a
    /// flag), when it is text.
    pub fn app_str(&self, key: &str) -> Option<&str> {
        self.app.get(key)?.as_str()
    }
}

/// Serves the application `build` makes from the settings, with the whole
/// server: see [the module](self).
pub fn main<A: Application>(build: impl Fn(&Settings) -> A) -> ExitCode {
    Main::new(build).run()
}

/// The whole server for the application `build` makes, with the arbiter's
/// hooks, before it runs.
pub struct Main<T, F> {
    build: F,
    arbiter: Option<Box<dyn FnOnce(Arbiter) -> Arbiter>>,
    settings: PhantomData<fn() -> T>,
}

impl<T, F, A> Main<T, F>
where
    T: DeserializeOwned + 'static,
    F: Fn(&Settings<T>) -> A,
    A: Application,
{
    /// Serves what `build` makes from the settings, in each worker.
    pub fn new(build: F) -> Self {
        Self {
            build,
            arbiter: None,
            settings: PhantomData,
        }
    }

    /// Sets the arbiter's hooks (`post_fork`, `when_ready`, …) on the
    /// arbiter the settings made.
    pub fn arbiter(mut self, configure: impl FnOnce(Arbiter) -> Arbiter + 'static) -> Self {
        self.arbiter = Some(Box::new(configure));
        self
    }

    /// Reads the settings and runs the server until it stops; the exit
    /// code is the arbiter's, or 2 for bad settings.
    pub fn run(self) -> ExitCode {
        run(self.build, self.arbiter)
    }
}

/// The command line: `Args`, and a flag for every setting.
fn command() -> clap::Command {
    // `--timeout -1` is a value to refuse with a message, not a flag.
    let base = Args::command().allow_negative_numbers(true);
    SETTINGS.iter().fold(base, |command, setting| {
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
        let arg = arg.visible_aliases(setting.aliases.iter().copied());
        command.arg(match setting.short {
            Some(short) => arg.short(short),
            None => arg,
        })
    })
}

fn load<T: DeserializeOwned>(args: &Args, matches: &ArgMatches) -> Result<Settings<T>, String> {
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
    let server = Config::resolve(&flags, |name| std::env::var(name).ok(), file)
        .and_then(|config| config.with_app_settings(app_overrides(args)?))
        .map_err(|e| e.to_string())?;
    let app = server.app_settings().map_err(|e| e.to_string())?;
    Ok(Settings { server, app })
}

/// The application's settings from the environment (`TURNSTILE_APP__KEY`,
/// `__` between the levels of a nested key), then from `--app-setting`.
fn app_overrides(args: &Args) -> Result<Vec<(String, String, Origin)>, crate::config::ConfigError> {
    const PREFIX: &str = "TURNSTILE_APP__";
    let mut overrides: Vec<(String, String, Origin)> = std::env::vars()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(PREFIX)?.to_lowercase().replace("__", ".");
            Some((key, value, Origin::Env(name)))
        })
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    for setting in &args.app_settings {
        let Some((key, value)) = setting.split_once('=') else {
            return Err(crate::config::ConfigError::new(format!(
                "--app-setting {setting:?}: expected KEY=VALUE"
            )));
        };
        overrides.push((
            key.trim().to_owned(),
            value.to_owned(),
            Origin::Flag("--app-setting".into()),
        ));
    }
    Ok(overrides)
}

/// The application the settings choose, wrapped in the chosen layers.
fn build_app(config: &Config, app: SharedApp) -> SharedApp {
    let chosen = |name: &str| config.middleware.contains(&name);
    // The metrics page is outermost: scrapes are neither logged nor timed.
    let page = config
        .metrics_path
        .as_deref()
        .map(|path| ServeMetrics::new(path, prometheus::render_this_process));
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
            error_log::warning(format_args!("tracing is off in this worker: {error}"));
            None
        })
    })
    .redactor(config.errors.redactor.clone())
}
// ANCHOR_END: tracing_layer

fn run<T, A>(
    build: impl Fn(&Settings<T>) -> A,
    configure: Option<Box<dyn FnOnce(Arbiter) -> Arbiter>>,
) -> ExitCode
where
    T: DeserializeOwned + 'static,
    A: Application,
{
    let matches = command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Found again from wherever `--chdir` leads, when `HUP` re-reads it.
    args.config = args
        .config
        .take()
        .or_else(|| std::env::var_os("TURNSTILE_CONFIG").map(PathBuf::from))
        .map(|path| std::path::absolute(&path).unwrap_or(path));
    let settings = match load::<T>(&args, &matches) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("turnstile: {error}");
            return ExitCode::from(2);
        }
    };
    let config = &settings.server;
    if let Some(dir) = &config.chdir
        && let Err(error) = std::env::set_current_dir(dir)
    {
        eprintln!("turnstile: cannot change to {}: {error}", dir.display());
        return ExitCode::from(2);
    }
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
    if let Err(error) = error_log::to_file(Path::new(&config.error_log)) {
        eprintln!(
            "turnstile: cannot open the log file {}: {error}",
            config.error_log
        );
        return ExitCode::from(2);
    }
    if let Err(error) = subscriber::install(config, std::env::var("RUST_LOG").ok()) {
        eprintln!("turnstile: {error}");
        return ExitCode::from(2);
    }
    if config.errors.debug {
        error_log::warning(format_args!(
            "debug is on: a failing request is answered with its error's text, \
             which may hold a secret; never in production"
        ));
    }
    if config.metrics_path.is_some() && config.workers > 1 {
        error_log::warning(format_args!(
            "metrics_path serves the metrics of whichever worker answers; \
             with {} workers, scrape --metrics-bind instead",
            config.workers
        ));
    }
    let mut arbiter = Arbiter::new(config.arbiter_config())
        .preload(config.preload)
        .worker_abort(layer_hooks::report_stuck);
    if let Some(configure) = configure {
        arbiter = configure(arbiter);
    }
    // HUP re-reads the settings; workers forked after it build the
    // application from the new ones (unless it was preloaded).
    let current = Rc::new(RefCell::new(settings));
    let arbiter = arbiter.reload_with({
        let current = current.clone();
        move || {
            let settings = load::<T>(&args, &matches)?;
            let arbiter_config = settings.server.arbiter_config();
            *current.borrow_mut() = settings;
            Ok(arbiter_config)
        }
    });
    let code = arbiter.run(|| {
        let settings = current.borrow();
        build_app(&settings.server, SharedApp::new(build(&settings)))
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
