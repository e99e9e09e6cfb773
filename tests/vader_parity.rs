//! Our VADER port against scores from the reference Python package
//! (vaderSentiment 3.3.2), written by `scripts/vader_reference.py`.

use serde::Deserialize;
use smart_support::agents::vader::Vader;

#[derive(Deserialize)]
struct Case {
    text: String,
    neg: f64,
    neu: f64,
    pos: f64,
    compound: f64,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(rename = "vaderSentiment")]
    version: String,
    cases: Vec<Case>,
}

#[test]
fn matches_vader_sentiment_3_3_2_within_1e_4() {
    let raw = include_str!("fixtures/vader_reference.json");
    let reference: Reference = serde_json::from_str(raw).expect("reference JSON");
    assert_eq!(reference.version, "3.3.2");
    assert!(
        reference.cases.len() >= 200,
        "corpus too small: {}",
        reference.cases.len()
    );
    let vader = Vader::global();
    let mut failures = Vec::new();
    for case in &reference.cases {
        let got = vader.polarity_scores(&case.text);
        let diffs = [
            (got.compound - case.compound).abs(),
            (got.pos - case.pos).abs(),
            (got.neu - case.neu).abs(),
            (got.neg - case.neg).abs(),
        ];
        if diffs.iter().any(|d| *d > 1e-4) {
            failures.push(format!(
                "{:?}: got {:?}, want compound {} pos {} neu {} neg {}",
                case.text, got, case.compound, case.pos, case.neu, case.neg
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        reference.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_exercises_the_hard_cases() {
    // The parity test is only as good as its corpus: make sure the features
    // VADER treats specially are in it.
    let raw = include_str!("fixtures/vader_reference.json");
    let reference: Reference = serde_json::from_str(raw).expect("reference JSON");
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    for needle in [
        " but ", "n't", "!!!", "??", "kind of", ":)", "😁", "the shit", "least", "never so", "no ",
        "VERY",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "corpus lacks {needle:?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| !t.is_ascii() && !t.chars().any(|c| c as u32 > 0x1F000)),
        "no non-English text"
    );
}
