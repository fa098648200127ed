//! The plugins shipped with Orthrus, built by `build.rs` and embedded.

/// The components, each loaded like a plugin from a file.
pub const PLUGINS: [&[u8]; 2] =
    [include_bytes!(concat!(env!("OUT_DIR"), "/git.wasm")), include_bytes!(concat!(env!("OUT_DIR"), "/svn.wasm"))];
