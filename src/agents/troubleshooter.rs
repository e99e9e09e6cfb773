//! Troubleshooter agent: numbered steps, a friendly message and a resolved flag.
//!
//! A text-generation model writes the answer when one is loaded; its output
//! must parse and validate, otherwise (and without a model) the deterministic
//! per-category playbook below answers.

use std::sync::Arc;

use serde::Deserialize;

use super::EngineError;
pub use crate::ticket::GenerationRecord;
use crate::ticket::{Category, Priority, Solution, TicketInput};

/// What the agent asks a generator for: a system and a user turn for chat
/// models, and a few-shot completion prompt for base models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRequest {
    pub system: String,
    /// A worked example: (user turn, assistant answer).
    pub example: Option<(String, String)>,
    pub user: String,
    /// The customer's own words, which the answer must not just repeat.
    pub ticket_text: String,
    pub few_shot: String,
}

/// A text generator seen from the agent.
pub trait TextGenerator: Send + Sync {
    fn name(&self) -> String;
    fn generate(&self, request: &AnswerRequest) -> Result<GenerationRecord, EngineError>;
}

#[derive(Debug, Clone)]
pub struct TroubleshooterOutcome {
    pub solution: Solution,
    pub engine: String,
    pub error: Option<String>,
    /// The model's output and costs, kept with the ticket for review.
    pub generation: Option<GenerationRecord>,
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
        let fallback =
            |error: Option<String>, generation: Option<GenerationRecord>| TroubleshooterOutcome {
                solution: playbook(ticket, category, priority),
                engine: "rules".into(),
                error,
                generation,
            };
        let Some(generator) = &self.generator else {
            return fallback(None, None);
        };
        let request = request(ticket, category);
        match generator.generate(&request) {
            Ok(mut record) => {
                match parse_answer(&record.raw_output).and_then(|s| validate(s, &request)) {
                    Ok(solution) => TroubleshooterOutcome {
                        solution,
                        engine: generator.name(),
                        error: None,
                        generation: Some(record),
                    },
                    Err(why) => {
                        record.rejected = Some(why.clone());
                        fallback(
                            Some(format!("{}: output rejected: {why}", generator.name())),
                            Some(record),
                        )
                    }
                }
            }
            Err(e) => fallback(Some(e.to_string()), None),
        }
    }
}

/// Longest part of a description the prompt quotes (small models have small contexts).
const PROMPT_DESCRIPTION_CHARS: usize = 1500;

fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn ticket_turn(category: Category, subject: &str, description: &str) -> String {
    let notes: String = playbook_steps(category)
        .iter()
        .map(|s| format!("- {s}\n"))
        .collect();
    format!(
        "Ticket category: {category}\nSubject: {subject}\nDescription: {description}\n\n\
         Known fixes for {} tickets:\n{notes}\n\
         Write 2 to 5 short steps for this customer, one friendly message, and whether the steps alone solve it.",
        category.as_str().to_lowercase()
    )
}

/// The request for one ticket. Small models follow an example far better
/// than instructions, so one worked example (of another category) comes
/// first, and the category's known fixes ground the steps.
pub fn request(ticket: &TicketInput, category: Category) -> AnswerRequest {
    let subject = clip(&ticket.subject, 200);
    let description = clip(&ticket.description, PROMPT_DESCRIPTION_CHARS);
    let system = "You are a friendly, precise customer support assistant. \
                  Give the customer short, concrete troubleshooting steps they can do themselves."
        .to_string();
    let (ex_cat, ex_subject, ex_description, ex_answer) = if category == Category::Technical {
        (
            Category::Account,
            "Password reset email never arrives",
            "I asked for a reset link three times today but nothing came.",
            "STEPS:\n1. Check your spam or junk folder for the reset email.\n\
             2. Make sure you typed the email address of your account.\n\
             3. Wait 10 minutes, then ask for one new link.\n\
             MESSAGE: Sorry for the trouble, the reset email usually arrives within a few minutes.\n\
             RESOLVED: no",
        )
    } else {
        (
            Category::Technical,
            "App crashes on start",
            "Since the update the app closes right after I open it.",
            "STEPS:\n1. Update the app to the latest version.\n\
             2. Restart your phone.\n\
             3. Reinstall the app if it still closes.\n\
             MESSAGE: Sorry about the crashes, these steps fix it for most customers.\n\
             RESOLVED: no",
        )
    };
    let example_user = ticket_turn(ex_cat, ex_subject, ex_description);
    let user = ticket_turn(category, &subject, &description);
    let few_shot = format!("Customer support answers.\n\n{example_user}\n{ex_answer}\n\n{user}\n");
    AnswerRequest {
        system,
        example: Some((example_user, ex_answer.to_string())),
        user,
        ticket_text: format!("{subject}\n{description}"),
        few_shot,
    }
}

#[derive(Deserialize)]
struct Answer {
    steps: Vec<String>,
    message: String,
    resolved: bool,
}

/// Reads an answer: the first JSON object of the right shape, otherwise the
/// seed format (STEPS: / numbered lines / MESSAGE: / RESOLVED:), and checks
/// its shape (1–8 non-empty steps under 300 characters, a message).
pub fn parse_answer(raw: &str) -> Result<Solution, String> {
    let parsed = match parse_json(raw) {
        Ok(s) => s,
        Err(json_err) => match parse_seed(raw) {
            Some(s) => s,
            None => return Err(json_err),
        },
    };
    let steps: Vec<String> = parsed.steps.iter().map(|s| s.trim().to_string()).collect();
    if steps.is_empty() || steps.len() > 8 {
        return Err(format!("{} steps (1 to 8 allowed)", steps.len()));
    }
    if let Some(bad) = steps
        .iter()
        .find(|s| s.is_empty() || s.chars().count() >= 300)
    {
        return Err(format!("bad step length ({} chars)", bad.chars().count()));
    }
    let message = parsed.message.trim().to_string();
    if message.is_empty() {
        return Err("empty message".into());
    }
    Ok(Solution {
        steps,
        message,
        resolved: parsed.resolved,
    })
}

fn parse_json(raw: &str) -> Result<Solution, String> {
    let start = raw
        .find('{')
        .ok_or("no JSON object and no STEPS: section in output")?;
    let mut stream = serde_json::Deserializer::from_str(&raw[start..]).into_iter::<Answer>();
    match stream.next() {
        Some(Ok(a)) => Ok(Solution {
            steps: a.steps,
            message: a.message,
            resolved: a.resolved,
        }),
        Some(Err(e)) => Err(format!("invalid JSON answer: {e}")),
        None => Err("no JSON object in output".into()),
    }
}

fn parse_seed(raw: &str) -> Option<Solution> {
    let at = raw.find("STEPS:")?;
    let body = &raw[at + "STEPS:".len()..];
    let (steps_part, rest) = body.split_once("MESSAGE:")?;
    let (message, resolved) = match rest.split_once("RESOLVED:") {
        Some((m, r)) => (m, r),
        None => (rest, ""),
    };
    let steps = steps_part
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let digits = l.trim_start_matches(|c: char| c.is_ascii_digit());
            if digits.len() < l.len() {
                digits
                    .trim_start_matches(['.', ')', ':'])
                    .trim()
                    .to_string()
            } else {
                l.trim_start_matches(['-', '*', '•']).trim().to_string()
            }
        })
        .collect();
    let word = resolved.trim().to_ascii_lowercase();
    Some(Solution {
        steps,
        message: message.trim().to_string(),
        resolved: word.starts_with("yes") || word.starts_with("true"),
    })
}

/// Pieces of chat templates that must never reach a customer.
const TEMPLATE_TOKENS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<eos>",
    "<|eot_id|>",
    "<s>",
    "</s>",
];

/// Content checks on a well-formed answer: no template tokens, no echo of
/// the prompt, no step repeated.
pub fn validate(s: Solution, request: &AnswerRequest) -> Result<Solution, String> {
    let texts = s.steps.iter().chain(std::iter::once(&s.message));
    for t in texts.clone() {
        if let Some(tok) = TEMPLATE_TOKENS.iter().find(|tok| t.contains(*tok)) {
            return Err(format!("template token {tok} in the answer"));
        }
        for marker in [
            "STEPS:",
            "MESSAGE:",
            "RESOLVED:",
            "Subject:",
            "Description:",
        ] {
            if t.contains(marker) {
                return Err(format!("the answer repeats the prompt ('{marker}')"));
            }
        }
        let lower = t.to_lowercase();
        if lower.len() >= 40
            && (request.ticket_text.to_lowercase().contains(&lower)
                || request.system.to_lowercase().contains(&lower))
        {
            return Err("the answer repeats the prompt".into());
        }
        // Placeholders such as "<first step>" copied from a format description.
        if t.starts_with('<') || (t.contains('<') && t.contains('>')) {
            return Err(format!(
                "placeholder or markup in the answer: '{}'",
                clip(t, 60)
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = s.steps.iter().find(|st| !seen.insert(st.to_lowercase())) {
        return Err(format!("step repeated: '{}'", clip(dup, 60)));
    }
    Ok(s)
}

/// The deterministic answer: specific first steps for each category.
pub fn playbook(ticket: &TicketInput, category: Category, priority: Priority) -> Solution {
    let steps = playbook_steps(category);
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

fn playbook_steps(category: Category) -> &'static [&'static str] {
    match category {
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
        let seed = parse_answer(
            "STEPS:\n1. Reset your password.\n2) Sign in again.\n- Clear cookies\nMESSAGE: Glad to help!\nRESOLVED: yes",
        );
        assert_eq!(
            seed,
            Ok(Solution {
                steps: vec![
                    "Reset your password.".into(),
                    "Sign in again.".into(),
                    "Clear cookies".into()
                ],
                message: "Glad to help!".into(),
                resolved: true
            })
        );
        assert!(parse_answer("STEPS:\nMESSAGE: hi\nRESOLVED: no").is_err());
        assert!(parse_answer("STEPS:\n1. a\nRESOLVED: no").is_err());
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
        fn generate(&self, _: &AnswerRequest) -> Result<GenerationRecord, EngineError> {
            Ok(GenerationRecord {
                engine: "garbage".into(),
                raw_output: "<|im_end|> lorem ipsum".into(),
                prompt_tokens: 10,
                generated_tokens: 4,
                ms: 1.0,
                ttft_ms: 0.5,
                tokens_per_sec: 4000.0,
                rejected: None,
            })
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
        let g = out.generation.expect("the raw output is kept");
        assert_eq!(g.raw_output, "<|im_end|> lorem ipsum");
        assert!(g.rejected.is_some());
    }

    #[test]
    fn validation_rejects_template_tokens_echoes_and_repeats() {
        let req = request(&ticket(), Category::Account);
        let sol = |steps: &[&str], message: &str| Solution {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            resolved: false,
        };
        assert!(validate(sol(&["Reset it."], "Hi <|im_end|>"), &req).is_err());
        assert!(validate(sol(&["Subject: Login"], "Hi"), &req).is_err());
        assert!(validate(sol(&["Reset it.", "reset it."], "Hi"), &req).is_err());
        let echo = "I reset my password twice but the login page still says invalid credentials.";
        let req2 = AnswerRequest {
            ticket_text: format!("Login\n{echo}"),
            ..req.clone()
        };
        assert!(validate(sol(&[echo], "Hi"), &req2).is_err());
        assert!(validate(sol(&["<first step>"], "Hi"), &req).is_err());
        assert!(validate(sol(&["Reset it."], "Hi <b>there</b>"), &req).is_err());
        assert!(validate(sol(&["Reset your password.", "Sign in."], "Hi!"), &req).is_ok());
    }
}
