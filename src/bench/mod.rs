//! `lecr bench encode`: sentences/s of inference and the time of one training step, measured
//! the way `bench/baseline.py` measures PyTorch and ONNX Runtime, optionally running that script
//! in the same invocation and printing ratios.

pub mod catalog;
pub mod catalog_pg;
pub mod catalog_vectors;
pub mod content;
pub mod serve;
pub mod serve_rerank;

use crate::model::{LoadOptions, SentenceModel};
use crate::train::adamw::{AdamW, AdamWParams};
use crate::train::loss::info_nce;
use anyhow::{Context, Result};
use candle_core::Var;
use std::path::Path;
use std::time::Instant;

/// The benchmark inputs and the baseline script (`bench/`), built into the binary so that
/// `lecr bench encode` runs from any folder.
pub const BENCH_TEXTS: &str = include_str!("../../bench/texts-1024.txt");
pub const BASELINE_SCRIPT: &str = include_str!("../../bench/baseline.py");

#[derive(Debug, Clone)]
pub struct EncodeBenchConfig {
    pub batch: usize,
    pub max_len: usize,
    pub pairs: usize,
    pub runs: usize,
    /// Sequences per pass of the training step's activation recomputation (0: one pass).
    pub grad_cache: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Sentences per second over `texts` (batches of `batch`, padded to `max_len`), median of runs.
pub fn encode_rate(model: &SentenceModel, texts: &[String], c: &EncodeBenchConfig) -> Result<f64> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = model.tokenizer.encode(&refs)?;
    model.forward_ids(&ids[..c.batch.min(ids.len())], Some(c.max_len), false)?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..c.runs {
        let t0 = Instant::now();
        for b in ids.chunks(c.batch) {
            let out = model.forward_ids(b, Some(c.max_len), false)?;
            std::hint::black_box(out.to_vec2::<f32>()?);
        }
        rates.push(texts.len() as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// Seconds of one forward + backward + AdamW step of a symmetric InfoNCE batch (`pairs` topics
/// = the first lines, contents = the next), median over runs after one warm-up step; and the
/// process's peak resident memory (MiB) while the steps ran (mark reset at the start, as the
/// baseline script does for PyTorch).
pub fn train_step_time(
    model: &SentenceModel,
    texts: &[String],
    c: &EncodeBenchConfig,
) -> Result<(f64, f64)> {
    peak_rss_mib(true);
    anyhow::ensure!(
        texts.len() >= 2 * c.pairs,
        "need at least {} texts",
        2 * c.pairs
    );
    let refs: Vec<&str> = texts[..2 * c.pairs].iter().map(String::as_str).collect();
    let ids = model.tokenizer.encode(&refs)?;
    let scale = Var::new(&[(1.0f32 / 0.07).ln()], &model.device)?;
    let mut vars = model.vars();
    vars.push(scale.clone());
    let mut opt = AdamW::new(
        vars,
        AdamWParams {
            lr: 2e-5,
            ..Default::default()
        },
    );
    let mut times = Vec::new();
    for _ in 0..=c.runs {
        let t0 = Instant::now();
        if c.grad_cache > 0 {
            // Padded to max_len like the one-pass step: the same work, in chunks.
            let (_, grads) = crate::train::grad_cache::info_nce_grad_cache(
                model,
                &ids,
                c.pairs,
                &scale,
                0.1,
                c.grad_cache,
                Some(c.max_len),
            )?;
            opt.step(&grads)?;
        } else {
            let emb = model.forward_ids(&ids, Some(c.max_len), true)?;
            let loss = info_nce(
                &emb.narrow(0, 0, c.pairs)?,
                &emb.narrow(0, c.pairs, c.pairs)?,
                scale.as_tensor(),
                0.1,
            )?;
            let grads = loss.backward()?;
            opt.step(&grads)?;
        }
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok((median(times[1..].to_vec()), peak_rss_mib(false)))
}

/// Runs the PyTorch baseline script and returns its `RESULT name figure=value` lines.
pub fn torch_baseline(
    python: &str,
    script: &Path,
    model: &Path,
    texts: &Path,
    c: &EncodeBenchConfig,
    only: &str,
) -> Result<Vec<(String, f64)>> {
    let out = std::process::Command::new(python)
        .arg(script)
        .args([
            "--model",
            &model.display().to_string(),
            "--texts",
            &texts.display().to_string(),
        ])
        .args([
            "--batch",
            &c.batch.to_string(),
            "--max-len",
            &c.max_len.to_string(),
        ])
        .args([
            "--pairs",
            &c.pairs.to_string(),
            "--runs",
            &c.runs.to_string(),
            "--threads",
            &rayon::current_num_threads().to_string(),
        ])
        .args(["--only", only])
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "the baseline script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut res = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `RESULT torch encode sentences_per_s=83.3`: words, then the first key=value.
        let Some(rest) = line.strip_prefix("RESULT ") else {
            // Its header (versions, the instruction set PyTorch chose) belongs in the table.
            if !line.trim().is_empty() {
                println!("baseline: {line}");
            }
            continue;
        };
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.contains('='))
            .collect();
        let value = rest
            .split_whitespace()
            .find_map(|w| w.split_once('='))
            .and_then(|(_, v)| v.parse::<f64>().ok());
        if let Some(v) = value {
            res.push((words.join(" "), v));
        }
    }
    Ok(res)
}

/// The instruction sets lecr's rows ran with: its own kernels, the int8 kernel and the float
/// matrix products (gemm picks AVX-512 only in builds with the `avx512` feature).
pub fn isa_line() -> String {
    let cpu = crate::kernels::isa::CpuFeatures::detect();
    let gemm = if cfg!(feature = "avx512") && cpu.avx512 {
        "AVX-512"
    } else if cpu.avx2_fma {
        "AVX2+FMA"
    } else {
        "portable"
    };
    format!(
        "lecr ISA: {}; int8 kernel {}; bf16 kernel {}; float matrix products (gemm) {gemm}",
        crate::kernels::isa::describe(),
        crate::kernels::int8::Int8Kernel::detect().name(),
        crate::kernels::bf16::Bf16Kernel::detect().name()
    )
}

/// A model with the folder's architecture (`config.json`) and tokenizer but random weights:
/// memory and time of models whose weights are not at hand (e.g. LaBSE-sized, offline).
pub fn load_random(model: &str, max_len: usize) -> Result<SentenceModel> {
    let dir = crate::model::hub::resolve_model(model)?;
    let cfg: crate::model::config::EncoderConfig =
        crate::model::config::read_json(&dir.join("config.json"))?;
    SentenceModel::random(&cfg, &dir.join("tokenizer.json"), max_len, 1)
}

/// The weights a benchmark row runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As the folder holds them (f32, or an int8 folder's int8).
    AsStored,
    /// Quantized to int8 at load, with this many bits per weight.
    Int8(crate::kernels::int8::WeightBits),
    /// Rounded to bf16 at load (the bf16 kernels).
    Bf16,
}

/// Loads the model for the benchmark (max length = the padded length) with `weights`.
pub fn load(model: &str, max_len: usize, weights: Weights) -> Result<SentenceModel> {
    SentenceModel::load(
        model,
        &LoadOptions {
            max_len: Some(max_len),
            int8: matches!(weights, Weights::Int8(_)),
            int8_weight_bits: match weights {
                Weights::Int8(bits) => bits,
                _ => Default::default(),
            },
            bf16: weights == Weights::Bf16,
            ..Default::default()
        },
    )
}

/// Smallest and mean cosine between two models' (normalised) embeddings of `texts`.
pub fn agreement(a: &SentenceModel, b: &SentenceModel, texts: &[String]) -> Result<(f32, f32)> {
    let ea = a.embed(texts, 64, "agreement")?;
    let eb = b.embed(texts, 64, "agreement")?;
    let cos: Vec<f32> = (0..ea.rows())
        .map(|i| {
            let (x, y) = (ea.row(i), eb.row(i));
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let n = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt().max(1e-12);
            dot / (n(x) * n(y))
        })
        .collect();
    let min = cos.iter().copied().fold(1f32, f32::min);
    Ok((min, cos.iter().sum::<f32>() / cos.len().max(1) as f32))
}

/// Peak resident memory of this process so far (VmHWM), in MiB; resets the mark after reading
/// when `reset` is true (Linux; 0 elsewhere).
pub fn peak_rss_mib(reset: bool) -> f64 {
    let kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    if reset {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    kb / 1024.0
}

/// Random unit vectors (deterministic), for selection benchmarks.
pub fn random_unit_rows(n: usize, dim: usize, seed: u64) -> crate::model::Embeddings {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0f32; n * dim];
    for row in data.chunks_mut(dim) {
        row.iter_mut().for_each(|v| *v = rng.gen_range(-1.0..1.0));
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    crate::model::Embeddings { dim, data }
}
