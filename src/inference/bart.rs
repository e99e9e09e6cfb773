//! BART for sequence classification (`BartForSequenceClassification`), laid
//! out like candle-transformers' model files: `Config` from config.json, one
//! struct per layer, `load(vb, cfg)` and `forward`.
//!
//! Follows transformers' modeling_bart.py: shared token embeddings, learned
//! positions offset by 2, `layernorm_embedding`, post-layer-norm encoder and
//! decoder layers, decoder input = input shifted right, and a classification
//! head (dense → tanh → out_proj) on the decoder state of each sequence's last
//! `</s>`. Linear layers can be quantized (Q8_0 …) at load time.

use std::cell::OnceCell;
use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, VarBuilder};

use super::{fused, q8};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    pub activation_function: Activation,
    #[serde(default)]
    pub scale_embedding: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    #[serde(default)]
    pub id2label: HashMap<String, String>,
    #[serde(default)]
    pub label2id: HashMap<String, usize>,
}

impl Config {
    /// Checks what the layers assume, so a bad config.json fails with a
    /// message instead of a shape error deep in a forward pass.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let heads = [
            ("encoder", self.encoder_attention_heads),
            ("decoder", self.decoder_attention_heads),
        ];
        for (name, h) in heads {
            if h == 0 || !self.d_model.is_multiple_of(h) {
                return Err(format!(
                    "d_model {} is not divisible by {name}_attention_heads {h}",
                    self.d_model
                ));
            }
        }
        if self.d_model == 0 || self.vocab_size == 0 || self.max_position_embeddings == 0 {
            return Err("d_model, vocab_size and max_position_embeddings must be positive".into());
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 {
            return Err("encoder_layers and decoder_layers must be at least 1".into());
        }
        if self.num_labels() == 0 {
            return Err("id2label is empty: not a sequence-classification model".into());
        }
        Ok(())
    }

    pub fn num_labels(&self) -> usize {
        self.id2label.len().max(self.label2id.len())
    }
}

/// A linear layer with bias, dense or quantized.
#[derive(Debug, Clone)]
pub enum Proj {
    Dense {
        w: Tensor,
        b: Tensor,
    },
    /// Q8_0 with our kernel (AVX-512 VNNI or AVX2, CPU).
    Q8 {
        w: q8::Q8Linear,
    },
    Quantized {
        w: QMatMul,
        b: Tensor,
    },
}

impl Proj {
    fn load(
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
        quant: Option<GgmlDType>,
    ) -> Result<Self> {
        Self::load_stacked(in_dim, out_dim, &[(vb, 1.0)], quant)
    }

    /// Several `scale · (W x + b)` layers of the same input stacked into one
    /// (their outputs side by side): one GEMM instead of several, e.g. q|k|v.
    fn load_stacked(
        in_dim: usize,
        out_dim: usize,
        parts: &[(VarBuilder, f64)],
        quant: Option<GgmlDType>,
    ) -> Result<Self> {
        let mut ws = Vec::with_capacity(parts.len());
        let mut bs = Vec::with_capacity(parts.len());
        for (vb, scale) in parts {
            let (w, b) = (
                vb.get((out_dim, in_dim), "weight")?,
                vb.get(out_dim, "bias")?,
            );
            // Attention's 1/√d is folded into q_proj.
            let (w, b) = if *scale == 1.0 {
                (w, b)
            } else {
                ((w * *scale)?, (b * *scale)?)
            };
            ws.push(w);
            bs.push(b);
        }
        let (w, b) = (Tensor::cat(&ws, 0)?, Tensor::cat(&bs, 0)?);
        if quant == Some(GgmlDType::Q8_0) && w.device().is_cpu() {
            let (wf, bf) = (w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            let (rows, cols) = wf.dims2()?;
            let packed = q8::Q8Linear::new(
                &wf.flatten_all()?.to_vec1::<f32>()?,
                &bf.to_vec1::<f32>()?,
                rows,
                cols,
            );
            if let Some(w) = packed {
                return Ok(Proj::Q8 { w });
            }
        }
        match quant {
            // Quantized kernels need whole blocks along the input dimension.
            Some(q) if in_dim.is_multiple_of(q.block_size()) => {
                let qt = QTensor::quantize(&w.to_dtype(DType::F32)?, q)?;
                Ok(Proj::Quantized {
                    w: QMatMul::from_qtensor(qt)?,
                    b: b.to_dtype(DType::F32)?,
                })
            }
            _ => Ok(Proj::Dense { w, b }),
        }
    }
}

impl Module for Proj {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Dense { w, b } => fused::linear(xs, w, b),
            Proj::Q8 { w } => {
                let dtype = xs.dtype();
                xs.to_dtype(DType::F32)?
                    .contiguous()?
                    .apply_op1_no_bwd(&q8::Q8Op(w))?
                    .to_dtype(dtype)
            }
            Proj::Quantized { w, b } => {
                let dtype = xs.dtype();
                fused::add_bias(w.forward(&xs.to_dtype(DType::F32)?)?, b)?.to_dtype(dtype)
            }
        }
    }
}

/// Self-attention projects q|k|v from its input in one layer;
/// cross-attention projects q from the decoder and k|v from the encoder.
#[derive(Debug, Clone)]
enum Projections {
    SelfAttention { qkv: Proj },
    Cross { q: Proj, kv: Proj },
}

#[derive(Debug, Clone)]
struct Attention {
    proj: Projections,
    out_proj: Proj,
    heads: usize,
    head_dim: usize,
}

/// Which rows of the input are queries.
#[derive(Debug, Clone, Copy)]
enum Queries<'a> {
    All,
    /// These rows, one per sequence (each sequence's last `</s>`).
    Rows(&'a Tensor),
    /// The input already holds one row per sequence.
    PerSequence,
}

impl Queries<'_> {
    fn one_per_sequence(&self) -> bool {
        !matches!(self, Queries::All)
    }
}

/// Which keys a query sees, beyond its own sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mask {
    /// Every key of the sequence (encoder self-attention, cross-attention).
    Full,
    /// Keys up to the query's position (decoder self-attention).
    Causal,
}

impl Attention {
    fn load(
        d: usize,
        heads: usize,
        cross: bool,
        vb: VarBuilder,
        quant: Option<GgmlDType>,
    ) -> Result<Self> {
        let head_dim = d / heads;
        let q = (vb.pp("q_proj"), (head_dim as f64).powf(-0.5));
        let (k, v) = ((vb.pp("k_proj"), 1.0), (vb.pp("v_proj"), 1.0));
        let proj = if cross {
            Projections::Cross {
                q: Proj::load_stacked(d, d, &[q], quant)?,
                kv: Proj::load_stacked(d, d, &[k, v], quant)?,
            }
        } else {
            Projections::SelfAttention {
                qkv: Proj::load_stacked(d, d, &[q, k, v], quant)?,
            }
        };
        Ok(Attention {
            proj,
            out_proj: Proj::load(d, d, vb.pp("out_proj"), quant)?,
            heads,
            head_dim,
        })
    }

    /// Queries, keys and values (packed rows) for the queries `xs` and the
    /// keys' source `kv` (the encoder output; `xs` for self-attention).
    fn qkv(
        &self,
        xs: &Tensor,
        kv: Option<&Tensor>,
        queries: Queries,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = self.heads * self.head_dim;
        match &self.proj {
            Projections::SelfAttention { qkv } => {
                let all = qkv.forward(xs)?;
                let q = match queries {
                    Queries::Rows(r) => all.index_select(r, 0)?.narrow(1, 0, d)?,
                    _ => all.narrow(1, 0, d)?,
                };
                Ok((q, all.narrow(1, d, d)?, all.narrow(1, 2 * d, d)?))
            }
            Projections::Cross { q, kv: kv_proj } => {
                let Some(kv) = kv else {
                    candle_core::bail!("cross-attention without encoder states");
                };
                let q = match queries {
                    Queries::Rows(r) => q.forward(&xs.index_select(r, 0)?)?,
                    _ => q.forward(xs)?,
                };
                let kv = kv_proj.forward(kv)?;
                Ok((q, kv.narrow(1, 0, d)?, kv.narrow(1, d, d)?))
            }
        }
    }

    /// Attention for the `queries` among the packed rows of `xs`.
    fn forward(
        &self,
        xs: &Tensor,
        kv: Option<&Tensor>,
        mask: Mask,
        queries: Queries,
        l: &Layout,
    ) -> Result<Tensor> {
        let (q, k, v) = self.qkv(xs, kv, queries)?;
        let one_row = queries.one_per_sequence();
        let out = if fused::is_fast(&q) {
            let spans = if one_row { &l.row_spans } else { &l.spans };
            fused::attention(&q, &k, &v, spans, self.heads, mask == Mask::Causal)?
        } else {
            self.padded(&q, &k, &v, mask, one_row, l)?
        };
        self.out_proj.forward(&out)
    }

    /// Packed rows (n, d) → padded heads (b, heads, t, head_dim).
    fn heads(&self, packed: &Tensor, l: &Layout) -> Result<Tensor> {
        packed
            .contiguous()?
            .index_select(&l.pad_idx, 0)?
            .reshape((l.b, l.t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Attention with candle ops on a padded (b, heads, t, head_dim) view and
    /// additive masks: the path for GPUs and half precision.
    fn padded(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Mask,
        one_row: bool,
        l: &Layout,
    ) -> Result<Tensor> {
        let (b, d) = (l.b, self.heads * self.head_dim);
        let masks = l.masks(q.device(), q.dtype())?;
        let (q, mask) = if one_row {
            let q = q.contiguous()?.reshape((b, self.heads, 1, self.head_dim))?;
            // The query row is each sequence's last </s>: keys after it are hidden.
            (
                q,
                if mask == Mask::Causal {
                    &masks.upto
                } else {
                    &masks.keys
                },
            )
        } else {
            let mask = match mask {
                Mask::Full => &masks.keys,
                Mask::Causal => &masks.causal,
            };
            (self.heads(q, l)?, mask)
        };
        let (k, v) = (self.heads(k, l)?, self.heads(v, l)?);
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?;
        if one_row {
            out.reshape((b, d))
        } else {
            out.reshape((b * l.t, d))?.index_select(&l.pack_idx, 0)
        }
    }
}

/// How a batch of unpadded sequences sits in the packed (n, d) rows, and in
/// the padded (b, t) view that the candle attention path uses.
struct Layout {
    b: usize,
    t: usize,
    /// Each sequence's rows, queries and keys alike.
    spans: Vec<fused::Span>,
    /// One query row per sequence (its last `</s>`), keys as in `spans`.
    row_spans: Vec<fused::Span>,
    /// For each padded slot, a packed row: the token's, or any row of the same
    /// sequence for padding (masked as a key, discarded as a query).
    pad_idx: Tensor,
    /// For each packed row, its padded slot.
    pack_idx: Tensor,
    /// Built on first use by the padded path, then shared by every layer.
    masks: OnceCell<Masks>,
}

/// Additive masks for the padded path.
struct Masks {
    /// Padding keys hidden: (b, 1, 1, t).
    keys: Tensor,
    /// Later positions hidden: (1, 1, t, t).
    causal: Tensor,
    /// Keys after each sequence's last `</s>` hidden: (b, 1, 1, t).
    upto: Tensor,
}

impl Layout {
    fn new(seqs: &[&[u32]], eos_pos: &[usize], dev: &Device) -> Result<Self> {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let (mut pad_idx, mut pack_idx) = (Vec::with_capacity(b * t), Vec::with_capacity(n));
        let (mut spans, mut row_spans) = (Vec::with_capacity(b), Vec::with_capacity(b));
        let mut offset = 0usize;
        for (row, (s, &eos)) in seqs.iter().zip(eos_pos).enumerate() {
            let len = s.len();
            spans.push(fused::Span {
                q_start: offset,
                q_len: len,
                k_start: offset,
                k_len: len,
                q_pos: 0,
            });
            row_spans.push(fused::Span {
                q_start: row,
                q_len: 1,
                k_start: offset,
                k_len: len,
                q_pos: eos,
            });
            pack_idx.extend((0..len).map(|i| (row * t + i) as u32));
            pad_idx.extend((0..t).map(|i| (offset + if i < len { i } else { 0 }) as u32));
            offset += len;
        }
        Ok(Layout {
            b,
            t,
            spans,
            row_spans,
            pad_idx: Tensor::from_vec(pad_idx, b * t, dev)?,
            pack_idx: Tensor::from_vec(pack_idx, n, dev)?,
            masks: OnceCell::new(),
        })
    }

    fn masks(&self, dev: &Device, dtype: DType) -> Result<&Masks> {
        if let Some(m) = self.masks.get() {
            return Ok(m);
        }
        let (b, t) = (self.b, self.t);
        let hide = |hidden: bool| if hidden { f32::MIN } else { 0.0 };
        // row_spans hold each sequence's length (k_len) and last </s> (q_pos).
        let keys: Vec<f32> = self
            .row_spans
            .iter()
            .flat_map(|s| (0..t).map(move |i| hide(i >= s.k_len)))
            .collect();
        let upto: Vec<f32> = self
            .row_spans
            .iter()
            .flat_map(|s| (0..t).map(move |i| hide(i > s.q_pos)))
            .collect();
        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| hide(j > i)))
            .collect();
        let masks = Masks {
            keys: Tensor::from_vec(keys, (b, 1, 1, t), dev)?.to_dtype(dtype)?,
            causal: Tensor::from_vec(causal, (1, 1, t, t), dev)?.to_dtype(dtype)?,
            upto: Tensor::from_vec(upto, (b, 1, 1, t), dev)?.to_dtype(dtype)?,
        };
        Ok(self.masks.get_or_init(|| masks))
    }
}

#[derive(Debug, Clone)]
struct FeedForward {
    fc1: Proj,
    fc2: Proj,
    act: Activation,
}

impl FeedForward {
    fn load(
        d: usize,
        ffn: usize,
        act: Activation,
        vb: VarBuilder,
        quant: Option<GgmlDType>,
    ) -> Result<Self> {
        Ok(FeedForward {
            fc1: Proj::load(d, ffn, vb.pp("fc1"), quant)?,
            fc2: Proj::load(ffn, d, vb.pp("fc2"), quant)?,
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&fused::activate(self.act, self.fc1.forward(xs)?)?)
    }
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<fused::AddNorm> {
    fused::AddNorm::new(vb.get(d, "weight")?, vb.get(d, "bias")?, 1e-5)
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: fused::AddNorm,
    ffn: FeedForward,
    final_layer_norm: fused::AddNorm,
}

impl EncoderLayer {
    fn load(cfg: &Config, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let d = cfg.d_model;
        Ok(EncoderLayer {
            self_attn: Attention::load(
                d,
                cfg.encoder_attention_heads,
                false,
                vb.pp("self_attn"),
                quant,
            )?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            ffn: FeedForward::load(
                d,
                cfg.encoder_ffn_dim,
                cfg.activation_function,
                vb.clone(),
                quant,
            )?,
            final_layer_norm: layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, l: &Layout) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(xs, None, Mask::Full, Queries::All, l)?;
        let h = self.self_attn_layer_norm.forward(xs, &attn)?;
        self.final_layer_norm.forward(&h, &self.ffn.forward(&h)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: fused::AddNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: fused::AddNorm,
    ffn: FeedForward,
    final_layer_norm: fused::AddNorm,
}

impl DecoderLayer {
    fn load(cfg: &Config, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let (d, heads) = (cfg.d_model, cfg.decoder_attention_heads);
        Ok(DecoderLayer {
            self_attn: Attention::load(d, heads, false, vb.pp("self_attn"), quant)?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::load(d, heads, true, vb.pp("encoder_attn"), quant)?,
            encoder_attn_layer_norm: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
            ffn: FeedForward::load(
                d,
                cfg.decoder_ffn_dim,
                cfg.activation_function,
                vb.clone(),
                quant,
            )?,
            final_layer_norm: layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    /// The layer's output for every row, or with `rows` (each sequence's last
    /// `</s>`) for those rows only: the head reads nothing else, and a causal
    /// query at the last `</s>` sees the same keys either way.
    fn forward(
        &self,
        xs: &Tensor,
        enc: &Tensor,
        rows: Option<&Tensor>,
        l: &Layout,
    ) -> Result<Tensor> {
        let (queries, cross_queries, x) = match rows {
            Some(r) => (
                Queries::Rows(r),
                Queries::PerSequence,
                xs.index_select(r, 0)?,
            ),
            None => (Queries::All, Queries::All, xs.clone()),
        };
        let attn = self.self_attn.forward(xs, None, Mask::Causal, queries, l)?;
        let h = self.self_attn_layer_norm.forward(&x, &attn)?;
        let cross = self
            .encoder_attn
            .forward(&h, Some(enc), Mask::Full, cross_queries, l)?;
        let h = self.encoder_attn_layer_norm.forward(&h, &cross)?;
        self.final_layer_norm.forward(&h, &self.ffn.forward(&h)?)
    }
}

/// Token embedding × scale + learned positions (offset 2), then `layernorm_embedding`.
#[derive(Debug, Clone)]
struct Embeddings {
    positions: Tensor,
    layernorm: fused::AddNorm,
}

impl Embeddings {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let positions = vb.get(
            (cfg.max_position_embeddings + 2, cfg.d_model),
            "embed_positions.weight",
        )?;
        Ok(Embeddings {
            positions,
            layernorm: layer_norm(cfg.d_model, vb.pp("layernorm_embedding"))?,
        })
    }

    /// `positions` holds each packed row's position plus BART's offset of 2.
    fn forward(&self, tokens: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let pos = self.positions.index_select(positions, 0)?;
        self.layernorm.forward(tokens, &pos)
    }
}

#[derive(Debug, Clone)]
pub struct BartForSequenceClassification {
    shared: Embedding,
    embed_scale: f64,
    encoder_embeddings: Embeddings,
    encoder_layers: Vec<EncoderLayer>,
    decoder_embeddings: Embeddings,
    decoder_layers: Vec<DecoderLayer>,
    head_dense: Proj,
    head_out: Proj,
    cfg: Config,
    device: Device,
}

impl BartForSequenceClassification {
    pub fn load(vb: VarBuilder, cfg: &Config, quant: Option<GgmlDType>) -> Result<Self> {
        let d = cfg.d_model;
        let m = vb.pp("model");
        // The shared embedding is stored once; older checkpoints name it per side.
        let shared_name = ["shared", "encoder.embed_tokens", "decoder.embed_tokens"]
            .into_iter()
            .find(|n| m.contains_tensor(&format!("{n}.weight")))
            .unwrap_or("shared");
        let shared = candle_nn::embedding(cfg.vocab_size, d, m.pp(shared_name))?;
        let encoder_layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::load(cfg, m.pp(format!("encoder.layers.{i}")), quant))
            .collect::<Result<Vec<_>>>()?;
        let decoder_layers = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::load(cfg, m.pp(format!("decoder.layers.{i}")), quant))
            .collect::<Result<Vec<_>>>()?;
        let head = vb.pp("classification_head");
        Ok(BartForSequenceClassification {
            shared,
            embed_scale: if cfg.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            encoder_embeddings: Embeddings::load(cfg, m.pp("encoder"))?,
            encoder_layers,
            decoder_embeddings: Embeddings::load(cfg, m.pp("decoder"))?,
            decoder_layers,
            head_dense: Proj::load(d, d, head.pp("dense"), quant)?,
            head_out: Proj::load(d, cfg.num_labels(), head.pp("out_proj"), None)?,
            cfg: cfg.clone(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let e = self.shared.forward(ids)?;
        if self.embed_scale == 1.0 {
            Ok(e)
        } else {
            e * self.embed_scale
        }
    }

    /// Logits (batch, num_labels) for unpadded token sequences, each holding
    /// `</s>`. Linear layers run on the packed tokens only (no padding);
    /// attention sees each sequence's own rows (see [`Layout`]).
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Tensor> {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || t == 0 || seqs.iter().any(|s| s.is_empty()) {
            candle_core::bail!("empty batch or empty sequence");
        }
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} tokens exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let eos = self.cfg.eos_token_id;
        let (mut ids, mut dec, mut pos) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut eos_pos, mut eos_rows) = (Vec::with_capacity(b), Vec::with_capacity(b));
        let mut offset = 0usize;
        for (row, s) in seqs.iter().enumerate() {
            let Some(last_eos) = s.iter().rposition(|&id| id == eos) else {
                candle_core::bail!("sequence {row} has no </s> token");
            };
            eos_pos.push(last_eos);
            eos_rows.push((offset + last_eos) as u32);
            ids.extend_from_slice(s);
            // shift_tokens_right: decoder_start, then the input without its last token.
            dec.push(self.cfg.decoder_start_token_id);
            dec.extend_from_slice(&s[..s.len() - 1]);
            pos.extend((0..s.len() as u32).map(|i| i + 2));
            offset += s.len();
        }
        let dev = &self.device;
        let layout = Layout::new(seqs, &eos_pos, dev)?;
        let ids = Tensor::from_vec(ids, n, dev)?;
        let dec = Tensor::from_vec(dec, n, dev)?;
        let pos = Tensor::from_vec(pos, n, dev)?;

        let mut h = self.encoder_embeddings.forward(&self.embed(&ids)?, &pos)?;
        for layer in &self.encoder_layers {
            h = layer.forward(&h, &layout)?;
        }
        let enc = h;
        let mut h = self.decoder_embeddings.forward(&self.embed(&dec)?, &pos)?;
        let Some((last, rest)) = self.decoder_layers.split_last() else {
            candle_core::bail!("the model has no decoder layers");
        };
        for layer in rest {
            h = layer.forward(&h, &enc, None, &layout)?;
        }
        // The head reads only each sequence's last </s>: the last layer computes just those rows.
        let rows = Tensor::from_vec(eos_rows, b, dev)?;
        let sentence = last.forward(&h, &enc, Some(&rows), &layout)?;
        let x = self.head_dense.forward(&sentence)?.tanh()?;
        self.head_out.forward(&x)?.to_dtype(DType::F32)
    }
}
