//! The zero-shot model inside the product: CLI, service, API and tickets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};
use smart_support::config::ModelArgs;
use smart_support::models;

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bart-mnli")
}

fn reference_case(text_prefix: &str, multi: bool) -> Value {
    let raw = std::fs::read_to_string(fixture().join("reference.json")).expect("reference");
    let v: Value = serde_json::from_str(&raw).expect("json");
    v["zero_shot"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| {
            c["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(text_prefix))
                && c["multi_label"] == multi
                && c["labels_in"].as_array().map(Vec::len) == Some(7)
        })
        .cloned()
        .expect("case")
}

fn args(model: &Path) -> ModelArgs {
    ModelArgs {
        nli_model: model.display().to_string(),
        ..ModelArgs::rules_only()
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-4,
        _ => false,
    }
}

#[test]
fn classify_cli_prints_pipeline_shaped_json_lines() {
    let want = reference_case("I was charged twice", false);
    let text = want["text"].as_str().expect("text");
    let out = Command::new(BIN)
        .args(["classify", "--nli-model"])
        .arg(fixture())
        .args([text, "Hello"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["sequence"], text);
    assert_eq!(lines[0]["labels"], want["labels"]);
    for (g, w) in lines[0]["scores"]
        .as_array()
        .expect("s")
        .iter()
        .zip(want["scores"].as_array().expect("s"))
    {
        assert!(close(g, w), "{g} vs {w}");
    }
    // Custom labels, template and multi-label.
    let out = Command::new(BIN)
        .args([
            "classify",
            "--multi-label",
            "--labels",
            "urgent, calm",
            "--template",
            "The writer is {}.",
            "--nli-model",
        ])
        .arg(fixture())
        .arg("Help now!")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut labels: Vec<String> = serde_json::from_value(v["labels"].clone()).expect("labels");
    labels.sort();
    assert_eq!(labels, ["calm", "urgent"]);
    // Errors are clear and exit non-zero.
    let out = Command::new(BIN)
        .args(["classify", "--nli-model", "/no/such/dir", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a directory"));
    let out = Command::new(BIN)
        .args(["classify", "--labels", ",", "--nli-model"])
        .arg(fixture())
        .arg("x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one label"));
}

#[test]
fn triage_uses_the_model_when_given() {
    let out = Command::new(BIN)
        .args([
            "triage",
            "--subject",
            "Invoice",
            "--description",
            "The invoice amount is wrong",
            "--nli-model",
        ])
        .arg(fixture())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["agents"]["classifier"]["engine"], "tiny-bart-mnli");
    assert_eq!(v["label_scores"].as_array().map(Vec::len), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_classifies_tickets_with_the_model_and_exposes_the_queue() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let app = start_models(dir, cfg, models::load(&args(&fixture())));

    let r = send(&app.router, admin_get("/health")).await;
    let h = r.json();
    assert_eq!(h["engines"]["classifier"], "tiny-bart-mnli");
    assert_eq!(
        h["status"], "degraded",
        "the troubleshooter still runs on rules"
    );
    assert!(
        h["banner"]
            .as_str()
            .is_some_and(|b| b.contains("partly degraded"))
    );

    let (id, _) = submit(
        &app.router,
        "Double charge",
        "I was charged twice for my subscription this month.",
    )
    .await;
    let rec = wait_processed(&app.state, id).await;
    let a = rec.analysis.expect("analysis");
    assert_eq!(a.agents.classifier.engine, "tiny-bart-mnli");
    let scores = a.label_scores.expect("label scores stored");
    assert_eq!(scores.len(), 7);
    assert!((scores.iter().map(|s| s.score).sum::<f64>() - 1.0).abs() < 1e-6);
    assert_eq!(
        a.category.as_str(),
        scores[0].label,
        "the model's best label is the category"
    );

    let h = send(&app.router, admin_get("/health")).await.json();
    let q = &h["queues"][0];
    assert_eq!(q["name"], "nli");
    assert!(q["items"].as_u64().is_some_and(|n| n >= 7), "{q}");
    assert!(q["batches"].as_u64().is_some_and(|n| n >= 1));

    // The classify API: admin only, pipeline-shaped answers, clear errors.
    let body = json!({"text": "My parcel never arrived", "labels": ["Order", "Billing"], "multi_label": true}).to_string();
    let r = send(&app.router, json_req(Method::POST, "/api/classify", &body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let post = |body: String| admin_json("/api/classify", &body);
    let r = send(&app.router, post(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["sequence"], "My parcel never arrived");
    assert_eq!(v["labels"].as_array().map(Vec::len), Some(2));
    let r = send(&app.router, post(json!({"text": "x"}).to_string())).await;
    assert_eq!(
        r.json()["labels"].as_array().map(Vec::len),
        Some(7),
        "default labels are the categories"
    );
    for (bad, status) in [
        (
            json!({"text": "x", "labels": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"text": "x", "labels": ["a", "a"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"text": "x", "template": "nothing"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"text": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"text": "x", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = send(&app.router, post(bad.to_string())).await;
        assert_eq!(r.status, status, "{bad}: {}", r.body);
    }
}

#[tokio::test]
async fn classify_api_without_a_model_is_503() {
    let app = start();
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/classify", r#"{"text":"x"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app.router, admin_json("/api/classify", r#"{"text":"x"}"#)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error_code(), "model_unavailable");
}

#[tokio::test]
async fn a_broken_model_leaves_the_service_running_on_rules_and_says_why() {
    let broken = tempfile::TempDir::new().expect("tempdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), broken.path().join(f)).expect("copy");
    }
    std::fs::write(broken.path().join("model.safetensors"), b"garbage").expect("write");
    let loaded = models::load(&args(broken.path()));
    assert!(loaded.nli.is_none());
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let app = start_models(dir, cfg, loaded);
    let h = send(&app.router, admin_get("/health")).await.json();
    assert_eq!(h["banner"], "rules only — no models loaded");
    let notes = h["engines"]["notes"].to_string();
    assert!(
        notes.contains("failed to load") && notes.contains("model.safetensors"),
        "{notes}"
    );
    let (id, _) = submit(&app.router, "Refund", "Please refund my order").await;
    let rec = wait_processed(&app.state, id).await;
    // Without the zero-shot model, the learned classifier (over the rules).
    assert_eq!(
        rec.analysis.expect("analysis").agents.classifier.engine,
        smart_support::agents::classifier::LEARNED_ENGINE
    );
    let page = send(&app.router, get("/admin/login")).await;
    assert!(page.body.contains("rules only"), "the staff pages say so");
    let page = send(&app.router, get("/")).await;
    assert!(!page.body.contains("rules only"), "customers' pages do not");
}
