//! `eval` and `predict`: similarity sources, selection, scores and submissions.

use anyhow::{Context, Result};
use clap::Args;
use lecr::data;
use std::path::PathBuf;
use std::time::Instant;

/// Token limit of `eval` and `predict` when neither --max-len nor a reranker sets one.
const DEFAULT_MAX_LEN: usize = 96;
/// `eval`'s margin when neither --margin nor the model's lecr.json sets one.
const DEFAULT_MARGIN: f32 = 0.16;

#[derive(Args)]
pub(crate) struct SourceArgs {
    /// Model folder or hub name; `lexical` for the TF-IDF baseline. Repeat to ensemble.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Folder written by `lecr embed --data` (topics/content features). Repeat to ensemble.
    #[arg(long = "features")]
    features: Vec<PathBuf>,
    /// Token limit when embedding with a model [default: 96, or the one the --reranker was
    /// trained at].
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Quantize float models to int8 as they load (see `lecr quantize`).
    #[arg(long)]
    int8: bool,
    /// Round float models' dense layers to bf16 as they load (f32 sums; the AVX512-BF16
    /// kernel where the CPU has it). Inference only.
    #[arg(long, conflicts_with = "int8")]
    bf16: bool,
    /// The prompt topic texts get: a prompt name of the model folder
    /// (config_sentence_transformers.json) or the text itself, "" for none [default: the
    /// folder's query prompt, if any].
    #[arg(long)]
    topic_prompt: Option<String>,
    /// The prompt content texts get, likewise [default: the folder's passage prompt, if any].
    #[arg(long)]
    content_prompt: Option<String>,
    /// Rerank the candidates with this folder of `lecr rerank train` and select on its
    /// probability; the retrievers default to the ones it was trained with.
    #[arg(long)]
    reranker: Option<PathBuf>,
}

impl SourceArgs {
    fn sources(&self) -> Vec<lecr::pipeline::Source> {
        let mut v: Vec<_> = self
            .models
            .iter()
            .map(|m| lecr::pipeline::Source::from_model_arg(m))
            .collect();
        v.extend(
            self.features
                .iter()
                .cloned()
                .map(lecr::pipeline::Source::Features),
        );
        if v.is_empty() {
            eprintln!("note: no --model or --features given: using the lexical baseline");
            v.push(lecr::pipeline::Source::Lexical);
        }
        v
    }
    /// The reranker and the sources it reranks: its own retrievers unless --model is given
    /// (then as many as it was trained with, e.g. an int8 copy of the same model).
    fn reranked(
        &self,
        dir: &std::path::Path,
    ) -> Result<(
        lecr::rerank::model::Reranker,
        Vec<lecr::pipeline::Source>,
        lecr::pipeline::EmbedSettings,
    )> {
        let rr = lecr::rerank::model::Reranker::load(dir)?;
        anyhow::ensure!(
            self.features.is_empty(),
            "--reranker draws candidates from models: give --model, not --features"
        );
        let args = rr.retrievers_for(dir, &self.models)?;
        let sources = args
            .iter()
            .map(|m| lecr::pipeline::Source::from_model_arg(m))
            .collect();
        let max_len = self.max_len.unwrap_or(rr.meta.max_len);
        if let Some(w) = rr.max_len_warning(dir, max_len) {
            eprintln!("warning: {w}");
        }
        let settings = lecr::pipeline::EmbedSettings {
            max_len,
            ..self.settings()
        };
        Ok((rr, sources, settings))
    }
    fn settings(&self) -> lecr::pipeline::EmbedSettings {
        lecr::pipeline::EmbedSettings {
            max_len: self
                .max_len
                .or(self.trained().map(|t| t.1.max_len))
                .unwrap_or(DEFAULT_MAX_LEN),
            batch_size: self.batch_size,
            int8: self.int8,
            bf16: self.bf16,
            topic_prompt: self.topic_prompt.clone(),
            content_prompt: self.content_prompt.clone(),
        }
    }
    /// The validation settings `lecr train` saved with the first `--model` that has them
    /// (its `lecr.json`): eval's and predict's defaults, so a checkpoint scores here as it did
    /// in training.
    fn trained(&self) -> Option<(String, lecr::model::trained::TrainedWith)> {
        self.models
            .iter()
            .filter(|m| m.as_str() != "lexical")
            .find_map(|m| lecr::model::trained::read(m).map(|t| (m.clone(), t)))
    }
    /// Where the token limit comes from, for the settings line.
    fn max_len_origin(&self) -> String {
        match (self.max_len, self.trained()) {
            (Some(_), _) => "--max-len".into(),
            (None, Some((m, _))) => format!("{m}/{}", lecr::model::trained::FILE),
            (None, None) => "default".into(),
        }
    }
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    data: PathBuf,
    /// Validation fold (needs the fold columns of `lecr split`); default: every topic with content.
    #[arg(long)]
    fold: Option<i32>,
    /// Threshold margin (method §8) [default: the one `lecr train` validated the model with
    /// (its lecr.json), else 0.16].
    #[arg(long)]
    margin: Option<f32>,
    /// Sweep margins `start:end:step` and mark the best.
    #[arg(long)]
    margins: Option<String>,
    /// Cut-off of recall@k and precision@k.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Group the table by language or channel.
    #[arg(long, value_enum, default_value = "language")]
    by: lecr::select::GroupBy,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Leave out the topics listed in this file (one id per line), e.g. the topics a curator
    /// reviewed (`lecr feedback simulate` writes such a list).
    #[arg(long)]
    skip_topics: Option<PathBuf>,
    /// Score each --model / --features on its own (not as an ensemble), on the same topics,
    /// and print one table: F2, precision, recall, selected, margin and time per source.
    #[arg(long)]
    compare: bool,
}

#[derive(Args)]
pub(crate) struct PredictArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Threshold margin (0.18 in the original final submission).
    #[arg(long, default_value_t = 0.18)]
    margin: f32,
}

fn parse_margins(s: &str) -> Result<Vec<f32>> {
    let parts: Vec<f32> = s
        .split(':')
        .map(|p| p.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--margins `{s}`: expected start:end:step"))?;
    anyhow::ensure!(
        parts.len() == 3 && parts[2] > 0.0 && parts[1] >= parts[0],
        "--margins `{s}`: expected start:end:step with step > 0"
    );
    let n = ((parts[1] - parts[0]) / parts[2] + 1e-4).floor() as usize;
    Ok((0..=n).map(|i| parts[0] + i as f32 * parts[2]).collect())
}

/// An f32 setting as the decimal the user typed (0.16, not 0.1599999964).
fn round6(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

pub(crate) fn eval(a: EvalArgs) -> Result<i32> {
    let t0 = Instant::now();
    let ds = data::load_dataset(&a.data)?;
    let with: std::collections::HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    let topics: Vec<usize> = match a.fold {
        Some(k) => {
            anyhow::ensure!(
                ds.topics.iter().any(|t| t.fold.is_some()),
                "{}: topics.csv has no fold column; run `lecr split` first or leave out --fold",
                a.data.display()
            );
            (0..ds.topics.len())
                .filter(|&t| ds.topics[t].fold == Some(k) && with.contains(&t))
                .collect()
        }
        None => (0..ds.topics.len()).filter(|t| with.contains(t)).collect(),
    };
    let topics = match &a.skip_topics {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --skip-topics {}", f.display()))?;
            let skip: std::collections::HashSet<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let before = topics.len();
            let kept: Vec<usize> = topics
                .into_iter()
                .filter(|&t| !skip.contains(ds.topics[t].id.as_str()))
                .collect();
            eprintln!(
                "--skip-topics {}: {} of {before} topics left out",
                f.display(),
                before - kept.len()
            );
            kept
        }
        None => topics,
    };
    anyhow::ensure!(!topics.is_empty(), "no topics with content to evaluate");
    let trained = a.src.trained();
    let margin = a
        .margin
        .or(trained.as_ref().map(|t| t.1.margin as f32))
        .unwrap_or(DEFAULT_MARGIN);
    let margins = match &a.margins {
        Some(m) => parse_margins(m)?,
        None => vec![margin],
    };
    if a.src.reranker.is_none() {
        let margin_origin = match (&a.margin, &trained) {
            (Some(_), _) => "--margin".to_string(),
            (None, Some((m, _))) => format!("{m}/{}", lecr::model::trained::FILE),
            (None, None) => "default".into(),
        };
        eprintln!(
            "settings: max_len {} ({}), margin {} ({margin_origin}), {} topics",
            a.src.settings().max_len,
            a.src.max_len_origin(),
            round6(margin),
            topics.len()
        );
        if let Some((m, t)) = &trained {
            if let (Some(f2), Some(fold)) = (t.val_f2, t.fold) {
                eprintln!(
                    "{m}: lecr train validated it at F2 {f2:.4} on fold {fold} ({} topics, \
                     max_len {}, margin {})",
                    t.validation_topics, t.max_len, t.margin
                );
            }
        }
    }
    if let Some(dir) = &a.src.reranker {
        anyhow::ensure!(!a.compare, "--compare and --reranker do not go together");
        return eval_reranked(&a, dir, &ds, &topics);
    }
    if a.compare {
        return eval_compare(&a, &ds, &topics, &margins);
    }
    let sim = lecr::pipeline::similarity(&ds, &a.src.sources(), &topics, &a.src.settings())?;
    let ranked = lecr::select::rank(
        &ds,
        &topics,
        sim.as_ref(),
        lecr::select::threshold::MAX_SELECTED.max(a.k),
    )?;
    let reports: Vec<(f32, lecr::select::score::Report)> = margins
        .iter()
        .map(|&m| {
            (
                m,
                lecr::select::evaluate(&ds, &topics, &ranked, m, a.k, a.by),
            )
        })
        .collect();
    let best = reports
        .iter()
        .max_by(|x, y| x.1.overall.f2.total_cmp(&y.1.overall.f2))
        .map(|r| r.0)
        .unwrap_or(margin);
    if a.json {
        let v = serde_json::json!({
            "source": sim.name(), "fold": a.fold, "topics": topics.len(), "best_margin": round6(best),
            "reports": reports.iter().map(|(m, r)| serde_json::json!({"margin": round6(*m), "report": r})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "source: {}; topics: {} ({}); {:.1}s",
        sim.name(),
        topics.len(),
        a.fold
            .map(|k| format!("fold {k}"))
            .unwrap_or("all with content".into()),
        t0.elapsed().as_secs_f64()
    );
    let by = match a.by {
        lecr::select::GroupBy::Language => "language",
        lecr::select::GroupBy::Channel => "channel",
    };
    if reports.len() == 1 {
        println!("margin {}", reports[0].0);
        print!("{}", reports[0].1.render(by));
    } else {
        println!(
            "{:>7} {:>7} {:>9} {:>7} {:>8}",
            "margin", "F2", "precision", "recall", "selected"
        );
        for (m, r) in &reports {
            let o = &r.overall;
            println!(
                "{m:>7.3} {:>7.4} {:>9.4} {:>7.4} {:>8.2}{}",
                o.f2,
                o.precision,
                o.recall,
                o.mean_selected,
                if *m == best { "  <- best" } else { "" }
            );
        }
        let (_, r) = reports
            .iter()
            .find(|r| r.0 == best)
            .expect("best is one of them");
        println!("\nat the best margin {}:", round6(best));
        print!("{}", r.render(by));
    }
    Ok(0)
}

/// `eval --compare`: each source alone on the same topics, one row each.
fn eval_compare(
    a: &EvalArgs,
    ds: &data::Dataset,
    topics: &[usize],
    margins: &[f32],
) -> Result<i32> {
    let rows = lecr::pipeline::compare(ds, &a.src.sources(), topics, &a.src.settings(), margins)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{} topics ({}), each source on its own; margin: {}",
        topics.len(),
        a.fold
            .map(|k| format!("fold {k}"))
            .unwrap_or("all with content".into()),
        if margins.len() == 1 {
            format!("{}", margins[0])
        } else {
            "the best of the sweep per source".into()
        }
    );
    print!("{}", lecr::pipeline::render_comparison(&rows));
    Ok(0)
}

pub(crate) fn predict(a: PredictArgs) -> Result<i32> {
    let t0 = Instant::now();
    let ds = data::load_dataset(&a.data)?;
    anyhow::ensure!(
        !ds.sample_topics.is_empty(),
        "{}: sample_submission.csv is missing or empty",
        a.data.display()
    );
    let mut topics = Vec::new();
    let mut unknown = 0;
    for id in &ds.sample_topics {
        match ds.topic_index.get(id) {
            Some(&t) => topics.push(Some(t)),
            None => {
                unknown += 1;
                topics.push(None);
            }
        }
    }
    if unknown > 0 {
        eprintln!("warning: {unknown} topic(s) of sample_submission.csv are not in topics.csv; they get an empty list");
    }
    let known: Vec<usize> = topics.iter().flatten().copied().collect();
    let by_lang = lecr::select::contents_by_language(&ds);
    let no_content: usize = known
        .iter()
        .filter(|&&t| !by_lang.contains_key(ds.topics[t].language.as_str()))
        .count();
    if no_content > 0 {
        eprintln!("warning: {no_content} topic(s) are in a language with no content; they get an empty list");
    }
    let (selected, how) = match &a.src.reranker {
        Some(dir) => {
            let (rr, sources, settings) = a.src.reranked(dir)?;
            let (ranked, _) = rerank_topics(&ds, &rr, &sources, &settings, &known)?;
            let sel = rr.meta.selection;
            let selected = ranked
                .iter()
                .map(|r| {
                    let s: Vec<f32> = r.iter().map(|x| x.1).collect();
                    let n = sel.count(&s, lecr::select::threshold::MAX_SELECTED);
                    r[..n].iter().map(|x| x.0).collect()
                })
                .collect();
            (
                selected,
                format!(
                    "the reranker {} over {} ({sel})",
                    dir.display(),
                    rr.meta.retrievers.join(", "),
                ),
            )
        }
        None => {
            let sim = lecr::pipeline::similarity(&ds, &a.src.sources(), &known, &a.src.settings())?;
            let ranked = lecr::select::rank(
                &ds,
                &known,
                sim.as_ref(),
                lecr::select::threshold::MAX_SELECTED,
            )?;
            (
                lecr::select::select(&ranked, a.margin),
                format!("{} (margin {})", sim.name(), a.margin),
            )
        }
    };
    let mut it = selected.into_iter();
    lecr::io::write_atomic(&a.out, |w| {
        let mut w = lecr::io::csv_writer(w);
        w.write_record(["topic_id", "content_ids"])?;
        for (id, t) in ds.sample_topics.iter().zip(&topics) {
            let ids = match t {
                Some(_) => it
                    .next()
                    .unwrap_or_default()
                    .iter()
                    .map(|&c| ds.contents[c as usize].id.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                None => String::new(),
            };
            w.write_record([id.as_str(), &ids])?;
        }
        w.flush()?;
        Ok(())
    })?;
    println!(
        "predicted {} topics with {how} in {:.1}s",
        ds.sample_topics.len(),
        t0.elapsed().as_secs_f64()
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

/// Candidates, features and reranker scores of `topics`: each topic's candidates by
/// probability, best first, and the prepared candidates.
fn rerank_topics(
    ds: &data::Dataset,
    rr: &lecr::rerank::model::Reranker,
    sources: &[lecr::pipeline::Source],
    settings: &lecr::pipeline::EmbedSettings,
    topics: &[usize],
) -> Result<(Vec<lecr::select::Ranked>, lecr::rerank::Prepared)> {
    let (parents, embed) = lecr::rerank::with_parents(ds, topics);
    let rets = lecr::rerank::retrievers(ds, sources, &embed, settings)?;
    let mut prep = lecr::rerank::prepare(ds, &rets, topics, &parents, rr.meta.k)?;
    lecr::rerank::add_cross_feature(rr, ds, &mut prep)?;
    let scores = lecr::rerank::score(rr, ds, &prep)?;
    Ok((prep.ranked_by(&scores), prep))
}

/// `eval --reranker`: the reranker's selection on the topics, with the sweep around it.
fn eval_reranked(
    a: &EvalArgs,
    dir: &std::path::Path,
    ds: &data::Dataset,
    topics: &[usize],
) -> Result<i32> {
    let t0 = Instant::now();
    let (rr, sources, settings) = a.src.reranked(dir)?;
    let (ranked, prep) = rerank_topics(ds, &rr, &sources, &settings, topics)?;
    let truth = lecr::select::truth(ds);
    let saved = rr.meta.selection;
    let cap = lecr::select::threshold::MAX_SELECTED;
    let report =
        lecr::select::evaluate_with(ds, topics, &ranked, a.k, a.by, |s| saved.count(s, cap));
    let (best, best_f2) = lecr::rerank::best_selection(&ranked, topics, &truth);
    let recall = lecr::rerank::candidates::recall_by_language(ds, &prep.candidates, &truth);
    let trained = rr.trained_on_any(topics.iter().map(|&t| ds.topics[t].id.as_str()));
    if a.json {
        let v = serde_json::json!({
            "reranker": dir, "retrievers": rr.meta.retrievers, "fold": a.fold,
            "topics": topics.len(), "selection": saved, "best_selection": best,
            "best_f2": best_f2, "candidate_recall": recall, "out_of_fold": trained,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "reranker {} over {}; topics: {} ({}); {:.1}s",
        dir.display(),
        rr.meta.retrievers.join(", "),
        topics.len(),
        a.fold
            .map(|k| format!("fold {k}"))
            .unwrap_or("all with content".into()),
        t0.elapsed().as_secs_f64()
    );
    if trained {
        println!(
            "note: some of these topics trained the reranker; each is scored by the booster \
             of the other channel half (out of fold)"
        );
    }
    let (mut found, mut total) = (0, 0);
    for (_, f, t) in &recall {
        found += f;
        total += t;
    }
    println!(
        "candidate recall@{}: {:.4} ({})",
        rr.meta.k,
        found as f64 / total.max(1) as f64,
        recall
            .iter()
            .map(|(l, f, t)| format!("{l} {:.4}", *f as f64 / (*t).max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The sweep at the saved relative margin: thresholds around the saved one.
    println!(
        "{:>9} {:>7} {:>7} {:>9} {:>7} {:>8}",
        "threshold", "margin", "F2", "precision", "recall", "selected"
    );
    let mut rows: Vec<lecr::rerank::model::Selection> = (1..=16)
        .map(|i| lecr::rerank::model::Selection {
            threshold: (i * 5) as f32 / 100.0,
            margin: saved.margin,
        })
        .collect();
    rows.extend([saved, best]);
    rows.sort_by(|x, y| {
        x.threshold
            .total_cmp(&y.threshold)
            .then(x.margin.total_cmp(&y.margin))
    });
    rows.dedup();
    for s in rows {
        let r = lecr::select::evaluate_with(ds, topics, &ranked, a.k, a.by, |v| s.count(v, cap));
        let o = &r.overall;
        let mark = match (s == saved, s == best) {
            (true, true) => "  <- saved, best",
            (true, false) => "  <- saved",
            (false, true) => "  <- best of the sweep",
            _ => "",
        };
        println!(
            "{:>9.2} {:>7.2} {:>7.4} {:>9.4} {:>7.4} {:>8.2}{mark}",
            s.threshold, s.margin, o.f2, o.precision, o.recall, o.mean_selected
        );
    }
    let by = match a.by {
        lecr::select::GroupBy::Language => "language",
        lecr::select::GroupBy::Channel => "channel",
    };
    println!("\nat the saved setting ({saved}):");
    print!("{}", report.render(by));
    Ok(0)
}
