//! Hydra's build status codes: stored in the database, given in the JSON
//! API (`buildstatus`) and to notifiers, described the same everywhere.

/// How a finished build (or build step) ended, numbered as Hydra numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum BuildStatus {
    /// Built.
    Succeeded = 0,
    /// The build itself failed.
    Failed = 1,
    /// A dependency failed.
    DependencyFailed = 2,
    /// Stopped by the server (a lost machine, an aborted step).
    Aborted = 3,
    /// Cancelled by a user, or no build needed it any more.
    Cancelled = 4,
    /// Failed, with its outputs kept (`nix-support/failed`).
    FailedWithOutput = 6,
    /// Ran longer than its timeout, or was silent longer than `max-silent`.
    TimedOut = 7,
    /// Steps only: the derivation is in the failed-paths cache.
    CachedFailure = 8,
    /// No machine builds its system type.
    Unsupported = 9,
    /// Its log grew past the limit.
    LogLimitExceeded = 10,
    /// Its outputs grew past the limit.
    OutputLimitExceeded = 11,
    /// A repeated build gave different outputs.
    NotDeterministic = 12,
}

/// A build step ends with the same codes (and `CachedFailure`).
pub type StepStatus = BuildStatus;

/// A code that is none of Hydra's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownStatus(pub i32);

impl std::fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a build status code", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl BuildStatus {
    /// The statuses `restart-aborted` restarts: the build did not fail,
    /// it was stopped.
    pub const ABORTED_LIKE: [BuildStatus; 3] = [BuildStatus::Aborted, BuildStatus::Cancelled, BuildStatus::Unsupported];

    /// Hydra's code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// In words, as the pages, the logs and the mails say it.
    pub fn describe(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::DependencyFailed => "dependency failed",
            BuildStatus::Aborted => "aborted",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::FailedWithOutput => "failed with output",
            BuildStatus::TimedOut => "timed out",
            BuildStatus::CachedFailure => "cached failure",
            BuildStatus::Unsupported => "unsupported system type",
            BuildStatus::LogLimitExceeded => "log limit exceeded",
            BuildStatus::OutputLimitExceeded => "output limit exceeded",
            BuildStatus::NotDeterministic => "not deterministic",
        }
    }

    /// A code as it is stored or sent: `None` while the build is queued;
    /// a code this version does not know is described as such.
    pub fn describe_code(code: Option<i32>) -> &'static str {
        match code.map(BuildStatus::try_from) {
            None => "queued",
            Some(Ok(status)) => status.describe(),
            Some(Err(_)) => "unknown",
        }
    }

    /// Whether the build's outputs exist: it succeeded, or failed and kept
    /// them.
    pub fn has_outputs(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::FailedWithOutput)
    }
}

impl TryFrom<i32> for BuildStatus {
    type Error = UnknownStatus;

    fn try_from(code: i32) -> Result<BuildStatus, UnknownStatus> {
        use BuildStatus::*;
        Ok(match code {
            0 => Succeeded,
            1 => Failed,
            2 => DependencyFailed,
            3 => Aborted,
            4 => Cancelled,
            6 => FailedWithOutput,
            7 => TimedOut,
            8 => CachedFailure,
            9 => Unsupported,
            10 => LogLimitExceeded,
            11 => OutputLimitExceeded,
            12 => NotDeterministic,
            _ => return Err(UnknownStatus(code)),
        })
    }
}

impl From<BuildStatus> for i32 {
    fn from(status: BuildStatus) -> i32 {
        status.code()
    }
}

impl std::fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_hydras_and_go_both_ways() {
        assert_eq!(BuildStatus::Succeeded.code(), 0);
        assert_eq!(BuildStatus::FailedWithOutput.code(), 6);
        assert_eq!(BuildStatus::NotDeterministic.code(), 12);
        let known: Vec<i32> = (-1..20).filter(|code| BuildStatus::try_from(*code).is_ok()).collect();
        assert_eq!(known, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]);
        for code in known {
            assert_eq!(BuildStatus::try_from(code).map(BuildStatus::code), Ok(code));
        }
        assert_eq!(BuildStatus::try_from(5), Err(UnknownStatus(5)));
        assert_eq!(BuildStatus::try_from(-1), Err(UnknownStatus(-1)));
    }

    #[test]
    fn described_as_hydra_says_it() {
        assert_eq!(BuildStatus::describe_code(None), "queued");
        assert_eq!(BuildStatus::describe_code(Some(2)), "dependency failed");
        assert_eq!(BuildStatus::describe_code(Some(99)), "unknown");
        assert_eq!(BuildStatus::TimedOut.to_string(), "timed out");
    }
}
