//! The plugin worlds of `wit/since_v0.1.0/worlds.wit`: which one a
//! component is, linked with that world's imports only; and one facade
//! file per world with the runtime's calls of it and its conversions
//! between the server's plain types (`api.rs`) and the WIT records.

mod fetcher;
mod notifier;
mod release_set;
mod renderer;

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime::component::Component;

use super::engine::Linkers;
use super::wit::latest as bindings;
use super::wit::latest::fetcher::InputFetcherPre;
use super::wit::latest::notifier::NotifierPre;
use super::wit::latest::release_set::ReleaseSetPre;
use super::wit::latest::renderer::RendererPre;
use super::{HostState, PluginKind};

/// A plugin ready to instantiate, as the world it exports.
#[derive(Clone)]
pub(super) enum WorldPre {
    InputFetcher(InputFetcherPre<HostState>),
    Notifier(NotifierPre<HostState>),
    Renderer(RendererPre<HostState>),
    ReleaseSet(ReleaseSetPre<HostState>),
}

impl WorldPre {
    /// The world `component` exports, linked with that world's imports
    /// only: a component of one kind that imports another kind's interface
    /// is refused, whatever it is granted.
    pub(super) fn new(component: &Component, linkers: &Linkers) -> Result<WorldPre, String> {
        let any = linkers.any.instantiate_pre(component).map_err(|e| format!("{e:#}"))?;
        let kind = Self::exported(any)?.kind();
        let own = linkers.of(kind).instantiate_pre(component).map_err(|e| {
            format!(
                "a {kind} may import only what its world imports (orthrus:plugin@{}, worlds.wit): {e:#}",
                bindings::VERSION
            )
        })?;
        Self::exported(own)
    }

    /// The world whose exports `pre`'s component has.
    fn exported(pre: wasmtime::component::InstancePre<HostState>) -> Result<WorldPre, String> {
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
        Err(format!("it exports none of the worlds of orthrus:plugin@{} ({})", bindings::VERSION, errors.join("; ")))
    }

    pub(super) fn kind(&self) -> PluginKind {
        match self {
            WorldPre::InputFetcher(_) => PluginKind::InputFetcher,
            WorldPre::Notifier(_) => PluginKind::Notifier,
            WorldPre::Renderer(_) => PluginKind::Renderer,
            WorldPre::ReleaseSet(_) => PluginKind::ReleaseSet,
        }
    }

    pub(super) async fn metadata(
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

fn wit_settings(settings: &BTreeMap<String, String>) -> Vec<bindings::host_api::orthrus::plugin::types::Setting> {
    settings
        .iter()
        .map(|(name, value)| bindings::host_api::orthrus::plugin::types::Setting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A database id as the WIT's unsigned one.
fn unsigned(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}
