//! The evaluator: finds jobsets that are due, fetches their inputs,
//! evaluates their expression with Nix and records the evaluation with its
//! builds, then wakes the queue runner.

mod declarative;
mod failure;
mod instantiate;
mod jobs;
mod nix_eval_jobs;
mod progress;
mod rooter;
mod slices;
mod untrusted;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::db::{Db, DueJobset, Jobset, NewEval, NewEvalInput, Project, SPEC_JOBSET, now, outcome};
use crate::domain::Wake;
use crate::gc::GcRoots;
use crate::inputs::{FetchedInput, InputFetcher, build_argument};
use crate::metrics::Metrics;
use crate::nix::{Nix, NixValue, StorePath};
use crate::projects::is_relative_inside;
use crate::projects::spec::FLAKE;
pub use failure::{EvalFailure, SpecRefused};
use instantiate::JobsSource;
pub use jobs::{JobDefaults, JobInfo};

const WRAPPER_NIX: &str = include_str!("wrapper.nix");

/// Shared handle to wake the evaluator (after a push or a jobset change).
#[derive(Clone, Default)]
pub struct EvaluatorHandle {
    wake: Wake,
}

impl EvaluatorHandle {
    /// Wakes the evaluator, in this process or the one that runs it.
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// What wakes it (for the cluster, which carries wake-ups between
    /// processes).
    pub fn wake_handle(&self) -> &Wake {
        &self.wake
    }
}

pub struct Evaluator {
    db: Db,
    nix: Nix,
    fetcher: InputFetcher,
    config: Arc<Config>,
    handle: EvaluatorHandle,
    /// Woken when an evaluation queued new builds.
    queue_wake: Wake,
    metrics: Arc<Metrics>,
    use_nix_eval_jobs: bool,
    /// Roots new evaluations' paths (none where roots cannot be kept).
    gc: Option<GcRoots>,
}

impl Evaluator {
    pub fn new(
        db: Db,
        nix: Nix,
        fetcher: InputFetcher,
        config: Arc<Config>,
        handle: EvaluatorHandle,
        queue_wake: Wake,
        metrics: Arc<Metrics>,
    ) -> Evaluator {
        let use_nix_eval_jobs = config.evaluator.use_nix_eval_jobs && nix.has_program("nix-eval-jobs");
        Evaluator { db, nix, fetcher, config, handle, queue_wake, metrics, use_nix_eval_jobs, gc: None }
    }

    /// Roots what new evaluations build (see `gc/`).
    pub fn with_gc_roots(mut self, gc: Option<GcRoots>) -> Evaluator {
        self.gc = gc;
        self
    }

    /// Runs until the task is dropped (which stops the evaluations it
    /// started: a process that lost the evaluator role stops evaluating).
    pub async fn run(self) {
        if let Err(e) = self.db.clear_running_evaluations().await {
            warn!("cannot reset evaluations interrupted by the last shutdown: {e}");
        }
        // What an evaluation recorded before a crash left unindexed.
        self.merge_search_index(None).await;
        if self.use_nix_eval_jobs {
            info!("evaluating with nix-eval-jobs");
        }
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.evaluator.max_concurrent_evals));
        let poll = Duration::from_secs(this.config.evaluator.poll_interval_secs);
        let mut evaluations = tokio::task::JoinSet::new();
        loop {
            match this.db.due_jobsets(now()).await {
                Ok(due) => {
                    for jobset in due {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let started = match this.db.begin_evaluation(jobset.jobset.id).await {
                            Ok(started) => started,
                            Err(e) => {
                                warn!("cannot start evaluating {}:{}: {e}", jobset.project.name, jobset.jobset.name);
                                continue;
                            }
                        };
                        let this = this.clone();
                        let span = info_span!("eval", project = %jobset.project.name, jobset = %jobset.jobset.name);
                        evaluations.spawn(
                            async move {
                                this.evaluate_jobset(&jobset, started).await;
                                drop(slot);
                                this.handle.wake.wake_here();
                            }
                            .instrument(span),
                        );
                    }
                }
                Err(e) => warn!("cannot look for jobsets to evaluate: {e}"),
            }
            tokio::select! {
                _ = this.handle.wake.woken() => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = evaluations.join_next(), if !evaluations.is_empty() => {}
            }
        }
    }

    /// One check of a jobset, from fetching to recording; every outcome is
    /// recorded on the jobset, so it never stays marked as running.
    async fn evaluate_jobset(&self, due: &DueJobset, started: i64) {
        let clock = Instant::now();
        let outcome = match self.check(due, started).await {
            Ok(outcome) => outcome,
            Err(failure) => {
                let message = failure.to_string();
                warn!("evaluation failed: {message}");
                if let Err(e) = self.db.record_eval_failure(due.jobset.id, started, &message).await {
                    warn!("cannot record the evaluation failure: {e}");
                }
                outcome::EVAL_FAILED
            }
        };
        self.metrics.evaluation(outcome, clock.elapsed());
    }

    /// Fetches, evaluates and records; returns how the check ended
    /// (an `outcome::*`), or the error that failed the whole evaluation.
    async fn check(&self, due: &DueJobset, started: i64) -> Result<&'static str, EvalFailure> {
        if due.jobset.name == SPEC_JOBSET {
            if let Some(declarative) = due.project.declarative() {
                return self.check_spec(due, started, &declarative).await;
            }
        }
        if due.jobset.kind == FLAKE {
            return self.check_flake(due, started).await;
        }
        self.check_legacy(&due.project, &due.jobset, started, Vec::new(), None).await
    }

    /// A legacy jobset: its inputs (and `extra` ones the caller fetched)
    /// passed to the expression file of one of them. With `only_job`, the
    /// expression must have that one job and no other.
    async fn check_legacy(
        &self,
        project: &Project,
        jobset: &Jobset,
        started: i64,
        extra: Vec<FetchedInput>,
        only_job: Option<&str>,
    ) -> Result<&'static str, EvalFailure> {
        let fetch_start = Instant::now();
        let inputs = self.db.jobset_inputs(jobset.id).await?;
        let mut fetched = Vec::with_capacity(inputs.len() + extra.len());
        for input in &inputs {
            match self.fetcher.fetch(project, jobset, input).await {
                Ok(input) => fetched.push(input),
                Err(e) => {
                    info!("{e}");
                    self.db.record_fetch_error(jobset.id, started, &e.to_string()).await?;
                    return Ok(outcome::FETCH_FAILED);
                }
            }
        }
        fetched.extend(extra);
        let checkout_time = fetch_start.elapsed().as_secs() as i64;

        let expr_input = fetched
            .iter()
            .find(|i| i.name == jobset.nixexpr_input)
            .ok_or_else(|| EvalFailure::NoExpressionInput(jobset.nixexpr_input.clone()))?;
        let expr_root = expr_input
            .readable_path
            .as_ref()
            .ok_or_else(|| EvalFailure::NotASourceTree(jobset.nixexpr_input.clone()))?;
        if !is_relative_inside(&jobset.nixexpr_path) {
            return Err(EvalFailure::PathOutsideInput(jobset.nixexpr_path.clone()));
        }
        let expr_path = Path::new(expr_root.as_str()).join(&jobset.nixexpr_path);
        if !expr_path.is_file() {
            return Err(EvalFailure::NoExpressionFile {
                path: jobset.nixexpr_path.clone(),
                input: jobset.nixexpr_input.clone(),
                root: expr_root.clone(),
            });
        }

        // Jobs that took other jobs' builds as arguments last time: a new
        // build of those is a change of input, as in the paper.
        let previous = self.db.last_eval(jobset.id).await?;
        let configured: BTreeSet<String> = fetched.iter().map(|i| i.name.clone()).collect();
        let mut dep_records = Vec::new();
        if let Some(previous) = &previous {
            let previous_inputs = self.db.eval_inputs(&[previous.id]).await?;
            for input in previous_inputs.get(&previous.id).into_iter().flatten() {
                if input.kind == "build" && !configured.contains(&input.name) {
                    dep_records.push(input.name.clone());
                }
            }
        }
        let inputs_nix = render_inputs(&fetched);
        let mut hash = Sha256::new();
        hash.update(format!("{}\0{}\0", jobset.nixexpr_input, jobset.nixexpr_path));
        hash.update(&inputs_nix);
        for name in &dep_records {
            let latest = self.db.latest_successful_build(jobset.id, name).await?;
            hash.update(format!("\0dep {name}={}", latest.map(|b| b.id).unwrap_or(0)));
        }
        let hash = hex::encode(hash.finalize());
        if !jobset.force_eval && previous.as_ref().is_some_and(|p| p.hash == hash) {
            info!("inputs unchanged since evaluation {}", previous.as_ref().map(|p| p.id).unwrap_or(0));
            self.db.record_eval_unchanged(jobset.id, started).await?;
            return Ok(outcome::UNCHANGED);
        }

        let eval_start = Instant::now();
        let source = JobsSource::File(expr_path);
        let raw = self.evaluate_in(jobset.id, started, source, &fetched, &inputs_nix).await?;
        let eval_time = eval_start.elapsed().as_secs() as i64;
        let resolved = self.resolve(raw).await;
        if let Some(job) = only_job {
            check_only_job(&resolved, job)?;
        }
        let mut eval_inputs: Vec<NewEvalInput> = fetched.iter().map(|i| i.record.clone()).collect();
        for name in resolved.used_deps.iter().filter(|n| !configured.contains(*n)) {
            let latest = self.db.latest_successful_build(jobset.id, name).await?;
            eval_inputs.push(NewEvalInput {
                name: name.clone(),
                kind: "build".into(),
                value: Some(name.clone()),
                dependency: latest.as_ref().map(|b| b.id),
                path: latest.and_then(|b| b.outputs.first().map(|(_, p)| p.clone())),
                ..Default::default()
            });
        }
        // The hash is recomputed over the deps actually used, so that the
        // next check compares like with like.
        let mut final_hash = Sha256::new();
        final_hash.update(format!("{}\0{}\0", jobset.nixexpr_input, jobset.nixexpr_path));
        final_hash.update(&inputs_nix);
        for record in eval_inputs.iter().filter(|i| i.kind == "build" && !configured.contains(&i.name)) {
            final_hash.update(format!("\0dep {}={}", record.name, record.dependency.unwrap_or(0)));
        }
        let new_eval = NewEval {
            jobset_id: jobset.id,
            started,
            hash: hex::encode(final_hash.finalize()),
            flake: None,
            checkout_time,
            eval_time,
            inputs: eval_inputs,
            jobs: resolved.jobs,
            errors: resolved.errors,
        };
        self.record(new_eval).await
    }

    /// A flake jobset: the reference is locked first, and the locked
    /// reference is what is evaluated, hashed and recorded on the eval, so
    /// that an unchanged flake is not evaluated again.
    async fn check_flake(&self, due: &DueJobset, started: i64) -> Result<&'static str, EvalFailure> {
        let jobset = &due.jobset;
        let reference = jobset.flake.as_deref().filter(|f| !f.is_empty()).ok_or(EvalFailure::NoFlake)?;
        // Checked again: the allowed roots may have changed since it was
        // saved. What Nix is given is the checked reference (a bare path
        // becomes `path:` at its real location).
        let reference = self
            .fetcher
            .check_flake(reference)
            .map_err(|refused| EvalFailure::FlakeRefused { reference: reference.to_owned(), refused })?;
        let reference = reference.as_str();
        let fetch_start = Instant::now();
        let timeout = Duration::from_secs(self.config.evaluator.timeout_secs);
        let fetch_failed = async |message: String| -> Result<&'static str, EvalFailure> {
            info!("{message}");
            self.db.record_fetch_error(jobset.id, started, &message).await?;
            Ok(outcome::FETCH_FAILED)
        };
        // Its inputs may name this machine's files too: checked from its
        // lock file before Nix fetches any of them.
        let source = match self.nix.fetch_flake_source(reference, timeout).await {
            Ok(source) => source,
            Err(e) => return fetch_failed(format!("cannot fetch the flake {reference}: {e}")).await,
        };
        if let Some(error) = self.refused_input(&source.inputs) {
            return fetch_failed(format!("the flake {reference}: {error}")).await;
        }
        let locked = match self.nix.lock_flake(reference, timeout).await {
            Ok(locked) => locked,
            Err(e) => return fetch_failed(format!("cannot fetch the flake {reference}: {e}")).await,
        };
        // What was locked must be what was checked: a server that serves
        // another tree (and lock) the second time gains nothing.
        if locked.nar_hash.as_ref().is_some_and(|hash| *hash != source.nar_hash) {
            return fetch_failed(format!(
                "the flake {reference} changed while it was being checked; it is checked again at the next evaluation"
            ))
            .await;
        }
        // What Nix locked (inputs missing from flake.lock included) and the
        // locked reference itself obey the same rule before evaluation.
        let locked_url = self.fetcher.check_flake(&locked.url).err().map(|refused| refused.to_string());
        if let Some(error) = locked_url.or_else(|| self.refused_input(&locked.inputs)) {
            return fetch_failed(format!("the flake {reference}: {error}")).await;
        }
        let checkout_time = fetch_start.elapsed().as_secs() as i64;
        let hash = hex::encode(Sha256::digest(format!("flake\0{}", locked.url)));
        let previous = self.db.last_eval(jobset.id).await?;
        if !jobset.force_eval && previous.as_ref().is_some_and(|p| p.hash == hash) {
            info!(flake = %locked.url, "flake unchanged since evaluation {}", previous.map(|p| p.id).unwrap_or(0));
            self.db.record_eval_unchanged(jobset.id, started).await?;
            return Ok(outcome::UNCHANGED);
        }
        let eval_start = Instant::now();
        let source = JobsSource::Flake(locked.url.clone());
        let raw = self.evaluate_in(jobset.id, started, source, &[], &render_inputs(&[])).await?;
        let resolved = self.resolve(raw).await;
        let new_eval = NewEval {
            jobset_id: jobset.id,
            started,
            hash,
            flake: Some(locked.url),
            checkout_time,
            eval_time: eval_start.elapsed().as_secs() as i64,
            inputs: Vec::new(),
            jobs: resolved.jobs,
            errors: resolved.errors,
        };
        self.record(new_eval).await
    }

    /// Why an input a flake's lock names is refused, if one is (the
    /// first, with its name).
    fn refused_input(&self, inputs: &[crate::nix::LockInput]) -> Option<String> {
        inputs.iter().find_map(|input| {
            let error = match &input.reference {
                Ok(None) => return None,
                Ok(Some(reference)) => self.fetcher.check_flake(reference).err()?.to_string(),
                Err(error) => error.clone(),
            };
            Some(format!("its input ‘{}’ is refused: {error}", input.node))
        })
    }

    /// Jobs as recorded: checked against their derivations, then with
    /// Hydra's semantics (aggregates, defaults) applied.
    async fn resolve(&self, raw: instantiate::RawJobs) -> jobs::ResolvedJobs {
        let clock = Instant::now();
        let read_during_evaluation = raw.made.len();
        let raw = untrusted::check(&self.nix, raw).await;
        info!(
            jobs = raw.jobs.len(),
            read_during_evaluation,
            check_ms = clock.elapsed().as_millis() as u64,
            "jobs checked against their derivations"
        );
        let defaults = JobDefaults {
            timeout: self.config.queue.default_timeout_secs as i64,
            max_silent: self.config.queue.default_max_silent_secs as i64,
        };
        jobs::resolve(raw.jobs, raw.errors, defaults)
    }

    /// Records an evaluation with its builds and wakes the queue runner.
    async fn record(&self, new_eval: NewEval) -> Result<&'static str, EvalFailure> {
        // The derivations and outputs were rooted as the jobs were reported
        // (`rooter.rs`), so that a collection while they build cannot take
        // them.
        let clock = Instant::now();
        let recorded = self.db.record_eval(&new_eval).await?;
        let record_ms = clock.elapsed().as_millis() as u64;
        if let Some(gc) = &self.gc {
            gc.wake();
        }
        info!(
            eval = recorded.eval_id,
            jobs = new_eval.jobs.len(),
            new_builds = recorded.new_builds.len(),
            errors = new_eval.errors.len(),
            record_ms,
            previous_ms = recorded.phases.previous_ms,
            builds_ms = recorded.phases.builds_ms,
            outputs_ms = recorded.phases.outputs_ms,
            members_ms = recorded.phases.members_ms,
            rest_ms = recorded.phases.rest_ms,
            commit_ms = recorded.phases.commit_ms,
            "evaluation recorded"
        );
        if !recorded.new_builds.is_empty() {
            self.queue_wake.wake();
            // Once the builds are queued: what recording left for later.
            self.merge_search_index(Some(recorded.eval_id)).await;
        }
        Ok(outcome::EVALUATED)
    }

    /// Brings the search index up to date with the builds recorded (see
    /// `db/search_index.rs`); a failure is retried after the next
    /// evaluation, and a search finds the builds meanwhile.
    async fn merge_search_index(&self, eval: Option<i64>) {
        match self.db.merge_search_index().await {
            Ok(took) => info!(eval, ms = took.as_millis() as u64, "search index merged"),
            Err(e) => warn!(eval, "cannot bring the search index up to date: {e}"),
        }
    }

    /// Writes the evaluation's files in a scratch directory of its own,
    /// runs the backend, and removes the directory.
    async fn evaluate_in(
        &self,
        jobset_id: i64,
        started: i64,
        source: JobsSource,
        fetched: &[FetchedInput],
        inputs_nix: &str,
    ) -> Result<instantiate::RawJobs, EvalFailure> {
        let work_dir = self.config.scratch_dir().join(format!("eval-{jobset_id}-{started}"));
        let progress = Arc::new(progress::EvalProgress::default());
        // The progress is written on the jobset while the evaluation runs
        // (the recording loop never ends on its own).
        let showing = progress::record(self.db.clone(), jobset_id, progress.clone());
        let evaluating = self.evaluate_with_files(&work_dir, jobset_id, source, fetched, inputs_nix, progress);
        let result = tokio::select! {
            result = evaluating => result,
            () = showing => unreachable!("the progress is recorded until the evaluation ends"),
        };
        let _ = tokio::fs::remove_dir_all(&work_dir).await;
        result
    }

    async fn evaluate_with_files(
        &self,
        work_dir: &Path,
        jobset_id: i64,
        source: JobsSource,
        fetched: &[FetchedInput],
        inputs_nix: &str,
        progress: Arc<progress::EvalProgress>,
    ) -> Result<instantiate::RawJobs, EvalFailure> {
        let io = |source: std::io::Error| EvalFailure::Workspace { dir: work_dir.to_owned(), source };
        tokio::fs::create_dir_all(work_dir).await.map_err(io)?;
        tokio::fs::write(work_dir.join("wrapper.nix"), WRAPPER_NIX).await.map_err(io)?;
        tokio::fs::write(work_dir.join("inputs.nix"), inputs_nix).await.map_err(io)?;
        let deps = self.db.latest_successful_builds(jobset_id).await?;
        let deps_nix = NixValue::Attrs(
            deps.iter().filter_map(|b| build_argument(b).ok().map(|value| (b.job.clone(), value))).collect(),
        )
        .render();
        tokio::fs::write(work_dir.join("deps.nix"), deps_nix).await.map_err(io)?;

        let mut search_path: Vec<(String, PathBuf)> = vec![("orthrus-eval".into(), work_dir.to_owned())];
        search_path.extend(
            fetched.iter().filter_map(|i| {
                i.readable_path.as_ref().map(|p: &StorePath| (i.name.clone(), PathBuf::from(p.as_str())))
            }),
        );
        let evaluator = &self.config.evaluator;
        let workspace = instantiate::Workspace {
            dir: work_dir.to_owned(),
            jobs: source,
            search_path,
            memory_cap_mb: evaluator.worker_memory_mb,
            deadline: Instant::now() + Duration::from_secs(evaluator.timeout_secs),
            gc_roots: self.gc.clone(),
            progress,
        };
        if self.use_nix_eval_jobs && matches!(workspace.jobs, JobsSource::File(_)) {
            match nix_eval_jobs::evaluate(&self.nix, &workspace, evaluator.workers, evaluator.worker_memory_mb).await {
                Ok(raw) => return Ok(raw),
                Err(e) => {
                    warn!("nix-eval-jobs could not evaluate, using nix-instantiate workers: {e}")
                }
            }
        }
        instantiate::evaluate(&self.nix, workspace, evaluator.workers).await.map_err(EvalFailure::Evaluator)
    }
}

/// The generator of a declarative project must make its one job and
/// nothing else (Hydra's rule), or its output could not be told apart.
fn check_only_job(resolved: &jobs::ResolvedJobs, job: &str) -> Result<(), EvalFailure> {
    let names: Vec<&str> = resolved.jobs.iter().map(|j| j.name.as_str()).collect();
    if names == [job] {
        return Ok(());
    }
    Err(EvalFailure::NotOnlyJob {
        job: job.to_owned(),
        found: if names.is_empty() { "none".to_owned() } else { names.join(", ") },
        why: match resolved.errors.first() {
            Some((name, error)) => format!(" (‘{name}’ failed to evaluate: {error})"),
            None => String::new(),
        },
    })
}

/// `inputs.nix`: the fetched inputs as one attribute set.
fn render_inputs(inputs: &[FetchedInput]) -> String {
    let mut sorted: Vec<&FetchedInput> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    NixValue::Attrs(sorted.into_iter().map(|i| (i.name.clone(), i.value.clone())).collect()).render()
}
