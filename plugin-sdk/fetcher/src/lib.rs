//! Orthrus plugins of the `input-fetcher` world: a plugin that fetches jobset inputs (git, svn, …).
//! Implement [`InputFetcher`], call its export macro, build for
//! `wasm32-wasip2`; see `plugin-sdk/README.md`. Everything of the SDK's
//! core (`Metadata`, `Settings`, `host`, `BuildStatus`, …) is re-exported
//! here, so a plugin depends on this crate alone.

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_fetcher;

pub use orthrus_plugin_sdk::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.2.0",
        world: "input-fetcher",
        with: {
            "orthrus:plugin/types@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::types,
            "orthrus:plugin/log@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::log,
            "orthrus:plugin/process@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::process,
            "orthrus:plugin/nix-store@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::nix_store,
            "orthrus:plugin/key-value@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::key_value,
        },
        pub_export_macro: true,
        export_macro_name: "__export_input_fetcher",
        default_bindings_module: "::orthrus_plugin_fetcher::bindings",
        runtime_path: "::orthrus_plugin_fetcher::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// A fetched input, and the attributes the Nix expression receives.
pub use crate::bindings::exports::orthrus::plugin::fetcher::{Attr, AttrValue, Change, Fetched};

/// A plugin that fetches jobset inputs of the types it [handles](Metadata::handles).
pub trait InputFetcher {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// Checks an input value when a user saves a jobset. The default
    /// accepts everything; an error should say what is wrong.
    fn check_value(_value: &str) -> Result<(), crate::Error> {
        Ok(())
    }

    /// Fetches the input named `input` whose value is `value`: puts the
    /// sources in the Nix store ([`host::add_to_store`]) and says which
    /// revision they are.
    fn fetch(input: &str, value: &str) -> Result<Fetched, crate::Error>;

    /// The changes after revision `since` up to `until`, newest first, for
    /// telling who changed what. The default knows of none.
    fn changes(_value: &str, _since: &str, _until: &str) -> Result<Vec<Change>, crate::Error> {
        Ok(Vec::new())
    }
}

/// Attributes for [`Fetched::attrs`].
pub mod attr {
    use super::{Attr, AttrValue};

    /// A string attribute.
    pub fn string(name: &str, value: &str) -> Attr {
        Attr { name: name.to_owned(), value: AttrValue::Str(value.to_owned()) }
    }

    /// An integer attribute.
    pub fn int(name: &str, value: i64) -> Attr {
        Attr { name: name.to_owned(), value: AttrValue::Int(value) }
    }

    /// A boolean attribute.
    pub fn boolean(name: &str, value: bool) -> Attr {
        Attr { name: name.to_owned(), value: AttrValue::Boolean(value) }
    }
}

/// Exports a type implementing [`InputFetcher`] as the plugin's fetcher.
#[macro_export]
macro_rules! export_fetcher {
    ($fetcher:ty) => {
        // Only a WebAssembly build exports anything: on the host the crate
        // builds (and its unit tests run) without the component's symbols.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_metadata!($crate::bindings::Guest, $fetcher, $crate::InputFetcher);

            impl $crate::bindings::exports::orthrus::plugin::fetcher::Guest for __OrthrusPlugin {
                fn check_value(value: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    <$fetcher as $crate::InputFetcher>::check_value(&value)
                }

                fn fetch(
                    input: ::std::string::String,
                    value: ::std::string::String,
                ) -> ::std::result::Result<$crate::Fetched, $crate::Error> {
                    <$fetcher as $crate::InputFetcher>::fetch(&input, &value)
                }

                fn changes(
                    value: ::std::string::String,
                    since: ::std::string::String,
                    until: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Change>, $crate::Error> {
                    <$fetcher as $crate::InputFetcher>::changes(&value, &since, &until)
                }
            }

            $crate::bindings::__export_input_fetcher!(__OrthrusPlugin);
        };
    };
}
