//! Text generation speed on the test model (SmolLM2-135M-Instruct Q4_1, from
//! `scripts/fetch-test-models.sh`; or the file SMART_SUPPORT_BENCH_GEN_MODEL
//! names): prefill tokens/s on a 64-token prompt, decode tokens/s, and time
//! to first token. `scripts/bench_vs_llamacpp.py` compares with llama.cpp.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smart_support::inference::generator::{GenerationParams, GgufGenerator};
use smart_support::inference::hub;

const PROMPT: &str = "Customer support ticket. Subject: Cannot log in. Description: I reset my \
    password twice but the login page still says invalid credentials, and the reset email took \
    an hour to arrive. I use the mobile app on Android and the website on my laptop. What should \
    I do next? Answer:";

fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SMART_SUPPORT_BENCH_GEN_MODEL") {
        return Some(PathBuf::from(p));
    }
    let p = hub::test_models_dir()?.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}

fn bench(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("skipping: no model (run scripts/fetch-test-models.sh)");
        return;
    };
    let mut m = match GgufGenerator::load(&path, &Device::Cpu) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let name = m.name().to_string();
    let mut ids = m.encode(PROMPT, true).expect("encode");
    ids.truncate(64);
    let mut g = c.benchmark_group(format!("generate/{name}"));
    g.sample_size(20).measurement_time(Duration::from_secs(10));

    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function(format!("prefill_{}_tokens", ids.len()), |b| {
        b.iter(|| black_box(m.logits(&ids).ok()))
    });

    // Decode: one token at a time after the prompt; the cache is refilled
    // every 128 steps so positions stay realistic.
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_token", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let _ = m.logits(&ids);
                let n = (iters - done).min(128);
                let t = Instant::now();
                for i in 0..n {
                    black_box(m.step(200 + i as u32).ok());
                }
                total += t.elapsed();
                done += n;
            }
            total
        })
    });

    let first = GenerationParams {
        max_new_tokens: 1,
        ..GenerationParams::default()
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("time_to_first_token", |b| {
        b.iter(|| black_box(m.complete(PROMPT, &first).ok()))
    });

    // A ticket's structured answer: time to its first token with the
    // shared prompt start (system text, worked example) computed anew for
    // every ticket, and taken from the prefix cache. Only the time to the
    // first token is counted.
    let request = ticket_request();
    let answer = GenerationParams {
        max_new_tokens: 16,
        ..GenerationParams::default()
    };
    for (name, cached) in [
        ("answer_ttft_uncached", false),
        ("answer_ttft_cached", true),
    ] {
        m.set_prefix_cache(cached);
        if let Ok(g) = m
            .answer(&request, &answer)
            .and_then(|_| m.answer(&request, &answer))
        {
            eprintln!(
                "{name}: prompt {} tokens, {} of them from the prefix cache",
                g.prompt_tokens, g.cached_prompt_tokens
            );
        }
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let g = m.answer(&request, &answer).expect("answer");
                    total += Duration::from_secs_f64(g.ttft_secs);
                }
                total
            })
        });
    }
    g.finish();
}

/// A typical ticket's answer request, with an article retrieved from the
/// starter knowledge base.
fn ticket_request() -> smart_support::agents::troubleshooter::AnswerRequest {
    use smart_support::agents::troubleshooter::{self, Knowledge};
    use smart_support::ticket::{Category, TicketInput};
    let ticket = TicketInput {
        subject: "Charged twice for my subscription".into(),
        description: "My card was charged two times this month for the same plan. Please \
                      refund the second payment."
            .into(),
    };
    let kb = smart_support::kb::in_memory(None).expect("starter knowledge base");
    let knowledge = smart_support::kb::retrieve::StoreKnowledge::new(kb);
    let retrieved = knowledge
        .retrieve(&ticket, Category::Billing)
        .unwrap_or_default();
    troubleshooter::request(&ticket, Category::Billing, &retrieved)
}

criterion_group!(benches, bench);
criterion_main!(benches);
