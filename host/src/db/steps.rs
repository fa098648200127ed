//! Build steps: recording them as they start and end, the cache of
//! derivations that failed, and the history the scheduler's shares read.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{build, build_step, build_step_output, failed_path};
use super::evals::insert_chunked;
use super::events::{NewEvent, write_events};
use super::{BuildStep, Db, DbResult, now};
use crate::domain::{EventKind, StepStatus};

/// A build step about to run (or already decided without running).
#[derive(Debug, Clone)]
pub struct NewStep {
    pub kind: StepType,
    pub drv_path: String,
    pub system: String,
    pub machine: String,
    /// `None` while running.
    pub status: Option<StepStatus>,
    pub error_msg: Option<String>,
    pub propagated_from: Option<i64>,
}

/// What a step did (Hydra's `type` of a build step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepType {
    /// Built on a machine.
    Build,
    /// Its outputs were fetched from a substituter instead.
    Substitution,
}

impl StepType {
    pub fn code(self) -> i32 {
        match self {
            StepType::Build => 0,
            StepType::Substitution => 1,
        }
    }

    pub fn from_code(code: i32) -> StepType {
        if code == 1 { StepType::Substitution } else { StepType::Build }
    }
}

/// The row of a step starting now, or decided now (with its status).
fn step_row(build_id: i64, step_nr: i32, step: &NewStep, time: i64) -> build_step::ActiveModel {
    build_step::ActiveModel {
        build_id: Set(build_id),
        step_nr: Set(step_nr),
        kind: Set(step.kind.code()),
        drv_path: Set(step.drv_path.clone()),
        busy: Set(step.status.is_none()),
        status: Set(step.status.map(StepStatus::code)),
        error_msg: Set(step.error_msg.clone()),
        start_time: Set(Some(time)),
        stop_time: Set(step.status.map(|_| time)),
        machine: Set(step.machine.clone()),
        system: Set(Some(step.system.clone())),
        propagated_from: Set(step.propagated_from),
        times_built: Set(None),
    }
}

fn step_finished_event(build_id: i64, step_nr: i32, step: &NewStep, status: StepStatus) -> NewEvent {
    let data = serde_json::json!({ "status": status.code(), "drvpath": step.drv_path, "propagatedfrom": step.propagated_from });
    NewEvent { step_nr: Some(step_nr), ..NewEvent::build(EventKind::StepFinished, build_id, data) }
}

impl Db {
    pub async fn build_steps(&self, build_id: i64) -> DbResult<Vec<BuildStep>> {
        Ok(build_step::Entity::find()
            .filter(build_step::Column::BuildId.eq(build_id))
            .order_by_asc(build_step::Column::StepNr)
            .all(self.read())
            .await?)
    }

    /// The steps of each of these builds, in order, in a query per 500
    /// builds (a notifier reads a batch's at once).
    pub async fn steps_of_builds(&self, build_ids: &[i64]) -> DbResult<HashMap<i64, Vec<BuildStep>>> {
        let mut steps: HashMap<i64, Vec<BuildStep>> = HashMap::new();
        for chunk in build_ids.chunks(500) {
            let rows = build_step::Entity::find()
                .filter(build_step::Column::BuildId.is_in(chunk.iter().copied()))
                .order_by_asc(build_step::Column::BuildId)
                .order_by_asc(build_step::Column::StepNr)
                .all(self.read())
                .await?;
            for step in rows {
                steps.entry(step.build_id).or_default().push(step);
            }
        }
        Ok(steps)
    }

    pub async fn build_step(&self, build_id: i64, step_nr: i32) -> DbResult<Option<BuildStep>> {
        Ok(build_step::Entity::find_by_id((build_id, step_nr)).one(self.read()).await?)
    }

    /// Of the given derivations, those whose last build failed
    /// deterministically (and were not restarted since).
    pub async fn failed_paths_among(&self, drvs: &[String]) -> DbResult<HashSet<String>> {
        let mut failed = HashSet::new();
        for chunk in drvs.chunks(super::INSERT_CHUNK) {
            let rows: Vec<String> = failed_path::Entity::find()
                .select_only()
                .column(failed_path::Column::Path)
                .filter(failed_path::Column::Path.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(self.read())
                .await?;
            failed.extend(rows);
        }
        Ok(failed)
    }

    pub async fn add_failed_path(&self, drv: &str) -> DbResult<()> {
        let txn = self.begin_write().await?;
        failed_path::Entity::insert(failed_path::ActiveModel { path: Set(drv.to_owned()), time: Set(now()) })
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(failed_path::Column::Path)
                    .update_column(failed_path::Column::Time)
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// At start: steps that were running when the server stopped did not
    /// finish; they are recorded as aborted and will run again.
    pub async fn abort_busy_steps(&self) -> DbResult<u64> {
        let txn = self.begin_write().await?;
        let result = build_step::Entity::update_many()
            .col_expr(build_step::Column::Busy, Expr::value(false))
            .col_expr(build_step::Column::Status, Expr::value(StepStatus::Aborted.code()))
            .col_expr(build_step::Column::ErrorMsg, Expr::value("interrupted: the server stopped during this step"))
            .col_expr(build_step::Column::StopTime, Expr::value(now()))
            .filter(super::overview::running())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected)
    }

    /// Records a step for a build, numbered after its previous steps.
    pub async fn create_step(&self, build_id: i64, step: &NewStep) -> DbResult<i32> {
        let time = now();
        let txn = self.begin_write().await?;
        super::lock_row(&txn, "builds", build_id).await?;
        let last: Option<i32> = build_step::Entity::find()
            .select_only()
            .column_as(build_step::Column::StepNr.max(), "max")
            .filter(build_step::Column::BuildId.eq(build_id))
            .into_tuple::<Option<i32>>()
            .one(&txn)
            .await?
            .flatten();
        let step_nr = last.unwrap_or(0) + 1;
        step_row(build_id, step_nr, step, time).insert(&txn).await?;
        match step.status {
            None => {
                // The build has started when its first step does.
                let started = build::Entity::update_many()
                    .col_expr(build::Column::StartTime, Expr::value(time))
                    .filter(build::Column::Id.eq(build_id))
                    .filter(build::Column::StartTime.is_null())
                    .exec(&txn)
                    .await?;
                if started.rows_affected > 0 {
                    let data = serde_json::json!({ "machine": step.machine });
                    write_events(&txn, vec![NewEvent::build(EventKind::BuildStarted, build_id, data)]).await?;
                }
            }
            Some(status) => write_events(&txn, vec![step_finished_event(build_id, step_nr, step, status)]).await?,
        }
        self.commit_events(txn).await?;
        Ok(step_nr)
    }

    /// Records steps that ended without running, each on its build (the
    /// failure of a shared dependency shown on every build it failed): a
    /// transaction per few hundred builds, not per build.
    pub async fn create_finished_steps(&self, steps: &[(i64, NewStep)]) -> DbResult<()> {
        let time = now();
        for chunk in steps.chunks(super::INSERT_CHUNK) {
            let txn = self.begin_write().await?;
            let mut ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in &ids {
                super::lock_row(&txn, "builds", *id).await?;
            }
            let mut last: HashMap<i64, i32> = build_step::Entity::find()
                .select_only()
                .column(build_step::Column::BuildId)
                .column_as(build_step::Column::StepNr.max(), "max")
                .filter(build_step::Column::BuildId.is_in(ids))
                .group_by(build_step::Column::BuildId)
                .into_tuple::<(i64, Option<i32>)>()
                .all(&txn)
                .await?
                .into_iter()
                .map(|(id, max)| (id, max.unwrap_or(0)))
                .collect();
            let mut rows = Vec::with_capacity(chunk.len());
            let mut events = Vec::new();
            for (build_id, step) in chunk {
                let step_nr = last.entry(*build_id).or_insert(0);
                *step_nr += 1;
                rows.push(step_row(*build_id, *step_nr, step, time));
                if let Some(status) = step.status {
                    events.push(step_finished_event(*build_id, *step_nr, step, status));
                }
            }
            insert_chunked(&txn, rows).await?;
            write_events(&txn, events).await?;
            self.commit_events(txn).await?;
        }
        Ok(())
    }

    /// The steps that ran since `since` (unix time), as (jobset, stop time,
    /// seconds); failures propagated from other steps are not counted.
    pub async fn step_history(&self, since: i64) -> DbResult<Vec<(i64, i64, i64)>> {
        let steps: Vec<(i64, Option<i64>, Option<i64>)> = build_step::Entity::find()
            .select_only()
            .column(build::Column::JobsetId)
            .column(build_step::Column::StartTime)
            .column(build_step::Column::StopTime)
            .join(
                sea_orm::JoinType::InnerJoin,
                build_step::Entity::belongs_to(build::Entity)
                    .from(build_step::Column::BuildId)
                    .to(build::Column::Id)
                    .into(),
            )
            .filter(build_step::Column::StopTime.gte(since))
            .filter(build_step::Column::PropagatedFrom.is_null())
            .filter(build_step::Column::Busy.eq(false))
            .into_tuple()
            .all(self.read())
            .await?;
        Ok(steps
            .into_iter()
            .filter_map(|(jobset, start, stop)| Some((jobset, stop?, Ord::max(stop? - start?, 0))))
            .collect())
    }

    /// Ends a running step.
    pub async fn finish_step(
        &self,
        build_id: i64,
        step_nr: i32,
        status: StepStatus,
        error_msg: Option<&str>,
        outputs: &[(String, String)],
    ) -> DbResult<()> {
        let txn = self.begin_write().await?;
        build_step::Entity::update_many()
            .col_expr(build_step::Column::Busy, Expr::value(false))
            .col_expr(build_step::Column::Status, Expr::value(status.code()))
            .col_expr(build_step::Column::ErrorMsg, Expr::value(error_msg.map(str::to_owned)))
            .col_expr(build_step::Column::StopTime, Expr::value(now()))
            .col_expr(build_step::Column::TimesBuilt, Expr::value(1))
            .filter(build_step::Column::BuildId.eq(build_id))
            .filter(build_step::Column::StepNr.eq(step_nr))
            .exec(&txn)
            .await?;
        let rows = outputs
            .iter()
            .map(|(name, path)| build_step_output::ActiveModel {
                build_id: Set(build_id),
                step_nr: Set(step_nr),
                name: Set(name.clone()),
                path: Set(path.clone()),
            })
            .collect();
        insert_chunked(&txn, rows).await?;
        let data = serde_json::json!({ "status": status.code() });
        let event = NewEvent { step_nr: Some(step_nr), ..NewEvent::build(EventKind::StepFinished, build_id, data) };
        write_events(&txn, vec![event]).await?;
        self.commit_events(txn).await?;
        Ok(())
    }
}
