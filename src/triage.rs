//! `smart-support triage`: the pipeline's verdict on one ticket as JSON,
//! shaped like a stored ticket, without a database.

use serde_json::{Value, json};

use crate::clock;
use crate::pipeline::Pipeline;
use crate::ticket::{Event, EventKind, Status, TicketInput};
use crate::timeline;

pub fn triage(pipeline: &Pipeline, input: &TicketInput) -> Value {
    // Parse the lexicon before timing the agents.
    crate::agents::vader::Vader::global();
    let submitted = clock::now();
    let analysis = crate::worker::run_guarded(pipeline, input);
    let done = clock::now();
    let ev = |kind, at: &str, detail: String| Event {
        kind,
        at: at.to_string(),
        detail,
    };
    let mut events = vec![
        ev(EventKind::Submitted, &submitted, String::new()),
        ev(EventKind::ProcessingStarted, &submitted, String::new()),
        ev(
            EventKind::AiCompleted,
            &done,
            format!("{} · {} priority", analysis.category, analysis.priority),
        ),
    ];
    if let Some(e) = &analysis.escalation {
        events.push(ev(EventKind::Escalated, &done, e.reasons.join("; ")));
    }
    if analysis.status == Status::Resolved {
        events.push(ev(EventKind::Resolved, &done, "by the AI assistant".into()));
    }
    let mut v = json!({
        "subject": input.subject,
        "description": input.description,
        "timeline": timeline::build(&events),
    });
    if let (Some(obj), Ok(Value::Object(a))) = (v.as_object_mut(), serde_json::to_value(&analysis))
    {
        obj.extend(a);
    }
    v
}
