//! Classifier agent: category and priority.
//!
//! Rules always run (they give the priority and the security override); a
//! zero-shot model, when one is loaded, chooses the category instead of the
//! keyword counts.

use std::sync::{Arc, OnceLock, RwLock};

use super::EngineError;
use super::keywords::{self, Phrases};
use super::learned::NaiveBayes;
use crate::ticket::{Category, Classification, LabelScore, Priority};

/// Words that make a ticket a security incident whatever else it says.
pub const SECURITY_OVERRIDE: &[&str] = &[
    "hack",
    "hacked",
    "hacker",
    "hacking",
    "breach",
    "breached",
    "stolen",
    "fraud",
    "fraudulent",
    "scam",
    "scammed",
];

const CATEGORY_RULES: &[(Category, &[&str])] = &[
    (
        Category::Refund,
        &[
            "refund",
            "refunds",
            "refunded",
            "refunding",
            "chargeback",
            "money back",
            "double charged",
            "charged twice",
            "charged me twice",
            "reimburse",
            "reimbursement",
            "return my money",
            "cancel and refund",
        ],
    ),
    (
        Category::Billing,
        &[
            "payment",
            "payments",
            "invoice",
            "invoices",
            "billing",
            "bill",
            "billed",
            "card",
            "credit card",
            "debit card",
            "subscription",
            "charge",
            "charged",
            "charges",
            "price",
            "pricing",
            "plan",
            "receipt",
            "paid",
            "pay",
            "overcharged",
            "renewal",
            "renewed",
            "vat",
            "tax",
        ],
    ),
    (
        Category::Security,
        &[
            "phishing",
            "suspicious",
            "unauthorized",
            "unauthorised",
            "compromised",
            "malware",
            "virus",
            "data leak",
            "leaked",
        ],
    ),
    (
        Category::Account,
        &[
            "login",
            "log in",
            "logged out",
            "sign in",
            "signin",
            "password",
            "2fa",
            "two factor",
            "two-factor",
            "locked",
            "locked out",
            "username",
            "email address",
            "verification",
            "verify",
            "profile",
            "account settings",
            "delete my account",
        ],
    ),
    (
        Category::Order,
        &[
            "order",
            "orders",
            "delivery",
            "delivered",
            "deliver",
            "shipping",
            "shipped",
            "shipment",
            "tracking",
            "package",
            "parcel",
            "damaged",
            "arrived",
            "arrive",
            "courier",
            "missing item",
            "wrong item",
        ],
    ),
    (
        Category::Technical,
        &[
            "error",
            "errors",
            "crash",
            "crashes",
            "crashed",
            "crashing",
            "bug",
            "bugs",
            "not working",
            "doesn't work",
            "does not work",
            "timeout",
            "timed out",
            "time out",
            "broken",
            "slow",
            "loading",
            "freeze",
            "freezes",
            "frozen",
            "blank page",
            "500",
            "404",
            "app",
            "website",
            "server",
            "sync",
            "install",
            "update",
            "api",
            "outage",
            "down",
        ],
    ),
];

const CRITICAL: &[&str] = &[
    "hacked",
    "hack",
    "breach",
    "breached",
    "fraud",
    "scam",
    "stolen",
    "urgent",
    "urgently",
    "asap",
    "immediately",
    "emergency",
    "legal action",
    "police",
    "lawsuit",
    "lawyer",
    "sue",
    "data leak",
    "outage",
];

const HIGH: &[&str] = &[
    "not working",
    "doesn't work",
    "does not work",
    "failed",
    "fails",
    "failing",
    "error",
    "unable to",
    "can't",
    "cannot",
    "can not",
    "blocked",
    "locked",
    "locked out",
    "down",
    "crash",
    "crashes",
    "crashed",
    "broken",
    "lost",
];

const MEDIUM: &[&str] = &[
    "problem",
    "problems",
    "issue",
    "issues",
    "delay",
    "delayed",
    "slow",
    "need help",
    "help",
    "wrong",
    "late",
    "confused",
    "incorrect",
];

/// A zero-shot classification engine (BART-MNLI, later) seen from the agent.
pub trait ZeroShotModel: Send + Sync {
    /// The engine's name as reported with each ticket ("bart-large-mnli", ...).
    fn name(&self) -> String;
    /// Scores for `labels` (single-label: they sum to 1), best first.
    fn classify(&self, text: &str, labels: &[String]) -> Result<Vec<LabelScore>, EngineError>;
}

/// What the agent did, for the ticket's engine report.
#[derive(Debug, Clone)]
pub struct ClassifierOutcome {
    pub classification: Classification,
    pub engine: String,
    pub error: Option<String>,
}

/// The learned classifier in use (None until trained), swapped whole when
/// it is retrained.
pub type LearnedHandle = Arc<RwLock<Option<Arc<NaiveBayes>>>>;

/// The learned classifier's engine name.
pub const LEARNED_ENGINE: &str = "naive-bayes";

#[derive(Clone, Default)]
pub struct Classifier {
    model: Option<Arc<dyn ZeroShotModel>>,
    learned: LearnedHandle,
}

impl Classifier {
    pub fn rules_only() -> Self {
        Classifier::default()
    }

    pub fn with_model(model: Arc<dyn ZeroShotModel>) -> Self {
        Classifier {
            model: Some(model),
            learned: LearnedHandle::default(),
        }
    }

    /// Keeps the zero-shot model (if any) and adds the learned classifier,
    /// used when there is no zero-shot model.
    pub fn with_learned(mut self, learned: LearnedHandle) -> Self {
        self.learned = learned;
        self
    }

    pub fn learned(&self) -> LearnedHandle {
        self.learned.clone()
    }

    fn current_learned(&self) -> Option<Arc<NaiveBayes>> {
        self.learned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn engine_name(&self) -> String {
        match (&self.model, self.current_learned()) {
            (Some(m), _) => m.name(),
            (None, Some(_)) => LEARNED_ENGINE.to_string(),
            (None, None) => "rules".to_string(),
        }
    }

    pub fn classify(&self, text: &str) -> ClassifierOutcome {
        let words = keywords::words(text);
        let mut rules = classify_rules(&words);
        let Some(model) = &self.model else {
            return self.without_model(text, rules);
        };
        let labels: Vec<String> = Category::ALL.iter().map(|c| c.to_string()).collect();
        match model.classify(text, &labels) {
            Ok(scores) => {
                let best = scores
                    .first()
                    .and_then(|s| s.label.parse::<Category>().ok());
                // The security override stands whatever the model says.
                if rules.category != Category::Security
                    && let Some(best) = best
                {
                    rules.category = best;
                }
                if rules.category == Category::Security
                    && rules.priority < Priority::High
                    && scores
                        .first()
                        .is_some_and(|s| s.label == "Security" && s.score >= 0.8)
                {
                    rules.priority = Priority::High;
                }
                rules.scores = Some(scores);
                ClassifierOutcome {
                    classification: rules,
                    engine: model.name(),
                    error: None,
                }
            }
            Err(e) => ClassifierOutcome {
                classification: rules,
                engine: "rules".into(),
                error: Some(e.to_string()),
            },
        }
    }
}

impl Classifier {
    /// Rules, and the learned classifier's category when it is trained.
    /// The security override stands whatever it says.
    fn without_model(&self, text: &str, mut rules: Classification) -> ClassifierOutcome {
        let overridden = rules.category == Category::Security
            && rules
                .matched
                .iter()
                .any(|m| SECURITY_OVERRIDE.contains(&m.as_str()));
        match self.current_learned() {
            Some(nb) if !overridden => {
                let scores = nb.scores(text);
                if let Some(best) = scores.first().and_then(|s| s.label.parse().ok()) {
                    rules.category = best;
                }
                rules.scores = Some(scores);
                ClassifierOutcome {
                    classification: rules,
                    engine: LEARNED_ENGINE.into(),
                    error: None,
                }
            }
            _ => ClassifierOutcome {
                classification: rules,
                engine: "rules".into(),
                error: None,
            },
        }
    }
}

struct Rules {
    security: Phrases,
    categories: Vec<(Category, Phrases)>,
    critical: Phrases,
    high: Phrases,
    medium: Phrases,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules {
        security: Phrases::new(SECURITY_OVERRIDE),
        categories: CATEGORY_RULES
            .iter()
            .map(|(c, p)| (*c, Phrases::new(p)))
            .collect(),
        critical: Phrases::new(CRITICAL),
        high: Phrases::new(HIGH),
        medium: Phrases::new(MEDIUM),
    })
}

/// The categories whose keyword rules fire on `words` (the security
/// override counts as Security): features for the learned classifier.
pub fn rule_categories(words: &[String]) -> Vec<Category> {
    let rules = rules();
    let mut out = Vec::new();
    if rules.security.any(words) {
        out.push(Category::Security);
    }
    for (category, phrases) in &rules.categories {
        if phrases.any(words) && !out.contains(category) {
            out.push(*category);
        }
    }
    out
}

/// The rule-based verdict on pre-split words.
pub fn classify_rules(words: &[String]) -> Classification {
    let rules = rules();
    let security = rules.security.find(words);
    if !security.is_empty() {
        return Classification {
            category: Category::Security,
            priority: Priority::Critical,
            matched: security.iter().map(|s| s.to_string()).collect(),
            scores: None,
        };
    }
    let mut matched = Vec::new();
    let mut best: Option<(Category, usize)> = None;
    // A refund request always mentions payments too, so any refund phrase
    // decides; otherwise the most hits win, ties going to the earlier rule.
    for (category, phrases) in &rules.categories {
        let hits = phrases.find(words);
        let refund_decided = best.is_some_and(|(c, _)| c == Category::Refund);
        if !hits.is_empty() && !refund_decided && best.is_none_or(|(_, n)| hits.len() > n) {
            best = Some((*category, hits.len()));
        }
        matched.extend(hits.iter().map(|s| s.to_string()));
    }
    let category = best.map_or(Category::General, |(c, _)| c);
    let priority = if rules.critical.any(words) {
        Priority::Critical
    } else if rules.high.any(words) {
        Priority::High
    } else if rules.medium.any(words) {
        Priority::Medium
    } else {
        Priority::Low
    };
    Classification {
        category,
        priority,
        matched,
        scores: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> (Category, Priority) {
        let c = classify_rules(&keywords::words(text));
        (c.category, c.priority)
    }

    #[test]
    fn category_and_priority_table() {
        use Category::*;
        use Priority::*;
        let table: &[(&str, Category, Priority)] = &[
            ("I was charged twice, please refund me", Refund, Low),
            (
                "Charged twice for my subscription, please refund the duplicate payment",
                Refund,
                Low,
            ),
            ("Chargeback filed for my payment", Refund, Low),
            ("Question about my invoice and VAT", Billing, Low),
            ("My credit card payment failed", Billing, High),
            ("The app crashes with an error on start", Technical, High),
            ("Website is slow since the update", Technical, Medium),
            ("Where is my order? Tracking shows nothing", Order, Low),
            ("Package arrived damaged, need help", Order, Medium),
            ("I can't log in, 2FA code never arrives", Account, High),
            ("How do I change my password?", Account, Low),
            ("My account was hacked", Security, Critical),
            (
                "Is this email a scam? It mentions my order",
                Security,
                Critical,
            ),
            ("Suspicious login from another country", Security, Low),
            ("Hello, just saying thanks", General, Low),
            (
                "Please answer asap, the invoice is wrong",
                Billing,
                Critical,
            ),
            (
                "We will take legal action about this delivery",
                Order,
                Critical,
            ),
            ("I have a problem", General, Medium),
        ];
        for (text, cat, prio) in table {
            assert_eq!(rules(text), (*cat, *prio), "{text}");
        }
    }

    #[test]
    fn words_not_substrings() {
        assert_eq!(rules("I will discard the old one").0, Category::General);
        assert_eq!(rules("The unpaid amount").0, Category::General);
        assert_eq!(rules("Our shopping cart").0, Category::General);
        assert_eq!(rules("I paid already").0, Category::Billing);
    }

    struct Fixed(Result<Vec<LabelScore>, EngineError>);
    impl ZeroShotModel for Fixed {
        fn name(&self) -> String {
            "fixed".into()
        }
        fn classify(&self, _: &str, _: &[String]) -> Result<Vec<LabelScore>, EngineError> {
            self.0.clone()
        }
    }

    fn scores(best: &str) -> Vec<LabelScore> {
        vec![
            LabelScore {
                label: best.into(),
                score: 0.9,
            },
            LabelScore {
                label: "General".into(),
                score: 0.1,
            },
        ]
    }

    #[test]
    fn model_picks_category_but_security_override_stands() {
        let c = Classifier::with_model(Arc::new(Fixed(Ok(scores("Order")))));
        let out = c.classify("Something about my invoice");
        assert_eq!(out.classification.category, Category::Order);
        assert_eq!(out.engine, "fixed");
        assert!(out.classification.scores.is_some());
        let out = c.classify("My account was hacked");
        assert_eq!(out.classification.category, Category::Security);
        assert_eq!(out.classification.priority, Priority::Critical);
    }

    #[test]
    fn failing_model_falls_back_to_rules_and_says_so() {
        let err = EngineError {
            engine: "fixed".into(),
            message: "boom".into(),
        };
        let c = Classifier::with_model(Arc::new(Fixed(Err(err))));
        let out = c.classify("Refund please");
        assert_eq!(out.classification.category, Category::Refund);
        assert_eq!(out.engine, "rules");
        assert_eq!(out.error.as_deref(), Some("fixed: boom"));
    }
}
