//! Text generation speed on the test model (SmolLM2-135M-Instruct Q4_1, from
//! `scripts/fetch-test-models.sh`; or the file SMART_SUPPORT_BENCH_GEN_MODEL
//! names): prefill tokens/s on a 64-token prompt, decode tokens/s, and time
//! to first token, a ticket's answer with and without the prefix cache, and
//! generated tokens/s for one answer alone against eight written together
//! (continuous batching). `scripts/bench_vs_llamacpp.py` compares with
//! llama.cpp; `scripts/bench_burst.py` measures a burst on the service.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smart_support::inference::decoder::{Decoder, KvState, Seq};
use smart_support::inference::generator::{GenerationParams, GgufGenerator, KvType};
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

    // One decode step for 1 and for 8 sequences in one pass, each after its
    // own 128-token prompt: tokens per second of the decoder alone, with
    // the default f16 key/value cache and then with an f32 one.
    if let Some(mut d) = decoder(&path) {
        for (n, kv) in [
            (1usize, KvType::F16),
            (8, KvType::F16),
            (1, KvType::F32),
            (8, KvType::F32),
        ] {
            d.set_kv_type(kv);
            let cache = match kv {
                KvType::F16 => "",
                KvType::F32 => "_f32_cache",
            };
            let mut states: Vec<KvState> = (0..n).map(|_| KvState::default()).collect();
            let prompts: Vec<Vec<u32>> = (0..n)
                .map(|i| {
                    (0..128)
                        .map(|t| 100 + ((t * 7 + i * 13) % 5000) as u32)
                        .collect()
                })
                .collect();
            let mut seqs: Vec<Seq<'_>> = states
                .iter_mut()
                .zip(&prompts)
                .map(|(state, p)| Seq { state, tokens: p })
                .collect();
            if d.forward_batch(&mut seqs).is_err() {
                continue;
            }
            let saved: Vec<KvState> = seqs.iter().map(|s| s.state.clone()).collect();
            let token = [200u32];
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("decode_step_{n}_sequences{cache}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut done = 0u64;
                    while done < iters {
                        let mut states = saved.clone();
                        let steps = (iters - done).min(64);
                        let t = Instant::now();
                        for _ in 0..steps {
                            let mut seqs: Vec<Seq<'_>> = states
                                .iter_mut()
                                .map(|state| Seq {
                                    state,
                                    tokens: &token,
                                })
                                .collect();
                            black_box(d.forward_batch(&mut seqs).ok());
                        }
                        total += t.elapsed();
                        done += steps;
                    }
                    total
                })
            });
        }
    }

    // Continuous batching: generated tokens per second for one ticket's
    // answer alone and for eight tickets' answers written together.
    m.set_prefix_cache(true);
    let burst = burst_requests();
    let full = GenerationParams {
        max_new_tokens: 64,
        ..GenerationParams::default()
    };
    for (name, requests) in [
        ("answer_tokens_1_ticket", &burst[..1]),
        ("answer_tokens_8_tickets_together", &burst[..]),
    ] {
        let tokens: usize = match m.answer_all(requests, &full) {
            Ok(all) => all.iter().flatten().map(|g| g.generated_tokens).sum(),
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        g.throughput(Throughput::Elements(tokens as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(m.answer_all(requests, &full).ok()))
        });
    }
    g.finish();
}

fn decoder(path: &std::path::Path) -> Option<Decoder> {
    let mut f = std::fs::File::open(path).ok()?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).ok()?;
    Decoder::from_gguf(&ct, &mut f, &Device::Cpu).ok()
}

/// Eight tickets of different kinds, as a burst brings them.
fn burst_requests() -> Vec<smart_support::agents::troubleshooter::AnswerRequest> {
    use smart_support::agents::troubleshooter;
    use smart_support::ticket::{Category, TicketInput};
    [
        (
            "Charged twice",
            "My card was charged two times for the same plan.",
            Category::Billing,
        ),
        (
            "Cannot log in",
            "The login page says my password is wrong after a reset.",
            Category::Account,
        ),
        (
            "Parcel never arrived",
            "Order 4471 was marked delivered but nothing came.",
            Category::Order,
        ),
        (
            "App crashes on start",
            "The app closes right after I open it.",
            Category::Technical,
        ),
        (
            "Reset email missing",
            "No password reset email arrives.",
            Category::Account,
        ),
        (
            "Refund for a cancelled order",
            "I cancelled order 5123 and have no refund yet.",
            Category::Refund,
        ),
        (
            "Someone used my account",
            "Logins from another country; my email was changed.",
            Category::Security,
        ),
        (
            "Wrong invoice amount",
            "The invoice shows 49 euros but my plan costs 29.",
            Category::Billing,
        ),
    ]
    .into_iter()
    .map(|(s, d, c)| {
        let t = TicketInput {
            subject: s.into(),
            description: d.into(),
        };
        troubleshooter::request(&t, c, &Default::default())
    })
    .collect()
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
