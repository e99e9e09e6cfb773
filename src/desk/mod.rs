//! The support desk: the people who work the tickets. Staff accounts live
//! in `store::users`, the conversation, history and assignment in
//! `store::desk`; here are the rules for user names, the presence of staff
//! on a ticket (the collision hint), who sees the AI's answer and where the
//! delivery policy is kept, and the learned classifier's training
//! (`learning`).

pub mod learning;
pub mod presence;

use crate::agents::policy::DeliveryPolicy;
use crate::store::{Store, StoreError};
use crate::ticket::{Delivery, Solution};

/// Whether the customer sees the AI's answer: the one place that decides.
/// The troubleshooter recorded the delivery its policy chose with the
/// answer (`--ai-answers draft` makes every answer a draft there). When
/// the customer sees it, the answer is also recorded as a message by `ai`.
pub fn customer_sees_ai_answer(solution: &Solution) -> bool {
    solution.delivery == Delivery::Auto
}

const POLICY_KEY: &str = "delivery_policy";

/// The delivery policy admins saved (the defaults when none was saved or
/// the stored one cannot be read, which is logged).
pub fn load_policy(store: &Store) -> Result<DeliveryPolicy, StoreError> {
    Ok(match store.setting(POLICY_KEY)? {
        Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the stored delivery policy is unreadable; defaults in use");
            DeliveryPolicy::default()
        }),
        None => DeliveryPolicy::default(),
    })
}

pub fn save_policy(store: &Store, policy: &DeliveryPolicy) -> Result<(), StoreError> {
    store.set_setting(POLICY_KEY, &serde_json::to_string(policy)?)
}

/// Longest user name.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user name is 1 to {MAX_NAME_CHARS} letters, digits, '.', '-' or '_' (got '{0}')")]
pub struct BadName(pub String);

/// Checks a user name: short, plain, the same in every log and URL.
pub fn user_name(name: &str) -> Result<String, BadName> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name != "api";
    if ok {
        Ok(name.to_string())
    } else {
        Err(BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain() {
        assert_eq!(user_name(" maria.k "), Ok("maria.k".into()));
        assert!(user_name("").is_err());
        assert!(user_name("a b").is_err());
        assert!(user_name("<script>").is_err());
        assert!(user_name("api").is_err(), "reserved for the API token");
        assert!(user_name(&"x".repeat(65)).is_err());
    }
}
