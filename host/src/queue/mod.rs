//! The queue runner: turns queued builds into build steps — one per
//! derivation in a build's closure whose outputs are not valid yet — runs
//! the runnable ones in parallel on the machines, and records steps and
//! builds as they finish.
//!
//! The database is the truth: this state is rebuilt from the unfinished
//! builds at every start (so a server killed mid-build resumes where it
//! was) and re-synchronised whenever the evaluator or a user changes the
//! queue (new builds, restarts, cancels, bumps).

mod graph;
mod results;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::db::{Db, FinishedBuild, NewStep, now, status};
use crate::logs::LogStore;
use crate::machines::{LocalMachine, StepOutcome, StepRequest};
use crate::nix::{Nix, StorePath};
use graph::{Graph, StepState};
pub use results::{BuildResults, read_build_results};

/// The queue is re-read at least this often, in case a wake-up was missed.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Shared handle to wake the queue runner after the queue changed.
#[derive(Clone, Default)]
pub struct QueueHandle {
    wake: Arc<Notify>,
}

impl QueueHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn notify(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// What a finished step task reports back to the runner.
struct StepDone {
    drv: StorePath,
    /// The build under which the step was recorded, and its step number.
    recorded: Option<(i64, i32)>,
    outcome: StepOutcome,
}

pub struct QueueRunner {
    db: Db,
    nix: Nix,
    logs: LogStore,
    config: Arc<Config>,
    handle: QueueHandle,
    machine: Arc<LocalMachine>,
    graph: Graph,
    /// Steps being built, with what is needed to record a cancellation.
    running: HashMap<StorePath, (tokio::task::AbortHandle, Option<(i64, i32)>)>,
    tasks: JoinSet<StepDone>,
}

impl QueueRunner {
    pub fn new(
        db: Db,
        nix: Nix,
        logs: LogStore,
        config: Arc<Config>,
        handle: QueueHandle,
        machine: LocalMachine,
    ) -> Self {
        QueueRunner {
            db,
            nix,
            logs,
            config,
            handle,
            machine: Arc::new(machine),
            graph: Graph::default(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Runs until the task is dropped (which kills running builds).
    pub async fn run(mut self) {
        match self.db.abort_busy_steps().await {
            Ok(0) => {}
            Ok(n) => {
                info!("{n} build steps were interrupted by the last shutdown; they will run again")
            }
            Err(e) => warn!("cannot mark interrupted steps: {e}"),
        }
        let wake = self.handle.notify();
        loop {
            if let Err(e) = self.sync().await {
                warn!("cannot read the queue: {e}");
            }
            self.dispatch().await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(done) => self.step_finished(done).await,
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => warn!("a build step task failed: {e}"),
                    }
                    // Handle every step that finished meanwhile before re-reading the queue.
                    while let Some(done) = self.tasks.try_join_next() {
                        if let Ok(done) = done {
                            self.step_finished(done).await;
                        }
                    }
                }
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
        self.cancel_unneeded_steps().await;

        let mut new = Vec::new();
        for build in queued {
            if self.graph.has_build(build.id) {
                self.graph.update_priority(build.id, build.global_priority);
            } else {
                new.push(build);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        debug!(builds = new.len(), "adding builds to the queue");
        if let Err(e) = graph::expand(&self.nix, &self.db, &mut self.graph, &new).await {
            // Nix itself could not be asked: try again at the next sync.
            warn!("cannot read the derivations of {} new builds: {e}", new.len());
            for build in &new {
                self.graph.remove_build(build.id);
            }
            self.graph.prune_unneeded();
            return Ok(());
        }
        // Builds with nothing left to build finish at once.
        for build in &new {
            if self.graph.is_complete(build.id) {
                self.finish_successful(build.id).await;
            }
        }
        // Cached failures and unreadable derivations fail their builds at once.
        for (drv, code, message) in self.graph.fails_at_once() {
            self.step_failed(&drv, code, message, None).await;
        }
        Ok(())
    }

    /// Starts runnable steps while there are free slots.
    async fn dispatch(&mut self) {
        while self.running.len() < self.config.queue.max_jobs {
            let Some(drv) = self.graph.next_runnable() else {
                break;
            };
            let step = self.graph.step(&drv).expect("runnable step exists");
            let system = step.derivation.system.clone();
            if !self.machine.supports(&system) {
                let message = format!(
                    "unsupported system type ‘{system}’: no machine builds for it (this one builds {})",
                    self.machine.systems().join(", ")
                );
                self.step_failed(&drv, status::UNSUPPORTED, message, None).await;
                continue;
            }
            let Some(primary) = self.graph.primary_build(&drv) else {
                // No build needs it any more.
                self.graph.remove_step(&drv);
                continue;
            };
            self.graph.set_state(&drv, StepState::Running);
            let recorded = match self
                .db
                .create_step(
                    primary.id,
                    &NewStep {
                        drv_path: drv.to_string(),
                        system: system.clone(),
                        machine: self.machine.name().to_owned(),
                        status: None,
                        error_msg: None,
                        propagated_from: None,
                    },
                )
                .await
            {
                Ok(step_nr) => Some((primary.id, step_nr)),
                Err(e) => {
                    warn!("cannot record a step of build {}: {e}", primary.id);
                    None
                }
            };
            let request = StepRequest {
                drv: drv.clone(),
                timeout: Duration::from_secs(primary.timeout.max(1) as u64),
                max_silent: Duration::from_secs(primary.max_silent.max(1) as u64),
                max_log_size: self.config.queue.max_log_size,
            };
            let (machine, logs, db) = (self.machine.clone(), self.logs.clone(), self.db.clone());
            let span = info_span!("step", build = primary.id, drv = %drv);
            let abort = self.tasks.spawn(
                async move {
                    let outcome = machine.build(&request, &logs).await;
                    if let Some((build_id, step_nr)) = recorded {
                        let (code, message) = outcome.status_and_message();
                        let outputs: Vec<(String, String)> =
                            if code == status::SUCCESS { outcome.outputs() } else { Vec::new() };
                        if let Err(e) = db.finish_step(build_id, step_nr, code, message.as_deref(), &outputs).await {
                            warn!("cannot record the end of the step: {e}");
                        }
                    }
                    StepDone { drv: request.drv, recorded, outcome }
                }
                .instrument(span),
            );
            self.running.insert(drv, (abort, recorded));
        }
    }

    async fn step_finished(&mut self, done: StepDone) {
        self.running.remove(&done.drv);
        let (code, message) = done.outcome.status_and_message();
        if code == status::SUCCESS {
            for build_id in self.graph.step_succeeded(&done.drv) {
                self.finish_successful(build_id).await;
            }
        } else {
            if code == status::FAILED {
                // A deterministic failure: not rebuilt until a user restarts it.
                if let Err(e) = self.db.add_failed_path(done.drv.as_str()).await {
                    warn!("cannot cache the failure of {}: {e}", done.drv);
                }
            }
            let message = message.unwrap_or_else(|| status::describe(code).to_owned());
            self.step_failed(&done.drv, code, message, done.recorded.map(|r| r.0)).await;
        }
    }

    /// Fails every build that needs `drv`: the build whose own derivation it
    /// is gets the step's status, the others "dependency failed" (for a
    /// build failure) or the same status (a timeout stays a timeout).
    async fn step_failed(&mut self, drv: &StorePath, code: i32, message: String, recorded_in: Option<i64>) {
        let affected = self.graph.step_failed(drv);
        let time = now();
        for (build_id, is_top) in affected {
            let build_status = if is_top || !matches!(code, status::FAILED | status::CACHED_FAILURE) {
                if code == status::CACHED_FAILURE { status::FAILED } else { code }
            } else {
                status::DEP_FAILED
            };
            if recorded_in != Some(build_id) {
                // The step shows on every build it failed, pointing to where it ran.
                let step = NewStep {
                    drv_path: drv.to_string(),
                    system: self.graph.system_of(drv).unwrap_or_default(),
                    machine: String::new(),
                    status: Some(code),
                    error_msg: Some(message.clone()),
                    propagated_from: recorded_in,
                };
                if let Err(e) = self.db.create_step(build_id, &step).await {
                    warn!(build = build_id, "cannot record the failed step: {e}");
                }
            }
            let start_time = self.db.build(build_id).await.ok().flatten().and_then(|b| b.start_time).unwrap_or(time);
            let result = FinishedBuild {
                id: build_id,
                status: build_status,
                is_cached: code == status::CACHED_FAILURE,
                start_time,
                stop_time: time,
                ..Default::default()
            };
            match self.db.finish_build(&result).await {
                Ok(true) => info!(build = build_id, status = status::describe(build_status), "build finished"),
                Ok(false) => {}
                Err(e) => warn!(build = build_id, "cannot record the end of the build: {e}"),
            }
        }
        self.cancel_unneeded_steps().await;
    }

    /// Records a build whose steps all succeeded (or that had none): its
    /// outputs, products, metrics, release name and sizes.
    async fn finish_successful(&mut self, build_id: i64) {
        let Some(info) = self.graph.remove_build(build_id) else {
            return;
        };
        let time = now();
        let outputs =
            self.db.outputs_of(&[build_id]).await.ok().and_then(|mut m| m.remove(&build_id)).unwrap_or_default();
        let read = {
            let outputs = outputs.clone();
            tokio::task::spawn_blocking(move || read_build_results(&outputs)).await.unwrap_or_default()
        };
        let paths: Vec<StorePath> = outputs.iter().filter_map(|(_, p)| StorePath::parse(p).ok()).collect();
        let size = match self.nix.nar_sizes(&paths).await {
            Ok(sizes) => Some(sizes.iter().sum::<u64>() as i64),
            Err(e) => {
                warn!(build = build_id, "cannot read output sizes: {e}");
                None
            }
        };
        let closure_size = self.nix.closure_size(&paths).await.ok().map(|s| s as i64);
        let mut code = if read.failed { status::FAILED_WITH_OUTPUT } else { status::SUCCESS };
        if size.is_some_and(|s| s as u64 > self.config.queue.max_output_size) {
            code = status::OUTPUT_LIMIT_EXCEEDED;
        }
        let start_time = self.db.build(build_id).await.ok().flatten().and_then(|b| b.start_time);
        let result = FinishedBuild {
            id: build_id,
            status: code,
            is_cached: info.never_started,
            start_time: start_time.unwrap_or(time),
            stop_time: time,
            size,
            closure_size,
            release_name: read.release_name,
            products: read.products,
            metrics: read.metrics,
        };
        match self.db.finish_build(&result).await {
            Ok(true) => {
                info!(build = build_id, job = %info.job, status = status::describe(code), "build finished")
            }
            Ok(false) => {}
            Err(e) => warn!(build = build_id, "cannot record the end of the build: {e}"),
        }
    }

    /// Aborts running steps that no queued build needs any more (all their
    /// builds were cancelled or failed otherwise).
    async fn cancel_unneeded_steps(&mut self) {
        let unneeded: Vec<StorePath> = self.running.keys().filter(|drv| !self.graph.is_needed(drv)).cloned().collect();
        for drv in unneeded {
            if let Some((abort, recorded)) = self.running.remove(&drv) {
                abort.abort();
                info!(%drv, "step cancelled: no build needs it any more");
                if let Some((build_id, step_nr)) = recorded {
                    let _ = self.db.finish_step(build_id, step_nr, status::CANCELLED, Some("cancelled"), &[]).await;
                }
            }
            self.graph.remove_step(&drv);
        }
        self.graph.prune_unneeded();
    }
}
