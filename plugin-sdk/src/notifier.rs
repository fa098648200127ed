//! Notifiers (feature `notifier`).

/// An event and what the host knows around it.
pub use crate::bindings::notifier::exports::orthrus::plugin::notify::{
    BuildInfo, Event, InputRevision, JobsetInfo, Output as BuildOutput,
};

/// A plugin that reports events: mail, webhooks, commit statuses.
///
/// The host calls [`notify`](Notifier::notify) once per event the
/// operator subscribed this notifier to, in order for each build, and again
/// later (with back-off) when it returns an error, until it succeeds: an
/// event may be delivered more than once after a crash, never skipped.
pub trait Notifier {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// Reports one event. An error is retried later.
    fn notify(settings: &crate::Settings, event: &Event) -> Result<(), String>;
}

/// Hydra's build statuses, as [`BuildInfo::status`] gives them.
pub mod status {
    /// Built.
    pub const SUCCEEDED: i32 = 0;
    /// The build itself failed.
    pub const FAILED: i32 = 1;
    /// A dependency failed.
    pub const DEPENDENCY_FAILED: i32 = 2;
    /// Cancelled.
    pub const CANCELLED: i32 = 4;
    /// Failed, with output kept.
    pub const FAILED_WITH_OUTPUT: i32 = 6;

    /// Words for a status, as Hydra's pages say it.
    pub fn describe(status: Option<i32>) -> &'static str {
        match status {
            None => "queued",
            Some(0) => "succeeded",
            Some(1) => "failed",
            Some(2) => "dependency failed",
            Some(3) | Some(5) => "aborted",
            Some(4) => "cancelled",
            Some(6) => "failed with output",
            Some(7) => "timed out",
            Some(9) => "unsupported system",
            Some(10) => "log limit exceeded",
            Some(11) => "output limit exceeded",
            Some(12) => "not deterministic",
            Some(_) => "failed",
        }
    }
}

/// Exports a type implementing [`Notifier`] as the plugin's notifier.
#[macro_export]
macro_rules! export_notifier {
    ($notifier:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __OrthrusPlugin;

            impl $crate::bindings::notifier::Guest for __OrthrusPlugin {
                fn metadata() -> $crate::Metadata {
                    <$notifier as $crate::Notifier>::metadata()
                }
            }

            impl $crate::bindings::notifier::exports::orthrus::plugin::notify::Guest for __OrthrusPlugin {
                fn notify(
                    settings: ::std::vec::Vec<$crate::Setting>,
                    event: $crate::Event,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$notifier as $crate::Notifier>::notify(&$crate::Settings::from_wit(settings), &event)
                }
            }

            $crate::bindings::notifier::__export_notifier!(__OrthrusPlugin);
        };
    };
}
