//! What a model file is, read from its GGUF header without loading a
//! tensor: architecture, parameters, quantization, context, chat template.
//! `smart-support models list` prints these for every model found locally;
//! `/health` and the settings page show the loaded generator's.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, gguf_file};
use serde::Serialize;

use super::decoder::{Family, architecture};

/// Facts about one model file or folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFacts {
    pub path: String,
    /// `gguf` (a text generator) or `zero-shot` (a BART-MNLI folder).
    pub kind: &'static str,
    pub architecture: Option<String>,
    /// Whether this build runs the architecture.
    pub supported: bool,
    pub parameters: Option<u64>,
    /// The file's quantization (`general.file_type`, llama.cpp's names),
    /// else the type most parameters are stored in.
    pub quantization: Option<String>,
    /// Context length the file declares.
    pub context: Option<usize>,
    /// The chat template's family (`chatml`, `llama3`, `gemma`, `phi3`,
    /// `custom`), or none: a base model prompted with examples.
    pub template: Option<String>,
    pub bytes: u64,
    /// Why the file cannot be read, when it cannot.
    pub error: Option<String>,
}

/// llama.cpp's spelling of a GGML type ("Q4_K", "Q8_0", "F16").
fn type_name(t: GgmlDType) -> String {
    let s = format!("{t:?}").to_uppercase();
    match s.strip_suffix('K') {
        Some(base) if !base.ends_with('_') => format!("{base}_K"),
        _ => s,
    }
}

/// llama.cpp's name for `general.file_type` (the mix a file was quantized
/// to: "Q4_K_M" keeps some tensors in Q6_K or Q8_0).
fn file_type_name(t: usize) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// The family of a Jinja chat template, by its markers.
pub fn template_kind(t: &str) -> &'static str {
    if t.contains("<|im_start|>") {
        "chatml"
    } else if t.contains("<|start_header_id|>") {
        "llama3"
    } else if t.contains("<start_of_turn>") {
        "gemma"
    } else if t.contains("<|user|>") && t.contains("<|end|>") {
        "phi3"
    } else {
        "custom"
    }
}

fn md_usize(ct: &gguf_file::Content, key: &str) -> Option<usize> {
    let v = ct.metadata.get(key)?;
    match v {
        gguf_file::Value::U64(n) => usize::try_from(*n).ok(),
        other => other.to_u32().ok().map(|n| n as usize),
    }
}

/// The facts of a GGUF file (with `tokenizer_config.json` beside it taking
/// precedence for the template, as when it is loaded).
pub fn gguf(path: &Path) -> ModelFacts {
    let mut f = ModelFacts {
        path: path.display().to_string(),
        kind: "gguf",
        architecture: None,
        supported: false,
        parameters: None,
        quantization: None,
        context: None,
        template: None,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        error: None,
    };
    let ct = match File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|mut file| {
            gguf_file::Content::read(&mut file)
                .map_err(|e| format!("not a readable GGUF file: {e}"))
        }) {
        Ok(ct) => ct,
        Err(e) => {
            f.error = Some(super::first_line(&e).to_string());
            return f;
        }
    };
    match architecture(&ct) {
        Ok(arch) => {
            f.supported = Family::from_architecture(&arch).is_ok();
            f.context = md_usize(&ct, &format!("{arch}.context_length"));
            f.architecture = Some(arch);
        }
        Err(e) => f.error = Some(super::first_line(&e.to_string()).to_string()),
    }
    let mut by_type: HashMap<String, u64> = HashMap::new();
    for info in ct.tensor_infos.values() {
        *by_type.entry(type_name(info.ggml_dtype)).or_default() += info.shape.elem_count() as u64;
    }
    f.parameters = Some(by_type.values().sum());
    f.quantization = md_usize(&ct, "general.file_type")
        .and_then(file_type_name)
        .map(str::to_string)
        .or_else(|| {
            by_type
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(t, _)| t)
        });
    let beside = path
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join("tokenizer_config.json")).ok())
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(&raw).ok())
        .and_then(|v| v.get("chat_template")?.as_str().map(str::to_string));
    let template = beside.or_else(|| {
        ct.metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
    });
    f.template = template.map(|t| template_kind(&t).to_string());
    f
}

/// The facts of a zero-shot model folder (its `config.json`).
fn zero_shot(dir: &Path) -> Option<ModelFacts> {
    let raw = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
    let arch = v.get("model_type")?.as_str()?.to_string();
    if arch != "bart" {
        return None;
    }
    let weights = dir.join("model.safetensors");
    Some(ModelFacts {
        path: dir.display().to_string(),
        kind: "zero-shot",
        supported: weights.is_file(),
        architecture: Some(arch),
        parameters: None,
        quantization: None,
        context: v
            .get("max_position_embeddings")
            .and_then(|n| n.as_u64())
            .map(|n| n as usize),
        template: None,
        bytes: std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0),
        error: (!weights.is_file()).then(|| "no model.safetensors beside config.json".into()),
    })
}

/// How deep a search goes (the HF cache keeps files four levels down).
const MAX_DEPTH: usize = 6;

fn walk(dir: &Path, depth: usize, out: &mut Vec<ModelFacts>, seen: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(canonical) = dir.canonicalize() else {
        return;
    };
    if seen.contains(&canonical) {
        return;
    }
    seen.push(canonical);
    if let Some(f) = zero_shot(dir) {
        out.push(f);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, depth + 1, out, seen);
        } else if p
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        {
            out.push(gguf(&p));
        }
    }
}

/// Every model under `dirs` (GGUF files, zero-shot folders), each once.
pub fn find(dirs: &[PathBuf]) -> Vec<ModelFacts> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for d in dirs {
        walk(d, 0, &mut out, &mut seen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_templates() {
        assert_eq!(type_name(GgmlDType::Q4K), "Q4_K");
        assert_eq!(type_name(GgmlDType::Q8_0), "Q8_0");
        assert_eq!(type_name(GgmlDType::F16), "F16");
        assert_eq!(template_kind("{{'<|im_start|>' + m.role}}"), "chatml");
        assert_eq!(template_kind("<|start_header_id|>"), "llama3");
        assert_eq!(template_kind("<start_of_turn>user"), "gemma");
        assert_eq!(template_kind("<|user|>{{c}}<|end|>"), "phi3");
        assert_eq!(template_kind("{{ messages }}"), "custom");
    }

    #[test]
    fn unreadable_files_say_why() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("notes.gguf");
        std::fs::write(&p, "not a model").unwrap();
        let f = gguf(&p);
        assert!(!f.supported);
        assert!(
            f.error
                .as_deref()
                .is_some_and(|e| e.contains("GGUF") && !e.contains('\n')),
            "{f:?}"
        );
        assert_eq!(find(&[dir.path().to_path_buf()]), [f]);
    }
}
