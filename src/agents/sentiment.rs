//! Sentiment agent: VADER scores plus urgency keywords give sentiment, risk
//! and confidence.

use std::sync::OnceLock;

use super::keywords::{self, Phrases};
use super::vader::Vader;
use crate::ticket::{Risk, Sentiment, SentimentReport};

pub const URGENCY: &[&str] = &[
    "urgent",
    "asap",
    "immediately",
    "right now",
    "today",
    "emergency",
    "cannot wait",
    "serious issue",
    "complaint",
];

pub fn analyze(text: &str) -> SentimentReport {
    let scores = Vader::global().polarity_scores(text);
    static URGENT: OnceLock<Phrases> = OnceLock::new();
    let keywords: Vec<String> = URGENT
        .get_or_init(|| Phrases::new(URGENCY))
        .find(&keywords::words(text))
        .into_iter()
        .map(String::from)
        .collect();
    let (sentiment, risk) = decide(scores.compound, scores.neg, !keywords.is_empty());
    SentimentReport {
        sentiment,
        risk,
        confidence: (scores.pos.max(scores.neg) * 100.0).round() / 100.0,
        keywords,
        neg: scores.neg,
        neu: scores.neu,
        pos: scores.pos,
        compound: scores.compound,
    }
}

/// The thresholds, in the order they win.
pub fn decide(compound: f64, neg: f64, urgent: bool) -> (Sentiment, Risk) {
    if urgent {
        (Sentiment::Urgent, Risk::High)
    } else if neg > 0.6 || compound <= -0.4 {
        (Sentiment::Negative, Risk::High)
    } else if compound >= 0.4 {
        (Sentiment::Positive, Risk::Low)
    } else {
        (Sentiment::Neutral, Risk::Medium)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_table() {
        use Risk as R;
        use Sentiment as S;
        let table = [
            (0.4, 0.0, false, S::Positive, R::Low),
            (0.39, 0.0, false, S::Neutral, R::Medium),
            (-0.39, 0.3, false, S::Neutral, R::Medium),
            (-0.4, 0.3, false, S::Negative, R::High),
            (0.1, 0.61, false, S::Negative, R::High),
            (0.1, 0.6, false, S::Neutral, R::Medium),
            (0.9, 0.0, true, S::Urgent, R::High),
        ];
        for (compound, neg, urgent, s, r) in table {
            assert_eq!(
                decide(compound, neg, urgent),
                (s, r),
                "{compound} {neg} {urgent}"
            );
        }
    }

    #[test]
    fn analyze_reports_keywords_and_confidence() {
        let r = analyze("Please fix this ASAP, I need it today!");
        assert_eq!(r.sentiment, Sentiment::Urgent);
        assert_eq!(r.keywords, ["asap", "today"]);
        let r = analyze("Thank you, everything works great now!");
        assert_eq!(r.sentiment, Sentiment::Positive);
        assert_eq!(r.confidence, (r.pos * 100.0).round() / 100.0);
        let r = analyze("This is terrible, awful, horrible service.");
        assert_eq!((r.sentiment, r.risk), (Sentiment::Negative, Risk::High));
        // "today" inside another word does not count.
        assert!(analyze("todays news").keywords.is_empty());
    }
}
