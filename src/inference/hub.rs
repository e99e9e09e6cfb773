//! Where models come from, air-gapped first: a local directory, then
//! `models/<org>/<name>`, then the Hugging Face cache (hf-hub, offline). Only
//! `smart-support models fetch` touches the network.

use std::path::{Path, PathBuf};

use super::InferenceError;

pub const DEFAULT_NLI_REPO: &str = "facebook/bart-large-mnli";
/// Files an NLI model directory may hold; the first three are required
/// (tokenizer.json or vocab.json + merges.txt, safetensors or .bin).
pub const NLI_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
];

fn looks_like_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && *p != ".."
        })
}

/// The HF cache in use (HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub).
pub fn hf_cache() -> hf_hub::Cache {
    hf_hub::Cache::from_env()
}

/// Resolves `--nli-model`: a directory, or a repo id found locally.
pub fn resolve_model_dir(spec: &str, models_dir: &Path) -> Result<PathBuf, InferenceError> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    if !looks_like_repo_id(spec) {
        return Err(InferenceError::Config(format!(
            "--nli-model '{spec}' is neither a directory nor a Hugging Face repo id (org/name)"
        )));
    }
    let local = models_dir.join(spec);
    if local.join("config.json").exists() {
        return Ok(local);
    }
    let cache = hf_cache();
    if let Some(config) = cache.model(spec.to_string()).get("config.json")
        && let Some(dir) = config.parent()
    {
        return Ok(dir.to_path_buf());
    }
    Err(InferenceError::Config(format!(
        "model '{spec}' is not available offline: not in {} nor in the Hugging Face cache ({}). \
         On a connected machine run `smart-support models fetch --nli {spec}`, then copy the cache \
         or the models/ directory to this host",
        local.display(),
        cache.path().display()
    )))
}

/// Downloads a repo's files into the HF cache (connected machines only).
pub fn fetch(repo: &str, files: &[&str], required: &[&str]) -> Result<PathBuf, InferenceError> {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(InferenceError::Config(
            "HF_HUB_OFFLINE is set: not downloading".into(),
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| {
            InferenceError::Config(format!("cannot start the Hugging Face client: {e}"))
        })?;
    let repo_api = api.model(repo.to_string());
    let mut dir = None;
    for file in files {
        match repo_api.get(file) {
            Ok(path) => {
                tracing::info!(repo, file, path = %path.display(), "fetched");
                dir = path.parent().map(Path::to_path_buf);
            }
            Err(e) if required.contains(file) => {
                return Err(InferenceError::Config(format!(
                    "cannot download {file} of {repo}: {e}"
                )));
            }
            Err(e) => tracing::info!(repo, file, error = %e, "optional file not fetched"),
        }
    }
    dir.ok_or_else(|| InferenceError::Config(format!("nothing downloaded for {repo}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(looks_like_repo_id("facebook/bart-large-mnli"));
        assert!(!looks_like_repo_id("../etc"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("/abs/path"));
        let err = resolve_model_dir("no-such-org/no-such-model", Path::new("/nonexistent"))
            .expect_err("missing");
        assert!(err.to_string().contains("models fetch"), "{err}");
        let err =
            resolve_model_dir("/definitely/not/here", Path::new("models")).expect_err("missing");
        assert!(err.to_string().contains("neither a directory"), "{err}");
    }
}
