//! Orthrus plugins of the `release-set` world: a plugin that defines release sets: named views over finished builds.
//! Implement [`ReleaseSet`], call its export macro, build for
//! `wasm32-wasip2`; see `plugin-sdk/README.md`. Everything of the SDK's
//! core (`Metadata`, `Settings`, `host`, `BuildStatus`, …) is re-exported
//! here, so a plugin depends on this crate alone.

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_release_set;

pub use orthrus_plugin_sdk::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.2.0",
        world: "release-set",
        with: {
            "orthrus:plugin/types@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::types,
            "orthrus:plugin/log@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::log,
            "orthrus:plugin/builds@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::builds,
        },
        pub_export_macro: true,
        export_macro_name: "__export_release_set",
        default_bindings_module: "::orthrus_plugin_release_set::bindings",
        runtime_path: "::orthrus_plugin_release_set::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// A release and the builds it is made of.
pub use crate::bindings::exports::orthrus::plugin::releases::{Member, Release};

/// A plugin that defines release sets: named views over finished builds,
/// computed with the read-only queries of [`host::builds`](crate::host::builds).
///
/// It runs under a strict budget of instructions and time; an error shows
/// on the release set, and nothing else is affected.
pub trait ReleaseSet {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// The releases of the set, newest first, at most `limit`.
    fn releases(settings: &crate::Settings, limit: u32) -> Result<Vec<Release>, crate::Error>;
}

/// Exports a type implementing [`ReleaseSet`] as the plugin's release-set definition.
#[macro_export]
macro_rules! export_release_set {
    ($set:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_metadata!($crate::bindings::Guest, $set, $crate::ReleaseSet);

            impl $crate::bindings::exports::orthrus::plugin::releases::Guest for __OrthrusPlugin {
                fn releases(
                    settings: ::std::vec::Vec<$crate::Setting>,
                    limit: u32,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Release>, $crate::Error> {
                    <$set as $crate::ReleaseSet>::releases(&$crate::Settings::from_wit(settings), limit)
                }
            }

            $crate::bindings::__export_release_set!(__OrthrusPlugin);
        };
    };
}
