//! The support desk: the people who work the tickets. Staff accounts live
//! in `store::users`, the conversation, history and assignment in
//! `store::desk`; here are the rules for user names and the presence of
//! staff on a ticket (the collision hint).

pub mod presence;

use crate::config::AiAnswers;
use crate::ticket::Category;

/// Whether the customer sees the AI's answer on a ticket of `category`: the
/// one place that decides (per-category policies will join it here). When
/// they do, the answer is also recorded as a message by `ai`.
pub fn customer_sees_ai_answer(policy: AiAnswers, _category: Option<Category>) -> bool {
    policy == AiAnswers::Show
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
