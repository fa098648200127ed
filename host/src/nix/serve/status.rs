//! How a build ended, as the far side says it: its status code, or when
//! Nix only exits, its exit code and its message.

/// What Nix's exit status after building says: 100 and up is a build
/// failure, plus 1 for a timeout, 2 for a hash mismatch, 4 for a
/// different result when checked; anything else failed before building.
pub(super) fn status_of_exit_code(code: u64) -> BuildResultStatus {
    match code.checked_sub(100) {
        Some(bits @ 0..=15) if bits & 1 != 0 => BuildResultStatus::TimedOut,
        Some(bits @ 0..=15) if bits & 4 != 0 => BuildResultStatus::NotDeterministic,
        Some(0..=15) => BuildResultStatus::PermanentFailure,
        _ => BuildResultStatus::MiscFailure,
    }
}

/// What Nix's message says when its exit status does not: through a daemon,
/// a build failure comes back as status 1 with the daemon's message.
pub(super) fn status_of_message(full_message: &str) -> BuildResultStatus {
    const FAILED: &[&str] = &[
        "failed with exit code",
        "failed due to signal",
        "builder failed",
        "hash mismatch in fixed-output derivation",
        "dependencies couldn't be built",
    ];
    // Nix's own words only, not the builder's log lines it quotes (which a
    // builder could fill with words that would change its verdict).
    let message: String = full_message
        .lines()
        .take_while(|line| !line.to_ascii_lowercase().contains("log lines:"))
        .filter(|line| !line.trim_start().starts_with('>'))
        .collect::<Vec<_>>()
        .join("\n");
    if message.contains("timed out after") {
        BuildResultStatus::TimedOut
    } else if message.contains("may not be deterministic") {
        BuildResultStatus::NotDeterministic
    } else if FAILED.iter().any(|words| message.contains(words)) {
        BuildResultStatus::PermanentFailure
    } else {
        BuildResultStatus::MiscFailure
    }
}

/// Nix's `BuildResult::Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildResultStatus {
    Built,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    ResolvesToAlreadyValid,
    NoSubstituters,
    Unknown(u64),
}

impl BuildResultStatus {
    pub(super) fn from_code(code: u64) -> BuildResultStatus {
        use BuildResultStatus::*;
        match code {
            0 => Built,
            1 => Substituted,
            2 => AlreadyValid,
            3 => PermanentFailure,
            4 => InputRejected,
            5 => OutputRejected,
            6 => TransientFailure,
            7 => CachedFailure,
            8 => TimedOut,
            9 => MiscFailure,
            10 => DependencyFailed,
            11 => LogLimitExceeded,
            12 => NotDeterministic,
            13 => ResolvesToAlreadyValid,
            14 => NoSubstituters,
            other => Unknown(other),
        }
    }

    /// The outputs are valid on the far side.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildResultStatus::Built
                | BuildResultStatus::Substituted
                | BuildResultStatus::AlreadyValid
                | BuildResultStatus::ResolvesToAlreadyValid
        )
    }
}
