//! The binary's settings from flags, environment and file, as a user meets
//! them: `--print-config`, `--check-config`, and a server configured by file.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::support::Turnstile;

/// A config file under the temp folder, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "turnstile-config-{name}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn turnstile(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(args)
        .env_remove("PORT")
        .env_remove("TURNSTILE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn print_config_shows_every_value_and_its_origin() {
    let file = ConfigFile::new("print", "keepalive = 9\nthreads = 2\n");
    let path = file.0.to_str().unwrap();
    let output = turnstile(
        &["--print-config", "--threads", "3"],
        &[("TURNSTILE_CONFIG", path), ("TURNSTILE_APP", "hello")],
    );
    assert_eq!(output.status.code(), Some(0));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("threads = 3  # flag --threads"),
        "{printed}"
    );
    assert!(
        printed.contains("app = \"hello\"  # environment TURNSTILE_APP"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("keepalive = 9  # file {path}")),
        "{printed}"
    );
    assert!(
        printed.contains("bind = [\"127.0.0.1:8000\"]  # default"),
        "{printed}"
    );
}

#[test]
fn check_config_exits_2_on_a_bad_setting_and_0_on_good_ones() {
    let bad = ConfigFile::new("bad", "threads = 2\nworkerz = 4\n");
    let output = turnstile(&["--check-config", "-c", bad.0.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown setting `workerz`"), "{stderr}");

    let output = turnstile(&["--check-config"], &[("TURNSTILE_THREADS", "many")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid threads \"many\" (from environment TURNSTILE_THREADS)"),
        "{stderr}"
    );

    let missing = turnstile(
        &["--check-config", "-c", "/nonexistent/turnstile.toml"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));

    let good = ConfigFile::new("good", "threads = 2\nmiddleware = \"none\"\n");
    let output = turnstile(&["--check-config", "-c", good.0.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn a_server_configured_by_file_serves_as_told() {
    let file = ConfigFile::new("serve", "bind = \"127.0.0.1:0\"\napp = \"hello\"\n");
    let server = Turnstile::start_exactly(&["--config", file.0.to_str().unwrap()]);
    assert!(server.get("/any/path").ends_with("\r\n\r\nHello, world!\n"));
}
