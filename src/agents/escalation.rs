//! Escalation agent: decides whether a human must take over, and writes the
//! hand-over: reasons, an action plan and a plain-text summary.

use crate::ticket::{
    Category, Classification, Escalation, Priority, Risk, Sentiment, SentimentReport, Solution,
    TicketInput,
};

/// Each trigger that fires, in a fixed order.
pub fn reasons(c: &Classification, s: &SentimentReport) -> Vec<String> {
    let mut out = Vec::new();
    if c.priority == Priority::Critical {
        out.push("Critical priority".to_string());
    }
    if s.risk == Risk::High {
        out.push("High risk".to_string());
    }
    match s.sentiment {
        Sentiment::Negative => out.push("Negative customer sentiment".to_string()),
        Sentiment::Urgent if s.keywords.is_empty() => {
            out.push("Urgent customer sentiment".to_string())
        }
        Sentiment::Urgent => out.push(format!("Urgent language: {}", s.keywords.join(", "))),
        _ => {}
    }
    out
}

pub fn escalate(
    ticket: &TicketInput,
    c: &Classification,
    s: &SentimentReport,
    solution: &Solution,
) -> Option<Escalation> {
    let reasons = reasons(c, s);
    if reasons.is_empty() {
        return None;
    }
    let mut plan: Vec<String> = vec![match c.priority {
        Priority::Critical => "Assign to a senior agent and respond within 1 hour.".to_string(),
        _ => "Assign to a senior agent and respond within 4 business hours.".to_string(),
    }];
    plan.push(
        match c.category {
            Category::Security => {
                "Lock the account, revoke active sessions and open a security incident."
            }
            Category::Refund => {
                "Review the charge history and approve or decline the refund with a reason."
            }
            Category::Billing => {
                "Verify the charges against the invoice and correct any billing error."
            }
            Category::Order => {
                "Contact the carrier or warehouse and confirm a delivery or replacement date."
            }
            Category::Technical => {
                "Reproduce the problem and involve engineering if it affects other customers."
            }
            Category::Account => "Verify the customer's identity and restore access.",
            Category::General => "Read the full ticket and answer the customer personally.",
        }
        .to_string(),
    );
    if matches!(s.sentiment, Sentiment::Negative | Sentiment::Urgent) {
        plan.push(
            "Acknowledge the customer's frustration and give a clear time for the next update."
                .to_string(),
        );
    }
    plan.push("Record the outcome on this ticket and mark it resolved when done.".to_string());

    let issue: String = ticket
        .description
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let issue = if issue.chars().count() > 300 {
        format!("{}…", issue.chars().take(300).collect::<String>())
    } else {
        issue
    };
    let summary = format!(
        "Escalation summary\n\
         Subject: {}\n\
         Category: {}\n\
         Priority: {}\n\
         Sentiment: {} (risk {})\n\
         Issue: {}\n\
         Reasons: {}\n\
         Suggested first steps: {}\n\
         Next actions:\n{}",
        ticket.subject.trim(),
        c.category,
        c.priority,
        s.sentiment,
        s.risk,
        issue,
        reasons.join("; "),
        first_steps(solution),
        plan.iter()
            .enumerate()
            .map(|(i, p)| format!("{}. {p}", i + 1))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    Some(Escalation {
        reasons,
        action_plan: plan,
        summary,
    })
}

/// What happened to the troubleshooter's steps, as the summary says it.
fn first_steps(solution: &Solution) -> String {
    let n = solution.steps.len();
    match solution.delivery {
        crate::ticket::Delivery::Auto => format!("{n}, shown to the customer"),
        crate::ticket::Delivery::Draft => {
            format!("{n}, a draft for staff (not shown to the customer)")
        }
        crate::ticket::Delivery::Off => "none shown (AI answers are off for this category)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cls(priority: Priority) -> Classification {
        Classification {
            category: Category::Billing,
            priority,
            matched: vec![],
            scores: None,
        }
    }

    fn sent(sentiment: Sentiment, risk: Risk, keywords: &[&str]) -> SentimentReport {
        SentimentReport {
            sentiment,
            risk,
            confidence: 0.5,
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            neg: 0.0,
            neu: 1.0,
            pos: 0.0,
            compound: 0.0,
        }
    }

    #[test]
    fn trigger_table() {
        use Priority as P;
        use Risk as R;
        use Sentiment as S;
        let cases: &[(P, S, R, usize)] = &[
            (P::Low, S::Neutral, R::Medium, 0),
            (P::High, S::Positive, R::Low, 0),
            (P::Critical, S::Neutral, R::Medium, 1),
            (P::Low, S::Neutral, R::High, 1),
            (P::Low, S::Negative, R::High, 2),
            (P::Critical, S::Urgent, R::High, 3),
            (P::Medium, S::Negative, R::Medium, 1),
        ];
        for (p, s, r, n) in cases {
            assert_eq!(
                reasons(&cls(*p), &sent(*s, *r, &[])).len(),
                *n,
                "{p} {s} {r}"
            );
        }
    }

    #[test]
    fn summary_names_everything_a_human_needs() {
        let t = TicketInput {
            subject: "Charged <twice>".into(),
            description: "Please   fix\nasap".into(),
        };
        let sol = Solution::new(vec!["a".into()], "m".into(), false);
        let e = escalate(
            &t,
            &cls(Priority::Critical),
            &sent(Sentiment::Urgent, Risk::High, &["asap"]),
            &sol,
        )
        .expect("escalates");
        for needle in [
            "Charged <twice>",
            "Billing",
            "Critical",
            "Urgent",
            "Please fix asap",
            "Urgent language: asap",
            "1. Assign",
        ] {
            assert!(
                e.summary.contains(needle),
                "missing {needle} in {}",
                e.summary
            );
        }
        assert!(
            escalate(
                &t,
                &cls(Priority::Low),
                &sent(Sentiment::Neutral, Risk::Medium, &[]),
                &sol
            )
            .is_none()
        );
    }
}
