//! A quantized decoder-only transformer read from a GGUF file: the `llama`,
//! `gemma3` and `qwen2` families (SmolLM2, Gemma 3, Qwen2.5 …).
//!
//! Our own file rather than candle-transformers' `quantized_gemma3`, which
//! uses SiLU where Gemma 3 uses GELU-tanh and precomputes RoPE tables for
//! 131 072 positions in every layer (about 2.4 GB for Gemma 3 270M). One code
//! path covers the three families; every size comes from the GGUF metadata.

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use super::InferenceError;

type Result<T> = std::result::Result<T, InferenceError>;

/// What differs between the families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Gemma3,
    Qwen2,
    Qwen3,
    Phi3,
}

impl Family {
    /// The `general.architecture` values this decoder runs.
    pub const SUPPORTED: &[&str] = &["llama", "gemma3", "qwen2", "qwen3", "phi3"];

    /// Whether the layers normalise queries and keys per head (RMS norm
    /// over head_dim before RoPE).
    fn qk_norm(self) -> bool {
        matches!(self, Family::Gemma3 | Family::Qwen3)
    }

    pub fn from_architecture(arch: &str) -> Result<Self> {
        match arch {
            "llama" => Ok(Family::Llama),
            "gemma3" => Ok(Family::Gemma3),
            "qwen2" => Ok(Family::Qwen2),
            "qwen3" => Ok(Family::Qwen3),
            "phi3" => Ok(Family::Phi3),
            other => Err(InferenceError::Config(format!(
                "unsupported GGUF architecture '{other}' (supported: {})",
                Family::SUPPORTED.join(", ")
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub family: Family,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub rope_base: f32,
    /// Gemma 3's sliding-window layers use their own RoPE base.
    pub rope_base_local: f32,
    pub sliding_window: Option<usize>,
    /// Gemma 3: every n-th layer attends globally, the others locally.
    pub sliding_pattern: usize,
    pub context_length: usize,
    /// Final logit soft-capping, `tanh(x / cap) * cap` (Gemma 2; a Gemma 3
    /// file may carry it too).
    pub final_softcap: Option<f64>,
    pub vocab_size: usize,
    /// Leading dims of each head that RoPE rotates (Phi-3.5/Phi-4-mini:
    /// fewer than the head size; the rest pass through).
    pub rope_dim: usize,
}

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    ct.metadata.get(key)
}

fn md_usize(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = md(ct, key)
        .ok_or_else(|| InferenceError::Config(format!("GGUF metadata lacks '{key}'")))?;
    let n = match v {
        gguf_file::Value::U64(n) => *n,
        other => other
            .to_u32()
            .map(u64::from)
            .map_err(|e| InferenceError::Config(format!("GGUF metadata '{key}': {e}")))?,
    };
    usize::try_from(n)
        .map_err(|_| InferenceError::Config(format!("GGUF metadata '{key}' too large")))
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    md(ct, key).and_then(|v| v.to_f32().ok())
}

pub fn architecture(ct: &gguf_file::Content) -> Result<String> {
    md(ct, "general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| InferenceError::Config("GGUF metadata lacks 'general.architecture'".into()))
}

impl DecoderConfig {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let arch = architecture(ct)?;
        let family = Family::from_architecture(&arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let d_model = md_usize(ct, &key("embedding_length"))?;
        let n_head = md_usize(ct, &key("attention.head_count"))?;
        let n_kv_head = md_usize(ct, &key("attention.head_count_kv")).unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(InferenceError::Config(format!(
                "bad head counts: {n_head} query heads, {n_kv_head} key/value heads"
            )));
        }
        let head_dim = md_usize(ct, &key("attention.key_length")).unwrap_or(d_model / n_head);
        let rope_dim = md_usize(ct, &key("rope.dimension_count")).unwrap_or(head_dim);
        if rope_dim == 0 || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(InferenceError::Config(format!(
                "'{arch}.rope.dimension_count' is {rope_dim}; it must be even and at most the head size {head_dim}"
            )));
        }
        let tokens = md(ct, "tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
        let vocab_size = md_usize(ct, &key("vocab_size"))
            .ok()
            .or(tokens.map(|t| t.len()))
            .unwrap_or(0);
        let eps = md_f32(ct, &key("attention.layer_norm_rms_epsilon")).ok_or_else(|| {
            InferenceError::Config(format!(
                "GGUF metadata lacks '{arch}.attention.layer_norm_rms_epsilon'"
            ))
        })?;
        let gemma = family == Family::Gemma3;
        Ok(DecoderConfig {
            family,
            n_layer: md_usize(ct, &key("block_count"))?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            rope_dim,
            eps: f64::from(eps),
            rope_base: md_f32(ct, &key("rope.freq_base")).unwrap_or(if gemma {
                1_000_000.0
            } else {
                10_000.0
            }),
            // llama.cpp's converter writes `rope.freq_base_swa`; older files
            // `rope.local_freq_base`.
            rope_base_local: md_f32(ct, &key("rope.freq_base_swa"))
                .or_else(|| md_f32(ct, &key("rope.local_freq_base")))
                .unwrap_or(10_000.0),
            // Gemma 3 files always carry their window; a Mistral-style one
            // (every layer) is honoured when a file carries it, which
            // llama.cpp's converter never writes for `llama`.
            sliding_window: md_usize(ct, &key("attention.sliding_window"))
                .ok()
                .filter(|w| *w > 0),
            sliding_pattern: md_usize(ct, &key("attention.sliding_window_type"))
                .unwrap_or(6)
                .max(1),
            context_length: md_usize(ct, &key("context_length")).unwrap_or(4096),
            final_softcap: md_f32(ct, &key("final_logit_softcapping"))
                .filter(|c| *c > 0.0)
                .map(f64::from),
            vocab_size,
        })
    }

    /// Whether `layer` attends within the sliding window only: Gemma 3's
    /// layers but every `sliding_pattern`-th; every layer elsewhere.
    fn is_local(&self, layer: usize) -> bool {
        self.sliding_window.is_some()
            && (self.family != Family::Gemma3 || !(layer + 1).is_multiple_of(self.sliding_pattern))
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Query, key and value projections: three matrices, or one (Phi-3's
/// `attn_qkv`) whose output rows are q, then k, then v.
enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

impl Qkv {
    fn forward(&self, h: &Tensor, q_dim: usize, kv_dim: usize) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(match self {
            Qkv::Separate { q, k, v } => (q.forward(h)?, k.forward(h)?, v.forward(h)?),
            Qkv::Fused(w) => {
                let all = w.forward(h)?;
                (
                    all.narrow(2, 0, q_dim)?,
                    all.narrow(2, q_dim, kv_dim)?,
                    all.narrow(2, q_dim + kv_dim, kv_dim)?,
                )
            }
        })
    }
}

struct Layer {
    attn_norm: RmsNorm,
    qkv: Qkv,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    /// None: `up` is Phi-3's fused `gate_up` (gate rows first).
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<RmsNorm>,
    /// Keys and values seen so far: (1, kv_heads, positions, head_dim).
    cache: Option<(Tensor, Tensor)>,
    local: bool,
    rope_base: f32,
}

/// A saved key/value cache: every layer's keys and values and the
/// position, as after some prompt.
#[derive(Clone)]
pub struct KvState {
    layers: Vec<Option<(Tensor, Tensor)>>,
    position: usize,
}

impl KvState {
    /// Tokens it holds.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// The model with one sequence's key/value cache.
pub struct Decoder {
    pub config: DecoderConfig,
    /// RoPE frequency factors: Llama 3's `rope_freqs.weight`, or LongRoPE's
    /// short factors (Phi-3.5, Phi-4-mini).
    rope_factors: Option<Vec<f32>>,
    /// LongRoPE's attention factor, multiplying cos and sin (1 elsewhere).
    rope_scale: f64,
    embed: QTensor,
    embed_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    device: Device,
    /// Positions already in the cache.
    position: usize,
}

struct Loader<'a, R> {
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    device: &'a Device,
}

impl<R: Read + Seek> Loader<'_, R> {
    fn has(&self, name: &str) -> bool {
        self.ct.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.has(name) {
            return Err(InferenceError::Config(format!(
                "tensor '{name}' is missing"
            )));
        }
        self.ct
            .tensor(self.reader, name, self.device)
            .map_err(|e| InferenceError::Config(format!("tensor '{name}': {e}")))
    }

    fn dense(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.qtensor(name)?.dequantize(self.device)?;
        if t.elem_count() != len {
            return Err(InferenceError::Config(format!(
                "tensor '{name}' has {} values, expected {len}",
                t.elem_count()
            )));
        }
        Ok(t.flatten_all()?.to_dtype(DType::F32)?)
    }

    fn norm(&mut self, name: &str, len: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.dense(name, len)?,
            eps: eps as f32,
        })
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        let w = self.qtensor(&name)?;
        if w.shape().dims() != [out, inp] {
            return Err(InferenceError::Config(format!(
                "tensor '{name}' has shape {:?}, expected [{out}, {inp}]",
                w.shape().dims()
            )));
        }
        let w = fast_kernel(w, self.device)
            .map_err(|e| InferenceError::Config(format!("tensor '{name}': {e}")))?;
        let bias_name = format!("{prefix}.bias");
        let bias = if self.has(&bias_name) {
            Some(self.dense(&bias_name, out)?)
        } else {
            None
        };
        Ok(Linear {
            weight: QMatMul::from_qtensor(w)?,
            bias,
        })
    }
}

/// candle's CPU kernels for Q4_1, Q5_0 and Q5_1 are scalar (about 6× slower
/// than its AVX2 Q8_0 one here), so such weights are re-quantized to Q8_0 at
/// load: every 4/5-bit level is kept to within 1/254 of the block's largest
/// value, at about 1.7× the memory of those tensors.
fn fast_kernel(q: QTensor, device: &Device) -> candle_core::Result<QTensor> {
    match q.dtype() {
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 if device.is_cpu() => {
            QTensor::quantize(&q.dequantize(device)?, GgmlDType::Q8_0)
        }
        _ => Ok(q),
    }
}

/// A file's RoPE scaling: frequency factors, the factor on cos and sin, and
/// the longest context it is exact for.
///
/// - Llama 3: `rope_freqs.weight` divides the frequencies.
/// - LongRoPE (Phi-3.5, Phi-4-mini: `rope_factors_short.weight` and
///   `_long`): transformers divides by the short factors while the sequence
///   fits the original context and recomputes everything with the long ones
///   past it; we run the short factors and cap the context at the original
///   length (4 096 for Phi-3.5), which is exact for every prompt we run.
///   Cos and sin are multiplied by `rope.scaling.attn_factor`.
type RopeScaling = (Option<Vec<f32>>, f64, Option<usize>);

fn rope_scaling<R: std::io::Read + std::io::Seek>(
    ld: &mut Loader<'_, R>,
    ct: &gguf_file::Content,
    c: &DecoderConfig,
) -> Result<RopeScaling> {
    let half = c.rope_dim / 2;
    fn factors<R: std::io::Read + std::io::Seek>(
        ld: &mut Loader<'_, R>,
        name: &str,
        half: usize,
    ) -> Result<Vec<f32>> {
        Ok(ld
            .dense(name, half)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
    if ld.has("rope_factors_short.weight") || ld.has("rope_factors_long.weight") {
        let arch = architecture(ct)?;
        let key = |k: &str| format!("{arch}.{k}");
        let original = md_usize(ct, &key("rope.scaling.original_context_length"))?;
        let scale = match md_f32(ct, &key("rope.scaling.attn_factor")) {
            Some(f) => f64::from(f),
            None => {
                let ratio = c.context_length as f64 / original as f64;
                if ratio > 1.0 {
                    (1.0 + ratio.ln() / (original as f64).ln()).sqrt()
                } else {
                    1.0
                }
            }
        };
        return Ok((
            Some(factors(ld, "rope_factors_short.weight", half)?),
            scale,
            Some(original),
        ));
    }
    if ld.has("rope_freqs.weight") {
        return Ok((Some(factors(ld, "rope_freqs.weight", half)?), 1.0, None));
    }
    Ok((None, 1.0, None))
}

/// RoPE tables for positions `start..start + len`. `factors` (Llama 3's
/// `rope_freqs.weight`, one per frequency) divide the frequencies: that is
/// how a GGUF file carries Llama 3's RoPE scaling.
fn rope_tables(
    base: f32,
    factors: Option<&[f32]>,
    scale: f64,
    head_dim: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for p in start..start + len {
        for i in 0..half {
            // f64 so that long positions keep their precision, as llama.cpp does.
            let factor = factors
                .and_then(|f| f.get(i))
                .map_or(1.0, |&f| f64::from(f));
            let inv = 1.0 / f64::from(base).powf((2 * i) as f64 / head_dim as f64) / factor;
            let angle = p as f64 * inv;
            cos.push((angle.cos() * scale) as f32);
            sin.push((angle.sin() * scale) as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, half), device)?,
        Tensor::from_vec(sin, (len, half), device)?,
    ))
}

impl Decoder {
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let config = DecoderConfig::from_gguf(ct)?;
        let c = &config;
        let mut ld = Loader { ct, reader, device };
        let embed = ld.qtensor("token_embd.weight")?;
        let (vocab, dim) = embed
            .shape()
            .dims2()
            .map_err(|e| InferenceError::Config(format!("tensor 'token_embd.weight': {e}")))?;
        if dim != c.d_model {
            return Err(InferenceError::Config(format!(
                "tensor 'token_embd.weight' has width {dim}, expected {}",
                c.d_model
            )));
        }
        let q_dim = c.n_head * c.head_dim;
        let kv_dim = c.n_kv_head * c.head_dim;
        let ff = md_usize(ct, &format!("{}.feed_forward_length", architecture(ct)?))?;
        let gemma = c.family == Family::Gemma3;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = format!("blk.{i}");
            let local = c.is_local(i);
            layers.push(Layer {
                attn_norm: ld.norm(&format!("{p}.attn_norm.weight"), c.d_model, c.eps)?,
                // Phi-3 files usually fuse q, k and v; a missing fused tensor
                // is named as such rather than as a missing `attn_q`.
                qkv: if ld.has(&format!("{p}.attn_qkv.weight"))
                    || (c.family == Family::Phi3 && !ld.has(&format!("{p}.attn_q.weight")))
                {
                    Qkv::Fused(ld.linear(
                        &format!("{p}.attn_qkv"),
                        q_dim + 2 * kv_dim,
                        c.d_model,
                    )?)
                } else {
                    Qkv::Separate {
                        q: ld.linear(&format!("{p}.attn_q"), q_dim, c.d_model)?,
                        k: ld.linear(&format!("{p}.attn_k"), kv_dim, c.d_model)?,
                        v: ld.linear(&format!("{p}.attn_v"), kv_dim, c.d_model)?,
                    }
                },
                o: ld.linear(&format!("{p}.attn_output"), c.d_model, q_dim)?,
                q_norm: if c.family.qk_norm() {
                    Some(ld.norm(&format!("{p}.attn_q_norm.weight"), c.head_dim, c.eps)?)
                } else {
                    None
                },
                k_norm: if c.family.qk_norm() {
                    Some(ld.norm(&format!("{p}.attn_k_norm.weight"), c.head_dim, c.eps)?)
                } else {
                    None
                },
                post_attn_norm: if gemma {
                    Some(ld.norm(&format!("{p}.post_attention_norm.weight"), c.d_model, c.eps)?)
                } else {
                    None
                },
                ffn_norm: ld.norm(&format!("{p}.ffn_norm.weight"), c.d_model, c.eps)?,
                gate: if c.family == Family::Phi3 {
                    None
                } else {
                    Some(ld.linear(&format!("{p}.ffn_gate"), ff, c.d_model)?)
                },
                up: ld.linear(
                    &format!("{p}.ffn_up"),
                    if c.family == Family::Phi3 { 2 * ff } else { ff },
                    c.d_model,
                )?,
                down: ld.linear(&format!("{p}.ffn_down"), c.d_model, ff)?,
                post_ffn_norm: if gemma {
                    Some(ld.norm(&format!("{p}.post_ffw_norm.weight"), c.d_model, c.eps)?)
                } else {
                    None
                },
                cache: None,
                local,
                rope_base: if local && gemma {
                    c.rope_base_local
                } else {
                    c.rope_base
                },
            });
        }
        let norm = ld.norm("output_norm.weight", c.d_model, c.eps)?;
        // Tied embeddings: no output.weight, the embedding matrix projects back.
        let output = if ld.has("output.weight") {
            ld.linear("output", vocab, c.d_model)?.weight
        } else {
            QMatMul::from_qtensor(ld.qtensor("token_embd.weight")?)?
        };
        let (rope_factors, rope_scale, context_cap) = rope_scaling(&mut ld, ct, c)?;
        let mut config = config;
        config.vocab_size = vocab;
        if let Some(cap) = context_cap {
            config.context_length = config.context_length.min(cap);
        }
        Ok(Decoder {
            rope_factors,
            rope_scale,
            embed_scale: gemma.then(|| (config.d_model as f64).sqrt()),
            config,
            embed,
            layers,
            norm,
            output,
            device: device.clone(),
            position: 0,
        })
    }

    /// The key/value cache as it stands (tensors are shared, not copied):
    /// `restore` brings the decoder back to exactly this state.
    pub fn save(&self) -> KvState {
        KvState {
            layers: self.layers.iter().map(|l| l.cache.clone()).collect(),
            position: self.position,
        }
    }

    /// Puts back a state `save` returned (of this model).
    pub fn restore(&mut self, state: &KvState) {
        for (l, c) in self.layers.iter_mut().zip(&state.layers) {
            l.cache = c.clone();
        }
        self.position = state.position;
    }

    /// Forgets the cached sequence.
    pub fn reset(&mut self) {
        self.position = 0;
        for l in &mut self.layers {
            l.cache = None;
        }
    }

    pub fn position(&self) -> usize {
        self.position
    }

    /// Runs `tokens` after the cached ones; returns the logits of the last
    /// position (vocab,) as f32.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(InferenceError::InvalidInput("no tokens to run".into()));
        }
        if let Some(bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(InferenceError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        let t = tokens.len();
        let start = self.position;
        let c = &self.config;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.reshape((1, t, c.d_model))?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let mut tables: HashMap<u32, (Tensor, Tensor)> = HashMap::new();
        for layer in &mut self.layers {
            let key = layer.rope_base.to_bits();
            let (cos, sin) = match tables.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(rope_tables(
                    layer.rope_base,
                    // Gemma's local layers keep plain RoPE.
                    self.rope_factors
                        .as_deref()
                        .filter(|_| !(layer.local && c.family == Family::Gemma3)),
                    self.rope_scale,
                    c.rope_dim,
                    start,
                    t,
                    &self.device,
                )?),
            };
            x = layer.forward(&x, c, start, cos, sin)?;
        }
        self.position += t;
        let last = x.narrow(1, t - 1, 1)?;
        let last = self.norm.forward(&last)?;
        let mut logits = self.output.forward(&last)?;
        if let Some(cap) = self.config.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
    }
}

impl Layer {
    fn forward(
        &mut self,
        x: &Tensor,
        c: &DecoderConfig,
        start: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let h = self.attn_norm.forward(x)?;
        let (q, k, v) = self
            .qkv
            .forward(&h, c.n_head * c.head_dim, c.n_kv_head * c.head_dim)?;
        let q = q.reshape((b, t, c.n_head, c.head_dim))?.transpose(1, 2)?;
        let k = k
            .reshape((b, t, c.n_kv_head, c.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, t, c.n_kv_head, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            _ => (q.contiguous()?, k.contiguous()?),
        };
        let (q, k) = (rotate(&q, c, cos, sin)?, rotate(&k, c, cos, sin)?);
        let (k, v) = match &self.cache {
            Some((ck, cv)) if start > 0 => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
            _ => (k, v),
        };
        // A sliding-window layer never looks further back than the window.
        let (k, v) = match (self.local, c.sliding_window) {
            (true, Some(w)) if k.dim(2)? > w + t => {
                let keep = w + t;
                let from = k.dim(2)? - keep;
                (
                    k.narrow(2, from, keep)?.contiguous()?,
                    v.narrow(2, from, keep)?.contiguous()?,
                )
            }
            _ => (k, v),
        };
        self.cache = Some((k.clone(), v.clone()));
        let s = k.dim(2)?;
        let key_start = start + t - s;

        // Grouped-query attention without copying keys: fold the query heads
        // of one group into the row dimension.
        let group = c.n_head / c.n_kv_head;
        let q = q.reshape((b, c.n_kv_head, group * t, c.head_dim))?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let window = if self.local { c.sliding_window } else { None };
        let scores = if t > 1 || window.is_some_and(|w| s > w) {
            let mask = attention_mask(t, s, start, key_start, window, group, x.device())?;
            scores.broadcast_add(&mask)?
        } else {
            scores
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attn = probs.matmul(&v)?; // (b, kv, group*t, d)
        let attn = attn
            .reshape((b, c.n_head, t, c.head_dim))?
            .transpose(1, 2)?
            .reshape((b, t, c.n_head * c.head_dim))?;
        let mut out = self.o.forward(&attn)?;
        if let Some(n) = &self.post_attn_norm {
            out = n.forward(&out)?;
        }
        let x = (x + out)?;

        let h = self.ffn_norm.forward(&x)?;
        let (gate, up) = match &self.gate {
            Some(g) => (g.forward(&h)?, self.up.forward(&h)?),
            None => {
                let both = self.up.forward(&h)?;
                let ff = both.dim(2)? / 2;
                (both.narrow(2, 0, ff)?, both.narrow(2, ff, ff)?)
            }
        };
        let act = match c.family {
            Family::Gemma3 => gate.gelu()?, // tanh approximation, as Gemma 3 uses
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => {
                candle_nn::ops::silu(&gate)?
            }
        };
        let mut out = self.down.forward(&(act * up)?)?;
        if let Some(n) = &self.post_ffn_norm {
            out = n.forward(&out)?;
        }
        Ok((x + out)?)
    }
}

/// RoPE on the first `rope_dim` dims of each head of x (b, heads, t, head_dim).
/// GGUF stores llama's q/k rows permuted for interleaved rotation; the
/// other families rotate the two halves (NeoX style).
fn rotate(x: &Tensor, c: &DecoderConfig, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let turn = |t: &Tensor| match c.family {
        Family::Llama => candle_nn::rotary_emb::rope_i(t, cos, sin),
        Family::Gemma3 | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => {
            candle_nn::rotary_emb::rope(t, cos, sin)
        }
    };
    if c.rope_dim == c.head_dim {
        return Ok(turn(x)?);
    }
    let rot = x.narrow(3, 0, c.rope_dim)?.contiguous()?;
    let pass = x.narrow(3, c.rope_dim, c.head_dim - c.rope_dim)?;
    Ok(Tensor::cat(&[&turn(&rot)?, &pass], 3)?)
}

/// Additive mask (group*t, s): query i (absolute position start+i) sees key j
/// (absolute key_start+j) when j is not in its future and, for a window w,
/// not more than w positions back (Gemma: query - key < w).
fn attention_mask(
    t: usize,
    s: usize,
    start: usize,
    key_start: usize,
    window: Option<usize>,
    group: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut m = Vec::with_capacity(t * s);
    for i in 0..t {
        let qp = start + i;
        for j in 0..s {
            let kp = key_start + j;
            let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
            m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    let m = Tensor::from_vec(m, (1, t, s), device)?;
    m.repeat((group, 1, 1))?.reshape((group * t, s))
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .finish()
    }
}
