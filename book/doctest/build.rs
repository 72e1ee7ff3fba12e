//! Turns every chapter of the book into a module whose docs are the chapter,
//! so `cargo test` runs each Rust code block in it as a doc test.

use std::fmt::Write;
use std::path::Path;
use std::{env, fs};

fn main() {
    // At run time, not `env!`: a build script compiled for another checkout
    // of the same sources must still read this one.
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let chapters = Path::new(&manifest_dir).join("../src");
    println!("cargo:rerun-if-changed={}", chapters.display());
    let mut files: Vec<_> = fs::read_dir(&chapters)
        .expect("book/src is readable")
        .map(|entry| entry.expect("book/src entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .filter(|path| path.file_name().is_some_and(|name| name != "SUMMARY.md"))
        .collect();
    files.sort();
    let mut modules = String::new();
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_string_lossy();
        let ident = format!("chapter_{}", stem.replace('-', "_"));
        let path = path.canonicalize().unwrap();
        writeln!(
            modules,
            "#[doc = include_str!({:?})]\npub mod {ident} {{}}",
            path.display().to_string()
        )
        .unwrap();
    }
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("chapters.rs");
    fs::write(out, modules).unwrap();
}
