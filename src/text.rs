//! The rules every free-text field follows (subjects, descriptions, rating
//! comments, classify texts), in one place: trimmed, within its length, at
//! least one visible character, no control characters but line breaks and
//! tabs (where lines are allowed), and no bidirectional-override characters
//! (they make text display differently from what it says).

/// Whether a field may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} must contain visible characters")]
    Invisible(&'static str),
    #[error("{name} is {len} characters long; the limit is {max}")]
    TooLong {
        name: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} contains control characters")]
    Control(&'static str),
    #[error("{0} contains line breaks")]
    LineBreak(&'static str),
    #[error("{0} contains bidirectional-override characters")]
    Bidi(&'static str),
}

/// Embeddings and overrides of the Unicode bidirectional algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no room on screen: zero-width spaces and joiners,
/// marks, the BOM, other format characters, and blank-looking fillers.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Checks one field and returns it trimmed, with `\r\n` made `\n`.
pub fn clean(
    name: &'static str,
    value: &str,
    max: usize,
    lines: Lines,
) -> Result<String, TextError> {
    let value = value.trim().replace("\r\n", "\n");
    if value.is_empty() {
        return Err(TextError::Empty(name));
    }
    let len = value.chars().count();
    if len > max {
        return Err(TextError::TooLong { name, len, max });
    }
    for c in value.chars() {
        if is_bidi_control(c) {
            return Err(TextError::Bidi(name));
        }
        if c == '\n' || c == '\r' {
            if lines == Lines::One {
                return Err(TextError::LineBreak(name));
            }
        } else if c.is_control() && c != '\t' {
            return Err(TextError::Control(name));
        }
    }
    if value.chars().all(is_invisible) {
        return Err(TextError::Invisible(name));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_passing_and_a_failing_case() {
        assert_eq!(clean("s", "  hello  ", 10, Lines::One), Ok("hello".into()));
        assert_eq!(clean("s", "a\r\nb", 10, Lines::Many), Ok("a\nb".into()));
        assert_eq!(
            clean("s", "   ", 10, Lines::One),
            Err(TextError::Empty("s"))
        );
        assert_eq!(
            clean("s", "\u{200B}\u{200D}\u{FEFF}", 10, Lines::One),
            Err(TextError::Invisible("s"))
        );
        assert_eq!(
            clean("s", "x".repeat(11).as_str(), 10, Lines::One),
            Err(TextError::TooLong {
                name: "s",
                len: 11,
                max: 10
            })
        );
        assert_eq!(
            clean("s", "a\u{0}b", 10, Lines::Many),
            Err(TextError::Control("s"))
        );
        assert_eq!(
            clean("s", "a\u{1b}[31m", 10, Lines::Many),
            Err(TextError::Control("s"))
        );
        assert_eq!(
            clean("s", "a\nb", 10, Lines::One),
            Err(TextError::LineBreak("s"))
        );
        assert_eq!(
            clean("s", "abc\u{202E}fdp.exe", 20, Lines::One),
            Err(TextError::Bidi("s"))
        );
        assert_eq!(clean("s", "a\tb", 10, Lines::One), Ok("a\tb".into()));
        // Real text in other scripts, with joiners inside it, is fine.
        assert!(clean("s", "مرحبا 👩\u{200D}💻 こんにちは", 50, Lines::One).is_ok());
    }
}
