//! Tokenizers and chat templates of the model families we support, checked
//! against transformers.
//!
//! **Tokenizers.** Parity for the families whose real tokenizers cannot be had
//! here as models: Llama 3 (`llama-bpe`), Qwen2/Qwen2.5/Qwen3 (`qwen2`) and
//! Phi-3 (SentencePiece). llama.cpp ships each family's vocabulary as a
//! vocabulary-only GGUF together with a string set (`.inp`: whitespace runs,
//! tabs and newlines, digits, accents, CJK, emoji, code) and the ids that
//! transformers' own tokenizer gave for each string (`.out`, written by
//! llama.cpp's `convert_hf_to_gguf_update.py` with
//! `add_special_tokens=False`). `scripts/fetch-test-models.sh` takes them
//! from the llama-cpp-python source package on PyPI. Our tokenizer, rebuilt
//! from the GGUF metadata alone, must give the same ids for every string,
//! keep each family's chat markers whole and decode back to the text.
//!
//! **Chat templates.** Each family's own template (Llama 3.1 and 3.2,
//! Qwen2.5, Qwen3, Phi-3.5, Mistral Nemo, Gemma), from the same package,
//! rendered by us for a system + user turn and for the answer prompt with
//! its worked example must equal transformers' rendering
//! (`scripts/chat_template_reference.py` wrote
//! `tests/fixtures/chat_templates.json`, with the clock fixed for Llama
//! 3.2's date).
//!
//! Without the files these tests say so and pass, except where
//! `SMART_SUPPORT_REQUIRE_TEST_MODELS=1` (CI sets it), where they fail.

mod common;

use std::fs::File;
use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use smart_support::inference::generator::{Message, chat_prompt, render_template_at};
use smart_support::inference::gguf_tokenizer;

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

fn vocab_file(name: &str) -> Option<PathBuf> {
    common::test_model(&format!("vocab/ggml-vocab-{name}.gguf"))
}

fn tokenizer(path: &std::path::Path) -> (tokenizers::Tokenizer, gguf_tokenizer::SpecialTokens) {
    let mut f = File::open(path).expect("vocab file");
    let ct = gguf_file::Content::read(&mut f).expect("gguf");
    gguf_tokenizer::from_gguf(&ct).expect("tokenizer from gguf")
}

/// The `.inp` strings with the `.out` ids transformers gave.
fn cases(path: &std::path::Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(path.with_extension("gguf.inp")).expect(".inp");
    let out = std::fs::read_to_string(path.with_extension("gguf.out")).expect(".out");
    let texts: Vec<&str> = inp
        .strip_suffix(SEPARATOR)
        .expect("trailing separator")
        .split(SEPARATOR)
        .collect();
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len(), "one id line per string");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

fn parity(name: &str, markers: &[&str]) {
    let Some(path) = vocab_file(name) else { return };
    let (tk, _) = tokenizer(&path);
    let cases = cases(&path);
    assert!(cases.len() >= 30, "{} strings", cases.len());
    let mut bad = Vec::new();
    for (text, want) in &cases {
        let got = tk
            .encode(text.as_str(), false)
            .expect("encode")
            .get_ids()
            .to_vec();
        if &got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
            continue;
        }
        let back = tk.decode(&got, false).expect("decode");
        // SentencePiece drops the leading space it added itself.
        if back != *text && back != text.trim_start_matches(' ') {
            bad.push(format!("{text:?} decodes to {back:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} strings differ from transformers:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
    for m in markers {
        let enc = tk.encode(format!("a{m}b"), false).expect("encode");
        let id = tk
            .token_to_id(m)
            .unwrap_or_else(|| panic!("{m} in vocabulary"));
        assert!(
            enc.get_ids().contains(&id),
            "{name}: {m} is not kept whole: {:?}",
            enc.get_tokens()
        );
    }
}

#[test]
fn llama3_tokenizer_matches_transformers() {
    parity(
        "llama-bpe",
        &[
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
    );
}

#[test]
fn qwen2_tokenizer_matches_transformers() {
    parity("qwen2", &["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
}

#[test]
fn phi3_tokenizer_matches_transformers() {
    parity(
        "phi-3",
        &["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"],
    );
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| Message {
            role: m["role"].as_str().expect("role").into(),
            content: m["content"].as_str().expect("content").into(),
        })
        .collect()
}

#[test]
fn chat_templates_render_as_transformers_renders_them() {
    let Some(dir) = vocab_file("qwen2").and_then(|p| Some(p.parent()?.join("templates"))) else {
        return;
    };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/chat_templates.json"),
        )
        .expect("reference"),
    )
    .expect("json");
    let now = time::PrimitiveDateTime::parse(
        reference["now"].as_str().expect("now"),
        &time::format_description::well_known::Iso8601::DEFAULT,
    )
    .expect("now")
    .assume_utc();
    let templates = reference["templates"].as_array().expect("templates");
    assert!(templates.len() >= 7);
    for t in templates {
        let name = t["template"].as_str().expect("name");
        let tpl = std::fs::read_to_string(dir.join(name)).expect("template file");
        let bos = t["bos"].as_str().unwrap_or("");
        let eos = t["eos"].as_str().expect("eos");
        for (case, c) in t["cases"].as_object().expect("cases") {
            let msgs = messages(&c["messages"]);
            let ours = render_template_at(&tpl, &msgs, bos, eos, now);
            match c["rendered"].as_str() {
                Some(want) => assert_eq!(ours.expect("renders"), want, "{name} {case}"),
                None => {
                    let err = ours.expect_err("transformers refused it").to_string();
                    let want = c["error"].as_str().expect("error");
                    assert!(err.contains(want), "{name} {case}: {err} lacks {want}");
                }
            }
        }
        // The generator's prompt: a refused system turn opens the user's.
        let cases = &t["cases"];
        let prompt = chat_prompt(
            &tpl,
            &messages(&cases["system_user"]["messages"]),
            bos,
            eos,
            now,
        )
        .expect("a prompt");
        let want = cases["system_user"]["rendered"]
            .as_str()
            .or(cases["system_folded"]["rendered"].as_str())
            .expect("a rendering");
        assert_eq!(prompt, want, "{name}: the generator's prompt");
    }
}
