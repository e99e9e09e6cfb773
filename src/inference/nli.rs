//! Zero-shot classification with an NLI model, with the semantics of
//! transformers' `ZeroShotClassificationPipeline`: each label becomes the
//! hypothesis `template.format(label)`, premises are truncated "only_first" to
//! the model's length, single-label scores are a softmax of the entailment
//! logits over the labels, multi-label scores a per-label softmax of
//! entailment vs contradiction (also used when there is only one label).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Serialize;
use tokenizers::{
    PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::InferenceError;
use super::bart::{BartForSequenceClassification, Config};
use super::queue::{BatchModel, BatchQueue, QueueConfig, QueueSnapshot};
use crate::agents::EngineError;
use crate::agents::classifier::ZeroShotModel;
use crate::ticket::LabelScore;

pub const DEFAULT_TEMPLATE: &str = "This example is {}.";
const MAX_LABELS: usize = 64;
const MAX_LABEL_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    pub quant: Option<GgmlDType>,
    pub queue: QueueConfig,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            quant: None,
            queue: QueueConfig::default(),
        }
    }
}

/// One classification, shaped like the transformers pipeline's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroShotOutput {
    pub sequence: String,
    pub labels: Vec<String>,
    pub scores: Vec<f64>,
}

fn read(path: &Path) -> Result<String, InferenceError> {
    std::fs::read_to_string(path).map_err(|e| InferenceError::file(path, e))
}

/// The tokenizer: `tokenizer.json`, or `vocab.json` + `merges.txt` assembled
/// the way BART's tokenizer is (byte-level BPE, `<s> A </s></s> B </s>`).
fn load_tokenizer(dir: &Path, cfg: &Config) -> Result<Tokenizer, InferenceError> {
    let json = dir.join("tokenizer.json");
    let mut tok = if json.exists() {
        Tokenizer::from_file(&json).map_err(|e| InferenceError::file(&json, e))?
    } else {
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vocab.exists() || !merges.exists() {
            return Err(InferenceError::file(
                dir,
                "no tokenizer.json (nor vocab.json + merges.txt) in the model directory",
            ));
        }
        let bpe = tokenizers::models::bpe::BPE::from_file(
            &vocab.to_string_lossy(),
            &merges.to_string_lossy(),
        )
        .build()
        .map_err(|e| InferenceError::file(&vocab, e))?;
        let mut t = Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
        ));
        t.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        let id = |s: &str| {
            t.token_to_id(s)
                .ok_or_else(|| InferenceError::file(&vocab, format!("no {s} token")))
        };
        let (bos, eos) = (id("<s>")?, id("</s>")?);
        t.with_post_processor(Some(
            tokenizers::processors::roberta::RobertaProcessing::new(
                ("</s>".into(), eos),
                ("<s>".into(), bos),
            ),
        ));
        t
    };
    // The tokenizer must agree with the model on the special tokens.
    let eos = tok.token_to_id("</s>");
    if eos != Some(cfg.eos_token_id) {
        return Err(InferenceError::file(
            dir,
            format!(
                "tokenizer/model mismatch: tokenizer </s> is {eos:?}, config eos_token_id is {}",
                cfg.eos_token_id
            ),
        ));
    }
    if tok.get_vocab_size(true) > cfg.vocab_size {
        return Err(InferenceError::file(
            dir,
            format!(
                "tokenizer/model mismatch: {} tokens but vocab_size {}",
                tok.get_vocab_size(true),
                cfg.vocab_size
            ),
        ));
    }
    tok.with_padding(None::<PaddingParams>);
    Ok(tok)
}

/// The model's length limit: config's positions, or less when tokenizer_config.json says so.
fn max_length(dir: &Path, cfg: &Config) -> usize {
    let from_tokenizer = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("model_max_length").and_then(|m| m.as_f64()))
        .filter(|m| *m >= 8.0 && *m < 1e9)
        .map(|m| m as usize);
    from_tokenizer.map_or(cfg.max_position_embeddings, |m| {
        m.min(cfg.max_position_embeddings)
    })
}

/// The model side of the queue: token ids in, logits out.
pub struct NliRunner {
    model: BartForSequenceClassification,
}

impl BatchModel for NliRunner {
    type Input = Vec<u32>;
    type Output = Vec<f32>;

    fn cost(input: &Vec<u32>) -> usize {
        input.len()
    }

    fn run(&mut self, batch: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        let seqs: Vec<&[u32]> = batch.iter().map(|b| b.as_slice()).collect();
        let logits = self.model.forward(&seqs).map_err(|e| e.to_string())?;
        logits.to_vec2::<f32>().map_err(|e| e.to_string())
    }
}

/// A loaded NLI model behind its batching queue; cheap to clone.
#[derive(Clone)]
pub struct ZeroShotClassifier {
    name: String,
    /// Truncates the premise ("only_first") to `max_len`.
    truncating: Arc<Tokenizer>,
    plain: Arc<Tokenizer>,
    queue: BatchQueue<NliRunner>,
    entailment_id: usize,
    contradiction_id: usize,
    num_labels: usize,
    max_len: usize,
}

impl ZeroShotClassifier {
    /// Loads config.json, the weights (model.safetensors, memory-mapped, or
    /// pytorch_model.bin) and the tokenizer from `dir`, and starts the queue.
    pub fn load(dir: &Path, name: &str, opts: &LoadOptions) -> Result<Self, InferenceError> {
        if !dir.is_dir() {
            return Err(InferenceError::file(dir, "not a directory"));
        }
        let cfg_path = dir.join("config.json");
        let cfg: Config = serde_json::from_str(&read(&cfg_path)?)
            .map_err(|e| InferenceError::file(&cfg_path, e))?;
        cfg.validate()
            .map_err(|e| InferenceError::file(&cfg_path, e))?;
        let entailment_id = cfg
            .label2id
            .iter()
            .find(|(label, _)| label.to_lowercase().starts_with("entail"))
            .map(|(_, id)| *id)
            .ok_or_else(|| {
                InferenceError::file(
                    &cfg_path,
                    "label2id has no entailment label: not an NLI model",
                )
            })?;
        let num_labels = cfg.num_labels();
        if entailment_id >= num_labels {
            return Err(InferenceError::file(
                &cfg_path,
                "entailment id out of range",
            ));
        }
        // transformers' rule: contradiction is the first label, or the last when entailment is first.
        let contradiction_id = if entailment_id == 0 {
            num_labels - 1
        } else {
            0
        };
        let plain = load_tokenizer(dir, &cfg)?;
        let max_len = max_length(dir, &cfg);
        let mut truncating = plain.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::OnlyFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| InferenceError::file(dir, e))?;

        let st = dir.join("model.safetensors");
        let pth = dir.join("pytorch_model.bin");
        let (weights, vb) = if st.exists() {
            // SAFETY: the file is mapped read-only; we never write through the map.
            let vb =
                unsafe { VarBuilder::from_mmaped_safetensors(&[&st], opts.dtype, &opts.device) };
            (st.clone(), vb.map_err(|e| InferenceError::file(&st, e))?)
        } else if pth.exists() {
            let vb = VarBuilder::from_pth(&pth, opts.dtype, &opts.device)
                .map_err(|e| InferenceError::file(&pth, e))?;
            (pth.clone(), vb)
        } else {
            return Err(InferenceError::file(
                dir,
                "no model.safetensors or pytorch_model.bin in the model directory",
            ));
        };
        let model = BartForSequenceClassification::load(vb, &cfg, opts.quant)
            .map_err(|e| InferenceError::file(&weights, e))?;
        let runner = NliRunner { model };
        let queue = BatchQueue::start("nli", runner, opts.queue)?;
        let quant = opts
            .quant
            .map(|q| format!(" {q:?}").to_lowercase())
            .unwrap_or_default();
        tracing::info!(model = name, path = %dir.display(), max_len, "zero-shot model loaded");
        Ok(ZeroShotClassifier {
            name: format!("{name}{quant}"),
            truncating: Arc::new(truncating),
            plain: Arc::new(plain),
            queue,
            entailment_id,
            contradiction_id,
            num_labels,
            max_len,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn queue(&self) -> QueueSnapshot {
        self.queue.snapshot()
    }

    /// `<s> premise </s></s> hypothesis </s>`, the premise truncated to fit.
    pub fn encode_pair(&self, premise: &str, hypothesis: &str) -> Result<Vec<u32>, InferenceError> {
        let enc = match self.truncating.encode((premise, hypothesis), true) {
            Ok(e) => e,
            // As in transformers: when truncating the premise cannot help, do not truncate.
            Err(_) => self
                .plain
                .encode((premise, hypothesis), true)
                .map_err(|e| InferenceError::Model(e.to_string()))?,
        };
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            return Err(InferenceError::InvalidInput(format!(
                "the label's hypothesis is too long for the model ({} tokens, limit {})",
                ids.len(),
                self.max_len
            )));
        }
        Ok(ids)
    }

    /// Raw logits for premise/hypothesis pairs, through the queue.
    pub fn logits_blocking(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<f32>>, InferenceError> {
        let ids = pairs
            .iter()
            .map(|(p, h)| self.encode_pair(p, h))
            .collect::<Result<Vec<_>, _>>()?;
        self.queue.submit_blocking(ids)
    }

    fn prepare(
        &self,
        text: &str,
        labels: &[String],
        template: &str,
    ) -> Result<Vec<Vec<u32>>, InferenceError> {
        validate(labels, template)?;
        labels
            .iter()
            .map(|l| self.encode_pair(text, &template.replace("{}", l)))
            .collect()
    }

    fn finish(
        &self,
        text: &str,
        labels: &[String],
        multi_label: bool,
        logits: Vec<Vec<f32>>,
    ) -> Result<ZeroShotOutput, InferenceError> {
        if logits.iter().any(|l| l.len() != self.num_labels) {
            return Err(InferenceError::Model("logits of the wrong width".into()));
        }
        let scores = scores(
            &logits,
            self.entailment_id,
            self.contradiction_id,
            multi_label || labels.len() == 1,
        );
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(InferenceError::Model(
                "the model produced non-finite scores".into(),
            ));
        }
        Ok(ranked(text, labels, scores))
    }

    /// Blocking classification (ticket processing; waits for queue room).
    pub fn classify_blocking(
        &self,
        text: &str,
        labels: &[String],
        multi_label: bool,
        template: &str,
    ) -> Result<ZeroShotOutput, InferenceError> {
        let ids = self.prepare(text, labels, template)?;
        let logits = self.queue.submit_blocking(ids)?;
        self.finish(text, labels, multi_label, logits)
    }

    /// Direct API classification: fails fast with `QueueFull` under load.
    pub async fn classify_now(
        &self,
        text: &str,
        labels: &[String],
        multi_label: bool,
        template: &str,
    ) -> Result<ZeroShotOutput, InferenceError> {
        let ids = self.prepare(text, labels, template)?;
        let logits = self.queue.try_submit(ids).await?;
        self.finish(text, labels, multi_label, logits)
    }
}

/// Checks labels and template as the pipeline does, with clearer messages.
pub fn validate(labels: &[String], template: &str) -> Result<(), InferenceError> {
    if labels.is_empty() {
        return Err(InferenceError::InvalidInput(
            "at least one label is needed".into(),
        ));
    }
    if labels.len() > MAX_LABELS {
        return Err(InferenceError::InvalidInput(format!(
            "at most {MAX_LABELS} labels, got {}",
            labels.len()
        )));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.trim().is_empty() {
            return Err(InferenceError::InvalidInput(format!(
                "label {} is empty",
                i + 1
            )));
        }
        if l.chars().count() > MAX_LABEL_CHARS {
            return Err(InferenceError::InvalidInput(format!(
                "label {} is longer than {MAX_LABEL_CHARS} characters",
                i + 1
            )));
        }
        if labels[..i].contains(l) {
            return Err(InferenceError::InvalidInput(format!(
                "label '{l}' is repeated"
            )));
        }
    }
    if !template.contains("{}") {
        return Err(InferenceError::InvalidInput(format!(
            "the hypothesis template '{template}' has no {{}} where the label goes"
        )));
    }
    Ok(())
}

/// Splits "A, B ,C" into labels the way the pipeline does.
pub fn parse_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The pipeline's postprocess on per-label logits rows.
pub fn scores(
    logits: &[Vec<f32>],
    entailment: usize,
    contradiction: usize,
    per_label: bool,
) -> Vec<f64> {
    if per_label {
        logits
            .iter()
            .map(|row| {
                let (c, e) = (row[contradiction] as f64, row[entailment] as f64);
                let m = c.max(e);
                let (ec, ee) = ((c - m).exp(), (e - m).exp());
                ee / (ec + ee)
            })
            .collect()
    } else {
        let ent: Vec<f64> = logits.iter().map(|row| row[entailment] as f64).collect();
        let m = ent.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = ent.iter().map(|x| (x - m).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|x| x / sum).collect()
    }
}

fn ranked(text: &str, labels: &[String], scores: Vec<f64>) -> ZeroShotOutput {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    ZeroShotOutput {
        sequence: text.to_string(),
        labels: order.iter().map(|i| labels[*i].clone()).collect(),
        scores: order.iter().map(|i| scores[*i]).collect(),
    }
}

/// The classifier agent's view: the seven categories, default template.
impl ZeroShotModel for ZeroShotClassifier {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn classify(&self, text: &str, labels: &[String]) -> Result<Vec<LabelScore>, EngineError> {
        let out = self
            .classify_blocking(text, labels, false, DEFAULT_TEMPLATE)
            .map_err(|e| EngineError {
                engine: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(out
            .labels
            .into_iter()
            .zip(out.scores)
            .map(|(label, score)| LabelScore { label, score })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_label_scores() {
        let logits = vec![vec![0.0, 0.0, 2.0], vec![1.0, 0.0, 0.0]];
        let single = scores(&logits, 2, 0, false);
        assert!((single.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((single[0] - 2f64.exp() / (2f64.exp() + 1.0)).abs() < 1e-12);
        let multi = scores(&logits, 2, 0, true);
        assert!((multi[0] - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-12);
        assert!((multi[1] - 1.0 / (1.0 + 1f64.exp())).abs() < 1e-12);
    }

    #[test]
    fn labels_and_template_are_checked() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate(&l(&["a", "b"]), DEFAULT_TEMPLATE).is_ok());
        assert!(validate(&[], DEFAULT_TEMPLATE).is_err());
        assert!(validate(&l(&["a", " "]), DEFAULT_TEMPLATE).is_err());
        assert!(validate(&l(&["a", "a"]), DEFAULT_TEMPLATE).is_err());
        assert!(validate(&l(&["a"]), "no placeholder").is_err());
        assert_eq!(parse_labels(" A, B ,,C "), l(&["A", "B", "C"]));
    }
}
