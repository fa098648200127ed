//! One step as a task of its own: recorded as busy, built on its machine
//! with its log written, recorded as done (or cancelled).

use super::*;

/// What a step task needs.
pub(super) struct StepContext {
    pub(super) db: Db,
    pub(super) machines: Arc<Machines>,
    pub(super) machine: Arc<Machine>,
    pub(super) logs: LogStore,
    pub(super) metrics: Arc<Metrics>,
}

/// One step from start to end: recorded as busy, built, recorded as done
/// (or as cancelled, when the runner asks).
pub(super) async fn run_step(
    context: StepContext,
    build_id: i64,
    step: NewStep,
    request: StepRequest,
    cancelled: oneshot::Receiver<()>,
) -> StepDone {
    let StepContext { db, machines, machine, logs, metrics } = context;
    let started = std::time::Instant::now();
    let _running = machine.start_step(&request.drv);
    let step_nr = match db.create_step(build_id, &step).await {
        Ok(step_nr) => Some(step_nr),
        Err(e) => {
            warn!("cannot record the start of the step: {e}");
            None
        }
    };
    let outcome = tokio::select! {
        outcome = crate::machines::build(&machines, &machine, &request, &logs) => Some(outcome),
        _ = cancelled => None,
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
    StepDone { drv: request.drv, recorded_in: step_nr.map(|_| build_id), outcome }
}
