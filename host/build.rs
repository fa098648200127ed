//! Builds the plugins shipped with Orthrus (`plugins/*`) for
//! `wasm32-wasip2` and puts them where `src/plugins/builtin.rs` embeds
//! them, so that the `orthrus` binary works with nothing else installed.
//!
//! The inner cargo gets its own target directory (the outer one holds the
//! lock on `target/`), always builds in release mode without debug
//! information (small, fast components), and none of the outer build's
//! flags, which are meant for the host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The embedded plugins, built by one cargo invocation (each kind's exports
/// come from its own SDK crate, so plugins of every kind build together).
const PLUGINS: [&str; 12] = [
    "git",
    "svn",
    "email",
    "webhook",
    "github-status",
    "gitea-status",
    "render-file",
    "render-doc",
    "render-report",
    "render-nix-build",
    "render-channel",
    "official-release",
];

fn main() {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = host.parent().expect("host/ is inside the workspace").to_owned();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["plugins", "plugin-sdk", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("wasm-plugins");
    let mut embedded =
        String::from("/// The components, each loaded like a plugin from a file.\npub const PLUGINS: &[&[u8]] = &[\n");
    build_all(&root, &target_dir, &PLUGINS);
    for plugin in PLUGINS {
        let package = format!("orthrus_plugin_{}", plugin.replace('-', "_"));
        let built = target_dir.join("wasm32-wasip2").join("release").join(format!("{package}.wasm"));
        let file = out.join(format!("{plugin}.wasm"));
        copy(&built, &file);
        embedded.push_str(&format!("    include_bytes!({:?}),\n", file.display().to_string()));
    }
    embedded.push_str("];\n");
    std::fs::write(out.join("builtin_plugins.rs"), embedded).expect("cannot write the list of embedded plugins");
}

fn build_all(root: &Path, target_dir: &Path, plugins: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for plugin in plugins {
        command.args(["-p", &format!("orthrus-plugin-{plugin}")]);
    }
    for (name, _) in std::env::vars() {
        // The outer build's flags and profile settings are for the host.
        if name == "RUSTFLAGS"
            || name == "CARGO_ENCODED_RUSTFLAGS"
            || name.starts_with("CARGO_PROFILE_")
            || name == "CARGO_BUILD_TARGET"
            || name == "CARGO_TARGET_DIR"
        {
            command.env_remove(&name);
        }
    }
    command.env("CARGO_PROFILE_RELEASE_DEBUG", "0").env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = command.status().expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed (see above). Is the target installed? \
             `rustup target add wasm32-wasip2`"
        );
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
