//! `smart-support eval`: the pipeline over a labelled set of tickets, and
//! the figures that say whether answers can be trusted: category accuracy,
//! retrieval hit@3, how many answers rest on articles, what the claim
//! checker caught, how many answers go out without review, fallbacks and
//! latency. `--floors` turns it into a gate (CI runs it).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agents::checker::{self, Context};
use crate::agents::troubleshooter::{self, Knowledge};
use crate::pipeline::Pipeline;
use crate::ticket::{AnswerOrigin, Category, Delivery, TicketInput};

/// One labelled ticket of an evaluation set.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub subject: String,
    pub description: String,
    pub category: Category,
    /// Slugs of the articles that answer it (absent: not judged; empty: no
    /// article covers it).
    #[serde(default)]
    pub articles: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{file} line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
}

/// Reads a JSON-lines set; a bad line is an error naming it.
pub fn read_set(path: &Path) -> Result<Vec<Item>, EvalError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Read {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(line).map_err(|e| EvalError::Line {
            file: file.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        items.push(item);
    }
    if items.is_empty() {
        return Err(EvalError::Read {
            file,
            message: "no tickets in the set".into(),
        });
    }
    Ok(items)
}

/// What happened to one ticket (`--details`).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub subject: String,
    pub expected: Category,
    pub predicted: Category,
    /// What the keyword rules alone say (the baseline the classifier beats).
    pub keyword_rules: Category,
    pub expected_articles: Option<Vec<String>>,
    pub top3: Vec<String>,
    pub sources: Vec<String>,
    pub origin: AnswerOrigin,
    pub confidence: f64,
    pub delivery: Delivery,
    pub violations_before: usize,
    pub violations_after: usize,
    /// What the checker still finds in the final answer.
    pub found_after: Vec<String>,
    pub dropped: Vec<String>,
    /// The model's steps with their grounding score (for choosing the
    /// grounding threshold).
    pub model_steps: Vec<(String, f64)>,
    pub ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Checker violations in an answer's steps and message.
fn violations(steps: &[String], message: &str, ctx: &Context) -> usize {
    steps
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(message))
        .map(|t| checker::check(t, ctx).len())
        .sum()
}

/// Runs one ticket and records what happened.
fn one(pipeline: &Pipeline, knowledge: &dyn Knowledge, item: &Item) -> Detail {
    let input = TicketInput {
        subject: item.subject.clone(),
        description: item.description.clone(),
    };
    let t = Instant::now();
    let a = crate::worker::run_guarded(pipeline, &input);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let retrieved = knowledge.retrieve(&input, a.category).unwrap_or_default();
    let sentences = troubleshooter::source_sentences(&retrieved, a.category);
    let ctx = Context::new(&input.text(), &sentences);
    let s = &a.solution;
    let raw = a
        .generation
        .as_ref()
        .and_then(|g| troubleshooter::parse_answer(&g.raw_output).ok());
    let model_steps = raw.as_ref().map_or_else(Vec::new, |r| {
        r.steps
            .iter()
            .map(|st| (st.clone(), troubleshooter::grounding(st, &sentences)))
            .collect()
    });
    let after = violations(&s.steps, &s.message, &ctx);
    let before = raw
        .as_ref()
        .map_or(after, |raw| violations(&raw.steps, &raw.message, &ctx));
    Detail {
        subject: item.subject.clone(),
        expected: item.category,
        predicted: a.category,
        keyword_rules: crate::agents::classifier::classify_rules(&crate::agents::keywords::words(
            &input.text(),
        ))
        .category,
        expected_articles: item.articles.clone(),
        top3: retrieved
            .passages
            .iter()
            .take(3)
            .map(|p| p.slug.clone())
            .collect(),
        sources: s.sources.iter().map(|x| x.slug.clone()).collect(),
        origin: s.origin,
        confidence: s.confidence,
        delivery: s.delivery,
        violations_before: before,
        violations_after: after,
        found_after: s
            .steps
            .iter()
            .chain(std::iter::once(&s.message))
            .flat_map(|t| checker::check(t, &ctx))
            .map(|v| v.to_string())
            .collect(),
        dropped: s.dropped.iter().map(|d| d.reason.clone()).collect(),
        model_steps,
        ms,
    }
}

/// Runs the set and returns the report and the per-ticket details.
pub fn run(pipeline: &Pipeline, knowledge: &dyn Knowledge, items: &[Item]) -> (Value, Vec<Detail>) {
    let details: Vec<Detail> = items.iter().map(|i| one(pipeline, knowledge, i)).collect();
    (report(pipeline, &details), details)
}

fn report(pipeline: &Pipeline, d: &[Detail]) -> Value {
    let n = d.len().max(1) as f64;
    let share = |f: &dyn Fn(&Detail) -> bool| round3(d.iter().filter(|x| f(x)).count() as f64 / n);
    let mut per: BTreeMap<String, Value> = BTreeMap::new();
    for c in Category::ALL {
        let of: Vec<&Detail> = d.iter().filter(|x| x.expected == *c).collect();
        if of.is_empty() {
            continue;
        }
        let right = of.iter().filter(|x| x.predicted == *c).count();
        per.insert(
            c.to_string(),
            json!({"tickets": of.len(), "accuracy": round3(right as f64 / of.len() as f64)}),
        );
    }
    let judged: Vec<&Detail> = d
        .iter()
        .filter(|x| x.expected_articles.as_ref().is_some_and(|a| !a.is_empty()))
        .collect();
    let hits = judged
        .iter()
        .filter(|x| {
            x.expected_articles
                .as_ref()
                .is_some_and(|want| x.top3.iter().any(|s| want.contains(s)))
        })
        .count();
    let mut ms: Vec<f64> = d.iter().map(|x| x.ms).collect();
    ms.sort_by(f64::total_cmp);
    let (classifier, troubleshooter) = pipeline.engines();
    let has_model = troubleshooter != "rules";
    json!({
        "tickets": d.len(),
        "engines": {"classifier": classifier, "troubleshooter": troubleshooter},
        "category_accuracy": share(&|x| x.predicted == x.expected),
        "keyword_rules_accuracy": share(&|x| x.keyword_rules == x.expected),
        "per_category": per,
        "retrieval_hit_at_3": round3(hits as f64 / judged.len().max(1) as f64),
        "retrieval_judged": judged.len(),
        "grounded": share(&|x| !x.sources.is_empty()),
        "answered_by_model": share(&|x| x.origin == AnswerOrigin::Model),
        "violations_before": d.iter().map(|x| x.violations_before).sum::<usize>(),
        "violations_after": d.iter().map(|x| x.violations_after).sum::<usize>(),
        "auto": share(&|x| x.delivery == Delivery::Auto),
        "fallbacks": if has_model {
            json!(d.iter().filter(|x| x.origin != AnswerOrigin::Model).count())
        } else {
            Value::Null
        },
        "latency_ms": {
            "median": round3(percentile(&ms, 0.5)),
            "p95": round3(percentile(&ms, 0.95)),
        },
    })
}

/// Compares a report with floors: `{"category_accuracy": 0.8, ...}` are
/// minimums, keys starting with `max_` (`max_violations_after`) maximums.
/// Returns one line per figure that misses its floor.
pub fn check_floors(report: &Value, floors: &Value) -> Result<Vec<String>, String> {
    let obj = floors
        .as_object()
        .ok_or("the floors file must hold one JSON object")?;
    let mut failures = Vec::new();
    for (key, limit) in obj {
        let limit = limit
            .as_f64()
            .ok_or_else(|| format!("floor '{key}' is not a number"))?;
        let (name, is_max) = match key.strip_prefix("max_") {
            Some(k) => (k, true),
            None => (key.as_str(), false),
        };
        let value = report
            .get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("floor '{key}': the report has no figure '{name}'"))?;
        let missed = if is_max { value > limit } else { value < limit };
        if missed {
            let word = if is_max {
                "above its ceiling"
            } else {
                "below its floor"
            };
            failures.push(format!("{name} = {value} is {word} {limit}"));
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_and_ceilings() {
        let r = json!({"category_accuracy": 0.8, "violations_after": 2});
        let ok = json!({"category_accuracy": 0.75, "max_violations_after": 2});
        assert!(check_floors(&r, &ok).unwrap().is_empty());
        let bad = json!({"category_accuracy": 0.85, "max_violations_after": 1});
        assert_eq!(check_floors(&r, &bad).unwrap().len(), 2);
        assert!(check_floors(&r, &json!({"nope": 1})).is_err());
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.95), 10.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
