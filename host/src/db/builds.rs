//! Builds: what the queue runner reads and records, what the web shows,
//! and the user actions on builds (restart, cancel, bump). Their steps are
//! in `steps.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, JoinType, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    RelationTrait,
};

use super::entities::{
    aggregate_constituent, build, build_metric, build_output, build_product, build_step, failed_path, jobset,
    jobset_eval_member, project,
};
use super::evals::insert_chunked;
use super::events::{NewEvent, write_events};
use super::{Db, DbResult, now};
use crate::domain::BuildStatus;
use crate::domain::EventKind;

pub use super::entities::build::Model as Build;
pub use super::entities::build_metric::Model as BuildMetric;
pub use super::entities::build_product::Model as BuildProduct;
pub use super::entities::build_step::Model as BuildStep;

/// An unfinished build as the queue runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBuild {
    pub id: i64,
    pub jobset_id: i64,
    pub job: String,
    pub drv_path: String,
    pub priority: i32,
    pub global_priority: i64,
    pub timeout: i32,
    pub max_silent: i32,
    /// Top-level derivations of the aggregate's constituents.
    pub constituent_drvs: Vec<String>,
}

/// How a build ended, with what was read from its outputs.
#[derive(Debug, Clone)]
pub struct FinishedBuild {
    pub id: i64,
    pub status: BuildStatus,
    pub is_cached: bool,
    /// Used when the build has no start time yet (it never ran a step).
    pub start_time: i64,
    pub stop_time: i64,
    pub size: Option<i64>,
    pub closure_size: Option<i64>,
    pub release_name: Option<String>,
    pub products: Vec<NewProduct>,
    pub metrics: Vec<NewMetric>,
    /// What was refused or cut of what the build left in its outputs.
    pub output_errors: Vec<String>,
}

impl FinishedBuild {
    /// A build that ended without outputs to read (failed, cancelled,
    /// aborted): its status and times only.
    pub fn ended(id: i64, status: BuildStatus, start_time: i64, stop_time: i64) -> FinishedBuild {
        FinishedBuild {
            id,
            status,
            is_cached: false,
            start_time,
            stop_time,
            size: None,
            closure_size: None,
            release_name: None,
            products: Vec::new(),
            metrics: Vec::new(),
            output_errors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub kind: String,
    pub subtype: String,
    pub file_size: Option<i64>,
    pub sha256_hash: Option<String>,
    pub path: String,
    pub name: String,
    pub default_path: String,
    /// Why its path is not served (it leads out of its output).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMetric {
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
}

/// A build with everything the Hydra JSON of a build shows.
#[derive(Debug, Clone)]
pub struct BuildView {
    pub build: Build,
    pub project: String,
    pub jobset: String,
    pub outputs: Vec<(String, String)>,
    pub products: Vec<BuildProduct>,
    pub metrics: Vec<BuildMetric>,
    pub evals: Vec<i64>,
}

/// Where to look for the latest build.
#[derive(Debug, Clone)]
pub enum BuildScope {
    All,
    Project(i64),
    Jobset(i64),
    Job { jobset_id: i64, job: String },
}

impl Db {
    pub async fn build(&self, id: i64) -> DbResult<Option<Build>> {
        Ok(build::Entity::find_by_id(id).one(self.read()).await?)
    }

    /// Builds with outputs, products, metrics and evals, in the order of
    /// `ids`, in a fixed number of queries whatever their count.
    pub async fn build_views(&self, ids: &[i64]) -> DbResult<Vec<BuildView>> {
        // The finished ones from memory, as `build_view` does; the rest
        // read together, and the finished among them kept.
        let mut views: HashMap<i64, Arc<BuildView>> =
            ids.iter().filter_map(|&id| Some((id, self.builds.get(id)?))).collect();
        let missing: Vec<i64> = ids.iter().copied().filter(|id| !views.contains_key(id)).collect();
        if !missing.is_empty() {
            let epoch = self.builds.epoch();
            for view in self.load_build_views(&missing).await? {
                let view = Arc::new(view);
                self.builds.store(&view, epoch);
                views.insert(view.build.id, view);
            }
        }
        Ok(ids.iter().filter_map(|id| views.get(id)).map(|view| BuildView::clone(view)).collect())
    }

    /// One build as the API shows it. The common case of the API, a
    /// finished build, is shared from memory: callers that keep what they
    /// made of it can tell by the `Arc` whether it is still current.
    pub async fn build_view(&self, id: i64) -> DbResult<Option<Arc<BuildView>>> {
        if let Some(view) = self.builds.get(id) {
            return Ok(Some(view));
        }
        let epoch = self.builds.epoch();
        let Some(view) = self.load_build_views(&[id]).await?.pop() else { return Ok(None) };
        let view = Arc::new(view);
        self.builds.store(&view, epoch);
        Ok(Some(view))
    }

    async fn load_build_views(&self, ids: &[i64]) -> DbResult<Vec<BuildView>> {
        /// A build with the names of its project and jobset.
        #[derive(sea_orm::FromQueryResult)]
        struct Named {
            #[sea_orm(nested)]
            build: Build,
            project_name: String,
            jobset_name: String,
        }
        let named = async {
            let mut builds: HashMap<i64, Build> = HashMap::new();
            let mut names: HashMap<i64, (String, String)> = HashMap::new();
            for chunk in ids.chunks(super::INSERT_CHUNK) {
                let rows = build::Entity::find()
                    .column_as(project::Column::Name, "project_name")
                    .column_as(jobset::Column::Name, "jobset_name")
                    .join(JoinType::InnerJoin, build::Relation::Jobset.def())
                    .join(JoinType::InnerJoin, jobset::Relation::Project.def())
                    .filter(build::Column::Id.is_in(chunk.iter().copied()))
                    .into_model::<Named>()
                    .all(self.read())
                    .await?;
                for Named { build, project_name, jobset_name } in rows {
                    names.insert(build.id, (project_name, jobset_name));
                    builds.insert(build.id, build);
                }
            }
            Ok::<_, super::DbError>((builds, names))
        };
        // All at once, each on a connection of its own: on PostgreSQL a
        // query is a round trip, and these five do not wait for each other.
        let ((mut builds, mut names), mut outputs, mut products, mut metrics, mut evals) = tokio::try_join!(
            named,
            self.outputs_of(ids),
            self.products_of(ids),
            self.metrics_of(ids),
            self.evals_of(ids)
        )?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let build = builds.remove(id)?;
                let (project, jobset) = names.remove(id).unwrap_or_default();
                Some(BuildView {
                    project,
                    jobset,
                    outputs: outputs.remove(id).unwrap_or_default(),
                    products: products.remove(id).unwrap_or_default(),
                    metrics: metrics.remove(id).unwrap_or_default(),
                    evals: evals.remove(id).unwrap_or_default(),
                    build,
                })
            })
            .collect())
    }

    /// Products of each build, by number.
    async fn products_of(&self, ids: &[i64]) -> DbResult<HashMap<i64, Vec<BuildProduct>>> {
        let mut products: HashMap<i64, Vec<BuildProduct>> = HashMap::new();
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            for p in build_product::Entity::find()
                .filter(build_product::Column::BuildId.is_in(chunk.iter().copied()))
                .order_by_asc(build_product::Column::ProductNr)
                .all(self.read())
                .await?
            {
                products.entry(p.build_id).or_default().push(p);
            }
        }
        Ok(products)
    }

    /// Metrics of each build, by name.
    async fn metrics_of(&self, ids: &[i64]) -> DbResult<HashMap<i64, Vec<BuildMetric>>> {
        let mut metrics: HashMap<i64, Vec<BuildMetric>> = HashMap::new();
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            for m in build_metric::Entity::find()
                .filter(build_metric::Column::BuildId.is_in(chunk.iter().copied()))
                .order_by_asc(build_metric::Column::Name)
                .all(self.read())
                .await?
            {
                metrics.entry(m.build_id).or_default().push(m);
            }
        }
        Ok(metrics)
    }

    /// The evaluations each build belongs to, oldest first.
    async fn evals_of(&self, ids: &[i64]) -> DbResult<HashMap<i64, Vec<i64>>> {
        let mut evals: HashMap<i64, Vec<i64>> = HashMap::new();
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            let rows: Vec<(i64, i64)> = jobset_eval_member::Entity::find()
                .select_only()
                .columns([jobset_eval_member::Column::BuildId, jobset_eval_member::Column::EvalId])
                .filter(jobset_eval_member::Column::BuildId.is_in(chunk.iter().copied()))
                .order_by_asc(jobset_eval_member::Column::EvalId)
                .into_tuple()
                .all(self.read())
                .await?;
            for (build_id, eval_id) in rows {
                evals.entry(build_id).or_default().push(eval_id);
            }
        }
        Ok(evals)
    }

    /// Outputs (name, path) of each build, sorted by name.
    pub async fn outputs_of(&self, ids: &[i64]) -> DbResult<HashMap<i64, Vec<(String, String)>>> {
        let mut map: HashMap<i64, Vec<(String, String)>> = HashMap::new();
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            for o in build_output::Entity::find()
                .filter(build_output::Column::BuildId.is_in(chunk.iter().copied()))
                .order_by_asc(build_output::Column::Name)
                .all(self.read())
                .await?
            {
                map.entry(o.build_id).or_default().push((o.name, o.path));
            }
        }
        Ok(map)
    }

    /// Constituent build ids of an aggregate.
    pub async fn constituents_of(&self, aggregate_id: i64) -> DbResult<Vec<i64>> {
        Ok(aggregate_constituent::Entity::find()
            .select_only()
            .column(aggregate_constituent::Column::ConstituentId)
            .filter(aggregate_constituent::Column::AggregateId.eq(aggregate_id))
            .order_by_asc(aggregate_constituent::Column::ConstituentId)
            .into_tuple()
            .all(self.read())
            .await?)
    }

    /// Every unfinished build, with what scheduling needs.
    pub async fn queued_builds(&self) -> DbResult<Vec<QueuedBuild>> {
        /// What the queue runner reads of a build: the queue is re-read
        /// at every change, a hundred thousand rows at a time.
        #[derive(sea_orm::FromQueryResult)]
        struct Queued {
            id: i64,
            jobset_id: i64,
            job: String,
            drv_path: String,
            priority: i32,
            global_priority: i64,
            timeout: i32,
            max_silent: i32,
            is_aggregate: bool,
        }
        let builds = build::Entity::find()
            .select_only()
            .columns([
                build::Column::Id,
                build::Column::JobsetId,
                build::Column::Job,
                build::Column::DrvPath,
                build::Column::Priority,
                build::Column::GlobalPriority,
                build::Column::Timeout,
                build::Column::MaxSilent,
                build::Column::IsAggregate,
            ])
            .filter(build::Column::Finished.eq(false))
            .order_by_asc(build::Column::Id)
            .into_model::<Queued>()
            .all(self.read())
            .await?;
        let aggregates: Vec<i64> = builds.iter().filter(|b| b.is_aggregate).map(|b| b.id).collect();
        let mut constituents: HashMap<i64, Vec<String>> = HashMap::new();
        for chunk in aggregates.chunks(super::INSERT_CHUNK) {
            let rows: Vec<(i64, String)> = aggregate_constituent::Entity::find()
                .select_only()
                .column(aggregate_constituent::Column::AggregateId)
                .column(build::Column::DrvPath)
                .join(
                    sea_orm::JoinType::InnerJoin,
                    aggregate_constituent::Entity::belongs_to(build::Entity)
                        .from(aggregate_constituent::Column::ConstituentId)
                        .to(build::Column::Id)
                        .into(),
                )
                .filter(aggregate_constituent::Column::AggregateId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            for (aggregate, drv) in rows {
                constituents.entry(aggregate).or_default().push(drv);
            }
        }
        Ok(builds
            .into_iter()
            .map(|b| QueuedBuild {
                constituent_drvs: constituents.remove(&b.id).unwrap_or_default(),
                id: b.id,
                jobset_id: b.jobset_id,
                job: b.job,
                drv_path: b.drv_path,
                priority: b.priority,
                global_priority: b.global_priority,
                timeout: b.timeout,
                max_silent: b.max_silent,
            })
            .collect())
    }

    /// Every jobset's `schedulingshares`.
    pub async fn jobset_shares(&self) -> DbResult<Vec<(i64, i32)>> {
        Ok(jobset::Entity::find()
            .select_only()
            .column(jobset::Column::Id)
            .column(jobset::Column::SchedulingShares)
            .into_tuple()
            .all(self.read())
            .await?)
    }

    /// Records how builds ended, in one transaction, except those finished
    /// meanwhile (by a cancel): returns, for each, whether this call
    /// finished it. Products and metrics of a restarted build are replaced.
    pub async fn finish_builds(&self, results: &[FinishedBuild]) -> DbResult<Vec<bool>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.begin_write().await?;
        let mut finished = Vec::with_capacity(results.len());
        let mut metric_rows = Vec::new();
        let mut product_rows = Vec::new();
        let ids: Vec<i64> = results.iter().map(|r| r.id).collect();
        // Metrics carry the job's names, so that plots need no joins.
        let with_metrics: Vec<i64> = results.iter().filter(|r| !r.metrics.is_empty()).map(|r| r.id).collect();
        let mut names: HashMap<i64, (String, String, String, i64)> = HashMap::new();
        if !with_metrics.is_empty() {
            let rows: Vec<(i64, String, String, String, i64)> = build::Entity::find()
                .select_only()
                .column(build::Column::Id)
                .column_as(project::Column::Name, "project_name")
                .column_as(jobset::Column::Name, "jobset_name")
                .column(build::Column::Job)
                .column(build::Column::Timestamp)
                .inner_join(jobset::Entity)
                .join(sea_orm::JoinType::InnerJoin, sea_orm::RelationTrait::def(&jobset::Relation::Project))
                .filter(build::Column::Id.is_in(with_metrics))
                .into_tuple()
                .all(&txn)
                .await?;
            names = rows.into_iter().map(|(id, p, j, job, t)| (id, (p, j, job, t))).collect();
        }
        for result in results {
            let updated = build::Entity::update_many()
                .col_expr(build::Column::Finished, Expr::value(true))
                .col_expr(build::Column::BuildStatus, Expr::value(result.status.code()))
                .col_expr(build::Column::IsCachedBuild, Expr::value(result.is_cached))
                .col_expr(
                    build::Column::StartTime,
                    Func::coalesce([Expr::col(build::Column::StartTime), Expr::val(result.start_time)]).into(),
                )
                .col_expr(build::Column::StopTime, Expr::value(result.stop_time))
                // Its outputs are in the store again (or for the first time).
                .col_expr(build::Column::OutputsCollected, Expr::value(false))
                .col_expr(build::Column::Size, Expr::value(result.size))
                .col_expr(build::Column::ClosureSize, Expr::value(result.closure_size))
                .col_expr(build::Column::ReleaseName, Expr::value(result.release_name.clone()))
                .col_expr(
                    build::Column::OutputErrors,
                    Expr::value((!result.output_errors.is_empty()).then(|| result.output_errors.join("\n"))),
                )
                .filter(build::Column::Id.eq(result.id))
                .filter(build::Column::Finished.eq(false))
                .exec(&txn)
                .await?;
            let done = updated.rows_affected > 0;
            finished.push(done);
            if !done {
                continue;
            }
            product_rows.extend(result.products.iter().enumerate().map(|(i, p)| build_product::ActiveModel {
                build_id: Set(result.id),
                product_nr: Set(i as i32 + 1),
                kind: Set(p.kind.clone()),
                subtype: Set(p.subtype.clone()),
                file_size: Set(p.file_size),
                sha256_hash: Set(p.sha256_hash.clone()),
                path: Set(p.path.clone()),
                name: Set(p.name.clone()),
                default_path: Set(p.default_path.clone()),
                error: Set(p.error.clone()),
            }));
            let (project_name, jobset_name, job, timestamp) = names.get(&result.id).cloned().unwrap_or_default();
            metric_rows.extend(result.metrics.iter().map(|m| build_metric::ActiveModel {
                build_id: Set(result.id),
                name: Set(m.name.clone()),
                unit: Set(m.unit.clone()),
                value: Set(m.value),
                project: Set(project_name.clone()),
                jobset: Set(jobset_name.clone()),
                job: Set(job.clone()),
                timestamp: Set(timestamp),
            }));
        }
        let done_ids: Vec<i64> = ids.iter().zip(&finished).filter(|(_, done)| **done).map(|(id, _)| *id).collect();
        for chunk in done_ids.chunks(super::INSERT_CHUNK) {
            build_product::Entity::delete_many()
                .filter(build_product::Column::BuildId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
            build_metric::Entity::delete_many()
                .filter(build_metric::Column::BuildId.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
        }
        insert_chunked(&txn, product_rows).await?;
        insert_chunked(&txn, metric_rows).await?;
        let events = results
            .iter()
            .zip(&finished)
            .filter(|(_, done)| **done)
            .map(|(r, _)| {
                NewEvent::build(EventKind::BuildFinished, r.id, serde_json::json!({ "status": r.status.code() }))
            })
            .collect();
        write_events(&txn, events).await?;
        self.commit_events(txn).await?;
        self.builds.invalidate(ids);
        Ok(finished)
    }

    /// Queues finished builds again and forgets the cached failures of their
    /// derivations, so they really are rebuilt. Returns those restarted.
    pub async fn restart_builds(&self, ids: &[i64]) -> DbResult<Vec<i64>> {
        let txn = self.begin_write().await?;
        let builds: Vec<(i64, String)> = build::Entity::find()
            .select_only()
            .columns([build::Column::Id, build::Column::DrvPath])
            .filter(build::Column::Id.is_in(ids.iter().copied()))
            .filter(build::Column::Finished.eq(true))
            .into_tuple()
            .all(&txn)
            .await?;
        let restarted: Vec<i64> = builds.iter().map(|(id, _)| *id).collect();
        if restarted.is_empty() {
            return Ok(restarted);
        }
        let step_drvs: Vec<String> = build_step::Entity::find()
            .select_only()
            .column(build_step::Column::DrvPath)
            .filter(build_step::Column::BuildId.is_in(restarted.iter().copied()))
            .into_tuple()
            .all(&txn)
            .await?;
        let drvs: HashSet<String> = builds.into_iter().map(|(_, d)| d).chain(step_drvs).collect();
        let drvs: Vec<String> = drvs.into_iter().collect();
        for chunk in drvs.chunks(super::INSERT_CHUNK) {
            failed_path::Entity::delete_many()
                .filter(failed_path::Column::Path.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        build::Entity::update_many()
            .col_expr(build::Column::Finished, Expr::value(false))
            .col_expr(build::Column::BuildStatus, Expr::value(Option::<i32>::None))
            .col_expr(build::Column::IsCachedBuild, Expr::value(Option::<bool>::None))
            .col_expr(build::Column::StartTime, Expr::value(Option::<i64>::None))
            .col_expr(build::Column::StopTime, Expr::value(Option::<i64>::None))
            .col_expr(build::Column::Timestamp, Expr::value(now()))
            .col_expr(build::Column::OutputsCollected, Expr::value(false))
            .filter(build::Column::Id.is_in(restarted.iter().copied()))
            .exec(&txn)
            .await?;
        let events = restarted
            .iter()
            .map(|&id| NewEvent::build(EventKind::BuildQueued, id, serde_json::json!({ "restarted": true })))
            .collect();
        write_events(&txn, events).await?;
        self.commit_events(txn).await?;
        self.builds.invalidate(restarted.iter().copied());
        Ok(restarted)
    }

    /// Finishes unfinished builds as cancelled. Returns those cancelled.
    pub async fn cancel_builds(&self, ids: &[i64]) -> DbResult<Vec<i64>> {
        let time = now();
        let txn = self.begin_write().await?;
        let cancelled: Vec<i64> = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::Id.is_in(ids.iter().copied()))
            .filter(build::Column::Finished.eq(false))
            .into_tuple()
            .all(&txn)
            .await?;
        build::Entity::update_many()
            .col_expr(build::Column::Finished, Expr::value(true))
            .col_expr(build::Column::BuildStatus, Expr::value(BuildStatus::Cancelled.code()))
            .col_expr(build::Column::IsCachedBuild, Expr::value(false))
            .col_expr(
                build::Column::StartTime,
                Expr::cust("COALESCE(start_time, ".to_owned() + &time.to_string() + ")"),
            )
            .col_expr(build::Column::StopTime, Expr::value(time))
            .filter(build::Column::Id.is_in(cancelled.iter().copied()))
            .exec(&txn)
            .await?;
        let events = cancelled
            .iter()
            .map(|&id| {
                NewEvent::build(
                    EventKind::BuildFinished,
                    id,
                    serde_json::json!({ "status": BuildStatus::Cancelled.code() }),
                )
            })
            .collect();
        write_events(&txn, events).await?;
        self.commit_events(txn).await?;
        self.builds.invalidate(cancelled.iter().copied());
        Ok(cancelled)
    }

    /// Moves unfinished builds to the front of the queue.
    pub async fn bump_builds(&self, ids: &[i64]) -> DbResult<u64> {
        let result = build::Entity::update_many()
            .col_expr(build::Column::GlobalPriority, Expr::value(now()))
            .filter(build::Column::Id.is_in(ids.iter().copied()))
            .filter(build::Column::Finished.eq(false))
            .exec(self.write())
            .await?;
        self.builds.invalidate(ids.iter().copied());
        Ok(result.rows_affected)
    }

    pub async fn set_keep(&self, id: i64, keep: bool) -> DbResult<()> {
        build::Entity::update_many()
            .col_expr(build::Column::Keep, Expr::value(keep))
            .filter(build::Column::Id.eq(id))
            .exec(self.write())
            .await?;
        self.builds.invalidate([id]);
        Ok(())
    }

    /// Builds of an evaluation, optionally only finished ones with a status
    /// in (or not in) a set.
    pub async fn eval_builds_where(&self, eval_id: i64, filter: EvalBuildFilter) -> DbResult<Vec<i64>> {
        let mut query = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id));
        query = match filter {
            EvalBuildFilter::All => query,
            EvalBuildFilter::Unfinished => query.filter(build::Column::Finished.eq(false)),
            EvalBuildFilter::StatusIn(statuses) => query
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::BuildStatus.is_in(statuses.iter().map(|status| status.code()))),
            EvalBuildFilter::Unsuccessful => query
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::BuildStatus.ne(BuildStatus::Succeeded.code())),
        };
        Ok(query.order_by_asc(build::Column::Id).into_tuple().all(self.read()).await?)
    }

    /// How many builds are queued or running.
    pub async fn queued_count(&self) -> DbResult<u64> {
        Ok(build::Entity::find().filter(queued()).count(self.read()).await?)
    }

    /// Unfinished builds in the queue, highest priority first.
    pub async fn queue_view(&self, limit: u64) -> DbResult<Vec<i64>> {
        Ok(build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(queued())
            .order_by_desc(build::Column::GlobalPriority)
            .order_by_asc(build::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.read())
            .await?)
    }
}

/// Unfinished builds, said as the queue's partial index says it (`WHERE
/// NOT finished`: a bound `finished = false` would not match it).
fn queued() -> Expr {
    Expr::col((build::Entity, build::Column::Finished)).not()
}

#[derive(Debug, Clone, Copy)]
pub enum EvalBuildFilter {
    All,
    Unfinished,
    StatusIn(&'static [BuildStatus]),
    Unsuccessful,
}
