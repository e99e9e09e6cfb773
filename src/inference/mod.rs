//! Model inference: BART-MNLI zero-shot classification and GGUF text
//! generation in candle, each behind a bounded queue. Models know nothing of
//! HTTP or SQL.

/// An error's first line: some model errors carry a stack trace after it
/// (candle with `RUST_BACKTRACE=1`), which has no place in a note.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim_end()
}

pub mod answer;
pub mod bart;
pub mod batching;
pub mod decoder;
pub mod facts;
pub mod fused;
pub mod generator;
pub mod gguf_tokenizer;
pub mod hub;
pub mod nli;
pub mod q8;
pub mod queue;

use std::path::Path;

use candle_core::{DType, Device};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the {0} queue is full; retry shortly")]
    QueueFull(&'static str),
    #[error("the {0} model worker has stopped")]
    Stopped(&'static str),
    #[error("model error: {0}")]
    Model(String),
    #[error("{0}")]
    Config(String),
}

impl InferenceError {
    pub fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        InferenceError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl From<candle_core::Error> for InferenceError {
    fn from(e: candle_core::Error) -> Self {
        InferenceError::Model(e.to_string())
    }
}

/// `--device auto|cpu|cuda[:N]|metal`.
pub fn parse_device(spec: &str) -> Result<Device, InferenceError> {
    let spec = spec.trim().to_ascii_lowercase();
    let unsupported = |what: &str, feature: &str| {
        InferenceError::Config(format!(
            "device '{what}' is not available: this binary was built without the '{feature}' feature \
             (cargo build --release --features {feature}) or no such device exists"
        ))
    };
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).or(Ok(Device::Cpu))
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0).or(Ok(Device::Cpu))
            } else {
                Ok(Device::Cpu)
            }
        }
        "metal" => Device::new_metal(0).map_err(|_| unsupported("metal", "metal")),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), |n| n.parse::<usize>());
            let n = n.map_err(|_| {
                InferenceError::Config(format!("bad CUDA device '{spec}' (use cuda or cuda:N)"))
            })?;
            Device::new_cuda(n).map_err(|_| unsupported(s, "cuda"))
        }
        other => Err(InferenceError::Config(format!(
            "unknown device '{other}' (use auto, cpu, cuda, cuda:N or metal)"
        ))),
    }
}

/// `--nli-dtype f32|bf16|f16`.
pub fn parse_dtype(spec: &str) -> Result<DType, InferenceError> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(InferenceError::Config(format!(
            "unknown dtype '{other}' (use f32, bf16 or f16)"
        ))),
    }
}

/// The generator's key/value cache type from `--gen-kv-cache` (unset: the
/// default, f16).
pub fn parse_kv_type(spec: Option<&str>) -> Result<generator::KvType, InferenceError> {
    use generator::KvType;
    let spec = spec
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if spec.is_empty() {
        return Ok(KvType::default());
    }
    KvType::ALL
        .into_iter()
        .find(|t| t.name() == spec)
        .ok_or_else(|| {
            InferenceError::Config(format!(
                "unknown key/value cache type '{spec}' (use f16 or f32)"
            ))
        })
}

/// `--nli-quant none|q8_0|q4_0|q4k|q6k`.
pub fn parse_quant(
    spec: &str,
) -> Result<Option<candle_core::quantized::GgmlDType>, InferenceError> {
    use candle_core::quantized::GgmlDType as G;
    match spec.trim().to_ascii_lowercase().as_str() {
        "" | "none" | "off" => Ok(None),
        "q8_0" => Ok(Some(G::Q8_0)),
        "q4_0" => Ok(Some(G::Q4_0)),
        "q4k" | "q4_k" => Ok(Some(G::Q4K)),
        "q6k" | "q6_k" => Ok(Some(G::Q6K)),
        other => Err(InferenceError::Config(format!(
            "unknown quantization '{other}' (use none, q8_0, q4_0, q4k or q6k)"
        ))),
    }
}
