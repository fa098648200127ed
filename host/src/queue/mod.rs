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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::db::{Db, FinishedBuild, NewStep, now};
use crate::domain::{BuildStatus, StepStatus, Wake};
use crate::logs::LogStore;
use crate::machines::{Machine, Machines, StepOutcome, StepRequest};
use crate::metrics::Metrics;
use crate::nix::{Nix, StorePath};
use graph::{Graph, StepState, TrackedBuild};
use record::{record_successes, report_finished};
pub use results::{BuildResults, ProductLine, parse_metric_line, read_build_results};
use run_step::{StepContext, run_step};
use scheduler::{JobsetId, MachineLoad, Runnable};
use shares::Shares;

/// The queue is re-read at least this often, in case a wake-up was missed.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

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
        loop {
            // Re-reading the queue is only needed when someone changed it;
            // a finished step only changes what this runner already knows.
            if stale {
                if let Err(e) = self.sync().await {
                    warn!("cannot read the queue: {e}");
                }
                stale = false;
            }
            self.dispatch();
            self.record_successes();
            let timer = self.next_timer().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = wake.woken() => stale = true,
                _ = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {}
                _ = tokio::time::sleep(RESYNC_INTERVAL) => stale = true,
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

    /// Brings the in-memory queue in line with the database's unfinished builds.
    async fn sync(&mut self) -> Result<(), crate::db::DbError> {
        let queued = self.db.queued_builds().await?;
        let queued_ids: HashSet<i64> = queued.iter().map(|b| b.id).collect();

        // Builds finished behind our back (cancelled by a user) leave the queue.
        let gone: Vec<i64> = self.graph.build_ids().filter(|id| !queued_ids.contains(id)).collect();
        for id in gone {
            self.graph.remove_build(id);
        }
        self.cancel_unneeded_steps();

        let mut new = Vec::new();
        let mut reranked = false;
        for build in queued {
            if self.graph.has_build(build.id) {
                reranked |= self.graph.update_priority(build.id, build.global_priority);
            } else if !self.being_recorded.contains(&build.id) {
                new.push(build);
            }
        }
        if reranked {
            // Rare (a user bumped a build): rank everything runnable again.
            let now = Instant::now();
            let drvs: Vec<StorePath> = self.runnable.drvs().cloned().collect();
            for drv in drvs {
                if let Some(step) = self.graph.rank(&drv, now) {
                    self.runnable.insert(step);
                }
            }
        }
        match self.db.jobset_shares().await {
            Ok(shares) => self.shares.set_shares(shares),
            Err(e) => warn!("cannot read the jobsets' scheduling shares: {e}"),
        }
        if new.is_empty() {
            return Ok(());
        }
        debug!(builds = new.len(), "adding builds to the queue");
        let shared = match graph::expand(
            &self.nix,
            &self.db,
            &mut self.graph,
            &new,
            graph::Substitutes::from_config(self.config.queue.use_substitutes),
        )
        .await
        {
            Ok(shared) => shared,
            Err(e) => {
                // Nix itself could not be asked: try again at the next sync.
                warn!("cannot read the derivations of {} new builds: {e}", new.len());
                for build in &new {
                    self.graph.remove_build(build.id);
                }
                self.prune_unneeded();
                return Ok(());
            }
        };
        // Runnable steps the new builds share with earlier ones may be more
        // urgent now.
        let now = Instant::now();
        for drv in shared {
            if self.runnable.contains(&drv) {
                if let Some(step) = self.graph.rank(&drv, now) {
                    self.runnable.insert(step);
                }
            }
        }
        // Builds with nothing left to build finish at once.
        for build in &new {
            if self.graph.is_complete(build.id) {
                self.finish_successful(build.id);
            }
        }
        // Cached failures and unreadable derivations fail their builds at once.
        for (drv, code, message) in self.graph.fails_at_once() {
            self.step_failed(&drv, code, message, None);
        }
        Ok(())
    }

    /// Gives free machine slots to the most urgent runnable steps, and
    /// fails the steps no machine can build once they waited long enough.
    /// How long it takes is a metric (`orthrus_queue_scheduling_pass_seconds`).
    fn dispatch(&mut self) {
        let started = Instant::now();
        self.dispatch_pass();
        self.metrics.scheduling_pass(started.elapsed());
    }

    fn dispatch_pass(&mut self) {
        let now = Instant::now();
        for drv in self.graph.take_ready() {
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
            return;
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
        for assignment in self.runnable.pass(&mut loads, &mut usage) {
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
    }

    /// Starts one step on one machine.
    fn start_step(&mut self, drv: StorePath, machine: &Arc<Machine>) {
        let Some(primary) = self.graph.primary_build(&drv) else {
            // No build needs it any more.
            self.graph.remove_step(&drv);
            return;
        };
        let Some(derivation) = self.graph.derivation(&drv) else { return };
        self.graph.set_state(&drv, StepState::Running);
        let (cancel, cancelled) = oneshot::channel();
        let request = StepRequest {
            drv: drv.clone(),
            timeout: Duration::from_secs(primary.timeout.max(1) as u64),
            max_silent: Duration::from_secs(primary.max_silent.max(1) as u64),
            max_log_size: self.config.queue.max_log_size,
            max_output_size: self.config.queue.max_output_size,
            derivation: derivation.clone(),
        };
        let step = NewStep {
            kind: crate::db::StepType::Build,
            drv_path: drv.to_string(),
            system: derivation.system.clone(),
            machine: machine.spec.name.clone(),
            status: None,
            error_msg: None,
            propagated_from: None,
        };
        let context = StepContext {
            db: self.db.clone(),
            machines: self.machines.clone(),
            machine: machine.clone(),
            logs: self.logs.clone(),
            metrics: self.metrics.clone(),
        };
        let span = info_span!("step", build = primary.id, drv = %drv, machine = %machine.spec.name);
        let task = self.steps.spawn(run_step(context, primary.id, step, request, cancelled).instrument(span)).id();
        let running = RunningStep {
            task,
            cancel,
            machine: machine.spec.name.clone(),
            jobset: primary.jobset_id,
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
        let affected = self.graph.step_failed(drv);
        self.cancel_unneeded_steps();
        if affected.is_empty() {
            return;
        }
        let ids: Vec<i64> = affected.iter().map(|(id, _)| *id).collect();
        self.being_recorded.extend(ids.iter().copied());
        let (db, metrics, drv) = (self.db.clone(), self.metrics.clone(), drv.to_string());
        self.recording.spawn(async move {
            let time = now();
            let mut results = Vec::with_capacity(affected.len());
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
                    if let Err(e) = db.create_step(build_id, &step).await {
                        warn!(build = build_id, "cannot record the failed step: {e}");
                    }
                }
                results.push(FinishedBuild {
                    is_cached: code == StepStatus::CachedFailure,
                    ..FinishedBuild::ended(build_id, build_status, time, time)
                });
            }
            report_finished(&db, &metrics, &results).await;
            Recorded { ids, success_batch: false }
        });
    }

    /// Queues a build whose steps all succeeded (or that had none) for
    /// recording.
    fn finish_successful(&mut self, build_id: i64) {
        let Some(build) = self.graph.remove_build(build_id) else { return };
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

    /// Cancels running steps that no queued build needs any more (all their
    /// builds were cancelled or failed otherwise), and forgets waiting ones.
    fn cancel_unneeded_steps(&mut self) {
        let unneeded: Vec<StorePath> = self.running.keys().filter(|drv| !self.graph.is_needed(drv)).cloned().collect();
        for drv in unneeded {
            if let Some(running) = self.running.remove(&drv) {
                info!(%drv, "cancelling step: no build needs it any more");
                let _ = running.cancel.send(());
            }
            self.tries.remove(&drv);
            self.graph.remove_step(&drv);
        }
        self.prune_unneeded();
    }

    /// Drops waiting steps no build needs any more, runnable ones included.
    fn prune_unneeded(&mut self) {
        for drv in self.graph.prune_unneeded() {
            self.runnable.remove(&drv);
            self.tries.remove(&drv);
            self.retries.retain(|(_, d)| *d != drv);
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
