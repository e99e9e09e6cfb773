//! A quantized decoder-only transformer read from a GGUF file: the `llama`,
//! `gemma3` and `qwen2` families (SmolLM2, Gemma 3, Qwen2.5 …).
//!
//! Our own file rather than candle-transformers' `quantized_gemma3`, which
//! uses SiLU where Gemma 3 uses GELU-tanh and precomputes RoPE tables for
//! 131 072 positions in every layer (about 2.4 GB for Gemma 3 270M). One code
//! path covers the families; every size comes from the GGUF metadata.
//!
//! Two ways to run it. On the CPU, a pass is a loop over plain rows of f32
//! (`smart_support_kernels::rows`) with block-quantized weights packed for
//! our Q8_0 kernels (AVX-512 VNNI or AVX2): as candle ops, a decode step of a
//! 30-layer model was several hundred small single-threaded tensor
//! operations, the cache was copied whole at every step, and candle's
//! quantized matmul ran one row at a time. The row path also runs several sequences in one pass, each with its
//! own cache ([`Decoder::forward_batch`]), which is what continuous batching
//! needs. Its key/value cache holds f16 rows by default ([`rows::KvType`]):
//! half the memory and half the bytes a batched step's attention reads. On
//! other devices (and with [`DecoderPath::Candle`]) candle's tensor ops run;
//! the two are tested equal on every family (with an f32 cache; within a
//! looser tolerance with f16).

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use smart_support_kernels::rows;

use super::InferenceError;
use super::q8::{Q8Linear, Q8Op};

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
    /// The same weights as plain values, for the row path.
    w: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }

    fn rows(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        rows::rms_norm(x, &self.w, self.eps, &mut out);
        out
    }
}

/// Which matmul a linear layer runs.
enum Kernel {
    /// candle's quantized (or dense) matmul; the bias beside it.
    Candle(QMatMul, Option<Tensor>),
    /// Our Q8_0 kernel (AVX-512 VNNI or AVX2) on weights packed at load
    /// (bias folded in).
    Q8(Q8Linear),
}

struct Linear {
    kernel: Kernel,
    out: usize,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kernel {
            Kernel::Candle(w, bias) => {
                let y = w.forward(x)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Kernel::Q8(w) => {
                let mut dims = x.dims().to_vec();
                let k = dims.pop().unwrap_or(0);
                let rows = x.reshape(((), k))?.contiguous()?;
                dims.push(self.out);
                rows.apply_op1_no_bwd(&Q8Op(w))?.reshape(dims)
            }
        }
    }

    /// The output rows for the input rows `x`, which come in `parts` (each
    /// sequence's rows of a pass). Our kernel and candle's quantized ones
    /// compute each row on its own, so all rows go in one call; candle's
    /// float GEMM may sum in another order for another number of rows, so
    /// float weights run one part at a time, and a sequence's numbers never
    /// depend on the other sequences in the pass.
    fn rows(&self, x: &[f32], parts: &[usize]) -> Result<Vec<f32>> {
        let n: usize = parts.iter().sum();
        match &self.kernel {
            Kernel::Q8(w) => Ok(w.forward(x, n)),
            Kernel::Candle(QMatMul::QTensor(_), _) => self.candle_rows(x, n),
            Kernel::Candle(..) => {
                let k = x.len() / n.max(1);
                let mut out = Vec::with_capacity(n * self.out);
                let mut first = 0;
                for &t in parts {
                    out.extend(self.candle_rows(&x[first * k..(first + t) * k], t)?);
                    first += t;
                }
                Ok(out)
            }
        }
    }

    fn candle_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let k = x.len() / n.max(1);
        let t = Tensor::from_slice(x, (n, k), &Device::Cpu)?;
        Ok(self.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Query, key and value projections: three matrices, or one (Phi-3's
/// `attn_qkv`, or ours packed at load) whose output rows are q, then k, then v.
enum Qkv {
    Separate {
        q: Box<Linear>,
        k: Box<Linear>,
        v: Box<Linear>,
    },
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

    /// q, k and v rows for `n` rows of `h`.
    fn rows(
        &self,
        h: &[f32],
        parts: &[usize],
        q_dim: usize,
        kv_dim: usize,
    ) -> Result<[Vec<f32>; 3]> {
        let n: usize = parts.iter().sum();
        Ok(match self {
            Qkv::Separate { q, k, v } => [q.rows(h, parts)?, k.rows(h, parts)?, v.rows(h, parts)?],
            Qkv::Fused(w) => {
                let all = w.rows(h, parts)?;
                let mut out = [
                    Vec::with_capacity(n * q_dim),
                    Vec::with_capacity(n * kv_dim),
                    Vec::with_capacity(n * kv_dim),
                ];
                for row in all.chunks_exact(q_dim + 2 * kv_dim) {
                    out[0].extend_from_slice(&row[..q_dim]);
                    out[1].extend_from_slice(&row[q_dim..q_dim + kv_dim]);
                    out[2].extend_from_slice(&row[q_dim + kv_dim..]);
                }
                out
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
    /// None: `up` is a fused `gate_up` (gate rows first): Phi-3's, or ours
    /// packed at load.
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<RmsNorm>,
    local: bool,
    rope_base: f32,
}

/// One sequence's key/value cache: every layer's keys and values and the
/// position, as after some prompt. Cloning copies it (the prefix cache
/// hands each ticket its own copy).
#[derive(Clone, Default)]
pub struct KvState {
    position: usize,
    /// Row path: per layer, each key head's key and value rows.
    rows: Vec<rows::KvRows>,
    /// candle path: per layer, (1, kv_heads, positions, head_dim) tensors.
    tensors: Vec<Option<(Tensor, Tensor)>>,
}

impl KvState {
    /// Tokens it holds.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes its keys and values take.
    pub fn bytes(&self) -> usize {
        let rows: usize = self.rows.iter().map(rows::KvRows::bytes).sum();
        let tensors: usize = self
            .tensors
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum();
        rows + tensors
    }
}

/// How the decoder runs on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderPath {
    /// On the CPU: passes over plain rows, with our Q8_0 kernel where the
    /// CPU has AVX-512 VNNI or AVX2 (weights re-quantized to Q8_0 at load,
    /// q|k|v and gate|up packed together); candle's ops on other devices.
    Auto,
    /// candle's tensor ops and quantized matmuls everywhere (the reference
    /// the fast path is tested against).
    Candle,
}

/// The model, with one sequence's key/value cache of its own (`forward`);
/// [`Decoder::forward_batch`] runs several sequences with caches of their own.
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
    output: Linear,
    device: Device,
    /// Whether forward passes run on rows (CPU) rather than candle ops.
    row_path: bool,
    /// How the row path stores keys and values.
    kv_type: rows::KvType,
    /// The sequence `forward` continues.
    state: KvState,
}

struct Loader<'a, R> {
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    device: &'a Device,
    /// Pack block-quantized weights for our Q8_0 kernel.
    pack_q8: bool,
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
        let weight = self.dense(name, len)?;
        Ok(RmsNorm {
            w: weight.to_vec1::<f32>()?,
            weight,
            eps: eps as f32,
        })
    }

    /// `{prefix}.weight`, checked to be out × inp.
    fn weight(&mut self, prefix: &str, out: usize, inp: usize) -> Result<QTensor> {
        let name = format!("{prefix}.weight");
        let w = self.qtensor(&name)?;
        if w.shape().dims() != [out, inp] {
            return Err(InferenceError::Config(format!(
                "tensor '{name}' has shape {:?}, expected [{out}, {inp}]",
                w.shape().dims()
            )));
        }
        Ok(w)
    }

    fn bias(&mut self, prefix: &str, out: usize) -> Result<Option<Tensor>> {
        let name = format!("{prefix}.bias");
        if self.has(&name) {
            Ok(Some(self.dense(&name, out)?))
        } else {
            Ok(None)
        }
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = self.weight(prefix, out, inp)?;
        let bias = self.bias(prefix, out)?;
        self.kernel(w, bias, out, inp)
            .map_err(|e| InferenceError::Config(format!("tensor '{prefix}.weight': {e}")))
    }

    fn kernel(&self, w: QTensor, bias: Option<Tensor>, out: usize, inp: usize) -> Result<Linear> {
        if self.pack_q8 && packable(w.dtype()) {
            let b = match &bias {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; out],
            };
            if let Some(q) = Q8Linear::from_rows(out, inp, &b, |rows| {
                dequantize_rows(&w, rows).unwrap_or_default()
            }) {
                return Ok(Linear {
                    kernel: Kernel::Q8(q),
                    out,
                });
            }
        }
        let w = fast_kernel(w, self.device)?;
        Ok(Linear {
            kernel: Kernel::Candle(QMatMul::from_qtensor(w)?, bias),
            out,
        })
    }

    /// Several projections of the same input packed as one Q8_0 layer (their
    /// outputs side by side, in order); `None` off the Q8_0 path or when
    /// one of them is missing or not packable.
    fn packed(&mut self, parts: &[(String, usize)], inp: usize) -> Result<Option<Linear>> {
        let packs = |ld: &Self, p: &str| {
            ld.ct
                .tensor_infos
                .get(&format!("{p}.weight"))
                .is_some_and(|i| packable(i.ggml_dtype))
        };
        if !self.pack_q8 || !parts.iter().all(|(p, _)| packs(self, p)) {
            return Ok(None);
        }
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for (prefix, out) in parts {
            let w = self.weight(prefix, *out, inp)?;
            weights.extend(dequantize_rows(&w, 0..*out)?);
            match self.bias(prefix, *out)? {
                Some(b) => biases.extend(b.to_vec1::<f32>()?),
                None => biases.extend(std::iter::repeat_n(0.0, *out)),
            }
        }
        let out = biases.len();
        Ok(Q8Linear::new(&weights, &biases, out, inp).map(|q| Linear {
            kernel: Kernel::Q8(q),
            out,
        }))
    }
}

/// Weight types the Q8_0 path re-quantizes to Q8_0: Q8_0 itself (exactly),
/// the 4/5-bit types candle's CPU kernels run slowly, and the k-quants
/// (within 1/254 of each block's largest value). Q4_0 keeps candle's kernel,
/// which computes what llama.cpp computes; float weights keep candle's GEMM.
fn packable(t: GgmlDType) -> bool {
    use GgmlDType as G;
    matches!(
        t,
        G::Q8_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q2K | G::Q3K | G::Q4K | G::Q5K | G::Q6K
    )
}

/// Rows `rows` of a 2-D quantized tensor as f32 (only those rows dequantized).
fn dequantize_rows(w: &QTensor, rows: std::ops::Range<usize>) -> candle_core::Result<Vec<f32>> {
    let ids: Vec<u32> = rows.map(|r| r as u32).collect();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?;
    w.embedding(&ids)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
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

impl<R: Read + Seek> Loader<'_, R> {
    /// Layer `i`'s weights.
    fn layer(&mut self, i: usize, c: &DecoderConfig, ff: usize) -> Result<Layer> {
        let p = format!("blk.{i}");
        let local = c.is_local(i);
        let gemma = c.family == Family::Gemma3;
        let norm = |ld: &mut Self, name: &str, len: usize| -> Result<Option<RmsNorm>> {
            Ok(Some(ld.norm(&format!("{p}.{name}.weight"), len, c.eps)?))
        };
        let (gate, up) = self.ffn(&p, c, ff)?;
        Ok(Layer {
            attn_norm: self.norm(&format!("{p}.attn_norm.weight"), c.d_model, c.eps)?,
            qkv: self.qkv(&p, c)?,
            o: self.linear(
                &format!("{p}.attn_output"),
                c.d_model,
                c.n_head * c.head_dim,
            )?,
            q_norm: if c.family.qk_norm() {
                norm(self, "attn_q_norm", c.head_dim)?
            } else {
                None
            },
            k_norm: if c.family.qk_norm() {
                norm(self, "attn_k_norm", c.head_dim)?
            } else {
                None
            },
            post_attn_norm: if gemma {
                norm(self, "post_attention_norm", c.d_model)?
            } else {
                None
            },
            ffn_norm: self.norm(&format!("{p}.ffn_norm.weight"), c.d_model, c.eps)?,
            gate,
            up,
            down: self.linear(&format!("{p}.ffn_down"), c.d_model, ff)?,
            post_ffn_norm: if gemma {
                norm(self, "post_ffw_norm", c.d_model)?
            } else {
                None
            },
            local,
            rope_base: if local && gemma {
                c.rope_base_local
            } else {
                c.rope_base
            },
        })
    }

    fn qkv(&mut self, p: &str, c: &DecoderConfig) -> Result<Qkv> {
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        // Phi-3 files usually fuse q, k and v; a missing fused tensor is
        // named as such rather than as a missing `attn_q`.
        if self.has(&format!("{p}.attn_qkv.weight"))
            || (c.family == Family::Phi3 && !self.has(&format!("{p}.attn_q.weight")))
        {
            let qkv = self.linear(&format!("{p}.attn_qkv"), q_dim + 2 * kv_dim, c.d_model)?;
            return Ok(Qkv::Fused(qkv));
        }
        let parts = [
            (format!("{p}.attn_q"), q_dim),
            (format!("{p}.attn_k"), kv_dim),
            (format!("{p}.attn_v"), kv_dim),
        ];
        if let Some(all) = self.packed(&parts, c.d_model)? {
            return Ok(Qkv::Fused(all));
        }
        let [q, k, v] = parts;
        Ok(Qkv::Separate {
            q: Box::new(self.linear(&q.0, q.1, c.d_model)?),
            k: Box::new(self.linear(&k.0, k.1, c.d_model)?),
            v: Box::new(self.linear(&v.0, v.1, c.d_model)?),
        })
    }

    /// Gate and up projections; gate `None` when `up` holds both.
    fn ffn(&mut self, p: &str, c: &DecoderConfig, ff: usize) -> Result<(Option<Linear>, Linear)> {
        if c.family == Family::Phi3 {
            return Ok((
                None,
                self.linear(&format!("{p}.ffn_up"), 2 * ff, c.d_model)?,
            ));
        }
        let parts = [(format!("{p}.ffn_gate"), ff), (format!("{p}.ffn_up"), ff)];
        if let Some(both) = self.packed(&parts, c.d_model)? {
            return Ok((None, both));
        }
        Ok((
            Some(self.linear(&parts[0].0, ff, c.d_model)?),
            self.linear(&parts[1].0, ff, c.d_model)?,
        ))
    }
}

/// One sequence's part of a batched forward pass.
pub struct Seq<'a> {
    pub state: &'a mut KvState,
    pub tokens: &'a [u32],
}

impl Decoder {
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        Self::from_gguf_with(ct, reader, device, DecoderPath::Auto)
    }

    pub fn from_gguf_with<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        path: DecoderPath,
    ) -> Result<Self> {
        let config = DecoderConfig::from_gguf(ct)?;
        let c = &config;
        let row_path = path == DecoderPath::Auto && device.is_cpu();
        let pack_q8 = row_path && super::q8::available();
        let mut ld = Loader {
            ct,
            reader,
            device,
            pack_q8,
        };
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
        let ff = md_usize(ct, &format!("{}.feed_forward_length", architecture(ct)?))?;
        let layers = (0..c.n_layer)
            .map(|i| ld.layer(i, c, ff))
            .collect::<Result<Vec<_>>>()?;
        let norm = ld.norm("output_norm.weight", c.d_model, c.eps)?;
        // Tied embeddings: no output.weight, the embedding matrix projects back.
        let output = if ld.has("output.weight") {
            ld.linear("output", vocab, c.d_model)?
        } else {
            let w = ld.qtensor("token_embd.weight")?;
            ld.kernel(w, None, vocab, c.d_model)?
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
            embed_scale: (config.family == Family::Gemma3).then(|| (config.d_model as f64).sqrt()),
            config,
            embed,
            layers,
            norm,
            output,
            device: device.clone(),
            row_path,
            kv_type: rows::KvType::default(),
            state: KvState::default(),
        })
    }

    /// Whether passes run on rows with our kernels (else candle's ops).
    pub fn fast_path(&self) -> bool {
        self.row_path
    }

    /// Forgets the cached sequence.
    pub fn reset(&mut self) {
        self.state = KvState::default();
    }

    pub fn position(&self) -> usize {
        self.state.position
    }

    /// How the row path stores keys and values (candle's path keeps f32).
    pub fn kv_type(&self) -> rows::KvType {
        if self.row_path {
            self.kv_type
        } else {
            rows::KvType::F32
        }
    }

    /// Stores keys and values as `t` from the next pass on; a sequence
    /// cached in the other type is converted when it next runs.
    pub fn set_kv_type(&mut self, t: rows::KvType) {
        self.kv_type = t;
    }

    /// Key/value bytes one token of one sequence takes.
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.config;
        2 * c.n_layer * c.n_kv_head * c.head_dim * self.kv_type().size()
    }

    /// Runs `tokens` after the cached ones; returns the logits of the last
    /// position (vocab,) as f32.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let mut state = std::mem::take(&mut self.state);
        let out = self.forward_batch(&mut [Seq {
            state: &mut state,
            tokens,
        }]);
        self.state = state;
        let logits = out?.pop().unwrap_or_default();
        let n = logits.len();
        Ok(Tensor::from_vec(logits, n, &self.device)?)
    }

    /// Runs each sequence's `tokens` after what its own cache holds, all in
    /// one pass where the row path runs (the rows of every sequence share
    /// each matmul), and returns each sequence's next-token logits. A row's
    /// numbers never depend on the other rows in the pass, so the results
    /// equal running the sequences one at a time.
    pub fn forward_batch(&self, seqs: &mut [Seq<'_>]) -> Result<Vec<Vec<f32>>> {
        for s in seqs.iter() {
            self.check_tokens(s.tokens)?;
        }
        if !self.row_path {
            return seqs
                .iter_mut()
                .map(|s| Ok(self.forward_tensors(s.state, s.tokens)?.to_vec1::<f32>()?))
                .collect();
        }
        // The whole pass on a pool thread: its many small parallel loops
        // then start from inside the pool instead of each handing work over
        // from this thread and waiting to be woken.
        rayon::scope(|_| self.forward_rows(seqs))
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(InferenceError::InvalidInput("no tokens to run".into()));
        }
        match tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            Some(bad) => Err(InferenceError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.config.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// RoPE angles of `len` positions from `start` for `layer`.
    fn rope_table(&self, layer: &Layer, start: usize, len: usize) -> rows::RopeTable {
        rows::RopeTable::new(
            layer.rope_base,
            // Gemma's local layers keep plain RoPE.
            self.rope_factors
                .as_deref()
                .filter(|_| !(layer.local && self.config.family == Family::Gemma3)),
            self.rope_scale,
            self.config.rope_dim,
            start,
            len,
        )
    }

    fn forward_rows(&self, seqs: &mut [Seq<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let ids = Tensor::new(tokens.as_slice(), &self.device)?;
        let mut x = self.embed.embedding(&ids)?.to_dtype(DType::F32)?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let mut x = x.flatten_all()?.to_vec1::<f32>()?;
        // Each sequence's rows in the pass: (first row, rows, start position).
        let mut spans = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for s in seqs.iter_mut() {
            if s.state.rows.len() != c.n_layer {
                s.state.rows = vec![rows::KvRows::default(); c.n_layer];
            }
            spans.push((row, s.tokens.len(), s.state.position));
            row += s.tokens.len();
        }
        // RoPE tables per sequence, for the global and the local base.
        let mut tables: HashMap<(usize, u32, bool), rows::RopeTable> = HashMap::new();
        for (li, layer) in self.layers.iter().enumerate() {
            for (i, &(_, t, start)) in spans.iter().enumerate() {
                let key = (i, layer.rope_base.to_bits(), layer.local);
                tables
                    .entry(key)
                    .or_insert_with(|| self.rope_table(layer, start, t));
            }
            let pass = Pass {
                c,
                kv_type: self.kv_type,
                spans: &spans,
                tables: &tables,
                layer: li,
            };
            layer.forward_rows(&mut x, seqs, &pass)?;
        }
        let d = c.d_model;
        let mut last = Vec::with_capacity(spans.len() * d);
        for (s, &(first, t, _)) in seqs.iter_mut().zip(&spans) {
            s.state.position += t;
            last.extend_from_slice(&x[(first + t - 1) * d..][..d]);
        }
        let h = self.norm.rows(&last);
        let mut logits = self.output.rows(&h, &vec![1; spans.len()])?;
        if let Some(cap) = c.final_softcap {
            let cap = cap as f32;
            for v in &mut logits {
                *v = (*v / cap).tanh() * cap;
            }
        }
        Ok(logits
            .chunks_exact(c.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The candle path: one sequence through candle's ops.
    fn forward_tensors(&self, state: &mut KvState, tokens: &[u32]) -> Result<Tensor> {
        let t = tokens.len();
        let start = state.position;
        let c = &self.config;
        if state.tensors.len() != c.n_layer {
            state.tensors = vec![None; c.n_layer];
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.reshape((1, t, c.d_model))?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let mut tables: HashMap<(u32, bool), (Tensor, Tensor)> = HashMap::new();
        for (layer, cache) in self.layers.iter().zip(state.tensors.iter_mut()) {
            let key = (layer.rope_base.to_bits(), layer.local);
            let (cos, sin) = match tables.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let tb = self.rope_table(layer, start, t);
                    let half = tb.half;
                    e.insert((
                        Tensor::from_vec(tb.cos, (t, half), &self.device)?,
                        Tensor::from_vec(tb.sin, (t, half), &self.device)?,
                    ))
                }
            };
            x = layer.forward(&x, c, start, cos, sin, cache)?;
        }
        state.position += t;
        let last = x.narrow(1, t - 1, 1)?;
        let last = self.norm.forward(&last)?;
        let mut logits = self.output.forward(&last)?;
        if let Some(cap) = self.config.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
    }
}

/// What a layer's row pass needs to know of the whole pass.
struct Pass<'a> {
    c: &'a DecoderConfig,
    kv_type: rows::KvType,
    /// Per sequence: first row, rows, start position.
    spans: &'a [(usize, usize, usize)],
    /// RoPE tables by (sequence, base, local).
    tables: &'a HashMap<(usize, u32, bool), rows::RopeTable>,
    layer: usize,
}

impl Layer {
    /// The row path: `x` holds every sequence's rows of the pass.
    fn forward_rows(&self, x: &mut [f32], seqs: &mut [Seq<'_>], p: &Pass<'_>) -> Result<()> {
        let c = p.c;
        let (d, hd) = (c.d_model, c.head_dim);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_kv_head * hd);
        let n = x.len() / d;
        let parts: Vec<usize> = p.spans.iter().map(|s| s.1).collect();
        let parts = parts.as_slice();
        let h = self.attn_norm.rows(x);
        let [mut q, mut k, v] = self.qkv.rows(&h, parts, q_dim, kv_dim)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            rows::head_norm(&mut q, &qn.w, qn.eps);
            rows::head_norm(&mut k, &kn.w, kn.eps);
        }
        let interleaved = c.family == Family::Llama;
        let attention = rows::Attention {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window: if self.local { c.sliding_window } else { None },
        };
        for (i, (s, &(first, t, _))) in seqs.iter_mut().zip(p.spans).enumerate() {
            let table = &p.tables[&(i, self.rope_base.to_bits(), self.local)];
            let qs = &mut q[first * q_dim..(first + t) * q_dim];
            let ks = &mut k[first * kv_dim..(first + t) * kv_dim];
            rows::rope(qs, q_dim, hd, table, interleaved);
            rows::rope(ks, kv_dim, hd, table, interleaved);
            s.state.rows[p.layer].append(
                p.kv_type,
                ks,
                &v[first * kv_dim..(first + t) * kv_dim],
                c.n_kv_head,
                hd,
            );
        }
        // Every sequence's attention in one parallel call.
        let mut attn = vec![0f32; n * q_dim];
        let mut rest = attn.as_mut_slice();
        let mut jobs = Vec::with_capacity(seqs.len());
        for (s, &(first, t, start)) in seqs.iter().zip(p.spans) {
            let (out, tail) = std::mem::take(&mut rest).split_at_mut(t * q_dim);
            rest = tail;
            jobs.push(rows::Job {
                q: &q[first * q_dim..(first + t) * q_dim],
                cache: &s.state.rows[p.layer],
                start,
                out,
            });
        }
        attention.run_all(jobs);
        let mut out = self.o.rows(&attn, parts)?;
        if let Some(norm) = &self.post_attn_norm {
            out = norm.rows(&out);
        }
        rows::add_in_place(x, &out);

        let h = self.ffn_norm.rows(x);
        let act_fn = match c.family {
            Family::Gemma3 => rows::Act::GeluTanh,
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => rows::Act::Silu,
        };
        let mut act = match &self.gate {
            Some(g) => {
                let mut gate = g.rows(&h, parts)?;
                let ff = gate.len() / n;
                rows::gate_in_place(&mut gate, &self.up.rows(&h, parts)?, ff, act_fn);
                gate
            }
            None => {
                let both = self.up.rows(&h, parts)?;
                rows::gated(&both, both.len() / n / 2, act_fn)
            }
        };
        act = self.down.rows(&act, parts)?;
        if let Some(norm) = &self.post_ffn_norm {
            act = norm.rows(&act);
        }
        rows::add_in_place(x, &act);
        Ok(())
    }

    /// The candle path for one sequence whose layer cache is `cache`.
    fn forward(
        &self,
        x: &Tensor,
        c: &DecoderConfig,
        start: usize,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
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
        let (k, v) = match cache.as_ref() {
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
        *cache = Some((k.clone(), v.clone()));
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
