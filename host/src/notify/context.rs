//! What a notifier is told with an event: the build, its jobset and
//! project, the inputs of its evaluation, the previous build of its job,
//! the tail of its log — read once per event, with the jobsets and
//! evaluation inputs a batch shares read once per batch.

use std::collections::HashMap;

use crate::db::{BuildView, Db, DbResult, Event};
use crate::logs::LogStore;
use crate::nix::StorePath;
use crate::plugins::api::{InputRevision, NotifyBuild, NotifyEvent, NotifyJobset};

/// Lines of the log a finished build's event carries.
const LOG_TAIL_LINES: usize = 50;
/// Log tails read ahead for a batch add up to this at most (a hostile
/// build's 50 lines may be megabytes long): the rest are read one by one.
const LOG_TAILS_AHEAD: u64 = 32 << 20;

pub struct ContextReader {
    db: Db,
    logs: LogStore,
    base_url: String,
    jobsets: HashMap<i64, NotifyJobset>,
    inputs: HashMap<i64, Vec<InputRevision>>,
    /// The builds of the current batch's events, read in one go.
    builds: HashMap<i64, BuildView>,
    /// The steps of the builds whose events carry them, read in one go.
    steps: HashMap<i64, Vec<crate::db::BuildStep>>,
    /// For the builds of the batch's `build-finished` events: the previous
    /// finished build of the job (`None`: there is none).
    previous: HashMap<i64, Option<(i64, Option<i32>)>>,
    /// The log tails of those builds, read in one go.
    tails: HashMap<StorePath, Vec<u8>>,
}

impl ContextReader {
    pub fn new(db: Db, logs: LogStore, base_url: String) -> ContextReader {
        ContextReader {
            db,
            logs,
            base_url,
            jobsets: HashMap::new(),
            inputs: HashMap::new(),
            builds: HashMap::new(),
            steps: HashMap::new(),
            previous: HashMap::new(),
            tails: HashMap::new(),
        }
    }

    /// Forgets what it read for the last round: jobsets may be edited,
    /// builds move on.
    pub fn forget(&mut self) {
        self.jobsets.clear();
        self.builds.clear();
        self.steps.clear();
        self.previous.clear();
        self.tails.clear();
        if self.inputs.len() > 1000 {
            self.inputs.clear();
        }
    }

    /// Reads the builds of a batch's events in a fixed number of queries,
    /// with the previous build of each finished one and its log's tail
    /// (events of other builds are read one by one): a thousand events
    /// wait for a few answers, not for three thousand.
    pub async fn read_builds(&mut self, events: &[Event]) -> DbResult<()> {
        let mut ids: Vec<i64> = events.iter().filter_map(|e| e.build_id).collect();
        ids.sort_unstable();
        ids.dedup();
        self.builds = self.db.build_views(&ids).await?.into_iter().map(|v| (v.build.id, v)).collect();
        let mut with_steps: Vec<i64> =
            events.iter().filter(|e| carries_steps(&e.kind)).filter_map(|e| e.build_id).collect();
        with_steps.sort_unstable();
        with_steps.dedup();
        self.steps = self.db.steps_of_builds(&with_steps).await?;
        let mut finished: Vec<i64> = events.iter().filter(|e| e.kind == FINISHED).filter_map(|e| e.build_id).collect();
        finished.sort_unstable();
        finished.dedup();
        let found = self.db.previous_finished_builds(&finished).await?;
        self.previous = finished.iter().map(|id| (*id, found.get(id).copied())).collect();
        let logs: Vec<StorePath> = finished
            .iter()
            .filter_map(|id| self.builds.get(id))
            .filter_map(|view| {
                let steps = self.steps.get(&view.build.id).map(Vec::as_slice).unwrap_or_default();
                self.logs.build_log(&view.build.drv_path, steps)
            })
            .collect();
        self.tails = self.logs.tails(logs, LOG_TAIL_LINES, LOG_TAILS_AHEAD).await;
        Ok(())
    }

    /// The event with its context; `None` when what it is about was
    /// deleted since (a build of a deleted jobset, say).
    pub async fn read(&mut self, event: &Event) -> DbResult<Option<NotifyEvent>> {
        let mut jobset_id = event.jobset_id;
        let mut eval_id = event.eval_id;
        let mut build = None;
        if let Some(build_id) = event.build_id {
            let view = match self.builds.get(&build_id) {
                Some(view) => view.clone(),
                None => match self.db.build_views(&[build_id]).await?.pop() {
                    Some(view) => view,
                    None => return Ok(None),
                },
            };
            let b = &view.build;
            jobset_id = Some(b.jobset_id);
            eval_id = eval_id.or(view.evals.first().copied());
            let finished = event.kind == FINISHED;
            // What the status changed from matters once the build is done.
            let previous = match self.previous.get(&b.id) {
                _ if !finished => None,
                Some(previous) => *previous,
                None => self.db.previous_finished_build(b.jobset_id, &b.job, b.id).await?,
            };
            let steps = if !carries_steps(&event.kind) {
                Vec::new()
            } else if let Some(steps) = self.steps.get(&b.id) {
                steps.clone()
            } else {
                self.db.build_steps(b.id).await?
            };
            let machine = match event.data.get("machine").and_then(|m| m.as_str()) {
                Some(machine) => machine.to_owned(),
                None => {
                    steps.iter().rev().find(|s| !s.machine.is_empty()).map(|s| s.machine.clone()).unwrap_or_default()
                }
            };
            let log_tail = if finished { self.log_tail(&b.drv_path, &steps).await } else { Vec::new() };
            let url = format!("{}/build/{}", self.base_url, b.id);
            build = Some(NotifyBuild {
                id: b.id,
                job: b.job.clone(),
                nix_name: b.nix_name.clone(),
                system: b.system.clone(),
                drv_path: b.drv_path.clone(),
                // As the event says, not as the build is now (it may have
                // been restarted since).
                status: if finished {
                    event.data.get("status").and_then(|s| s.as_i64()).map(|s| s as i32).or(b.build_status)
                } else {
                    None
                },
                previous_id: previous.map(|(id, _)| id),
                previous_status: previous.and_then(|(_, status)| status),
                queued: b.timestamp,
                started: b.start_time.unwrap_or(0),
                stopped: b.stop_time.unwrap_or(0),
                machine,
                maintainers: split_addresses(b.maintainers.as_deref().unwrap_or("")),
                outputs: view.outputs.clone(),
                release_name: b.release_name.clone(),
                log_tail,
                log_url: format!("{url}/log"),
                url,
            });
        }
        let Some(jobset_id) = jobset_id else { return Ok(None) };
        let Some(jobset) = self.jobset(jobset_id).await? else { return Ok(None) };
        let inputs = match eval_id {
            Some(eval) => self.eval_inputs(eval).await?,
            None => Vec::new(),
        };
        Ok(Some(NotifyEvent {
            id: event.id,
            kind: event.kind.clone(),
            time: event.time,
            jobset,
            eval_id,
            inputs,
            build,
            step_nr: event.step_nr,
            data: event.data.clone(),
        }))
    }

    async fn jobset(&mut self, id: i64) -> DbResult<Option<NotifyJobset>> {
        if let Some(jobset) = self.jobsets.get(&id) {
            return Ok(Some(jobset.clone()));
        }
        let Some((project, jobset)) = self.db.jobset_by_id(id).await? else { return Ok(None) };
        let info = NotifyJobset {
            url: format!("{}/jobset/{}/{}", self.base_url, project.name, jobset.name),
            project: project.name,
            name: jobset.name,
            email_enabled: jobset.enable_email,
            email_override: split_addresses(&jobset.email_override),
        };
        self.jobsets.insert(id, info.clone());
        Ok(Some(info))
    }

    async fn eval_inputs(&mut self, eval: i64) -> DbResult<Vec<InputRevision>> {
        if let Some(inputs) = self.inputs.get(&eval) {
            return Ok(inputs.clone());
        }
        let rows = self.db.eval_inputs(&[eval]).await?.remove(&eval).unwrap_or_default();
        let inputs: Vec<InputRevision> = rows
            .into_iter()
            .map(|i| InputRevision {
                name: i.name,
                kind: i.kind,
                value: i.value.unwrap_or_default(),
                uri: i.uri.unwrap_or_default(),
                revision: i.revision.unwrap_or_default(),
            })
            .collect();
        self.inputs.insert(eval, inputs.clone());
        Ok(inputs)
    }

    async fn log_tail(&self, build_drv: &str, steps: &[crate::db::BuildStep]) -> Vec<String> {
        let Some(drv) = self.logs.build_log(build_drv, steps) else { return Vec::new() };
        let tail = match self.tails.get(&drv) {
            Some(tail) => Ok(Some(tail.clone())),
            None => self.logs.tail(&drv, LOG_TAIL_LINES).await,
        };
        match tail {
            Ok(Some(tail)) => String::from_utf8_lossy(&tail).lines().map(crate::nix::strip_ansi).collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("cannot read the log of {drv} for a notification: {e}");
                Vec::new()
            }
        }
    }
}

const FINISHED: &str = "build-finished";

/// Whether an event of this kind tells the build's steps (and so the
/// machine, and the log a finished build's tail comes from).
fn carries_steps(kind: &str) -> bool {
    kind == FINISHED || kind == "step-finished"
}

/// Addresses in a list written by people: `a@x, b@y` or `a@x b@y`.
fn split_addresses(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|a| a.contains('@')).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_split_on_commas_and_spaces() {
        assert_eq!(
            super::split_addresses("alice@example.org, bob@example.org"),
            ["alice@example.org", "bob@example.org"]
        );
        assert_eq!(super::split_addresses(" a@x  b@y,c@z "), ["a@x", "b@y", "c@z"]);
        assert!(super::split_addresses("").is_empty());
        assert!(super::split_addresses("nobody").is_empty(), "a name without an address is not a recipient");
    }
}
