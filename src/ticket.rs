//! Domain types shared by every layer. They depend on nothing but serde.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Implements `as_str`, `Display`, `FromStr` (case-insensitive, spaces or
/// underscores) and `ALL` for a plain enum, so the DB, the API and the
/// templates all spell the values the same way.
macro_rules! labelled_enum {
    ($name:ident { $($variant:ident => $label:expr),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
        pub enum $name { $(#[serde(rename = $label)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = s.trim().replace(['_', '-'], " ");
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(&wanted))
                    .ok_or_else(|| UnknownValue {
                        kind: stringify!($name),
                        value: s.to_string(),
                    })
            }
        }
    };
}

/// A string that names no variant of the enum it was parsed as.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} '{value}'")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

labelled_enum!(Category {
    Billing => "Billing",
    Technical => "Technical",
    Account => "Account",
    Refund => "Refund",
    Security => "Security",
    Order => "Order",
    General => "General",
});

labelled_enum!(Priority {
    Low => "Low",
    Medium => "Medium",
    High => "High",
    Critical => "Critical",
});

labelled_enum!(Sentiment {
    Positive => "Positive",
    Neutral => "Neutral",
    Negative => "Negative",
    Urgent => "Urgent",
});

labelled_enum!(Risk {
    Low => "Low",
    Medium => "Medium",
    High => "High",
});

labelled_enum!(Status {
    Open => "Open",
    InProgress => "In Progress",
    // Waiting on the customer: service-level clocks pause; the customer's
    // next message ends it.
    Pending => "Pending",
    Escalated => "Escalated",
    Resolved => "Resolved",
});

labelled_enum!(Role {
    Admin => "admin",
    Agent => "agent",
});

/// What a customer submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketInput {
    pub subject: String,
    pub description: String,
}

impl TicketInput {
    /// Subject and description as one text, the way the agents read a ticket.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.subject, self.description)
    }
}

/// The classifier agent's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub category: Category,
    pub priority: Priority,
    /// The rule keywords that fired, for the admin's "why".
    pub matched: Vec<String>,
    /// Per-label scores when a zero-shot model classified the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<LabelScore>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f64,
}

/// The sentiment agent's verdict, with the raw VADER scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentReport {
    pub sentiment: Sentiment,
    pub risk: Risk,
    pub confidence: f64,
    pub keywords: Vec<String>,
    pub neg: f64,
    pub neu: f64,
    pub pos: f64,
    pub compound: f64,
}

labelled_enum!(Delivery {
    Auto => "auto",
    Draft => "draft",
    Off => "off",
});

labelled_enum!(AnswerOrigin {
    Model => "model",
    Article => "article",
    Playbook => "playbook",
});

/// A knowledge-base article an answer drew on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub slug: String,
    pub title: String,
    /// Retrieval score (BM25 with the category boost; higher is better).
    pub score: f64,
}

/// Something the model wrote that the checks removed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub text: String,
    pub reason: String,
}

/// The troubleshooter's answer, with what it rests on and who may see it.
/// Records stored before the knowledge base existed read with empty
/// sources, confidence 0 and `auto` (they were shown as they were).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    pub steps: Vec<String>,
    pub message: String,
    pub resolved: bool,
    /// The published articles the answer used, best first.
    #[serde(default)]
    pub sources: Vec<SourceRef>,
    /// 0 to 1: retrieval strength, grounding and the checker together.
    #[serde(default)]
    pub confidence: f64,
    /// What the customer sees: the answer at once, nothing until staff send
    /// it, or no AI answer at all.
    #[serde(default = "Delivery::auto")]
    pub delivery: Delivery,
    /// What the checks removed from the model's answer.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
    /// Where the steps came from.
    #[serde(default = "AnswerOrigin::playbook")]
    pub origin: AnswerOrigin,
    /// Resolved tickets whose staff replies were shown to the model as
    /// examples (staff only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<i64>,
}

impl Delivery {
    fn auto() -> Self {
        Delivery::Auto
    }
}

impl AnswerOrigin {
    fn playbook() -> Self {
        AnswerOrigin::Playbook
    }
}

impl Solution {
    /// An answer with no sources yet (the agent fills them in).
    pub fn new(steps: Vec<String>, message: String, resolved: bool) -> Self {
        Solution {
            steps,
            message,
            resolved,
            sources: Vec::new(),
            confidence: 0.0,
            delivery: Delivery::Auto,
            dropped: Vec::new(),
            origin: AnswerOrigin::Playbook,
            examples: Vec::new(),
        }
    }
}

/// A generator's raw answer and what it cost; stored with the ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub engine: String,
    pub raw_output: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub ms: f64,
    pub ttft_ms: f64,
    pub tokens_per_sec: f64,
    /// Why the output was not used, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Why and how a ticket goes to a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub reasons: Vec<String>,
    pub action_plan: Vec<String>,
    pub summary: String,
}

/// Which engine an agent used, how long it took, and any failure it recovered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    pub engine: String,
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRuns {
    pub classifier: AgentRun,
    pub sentiment: AgentRun,
    pub troubleshooter: AgentRun,
    pub escalation: AgentRun,
}

/// Everything the pipeline decides about one ticket; stored as one JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub category: Category,
    pub priority: Priority,
    pub sentiment: Sentiment,
    pub risk: Risk,
    pub confidence: f64,
    pub keywords: Vec<String>,
    pub neg: f64,
    pub neu: f64,
    pub pos: f64,
    pub compound: f64,
    pub matched_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_scores: Option<Vec<LabelScore>>,
    pub solution: Solution,
    /// The text-generation model's raw answer and costs, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationRecord>,
    pub escalation: Option<Escalation>,
    /// The status the pipeline's outcome calls for.
    pub status: Status,
    pub agents: AgentRuns,
}

/// One entry of a ticket's append-only history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    ProcessingStarted,
    AiCompleted,
    Escalated,
    Resolved,
    Rated,
    /// A customer's reply reopened a resolved ticket.
    Reopened,
    /// A message was added (detail: its id). For the live feed only:
    /// messages have their own table.
    Message,
    /// A field or the assignee changed (detail: the field). For the live
    /// feed only: see `history`.
    Changed,
    /// A service-level target passed its at-risk share (detail: the target).
    SlaAtRisk,
    /// A service-level target was missed (detail: the target; at: its due time).
    SlaBreached,
    /// A missed target still unmet a configured time later: admins were
    /// told (detail: the target).
    SlaSecondLevel,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::ProcessingStarted => "processing_started",
            EventKind::AiCompleted => "ai_completed",
            EventKind::Escalated => "escalated",
            EventKind::Resolved => "resolved",
            EventKind::Rated => "rated",
            EventKind::Reopened => "reopened",
            EventKind::Message => "message",
            EventKind::Changed => "changed",
            EventKind::SlaAtRisk => "sla_at_risk",
            EventKind::SlaBreached => "sla_breached",
            EventKind::SlaSecondLevel => "sla_second_level",
        }
    }

    pub const ALL: [EventKind; 12] = [
        EventKind::Submitted,
        EventKind::ProcessingStarted,
        EventKind::AiCompleted,
        EventKind::Escalated,
        EventKind::Resolved,
        EventKind::Rated,
        EventKind::Reopened,
        EventKind::Message,
        EventKind::Changed,
        EventKind::SlaAtRisk,
        EventKind::SlaBreached,
        EventKind::SlaSecondLevel,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the ticket's history shows it: a message or a staff change
    /// is an event only for the live feed (they have their own tables).
    pub fn in_history(self) -> bool {
        !matches!(self, EventKind::Message | EventKind::Changed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_strings() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().ok(), Some(*s));
        }
        assert_eq!(
            "in_progress".parse::<Status>().ok(),
            Some(Status::InProgress)
        );
        assert_eq!("billing".parse::<Category>().ok(), Some(Category::Billing));
        assert!("nope".parse::<Priority>().is_err());
        assert_eq!(
            serde_json::to_string(&Status::InProgress).ok().as_deref(),
            Some("\"In Progress\"")
        );
    }
}
