//! `GET /build/N` as JSON, kept per finished build: what deploy tools poll
//! (`latest` leads here) is written once, not rebuilt as a JSON tree and
//! serialised on every request.
//!
//! An answer is made from the build's view shared by the database's cache
//! (`db/cache.rs`), and is served only while that same view is current:
//! the answer holds a `Weak` to it, and a change of the build drops the
//! view there, so the next request finds a different one and writes the
//! answer anew. (The `Weak` keeps the view's allocation, so its address
//! cannot be taken by a newer view.)

use std::sync::{Arc, Weak};

use axum::body::Bytes;

use crate::db::BuildView;

/// Answers kept at most: about 1.5 KB each.
const CAPACITY: usize = 10_000;

pub struct BuildAnswers {
    cache: quick_cache::sync::Cache<i64, (Weak<BuildView>, Bytes)>,
}

impl Default for BuildAnswers {
    fn default() -> Self {
        BuildAnswers { cache: quick_cache::sync::Cache::new(CAPACITY) }
    }
}

impl BuildAnswers {
    /// The answer made from this very view, if one was kept.
    pub fn get(&self, view: &Arc<BuildView>) -> Option<Bytes> {
        let (made_from, body) = self.cache.get(&view.build.id)?;
        Weak::ptr_eq(&made_from, &Arc::downgrade(view)).then_some(body)
    }

    /// Keeps the answer made from `view`, if the view is one the database
    /// shares (a finished build's); an unfinished build's view is read
    /// anew each time, so its answer would never be served.
    pub fn keep(&self, view: &Arc<BuildView>, body: Bytes) {
        if view.build.finished {
            self.cache.insert(view.build.id, (Arc::downgrade(view), body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::cache::test_view;

    #[test]
    fn an_answer_is_served_only_for_the_view_it_was_made_from() {
        let answers = BuildAnswers::default();
        let first = test_view(7, true);
        answers.keep(&first, Bytes::from_static(b"first"));
        assert_eq!(answers.get(&first).as_deref(), Some(&b"first"[..]));
        // The build changed: the database's cache holds a new view.
        let changed = test_view(7, true);
        assert_eq!(answers.get(&changed), None);
        drop(first);
        assert_eq!(answers.get(&test_view(7, true)), None, "a view made after the first was dropped");
    }

    #[test]
    fn unfinished_builds_are_not_kept() {
        let answers = BuildAnswers::default();
        let running = test_view(8, false);
        answers.keep(&running, Bytes::from_static(b"running"));
        assert_eq!(answers.get(&running), None);
    }
}
