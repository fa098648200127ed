//! Release sets: named views over a project's finished builds, defined in
//! the project's settings (`releasesets`) and computed by release-set
//! plugins under a strict budget. Computations are bounded (a flood of
//! page views cannot take the plugin slots evaluations and notifiers
//! need) and kept until the next event, since anything that can change a
//! release writes one. A plugin that fails makes its set an error naming
//! the set and the plugin; nothing else is touched.

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::{BuildView, Db, DbError, DbResult, Project, ReleaseSetDefinition};
use crate::domain::BuildStatus;
use crate::plugins::PluginRuntime;
use crate::plugins::api::Release;

/// Releases computed per request at most; a request asks for fewer. A set
/// is computed for one of these two limits only, so that the cache holds
/// at most two entries per set.
pub const MAX_RELEASES: u32 = 1000;
pub const DEFAULT_RELEASES: u32 = 100;
/// Release-set plugins computing at once: more requests wait.
const CONCURRENT_COMPUTATIONS: usize = 2;

/// A release set's releases, or why its plugin could not compute them.
type Computed = Arc<Result<Vec<Release>, String>>;
/// Project id, set name with its definition, and how many releases.
type CacheKey = (i64, String, u32);

/// Why a release set has no releases to give.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("project ‘{project}’ has no release set ‘{name}’")]
    NoSuchSet { project: String, name: String },
    #[error("release set ‘{name}’ (plugin ‘{plugin}’) could not be computed: {error}")]
    Failed { name: String, plugin: String, error: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The release sets of every project, computed on demand.
pub struct ReleaseSets {
    db: Db,
    plugins: PluginRuntime,
    /// By (project, name and definition, limit), each with the newest
    /// event id when it was computed.
    cache: quick_cache::sync::Cache<CacheKey, (i64, Computed)>,
    computing: tokio::sync::Semaphore,
}

impl ReleaseSets {
    pub fn new(db: Db, plugins: PluginRuntime) -> ReleaseSets {
        ReleaseSets {
            db,
            plugins,
            cache: quick_cache::sync::Cache::new(1000),
            computing: tokio::sync::Semaphore::new(CONCURRENT_COMPUTATIONS),
        }
    }

    /// Set `name` of `project` with its releases, newest first (at least
    /// `limit` of them when there are so many).
    pub async fn computed(
        &self,
        project: &Project,
        name: &str,
        limit: u32,
    ) -> Result<(ReleaseSetDefinition, Vec<Release>), ReleaseError> {
        let definition = project
            .release_sets()
            .remove(name)
            .ok_or_else(|| ReleaseError::NoSuchSet { project: project.name.clone(), name: name.to_owned() })?;
        let result = self.releases(project, name, &definition, limit).await?;
        match result.as_ref() {
            Ok(list) => Ok((definition, list.clone())),
            Err(error) => Err(ReleaseError::Failed {
                name: name.to_owned(),
                plugin: definition.plugin.clone(),
                error: error.clone(),
            }),
        }
    }

    /// The set's releases, computed by its plugin or from the cache.
    async fn releases(
        &self,
        project: &Project,
        name: &str,
        definition: &ReleaseSetDefinition,
        limit: u32,
    ) -> DbResult<Computed> {
        let limit = computed_limit(limit);
        let key = (project.id, format!("{name}\0{}", serde_json::to_string(definition).unwrap_or_default()), limit);
        let cached = |latest_event: i64| {
            self.cache.get(&key).filter(|(event, _)| *event == latest_event).map(|(_, computed)| computed)
        };
        let latest_event = self.db.latest_event_id().await?;
        if let Some(computed) = cached(latest_event) {
            return Ok(computed);
        }
        let _turn = self.computing.acquire().await.expect("the semaphore is never closed");
        // Computed meanwhile by the request this one waited for?
        if let Some(computed) = cached(latest_event) {
            return Ok(computed);
        }
        let computed = self
            .plugins
            .releases(&definition.plugin, project.id, &definition.settings, limit)
            .await
            .map_err(|e| e.to_string());
        if let Err(error) = &computed {
            tracing::warn!(project = %project.name, release_set = %name, "release set failed: {error}");
        }
        let computed = Arc::new(computed);
        self.cache.insert(key, (latest_event, computed.clone()));
        Ok(computed)
    }

    /// The builds of the releases, by id.
    pub async fn member_views(&self, releases: &[Release]) -> DbResult<HashMap<i64, BuildView>> {
        let mut ids: Vec<i64> = releases.iter().flat_map(|r| r.members.iter().map(|(id, _)| *id)).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(self.db.build_views(&ids).await?.into_iter().map(|v| (v.build.id, v)).collect())
    }
}

/// The limit a set is computed for, to serve a request for `wanted` releases.
fn computed_limit(wanted: u32) -> u32 {
    if wanted <= DEFAULT_RELEASES { DEFAULT_RELEASES } else { MAX_RELEASES }
}

/// Whether every build of a release finished and succeeded (`latest`
/// points to the newest such release).
pub fn all_succeeded(release: &Release, views: &HashMap<i64, BuildView>) -> bool {
    !release.members.is_empty()
        && release.members.iter().all(|(id, _)| {
            views
                .get(id)
                .is_some_and(|v| v.build.finished && v.build.build_status == Some(BuildStatus::Succeeded.code()))
        })
}
