//! A memory cache of finished builds as the API shows them: what deploy
//! tools poll most (`latest` leads to `/build/N`) is read from memory.
//!
//! Only this part writes builds, so each writing method invalidates what
//! it touched. A reader that loaded a view from the database stores it only
//! if no invalidation happened meanwhile (an epoch counter), so a view
//! read just before a change can never outlive the change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::BuildView;

/// Finished builds kept at most.
const CAPACITY: usize = 20_000;

pub struct BuildCache {
    views: quick_cache::sync::Cache<i64, Arc<BuildView>>,
    /// Answers of queries over many builds (`latest`), each with the epoch
    /// it was read at: valid while nothing changed since.
    queries: quick_cache::sync::Cache<String, (u64, Option<i64>)>,
    epoch: AtomicU64,
}

impl std::fmt::Debug for BuildCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BuildCache({} views)", self.views.len())
    }
}

impl Default for BuildCache {
    fn default() -> Self {
        BuildCache {
            views: quick_cache::sync::Cache::new(CAPACITY),
            queries: quick_cache::sync::Cache::new(CAPACITY),
            epoch: AtomicU64::new(0),
        }
    }
}

impl BuildCache {
    pub fn get(&self, id: i64) -> Option<Arc<BuildView>> {
        self.views.get(&id)
    }

    /// The epoch to pass to [`BuildCache::store`] after reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps a finished build read when the epoch was `epoch`, unless
    /// something was invalidated since.
    pub fn store(&self, view: &Arc<BuildView>, epoch: u64) {
        if view.build.finished && self.epoch() == epoch {
            self.views.insert(view.build.id, view.clone());
        }
    }

    /// A query's answer, if no build changed since it was read.
    pub fn query(&self, key: &str) -> Option<Option<i64>> {
        self.queries.get(key).filter(|(epoch, _)| *epoch == self.epoch()).map(|(_, answer)| answer)
    }

    pub fn store_query(&self, key: String, answer: Option<i64>, epoch: u64) {
        if self.epoch() == epoch {
            self.queries.insert(key, (epoch, answer));
        }
    }

    /// After a change of these builds has been committed.
    pub fn invalidate(&self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            self.views.remove(&id);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// After a change of many builds (a project renamed or deleted).
    pub fn clear(&self) {
        self.views.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// A finished or unfinished build's view with nothing but its id, for tests.
#[cfg(test)]
pub(crate) fn test_view(id: i64, finished: bool) -> Arc<BuildView> {
    let build = crate::db::Build {
        id,
        finished,
        timestamp: 0,
        jobset_id: 1,
        job: "job".into(),
        nix_name: "x".into(),
        description: None,
        drv_path: String::new(),
        system: String::new(),
        license: None,
        homepage: None,
        maintainers: None,
        max_silent: 0,
        timeout: 0,
        is_channel: false,
        is_aggregate: false,
        priority: 100,
        global_priority: 0,
        start_time: None,
        stop_time: None,
        is_cached_build: None,
        build_status: Some(0),
        size: None,
        closure_size: None,
        release_name: None,
        keep: false,
        output_errors: None,
        outputs_collected: false,
    };
    Arc::new(BuildView {
        build,
        project: "p".into(),
        jobset: "j".into(),
        outputs: vec![],
        products: vec![],
        metrics: vec![],
        evals: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i64, finished: bool) -> Arc<BuildView> {
        test_view(id, finished)
    }

    #[test]
    fn a_view_read_before_a_change_is_not_kept() {
        let cache = BuildCache::default();
        let epoch = cache.epoch();
        cache.invalidate([7]);
        cache.store(&view(7, true), epoch);
        assert!(cache.get(7).is_none());
        cache.store(&view(7, true), cache.epoch());
        assert!(cache.get(7).is_some());
        cache.invalidate([7]);
        assert!(cache.get(7).is_none());
    }

    #[test]
    fn unfinished_builds_and_stale_answers_are_not_served() {
        let cache = BuildCache::default();
        cache.store(&view(1, false), cache.epoch());
        assert!(cache.get(1).is_none());
        cache.store_query("latest".into(), Some(1), cache.epoch());
        assert_eq!(cache.query("latest"), Some(Some(1)));
        cache.invalidate([]);
        assert_eq!(cache.query("latest"), None);
    }
}
