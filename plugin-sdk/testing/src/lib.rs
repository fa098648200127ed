//! Test an Orthrus plugin under the real runtime, from the plugin's own
//! tests (a dev-dependency), without compiling the server around it:
//!
//! ```no_run
//! # async fn example() {
//! use orthrus_plugin_test::TestHost;
//!
//! // Builds the crate for wasm32-wasip2 and loads it with what it asks for.
//! let host = TestHost::build(env!("CARGO_MANIFEST_DIR")).await;
//! let fetched = host.runtime().fetch("tarball", "src", "https://example.org/x.tar.gz").await;
//! # }
//! ```
//!
//! The plugin runs as it would in the server: the same runtime, limits
//! and sandbox, its own scratch directory, a real SQLite database for its
//! key-value store, the machine's Nix. This crate is the host crate built
//! without its `server` feature, re-exported: what a test calls and gets.

/// What an operator grants a plugin (`[plugins.grants.NAME]`), for
/// [`TestHost::load`].
pub use orthrus::config::PluginGrant;
pub use orthrus::plugins::api::*;
pub use orthrus::plugins::testing::{TestHost, build_plugin};
pub use orthrus::plugins::{
    AttrValue, Capability, Change, FetchedSource, Grants, NotGranted, PluginError, PluginInfo, PluginKind,
    PluginRuntime, WitVersion,
};
