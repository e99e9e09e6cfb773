//! Parity of the GGUF decoder with transformers on tiny random-weight
//! models of each architecture family we added by real numbers: Llama 3
//! (RoPE scaling carried as `rope_freqs.weight`) and Qwen3 (per-head q/k
//! norms). The f16 GGUF files were converted by llama.cpp's own converter
//! from the very weights transformers ran (`scripts/make_tiny_decoders.py`):
//! next-token logits at 50 fixed vocabulary ids and the top 10 must match,
//! and so must the greedy continuation of 8 tokens.

use std::fs::File;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use smart_support::inference::decoder::Decoder;

fn load(name: &str) -> (Decoder, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders");
    let path = dir.join(format!("{name}.gguf"));
    let mut file = File::open(&path).expect("fixture");
    let ct = gguf_file::Content::read(&mut file).expect("gguf");
    let decoder = Decoder::from_gguf(&ct, &mut file, &Device::Cpu).expect("loads");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("reference"),
    )
    .expect("json");
    (decoder, reference)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn parity(name: &str) {
    let (mut d, reference) = load(name);
    for r in reference["reference"].as_array().expect("prompts") {
        let prompt = ids(&r["ids"]);
        d.reset();
        let logits: Vec<f32> = d.forward(&prompt).expect("forward").to_vec1().expect("vec");
        let mut worst = 0f32;
        for (id, want) in ids(&r["probe_ids"])
            .iter()
            .zip(r["probe_logits"].as_array().expect("logits"))
        {
            let want = want.as_f64().expect("f64") as f32;
            worst = worst.max((logits[*id as usize] - want).abs());
        }
        for (id, want) in ids(&r["top_ids"])
            .iter()
            .zip(r["top_logits"].as_array().expect("logits"))
        {
            let want = want.as_f64().expect("f64") as f32;
            worst = worst.max((logits[*id as usize] - want).abs());
        }
        assert!(
            worst < 2e-3,
            "{name} {:?}: logits differ by {worst}",
            r["text"]
        );
        assert_eq!(argmax(&logits), ids(&r["top_ids"])[0], "{name}: top-1");
        // Greedy continuation, one token at a time through the KV cache.
        let mut next = argmax(&logits);
        let mut got = vec![next];
        for _ in 1..8 {
            let l: Vec<f32> = d.forward(&[next]).expect("forward").to_vec1().expect("vec");
            next = argmax(&l);
            got.push(next);
        }
        assert_eq!(
            got,
            ids(&r["greedy"]),
            "{name} {:?}: greedy continuation",
            r["text"]
        );
    }
}

#[test]
fn llama3_with_rope_scaling_matches_transformers() {
    parity("llama3");
}

#[test]
fn qwen3_matches_transformers() {
    parity("qwen3");
}
