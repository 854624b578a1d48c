//! Turning `--model` / `--features` arguments into a similarity source for a set of topics:
//! a model embeds just the topics asked for and the contents of their languages; saved
//! features are matched by id; `lexical` needs no weights. Several sources form an ensemble.

use crate::data::Dataset;
use crate::features;
use crate::model::prompts::Role;
use crate::model::{Embeddings, LoadOptions, SentenceModel};
use crate::select::lexical::LexicalSim;
use crate::select::similarity::{EmbeddingSim, Ensemble, Similarity};
use crate::select::threshold::MAX_SELECTED;
use crate::select::GroupBy;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// One similarity source.
#[derive(Debug, Clone)]
pub enum Source {
    /// `lexical`: character n-gram TF-IDF.
    Lexical,
    /// A model folder or hub name.
    Model(String),
    /// A folder written by `lecr embed --data`.
    Features(PathBuf),
}

impl Source {
    pub fn from_model_arg(s: &str) -> Source {
        if s == "lexical" {
            Source::Lexical
        } else {
            Source::Model(s.to_string())
        }
    }
}

/// Settings for embedding with a model.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    pub max_len: usize,
    pub batch_size: usize,
    /// Quantize float models to int8 as they load.
    pub int8: bool,
    /// Round float models' dense layers to bf16 as they load.
    pub bf16: bool,
    /// `--topic-prompt` / `--content-prompt` (a prompt name or text; "" for none), over the
    /// folder's own prompts.
    pub topic_prompt: Option<String>,
    pub content_prompt: Option<String>,
}

/// The token limit texts are embedded with unless told otherwise (method §2).
pub const EMBED_MAX_LEN: usize = 96;

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            max_len: EMBED_MAX_LEN,
            batch_size: 64,
            int8: false,
            bf16: false,
            topic_prompt: None,
            content_prompt: None,
        }
    }
}

/// Builds the similarity for ranking `topics` (dataset indices).
pub fn similarity(
    ds: &Dataset,
    sources: &[Source],
    topics: &[usize],
    s: &EmbedSettings,
) -> Result<Box<dyn Similarity>> {
    anyhow::ensure!(
        !sources.is_empty(),
        "give at least one --model (or `--model lexical`) or --features"
    );
    let topic_texts = crate::text::topic_texts(&ds.topics);
    let langs: HashSet<&str> = topics
        .iter()
        .map(|&t| ds.topics[t].language.as_str())
        .collect();
    let contents: Vec<usize> = (0..ds.contents.len())
        .filter(|&c| langs.contains(ds.contents[c].language.as_str()))
        .collect();
    let mut members: Vec<Box<dyn Similarity>> = Vec::new();
    for src in sources {
        members.push(match src {
            Source::Lexical => Box::new(LexicalSim {
                topic_texts: topic_texts.clone(),
                content_texts: ds.contents.iter().map(crate::text::content_text).collect(),
            }),
            Source::Model(spec) => {
                let model = SentenceModel::load(
                    spec,
                    &LoadOptions {
                        max_len: Some(s.max_len),
                        int8: s.int8,
                        bf16: s.bf16,
                        topic_prompt: s.topic_prompt.clone(),
                        content_prompt: s.content_prompt.clone(),
                        ..Default::default()
                    },
                )?;
                model_similarity(
                    ds,
                    &model,
                    spec,
                    &topic_texts,
                    topics,
                    &contents,
                    s.batch_size,
                )?
            }
            Source::Features(dir) => Box::new(features_similarity(ds, dir)?),
        });
    }
    Ok(if members.len() == 1 {
        members.pop().expect("one member")
    } else {
        Box::new(Ensemble { members })
    })
}

/// One source scored on its own (`lecr eval --compare`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub source: String,
    /// The margin of this row: the given one, or the best of a sweep.
    pub margin: f32,
    pub f2: f64,
    pub precision: f64,
    pub recall: f64,
    pub mean_selected: f64,
    /// Loading, embedding, ranking and scoring this source.
    pub seconds: f64,
}

/// Scores each source alone on the same `topics`, at the best of `margins`.
pub fn compare(
    ds: &Dataset,
    sources: &[Source],
    topics: &[usize],
    s: &EmbedSettings,
    margins: &[f32],
) -> Result<Vec<Comparison>> {
    anyhow::ensure!(!margins.is_empty(), "no margin to score at");
    let mut rows = Vec::new();
    for src in sources {
        let t0 = std::time::Instant::now();
        let sim = similarity(ds, std::slice::from_ref(src), topics, s)?;
        let ranked = crate::select::rank(ds, topics, sim.as_ref(), MAX_SELECTED)?;
        let (margin, report) = margins
            .iter()
            .map(|&m| {
                let r = crate::select::evaluate(ds, topics, &ranked, m, 10, GroupBy::Language);
                (m, r)
            })
            .max_by(|x, y| x.1.overall.f2.total_cmp(&y.1.overall.f2))
            .expect("at least one margin");
        let o = &report.overall;
        rows.push(Comparison {
            source: sim.name(),
            margin,
            f2: o.f2,
            precision: o.precision,
            recall: o.recall,
            mean_selected: o.mean_selected,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(rows)
}

/// The comparison as a Markdown table (readable in a terminal, pastes into notes).
pub fn render_comparison(rows: &[Comparison]) -> String {
    let mut out = String::from(
        "| source | F2 | precision | recall | selected | margin | time |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.1} | {} | {:.1} s |\n",
            r.source, r.f2, r.precision, r.recall, r.mean_selected, r.margin, r.seconds
        ));
    }
    out
}

/// Embeds `topics` and `contents` (dataset indices) with a loaded model.
pub fn model_similarity(
    ds: &Dataset,
    model: &SentenceModel,
    label: &str,
    topic_texts: &[String],
    topics: &[usize],
    contents: &[usize],
    batch_size: usize,
) -> Result<Box<dyn Similarity>> {
    let tt: Vec<String> = topics.iter().map(|&t| topic_texts[t].clone()).collect();
    let te = model.embed_as(Role::Topic, &tt, batch_size, "topics")?;
    let ct: Vec<String> = contents
        .iter()
        .map(|&c| crate::text::content_text(&ds.contents[c]))
        .collect();
    let ce = model.embed_as(Role::Content, &ct, batch_size, "contents")?;
    Ok(Box::new(EmbeddingSim {
        label: label.to_string(),
        topics: te,
        topic_row: row_map(ds.topics.len(), topics),
        contents: ce,
        content_row: row_map(ds.contents.len(), contents),
    }))
}

fn row_map(n: usize, idx: &[usize]) -> Vec<u32> {
    let mut m = vec![u32::MAX; n];
    for (row, &i) in idx.iter().enumerate() {
        m[i] = row as u32;
    }
    m
}

/// Saved features matched to the dataset by id.
pub fn features_similarity(ds: &Dataset, dir: &std::path::Path) -> Result<EmbeddingSim> {
    let t =
        features::read(dir, "topics").with_context(|| format!("features in {}", dir.display()))?;
    let c =
        features::read(dir, "content").with_context(|| format!("features in {}", dir.display()))?;
    anyhow::ensure!(
        t.emb.dim == c.emb.dim,
        "{}: topic and content dims differ",
        dir.display()
    );
    let map = |ids: &[String], index: &HashMap<String, usize>, n: usize| {
        let mut m = vec![u32::MAX; n];
        for (row, id) in ids.iter().enumerate() {
            if let Some(&i) = index.get(id) {
                m[i] = row as u32;
            }
        }
        m
    };
    Ok(EmbeddingSim {
        label: dir.display().to_string(),
        topic_row: map(&t.ids, &ds.topic_index, ds.topics.len()),
        content_row: map(&c.ids, &ds.content_index, ds.contents.len()),
        topics: t.emb,
        contents: c.emb,
    })
}

/// Embeddings of every topic and content (used by `lecr embed`).
pub fn embed_all(
    ds: &Dataset,
    model: &SentenceModel,
    batch_size: usize,
) -> Result<(Embeddings, Embeddings)> {
    let tt = crate::text::topic_texts(&ds.topics);
    let ct: Vec<String> = ds.contents.iter().map(crate::text::content_text).collect();
    Ok((
        model.embed_as(Role::Topic, &tt, batch_size, "topics")?,
        model.embed_as(Role::Content, &ct, batch_size, "contents")?,
    ))
}
