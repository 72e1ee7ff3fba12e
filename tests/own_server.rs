//! A team's own server outside the workspace (`tests/fixtures/own_server`,
//! the README's program): built with cargo, then run as its users would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Turnstile, fetch, wait_until};

/// Builds the fixture (once per test run) and returns its binary.
fn build() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let fixture = root.join("tests/fixtures/own_server");
            // Its own target directory: the workspace's is this test run's.
            let target = root.join("target/fixtures");
            // The workspace's versions, so nothing new is resolved.
            std::fs::copy(root.join("Cargo.lock"), fixture.join("Cargo.lock")).unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .arg("build")
                .arg("--manifest-path")
                .arg(fixture.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the fixture did not build");
            target.join("debug/own-server")
        })
        .clone()
}

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/own_server")
        .join(name)
}

#[test]
fn a_binary_of_ones_own_serves_its_routes_with_the_whole_server() {
    let binary = build();
    let dir = crate::support::TempPath::new("own-server");
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("app.toml");
    std::fs::copy(fixture_file("app.toml"), &config).unwrap();
    let mut command = Command::new(&binary);
    command
        .args(["--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .args(["--workers", "3", "--middleware", "all", "-c"])
        .arg(&config);
    let server = Turnstile::start_command(command);
    server.wait_for_workers(3);
    assert_eq!(
        fetch(server.addr(), "/"),
        Ok((200, "Welcome to the corner bookshop\n".into()))
    );
    assert_eq!(
        fetch(server.addr(), "/books/42"),
        Ok((200, "book 42\n".into()))
    );
    assert_eq!(
        fetch(server.addr(), "/books/7"),
        Ok((200, "book 7\n".into()))
    );
    assert_eq!(
        fetch(server.addr(), "/authors").map(|(status, _)| status),
        Ok(404)
    );

    // Grouped by route: one series for every book, none for a path.
    let page = wait_until(Duration::from_secs(10), || {
        let (_, page) = fetch(server.metrics_addr(), "/metrics").ok()?;
        page.contains(r#"http_route="/books/{id}""#).then_some(page)
    })
    .expect("the metrics name the route");
    assert!(!page.contains("/books/42"), "a raw path became a label");
    assert!(
        page.contains(r#"http_route="(unmatched)""#),
        "the 404 is unmatched"
    );

    // HUP rebuilds the application from the changed [app] table.
    let before = server.workers();
    std::fs::write(
        &config,
        "workers = 3\n\n[app]\nshop = \"the bookshop by the river\"\n",
    )
    .unwrap();
    server.signal("HUP");
    let renamed = wait_until(Duration::from_secs(15), || {
        let now = server.workers();
        let answer = fetch(server.addr(), "/").ok()?;
        (now.len() == 3 && now.is_disjoint(&before) && answer.1.contains("river")).then_some(())
    });
    assert!(renamed.is_some(), "HUP did not serve the new [app] setting");
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn a_binary_of_ones_own_prints_and_checks_its_settings() {
    let binary = build();
    let printed = Command::new(&binary)
        .args(["--print-config", "-c"])
        .arg(fixture_file("app.toml"))
        .args(["--app-setting", "greeting=hello"])
        .env("TURNSTILE_APP__SHOP", "from the environment")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(text.contains("workers = 3  # file"), "{text}");
    assert!(text.contains("[app]"), "{text}");
    assert!(
        text.contains(r#"shop = "from the environment"  # environment TURNSTILE_APP__SHOP"#),
        "{text}"
    );
    assert!(
        text.contains(r#"greeting = "hello"  # flag --app-setting"#),
        "{text}"
    );
    // A bad server setting stops it with 2, as the turnstile binary does.
    let bad = Command::new(&binary)
        .args(["--check-config", "--workers", "many"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(&binary)
        .args(["--check-config", "--app-setting", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
