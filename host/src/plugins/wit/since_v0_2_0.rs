//! Host bindings of `wit/since_v0.2.0` (package `orthrus:plugin@0.2.0`),
//! the latest version: what the capabilities implement and the world
//! facades call. New in 0.2.0: every error is the typed `error` variant
//! (invalid input, failed, try later, not granted) instead of a string.

/// The version of the WIT package these bindings are of.
pub const VERSION: &str = "0.2.0";

super::bindings_of_version!("../wit/since_v0.2.0");

pub use host_api::orthrus::plugin::types::{Error, PluginMetadata, Setting};

impl host_api::orthrus::plugin::types::Host for HostState {}
