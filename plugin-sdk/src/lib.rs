//! Write Orthrus plugins in plain Rust.
//!
//! An Orthrus plugin is a WebAssembly component the server loads and runs
//! in a sandbox: it sees nothing of the machine but its own scratch
//! directory (`/scratch`), and asks the server for the rest — running a
//! program, adding a directory to the Nix store, keeping a value — through
//! the functions of [`host`]. Each of those is a *capability* the plugin
//! declares in its [`Metadata`] and the server's operator grants (or not).
//!
//! This crate hides the generated WIT bindings: implement one trait, call
//! one macro, build for `wasm32-wasip2`.
//!
//! # An input fetcher
//!
//! ```no_run
//! use orthrus_plugin_sdk::{Capability, Fetched, InputFetcher, Metadata, attr, export_fetcher, host};
//!
//! struct Tarball;
//!
//! impl InputFetcher for Tarball {
//!     fn metadata() -> Metadata {
//!         Metadata {
//!             name: "tarball".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Fetches a tarball with curl and unpacks it".into(),
//!             handles: vec!["tarball".into()],
//!             capabilities: vec![
//!                 Capability::RunProgram("curl".into()),
//!                 Capability::RunProgram("tar".into()),
//!                 Capability::AddToStore,
//!             ],
//!         }
//!     }
//!
//!     fn fetch(_input: &str, url: &str) -> Result<Fetched, String> {
//!         std::fs::create_dir_all("/scratch/unpacked").map_err(|e| e.to_string())?;
//!         host::run_ok("curl", &["-sSfL", "-o", "src.tar.gz", url], "")?;
//!         host::run_ok("tar", &["-xzf", "src.tar.gz", "-C", "unpacked"], "")?;
//!         let store_path = host::add_to_store("unpacked")?;
//!         Ok(Fetched {
//!             revision: store_path.clone(),
//!             uri: url.to_owned(),
//!             attrs: vec![attr::string("url", url)],
//!             store_path,
//!         })
//!     }
//! }
//!
//! export_fetcher!(Tarball);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (a crate
//! of type `cdylib`), put the `.wasm` in the server's plugin directory and
//! grant what it asks for; see the README's "Write your own plugin".

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "input-fetcher",
        pub_export_macro: true,
        export_macro_name: "__export_input_fetcher",
        default_bindings_module: "::orthrus_plugin_sdk::bindings",
        runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// A fetched input, and the attributes the Nix expression receives.
pub use bindings::exports::orthrus::plugin::fetcher::{Attr, AttrValue, Change, Fetched};
/// One capability a plugin asks for; the operator grants it or not.
pub use bindings::orthrus::plugin::types::Capability;
/// What a plugin is, what it handles and which capabilities it asks for.
pub use bindings::orthrus::plugin::types::PluginMetadata as Metadata;

/// A plugin that fetches jobset inputs of the types it [handles](Metadata::handles).
pub trait InputFetcher {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> Metadata;

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

/// What plugins ask of the server. Each function needs its capability to
/// be granted; without it, it returns an error saying so.
pub mod host {
    use super::bindings::orthrus::plugin::{key_value, log as wit_log, nix_store, process};

    /// What a program did.
    pub use process::Output;

    /// Runs a granted program with `args` in `directory` (relative to the
    /// scratch directory; "" is the scratch directory itself).
    pub fn run(program: &str, args: &[&str], directory: &str) -> Result<Output, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        process::run(program, &args, directory)
    }

    /// Like [`run`], but a non-zero exit is an error carrying the program's
    /// standard error; returns its standard output as text.
    pub fn run_ok(program: &str, args: &[&str], directory: &str) -> Result<String, String> {
        let output = run(program, args, directory)?;
        if output.status == 0 {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!("{program} {} failed (exit status {}): {}", args.join(" "), output.status, stderr.trim()))
        }
    }

    /// Adds a file or directory of the scratch area (relative to it) to the
    /// Nix store; returns the store path.
    pub fn add_to_store(path: &str) -> Result<String, String> {
        nix_store::add(path)
    }

    /// The plugin's key-value store.
    pub mod kv {
        use super::key_value;

        /// The value of `key`, if there is one.
        pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
            key_value::get(key)
        }

        /// Sets `key` to `value`.
        pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
            key_value::set(key, value)
        }

        /// Removes `key`.
        pub fn delete(key: &str) -> Result<(), String> {
            key_value::delete(key)
        }
    }

    /// Writes to the server's log, tagged with the plugin's name. Logging
    /// without the grant is silently dropped: a log line is never worth
    /// failing a call.
    pub mod log {
        use super::wit_log::{Level, write};

        /// A debugging detail.
        pub fn debug(message: &str) {
            let _ = write(Level::Debug, message);
        }

        /// Something worth knowing.
        pub fn info(message: &str) {
            let _ = write(Level::Info, message);
        }

        /// Something that may be wrong.
        pub fn warn(message: &str) {
            let _ = write(Level::Warn, message);
        }

        /// Something that is wrong.
        pub fn error(message: &str) {
            let _ = write(Level::Error, message);
        }
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

            impl $crate::bindings::Guest for __OrthrusPlugin {
                fn metadata() -> $crate::Metadata {
                    <$fetcher as $crate::InputFetcher>::metadata()
                }
            }

            impl $crate::bindings::exports::orthrus::plugin::fetcher::Guest for __OrthrusPlugin {
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

            $crate::bindings::__export_input_fetcher!(__OrthrusPlugin);
        };
    };
}
