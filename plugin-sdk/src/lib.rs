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
//! one macro, build for `wasm32-wasip2`. There is one trait per kind of
//! plugin, each behind a cargo feature of the same name (a plugin is one
//! kind, and its component exports only that kind's functions):
//!
//! | feature | trait | macro | what it does |
//! |---|---|---|---|
//! | `fetcher` | [`InputFetcher`] | `export_fetcher!` | fetches jobset inputs |
//! | `notifier` | `Notifier` | `export_notifier!` | reports events (mail, webhooks, statuses) |
//! | `renderer` | `Renderer` | `export_renderer!` | shows build products |
//! | `release-set` | `ReleaseSet` | `export_release_set!` | computes release sets |
//!
//! # An input fetcher
//!
//! ```no_run
//! # #[cfg(feature = "fetcher")] mod example {
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
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (a crate
//! of type `cdylib`), put the `.wasm` in the server's plugin directory and
//! grant what it asks for; see the README's "Write your own plugin".

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_sdk;

#[cfg(feature = "fetcher")]
mod fetcher;
#[cfg(feature = "notifier")]
mod notifier;
#[cfg(feature = "release-set")]
mod release_set;
#[cfg(feature = "renderer")]
mod renderer;

/// Hydra's build statuses, the same words as the server's pages.
pub use orthrus_types::{BuildStatus, UnknownStatus};

#[cfg(feature = "fetcher")]
pub use fetcher::*;
#[cfg(feature = "notifier")]
pub use notifier::*;
#[cfg(feature = "release-set")]
pub use release_set::*;
#[cfg(feature = "renderer")]
pub use renderer::*;

#[doc(hidden)]
pub mod bindings {
    /// What the host offers; a component imports only what it uses.
    pub mod host {
        wit_bindgen::generate!({
            path: "../wit/since_v0.1.0",
            world: "host-api",
            default_bindings_module: "::orthrus_plugin_sdk::bindings::host",
            runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    // Each world's exports, sharing the host's imports (and so its types).

    #[cfg(feature = "fetcher")]
    pub mod fetcher {
        wit_bindgen::generate!({
            path: "../wit/since_v0.1.0",
            world: "input-fetcher",
            with: {
                "orthrus:plugin/types@0.1.0": crate::bindings::host::orthrus::plugin::types,
                "orthrus:plugin/log@0.1.0": crate::bindings::host::orthrus::plugin::log,
                "orthrus:plugin/process@0.1.0": crate::bindings::host::orthrus::plugin::process,
                "orthrus:plugin/nix-store@0.1.0": crate::bindings::host::orthrus::plugin::nix_store,
                "orthrus:plugin/key-value@0.1.0": crate::bindings::host::orthrus::plugin::key_value,
            },
            pub_export_macro: true,
            export_macro_name: "__export_input_fetcher",
            default_bindings_module: "::orthrus_plugin_sdk::bindings::fetcher",
            runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    #[cfg(feature = "notifier")]
    pub mod notifier {
        wit_bindgen::generate!({
            path: "../wit/since_v0.1.0",
            world: "notifier",
            with: {
                "orthrus:plugin/types@0.1.0": crate::bindings::host::orthrus::plugin::types,
                "orthrus:plugin/log@0.1.0": crate::bindings::host::orthrus::plugin::log,
                "orthrus:plugin/key-value@0.1.0": crate::bindings::host::orthrus::plugin::key_value,
                "orthrus:plugin/http@0.1.0": crate::bindings::host::orthrus::plugin::http,
                "orthrus:plugin/mail@0.1.0": crate::bindings::host::orthrus::plugin::mail,
            },
            pub_export_macro: true,
            export_macro_name: "__export_notifier",
            default_bindings_module: "::orthrus_plugin_sdk::bindings::notifier",
            runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    #[cfg(feature = "renderer")]
    pub mod renderer {
        wit_bindgen::generate!({
            path: "../wit/since_v0.1.0",
            world: "renderer",
            with: {
                "orthrus:plugin/types@0.1.0": crate::bindings::host::orthrus::plugin::types,
                "orthrus:plugin/log@0.1.0": crate::bindings::host::orthrus::plugin::log,
            },
            pub_export_macro: true,
            export_macro_name: "__export_renderer",
            default_bindings_module: "::orthrus_plugin_sdk::bindings::renderer",
            runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    #[cfg(feature = "release-set")]
    pub mod release_set {
        wit_bindgen::generate!({
            path: "../wit/since_v0.1.0",
            world: "release-set",
            with: {
                "orthrus:plugin/types@0.1.0": crate::bindings::host::orthrus::plugin::types,
                "orthrus:plugin/log@0.1.0": crate::bindings::host::orthrus::plugin::log,
                "orthrus:plugin/builds@0.1.0": crate::bindings::host::orthrus::plugin::builds,
            },
            pub_export_macro: true,
            export_macro_name: "__export_release_set",
            default_bindings_module: "::orthrus_plugin_sdk::bindings::release_set",
            runtime_path: "::orthrus_plugin_sdk::__private::wit_bindgen::rt",
        });
    }
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// One capability a plugin asks for; the operator grants it or not.
pub use bindings::host::orthrus::plugin::types::Capability;
/// What a plugin is, what it handles and which capabilities it asks for.
pub use bindings::host::orthrus::plugin::types::PluginMetadata as Metadata;
/// One setting of a notifier or a release set, from the configuration.
pub use bindings::host::orthrus::plugin::types::Setting;

/// The settings the operator gave a notifier or a release set.
#[derive(Debug, Clone, Default)]
pub struct Settings(Vec<Setting>);

impl Settings {
    /// Settings from name–value pairs (for tests of a plugin's logic).
    pub fn new<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Settings {
        Settings(pairs.into_iter().map(|(name, value)| Setting { name: name.into(), value: value.into() }).collect())
    }

    #[doc(hidden)]
    pub fn from_wit(settings: Vec<Setting>) -> Settings {
        Settings(settings)
    }

    /// The value of a setting, if it is set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|s| s.name == name).map(|s| s.value.as_str())
    }

    /// The value of a setting that must be set; the error names it.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("the setting ‘{name}’ is missing"))
    }

    /// A setting given as words separated by commas or spaces.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|v| v.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// What plugins ask of the server. Each function needs its capability to
/// be granted; without it, it returns an error saying so.
pub mod host {
    use super::bindings::host::orthrus::plugin::{key_value, log as wit_log, mail as wit_mail, nix_store, process};

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

    /// Sends a plain-text mail through the server's relay (capability `mail`).
    pub fn send_mail(to: &[String], subject: &str, body: &str) -> Result<(), String> {
        wit_mail::send(&wit_mail::Message { to: to.to_vec(), subject: subject.to_owned(), body: body.to_owned() })
    }

    /// Outgoing HTTP (capability `http(HOST)` for each host).
    pub mod http {
        pub use crate::bindings::host::orthrus::plugin::http::{Header, Request, Response, send};

        /// A request with a JSON body, `Content-Type` set.
        pub fn json_request(method: &str, url: &str, body: &str, headers: &[(&str, &str)]) -> Request {
            let mut all = vec![Header { name: "Content-Type".into(), value: "application/json".into() }];
            all.extend(headers.iter().map(|(name, value)| Header { name: (*name).into(), value: (*value).into() }));
            Request { method: method.into(), url: url.into(), headers: all, body: body.as_bytes().to_vec() }
        }

        /// Sends the request; an answer outside 200–299 is an error that
        /// quotes the status and the start of the body.
        pub fn send_ok(request: &Request) -> Result<Response, String> {
            let response = send(request)?;
            if (200..300).contains(&response.status) {
                Ok(response)
            } else {
                let body = String::from_utf8_lossy(&response.body);
                let body: String = body.chars().take(300).collect();
                Err(format!("{} {} answered {}: {}", request.method, request.url, response.status, body.trim()))
            }
        }
    }

    /// Read-only queries on the project's builds (capability `read-builds`).
    pub mod builds {
        pub use crate::bindings::host::orthrus::plugin::builds::{
            BuildSummary, EvalInput, EvalSummary, Output, eval, eval_builds, job_builds, jobsets,
        };
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
