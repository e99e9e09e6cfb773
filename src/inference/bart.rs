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
        let w = vb.get((out_dim, in_dim), "weight")?;
        let b = vb.get(out_dim, "bias")?;
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
    scaling: f64,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder, quant: Option<GgmlDType>) -> Result<Self> {
        let head_dim = d / heads;
        Ok(Attention {
            q_proj: Proj::load(d, d, vb.pp("q_proj"), quant)?,
            k_proj: Proj::load(d, d, vb.pp("k_proj"), quant)?,
            v_proj: Proj::load(d, d, vb.pp("v_proj"), quant)?,
            out_proj: Proj::load(d, d, vb.pp("out_proj"), quant)?,
            heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
        })
    }

    fn split_heads(&self, xs: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        xs.reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `kv` is the encoder output for cross-attention, `None` for self-attention;
    /// `mask` is additive and broadcasts to (batch, heads, t_q, t_k).
    fn forward(&self, xs: &Tensor, kv: Option<&Tensor>, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, tq, d) = xs.dims3()?;
        let kv = kv.unwrap_or(xs);
        let tk = kv.dim(1)?;
        let q = self.split_heads(&(self.q_proj.forward(xs)? * self.scaling)?, b, tq)?;
        let k = self.split_heads(&self.k_proj.forward(kv)?, b, tk)?;
        let v = self.split_heads(&self.v_proj.forward(kv)?, b, tk)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, tq, d))?;
        self.out_proj.forward(&out)
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
        self.fc2.forward(&self.act.forward(&self.fc1.forward(xs)?)?)
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

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = (xs + self.self_attn.forward(xs, None, Some(mask))?)?;
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
    ) -> Result<Tensor> {
        let h = (xs + self.self_attn.forward(xs, None, Some(causal))?)?;
        let h = self.self_attn_layer_norm.forward(&h)?;
        let h = (&h + self.encoder_attn.forward(&h, Some(enc), Some(enc_mask))?)?;
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

    fn forward(&self, tokens: &Tensor, t: usize) -> Result<Tensor> {
        let pos = self.positions.narrow(0, 2, t)?;
        self.layernorm.forward(&tokens.broadcast_add(&pos)?)
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

    /// Logits (batch, num_labels) for right-padded `input_ids` with their
    /// attention mask (1 = token, 0 = padding). Every row must hold `</s>`.
    pub fn forward(&self, input_ids: &[Vec<u32>], attention_mask: &[Vec<u32>]) -> Result<Tensor> {
        let b = input_ids.len();
        let t = input_ids.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 || attention_mask.len() != b {
            candle_core::bail!("empty batch or mask of the wrong size");
        }
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} tokens exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let pad = self.cfg.pad_token_id;
        let eos = self.cfg.eos_token_id;
        let mut flat_ids = Vec::with_capacity(b * t);
        let mut dec_ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        let mut eos_rows = Vec::with_capacity(b);
        for (row, (ids, m)) in input_ids.iter().zip(attention_mask).enumerate() {
            let Some(last_eos) = ids.iter().rposition(|&id| id == eos) else {
                candle_core::bail!("sequence {row} has no </s> token");
            };
            eos_rows.push((row * t + last_eos) as u32);
            for i in 0..t {
                flat_ids.push(ids.get(i).copied().unwrap_or(pad));
                // shift_tokens_right: decoder_start, then the input without its last token.
                dec_ids.push(if i == 0 {
                    self.cfg.decoder_start_token_id
                } else {
                    ids.get(i - 1).copied().unwrap_or(pad)
                });
                mask.push(if m.get(i).copied().unwrap_or(0) == 0 {
                    f32::MIN
                } else {
                    0.0
                });
            }
        }
        let dev = &self.device;
        let ids = Tensor::from_vec(flat_ids, (b, t), dev)?;
        let dec = Tensor::from_vec(dec_ids, (b, t), dev)?;
        let enc_mask = Tensor::from_vec(mask, (b, 1, 1, t), dev)?.to_dtype(self.dtype)?;
        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), dev)?.to_dtype(self.dtype)?;

        let mut h = self.encoder_embeddings.forward(&self.embed(&ids)?, t)?;
        for layer in &self.encoder_layers {
            h = layer.forward(&h, &enc_mask)?;
        }
        let enc = h;
        let mut h = self.decoder_embeddings.forward(&self.embed(&dec)?, t)?;
        for layer in &self.decoder_layers {
            h = layer.forward(&h, &enc, &causal, &enc_mask)?;
        }
        let rows = Tensor::from_vec(eos_rows, b, dev)?;
        let sentence = h
            .reshape((b * t, self.cfg.d_model))?
            .index_select(&rows, 0)?;
        let x = self.head_dense.forward(&sentence)?.tanh()?;
        self.head_out.forward(&x)?.to_dtype(DType::F32)
    }
}
