//! The ticket search's query language, parsed once and rendered for each
//! backend's full-text engine (SQLite's FTS5 today; PostgreSQL's tsquery
//! for the shared store), so that a query means the same on both:
//!
//! - `printer offline`: tickets with both words (every word matches as a
//!   prefix, so a half-typed word finds its tickets; `passw*` says the
//!   same explicitly);
//! - `"printer offline"`: the words in that order, next to each other;
//! - `-refund`, `-"gift card"`: without that word or phrase;
//! - `printer OR scanner`: either (OR binds its neighbours before the
//!   implicit AND: `printer OR scanner offline` is `(printer OR scanner)
//!   AND offline`).
//!
//! Words are split as the index splits text (letters and digits; anything
//! else separates), so `e-mail` is the phrase `"e mail"`; operators of the
//! engines themselves (`NEAR`, `:`, `^`, `&`, `|`, `!`) are only words or
//! separators here: nothing a user types reaches an engine unquoted.

/// Most words and phrases in one query; the rest is ignored.
pub const MAX_ITEMS: usize = 16;

/// A word (matched as a prefix) or a phrase (its words in order, adjacent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Word(String),
    Phrase(Vec<String>),
}

/// A parsed query: every group must match (a group matches when one of its
/// items does), and no excluded item may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub groups: Vec<Vec<Item>>,
    pub excluded: Vec<Item>,
}

/// The index's words of `s`: letters and digits, lowercased.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn item(words: Vec<String>, quoted: bool) -> Option<Item> {
    match words.len() {
        0 => None,
        1 if !quoted => words.into_iter().next().map(Item::Word),
        _ => Some(Item::Phrase(words)),
    }
}

/// One lexical piece of the query text.
#[derive(Debug, PartialEq)]
enum Token {
    Or,
    Term { negated: bool, item: Item },
}

fn tokens(q: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let negated = c == '-';
        if negated {
            chars.next();
        }
        let quoted = chars.peek() == Some(&'"');
        let mut text = String::new();
        if quoted {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                text.push(c);
                chars.next();
            }
        }
        if !quoted && !negated && text == "OR" {
            out.push(Token::Or);
        } else if let Some(item) = item(words(&text), quoted) {
            out.push(Token::Term { negated, item });
        }
    }
    out
}

/// Parses `q`; an empty query (no words) matches everything.
pub fn parse(q: &str) -> Query {
    let mut query = Query::default();
    let mut join_next = false;
    let mut count = 0;
    for token in tokens(q) {
        match token {
            Token::Or => join_next = !query.groups.is_empty(),
            Token::Term { .. } if count >= MAX_ITEMS => break,
            Token::Term {
                negated: true,
                item,
            } => {
                count += 1;
                query.excluded.push(item);
                join_next = false;
            }
            Token::Term { item, .. } => {
                count += 1;
                match query.groups.last_mut() {
                    Some(group) if join_next => group.push(item),
                    _ => query.groups.push(vec![item]),
                }
                join_next = false;
            }
        }
    }
    query
}

impl Query {
    /// No words at all: the query does not filter.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.excluded.is_empty()
    }

    /// For FTS5: the expression that must match (`None`: no positive
    /// terms) and the one that must not (`None`: nothing excluded).
    pub fn fts5(&self) -> (Option<String>, Option<String>) {
        fn item(i: &Item) -> String {
            match i {
                Item::Word(w) => format!("\"{w}\"*"),
                Item::Phrase(ws) => format!("\"{}\"", ws.join(" ")),
            }
        }
        let group = |g: &Vec<Item>| match g.as_slice() {
            [one] => item(one),
            many => format!(
                "({})",
                many.iter().map(item).collect::<Vec<_>>().join(" OR ")
            ),
        };
        let must = (!self.groups.is_empty()).then(|| {
            self.groups
                .iter()
                .map(group)
                .collect::<Vec<_>>()
                .join(" AND ")
        });
        let must_not = (!self.excluded.is_empty()).then(|| {
            self.excluded
                .iter()
                .map(item)
                .collect::<Vec<_>>()
                .join(" OR ")
        });
        (must, must_not)
    }

    /// For PostgreSQL: a `to_tsquery('simple', …)` text (`None` when the
    /// query is empty).
    pub fn tsquery(&self) -> Option<String> {
        fn item(i: &Item) -> String {
            match i {
                Item::Word(w) => format!("'{w}':*"),
                Item::Phrase(ws) => format!(
                    "({})",
                    ws.iter()
                        .map(|w| format!("'{w}'"))
                        .collect::<Vec<_>>()
                        .join(" <-> ")
                ),
            }
        }
        let mut parts: Vec<String> = self
            .groups
            .iter()
            .map(|g| match g.as_slice() {
                [one] => item(one),
                many => format!(
                    "({})",
                    many.iter().map(item).collect::<Vec<_>>().join(" | ")
                ),
            })
            .collect();
        parts.extend(self.excluded.iter().map(|i| format!("!{}", item(i))));
        (!parts.is_empty()).then(|| parts.join(" & "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Item {
        Item::Word(s.into())
    }

    fn p(ws: &[&str]) -> Item {
        Item::Phrase(ws.iter().map(|s| s.to_string()).collect())
    }

    /// The golden set: each query, what it parses to, and both renderings.
    #[test]
    fn golden_queries() {
        /// A query, what it parses to, its FTS5 (must, must not) and its tsquery.
        type Case<'a> = (
            &'a str,
            Query,
            (Option<&'a str>, Option<&'a str>),
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (
                "Printer offline",
                Query {
                    groups: vec![vec![w("printer")], vec![w("offline")]],
                    excluded: vec![],
                },
                (Some("\"printer\"* AND \"offline\"*"), None),
                Some("'printer':* & 'offline':*"),
            ),
            (
                "\"printer offline\" -refund",
                Query {
                    groups: vec![vec![p(&["printer", "offline"])]],
                    excluded: vec![w("refund")],
                },
                (Some("\"printer offline\""), Some("\"refund\"*")),
                Some("('printer' <-> 'offline') & !'refund':*"),
            ),
            (
                "printer OR scanner offline",
                Query {
                    groups: vec![vec![w("printer"), w("scanner")], vec![w("offline")]],
                    excluded: vec![],
                },
                (
                    Some("(\"printer\"* OR \"scanner\"*) AND \"offline\"*"),
                    None,
                ),
                Some("('printer':* | 'scanner':*) & 'offline':*"),
            ),
            (
                "passw*",
                Query {
                    groups: vec![vec![w("passw")]],
                    excluded: vec![],
                },
                (Some("\"passw\"*"), None),
                Some("'passw':*"),
            ),
            (
                "-\"gift card\" -spam",
                Query {
                    groups: vec![],
                    excluded: vec![p(&["gift", "card"]), w("spam")],
                },
                (None, Some("\"gift card\" OR \"spam\"*")),
                Some("!('gift' <-> 'card') & !'spam':*"),
            ),
            (
                "e-mail",
                Query {
                    groups: vec![vec![p(&["e", "mail"])]],
                    excluded: vec![],
                },
                (Some("\"e mail\""), None),
                None,
            ),
            // Engine syntax is words or separators, never operators.
            (
                ")(* OR NEAR^2",
                Query {
                    groups: vec![vec![p(&["near", "2"])]],
                    excluded: vec![],
                },
                (Some("\"near 2\""), None),
                Some("('near' <-> '2')"),
            ),
            (
                "\")(* OR NEAR",
                Query {
                    groups: vec![vec![p(&["or", "near"])]],
                    excluded: vec![],
                },
                (Some("\"or near\""), None),
                Some("('or' <-> 'near')"),
            ),
            (
                "OR or",
                Query {
                    groups: vec![vec![w("or")]],
                    excluded: vec![],
                },
                (Some("\"or\"*"), None),
                Some("'or':*"),
            ),
            ("  ()*: !&| ", Query::default(), (None, None), None),
            (
                "a'b & c|d",
                Query {
                    groups: vec![vec![p(&["a", "b"])], vec![p(&["c", "d"])]],
                    excluded: vec![],
                },
                (Some("\"a b\" AND \"c d\""), None),
                Some("('a' <-> 'b') & ('c' <-> 'd')"),
            ),
            (
                "Café ÜBER",
                Query {
                    groups: vec![vec![w("café")], vec![w("über")]],
                    excluded: vec![],
                },
                (Some("\"café\"* AND \"über\"*"), None),
                Some("'café':* & 'über':*"),
            ),
        ];
        for (q, parsed, fts, ts) in cases {
            let got = parse(q);
            assert_eq!(&got, parsed, "{q}");
            let (must, must_not) = got.fts5();
            assert_eq!((must.as_deref(), must_not.as_deref()), *fts, "fts5 of {q}");
            if let Some(ts) = ts {
                assert_eq!(got.tsquery().as_deref(), Some(*ts), "tsquery of {q}");
            }
        }
    }

    #[test]
    fn a_query_is_bounded() {
        let long = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(parse(&long).groups.len(), MAX_ITEMS);
        assert!(parse("").is_empty() && parse("\"\"").is_empty());
        // An unclosed quote runs to the end.
        assert_eq!(parse("\"no end").groups, vec![vec![p(&["no", "end"])]]);
        // A leading OR joins nothing.
        assert_eq!(parse("OR printer").groups, vec![vec![w("printer")]]);
    }
}
