use std::process::Command;

#[test]
fn binary_runs_the_demo_application() {
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .output()
        .expect("the turnstile binary starts");
    assert!(output.status.success(), "exit status {}", output.status);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("GET / -> 200 OK \"Hello, world!\\n\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("GET /error -> 500 Internal Server Error"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("as /error asks"),
        "error details leaked: {stdout}"
    );
}
