//! Queries of the web pages over many builds: a jobset's job-by-evaluation
//! matrix, an evaluation's builds by status, and the comparison of two
//! evaluations. Each is a fixed number of queries, paged where a page
//! shows rows, so that a jobset of 20,000 jobs costs what one of 20 does.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{
    ColumnTrait, EntityTrait, JoinType, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, RelationTrait,
};

use super::entities::{build, jobset, jobset_eval_member, project};
use super::{Db, DbResult};
use crate::domain::BuildStatus;

/// A build as a matrix cell or list row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCell {
    pub id: i64,
    pub job: String,
    pub finished: bool,
    /// `None` while queued or running.
    pub status: Option<i32>,
}

impl BuildCell {
    pub fn succeeded(&self) -> bool {
        self.finished && self.status == Some(BuildStatus::Succeeded.code())
    }
}

/// A page of the job-by-evaluation matrix of a jobset.
#[derive(Debug, Clone, Default)]
pub struct JobMatrix {
    /// The jobs of this page, sorted by name.
    pub jobs: Vec<String>,
    /// How many jobs the newest evaluation has.
    pub total_jobs: u64,
    /// (evaluation, job) to its build.
    pub cells: HashMap<(i64, String), BuildCell>,
}

/// A build as a list across jobsets shows it (search, queue, releases).
/// Read by column name: the query aliases its columns to these fields.
#[derive(Debug, Clone, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct BuildRow {
    pub id: i64,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub nix_name: String,
    pub system: String,
    pub finished: bool,
    pub status: Option<i32>,
    /// When it was queued.
    pub timestamp: i64,
    pub stop_time: Option<i64>,
    pub project_hidden: bool,
    pub jobset_hidden: bool,
}

impl BuildRow {
    /// Its project or jobset is hidden (not listed to anonymous readers).
    pub fn hidden(&self) -> bool {
        self.project_hidden || self.jobset_hidden
    }
}

/// Which builds of an evaluation a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Queued,
    Succeeded,
    Failed,
}

/// What changed from one evaluation to the next, by job name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalComparison {
    pub new_jobs: Vec<BuildCell>,
    pub removed_jobs: Vec<BuildCell>,
    pub newly_failing: Vec<BuildCell>,
    pub newly_succeeding: Vec<BuildCell>,
    /// Jobs whose status did not change.
    pub unchanged: u64,
}

fn cell((id, job, finished, status): (i64, String, bool, Option<i32>)) -> BuildCell {
    BuildCell { id, job, finished, status }
}

impl Db {
    /// Builds as rows with their project and jobset names, in the order of
    /// `ids` (missing ones left out): one query per 500 builds.
    pub async fn build_rows(&self, ids: &[i64]) -> DbResult<Vec<BuildRow>> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            let rows = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::NixName, build::Column::System])
                .columns([build::Column::Finished, build::Column::Timestamp, build::Column::StopTime])
                .column_as(build::Column::BuildStatus, "status")
                .column_as(project::Column::Name, "project")
                .column_as(jobset::Column::Name, "jobset")
                .column_as(project::Column::Hidden, "project_hidden")
                .column_as(jobset::Column::Hidden, "jobset_hidden")
                .join(JoinType::InnerJoin, build::Relation::Jobset.def())
                .join(JoinType::InnerJoin, jobset::Relation::Project.def())
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_model::<BuildRow>()
                .all(self.read())
                .await?;
            found.extend(rows.into_iter().map(|row| (row.id, row)));
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Builds of an evaluation as cells, with a filter, paged by job name.
    fn eval_cells_query(eval_id: i64) -> sea_orm::Select<build::Entity> {
        build::Entity::find()
            .select_only()
            .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
    }

    /// The newest build of each of `drv_paths` that has one (a build's
    /// dependencies that are jobs too): one query per 500 derivations.
    pub async fn builds_of_derivations(&self, drv_paths: &[String]) -> DbResult<HashMap<String, BuildCell>> {
        let mut found = HashMap::new();
        for chunk in drv_paths.chunks(super::INSERT_CHUNK) {
            let rows: Vec<(i64, String, bool, Option<i32>, String)> = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
                .column(build::Column::DrvPath)
                .filter(build::Column::DrvPath.is_in(chunk.iter().cloned()))
                .order_by_desc(build::Column::Id)
                .into_tuple()
                .all(self.read())
                .await?;
            for (id, job, finished, status, drv) in rows {
                found.entry(drv).or_insert_with(|| cell((id, job, finished, status)));
            }
        }
        Ok(found)
    }

    /// A page of an evaluation's builds (by job name) with a status filter,
    /// and how many builds pass the filter.
    pub async fn eval_cells(
        &self,
        eval_id: i64,
        filter: StatusFilter,
        offset: u64,
        limit: u64,
    ) -> DbResult<(Vec<BuildCell>, u64)> {
        let query = Self::eval_cells_query(eval_id);
        let query = match filter {
            StatusFilter::All => query,
            StatusFilter::Queued => query.filter(build::Column::Finished.eq(false)),
            StatusFilter::Succeeded => query
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::BuildStatus.eq(BuildStatus::Succeeded.code())),
            StatusFilter::Failed => query
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::BuildStatus.ne(BuildStatus::Succeeded.code())),
        };
        // Counted apart: a window (`COUNT(*) OVER ()`) would make SQLite
        // read every row of the evaluation before the page (measured: the
        // jobset page of 20,000 jobs went from 22 to 38 ms).
        let total = query.clone().count(self.read()).await?;
        let rows: Vec<(i64, String, bool, Option<i32>)> =
            query.order_by_asc(build::Column::Job).offset(offset).limit(limit).into_tuple().all(self.read()).await?;
        let cells = rows.into_iter().map(cell).collect();
        Ok((cells, total))
    }

    /// Every build of an evaluation as a cell by job (for comparisons: a
    /// few dozen bytes per job).
    async fn all_eval_cells(&self, eval_id: i64) -> DbResult<BTreeMap<String, BuildCell>> {
        let rows: Vec<(i64, String, bool, Option<i32>)> =
            Self::eval_cells_query(eval_id).into_tuple().all(self.read()).await?;
        Ok(rows.into_iter().map(cell).map(|c| (c.job.clone(), c)).collect())
    }

    /// The jobs of `evals[0]` (the newest), `limit` from `offset` by name,
    /// with their builds in each of `evals`: three queries.
    pub async fn job_matrix(&self, evals: &[i64], offset: u64, limit: u64) -> DbResult<JobMatrix> {
        let Some(&newest) = evals.first() else {
            return Ok(JobMatrix::default());
        };
        let (page, total_jobs) = self.eval_cells(newest, StatusFilter::All, offset, limit).await?;
        let jobs: Vec<String> = page.into_iter().map(|c| c.job).collect();
        let rows: Vec<(i64, i64, String, bool, Option<i32>)> = build::Entity::find()
            .select_only()
            .column(jobset_eval_member::Column::EvalId)
            .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.is_in(evals.iter().copied()))
            .filter(build::Column::Job.is_in(jobs.iter().cloned()))
            .into_tuple()
            .all(self.read())
            .await?;
        let cells = rows
            .into_iter()
            .map(|(eval, id, job, finished, status)| ((eval, job.clone()), cell((id, job, finished, status))))
            .collect();
        Ok(JobMatrix { jobs, total_jobs, cells })
    }

    /// The newest `limit` builds of a job, newest first: one query.
    pub async fn job_history(&self, jobset_id: i64, job: &str, limit: u64) -> DbResult<Vec<super::Build>> {
        Ok(build::Entity::find()
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .order_by_desc(build::Column::Id)
            .limit(limit)
            .all(self.read())
            .await?)
    }

    /// How evaluation `eval_id` differs from `previous_id`: two queries.
    pub async fn compare_evals(&self, eval_id: i64, previous_id: i64) -> DbResult<EvalComparison> {
        // Two reads at once, on two connections: each uses the index on
        // its evaluation (one query for both was slower on SQLite).
        let (now, mut before) = tokio::try_join!(self.all_eval_cells(eval_id), self.all_eval_cells(previous_id))?;
        let mut comparison = EvalComparison::default();
        for (job, build) in now {
            match before.remove(&job) {
                None => comparison.new_jobs.push(build),
                Some(old) if !build.finished || !old.finished || old.succeeded() == build.succeeded() => {
                    comparison.unchanged += 1
                }
                Some(old) if old.succeeded() => comparison.newly_failing.push(build),
                Some(_) => comparison.newly_succeeding.push(build),
            }
        }
        comparison.removed_jobs = before.into_values().collect();
        Ok(comparison)
    }
}
