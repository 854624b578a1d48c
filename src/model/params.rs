//! Weights of a model folder as trainable variables. Names are canonical (the BERT layout
//! without the `bert.` / `roberta.` prefix, `LayerNorm.weight/bias` rather than `gamma/beta`);
//! the prefix found in the file is remembered so a saved folder uses the original names.

use crate::kernels::int8::{PackedInt8, QuantizedMatrix};
use anyhow::{Context, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub struct Params {
    source: HashMap<String, Tensor>,
    /// Random initialisation (tests, fresh heads) when there is no source tensor.
    random: Option<ChaCha8Rng>,
    layer_alias: HashMap<usize, usize>,
    used: HashSet<String>,
    /// Trainable variables in creation order, by canonical name.
    pub vars: Vec<(String, Var)>,
    /// The prefix the file used (`bert.`, `roberta.` or empty).
    pub prefix: String,
    pub device: Device,
    /// Int8 weights of a quantized folder (`X.weight` as I8 with `X.weight_scale` beside it).
    qsource: HashMap<String, QuantizedMatrix>,
    /// Int8 dense layers in creation order, by canonical weight name (saved as I8 + scales).
    pub int8: Vec<(String, Arc<PackedInt8>)>,
}

/// How a dense layer's weight is held.
#[derive(Clone)]
pub enum LinearWeight {
    /// Trainable float weight `out × in`.
    Float(Tensor),
    /// Int8 with per-row scales, packed for the int8 kernels (inference only).
    Int8(Arc<PackedInt8>),
    /// Rounded to bf16 and packed for the bf16 kernels (inference only; the f32 weight stays
    /// among the variables, which is what a saved folder holds).
    Bf16(Arc<crate::kernels::bf16::PackedBf16>),
}

/// Suffix of the per-row scales saved beside an int8 weight.
pub const SCALE_SUFFIX: &str = "_scale";
/// Suffix of the per-input smoothing factors saved beside an int8 weight (optional).
pub const SMOOTH_SUFFIX: &str = "_smooth";

const PREFIXES: &[&str] = &["bert.", "roberta.", "model.", "0.auto_model."];

pub fn canonical(name: &str) -> (String, &'static str) {
    let mut prefix = "";
    let mut n = name;
    for p in PREFIXES {
        if let Some(rest) = n.strip_prefix(p) {
            prefix = p;
            n = rest;
            break;
        }
    }
    let n = n
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias");
    (n, prefix)
}

impl Params {
    /// Reads `model.safetensors` (or `pytorch_model.bin`) of a model folder.
    pub fn from_folder(dir: &Path, device: &Device) -> Result<Self> {
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        let mut int8_raw: Vec<(String, Vec<usize>, Vec<i8>)> = Vec::new();
        let raw: Vec<(String, Tensor)> = if st.exists() {
            let ctx = || format!("reading weights {}", st.display());
            // SAFETY: the file is mapped read-only for the duration of this function; lecr
            // never writes model files in place (saves build a new folder and rename it).
            let mapped = unsafe { candle_core::safetensors::MmapedSafetensors::new(&st) }
                .with_context(ctx)?;
            let mut out = Vec::new();
            for (name, view) in mapped.tensors() {
                if view.dtype() == safetensors::Dtype::I8 {
                    let values = view.data().iter().map(|&b| b as i8).collect();
                    int8_raw.push((name, view.shape().to_vec(), values));
                } else {
                    out.push((name.clone(), view.load(device).with_context(ctx)?));
                }
            }
            out
        } else if bin.exists() {
            candle_core::pickle::read_all(&bin)
                .with_context(|| format!("reading weights {}", bin.display()))?
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_device(device)?)))
                .collect::<Result<_>>()?
        } else {
            anyhow::bail!(
                "{}: no model.safetensors or pytorch_model.bin in the model folder",
                dir.display()
            );
        };
        let mut source = HashMap::new();
        let mut prefixes: HashMap<&str, usize> = HashMap::new();
        for (name, t) in raw {
            let (c, p) = canonical(&name);
            *prefixes.entry(p).or_default() += 1;
            source.insert(c, t);
        }
        let mut qsource = HashMap::new();
        for (name, shape, values) in int8_raw {
            let (c, p) = canonical(&name);
            *prefixes.entry(p).or_default() += 1;
            let scale_name = format!("{c}{SCALE_SUFFIX}");
            let scales = source.remove(&scale_name).with_context(|| {
                format!(
                    "{}: int8 weight `{name}` has no `{name}{SCALE_SUFFIX}` beside it",
                    st.display()
                )
            })?;
            let scales = scales
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let smooth = source
                .remove(&format!("{c}{SMOOTH_SUFFIX}"))
                .map(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                .transpose()?;
            anyhow::ensure!(
                smooth
                    .as_ref()
                    .is_none_or(|s| shape.len() == 2 && s.len() == shape[1]),
                "{}: `{name}{SMOOTH_SUFFIX}` must have one value per input",
                st.display()
            );
            anyhow::ensure!(
                shape.len() == 2 && scales.len() == shape[0],
                "{}: int8 weight `{name}` has shape {shape:?} but {} scales (one per row expected)",
                st.display(),
                scales.len()
            );
            qsource.insert(
                c,
                QuantizedMatrix {
                    rows: shape[0],
                    cols: shape[1],
                    values,
                    scales,
                    smooth,
                },
            );
        }
        let prefix = prefixes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        Ok(Params {
            source,
            random: None,
            layer_alias: HashMap::new(),
            used: HashSet::new(),
            vars: Vec::new(),
            prefix,
            device: device.clone(),
            qsource,
            int8: Vec::new(),
        })
    }

    /// Random initialisation (normal(0, 0.02) weights, zero biases, unit layer-norm scales).
    pub fn random(seed: u64, device: &Device) -> Self {
        Params {
            source: HashMap::new(),
            random: Some(ChaCha8Rng::seed_from_u64(seed)),
            layer_alias: HashMap::new(),
            used: HashSet::new(),
            vars: Vec::new(),
            prefix: String::new(),
            device: device.clone(),
            qsource: HashMap::new(),
            int8: Vec::new(),
        }
    }

    /// Makes `encoder.layer.{new}.*` read the checkpoint's `encoder.layer.{old}.*`.
    pub fn rename_layer(&mut self, old: usize, new: usize) {
        self.layer_alias.insert(new, old);
    }

    fn source_name(&self, name: &str) -> String {
        if let Some(rest) = name.strip_prefix("encoder.layer.") {
            if let Some((idx, tail)) = rest.split_once('.') {
                if let Ok(i) = idx.parse::<usize>() {
                    if let Some(old) = self.layer_alias.get(&i) {
                        return format!("encoder.layer.{old}.{tail}");
                    }
                }
            }
        }
        name.to_string()
    }

    /// The tensor `name` with the expected `shape`, as a new trainable variable.
    pub fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.take(name, shape)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(out)
    }

    /// The weight of dense layer `name` (`out × in`): int8 when the folder stores it so, else a
    /// trainable variable.
    pub fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<LinearWeight> {
        let wname = format!("{name}.weight");
        let src = self.source_name(&wname);
        let Some(q) = self.qsource.get(&src) else {
            return Ok(LinearWeight::Float(self.get(&wname, &[out, inp])?));
        };
        anyhow::ensure!(
            q.rows == out && q.cols == inp,
            "int8 weight `{src}` has shape [{}, {}], the config expects [{out}, {inp}]",
            q.rows,
            q.cols
        );
        self.used.insert(src);
        let packed = Arc::new(PackedInt8::pack(q));
        self.int8.push((wname, packed.clone()));
        Ok(LinearWeight::Int8(packed))
    }

    /// Replaces the trainable weight `name` by its int8 form (post-training quantization).
    pub fn make_int8(&mut self, name: &str, packed: Arc<PackedInt8>) {
        self.vars.retain(|(n, _)| n != name);
        self.int8.push((name.to_string(), packed));
    }

    /// The source (or random) tensor `name` as f32, checked against `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let src = self.source_name(name);
        let t = match self.source.get(&src) {
            Some(t) => {
                anyhow::ensure!(
                    t.dims() == shape,
                    "weight `{src}` has shape {:?}, the config expects {shape:?}",
                    t.dims()
                );
                self.used.insert(src);
                t.to_dtype(DType::F32)?
            }
            None => match &mut self.random {
                Some(rng) => init(rng, name, shape, &self.device)?,
                None => anyhow::bail!(
                    "weight `{src}` is missing from the model file (expected shape {shape:?})"
                ),
            },
        };
        Ok(t)
    }

    /// Source tensors that no variable took (e.g. the pooler), except dropped layers.
    pub fn extras(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .source
            .iter()
            .filter(|(n, _)| !self.used.contains(*n) && !n.starts_with("encoder.layer."))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn init(rng: &mut ChaCha8Rng, name: &str, shape: &[usize], dev: &Device) -> Result<Tensor> {
    use rand::Rng;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = if name.ends_with("LayerNorm.weight") {
        vec![1.0; n]
    } else if name.ends_with(".bias") {
        vec![0.0; n]
    } else {
        // Box–Muller normal(0, 0.02).
        (0..n)
            .map(|_| {
                let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
                0.02 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    };
    Ok(Tensor::from_vec(data, shape, dev)?)
}
