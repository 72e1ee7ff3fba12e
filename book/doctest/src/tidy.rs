//! Structural checks on the book, run as an ordinary test.
//!
//! mdBook renders whatever it is given: a missing include becomes an error
//! line only at build time, a chapter file left out of `SUMMARY.md` is
//! silently unpublished, and nothing notices a layer without a chapter. Each
//! check here returns the problems it found, one sentence each.

use std::fs;
use std::path::{Path, PathBuf};

/// One entry of `SUMMARY.md`: a chapter title and its file (`None` for a
/// draft chapter, which mdBook lists but does not render).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The title as listed.
    pub title: String,
    /// The file, relative to `book/src`; `None` for a draft.
    pub file: Option<String>,
}

/// Reads the chapter links of a `SUMMARY.md`: every `[Title](file.md)`,
/// nested or not, and `[Title]()` drafts.
pub fn summary_entries(summary: &str) -> Vec<Entry> {
    summary
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start()
                .trim_start_matches(['-', '*'])
                .trim_start();
            let rest = line.strip_prefix('[')?;
            let (title, rest) = rest.split_once("](")?;
            let (file, _) = rest.split_once(')')?;
            Some(Entry {
                title: title.to_owned(),
                file: (!file.is_empty()).then(|| file.to_owned()),
            })
        })
        .collect()
}

/// An `{{#include path}}` or `{{#rustdoc_include path:selector}}` directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Include {
    /// The path, relative to the chapter's folder.
    pub path: String,
    /// An anchor name or a line range, when given.
    pub selector: Option<String>,
}

/// Finds the include directives in a chapter.
pub fn includes(markdown: &str) -> Vec<Include> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else { break };
        let directive = after[..end].trim();
        rest = &after[end + 2..];
        let Some(target) = directive
            .strip_prefix("include ")
            .or_else(|| directive.strip_prefix("rustdoc_include "))
        else {
            continue;
        };
        let target = target.trim();
        let (path, selector) = match target.split_once(':') {
            Some((path, selector)) => (path, Some(selector.to_owned())),
            None => (target, None),
        };
        found.push(Include {
            path: path.to_owned(),
            selector,
        });
    }
    found
}

/// Whether `source` marks the region `anchor` with `ANCHOR:`/`ANCHOR_END:`.
pub fn has_anchor(source: &str, anchor: &str) -> bool {
    let marks = |keyword: &str| {
        source.lines().any(|line| {
            line.split_once(keyword)
                .is_some_and(|(_, name)| name.trim() == anchor)
        })
    };
    marks("ANCHOR:") && marks("ANCHOR_END:")
}

fn is_line_range(selector: &str) -> bool {
    selector
        .split(':')
        .all(|part| part.is_empty() || part.chars().all(|c| c.is_ascii_digit()))
}

/// The chapter every later one refers back to.
const LIFE_OF_A_REQUEST: &str = "life-of-a-request.md";

/// Checks a book: `SUMMARY.md` against the chapter files, every include in
/// every chapter, every chapter after the life of a request pointing back
/// to it, and a chapter for every middleware module. `repo` is the
/// repository root (holding `book/src` and `middleware/src`).
pub fn check(repo: &Path) -> Vec<String> {
    let src = repo.join("book/src");
    let mut problems = Vec::new();
    let summary = match fs::read_to_string(src.join("SUMMARY.md")) {
        Ok(text) => text,
        Err(e) => return vec![format!("cannot read book/src/SUMMARY.md: {e}")],
    };
    let entries = summary_entries(&summary);
    let linked: Vec<&str> = entries.iter().filter_map(|e| e.file.as_deref()).collect();

    for file in &linked {
        if !src.join(file).is_file() {
            problems.push(format!("SUMMARY.md links {file}, which does not exist"));
        }
    }
    for file in markdown_files(&src) {
        if file != "SUMMARY.md" && !linked.contains(&file.as_str()) {
            problems.push(format!(
                "book/src/{file} is not in SUMMARY.md, so mdBook never shows it"
            ));
        }
    }

    let mut chapter_texts = Vec::new();
    let mut after_the_journey = false;
    for file in &linked {
        let path = src.join(file);
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        // Every chapter after "The life of a request" says where it sits
        // on that journey.
        if after_the_journey && !text.contains(&format!("]({LIFE_OF_A_REQUEST})")) {
            problems.push(format!("{file} does not point back to {LIFE_OF_A_REQUEST}"));
        }
        after_the_journey |= *file == LIFE_OF_A_REQUEST;
        let folder = path.parent().unwrap_or(&src).to_path_buf();
        for include in includes(&text) {
            if let Some(problem) = check_include(&folder, &include) {
                problems.push(format!("{file}: {problem}"));
            }
        }
        chapter_texts.push(text);
    }

    for module in middleware_modules(repo) {
        let source = repo.join("middleware/src").join(format!("{module}.rs"));
        let wanted = format!("middleware/src/{module}.rs");
        if !chapter_texts
            .iter()
            .any(|text| includes(text).iter().any(|i| i.path.ends_with(&wanted)))
        {
            problems.push(format!(
                "middleware module `{module}` has no chapter: no chapter includes {wanted}"
            ));
        }
        let text = fs::read_to_string(&source).unwrap_or_default();
        if !text.lines().any(|line| line.trim() == "//! # Example") {
            problems.push(format!(
                "middleware module `{module}` has no `# Example` in its module docs"
            ));
        }
    }
    problems
}

fn check_include(folder: &Path, include: &Include) -> Option<String> {
    let path = folder.join(&include.path);
    let Ok(source) = fs::read_to_string(&path) else {
        return Some(format!("includes {}, which does not exist", include.path));
    };
    match include.selector.as_deref() {
        Some(selector) if !is_line_range(selector) && !has_anchor(&source, selector) => {
            Some(format!(
                "includes {}:{selector}, but that file has no such ANCHOR",
                include.path
            ))
        }
        // mdBook strips anchor comments only from anchored includes.
        None if source.contains("ANCHOR:") => Some(format!(
            "includes all of {}, whose ANCHOR comments would show: wrap the file in an anchor",
            include.path
        )),
        _ => None,
    }
}

fn markdown_files(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect_markdown(src, src, &mut files);
    files.sort();
    files
}

fn collect_markdown(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            collect_markdown(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "md") {
            let relative: PathBuf = path.strip_prefix(root).unwrap().into();
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The modules of `middleware/src` that the layers share rather than
/// being layers: they need no chapter of their own.
const SHARED_MODULES: [&str; 3] = ["redact", "semconv", "text"];

/// The layer modules of `middleware/src`: every `.rs` file but `lib.rs` and
/// the shared ones.
pub fn middleware_modules(repo: &Path) -> Vec<String> {
    let mut modules: Vec<String> = fs::read_dir(repo.join("middleware/src"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "rs"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .filter(|name| name != "lib" && !SHARED_MODULES.contains(&name.as_str()))
                .collect()
        })
        .unwrap_or_default();
    modules.sort();
    modules
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch repository under the system temp folder, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("turnstile-tidy-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("book/src")).unwrap();
            fs::create_dir_all(dir.join("middleware/src")).unwrap();
            Self(dir)
        }

        fn write(&self, path: &str, text: &str) -> &Self {
            fs::write(self.0.join(path), text).unwrap();
            self
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_summary_entries_and_drafts() {
        let entries = summary_entries(
            "# Summary\n\n[Introduction](intro.md)\n\n- [Layers](layers.md)\n  - [Logging]()\n",
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].file.as_deref(), Some("intro.md"));
        assert_eq!(entries[2].title, "Logging");
        assert_eq!(entries[2].file, None);
    }

    #[test]
    fn parses_includes_with_and_without_selectors() {
        let found =
            includes("a {{#include ../x.rs:layer}} b {{#rustdoc_include y.rs}} {{#title T}}");
        assert_eq!(
            found,
            [
                Include {
                    path: "../x.rs".into(),
                    selector: Some("layer".into())
                },
                Include {
                    path: "y.rs".into(),
                    selector: None
                },
            ]
        );
    }

    #[test]
    fn a_clean_book_has_no_problems() {
        let repo = Scratch::new("clean");
        repo.write("book/src/SUMMARY.md", "[Intro](intro.md)\n- [Later]()\n")
            .write(
                "book/src/intro.md",
                "{{#include ../../code.rs:main}}\n{{#include ../../code.rs:1:3}}\n",
            )
            .write(
                "code.rs",
                "// ANCHOR: main\nfn main() {}\n// ANCHOR_END: main\n",
            );
        assert_eq!(check(&repo.0), Vec::<String>::new());
    }

    #[test]
    fn finds_every_kind_of_problem() {
        let repo = Scratch::new("broken");
        repo.write(
            "book/src/SUMMARY.md",
            "[Intro](intro.md)\n[Gone](gone.md)\n",
        )
        .write(
            "book/src/intro.md",
            "{{#include ../../code.rs:missing}}\n{{#include nowhere.rs}}\n{{#include ../../code.rs}}\n",
        )
        .write("book/src/orphan.md", "# Orphan\n")
        .write("code.rs", "// ANCHOR: main\n// ANCHOR_END: main\n")
        .write("middleware/src/lib.rs", "")
        .write("middleware/src/timing.rs", "//! Times requests.\n");
        let problems = check(&repo.0);
        let expect = [
            "SUMMARY.md links gone.md",
            "orphan.md is not in SUMMARY.md",
            "code.rs:missing, but that file has no such ANCHOR",
            "includes nowhere.rs, which does not exist",
            "ANCHOR comments would show",
            "`timing` has no chapter",
            "`timing` has no `# Example`",
        ];
        for needle in expect {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "expected a problem containing {needle:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn chapters_after_the_journey_must_point_back_to_it() {
        let repo = Scratch::new("journey");
        repo.write(
            "book/src/SUMMARY.md",
            "[Intro](intro.md)\n- [Life](life-of-a-request.md)\n- [Good](good.md)\n- [Lost](lost.md)\n",
        )
        .write("book/src/intro.md", "# Intro\n")
        .write("book/src/life-of-a-request.md", "# Life\n")
        .write("book/src/good.md", "See [the life](life-of-a-request.md).\n")
        .write("book/src/lost.md", "# Lost\n");
        assert_eq!(
            check(&repo.0),
            ["lost.md does not point back to life-of-a-request.md"]
        );
    }
}
