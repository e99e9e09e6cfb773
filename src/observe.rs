//! Metrics about tickets and agents, recorded through the `metrics` facade
//! (exported by `GET /metrics`). Nothing here knows about HTTP.

use crate::ticket::Analysis;

/// Records one processed ticket: per-agent latency and escalations.
pub fn record_analysis(a: &Analysis) {
    let runs = [
        ("classifier", &a.agents.classifier),
        ("sentiment", &a.agents.sentiment),
        ("troubleshooter", &a.agents.troubleshooter),
        ("escalation", &a.agents.escalation),
    ];
    for (agent, run) in runs {
        metrics::histogram!("pipeline_agent_duration_seconds", "agent" => agent, "engine" => run.engine.clone())
            .record(run.ms / 1e3);
        if run.error.is_some() {
            metrics::counter!("pipeline_agent_fallbacks_total", "agent" => agent).increment(1);
        }
    }
    metrics::counter!("tickets_processed_total", "category" => a.category.as_str(), "priority" => a.priority.as_str())
        .increment(1);
    if a.escalation.is_some() {
        metrics::counter!("escalations_total").increment(1);
    }
    let s = &a.solution;
    metrics::counter!("answers_total", "delivery" => s.delivery.as_str(), "origin" => s.origin.as_str())
        .increment(1);
    if !s.dropped.is_empty() {
        metrics::counter!("answer_sentences_dropped_total").increment(s.dropped.len() as u64);
    }
    if let Some(g) = &a.generation {
        metrics::counter!("generator_tokens_total", "model" => g.engine.clone())
            .increment(g.generated_tokens as u64);
    }
}

pub fn record_intake() {
    metrics::counter!("tickets_submitted_total").increment(1);
}
