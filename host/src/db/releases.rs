//! What release sets read: their definitions on the project, and the
//! builds of a job.

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

use super::entities::build;
use super::{Db, DbResult};

/// One release set of a project: which plugin computes it, with what settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSetDefinition {
    pub plugin: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// A project's release sets by name.
pub type ReleaseSets = BTreeMap<String, ReleaseSetDefinition>;

impl super::Project {
    /// The project's release sets (none if the stored JSON is unreadable,
    /// which only a hand-edited database can make).
    pub fn release_sets(&self) -> ReleaseSets {
        self.release_sets.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default()
    }
}

impl Db {
    /// Ids of the builds of a job, newest first.
    pub async fn job_builds(&self, jobset_id: i64, job: &str, limit: u64) -> DbResult<Vec<i64>> {
        Ok(build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .order_by_desc(build::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.read())
            .await?)
    }
}
