//! What deploy tools poll: the newest successful build of a scope, of a
//! job or of every job of a jobset, and the newest evaluation with nothing
//! left to build.

use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement, SimpleExpr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{build, jobset, jobset_eval, jobset_eval_member};
use super::{BuildScope, Db, DbResult, INSERT_CHUNK, JobsetEval, SuccessfulBuild};
use crate::domain::BuildStatus;

impl Db {
    /// The newest successful build in `scope` (for one system, optionally);
    /// with `finished_eval`, only builds of an evaluation none of whose
    /// builds is still unfinished — what a deploy tool can safely take.
    pub async fn latest_build(
        &self,
        scope: &BuildScope,
        system: Option<&str>,
        finished_eval: bool,
    ) -> DbResult<Option<i64>> {
        // Deploy tools poll this: answered from memory until a build changes.
        let key = format!("latest {scope:?} {system:?} {finished_eval}");
        if let Some(answer) = self.builds.query(&key) {
            return Ok(answer);
        }
        let epoch = self.builds.epoch();
        let answer = self.query_latest_build(scope, system, finished_eval).await?;
        self.builds.store_query(key, answer, epoch);
        Ok(answer)
    }

    async fn query_latest_build(
        &self,
        scope: &BuildScope,
        system: Option<&str>,
        finished_eval: bool,
    ) -> DbResult<Option<i64>> {
        let mut query = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(0))
            // A build whose outputs were collected is nothing to deploy.
            .filter(build::Column::OutputsCollected.eq(false));
        query = match scope {
            BuildScope::All => query,
            BuildScope::Project(project_id) => query.filter(
                build::Column::JobsetId.in_subquery(
                    Query::select()
                        .column(jobset::Column::Id)
                        .from(jobset::Entity)
                        .and_where(Expr::col(jobset::Column::ProjectId).eq(*project_id))
                        .to_owned(),
                ),
            ),
            BuildScope::Jobset(jobset_id) => query.filter(build::Column::JobsetId.eq(*jobset_id)),
            BuildScope::Job { jobset_id, job } => {
                query.filter(build::Column::JobsetId.eq(*jobset_id)).filter(build::Column::Job.eq(job.as_str()))
            }
        };
        if let Some(system) = system {
            query = query.filter(build::Column::System.eq(system));
        }
        if finished_eval {
            query = query.filter(Expr::exists(member_of_finished_eval()));
        }
        Ok(query.order_by_desc(build::Column::Id).limit(1).into_tuple().one(self.read()).await?)
    }

    /// The newest successful build of `job` in a jobset.
    pub async fn latest_successful_build(&self, jobset_id: i64, job: &str) -> DbResult<Option<SuccessfulBuild>> {
        let found = build::Entity::find()
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(0))
            .filter(build::Column::OutputsCollected.eq(false))
            .order_by_desc(build::Column::Id)
            .one(self.read())
            .await?;
        match found {
            Some(b) => Ok(self.successful_builds(vec![b]).await?.pop()),
            None => Ok(None),
        }
    }

    /// The newest successful build of every job of a jobset.
    pub async fn latest_successful_builds(&self, jobset_id: i64) -> DbResult<Vec<SuccessfulBuild>> {
        let ids = self.latest_build_ids(Some(jobset_id)).await?;
        let mut builds = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            builds.extend(
                build::Entity::find().filter(build::Column::Id.is_in(chunk.iter().copied())).all(self.read()).await?,
            );
        }
        builds.sort_by(|a, b| a.job.cmp(&b.job));
        self.successful_builds(builds).await
    }

    /// The newest evaluation of a jobset none of whose builds is unfinished.
    pub async fn latest_finished_eval(&self, jobset_id: i64) -> DbResult<Option<JobsetEval>> {
        Ok(jobset_eval::Entity::find()
            .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
            .filter(eval_is_finished())
            .order_by_desc(jobset_eval::Column::Id)
            .one(self.read())
            .await?)
    }
}

impl Db {
    /// The id of the newest successful build of every job (of one jobset,
    /// or of all): what `latest` answers for each.
    pub async fn latest_build_ids(&self, jobset_id: Option<i64>) -> DbResult<Vec<i64>> {
        let mut query = build::Entity::find()
            .select_only()
            .column_as(build::Column::Id.max(), "id")
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(BuildStatus::Succeeded.code()))
            .filter(build::Column::OutputsCollected.eq(false))
            .group_by(build::Column::JobsetId)
            .group_by(build::Column::Job);
        if let Some(jobset_id) = jobset_id {
            query = query.filter(build::Column::JobsetId.eq(jobset_id));
        }
        let ids: Vec<Option<i64>> = query.into_tuple().all(self.read()).await?;
        Ok(ids.into_iter().flatten().collect())
    }
}

impl Db {
    /// The build `latest-finished` answers for each job of a jobset: the
    /// newest successful one held by an evaluation with nothing unfinished.
    pub async fn latest_finished_build_ids(&self, jobset_id: i64) -> DbResult<Vec<i64>> {
        let ids: Vec<Option<i64>> = build::Entity::find()
            .select_only()
            .column_as(build::Column::Id.max(), "id")
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(BuildStatus::Succeeded.code()))
            .filter(build::Column::OutputsCollected.eq(false))
            .filter(Expr::exists(member_of_finished_eval()))
            .group_by(build::Column::Job)
            .into_tuple()
            .all(self.read())
            .await?;
        Ok(ids.into_iter().flatten().collect())
    }
}

/// The evaluation (`jobset_evals` of the outer query) has no unfinished
/// build: its counts, kept by the database's triggers, say so (no look at
/// its up to 100,000 members).
pub(super) fn eval_is_finished() -> SimpleExpr {
    Expr::col((jobset_eval::Entity, jobset_eval::Column::NrFinished))
        .equals((jobset_eval::Entity, jobset_eval::Column::NrBuilds))
}

/// `EXISTS`-subquery: the build (of the outer query) is a member of an
/// evaluation that has no unfinished build.
fn member_of_finished_eval() -> SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(jobset_eval_member::Entity)
        .inner_join(
            jobset_eval::Entity,
            Expr::col((jobset_eval::Entity, jobset_eval::Column::Id))
                .equals((jobset_eval_member::Entity, jobset_eval_member::Column::EvalId)),
        )
        .and_where(
            Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::BuildId))
                .equals((build::Entity, build::Column::Id)),
        )
        .and_where(eval_is_finished())
        .to_owned()
}
