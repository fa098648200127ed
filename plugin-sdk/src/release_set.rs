//! Release-set definitions (feature `release-set`).

/// A release and the builds it is made of.
pub use crate::bindings::release_set::exports::orthrus::plugin::releases::{Member, Release};

/// A plugin that defines release sets: named views over finished builds,
/// computed with the read-only queries of [`host::builds`](crate::host::builds).
///
/// It runs under a strict budget of instructions and time; an error shows
/// on the release set, and nothing else is affected.
pub trait ReleaseSet {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// The releases of the set, newest first, at most `limit`.
    fn releases(settings: &crate::Settings, limit: u32) -> Result<Vec<Release>, String>;
}

/// Exports a type implementing [`ReleaseSet`] as the plugin's release-set definition.
#[macro_export]
macro_rules! export_release_set {
    ($set:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __OrthrusPlugin;

            impl $crate::bindings::release_set::Guest for __OrthrusPlugin {
                fn metadata() -> $crate::Metadata {
                    <$set as $crate::ReleaseSet>::metadata()
                }
            }

            impl $crate::bindings::release_set::exports::orthrus::plugin::releases::Guest for __OrthrusPlugin {
                fn releases(
                    settings: ::std::vec::Vec<$crate::Setting>,
                    limit: u32,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Release>, ::std::string::String> {
                    <$set as $crate::ReleaseSet>::releases(&$crate::Settings::from_wit(settings), limit)
                }
            }

            $crate::bindings::release_set::__export_release_set!(__OrthrusPlugin);
        };
    };
}
