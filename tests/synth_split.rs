//! The synthetic corpus and the cross-validation split on generated data.

use lecr::data::split::{content_folds, fold_stats, mean_overlap, random_folds, split_folds};
use lecr::data::synth::{generate, pool_language, SynthConfig};
use lecr::data::validate::validate;
use lecr::data::{load::load_pool, load_dataset};
use std::collections::{HashMap, HashSet};

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        topics: 800,
        contents: 1600,
        seed,
        ..Default::default()
    }
}

#[test]
fn synth_is_deterministic_valid_and_has_the_requested_shape() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    generate(&small(7), a.path()).unwrap();
    generate(&small(7), b.path()).unwrap();
    generate(&small(8), c.path()).unwrap();
    for f in [
        "topics.csv",
        "content.csv",
        "correlations.csv",
        "sample_submission.csv",
    ] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        assert_eq!(
            x,
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs for one seed"
        );
        assert_ne!(
            x,
            std::fs::read(c.path().join(f)).unwrap(),
            "{f} same for two seeds"
        );
    }
    let ds = load_dataset(a.path()).unwrap();
    let report = validate(&ds);
    assert!(report.problems.is_empty(), "{}", report.render(10));
    assert_eq!(ds.topics.len(), 800);
    assert_eq!(ds.contents.len(), 1600);

    let langs: HashSet<&str> = ds.topics.iter().map(|t| t.language.as_str()).collect();
    assert_eq!(langs.len(), 8, "every default language has topics");
    let cats: HashSet<&str> = ds.topics.iter().map(|t| t.category.as_str()).collect();
    assert_eq!(cats.len(), 3);
    let kinds: HashSet<&str> = ds.contents.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds.len(), 5);
    let max_level = ds.topics.iter().filter_map(|t| t.level).max().unwrap();
    assert!((3..=6).contains(&max_level), "depth {max_level}");

    let with_text = ds.contents.iter().filter(|c| !c.text.is_empty()).count() as f64;
    let share = with_text / ds.contents.len() as f64;
    assert!((0.4..0.6).contains(&share), "text share {share}");
    assert!(ds.topics.iter().any(|t| t.description.is_empty()));
    assert!(ds.topics.iter().any(|t| !t.has_content));

    let pairs = ds.pairs();
    let mut per_content: HashMap<usize, HashSet<&str>> = HashMap::new();
    for &(t, c) in &pairs {
        per_content
            .entry(c)
            .or_default()
            .insert(ds.topics[t].channel.as_str());
    }
    assert!(
        per_content.len() < ds.contents.len(),
        "some contents in no topic"
    );
    assert!(
        per_content.values().any(|chs| chs.len() > 1),
        "some contents shared across channels"
    );
    let ppt = pairs.len() as f64 / ds.correlations.len() as f64;
    assert!((2.5..7.0).contains(&ppt), "pairs per topic {ppt}");

    let raw = std::fs::read_to_string(a.path().join("content.csv")).unwrap();
    assert!(raw.contains("\"\""), "some fields need quote escaping");
    assert!(raw.contains("https://"), "some texts carry URLs");
    assert!(ds.contents.iter().any(|c| c.text.contains('\n')));
    assert!(!ds.sample_topics.is_empty());
}

#[test]
fn translated_pools_keep_ids_and_swap_languages() {
    let d = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        switch: true,
        ..small(3)
    };
    generate(&cfg, d.path()).unwrap();
    let ds = load_dataset(d.path()).unwrap();
    assert_eq!(ds.pool_count(), 3);
    for k in 1..=3 {
        let pool = load_pool(d.path(), k).unwrap();
        assert_eq!(pool.topics.len(), ds.topics.len());
        let mut translated = 0;
        for (i, (orig, tr)) in ds.topics.iter().zip(&pool.topics).enumerate() {
            assert_eq!(orig.id, tr.id);
            assert_eq!(orig.language, tr.language);
            let lt = &pool.topic_language_t[i];
            assert_eq!(lt, pool_language(k, &orig.language));
            if lt != &orig.language && orig.parent.is_some() {
                assert_ne!(orig.title, tr.title, "translated title must differ");
                translated += 1;
            } else if lt == &orig.language {
                assert_eq!(orig.title, tr.title);
            }
        }
        assert!(translated > 0);
        for (orig, tr) in ds.contents.iter().zip(&pool.contents) {
            assert_eq!(orig.id, tr.id);
            assert_eq!(orig.kind, tr.kind);
        }
    }
}

#[test]
fn split_places_every_topic_with_content_and_beats_a_random_split() {
    let d = tempfile::tempdir().unwrap();
    generate(&small(11), d.path()).unwrap();
    let ds = load_dataset(d.path()).unwrap();
    let k = 5;
    let folds = split_folds(&ds, k);
    let with: HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    for (t, &f) in folds.topic_fold.iter().enumerate() {
        if with.contains(&t) {
            assert!((0..k as i32).contains(&f), "topic {t} fold {f}");
        } else {
            assert_eq!(f, -1, "a topic without content has fold -1");
        }
    }
    let stats = fold_stats(&ds, &folds);
    let sizes: Vec<usize> = stats.iter().map(|s| s.topics).collect();
    let (lo, hi) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    assert!(hi - lo <= hi / 4 + 8, "folds balanced: {sizes:?}");
    assert_eq!(stats.iter().map(|s| s.topics).sum::<usize>(), with.len());
    let ours = mean_overlap(&stats);
    let random = mean_overlap(&fold_stats(&ds, &random_folds(&ds, k, 1)));
    assert!(ours < random * 0.8, "overlap {ours} vs random {random}");
    // Content folds are the folds of their topics.
    let cf = content_folds(&ds, &folds);
    for (t, c) in ds.pairs() {
        assert!(cf[c].contains(&folds.topic_fold[t]));
    }
    // Deterministic.
    assert_eq!(split_folds(&ds, k), folds);
}

/// A hand-made case: the walk over correlations in file order with known placements.
#[test]
fn split_follows_the_least_overlap_then_least_filled_rule() {
    let d = tempfile::tempdir().unwrap();
    let mut topics =
        String::from("id,title,description,channel,category,level,language,parent,has_content\n");
    for t in ["a", "b", "c", "d", "e", "f"] {
        topics.push_str(&format!("{t},{t},,ch,source,0,en,,True\n"));
    }
    topics.push_str("g,g,,ch,source,0,fr,,True\nh,h,,ch,source,0,en,,False\n");
    let mut content =
        String::from("id,title,description,kind,text,language,copyright_holder,license\n");
    for c in ["x", "y", "z", "w", "v"] {
        content.push_str(&format!("{c},{c},,video,,en,,\n"));
    }
    content.push_str("q,q,,video,,fr,,\n");
    // a-b share x; c alone; d-e share z, e-f share w (so related(e) = {d,e,f}).
    let corr = "topic_id,content_ids\na,x\nb,x y\nc,v\nd,z\ne,z w\nf,w\ng,q\n";
    std::fs::write(d.path().join("topics.csv"), topics).unwrap();
    std::fs::write(d.path().join("content.csv"), content).unwrap();
    std::fs::write(d.path().join("correlations.csv"), corr).unwrap();
    let ds = load_dataset(d.path()).unwrap();
    let f = split_folds(&ds, 3).topic_fold;
    // a: related {a,b} -> fold 0 (all empty, lowest id). b: related {a,b}, fold 0 has 2 of
    // them, folds 1 and 2 none and empty -> fold 1 gets nothing new (both placed).
    // c: {c}: counts 0,0,0; sizes 2,0,0 -> fold 1. d: {d,e} -> fold 2 (sizes 2,1,0).
    // e: {d,e,f}: counts 0,0,2 -> folds 0,1 tie on count; sizes 2,1 -> fold 1 gets f.
    // f: {e,f}: all placed. g (fr) is walked on its own: fold 0. h has no content: -1.
    assert_eq!(f, vec![0, 0, 1, 2, 2, 1, 0, -1]);
}

#[test]
fn studio_ids_are_unique_uuids_in_studios_spellings() {
    let d = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        studio_ids: true,
        ..small(4)
    };
    generate(&cfg, d.path()).unwrap();
    let ds = load_dataset(d.path()).unwrap();
    let dashed =
        regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
            .unwrap();
    let hex = regex::Regex::new("^[0-9a-f]{32}$").unwrap();
    assert!(ds.topics.iter().all(|t| dashed.is_match(&t.id)));
    assert!(ds.contents.iter().all(|c| hex.is_match(&c.id)));
    let mut all: Vec<String> = ds
        .topics
        .iter()
        .map(|t| t.id.replace('-', ""))
        .chain(ds.contents.iter().map(|c| c.id.clone()))
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        n,
        "no id repeats, across topics and contents either"
    );
    // The same corpus otherwise: the titles do not change with the ids.
    let plain = tempfile::tempdir().unwrap();
    generate(&small(4), plain.path()).unwrap();
    let p = load_dataset(plain.path()).unwrap();
    let titles = |d: &lecr::data::Dataset| -> Vec<String> {
        d.contents.iter().map(|c| c.title.clone()).collect()
    };
    assert_eq!(titles(&p), titles(&ds));
}
