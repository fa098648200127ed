//! What an event of the outbox reports; notifiers subscribe to kinds.

use serde::{Deserialize, Deserializer, Serialize};

word_enum! {
    /// What an event reports. Written in the configuration (`[[notifiers]]
    /// events`), the API and the WIT as its word.
    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum EventKind ("event kind") {
        EvalStarted => "eval-started",
        /// The inputs were those of the last evaluation: nothing was evaluated.
        EvalCached => "eval-cached",
        /// An input could not be fetched, or the expression failed as a whole.
        EvalFailed => "eval-failed",
        EvalAdded => "eval-added",
        BuildQueued => "build-queued",
        BuildStarted => "build-started",
        BuildFinished => "build-finished",
        StepFinished => "step-finished",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_those_of_the_configuration_and_serde() {
        for &kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let err = "build-done".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.contains("unknown event kind ‘build-done’") && err.contains("step-finished"), "{err}");
    }
}
