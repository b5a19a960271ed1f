//! Workspace tidiness, checked by `cargo test` (as rust-analyzer does): every Rust file opens
//! with a `//!` saying what it is; `unsafe` appears only in storage's mmap module (and in the
//! loom model, which stands in for it); no source file grows past the size where it should be
//! split by concept.

use std::path::{Path, PathBuf};

const FILE_LINES_MAX: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "node_modules" | "corpus" | "artifacts")
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 10, "found too few files under {}", root.display());
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = workspace_files()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().trim_start().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a leading `//!`: {missing:?}");
}

#[test]
fn unsafe_lives_only_in_the_mmap_module() {
    let allowed = ["storage/src/mmap.rs", "storage/tests/loom.rs", "idgen/tests/it/tidy.rs"];
    let offenders: Vec<_> = workspace_files()
        .into_iter()
        .filter(|p| !allowed.iter().any(|a| p.ends_with(a)))
        .filter(|p| {
            std::fs::read_to_string(p).unwrap().lines().any(|l| {
                let code = l.split("//").next().unwrap();
                code.contains("unsafe ") || code.contains("unsafe{")
            })
        })
        .collect();
    assert!(offenders.is_empty(), "unsafe outside storage::mmap: {offenders:?}");
}

#[test]
fn source_files_stay_small() {
    let big: Vec<_> = workspace_files()
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().lines().count() > FILE_LINES_MAX)
        .collect();
    assert!(big.is_empty(), "split these by concept: {big:?}");
}
