//! Checks on the book as a whole.

use std::path::Path;

/// The real book passes every structural check.
#[test]
fn book_is_tidy() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let problems = turnstile_book::tidy::check(&repo);
    assert!(
        problems.is_empty(),
        "the book has {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every chapter the SUMMARY plans is listed, drafts included, so the plan
/// of the book cannot lose a chapter silently.
#[test]
fn every_planned_chapter_is_listed() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let summary = std::fs::read_to_string(repo.join("book/src/SUMMARY.md")).unwrap();
    let titles: Vec<String> = turnstile_book::tidy::summary_entries(&summary)
        .into_iter()
        .map(|entry| entry.title)
        .collect();
    for planned in [
        "Introduction",
        "The life of a request",
        "The gateway interface",
        "Speaking HTTP/1.1",
        "Pre-fork workers and threads",
        "Writing a layer",
        "Header injection",
        "Request logging",
        "Timing metrics and Prometheus",
        "Error capture",
        "Tracing with OpenTelemetry",
        "Post-fork reinitialisation",
        "Deployment",
        "Performance",
        "PEP 3333 cross-reference",
        "Glossary",
    ] {
        assert!(
            titles.iter().any(|t| t == planned),
            "SUMMARY.md lacks {planned:?}"
        );
    }
}

/// The README's "Serving your application" block is the program the tests
/// build and run (`tests/fixtures/own_server`), so the README cannot show
/// code that does not work.
#[test]
fn the_readme_serves_what_the_fixture_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let fixture =
        std::fs::read_to_string(repo.join("tests/fixtures/own_server/src/main.rs")).unwrap();
    let section = readme
        .split_once("## Serving your application")
        .expect("the README has the section")
        .1;
    let block = section
        .split_once("```rust,no_run\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section has a rust block")
        .0;
    assert_eq!(
        block, fixture,
        "README.md and tests/fixtures/own_server/src/main.rs differ"
    );
}
