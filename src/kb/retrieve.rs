//! Retrieval for the troubleshooter: the best published articles for a
//! ticket (BM25 over the ticket's meaningful words, boosted when the
//! article's category is the ticket's) and the most similar resolved
//! tickets with a public staff reply.

use std::sync::Arc;

use crate::agents::EngineError;
use crate::agents::keywords::query_terms;
use crate::agents::troubleshooter::{Example, Knowledge, Passage, Retrieved};
use crate::store::Store;
use crate::ticket::{Category, TicketInput};

/// An article of the ticket's category scores this many times its BM25.
pub const CATEGORY_BOOST: f64 = 1.5;
/// Articles handed to the troubleshooter.
pub const TOP_ARTICLES: usize = 3;
/// Candidates read from the index before the category boost re-orders them.
const CANDIDATES: usize = 20;
/// Words of a ticket a search uses.
const QUERY_TERMS: usize = 48;
/// Similar resolved tickets shown to the model.
const EXAMPLES: usize = 1;

/// The knowledge base in the store.
pub struct StoreKnowledge {
    store: Arc<Store>,
}

impl StoreKnowledge {
    pub fn new(store: Arc<Store>) -> Self {
        StoreKnowledge { store }
    }
}

fn kb_error(e: impl std::fmt::Display) -> EngineError {
    EngineError {
        engine: "knowledge base".into(),
        message: e.to_string(),
    }
}

/// Re-orders BM25 hits with the category boost; best first.
pub fn boost(hits: &mut [(String, Option<Category>, f64)], category: Category) {
    for h in hits.iter_mut() {
        if h.1 == Some(category) {
            h.2 *= CATEGORY_BOOST;
        }
    }
    hits.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
}

impl Knowledge for StoreKnowledge {
    fn retrieve(&self, ticket: &TicketInput, category: Category) -> Result<Retrieved, EngineError> {
        let text = format!("{}\n{}", ticket.subject, ticket.description);
        let text: String = text.chars().take(4000).collect();
        let terms = query_terms(&text, QUERY_TERMS);
        let hits = self.store.kb_search(&terms, CANDIDATES).map_err(kb_error)?;
        let mut ranked: Vec<(String, Option<Category>, f64)> = hits
            .into_iter()
            .map(|h| (h.slug, h.category, h.score))
            .collect();
        boost(&mut ranked, category);
        let mut passages = Vec::new();
        for (slug, _, score) in ranked.into_iter().take(TOP_ARTICLES) {
            let Some(row) = self.store.kb_article(&slug).map_err(kb_error)? else {
                continue; // deleted since the search
            };
            passages.push(Passage {
                steps: row.article.steps(),
                sentences: row.article.sentences(),
                slug,
                title: row.article.title,
                score,
            });
        }
        let examples = self
            .store
            .similar_resolved(&terms, None, EXAMPLES)
            .map_err(kb_error)?
            .into_iter()
            .map(|t| Example {
                ticket_id: t.id,
                reply: t.reply,
            })
            .collect();
        Ok(Retrieved { passages, examples })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_category_boost_reorders_close_hits_only() {
        let mut hits = vec![
            ("a".to_string(), Some(Category::Billing), 10.0),
            ("b".to_string(), Some(Category::Refund), 8.0),
            ("c".to_string(), None, 3.0),
        ];
        boost(&mut hits, Category::Refund);
        assert_eq!(hits[0].0, "b");
        let mut far = vec![
            ("a".to_string(), Some(Category::Billing), 20.0),
            ("b".to_string(), Some(Category::Refund), 8.0),
        ];
        boost(&mut far, Category::Refund);
        assert_eq!(far[0].0, "a");
    }
}
