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

mod bindings;
mod builtin;
mod host;
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

use crate::config::{PluginGrant, PluginsConfig};
use crate::db::Db;
use crate::nix::{Nix, StorePath};
use bindings::InputFetcherPre;
use bindings::exports::orthrus::plugin::fetcher;
use host::HostState;

/// How often the epoch advances; a call's deadline is counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Something a plugin asks for (mirrors the WIT `capability`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    RunProgram(String),
    AddToStore,
    KeyValue,
    Log,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capability::RunProgram(program) => write!(f, "run-program({program})"),
            Capability::AddToStore => f.write_str("add-to-store"),
            Capability::KeyValue => f.write_str("key-value"),
            Capability::Log => f.write_str("log"),
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

/// What a plugin may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub programs: BTreeSet<String>,
    pub add_to_store: bool,
    pub key_value: bool,
    pub log: bool,
}

impl Grants {
    /// Exactly what the plugin asks for (built-in plugins, by default).
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
            }
        }
        grants
    }

    fn from_config(grant: &PluginGrant) -> Grants {
        Grants {
            programs: grant.programs.iter().cloned().collect(),
            add_to_store: grant.add_to_store,
            key_value: grant.key_value,
            log: grant.log,
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
        list
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built in"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A loaded plugin, as `orthrus plugin list` shows it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
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
    Crashed { plugin: String, what: String },
    #[error("no plugin handles inputs of type ‘{0}’")]
    NoPlugin(String),
    #[error("cannot load plugin {origin}: {message}")]
    Load { origin: String, message: String },
}

/// What host functions use, shared by every call.
#[derive(Clone)]
pub(crate) struct Services {
    db: Db,
    nix: Nix,
    /// PATH for programs plugins run.
    path: String,
}

struct LoadedPlugin {
    info: PluginInfo,
    pre: InputFetcherPre<HostState>,
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
    /// Why plugins that were found could not be loaded.
    load_errors: Vec<String>,
    services: Services,
    scratch_root: PathBuf,
    cache_dir: PathBuf,
    memory: usize,
    timeout: Duration,
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
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(|e| PluginError::Load { origin: "engine".into(), message: e.to_string() })
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, PluginError> {
    let mut linker = Linker::new(engine);
    let load = |e: wasmtime::Error| PluginError::Load { origin: "linker".into(), message: e.to_string() };
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load)?;
    bindings::InputFetcher::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state).map_err(load)?;
    Ok(linker)
}

impl PluginRuntime {
    /// Loads the built-in plugins and those of `config.dir`. A plugin that
    /// fails to load is reported and skipped; the server goes on.
    pub async fn start(
        config: &PluginsConfig,
        scratch_root: PathBuf,
        cache_dir: PathBuf,
        db: Db,
        nix: Nix,
    ) -> Result<PluginRuntime, PluginError> {
        let memory = (config.memory_mb << 20) as usize;
        let engine = engine(memory)?;
        let linker = linker(&engine)?;
        let ticker = start_ticker(&engine);
        let services = Services { db, nix, path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()) };
        let mut inner = Inner {
            engine,
            linker,
            plugins: BTreeMap::new(),
            fetchers: BTreeMap::new(),
            load_errors: Vec::new(),
            services,
            scratch_root,
            cache_dir,
            memory,
            timeout: Duration::from_secs(config.timeout_secs),
            _ticker: ticker,
        };
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
            match inner.load(source.clone(), &bytes, config).await {
                Ok(plugin) => {
                    let name = plugin.info.metadata.name.clone();
                    for kind in &plugin.info.metadata.handles {
                        if let Some(other) = inner.fetchers.insert(kind.clone(), name.clone()) {
                            tracing::warn!(
                                "inputs of type ‘{kind}’ are now fetched by plugin ‘{name}’ instead of ‘{other}’"
                            );
                        }
                    }
                    tracing::info!(
                        plugin = %name,
                        version = %plugin.info.metadata.version,
                        source = %source,
                        granted = ?plugin.info.grants.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "plugin loaded"
                    );
                    inner.plugins.insert(name, plugin);
                }
                Err(e) => {
                    tracing::error!("{e}");
                    inner.load_errors.push(e.to_string());
                }
            }
        }
        Ok(PluginRuntime { inner: Arc::new(inner) })
    }

    /// Compiles a component (or takes it from the cache) and reads its
    /// metadata, without loading it: `orthrus plugin inspect`.
    pub async fn inspect(&self, path: &Path, config: &PluginsConfig) -> Result<PluginInfo, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|e| PluginError::Load { origin: path.display().to_string(), message: e.to_string() })?;
        Ok(self.inner.load(Source::File(path.to_owned()), &bytes, config).await?.info.clone())
    }

    /// The components built into the binary.
    pub fn builtin_components() -> &'static [&'static [u8]] {
        &builtin::PLUGINS
    }

    /// Asks a loaded plugin again what it is: one instantiation and one
    /// call, the smallest unit of plugin work.
    pub async fn describe(&self, name: &str) -> Result<Metadata, PluginError> {
        let plugin = self.inner.plugins.get(name).ok_or_else(|| PluginError::NoPlugin(name.to_owned()))?.clone();
        let raw =
            self.inner.call(&plugin, false, async move |store, instance| instance.call_metadata(store).await).await?;
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
        let name = self.inner.fetchers.get(input_type).ok_or_else(|| PluginError::NoPlugin(input_type.to_owned()))?;
        Ok(self.inner.plugins[name].clone())
    }

    pub async fn check_value(&self, input_type: &str, value: &str) -> Result<(), PluginError> {
        let plugin = self.fetcher(input_type)?;
        let value = value.to_owned();
        self.inner
            .call(&plugin, false, async move |store, instance| {
                instance.orthrus_plugin_fetcher().call_check_value(store, &value).await
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
            .call(&plugin, true, async move |store, instance| {
                instance.orthrus_plugin_fetcher().call_fetch(store, &name, &value).await
            })
            .await?
            .map_err(PluginError::Failed)?;
        let plugin_name = &plugin.info.metadata.name;
        let store_path = StorePath::parse(&fetched.store_path).map_err(|e| PluginError::Crashed {
            plugin: plugin_name.clone(),
            what: format!("returned a source that is not in the Nix store: {e}"),
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
            .call(&plugin, true, async move |store, instance| {
                instance.orthrus_plugin_fetcher().call_changes(store, &value, &since, &until).await
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
        let pre = InputFetcherPre::new(pre)
            .map_err(|e| load_error(format!("it is not an input fetcher of orthrus:plugin@0.1.0: {e:#}")))?;
        // Metadata is read under no grant at all: a plugin cannot use
        // anything while it introduces itself.
        // A scratch directory of its own, removed after: the plugin's name
        // (and so its real scratch directory) is not known yet.
        let probe_name = format!(".load-{}", &sha256[..16]);
        let probe = LoadedPlugin {
            info: PluginInfo {
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
        let raw = self.call(&probe, false, async move |store, instance| instance.call_metadata(store).await).await;
        let _ = std::fs::remove_dir_all(self.scratch_root.join(&probe_name));
        let raw = raw.map_err(|e| load_error(format!("its metadata() failed: {e}")))?;
        let metadata = metadata_from_wit(raw);
        let valid_name = !metadata.name.is_empty()
            && metadata.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(load_error(format!("{:?} is not a plugin name (letters, digits, ‘-’, ‘_’)", metadata.name)));
        }
        let grants = match config.grants.get(&metadata.name) {
            Some(grant) => Grants::from_config(grant),
            None if source == Source::BuiltIn => Grants::asked(&metadata),
            None => Grants::default(),
        };
        Ok(Arc::new(LoadedPlugin {
            info: PluginInfo { metadata, grants, source, sha256 },
            pre,
            lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// One call in a fresh store: the scratch directory as the only file
    /// system, the memory cap, the deadline. `exclusive` calls of a plugin
    /// wait for each other.
    async fn call<R, F>(&self, plugin: &LoadedPlugin, exclusive: bool, f: F) -> Result<R, PluginError>
    where
        F: AsyncFnOnce(&mut Store<HostState>, &bindings::InputFetcher) -> wasmtime::Result<R>,
    {
        let name = plugin.info.metadata.name.clone();
        let crashed = |what: String| PluginError::Crashed { plugin: name.clone(), what };
        let _guard = if exclusive { Some(plugin.lock.lock().await) } else { None };
        let scratch = self.scratch_root.join(&name);
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
            plugin: name.clone(),
            grants: plugin.info.grants.clone(),
            scratch,
            services: self.services.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // At every tick the plugin yields to the runtime (a plugin that
        // computes does not hold a worker thread), until its time is up.
        let deadline = std::time::Instant::now() + self.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Yield(1)
            })
        });
        let work = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            f(&mut store, &instance).await
        };
        // The outer limit also covers time spent in host calls (programs).
        let outer = self.timeout + Duration::from_secs(5);
        match tokio::time::timeout(outer, work).await {
            Err(_) => Err(crashed(timed_out(self.timeout))),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(crashed(describe_trap(&e, self.timeout, self.memory))),
        }
    }
}

fn metadata_from_wit(raw: bindings::orthrus::plugin::types::PluginMetadata) -> Metadata {
    use bindings::orthrus::plugin::types::Capability as Wit;
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
            })
            .collect(),
    }
}

/// A trap in words an operator understands.
fn timed_out(timeout: Duration) -> String {
    format!("did not finish within {} seconds", timeout.as_secs())
}

fn describe_trap(error: &wasmtime::Error, timeout: Duration, memory: usize) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => timed_out(timeout),
        Some(wasmtime::Trap::UnreachableCodeReached) => format!("crashed (it panicked or aborted): {error:#}"),
        _ => {
            let text = format!("{error:#}");
            if text.contains("memory") && (text.contains("grow") || text.contains("limit") || text.contains("resource"))
            {
                format!("ran out of memory (the limit is {} MiB): {text}", memory >> 20)
            } else {
                format!("crashed: {text}")
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
        PluginRuntime::start(&PluginsConfig::default(), dir.join("scratch"), dir.join("cache"), db, nix).await.unwrap()
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
        let names: Vec<String> = runtime.plugins().iter().map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, ["git", "svn"]);
        assert_eq!(runtime.input_types(), ["git", "svn"]);
        let git_plugin = runtime.plugins().into_iter().find(|p| p.metadata.name == "git").unwrap();
        assert!(git_plugin.grants.programs.contains("git"));

        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
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
