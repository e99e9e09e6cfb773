//! The four agents. Each is pure: text in, verdict out, no I/O, no clock.
//! Model-backed engines plug in through the traits in [`classifier`] and
//! [`troubleshooter`]; without a model every agent runs on rules.

pub mod checker;
pub mod classifier;
pub mod escalation;
pub mod keywords;
pub mod learned;
pub mod policy;
pub mod sentiment;
pub mod troubleshooter;
pub mod vader;

/// A model engine failed; the agent falls back to its rules and reports this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{engine}: {message}")]
pub struct EngineError {
    pub engine: String,
    pub message: String,
}
