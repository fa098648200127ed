//! Read-only views across projects: recent builds, steps and evaluations,
//! jobset summaries, search. Each is a fixed number of queries, whatever
//! the amount of data.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, EntityTrait, JoinType, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, RelationTrait,
};

use super::entities::{build, build_output, build_step, jobset, jobset_eval, jobset_eval_member, project};
use super::{BuildStep, Db, DbResult, JobsetEval};

/// Filters of `/api/latestbuilds`.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub project: Option<String>,
    pub jobset: Option<String>,
    pub job: Option<String>,
    pub system: Option<String>,
}

/// Counts of an evaluation's builds by state (a jobset's are those of its
/// latest evaluation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildCounts {
    pub scheduled: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub total: u64,
}

/// A build step with the names of the build it belongs to.
#[derive(Debug, Clone)]
pub struct StepView {
    pub step: BuildStep,
    pub project: String,
    pub jobset: String,
    pub job: String,
}

impl Db {
    /// The newest finished builds matching a filter.
    pub async fn latest_builds(&self, filter: &BuildFilter, limit: u64) -> DbResult<Vec<i64>> {
        let mut query = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .join(JoinType::InnerJoin, build::Relation::Jobset.def())
            .join(JoinType::InnerJoin, jobset::Relation::Project.def())
            .filter(build::Column::Finished.eq(true));
        if let Some(p) = &filter.project {
            query = query.filter(project::Column::Name.eq(p.as_str()));
        }
        if let Some(j) = &filter.jobset {
            query = query.filter(jobset::Column::Name.eq(j.as_str()));
        }
        if let Some(job) = &filter.job {
            query = query.filter(build::Column::Job.eq(job.as_str()));
        }
        if let Some(system) = &filter.system {
            query = query.filter(build::Column::System.eq(system.as_str()));
        }
        Ok(query.order_by_desc(build::Column::Id).limit(limit).into_tuple().all(self.read()).await?)
    }

    /// Counts of the current builds of each of a project's jobsets.
    pub async fn jobset_counts(&self, project_id: i64) -> DbResult<HashMap<i64, BuildCounts>> {
        let latest: Vec<(i64, Option<i64>)> = jobset_eval::Entity::find()
            .select_only()
            .column(jobset_eval::Column::JobsetId)
            .column_as(jobset_eval::Column::Id.max(), "latest")
            .filter(
                jobset_eval::Column::JobsetId.in_subquery(
                    Query::select()
                        .column(jobset::Column::Id)
                        .from(jobset::Entity)
                        .and_where(Expr::col(jobset::Column::ProjectId).eq(project_id))
                        .to_owned(),
                ),
            )
            .group_by(jobset_eval::Column::JobsetId)
            .into_tuple()
            .all(self.read())
            .await?;
        let eval_to_jobset: HashMap<i64, i64> =
            latest.into_iter().filter_map(|(jobset, eval)| eval.map(|e| (e, jobset))).collect();
        let by_eval = self.eval_counts(&eval_to_jobset.keys().copied().collect::<Vec<_>>()).await?;
        Ok(by_eval.into_iter().map(|(eval, counts)| (eval_to_jobset[&eval], counts)).collect())
    }

    /// Counts of the builds of each of `eval_ids`: one query.
    pub async fn eval_counts(&self, eval_ids: &[i64]) -> DbResult<HashMap<i64, BuildCounts>> {
        let rows: Vec<(i64, bool, Option<i32>, i64)> = jobset_eval_member::Entity::find()
            .select_only()
            .column(jobset_eval_member::Column::EvalId)
            .column(build::Column::Finished)
            .column(build::Column::BuildStatus)
            .column_as(build::Column::Id.count(), "n")
            .inner_join(build::Entity)
            .filter(jobset_eval_member::Column::EvalId.is_in(eval_ids.iter().copied()))
            .group_by(jobset_eval_member::Column::EvalId)
            .group_by(build::Column::Finished)
            .group_by(build::Column::BuildStatus)
            .into_tuple()
            .all(self.read())
            .await?;
        let mut counts: HashMap<i64, BuildCounts> = HashMap::new();
        for (eval, finished, status, n) in rows {
            let entry = counts.entry(eval).or_default();
            let n = n as u64;
            entry.total += n;
            match (finished, status) {
                (false, _) => entry.scheduled += n,
                (true, Some(0)) => entry.succeeded += n,
                (true, _) => entry.failed += n,
            }
        }
        Ok(counts)
    }

    async fn step_views(&self, steps: Vec<BuildStep>) -> DbResult<Vec<StepView>> {
        let ids: Vec<i64> = steps.iter().map(|s| s.build_id).collect();
        let names: Vec<(i64, String, String, String)> = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .column_as(project::Column::Name, "project_name")
            .column_as(jobset::Column::Name, "jobset_name")
            .column(build::Column::Job)
            .join(JoinType::InnerJoin, build::Relation::Jobset.def())
            .join(JoinType::InnerJoin, jobset::Relation::Project.def())
            .filter(build::Column::Id.is_in(ids))
            .into_tuple()
            .all(self.read())
            .await?;
        let names: HashMap<i64, (String, String, String)> =
            names.into_iter().map(|(id, p, j, job)| (id, (p, j, job))).collect();
        Ok(steps
            .into_iter()
            .map(|step| {
                let (project, jobset, job) = names.get(&step.build_id).cloned().unwrap_or_default();
                StepView { step, project, jobset, job }
            })
            .collect())
    }

    pub async fn running_step_count(&self) -> DbResult<u64> {
        Ok(build_step::Entity::find().filter(build_step::Column::Busy.eq(true)).count(self.read()).await?)
    }

    /// Steps running now, oldest first.
    pub async fn running_steps(&self) -> DbResult<Vec<StepView>> {
        let steps = build_step::Entity::find()
            .filter(build_step::Column::Busy.eq(true))
            .order_by_asc(build_step::Column::StartTime)
            .all(self.read())
            .await?;
        self.step_views(steps).await
    }

    /// The most recently finished steps.
    pub async fn recent_steps(&self, limit: u64) -> DbResult<Vec<StepView>> {
        let steps = build_step::Entity::find()
            .filter(build_step::Column::Busy.eq(false))
            .filter(build_step::Column::StopTime.is_not_null())
            .order_by_desc(build_step::Column::StopTime)
            .order_by_desc(build_step::Column::BuildId)
            .limit(limit)
            .all(self.read())
            .await?;
        self.step_views(steps).await
    }

    /// A page of all evaluations, newest first, with (project, jobset)
    /// names, and their total number.
    /// `listed_only` leaves out hidden projects' and jobsets' evaluations
    /// (for anonymous readers: hidden means not listed).
    pub async fn all_evals(
        &self,
        offset: u64,
        limit: u64,
        listed_only: bool,
    ) -> DbResult<(Vec<(JobsetEval, String, String)>, u64)> {
        let mut query = jobset_eval::Entity::find();
        if listed_only {
            query = query
                .join(JoinType::InnerJoin, jobset_eval::Relation::Jobset.def())
                .join(JoinType::InnerJoin, jobset::Relation::Project.def())
                .filter(jobset::Column::Hidden.eq(false))
                .filter(project::Column::Hidden.eq(false));
        }
        let total = query.clone().count(self.read()).await?;
        let evals = query.order_by_desc(jobset_eval::Column::Id).offset(offset).limit(limit).all(self.read()).await?;
        let jobset_ids: Vec<i64> = evals.iter().map(|e| e.jobset_id).collect();
        let names = self.jobset_names(jobset_ids).await?;
        let evals = evals
            .into_iter()
            .map(|e| {
                let (p, j) = names.get(&e.jobset_id).cloned().unwrap_or_default();
                (e, p, j)
            })
            .collect();
        Ok((evals, total))
    }

    /// The newest finished build of a job.
    pub async fn last_finished_build(&self, jobset_id: i64, job: &str) -> DbResult<Option<i64>> {
        Ok(build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .filter(build::Column::Finished.eq(true))
            .order_by_desc(build::Column::Id)
            .limit(1)
            .into_tuple()
            .one(self.read())
            .await?)
    }

    /// Output paths of an evaluation's successful builds.
    pub async fn eval_store_paths(&self, eval_id: i64) -> DbResult<Vec<String>> {
        Ok(build_output::Entity::find()
            .select_only()
            .column(build_output::Column::Path)
            .join(JoinType::InnerJoin, build_output::Relation::Build.def())
            .join(JoinType::InnerJoin, build::Relation::Members.def())
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(0))
            .order_by_asc(build_output::Column::Path)
            .into_tuple()
            .all(self.read())
            .await?)
    }
}
