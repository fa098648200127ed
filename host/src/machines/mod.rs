//! Machines that build derivations. For now the local Nix store, one
//! `nix-store --realise` per step; remote machines over SSH come later and
//! will answer the same [`StepRequest`] with the same [`StepOutcome`].

use std::time::Duration;

use tracing::warn;

use crate::db::status;
use crate::logs::LogStore;
use crate::nix::{BuildLimits, Nix, NixLogEvent, RealiseOutcome, StorePath};

/// One derivation to build, whose inputs are all valid.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub drv: StorePath,
    pub timeout: Duration,
    pub max_silent: Duration,
    pub max_log_size: u64,
}

/// How building one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Built {
        outputs: Vec<(String, String)>,
    },
    Failed(String),
    TimedOut(String),
    LogLimitExceeded(u64),
    /// Something other than the build went wrong (Nix could not be run,
    /// the log could not be written, …); not cached as a failure.
    Aborted(String),
}

impl StepOutcome {
    /// The step status (Hydra's codes) and the message to record.
    pub fn status_and_message(&self) -> (i32, Option<String>) {
        match self {
            StepOutcome::Built { .. } => (status::SUCCESS, None),
            StepOutcome::Failed(m) => (status::FAILED, Some(m.clone())),
            StepOutcome::TimedOut(m) => (status::TIMED_OUT, Some(m.clone())),
            StepOutcome::LogLimitExceeded(limit) => {
                (status::LOG_LIMIT_EXCEEDED, Some(format!("the build log exceeded the limit of {limit} bytes")))
            }
            StepOutcome::Aborted(m) => (status::ABORTED, Some(m.clone())),
        }
    }

    pub fn outputs(&self) -> Vec<(String, String)> {
        match self {
            StepOutcome::Built { outputs } => outputs.clone(),
            _ => Vec::new(),
        }
    }
}

/// What the web shows of a machine.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub name: String,
    pub systems: Vec<String>,
    pub max_jobs: usize,
}

/// The machine the server runs on.
pub struct LocalMachine {
    nix: Nix,
    systems: Vec<String>,
}

impl LocalMachine {
    /// Asks Nix which system type this machine builds.
    pub async fn detect(nix: Nix) -> Result<LocalMachine, crate::nix::NixError> {
        let system = nix.current_system().await?;
        // `builtin` derivations (builtin:fetchurl) run inside Nix itself.
        Ok(LocalMachine { nix, systems: vec![system, "builtin".into()] })
    }

    pub fn name(&self) -> &str {
        "localhost"
    }

    pub fn systems(&self) -> &[String] {
        &self.systems
    }

    pub fn info(&self, max_jobs: usize) -> MachineInfo {
        MachineInfo { name: self.name().to_owned(), systems: self.systems.clone(), max_jobs }
    }

    pub fn supports(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s == system)
    }

    /// Builds one step, writing its log as it goes.
    pub async fn build(&self, request: &StepRequest, logs: &LogStore) -> StepOutcome {
        let mut log = match logs.create(&request.drv) {
            Ok(log) => log,
            Err(e) => return StepOutcome::Aborted(format!("cannot write the build log: {e}")),
        };
        let limits = BuildLimits { timeout: request.timeout, max_silent: request.max_silent };
        let mut log_error = None;
        let outcome = self
            .nix
            .realise(&request.drv, limits, |event| {
                if let NixLogEvent::BuildLine(line) = event {
                    if let Err(e) = log.write_line(&line) {
                        log_error.get_or_insert(e);
                    }
                    return log.written() <= request.max_log_size;
                }
                true
            })
            .await;
        if let Err(e) = log.finish() {
            warn!(drv = %request.drv, "cannot finish the build log: {e}");
        }
        if let Some(e) = log_error {
            warn!(drv = %request.drv, "the build log is incomplete: {e}");
        }
        match outcome {
            Ok(RealiseOutcome::Built) => match self.nix.read_derivation(&request.drv).await {
                Ok(drv) => StepOutcome::Built {
                    outputs: drv.output_paths().map(|(name, path)| (name.to_owned(), path.to_string())).collect(),
                },
                Err(e) => StepOutcome::Aborted(e.to_string()),
            },
            Ok(RealiseOutcome::Failed(message)) => StepOutcome::Failed(message),
            Ok(RealiseOutcome::TimedOut(message)) => StepOutcome::TimedOut(message),
            Ok(RealiseOutcome::Stopped) => StepOutcome::LogLimitExceeded(request.max_log_size),
            Err(e) => StepOutcome::Aborted(e.to_string()),
        }
    }
}
