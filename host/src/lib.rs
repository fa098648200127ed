//! Orthrus: a continuous integration and release server for Nix projects,
//! compatible with Hydra's HTTP API. See `shared/DESIGN.md` for the map;
//! each module below is one part of it.

pub mod config;
pub mod confined;
pub mod db;
pub mod demo;
pub mod domain;
pub mod eval;
pub mod gc;
pub mod inputs;
pub mod logs;
pub mod machines;
pub mod metrics;
pub mod nix;
pub mod notify;
pub mod parts;
pub mod plugins;
pub mod projects;
pub mod queue;
pub mod redact;
pub mod releases;
pub mod retention;
pub mod server;
pub mod users;
pub mod web;

#[cfg(test)]
mod rooms;
