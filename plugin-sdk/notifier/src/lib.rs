//! Orthrus plugins of the `notifier` world: a plugin that reports events: mail, webhooks, commit statuses.
//! Implement [`Notifier`], call its export macro, build for
//! `wasm32-wasip2`; see `plugin-sdk/README.md`. Everything of the SDK's
//! core (`Metadata`, `Settings`, `host`, `BuildStatus`, …) is re-exported
//! here, so a plugin depends on this crate alone.

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_notifier;

pub use orthrus_plugin_sdk::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.2.0",
        world: "notifier",
        with: {
            "orthrus:plugin/types@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::types,
            "orthrus:plugin/log@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::log,
            "orthrus:plugin/key-value@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::key_value,
            "orthrus:plugin/http@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::http,
            "orthrus:plugin/mail@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::mail,
        },
        pub_export_macro: true,
        export_macro_name: "__export_notifier",
        default_bindings_module: "::orthrus_plugin_notifier::bindings",
        runtime_path: "::orthrus_plugin_notifier::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// An event and what the host knows around it.
pub use crate::bindings::exports::orthrus::plugin::notify::{
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
    fn notify(settings: &crate::Settings, event: &Event) -> Result<(), crate::Error>;
}

impl BuildInfo {
    /// How it ended, once finished (`None` while it is not, or for a code
    /// this SDK does not know).
    pub fn build_status(&self) -> Option<crate::BuildStatus> {
        self.status.and_then(|code| crate::BuildStatus::try_from(code).ok())
    }

    /// How the previous build of the job ended (given with `build-finished`).
    pub fn previous_build_status(&self) -> Option<crate::BuildStatus> {
        self.previous_status.and_then(|code| crate::BuildStatus::try_from(code).ok())
    }
}

/// Hydra's build status codes, as [`BuildInfo::status`] gives them; prefer
/// [`BuildInfo::build_status`] and [`BuildStatus`](crate::BuildStatus).
pub mod status {
    use crate::BuildStatus;

    /// Built.
    pub const SUCCEEDED: i32 = BuildStatus::Succeeded as i32;
    /// The build itself failed.
    pub const FAILED: i32 = BuildStatus::Failed as i32;
    /// A dependency failed.
    pub const DEPENDENCY_FAILED: i32 = BuildStatus::DependencyFailed as i32;
    /// Cancelled.
    pub const CANCELLED: i32 = BuildStatus::Cancelled as i32;
    /// Failed, with output kept.
    pub const FAILED_WITH_OUTPUT: i32 = BuildStatus::FailedWithOutput as i32;

    /// Words for a status code, as the server's pages say it (`queued`
    /// while there is none).
    pub fn describe(status: Option<i32>) -> &'static str {
        BuildStatus::describe_code(status)
    }
}

/// Exports a type implementing [`Notifier`] as the plugin's notifier.
#[macro_export]
macro_rules! export_notifier {
    ($notifier:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_metadata!($crate::bindings::Guest, $notifier, $crate::Notifier);

            impl $crate::bindings::exports::orthrus::plugin::notify::Guest for __OrthrusPlugin {
                fn notify(
                    settings: ::std::vec::Vec<$crate::Setting>,
                    event: $crate::Event,
                ) -> ::std::result::Result<(), $crate::Error> {
                    <$notifier as $crate::Notifier>::notify(&$crate::Settings::from_wit(settings), &event)
                }
            }

            $crate::bindings::__export_notifier!(__OrthrusPlugin);
        };
    };
}
