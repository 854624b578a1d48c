//! The repository stands alone: a user's clone has no team folder beside it, so nothing the
//! project runs, tests or documents may point into one.

use std::path::{Path, PathBuf};

/// The team folder's relative path, assembled so that this file does not match itself.
fn needle() -> String {
    format!("..{}shared", '/')
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn nothing_refers_to_the_team_drop_box() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for d in ["src", "tests", "scripts", "bench", "docs", ".ci"] {
        files_under(&root.join(d), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("src/main.rs")),
        "the walk found the sources"
    );
    let needle = needle();
    let mut hits = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // binary files
        };
        for (i, line) in text.lines().enumerate() {
            if line.contains(&needle) {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "these refer to {needle}, which a clone does not have (copy the data into the repository):\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_data_tests_and_benchmarks_read_is_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "tests/data/all-MiniLM-L6-v2.reference.json",
        "tests/data/README.md",
        "bench/texts-1024.txt",
        "bench/baseline.py",
        "bench/README.md",
        "docs/method.md",
    ] {
        let p = root.join(f);
        let len = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len();
        assert!(len > 0, "{} is empty", p.display());
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("docs/method.md"), "README links the method");
}
