//! The knowledge base: the team's own articles, which the troubleshooter
//! retrieves, quotes and is checked against, and which published become the
//! public help centre (`/kb`).
//!
//! Articles live in the store (searchable there); on disk they are a folder
//! of Markdown files with a small front matter (`kb import` / `kb export`),
//! and a starter set is embedded in the binary for the first start.

pub mod markdown;
pub mod retrieve;
pub mod starter;

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::agents::policy::{DeliveryPolicy, PolicyHandle};
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::ticket::Category;

/// Longest article body (characters).
pub const MAX_BODY_CHARS: usize = 20_000;
/// Longest title (characters).
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest slug (characters).
pub const MAX_SLUG_CHARS: usize = 80;

/// One article as it is written and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Article {
    pub slug: String,
    pub title: String,
    /// Markdown; raw HTML in it is shown as text, never run.
    pub body: String,
    /// The category it answers (None: any).
    pub category: Option<Category>,
    pub tags: Vec<String>,
    pub published: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KbError {
    #[error(
        "slug '{0}' is not valid: 1 to {MAX_SLUG_CHARS} lower-case letters, digits and '-', not starting or ending with '-'"
    )]
    BadSlug(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("knowledge base: {0}")]
    Store(String),
}

/// A knowledge base in memory (no database file): the starter articles, or
/// those of `dir`. What `triage` and `eval` retrieve from.
pub fn in_memory(dir: Option<&Path>) -> Result<Arc<Store>, KbError> {
    let articles = match dir {
        Some(d) => read_dir(d)?,
        None => starter::articles()?,
    };
    if let (true, Some(d)) = (articles.is_empty(), dir) {
        return Err(KbError::File {
            file: d.display().to_string(),
            message: "no *.md articles in this folder".into(),
        });
    }
    let store = Store::open(Path::new(":memory:")).map_err(|e| KbError::Store(e.to_string()))?;
    store
        .kb_import(&articles, "import", false)
        .map_err(|e| KbError::Store(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Sets a pipeline up without a database (`triage`, `eval`): the articles
/// of `dir` (or the starter set) in memory, the default delivery policy,
/// and the learned classifier trained on them and the shipped tickets.
pub fn standalone(pipeline: &mut Pipeline, dir: Option<&Path>) -> Result<Arc<Store>, KbError> {
    let store = in_memory(dir)?;
    let policy = Arc::new(RwLock::new(DeliveryPolicy::default()));
    attach(pipeline, store.clone(), policy);
    crate::desk::learning::retrain(&store, &pipeline.classifier.learned())
        .map_err(|e| KbError::Store(e.to_string()))?;
    Ok(store)
}

/// Gives the pipeline's troubleshooter the knowledge base in `store` and
/// the delivery policy.
pub fn attach(pipeline: &mut Pipeline, store: Arc<Store>, policy: PolicyHandle) {
    pipeline.troubleshooter = pipeline
        .troubleshooter
        .clone()
        .with_knowledge(Arc::new(retrieve::StoreKnowledge::new(store)))
        .with_policy(policy);
}

/// Checks a slug: the same in every URL and file name.
pub fn check_slug(slug: &str) -> Result<(), KbError> {
    let ok = !slug.is_empty()
        && slug.chars().count() <= MAX_SLUG_CHARS
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(KbError::BadSlug(slug.to_string()))
    }
}

/// A slug made from a title ("Reset your password" → "reset-your-password").
pub fn slugify(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(MAX_SLUG_CHARS).collect();
    out.trim_end_matches('-').to_string()
}

impl Article {
    /// Checks and tidies an article (trimmed title and body, plain tags).
    pub fn checked(mut self) -> Result<Article, KbError> {
        check_slug(&self.slug)?;
        self.title = self.title.trim().to_string();
        self.body = self.body.trim().replace("\r\n", "\n");
        if self.title.is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(KbError::Invalid(format!(
                "the title is 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        if self.title.chars().any(char::is_control) {
            return Err(KbError::Invalid(
                "the title cannot contain control characters".into(),
            ));
        }
        if self.body.is_empty() || self.body.chars().count() > MAX_BODY_CHARS {
            return Err(KbError::Invalid(format!(
                "the body is 1 to {MAX_BODY_CHARS} characters"
            )));
        }
        self.tags = parse_tags(&self.tags.join(","));
        Ok(self)
    }

    /// The numbered (or bulleted) steps of the article: the items of its
    /// first list, as plain text.
    pub fn steps(&self) -> Vec<String> {
        markdown::first_list_items(&self.body)
    }

    /// The article's text as plain sentences, for grounding checks.
    pub fn sentences(&self) -> Vec<String> {
        markdown::plain_sentences(&self.body)
    }

    /// The article as a file: front matter, a blank line, the body.
    pub fn to_file(&self) -> String {
        format!(
            "---\ntitle: {}\nslug: {}\ncategory: {}\ntags: {}\npublished: {}\n---\n\n{}\n",
            self.title,
            self.slug,
            self.category.map_or("any", |c| c.as_str()),
            self.tags.join(", "),
            self.published,
            self.body
        )
    }

    /// Reads a file written by [`Article::to_file`] (or by hand). The slug
    /// defaults to `fallback_slug` (the file name).
    pub fn from_file(text: &str, fallback_slug: &str) -> Result<Article, KbError> {
        let text = text
            .strip_prefix('\u{feff}')
            .unwrap_or(text)
            .replace("\r\n", "\n");
        let rest = text.strip_prefix("---\n").ok_or_else(|| {
            KbError::Invalid("no front matter (the file must start with '---')".into())
        })?;
        let (head, body) = rest
            .split_once("\n---\n")
            .or_else(|| rest.strip_suffix("\n---").map(|h| (h, "")))
            .ok_or_else(|| KbError::Invalid("the front matter has no closing '---'".into()))?;
        let mut a = Article {
            slug: fallback_slug.to_string(),
            title: String::new(),
            body: body.to_string(),
            category: None,
            tags: Vec::new(),
            published: true,
        };
        for (n, line) in head.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(':').ok_or_else(|| {
                KbError::Invalid(format!(
                    "front matter line {}: expected 'key: value'",
                    n + 2
                ))
            })?;
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "title" => a.title = value.to_string(),
                "slug" => a.slug = value.to_string(),
                "category" => a.category = parse_category(value)?,
                "tags" => a.tags = parse_tags(value.trim_matches(['[', ']'])),
                "published" => {
                    a.published = match value {
                        "true" | "yes" => true,
                        "false" | "no" => false,
                        other => {
                            return Err(KbError::Invalid(format!(
                                "published: expected true or false, got '{other}'"
                            )));
                        }
                    }
                }
                other => {
                    return Err(KbError::Invalid(format!(
                        "front matter line {}: unknown key '{other}' (title, slug, category, tags, published)",
                        n + 2
                    )));
                }
            }
        }
        a.checked()
    }
}

/// "Account", "any" or empty.
pub fn parse_category(value: &str) -> Result<Option<Category>, KbError> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    v.parse::<Category>()
        .map(Some)
        .map_err(|e| KbError::Invalid(e.to_string()))
}

/// Comma-separated tags, lower-cased, without blanks or repeats.
pub fn parse_tags(value: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for t in value.split(',') {
        let t: String = t
            .trim()
            .trim_matches('"')
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect();
        if !t.is_empty() && !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.truncate(20);
    tags
}

/// Reads every `*.md` file of a folder (sorted by name). Any bad file is an
/// error naming it: an import is all or nothing.
pub fn read_dir(dir: &Path) -> Result<Vec<Article>, KbError> {
    let io = |e: std::io::Error| KbError::File {
        file: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
        .collect();
    paths.sort();
    let mut articles: Vec<Article> = Vec::new();
    for p in paths {
        let file = p.display().to_string();
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let text = std::fs::read_to_string(&p).map_err(|e| KbError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let a = Article::from_file(&text, stem).map_err(|e| KbError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if articles.iter().any(|b| b.slug == a.slug) {
            return Err(KbError::File {
                file,
                message: format!("slug '{}' is used by another file", a.slug),
            });
        }
        articles.push(a);
    }
    Ok(articles)
}

/// Writes each article to `DIR/{slug}.md` (creating the folder).
pub fn write_dir(dir: &Path, articles: &[Article]) -> Result<usize, KbError> {
    let io = |file: &Path, e: std::io::Error| KbError::File {
        file: file.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for a in articles {
        let p = dir.join(format!("{}.md", a.slug));
        std::fs::write(&p, a.to_file()).map_err(|e| io(&p, e))?;
    }
    Ok(articles.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> Article {
        Article {
            slug: "reset-password".into(),
            title: "Reset your password".into(),
            body: "Intro.\n\n1. Open the sign-in page.\n2. Choose **Forgot password**.\n".into(),
            category: Some(Category::Account),
            tags: vec!["password".into(), "login".into()],
            published: true,
        }
    }

    #[test]
    fn file_round_trip() {
        let a = article().checked().unwrap();
        let back = Article::from_file(&a.to_file(), "other").unwrap();
        assert_eq!(back, a);
        assert_eq!(
            a.steps(),
            ["Open the sign-in page.", "Choose Forgot password."]
        );
    }

    #[test]
    fn bad_front_matter_is_a_clear_error() {
        let e = Article::from_file("no front matter", "x").unwrap_err();
        assert!(e.to_string().contains("front matter"), "{e}");
        let e = Article::from_file("---\ntitle: T\ncolour: red\n---\nbody", "x").unwrap_err();
        assert!(e.to_string().contains("unknown key 'colour'"), "{e}");
        let e = Article::from_file("---\ntitle: T\ncategory: Weather\n---\nbody", "x").unwrap_err();
        assert!(e.to_string().contains("Weather"), "{e}");
        let e = Article::from_file("---\ntitle: T\n---\nbody", "Bad Slug").unwrap_err();
        assert!(matches!(e, KbError::BadSlug(_)), "{e}");
        let e = Article::from_file("---\ntitle: T\n---\n   ", "ok").unwrap_err();
        assert!(e.to_string().contains("body"), "{e}");
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("  Reset your *password*! "), "reset-your-password");
        assert!(check_slug("a-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a b", "a/b", "é"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
    }
}
