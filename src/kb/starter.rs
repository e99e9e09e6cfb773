//! The starter knowledge base, embedded in the binary (`kb/starter/*.md`):
//! imported on the first start of a new database, and what `triage` uses
//! unless `--kb DIR` names another folder. An operator replaces it with
//! their own (`smart-support kb import`).

use super::{Article, KbError};

macro_rules! starter {
    ($($slug:literal),+ $(,)?) => {
        /// (slug, file text) of every starter article.
        pub const FILES: &[(&str, &str)] = &[
            $(($slug, include_str!(concat!("../../kb/starter/", $slug, ".md")))),+
        ];
    };
}

starter![
    "account-2fa-codes",
    "account-change-email",
    "account-delete",
    "account-locked",
    "account-reset-password",
    "account-verification-email",
    "billing-change-plan",
    "billing-download-invoice",
    "billing-failed-payment",
    "billing-unexpected-charge",
    "billing-update-payment-method",
    "general-contact-hours",
    "general-data-privacy",
    "general-feedback",
    "order-cancel-order",
    "order-damaged-item",
    "order-return-item",
    "order-track-package",
    "order-wrong-address",
    "refund-cancel-subscription",
    "refund-duplicate-charge",
    "refund-request",
    "refund-status",
    "security-account-compromised",
    "security-card-stolen",
    "security-enable-2fa",
    "security-phishing-email",
    "tech-app-crashes",
    "tech-error-message-report",
    "tech-export-csv",
    "tech-notifications-missing",
    "tech-page-not-loading",
    "tech-sync-not-working",
];

/// The starter articles, parsed.
pub fn articles() -> Result<Vec<Article>, KbError> {
    FILES
        .iter()
        .map(|(slug, text)| {
            Article::from_file(text, slug).map_err(|e| KbError::File {
                file: format!("kb/starter/{slug}.md"),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Category;

    #[test]
    fn every_starter_file_is_embedded_and_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kb/starter");
        let on_disk = super::super::read_dir(&dir).unwrap();
        let embedded = articles().unwrap();
        assert_eq!(embedded, on_disk, "kb/starter and the embedded list differ");
        assert!(embedded.len() >= 25);
        for c in Category::ALL {
            let n = embedded.iter().filter(|a| a.category == Some(*c)).count();
            assert!(n >= 3, "{c} has {n} starter articles");
        }
        for a in &embedded {
            assert!(a.steps().len() >= 3, "{} has too few steps", a.slug);
            assert!(a.published);
        }
    }
}
