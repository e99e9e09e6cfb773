//! BART for sequence classification (`BartForSequenceClassification`), laid
//! out like candle-transformers' model files: `Config` from config.json, one
//! struct per layer, `load(vb, cfg)` and `forward`.
//!
//! Follows transformers' modeling_bart.py: shared token embeddings, learned
//! positions offset by 2, `layernorm_embedding`, post-layer-norm encoder and
//! decoder layers, decoder input = input shifted right, and a classification
//! head (dense → tanh → out_proj) on the decoder state of each sequence's last
//! `</s>`. Linear layers can be quantized (Q8_0 …) at load time.

use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, LayerNorm, VarBuilder};
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
    Dense(candle_nn::Linear),
    Quantized { w: QMatMul, b: Tensor },
}

impl Proj {
    fn load(
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
        quant: Option<GgmlDType>,
    ) -> Result<Self> {
        Self::load_scaled(in_dim, out_dim, vb, quant, 1.0)
    }

    /// Loads `scale · (W x + b)` as one layer (folds attention's 1/√d into q_proj).
    fn load_scaled(
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
        quant: Option<GgmlDType>,
        scale: f64,
    ) -> Result<Self> {
        let mut w = vb.get((out_dim, in_dim), "weight")?;
        let mut b = vb.get(out_dim, "bias")?;
        if scale != 1.0 {
            w = (w * scale)?;
            b = (b * scale)?;
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
            _ => Ok(Proj::Dense(candle_nn::Linear::new(w, Some(b)))),
        }
    }
}

impl Module for Proj {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Dense(l) => l.forward(xs),
            Proj::Quantized { w, b } => {
                let dtype = xs.dtype();
                w.forward(&xs.to_dtype(DType::F32)?)?
                    .broadcast_add(b)?
                    .to_dtype(dtype)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Proj,
    k_proj: Proj,
    v_proj: Proj,
    out_proj: Proj,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let head_dim = d / heads;
        Ok(Attention {
            q_proj: Proj::load_scaled(d, d, vb.pp("q_proj"), quant, (head_dim as f64).powf(-0.5))?,
            k_proj: Proj::load(d, d, vb.pp("k_proj"), quant)?,
            v_proj: Proj::load(d, d, vb.pp("v_proj"), quant)?,
            out_proj: Proj::load(d, d, vb.pp("out_proj"), quant)?,
            heads,
            head_dim,
        })
    }

    /// Packed rows (n, d) → padded heads (b, heads, t, head_dim).
    fn heads(&self, packed: &Tensor, l: &Layout) -> Result<Tensor> {
        packed
            .index_select(&l.pad_idx, 0)?
            .reshape((l.b, l.t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `kv` is the encoder output for cross-attention, `None` for
    /// self-attention; `mask` is additive and broadcasts to (b, heads, t, t).
    fn forward(
        &self,
        xs: &Tensor,
        kv: Option<&Tensor>,
        mask: &Tensor,
        l: &Layout,
    ) -> Result<Tensor> {
        let kv = kv.unwrap_or(xs);
        let q = self.heads(&self.q_proj.forward(xs)?, l)?;
        let k = self.heads(&self.k_proj.forward(kv)?, l)?;
        let v = self.heads(&self.v_proj.forward(kv)?, l)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let d = self.heads * self.head_dim;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((l.b * l.t, d))?
            .index_select(&l.pack_idx, 0)?;
        self.out_proj.forward(&out)
    }
}

impl Attention {
    /// Attention for one query row per sequence (`q_rows`: (b, d)) over all
    /// keys of that sequence; `mask` is (b, 1, 1, t).
    fn forward_rows(
        &self,
        q_rows: &Tensor,
        kv: &Tensor,
        mask: &Tensor,
        l: &Layout,
    ) -> Result<Tensor> {
        let b = l.b;
        let q = self
            .q_proj
            .forward(q_rows)?
            .reshape((b, self.heads, 1, self.head_dim))?;
        let k = self.heads(&self.k_proj.forward(kv)?, l)?;
        let v = self.heads(&self.v_proj.forward(kv)?, l)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.reshape((b, self.heads * self.head_dim))?;
        self.out_proj.forward(&out)
    }
}

/// How a batch of unpadded sequences sits in the packed (n, d) rows and in
/// the padded (b, t) view that attention uses.
struct Layout {
    b: usize,
    t: usize,
    /// For each padded slot, a packed row: the token's, or any row of the same
    /// sequence for padding (masked as a key, discarded as a query).
    pad_idx: Tensor,
    /// For each packed row, its padded slot.
    pack_idx: Tensor,
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
            .forward(&super::ops::activate(self.act, &self.fc1.forward(xs)?)?)
    }
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(d, 1e-5, vb)
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn load(cfg: &Config, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let d = cfg.d_model;
        Ok(EncoderLayer {
            self_attn: Attention::load(d, cfg.encoder_attention_heads, vb.pp("self_attn"), quant)?,
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

    fn forward(&self, xs: &Tensor, mask: &Tensor, l: &Layout) -> Result<Tensor> {
        let h = (xs + self.self_attn.forward(xs, None, mask, l)?)?;
        let h = self.self_attn_layer_norm.forward(&h)?;
        let out = (&h + self.ffn.forward(&h)?)?;
        self.final_layer_norm.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn load(cfg: &Config, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let d = cfg.d_model;
        Ok(DecoderLayer {
            self_attn: Attention::load(d, cfg.decoder_attention_heads, vb.pp("self_attn"), quant)?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::load(
                d,
                cfg.decoder_attention_heads,
                vb.pp("encoder_attn"),
                quant,
            )?,
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

    fn forward(
        &self,
        xs: &Tensor,
        enc: &Tensor,
        causal: &Tensor,
        enc_mask: &Tensor,
        l: &Layout,
    ) -> Result<Tensor> {
        let h = (xs + self.self_attn.forward(xs, None, causal, l)?)?;
        let h = self.self_attn_layer_norm.forward(&h)?;
        let h = (&h + self.encoder_attn.forward(&h, Some(enc), enc_mask, l)?)?;
        let h = self.encoder_attn_layer_norm.forward(&h)?;
        let out = (&h + self.ffn.forward(&h)?)?;
        self.final_layer_norm.forward(&out)
    }
}

impl DecoderLayer {
    /// The layer's output for `rows` only (each sequence's last `</s>`);
    /// `upto` masks the keys after that row, as the causal mask would.
    fn forward_rows(
        &self,
        xs: &Tensor,
        enc: &Tensor,
        upto: &Tensor,
        enc_mask: &Tensor,
        rows: &Tensor,
        l: &Layout,
    ) -> Result<Tensor> {
        let x = xs.index_select(rows, 0)?;
        let h = (&x + self.self_attn.forward_rows(&x, xs, upto, l)?)?;
        let h = self.self_attn_layer_norm.forward(&h)?;
        let h = (&h + self.encoder_attn.forward_rows(&h, enc, enc_mask, l)?)?;
        let h = self.encoder_attn_layer_norm.forward(&h)?;
        let out = (&h + self.ffn.forward(&h)?)?;
        self.final_layer_norm.forward(&out)
    }
}

/// Token embedding × scale + learned positions (offset 2), then `layernorm_embedding`.
#[derive(Debug, Clone)]
struct Embeddings {
    positions: Tensor,
    layernorm: LayerNorm,
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
        self.layernorm.forward(&(tokens + pos)?)
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
    dtype: DType,
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
            dtype: vb.dtype(),
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
    /// attention runs on a padded view with masks.
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
        let (mut pad_idx, mut pack_idx) = (Vec::with_capacity(b * t), Vec::with_capacity(n));
        let mut mask = Vec::with_capacity(b * t);
        let mut upto = Vec::with_capacity(b * t);
        let mut eos_rows = Vec::with_capacity(b);
        let mut offset = 0usize;
        for (row, s) in seqs.iter().enumerate() {
            let Some(last_eos) = s.iter().rposition(|&id| id == eos) else {
                candle_core::bail!("sequence {row} has no </s> token");
            };
            eos_rows.push((offset + last_eos) as u32);
            for (i, &id) in s.iter().enumerate() {
                ids.push(id);
                // shift_tokens_right: decoder_start, then the input without its last token.
                dec.push(if i == 0 {
                    self.cfg.decoder_start_token_id
                } else {
                    s[i - 1]
                });
                pos.push(i as u32 + 2);
                pack_idx.push((row * t + i) as u32);
            }
            for i in 0..t {
                let valid = i < s.len();
                pad_idx.push((offset + if valid { i } else { 0 }) as u32);
                mask.push(if valid { 0.0f32 } else { f32::MIN });
                upto.push(if i <= last_eos { 0.0f32 } else { f32::MIN });
            }
            offset += s.len();
        }
        let dev = &self.device;
        let layout = Layout {
            b,
            t,
            pad_idx: Tensor::from_vec(pad_idx, b * t, dev)?,
            pack_idx: Tensor::from_vec(pack_idx, n, dev)?,
        };
        let ids = Tensor::from_vec(ids, n, dev)?;
        let dec = Tensor::from_vec(dec, n, dev)?;
        let pos = Tensor::from_vec(pos, n, dev)?;
        let enc_mask = Tensor::from_vec(mask, (b, 1, 1, t), dev)?.to_dtype(self.dtype)?;
        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), dev)?.to_dtype(self.dtype)?;

        let mut h = self.encoder_embeddings.forward(&self.embed(&ids)?, &pos)?;
        for layer in &self.encoder_layers {
            h = layer.forward(&h, &enc_mask, &layout)?;
        }
        let enc = h;
        let upto = Tensor::from_vec(upto, (b, 1, 1, t), dev)?.to_dtype(self.dtype)?;
        let rows = Tensor::from_vec(eos_rows, b, dev)?;
        let mut h = self.decoder_embeddings.forward(&self.embed(&dec)?, &pos)?;
        let Some((last, rest)) = self.decoder_layers.split_last() else {
            candle_core::bail!("the model has no decoder layers");
        };
        for layer in rest {
            h = layer.forward(&h, &enc, &causal, &enc_mask, &layout)?;
        }
        // The head reads only each sequence's last </s>: the last layer computes just those rows.
        let sentence = last.forward_rows(&h, &enc, &upto, &enc_mask, &rows, &layout)?;
        let x = self.head_dense.forward(&sentence)?.tanh()?;
        self.head_out.forward(&x)?.to_dtype(DType::F32)
    }
}
