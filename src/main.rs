//! The `turnstile` binary: serves a built-in application over HTTP/1.1.
//!
//! `cargo run --release` serves the demo application on 127.0.0.1:8000.
//! Settings follow Gunicorn's names and come from flags, `TURNSTILE_*`
//! environment variables and a TOML file (see `turnstile::config`);
//! `turnstile --help` lists them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches, Parser};
use turnstile::config::{AppName, Config, SETTINGS};
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

/// The command line: `Args`, and a flag for every setting.
fn command() -> clap::Command {
    SETTINGS.iter().fold(Args::command(), |command, setting| {
        let arg = Arg::new(setting.name)
            .long(setting.flag)
            .value_name("VALUE")
            .help(format!(
                "{} [default: {}]",
                setting.help,
                setting.default_value()
            ));
        command.arg(match setting.short {
            Some(short) => arg.short(short),
            None => arg,
        })
    })
}

fn load(args: &Args, matches: &ArgMatches) -> Result<Config, String> {
    let flags: Vec<(&str, &str)> = SETTINGS
        .iter()
        .filter_map(|setting| {
            let value = matches.get_one::<String>(setting.name)?;
            Some((setting.name, value.as_str()))
        })
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

/// Serves `app` wrapped in the chosen layers.
fn wrap_and_run(server: Server, app: impl Application, config: &Config) {
    // No layer has landed yet: every choice is the bare application.
    debug_assert!(config.middleware.is_empty());
    server.run(app);
}

fn main() -> ExitCode {
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
