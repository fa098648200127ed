//! Loading a plugin: the compiled component (from the disk cache, or
//! compiled and cached), its metadata, the imports its world allows, what
//! it is granted, and admitting it.

use super::*;

impl Inner {
    /// The compiled component: from the cache, or compiled and cached.
    pub(super) fn component(&self, bytes: &[u8], sha256: &str) -> Result<Component, String> {
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

    pub(super) async fn load(
        &self,
        source: Source,
        bytes: &[u8],
        config: &PluginsConfig,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let load_error = |message: String| PluginError::Load { origin: source.to_string(), message };
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.component(bytes, &sha256).map_err(load_error)?;
        let pre = WorldPre::new(&component, &self.linkers).map_err(load_error)?;
        // Metadata is read under no grant at all: a plugin cannot use
        // anything while it introduces itself.
        // A scratch directory of its own, removed after: the plugin's name
        // (and so its real scratch directory) is not known yet.
        let probe_name = format!(".load-{}", &sha256[..16]);
        let probe = LoadedPlugin {
            info: PluginInfo {
                id: PluginId::builtin(&probe_name),
                kind: pre.kind(),
                wit: pre.version(),
                metadata: Metadata {
                    name: probe_name.clone(),
                    version: String::new(),
                    description: String::new(),
                    handles: vec![],
                    capabilities: vec![],
                },
                grants: Default::default(),
                source: source.clone(),
                sha256: sha256.clone(),
            },
            pre: pre.clone(),
            lock: tokio::sync::Mutex::new(()),
            scratch: Default::default(),
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
        let grants = Arc::new(grants_of(&id, &metadata, config));
        Ok(Arc::new(LoadedPlugin {
            info: PluginInfo { id, kind: pre.kind(), wit: pre.version(), metadata, grants, source, sha256 },
            pre,
            lock: tokio::sync::Mutex::new(()),
            scratch: Default::default(),
        }))
    }

    /// Whether a loaded plugin may join those loaded before it: a plugin of
    /// `plugins.dir` takes a built-in's name, or a type another plugin
    /// handles, only when the operator says it `replaces` that one.
    pub(super) fn admit(&self, plugin: &LoadedPlugin, config: &PluginsConfig) -> Result<(), String> {
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
    pub(super) fn move_old_scratch(&self, id: &PluginId) {
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
    pub(super) fn resolve(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name).or_else(|| self.plugins.get(PluginId::builtin(name).as_str()))
    }
}

/// What a plugin is granted: its entry in `[plugins.grants]` by identity
/// (a built-in also by its plain name, unless that entry is for a plugin
/// that replaces it); without one, a built-in gets what it asks for but
/// HTTP hosts, any other plugin nothing.
pub(super) fn grants_of(id: &PluginId, metadata: &Metadata, config: &PluginsConfig) -> Grants {
    let entry = match id.is_builtin() {
        true => {
            config.grants.get(id.as_str()).or_else(|| config.grants.get(id.name()).filter(|g| g.replaces.is_empty()))
        }
        false => config.grants.get(id.as_str()),
    };
    match entry {
        Some(grant) => {
            let mut grants = Grants::from_config(grant);
            if let Some(process) = grants.process.as_mut().filter(|_| grant.network.is_none() && id.is_builtin()) {
                process.network = Grants::asked(&metadata.capabilities).network();
            }
            grants
        }
        None if id.is_builtin() => Grants::asked(&metadata.capabilities),
        None => Grants::default(),
    }
}

pub(super) fn metadata_from_wit(raw: wit::latest::PluginMetadata) -> Metadata {
    Metadata {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        handles: raw.handles,
        capabilities: raw.capabilities.into_iter().map(Capability::from).collect(),
    }
}
