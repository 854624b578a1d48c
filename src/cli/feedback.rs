//! `feedback export` (curators' decisions from a service store as CSV files) and `feedback
//! simulate` (a curator played from held-back truth, for experiments).

use anyhow::Result;
use clap::{Args, Subcommand};
use lecr::store::decisions::{decided_items, split_decisions};
use lecr::store::{DecisionKind, DecisionOrigin, NewDecision, Store};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum FeedbackCmd {
    /// Write a service store's current decisions as CSV: accepted links as `correlations.csv`
    /// (Kaggle layout, merge-ready), rejected ones as `rejected.csv` (same columns), the whole
    /// log (undos included) as `decisions.csv`, and the Studio topics (with their ancestors)
    /// and stored contents the decisions name as `topics.csv` and `content.csv`.
    Export(ExportArgs),
    /// Play a curator from the truth of a data folder (for experiments): for a share of the
    /// topics of --fold, review a model's top --review recommendations, accepting the true ones
    /// and rejecting the rest, into a store; the reviewed topics' ids go to
    /// `reviewed-topics.txt` beside it (for `lecr eval --skip-topics`).
    Simulate(SimulateArgs),
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The service's --store: its folder (holding lecr.sqlite) or its `postgres://` URL.
    #[arg(long, env = "LECR_STORE", hide_env_values = true)]
    store: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub(crate) struct SimulateArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    fold: i32,
    /// The model whose recommendations the curator reviews.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Share of the fold's topics reviewed.
    #[arg(long, default_value_t = 0.5)]
    share: f64,
    /// Recommendations reviewed per topic.
    #[arg(long, default_value_t = 20)]
    review: usize,
    /// The store to write the decisions into (created if missing).
    #[arg(long)]
    store: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 96)]
    max_len: usize,
}

pub(crate) fn feedback(c: FeedbackCmd) -> Result<i32> {
    match c {
        FeedbackCmd::Export(a) => export(a),
        FeedbackCmd::Simulate(a) => simulate(a),
    }
}

fn export(a: ExportArgs) -> Result<i32> {
    let store = Store::open_existing_at(&lecr::store::Location::parse(&a.store))?;
    let current = store.decisions(None)?;
    let log = store.decision_log()?;
    let (accepted, rejected) = split_decisions(&current);
    for (name, side) in [("correlations.csv", &accepted), ("rejected.csv", &rejected)] {
        lecr::io::write_atomic(&a.out.join(name), |w| {
            let mut w = lecr::io::csv_writer(w);
            w.write_record(["topic_id", "content_ids"])?;
            for (t, cs) in side {
                w.write_record([t.as_str(), &cs.join(" ")])?;
            }
            w.flush()?;
            Ok(())
        })?;
    }
    lecr::io::write_atomic(&a.out.join("decisions.csv"), |w| {
        let mut w = lecr::io::csv_writer(w);
        w.write_record([
            "seq",
            "topic_id",
            "content_id",
            "decision",
            "model",
            "margin",
            "origin",
            "time",
        ])?;
        for d in &log {
            w.write_record([
                d.seq.to_string(),
                d.topic_id.clone(),
                d.content_id.clone(),
                d.kind.to_string(),
                d.model.clone(),
                d.margin.map(|m| m.to_string()).unwrap_or_default(),
                d.origin.as_str().to_string(),
                d.time.clone(),
            ])?;
        }
        w.flush()?;
        Ok(())
    })?;
    // The Studio topics and contents they name, so training can use decisions on topics that
    // are not in its data folder.
    let (topics, contents) = decided_items(&store)?;
    lecr::data::write::write_topics(&a.out.join("topics.csv"), &topics)?;
    lecr::data::write::write_contents(&a.out.join("content.csv"), &contents)?;
    let n = |m: &std::collections::BTreeMap<String, Vec<String>>| -> usize {
        m.values().map(Vec::len).sum()
    };
    println!(
        "{} accepted links ({} topics), {} rejected ({} topics), {} logged decisions",
        n(&accepted),
        accepted.len(),
        n(&rejected),
        rejected.len(),
        log.len()
    );
    println!(
        "{} Studio topics (with ancestors) and {} stored contents named by decisions",
        topics.len(),
        contents.len()
    );
    println!(
        "wrote {} (correlations.csv, rejected.csv, decisions.csv, topics.csv, content.csv)",
        a.out.display()
    );
    Ok(0)
}

fn simulate(a: SimulateArgs) -> Result<i32> {
    anyhow::ensure!(a.share > 0.0 && a.share <= 1.0, "--share must be in (0, 1]");
    let ds = lecr::data::load_dataset(&a.data)?;
    let truth = lecr::select::truth(&ds);
    let mut topics: Vec<usize> = (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(a.fold) && truth.contains_key(&t))
        .collect();
    anyhow::ensure!(
        !topics.is_empty(),
        "{}: fold {} has no topics with links (run `lecr split` first)",
        a.data.display(),
        a.fold
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    topics.shuffle(&mut rng);
    topics.truncate(((topics.len() as f64 * a.share).round() as usize).max(1));
    topics.sort_unstable();
    let sources: Vec<_> = a
        .models
        .iter()
        .map(|m| lecr::pipeline::Source::from_model_arg(m))
        .collect();
    let settings = lecr::pipeline::EmbedSettings {
        max_len: a.max_len,
        ..Default::default()
    };
    let sim = lecr::pipeline::similarity(&ds, &sources, &topics, &settings)?;
    let ranked = lecr::select::rank(&ds, &topics, sim.as_ref(), a.review)?;
    let mut store = Store::open(Some(&a.store))?;
    let model = format!("simulated curator over {}", sim.name());
    let empty = HashSet::new();
    let (mut acc, mut rej) = (0, 0);
    for (&t, r) in topics.iter().zip(&ranked) {
        let tr = truth.get(&t).unwrap_or(&empty);
        for &(c, _) in r {
            let yes = tr.contains(&c);
            store.record_decision(&NewDecision {
                topic_id: &ds.topics[t].id,
                content_id: &ds.contents[c as usize].id,
                kind: if yes {
                    DecisionKind::Accept
                } else {
                    DecisionKind::Reject
                },
                model: &model,
                margin: None,
                origin: DecisionOrigin::Page,
            })?;
            if yes {
                acc += 1;
            } else {
                rej += 1;
            }
        }
    }
    let list = a.store.join("reviewed-topics.txt");
    lecr::io::write_atomic(&list, |w| {
        for &t in &topics {
            writeln!(w, "{}", ds.topics[t].id)?;
        }
        Ok(())
    })?;
    println!(
        "reviewed {} of fold {}'s topics (top {} each): {acc} accepted, {rej} rejected",
        topics.len(),
        a.fold,
        a.review
    );
    println!(
        "wrote {} (lecr.sqlite) and {}",
        a.store.display(),
        list.display()
    );
    Ok(0)
}
