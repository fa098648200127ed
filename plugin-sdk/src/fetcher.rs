//! Input fetchers (feature `fetcher`).

/// A fetched input, and the attributes the Nix expression receives.
pub use crate::bindings::fetcher::exports::orthrus::plugin::fetcher::{Attr, AttrValue, Change, Fetched};

/// A plugin that fetches jobset inputs of the types it [handles](Metadata::handles).
pub trait InputFetcher {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// Checks an input value when a user saves a jobset. The default
    /// accepts everything; an error should say what is wrong.
    fn check_value(_value: &str) -> Result<(), String> {
        Ok(())
    }

    /// Fetches the input named `input` whose value is `value`: puts the
    /// sources in the Nix store ([`host::add_to_store`]) and says which
    /// revision they are.
    fn fetch(input: &str, value: &str) -> Result<Fetched, String>;

    /// The changes after revision `since` up to `until`, newest first, for
    /// telling who changed what. The default knows of none.
    fn changes(_value: &str, _since: &str, _until: &str) -> Result<Vec<Change>, String> {
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
            struct __OrthrusPlugin;

            impl $crate::bindings::fetcher::Guest for __OrthrusPlugin {
                fn metadata() -> $crate::Metadata {
                    <$fetcher as $crate::InputFetcher>::metadata()
                }
            }

            impl $crate::bindings::fetcher::exports::orthrus::plugin::fetcher::Guest for __OrthrusPlugin {
                fn check_value(value: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    <$fetcher as $crate::InputFetcher>::check_value(&value)
                }

                fn fetch(
                    input: ::std::string::String,
                    value: ::std::string::String,
                ) -> ::std::result::Result<$crate::Fetched, ::std::string::String> {
                    <$fetcher as $crate::InputFetcher>::fetch(&input, &value)
                }

                fn changes(
                    value: ::std::string::String,
                    since: ::std::string::String,
                    until: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Change>, ::std::string::String> {
                    <$fetcher as $crate::InputFetcher>::changes(&value, &since, &until)
                }
            }

            $crate::bindings::fetcher::__export_input_fetcher!(__OrthrusPlugin);
        };
    };
}
