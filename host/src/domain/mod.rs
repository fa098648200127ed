//! The domain's words, one type each, that every part may use (a leaf: it
//! imports no other part). Hydra's build statuses come from
//! `orthrus-types`, which the plugin SDK shares, so that a status reads
//! the same on a page, in the log and in a plugin's mail.

#[macro_use]
mod words;
mod eval_progress;
mod event_kind;
mod process_role;
mod role;
mod search_query;
mod token_scope;
mod wake;

pub use eval_progress::EvalProgressCount;
pub use event_kind::EventKind;
pub use orthrus_types::{BuildStatus, StepStatus, UnknownStatus};
pub use process_role::{ProcessRole, ProcessRoles};
pub use role::Role;
pub use search_query::{InvalidSearch, MAX_SEARCH_CHARS, SearchQuery};
pub use token_scope::TokenScope;
pub use wake::Wake;

/// A word that names none of a domain type's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} ‘{word}’; {what}s are: {known}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
    pub known: String,
}

/// Parses one of `all` by its word.
pub(crate) fn parse_word<T: Copy>(
    word: &str,
    what: &'static str,
    all: &[T],
    as_str: impl Fn(T) -> &'static str,
) -> Result<T, UnknownWord> {
    all.iter().copied().find(|value| as_str(*value) == word).ok_or_else(|| UnknownWord {
        what,
        word: word.to_owned(),
        known: all.iter().map(|value| as_str(*value)).collect::<Vec<_>>().join(", "),
    })
}
