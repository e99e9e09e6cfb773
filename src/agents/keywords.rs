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
        let inner_apostrophe = c == '\''
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
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

/// The phrases (one or more words each) of `phrases` that occur in `words`,
/// in the order they are listed.
pub fn find<'a>(words: &[String], phrases: &[&'a str]) -> Vec<&'a str> {
    phrases
        .iter()
        .copied()
        .filter(|p| contains_phrase(words, p))
        .collect()
}

pub fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let target: Vec<String> = self::words(phrase);
    if target.is_empty() || target.len() > words.len() {
        return false;
    }
    words.windows(target.len()).any(|w| w == target.as_slice())
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
        assert!(find(&w, &["card", "paid"]).is_empty());
        assert_eq!(find(&w, &["invoice", "not working", "working not"]), ["invoice", "not working"]);
        assert!(!contains_phrase(&w, ""));
    }
}
