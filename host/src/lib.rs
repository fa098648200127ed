//! Orthrus: a continuous integration and release server for Nix projects,
//! compatible with Hydra's HTTP API. See `ARCHITECTURE.md` for the map;
//! each module below is one part of it. Without the default `server`
//! feature only the plugin runtime and what it stands on are built.

#[cfg(feature = "server")]
pub mod cluster;
pub mod config;
pub mod confined;
pub mod db;
#[cfg(feature = "server")]
pub mod demo;
pub mod domain;
#[cfg(feature = "server")]
pub mod eval;
#[cfg(feature = "server")]
pub mod gc;
#[cfg(feature = "server")]
pub mod inputs;
#[cfg(feature = "server")]
pub mod logs;
#[cfg(feature = "server")]
pub mod machines;
#[cfg(feature = "server")]
pub mod metrics;
pub mod nix;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod parts;
pub mod plugins;
#[cfg(feature = "server")]
pub mod projects;
#[cfg(feature = "server")]
pub mod publish;
#[cfg(feature = "server")]
pub mod queue;
#[cfg(feature = "server")]
pub mod redact;
#[cfg(feature = "server")]
pub mod releases;
#[cfg(feature = "server")]
pub mod retention;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod users;
#[cfg(feature = "server")]
pub mod web;

#[cfg(test)]
mod rooms;
