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

use super::{PluginRuntime, RuntimeSetup};
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

    /// Loads a component; `grant` replaces what it asks for. It is
    /// installed as an operator would: as `NAME.wasm`, NAME being what it
    /// calls itself (replacing the built-in plugin of that name, if any).
    /// Its programs may read the machine's temporary directory, where
    /// tests keep their repositories.
    pub async fn load(component: &Path, grant: Option<PluginGrant>) -> TestHost {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("a plugin directory");
        let db = Db::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.expect("a database");
        let nix = Nix::new(&NixConfig::default());
        let setup = |config: PluginsConfig| RuntimeSetup::in_dir(dir.path(), config, vec![std::env::temp_dir()]);
        let probe = PluginRuntime::start(setup(PluginsConfig::default()).await, db.clone(), nix.clone())
            .await
            .expect("a plugin runtime");
        let info = probe.inspect(component, &PluginsConfig::default()).await.expect("the component loads");
        let name = info.metadata.name.clone();
        std::fs::copy(component, plugins.join(format!("{name}.wasm"))).expect("the component can be copied");
        let mut grant = grant.unwrap_or_else(|| super::Grants::asked(&info.metadata.capabilities).to_config());
        let builtin = super::PluginId::builtin(&name);
        if probe.plugins().iter().any(|p| p.id == builtin) {
            grant.replaces = builtin.to_string();
        }
        let mut config = PluginsConfig { dir: plugins, ..PluginsConfig::default() };
        config.grants.insert(name.clone(), grant);
        let runtime = PluginRuntime::start(setup(config).await, db, nix).await.expect("a plugin runtime");
        if !runtime.plugins().iter().any(|p| p.id.as_str() == name) {
            panic!("the component does not load: {:?}", runtime.load_errors());
        }
        TestHost { runtime, name, _dir: dir }
    }

    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// The plugin's name, from its metadata.
    pub fn name(&self) -> &str {
        &self.name
    }
}
