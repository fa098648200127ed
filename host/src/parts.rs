//! The parts every command that works on the server's data opens the same
//! way — the database (migrated), Nix, the plugin runtime and the input
//! fetchers — so that `orthrus serve` and the CLI commands (`plugin`,
//! `project apply`, `gc-roots`) run plugins with the same grants, scratch
//! directories and sandbox.

use anyhow::Context;

use crate::config::Config;
use crate::db::Db;
use crate::inputs::{InputFetcher, LocalFiles};
use crate::nix::Nix;
use crate::plugins::{PluginRuntime, RuntimeSetup};

/// The opened parts. Cheap to clone.
#[derive(Clone)]
pub struct Parts {
    pub db: Db,
    pub nix: Nix,
    pub plugins: PluginRuntime,
    pub inputs: InputFetcher,
}

impl Parts {
    /// As the configuration says, with Nix as configured.
    pub async fn open(config: &Config) -> anyhow::Result<Parts> {
        Parts::open_with(config, Nix::new(&config.nix)).await
    }

    /// The same with a Nix the caller checked and adjusted (`serve`).
    pub async fn open_with(config: &Config, nix: Nix) -> anyhow::Result<Parts> {
        let db = crate::server::open_db(config).await?;
        let plugins = PluginRuntime::start(RuntimeSetup::from_config(config).await, db.clone(), nix.clone())
            .await
            .context("cannot start the plugin runtime")?;
        let local = LocalFiles::new(&config.evaluator.allowed_path_roots, &config.private_paths());
        let inputs = InputFetcher::new(nix.clone(), db.clone(), local, plugins.clone());
        Ok(Parts { db, nix, plugins, inputs })
    }
}
