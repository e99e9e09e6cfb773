//! The pipeline: runs the four agents once, in order, and decides the
//! ticket's status. It is pure and knows nothing of storage or HTTP.

use std::time::Instant;

use crate::agents::classifier::Classifier;
use crate::agents::troubleshooter::Troubleshooter;
use crate::agents::{escalation, sentiment};
use crate::ticket::{
    AgentRun, AgentRuns, Analysis, Escalation, Risk, Solution, Status, TicketInput,
};

#[derive(Clone, Default)]
pub struct Pipeline {
    pub classifier: Classifier,
    pub troubleshooter: Troubleshooter,
}

/// The status a finished analysis calls for.
pub fn decide_status(escalation: Option<&Escalation>, solution: &Solution, risk: Risk) -> Status {
    if escalation.is_some() {
        Status::Escalated
    } else if solution.resolved && risk != Risk::High {
        Status::Resolved
    } else {
        Status::InProgress
    }
}

fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

impl Pipeline {
    pub fn rules_only() -> Self {
        Pipeline {
            classifier: Classifier::rules_only(),
            troubleshooter: Troubleshooter::rules_only(),
        }
    }

    /// Whether every agent runs on rules (no model loaded).
    pub fn engines(&self) -> (String, String) {
        (
            self.classifier.engine_name(),
            self.troubleshooter.engine_name(),
        )
    }

    pub fn run(&self, ticket: &TicketInput) -> Analysis {
        let text = ticket.text();

        let t = Instant::now();
        let cls = self.classifier.classify(&text);
        let classifier = AgentRun {
            engine: cls.engine,
            ms: ms_since(t),
            error: cls.error,
        };
        let c = cls.classification;

        let t = Instant::now();
        let s = sentiment::analyze(&text);
        let sentiment_run = AgentRun {
            engine: "vader".into(),
            ms: ms_since(t),
            error: None,
        };

        let t = Instant::now();
        let ts = self.troubleshooter.solve(ticket, c.category, c.priority);
        let troubleshooter = AgentRun {
            engine: ts.engine,
            ms: ms_since(t),
            error: ts.error,
        };

        let t = Instant::now();
        let esc = escalation::escalate(ticket, &c, &s, &ts.solution);
        let escalation_run = AgentRun {
            engine: "rules".into(),
            ms: ms_since(t),
            error: None,
        };

        let status = decide_status(esc.as_ref(), &ts.solution, s.risk);
        Analysis {
            category: c.category,
            priority: c.priority,
            sentiment: s.sentiment,
            risk: s.risk,
            confidence: s.confidence,
            keywords: s.keywords,
            neg: s.neg,
            neu: s.neu,
            pos: s.pos,
            compound: s.compound,
            matched_rules: c.matched,
            label_scores: c.scores,
            solution: ts.solution,
            generation: ts.generation,
            escalation: esc,
            status,
            agents: AgentRuns {
                classifier,
                sentiment: sentiment_run,
                troubleshooter,
                escalation: escalation_run,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{Category, Priority, Sentiment};

    #[test]
    fn status_flow_table() {
        let open = Solution::new(vec!["a".into()], "m".into(), false);
        let done = Solution {
            resolved: true,
            ..open.clone()
        };
        let esc = Escalation {
            reasons: vec!["r".into()],
            action_plan: vec![],
            summary: String::new(),
        };
        assert_eq!(
            decide_status(Some(&esc), &done, Risk::Low),
            Status::Escalated
        );
        assert_eq!(decide_status(None, &done, Risk::Low), Status::Resolved);
        assert_eq!(decide_status(None, &done, Risk::Medium), Status::Resolved);
        assert_eq!(decide_status(None, &done, Risk::High), Status::InProgress);
        assert_eq!(decide_status(None, &open, Risk::Low), Status::InProgress);
    }

    #[test]
    fn hacked_and_urgent_ticket_is_escalated() {
        let a = Pipeline::rules_only().run(&TicketInput {
            subject: "Account hacked".into(),
            description: "My account was hacked, this is urgent!".into(),
        });
        assert_eq!(
            (a.category, a.priority),
            (Category::Security, Priority::Critical)
        );
        assert_eq!(a.sentiment, Sentiment::Urgent);
        assert_eq!(a.status, Status::Escalated);
        let e = a.escalation.expect("escalation");
        assert_eq!(e.reasons.len(), 3);
        assert_eq!(a.agents.classifier.engine, "rules");
    }

    #[test]
    fn calm_question_stays_in_progress() {
        let a = Pipeline::rules_only().run(&TicketInput {
            subject: "Invoice copy".into(),
            description: "Could you send me a copy of my last invoice? Thanks!".into(),
        });
        assert_eq!(a.category, Category::Billing);
        assert!(a.escalation.is_none());
        assert_eq!(a.status, Status::InProgress);
    }
}
