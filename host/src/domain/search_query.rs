//! What `/search` looks for: Hydra's rule of what a query may hold
//! (letters, digits and `_-/.`: a job name, a store path or a part of
//! one), bounded in length, so that whatever an anonymous visitor types
//! is a substring to find and nothing else.

use std::fmt;

/// Characters a query may be, at most: a whole store path with a long
/// name fits.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A query `/search` accepts, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(String);

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSearch {
    #[error("the search query is empty")]
    Empty,
    #[error("the search query is longer than {MAX_SEARCH_CHARS} characters")]
    TooLong,
    #[error("invalid character ‘{0}’ in the search query: it may hold letters, digits and _-/. only")]
    Character(char),
}

impl SearchQuery {
    pub fn parse(text: &str) -> Result<SearchQuery, InvalidSearch> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InvalidSearch::Empty);
        }
        if text.len() > MAX_SEARCH_CHARS {
            return Err(InvalidSearch::TooLong);
        }
        if let Some(bad) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))) {
            return Err(InvalidSearch::Character(bad));
        }
        Ok(SearchQuery(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part of the query after its last `/`: what can be found in a
    /// store path's base name (`/nix/store/abc…-hello` is `abc…-hello`
    /// in a search index that leaves out the store directory).
    pub fn base_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// `LIKE`/`ILIKE` pattern of the query anywhere in a text, with its
    /// one wildcard (`_`) escaped by `\`.
    pub fn contains_pattern(&self) -> String {
        format!("%{}%", self.0.replace('_', "\\_"))
    }
}

impl fmt::Display for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_store_paths_only() {
        assert_eq!(SearchQuery::parse("  hello-2.12 ").unwrap().as_str(), "hello-2.12");
        assert!(SearchQuery::parse("/nix/store/0123abcd-hello_world.drv").is_ok());
        assert_eq!(SearchQuery::parse(" "), Err(InvalidSearch::Empty));
        assert_eq!(SearchQuery::parse("a%b"), Err(InvalidSearch::Character('%')));
        assert_eq!(SearchQuery::parse("it's"), Err(InvalidSearch::Character('\'')));
        assert_eq!(SearchQuery::parse("\"x\""), Err(InvalidSearch::Character('"')));
        assert_eq!(SearchQuery::parse(&"a".repeat(MAX_SEARCH_CHARS + 1)), Err(InvalidSearch::TooLong));
    }

    #[test]
    fn base_name_is_after_the_last_slash() {
        assert_eq!(SearchQuery::parse("/nix/store/abc-hello").unwrap().base_name(), "abc-hello");
        assert_eq!(SearchQuery::parse("hello").unwrap().base_name(), "hello");
        assert_eq!(SearchQuery::parse("store/").unwrap().base_name(), "");
    }

    #[test]
    fn pattern_escapes_the_wildcard() {
        assert_eq!(SearchQuery::parse("a_b").unwrap().contains_pattern(), "%a\\_b%");
    }
}
