//! One build step on one machine, through the serve protocol: send what
//! the machine lacks of the inputs' closure, build, stream the log, check
//! the outputs and bring them back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{Machine, Machines};

/// A machine that does not answer a query this long (or a build this long
/// after its timeout) is taken for dead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// Past its timeout, how long a build through a daemon that does not trust
/// the server is given before the server stops it itself.
const UNTRUSTED_TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// A log line longer than this is cut into pieces.
const MAX_LINE: usize = 64 * 1024;
use crate::domain::StepStatus;
use crate::logs::{LogStore, LogWriter};
use crate::nix::local::LocalBuilds;
use crate::nix::{
    BasicDerivation, BuildOptions, BuildResultStatus, Derivation, ServeConnection, ServeError, StorePath,
    sort_by_references,
};

/// One derivation to build, whose inputs are all valid in the local store.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub drv: StorePath,
    pub derivation: Arc<Derivation>,
    pub timeout: Duration,
    pub max_silent: Duration,
    pub max_log_size: u64,
    pub max_output_size: u64,
}

/// How building one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Built {
        outputs: Vec<(String, String)>,
    },
    /// The builder failed: deterministic, so cached as a failed path.
    Failed(String),
    TimedOut(String),
    /// Built twice with different results (Nix's `--check`).
    NotDeterministic(String),
    LogLimitExceeded(u64),
    OutputLimitExceeded(String),
    /// Went wrong for a reason that may not recur (an input missing on the
    /// machine, a copy that broke off): tried again a few times.
    Transient(String),
    /// The machine could not be reached or died: it backs off, and the step
    /// goes back to the queue without counting as a try.
    MachineFailed(String),
    /// Something on this side went wrong (the log could not be written, a
    /// derivation could not be read); not cached as a failure.
    Aborted(String),
}

impl StepOutcome {
    /// The step status (Hydra's codes) and the message to record.
    pub fn status_and_message(&self) -> (StepStatus, Option<String>) {
        match self {
            StepOutcome::Built { .. } => (StepStatus::Succeeded, None),
            StepOutcome::Failed(m) => (StepStatus::Failed, Some(m.clone())),
            StepOutcome::TimedOut(m) => (StepStatus::TimedOut, Some(m.clone())),
            StepOutcome::NotDeterministic(m) => (StepStatus::NotDeterministic, Some(m.clone())),
            StepOutcome::LogLimitExceeded(limit) => {
                (StepStatus::LogLimitExceeded, Some(format!("the build log exceeded the limit of {limit} bytes")))
            }
            StepOutcome::OutputLimitExceeded(m) => (StepStatus::OutputLimitExceeded, Some(m.clone())),
            StepOutcome::Transient(m) | StepOutcome::MachineFailed(m) | StepOutcome::Aborted(m) => {
                (StepStatus::Aborted, Some(m.clone()))
            }
        }
    }

    pub fn outputs(&self) -> Vec<(String, String)> {
        match self {
            StepOutcome::Built { outputs } => outputs.clone(),
            _ => Vec::new(),
        }
    }
}

/// Builds one step on `machine`, writing its log as it goes.
pub async fn build(machines: &Machines, machine: &Machine, request: &StepRequest, logs: &LogStore) -> StepOutcome {
    let log = match logs.create(&request.drv) {
        Ok(log) => log,
        Err(e) => return StepOutcome::Aborted(format!("cannot write the build log: {e}")),
    };
    let mut log = LogSink::new(log, request.max_log_size);
    let timeout = Duration::from_secs(machines.config.connect_timeout_secs);
    let mut connection = match machine.connection(&machines.nix, timeout).await {
        Ok(connection) => connection,
        Err(e) => {
            let message = format!("cannot connect to {}: {e}", machine.name());
            log.note(&message);
            log.finish(&request.drv);
            machine.failed(&message, &machines.config);
            return StepOutcome::MachineFailed(message);
        }
    };
    let outcome = run(machines, machine, request, &mut connection, &mut log).await;
    log.finish(&request.drv);
    match &outcome {
        // The machine did its part. `keep` drops a connection that an
        // error left in an unknown state.
        StepOutcome::Built { .. }
        | StepOutcome::Failed(_)
        | StepOutcome::TimedOut(_)
        | StepOutcome::NotDeterministic(_)
        | StepOutcome::OutputLimitExceeded(_)
        | StepOutcome::Transient(_) => {
            machine.succeeded();
            machine.keep(connection);
        }
        StepOutcome::MachineFailed(message) => machine.failed(message, &machines.config),
        StepOutcome::LogLimitExceeded(_) | StepOutcome::Aborted(_) => {}
    }
    outcome
}

async fn run(
    machines: &Machines,
    machine: &Machine,
    request: &StepRequest,
    connection: &mut ServeConnection,
    log: &mut LogSink,
) -> StepOutcome {
    let nix = &machines.nix;
    let drv = &request.derivation;
    let mut input_outputs = Vec::new();
    for (input, wanted) in &drv.input_drvs {
        match nix.read_derivation(input).await {
            Ok(input_drv) => input_outputs
                .extend(wanted.iter().filter_map(|name| input_drv.outputs.get(name).and_then(|o| o.path.clone()))),
            Err(e) => return StepOutcome::Aborted(format!("cannot read input derivation: {e}")),
        }
    }
    let basic = BasicDerivation::new(drv, input_outputs);

    let remote = !machine.spec.is_local();
    if remote {
        if let Err(outcome) = send_inputs(machines, machine, &basic, connection, log).await {
            return outcome;
        }
    }

    let options =
        BuildOptions { max_silent: request.max_silent, timeout: request.timeout, max_log_size: request.max_log_size };
    let over_limit = log.over_limit.clone();
    // The far side enforces the timeouts; this is for a far side that
    // hangs while its SSH connection stays up.
    let by_path = !remote && machines.local_builds == LocalBuilds::StorePaths;
    // A daemon takes no time limit from a user it does not trust: the
    // timeout is kept here, and the dropped connection stops the build.
    let deadline = if by_path {
        request.timeout.saturating_add(UNTRUSTED_TIMEOUT_GRACE)
    } else {
        request.timeout.saturating_add(ANSWER_TIMEOUT)
    };
    let result = {
        let mut sink = |bytes: &[u8]| log.write(bytes);
        let building = tokio::time::timeout(deadline, async {
            if by_path {
                connection.build_stored_derivation(&request.drv, options, &mut sink).await
            } else {
                let result = connection.build_derivation(&request.drv, &basic, options, &mut sink).await?;
                if remote {
                    connection.collect_stderr(&mut sink).await?;
                }
                Ok(result)
            }
        });
        // The far side enforces the log limit too; this is for one that does not.
        tokio::select! {
            result = building => result,
            _ = over_limit.notified() => return StepOutcome::LogLimitExceeded(request.max_log_size),
        }
    };
    let result = match result {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return lost(machine, "building", e),
        Err(_) if by_path => {
            return StepOutcome::TimedOut(format!("the build took longer than {} seconds", request.timeout.as_secs()));
        }
        Err(_) => return silent(machine, "building", deadline),
    };
    if log.exceeded() {
        return StepOutcome::LogLimitExceeded(request.max_log_size);
    }
    let message = || {
        if result.error_msg.is_empty() {
            format!("build ended with {:?}", result.status)
        } else {
            result.error_msg.clone()
        }
    };
    match result.status {
        status if status.is_success() => {}
        BuildResultStatus::PermanentFailure | BuildResultStatus::InputRejected | BuildResultStatus::OutputRejected => {
            return StepOutcome::Failed(message());
        }
        BuildResultStatus::NotDeterministic => return StepOutcome::NotDeterministic(message()),
        BuildResultStatus::TimedOut => return StepOutcome::TimedOut(message()),
        BuildResultStatus::LogLimitExceeded => return StepOutcome::LogLimitExceeded(request.max_log_size),
        _ => return StepOutcome::Transient(message()),
    }

    let outputs: Vec<(String, StorePath)> =
        drv.output_paths().map(|(name, path)| (name.to_owned(), path.clone())).collect();
    if remote {
        if let Err(outcome) = fetch_outputs(machines, machine, request, &outputs, connection).await {
            return outcome;
        }
    }
    StepOutcome::Built { outputs: outputs.into_iter().map(|(name, path)| (name, path.to_string())).collect() }
}

/// Copies what the machine lacks of the closure of the inputs to it.
async fn send_inputs(
    machines: &Machines,
    machine: &Machine,
    basic: &BasicDerivation,
    connection: &mut ServeConnection,
    log: &mut LogSink,
) -> Result<(), StepOutcome> {
    let inputs: Vec<StorePath> = basic.input_srcs.iter().cloned().collect();
    let closure = machines
        .nix
        .requisites(&inputs)
        .await
        .map_err(|e| StepOutcome::Aborted(format!("cannot read the closure of the inputs: {e}")))?;
    let present = tokio::time::timeout(ANSWER_TIMEOUT, connection.query_valid_paths(&closure))
        .await
        .map_err(|_| silent(machine, "querying paths", ANSWER_TIMEOUT))?
        .map_err(|e| lost(machine, "querying paths", e))?;
    let missing: Vec<StorePath> = closure.into_iter().filter(|p| !present.contains(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    log.note(&format!("copying {} paths to {}", missing.len(), machine.name()));
    let mut store = machines.store_connection().await.map_err(StepOutcome::Aborted)?;
    let infos = store
        .query_path_infos(&missing)
        .await
        .map_err(|e| StepOutcome::Aborted(format!("cannot read the inputs from the local store: {e}")))?;
    let bytes: u64 = infos.iter().map(|i| i.nar_size).sum();
    for info in sort_by_references(infos) {
        let doing = format!("copying {} to it", info.path);
        match tokio::time::timeout(copy_deadline(info.nar_size), store.copy_path(&info, connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(copy_failed(machine, connection, &doing, e)),
            Err(_) => return Err(silent(machine, &doing, copy_deadline(info.nar_size))),
        }
    }
    debug!(machine = %machine.name(), paths = missing.len(), bytes, "inputs copied");
    machines.keep_store_connection(store);
    Ok(())
}

/// Checks the outputs' size on the machine and copies those the local
/// store lacks back.
async fn fetch_outputs(
    machines: &Machines,
    machine: &Machine,
    request: &StepRequest,
    outputs: &[(String, StorePath)],
    connection: &mut ServeConnection,
) -> Result<(), StepOutcome> {
    let paths: Vec<StorePath> = outputs.iter().map(|(_, p)| p.clone()).collect();
    let infos = tokio::time::timeout(ANSWER_TIMEOUT, connection.query_path_infos(&paths))
        .await
        .map_err(|_| silent(machine, "reading the outputs", ANSWER_TIMEOUT))?
        .map_err(|e| lost(machine, "reading the outputs", e))?;
    if infos.len() != paths.len() {
        return Err(StepOutcome::Transient(format!(
            "{} reported the build done but has {} of its {} outputs",
            machine.name(),
            infos.len(),
            paths.len()
        )));
    }
    let size: u64 = infos.iter().map(|i| i.nar_size).sum();
    if size > request.max_output_size {
        return Err(StepOutcome::OutputLimitExceeded(format!(
            "the outputs are {size} bytes, more than the limit of {} bytes",
            request.max_output_size
        )));
    }
    let mut store = machines.store_connection().await.map_err(StepOutcome::Aborted)?;
    let present = store
        .query_valid_paths(&paths)
        .await
        .map_err(|e| StepOutcome::Aborted(format!("cannot query the local store: {e}")))?;
    let wanted: Vec<_> = infos.into_iter().filter(|i| !present.contains(&i.path)).collect();
    for info in sort_by_references(wanted) {
        let doing = format!("copying {} from it", info.path);
        match tokio::time::timeout(copy_deadline(info.nar_size), connection.copy_path(&info, &mut store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(copy_failed(machine, connection, &doing, e)),
            Err(_) => return Err(silent(machine, &doing, copy_deadline(info.nar_size))),
        }
    }
    machines.keep_store_connection(store);
    Ok(())
}

/// The connection broke: the machine is at fault.
fn lost(machine: &Machine, doing: &str, error: ServeError) -> StepOutcome {
    StepOutcome::MachineFailed(format!("lost {} while {doing}: {error}", machine.name()))
}

/// How long copying a path of `nar_size` bytes may take: at least 1 MiB/s.
/// A NAR ends where the far side said it would, so a far side that claims
/// more than it sends is caught here.
fn copy_deadline(nar_size: u64) -> Duration {
    ANSWER_TIMEOUT + Duration::from_secs(nar_size >> 20)
}

/// The machine stopped answering.
fn silent(machine: &Machine, doing: &str, after: Duration) -> StepOutcome {
    StepOutcome::MachineFailed(format!("{} gave no answer while {doing} for {} s", machine.name(), after.as_secs()))
}

/// A copy failed: the machine's fault when its connection is gone, else
/// (the local store refused, say) worth another try.
fn copy_failed(machine: &Machine, connection: &mut ServeConnection, doing: &str, error: ServeError) -> StepOutcome {
    if connection.is_closed() {
        lost(machine, doing, error)
    } else {
        StepOutcome::Transient(format!("{doing} on {} failed: {error}", machine.name()))
    }
}

/// Turns the far side's stderr into log lines, up to the log limit.
struct LogSink {
    writer: LogWriter,
    partial: Vec<u8>,
    limit: u64,
    /// Woken when the log passes its limit.
    over_limit: Arc<Notify>,
    error: Option<std::io::Error>,
}

impl LogSink {
    fn new(writer: LogWriter, limit: u64) -> LogSink {
        LogSink { writer, partial: Vec::new(), limit, over_limit: Arc::new(Notify::new()), error: None }
    }

    fn write(&mut self, mut bytes: &[u8]) {
        // Only the new bytes are searched, and a line without end is cut, so
        // that neither time nor memory grow with a line's length.
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let line = std::mem::replace(&mut self.partial, rest);
            self.line(&line);
        }
    }

    /// Past the limit: nothing more is written.
    fn exceeded(&self) -> bool {
        self.writer.written() > self.limit
    }

    fn line(&mut self, line: &[u8]) {
        if self.exceeded() {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if let Err(e) = self.writer.write_line(line) {
            self.error.get_or_insert(e);
        }
        if self.exceeded() {
            self.over_limit.notify_one();
        }
    }

    /// A line of Orthrus's own about the step.
    fn note(&mut self, message: &str) {
        self.line(format!("orthrus: {message}").as_bytes());
    }

    fn finish(mut self, drv: &StorePath) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        if let Some(e) = self.error {
            warn!(%drv, "the build log is incomplete: {e}");
        }
        if let Err(e) = self.writer.finish() {
            warn!(%drv, "cannot finish the build log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_split_across_chunks_and_cut_when_endless() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path().to_owned());
        let drv = StorePath::parse("/nix/store/00000000000000000000000000000000-log-test.drv").unwrap();
        let mut sink = LogSink::new(logs.create(&drv).unwrap(), 1 << 30);
        sink.write(b"fir");
        sink.write(b"st\nsecond\r\nthi");
        sink.write(&vec![b'x'; MAX_LINE * 2 + 10]);
        sink.write(b"\nlast without newline");
        sink.finish(&drv);
        let log = String::from_utf8(logs.read(&drv).unwrap().unwrap()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[..2], ["first", "second"]);
        assert_eq!(lines[2].len(), MAX_LINE, "an endless line is cut");
        assert!(lines[2].starts_with("thixx"));
        assert_eq!(lines[3].len(), MAX_LINE);
        assert_eq!(lines[4].len(), 13);
        assert_eq!(lines[5], "last without newline");
    }

    #[test]
    fn the_log_limit_stops_writing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path().to_owned());
        let drv = StorePath::parse("/nix/store/00000000000000000000000000000000-limit-test.drv").unwrap();
        let mut sink = LogSink::new(logs.create(&drv).unwrap(), 100);
        for _ in 0..100 {
            sink.write(b"0123456789\n");
        }
        assert!(sink.exceeded());
        sink.finish(&drv);
        assert!(logs.read(&drv).unwrap().unwrap().len() <= 111);
    }
}
