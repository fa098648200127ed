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
mod bindings;
mod builtin;
mod convert;
mod host;
mod identity;
mod outbound;
mod sandbox;
pub mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub use crate::config::HostGrant;
use crate::config::{Config as ServerConfig, MailConfig, PluginGrant, PluginsConfig};
use crate::db::Db;
use crate::nix::{Nix, StorePath};
use api::{BuildRef, NotifyEvent, ProductToRender, Release, Rendered};
use bindings::fetcher::InputFetcherPre;
use bindings::fetcher::exports::orthrus::plugin::fetcher;
use bindings::notifier::NotifierPre;
use bindings::release_set::ReleaseSetPre;
use bindings::renderer::RendererPre;
use host::HostState;
pub use identity::PluginId;
use outbound::{HttpClient, Mailer};
pub use sandbox::{Credentials, Sandbox, SandboxSettings};

/// How often the epoch advances; a call's deadline is counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Something a plugin asks for (mirrors the WIT `capability`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    RunProgram(String),
    AddToStore,
    KeyValue,
    Log,
    Http(String),
    Mail,
    ReadBuilds,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capability::RunProgram(program) => write!(f, "run-program({program})"),
            Capability::AddToStore => f.write_str("add-to-store"),
            Capability::KeyValue => f.write_str("key-value"),
            Capability::Log => f.write_str("log"),
            Capability::Http(host) => write!(f, "http({host})"),
            Capability::Mail => f.write_str("mail"),
            Capability::ReadBuilds => f.write_str("read-builds"),
        }
    }
}

/// What a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    pub handles: Vec<String>,
    pub capabilities: Vec<Capability>,
}

/// Which of the plugin worlds a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    InputFetcher,
    Notifier,
    Renderer,
    ReleaseSet,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::InputFetcher => "input fetcher",
            PluginKind::Notifier => "notifier",
            PluginKind::Renderer => "renderer",
            PluginKind::ReleaseSet => "release set",
        })
    }
}

/// What a plugin may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub programs: BTreeSet<String>,
    pub add_to_store: bool,
    pub key_value: bool,
    pub log: bool,
    pub http: BTreeSet<HostGrant>,
    pub mail: bool,
    pub read_builds: bool,
    /// The programs it runs may reach the network.
    pub network: bool,
    /// Files its programs see at fixed places in their box.
    pub credentials: Credentials,
}

impl Grants {
    /// What a built-in plugin gets by default: what it asks for, except
    /// HTTP hosts, which only the operator names (a webhook's receiver is
    /// the operator's choice, not the plugin's).
    fn asked(metadata: &Metadata) -> Grants {
        let mut grants = Grants::default();
        for capability in &metadata.capabilities {
            match capability {
                Capability::RunProgram(program) => {
                    grants.programs.insert(program.clone());
                }
                Capability::AddToStore => grants.add_to_store = true,
                Capability::KeyValue => grants.key_value = true,
                Capability::Log => grants.log = true,
                Capability::Http(_) => {}
                Capability::Mail => grants.mail = true,
                Capability::ReadBuilds => grants.read_builds = true,
            }
        }
        // The built-in plugins that run programs (git, svn) fetch.
        grants.network = !grants.programs.is_empty();
        grants
    }

    fn from_config(grant: &PluginGrant) -> Grants {
        Grants {
            programs: grant.programs.iter().cloned().collect(),
            add_to_store: grant.add_to_store,
            key_value: grant.key_value,
            log: grant.log,
            // Checked when the configuration was read.
            http: grant.http.iter().filter_map(|h| HostGrant::parse(h).ok()).collect(),
            mail: grant.mail,
            read_builds: grant.read_builds,
            network: grant.network.unwrap_or(false),
            credentials: Credentials {
                ssh_key: non_empty(&grant.ssh_key_file),
                known_hosts: non_empty(&grant.ssh_known_hosts_file),
                git_credentials: non_empty(&grant.git_credentials_file),
            },
        }
    }

    /// The same, as the configuration writes it.
    pub fn to_config(&self) -> PluginGrant {
        PluginGrant {
            programs: self.programs.iter().cloned().collect(),
            add_to_store: self.add_to_store,
            key_value: self.key_value,
            log: self.log,
            http: self.http.iter().map(ToString::to_string).collect(),
            mail: self.mail,
            read_builds: self.read_builds,
            network: Some(self.network),
            ssh_key_file: self.credentials.ssh_key.clone().unwrap_or_default(),
            ssh_known_hosts_file: self.credentials.known_hosts.clone().unwrap_or_default(),
            git_credentials_file: self.credentials.git_credentials.clone().unwrap_or_default(),
            replaces: String::new(),
        }
    }

    /// The capabilities granted, in the WIT's words.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut list: Vec<Capability> = self.programs.iter().cloned().map(Capability::RunProgram).collect();
        if self.add_to_store {
            list.push(Capability::AddToStore);
        }
        if self.key_value {
            list.push(Capability::KeyValue);
        }
        if self.log {
            list.push(Capability::Log);
        }
        list.extend(self.http.iter().map(|h| Capability::Http(h.to_string())));
        if self.mail {
            list.push(Capability::Mail);
        }
        if self.read_builds {
            list.push(Capability::ReadBuilds);
        }
        list
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
    /// A file looked at, not loaded (`orthrus plugin inspect`): named by
    /// what it calls itself, whatever its file's name.
    Inspected(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built in"),
            Source::File(path) | Source::Inspected(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A loaded plugin, as `orthrus plugin list` shows it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Who it is: where it came from.
    pub id: PluginId,
    pub kind: PluginKind,
    pub metadata: Metadata,
    pub grants: Grants,
    pub source: Source,
    pub sha256: String,
}

/// A fetched input, as the plugin described it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSource {
    pub store_path: StorePath,
    pub revision: String,
    pub uri: String,
    pub attrs: Vec<(String, AttrValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Bool(bool),
}

/// One change between two revisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub revision: String,
    pub author: String,
    pub email: String,
    pub time: i64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin did its job and reports a failure (a repository that
    /// does not exist, say).
    #[error("{0}")]
    Failed(String),
    /// The plugin trapped, ran out of time or memory.
    #[error("plugin ‘{plugin}’ {what}")]
    Crashed {
        plugin: String,
        what: String,
        /// The same call may well succeed later: it ran out of time (the
        /// machine may have been busy) or could not start.
        transient: bool,
    },
    #[error("no plugin handles inputs of type ‘{0}’")]
    NoPlugin(String),
    #[error("no {kind} plugin is named ‘{name}’")]
    NoSuchPlugin { kind: PluginKind, name: String },
    #[error("cannot load plugin {origin}: {message}")]
    Load { origin: String, message: String },
}

impl PluginError {
    /// Whether the same call may well succeed later: it ran out of time
    /// (the machine may have been busy) or could not start. Running out of
    /// fuel, panicking or answering an error happen again every time.
    pub fn is_transient(&self) -> bool {
        match self {
            PluginError::Crashed { transient, .. } => *transient,
            PluginError::Load { .. } => true,
            PluginError::Failed(_) | PluginError::NoPlugin(_) | PluginError::NoSuchPlugin { .. } => false,
        }
    }
}

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
        }
    }
}

fn non_empty(path: &Path) -> Option<PathBuf> {
    (!path.as_os_str().is_empty()).then(|| path.to_owned())
}

/// A plugin ready to instantiate, as the world it exports.
#[derive(Clone)]
enum WorldPre {
    InputFetcher(InputFetcherPre<HostState>),
    Notifier(NotifierPre<HostState>),
    Renderer(RendererPre<HostState>),
    ReleaseSet(ReleaseSetPre<HostState>),
}

impl WorldPre {
    fn new(pre: wasmtime::component::InstancePre<HostState>) -> Result<WorldPre, String> {
        let mut errors = Vec::new();
        match InputFetcherPre::new(pre.clone()) {
            Ok(p) => return Ok(WorldPre::InputFetcher(p)),
            Err(e) => errors.push(format!("input-fetcher: {e:#}")),
        }
        match NotifierPre::new(pre.clone()) {
            Ok(p) => return Ok(WorldPre::Notifier(p)),
            Err(e) => errors.push(format!("notifier: {e:#}")),
        }
        match RendererPre::new(pre.clone()) {
            Ok(p) => return Ok(WorldPre::Renderer(p)),
            Err(e) => errors.push(format!("renderer: {e:#}")),
        }
        match ReleaseSetPre::new(pre) {
            Ok(p) => return Ok(WorldPre::ReleaseSet(p)),
            Err(e) => errors.push(format!("release-set: {e:#}")),
        }
        Err(format!("it exports none of the worlds of orthrus:plugin@0.1.0 ({})", errors.join("; ")))
    }

    fn kind(&self) -> PluginKind {
        match self {
            WorldPre::InputFetcher(_) => PluginKind::InputFetcher,
            WorldPre::Notifier(_) => PluginKind::Notifier,
            WorldPre::Renderer(_) => PluginKind::Renderer,
            WorldPre::ReleaseSet(_) => PluginKind::ReleaseSet,
        }
    }

    async fn metadata(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<bindings::host_api::orthrus::plugin::types::PluginMetadata> {
        match self {
            WorldPre::InputFetcher(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
            WorldPre::Notifier(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
            WorldPre::Renderer(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
            WorldPre::ReleaseSet(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
        }
    }
}

/// How long a call may run, and how many instructions it may execute.
#[derive(Debug, Clone, Copy)]
struct CallLimits {
    timeout: Duration,
    /// `None`: as many as fit in the time.
    fuel: Option<u64>,
}

struct LoadedPlugin {
    info: PluginInfo,
    pre: WorldPre,
    /// Calls of one plugin run one at a time: its scratch directory (a
    /// cache of clones, say) is not built for concurrent use.
    lock: tokio::sync::Mutex<()>,
}

/// The plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Input type to plugin name.
    fetchers: BTreeMap<String, String>,
    /// Build product type to plugin name.
    renderers: BTreeMap<String, String>,
    /// Why plugins that were found could not be loaded.
    load_errors: Vec<String>,
    services: Services,
    scratch_root: PathBuf,
    cache_dir: PathBuf,
    memory: usize,
    /// Input fetchers and notifiers: they wait on the network.
    io_limits: CallLimits,
    /// Renderers run while a page is served: a strict budget.
    render_limits: CallLimits,
    release_set_limits: CallLimits,
    /// Keeps the epoch ticker thread going; it stops when this is dropped.
    _ticker: Arc<()>,
}

/// Advances the engine's epoch every tick on a thread of its own — not a
/// task of the async runtime, whose worker threads may all be running
/// plugins: a deadline that depended on them could never come.
fn start_ticker(engine: &Engine) -> Arc<()> {
    let alive = Arc::new(());
    let weak = Arc::downgrade(&alive);
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            while weak.strong_count() > 0 {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("cannot start the plugin epoch thread");
    alive
}

fn engine(memory: usize) -> Result<Engine, PluginError> {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(64)
        .max_core_instances_per_component(32)
        .total_core_instances(1024)
        .total_memories(256)
        .total_tables(512)
        .total_stacks(64)
        .max_memory_size(memory);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // Renderers and release sets get a deterministic budget.
        .consume_fuel(true)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(|e| PluginError::Load { origin: "engine".into(), message: e.to_string() })
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, PluginError> {
    let mut linker = Linker::new(engine);
    let load = |e: wasmtime::Error| PluginError::Load { origin: "linker".into(), message: e.to_string() };
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load)?;
    bindings::host_api::HostApi::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
        .map_err(load)?;
    Ok(linker)
}

impl PluginRuntime {
    /// Loads the built-in plugins and those of `plugins.dir`. A plugin that
    /// fails to load, or would take another's name or types without the
    /// operator's `replaces`, is reported and left out; the server goes on.
    pub async fn start(setup: RuntimeSetup, db: Db, nix: Nix) -> Result<PluginRuntime, PluginError> {
        let RuntimeSetup { plugins: config, mail, scratch_root, cache_dir, sandbox } = setup;
        let memory = (config.memory_mb << 20) as usize;
        let engine = engine(memory)?;
        let linker = linker(&engine)?;
        let ticker = start_ticker(&engine);
        let mailer = Mailer::new(&mail).map_err(|message| PluginError::Load { origin: "[mail]".into(), message })?;
        let services = Services { db, nix, sandbox, http: HttpClient::new(), mailer };
        let fuel = Some(config.fuel_millions.saturating_mul(1_000_000));
        let mut inner = Inner {
            engine,
            linker,
            plugins: BTreeMap::new(),
            fetchers: BTreeMap::new(),
            renderers: BTreeMap::new(),
            load_errors: Vec::new(),
            services,
            scratch_root,
            cache_dir,
            memory,
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
                source = %source,
                granted = ?plugin.info.grants.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
                network = plugin.info.grants.network,
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

    /// Tells notifier `plugin` about an event.
    pub async fn notify(
        &self,
        plugin: &str,
        settings: &BTreeMap<String, String>,
        event: &NotifyEvent,
    ) -> Result<(), PluginError> {
        let plugin = self.plugin_of_kind(plugin, PluginKind::Notifier)?;
        let settings = wit_settings(settings);
        let event = convert::notify_event(event);
        self.inner
            .call(&plugin, false, self.inner.io_limits, None, async move |store, pre| {
                let WorldPre::Notifier(pre) = pre else { unreachable!("checked by plugin_of_kind") };
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.orthrus_plugin_notify().call_notify(store, &settings, &event).await
            })
            .await?
            .map_err(PluginError::Failed)
    }

    /// Renders a build product with the renderer of its type. The result is
    /// what the plugin returned: the caller sanitises it.
    pub async fn render(
        &self,
        renderer: &str,
        product: &ProductToRender,
        build: &BuildRef,
    ) -> Result<Rendered, PluginError> {
        let plugin = self.plugin_of_kind(renderer, PluginKind::Renderer)?;
        let (product, build) = (convert::product(product), convert::build_ref(build));
        let rendered = self
            .inner
            .call(&plugin, false, self.inner.render_limits, None, async move |store, pre| {
                let WorldPre::Renderer(pre) = pre else { unreachable!("checked by plugin_of_kind") };
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.orthrus_plugin_render().call_render(store, &product, &build).await
            })
            .await?
            .map_err(PluginError::Failed)?;
        Ok(convert::rendered(rendered))
    }

    /// The releases of a release set of project `project_id`, newest first.
    /// The plugin's queries see only that project.
    pub async fn releases(
        &self,
        plugin: &str,
        project_id: i64,
        settings: &BTreeMap<String, String>,
        limit: u32,
    ) -> Result<Vec<Release>, PluginError> {
        let plugin = self.plugin_of_kind(plugin, PluginKind::ReleaseSet)?;
        let settings = wit_settings(settings);
        let releases = self
            .inner
            .call(&plugin, false, self.inner.release_set_limits, Some(project_id), async move |store, pre| {
                let WorldPre::ReleaseSet(pre) = pre else { unreachable!("checked by plugin_of_kind") };
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.orthrus_plugin_releases().call_releases(store, &settings, limit).await
            })
            .await?
            .map_err(PluginError::Failed)?;
        Ok(releases.into_iter().map(convert::release).collect())
    }

    pub async fn check_value(&self, input_type: &str, value: &str) -> Result<(), PluginError> {
        let plugin = self.fetcher(input_type)?;
        let value = value.to_owned();
        self.inner
            .call(&plugin, false, self.inner.io_limits, None, async move |store, pre| {
                fetcher_instance(pre, store).await?.orthrus_plugin_fetcher().call_check_value(store, &value).await
            })
            .await?
            .map_err(PluginError::Failed)
    }

    /// Fetches an input through the plugin that handles its type.
    pub async fn fetch(&self, input_type: &str, input_name: &str, value: &str) -> Result<FetchedSource, PluginError> {
        let plugin = self.fetcher(input_type)?;
        let (name, value) = (input_name.to_owned(), value.to_owned());
        let fetched = self
            .inner
            .call(&plugin, true, self.inner.io_limits, None, async move |store, pre| {
                fetcher_instance(pre, store).await?.orthrus_plugin_fetcher().call_fetch(store, &name, &value).await
            })
            .await?
            .map_err(PluginError::Failed)?;
        let store_path = StorePath::parse(&fetched.store_path).map_err(|e| PluginError::Crashed {
            plugin: plugin.info.id.to_string(),
            what: format!("returned a source that is not in the Nix store: {e}"),
            transient: false,
        })?;
        Ok(FetchedSource {
            store_path,
            revision: fetched.revision,
            uri: fetched.uri,
            attrs: fetched
                .attrs
                .into_iter()
                .map(|a| {
                    let value = match a.value {
                        fetcher::AttrValue::Str(s) => AttrValue::String(s),
                        fetcher::AttrValue::Int(i) => AttrValue::Int(i),
                        fetcher::AttrValue::Boolean(b) => AttrValue::Bool(b),
                    };
                    (a.name, value)
                })
                .collect(),
        })
    }

    /// The changes after revision `since` up to `until` of an input.
    pub async fn changes(
        &self,
        input_type: &str,
        value: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<Change>, PluginError> {
        let plugin = self.fetcher(input_type)?;
        let (value, since, until) = (value.to_owned(), since.to_owned(), until.to_owned());
        let changes = self
            .inner
            .call(&plugin, true, self.inner.io_limits, None, async move |store, pre| {
                fetcher_instance(pre, store)
                    .await?
                    .orthrus_plugin_fetcher()
                    .call_changes(store, &value, &since, &until)
                    .await
            })
            .await?
            .map_err(PluginError::Failed)?;
        Ok(changes
            .into_iter()
            .map(|c| Change {
                revision: c.revision,
                author: c.author,
                email: c.email,
                time: c.time,
                message: c.message,
            })
            .collect())
    }
}

impl Inner {
    /// The compiled component: from the cache, or compiled and cached.
    fn component(&self, bytes: &[u8], sha256: &str) -> Result<Component, String> {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let cached = self.cache_dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if cached.is_file() {
            // SAFETY: only this server writes this directory, with the
            // output of `Component::serialize` for this engine's settings.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("ignoring the unreadable compiled plugin {}: {e}", cached.display()),
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| format!("not a valid component: {e:#}"))?;
        let serialized = component.serialize().map_err(|e| e.to_string())?;
        let written = std::fs::create_dir_all(&self.cache_dir).and_then(|_| {
            let temporary = cached.with_extension("tmp");
            std::fs::write(&temporary, serialized)?;
            std::fs::rename(&temporary, &cached)
        });
        if let Err(e) = written {
            tracing::warn!("cannot cache the compiled plugin in {}: {e}", self.cache_dir.display());
        }
        Ok(component)
    }

    async fn load(
        &self,
        source: Source,
        bytes: &[u8],
        config: &PluginsConfig,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let load_error = |message: String| PluginError::Load { origin: source.to_string(), message };
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.component(bytes, &sha256).map_err(load_error)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| load_error(format!("{e:#}")))?;
        let pre = WorldPre::new(pre).map_err(load_error)?;
        check_imports(&component, &self.engine, pre.kind()).map_err(load_error)?;
        // Metadata is read under no grant at all: a plugin cannot use
        // anything while it introduces itself.
        // A scratch directory of its own, removed after: the plugin's name
        // (and so its real scratch directory) is not known yet.
        let probe_name = format!(".load-{}", &sha256[..16]);
        let probe = LoadedPlugin {
            info: PluginInfo {
                id: PluginId::builtin(&probe_name),
                kind: pre.kind(),
                metadata: Metadata {
                    name: probe_name.clone(),
                    version: String::new(),
                    description: String::new(),
                    handles: vec![],
                    capabilities: vec![],
                },
                grants: Grants::default(),
                source: source.clone(),
                sha256: sha256.clone(),
            },
            pre: pre.clone(),
            lock: tokio::sync::Mutex::new(()),
        };
        let raw =
            self.call(&probe, false, self.io_limits, None, async move |store, pre| pre.metadata(store).await).await;
        let _ = std::fs::remove_dir_all(probe.info.id.scratch_dir(&self.scratch_root));
        let raw = raw.map_err(|e| load_error(format!("its metadata() failed: {e}")))?;
        let metadata = metadata_from_wit(raw);
        if !identity::is_plugin_name(&metadata.name) {
            return Err(load_error(format!("{:?} is not a plugin name (letters, digits, ‘-’, ‘_’)", metadata.name)));
        }
        // Who it is comes from where it is; what it calls itself must agree.
        let id = match &source {
            Source::BuiltIn => PluginId::builtin(&metadata.name),
            Source::Inspected(_) => PluginId::of_file(Path::new(&metadata.name)).map_err(load_error)?,
            Source::File(file) => {
                let id = PluginId::of_file(file).map_err(load_error)?;
                if metadata.name != id.as_str() {
                    return Err(load_error(format!(
                        "it calls itself ‘{}’ but its file is {}.wasm: a plugin is named by its file",
                        metadata.name, id
                    )));
                }
                id
            }
        };
        let grants = grants_of(&id, &metadata, config);
        Ok(Arc::new(LoadedPlugin {
            info: PluginInfo { id, kind: pre.kind(), metadata, grants, source, sha256 },
            pre,
            lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether a loaded plugin may join those loaded before it: a plugin of
    /// `plugins.dir` takes a built-in's name, or a type another plugin
    /// handles, only when the operator says it `replaces` that one.
    fn admit(&self, plugin: &LoadedPlugin, config: &PluginsConfig) -> Result<(), String> {
        let id = &plugin.info.id;
        let replaces = match id.is_builtin() {
            true => "",
            false => config.grants.get(id.as_str()).map(|g| g.replaces.as_str()).unwrap_or(""),
        };
        let builtin = PluginId::builtin(id.name());
        if !id.is_builtin() && self.plugins.contains_key(builtin.as_str()) && replaces != builtin.as_str() {
            return Err(format!(
                "it would take the name of the built-in plugin ‘{builtin}’: to let it, set replaces = \"{builtin}\" in {} \
                 (until then, that table grants the built-in)",
                id.grant_table()
            ));
        }
        let (handlers, what) = match plugin.info.kind {
            PluginKind::InputFetcher => (&self.fetchers, "inputs of type"),
            PluginKind::Renderer => (&self.renderers, "build products of type"),
            PluginKind::Notifier | PluginKind::ReleaseSet => return Ok(()),
        };
        for kind in &plugin.info.metadata.handles {
            if let Some(other) = handlers.get(kind).filter(|other| *other != id.as_str() && *other != replaces) {
                return Err(format!(
                    "it handles {what} ‘{kind}’, which plugin ‘{other}’ handles already: to let it take over, set \
                     replaces = \"{other}\" in {}",
                    id.grant_table()
                ));
            }
        }
        Ok(())
    }

    /// A built-in's scratch directory of before identities
    /// (`plugins/NAME`) becomes `plugins/builtin/NAME`: its clones are kept,
    /// and a plugin file that later takes the name does not inherit them.
    fn move_old_scratch(&self, id: &PluginId) {
        let old = self.scratch_root.join(id.name());
        let new = id.scratch_dir(&self.scratch_root);
        if old.is_dir() && !new.exists() {
            let moved = new.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::rename(&old, &new));
            if let Err(e) = moved {
                tracing::warn!("cannot move {} to {}: {e}", old.display(), new.display());
            }
        }
    }

    /// The loaded plugin a configuration names: by identity, or a built-in
    /// by its plain name (unless a plugin that replaces it took the name).
    fn resolve(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name).or_else(|| self.plugins.get(PluginId::builtin(name).as_str()))
    }

    /// One call in a fresh store: the scratch directory as the only file
    /// system, the memory cap, the deadline. `exclusive` calls of a plugin
    /// wait for each other.
    async fn call<R, F>(
        &self,
        plugin: &LoadedPlugin,
        exclusive: bool,
        limits: CallLimits,
        project_scope: Option<i64>,
        f: F,
    ) -> Result<R, PluginError>
    where
        F: AsyncFnOnce(&mut Store<HostState>, &WorldPre) -> wasmtime::Result<R>,
    {
        let name = plugin.info.id.as_str().to_owned();
        let failed = |what: String, transient: bool| PluginError::Crashed { plugin: name.clone(), what, transient };
        let crashed = |what: String| failed(what, false);
        // A plugin that adds to the store or runs programs may not race
        // itself: between the check of a path in its scratch directory and
        // its use, another of its calls could swap a directory for a link.
        let grants = &plugin.info.grants;
        let exclusive = exclusive || grants.add_to_store || !grants.programs.is_empty();
        let _guard = if exclusive { Some(plugin.lock.lock().await) } else { None };
        let scratch = plugin.info.id.scratch_dir(&self.scratch_root);
        std::fs::create_dir_all(&scratch).map_err(|e| crashed(format!("has no scratch directory: {e}")))?;
        // Nothing ambient: no network, no environment, no arguments, no
        // standard streams; the scratch directory is the whole file system.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        wasi.preopened_dir(&scratch, "/scratch", FsPerms::ReadWrite)
            .map_err(|e| crashed(format!("cannot open its scratch directory: {e}")))?;
        let state = HostState {
            wasi: wasi.build(),
            table: Default::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory)
                .instances(64)
                .tables(64)
                .trap_on_grow_failure(true)
                .build(),
            plugin: plugin.info.id.clone(),
            grants: plugin.info.grants.clone(),
            scratch,
            services: self.services.clone(),
            project_scope,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // At every tick the plugin yields to the runtime (a plugin that
        // computes does not hold a worker thread), until its time is up.
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| crashed(e.to_string()))?;
        let timeout = limits.timeout;
        let deadline = std::time::Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Yield(1)
            })
        });
        let work = f(&mut store, &plugin.pre);
        // The outer limit also covers time spent in host calls (programs,
        // requests), which the epoch does not interrupt.
        let outer = timeout + timeout.min(Duration::from_secs(5));
        match tokio::time::timeout(outer, work).await {
            Err(_) => Err(failed(timed_out(timeout), true)),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                let (what, transient) = describe_trap(&e, limits, self.memory);
                Err(failed(what, transient))
            }
        }
    }
}

/// What a plugin is granted: its entry in `[plugins.grants]` by identity
/// (a built-in also by its plain name, unless that entry is for a plugin
/// that replaces it); without one, a built-in gets what it asks for but
/// HTTP hosts, any other plugin nothing.
fn grants_of(id: &PluginId, metadata: &Metadata, config: &PluginsConfig) -> Grants {
    let entry = match id.is_builtin() {
        true => {
            config.grants.get(id.as_str()).or_else(|| config.grants.get(id.name()).filter(|g| g.replaces.is_empty()))
        }
        false => config.grants.get(id.as_str()),
    };
    match entry {
        Some(grant) => {
            let mut grants = Grants::from_config(grant);
            if grant.network.is_none() && id.is_builtin() {
                grants.network = Grants::asked(metadata).network;
            }
            grants
        }
        None if id.is_builtin() => Grants::asked(metadata),
        None => Grants::default(),
    }
}

/// The host interfaces each world may import (and WASI, which the sandbox
/// shapes). The linker offers them all; a component of one kind that
/// imports another kind's interface is refused at load, whatever it is
/// granted.
fn check_imports(component: &Component, engine: &Engine, kind: PluginKind) -> Result<(), String> {
    let allowed: &[&str] = match kind {
        PluginKind::InputFetcher => &["types", "log", "process", "nix-store", "key-value"],
        PluginKind::Notifier => &["types", "log", "key-value", "http", "mail"],
        PluginKind::Renderer => &["types", "log"],
        PluginKind::ReleaseSet => &["types", "log", "builds"],
    };
    for (name, _) in component.component_type().imports(engine) {
        let Some(interface) = name.strip_prefix("orthrus:plugin/") else { continue };
        let interface = interface.split('@').next().unwrap_or(interface);
        if !allowed.contains(&interface) {
            return Err(format!("a {kind} may not import {name} (its world imports {})", allowed.join(", ")));
        }
    }
    Ok(())
}

/// The fetcher instance of an input-fetcher plugin.
async fn fetcher_instance(
    pre: &WorldPre,
    store: &mut Store<HostState>,
) -> wasmtime::Result<bindings::fetcher::InputFetcher> {
    let WorldPre::InputFetcher(pre) = pre else { unreachable!("fetchers are input-fetcher plugins") };
    pre.instantiate_async(store).await
}

fn wit_settings(settings: &BTreeMap<String, String>) -> Vec<bindings::host_api::orthrus::plugin::types::Setting> {
    settings
        .iter()
        .map(|(name, value)| bindings::host_api::orthrus::plugin::types::Setting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn metadata_from_wit(raw: bindings::host_api::orthrus::plugin::types::PluginMetadata) -> Metadata {
    use bindings::host_api::orthrus::plugin::types::Capability as Wit;
    Metadata {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        handles: raw.handles,
        capabilities: raw
            .capabilities
            .into_iter()
            .map(|c| match c {
                Wit::RunProgram(p) => Capability::RunProgram(p),
                Wit::AddToStore => Capability::AddToStore,
                Wit::KeyValue => Capability::KeyValue,
                Wit::Log => Capability::Log,
                Wit::Http(host) => Capability::Http(host),
                Wit::Mail => Capability::Mail,
                Wit::ReadBuilds => Capability::ReadBuilds,
            })
            .collect(),
    }
}

/// A trap in words an operator understands.
fn timed_out(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("did not finish within {} seconds", timeout.as_secs())
    } else {
        format!("did not finish within {} ms", timeout.as_millis())
    }
}

/// The trap in words, and whether the call may succeed later.
fn describe_trap(error: &wasmtime::Error, limits: CallLimits, memory: usize) -> (String, bool) {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (timed_out(limits.timeout), true),
        Some(wasmtime::Trap::OutOfFuel) => (
            format!(
                "ran out of fuel: it may execute {} million instructions (plugins.fuel_millions)",
                limits.fuel.unwrap_or(0) / 1_000_000
            ),
            false,
        ),
        Some(wasmtime::Trap::UnreachableCodeReached) => (format!("crashed (it panicked or aborted): {error:#}"), false),
        _ => {
            let text = format!("{error:#}");
            if text.contains("concurrent") && text.contains("limit") {
                // Every instance slot is taken: nothing wrong with the plugin.
                (format!("could not start: too many plugin calls at once ({text})"), true)
            } else if text.contains("memory")
                && (text.contains("grow") || text.contains("limit") || text.contains("resource"))
            {
                (format!("ran out of memory (the limit is {} MiB): {text}", memory >> 20), false)
            } else {
                (format!("crashed: {text}"), false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn runtime(dir: &Path) -> PluginRuntime {
        let db = Db::open(&format!("sqlite://{}", dir.join("db.sqlite").display())).await.unwrap();
        let nix = Nix::new(&crate::config::NixConfig::default());
        std::fs::create_dir_all(dir.join("repo")).unwrap();
        let setup = RuntimeSetup::in_dir(dir, PluginsConfig::default(), vec![dir.join("repo")]).await;
        PluginRuntime::start(setup, db, nix).await.unwrap()
    }

    fn git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Ann")
            .env("GIT_AUTHOR_EMAIL", "ann@example.org")
            .env("GIT_COMMITTER_NAME", "Ann")
            .env("GIT_COMMITTER_EMAIL", "ann@example.org")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[tokio::test]
    async fn builtin_git_fetches_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(dir.path()).await;
        let names: Vec<(String, PluginKind)> =
            runtime.plugins().iter().map(|p| (p.metadata.name.clone(), p.kind)).collect();
        for (name, kind) in [
            ("git", PluginKind::InputFetcher),
            ("svn", PluginKind::InputFetcher),
            ("email", PluginKind::Notifier),
            ("webhook", PluginKind::Notifier),
            ("github-status", PluginKind::Notifier),
            ("gitea-status", PluginKind::Notifier),
            ("file", PluginKind::Renderer),
            ("doc", PluginKind::Renderer),
            ("report", PluginKind::Renderer),
            ("nix-build", PluginKind::Renderer),
            ("channel", PluginKind::Renderer),
            ("official-release", PluginKind::ReleaseSet),
        ] {
            assert!(names.contains(&(name.to_owned(), kind)), "{name} is a built-in {kind}: {names:?}");
        }
        assert_eq!(names.len(), 12);
        assert_eq!(runtime.renderer_for("doc").as_deref(), Some("builtin:doc"));
        assert!(runtime.has_plugin("webhook", PluginKind::Notifier));
        assert!(!runtime.has_plugin("webhook", PluginKind::Renderer));
        let webhook = runtime.plugins().into_iter().find(|p| p.metadata.name == "webhook").unwrap();
        assert!(webhook.grants.http.is_empty(), "HTTP hosts are only ever granted by the operator");
        assert_eq!(runtime.input_types(), ["git", "svn"]);
        let git_plugin = runtime.plugins().into_iter().find(|p| p.metadata.name == "git").unwrap();
        assert!(git_plugin.grants.programs.contains("git"));

        let repo = dir.path().join("repo");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("default.nix"), "{ }").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        let url = format!("file://{}", repo.display());
        let first = runtime.fetch("git", "src", &url).await.unwrap();
        assert_eq!(first.revision.len(), 40);
        assert!(std::path::Path::new(first.store_path.as_str()).join("default.nix").is_file());
        assert!(!std::path::Path::new(first.store_path.as_str()).join(".git").exists());
        assert!(first.attrs.contains(&("revCount".to_owned(), AttrValue::Int(1))));

        std::fs::write(repo.join("more.nix"), "{ }").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "second"]);
        let second = runtime.fetch("git", "src", &format!("{url} main")).await.unwrap();
        assert_ne!(second.revision, first.revision);
        let changes = runtime.changes("git", &url, &first.revision, &second.revision).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].message.as_str(), changes[0].email.as_str()), ("second", "ann@example.org"));

        assert!(runtime.check_value("git", "--upload-pack=x").await.is_err());
        assert!(runtime.check_value("git", &url).await.is_ok());
        let missing = runtime.fetch("git", "src", "file:///nonexistent/repo").await.unwrap_err();
        assert!(matches!(missing, PluginError::Failed(_)), "{missing}");
        assert!(matches!(runtime.fetch("hg", "src", "x").await, Err(PluginError::NoPlugin(_))));
    }
}
