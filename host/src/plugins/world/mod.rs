//! The plugin worlds of `wit/*/worlds.wit`: which one a component is, and
//! of which WIT version, linked with that world's imports only; and one
//! facade file per world with the runtime's calls of it and its
//! conversions between the server's plain types (`api.rs`) and the latest
//! WIT records (an older version's calls are adapted in `wit/`).

mod fetcher;
mod notifier;
mod release_set;
mod renderer;

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime::component::Component;

use super::engine::Linkers;
use super::wit::latest as bindings;
use super::wit::{WitVersion, since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};
use super::{HostState, PluginKind};

/// A plugin ready to instantiate: the world it exports, in its version.
#[derive(Clone)]
pub(super) enum WorldPre {
    V0_1(v0_1::Pre),
    V0_2(v0_2::Pre),
}

impl WorldPre {
    /// The world `component` exports, of the newest version it fits,
    /// linked with that world's imports of that version only: a component
    /// of one kind that imports another kind's interface (or another
    /// version's) is refused, whatever it is granted.
    pub(super) fn new(component: &Component, linkers: &Linkers) -> Result<WorldPre, String> {
        let any = linkers.any.instantiate_pre(component).map_err(|e| format!("{e:#}"))?;
        let (version, kind) = match v0_2::Pre::exported(any.clone()) {
            Ok(pre) => (WitVersion::V0_2_0, pre.kind()),
            Err(newer) => match v0_1::Pre::exported(any) {
                Ok(pre) => (WitVersion::V0_1_0, pre.kind()),
                Err(older) => {
                    return Err(format!(
                        "it exports none of the worlds of orthrus:plugin@{} ({}) or @{} ({})",
                        v0_2::VERSION,
                        newer.join("; "),
                        v0_1::VERSION,
                        older.join("; ")
                    ));
                }
            },
        };
        let own = linkers.of(version, kind).instantiate_pre(component).map_err(|e| {
            format!("a {kind} may import only what its world imports (orthrus:plugin@{version}, worlds.wit): {e:#}")
        })?;
        let mismatch = |errors: Vec<String>| errors.join("; ");
        Ok(match version {
            WitVersion::V0_1_0 => WorldPre::V0_1(v0_1::Pre::exported(own).map_err(mismatch)?),
            WitVersion::V0_2_0 => WorldPre::V0_2(v0_2::Pre::exported(own).map_err(mismatch)?),
        })
    }

    pub(super) fn kind(&self) -> PluginKind {
        match self {
            WorldPre::V0_1(pre) => pre.kind(),
            WorldPre::V0_2(pre) => pre.kind(),
        }
    }

    /// The WIT version the component was built against.
    pub(super) fn version(&self) -> WitVersion {
        match self {
            WorldPre::V0_1(_) => WitVersion::V0_1_0,
            WorldPre::V0_2(_) => WitVersion::V0_2_0,
        }
    }

    /// What the plugin says it is, in the latest's words.
    pub(super) async fn metadata(&self, store: &mut Store<HostState>) -> wasmtime::Result<bindings::PluginMetadata> {
        match self {
            WorldPre::V0_1(pre) => pre.latest_metadata(store).await,
            WorldPre::V0_2(pre) => pre.metadata(store).await,
        }
    }
}

fn wit_settings(settings: &BTreeMap<String, String>) -> Vec<bindings::Setting> {
    settings.iter().map(|(name, value)| bindings::Setting { name: name.clone(), value: value.clone() }).collect()
}

/// A database id as the WIT's unsigned one.
fn unsigned(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}
