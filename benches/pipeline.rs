//! The rules-only pipeline (the service's degraded mode): tickets per second
//! for the whole pipeline and for VADER alone, on short and long tickets.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smart_support::agents::vader::Vader;
use smart_support::pipeline::Pipeline;
use smart_support::ticket::TicketInput;

fn tickets() -> Vec<TicketInput> {
    [
        (
            "Charged twice",
            "I was charged twice for my subscription this month, please refund me.",
        ),
        (
            "App crashes",
            "The app crashes every time I open the settings page. Very annoying!",
        ),
        (
            "HACKED",
            "My account was hacked and someone changed my password. URGENT!",
        ),
        (
            "Order late",
            "Where is my order? It was supposed to arrive last week.",
        ),
        ("2FA", "I can't log in, the 2FA code never arrives."),
        ("Thanks", "Thanks so much, the new dashboard is great!"),
        (
            "Invoice",
            "The invoice shows the wrong amount, can you check?",
        ),
    ]
    .iter()
    .map(|(s, d)| TicketInput {
        subject: s.to_string(),
        description: d.to_string(),
    })
    .collect()
}

fn bench(c: &mut Criterion) {
    let pipeline = Pipeline::rules_only();
    let short = tickets();
    let long: Vec<TicketInput> = short
        .iter()
        .map(|t| TicketInput {
            subject: t.subject.clone(),
            description: t.description.repeat(100),
        })
        .collect();
    Vader::global();

    let mut g = c.benchmark_group("rules_pipeline");
    g.throughput(Throughput::Elements(short.len() as u64));
    g.bench_function("short_tickets", |b| {
        b.iter(|| {
            for t in &short {
                black_box(pipeline.run(black_box(t)));
            }
        })
    });
    g.bench_function("long_tickets_2k_words", |b| {
        b.iter(|| {
            for t in &long {
                black_box(pipeline.run(black_box(t)));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("vader");
    g.throughput(Throughput::Elements(short.len() as u64));
    g.bench_function("short_tickets", |b| {
        b.iter(|| {
            for t in &short {
                black_box(Vader::global().polarity_scores(&t.description));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
