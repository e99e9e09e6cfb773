//! A faithful port of VADER (`vaderSentiment` 3.3.2, MIT) in plain Rust.
//!
//! The crates.io port `vader_sentiment` 0.1.1 scores differently from the
//! reference (case-insensitive lexicon, different tokenisation), so this module
//! follows the Python source line by line, quirks included (e.g. `_but_check`
//! looks values up with `list.index`). `tests/vader_parity.rs` checks it against
//! scores written by `scripts/vader_reference.py`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

const BOOSTERS_INCR: &[&str] = &[
    "absolutely",
    "amazingly",
    "awfully",
    "completely",
    "considerable",
    "considerably",
    "decidedly",
    "deeply",
    "effing",
    "enormous",
    "enormously",
    "entirely",
    "especially",
    "exceptional",
    "exceptionally",
    "extreme",
    "extremely",
    "fabulously",
    "flipping",
    "flippin",
    "frackin",
    "fracking",
    "fricking",
    "frickin",
    "frigging",
    "friggin",
    "fully",
    "fuckin",
    "fucking",
    "fuggin",
    "fugging",
    "greatly",
    "hella",
    "highly",
    "hugely",
    "incredible",
    "incredibly",
    "intensely",
    "major",
    "majorly",
    "more",
    "most",
    "particularly",
    "purely",
    "quite",
    "really",
    "remarkably",
    "so",
    "substantially",
    "thoroughly",
    "total",
    "totally",
    "tremendous",
    "tremendously",
    "uber",
    "unbelievably",
    "unusually",
    "utter",
    "utterly",
    "very",
];

const BOOSTERS_DECR: &[&str] = &[
    "almost",
    "barely",
    "hardly",
    "just enough",
    "kind of",
    "kinda",
    "kindof",
    "kind-of",
    "less",
    "little",
    "marginal",
    "marginally",
    "occasional",
    "occasionally",
    "partly",
    "scarce",
    "scarcely",
    "slight",
    "slightly",
    "somewhat",
    "sort of",
    "sorta",
    "sortof",
    "sort-of",
];

const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// VADER's four scores, rounded as the reference rounds them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Polarity {
    pub neg: f64,
    pub neu: f64,
    pub pos: f64,
    pub compound: f64,
}

/// The lexicons are parsed once per process; they are embedded in the binary.
pub struct Vader {
    lexicon: HashMap<String, f64>,
    emojis: HashMap<char, String>,
}

impl Vader {
    /// The shared analyser (parsing the 7.5k-entry lexicon takes a few ms).
    pub fn global() -> &'static Vader {
        static VADER: OnceLock<Vader> = OnceLock::new();
        VADER.get_or_init(Vader::new)
    }

    fn new() -> Self {
        let mut lexicon = HashMap::new();
        for line in include_str!("vader_lexicon.tsv").lines() {
            if let Some((word, value)) = line.split_once('\t')
                && let Ok(v) = value.parse::<f64>()
            {
                lexicon.insert(word.to_string(), v);
            }
        }
        let mut emojis = HashMap::new();
        for line in include_str!("emoji_lexicon.tsv").lines() {
            if let Some((emoji, description)) = line.split_once('\t') {
                // Python iterates code points, so only one-code-point keys can ever match.
                let mut chars = emoji.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    emojis.insert(c, description.to_string());
                }
            }
        }
        Vader { lexicon, emojis }
    }

    fn in_lexicon(&self, word_lower: &str) -> bool {
        self.lexicon.contains_key(word_lower)
    }

    /// `SentimentIntensityAnalyzer.polarity_scores`.
    pub fn polarity_scores(&self, text: &str) -> Polarity {
        // Emojis become their descriptions, separated by a space from a preceding word.
        let mut no_emoji = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            if let Some(description) = self.emojis.get(&c) {
                if !prev_space {
                    no_emoji.push(' ');
                }
                no_emoji.push_str(description);
                prev_space = false;
            } else {
                no_emoji.push(c);
                prev_space = c == ' ';
            }
        }
        let text = no_emoji.trim_matches(py_isspace);
        let words: Vec<&str> = text
            .split(py_isspace)
            .filter(|w| !w.is_empty())
            .map(strip_punc_if_word)
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let is_cap_diff = allcap_differential(&words);

        let mut sentiments: Vec<f64> = Vec::with_capacity(words.len());
        for i in 0..words.len() {
            if booster(&lower[i]).is_some()
                || (i + 1 < words.len() && lower[i] == "kind" && lower[i + 1] == "of")
            {
                sentiments.push(0.0);
                continue;
            }
            sentiments.push(self.sentiment_valence(&words, &lower, is_cap_diff, i));
        }
        but_check(&lower, &mut sentiments);
        score_valence(&sentiments, text)
    }

    fn sentiment_valence(&self, words: &[&str], lower: &[String], cap_diff: bool, i: usize) -> f64 {
        let item = words[i];
        let item_lower = lower[i].as_str();
        let Some(&base) = self.lexicon.get(item_lower) else {
            return 0.0;
        };
        let mut valence = base;
        if item_lower == "no" && i != words.len() - 1 && self.in_lexicon(&lower[i + 1]) {
            valence = 0.0;
        }
        if (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
        {
            valence = base * N_SCALAR;
        }
        if py_isupper(item) && cap_diff {
            if valence > 0.0 {
                valence += C_INCR;
            } else {
                valence -= C_INCR;
            }
        }
        for start_i in 0..3 {
            if i > start_i && !self.in_lexicon(&lower[i - (start_i + 1)]) {
                let mut s = scalar_inc_dec(words[i - (start_i + 1)], valence, cap_diff);
                if start_i == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start_i == 2 && s != 0.0 {
                    s *= 0.9;
                }
                valence += s;
                valence = negation_check(valence, lower, start_i, i);
                if start_i == 2 {
                    valence = special_idioms_check(valence, lower, i);
                }
            }
        }
        self.least_check(valence, lower, i)
    }

    fn least_check(&self, valence: f64, lower: &[String], i: usize) -> f64 {
        if i > 1 && !self.in_lexicon(&lower[i - 1]) && lower[i - 1] == "least" {
            if lower[i - 2] != "at" && lower[i - 2] != "very" {
                return valence * N_SCALAR;
            }
        } else if i > 0 && !self.in_lexicon(&lower[i - 1]) && lower[i - 1] == "least" {
            return valence * N_SCALAR;
        }
        valence
    }
}

/// Python's `str.isspace` for one character (it also counts the ASCII
/// separators U+001C..U+001F, which Unicode's White_Space does not).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.isupper`: at least one cased character and no lowercase one.
fn py_isupper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

fn is_titlecase(c: char) -> bool {
    // The Lt category: digraphs such as ǅ and the Greek capitals with prosgegrammeni.
    matches!(c, '\u{1C5}' | '\u{1C8}' | '\u{1CB}' | '\u{1F2}')
        || ('\u{1F88}'..='\u{1F8F}').contains(&c)
        || ('\u{1F98}'..='\u{1F9F}').contains(&c)
        || ('\u{1FA8}'..='\u{1FAF}').contains(&c)
        || matches!(c, '\u{1FBC}' | '\u{1FCC}' | '\u{1FFC}')
}

/// `SentiText._strip_punc_if_word`: strip ASCII punctuation unless that leaves
/// two or fewer characters (then it was probably an emoticon).
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| c.is_ascii_punctuation());
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

fn allcap_differential(words: &[&str]) -> bool {
    let allcap = words.iter().filter(|w| py_isupper(w)).count();
    let diff = words.len() - allcap;
    0 < diff && diff < words.len()
}

fn booster(word_lower: &str) -> Option<f64> {
    if BOOSTERS_INCR.contains(&word_lower) {
        Some(B_INCR)
    } else if BOOSTERS_DECR.contains(&word_lower) {
        Some(B_DECR)
    } else {
        None
    }
}

fn scalar_inc_dec(word: &str, valence: f64, cap_diff: bool) -> f64 {
    let Some(mut scalar) = booster(&word.to_lowercase()) else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar *= -1.0;
    }
    if py_isupper(word) && cap_diff {
        if valence > 0.0 {
            scalar += C_INCR;
        } else {
            scalar -= C_INCR;
        }
    }
    scalar
}

/// `negated([word])` as the analyser calls it: one word at a time.
fn negated(word_lower: &str) -> bool {
    NEGATE.contains(&word_lower) || word_lower.contains("n't")
}

fn negation_check(valence: f64, lower: &[String], start_i: usize, i: usize) -> f64 {
    let w = |k: usize| lower[i - k].as_str();
    match start_i {
        0 if negated(w(1)) => valence * N_SCALAR,
        1 => {
            if w(2) == "never" && (w(1) == "so" || w(1) == "this") {
                valence * 1.25
            } else if w(2) == "without" && w(1) == "doubt" {
                valence
            } else if negated(w(2)) {
                valence * N_SCALAR
            } else {
                valence
            }
        }
        2 => {
            // Python's `a and (b or c) or (d or e)` precedence, kept as written.
            if (w(3) == "never" && (w(2) == "so" || w(2) == "this"))
                || (w(1) == "so" || w(1) == "this")
            {
                valence * 1.25
            } else if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") {
                valence
            } else if negated(w(3)) {
                valence * N_SCALAR
            } else {
                valence
            }
        }
        _ => valence,
    }
}

fn special_case(seq: &str) -> Option<f64> {
    SPECIAL_CASES
        .iter()
        .find(|(k, _)| *k == seq)
        .map(|(_, v)| *v)
}

fn special_idioms_check(mut valence: f64, lower: &[String], i: usize) -> f64 {
    let onezero = format!("{} {}", lower[i - 1], lower[i]);
    let twoonezero = format!("{} {} {}", lower[i - 2], lower[i - 1], lower[i]);
    let twoone = format!("{} {}", lower[i - 2], lower[i - 1]);
    let threetwoone = format!("{} {} {}", lower[i - 3], lower[i - 2], lower[i - 1]);
    let threetwo = format!("{} {}", lower[i - 3], lower[i - 2]);
    for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
        if let Some(v) = special_case(seq) {
            valence = v;
            break;
        }
    }
    if lower.len() - 1 > i
        && let Some(v) = special_case(&format!("{} {}", lower[i], lower[i + 1]))
    {
        valence = v;
    }
    if lower.len() - 1 > i + 1
        && let Some(v) = special_case(&format!("{} {} {}", lower[i], lower[i + 1], lower[i + 2]))
    {
        valence = v;
    }
    for n_gram in [&threetwoone, &threetwo, &twoone] {
        if let Some(b) = booster(n_gram) {
            valence += b;
        }
    }
    valence
}

/// `_but_check`, including its use of `list.index` (the first equal value is
/// the one rescaled), which makes repeated scores behave oddly in the reference.
fn but_check(lower: &[String], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else {
        return;
    };
    for k in 0..sentiments.len() {
        let sentiment = sentiments[k];
        let Some(si) = sentiments.iter().position(|s| *s == sentiment) else {
            continue;
        };
        if si < bi {
            sentiments[si] = sentiment * 0.5;
        } else if si > bi {
            sentiments[si] = sentiment * 1.5;
        }
    }
}

fn punctuation_emphasis(text: &str) -> f64 {
    let ep = text.matches('!').count().min(4) as f64 * 0.292;
    let qm_count = text.matches('?').count();
    let qm = if qm_count > 1 {
        if qm_count <= 3 {
            qm_count as f64 * 0.18
        } else {
            0.96
        }
    } else {
        0.0
    };
    ep + qm
}

fn normalize(score: f64) -> f64 {
    let alpha = 15.0;
    (score / (score * score + alpha).sqrt()).clamp(-1.0, 1.0)
}

/// Python's `round(x, digits)` (correctly rounded, ties to even), which Rust's
/// fixed-precision formatting reproduces exactly.
fn py_round(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

fn score_valence(sentiments: &[f64], text: &str) -> Polarity {
    if sentiments.is_empty() {
        return Polarity {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    let mut sum_s: f64 = sentiments.iter().sum();
    let punct = punctuation_emphasis(text);
    if sum_s > 0.0 {
        sum_s += punct;
    } else if sum_s < 0.0 {
        sum_s -= punct;
    }
    let compound = normalize(sum_s);
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0f64, 0.0f64, 0usize);
    for &s in sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1;
        }
    }
    if pos_sum > neg_sum.abs() {
        pos_sum += punct;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= punct;
    }
    let total = pos_sum + neg_sum.abs() + neu_count as f64;
    Polarity {
        neg: py_round((neg_sum / total).abs(), 3),
        neu: py_round((neu_count as f64 / total).abs(), 3),
        pos: py_round((pos_sum / total).abs(), 3),
        compound: py_round(compound, 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_predicates() {
        assert!(py_isupper("HELLO!"));
        assert!(!py_isupper("Hello"));
        assert!(!py_isupper("123"));
        assert!(!py_isupper("ǅEMAL"));
        assert_eq!(strip_punc_if_word(":)"), ":)");
        assert_eq!(strip_punc_if_word("--great--"), "great");
        assert_eq!(strip_punc_if_word("(ok)"), "(ok)");
    }

    #[test]
    fn rounding_matches_python() {
        assert_eq!(py_round(0.0625, 3), 0.062);
        assert_eq!(py_round(2.675, 2), 2.67);
    }

    #[test]
    fn but_shifts_weight_to_the_second_clause() {
        let v = Vader::global();
        let only = v.polarity_scores("The food was great.");
        let with_but = v.polarity_scores("The food was great, but the service was terrible.");
        assert!(only.compound > 0.5);
        assert!(with_but.compound < 0.0);
    }
}
