//! Testing a plugin under the real runtime, from the plugin's own tests:
//!
//! ```no_run
//! # async fn example() {
//! use orthrus::plugins::testing::TestHost;
//!
//! // Builds the crate for wasm32-wasip2 and loads it with what it asks for.
//! let host = TestHost::build(env!("CARGO_MANIFEST_DIR")).await;
//! let fetched = host.runtime().fetch("tarball", "src", "https://example.org/x.tar.gz").await;
//! # }
//! ```
//!
//! The plugin runs as it would in the server: its own scratch directory, a
//! real SQLite database for its key-value store, the machine's Nix.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PluginRuntime, Source};
use crate::config::{NixConfig, PluginGrant, PluginsConfig};
use crate::db::Db;
use crate::nix::Nix;

/// A plugin loaded in a runtime of its own, in a temporary directory.
pub struct TestHost {
    runtime: PluginRuntime,
    name: String,
    _dir: tempfile::TempDir,
}

/// Builds the plugin crate at `crate_dir` for `wasm32-wasip2` (in release
/// mode, in its own target directory) and returns the component's path.
pub fn build_plugin(crate_dir: &Path) -> PathBuf {
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the plugin has a Cargo.toml");
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = ").map(|n| n.trim_matches('"').to_owned()))
        .expect("the Cargo.toml names its package");
    let target_dir = std::env::temp_dir().join("orthrus-plugin-tests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "building {package} for wasm32-wasip2 failed (is the target installed?)");
    target_dir.join("wasm32-wasip2").join("release").join(format!("{}.wasm", package.replace('-', "_")))
}

impl TestHost {
    /// Builds the plugin crate at `crate_dir` and loads it, granted what it
    /// asks for.
    pub async fn build(crate_dir: &str) -> TestHost {
        TestHost::load(&build_plugin(Path::new(crate_dir)), None).await
    }

    /// Loads a component; `grant` replaces what it asks for.
    pub async fn load(component: &Path, grant: Option<PluginGrant>) -> TestHost {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("a plugin directory");
        std::fs::copy(component, plugins.join("plugin.wasm")).expect("the component can be copied");
        let db = Db::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.expect("a database");
        let nix = Nix::new(&NixConfig::default());
        let mut config = PluginsConfig { dir: plugins, ..PluginsConfig::default() };
        let probe = PluginRuntime::start(
            &config,
            dir.path().join("scratch"),
            dir.path().join("cache"),
            db.clone(),
            nix.clone(),
        )
        .await
        .expect("a plugin runtime");
        let info = probe
            .plugins()
            .into_iter()
            .find(|p| p.source != Source::BuiltIn)
            .unwrap_or_else(|| panic!("the component does not load: {:?}", probe.load_errors()));
        let grant = grant.unwrap_or_else(|| super::Grants::asked(&info.metadata).to_config());
        config.grants.insert(info.metadata.name.clone(), grant);
        let runtime = PluginRuntime::start(&config, dir.path().join("scratch"), dir.path().join("cache"), db, nix)
            .await
            .expect("a plugin runtime");
        TestHost { runtime, name: info.metadata.name, _dir: dir }
    }

    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// The plugin's name, from its metadata.
    pub fn name(&self) -> &str {
        &self.name
    }
}
