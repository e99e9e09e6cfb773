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
