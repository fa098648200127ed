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

impl BuildCounts {
    /// The counts kept on the evaluation (by the database's triggers).
    pub fn of(eval: &JobsetEval) -> BuildCounts {
        let count = |n: i32| u64::try_from(n).unwrap_or(0);
        let (total, finished, succeeded) = (count(eval.nr_builds), count(eval.nr_finished), count(eval.nr_succeeded));
        BuildCounts {
            scheduled: total.saturating_sub(finished),
            succeeded,
            failed: finished.saturating_sub(succeeded),
            total,
        }
    }
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
    ///
    /// With a project, jobset or job, the newest of each matching jobset
    /// (walking its `(jobset_id, finished, id)` or `(jobset_id, job, id)`
    /// index) and then the newest of those: a jobset's builds are found
    /// by its index whatever the other jobsets built since, where walking
    /// all finished builds newest first would pass over them (measured:
    /// 1.2–4.2 s at a million builds on SQLite).
    pub async fn latest_builds(&self, filter: &BuildFilter, limit: u64) -> DbResult<Vec<i64>> {
        let finished = |query: sea_orm::Select<build::Entity>| {
            let mut query = query.select_only().column(build::Column::Id).filter(build::Column::Finished.eq(true));
            if let Some(job) = &filter.job {
                query = query.filter(build::Column::Job.eq(job.as_str()));
            }
            if let Some(system) = &filter.system {
                query = query.filter(build::Column::System.eq(system.as_str()));
            }
            query.order_by_desc(build::Column::Id).limit(limit)
        };
        if filter.project.is_none() && filter.jobset.is_none() && filter.job.is_none() {
            return Ok(finished(build::Entity::find()).into_tuple().all(self.read()).await?);
        }
        let mut jobsets = jobset::Entity::find()
            .select_only()
            .column(jobset::Column::Id)
            .join(JoinType::InnerJoin, jobset::Relation::Project.def());
        if let Some(p) = &filter.project {
            jobsets = jobsets.filter(project::Column::Name.eq(p.as_str()));
        }
        if let Some(j) = &filter.jobset {
            jobsets = jobsets.filter(jobset::Column::Name.eq(j.as_str()));
        }
        let jobsets: Vec<i64> = jobsets.into_tuple().all(self.read()).await?;
        let mut newest: Vec<i64> = Vec::new();
        for jobset_id in jobsets {
            let query = finished(build::Entity::find().filter(build::Column::JobsetId.eq(jobset_id)));
            newest.extend(query.into_tuple::<i64>().all(self.read()).await?);
        }
        newest.sort_unstable_by(|a, b| b.cmp(a));
        newest.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(newest)
    }

    /// Counts of the current builds (those of the latest evaluation) of
    /// each of a project's jobsets: one query.
    pub async fn jobset_counts(&self, project_id: i64) -> DbResult<HashMap<i64, BuildCounts>> {
        let latest = Query::select()
            .expr(Expr::col(jobset_eval::Column::Id).max())
            .from(jobset_eval::Entity)
            .and_where(
                Expr::col(jobset_eval::Column::JobsetId).in_subquery(
                    Query::select()
                        .column(jobset::Column::Id)
                        .from(jobset::Entity)
                        .and_where(Expr::col(jobset::Column::ProjectId).eq(project_id))
                        .to_owned(),
                ),
            )
            .group_by_col(jobset_eval::Column::JobsetId)
            .to_owned();
        let evals =
            jobset_eval::Entity::find().filter(jobset_eval::Column::Id.in_subquery(latest)).all(self.read()).await?;
        Ok(evals.iter().map(|eval| (eval.jobset_id, BuildCounts::of(eval))).collect())
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
        Ok(build_step::Entity::find().filter(running()).count(self.read()).await?)
    }

    /// Steps running now, oldest first.
    pub async fn running_steps(&self) -> DbResult<Vec<StepView>> {
        let steps = build_step::Entity::find()
            .filter(running())
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

/// Running steps, said as their partial index says it (`WHERE busy`: a
/// bound `busy = true` would not let the planner use it).
pub(super) fn running() -> Expr {
    Expr::col((build_step::Entity, build_step::Column::Busy))
}
