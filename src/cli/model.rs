//! `embed` and `quantize`: a model's vectors for a data folder or texts, and int8 folders.

use anyhow::{Context, Result};
use clap::Args;
use lecr::data;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(crate) struct QuantizeArgs {
    /// The float model folder (or hub name).
    #[arg(long)]
    model: String,
    /// Where to write the int8 model folder.
    #[arg(long)]
    out: PathBuf,
    /// Calibration texts, one per line (default: random vocabulary words, no data needed).
    #[arg(long, conflicts_with = "data")]
    calibration_texts: Option<PathBuf>,
    /// Calibrate on a sample of this data folder's topic and content texts.
    #[arg(long)]
    data: Option<PathBuf>,
    /// How many calibration texts to use at most.
    #[arg(long, default_value_t = lecr::model::quantize::CALIBRATION_TEXTS)]
    calibration_size: usize,
    /// SmoothQuant migration strength (0 = no smoothing).
    #[arg(long, default_value_t = lecr::model::quantize::DEFAULT_ALPHA)]
    alpha: f32,
    /// Token limit for calibration (default: the model's own max_seq_length, so that the
    /// ranges of long inputs are covered; int8 folders are used at any length up to it).
    #[arg(long)]
    max_len: Option<usize>,
    /// Bits per weight: 8, or 7 (weights within ±63), which CPUs with AVX2 but no VNNI run
    /// with a faster kernel at a small cost in agreement (printed at the end); other CPUs run
    /// both at the same speed.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    weight_bits: u8,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The checkpoint: `torch.save(model.state_dict())` of the original's Net (or of a Hugging
    /// Face BERT / XLM-R model).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The base model it was trained from (folder or hub name): config and tokenizer.
    #[arg(long)]
    base: String,
    /// The pooling it was trained with (not stored in the file).
    #[arg(long, value_enum)]
    pooling: lecr::model::import::CheckpointPooling,
    /// Where to write the model folder.
    #[arg(long)]
    out: PathBuf,
    /// Leave the embeddings unnormalised, as the original's Net returns them (lecr's selection
    /// expects unit vectors; keep the default for eval / predict / serve).
    #[arg(long)]
    no_normalize: bool,
}

pub(crate) fn import(a: ImportArgs) -> Result<i32> {
    let r = lecr::model::import::import_checkpoint(&lecr::model::import::ImportOptions {
        checkpoint: a.checkpoint.clone(),
        base: a.base.clone(),
        pooling: a.pooling,
        out: a.out.clone(),
        normalize: !a.no_normalize,
    })?;
    println!(
        "imported {} tensors: {} of the base's {} layers, {:?} pooling, output dimension {}{}",
        r.tensors,
        r.layers,
        r.base_layers,
        a.pooling,
        r.dim,
        match r.projection {
            Some((o, i)) => format!(" (projection {i} -> {o})"),
            None => String::new(),
        }
    );
    if let Some(s) = r.logit_scale {
        println!("logit_scale {s} (a training parameter, not part of the model folder)");
    }
    println!("wrote {}", a.out.display());
    Ok(0)
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// A model folder (config.json, tokenizer.json, model.safetensors) or a Hugging Face name.
    #[arg(long)]
    model: String,
    /// Pooling, overriding the folder's 1_Pooling/config.json: `cls` or `mean`.
    #[arg(long)]
    pooling: Option<lecr::model::config::Pooling>,
    /// Quantize a float model to int8 as it loads (calibrated on vocabulary texts); `lecr
    /// quantize` does it once and saves the result.
    #[arg(long)]
    int8: bool,
    /// Round float models' dense layers to bf16 as they load (f32 sums; the AVX512-BF16
    /// kernel where the CPU has it). Inference only.
    #[arg(long, conflicts_with = "int8")]
    bf16: bool,
}

#[derive(Args)]
pub(crate) struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A data folder: embeds topics.csv and content.csv.
    #[arg(long, conflicts_with = "texts", required_unless_present = "texts")]
    data: Option<PathBuf>,
    /// A text file: embeds each line, in order.
    #[arg(long)]
    texts: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Token limit (default: 96 for data folders as in method §2; the folder's max_seq_length
    /// for --texts, as sentence-transformers does).
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// With --texts: put the model folder's prompt of this name (config_sentence_transformers.json)
    /// before every line [default: none].
    #[arg(long, requires = "texts")]
    prompt: Option<String>,
    /// With --data: the prompt topic texts get (a prompt name of the folder, or the text
    /// itself; "" for none) [default: the folder's query prompt, if any].
    #[arg(long, requires = "data")]
    topic_prompt: Option<String>,
    /// With --data: the prompt content texts get [default: the folder's passage prompt].
    #[arg(long, requires = "data")]
    content_prompt: Option<String>,
}

pub(crate) fn read_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::to_string).collect())
}

pub(crate) fn embed(a: EmbedArgs) -> Result<i32> {
    use lecr::model::{LoadOptions, SentenceModel};
    let t0 = Instant::now();
    let max_len = match (&a.data, a.max_len) {
        (_, Some(m)) => Some(m),
        (Some(_), None) => Some(96),
        (None, None) => None,
    };
    let opts = LoadOptions {
        max_len,
        pooling: a.model.pooling,
        int8: a.model.int8,
        bf16: a.model.bf16,
        topic_prompt: a.topic_prompt.clone(),
        content_prompt: a.content_prompt.clone(),
        ..Default::default()
    };
    let model = SentenceModel::load(&a.model.model, &opts)?;
    use lecr::model::prompts::Role;
    let mut written = Vec::new();
    let mut count = 0;
    if let Some(dir) = &a.data {
        let ds = data::load_dataset(dir)?;
        let topic_texts = lecr::text::topic_texts(&ds.topics);
        let emb = model.embed_as(Role::Topic, &topic_texts, a.batch_size, "topics")?;
        let ids: Vec<String> = ds.topics.iter().map(|t| t.id.clone()).collect();
        let langs: Vec<String> = ds.topics.iter().map(|t| t.language.clone()).collect();
        written.extend(lecr::features::write(
            &a.out,
            "topics",
            &emb,
            Some((&ids, &langs)),
        )?);
        let content_texts: Vec<String> = ds.contents.iter().map(lecr::text::content_text).collect();
        let emb = model.embed_as(Role::Content, &content_texts, a.batch_size, "contents")?;
        let ids: Vec<String> = ds.contents.iter().map(|c| c.id.clone()).collect();
        let langs: Vec<String> = ds.contents.iter().map(|c| c.language.clone()).collect();
        written.extend(lecr::features::write(
            &a.out,
            "content",
            &emb,
            Some((&ids, &langs)),
        )?);
        count = topic_texts.len() + content_texts.len();
    } else if let Some(path) = &a.texts {
        let mut lines = read_lines(path)?;
        if let Some(name) = &a.prompt {
            let Some(prompt) = model.prompts.named.get(name) else {
                let known: Vec<&str> = model.prompts.named.keys().map(String::as_str).collect();
                anyhow::bail!(
                    "--prompt {name}: {} declares no such prompt (it has: {})",
                    a.model.model,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            };
            lines = lines.into_iter().map(|l| format!("{prompt}{l}")).collect();
        }
        let emb = model.embed(&lines, a.batch_size, "texts")?;
        written.extend(lecr::features::write(&a.out, "texts", &emb, None)?);
        count = lines.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "embedded {count} texts with {} (dim {}, max_len {}) in {secs:.1}s ({:.1}/s)",
        a.model.model,
        model.dim(),
        model.tokenizer.max_len,
        count as f64 / secs
    );
    for f in written {
        println!("wrote {}", f.display());
    }
    Ok(0)
}

pub(crate) fn quantize(a: QuantizeArgs) -> Result<i32> {
    use lecr::model::{quantize, LoadOptions, SentenceModel};
    let t0 = Instant::now();
    let opts = LoadOptions {
        max_len: a.max_len,
        ..Default::default()
    };
    let float = SentenceModel::load(&a.model, &opts)?;
    anyhow::ensure!(
        !float.is_int8(),
        "{} is already int8-quantized: give the float model",
        a.model
    );
    let texts: Vec<String> = match (&a.calibration_texts, &a.data) {
        (Some(p), _) => read_lines(p)?,
        (None, Some(dir)) => {
            let ds = data::load_dataset(dir)?;
            // Each side with its prompt, as the model will see them.
            use lecr::model::prompts::Role;
            let topics = lecr::text::topic_texts(&ds.topics);
            let contents: Vec<String> = ds.contents.iter().map(lecr::text::content_text).collect();
            let mut t = float.prompts.apply(Role::Topic, &topics).into_owned();
            t.extend(float.prompts.apply(Role::Content, &contents).into_owned());
            t
        }
        (None, None) => {
            quantize::vocabulary_texts(&float, a.calibration_size, quantize::VOCABULARY_SEED)
        }
    };
    // An even spread over the file, at most --calibration-size texts; the texts in between
    // (not calibrated on) are where agreement is measured.
    let step = texts.len().div_ceil(a.calibration_size.max(1)).max(1);
    let (calib_texts, rest): (Vec<_>, Vec<_>) = texts
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % step == 0);
    let texts: Vec<String> = calib_texts.into_iter().map(|(_, t)| t).collect();
    anyhow::ensure!(!texts.is_empty(), "no calibration texts");
    let mut held_out: Vec<String> = rest
        .into_iter()
        .map(|(_, t)| t)
        .step_by(step.max(2) / 2)
        .take(128)
        .collect();
    // Plus vocabulary texts of every length up to the token limit, never calibrated on.
    held_out.extend(quantize::vocabulary_texts(
        &float,
        128,
        quantize::HELD_OUT_SEED,
    ));
    let mut model = SentenceModel::load(&a.model, &opts)?;
    let mut calib = model.calibrate(&texts, 32, a.alpha)?;
    calib.weight_bits = lecr::kernels::int8::WeightBits::from_bits(a.weight_bits)
        .ok_or_else(|| anyhow::anyhow!("--weight-bits: 7 or 8, not {}", a.weight_bits))?;
    model.quantize(&calib)?;
    let (min, mean) = lecr::bench::agreement(&float, &model, &held_out)?;
    model.save(&a.out)?;
    let size =
        |d: &std::path::Path| std::fs::metadata(d.join("model.safetensors")).map(|m| m.len());
    let src = lecr::model::hub::resolve_model(&a.model)?;
    println!(
        "quantized {} dense layers to int8 ({}-bit weights, {} calibration texts, alpha {}) \
         in {:.1}s",
        model.params.int8.len(),
        a.weight_bits,
        texts.len(),
        a.alpha,
        t0.elapsed().as_secs_f64()
    );
    if let (Ok(f), Ok(q)) = (size(&src), size(&a.out)) {
        println!(
            "model.safetensors: {:.1} MiB -> {:.1} MiB",
            f as f64 / 1048576.0,
            q as f64 / 1048576.0
        );
    }
    println!(
        "cosine to the float model over {} held-out texts (not calibrated on; up to {} \
         tokens): min {min:.5}, mean {mean:.5}",
        held_out.len(),
        float.tokenizer.max_len
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}
