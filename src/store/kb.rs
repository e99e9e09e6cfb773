//! Knowledge-base articles and the searches retrieval needs. Callers pass
//! plain terms; how they become a query (FTS5 here) stays in the store, so
//! another backend can answer the same calls.

use super::sql::{Backend, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock;
use crate::kb::Article;
use crate::ticket::Category;

/// An article with its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct ArticleRow {
    #[serde(flatten)]
    pub article: Article,
    pub updated_at: String,
    pub updated_by: String,
}

/// A search hit. `score` is BM25 (higher is better: SQLite's value negated).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KbHit {
    pub slug: String,
    pub title: String,
    pub category: Option<Category>,
    pub score: f64,
}

/// A resolved ticket like the one at hand, and the last public reply staff
/// sent on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimilarTicket {
    pub id: i64,
    pub subject: String,
    pub reply: String,
    pub score: f64,
}

/// Terms joined with OR, each quoted, so no input is an FTS syntax error.
fn any_of(terms: &[String]) -> Option<String> {
    let quoted: Vec<String> = terms
        .iter()
        .filter(|t| !t.is_empty())
        .take(64)
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" OR "))
}

/// FTS5's `bm25(kb_fts, 4.0, 2.0, 1.0)` on PostgreSQL: per query stem, its
/// IDF over every article times its frequency weighted by column, damped by
/// the article's length against the average; `?1` holds the query's words.
const PG_BM25: &str = "
    WITH docs AS (
        SELECT a.id, a.slug, a.title, a.category, a.published,
               setweight(to_tsvector('english', a.title), 'A')
               || setweight(to_tsvector('english', a.tags), 'B')
               || setweight(to_tsvector('english', a.body), 'C') AS v
        FROM kb_articles a),
    lens AS (
        SELECT d.id,
               (SELECT COALESCE(SUM(array_length(u.positions, 1)), 0) FROM unnest(d.v) u)::float8
                   AS dl
        FROM docs d),
    corpus AS (SELECT COUNT(*)::float8 AS n, GREATEST(AVG(dl), 1.0)::float8 AS avgdl FROM lens),
    terms AS (SELECT DISTINCT u.lexeme FROM unnest(to_tsvector('english', ?1)) u),
    hits AS (
        SELECT d.id, u.lexeme,
               (SELECT SUM(CASE w WHEN 'A' THEN 4.0 WHEN 'B' THEN 2.0 ELSE 1.0 END)
                FROM unnest(u.weights) w)::float8 AS f
        FROM docs d CROSS JOIN LATERAL unnest(d.v) u
        WHERE u.lexeme IN (SELECT lexeme FROM terms)),
    df AS (SELECT lexeme, COUNT(*)::float8 AS n FROM hits GROUP BY lexeme)
    SELECT d.slug, d.title, d.category,
           SUM(GREATEST(ln((c.n - df.n + 0.5) / (df.n + 0.5)), 1e-6)
               * (h.f * 2.2) / (h.f + 1.2 * (0.25 + 0.75 * l.dl / c.avgdl))) AS score
    FROM hits h JOIN docs d ON d.id = h.id JOIN lens l ON l.id = h.id
         JOIN df ON df.lexeme = h.lexeme CROSS JOIN corpus c
    WHERE d.published = 1
    GROUP BY d.slug, d.title, d.category
    ORDER BY score DESC, d.slug LIMIT ?2";

/// Any of `terms`, for PostgreSQL's `websearch_to_tsquery` (which takes
/// any text without a syntax error).
fn websearch_any(terms: &[String]) -> String {
    terms
        .iter()
        .filter(|t| !t.is_empty())
        .take(64)
        .map(|t| format!("\"{}\"", t.replace('"', " ")))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn article_row(r: &Row<'_>) -> super::sql::Result<ArticleRow> {
    let category: Option<String> = r.get(3)?;
    let tags: String = r.get(4)?;
    Ok(ArticleRow {
        article: Article {
            slug: r.get(0)?,
            title: r.get(1)?,
            body: r.get(2)?,
            category: category.and_then(|c| c.parse().ok()),
            tags: crate::kb::parse_tags(&tags),
            published: r.get(5)?,
        },
        updated_at: r.get(6)?,
        updated_by: r.get(7)?,
    })
}

const ARTICLE_COLUMNS: &str =
    "slug, title, body, category, tags, published, updated_at, updated_by";

/// How an import went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

fn slug_taken(tx: &Transaction<'_>, slug: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_row("SELECT 1 FROM kb_articles WHERE slug = ?1", [slug], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

fn upsert(tx: &Transaction<'_>, a: &Article, by: &str, now: &str) -> Result<bool, StoreError> {
    let existed = slug_taken(tx, &a.slug)?;
    tx.execute(
        "INSERT INTO kb_articles (slug, title, body, category, tags, published, created_at, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
         ON CONFLICT(slug) DO UPDATE SET title = ?2, body = ?3, category = ?4, tags = ?5,
             published = ?6, updated_at = ?7, updated_by = ?8",
        params![
            a.slug,
            a.title,
            a.body,
            a.category.map(|c| c.as_str()),
            a.tags.join(", "),
            a.published,
            now,
            by
        ],
    )?;
    Ok(!existed)
}

impl Store {
    /// Every article (or only published ones), by title.
    pub fn kb_articles(&self, published_only: bool) -> Result<Vec<ArticleRow>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ARTICLE_COLUMNS} FROM kb_articles
             WHERE published = 1 OR ?1 = 0 ORDER BY title COLLATE NOCASE, slug"
        ))?;
        let rows = st
            .query_map([published_only], article_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// How many articles are published (what retrieval can use).
    pub fn kb_published(&self) -> Result<i64, StoreError> {
        let conn = self.reader();
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM kb_articles WHERE published = 1",
            [],
            |r| r.get(0),
        )?)
    }

    pub fn kb_article(&self, slug: &str) -> Result<Option<ArticleRow>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                &format!("SELECT {ARTICLE_COLUMNS} FROM kb_articles WHERE slug = ?1"),
                [slug],
                article_row,
            )
            .optional()?)
    }

    /// Creates or updates an article. `previous_slug` renames one; a slug
    /// that another article already has is a conflict.
    pub fn kb_save(
        &self,
        a: &Article,
        previous_slug: Option<&str>,
        by: &str,
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = clock::now();
            if let Some(prev) = previous_slug.filter(|p| *p != a.slug) {
                if slug_taken(&tx, &a.slug)? {
                    return Err(StoreError::Conflict(format!(
                        "another article already has the slug '{}'",
                        a.slug
                    )));
                }
                let n = tx.execute(
                    "UPDATE kb_articles SET slug = ?1 WHERE slug = ?2",
                    params![a.slug, prev],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
            }
            upsert(&tx, a, by, &now)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn kb_delete(&self, slug: &str) -> Result<(), StoreError> {
        self.write(|conn| {
            match conn.execute("DELETE FROM kb_articles WHERE slug = ?1", [slug])? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }

    /// Creates or updates every article in one transaction: all or nothing.
    /// With `replace`, articles not among them are deleted (counted in
    /// `deleted`).
    pub fn kb_import(
        &self,
        articles: &[Article],
        by: &str,
        replace: bool,
    ) -> Result<ImportReport, StoreError> {
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = clock::now();
            let mut report = ImportReport {
                created: 0,
                updated: 0,
                deleted: 0,
            };
            if replace {
                let keep: std::collections::HashSet<&str> =
                    articles.iter().map(|a| a.slug.as_str()).collect();
                let existing: Vec<String> = tx
                    .prepare("SELECT slug FROM kb_articles")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for slug in existing.iter().filter(|s| !keep.contains(s.as_str())) {
                    tx.execute("DELETE FROM kb_articles WHERE slug = ?1", [slug])?;
                    report.deleted += 1;
                }
            }
            for a in articles {
                if upsert(&tx, a, by, &now)? {
                    report.created += 1;
                } else {
                    report.updated += 1;
                }
            }
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('kb_seeded', '1')
                 ON CONFLICT(key) DO NOTHING",
                [],
            )?;
            tx.commit()?;
            Ok(report)
        })
    }

    /// Imports `articles` the first time the database is opened by the
    /// service; never again (an operator who deletes the starter articles
    /// does not get them back). Returns how many were imported.
    pub fn kb_seed_once(&self, articles: &[Article]) -> Result<usize, StoreError> {
        if self.setting("kb_seeded")?.is_some() {
            return Ok(0);
        }
        let r = self.kb_import(articles, "starter", false)?;
        Ok(r.created)
    }

    /// Published articles matching any of `terms`, best BM25 first (title
    /// weighs 4, tags 2, body 1).
    pub fn kb_search(&self, terms: &[String], limit: usize) -> Result<Vec<KbHit>, StoreError> {
        let Some(q) = any_of(terms) else {
            return Ok(Vec::new());
        };
        let conn = self.reader();
        let (sql, q) = match conn.backend() {
            Backend::Sqlite => (
                "SELECT a.slug, a.title, a.category, -bm25(kb_fts, 4.0, 2.0, 1.0) AS score
                 FROM kb_fts JOIN kb_articles a ON a.id = kb_fts.rowid
                 WHERE kb_fts MATCH ?1 AND a.published = 1
                 ORDER BY score DESC LIMIT ?2",
                q,
            ),
            // FTS5's BM25, in SQL: the same weights (title 4, tags 2, body
            // 1), k1 = 1.2, b = 0.75, over the same rows (published or not,
            // as FTS5's index has them), on English stems.
            Backend::Postgres => (PG_BM25, terms.join(" ")),
        };
        let mut st = conn.prepare_cached(sql)?;
        let rows = st
            .query_map(params![q, limit as i64], |r| {
                let category: Option<String> = r.get(2)?;
                Ok(KbHit {
                    slug: r.get(0)?,
                    title: r.get(1)?,
                    category: category.and_then(|c| c.parse().ok()),
                    score: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Resolved tickets matching any of `terms` that have a public staff
    /// reply, best first, with that reply. `except` is the ticket at hand.
    pub fn similar_resolved(
        &self,
        terms: &[String],
        except: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SimilarTicket>, StoreError> {
        let Some(q) = any_of(terms) else {
            return Ok(Vec::new());
        };
        let conn = self.reader();
        const REPLY: &str = "(SELECT m.body FROM messages m
                     WHERE m.ticket_id = t.id AND m.author_kind = 'staff' AND m.internal = 0
                     ORDER BY m.id DESC LIMIT 1) AS reply";
        let (sql, q) = match conn.backend() {
            Backend::Sqlite => (
                format!(
                    "SELECT t.id, t.subject, {REPLY}, -bm25(tickets_fts) AS score
                     FROM tickets_fts JOIN tickets t ON t.id = tickets_fts.rowid
                     WHERE tickets_fts MATCH ?1 AND t.status = 'Resolved' AND t.id != ?2
                     ORDER BY score DESC LIMIT 50"
                ),
                q,
            ),
            Backend::Postgres => (
                format!(
                    "SELECT t.id, t.subject, {REPLY},
                            ts_rank(to_tsvector('simple', t.subject || ' ' || t.description),
                                    websearch_to_tsquery('simple', ?1))::float8 AS score
                     FROM tickets t
                     WHERE to_tsvector('simple', t.subject || ' ' || t.description)
                           @@ websearch_to_tsquery('simple', ?1)
                       AND t.status = 'Resolved' AND t.id != ?2
                     ORDER BY score DESC LIMIT 50"
                ),
                websearch_any(terms),
            ),
        };
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![q, except.unwrap_or(-1)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, f64>(3)?,
                ))
            })?
            .filter_map(|r| match r {
                Ok((id, subject, Some(reply), score)) => Some(Ok(SimilarTicket {
                    id,
                    subject,
                    reply,
                    score,
                })),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .take(limit)
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
