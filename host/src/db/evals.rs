//! Evaluations: which jobsets are due, and recording an evaluation's
//! outcome (its builds, inputs, members and errors) in one transaction.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::entities::{
    aggregate_constituent, build, build_output, evaluation_error, jobset, jobset_eval, jobset_eval_input,
    jobset_eval_member, project,
};
use super::events::{NewEvent, write_events};
use super::{Db, DbResult, INSERT_CHUNK, Jobset, Project, now};
use crate::domain::{EvalProgressCount, EventKind};

pub use super::entities::evaluation_error::Model as EvaluationError;
pub use super::entities::jobset_eval::Model as JobsetEval;
pub use super::entities::jobset_eval_input::Model as JobsetEvalInput;

/// Enabled states of a jobset, as Hydra numbers them.
pub mod enabled {
    pub const DISABLED: i32 = 0;
    pub const ENABLED: i32 = 1;
    pub const ONE_SHOT: i32 = 2;
    pub const ONE_AT_A_TIME: i32 = 3;
}

/// How the last check of a jobset ended (`jobsets.last_check_outcome`).
pub mod outcome {
    pub const EVALUATED: &str = "evaluated";
    /// Inputs hash equal to the previous evaluation's: nothing recorded.
    pub const UNCHANGED: &str = "unchanged";
    pub const FETCH_FAILED: &str = "fetch-failed";
    pub const EVAL_FAILED: &str = "eval-failed";
}

/// A job as the evaluator found it, to be recorded as a build.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub name: String,
    pub nix_name: String,
    pub drv_path: String,
    pub system: String,
    /// Output name to store path, in the derivation's order.
    pub outputs: Vec<(String, String)>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub homepage: Option<String>,
    pub maintainers: Option<String>,
    pub scheduling_priority: i32,
    pub timeout: i32,
    pub max_silent: i32,
    pub is_channel: bool,
    /// For aggregates: the names of their constituent jobs in this eval.
    pub constituents: Option<Vec<String>>,
}

impl NewJob {
    /// A job with one `out` output and no meta attributes: Hydra's
    /// defaults (priority 100, an hour of timeout and of silence).
    pub fn plain(name: &str, nix_name: &str, drv_path: String, system: &str, out: String) -> NewJob {
        NewJob {
            name: name.into(),
            nix_name: nix_name.into(),
            drv_path,
            system: system.into(),
            outputs: vec![("out".into(), out)],
            description: None,
            license: None,
            homepage: None,
            maintainers: None,
            scheduling_priority: 100,
            timeout: 3600,
            max_silent: 3600,
            is_channel: false,
            constituents: None,
        }
    }
}

/// One input as it was fetched for an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEvalInput {
    pub name: String,
    pub kind: String,
    pub uri: Option<String>,
    pub revision: Option<String>,
    pub value: Option<String>,
    pub dependency: Option<i64>,
    pub path: Option<String>,
    pub sha256_hash: Option<String>,
}

/// Everything one successful evaluation produced.
#[derive(Debug, Clone)]
pub struct NewEval {
    pub jobset_id: i64,
    pub started: i64,
    pub hash: String,
    pub flake: Option<String>,
    pub checkout_time: i64,
    pub eval_time: i64,
    pub inputs: Vec<NewEvalInput>,
    pub jobs: Vec<NewJob>,
    /// Jobs that failed to evaluate: (job name, message).
    pub errors: Vec<(String, String)>,
}

impl NewEval {
    /// An evaluation of `jobs` with no inputs, errors or timings, whose
    /// inputs' hash is `hash` (tests and benchmarks).
    pub fn of_jobs(jobset_id: i64, started: i64, hash: String, jobs: Vec<NewJob>) -> NewEval {
        NewEval {
            jobset_id,
            started,
            hash,
            flake: None,
            checkout_time: 0,
            eval_time: 0,
            inputs: Vec::new(),
            jobs,
            errors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecordedEval {
    pub eval_id: i64,
    pub new_builds: Vec<i64>,
    pub has_new_builds: bool,
    /// How long each part of recording took, for the evaluator's log line.
    pub phases: RecordPhases,
}

/// Milliseconds spent in each part of recording an evaluation, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordPhases {
    /// Waiting for the write lock, and reading the previous evaluation.
    pub previous_ms: u64,
    /// Inserting the new builds (and on PostgreSQL their job names).
    pub builds_ms: u64,
    /// Inserting their outputs (and on SQLite their search rows).
    pub outputs_ms: u64,
    /// The evaluation row and its members (with their triggers' counts).
    pub members_ms: u64,
    /// Inputs, constituents, errors, the jobset and the events.
    pub rest_ms: u64,
    pub commit_ms: u64,
}

/// Milliseconds since `clock`, and `clock` restarted.
fn lap(clock: &mut std::time::Instant) -> u64 {
    let ms = clock.elapsed().as_millis() as u64;
    *clock = std::time::Instant::now();
    ms
}

/// A jobset the evaluator should look at now.
#[derive(Debug, Clone)]
pub struct DueJobset {
    pub project: Project,
    pub jobset: Jobset,
}

/// A finished, successful build, as passed to other evaluations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessfulBuild {
    pub id: i64,
    pub job: String,
    pub drv_path: String,
    pub nix_name: String,
    pub release_name: Option<String>,
    pub system: String,
    pub outputs: Vec<(String, String)>,
}

/// Hydra's text for the jobset's error message: every failing job, in order.
pub fn format_eval_errors(errors: &[(String, String)]) -> String {
    let mut text = String::new();
    for (job, message) in errors {
        if job.is_empty() {
            text.push_str(&format!("at top-level:\n{message}\n\n"));
        } else {
            text.push_str(&format!("in job ‘{job}’:\n{message}\n\n"));
        }
    }
    text
}

impl Db {
    /// Jobsets to evaluate now, Hydra's rules: enabled (and the project too),
    /// not being evaluated, and either triggered or past their check interval;
    /// a one-at-a-time jobset also waits until its last eval has finished.
    pub async fn due_jobsets(&self, now: i64) -> DbResult<Vec<DueJobset>> {
        let projects: HashMap<i64, Project> = project::Entity::find()
            .filter(project::Column::Enabled.eq(true))
            .all(self.read())
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let jobsets = jobset::Entity::find()
            .filter(jobset::Column::Enabled.ne(enabled::DISABLED))
            .filter(jobset::Column::StartTime.is_null())
            .order_by_asc(jobset::Column::TriggerTime)
            .order_by_asc(jobset::Column::LastCheckedTime)
            .order_by_asc(jobset::Column::Name)
            .all(self.read())
            .await?;
        let mut due = Vec::new();
        for jobset in jobsets {
            let Some(project) = projects.get(&jobset.project_id) else {
                continue;
            };
            let is_due = jobset.trigger_time.is_some()
                || (jobset.check_interval > 0
                    && jobset.last_checked_time.is_none_or(|t| t + i64::from(jobset.check_interval) <= now));
            if !is_due {
                continue;
            }
            if jobset.enabled == enabled::ONE_AT_A_TIME && self.last_eval_unfinished(jobset.id).await? {
                continue;
            }
            due.push(DueJobset { project: project.clone(), jobset });
        }
        Ok(due)
    }

    async fn last_eval_unfinished(&self, jobset_id: i64) -> DbResult<bool> {
        let Some(eval) = self.last_eval(jobset_id).await? else {
            return Ok(false);
        };
        let unfinished = jobset_eval_member::Entity::find()
            .inner_join(build::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval.id))
            .filter(build::Column::Finished.eq(false))
            .count(self.read())
            .await?;
        Ok(unfinished > 0)
    }

    /// The newest evaluation of a jobset.
    pub async fn last_eval(&self, jobset_id: i64) -> DbResult<Option<JobsetEval>> {
        Ok(jobset_eval::Entity::find()
            .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
            .order_by_desc(jobset_eval::Column::Id)
            .one(self.read())
            .await?)
    }

    /// Marks a jobset as being evaluated (so it is not picked twice) and
    /// returns the start time.
    pub async fn begin_evaluation(&self, jobset_id: i64) -> DbResult<i64> {
        let started = now();
        let txn = self.begin_write().await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::StartTime, Expr::value(started))
            .filter(jobset::Column::Id.eq(jobset_id))
            .exec(&txn)
            .await?;
        write_events(&txn, vec![NewEvent::jobset(EventKind::EvalStarted, jobset_id, serde_json::json!({}))]).await?;
        self.commit_events(txn).await?;
        Ok(started)
    }

    /// Forgets evaluations that were running when the server stopped.
    pub async fn clear_running_evaluations(&self) -> DbResult<()> {
        let txn = self.begin_write().await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::StartTime, Expr::value(Option::<i64>::None))
            .col_expr(jobset::Column::EvalEvaluated, Expr::value(Option::<i64>::None))
            .col_expr(jobset::Column::EvalTotal, Expr::value(Option::<i64>::None))
            .filter(jobset::Column::StartTime.is_not_null())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// How far the running evaluation of a jobset is (ignored once its
    /// check has ended).
    pub async fn record_eval_progress(&self, jobset_id: i64, progress: EvalProgressCount) -> DbResult<()> {
        let txn = self.begin_write().await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::EvalEvaluated, Expr::value(progress.evaluated as i64))
            .col_expr(jobset::Column::EvalTotal, Expr::value(progress.total.map(|t| t as i64)))
            .filter(jobset::Column::Id.eq(jobset_id))
            .filter(jobset::Column::StartTime.is_not_null())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Ends a check of a jobset: it is no longer running, a trigger that
    /// came before the start is consumed, a one-shot jobset is switched off.
    async fn end_check(
        &self,
        txn: &DatabaseTransaction,
        jobset_id: i64,
        started: i64,
        outcome: &str,
        completed: bool,
    ) -> DbResult<()> {
        let time = now();
        let mut update = jobset::Entity::update_many()
            .col_expr(jobset::Column::StartTime, Expr::value(Option::<i64>::None))
            .col_expr(jobset::Column::EvalEvaluated, Expr::value(Option::<i64>::None))
            .col_expr(jobset::Column::EvalTotal, Expr::value(Option::<i64>::None))
            .col_expr(jobset::Column::LastCheckedTime, Expr::value(time))
            .col_expr(jobset::Column::LastCheckOutcome, Expr::value(outcome))
            .col_expr(
                jobset::Column::TriggerTime,
                Expr::case(Expr::col(jobset::Column::TriggerTime).lte(started), Expr::value(Option::<i64>::None))
                    .finally(Expr::col(jobset::Column::TriggerTime))
                    .into(),
            )
            .filter(jobset::Column::Id.eq(jobset_id));
        if completed {
            update = update.col_expr(jobset::Column::ForceEval, Expr::value(false)).col_expr(
                jobset::Column::Enabled,
                Expr::case(Expr::col(jobset::Column::Enabled).eq(enabled::ONE_SHOT), Expr::value(enabled::DISABLED))
                    .finally(Expr::col(jobset::Column::Enabled))
                    .into(),
            );
        }
        update.exec(txn).await?;
        Ok(())
    }

    /// The inputs hash equals the last evaluation's: nothing to record but
    /// the check itself.
    pub async fn record_eval_unchanged(&self, jobset_id: i64, started: i64) -> DbResult<()> {
        let txn = self.begin_write().await?;
        super::lock_row(&txn, "jobsets", jobset_id).await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::FetchErrorMsg, Expr::value(Option::<String>::None))
            .filter(jobset::Column::Id.eq(jobset_id))
            .exec(&txn)
            .await?;
        self.end_check(&txn, jobset_id, started, outcome::UNCHANGED, true).await?;
        write_events(&txn, vec![NewEvent::jobset(EventKind::EvalCached, jobset_id, serde_json::json!({}))]).await?;
        self.commit_events(txn).await?;
        Ok(())
    }

    /// An input could not be fetched; nothing was evaluated.
    pub async fn record_fetch_error(&self, jobset_id: i64, started: i64, message: &str) -> DbResult<()> {
        let txn = self.begin_write().await?;
        super::lock_row(&txn, "jobsets", jobset_id).await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::FetchErrorMsg, Expr::value(message))
            .filter(jobset::Column::Id.eq(jobset_id))
            .exec(&txn)
            .await?;
        self.end_check(&txn, jobset_id, started, outcome::FETCH_FAILED, false).await?;
        let data = serde_json::json!({ "reason": "fetch", "message": message });
        write_events(&txn, vec![NewEvent::jobset(EventKind::EvalFailed, jobset_id, data)]).await?;
        self.commit_events(txn).await?;
        Ok(())
    }

    /// The expression as a whole failed (a syntax error, a top-level
    /// `throw`, …): no jobs, the error is kept on the jobset.
    pub async fn record_eval_failure(&self, jobset_id: i64, started: i64, message: &str) -> DbResult<()> {
        let time = now();
        let txn = self.begin_write().await?;
        super::lock_row(&txn, "jobsets", jobset_id).await?;
        let text = format_eval_errors(&[(String::new(), message.to_owned())]);
        jobset::Entity::update_many()
            .col_expr(jobset::Column::ErrorMsg, Expr::value(text))
            .col_expr(jobset::Column::ErrorTime, Expr::value(time))
            .col_expr(jobset::Column::FetchErrorMsg, Expr::value(Option::<String>::None))
            .filter(jobset::Column::Id.eq(jobset_id))
            .exec(&txn)
            .await?;
        evaluation_error::ActiveModel {
            jobset_id: Set(jobset_id),
            eval_id: Set(None),
            job: Set(None),
            message: Set(message.to_owned()),
            time: Set(time),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        self.end_check(&txn, jobset_id, started, outcome::EVAL_FAILED, false).await?;
        let data = serde_json::json!({ "reason": "evaluation", "message": message });
        write_events(&txn, vec![NewEvent::jobset(EventKind::EvalFailed, jobset_id, data)]).await?;
        self.commit_events(txn).await?;
        Ok(())
    }

    /// Records an evaluation: reuses the builds of the previous evaluation
    /// whose job has the same derivation, queues the others, and stores
    /// inputs, members, aggregate constituents and per-job errors, all in
    /// one transaction (a crash leaves either all of it or none).
    pub async fn record_eval(&self, new: &NewEval) -> DbResult<RecordedEval> {
        let time = now();
        let mut phases = RecordPhases::default();
        let mut clock = std::time::Instant::now();
        let txn = self.begin_write().await?;
        super::lock_row(&txn, "jobsets", new.jobset_id).await?;
        Self::defer_search_index(&txn).await?;

        let previous = jobset_eval::Entity::find()
            .filter(jobset_eval::Column::JobsetId.eq(new.jobset_id))
            .order_by_desc(jobset_eval::Column::Id)
            .one(&txn)
            .await?;
        let mut reusable: HashMap<(String, String), i64> = HashMap::new();
        // Each job's build in the previous evaluation, kept with the new
        // builds so that comparing the two needs no search (migration 15).
        let mut previous_build_of: HashMap<String, i64> = HashMap::new();
        let mut previous_count = 0;
        if let Some(previous) = &previous {
            let rows: Vec<(i64, String, String)> = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::DrvPath])
                .inner_join(jobset_eval_member::Entity)
                .filter(jobset_eval_member::Column::EvalId.eq(previous.id))
                .into_tuple()
                .all(&txn)
                .await?;
            previous_count = rows.len();
            previous_build_of = rows.iter().map(|(id, job, _)| (job.clone(), *id)).collect();
            reusable = rows.into_iter().map(|(id, job, drv)| ((job, drv), id)).collect();
        }

        // Builds for the jobs, new or reused, in job order.
        let mut build_of_job: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
        let mut new_jobs = Vec::new();
        for job in &new.jobs {
            match reusable.get(&(job.name.clone(), job.drv_path.clone())) {
                Some(&id) => {
                    build_of_job.insert(&job.name, (id, false));
                }
                None => new_jobs.push(job),
            }
        }
        phases.previous_ms = lap(&mut clock);
        let new_builds = insert_new_builds(&txn, new.jobset_id, time, &new_jobs).await?;
        phases.builds_ms = lap(&mut clock);
        for (job, &id) in new_jobs.iter().zip(&new_builds) {
            build_of_job.insert(&job.name, (id, true));
        }
        let outputs: Vec<build_output::ActiveModel> = new_jobs
            .iter()
            .flat_map(|job| {
                let build_id = build_of_job[job.name.as_str()].0;
                job.outputs.iter().map(move |(name, path)| build_output::ActiveModel {
                    build_id: Set(build_id),
                    name: Set(name.clone()),
                    path: Set(path.clone()),
                })
            })
            .collect();
        insert_chunked(&txn, outputs).await?;
        phases.outputs_ms = lap(&mut clock);

        let has_new_builds = !new_builds.is_empty() || previous.is_none() || previous_count != build_of_job.len();
        let eval = jobset_eval::ActiveModel {
            jobset_id: Set(new.jobset_id),
            timestamp: Set(time),
            checkout_time: Set(new.checkout_time),
            eval_time: Set(new.eval_time),
            has_new_builds: Set(has_new_builds),
            hash: Set(new.hash.clone()),
            nr_builds: Set(build_of_job.len() as i32),
            nr_errors: Set(new.errors.len() as i32),
            flake: Set(new.flake.clone()),
            previous_eval_id: Set(previous.as_ref().map(|p| p.id)),
            ..Default::default()
        }
        .insert(&txn)
        .await?;

        let members: Vec<jobset_eval_member::ActiveModel> = build_of_job
            .iter()
            .map(|(&job, &(build_id, is_new))| jobset_eval_member::ActiveModel {
                eval_id: Set(eval.id),
                build_id: Set(build_id),
                is_new: Set(is_new),
                previous_build_id: Set(if is_new { previous_build_of.get(job).copied() } else { None }),
                // The triggers' to write.
                outcome_changed: sea_orm::ActiveValue::NotSet,
            })
            .collect();
        insert_chunked(&txn, members).await?;
        phases.members_ms = lap(&mut clock);

        let inputs: Vec<jobset_eval_input::ActiveModel> = new
            .inputs
            .iter()
            .map(|input| jobset_eval_input::ActiveModel {
                eval_id: Set(eval.id),
                name: Set(input.name.clone()),
                kind: Set(input.kind.clone()),
                uri: Set(input.uri.clone()),
                revision: Set(input.revision.clone()),
                value: Set(input.value.clone()),
                dependency: Set(input.dependency),
                path: Set(input.path.clone()),
                sha256_hash: Set(input.sha256_hash.clone()),
                ..Default::default()
            })
            .collect();
        insert_chunked(&txn, inputs).await?;

        // Constituents of new aggregates only: a reused aggregate keeps its own.
        let mut constituents = Vec::new();
        for job in &new_jobs {
            let Some(names) = &job.constituents else {
                continue;
            };
            let aggregate_id = build_of_job[job.name.as_str()].0;
            let mut ids: Vec<i64> = names.iter().filter_map(|n| build_of_job.get(n.as_str())).map(|b| b.0).collect();
            ids.sort_unstable();
            ids.dedup();
            constituents.extend(ids.into_iter().filter(|&id| id != aggregate_id).map(|constituent_id| {
                aggregate_constituent::ActiveModel {
                    aggregate_id: Set(aggregate_id),
                    constituent_id: Set(constituent_id),
                }
            }));
        }
        insert_chunked(&txn, constituents).await?;

        let errors: Vec<evaluation_error::ActiveModel> = new
            .errors
            .iter()
            .map(|(job, message)| evaluation_error::ActiveModel {
                jobset_id: Set(new.jobset_id),
                eval_id: Set(Some(eval.id)),
                job: Set(Some(job.clone())),
                message: Set(message.clone()),
                time: Set(time),
                ..Default::default()
            })
            .collect();
        insert_chunked(&txn, errors).await?;

        let (error_msg, error_time) =
            if new.errors.is_empty() { (None, None) } else { (Some(format_eval_errors(&new.errors)), Some(time)) };
        jobset::Entity::update_many()
            .col_expr(jobset::Column::ErrorMsg, Expr::value(error_msg))
            .col_expr(jobset::Column::ErrorTime, Expr::value(error_time))
            .col_expr(jobset::Column::FetchErrorMsg, Expr::value(Option::<String>::None))
            .filter(jobset::Column::Id.eq(new.jobset_id))
            .exec(&txn)
            .await?;
        self.end_check(&txn, new.jobset_id, new.started, outcome::EVALUATED, true).await?;
        let mut events = vec![NewEvent {
            eval_id: Some(eval.id),
            ..NewEvent::jobset(
                EventKind::EvalAdded,
                new.jobset_id,
                serde_json::json!({ "builds": build_of_job.len(), "newbuilds": new_builds.len(), "errors": new.errors.len() }),
            )
        }];
        events.extend(new_jobs.iter().map(|job| NewEvent {
            jobset_id: Some(new.jobset_id),
            eval_id: Some(eval.id),
            ..NewEvent::build(
                EventKind::BuildQueued,
                build_of_job[job.name.as_str()].0,
                serde_json::json!({ "job": job.name }),
            )
        }));
        write_events(&txn, events).await?;
        phases.rest_ms = lap(&mut clock);
        self.commit_events(txn).await?;
        phases.commit_ms = lap(&mut clock);
        // Reused builds now list this evaluation too.
        self.builds.invalidate(build_of_job.values().filter(|(_, is_new)| !is_new).map(|(id, _)| *id));
        Ok(RecordedEval { eval_id: eval.id, new_builds, has_new_builds, phases })
    }

    /// The successful builds of an evaluation, with their outputs.
    pub async fn eval_successful_builds(&self, eval_id: i64) -> DbResult<Vec<SuccessfulBuild>> {
        let builds = build::Entity::find()
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.eq(0))
            .order_by_asc(build::Column::Job)
            .all(self.read())
            .await?;
        self.successful_builds(builds).await
    }

    pub(super) async fn successful_builds(&self, builds: Vec<build::Model>) -> DbResult<Vec<SuccessfulBuild>> {
        let mut outputs = self.outputs_of(&builds.iter().map(|b| b.id).collect::<Vec<_>>()).await?;
        Ok(builds
            .into_iter()
            .map(|b| SuccessfulBuild {
                outputs: outputs.remove(&b.id).unwrap_or_default(),
                id: b.id,
                job: b.job,
                drv_path: b.drv_path,
                nix_name: b.nix_name,
                release_name: b.release_name,
                system: b.system,
            })
            .collect())
    }

    /// The evaluation of the same jobset just before `eval`.
    pub async fn previous_eval(&self, eval: &JobsetEval) -> DbResult<Option<JobsetEval>> {
        Ok(jobset_eval::Entity::find()
            .filter(jobset_eval::Column::JobsetId.eq(eval.jobset_id))
            .filter(jobset_eval::Column::Id.lt(eval.id))
            .order_by_desc(jobset_eval::Column::Id)
            .one(self.read())
            .await?)
    }

    pub async fn eval(&self, id: i64) -> DbResult<Option<JobsetEval>> {
        Ok(jobset_eval::Entity::find_by_id(id).one(self.read()).await?)
    }

    /// An evaluation with its project and jobset: one query.
    pub async fn eval_with_jobset(&self, id: i64) -> DbResult<Option<(JobsetEval, Project, Jobset)>> {
        let found = jobset_eval::Entity::find_by_id(id)
            .find_also_related(jobset::Entity)
            .and_also_related(project::Entity)
            .one(self.read())
            .await?;
        Ok(found.and_then(|(eval, jobset, project)| Some((eval, project?, jobset?))))
    }

    /// A page of a jobset's evaluations, newest first, and their total number.
    pub async fn jobset_evals(&self, jobset_id: i64, offset: u64, limit: u64) -> DbResult<(Vec<JobsetEval>, u64)> {
        // Counted apart: a window over the jobset's rows would read them all.
        let query = jobset_eval::Entity::find().filter(jobset_eval::Column::JobsetId.eq(jobset_id));
        let total = query.clone().count(self.read()).await?;
        let evals = query.order_by_desc(jobset_eval::Column::Id).offset(offset).limit(limit).all(self.read()).await?;
        Ok((evals, total))
    }

    /// Up to `limit` build ids of an evaluation above `after`, ascending: a
    /// range of the members' primary key, so that an evaluation of 100,000
    /// builds is read a chunk at a time (and written out as it is read).
    pub async fn eval_members_after(&self, eval_id: i64, after: i64, limit: u64) -> DbResult<Vec<i64>> {
        Ok(jobset_eval_member::Entity::find()
            .select_only()
            .column(jobset_eval_member::Column::BuildId)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
            .filter(jobset_eval_member::Column::BuildId.gt(after))
            .order_by_asc(jobset_eval_member::Column::EvalId)
            .order_by_asc(jobset_eval_member::Column::BuildId)
            .limit(limit)
            .into_tuple()
            .all(self.read())
            .await?)
    }

    pub async fn eval_inputs(&self, eval_ids: &[i64]) -> DbResult<HashMap<i64, Vec<JobsetEvalInput>>> {
        let mut map: HashMap<i64, Vec<JobsetEvalInput>> = HashMap::new();
        for input in jobset_eval_input::Entity::find()
            .filter(jobset_eval_input::Column::EvalId.is_in(eval_ids.iter().copied()))
            .order_by_asc(jobset_eval_input::Column::Name)
            .all(self.read())
            .await?
        {
            map.entry(input.eval_id).or_default().push(input);
        }
        Ok(map)
    }

    /// Per-job errors of an evaluation.
    pub async fn eval_errors(&self, eval_id: i64) -> DbResult<Vec<EvaluationError>> {
        Ok(evaluation_error::Entity::find()
            .filter(evaluation_error::Column::EvalId.eq(eval_id))
            .order_by_asc(evaluation_error::Column::Id)
            .all(self.read())
            .await?)
    }

    /// The build of `job` in an evaluation.
    pub async fn eval_job_build(&self, eval_id: i64, job: &str) -> DbResult<Option<i64>> {
        Ok(build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
            .filter(build::Column::Job.eq(job))
            .into_tuple()
            .one(self.read())
            .await?)
    }
}

/// Inserts the builds of an evaluation's new jobs, a chunk per statement
/// (not a round trip per build), and returns their ids in the jobs'
/// order. The ids come back with their job's name, which is unique within
/// an evaluation: `RETURNING` of a multi-row insert has no order that
/// every backend promises.
async fn insert_new_builds(
    txn: &DatabaseTransaction,
    jobset_id: i64,
    time: i64,
    jobs: &[&NewJob],
) -> DbResult<Vec<i64>> {
    let mut id_of_job: HashMap<String, i64> = HashMap::with_capacity(jobs.len());
    for chunk in jobs.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|job| build::ActiveModel {
            finished: Set(false),
            timestamp: Set(time),
            jobset_id: Set(jobset_id),
            job: Set(job.name.clone()),
            nix_name: Set(job.nix_name.clone()),
            description: Set(job.description.clone()),
            drv_path: Set(job.drv_path.clone()),
            system: Set(job.system.clone()),
            license: Set(job.license.clone()),
            homepage: Set(job.homepage.clone()),
            maintainers: Set(job.maintainers.clone()),
            max_silent: Set(job.max_silent),
            timeout: Set(job.timeout),
            is_channel: Set(job.is_channel),
            is_aggregate: Set(job.constituents.is_some()),
            priority: Set(job.scheduling_priority),
            global_priority: Set(0),
            keep: Set(false),
            ..Default::default()
        });
        let mut insert = build::Entity::insert_many(rows).into_query();
        insert.returning(Query::returning().columns([build::Column::Id, build::Column::Job]));
        for row in txn.query_all(&insert).await? {
            let id: i64 = row.try_get("", "id")?;
            let job: String = row.try_get("", "job")?;
            id_of_job.insert(job, id);
        }
    }
    jobs.iter()
        .map(|job| {
            id_of_job.get(&job.name).copied().ok_or_else(|| {
                DbErr::Custom(format!("the new build of job {:?} came back without its id", job.name)).into()
            })
        })
        .collect()
}

/// Inserts rows in chunks within a transaction; nothing for an empty list.
pub(crate) async fn insert_chunked<A>(txn: &DatabaseTransaction, rows: Vec<A>) -> DbResult<()>
where
    A: ActiveModelTrait + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(INSERT_CHUNK).collect();
        <A::Entity as EntityTrait>::insert_many(chunk).exec_without_returning(txn).await?;
    }
    Ok(())
}
