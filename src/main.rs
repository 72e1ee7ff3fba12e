//! The `turnstile` binary: serves a built-in application over HTTP/1.1,
//! with every layer; `turnstile --help` lists the settings.

fn main() -> std::process::ExitCode {
    turnstile::cli::main()
}
