//! One step as a task of its own: recorded as busy, built on its machine
//! with its log written, recorded as done (or cancelled).

use super::*;

/// What a step task needs.
pub(super) struct StepContext {
    pub(super) db: Db,
    pub(super) nix: Nix,
    pub(super) machines: Arc<Machines>,
    pub(super) machine: Arc<Machine>,
    pub(super) logs: LogStore,
    pub(super) metrics: Arc<Metrics>,
}

/// The limits a step runs under (those of the build it runs for).
pub(super) struct StepLimits {
    pub(super) timeout: Duration,
    pub(super) max_silent: Duration,
    pub(super) max_log_size: u64,
    pub(super) max_output_size: u64,
}

/// One step from start to end: recorded as busy, its derivation read,
/// built, recorded as done (or as cancelled, when the runner asks).
pub(super) async fn run_step(
    context: StepContext,
    build_id: i64,
    step: NewStep,
    drv: StorePath,
    limits: StepLimits,
    cancelled: oneshot::Receiver<()>,
) -> StepDone {
    let StepContext { db, nix, machines, machine, logs, metrics } = context;
    let started = std::time::Instant::now();
    let _running = machine.start_step(&drv);
    // The graph keeps no derivations (see `graph::Step`): read it again
    // while the start is recorded.
    let (step_nr, derivation) = tokio::join!(db.create_step(build_id, &step), nix.read_derivation(&drv));
    let step_nr = match step_nr {
        Ok(step_nr) => Some(step_nr),
        Err(e) => {
            warn!("cannot record the start of the step: {e}");
            None
        }
    };
    let outcome = match derivation {
        Err(e) => Some(StepOutcome::Aborted(format!("cannot read the derivation: {e}"))),
        Ok(derivation) => {
            let request = StepRequest {
                drv: drv.clone(),
                derivation: Arc::new(derivation),
                timeout: limits.timeout,
                max_silent: limits.max_silent,
                max_log_size: limits.max_log_size,
                max_output_size: limits.max_output_size,
            };
            tokio::select! {
                outcome = crate::machines::build(&machines, &machine, &request, &logs) => Some(outcome),
                _ = cancelled => None,
            }
        }
    };
    if let Some(step_nr) = step_nr {
        let (code, message, outputs) = match &outcome {
            Some(outcome) => {
                let (code, message) = outcome.status_and_message();
                (code, message, outcome.outputs())
            }
            None => {
                (StepStatus::Cancelled, Some("cancelled: no build needs this step any more".to_owned()), Vec::new())
            }
        };
        if let Err(e) = db.finish_step(build_id, step_nr, code, message.as_deref(), &outputs).await {
            warn!("cannot record the end of the step: {e}");
        }
        metrics.step_finished(machine.name(), code.describe(), started.elapsed());
    }
    StepDone { drv, recorded_in: step_nr.map(|_| build_id), outcome }
}
