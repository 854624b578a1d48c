//! `lecr bench catalog` at a small N: it builds the store, serves it, publishes new contents,
//! kills the server with SIGKILL and restarts it; the run fails unless every compared topic is
//! answered the same after the restart, and nothing written is lost. With `--vectors model`
//! the contents get the model's own vectors, and the PostgreSQL index mode finds their exact
//! neighbours and names the plan it ran.

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

#[test]
fn model_vectors_have_the_texts_structure_and_random_ones_are_reproducible() {
    use lecr::bench::catalog_vectors::Vectors;
    use lecr::serve::embedder::Role;
    let model = common::minilm_dir().display().to_string();
    let specs = [model, "lexical".to_string()];
    let texts: Vec<String> = [
        "fractions and decimals on the number line",
        "fractions and decimals on a number line",
        "the water cycle: evaporation and rain",
    ]
    .map(String::from)
    .to_vec();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut m = Vectors::new("model", 384, 7, &specs, true, 96).unwrap();
    assert!(m.is_model());
    let v = m.embed(Role::Content, &texts).unwrap();
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((dot(x, x) - 1.0).abs() < 1e-3);
    }
    assert!(
        dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2,
        "{} vs {}",
        dot(&v[0], &v[1]),
        dot(&v[0], &v[2])
    );
    let err = Vectors::new("model", 100, 7, &specs, true, 96)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("give 384 values, the server 100"), "{err}");

    let mut r1 = Vectors::new("random", 16, 7, &specs, true, 96).unwrap();
    let mut r2 = Vectors::new("random", 16, 7, &specs, true, 96).unwrap();
    let a = r1.embed(Role::Content, &texts).unwrap();
    assert_eq!(
        a,
        r2.embed(Role::Content, &texts).unwrap(),
        "one seed, one catalog"
    );
    assert!(a
        .iter()
        .all(|x| x.len() == 16 && (dot(x, x) - 1.0).abs() < 1e-4));
    assert_ne!(a[0], a[1], "texts do not shape random vectors");
}

#[test]
fn the_postgres_index_finds_the_model_vectors_neighbours_and_says_how() {
    let model = common::minilm_dir();
    let out = common::run_lecr([
        "bench".as_ref(),
        "catalog".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--int8".as_ref(),
        "--index".as_ref(),
        "postgres".as_ref(),
        "--vectors".as_ref(),
        "model".as_ref(),
        // Graphs for the languages of 500 contents or more, exact scans for the others.
        "--hnsw-from".as_ref(),
        "500".as_ref(),
        "--contents".as_ref(),
        "3000".as_ref(),
        "--seconds".as_ref(),
        "1".as_ref(),
        "--fresh".as_ref(),
        "20".as_ref(),
        "--compare".as_ref(),
        "10".as_ref(),
    ]);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("model vectors"), "{out}");
    assert!(out.contains("10/10 topics answered the same"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("recall@100 against exact search, model vectors"))
        .unwrap_or_else(|| panic!("no recall row in:\n{out}"));
    let recall: f64 = row
        .split('|')
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(recall >= 0.98, "{row}");
    // The plan the database ran is named: how many languages walked their graph, which
    // were scanned exactly.
    assert!(row.contains("HNSW graphs in "), "{row}");
    assert!(row.contains("counting ties within 1e-4"), "{row}");
}
