//! `bench encode`, `bench select`, `bench serve`: tables with same-run ratios.

use super::model::read_lines;
use anyhow::Result;
use clap::Subcommand;
use lecr::bench::Weights;
use lecr::data;
use lecr::kernels::int8::WeightBits;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub(crate) enum BenchCmd {
    /// `lecr serve` under load over loopback: seeding time and memory, Studio-shaped recommend
    /// requests at several client counts (throughput, p50/p95/p99, errors), embed-content
    /// throughput, restart time; against the Python baseline (bench/serve_baseline.py) when
    /// --python is given.
    Serve(lecr::bench::serve::ServeBenchOptions),
    /// The served catalog's cost at N contents: a generated corpus written into a store with
    /// random vectors (no encoder time), then `lecr serve` on it: store build and start times,
    /// RSS, the index's bytes per content by part, recommend p50/p99 at 16 clients, how soon
    /// new contents are recommendable, and kill -9 + restart with the same answers.
    Catalog(lecr::bench::catalog::CatalogBenchOptions),
    /// Selection and scoring of a validation fold with precomputed random embeddings: blocked
    /// per-language scoring (lecr) against materialising each language's full matrix.
    Select {
        #[arg(long)]
        data: PathBuf,
        /// Validation fold (data written by `lecr split`); default: every topic with content.
        #[arg(long)]
        fold: Option<i32>,
        /// Score the topics of sample_submission.csv instead (the prediction-time workload).
        #[arg(long, conflicts_with = "fold")]
        sample: bool,
        #[arg(long, default_value_t = 384)]
        dim: usize,
        #[arg(long, default_value_t = 0.16)]
        margin: f32,
        /// Skip the full-matrix baseline.
        #[arg(long)]
        no_baseline: bool,
    },
    /// Inference sentences/s and one InfoNCE training step, against PyTorch when
    /// --torch-python is given (runs bench/baseline.py in the same run).
    Encode {
        #[arg(long)]
        model: String,
        /// Inputs, one per line, first 1,024 used (default: bench/texts-1024.txt, built in).
        #[arg(long)]
        texts: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        max_len: usize,
        #[arg(long, default_value_t = 32)]
        pairs: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Python with torch + transformers (+ onnx, onnxruntime for the ORT rows; see the
        /// header of bench/baseline.py).
        #[arg(long)]
        torch_python: Option<String>,
        /// Figures the baseline script measures (its --only).
        #[arg(long, default_value = "encode,bf16,train-step,ort,ov")]
        baselines: String,
        /// Training step with activation recomputation: this many sequences per forward pass
        /// (the `grad_cache` training setting; 0: one pass). The baseline always runs one pass.
        #[arg(long, default_value_t = 0)]
        grad_cache: usize,
        /// Random weights with the folder's config.json and tokenizer (no model.safetensors
        /// needed): time and memory of an architecture whose weights are not at hand. Only
        /// the training step is measured.
        #[arg(long)]
        random_weights: bool,
        /// Skip the training-step figure (lecr's and the baseline's).
        #[arg(long)]
        no_train_step: bool,
        /// The baseline script (default: bench/baseline.py, built in).
        #[arg(long)]
        torch_script: Option<PathBuf>,
        #[command(flatten)]
        content: ContentRowArgs,
    },
}

/// The content-shaped row of `bench encode`.
#[derive(clap::Args)]
pub(crate) struct ContentRowArgs {
    /// Texts in the content-shaped row (content lengths, up to --content-max-len tokens,
    /// encoded in length order with padding skipped, as `lecr embed` does); 0: no such row.
    #[arg(long, default_value_t = 256)]
    content_texts: usize,
    /// Token cap of the content-shaped row's texts.
    #[arg(long, default_value_t = 512)]
    content_max_len: usize,
    /// Take the content-shaped texts from this data folder's contents (title, description
    /// and full text; every k-th content) instead of the built-in length profile.
    #[arg(long)]
    content_data: Option<PathBuf>,
}

/// The content-shaped row for the float model and, when `int8`, its int8 copy: (label, rate).
fn content_rows(
    model_spec: &str,
    texts: &[String],
    a: &ContentRowArgs,
    c: &lecr::bench::EncodeBenchConfig,
    quantized: bool,
) -> Result<Vec<(String, lecr::bench::content::Rate)>> {
    use lecr::bench::content::{content_ids, describe, rate, ContentSource};
    if a.content_texts == 0 {
        return Ok(Vec::new());
    }
    let float = lecr::bench::load(model_spec, a.content_max_len, Weights::AsStored)?;
    let source = match &a.content_data {
        Some(d) => ContentSource::Data(d),
        None => ContentSource::Profile,
    };
    let ids = content_ids(&float, texts, source, a.content_texts, a.content_max_len)?;
    println!(
        "content-shaped row: {} ({}), batch {}, length order, padding skipped",
        describe(&ids, a.content_max_len),
        match &a.content_data {
            Some(d) => format!("contents of {}", d.display()),
            None => "built-in length profile over the bench texts' words, modelled on LECR's \
                     content kinds, not measured from the real files"
                .to_string(),
        },
        c.batch
    );
    let label = if float.is_int8() {
        "int8 folder"
    } else {
        "f32"
    };
    let mut rows = vec![(label.to_string(), rate(&float, &ids, c.batch, c.runs)?)];
    if quantized && !float.is_int8() {
        drop(float);
        for (label, w) in [
            ("int8", Weights::Int8(WeightBits::Eight)),
            ("bf16", Weights::Bf16),
        ] {
            let q = lecr::bench::load(model_spec, a.content_max_len, w)?;
            rows.push((label.to_string(), rate(&q, &ids, c.batch, c.runs)?));
        }
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn encode(
    model_spec: &str,
    texts_path: Option<&std::path::Path>,
    c: &lecr::bench::EncodeBenchConfig,
    torch_python: Option<&str>,
    torch_script: Option<&std::path::Path>,
    baselines: &str,
    no_train_step: bool,
    content: &ContentRowArgs,
) -> Result<i32> {
    // The built-in inputs and script go to a temporary folder when the baseline needs files.
    let builtin = tempfile::tempdir()?;
    let texts_path = match texts_path {
        Some(p) => p.to_path_buf(),
        None => {
            let p = builtin.path().join("texts-1024.txt");
            std::fs::write(&p, lecr::bench::BENCH_TEXTS)?;
            p
        }
    };
    let texts: Vec<String> = read_lines(&texts_path)?.into_iter().take(1024).collect();
    let model = lecr::bench::load(model_spec, c.max_len, Weights::AsStored)?;
    println!(
        "bench encode: {} texts, batch {}, padded to {} tokens, {} runs, {} threads",
        texts.len(),
        c.batch,
        c.max_len,
        c.runs,
        rayon::current_num_threads(),
    );
    println!("{}", lecr::bench::isa_line());
    let float_label = if model.is_int8() {
        "int8 folder"
    } else {
        "f32"
    };
    // Rates computing all `max_len` positions as the baselines do, then lecr's default of
    // skipping padding rows.
    let rates = |m: &mut lecr::model::SentenceModel| -> Result<(f64, f64)> {
        m.encoder.unpad = false;
        let all = lecr::bench::encode_rate(m, &texts, c)?;
        m.encoder.unpad = true;
        Ok((all, lecr::bench::encode_rate(m, &texts, c)?))
    };
    let mut model = model;
    let (rate, rate_unpadded) = rates(&mut model)?;
    // Int8 with 8-bit weights, then with 7-bit weights (the faster AVX2 kernel; the same
    // speed elsewhere), each with its agreement to the float model. Measured before the
    // training step, which changes the float model's weights; the int8 copies are dropped
    // before it, as they are not part of a training process's memory.
    let mut int8_rows = Vec::new();
    if !model.is_int8() {
        for bits in [WeightBits::Eight, WeightBits::Seven] {
            let mut q = lecr::bench::load(model_spec, c.max_len, Weights::Int8(bits))?;
            let r = rates(&mut q)?;
            int8_rows.push((bits, r, lecr::bench::agreement(&model, &q, &texts)?));
        }
    }
    // bf16 weights and activations (f32 sums), the same pair of rates and its agreement.
    let bf16_row = if model.is_int8() {
        None
    } else {
        let mut b = lecr::bench::load(model_spec, c.max_len, Weights::Bf16)?;
        let r = rates(&mut b)?;
        Some((r, lecr::bench::agreement(&model, &b, &texts)?))
    };
    let content_rates = content_rows(model_spec, &texts, content, c, !model.is_int8())?;
    let short_tokens = {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = model.tokenizer.encode(&refs)?;
        ids.iter().map(Vec::len).sum::<usize>() as f64 / ids.len().max(1) as f64
    };
    let step = if no_train_step || model.is_int8() {
        None
    } else {
        Some(lecr::bench::train_step_time(&model, &texts, c)?)
    };
    // The same step with mixed precision, from the stored weights again.
    let step_bf16 = if step.is_some() {
        let mut m = lecr::bench::load(model_spec, c.max_len, Weights::AsStored)?;
        m.set_train_bf16(true);
        Some(lecr::bench::train_step_time(&m, &texts, c)?)
    } else {
        None
    };
    let baseline = match torch_python {
        Some(py) => {
            let dir = lecr::model::hub::resolve_model(model_spec)?;
            let only = if no_train_step {
                baselines.replace("train-step", "")
            } else {
                baselines.to_string()
            };
            let script = match torch_script {
                Some(p) => p.to_path_buf(),
                None => {
                    let p = builtin.path().join("baseline.py");
                    std::fs::write(&p, lecr::bench::BASELINE_SCRIPT)?;
                    p
                }
            };
            lecr::bench::torch_baseline(py, &script, &dir, &texts_path, c, &only)?
        }
        None => Vec::new(),
    };
    let find = |key: &str| baseline.iter().find(|(n, _)| n == key).map(|(_, v)| *v);
    println!(
        "{:<30} {:>10}   {:<22} {:>10} {:>8}",
        "figure", "lecr", "baseline", "value", "ratio"
    );
    let row = |name: &str, ours: f64, base: &str, better: &str| match find(base) {
        Some(t) => println!(
            "{name:<30} {ours:>10.3}   {base:<22} {t:>10.3} {:>7.2}x  ({better})",
            ours / t
        ),
        None => println!(
            "{name:<30} {ours:>10.3}   {:<22} {:>10} {:>8}",
            "-", "-", "-"
        ),
    };
    let hib = "higher is better";
    let enc = format!("encode/s {float_label}");
    let enc_u = format!("encode/s {float_label}, no pad");
    // Each row against every peer that ran (a peer missing from the script's output is left
    // out; the first one listed is always printed, with `-` when it is missing).
    let rows = |name: &str, ours: f64, peers: &[&str]| {
        for (i, p) in peers.iter().enumerate() {
            if i == 0 || find(p).is_some() {
                row(name, ours, p, hib);
            }
        }
    };
    for (name, r) in [(&enc, rate), (&enc_u, rate_unpadded)] {
        rows(
            name,
            r,
            &["torch encode", "ort-fp32 encode", "ov-fp32 encode"],
        );
    }
    for (bits, (r, ru), _) in &int8_rows {
        let tag = match bits {
            WeightBits::Eight => "int8",
            WeightBits::Seven => "int8 7-bit w",
        };
        let peers = ["ort-int8 encode", "ov-bf16 encode"];
        rows(&format!("encode/s {tag}"), *r, &peers);
        rows(&format!("encode/s {tag}, no pad"), *ru, &peers);
    }
    if let Some(((r, ru), _)) = bf16_row {
        let peers = ["torch-bf16 encode", "ov-bf16 encode"];
        rows("encode/s bf16", r, &peers);
        rows("encode/s bf16, no pad", ru, &peers);
    }
    if let Some((_, (r, _), _)) = int8_rows.first() {
        println!(
            "{:<30} {:>9.2}x   (same run)",
            "int8 / f32 encode",
            r / rate
        );
    }
    if let Some(((r, _), _)) = bf16_row {
        println!(
            "{:<30} {:>9.2}x   (same run, bf16 kernel {})",
            "bf16 / f32 encode",
            r / rate,
            lecr::kernels::bf16::Bf16Kernel::detect().name()
        );
    }
    for (bits, _, (min, mean)) in &int8_rows {
        println!(
            "int8 ({}-bit weights) vs f32 embeddings over the {} texts: min cosine {min:.5}, \
             mean {mean:.5}",
            bits.bits(),
            texts.len()
        );
    }
    if let Some((_, (min, mean))) = bf16_row {
        println!(
            "bf16 vs f32 embeddings over the {} texts: min cosine {min:.5}, mean {mean:.5}",
            texts.len()
        );
    }
    println!(
        "(`no pad`: lecr's default, the rows of padding tokens are skipped; the other rows and \
         the baselines compute all {} positions of every text)",
        c.max_len
    );
    // Per real token, short texts (padding skipped) against the content-shaped ones.
    let short_per_token: Vec<f64> = std::iter::once(rate_unpadded * short_tokens)
        .chain(int8_rows.first().map(|(_, (_, ru), _)| ru * short_tokens))
        .chain(bf16_row.map(|((_, ru), _)| ru * short_tokens))
        .collect();
    for (i, (label, r)) in content_rates.iter().enumerate() {
        println!(
            "{:<30} {:>10.3}   {:<22} {:>10} {:>8}",
            format!("encode/s {label}, content-shaped"),
            r.texts_per_s,
            "-",
            "-",
            "-"
        );
        match short_per_token.get(i) {
            Some(&short) => println!(
                "{:<30} {:>10.0}   {:<22} {short:>10.0} {:>7.2}x  (content / short, same run)",
                format!("tokens/s {label}, content-shaped"),
                r.tokens_per_s,
                "tokens/s short, no pad",
                r.tokens_per_s / short
            ),
            None => println!(
                "{:<30} {:>10.0}",
                format!("tokens/s {label}, content-shaped"),
                r.tokens_per_s
            ),
        }
    }
    if let Some((step, rss)) = step {
        row(
            &format!("train step s ({} pairs)", c.pairs),
            step,
            "torch train-step",
            "lower is better",
        );
        row(
            "train step peak RSS MiB",
            rss,
            "torch train-step-rss",
            "lower is better",
        );
        if let Some((secs, rss_bf16)) = step_bf16 {
            row(
                &format!("train step s bf16 ({} pairs)", c.pairs),
                secs,
                "torch-bf16 train-step",
                "lower is better",
            );
            row(
                "train step bf16 peak RSS MiB",
                rss_bf16,
                "torch-bf16 train-step-rss",
                "lower is better",
            );
            println!(
                "{:<30} {:>9.2}x   (same run, time of the f32 step over the bf16 one, bf16 \
                 kernel {})",
                "bf16 / f32 train step speed",
                step / secs,
                lecr::kernels::bf16::Bf16Kernel::detect().name()
            );
        }
    }
    Ok(0)
}

/// The training step of a randomly initialised model (`--random-weights`): seconds and peak
/// resident memory.
fn random_train_step(
    model_spec: &str,
    texts_path: Option<&std::path::Path>,
    c: &lecr::bench::EncodeBenchConfig,
) -> Result<i32> {
    let texts: Vec<String> = match texts_path {
        Some(p) => read_lines(p)?,
        None => lecr::bench::BENCH_TEXTS
            .lines()
            .map(str::to_string)
            .collect(),
    };
    let model = lecr::bench::load_random(model_spec, c.max_len)?;
    let params: usize = model.vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "bench encode --random-weights: {model_spec} architecture ({:.0}M parameters), {} pairs \
         padded to {} tokens, grad_cache {}, {} runs, {} threads",
        params as f64 / 1e6,
        c.pairs,
        c.max_len,
        c.grad_cache,
        c.runs,
        rayon::current_num_threads()
    );
    println!("{}", lecr::bench::isa_line());
    let (secs, rss) = lecr::bench::train_step_time(&model, &texts, c)?;
    println!(
        "train step s ({} pairs)            {secs:>10.3}\ntrain step peak RSS MiB          {rss:>10.0}",
        c.pairs
    );
    let mut model = model;
    model.set_train_bf16(true);
    let (b_secs, b_rss) = lecr::bench::train_step_time(&model, &texts, c)?;
    println!(
        "train step s bf16 ({} pairs)       {b_secs:>10.3}\ntrain step bf16 peak RSS MiB     {b_rss:>10.0}\n\
         bf16 / f32 train step speed      {:>9.2}x (same run, bf16 kernel {})",
        c.pairs,
        secs / b_secs,
        lecr::kernels::bf16::Bf16Kernel::detect().name()
    );
    Ok(0)
}

fn select(
    dir: &std::path::Path,
    fold: Option<i32>,
    sample: bool,
    dim: usize,
    margin: f32,
    no_baseline: bool,
) -> Result<i32> {
    use lecr::select::{evaluate, rank_blocked, similarity::EmbeddingSim, GroupBy, BLOCK_ELEMENTS};
    let ds = data::load_dataset(dir)?;
    let with: std::collections::HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    let topics: Vec<usize> = if sample {
        ds.sample_topics
            .iter()
            .filter_map(|id| ds.topic_index.get(id).copied())
            .collect()
    } else {
        (0..ds.topics.len())
            .filter(|t| with.contains(t) && fold.is_none_or(|k| ds.topics[*t].fold == Some(k)))
            .collect()
    };
    anyhow::ensure!(
        !topics.is_empty(),
        "no topics to score (is the fold column there?)"
    );
    let sim = EmbeddingSim {
        label: "random".into(),
        topics: lecr::bench::random_unit_rows(ds.topics.len(), dim, 1),
        topic_row: (0..ds.topics.len() as u32).collect(),
        contents: lecr::bench::random_unit_rows(ds.contents.len(), dim, 2),
        content_row: (0..ds.contents.len() as u32).collect(),
    };
    let base_mem = lecr::bench::peak_rss_mib(true);
    println!("bench select: {} topics x {} contents, dim {dim}, margin {margin}; data + embeddings {base_mem:.0} MiB", topics.len(), ds.contents.len());
    let mut rows = Vec::new();
    let variants: Vec<(&str, usize)> = if no_baseline {
        vec![("lecr (blocked)", BLOCK_ELEMENTS)]
    } else {
        vec![
            ("lecr (blocked)", BLOCK_ELEMENTS),
            ("full matrix per language", usize::MAX),
        ]
    };
    for (name, block) in variants {
        lecr::bench::peak_rss_mib(true);
        let t0 = Instant::now();
        let ranked = rank_blocked(&ds, &topics, &sim, 128, block)?;
        let rep = evaluate(&ds, &topics, &ranked, margin, 10, GroupBy::Language);
        let secs = t0.elapsed().as_secs_f64();
        let peak = lecr::bench::peak_rss_mib(true);
        rows.push((name, secs, peak, rep.overall.f2));
    }
    println!(
        "{:<26} {:>9} {:>12} {:>10}",
        "variant", "seconds", "peak MiB", "F2"
    );
    for (n, s, m, f) in &rows {
        println!("{n:<26} {s:>9.2} {m:>12.0} {f:>10.5}");
    }
    if rows.len() == 2 {
        println!(
            "ratio lecr / full: time {:.2}x, peak memory {:.2}x",
            rows[0].1 / rows[1].1,
            rows[0].2 / rows[1].2
        );
    }
    Ok(0)
}

pub(crate) fn bench(b: BenchCmd) -> Result<i32> {
    match b {
        BenchCmd::Select {
            data,
            fold,
            sample,
            dim,
            margin,
            no_baseline,
        } => select(&data, fold, sample, dim, margin, no_baseline),
        BenchCmd::Serve(o) => {
            lecr::bench::serve::run(&o)?;
            Ok(0)
        }
        BenchCmd::Catalog(o) => {
            lecr::bench::catalog::run(&o)?;
            Ok(0)
        }
        BenchCmd::Encode {
            model,
            texts,
            batch,
            max_len,
            pairs,
            runs,
            torch_python,
            torch_script,
            baselines,
            no_train_step,
            grad_cache,
            random_weights,
            content,
        } => {
            let c = lecr::bench::EncodeBenchConfig {
                batch,
                max_len,
                pairs,
                runs,
                grad_cache,
            };
            if random_weights {
                return random_train_step(&model, texts.as_deref(), &c);
            }
            encode(
                &model,
                texts.as_deref(),
                &c,
                torch_python.as_deref(),
                torch_script.as_deref(),
                &baselines,
                no_train_step,
                &content,
            )
        }
    }
}
