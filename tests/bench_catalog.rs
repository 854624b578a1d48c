//! `lecr bench catalog` at a small N: it builds the store, serves it, publishes new contents,
//! kills the server with SIGKILL and restarts it; the run fails unless every compared topic is
//! answered the same after the restart, and nothing written is lost.

mod common;

/// Bytes per content of an `| index: PART | N bytes per content (..) |` row.
fn per_content(out: &str, part: &str) -> f64 {
    let row = out
        .lines()
        .find(|l| {
            l.starts_with(&format!("| index: {part} |")) || l.starts_with(&format!("| {part}"))
        })
        .unwrap_or_else(|| panic!("no {part} row in:\n{out}"));
    row.split('|')
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_generated_catalog_survives_kill_9_with_the_same_answers() {
    let model = common::minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = common::run_lecr([
        "bench".as_ref(),
        "catalog".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--model".as_ref(),
        "lexical".as_ref(),
        "--int8".as_ref(),
        "--contents".as_ref(),
        "2000".as_ref(),
        "--seconds".as_ref(),
        "1".as_ref(),
        "--fresh".as_ref(),
        "40".as_ref(),
        "--compare".as_ref(),
        "20".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
    ]);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("20/20 topics answered the same"), "{out}");
    assert!(out.contains("40 new contents"), "{out}");
    // The parts the server reports: int8 vectors of 384 values (with a scale and a bound
    // each), a fitted lexical index, ids and metadata, each counted; the exact f32 vectors
    // on disk.
    let vectors = per_content(&out, "vectors");
    assert!((384.0 + 8.0..384.0 * 2.0).contains(&vectors), "{out}");
    assert_eq!(
        per_content(&out, "exact f32 vectors, on disk"),
        384.0 * 4.0,
        "{out}"
    );
    assert!(per_content(&out, "lexical") > 0.0, "{out}");
    assert!(per_content(&out, "metadata") > 32.0, "{out}");
    let all = per_content(&out, "all parts, in memory");
    let sum: f64 = ["vectors", "lexical", "metadata"]
        .iter()
        .map(|p| per_content(&out, p))
        .sum();
    assert!((all - sum).abs() <= 3.0, "{all} vs {sum}");
    // Nothing lost across the kill -9: every generated and published content is stored.
    let s = lecr::store::Store::open(Some(&store)).unwrap();
    assert_eq!(s.count().unwrap(), 2040);
}
