//! The plugins shipped with Orthrus, built by `build.rs` and embedded.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
