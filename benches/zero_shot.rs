//! Zero-shot throughput: pairs/s at batch sizes 1, 7, 28, 56 and 112, and tickets/s
//! (7 labels each), on the tiny fixture and — when SMART_SUPPORT_BENCH_NLI_MODEL
//! names a model directory (e.g. one written by `scripts/make_tiny_bart.py
//! --full`) — on a bart-large-mnli-sized model, f32 and Q8_0.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smart_support::inference::nli::{DEFAULT_TEMPLATE, LoadOptions, ZeroShotClassifier};
use smart_support::ticket::Category;

const TICKETS: &[&str] = &[
    "I was charged twice for my subscription this month, please refund me.",
    "The app crashes every time I open the settings page.",
    "My account was hacked and someone changed my password. URGENT!",
    "Where is my order? It was supposed to arrive last week.",
    "I can't log in, the 2FA code never arrives.",
    "Thanks so much, the new dashboard is great!",
    "The invoice shows the wrong amount, can you check?",
    "I need a refund for a damaged item, the box was crushed.",
];

fn bench_model(c: &mut Criterion, name: &str, dir: &Path, opts: &LoadOptions, big: bool) {
    let clf = match ZeroShotClassifier::load(dir, name, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping {name}: {e}");
            return;
        }
    };
    let labels: Vec<String> = Category::ALL.iter().map(|c| c.to_string()).collect();
    let pairs: Vec<(&str, String)> = TICKETS
        .iter()
        .cycle()
        .zip(labels.iter().cycle())
        .take(112)
        .map(|(t, l)| (*t, DEFAULT_TEMPLATE.replace("{}", l)))
        .collect();
    let mut g = c.benchmark_group(format!("zero_shot/{name}"));
    if big {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(2));
    }
    for n in [1usize, 7, 28, 56, 112] {
        let batch: Vec<(&str, &str)> = pairs[..n].iter().map(|(t, h)| (*t, h.as_str())).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("pairs_batch_{n}"), |b| {
            b.iter(|| black_box(clf.logits_blocking(&batch).ok()))
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("ticket_7_labels", |b| {
        b.iter(|| {
            black_box(
                clf.classify_blocking(TICKETS[0], &labels, false, DEFAULT_TEMPLATE)
                    .ok(),
            )
        })
    });
    // Eight tickets at once through the queue, as concurrent ticket processing does.
    g.throughput(Throughput::Elements(TICKETS.len() as u64));
    g.bench_function("tickets_8_concurrent", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in TICKETS {
                    let (clf, labels) = (&clf, &labels);
                    s.spawn(move || {
                        black_box(
                            clf.classify_blocking(t, labels, false, DEFAULT_TEMPLATE)
                                .ok(),
                        )
                    });
                }
            })
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bart-mnli");
    bench_model(c, "tiny", &tiny, &LoadOptions::default(), false);
    if let Ok(dir) = std::env::var("SMART_SUPPORT_BENCH_NLI_MODEL") {
        let dir = PathBuf::from(dir);
        bench_model(c, "large_f32", &dir, &LoadOptions::default(), true);
        let q8 = LoadOptions {
            quant: Some(candle_core::quantized::GgmlDType::Q8_0),
            ..LoadOptions::default()
        };
        bench_model(c, "large_q8_0", &dir, &q8, true);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
