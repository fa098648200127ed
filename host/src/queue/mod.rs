//! The queue runner: turns queued builds into build steps — one per
//! derivation in a build's closure whose outputs are not valid yet — hands
//! the runnable ones to the machines as the scheduler (`scheduler`, with
//! the jobsets' `shares`) decides, and records steps and builds as they
//! finish. A machine that fails gives its step back to the queue; a step
//! that failed for a passing reason is tried again a few times.
//!
//! The database is the truth: this state is rebuilt from the unfinished
//! builds at every start (so a server killed mid-build resumes where it
//! was) and re-synchronised whenever the evaluator or a user changes the
//! queue (new builds, restarts, cancels, bumps).
//!
//! The runner's own loop only updates the in-memory graph and starts
//! tasks: steps run, and finished builds are recorded, in tasks of their
//! own, so that recording one build never holds up the start of the next.

mod graph;
mod record;
mod results;
mod run_step;
pub mod scheduler;
pub mod shares;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::db::{Db, FinishedBuild, NewStep, QueuedBuild, now};
use crate::domain::{BuildStatus, StepStatus, Wake};
use crate::logs::LogStore;
use crate::machines::{Machine, Machines, StepOutcome, StepRequest};
use crate::metrics::Metrics;
use crate::nix::{Nix, StorePath};
use graph::{Graph, StepState, TrackedBuild};
use record::{record_successes, report_finished};
pub use results::{BuildResults, ProductLine, parse_metric_line, read_build_results};
use run_step::{StepContext, StepLimits, run_step};
use scheduler::{JobsetId, MachineLoad, Runnable};
use shares::Shares;

/// The queue is re-read at least this often, in case a wake-up was missed.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Steps that became runnable ranked per scheduling pass: a loaded chunk
/// or a shared step's success can make thousands runnable at once, and a
/// pass stays short (the rest are ranked in the turns right after).
const RANK_PER_PASS: usize = 500;

/// A pass longer than this is logged, with what it did.
const SLOW_PASS: Duration = Duration::from_millis(10);

/// Queued builds added to the graph per turn of the runner's loop: a
/// queue of a hundred thousand builds loads a chunk at a time, the most
/// urgent first, and the first chunk's steps build while the rest loads.
const LOAD_CHUNK: usize = 1000;

/// Shared handle to wake the queue runner after the queue changed.
#[derive(Clone, Default)]
pub struct QueueHandle {
    wake: Wake,
}

impl QueueHandle {
    /// Wakes the queue runner, in this process or the one that runs it.
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// What wakes it (the evaluator's, and the cluster's, handle on it).
    pub fn notify(&self) -> Wake {
        self.wake.clone()
    }
}

/// What a finished step task reports back to the runner.
struct StepDone {
    drv: StorePath,
    /// The build under which the step was recorded.
    recorded_in: Option<i64>,
    /// `None` when the step was cancelled.
    outcome: Option<StepOutcome>,
}

/// A step running on a machine.
struct RunningStep {
    /// Its task: a result from an earlier run of the same derivation
    /// (cancelled, then started again) is told apart by it.
    task: tokio::task::Id,
    cancel: oneshot::Sender<()>,
    machine: String,
    jobset: JobsetId,
    started: Instant,
}

pub struct QueueRunner {
    db: Db,
    nix: Nix,
    logs: LogStore,
    config: Arc<Config>,
    handle: QueueHandle,
    machines: Arc<Machines>,
    metrics: Arc<Metrics>,
    graph: Graph,
    /// Queued builds not in the graph yet, the most urgent first.
    loading: VecDeque<QueuedBuild>,
    /// When the current load began, and how many builds it had.
    load_started: Option<(Instant, usize)>,
    /// Steps waiting for a machine.
    runnable: Runnable,
    /// Build time per jobset over the last day, for fair shares.
    shares: Shares,
    /// Running steps, with the means to cancel each.
    running: HashMap<StorePath, RunningStep>,
    /// Tries so far of steps that failed for a passing reason.
    tries: HashMap<StorePath, u32>,
    /// Steps waiting to be tried again, and when.
    retries: Vec<(Instant, StorePath)>,
    /// When the next step waiting for an unsupported system times out.
    unsupported_deadline: Option<Instant>,
    steps: JoinSet<StepDone>,
    /// Builds whose end is being written to the database: finished for
    /// the graph, still unfinished in the database for a moment.
    recording: JoinSet<Recorded>,
    being_recorded: HashSet<i64>,
    /// Successful builds waiting to be recorded together. Like a group
    /// commit: a success is recorded at once when no batch is being
    /// written, and those that finish meanwhile form the next batch (each
    /// batch costs two calls of Nix, whatever its size). Under load batches
    /// grow by themselves; alone, a build is recorded without waiting.
    successes: Vec<TrackedBuild>,
    success_batch_running: bool,
}

/// What a recording task reports back: the builds it wrote.
struct Recorded {
    ids: Vec<i64>,
    success_batch: bool,
}

impl QueueRunner {
    pub fn new(
        db: Db,
        nix: Nix,
        logs: LogStore,
        config: Arc<Config>,
        handle: QueueHandle,
        machines: Arc<Machines>,
        metrics: Arc<Metrics>,
    ) -> Self {
        QueueRunner {
            db,
            nix,
            logs,
            config,
            handle,
            machines,
            metrics,
            graph: Graph::default(),
            loading: VecDeque::new(),
            load_started: None,
            runnable: Runnable::default(),
            shares: Shares::default(),
            running: HashMap::new(),
            tries: HashMap::new(),
            retries: Vec::new(),
            unsupported_deadline: None,
            steps: JoinSet::new(),
            recording: JoinSet::new(),
            being_recorded: HashSet::new(),
            successes: Vec::new(),
            success_batch_running: false,
        }
    }

    /// Runs until the task is dropped (which kills running builds).
    pub async fn run(mut self) {
        match self.db.abort_busy_steps().await {
            Ok(0) => {}
            Ok(n) => info!("{n} build steps were interrupted by the last shutdown; they will run again"),
            Err(e) => warn!("cannot mark interrupted steps: {e}"),
        }
        self.load_shares().await;
        let wake = self.handle.notify();
        let mut stale = true;
        let mut resync_at = tokio::time::Instant::now();
        loop {
            // Re-reading the queue is only needed when someone changed it;
            // a finished step only changes what this runner already knows.
            if stale {
                if let Err(e) = self.sync().await {
                    warn!("cannot read the queue: {e}");
                }
                stale = false;
                resync_at = tokio::time::Instant::now() + RESYNC_INTERVAL;
            }
            self.load_some().await;
            self.dispatch();
            self.record_successes();
            let timer = self.next_timer().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = wake.woken() => stale = true,
                // More of the queue to load, or runnable steps to rank: a
                // turn at once, after whatever else is ready.
                _ = std::future::ready(()), if !self.loading.is_empty() || self.graph.has_ready() => {}
                _ = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {}
                _ = tokio::time::sleep_until(resync_at) => stale = true,
                Some(done) = self.steps.join_next_with_id(), if !self.steps.is_empty() => {
                    self.handle_step_result(done);
                    // Every step that finished meanwhile, before starting others.
                    while let Some(done) = self.steps.try_join_next_with_id() {
                        self.handle_step_result(done);
                    }
                }
                Some(done) = self.recording.join_next(), if !self.recording.is_empty() => {
                    match done {
                        Ok(recorded) => {
                            self.success_batch_running &= !recorded.success_batch;
                            for id in recorded.ids {
                                self.being_recorded.remove(&id);
                            }
                        }
                        Err(e) => {
                            // The builds stay unfinished in the database and
                            // are picked up again at the next sync.
                            warn!("recording finished builds failed: {e}");
                            self.being_recorded.clear();
                            self.success_batch_running = false;
                            stale = true;
                        }
                    }
                }
            }
        }
    }

    fn handle_step_result(&mut self, done: Result<(tokio::task::Id, StepDone), tokio::task::JoinError>) {
        match done {
            Ok((task, done)) => self.step_finished(task, done),
            Err(e) => {
                // A bug, not the build's fault: the step is tried again.
                warn!("a build step task failed: {e}");
                let Some(drv) = self.running.iter().find(|(_, r)| r.task == e.id()).map(|(drv, _)| drv.clone()) else {
                    return;
                };
                let outcome = StepOutcome::Transient(format!("the step's task failed: {e}"));
                self.step_finished(e.id(), StepDone { drv, recorded_in: None, outcome: Some(outcome) });
            }
        }
    }

    /// Brings the in-memory queue in line with the database's unfinished
    /// builds: those that left it leave the graph, bumps re-rank their
    /// steps, and those not in the graph yet are queued for loading, the
    /// most urgent first (`load_some`).
    async fn sync(&mut self) -> Result<(), crate::db::DbError> {
        let queued = self.db.queued_builds().await?;
        let queued_ids: HashSet<i64> = queued.iter().map(|b| b.id).collect();

        // Builds finished behind our back (cancelled by a user) leave the queue.
        let gone: Vec<i64> = self.graph.build_ids().filter(|id| !queued_ids.contains(id)).collect();
        let unneeded = self.graph.remove_builds(&gone);
        self.release_unneeded(unneeded);

        let mut new = Vec::new();
        let mut bumped = Vec::new();
        for build in queued {
            if self.graph.has_build(build.id) {
                if self.graph.priority_changed(build.id, build.global_priority) {
                    bumped.push((build.id, build.global_priority));
                }
            } else if !self.being_recorded.contains(&build.id) {
                new.push(build);
            }
        }
        if !bumped.is_empty() {
            // Rare (a user bumped builds): their steps are ranked again.
            let reranked = self.graph.update_priorities(&bumped);
            self.rerank(reranked);
        }
        match self.db.jobset_shares().await {
            Ok(shares) => self.shares.set_shares(shares),
            Err(e) => warn!("cannot read the jobsets' scheduling shares: {e}"),
        }
        new.sort_unstable_by_key(graph::load_order);
        if new.is_empty() {
            self.load_started = None;
        } else if self.load_started.is_none() {
            self.load_started = Some((Instant::now(), new.len()));
        }
        self.loading = new.into();
        Ok(())
    }

    /// Adds the next chunk of queued builds to the graph: reads their
    /// derivations, and makes runnable what waits for nothing.
    async fn load_some(&mut self) {
        if self.loading.is_empty() {
            return;
        }
        let chunk: Vec<QueuedBuild> = self.loading.drain(..LOAD_CHUNK.min(self.loading.len())).collect();
        let expanded = match graph::expand(
            &self.nix,
            &self.machines,
            &self.db,
            &mut self.graph,
            &chunk,
            graph::Substitutes::from_config(self.config.queue.use_substitutes),
        )
        .await
        {
            Ok(expanded) => expanded,
            Err(e) => {
                // Nix itself could not be asked: try again at the next sync.
                warn!("cannot read the derivations of {} queued builds: {e}", chunk.len() + self.loading.len());
                let ids: Vec<i64> = chunk.iter().map(|b| b.id).collect();
                let unneeded = self.graph.remove_builds(&ids);
                self.release_unneeded(unneeded);
                let unneeded = self.graph.prune_unneeded();
                self.release_unneeded(unneeded);
                self.loading.clear();
                self.load_started = None;
                return;
            }
        };
        // Runnable steps the new builds share with earlier ones may be more
        // urgent now.
        self.rerank(expanded.reranked);
        // Builds with nothing left to build finish at once.
        for build in &chunk {
            if self.graph.is_complete(build.id) {
                self.finish_successful(build.id);
            }
        }
        // Cached failures and unreadable derivations fail their builds at once.
        for (drv, code, message) in expanded.fails_at_once {
            self.step_failed(&drv, code, message, None);
        }
        if self.loading.is_empty() {
            if let Some((started, builds)) = self.load_started.take() {
                info!(
                    builds,
                    steps = self.graph.step_count(),
                    ms = started.elapsed().as_millis() as u64,
                    "queued builds loaded"
                );
            }
        }
    }

    /// Ranks these steps again where they are runnable.
    fn rerank(&mut self, steps: Vec<StorePath>) {
        let now = Instant::now();
        for drv in steps {
            if self.runnable.contains(&drv) {
                if let Some(step) = self.graph.rank(&drv, now) {
                    self.runnable.insert(step);
                }
            }
        }
    }

    /// Gives free machine slots to the most urgent runnable steps, and
    /// fails the steps no machine can build once they waited long enough.
    /// How long it takes is a metric (`orthrus_queue_scheduling_pass_seconds`).
    fn dispatch(&mut self) {
        let started = Instant::now();
        let (ranked, started_steps) = self.dispatch_pass();
        let took = started.elapsed();
        self.metrics.scheduling_pass(took);
        if took > SLOW_PASS {
            warn!(ranked, started = started_steps, ms = took.as_millis() as u64, "slow scheduling pass");
        }
    }

    /// Returns how many steps it ranked and how many it started.
    fn dispatch_pass(&mut self) -> (usize, usize) {
        let now = Instant::now();
        let ready = self.graph.take_ready(RANK_PER_PASS);
        let ranked = ready.len();
        for drv in ready {
            if let Some(step) = self.graph.rank(&drv, now) {
                self.runnable.insert(step);
            }
        }
        let due: Vec<StorePath> = {
            let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(at, _)| *at <= now);
            self.retries = later;
            due.into_iter().map(|(_, drv)| drv).collect()
        };
        for drv in due {
            if let Some(step) = self.graph.rank(&drv, now) {
                self.runnable.insert(step);
            }
        }
        if self.runnable.is_empty() {
            self.unsupported_deadline = None;
            return (ranked, 0);
        }

        let machines = self.machines.list();
        let mut running_on: HashMap<&str, usize> = HashMap::new();
        for running in self.running.values() {
            *running_on.entry(running.machine.as_str()).or_default() += 1;
        }
        let mut loads: Vec<MachineLoad> = machines
            .iter()
            .map(|m| MachineLoad {
                spec: m.spec.clone(),
                running: running_on.get(m.spec.name.as_str()).copied().unwrap_or(0),
                available: m.is_available(now),
            })
            .collect();
        let mut usage = self
            .shares
            .usage(crate::db::now(), self.running.values().map(|r| (r.jobset, r.started.elapsed().as_secs_f64())));
        let assignments = self.runnable.pass(&mut loads, &mut usage);
        let started = assignments.len();
        for assignment in assignments {
            self.start_step(assignment.drv, &machines[assignment.machine]);
        }

        let timeout = Duration::from_secs(self.config.machines.unsupported_timeout_secs);
        let (expired, next) = self.runnable.unsupported(&loads, now, timeout);
        self.unsupported_deadline = next;
        for drv in expired {
            let kind = self.runnable.kind_of(&drv).cloned();
            self.runnable.remove(&drv);
            let (system, features) = kind
                .map(|k| (k.system, k.required_features.into_iter().collect::<Vec<_>>().join(", ")))
                .unwrap_or_default();
            let builders: Vec<String> =
                machines.iter().map(|m| format!("{} ({})", m.spec.name, m.spec.systems.join(", "))).collect();
            let message = format!(
                "unsupported system type ‘{system}’{}: no machine builds it (machines: {}); waited {} s",
                if features.is_empty() { String::new() } else { format!(" with features {features}") },
                if builders.is_empty() { "none".to_owned() } else { builders.join("; ") },
                timeout.as_secs()
            );
            self.step_failed(&drv, StepStatus::Unsupported, message, None);
        }
        (ranked, started)
    }

    /// Starts one step on one machine.
    fn start_step(&mut self, drv: StorePath, machine: &Arc<Machine>) {
        let Some(primary) = self.graph.primary_build(&drv) else {
            // No build needs it any more.
            self.graph.remove_step(&drv);
            return;
        };
        let (build_id, jobset_id) = (primary.id, primary.jobset_id);
        let limits = StepLimits {
            timeout: Duration::from_secs(primary.timeout.max(1) as u64),
            max_silent: Duration::from_secs(primary.max_silent.max(1) as u64),
            max_log_size: self.config.queue.max_log_size,
            max_output_size: self.config.queue.max_output_size,
        };
        let Some(system) = self.graph.system_of(&drv) else { return };
        self.graph.set_state(&drv, StepState::Running);
        let (cancel, cancelled) = oneshot::channel();
        let step = NewStep {
            kind: crate::db::StepType::Build,
            drv_path: drv.to_string(),
            system,
            machine: machine.spec.name.clone(),
            status: None,
            error_msg: None,
            propagated_from: None,
        };
        let context = StepContext {
            db: self.db.clone(),
            nix: self.nix.clone(),
            machines: self.machines.clone(),
            machine: machine.clone(),
            logs: self.logs.clone(),
            metrics: self.metrics.clone(),
        };
        let span = info_span!("step", build = build_id, drv = %drv, machine = %machine.spec.name);
        let task =
            self.steps.spawn(run_step(context, build_id, step, drv.clone(), limits, cancelled).instrument(span)).id();
        let running = RunningStep {
            task,
            cancel,
            machine: machine.spec.name.clone(),
            jobset: jobset_id,
            started: Instant::now(),
        };
        self.running.insert(drv, running);
    }

    /// When the runner must look again without being woken: a retry is
    /// due, a step for an unsupported system times out, or a machine that
    /// backs off may be used again while steps wait.
    fn next_timer(&self) -> Option<Instant> {
        let retry = self.retries.iter().map(|(at, _)| *at).min();
        let machine = if self.runnable.is_empty() {
            None
        } else {
            self.machines.list().iter().filter_map(|m| m.disabled_until()).filter(|t| *t > Instant::now()).min()
        };
        [retry, self.unsupported_deadline, machine].into_iter().flatten().min()
    }

    /// Reads the last day's build time per jobset.
    async fn load_shares(&mut self) {
        match self.db.step_history(now() - shares::WINDOW_SECS).await {
            Ok(steps) => {
                for (jobset, stop, seconds) in steps {
                    self.shares.record(jobset, stop, seconds as f64);
                }
            }
            Err(e) => warn!("cannot read the last day's build steps for fair shares: {e}"),
        }
    }

    fn step_finished(&mut self, task: tokio::task::Id, done: StepDone) {
        if self.running.get(&done.drv).is_none_or(|running| running.task != task) {
            // An earlier run of the step, cancelled since.
            return;
        }
        let Some(running) = self.running.remove(&done.drv) else { return };
        self.shares.record(running.jobset, now(), running.started.elapsed().as_secs_f64());
        let Some(outcome) = done.outcome else { return };
        if let StepOutcome::MachineFailed(message) | StepOutcome::Transient(message) = &outcome {
            // Not the build's fault: tried again (elsewhere, if the machine
            // failed), a bounded number of times so that a step that kills
            // every machine it touches does not go round for ever.
            let tries = self.tries.entry(done.drv.clone()).or_insert(0);
            *tries += 1;
            let tries = *tries;
            let max_tries = self.config.machines.max_tries;
            let machine_failed = matches!(outcome, StepOutcome::MachineFailed(_));
            if let Some(delay) = retry_delay(tries, max_tries, machine_failed, self.config.machines.retry_delay_secs) {
                info!(drv = %done.drv, "try {tries} of {max_tries} failed, again in {delay} s: {message}");
                self.requeue(&done.drv, Instant::now() + Duration::from_secs(delay));
                return;
            }
            let message = format!("{message} (failed {max_tries} tries)");
            self.tries.remove(&done.drv);
            self.step_failed(&done.drv, StepStatus::Aborted, message, done.recorded_in);
            return;
        }
        self.tries.remove(&done.drv);
        let (code, message) = outcome.status_and_message();
        if code == StepStatus::Succeeded {
            for build_id in self.graph.step_succeeded(&done.drv) {
                self.finish_successful(build_id);
            }
        } else {
            let message = message.unwrap_or_else(|| code.describe().to_owned());
            if code == StepStatus::Failed {
                // A deterministic failure: not rebuilt until a user restarts it.
                let (db, drv) = (self.db.clone(), done.drv.to_string());
                self.recording.spawn(async move {
                    if let Err(e) = db.add_failed_path(&drv).await {
                        warn!("cannot cache the failure of {drv}: {e}");
                    }
                    Recorded { ids: Vec::new(), success_batch: false }
                });
            }
            self.step_failed(&done.drv, code, message, done.recorded_in);
        }
    }

    /// Fails every build that needs `drv`: the build whose own derivation it
    /// is gets the step's status, the others "dependency failed" (for a
    /// build failure) or the same status (a timeout stays a timeout).
    fn step_failed(&mut self, drv: &StorePath, code: StepStatus, message: String, recorded_in: Option<i64>) {
        self.runnable.remove(drv);
        let system = self.graph.system_of(drv).unwrap_or_default();
        let (affected, unneeded) = self.graph.step_failed(drv);
        self.release_unneeded(unneeded);
        if affected.is_empty() {
            return;
        }
        let ids: Vec<i64> = affected.iter().map(|(id, _)| *id).collect();
        self.being_recorded.extend(ids.iter().copied());
        let (db, metrics, drv) = (self.db.clone(), self.metrics.clone(), drv.to_string());
        self.recording.spawn(async move {
            let time = now();
            let mut results = Vec::with_capacity(affected.len());
            let mut steps = Vec::new();
            for (build_id, is_top) in affected {
                let build_status = match code {
                    StepStatus::Failed | StepStatus::CachedFailure if !is_top => BuildStatus::DependencyFailed,
                    StepStatus::CachedFailure => BuildStatus::Failed,
                    other => other,
                };
                if recorded_in != Some(build_id) {
                    // The step shows on every build it failed, pointing to where it ran.
                    let step = NewStep {
                        kind: crate::db::StepType::Build,
                        drv_path: drv.clone(),
                        system: system.clone(),
                        machine: String::new(),
                        status: Some(code),
                        error_msg: Some(message.clone()),
                        propagated_from: recorded_in,
                    };
                    steps.push((build_id, step));
                }
                results.push(FinishedBuild {
                    is_cached: code == StepStatus::CachedFailure,
                    ..FinishedBuild::ended(build_id, build_status, time, time)
                });
            }
            if let Err(e) = db.create_finished_steps(&steps).await {
                warn!("cannot record the failed step {drv} on {} builds: {e}", steps.len());
            }
            report_finished(&db, &metrics, &results).await;
            Recorded { ids, success_batch: false }
        });
    }

    /// Queues a build whose steps all succeeded (or that had none) for
    /// recording.
    fn finish_successful(&mut self, build_id: i64) {
        let Some(build) = self.graph.remove_finished_build(build_id) else { return };
        self.being_recorded.insert(build_id);
        self.successes.push(build);
    }

    /// Records the successful builds gathered so far, unless the previous
    /// batch is still being written (the next batch forms meanwhile).
    fn record_successes(&mut self) {
        if self.successes.is_empty() || self.success_batch_running {
            return;
        }
        self.success_batch_running = true;
        let builds = std::mem::take(&mut self.successes);
        let (db, nix, metrics) = (self.db.clone(), self.nix.clone(), self.metrics.clone());
        let machines = self.machines.clone();
        let max_output_size = self.config.queue.max_output_size;
        self.recording.spawn(async move {
            let ids = builds.iter().map(|b| b.id).collect();
            record_successes(&db, &nix, &machines, &metrics, builds, max_output_size).await;
            Recorded { ids, success_batch: true }
        });
    }

    /// Lets go of steps no queued build needs any more (all their builds
    /// were cancelled or failed otherwise): a running one is cancelled, a
    /// waiting one forgotten (the graph dropped it already).
    fn release_unneeded(&mut self, unneeded: Vec<StorePath>) {
        if unneeded.is_empty() {
            return;
        }
        let released: HashSet<&StorePath> = unneeded.iter().collect();
        self.retries.retain(|(_, drv)| !released.contains(drv));
        for drv in &unneeded {
            self.runnable.remove(drv);
            self.tries.remove(drv);
            if let Some(running) = self.running.remove(drv) {
                info!(%drv, "cancelling step: no build needs it any more");
                let _ = running.cancel.send(());
                self.graph.remove_step(drv);
            }
        }
    }

    /// Puts a step that ran back among the waiting ones, runnable from `at`.
    fn requeue(&mut self, drv: &StorePath, at: Instant) {
        if !self.graph.is_needed(drv) {
            self.graph.remove_step(drv);
            return;
        }
        self.graph.set_state(drv, StepState::Pending);
        self.retries.push((at, drv.clone()));
    }
}

/// Seconds before the next try of a step whose try number `tries` failed
/// for a reason other than the build, or `None` when it has had its
/// `max_tries`. The delay doubles with each try; after a machine failure
/// the first retry is at once (on another machine: the failed one rests).
fn retry_delay(tries: u32, max_tries: u32, machine_failed: bool, base_secs: u64) -> Option<u64> {
    if tries >= max_tries {
        return None;
    }
    if machine_failed && tries == 1 {
        return Some(0);
    }
    let doublings = (tries - 1).saturating_sub(u32::from(machine_failed)).min(16);
    Some(base_secs.saturating_mul(1 << doublings))
}

#[cfg(test)]
mod tests {
    use super::retry_delay;

    #[test]
    fn retries_are_bounded_and_back_off() {
        // A passing failure: 5 s, then 10 s, then no more (3 tries in all).
        assert_eq!(retry_delay(1, 3, false, 5), Some(5));
        assert_eq!(retry_delay(2, 3, false, 5), Some(10));
        assert_eq!(retry_delay(3, 3, false, 5), None);
        // A machine failure: at once elsewhere, then backing off.
        assert_eq!(retry_delay(1, 4, true, 5), Some(0));
        assert_eq!(retry_delay(2, 4, true, 5), Some(5));
        assert_eq!(retry_delay(3, 4, true, 5), Some(10));
        assert_eq!(retry_delay(4, 4, true, 5), None);
        assert_eq!(retry_delay(1, 1, true, 5), None, "max_tries = 1: no retry");
        assert_eq!(retry_delay(40, 100, false, u64::MAX), Some(u64::MAX), "no overflow");
    }
}
