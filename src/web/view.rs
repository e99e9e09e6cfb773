//! The JSON shape of a ticket, shared by the API and the templates. Field
//! names match `smart-support triage`'s output.

use serde_json::{Value, json};

use crate::store::{TicketRecord, TicketStatus};
use crate::timeline;

pub fn tracking_url(base: &str, token: &str) -> String {
    format!("{base}/t/{token}")
}

/// Who a ticket's JSON is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Everything, the AI's raw output and internal notes included.
    Staff,
    /// What the customer may see; the AI's answer only when `ai_answer`.
    Customer { ai_answer: bool },
}

/// The ticket as `audience` sees it.
pub fn ticket_json(rec: &TicketRecord, base_url: &str, audience: Audience) -> Value {
    let admin = audience == Audience::Staff;
    let steps = timeline::build(&rec.events);
    let progress = timeline::progress(&steps);
    let mut v = json!({
        "id": rec.id,
        "subject": rec.input.subject,
        "description": rec.input.description,
        "status": rec.status,
        "processing": rec.processing,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "category": null,
        "priority": null,
        "sentiment": null,
        "risk": null,
        "confidence": null,
        "keywords": [],
        "neg": null,
        "neu": null,
        "pos": null,
        "compound": null,
        "solution": null,
        "escalation": null,
        "timeline": steps,
        "progress": progress,
        "rating": rec.rating,
    });
    if let (Some(a), Some(obj)) = (&rec.analysis, v.as_object_mut()) {
        if let Ok(Value::Object(analysis)) = serde_json::to_value(a) {
            for (k, val) in analysis {
                // The stored status is the truth (a person may have resolved it).
                if k != "status"
                    && (admin || !matches!(k.as_str(), "matched_rules" | "agents" | "generation"))
                {
                    obj.insert(k, val);
                }
            }
        }
        if admin {
            obj.insert("ai_status".into(), json!(a.status));
        }
    }
    if let Some(obj) = v.as_object_mut() {
        // The stored category and priority are the truth: a person may have
        // corrected the AI (the AI's own values stay under `ai_*` for staff).
        if admin {
            let (cat, pri) = (obj.get("category").cloned(), obj.get("priority").cloned());
            obj.insert("ai_category".into(), cat.unwrap_or(Value::Null));
            obj.insert("ai_priority".into(), pri.unwrap_or(Value::Null));
        }
        if let Some(c) = rec.category {
            obj.insert("category".into(), json!(c));
        }
        if let Some(p) = rec.priority {
            obj.insert("priority".into(), json!(p));
        }
        // Customers never see an internal message, in any view.
        let messages: Vec<_> = rec
            .messages
            .iter()
            .filter(|m| admin || !m.internal)
            .collect();
        obj.insert("messages".into(), json!(messages));
    }
    if audience == (Audience::Customer { ai_answer: false })
        && let Some(obj) = v.as_object_mut()
        && obj.get("solution").is_some_and(|s| !s.is_null())
    {
        // Held for staff: the customer is told a person will answer, and
        // the escalation box keeps only its reasons (its plan and summary
        // speak of the drafted steps).
        obj.insert("solution".into(), Value::Null);
        obj.insert("ai_answer_held".into(), json!(true));
        if let Some(esc) = obj.get_mut("escalation").and_then(Value::as_object_mut) {
            esc.remove("action_plan");
            esc.remove("summary");
        }
    }
    if !admin && let Some(sol) = v.get_mut("solution").and_then(Value::as_object_mut) {
        // What the checks removed and the tickets used as examples are for
        // staff only.
        sol.remove("dropped");
        sol.remove("examples");
    }
    if admin && let Some(obj) = v.as_object_mut() {
        obj.insert("assignee".into(), json!(rec.assignee));
        obj.insert("history".into(), json!(rec.history));
        obj.insert("token".into(), json!(rec.token));
        obj.insert(
            "tracking_url".into(),
            json!(tracking_url(base_url, &rec.token)),
        );
        obj.insert("pipeline_runs".into(), json!(rec.pipeline_runs));
        obj.insert("attempts".into(), json!(rec.attempts));
        obj.insert("failure".into(), json!(rec.failure));
        obj.insert("events".into(), json!(rec.events));
    }
    v
}

/// The cheap polling answer.
pub fn status_json(rec: &TicketStatus) -> Value {
    let steps = timeline::build(&rec.events);
    json!({
        "status": rec.status,
        "messages": rec.public_messages,
        "processing": rec.processing,
        "updated_at": rec.updated_at,
        "progress": timeline::progress(&steps),
        "timeline": steps,
    })
}
