//! Whole-word keyword and phrase matching, so "card" never fires inside
//! "discard" and "paid" never inside "unpaid".

/// Lower-cased words of a text. Letters, digits and inner apostrophes make a
/// word ("can't", "2fa"); a typographic apostrophe counts as a plain one.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let c = if c == '\u{2019}' { '\'' } else { c };
        let inner_apostrophe =
            c == '\'' && !cur.is_empty() && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || inner_apostrophe {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A keyword list split into words once, so matching a ticket allocates nothing.
pub struct Phrases {
    list: Vec<(&'static str, Vec<String>)>,
}

impl Phrases {
    pub fn new(phrases: &[&'static str]) -> Self {
        Phrases {
            list: phrases.iter().map(|p| (*p, words(p))).collect(),
        }
    }

    /// The phrases that occur in `words`, in the order they are listed.
    pub fn find(&self, words: &[String]) -> Vec<&'static str> {
        self.list
            .iter()
            .filter(|(_, target)| contains_words(words, target))
            .map(|(p, _)| *p)
            .collect()
    }

    pub fn any(&self, words: &[String]) -> bool {
        self.list
            .iter()
            .any(|(_, target)| contains_words(words, target))
    }
}

fn contains_words(words: &[String], target: &[String]) -> bool {
    !target.is_empty()
        && target.len() <= words.len()
        && words.windows(target.len()).any(|w| w == target)
}

/// One-off phrase lookup (tests and rare paths; hot paths use [`Phrases`]).
pub fn contains_phrase(words: &[String], phrase: &str) -> bool {
    contains_words(words, &self::words(phrase))
}

/// Words that say nothing about what a ticket or an article is about.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing",
    "for", "from", "get", "got", "had", "has", "have", "having", "he", "her", "here", "hi",
    "hello", "him", "his", "how", "i", "i'm", "i've", "if", "in", "into", "is", "it", "it's",
    "its", "just", "me", "my", "no", "not", "now", "of", "on", "once", "only", "or", "our", "out",
    "please", "so", "some", "than", "thanks", "thank", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "to", "too", "up", "us", "very", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "would",
    "you", "your", "yours", "you're", "there's", "dear", "team", "support",
];

pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// A light suffix stemmer ("refunds", "refunded", "refunding" → "refund"),
/// enough to compare a model's step with an article's sentence.
pub fn stem(w: &str) -> String {
    for (suffix, min) in [("ing", 6), ("ed", 5), ("es", 5), ("s", 4)] {
        if w.len() >= min
            && let Some(base) = w.strip_suffix(suffix)
            && !base.ends_with('s')
        {
            return base.to_string();
        }
    }
    w.to_string()
}

/// The words that carry meaning, stemmed, in order (repeats kept).
pub fn content_terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !is_stopword(w))
        .map(|w| stem(&w))
        .collect()
}

/// The distinct meaningful words of a text (unstemmed, first-seen order),
/// at most `max`: what a search for the text looks up.
pub fn query_terms(text: &str, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words(text) {
        if w.chars().count() >= 2 && !is_stopword(&w) && !out.contains(&w) {
            out.push(w);
            if out.len() == max {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_keeps_contractions() {
        assert_eq!(
            words("Can't log-in! 2FA code… it’s gone"),
            ["can't", "log", "in", "2fa", "code", "it's", "gone"]
        );
        assert_eq!(words("'quoted'"), ["quoted"]);
    }

    #[test]
    fn matches_whole_words_and_phrases_only() {
        let w = words("Please discard the unpaid invoice; it is not working.");
        assert!(Phrases::new(&["card", "paid"]).find(&w).is_empty());
        let p = Phrases::new(&["invoice", "not working", "working not"]);
        assert_eq!(p.find(&w), ["invoice", "not working"]);
        assert!(p.any(&w));
        assert!(!contains_phrase(&w, ""));
    }
}
