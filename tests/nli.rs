//! BART-MNLI in candle against transformers, on tiny random-weight models made
//! by `scripts/make_tiny_bart.py` (reference outputs from transformers' own
//! model and zero-shot pipeline).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use smart_support::inference::InferenceError;
use smart_support::inference::nli::{DEFAULT_TEMPLATE, LoadOptions, ZeroShotClassifier};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Deserialize)]
struct Pair {
    premise: String,
    hypothesis: String,
    input_ids: Vec<u32>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct ZeroShot {
    text: String,
    labels_in: Vec<String>,
    multi_label: bool,
    template: String,
    labels: Vec<String>,
    scores: Vec<f64>,
}

#[derive(Deserialize)]
struct Reference {
    pairs: Vec<Pair>,
    #[serde(default)]
    zero_shot: Vec<ZeroShot>,
    #[serde(default)]
    long_text_truncated_ids: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let raw =
        std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&raw).expect("reference JSON")
}

fn load(name: &str) -> ZeroShotClassifier {
    ZeroShotClassifier::load(&fixture(name), name, &LoadOptions::default()).expect("fixture loads")
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{what}: got {got:?}, want {want:?}");
    }
}

impl Reference {
    fn premise_hypothesis(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|p| (p.premise.as_str(), p.hypothesis.as_str()))
            .collect()
    }
}

#[test]
fn tokenizer_and_logits_match_transformers() {
    for name in ["tiny-bart-mnli", "tiny-bart-mnli-scaled"] {
        let clf = load(name);
        let r = reference(name);
        let pairs = r.premise_hypothesis();
        for p in &r.pairs {
            assert_eq!(
                clf.encode_pair(&p.premise, &p.hypothesis).expect("encode"),
                p.input_ids,
                "{name}: {}",
                p.premise
            );
        }
        // All pairs in one padded batch, as the reference computed them.
        let logits = clf.logits_blocking(&pairs).expect("logits");
        for (got, p) in logits.iter().zip(&r.pairs) {
            assert_close(got, &p.logits, 1e-4, &format!("{name}: {}", p.premise));
        }
    }
}

#[test]
fn zero_shot_matches_the_transformers_pipeline() {
    let clf = load("tiny-bart-mnli");
    let r = reference("tiny-bart-mnli");
    assert!(
        r.zero_shot.len() >= 30,
        "reference covers ~15 tickets, single and multi label"
    );
    for case in &r.zero_shot {
        let out = clf
            .classify_blocking(
                &case.text,
                &case.labels_in,
                case.multi_label,
                &case.template,
            )
            .expect("classify");
        let short: String = case.text.chars().take(60).collect();
        for (label, want) in case.labels.iter().zip(&case.scores) {
            let i = out
                .labels
                .iter()
                .position(|l| l == label)
                .expect("label present");
            assert!(
                (out.scores[i] - want).abs() <= 1e-4,
                "{short} (multi={}): {label} {} vs {want}",
                case.multi_label,
                out.scores[i]
            );
        }
        // Same ranking, except where transformers' own scores tie within tolerance.
        for (k, (got, want)) in out.labels.iter().zip(&case.labels).enumerate() {
            if got != want {
                let j = case.labels.iter().position(|l| l == got).expect("label");
                assert!(
                    (case.scores[j] - case.scores[k]).abs() < 1e-4,
                    "{short}: rank {k} is {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn long_ticket_is_truncated_only_in_the_premise() {
    let clf = load("tiny-bart-mnli");
    let r = reference("tiny-bart-mnli");
    let long = r
        .zero_shot
        .iter()
        .find(|z| z.text.split_whitespace().count() >= 5000)
        .expect("5000-word case");
    let ids = clf
        .encode_pair(&long.text, "This example is Billing.")
        .expect("encode");
    assert_eq!(ids, r.long_text_truncated_ids);
    assert_eq!(ids.len(), clf.max_len());
    // The hypothesis survives intact at the end.
    let hyp = clf
        .encode_pair("x", "This example is Billing.")
        .expect("encode");
    assert_eq!(ids[ids.len() - (hyp.len() - 3)..], hyp[3..]);
}

#[test]
fn batched_equals_unbatched_and_padding_changes_nothing() {
    let clf = load("tiny-bart-mnli");
    let texts = [
        "Hello",
        "I was charged twice for my subscription this month, please refund me.",
        "The app crashes every time I open the settings page after the last update, on every device I own.",
    ];
    let hyps = ["This example is Refund.", "This example is Technical."];
    let pairs: Vec<(&str, &str)> = texts
        .iter()
        .flat_map(|t| hyps.iter().map(move |h| (*t, *h)))
        .collect();
    let together = clf.logits_blocking(&pairs).expect("batched");
    for (pair, batched) in pairs.iter().zip(&together) {
        let alone = clf.logits_blocking(&[*pair]).expect("alone");
        assert_close(batched, &alone[0], 1e-5, pair.0);
    }
    // Concurrent callers are batched together and still get their own answers.
    let handles: Vec<_> = pairs
        .iter()
        .map(|p| {
            let clf = clf.clone();
            let (a, b) = (p.0.to_string(), p.1.to_string());
            std::thread::spawn(move || clf.logits_blocking(&[(&a, &b)]).expect("logits"))
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&together) {
        assert_close(&h.join().expect("thread")[0], want, 1e-5, "concurrent");
    }
    assert!(clf.queue().jobs >= 12);
}

#[test]
fn bad_labels_are_clear_errors() {
    let clf = load("tiny-bart-mnli");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (vec![], DEFAULT_TEMPLATE, "at least one label"),
        (vec!["".into()], DEFAULT_TEMPLATE, "empty"),
        (vec!["A".into(), "A".into()], DEFAULT_TEMPLATE, "repeated"),
        (vec!["A".into()], "no placeholder", "{}"),
        (vec!["word ".repeat(41)], DEFAULT_TEMPLATE, "longer than"),
    ];
    for (labels, template, needle) in cases {
        match clf.classify_blocking("text", &labels, false, template) {
            Err(InferenceError::InvalidInput(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{labels:?}: {other:?}"),
        }
    }
    // A label whose hypothesis alone exceeds the model length.
    let huge = vec!["very ".repeat(150)];
    assert!(matches!(
        clf.classify_blocking("t", &huge, false, "{}"),
        Err(InferenceError::InvalidInput(_))
    ));
}

/// Copies the fixture to a temp dir and lets a test break one file.
fn broken(
    edit: impl Fn(&Path),
) -> (
    tempfile::TempDir,
    Result<ZeroShotClassifier, InferenceError>,
) {
    let dir = tempfile::TempDir::new().expect("tempdir");
    for f in std::fs::read_dir(fixture("tiny-bart-mnli")).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
    }
    edit(dir.path());
    let r = ZeroShotClassifier::load(dir.path(), "broken", &LoadOptions::default());
    (dir, r)
}

fn expect_error(edit: impl Fn(&Path), file: &str, needle: &str) {
    let (_dir, r) = broken(edit);
    let err = r
        .err()
        .unwrap_or_else(|| panic!("loading should fail ({needle})"))
        .to_string();
    assert!(err.contains(file), "error does not name {file}: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "error lacks '{needle}': {err}"
    );
}

#[test]
fn corrupted_model_directories_give_clear_errors() {
    let rm = |f: &'static str| move |d: &Path| std::fs::remove_file(d.join(f)).expect("rm");
    let write = |f: &'static str, s: &'static str| {
        move |d: &Path| std::fs::write(d.join(f), s).expect("write")
    };
    expect_error(rm("config.json"), "config.json", "no such file");
    expect_error(
        write("config.json", "{not json"),
        "config.json",
        "key must be a string",
    );
    expect_error(
        rm("model.safetensors"),
        "model.safetensors",
        "no model.safetensors",
    );
    expect_error(rm("tokenizer.json"), "tokenizer.json", "no tokenizer.json");
    expect_error(
        |d: &Path| {
            let p = d.join("model.safetensors");
            let bytes = std::fs::read(&p).expect("read");
            std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
        },
        "model.safetensors",
        "",
    );
    let edit_config = |key: &'static str, value: serde_json::Value| {
        move |d: &Path| {
            let p = d.join("config.json");
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
            v[key] = value.clone();
            std::fs::write(&p, v.to_string()).expect("write");
        }
    };
    expect_error(
        edit_config("d_model", 48.into()),
        "model.safetensors",
        "shape",
    );
    expect_error(
        edit_config("encoder_attention_heads", 5.into()),
        "config.json",
        "divisible",
    );
    expect_error(
        edit_config("eos_token_id", 7.into()),
        "tokenizer",
        "mismatch",
    );
    expect_error(
        edit_config(
            "label2id",
            serde_json::json!({"yes": 0, "no": 1, "maybe": 2}),
        ),
        "config.json",
        "entailment",
    );
    expect_error(
        edit_config("activation_function", "wiggle".into()),
        "config.json",
        "unknown variant",
    );
}

#[test]
fn half_precision_stays_close_to_f32() {
    let labels: Vec<String> = ["Billing", "Technical", "Refund", "Order"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "I was charged twice for my subscription this month, please refund me.";
    let f32_out = load("tiny-bart-mnli")
        .classify_blocking(text, &labels, false, DEFAULT_TEMPLATE)
        .expect("f32");
    for dtype in [candle_core::DType::BF16, candle_core::DType::F16] {
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        let clf =
            ZeroShotClassifier::load(&fixture("tiny-bart-mnli"), "half", &opts).expect("loads");
        let out = clf
            .classify_blocking(text, &labels, false, DEFAULT_TEMPLATE)
            .expect("classify");
        for (label, want) in f32_out.labels.iter().zip(&f32_out.scores) {
            let i = out.labels.iter().position(|l| l == label).expect("label");
            assert!(
                (out.scores[i] - want).abs() < 0.01,
                "{dtype:?} {label}: {} vs {want}",
                out.scores[i]
            );
        }
    }
}

/// The padded candle path (GPUs, half precision; f64 takes it on the CPU)
/// against the fused CPU kernels (f32) and transformers' logits.
#[test]
fn padded_path_equals_fused_kernels() {
    for name in ["tiny-bart-mnli", "tiny-bart-mnli-scaled"] {
        let r = reference(name);
        let pairs = r.premise_hypothesis();
        let fused = load(name).logits_blocking(&pairs).expect("f32 logits");
        let opts = LoadOptions {
            dtype: candle_core::DType::F64,
            ..LoadOptions::default()
        };
        let padded = ZeroShotClassifier::load(&fixture(name), "f64", &opts)
            .expect("loads")
            .logits_blocking(&pairs)
            .expect("f64 logits");
        for ((f, p), want) in fused.iter().zip(&padded).zip(&r.pairs) {
            assert_close(
                f,
                p,
                1e-5,
                &format!("{name} fused vs padded: {}", want.premise),
            );
            assert_close(
                p,
                &want.logits,
                1e-4,
                &format!("{name} padded: {}", want.premise),
            );
        }
    }
}

/// Q8_0 (our kernel where the CPU has AVX-512 VNNI or AVX2, candle's
/// otherwise)
/// stays close to f32 on the zero-shot scores; the kernel itself is checked
/// against exact Q8_0 arithmetic in `inference::q8`.
#[test]
fn q8_0_stays_close_to_f32() {
    let labels: Vec<String> = ["Billing", "Technical", "Account", "Refund", "Security"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let f32_clf = load("tiny-bart-mnli");
    let opts = LoadOptions {
        quant: Some(candle_core::quantized::GgmlDType::Q8_0),
        ..LoadOptions::default()
    };
    let q8 = ZeroShotClassifier::load(&fixture("tiny-bart-mnli"), "q8", &opts).expect("loads");
    assert!(q8.name().ends_with("q8_0"), "{}", q8.name());
    let mut worst = 0f64;
    for text in [
        "I was charged twice for my subscription this month, please refund me.",
        "The app crashes every time I open the settings page.",
        "My account was hacked and someone changed my password. URGENT!",
    ] {
        let a = f32_clf
            .classify_blocking(text, &labels, false, DEFAULT_TEMPLATE)
            .expect("f32");
        let b = q8
            .classify_blocking(text, &labels, false, DEFAULT_TEMPLATE)
            .expect("q8");
        for (label, want) in a.labels.iter().zip(&a.scores) {
            let i = b.labels.iter().position(|l| l == label).expect("label");
            worst = worst.max((b.scores[i] - want).abs());
        }
    }
    // The fixture's weights (std 0.3, rows of one 32-value block) quantize far
    // more coarsely than bart-large-mnli's; there the difference is ~1.5e-3.
    assert!(worst < 0.05, "q8_0 vs f32: {worst}");
}
