//! The second stage: candidate features by hand on a tiny tree, no feature reading the scored
//! topics' links, a reranker that beats its retriever on held-back topics, save → load.

use lecr::data::schema::{Content, Correlation, Topic};
use lecr::data::split::split_folds;
use lecr::data::synth::{generate, SynthConfig};
use lecr::data::{load_dataset, Dataset};
use lecr::pipeline::{EmbedSettings, Source};
use lecr::rerank::model::{BoostSettings, Reranker};
use lecr::rerank::{self, TrainOptions};
use lecr::select::lexical::LexicalSim;
use lecr::select::similarity::{BlockScorer, Similarity};

fn topic(id: &str, title: &str, parent: Option<&str>, channel: &str, level: u32) -> Topic {
    Topic {
        id: id.into(),
        title: title.into(),
        description: String::new(),
        channel: channel.into(),
        category: "aligned".into(),
        level: Some(level),
        language: "en".into(),
        parent: parent.map(Into::into),
        has_content: true,
        fold: None,
        line: 0,
    }
}

fn content(id: &str, title: &str, kind: &str) -> Content {
    Content {
        id: id.into(),
        title: title.into(),
        description: String::new(),
        kind: kind.into(),
        text: String::new(),
        language: "en".into(),
        copyright_holder: String::new(),
        license: String::new(),
        line: 0,
    }
}

/// Root R with children T1 and T2 (channel A), topic U in channel B. Known links: R→c2,
/// T2→c1, U→c1. T1's own link (T1→c3) must stay hidden when T1 is scored.
fn tiny() -> Dataset {
    let topics = vec![
        topic("R", "numbers", None, "A", 0),
        topic("T1", "adding fractions", Some("R"), "A", 1),
        topic("T2", "fractions", Some("R"), "A", 1),
        topic("U", "other", None, "B", 0),
    ];
    let contents = vec![
        content("c0", "adding big fractions", "video"),
        content("c1", "fractions", "exercise"),
        content("c2", "counting", "document"),
        content("c3", "volcanoes", "video"),
    ];
    let links = [("R", "c2"), ("T2", "c1"), ("U", "c1"), ("T1", "c3")];
    let correlations = links
        .iter()
        .map(|(t, c)| Correlation {
            topic_id: t.to_string(),
            content_ids: vec![c.to_string()],
            fold: None,
            line: 0,
        })
        .collect();
    let topic_index = topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let content_index = contents
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    Dataset {
        topics,
        contents,
        correlations,
        topic_index,
        content_index,
        ..Default::default()
    }
}

/// A retriever with fixed similarities: `table[topic][content]`.
struct Fixed(Vec<Vec<f32>>);
struct FixedBlock<'a>(&'a Fixed, Vec<usize>);

impl Similarity for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn against<'a>(&'a self, contents: &[usize]) -> anyhow::Result<Box<dyn BlockScorer + 'a>> {
        Ok(Box::new(FixedBlock(self, contents.to_vec())))
    }
}

impl BlockScorer for FixedBlock<'_> {
    fn block(&self, topics: &[usize]) -> anyhow::Result<Vec<f32>> {
        Ok(topics
            .iter()
            .flat_map(|&t| self.1.iter().map(move |&c| self.0 .0[t][c]))
            .collect())
    }
}

#[test]
fn features_by_hand_on_a_tiny_tree() {
    let ds = tiny();
    let sims = Fixed(vec![
        vec![0.1, 0.2, 0.6, 0.0], // R (T1's parent)
        vec![0.8, 0.4, 0.3, 0.2], // T1
        vec![0.0; 4],
        vec![0.0; 4],
    ]);
    let rets: Vec<Box<dyn Similarity>> = vec![Box::new(sims)];
    // T1 scored, K = 3: candidates c0 (0.8), c1 (0.4), c2 (0.3); c3 (0.2) is left out.
    let prep = rerank::prepare(&ds, &rets, &[1], &[Some(0)], 3).unwrap();
    let got: Vec<u32> = prep.candidates[0]
        .candidates
        .iter()
        .map(|c| c.content)
        .collect();
    assert_eq!(got, vec![0, 1, 2]);
    let f = &prep.features;
    assert_eq!(f.rows, 3);
    let v = |row: usize, name: &str| f.get(row, name).unwrap_or_else(|| panic!("{name}"));
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    // Similarity columns: c1 (row 1) has sim 0.4, rank 2, best 0.8; the k-th best (10th, but
    // only 4 contents) is the worst, 0.2; the parent R scores c1 at 0.2.
    assert!(close(v(1, "r1.sim"), 0.4));
    assert_eq!(v(1, "r1.rank"), 2.0);
    assert!(close(v(1, "r1.rel_best"), 0.5));
    assert!(close(v(1, "r1.gap_best"), 0.4));
    assert!(close(v(1, "r1.gap_k"), 0.2));
    assert!(close(v(1, "r1.parent_sim"), 0.2));
    assert_eq!(v(0, "cand.count"), 3.0);
    assert_eq!(v(0, "cand.proposed_by"), 1.0);
    // Texts: "adding fractions" vs "adding big fractions": 2 shared words, Jaccard 2/3.
    assert_eq!(v(0, "title.shared_words"), 2.0);
    assert!(close(v(0, "title.jaccard"), 2.0 / 3.0));
    assert_eq!(v(1, "title.shared_words"), 1.0);
    assert!(close(v(1, "title.jaccard"), 0.5));
    assert_eq!(v(0, "topic.title_len"), 16.0);
    assert_eq!(v(0, "content.title_len"), 20.0);
    assert_eq!(v(0, "topic.level"), 1.0);
    assert_eq!(v(0, "topic.children"), 0.0);
    // Kinds index schema::KINDS: document 0, video 1, exercise 2.
    assert_eq!(v(0, "content.kind"), 1.0);
    assert_eq!(v(1, "content.kind"), 2.0);
    assert_eq!(v(2, "content.kind"), 0.0);
    // Tree context: c1 is linked to T2 (a sibling, same channel) and U (channel B);
    // c2 to the parent R; c0 to nothing. T1's own link to c3 is not among the candidates
    // and is never counted.
    assert_eq!(v(1, "ctx.content_topics"), 2.0);
    assert_eq!(v(1, "ctx.sibling_links"), 1.0);
    assert_eq!(v(1, "ctx.channel_links"), 1.0);
    assert_eq!(v(1, "ctx.other_channel_links"), 1.0);
    assert_eq!(v(1, "ctx.parent_linked"), 0.0);
    assert_eq!(v(2, "ctx.parent_linked"), 1.0);
    assert_eq!(v(2, "ctx.content_topics"), 1.0);
    assert_eq!(v(0, "ctx.content_topics"), 0.0);
    assert_eq!(v(0, "ctx.sibling_links"), 0.0);
}

#[test]
fn scored_topics_links_never_reach_their_features() {
    let ds = tiny();
    let sims = Fixed(vec![vec![0.5, 0.4, 0.3, 0.2]; 4]);
    let rets: Vec<Box<dyn Similarity>> = vec![Box::new(sims)];
    // Scoring T1 and T2 together hides both topics' links: T2→c1 no longer counts for T1.
    let prep = rerank::prepare(&ds, &rets, &[1, 2], &[Some(0), Some(0)], 4).unwrap();
    let row_c1 = 1; // T1's candidates are c0, c1, c2, c3 in rank order
    assert_eq!(prep.features.get(row_c1, "ctx.sibling_links"), Some(0.0));
    assert_eq!(prep.features.get(row_c1, "ctx.content_topics"), Some(1.0));
}

/// A generated corpus with method §3 folds, loaded.
fn corpus(topics: usize, contents: usize, seed: u64) -> (tempfile::TempDir, Dataset) {
    let d = tempfile::tempdir().unwrap();
    generate(
        &SynthConfig {
            topics,
            contents,
            languages: vec!["en".into(), "es".into()],
            seed,
            ..Default::default()
        },
        d.path(),
    )
    .unwrap();
    let mut ds = load_dataset(d.path()).unwrap();
    let folds = split_folds(&ds, 4);
    for (t, f) in folds.topic_fold.iter().enumerate() {
        ds.topics[t].fold = (*f >= 0).then_some(*f);
    }
    (d, ds)
}

fn fold_topics(ds: &Dataset, fold: i32) -> Vec<usize> {
    let truth = lecr::select::truth(ds);
    (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(fold) && truth.contains_key(&t))
        .collect()
}

fn lexical(ds: &Dataset) -> Vec<Box<dyn Similarity>> {
    vec![Box::new(LexicalSim {
        topic_texts: lecr::text::topic_texts(&ds.topics),
        content_texts: ds.contents.iter().map(lecr::text::content_text).collect(),
    })]
}

#[test]
fn changing_validation_links_leaves_features_identical() {
    let (_d, ds) = corpus(300, 600, 11);
    let topics = fold_topics(&ds, 0);
    let (parents, _) = rerank::with_parents(&ds, &topics);
    let before = rerank::prepare(&ds, &lexical(&ds), &topics, &parents, 20).unwrap();
    // Rewrite every validation topic's links: drop them all, link each to other contents.
    let mut changed = ds.clone();
    let val: std::collections::HashSet<&str> =
        topics.iter().map(|&t| ds.topics[t].id.as_str()).collect();
    let mut n = 0;
    for c in changed.correlations.iter_mut() {
        if val.contains(c.topic_id.as_str()) {
            c.content_ids = vec![ds.contents[n % ds.contents.len()].id.clone()];
            n += 7;
        }
    }
    assert!(n > 0);
    assert_ne!(
        before.labels(&ds),
        before.labels(&changed),
        "labels must move"
    );
    let after = rerank::prepare(&changed, &lexical(&changed), &topics, &parents, 20).unwrap();
    assert!(before.candidates == after.candidates, "candidates moved");
    assert!(before.features == after.features, "features moved");
    // A training topic's links do reach the features: changing them changes something.
    let mut train_changed = ds.clone();
    for c in train_changed.correlations.iter_mut() {
        if !val.contains(c.topic_id.as_str()) {
            c.content_ids.clear();
        }
    }
    let cut = rerank::prepare(&train_changed, &lexical(&ds), &topics, &parents, 20).unwrap();
    assert!(before.features != cut.features, "training links must count");
}

#[test]
fn reranker_beats_its_retriever_on_held_back_topics_and_reloads_identically() {
    let (_d, ds) = corpus(900, 1800, 3);
    let opts = TrainOptions {
        k: 30,
        boost: BoostSettings {
            trees: 120,
            ..Default::default()
        },
        // Some topics also trained without tree context (the path `--cold-share` takes).
        cold_share: 0.3,
        cross: None,
    };
    let (rr, report) = rerank::train(
        &ds,
        &[Source::Lexical],
        &["lexical".into()],
        &EmbedSettings::default(),
        0,
        &opts,
    )
    .unwrap();
    // Out of fold on the training fold: the reranker row beats the retriever row.
    let f2 = |m: &str| {
        report
            .methods
            .iter()
            .find(|x| x.method.starts_with(m))
            .unwrap()
            .report
            .overall
            .f2
    };
    assert!(
        f2("reranker") > f2("lexical") + 0.02,
        "{}",
        report.render(30)
    );
    // Without tree context (a new channel), it still beats the retriever.
    assert!(
        f2("reranker (out of fold), new-channel") > f2("lexical") + 0.02,
        "{}",
        report.render(30)
    );
    assert_eq!(rr.meta.cold_share, 0.3);
    // Topics it never saw (fold 1): the main booster's selection against the lexical
    // retriever at its own best margin on those same topics.
    let topics = fold_topics(&ds, 1);
    let truth = lecr::select::truth(&ds);
    let (parents, _) = rerank::with_parents(&ds, &topics);
    let prep = rerank::prepare(&ds, &lexical(&ds), &topics, &parents, rr.meta.k).unwrap();
    let scores = rerank::score(&rr, &ds, &prep).unwrap();
    let ranked = prep.ranked_by(&scores);
    let sel = rr.meta.selection;
    let reranked = lecr::select::evaluate_with(
        &ds,
        &topics,
        &ranked,
        10,
        lecr::select::GroupBy::Language,
        |s| sel.count(s, 128),
    );
    let lex_ranked = lecr::select::rank(&ds, &topics, lexical(&ds)[0].as_ref(), 128).unwrap();
    let (_, lex_best) = rerank::best_margin(&lex_ranked, &topics, &truth);
    assert!(
        reranked.overall.f2 > lex_best + 0.02,
        "reranker {} vs lexical {lex_best}",
        reranked.overall.f2
    );

    // Save → load gives the same scores, bit for bit, and the same metadata.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rr");
    rr.save(&out).unwrap();
    let back = Reranker::load(&out).unwrap();
    assert_eq!(back.meta, rr.meta);
    assert_eq!(rerank::score(&back, &ds, &prep).unwrap(), scores);
    let imp = std::fs::read_to_string(out.join("importances.csv")).unwrap();
    assert_eq!(imp.lines().count(), rr.meta.features.len() + 1);
    // Training topics are scored by the half that did not see them.
    let id = &rr.meta.halves[0][0];
    assert!(std::ptr::eq(rr.booster_for(id), &rr.halves[1]));
    assert!(std::ptr::eq(rr.booster_for("not-a-topic"), &rr.full));
}

#[test]
fn a_folder_that_is_not_a_reranker_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Reranker::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("not a reranker folder"), "{err}");
    std::fs::write(dir.path().join("reranker.json"), "{").unwrap();
    let err = format!("{:#}", Reranker::load(dir.path()).err().unwrap());
    assert!(err.contains("reranker.json"), "{err}");
}
