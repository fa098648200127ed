//! The plugin runtime: the one place that knows wasmtime.
//!
//! Plugins are WebAssembly components of the WIT package
//! `orthrus:plugin` (see `wit/`). Each is compiled once (and cached on
//! disk, keyed by the component's SHA-256 and the engine's compatibility
//! hash), pre-instantiated, and called in a fresh store under a memory cap,
//! an epoch deadline and an outer timeout, so that a plugin that loops,
//! crashes or eats memory fails that one call and nothing else. A plugin
//! sees only its own scratch directory; everything else it asks the host
//! for, and gets only what the operator granted (`host.rs`).

pub mod api;
mod builtin;
mod capability;
mod identity;
mod outbound;
mod sandbox;
mod state;
pub mod testing;
mod wit;
mod world;

mod call;
mod engine;
mod loader;
mod model;

use call::CallLimits;
pub use engine::EngineTuning;
use engine::{Linkers, YIELD_EVERY, engine, start_ticker};
use loader::metadata_from_wit;
pub use model::*;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub use crate::config::HostGrant;
use crate::config::{Config as ServerConfig, MailConfig, PluginsConfig};
use crate::db::Db;
use crate::nix::{Nix, StorePath};
pub use capability::{Capability, Grants, NotGranted};
pub use identity::PluginId;
use outbound::{HttpClient, Mailer};
pub use sandbox::{Credentials, Sandbox, SandboxSettings};
use state::HostState;
pub use wit::WitVersion;
use world::WorldPre;

/// What host functions use, shared by every call.
#[derive(Clone)]
pub(crate) struct Services {
    db: Db,
    nix: Nix,
    /// The box programs run in.
    sandbox: Sandbox,
    http: HttpClient,
    mailer: Mailer,
}

/// Where and how the plugin runtime runs.
pub struct RuntimeSetup {
    pub plugins: PluginsConfig,
    pub mail: MailConfig,
    /// Plugins' scratch directories are made under it.
    pub scratch_root: PathBuf,
    /// Compiled components are kept here.
    pub cache_dir: PathBuf,
    pub sandbox: Sandbox,
    #[doc(hidden)]
    pub tuning: EngineTuning,
}

impl RuntimeSetup {
    /// As the configuration says; the sandbox is tried once.
    pub async fn from_config(config: &ServerConfig) -> RuntimeSetup {
        let settings = SandboxSettings {
            bwrap: config.plugins.bwrap.clone(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            readable_roots: config.evaluator.allowed_path_roots.clone(),
            private: config.private_paths(),
            runtime_dir: config.data_dir.clone(),
        };
        RuntimeSetup {
            plugins: config.plugins.clone(),
            mail: config.mail.clone(),
            scratch_root: config.plugin_scratch_dir(),
            cache_dir: config.plugin_cache_dir(),
            sandbox: Sandbox::new(&settings).await,
            tuning: EngineTuning::default(),
        }
    }

    /// For tests and benchmarks: everything in `dir`; programs may read
    /// `readable` (local repositories).
    pub async fn in_dir(dir: &Path, plugins: PluginsConfig, readable: Vec<PathBuf>) -> RuntimeSetup {
        let settings = SandboxSettings {
            bwrap: plugins.bwrap.clone(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            readable_roots: readable,
            private: vec![dir.to_owned()],
            runtime_dir: dir.to_owned(),
        };
        RuntimeSetup {
            plugins,
            mail: MailConfig::default(),
            scratch_root: dir.join("scratch"),
            cache_dir: dir.join("cache"),
            sandbox: Sandbox::new(&settings).await,
            tuning: EngineTuning::default(),
        }
    }
}

struct LoadedPlugin {
    info: PluginInfo,
    pre: WorldPre,
    /// Calls of one plugin run one at a time: its scratch directory (a
    /// cache of clones, say) is not built for concurrent use.
    lock: tokio::sync::Mutex<()>,
    /// Its scratch directory, opened once and handed to every call.
    scratch: call::ScratchDir,
}

/// The plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linkers: Linkers,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Input type to plugin name.
    fetchers: BTreeMap<String, String>,
    /// Build product type to plugin name.
    renderers: BTreeMap<String, String>,
    /// Why plugins that were found could not be loaded.
    load_errors: Vec<String>,
    /// Shared with each call's store (no copy per call).
    services: Arc<Services>,
    scratch_root: PathBuf,
    cache_dir: PathBuf,
    memory: usize,
    tuning: EngineTuning,
    /// Input fetchers and notifiers: they wait on the network.
    io_limits: CallLimits,
    /// Renderers run while a page is served: a strict budget.
    render_limits: CallLimits,
    release_set_limits: CallLimits,
    /// Keeps the epoch ticker thread going (when epochs are used); it stops
    /// when this is dropped.
    _ticker: Option<Arc<()>>,
}

impl PluginRuntime {
    /// Loads the built-in plugins and those of `plugins.dir`. A plugin that
    /// fails to load, or would take another's name or types without the
    /// operator's `replaces`, is reported and left out; the server goes on.
    pub async fn start(setup: RuntimeSetup, db: Db, nix: Nix) -> Result<PluginRuntime, PluginError> {
        let RuntimeSetup { plugins: config, mail, scratch_root, cache_dir, sandbox, tuning } = setup;
        let memory = (config.memory_mb << 20) as usize;
        let engine = engine(memory, tuning)?;
        let linkers = Linkers::new(&engine)?;
        let ticker = tuning.epoch.then(|| start_ticker(&engine));
        let mailer = Mailer::new(&mail).map_err(|message| PluginError::Load { origin: "[mail]".into(), message })?;
        let services = Arc::new(Services { db, nix, sandbox, http: HttpClient::new(), mailer });
        let fuel = Some(config.fuel_millions.saturating_mul(1_000_000));
        let mut inner = Inner {
            engine,
            linkers,
            plugins: BTreeMap::new(),
            fetchers: BTreeMap::new(),
            renderers: BTreeMap::new(),
            load_errors: Vec::new(),
            services,
            scratch_root,
            cache_dir,
            memory,
            tuning,
            io_limits: CallLimits { timeout: Duration::from_secs(config.timeout_secs), fuel: None },
            render_limits: CallLimits { timeout: Duration::from_millis(config.render_timeout_ms), fuel },
            release_set_limits: CallLimits { timeout: Duration::from_millis(config.release_set_timeout_ms), fuel },
            _ticker: ticker,
        };
        // Programs in the box may leave set-user-ID files in scratch
        // directories: nobody else may reach them.
        std::fs::create_dir_all(&inner.scratch_root)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&inner.scratch_root, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| PluginError::Load {
                origin: inner.scratch_root.display().to_string(),
                message: e.to_string(),
            })?;
        let mut sources: Vec<(Source, Vec<u8>)> =
            builtin::PLUGINS.iter().map(|bytes| (Source::BuiltIn, bytes.to_vec())).collect();
        if !config.dir.as_os_str().is_empty() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&config.dir)
                .map_err(|e| PluginError::Load { origin: config.dir.display().to_string(), message: e.to_string() })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            files.sort();
            for file in files {
                match std::fs::read(&file) {
                    Ok(bytes) => sources.push((Source::File(file), bytes)),
                    Err(e) => tracing::error!("cannot read plugin {}: {e}", file.display()),
                }
            }
        }
        for (source, bytes) in sources {
            let admitted = match inner.load(source.clone(), &bytes, &config).await {
                Ok(plugin) => inner
                    .admit(&plugin, &config)
                    .map(|()| plugin)
                    .map_err(|message| PluginError::Load { origin: source.to_string(), message }),
                Err(e) => Err(e),
            };
            let plugin = match admitted {
                Ok(plugin) => plugin,
                Err(e) => {
                    tracing::error!("{e}");
                    inner.load_errors.push(e.to_string());
                    continue;
                }
            };
            let id = plugin.info.id.as_str().to_owned();
            if plugin.info.id.is_builtin() {
                inner.move_old_scratch(&plugin.info.id);
            }
            let handlers = match plugin.info.kind {
                PluginKind::InputFetcher => Some(&mut inner.fetchers),
                PluginKind::Renderer => Some(&mut inner.renderers),
                PluginKind::Notifier | PluginKind::ReleaseSet => None,
            };
            if let Some(handlers) = handlers {
                for kind in &plugin.info.metadata.handles {
                    if let Some(other) = handlers.insert(kind.clone(), id.clone()) {
                        tracing::warn!("‘{kind}’ is now handled by plugin ‘{id}’, which replaces ‘{other}’");
                    }
                }
            }
            tracing::info!(
                plugin = %id,
                kind = %plugin.info.kind,
                version = %plugin.info.metadata.version,
                wit = %plugin.info.wit,
                source = %source,
                granted = ?plugin.info.grants.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
                network = plugin.info.grants.network(),
                "plugin loaded"
            );
            inner.plugins.insert(id, plugin);
        }
        Ok(PluginRuntime { inner: Arc::new(inner) })
    }

    /// Why the programs plugins are granted are refused, if they are (no
    /// sandbox can be made on this machine).
    pub fn sandbox_unavailable(&self) -> Option<&str> {
        self.inner.services.sandbox.unavailable()
    }

    /// Compiles a component (or takes it from the cache) and reads its
    /// metadata, without loading it: `orthrus plugin inspect`.
    pub async fn inspect(&self, path: &Path, config: &PluginsConfig) -> Result<PluginInfo, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|e| PluginError::Load { origin: path.display().to_string(), message: e.to_string() })?;
        Ok(self.inner.load(Source::Inspected(path.to_owned()), &bytes, config).await?.info.clone())
    }

    /// The components built into the binary.
    pub fn builtin_components() -> &'static [&'static [u8]] {
        builtin::PLUGINS
    }

    /// Asks a loaded plugin again what it is: one instantiation and one
    /// call, the smallest unit of plugin work.
    pub async fn describe(&self, name: &str) -> Result<Metadata, PluginError> {
        let plugin = self.inner.resolve(name).ok_or_else(|| PluginError::NoPlugin(name.to_owned()))?.clone();
        let raw = self
            .inner
            .call(&plugin, false, self.inner.io_limits, None, async move |store, pre| pre.metadata(store).await)
            .await?;
        Ok(metadata_from_wit(raw))
    }

    /// Why plugins could not be loaded (they are left out, the rest works).
    pub fn load_errors(&self) -> &[String] {
        &self.inner.load_errors
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.inner.plugins.values().map(|p| p.info.clone()).collect()
    }

    /// Input types some plugin fetches.
    pub fn input_types(&self) -> Vec<String> {
        self.inner.fetchers.keys().cloned().collect()
    }

    fn fetcher(&self, input_type: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let id = self.inner.fetchers.get(input_type).ok_or_else(|| PluginError::NoPlugin(input_type.to_owned()))?;
        Ok(self.inner.plugins[id].clone())
    }

    /// The loaded plugin `name` (an identity, or a built-in's plain name),
    /// if it is of `kind`.
    fn plugin_of_kind(&self, name: &str, kind: PluginKind) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.inner
            .resolve(name)
            .filter(|p| p.info.kind == kind)
            .cloned()
            .ok_or_else(|| PluginError::NoSuchPlugin { kind, name: name.to_owned() })
    }

    /// Whether a plugin of `kind` is loaded under `name`.
    pub fn has_plugin(&self, name: &str, kind: PluginKind) -> bool {
        self.plugin_of_kind(name, kind).is_ok()
    }

    /// The renderer of a build product type, if a plugin handles it.
    pub fn renderer_for(&self, product_type: &str) -> Option<String> {
        self.inner.renderers.get(product_type).cloned()
    }
}

#[cfg(test)]
mod tests;
