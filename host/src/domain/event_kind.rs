//! What an event of the outbox reports; notifiers subscribe to kinds.

use serde::{Deserialize, Deserializer, Serialize};

/// What an event reports. Written in the configuration (`[[notifiers]]
/// events`), the API and the WIT as its kebab-case word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    EvalStarted,
    /// The inputs were those of the last evaluation: nothing was evaluated.
    EvalCached,
    /// An input could not be fetched, or the expression failed as a whole.
    EvalFailed,
    EvalAdded,
    BuildQueued,
    BuildStarted,
    BuildFinished,
    StepFinished,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::EvalStarted,
        EventKind::EvalCached,
        EventKind::EvalFailed,
        EventKind::EvalAdded,
        EventKind::BuildQueued,
        EventKind::BuildStarted,
        EventKind::BuildFinished,
        EventKind::StepFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::EvalStarted => "eval-started",
            EventKind::EvalCached => "eval-cached",
            EventKind::EvalFailed => "eval-failed",
            EventKind::EvalAdded => "eval-added",
            EventKind::BuildQueued => "build-queued",
            EventKind::BuildStarted => "build-started",
            EventKind::BuildFinished => "build-finished",
            EventKind::StepFinished => "step-finished",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = super::UnknownWord;

    fn from_str(word: &str) -> Result<EventKind, super::UnknownWord> {
        super::parse_word(word, "event kind", &EventKind::ALL, EventKind::as_str)
    }
}

/// As the configuration writes it; an unknown word is refused with the
/// list of known ones.
impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventKind, D::Error> {
        let word = String::deserialize(deserializer)?;
        word.parse().map_err(|_| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
            serde::de::Error::custom(format!("unknown event {word:?} (known: {})", known.join(", ")))
        })
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_those_of_the_configuration_and_serde() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let err = "build-done".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.contains("unknown event kind ‘build-done’") && err.contains("step-finished"), "{err}");
    }
}
