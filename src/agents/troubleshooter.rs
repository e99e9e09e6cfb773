//! Troubleshooter agent: numbered steps, a friendly message and a resolved flag.
//!
//! A text-generation model writes the answer when one is loaded; its output
//! must parse and validate, otherwise (and without a model) the deterministic
//! per-category playbook below answers.

use std::sync::Arc;

use serde::Deserialize;

use super::EngineError;
use crate::ticket::{Category, Priority, Solution, TicketInput};

/// A text generator seen from the agent: prompt in, raw completion out.
pub trait TextGenerator: Send + Sync {
    fn name(&self) -> String;
    fn generate(&self, prompt: &str) -> Result<String, EngineError>;
}

#[derive(Debug, Clone)]
pub struct TroubleshooterOutcome {
    pub solution: Solution,
    pub engine: String,
    pub error: Option<String>,
    /// The model's raw output, kept with the ticket for review.
    pub raw_output: Option<String>,
}

#[derive(Clone, Default)]
pub struct Troubleshooter {
    generator: Option<Arc<dyn TextGenerator>>,
}

impl Troubleshooter {
    pub fn rules_only() -> Self {
        Troubleshooter { generator: None }
    }

    pub fn with_generator(generator: Arc<dyn TextGenerator>) -> Self {
        Troubleshooter {
            generator: Some(generator),
        }
    }

    pub fn engine_name(&self) -> String {
        self.generator
            .as_ref()
            .map_or_else(|| "rules".to_string(), |g| g.name())
    }

    pub fn solve(
        &self,
        ticket: &TicketInput,
        category: Category,
        priority: Priority,
    ) -> TroubleshooterOutcome {
        let fallback = |error: Option<String>, raw_output: Option<String>| TroubleshooterOutcome {
            solution: playbook(ticket, category, priority),
            engine: "rules".into(),
            error,
            raw_output,
        };
        let Some(generator) = &self.generator else {
            return fallback(None, None);
        };
        match generator.generate(&prompt(ticket, category)) {
            Ok(raw) => match parse_answer(&raw) {
                Ok(solution) => TroubleshooterOutcome {
                    solution,
                    engine: generator.name(),
                    error: None,
                    raw_output: Some(raw),
                },
                Err(why) => fallback(
                    Some(format!("{}: output rejected: {why}", generator.name())),
                    Some(raw),
                ),
            },
            Err(e) => fallback(Some(e.to_string()), None),
        }
    }
}

fn prompt(ticket: &TicketInput, category: Category) -> String {
    format!(
        "You are a customer support assistant. Answer with JSON only: \
         {{\"steps\": [\"...\"], \"message\": \"...\", \"resolved\": false}}.\n\
         Category: {category}\nSubject: {}\nDescription: {}\n",
        ticket.subject, ticket.description
    )
}

#[derive(Deserialize)]
struct Answer {
    steps: Vec<String>,
    message: String,
    resolved: bool,
}

/// Accepts the first JSON object in `raw` that has the answer's shape and
/// passes validation (1–8 non-empty steps under 300 characters, a message).
pub fn parse_answer(raw: &str) -> Result<Solution, String> {
    let start = raw.find('{').ok_or("no JSON object in output")?;
    let mut stream = serde_json::Deserializer::from_str(&raw[start..]).into_iter::<Answer>();
    let answer = match stream.next() {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(format!("invalid JSON answer: {e}")),
        None => return Err("no JSON object in output".into()),
    };
    let steps: Vec<String> = answer.steps.iter().map(|s| s.trim().to_string()).collect();
    if steps.is_empty() || steps.len() > 8 {
        return Err(format!("{} steps (1 to 8 allowed)", steps.len()));
    }
    if let Some(bad) = steps
        .iter()
        .find(|s| s.is_empty() || s.chars().count() >= 300)
    {
        return Err(format!("bad step length ({} chars)", bad.chars().count()));
    }
    let message = answer.message.trim().to_string();
    if message.is_empty() {
        return Err("empty message".into());
    }
    Ok(Solution {
        steps,
        message,
        resolved: answer.resolved,
    })
}

/// The deterministic answer: specific first steps for each category.
pub fn playbook(ticket: &TicketInput, category: Category, priority: Priority) -> Solution {
    let steps: &[&str] = match category {
        Category::Billing => &[
            "Open Billing → Invoices and compare the charge with the invoice for the same period.",
            "Check that the card on file is valid and not expired under Billing → Payment methods.",
            "If a payment failed, retry it from the invoice page or add another payment method.",
            "Reply with the invoice number and the last 4 digits of the card if the amount still looks wrong.",
        ],
        Category::Refund => &[
            "Find the order or invoice number of the charge you want refunded.",
            "Check Billing → Invoices for a duplicate or unexpected charge and note its date.",
            "Reply with the number and the amount; we confirm eligibility within one business day.",
            "Approved refunds go back to the original payment method in 5–10 business days.",
        ],
        Category::Technical => &[
            "Update the app or refresh the page with a cleared cache (Ctrl+Shift+R).",
            "Sign out, sign back in, and try the same action again.",
            "Try another browser or device to see whether the problem follows your account.",
            "Note the exact error message and the time it happened, and attach a screenshot if you can.",
            "Check the status page for an ongoing incident before retrying heavy operations.",
        ],
        Category::Account => &[
            "Use \"Forgot password\" on the sign-in page to set a new password.",
            "Check your spam folder for the reset or verification email.",
            "If a 2FA code does not arrive, check the device clock is set automatically and use a backup code.",
            "After 5 failed attempts the account locks for 15 minutes; wait, then try once more.",
        ],
        Category::Security => &[
            "Reset your password now from a device you trust.",
            "Turn on two-factor authentication and sign out all other sessions in Security settings.",
            "Review recent logins, payments and email changes for anything you do not recognise.",
            "Contact your bank if a card may be affected, and do not reply to suspicious messages.",
            "Our security team reviews the account and will contact you through this ticket.",
        ],
        Category::Order => &[
            "Open Orders and check the status and tracking link of the order.",
            "Confirm that the delivery address on the order is complete and correct.",
            "If tracking has not moved for 3 business days, reply with the order number so we can contact the carrier.",
            "For a damaged or wrong item, reply with photos of the item and the packaging.",
        ],
        Category::General => &[
            "Check the help center for an article on your question.",
            "Reply with any details (account email, order or invoice number, screenshots) that help us answer.",
            "A support agent reviews the ticket and answers here.",
        ],
    };
    let subject = ticket.subject.trim();
    let urgency = if priority >= Priority::High {
        " We have marked it as a priority."
    } else {
        ""
    };
    Solution {
        steps: steps.iter().map(|s| s.to_string()).collect(),
        message: format!(
            "Thanks for contacting us about \"{subject}\". Here are the first steps for this {} request; \
             if they do not solve it, reply on this ticket and a support agent will follow up.{urgency}",
            category.as_str().to_lowercase()
        ),
        resolved: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> TicketInput {
        TicketInput {
            subject: "Login".into(),
            description: "Cannot log in".into(),
        }
    }

    #[test]
    fn playbook_differs_per_category_and_never_claims_resolution() {
        let mut seen = std::collections::HashSet::new();
        for c in Category::ALL {
            let s = playbook(&ticket(), *c, Priority::Low);
            assert!(!s.resolved);
            assert!((3..=8).contains(&s.steps.len()));
            assert!(s.message.contains("Login"));
            assert!(
                seen.insert(s.steps[0].clone()),
                "{c} repeats another category's steps"
            );
        }
    }

    #[test]
    fn parse_answer_validates() {
        let ok = parse_answer(
            "Sure! {\"steps\": [\" Reset \"], \"message\": \"Hi\", \"resolved\": true} trailing",
        );
        assert_eq!(
            ok,
            Ok(Solution {
                steps: vec!["Reset".into()],
                message: "Hi".into(),
                resolved: true
            })
        );
        assert!(parse_answer("no json here").is_err());
        assert!(parse_answer("{\"steps\": [], \"message\": \"Hi\", \"resolved\": false}").is_err());
        assert!(
            parse_answer("{\"steps\": [\"\"], \"message\": \"Hi\", \"resolved\": false}").is_err()
        );
        assert!(
            parse_answer("{\"steps\": [\"a\"], \"message\": \" \", \"resolved\": false}").is_err()
        );
        let long = format!(
            "{{\"steps\": [\"{}\"], \"message\": \"m\", \"resolved\": false}}",
            "x".repeat(300)
        );
        assert!(parse_answer(&long).is_err());
    }

    struct Garbage;
    impl TextGenerator for Garbage {
        fn name(&self) -> String {
            "garbage".into()
        }
        fn generate(&self, _: &str) -> Result<String, EngineError> {
            Ok("<|im_end|> lorem ipsum".into())
        }
    }

    #[test]
    fn garbage_output_falls_back_and_keeps_the_raw_text() {
        let t = Troubleshooter::with_generator(Arc::new(Garbage));
        let out = t.solve(&ticket(), Category::Account, Priority::High);
        assert_eq!(out.engine, "rules");
        assert_eq!(
            out.solution,
            playbook(&ticket(), Category::Account, Priority::High)
        );
        assert!(out.error.as_deref().is_some_and(|e| e.contains("rejected")));
        assert_eq!(out.raw_output.as_deref(), Some("<|im_end|> lorem ipsum"));
    }
}
